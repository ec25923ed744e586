/**
 * Retention applied (the pure GFS plan is retention.ts): the hourly job marks each protected object's
 * expired restore points and queues their BES prune jobs, respecting legal holds, prune freezes and hosts
 * still being decommissioned; the policy page's preview shows what it would keep and expire.
 */
import { hostDecommissionsPrefix } from "./keys/hosts.ts";
import { policiesPrefix, retiredPoliciesByAccountKey, retiredPoliciesPrefix } from "./keys/policies.ts";
import { appendAudit } from "./audit.ts";
import { restorePointKey } from "./keys/restore.ts";
import { queueJobInOp } from "./job_queue.ts";
import type { Policy } from "./policies.ts";
import { type HoldGuard, holdGuard } from "./holds.ts";
import {
  planRetention,
  previewRetention,
  type RetentionCounts,
  type RetentionPoint,
  type RetentionPreview,
} from "./retention.ts";
import { systemActor } from "./rbac.ts";
import { pruneGuard, withPruneFreezes } from "./anomalies.ts";
import { repositoryOf } from "./repositories.ts";
import { pointsByObject, type RestorePoint } from "./restore_points.ts";

/**
 * A protected object's restore points as retention sees them (parents translated to our ids), each with
 * the legal holds covering it when `holds` is given (holds.ts).
 */
function retentionPoints(points: RestorePoint[], holds?: HoldGuard): RetentionPoint[] {
  const byEngineId = new Map(points.map((p) => [p.engineRestorePointId ?? p.id, p.id]));
  return points.map((p) => ({
    id: p.id,
    chainId: p.chainId,
    type: p.type,
    parentId: p.parentId ? byEngineId.get(p.parentId) ?? null : null,
    completedAt: p.completedAt,
    sizeBytes: p.sizeBytes,
    status: p.status,
    archived: Boolean(p.archivedAt),
    ...(holds ? { holds: holds.reasonsFor(p) } : {}),
  }));
}

/** What retention `counts` would keep and expire for each of the policy's protected objects. */
export async function previewPolicyRetention(
  kv: Deno.Kv,
  policy: Pick<Policy, "id" | "timeZone" | "accountId">,
  counts: RetentionCounts,
  /** The policy's points by object, when the caller has read them already. */
  groups?: Map<string, RestorePoint[]>,
): Promise<Record<string, RetentionPreview & { frozen?: string | null }>> {
  groups ??= await pointsByObject(kv, policy.id);
  // Held points show as kept, with the hold as the reason; a host whose prune is frozen (anomalies.ts)
  // keeps every point, and its preview says why.
  const holds = await holdGuard(kv, policy.accountId);
  return await withPruneFreezes(
    kv,
    previewRetention(
      Object.fromEntries([...groups].map(([k, v]) => [k, retentionPoints(v, holds)])),
      counts,
      policy.timeZone ?? "UTC",
    ),
  );
}

/**
 * The hourly retention job: for every policy and protected object, applies GFS retention — marks the
 * expired restore points `expired` and queues one BES prune job with their ids, in one atomic
 * operation per batch. Idempotent: expired points are no longer candidates. Archived points (their host
 * was decommissioned under Archive On Host Deactivation) are kept; the points of a host whose
 * decommission is still archiving them (`["host_decommissions", hostId]`) wait for the next run.
 */
export async function applyRetention(
  kv: Deno.Kv,
  now: Date,
): Promise<{ expired: number; pruneJobs: number }> {
  let expired = 0;
  let pruneJobs = 0;
  const decommissioning = new Set<string>();
  for await (const e of kv.list({ prefix: hostDecommissionsPrefix() })) decommissioning.add(String(e.key[1]));
  // Live policies, then deleted ones kept for their restore points (under their last retention).
  for (const prefix of [policiesPrefix(), retiredPoliciesPrefix()]) {
    for await (const entry of kv.list<Policy>({ prefix }, { batchSize: 200 })) {
      const policy = entry.value;
      const groups = await pointsByObject(kv, policy.id);
      const done = await expireObjects(kv, policy, groups, decommissioning, now);
      expired += done.expired;
      pruneJobs += done.pruneJobs;
      if (prefix[0] === "policies_retired") await dropRetiredWithoutPoints(kv, entry, now);
    }
  }
  return { expired, pruneJobs };
}

