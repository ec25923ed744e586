/**
 * The run retry (README › Architecture › "Retry: six meanings"): `retryRun` retries one failed or warning
 * native run under the guide's rules; `retrySingleRun` is what the dashboard's failed-backups queue, the
 * policy page and `POST /api/v1/runs/{runId}/retry` call, for native and platform runs alike.
 */
import { commitAudited } from "./audit.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { type Engine, engineKey } from "./engines.ts";
import { newId } from "./ids.ts";
import { retryGuardKey, runKey } from "./keys/runs.ts";
import { queueJobInOp } from "./job_queue.ts";
import type { Policy } from "./policies.ts";
import { policyKey } from "./keys/policies.ts";
import { type Host, hostKey } from "./hosts.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import type { StorageTarget } from "./storage.ts";
import { targetKey } from "./storage_keys.ts";
import { hostBackupPayload, hostsNeedingFull } from "./repositories.ts";
import { retryJob } from "./job_views.ts";
import { indexRunInOp, listRunsByPolicy, notStartedRunFields, type Run } from "./runs.ts";
import { buildBackupPayload, syntheticFullPayload } from "./backup_payload.ts";

/**
 * Retries a failed or warning run, exactly as the guide states: only the latest run of its policy and
 * host, only when it is retryable, never while a run of that policy and host is pending or running; the
 * retry run is not retryable itself. The retry job uses the same payload builder. Two retries racing
 * create exactly one run (invariant 5): each must create the run's guard key.
 * Retry glossary: the **run retry** (README › Architecture › "Retry: six meanings").
 */
export async function retryRun(
  kv: Deno.Kv,
  actor: Actor,
  runId: string,
  now: Date,
): Promise<Run> {
  const run = (await kv.get<Run>(runKey(runId))).value;
  if (!run || !inScope(actor, { accountId: run.accountId, orgId: run.orgId })) {
    throw new NotFoundError("Run not found");
  }
  authorize(actor, "backup.manage", { accountId: run.accountId, orgId: run.orgId });
  const siblings = (await listRunsByPolicy(kv, run.policyId, 200)).filter((r) => r.hostId === run.hostId);
  if (siblings[0]?.id !== run.id) {
    throw new ValidationError("Only the latest run can be retried", { run: "Not the latest run" });
  }
  if (run.status !== "failed" && run.status !== "warning") {
    throw new ValidationError("Only a failed or warning run can be retried", {
      run: `The run is ${run.status}`,
    });
  }
  if (!run.retryable) throw new ValidationError("This run is not retryable", { run: "Not retryable" });
  const host = run.hostId ? (await kv.get<Host>(hostKey(run.hostId))).value : null;
  if (host?.status === "decommissioned") {
    throw new ValidationError(`Host ${host.hostname} is decommissioned: assign it to a policy again first`, {
      run: "The host is decommissioned",
    });
  }
  const policy = (await kv.get<Policy>(policyKey(run.policyId))).value;
  if (!policy) throw new NotFoundError("The policy of this run is gone");
  const [engine, target] = await kv.getMany<[Engine, StorageTarget]>([
    engineKey(policy.besId),
    targetKey(policy.targetId),
  ]);
  if (!engine.value || !target.value) throw new ConflictError("The policy's BES or storage target is gone");
  const at = now.toISOString();
  const retry: Run = {
    ...run,
    id: newId(now),
    trigger: "retry",
    ...notStartedRunFields(at),
    scheduledFor: at,
  };
  let kind = run.kind;
  let payload: Record<string, unknown>;
  if (run.kind === "synthetic_full") {
    if (!run.hostId) {
      throw new ValidationError(
        "This synthetic full names no host (it predates one synthetic full per host, which the BES needs): " +
          "run a synthetic full of the policy now instead",
        { run: "The run names no host" },
      );
    }
    payload = { ...syntheticFullPayload(policy, target.value), hostId: run.hostId };
  } else {
    const built = await buildBackupPayload(kv, policy, engine.value, target.value, run.kind);
    const needsFull = await hostsNeedingFull(kv, policy, run.hostId ? [run.hostId] : []);
    ({ payload, kind } = hostBackupPayload(built, run.kind, run.hostId ?? "", needsFull));
  }
  retry.kind = kind;
  const principal = run.kind === "synthetic_full" ? `bes:${engine.value.id}` : `agent:${run.hostId}`;
  // The guard, the run, its job and the audit entry commit together: two racing retries create one.
  const op = kv.atomic().check({ key: retryGuardKey(run.id), versionstamp: null });
  const job = queueJobInOp(op, {
    kind: run.kind === "synthetic_full" ? "synthetic_full" : "backup",
    principal,
    accountId: run.accountId,
    orgId: run.orgId,
    payload,
    priority: "normal",
  }, now);
  retry.jobId = job.id;
  op.set(retryGuardKey(run.id), retry.id);
  indexRunInOp(op, retry);
  await commitAudited(
    op,
    actor,
    {
      accountId: run.accountId,
      orgId: run.orgId,
      action: "run.retry",
      objectType: "run",
      objectId: retry.id,
      summary: `Retried the ${run.kind} run ${run.id} of policy ${policy.name}`,
    },
    now,
    "This run has already been retried",
  );
  return retry;
}

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
