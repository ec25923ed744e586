/**
 * Notification delivery: alerts write `AlertEvent`s into a transactional outbox (alerts.ts);
 * `dispatchAlertEvents` turns each event into one delivery per routed channel (notification_rules.ts) — a
 * job table in KV with a due-time index, no `kv.enqueue` — and `deliverDue` sends what is due under a
 * lease (signed webhook POST or SMTP email), retrying failures with the delivery backoff of
 * notification_backoff.ts. Every attempt is kept for the delivery log (`listDeliveries`), purged after
 * `DELIVERY_RETENTION_MS`.
 */
import { alertEventsPrefix } from "./keys/alerts.ts";
import { createHmac } from "node:crypto";
import { encodeTime } from "ulid";
import { z } from "zod";
import { type Alert, type AlertEvent, alertEventKey, alertKey, type AlertSeverity } from "./alerts.ts";
import { appendAudit } from "./audit.ts";
import { CursorField, CursorList } from "./cursor.ts";
import { newId } from "./ids.ts";
import type { Page } from "./kv.ts";
import { type Actor, inScope } from "./rbac.ts";
import { sendMail, type SmtpConnector, smtpConnector, SmtpError } from "./smtp.ts";
import { countDeliveryChange } from "./ops_counters.ts";
import { readVaultSecret } from "./vault.ts";
import {
  deliveriesByAccountKey,
  deliveriesByAccountPrefix,
  deliveriesByChannelKey,
  deliveriesByChannelPrefix,
  deliveriesStart,
  deliveryDueEnd,
  deliveryDueKey,
  deliveryDueStart,
  deliveryKey,
} from "./keys/notifications.ts";
import {
  CHANNEL,
  channelScope,
  type ChannelType,
  displayUrl,
  entryForChange,
  getChannel,
  type NotificationChannel,
  summarizeChannel,
} from "./notification_channels.ts";
import { loadRouting, type NotificationEvent, routeEvent } from "./notification_rules.ts";
import { afterAttempt } from "./notification_backoff.ts";

export const DELIVERY_STATUSES = ["pending", "delivered", "failed"] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];
/** How long a claimed delivery stays with its sender; longer than any send can take. */
export const LEASE_MS = 2 * 60_000;
export const WEBHOOK_TIMEOUT_MS = 10_000;
export const SMTP_TIMEOUT_MS = 30_000;
/** Finished deliveries older than this are purged from the log. */
export const DELIVERY_RETENTION_MS = 30 * 86_400_000;
/** Header names of a signed webhook. */
export const SIGNATURE_HEADER = "X-Cadres-Signature";
export const TIMESTAMP_HEADER = "X-Cadres-Timestamp";

/** What a notification says; the webhook body and the email are built from it. */
export interface NotificationPayload {
  event: NotificationEvent | "test";
  alertId: string | null;
  accountId: string;
  orgId: string | null;
  subject: { type: string; id: string; name: string } | null;
  reason: string | null;
  severity: AlertSeverity;
  message: string;
  /** How many times the condition was raised while the alert was open. */
  count: number;
  occurredAt: string;
  openedAt: string | null;
  resolvedAt: string | null;
}

export interface DeliveryAttempt {
  number: number;
  at: string;
  ok: boolean;
  durationMs: number;
  httpStatus: number | null;
  smtpReply: string | null;
  error: string | null;
}

export interface NotificationDelivery {
  id: string;
  accountId: string;
  /** The org of the alert (what the content is about); readers need it in scope, and the channel's. */
  orgId: string | null;
  channelId: string;
  channelName: string;
  channelType: ChannelType;
  channelOrgId: string | null;
  ruleIds: string[];
  payload: NotificationPayload;
  status: DeliveryStatus;
  attempts: DeliveryAttempt[];
  /** When the next attempt is due (pending only). */
  nextAttemptAt: string | null;
  /** While a sender holds it: until when. */
  leaseUntil: string | null;
  /** The time component of this delivery's current due-index key (pending only). */
  dueMs: number | null;
  createdAt: string;
  updatedAt: string;
}

/** Every key of a delivery but the due index (which moves with each attempt). */
function deliveryKeys(d: Pick<NotificationDelivery, "id" | "accountId" | "channelId">): Deno.KvKey[] {
  return [
    deliveryKey(d.id),
    deliveriesByAccountKey(d.accountId, d.id),
    deliveriesByChannelKey(d.channelId, d.id),
  ];
}

