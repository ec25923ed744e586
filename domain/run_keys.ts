/**
 * The KV keys of a run and of its job link, in a module of their own: the job queue (jobs.ts) marks a
 * run running in the same atomic write as the claim of its job, and runs.ts builds on jobs.ts.
 */
export function runKey(id: string) {
  return ["runs", id] as const;
}
export function runByJobKey(jobId: string) {
  return ["runs_by_job", jobId] as const;
}