/** A retired policy goes once none of its restore points is left (complete or still running). */
async function dropRetiredWithoutPoints(kv: Deno.Kv, entry: Deno.KvEntry<Policy>, now: Date): Promise<void> {
  const policy = entry.value;
  const left = [...(await pointsByObject(kv, policy.id)).values()].flat()
    .filter((p) => p.status === "complete" || p.status === "running");
  if (left.length) return;
  const op = kv.atomic().check(entry).delete(entry.key)
    .delete(retiredPoliciesByAccountKey(policy.accountId, policy.id));
  appendAudit(op, systemActor("retention"), {
    accountId: policy.accountId,
    orgId: policy.orgId,
    action: "policy.retired_purge",
    objectType: "policy",
    objectId: policy.id,
    summary: `The last restore point of deleted policy ${policy.name} expired: its record is gone`,
  }, now);
  await op.commit();
}

/** Applies a policy's retention to each of its protected objects; returns what it expired. */
async function expireObjects(
  kv: Deno.Kv,
  policy: Policy,
  groups: Map<string, RestorePoint[]>,
  decommissioning: Set<string>,
  now: Date,
): Promise<{ expired: number; pruneJobs: number }> {
  let expired = 0;
  let pruneJobs = 0;
  const counts = {
    daily: policy.retentionDaily,
    weekly: policy.retentionWeekly,
    monthly: policy.retentionMonthly,
  };
  // Legal holds (holds.ts): held points and their chains are kept, and each write checks the hold epoch,
  // so a hold placed while this plans makes the write fail rather than prune a point just held.
  const holds = await holdGuard(kv, policy.accountId);
  for (const [object, points] of groups) {
    if (decommissioning.has(object)) continue;
    // A host with a suspicious change under review keeps everything (anomalies.ts: prune frozen).
    const freeze = await pruneGuard(kv, object);
    if (freeze.frozen) continue;
    const plan = planRetention(retentionPoints(points, holds), counts, policy.timeZone ?? "UTC");
    // One prune job per repository: an older generation (or target) keeps its points where they are.
    const byRepository = new Map<string, RestorePoint[]>();
    for (const p of points.filter((p) => plan.expire.includes(p.id))) {
      const repo = p.repository ?? repositoryOf(policy);
      const key = `${repo.target}\u0000${repo.path}`;
      byRepository.set(key, [...(byRepository.get(key) ?? []), p]);
    }
    const batches: RestorePoint[][] = [];
    for (const doomed of byRepository.values()) {
      for (let i = 0; i < doomed.length; i += 200) batches.push(doomed.slice(i, i + 200));
    }
    for (const batch of batches) {
      const repository = batch[0].repository ?? repositoryOf(policy);
      const entries = [];
      for (let j = 0; j < batch.length; j += 10) {
        entries.push(
          ...await kv.getMany<RestorePoint[]>(batch.slice(j, j + 10).map((p) => restorePointKey(p.id))),
        );
      }
      const op = holds.check(kv.atomic());
      freeze.check(op);
      for (const e of entries) if (e.value) op.check(e).set(e.key, { ...e.value, status: "expired" });
      queueJobInOp(op, {
        kind: "prune",
        principal: `bes:${policy.besId}`,
        accountId: policy.accountId,
        orgId: policy.orgId,
        payload: {
          policyId: policy.id,
          targetId: repository.target,
          repository,
          restorePointIds: batch.map((p) => p.engineRestorePointId ?? p.id),
        },
      }, now);
      if ((await op.commit()).ok) {
        expired += batch.length;
        pruneJobs++;
      }
    }
  }
  return { expired, pruneJobs };
}
