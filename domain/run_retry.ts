/**
 * Retrying one run, as the dashboard's failed-backups queue, the policy page and `POST
 * /api/v1/runs/{runId}/retry` do it: one function behind all of them.
 */
import { NotFoundError } from "./errors.ts";
import { retryJob } from "./job_views.ts";
import { type Actor, inScope } from "./rbac.ts";
import { retryRun, type Run, runKey } from "./runs.ts";

export interface RunRetryOutcome {
  /** The retry run(s) queued: one for a native run; the platform job's pending run for a platform run. */
  runs: Run[];
  /** True for a platform run: the platform's next sync starts the retry. */
  platform: boolean;
}

/**
 * Retries the run `runId`. A native run follows `retryRun` (only the latest run of its policy and host,
 * failed or warning, retryable, not retried yet); a platform run is job-level, so its retry is the
 * platform job's (`retryJob`: one pending run that the platform's next sync starts).
 *
 * Throws NotFoundError when the run does not exist or is outside the actor's scope, ForbiddenError
 * without backup.manage, ValidationError when the guide's rules refuse (the message says why) and
 * ConflictError when the run was already retried (or its BES or target is gone).
 * Retry glossary: the **run retry** (README › Architecture › "Retry: six meanings").
 */
export async function retrySingleRun(
  kv: Deno.Kv,
  actor: Actor,
  runId: string,
  now: Date,
): Promise<RunRetryOutcome> {
  const run = (await kv.get<Run>(runKey(runId))).value;
  if (!run || !inScope(actor, { accountId: run.accountId, orgId: run.orgId })) {
    throw new NotFoundError("Run not found");
  }
  if ("platform" in run) {
    const { runs } = await retryJob(kv, actor, run.policyId, now);
    return { runs, platform: true };
  }
  return { runs: [await retryRun(kv, actor, runId, now)], platform: false };
}
