/**
 * Host assignments (guide, "Host Assignment"): a host is backed up by a policy while assigned to it.
 *
 * DESIGN invariant 3 — a host is assigned to a policy at most once — rests on the unique key
 * `["assignments_by_policy", policyId, hostId]`: every write that creates or removes an assignment
 * checks that pointer's versionstamp in the same atomic operation as the record, its other index and
 * the host's protected object (protected.ts). Reassigning an archived host reactivates the same
 * record; it is never duplicated.
 *
 * The pointer lives under `policyChildPrefixes(policyId)` (policy_cascade.ts) so a policy delete
 * removes it. The record and its host index are outside that prefix: `deletePolicyAssignments` removes
 * them (and must run in the policy cascade, policy_cascade.ts), and `purgeOrphanAssignments` repairs
 * any a cascade left behind. Readers skip an assignment whose policy is gone.
 */
import {
  assignmentByHostKey,
  assignmentByPolicyKey,
  assignmentKey,
  assignmentsByHostPrefix,
  assignmentsByPolicyPrefix,
  assignmentsPrefix,
} from "./keys/policies.ts";
import { hostsByAccountPrefix } from "./keys/hosts.ts";
import { z } from "zod";
import { appendAudit } from "./audit.ts";
import { deletingEngineKey } from "./engines.ts";
import {
  ConflictError,
  type FieldErrors,
  ForbiddenError,
  NotFoundError,
  toErrorStatus,
  ValidationError,
} from "./errors.ts";
import { type Host, hostKey, hostScope, reactivateHostInOp, requireHost } from "./hosts.ts";
import { newId } from "./ids.ts";
import { getManyValues, withRetry } from "./kv.ts";
import { readByPointerIndex } from "./pointer_index.ts";
import type { Policy } from "./policies.ts";
import { policyKey } from "./policy_keys.ts";
import { requirePolicy } from "./policy_reads.ts";
import { protectForAssignment, readProtectedFor, setProtection } from "./protected.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
export { assignmentByHostKey, assignmentByPolicyKey, assignmentKey };

/** The states of an assignment (guide, "Host Assignment States"). */
export const ASSIGNMENT_STATES = ["active", "paused", "archived"] as const;
/** active: backed up by the policy; paused: temporarily not; archived: host decommissioned, backups kept. */
export type AssignmentState = (typeof ASSIGNMENT_STATES)[number];
export const AssignmentState = z.enum(ASSIGNMENT_STATES, { error: "must be active, paused or archived" });

/** A host assigned to a policy; at most one per (policy, host). */
export interface Assignment {
  id: string;
  policyId: string;
  hostId: string;
  accountId: string;
  /** The host's org: who may see an assignment follows the host it protects. */
  orgId: string;
  state: AssignmentState;
  createdAt: string;
  updatedAt: string;
}

/** The input of `assignHost` (the form, the JSON API and the domain). */
export const AssignmentInput = z.object({
  policyId: z.string().trim().min(1, "is required").max(40),
  hostId: z.string().trim().min(1, "is required").max(40),
}).strict();
export type AssignmentInput = z.input<typeof AssignmentInput>;

/** Most hosts one `assignHosts` call takes (each is its own atomic write). */
export const MAX_ASSIGN_BATCH = 500;

/** The input of `assignHosts`: the hosts to assign to one policy (the policy page's form sends one). */
export const AssignHostsInput = z.object({
  hostIds: z.array(z.string().trim().min(1, "is required").max(40, "must be a host id"), {
    error: "must be a list of host ids",
  }).min(1, "name at least one host").max(MAX_ASSIGN_BATCH, `must name at most ${MAX_ASSIGN_BATCH} hosts`)
    .refine((ids) => new Set(ids).size === ids.length, "must not name a host twice"),
}).strict();
export type AssignHostsInput = z.input<typeof AssignHostsInput>;

