/**
 * Archive On Host Deactivation (guide: policy setting "Archive On Host Deactivation – Archive backups
 * when host is decommissioned"; assignment state `archived`: "Host decommissioned; backups preserved for
 * retention"). An operator decommissions a host: it gets status `decommissioned` (nothing is dispatched
 * to it; the offline sweep stops watching it), every assignment of it becomes `archived` (its protected
 * objects too, so no RPO breach and no "unprotected host" is counted for it), and under each policy with
 * the setting on its restore points are flagged `archivedAt`: retention keeps them until an operator
 * expires them (`expireArchivedPoint`). Under a policy with the setting off they follow retention as
 * usual. Assigning the host to a policy again reactivates it (assignments.ts).
 *
 * Crash safety: the first atomic operation changes the host's status, writes the audit entry, archives
 * the first ARCHIVE_ASSIGNMENT_BATCH assignments and records `["host_decommissions", hostId]`, the work
 * still to do. The rest — more assignments, then the restore points, ARCHIVE_POINT_BATCH per operation —
 * follows in checked batches, and the record goes last. `resumeHostDecommissions` (the host sweep, every
 * minute) finishes what a crash interrupted, and retention leaves a host's points alone while its record
 * exists, so no point is expired that should have been archived.
 */
import { assignmentsByHostPrefix } from "./keys/policies.ts";
import { hostDecommissionsPrefix } from "./keys/hosts.ts";
import { z } from "zod";
import { appendAudit } from "./audit.ts";
import { readOpenAlert, resolveAlert } from "./alerts.ts";
import { type Assignment, assignmentKey } from "./assignments.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { type Host, hostDecommissionKey, hostKey, hostScope, liveHostKey } from "./hosts.ts";
import { refuseIfHeld } from "./holds.ts";
import { queueJobInOp } from "./job_queue.ts";
import { countStatusChange } from "./ops_counters.ts";
import { getManyValues, withRetry } from "./kv.ts";
import { type Policy, policyKey, retiredPolicyKey } from "./policies.ts";
import { repositoryOf } from "./repositories.ts";
import { type HostCoverage, hostCoverageKey, readProtectedFor, setHostProtection } from "./protected.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import { pointsOfHost, type RestorePoint } from "./restore_points.ts";
import { restorePointKey } from "./keys/restore.ts";

/** The confirmation a decommission needs: the host's name, typed (the page's form and the API). */
export const DecommissionInput = z.object({
  confirmHostname: z.string({ error: "is required" }).trim().min(1, "type the host's name to confirm").max(
    253,
  ),
}).strict();
export type DecommissionInput = z.input<typeof DecommissionInput>;

/** The confirmation expiring an archived restore point needs (the page's checkbox, `true` in the API). */
export const ExpireArchivedInput = z.object({
  confirm: z.literal(true, { error: "must be true: expiring deletes the restore point's data for good" }),
});
export type ExpireArchivedInput = z.input<typeof ExpireArchivedInput>;

/** Assignments archived per atomic operation (each moves its record and its protected object's indexes). */
export const ARCHIVE_ASSIGNMENT_BATCH = 20;
/** Restore points archived per atomic operation (one check each; KV allows 100 per operation). */
export const ARCHIVE_POINT_BATCH = 50;

/** The work a decommission still has to do (its key exists until it is done). */
interface PendingDecommission {
  hostId: string;
  accountId: string;
  orgId: string;
  /** The policies whose restore points of the host are archived (the setting was on at the time). */
  archivePolicyIds: string[];
  at: string;
}

export interface DecommissionResult {
  host: Host;
  archivedAssignments: number;
  archivedPoints: number;
  /** Names of the policies under which the host's restore points are kept (archived). */
  keptUnder: string[];
  /** Names of the policies under which they follow retention. */
  retainedUnder: string[];
}

/** The host's assignment entries (one per policy). */
async function readHostAssignments(kv: Deno.Kv, hostId: string): Promise<Deno.KvEntry<Assignment>[]> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: assignmentsByHostPrefix(hostId) })) {
    keys.push(assignmentKey(e.value));
  }
  const out: Deno.KvEntry<Assignment>[] = [];
  for (let i = 0; i < keys.length; i += 10) {
    for (const e of await kv.getMany<Assignment[]>(keys.slice(i, i + 10))) {
      if (e.value && e.value.hostId === hostId) out.push(e as Deno.KvEntry<Assignment>);
    }
  }
  return out;
}

