/**
 * Minute job: expired job leases go back to the queue, or fail with LEASE_EXPIRED after the last
 * attempt — and then their runs fail too (run_lifecycle.ts `failRunsOfExpiredJobs`). It also drops the queue
 * counters' minute buckets that reached zero (ops_counters.ts).
 */
import { expireLeases as expire } from "../domain/job_queue.ts";
import { pruneQueueCounts } from "../domain/ops_counters.ts";
import { failRunsOfExpiredJobs } from "../domain/run_lifecycle.ts";

export async function expireLeases(kv: Deno.Kv, now: Date) {
  const { requeued, failed, failedIds } = await expire(kv, now);
  const runsFailed = await failRunsOfExpiredJobs(kv, failedIds, now);
  const queueBucketsPruned = await pruneQueueCounts(kv);
  return { requeued, failed, runsFailed, queueBucketsPruned };
}