/** The input of `setAssignmentState` as a request body (the policy page's state form and the API). */
export const AssignmentStateInput = z.object({ state: AssignmentState }).strict();
export type AssignmentStateInput = z.input<typeof AssignmentStateInput>;

/** The input of `reactivateHost`: the policy to assign the decommissioned host to again. */
export const ReactivateHostInput = z.object({
  policyId: z.string().trim().min(1, "is required").max(40, "must be a policy id"),
}).strict();
export type ReactivateHostInput = z.input<typeof ReactivateHostInput>;

/** The outcome of one host of `assignHosts`: assigned (`created` false when reactivated) or refused. */
export type AssignHostResult =
  | { hostId: string; ok: true; status: 200 | 201; created: boolean; assignment: Assignment }
  | {
    hostId: string;
    ok: false;
    status: number;
    error: { code: string; message: string; fields?: FieldErrors };
  };

function policyScope(p: Pick<Policy, "accountId" | "orgId">) {
  return { accountId: p.accountId, orgId: p.orgId };
}

/** The tenancy of an assignment (the host's), for `inScope` and `authorize`. */
export function assignmentScope(a: Pick<Assignment, "accountId" | "orgId">) {
  return { accountId: a.accountId, orgId: a.orgId };
}

/** The assignment record, or null; no scope check. */
export async function getAssignment(kv: Deno.Kv, id: string): Promise<Assignment | null> {
  return (await kv.get<Assignment>(assignmentKey(id))).value;
}

/**
 * Reads an assignment with its policy and host for an actor. Throws NotFoundError when any of them is
 * missing (an assignment whose policy was deleted is gone) or outside the actor's scope.
 */
async function readForActor(kv: Deno.Kv, actor: Actor, id: string) {
  const entry = await kv.get<Assignment>(assignmentKey(id));
  const a = entry.value;
  if (!a || !inScope(actor, assignmentScope(a))) throw new NotFoundError(`Assignment ${id} not found`);
  const [policy, host] = await kv.getMany<[Policy, Host]>([policyKey(a.policyId), hostKey(a.hostId)]);
  if (!policy.value || !host.value || !inScope(actor, policyScope(policy.value))) {
    throw new NotFoundError(`Assignment ${id} not found`);
  }
  return { entry, assignment: a, policy: policy.value, host: host.value };
}

/** Returns the assignment with its policy and host if the actor may see all three; NotFoundError otherwise. */
export async function requireAssignment(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
): Promise<{ assignment: Assignment; policy: Policy; host: Host }> {
  const { assignment, policy, host } = await readForActor(kv, actor, id);
  return { assignment, policy, host };
}

/**
 * Assigns a host to a policy (needs backup.manage on both). The host must be in the policy's account
 * and in the actor's org scope. An archived assignment of the pair is reactivated (same id,
 * `created: false`); an active or paused one is refused. In the same atomic operation the host's
 * protected object for the policy is created, or made active again, and a decommissioned host is back
 * in service (archive.ts): reassigning it reactivates it.
 *
 * With `onlyDecommissioned` (reactivating a host: `reactivateHost`) a host in service is refused; the
 * host's entry is checked in the same write, so that holds at commit.
 *
 * Throws NotFoundError when the policy or host is unknown or outside the actor's scope,
 * ForbiddenError without backup.manage, ValidationError when the host is in another account or
 * already assigned, ConflictError when the policy's BES is being deleted, the host is in service and
 * `onlyDecommissioned` is set, or the writes kept racing.
 */
