/**
 * The KV keys of a run and of its job link, in a module of their own: the job queue (job_queue.ts) marks a
 * run running in the same atomic write as the claim of its job, and runs.ts builds on job_queue.ts.
 */
export function runKey(id: string) {
  return ["runs", id] as const;
}
export function runByJobKey(jobId: string) {
  return ["runs_by_job", jobId] as const;
}
/**
 * The runs of a policy still pending or running, per host (`"bes"` for a BES run): written with the
 * run, removed when it ends, so "is a run of this policy and host in flight?" is one short list (run
 * now refuses then). A reader confirms each entry against its run, so a missed removal never blocks.
 */
export function runsOpenKey(policyId: string, hostId: string | null, runId: string) {
  return ["runs_open", policyId, hostId ?? "bes", runId] as const;
}
/** The prefix of `runsOpenKey` entries: every open run, a policy's, or a policy's on one host (null: its BES). */
export function runsOpenPrefix(policyId?: string, hostId?: string | null): Deno.KvKey {
  if (policyId === undefined) return ["runs_open"];
  return hostId === undefined ? ["runs_open", policyId] : ["runs_open", policyId, hostId ?? "bes"];
}
