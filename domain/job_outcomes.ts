/**
 * Job outcomes: where a job's recorded result goes (`applyJobOutcome`) — a backup or synthetic full into
 * its run and the restore point it made (with the anomaly guard, follow-up verify and replicate jobs, the
 * dashboard's counters and the protected object's alerts), a verification into its restore point, and
 * every other kind to the module that owns it (restore_browse.ts, restore_requests.ts, file_history.ts,
 * drills.ts, replicas.ts). A neutral module: the modules it routes to do not import it.
 */
import {
  firstBackupKey,
  restorePointKey,
  restorePointsByHostKey,
  restorePointsByPolicyKey,
} from "./keys/restore.ts";
import { withRetry } from "./retry.ts";
import { runByJobKey, runKey, runsOpenKey } from "./keys/runs.ts";
import { type Job, queueJobInOp } from "./job_queue.ts";
import type { Policy } from "./policies.ts";
import { policyKey } from "./keys/policies.ts";
import { type Host, hostKey } from "./hosts.ts";
import {
  countRunOutcome,
  type LatestOutcome,
  latestOutcomeKey,
  orgPart,
  verifyFailedKey,
} from "./dashboard.ts";
import { afterBackup, readProtectedFor, writeProtected } from "./protected.ts";
import { assessBackupInOp } from "./anomalies.ts";
import { raiseAlert, readOpenAlert, resolveAlert } from "./alerts.ts";
import { applyFileHistoryOutcome } from "./file_history.ts";
import { applyDrillJobOutcome } from "./drills.ts";
import { applyReplicationOutcome, queueReplicationsInOp } from "./replicas.ts";
import { type Repository, repositoryOf, repositoryOfPayload } from "./repositories.ts";
import { pointsByTargetKey, repositoryHostKey } from "./keys/repositories.ts";
import { firstLine, indexRetryableInOp, isOpenRun, type Run, type RunKind } from "./runs.ts";
import { type RestorePoint, restorePointId } from "./restore_points.ts";
import { applyRestoreRequestOutcome } from "./restore_requests.ts";
import { applyListingOutcome } from "./restore_browse.ts";

/** Job kinds whose outcome is a browse or search state (restore_browse.ts). */
const LISTING_JOB_KINDS: readonly string[] = ["browse", "search"];
/** Job kinds whose outcome is a restore request (restore_requests.ts). */
const RESTORE_JOB_KINDS: readonly string[] = ["restore_files", "restore_image", "bmr"];

/**
 * Carries a job's recorded result into its run, and for a backup creates the restore point the engine
 * reported (output.restorePoint). Idempotent: a run already finished is left as it is.
 */
export async function applyJobResultToRun(kv: Deno.Kv, job: Job, now: Date): Promise<Run | null> {
  const runId = (await kv.get<string>(runByJobKey(job.id))).value;
  if (!runId || !job.result) return null;
  const r = job.result;
  // Commit retry (retry.ts): five lost races throw CommitConflictError (the result route answers 503
  // `busy`; the engine re-posts the result), never return as if the run had been finished.
  const attempt = async (): Promise<{ value: Run | null } | null> => {
    const entry = await kv.get<Run>(runKey(runId));
    const run = entry.value;
    if (!run || ["success", "warning", "failed", "skipped"].includes(run.status)) return { value: run };
    const next: Run = {
      ...run,
      status: skippedByEngine(job) ? "skipped" : r.status,
      startedAt: r.startedAt,
      endedAt: r.endedAt,
      bytesTransferred: r.bytesTransferred,
      protectedBytes: r.protectedBytes,
      error: r.error,
      errorLine: firstLine(r.error?.message),
      hookOutput: r.hookOutput ?? [],
      stats: r.stats ?? null,
      errorCount: r.lists?.errors?.total ?? 0,
      errorsKept: r.lists?.errors?.kept ?? 0,
      // A retry run is never retryable, whatever its engine says: retries must not cascade.
      retryable: run.trigger !== "retry" && r.status !== "success" && r.retryable,
      updatedAt: now.toISOString(),
    };
    const op = kv.atomic().check(entry);
    if (!isOpenRun(next)) op.delete(runsOpenKey(run.policyId, run.hostId, run.id));
    indexRetryableInOp(op, next, now);
    const rp = r.output?.restorePoint as Partial<RestorePoint> & { id?: string } | undefined;
    if (rp?.id && r.status !== "failed" && (job.kind === "backup" || job.kind === "synthetic_full")) {
      const completedAt = String(rp.completedAt ?? r.endedAt);
      const point: RestorePoint = {
        id: restorePointId(completedAt, now),
        engineId: job.principal.startsWith("bes:")
          ? job.principal.slice(4)
          : String((job.payload.bes as { id?: string })?.id ?? ""),
        policyId: run.policyId,
        hostId: run.hostId,
        runId: run.id,
        engineRestorePointId: String(rp.id),
        chainId: String(rp.chainId ?? rp.id),
        type: (rp.type as RunKind) ?? run.kind,
        parentId: rp.parentId ?? null,
        sizeBytes: Number(rp.sizeBytes ?? 0),
        fileCount: Number(rp.fileCount ?? 0),
        completedAt,
        status: "complete",
        verification: "pending",
        stats: r.stats ?? null,
      };
      // Host and policy read once; the host's entry is checked, so a decommission committing meanwhile
      // makes this write retry (and archive the point) instead of leaving it to retention.
      const { hostEntry, policy } = await readPointContext(kv, run);
      if (hostEntry) op.check(hostEntry);
      if (archivesNewPoints(hostEntry?.value ?? null, policy)) point.archivedAt = now.toISOString();
      // The repository the job was sent to (the policy may have moved on since).
      point.repository = jobRepository(job, run.policyId, policy);
      // The anomaly guard judges the backup's figures in this same write (it may mark the point suspect).
      await assessBackupInOp(kv, op, {
        run: next,
        job,
        point,
        policyName: policy?.name ?? run.policyId,
        hostName: hostEntry?.value?.hostname ?? run.hostId ?? "BES",
      }, now);
      next.restorePointId = point.id;
      op.set(restorePointKey(point.id), point)
        .set(restorePointsByPolicyKey(run.policyId, point.id), point.id)
        .set(restorePointsByHostKey(run.policyId, run.hostId, point.id), point.id)
        .set(firstBackupKey(run.accountId, policy ? policy.orgId : run.orgId), true);
      if (point.repository) {
        op.set(pointsByTargetKey(point.repository.target, point.id), point.id)
          .set(repositoryHostKey(run.policyId, point.repository.generation, run.hostId), point.id);
      }
      await queueFollowUps(kv, op, run, policy, point, now);
    }
    // After the restore point: the protected object keeps it as the dashboard's deep link into Restore.
    await recordOutcomeInOp(kv, op, job.kind, run, next, now);
    return (await op.set(runKey(run.id), next).commit()).ok ? { value: next } : null;
  };
  return await withRetry(attempt, 5, `The result of run ${runId} conflicted; post it again`);
}