/** Adds a new delivery with its indexes (and its due-index entry while pending) to `op`. */
function setDelivery(op: Deno.AtomicOperation, d: NotificationDelivery): Deno.AtomicOperation {
  const [primary, byAccount, byChannel] = deliveryKeys(d);
  op.set(primary, d).set(byAccount, d.id).set(byChannel, d.id);
  if (d.dueMs !== null) op.set(deliveryDueKey(d.dueMs, d.id), d.id);
  countDeliveryChange(op, d.accountId, null, d.status);
  return op;
}

/** A delivery is visible to those who may see both its alert and its channel. */
function deliveryVisible(actor: Actor, d: NotificationDelivery): boolean {
  return inScope(actor, { accountId: d.accountId, orgId: d.orgId }) &&
    inScope(actor, { accountId: d.accountId, orgId: d.channelOrgId });
}

// ---------------------------------------------------------------------------------------------------
// Dispatch

function payloadOf(event: AlertEvent, alert: Alert | null): NotificationPayload {
  return {
    event: event.event,
    alertId: event.alertId,
    accountId: event.accountId,
    orgId: event.orgId,
    subject: { type: event.subjectType, id: event.subjectId, name: event.subjectName },
    reason: event.reason,
    severity: event.severity,
    message: event.message,
    count: event.count,
    occurredAt: event.at,
    openedAt: alert?.openedAt ?? (event.event === "opened" ? event.at : null),
    resolvedAt: event.event === "resolved" ? (alert?.resolvedAt ?? event.at) : null,
  };
}

/** A new pending delivery, due at `now`. */
function newDelivery(
  channel: NotificationChannel,
  payload: NotificationPayload,
  ruleIds: string[],
  now: Date,
): NotificationDelivery {
  const at = now.toISOString();
  return {
    id: newId(now),
    accountId: channel.accountId,
    orgId: payload.orgId,
    channelId: channel.id,
    channelName: channel.name,
    channelType: channel.type,
    channelOrgId: channel.orgId,
    ruleIds,
    payload,
    status: "pending",
    attempts: [],
    nextAttemptAt: at,
    leaseUntil: null,
    dueMs: now.getTime(),
    createdAt: at,
    updatedAt: at,
  };
}

/** Deliveries written per event at most (4 keys each, well under the 1000-mutation limit). */
const MAX_DELIVERIES_PER_EVENT = 100;

/**
 * Turns each outbox event into one pending delivery per routed channel and deletes the event, in one
 * atomic operation checked on the event: safe to run concurrently (the loser's check fails) and to
 * re-run (a handled event is gone). Returns how many events and deliveries it handled.
 */
export async function dispatchAlertEvents(
  kv: Deno.Kv,
  now: Date,
  options: { maxEvents?: number } = {},
): Promise<{ events: number; deliveries: number }> {
  const maxEvents = options.maxEvents ?? 1000;
  const routing = new Map<string, Awaited<ReturnType<typeof loadRouting>>>();
  let events = 0;
  let deliveries = 0;
  for await (const entry of kv.list<AlertEvent>({ prefix: alertEventsPrefix() }, { limit: maxEvents })) {
    const event = entry.value;
    let accountRouting = routing.get(event.accountId);
    if (!accountRouting) {
      accountRouting = await loadRouting(kv, event.accountId);
      routing.set(event.accountId, accountRouting);
    }
    const routes = routeEvent(event, accountRouting.rules, accountRouting.channels)
      .slice(0, MAX_DELIVERIES_PER_EVENT);
    const alert = routes.length ? (await kv.get<Alert>(alertKey(event.alertId))).value : null;
    const payload = payloadOf(event, alert);
    const op = kv.atomic().check(entry).delete(alertEventKey(event.id));
    for (const { channel, ruleIds } of routes) {
      setDelivery(op, newDelivery(channel, payload, ruleIds, now));
    }
    if ((await op.commit()).ok) {
      events++;
      deliveries += routes.length;
    }
  }
  return { events, deliveries };
}

// ---------------------------------------------------------------------------------------------------
// Sending

/** `sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`, the value of X-Cadres-Signature. */
export function signWebhook(secret: string, timestamp: string, body: string): string {
  return "sha256=" + createHmac("sha256", secret).update(`${timestamp}.${body}`).digest("hex");
}