/**
 * Adds to `op`: archives `entries` (assignments of one host) with their protected objects, and marks
 * the host decommissioned on its coverage (checked: a reactivation in between makes `op` fail).
 */
async function archiveAssignmentsInOp(
  kv: Deno.Kv,
  op: Deno.AtomicOperation,
  host: Pick<Host, "id" | "accountId" | "orgId">,
  entries: Deno.KvEntry<Assignment>[],
  now: Date,
): Promise<void> {
  const hostId = host.id;
  const [coverage, objects] = await Promise.all([
    kv.get<HostCoverage>(hostCoverageKey(hostId)),
    Promise.all(entries.map((e) => readProtectedFor(kv, hostId, e.value.policyId))),
  ]);
  const at = now.toISOString();
  op.check(coverage);
  for (const e of entries) op.check(e).set(e.key, { ...e.value, state: "archived", updatedAt: at });
  setHostProtection(op, host, coverage, objects, "archived", now, { decommissioned: true });
}

/**
 * Decommissions a host (needs backup.manage on its org): status `decommissioned`, every assignment
 * `archived`, and its restore points under policies with Archive On Host Deactivation on archived — the
 * status change, the first assignments and the audit entry in one atomic operation, the rest in
 * batches (see the module notes). Throws NotFoundError (unknown or outside the scope), ForbiddenError,
 * ValidationError when `confirmHostname` is not the host's name, ConflictError when it already is
 * decommissioned.
 */
export async function decommissionHost(
  kv: Deno.Kv,
  actor: Actor,
  hostId: string,
  input: DecommissionInput,
  now: Date,
): Promise<DecommissionResult> {
  const data = DecommissionInput.parse(input);
  const first = await withRetry(async () => {
    const hostEntry = await kv.get<Host>(hostKey(hostId));
    const host = hostEntry.value;
    if (!host || !inScope(actor, hostScope(host))) throw new NotFoundError(`Host ${hostId} not found`);
    authorize(actor, "backup.manage", hostScope(host));
    if (data.confirmHostname !== host.hostname) {
      throw new ValidationError(`Type ${host.hostname} to confirm the decommission`, {
        confirmHostname: `Type the host's name, ${host.hostname}, to confirm`,
      });
    }
    if (host.status === "decommissioned") {
      throw new ConflictError(`Host ${host.hostname} is already decommissioned`);
    }
    const assignments = await readHostAssignments(kv, host.id);
    const policies = await getManyValues<Policy>(kv, assignments.map((a) => policyKey(a.value.policyId)));
    const kept = policies.filter((p) => p.archiveOnHostDeactivation);
    const retained = policies.filter((p) => !p.archiveOnHostDeactivation);
    const at = now.toISOString();
    const next: Host = { ...host, status: "decommissioned", decommissionedAt: at, updatedAt: at };
    const pending: PendingDecommission = {
      hostId: host.id,
      accountId: host.accountId,
      orgId: host.orgId,
      archivePolicyIds: kept.map((p) => p.id),
      at,
    };
    const op = kv.atomic()
      .check(hostEntry, { key: hostDecommissionKey(host.id), versionstamp: null })
      .set(hostKey(host.id), next)
      .set(hostDecommissionKey(host.id), pending)
      .delete(liveHostKey(host.id));
    countStatusChange(op, "host", host.accountId, host.status, next.status);
    // A retired host is not "offline": its alert, if any, is over.
    resolveAlert(op, await readOpenAlert(kv, "host", host.id, "host_offline"), now);
    const batch = assignments.filter((a) => a.value.state !== "archived").slice(0, ARCHIVE_ASSIGNMENT_BATCH);
    await archiveAssignmentsInOp(kv, op, host, batch, now);
    const names = (list: Policy[]) => list.map((p) => p.name).sort().join(", ");
    appendAudit(op, actor, {
      ...hostScope(host),
      action: "host.decommission",
      objectType: "host",
      objectId: host.id,
      summary:
        `Decommissioned host ${host.hostname}: ${assignments.length} assignment${
          assignments.length === 1 ? "" : "s"
        } archived` +
        (kept.length ? `; restore points kept (archived) under ${names(kept)}` : "") +
        (retained.length ? `; restore points follow retention under ${names(retained)}` : ""),
    }, now);
    if (!(await op.commit()).ok) return null;
    return {
      value: {
        host: next,
        archived: batch.length,
        keptUnder: kept.map((p) => p.name),
        retainedUnder: retained.map((p) => p.name),
      },
    };
  });
  const rest = await finishDecommission(kv, hostId, now);
  return {
    host: first.host,
    archivedAssignments: first.archived + rest.assignments,
    archivedPoints: rest.points,
    keptUnder: first.keptUnder,
    retainedUnder: first.retainedUnder,
  };
}