/**
 * Whether the engine skipped the job instead of running it: a synthetic full of a host that has no backup
 * yet (its result's `output.skipped`, reason NO_BACKUP). Its run is `skipped`, not failed or warning.
 */
function skippedByEngine(job: Job): boolean {
  const r = job.result;
  return job.kind === "synthetic_full" && r !== null && r.status !== "failed" &&
    typeof r.output?.skipped === "object" && r.output.skipped !== null && !r.output.restorePoint;
}

/**
 * The repository a backup job wrote to: the one its payload names, else (jobs queued before generations)
 * the target its payload names in generation 1, else the policy's current one.
 */
function jobRepository(job: Job, policyId: string, policy: Policy | null): Repository | undefined {
  const named = repositoryOfPayload(job.payload);
  if (named) return named;
  const target = (job.payload.target as { id?: unknown } | undefined)?.id ?? job.payload.targetId;
  if (typeof target === "string" && target) {
    return repositoryOf({ id: policyId, targetId: target, generation: 1 });
  }
  return policy ? repositoryOf(policy) : undefined;
}

/** The run's host entry (null for a BES run) and policy, read together where a run's restore point is written. */
async function readPointContext(
  kv: Deno.Kv,
  run: Run,
): Promise<{ hostEntry: Deno.KvEntryMaybe<Host> | null; policy: Policy | null }> {
  if (!run.hostId) return { hostEntry: null, policy: (await kv.get<Policy>(policyKey(run.policyId))).value };
  const [hostEntry, policy] = await kv.getMany<[Host, Policy]>([
    hostKey(run.hostId),
    policyKey(run.policyId),
  ]);
  return { hostEntry, policy: policy.value };
}

/**
 * Whether a point a run just produced is archived at once: its host was decommissioned while the run
 * was in flight, under a policy with Archive On Host Deactivation on (its other points were archived).
 */
function archivesNewPoints(host: Pick<Host, "status"> | null, policy: Policy | null): boolean {
  return host?.status === "decommissioned" && Boolean(policy?.archiveOnHostDeactivation);
}

/**
 * Adds to `op` what a finished backup changes besides its run: the dashboard's outcome counters and
 * failed-backups queue, and for an agent backup the protected object (last backup, RPO clock) and its
 * alerts — a failure raises (or repeats) the object's `backup_failed` alert, a success resolves it and
 * ends an RPO breach. The reads are checked by `op`, so a concurrent change makes the caller retry.
 */