/** The JSON body of a webhook attempt. */
export function webhookBody(
  delivery: Pick<NotificationDelivery, "id" | "payload">,
  attempt: number,
  now: Date,
  baseUrl?: string,
): string {
  const p = delivery.payload;
  return JSON.stringify({
    deliveryId: delivery.id,
    event: p.event,
    alertId: p.alertId,
    accountId: p.accountId,
    orgId: p.orgId,
    subject: p.subject,
    reason: p.reason,
    severity: p.severity,
    message: p.message,
    count: p.count,
    occurredAt: p.occurredAt,
    openedAt: p.openedAt,
    resolvedAt: p.resolvedAt,
    sentAt: now.toISOString(),
    attempt,
    ...(baseUrl ? { url: `${baseUrl}/backup/alerts` } : {}),
  });
}

const REASON_LABELS: Record<string, string> = {
  engine_offline: "engine offline",
  engine_degraded: "engine degraded",
  storage_warning: "storage needs attention",
  storage_critical: "storage critical",
  storage_full_soon: "storage full within 14 days",
  host_offline: "host offline",
  backup_failed: "backup failed",
  rpo_breach: "RPO breached",
  invariant_violation: "stored data inconsistent",
  drill_failed: "restore drill failed",
  rto_breach: "RTO objective breached",
  suspicious_change: "suspicious change (possible ransomware)",
};

/** The subject line and plain-text body of a notification email. */
export function emailContent(
  delivery: Pick<NotificationDelivery, "id" | "payload" | "channelName">,
  baseUrl?: string,
): { subject: string; text: string } {
  const p = delivery.payload;
  const what = p.subject ? `${p.subject.name}: ${REASON_LABELS[p.reason ?? ""] ?? p.reason}` : p.message;
  const subject = p.event === "test"
    ? `[Cadres] Test notification for ${delivery.channelName}`
    : p.event === "resolved"
    ? `[Cadres] RESOLVED ${what}`
    : `[Cadres] ${p.severity.toUpperCase()} ${what}`;
  const lines = [
    p.event === "test"
      ? "This is a test notification from Cadres Backup."
      : `Alert ${p.event} (${p.severity})`,
    "",
    p.message,
    "",
  ];
  if (p.subject) {
    lines.push(`Subject:    ${p.subject.type.replaceAll("_", " ")} ${p.subject.name} (${p.subject.id})`);
  }
  if (p.reason) lines.push(`Reason:     ${p.reason}`);
  lines.push(`Severity:   ${p.severity}`);
  if (p.alertId) lines.push(`Raised:     ${p.count} time${p.count === 1 ? "" : "s"}`);
  if (p.openedAt) lines.push(`Opened:     ${p.openedAt}`);
  if (p.resolvedAt) lines.push(`Resolved:   ${p.resolvedAt}`);
  lines.push(`Event time: ${p.occurredAt}`);
  if (p.alertId) lines.push(`Alert id:   ${p.alertId}`);
  lines.push(`Delivery:   ${delivery.id}`);
  if (baseUrl) lines.push("", `Alerts: ${baseUrl}/backup/alerts`);
  return { subject: subject.replace(/[\r\n]+/g, " ").slice(0, 200), text: lines.join("\n") + "\n" };
}

/** How deliveries reach the outside world; tests inject loopback servers' clients. */
export interface NotificationTransports {
  fetch: typeof fetch;
  smtp: SmtpConnector;
}

export interface SendOptions {
  masterKey: Uint8Array;
  transports?: Partial<NotificationTransports>;
  /** Public URL of the app, for a link in notifications. */
  baseUrl?: string;
  webhookTimeoutMs?: number;
  smtpTimeoutMs?: number;
}

function errorLine(error: unknown, url?: string): string {
  let text = error instanceof Error ? error.message : String(error);
  // fetch says only "fetch failed"; the reason (refused, DNS, TLS) is its cause.
  const cause = error instanceof Error ? error.cause : undefined;
  if (cause instanceof Error && cause.message) text += `: ${cause.message}`;
  // Network errors quote the URL, whose path may carry a token.
  if (url) {
    text = text.replaceAll(url, displayUrl(url));
    if (URL.canParse(url)) text = text.replaceAll(new URL(url).href, displayUrl(url));
  }
  return text.split("\n")[0].slice(0, 300);
}