export async function assignHost(
  kv: Deno.Kv,
  actor: Actor,
  input: AssignmentInput,
  now: Date,
  options: { onlyDecommissioned?: boolean } = {},
): Promise<{ assignment: Assignment; created: boolean }> {
  const data = AssignmentInput.parse(input);
  return await withRetry(async () => {
    const [policyEntry, hostEntry, pointer, byHost] = await kv.getMany<[Policy, Host, string, string]>([
      policyKey(data.policyId),
      hostKey(data.hostId),
      assignmentByPolicyKey(data.policyId, data.hostId),
      assignmentByHostKey(data.hostId, data.policyId),
    ]);
    const policy = policyEntry.value;
    if (!policy || !inScope(actor, policyScope(policy))) {
      throw new NotFoundError(`Policy ${data.policyId} not found`);
    }
    authorize(actor, "backup.manage", policyScope(policy));
    const host = hostEntry.value;
    if (!host || !inScope(actor, hostScope(host))) throw new NotFoundError(`Host ${data.hostId} not found`);
    if (host.accountId !== policy.accountId) {
      throw new ValidationError(
        `Host ${host.hostname} belongs to another account than policy ${policy.name}`,
        {
          hostId: "Choose a host of the policy's account",
        },
      );
    }
    authorize(actor, "backup.manage", hostScope(host));
    if (options.onlyDecommissioned && host.status !== "decommissioned") {
      throw new ConflictError(
        `Host ${host.hostname} is in service (${host.status}), not decommissioned: there is nothing to reactivate`,
      );
    }
    // Checked absent at commit: an engine cascade lists a policy's children only once it is marked.
    const deleting = await kv.get(deletingEngineKey(policy.besId));
    if (deleting.versionstamp !== null) {
      throw new ConflictError(`The BES of policy ${policy.name} is being deleted`);
    }
    const existingEntry = pointer.value ? await kv.get<Assignment>(assignmentKey(pointer.value)) : null;
    const existing = existingEntry?.value ?? null;
    if (existing && existing.state !== "archived") {
      throw new ValidationError(`Host ${host.hostname} is already assigned to policy ${policy.name}`, {
        hostId: "is already assigned to this policy",
      });
    }
    const protection = await readProtectedFor(kv, host.id, policy.id);
    const at = now.toISOString();
    const op = kv.atomic().check(policyEntry, hostEntry, pointer, byHost, deleting);
    let assignment: Assignment;
    if (existing && existingEntry) {
      op.check(existingEntry);
      assignment = { ...existing, state: "active", updatedAt: at };
      op.set(assignmentKey(assignment.id), assignment);
    } else {
      // A pointer without its record cannot come from these functions; the checked pointer is replaced.
      assignment = {
        id: newId(now),
        policyId: policy.id,
        hostId: host.id,
        accountId: host.accountId,
        orgId: host.orgId,
        state: "active",
        createdAt: at,
        updatedAt: at,
      };
      op.check({ key: assignmentKey(assignment.id), versionstamp: null })
        .set(assignmentKey(assignment.id), assignment)
        .set(assignmentByPolicyKey(policy.id, host.id), assignment.id)
        .set(assignmentByHostKey(host.id, policy.id), assignment.id);
    }
    const hadObject = Boolean(protection.entry?.value);
    const reactivated = host.status === "decommissioned";
    if (reactivated) reactivateHostInOp(op, host, now);
    protectForAssignment(op, protection, policy, host, { id: newId(now), now, reactivateHost: reactivated });
    appendAudit(op, actor, {
      accountId: assignment.accountId,
      orgId: assignment.orgId,
      action: existing ? "assignment.reactivate" : "assignment.create",
      objectType: "assignment",
      objectId: assignment.id,
      summary: (existing
        ? `Reassigned host ${host.hostname} to policy ${policy.name}: its archived assignment is active again`
        : `Assigned host ${host.hostname} to policy ${policy.name}${
          hadObject ? "" : " (protected object created)"
        }`) + (reactivated ? "; the decommissioned host is back in service" : ""),
    }, now);
    return (await op.commit()).ok ? { value: { assignment, created: !existing } } : null;
  });
}

