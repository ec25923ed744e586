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

export function runsByPolicyKey(policyId: string, id: string) {
  return ["runs_by_policy", policyId, id] as const;
}

/** At most one retry per failed run: the guard key every retry of that run must create. */
export function retryGuardKey(runId: string) {
  return ["run_retries", runId] as const;
}

/** A run waiting for its offline agent (catch-up on reconnect dispatches it). */
export function deferredKey(hostId: string, runId: string) {
  return ["runs_deferred", hostId, runId] as const;
}

/** The prefix of a policy's runs (`runsByPolicyKey`). */
export function runsByPolicyPrefix(policyId: string): Deno.KvKey {
  return ["runs_by_policy", policyId];
}

/** A job retry being dispatched a write at a time (job_views.ts), per policy and retried run. */
export function retryDispatchKey(policyId: string, retryOf: string) {
  return ["job_retry_dispatch", policyId, retryOf] as const;
}
/** The prefix of every job retry being dispatched. */
export function retryDispatchPrefix(): Deno.KvKey {
  return ["job_retry_dispatch"];
}