/** The start of a response body (for the error line), without reading a large body to its end. */
async function readSnippet(res: Response): Promise<string> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = "";
  try {
    while (text.length < 1000) {
      const { done, value } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
  } catch {
    // A body cut short (or timed out) still leaves the status to report.
  } finally {
    reader.cancel().catch(() => {});
  }
  return text;
}

/** Makes one attempt to send `delivery` through `channel`; never throws. */
async function attempt(
  kv: Deno.Kv,
  delivery: NotificationDelivery,
  channel: NotificationChannel,
  number: number,
  now: Date,
  options: SendOptions,
): Promise<DeliveryAttempt> {
  const started = performance.now();
  const result = (fields: Partial<DeliveryAttempt> & { ok: boolean }): DeliveryAttempt => ({
    number,
    at: now.toISOString(),
    durationMs: Math.round(performance.now() - started),
    httpStatus: null,
    smtpReply: null,
    error: null,
    ...fields,
  });
  try {
    if (channel.type === "webhook") {
      const secret = await readVaultSecret(kv, options.masterKey, channel.secretId);
      if (secret === null) {
        return result({ ok: false, error: "The channel's signing secret is missing from the vault" });
      }
      const body = webhookBody(delivery, number, now, options.baseUrl);
      const timestamp = String(Math.floor(now.getTime() / 1000));
      const doFetch = options.transports?.fetch ?? fetch;
      let res: Response;
      try {
        res = await doFetch(channel.url, {
          method: "POST",
          headers: {
            "content-type": "application/json",
            "user-agent": "Cadres-Backup-Notifications/1",
            "x-cadres-event": delivery.payload.event,
            "x-cadres-delivery": delivery.id,
            [TIMESTAMP_HEADER]: timestamp,
            [SIGNATURE_HEADER]: signWebhook(secret, timestamp, body),
          },
          body,
          redirect: "manual",
          signal: AbortSignal.timeout(options.webhookTimeoutMs ?? WEBHOOK_TIMEOUT_MS),
        });
      } catch (error) {
        const timedOut = error instanceof DOMException && error.name === "TimeoutError";
        return result({
          ok: false,
          error: timedOut
            ? `No response within ${(options.webhookTimeoutMs ?? WEBHOOK_TIMEOUT_MS) / 1000} s`
            : errorLine(error, channel.url),
        });
      }
      const text = await readSnippet(res);
      if (res.status >= 200 && res.status < 300) return result({ ok: true, httpStatus: res.status });
      const snippet = text.replace(/\s+/g, " ").trim().slice(0, 200);
      return result({
        ok: false,
        httpStatus: res.status,
        error:
          `HTTP ${res.status}${
            res.status >= 300 && res.status < 400 ? " (redirects are not followed)" : ""
          }` +
          (snippet ? `: ${snippet}` : ""),
      });
    }
    const password = channel.passwordId
      ? await readVaultSecret(kv, options.masterKey, channel.passwordId)
      : null;
    if (channel.passwordId && password === null) {
      return result({ ok: false, error: "The channel's SMTP password is missing from the vault" });
    }
    const { subject, text } = emailContent(delivery, options.baseUrl);
    const domain = channel.from.split("@")[1] ?? "cadres.invalid";
    const sent = await sendMail({
      host: channel.host,
      port: channel.port,
      tlsMode: channel.tlsMode,
      username: channel.username || undefined,
      password: password ?? undefined,
      timeoutMs: options.smtpTimeoutMs ?? SMTP_TIMEOUT_MS,
      connector: options.transports?.smtp ?? smtpConnector(),
    }, {
      from: channel.from,
      to: channel.to,
      subject,
      text,
      date: now,
      messageId: `${delivery.id}.${number}@${domain}`,
    });
    return result({ ok: true, smtpReply: sent.reply });
  } catch (error) {
    return result({
      ok: false,
      smtpReply: error instanceof SmtpError ? error.reply : null,
      error: errorLine(error),
    });
  }
}