/**
 * Assigns hosts to one policy, each host in its own atomic write with its own audit entry (as
 * `assignHost`), and reports each one: assigned (201, or 200 when an archived assignment was
 * reactivated) or refused with the status and error it would get alone (404 unknown or out of scope,
 * 403, 409, 422 already assigned or of another account). The policy is checked first: unknown or out
 * of scope is a NotFoundError and without backup.manage on it a ForbiddenError, for the whole call.
 * The policy page's assign form calls it with one host. Throws ZodError for bad input.
 */
export async function assignHosts(
  kv: Deno.Kv,
  actor: Actor,
  policyId: string,
  input: AssignHostsInput,
  now: Date,
): Promise<AssignHostResult[]> {
  const { hostIds } = AssignHostsInput.parse(input);
  const policy = await requirePolicy(kv, actor, policyId);
  authorize(actor, "backup.manage", policyScope(policy));
  const results: AssignHostResult[] = [];
  for (const hostId of hostIds) {
    try {
      const { assignment, created } = await assignHost(kv, actor, { policyId: policy.id, hostId }, now);
      results.push({ hostId, ok: true, status: created ? 201 : 200, created, assignment });
    } catch (e) {
      const known = e instanceof NotFoundError || e instanceof ValidationError ||
        e instanceof ConflictError ||
        e instanceof ForbiddenError;
      if (!known) throw e;
      const { status, code } = toErrorStatus(e);
      const fields = e instanceof ValidationError && Object.keys(e.fields).length ? e.fields : undefined;
      results.push({
        hostId,
        ok: false,
        status,
        error: { code, message: e.message, ...(fields ? { fields } : {}) },
      });
    }
  }
  return results;
}

/**
 * Puts a decommissioned host back in service by assigning it to `policyId` again (its archived
 * assignment there becomes active, or a new one is made), exactly as the policy page's assign form does.
 * Throws as `assignHost` (ZodError for bad input), and ConflictError when the host is not decommissioned.
 */
export async function reactivateHost(
  kv: Deno.Kv,
  actor: Actor,
  hostId: string,
  input: ReactivateHostInput,
  now: Date,
): Promise<{ assignment: Assignment; created: boolean; host: Host }> {
  const { policyId } = ReactivateHostInput.parse(input);
  const result = await assignHost(kv, actor, { policyId, hostId }, now, {
    onlyDecommissioned: true,
  });
  return { ...result, host: await requireHost(kv, actor, hostId) };
}

/**
 * Sets the state of an assignment (any state to any other); the protected object's `protection`
 * follows in the same atomic operation. Making an assignment of a decommissioned host active or paused
 * again reactivates the host, as reassigning does. The same state again changes nothing and writes no
 * audit entry. Needs backup.manage on the policy and the host. Throws NotFoundError, ForbiddenError,
 * ZodError for an unknown state.
 */
export async function setAssignmentState(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  state: AssignmentState,
  now: Date,
): Promise<Assignment> {
  const next = AssignmentState.parse(state);
  return await withRetry(async () => {
    const { entry, assignment, policy, host } = await readForActor(kv, actor, id);
    authorize(actor, "backup.manage", policyScope(policy));
    authorize(actor, "backup.manage", assignmentScope(assignment));
    if (assignment.state === next) return { value: assignment };
    const updated: Assignment = { ...assignment, state: next, updatedAt: now.toISOString() };
    const op = kv.atomic().check(entry).set(assignmentKey(id), updated);
    const reactivated = host.status === "decommissioned" && next !== "archived";
    if (reactivated) {
      const hostEntry = await kv.get<Host>(hostKey(host.id));
      if (!hostEntry.value) return null;
      op.check(hostEntry);
      reactivateHostInOp(op, hostEntry.value, now);
    }
    setProtection(op, await readProtectedFor(kv, assignment.hostId, assignment.policyId), next, now, {
      reactivateHost: reactivated,
    });
    appendAudit(op, actor, {
      accountId: assignment.accountId,
      orgId: assignment.orgId,
      action: "assignment.state",
      objectType: "assignment",
      objectId: id,
      summary: `Host ${host.hostname} on policy ${policy.name}: ${assignment.state} → ${next}${
        reactivated ? "; the decommissioned host is back in service" : ""
      }`,
    }, now);
    return (await op.commit()).ok ? { value: updated } : null;
  });
}

