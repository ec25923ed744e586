/**
 * Webhook and email delivery retries — the **delivery backoff** (README › Architecture › "Retry: six
 * meanings"): a failed notification delivery (notification_delivery.ts) is tried again after 1, 2, 4, 8 and
 * 16 minutes, then given up as failed.
 */
import type { DeliveryAttempt, NotificationDelivery } from "./notification_delivery.ts";

/**
 * Delay before attempt n+1 after n failed attempts (1, 2, 4, 8, 16 minutes).
 * Retry glossary: the **delivery backoff** (README › Architecture › "Retry: six meanings").
 */
export const BACKOFF_MINUTES = [1, 2, 4, 8, 16] as const;
/** Attempts before a delivery is given up as failed. */
export const MAX_ATTEMPTS = BACKOFF_MINUTES.length + 1;

/**
 * Delay before the next attempt after `failed` failed attempts, or null when the delivery gives up.
 * Retry glossary: the **delivery backoff** (README › Architecture › "Retry: six meanings").
 */
export function nextBackoffMs(failed: number): number | null {
  if (failed >= MAX_ATTEMPTS) return null;
  return BACKOFF_MINUTES[Math.max(1, failed) - 1] * 60_000;
}

/** The delivery after an attempt: delivered, rescheduled with backoff, or given up. */
export function afterAttempt(
  delivery: NotificationDelivery,
  result: DeliveryAttempt,
  now: Date,
): NotificationDelivery {
  const attempts = [...delivery.attempts, result];
  const base = { ...delivery, attempts, leaseUntil: null, updatedAt: now.toISOString() };
  if (result.ok) return { ...base, status: "delivered", nextAttemptAt: null, dueMs: null };
  const wait = nextBackoffMs(attempts.length);
  if (wait === null) return { ...base, status: "failed", nextAttemptAt: null, dueMs: null };
  const due = now.getTime() + wait;
  return { ...base, status: "pending", nextAttemptAt: new Date(due).toISOString(), dueMs: due };
}