/** Writes `next` over the claimed delivery, moving its due index; false when the lease was lost. */
async function finish(
  kv: Deno.Kv,
  claimed: { key: Deno.KvKey; versionstamp: string },
  leased: NotificationDelivery,
  next: NotificationDelivery,
): Promise<boolean> {
  const op = kv.atomic().check(claimed).set(deliveryKey(next.id), next);
  countDeliveryChange(op, next.accountId, leased.status, next.status);
  if (leased.dueMs !== null) op.delete(deliveryDueKey(leased.dueMs, leased.id));
  if (next.dueMs !== null) op.set(deliveryDueKey(next.dueMs, next.id), next.id);
  return (await op.commit()).ok;
}

/** Claims, sends and records one due delivery. Returns its new status, or null when skipped. */
async function deliverOne(
  kv: Deno.Kv,
  due: Deno.KvEntry<string>,
  now: Date,
  options: SendOptions,
): Promise<DeliveryStatus | null> {
  const id = due.value;
  const entry = await kv.get<NotificationDelivery>(deliveryKey(id));
  const delivery = entry.value;
  if (!delivery || delivery.status !== "pending" || delivery.dueMs !== due.key[1]) {
    // A stale index entry (its delivery finished or moved): drop it if nothing changed since.
    await kv.atomic().check(due).delete(due.key).commit();
    return null;
  }
  // Claim: move the due index to the lease's end, so a crashed sender's delivery comes back then.
  const leaseEnd = now.getTime() + LEASE_MS;
  const leased: NotificationDelivery = {
    ...delivery,
    leaseUntil: new Date(leaseEnd).toISOString(),
    dueMs: leaseEnd,
    updatedAt: now.toISOString(),
  };
  const claim = await kv.atomic().check(entry, due)
    .delete(due.key)
    .set(deliveryKey(id), leased)
    .set(deliveryDueKey(leaseEnd, id), id)
    .commit();
  if (!claim.ok) return null; // another sender has it
  const claimed = { key: deliveryKey(id), versionstamp: claim.versionstamp };
  const number = delivery.attempts.length + 1;
  const channel = await getChannel(kv, delivery.channelId);
  const result: DeliveryAttempt = channel?.enabled
    ? await attempt(kv, leased, channel, number, now, options)
    : {
      number,
      at: now.toISOString(),
      ok: false,
      durationMs: 0,
      httpStatus: null,
      smtpReply: null,
      error: channel ? "Not sent: the channel is disabled" : "Not sent: the channel was deleted",
    };
  const next = afterAttempt(leased, result, now);
  // A missing or disabled channel will not recover by retrying: give up now.
  if (!channel?.enabled) Object.assign(next, { status: "failed", nextAttemptAt: null, dueMs: null });
  return (await finish(kv, claimed, leased, next)) ? next.status : null;
}

/**
 * Sends the deliveries due at `now` (at most `limit`, `concurrency` at a time). Each is claimed with a
 * lease first (atomic check), so two instances never send one delivery concurrently; a failure is
 * rescheduled after 1, 2, 4, 8, 16 minutes and given up after MAX_ATTEMPTS. Idempotent per `now`.
 */
export async function deliverDue(
  kv: Deno.Kv,
  now: Date,
  options: SendOptions & { limit?: number; concurrency?: number },
): Promise<{ attempted: number; delivered: number; retrying: number; failed: number }> {
  const due: Deno.KvEntry<string>[] = [];
  const iter = kv.list<string>(
    { start: deliveryDueStart(), end: deliveryDueEnd(now.getTime()) },
    { limit: options.limit ?? 100 },
  );
  for await (const e of iter) due.push(e);
  const out = { attempted: 0, delivered: 0, retrying: 0, failed: 0 };
  const queue = [...due];
  const worker = async () => {
    for (let e = queue.shift(); e; e = queue.shift()) {
      const status = await deliverOne(kv, e, now, options);
      if (status === null) continue;
      out.attempted++;
      if (status === "delivered") out.delivered++;
      else if (status === "failed") out.failed++;
      else out.retrying++;
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency ?? 8) }, worker));
  return out;
}

/**
 * Sends a test notification through a channel now (enabled or not) and records it in the delivery
 * log with its one attempt, together with an audit entry. Needs backup.manage on the channel.
 */