/** Adds the removal of an assignment's record and indexes to `op` (pointers only when they are its own). */
function deleteAssignmentKeys(
  op: Deno.AtomicOperation,
  a: Assignment,
  pointers: [Deno.KvEntryMaybe<string>, Deno.KvEntryMaybe<string>],
): void {
  const [byPolicy, byHost] = pointers;
  op.check(byPolicy, byHost).delete(assignmentKey(a.id));
  if (byPolicy.value === a.id) op.delete(byPolicy.key);
  if (byHost.value === a.id) op.delete(byHost.key);
}

async function readPointers(kv: Deno.Kv, a: Assignment) {
  return await kv.getMany<[string, string]>([
    assignmentByPolicyKey(a.policyId, a.hostId),
    assignmentByHostKey(a.hostId, a.policyId),
  ]);
}

/**
 * Removes a host from a policy: deletes the assignment and its indexes in one atomic operation with
 * its audit entry. Restore points are kept (nothing under `["restore_points"]` is touched), so the
 * host's protected object for the policy is kept too and marked `unprotected`: its backups stay
 * browsable and restorable until retention removes them, and a later assignment reuses it. Needs
 * backup.manage on the policy and the host. Throws NotFoundError or ForbiddenError.
 */
export async function removeAssignment(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<void> {
  await withRetry(async () => {
    const { entry, assignment, policy, host } = await readForActor(kv, actor, id);
    authorize(actor, "backup.manage", policyScope(policy));
    authorize(actor, "backup.manage", assignmentScope(assignment));
    const op = kv.atomic().check(entry);
    deleteAssignmentKeys(op, assignment, await readPointers(kv, assignment));
    setProtection(op, await readProtectedFor(kv, assignment.hostId, assignment.policyId), "unprotected", now);
    appendAudit(op, actor, {
      accountId: assignment.accountId,
      orgId: assignment.orgId,
      action: "assignment.remove",
      objectType: "assignment",
      objectId: id,
      summary: `Removed host ${host.hostname} from policy ${policy.name}; existing restore points are kept`,
    }, now);
    return (await op.commit()).ok ? { value: undefined } : null;
  });
}

/** Removes one assignment without an actor (cascades and repair): record, own pointers, protection. */
async function dropAssignment(kv: Deno.Kv, id: string, now: Date, onlyIfOrphan: boolean): Promise<boolean> {
  return await withRetry(
    async () => {
      const entry = await kv.get<Assignment>(assignmentKey(id));
      const a = entry.value;
      if (!a) return { value: false };
      const pointers = await readPointers(kv, a);
      const policyEntry = await kv.get(policyKey(a.policyId));
      const orphan = policyEntry.versionstamp === null || pointers[0].value !== a.id;
      if (onlyIfOrphan && !orphan) return { value: false };
      const op = kv.atomic().check(entry, policyEntry);
      deleteAssignmentKeys(op, a, pointers);
      setProtection(op, await readProtectedFor(kv, a.hostId, a.policyId), "unprotected", now);
      return (await op.commit()).ok ? { value: true } : null;
    },
    10,
    `Assignment ${id} kept changing while being removed; it will be retried`,
  );
}

/**
 * Removes every assignment of a policy (record and both indexes) and marks their protected objects
 * `unprotected`, in small checked operations. For the policy cascade (policy_cascade.ts calls it before
 * it clears `policyChildPrefixes`); no audit entry of its own, the policy delete has one. Idempotent.
 * Returns how many it removed.
 */
export async function deletePolicyAssignments(kv: Deno.Kv, policyId: string, now: Date): Promise<number> {
  let n = 0;
  for await (const e of kv.list<string>({ prefix: assignmentsByPolicyPrefix(policyId) })) {
    if (typeof e.value === "string" && await dropAssignment(kv, e.value, now, false)) n++;
  }
  return n;
}

/**
 * Repair: removes assignments whose policy is gone or whose unique pointer is not theirs (left by a
 * policy cascade that cleared only `policyChildPrefixes`), marking their protected objects
 * `unprotected`. Scans every assignment: an hourly job, not a minute one. Idempotent. Returns how
 * many it removed.
 */
export async function purgeOrphanAssignments(kv: Deno.Kv, now: Date): Promise<number> {
  let n = 0;
  for await (const e of kv.list<Assignment>({ prefix: assignmentsPrefix() })) {
    if (await dropAssignment(kv, String(e.key[1]), now, true)) n++;
  }
  return n;
}

/** A policy's assignments the actor may see, with their hosts, by hostname. Throws NotFoundError for the policy. */
export async function listAssignmentsByPolicy(
  kv: Deno.Kv,
  actor: Actor,
  policyId: string,
): Promise<Array<{ assignment: Assignment; host: Host }>> {
  await requirePolicy(kv, actor, policyId);
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: assignmentsByPolicyPrefix(policyId) })) {
    if (typeof e.value === "string") keys.push(assignmentKey(e.value));
  }
  const assignments = (await getManyValues<Assignment>(kv, keys)).filter((a) =>
    a.policyId === policyId && inScope(actor, assignmentScope(a))
  );
  const hosts = new Map(
    (await getManyValues<Host>(kv, assignments.map((a) => hostKey(a.hostId)))).map((h) => [h.id, h]),
  );
  return assignments.flatMap((assignment) => {
    const host = hosts.get(assignment.hostId);
    return host ? [{ assignment, host }] : [];
  }).sort((a, b) => a.host.hostname.localeCompare(b.host.hostname) || a.host.id.localeCompare(b.host.id));
}

