/**
 * Minute job: expired job leases go back to the queue, or fail with LEASE_EXPIRED after the last
 * attempt — and then their runs fail too (runs.ts `failRunsOfExpiredJobs`).
 */
import { expireLeases as expire } from "../domain/jobs.ts";
import { failRunsOfExpiredJobs } from "../domain/runs.ts";

export async function expireLeases(kv: Deno.Kv, now: Date) {
  const { requeued, failed, failedIds } = await expire(kv, now);
  const runsFailed = await failRunsOfExpiredJobs(kv, failedIds, now);
  return { requeued, failed, runsFailed };
}