/** The host's coverage entry while it is still decommissioned, or null once it was reactivated. */
async function decommissionedCoverage(kv: Deno.Kv, hostId: string) {
  const [host, coverage] = await kv.getMany<[Host, HostCoverage]>([hostKey(hostId), hostCoverageKey(hostId)]);
  return host.value?.status === "decommissioned" && coverage.value?.decommissioned ? coverage : null;
}

/**
 * Finishes a decommission: archives the host's remaining assignments, then flags its restore points
 * under the recorded policies, in checked batches, and removes the record. Stops (removing the record)
 * once the host was reactivated. Idempotent; returns what it archived.
 */
export async function finishDecommission(
  kv: Deno.Kv,
  hostId: string,
  now: Date,
): Promise<{ assignments: number; points: number }> {
  const record = await kv.get<PendingDecommission>(hostDecommissionKey(hostId));
  const done = { assignments: 0, points: 0 };
  if (!record.value) return done;
  const stop = async () => {
    await kv.atomic().check(record).delete(record.key).commit();
    return done;
  };
  const host = record.value;
  for (let conflicts = 0;;) {
    if (!(await decommissionedCoverage(kv, hostId))) return await stop();
    const batch = (await readHostAssignments(kv, hostId)).filter((a) => a.value.state !== "archived")
      .slice(0, ARCHIVE_ASSIGNMENT_BATCH);
    if (!batch.length) break;
    const op = kv.atomic();
    await archiveAssignmentsInOp(
      kv,
      op,
      { id: hostId, accountId: host.accountId, orgId: host.orgId },
      batch,
      now,
    );
    if ((await op.commit()).ok) done.assignments += batch.length;
    else if (++conflicts > 20) {
      throw new ConflictError(`Host ${hostId} kept changing while being decommissioned`);
    }
  }
  const at = now.toISOString();
  for (const policyId of record.value.archivePolicyIds) {
    const points = await pointsOfHost(kv, policyId, hostId);
    const todo = points.filter((p) => !p.archivedAt && (p.status === "complete" || p.status === "running"));
    for (let i = 0; i < todo.length; i += ARCHIVE_POINT_BATCH) {
      const ids = todo.slice(i, i + ARCHIVE_POINT_BATCH).map((p) => p.id);
      // Commit retry: 21 lost races throw; a reactivation meanwhile stops the whole decommission.
      const attempt = async (): Promise<{ value: number | "reactivated" } | null> => {
        const coverage = await decommissionedCoverage(kv, hostId);
        if (!coverage) return { value: "reactivated" };
        const op = kv.atomic().check(coverage);
        let n = 0;
        for (let j = 0; j < ids.length; j += 10) {
          for (const e of await kv.getMany<RestorePoint[]>(ids.slice(j, j + 10).map(restorePointKey))) {
            const p = e.value;
            if (!p || p.archivedAt || (p.status !== "complete" && p.status !== "running")) continue;
            op.check(e).set(e.key, { ...p, archivedAt: at });
            n++;
          }
        }
        return (await op.commit()).ok ? { value: n } : null;
      };
      const archived = await withRetry(attempt, 21, `Restore points of host ${hostId} kept changing`);
      if (archived === "reactivated") return await stop();
      done.points += archived;
    }
  }
  await kv.atomic().check(record).delete(record.key).commit();
  return done;
}

/** Finishes every decommission a crash or restart interrupted (the minute host sweep). Returns how many. */
export async function resumeHostDecommissions(kv: Deno.Kv, now: Date): Promise<number> {
  let n = 0;
  for await (const e of kv.list({ prefix: hostDecommissionsPrefix() })) {
    await finishDecommission(kv, String(e.key[1]), now);
    n++;
  }
  return n;
}

/**
 * The restore point `expireArchivedPoint` would expire, with its policy and host: NotFoundError when it,
 * its policy or its host is outside the actor's scope, ForbiddenError without backup.manage on the policy.
 */