/**
 * A host's assignments whose policy the actor may see, with their policies, by policy name. Skips an
 * assignment whose policy is gone. Throws NotFoundError for the host.
 */
export async function listAssignmentsByHost(
  kv: Deno.Kv,
  actor: Actor,
  hostId: string,
): Promise<Array<{ assignment: Assignment; policy: Policy }>> {
  await requireHost(kv, actor, hostId);
  const assignments =
    (await readByPointerIndex<Assignment>(kv, assignmentsByHostPrefix(hostId), assignmentKey))
      .filter((a) => a.hostId === hostId);
  const policies = new Map(
    (await getManyValues<Policy>(kv, assignments.map((a) => policyKey(a.policyId)))).map((p) => [p.id, p]),
  );
  return assignments.flatMap((assignment) => {
    const policy = policies.get(assignment.policyId);
    return policy && inScope(actor, policyScope(policy)) ? [{ assignment, policy }] : [];
  }).sort((a, b) => a.policy.name.localeCompare(b.policy.name) || a.policy.id.localeCompare(b.policy.id));
}

/**
 * Hosts the actor could assign to the policy: in its account and the actor's scope, not assigned to
 * it unless archived (those are reactivated), by hostname. Throws NotFoundError for the policy.
 */
export async function listAssignableHosts(kv: Deno.Kv, actor: Actor, policyId: string): Promise<Host[]> {
  const policy = await requirePolicy(kv, actor, policyId);
  const taken = new Set<string>();
  for (const { assignment } of await listAssignmentsByPolicy(kv, actor, policyId)) {
    if (assignment.state !== "archived") taken.add(assignment.hostId);
  }
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: hostsByAccountPrefix(policy.accountId) })) {
    keys.push(hostKey(e.value));
  }
  return (await getManyValues<Host>(kv, keys))
    .filter((h) => !taken.has(h.id) && inScope(actor, hostScope(h)))
    .sort((a, b) => a.hostname.localeCompare(b.hostname) || a.id.localeCompare(b.id));
}
