/**
 * The auto-retry (README › Architecture › "Retry: six meanings"): failed, retryable runs are indexed as
 * they end, and the automatic retry job gives each one retry through `retryRun` (run_retry.ts) after a
 * delay, within a daily budget per policy and host.
 */
import { autoRetryCountKey, retryablePrefix } from "./keys/runs.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { type Actor, systemActor } from "./rbac.ts";
import type { RetryableEntry } from "./runs.ts";
import { retryRun } from "./run_retry.ts";

/** Automatic retries allowed per policy and host per UTC day (the guide's "up to 3 times"). */
export const AUTO_RETRY_MAX = 3;

/**
 * How long a failure waits before its automatic retry: the cause (a full target, an unreachable share) gets
 * a moment to clear, and an operator looking at the failure can retry by hand first.
 */
export const AUTO_RETRY_DELAY_MS = 10 * 60_000;

/**
 * The automatic retry job: each failed, retryable run that is still its host's latest gets one retry,
 * AUTO_RETRY_DELAY_MS after it failed
 * (through `retryRun` — or, for a platform job's run, the `retryPlatformJob` passed in — so the same
 * rules hold: never while a run is pending or running, one retry per run, retry runs not retryable),
 * within `max` automatic retries per policy (or platform job) and host per UTC day.
 * Retry glossary: the **auto-retry** (README › Architecture › "Retry: six meanings").
 */
export async function autoRetryRuns(
  kv: Deno.Kv,
  now: Date,
  max = AUTO_RETRY_MAX,
  retryPlatformJob?: (kv: Deno.Kv, actor: Actor, jobId: string, now: Date) => Promise<unknown>,
): Promise<{ retried: number; skipped: number }> {
  const system = systemActor("auto-retry");
  const day = now.toISOString().slice(0, 10);
  let retried = 0;
  let skipped = 0;
  for await (
    const e of kv.list<RetryableEntry>({ prefix: retryablePrefix() })
  ) {
    const runId = String(e.key[1]);
    if (e.value.at && Date.parse(e.value.at) + AUTO_RETRY_DELAY_MS > now.getTime()) continue; // not yet
    const countKey = autoRetryCountKey(e.value.policyId, e.value.hostId, day);
    const count = await kv.get<number>(countKey);
    if ((count.value ?? 0) >= max) {
      skipped++;
      continue; // budget spent today; the entry stays for tomorrow unless superseded
    }
    try {
      // A platform job's retry is a pending run its platform's next sync starts; it retries the job's
      // latest run, and refuses (like retryRun) when that is not a failed retryable run or one is in flight.
      if (e.value.platform) {
        if (!retryPlatformJob) continue;
        await retryPlatformJob(kv, system, e.value.policyId, now);
      } else await retryRun(kv, system, runId, now);
      await kv.atomic().check(count).set(countKey, (count.value ?? 0) + 1, { expireIn: 2 * 86_400_000 })
        .delete(e.key).commit();
      retried++;
    } catch (error) {
      if (
        !(error instanceof ValidationError) && !(error instanceof ConflictError) &&
        !(error instanceof NotFoundError)
      ) {
        throw error;
      }
      await kv.delete(e.key); // superseded, already retried, or gone: nothing left to retry
      skipped++;
    }
  }
  return { retried, skipped };
}
