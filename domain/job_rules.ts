/**
 * The job-level retry rule of the guide ("Retrying a Failed Job"), as one pure function. Dependency-free:
 * the server enforces it (domain/job_views.ts `retryJob`) and the RetryJob island shows the same reason
 * from the same facts, so the page never offers a retry the server would refuse.
 */

/** Statuses a run can have (domain/runs.ts `RunStatus`). */
export type JobRunStatus = "pending" | "running" | "success" | "warning" | "failed" | "skipped";

/** What the retry rule looks at; the server reads it fresh for each retry. */
export interface RetryFacts {
  /** The job's newest run (its policy's newest), or null when it never ran. */
  latest: { status: JobRunStatus; retryable: boolean; trigger: string; kind: string } | null;
  /** Other runs of the job still pending or running (another host of the same dispatch, a deferred run). */
  inFlight: number;
  /** Active hosts a native retry dispatches to; null for jobs that do not dispatch to hosts. */
  activeHosts: number | null;
  /** Set while the system pauses the job (a storage target at critical capacity). */
  pausedReason: string | null;
}

/**
 * Runs scanned (newest first) for `inFlight`: other runs still pending or running before a retry, for
 * native and platform jobs alike.
 */
export const RETRY_SCAN_LIMIT = 200;

/** Why a retry of the job is refused right now, in words for the operator; null when it is allowed. */
export function retryBlockedReason(facts: RetryFacts): string | null {
  const latest = facts.latest;
  if (!latest) return "This job has never run, so there is nothing to retry.";
  if (latest.status === "pending" || latest.status === "running") {
    return `The latest run is still ${latest.status}.`;
  }
  if (latest.status === "success") {
    return "The latest run succeeded: only a failed or warning run can be retried.";
  }
  if (latest.status === "skipped") {
    return "The latest run was skipped: only a failed or warning run can be retried.";
  }
  if (!latest.retryable) {
    return latest.trigger === "retry"
      ? "The latest run is itself a retry, and retry runs are not retryable."
      : "The latest run is not marked retryable.";
  }
  if (facts.inFlight > 0) {
    return facts.inFlight === 1
      ? "Another run of this job is still pending or running."
      : `${facts.inFlight} other runs of this job are still pending or running.`;
  }
  if (facts.pausedReason) {
    return facts.pausedReason === "storage_critical"
      ? "The job is paused: its storage target is at critical capacity."
      : `The job is paused (${facts.pausedReason}).`;
  }
  // A synthetic full too dispatches per active host (one BES job per host namespace).
  if (facts.activeHosts === 0) {
    return "The policy has no active hosts to dispatch to.";
  }
  return null;
}
