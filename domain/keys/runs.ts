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

/** Every run (the retention and invariant sweeps). */
export function runsPrefix(): Deno.KvKey {
  return ["runs"];
}
/** The claim of a policy's scheduled slot (one run per policy, kind and minute, across instances). */
export function scheduleSlotKey(policyId: string, kind: string, minute: string) {
  return ["schedule_slots", policyId, kind, minute] as const;
}
/** A failed run auto-retry may still try again (`runs_retryable`), and every such run. */
export function retryableKey(runId: string) {
  return ["runs_retryable", runId] as const;
}
export function retryablePrefix(): Deno.KvKey {
  return ["runs_retryable"];
}
/** How many auto-retries a policy's host (`"bes"`: the BES) had on one UTC day. */
export function autoRetryCountKey(policyId: string, hostId: string | null, day: string) {
  return ["auto_retry_count", policyId, hostId ?? "bes", day] as const;
}
/** Every deferred run (`deferredKey`). */
export function deferredPrefix(): Deno.KvKey {
  return ["runs_deferred"];
}

/** A per-policy write guard: two run-nows of one policy cannot both commit what each read. */
export function runNowGuardKey(policyId: string) {
  return ["run_now_guard", policyId] as const;
}

/** The last minute a scheduler tick evaluated (ISO time of its start). */
export function schedulerCursorKey() {
  return ["scheduler_cursor"] as const;
}
