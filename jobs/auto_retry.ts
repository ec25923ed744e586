/** Minute job: one automatic retry for each failed, retryable latest run (within the daily budget). */
import { autoRetryRuns } from "../domain/runs.ts";

export async function autoRetry(kv: Deno.Kv, now: Date) {
  return await autoRetryRuns(kv, now);
}
