/** Minute job: one automatic retry for each failed, retryable latest run (within the daily budget). */
import { retryPlatformJob } from "../domain/platforms.ts";
import { AUTO_RETRY_MAX, autoRetryRuns } from "../domain/auto_retry.ts";

/**
 * Native runs get agent (or BES) jobs; platform runs a pending run that the platform's next sync starts.
 * Retry glossary: the **auto-retry** (README › Architecture › "Retry: six meanings").
 */
export async function autoRetry(kv: Deno.Kv, now: Date) {
  return await autoRetryRuns(kv, now, AUTO_RETRY_MAX, retryPlatformJob);
}