export async function sendTestNotification(
  kv: Deno.Kv,
  actor: Actor,
  channelId: string,
  options: SendOptions & { now: Date },
): Promise<NotificationDelivery> {
  const { now } = options;
  const channel = (await entryForChange(kv, actor, CHANNEL, channelId)).value;
  const payload: NotificationPayload = {
    event: "test",
    alertId: null,
    accountId: channel.accountId,
    orgId: channel.orgId,
    subject: null,
    reason: null,
    severity: "info",
    message: `Test notification for channel ${channel.name}, sent by ${actor.label}.`,
    count: 0,
    occurredAt: now.toISOString(),
    openedAt: null,
    resolvedAt: null,
  };
  const pending = newDelivery(channel, payload, [], now);
  const result = await attempt(kv, pending, channel, 1, now, options);
  const delivery: NotificationDelivery = {
    ...pending,
    status: result.ok ? "delivered" : "failed",
    attempts: [result],
    nextAttemptAt: null,
    dueMs: null,
  };
  const op = setDelivery(kv.atomic(), delivery);
  appendAudit(op, actor, {
    ...channelScope(channel),
    action: "notification_channel.test",
    objectType: "notification_channel",
    objectId: channel.id,
    summary: `Sent a test notification through ${summarizeChannel(channel)}: ${
      result.ok ? "delivered" : "failed"
    }`,
  }, now);
  await op.commit();
  return delivery;
}

// ---------------------------------------------------------------------------------------------------
// The delivery log

export const DeliveryFilter = z.object({
  channelId: z.string().max(40).catch(""),
  status: z.enum(["", ...DELIVERY_STATUSES]).catch(""),
  cursor: CursorField,
  limit: z.coerce.number().int().min(1).max(200).catch(50),
});
export type DeliveryFilter = z.infer<typeof DeliveryFilter>;

/**
 * Deliveries the actor may see, newest first, filtered by channel and status; cursor-paginated. Missing
 * or bad filter fields take their defaults (as on the page). Throws InvalidCursorError.
 */
export async function listDeliveries(
  kv: Deno.Kv,
  actor: Actor,
  query: Partial<z.input<typeof DeliveryFilter>> = {},
): Promise<Page<NotificationDelivery>> {
  const filter = DeliveryFilter.parse(query);
  if (!actor.accountId) return { values: [], cursor: "" };
  const prefix = filter.channelId
    ? deliveriesByChannelPrefix(filter.channelId)
    : deliveriesByAccountPrefix(actor.accountId);
  const iter = CursorList.fromCursor<string>(kv, { prefix }, filter.cursor, {
    reverse: true,
    batchSize: 100,
  });
  const values: NotificationDelivery[] = [];
  // Each key is read with the cursor just after it, so a page ends exactly at its last row.
  let batch: Array<{ key: Deno.KvKey; cursor: string }> = [];
  let scanned = 0;
  const flush = async (): Promise<string | null> => {
    const entries = await kv.getMany<NotificationDelivery[]>(batch.map((b) => b.key));
    for (const [i, { value: d }] of entries.entries()) {
      if (!d || d.accountId !== actor.accountId || !deliveryVisible(actor, d)) continue;
      if (filter.status && d.status !== filter.status) continue;
      values.push(d);
      if (values.length >= filter.limit) return batch[i].cursor;
    }
    batch = [];
    return null;
  };
  for await (const e of iter) {
    batch.push({ key: deliveryKey(e.value), cursor: iter.cursor });
    scanned++;
    if (batch.length === 10 || scanned >= 5000) {
      const cursor = await flush();
      if (cursor !== null) return { values, cursor };
      if (scanned >= 5000) return { values, cursor: iter.cursor };
    }
  }
  const cursor = batch.length ? await flush() : null;
  return { values, cursor: cursor ?? "" };
}

/** Deletes finished deliveries older than `DELIVERY_RETENTION_MS` (ids are time-ordered). */
export async function purgeDeliveries(
  kv: Deno.Kv,
  now: Date,
  options: { limit?: number } = {},
): Promise<number> {
  const cutoff = encodeTime(Math.max(0, now.getTime() - DELIVERY_RETENTION_MS), 10) + "0".repeat(16);
  let removed = 0;
  const iter = kv.list<NotificationDelivery>(
    { start: deliveriesStart(), end: deliveryKey(cutoff) },
    { limit: options.limit ?? 500 },
  );
  for await (const e of iter) {
    const d = e.value;
    if (d.status === "pending") continue;
    const op = kv.atomic().check(e);
    for (const key of deliveryKeys(d)) op.delete(key);
    countDeliveryChange(op, d.accountId, d.status, null);
    if ((await op.commit()).ok) removed++;
  }
  return removed;
}