async function readPointToExpire(kv: Deno.Kv, actor: Actor, id: string) {
  const entry = /^[0-9A-Z]{26}$/.test(id) ? await kv.get<RestorePoint>(restorePointKey(id)) : null;
  const point = entry?.value;
  const [live, host, retired] = point
    ? await kv.getMany<[Policy, Host, Policy]>([
      policyKey(point.policyId),
      hostKey(point.hostId ?? "-"),
      retiredPolicyKey(point.policyId),
    ])
    : [];
  // A deleted policy's points stay until they expire: its archived ones are expired by hand as well.
  const policy = live?.value ? live : retired;
  const scope = policy?.value ? { accountId: policy.value.accountId, orgId: policy.value.orgId } : null;
  if (
    !entry || !point || !policy?.value || !scope || !inScope(actor, scope) ||
    (host?.value && !inScope(actor, hostScope(host.value)))
  ) {
    throw new NotFoundError(`Restore point ${id.slice(0, 40)} not found`);
  }
  authorize(actor, "backup.manage", scope);
  return {
    entry,
    point,
    policy: policy.value,
    host: host?.value ?? null,
    scope,
  };
}

/**
 * Checks that the actor may expire the restore point `id` by hand (`expireArchivedPoint`'s first checks):
 * NotFoundError out of scope, ForbiddenError without backup.manage. A form refused before the domain
 * (no confirmation) asks it first, so a point out of scope is a 404 either way.
 */
export async function authorizeExpireArchived(kv: Deno.Kv, actor: Actor, id: string): Promise<void> {
  await readPointToExpire(kv, actor, id);
}

/**
 * Expires an archived restore point by hand (retention never does): marks it `expired` and queues the
 * BES prune job, with the audit entry, in one atomic operation. Needs backup.manage on the point's
 * policy and the point's host in scope. Throws NotFoundError, ForbiddenError, then ZodError without the
 * confirmation, ConflictError when the point is not archived (retention manages it), is under a legal
 * hold (holds.ts), or an incremental that is still kept depends on it (expire that one first).
 */
export async function expireArchivedPoint(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: ExpireArchivedInput,
  now: Date,
): Promise<RestorePoint> {
  return await withRetry(async () => {
    const { entry, point, policy, host, scope } = await readPointToExpire(kv, actor, id);
    ExpireArchivedInput.parse(input);
    if (!point.archivedAt || point.status !== "complete") {
      throw new ConflictError(
        point.status === "expired"
          ? "This restore point is already expired"
          : "Only an archived restore point is expired by hand; retention manages this one",
      );
    }
    const engineId = point.engineRestorePointId ?? point.id;
    const dependents = (await pointsOfHost(kv, point.policyId, point.hostId)).filter((p) =>
      p.type === "incremental" && p.parentId === engineId &&
      (p.status === "complete" || p.status === "running")
    );
    if (dependents.length) {
      throw new ConflictError(
        `${dependents.length} incremental restore point${dependents.length === 1 ? "" : "s"} still depend${
          dependents.length === 1 ? "s" : ""
        } on this one (${dependents.map((p) => p.id).join(", ")}): expire ${
          dependents.length === 1 ? "it" : "them"
        } first`,
      );
    }
    // A legal hold refuses the expiry; a hold placed meanwhile fails the write (its epoch is checked).
    const holds = await refuseIfHeld(kv, scope.accountId, point);
    const expired: RestorePoint = { ...point, status: "expired" };
    const op = holds.check(kv.atomic()).check(entry).set(restorePointKey(point.id), expired);
    queueJobInOp(op, {
      kind: "prune",
      principal: `bes:${policy.besId}`,
      accountId: scope.accountId,
      orgId: scope.orgId,
      payload: {
        policyId: point.policyId,
        targetId: (point.repository ?? repositoryOf(policy)).target,
        repository: point.repository ?? repositoryOf(policy),
        restorePointIds: [engineId],
      },
    }, now);
    appendAudit(op, actor, {
      ...scope,
      action: "restore_point.expire",
      objectType: "restore_point",
      objectId: point.id,
      summary: `Expired archived restore point ${point.id} (${point.type} of ${point.completedAt}) of ${
        host?.hostname ?? "a deleted host"
      } under policy ${policy.name}; the BES prunes its data`,
    }, now);
    return (await op.commit()).ok ? { value: expired } : null;
  });
}