export async function recordOutcomeInOp(
  kv: Deno.Kv,
  op: Deno.AtomicOperation,
  kind: Job["kind"],
  run: Run,
  next: Run,
  now: Date,
): Promise<void> {
  if (kind !== "backup" && kind !== "synthetic_full") return;
  if (next.status !== "success" && next.status !== "warning" && next.status !== "failed") return;
  countRunOutcome(op, next, await kv.get<LatestOutcome>(latestOutcomeKey(run.policyId, run.hostId)), now);
  if (kind !== "backup" || !run.hostId) return;
  const current = await readProtectedFor(kv, run.hostId, run.policyId);
  const object = current.entry?.value;
  if (!current.entry || !object) return;
  const after = afterBackup(object, {
    status: next.status,
    // An engine clock running ahead must not push the RPO clock into the future.
    endedAt: next.endedAt && Date.parse(next.endedAt) < now.getTime() ? next.endedAt : now.toISOString(),
    restorePointId: next.restorePointId,
  }, now);
  if (!after) return;
  op.check(current.entry);
  writeProtected(op, object, after);
  const failedAlert = await readOpenAlert(kv, "protected_object", object.id, "backup_failed");
  if (next.status === "failed") {
    raiseAlert(op, failedAlert, {
      accountId: object.accountId,
      orgId: object.orgId,
      subjectType: "protected_object",
      subjectId: object.id,
      subjectName: object.name,
      reason: "backup_failed",
      severity: "warning",
      message: `Backup of ${object.name} failed: ${
        next.errorLine ?? next.error?.reason ?? "no reason given"
      }`,
    }, now);
    return;
  }
  resolveAlert(op, failedAlert, now);
  if (object.breached && !after.breached) {
    resolveAlert(op, await readOpenAlert(kv, "protected_object", object.id, "rpo_breach"), now);
  }
}

/**
 * After a backup's restore point: a BES verify job when the policy verifies after backup (with its
 * sample count), and a BES replicate job for each replica rule that applies to the point's type (after
 * full / after incremental), with its replication record (replicas.ts `queueReplicationsInOp`) — all in
 * the caller's atomic operation.
 */
async function queueFollowUps(
  kv: Deno.Kv,
  op: Deno.AtomicOperation,
  run: Run,
  policy: Policy | null,
  point: RestorePoint,
  now: Date,
) {
  if (!policy) return;
  const base = { principal: `bes:${policy.besId}`, accountId: run.accountId, orgId: run.orgId };
  if (policy.verifyAfterBackup) {
    queueJobInOp(op, {
      ...base,
      kind: "verify",
      payload: {
        restorePointId: point.id,
        engineRestorePointId: point.engineRestorePointId ?? point.id,
        policyId: policy.id,
        hostId: point.hostId,
        // The repository that holds the point (ENGINE.md §3).
        repository: point.repository ?? repositoryOf(policy),
        targetId: (point.repository ?? repositoryOf(policy)).target,
        sampleCount: policy.verifySampleCount,
      },
    }, now);
  }
  await queueReplicationsInOp(kv, op, policy, point, now);
}

/**
 * Applies a recorded job result where it belongs: a backup or synthetic full to its run (and restore
 * point), a verification to its restore point, a replication to its record, browse, search and restore
 * jobs to their states (restore_browse.ts, restore_requests.ts). Idempotent.
 */
export async function applyJobOutcome(kv: Deno.Kv, job: Job, now: Date): Promise<void> {
  if (!job.result) return;
  if (LISTING_JOB_KINDS.includes(job.kind)) return await applyListingOutcome(kv, job, now);
  if (RESTORE_JOB_KINDS.includes(job.kind)) return await applyRestoreRequestOutcome(kv, job, now);
  if (job.kind === "file_history") return await applyFileHistoryOutcome(kv, job, now);
  if (job.kind === "restore_drill") return await applyDrillJobOutcome(kv, job, now);
  if (job.kind === "verify") {
    const id = String(job.payload.restorePointId ?? "");
    const reported = (job.result.output?.verification as { status?: string } | undefined)?.status ?? "";
    const status: RestorePoint["verification"] =
      reported === "passed" || reported === "failed" || reported === "partial"
        ? reported
        : job.result.status === "success"
        ? "passed"
        : "failed";
    // Commit retry (retry.ts): five lost races throw CommitConflictError (the result route answers 503
    // `busy`; the engine re-posts the result, which re-applies it), so the verification is never dropped.
    const attempt = async (): Promise<{ value: void } | null> => {
      const entry = await kv.get<RestorePoint>(restorePointKey(id));
      if (!entry.value || entry.value.verification !== "pending") return { value: undefined };
      const op = kv.atomic().check(entry).set(restorePointKey(id), { ...entry.value, verification: status });
      if (status === "failed") {
        // The dashboard's verification-failures queue reads this index, never the restore points.
        const policy = (await kv.get<Policy>(policyKey(entry.value.policyId))).value;
        if (policy) {
          op.set(verifyFailedKey(policy.accountId, entry.value.completedAt, id), orgPart(policy.orgId));
        }
      }
      return (await op.commit()).ok ? { value: undefined } : null;
    };
    const conflicted = `The verification result of restore point ${id} conflicted; post it again`;
    return await withRetry(attempt, 5, conflicted);
  }
  if (job.kind === "replicate") return await applyReplicationOutcome(kv, job, now);
  await applyJobResultToRun(kv, job, now);
}
