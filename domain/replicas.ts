/**
 * Replica rules (the guide's "Replication Rules (3-2-1 Strategy)"): after a backup of a policy, copy
 * its restore points from the policy's primary storage target to a secondary target of the same
 * account (possibly on another BES). A rule counts as a reference on its target: creating it bumps the
 * target's `policyCount` in the same atomic operation that checks the target entry, and deleting it
 * decrements the count, so `deleteTarget` (which refuses while `policyCount > 0`) can never remove a
 * target under a rule (DESIGN.md invariant 1).
 *
 * Keys: `["replicas", id]`, `["replicas_by_policy", policyId, id]` (cleared with the policy by its
 * cascade), `["replicas_by_target", targetId, id]` and `["replicas_by_account", accountId, id]`.
 * A rule whose policy is gone counts as deleted everywhere here; `deleteReplicasOfPolicy` (for the
 * policy cascade) and `sweepOrphanReplicas` remove such rules and release their targets.
 */
import { z } from "zod";
import { appendAudit } from "./audit.ts";
import { type Engine, engineKey, registerEngineCascade } from "./engines.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { newId } from "./ids.ts";
import { getManyValues, withRetry } from "./kv.ts";
import { type Policy, type PolicyCore, policyKey, requirePolicy } from "./policies.ts";
import { type Actor, authorize, inScope, systemActor } from "./rbac.ts";
import {
  type StorageTarget,
  TARGET_TYPE_LABELS,
  targetKey,
  targetScope,
  type TargetType,
} from "./storage.ts";
import { evaluate321, type ThreeTwoOne } from "./three_two_one.ts";

/** Where the key-encryption key of the replica comes from. */
export const KEK_SOURCES = ["account", "pam_vault"] as const;
export type KekSource = (typeof KEK_SOURCES)[number];
export const KEK_SOURCE_LABELS: Record<KekSource, string> = {
  account: "Account key",
  pam_vault: "PAM vault (external key management)",
};

export interface ReplicaRule {
  id: string;
  policyId: string;
  /** Copied from the policy: the rule's tenancy. */
  accountId: string;
  orgId: string | null;
  /** The secondary target: same account as the policy, never the policy's primary target. */
  targetId: string;
  kekSource: KekSource;
  replicateAfterFull: boolean;
  replicateAfterIncremental: boolean;
  isOffsite: boolean;
  createdAt: string;
  updatedAt: string;
}

/** A rule as listed on the Replicas page and a policy's detail view. Target fields are null when the actor cannot see the target. */
export interface ReplicaRow extends ReplicaRule {
  policyName: string;
  targetName: string | null;
  targetType: TargetType | null;
  targetTypeLabel: string | null;
  targetBesId: string | null;
  targetBesName: string | null;
}

export function replicaKey(id: string) {
  return ["replicas", id] as const;
}
export function replicasByPolicyKey(policyId: string, id: string) {
  return ["replicas_by_policy", policyId, id] as const;
}
export function replicasByTargetKey(targetId: string, id: string) {
  return ["replicas_by_target", targetId, id] as const;
}
export function replicasByAccountKey(accountId: string, id: string) {
  return ["replicas_by_account", accountId, id] as const;
}

/** Every key of a rule, so create, update and delete touch the same set. */
function replicaKeys(r: Pick<ReplicaRule, "id" | "policyId" | "targetId" | "accountId">): Deno.KvKey[] {
  return [
    replicaKey(r.id),
    replicasByPolicyKey(r.policyId, r.id),
    replicasByTargetKey(r.targetId, r.id),
    replicasByAccountKey(r.accountId, r.id),
  ];
}

function replicaScope(r: Pick<ReplicaRule, "accountId" | "orgId">) {
  return { accountId: r.accountId, orgId: r.orgId };
}

/** The editable fields of a rule (its policy is set once, at creation). */
export const ReplicaFields = z.object({
  targetId: z.string().min(1, "is required").max(40),
  kekSource: z.enum(KEK_SOURCES, { error: "must be account or pam_vault" }).default("account"),
  replicateAfterFull: z.boolean().default(true),
  replicateAfterIncremental: z.boolean().default(true),
  isOffsite: z.boolean().default(false),
}).refine((r) => r.replicateAfterFull || r.replicateAfterIncremental, {
  path: ["replicateAfterFull"],
  message: "choose when to replicate: after full backups, after incrementals, or both",
});
export type ReplicaUpdateInput = z.input<typeof ReplicaFields>;

export const ReplicaCreateInput = z.object({ policyId: z.string().min(1, "is required").max(40) })
  .and(ReplicaFields);
export type ReplicaCreateInput = z.input<typeof ReplicaCreateInput>;

/** Loads a rule if its policy still exists (a rule of a deleted policy counts as deleted). */
async function readLiveRule(
  kv: Deno.Kv,
  id: string,
): Promise<
  { entry: Deno.KvEntryMaybe<ReplicaRule>; policyEntry: Deno.KvEntryMaybe<Policy>; policy: Policy } | null
> {
  const entry = await kv.get<ReplicaRule>(replicaKey(id));
  if (!entry.value) return null;
  const policyEntry = await kv.get<Policy>(policyKey(entry.value.policyId));
  return policyEntry.value ? { entry, policyEntry, policy: policyEntry.value } : null;
}

/** Returns the rule if it and its policy exist and the actor may see it; throws NotFoundError otherwise. */
export async function requireReplica(kv: Deno.Kv, actor: Actor, id: string): Promise<ReplicaRule> {
  const live = await readLiveRule(kv, id);
  const rule = live?.entry.value;
  if (!rule || !inScope(actor, replicaScope(rule))) throw new NotFoundError(`Replica rule ${id} not found`);
  return rule;
}

async function readPolicyRules(kv: Deno.Kv, policyId: string): Promise<ReplicaRule[]> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: ["replicas_by_policy", policyId] })) {
    keys.push(replicaKey(e.value));
  }
  return await getManyValues<ReplicaRule>(kv, keys);
}

/** Adds names of policies, targets and target engines to rules; hides targets the actor cannot see. */
async function toRows(kv: Deno.Kv, actor: Actor, rules: ReplicaRule[], policies: Map<string, PolicyCore>) {
  const targets = new Map(
    (await getManyValues<StorageTarget>(kv, [...new Set(rules.map((r) => r.targetId))].map(targetKey)))
      .filter((t) => inScope(actor, targetScope(t)))
      .map((t) => [t.id, t]),
  );
  const engines = new Map(
    (await getManyValues<Engine>(kv, [...new Set([...targets.values()].map((t) => t.besId))].map(engineKey)))
      .map((e) => [e.id, e]),
  );
  return rules.flatMap((r): ReplicaRow[] => {
    const policy = policies.get(r.policyId);
    if (!policy) return [];
    const target = targets.get(r.targetId);
    return [{
      ...r,
      policyName: policy.name,
      targetName: target?.name ?? null,
      targetType: target?.type ?? null,
      targetTypeLabel: target ? TARGET_TYPE_LABELS[target.type] : null,
      targetBesId: target?.besId ?? null,
      targetBesName: target ? engines.get(target.besId)?.name ?? null : null,
    }];
  });
}

/** A policy's replica rules, oldest first, with target names. Needs backup.view on the policy. */
export async function listReplicasByPolicy(
  kv: Deno.Kv,
  actor: Actor,
  policyId: string,
): Promise<ReplicaRow[]> {
  const policy = await requirePolicy(kv, actor, policyId);
  authorize(actor, "backup.view", { accountId: policy.accountId, orgId: policy.orgId });
  return await toRows(kv, actor, await readPolicyRules(kv, policyId), new Map([[policy.id, policy]]));
}

/** Every replica rule of the actor's account in scope (the Replicas page), by policy name then age. */
export async function listReplicas(kv: Deno.Kv, actor: Actor): Promise<ReplicaRow[]> {
  if (!actor.accountId) return [];
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: ["replicas_by_account", actor.accountId] })) {
    keys.push(replicaKey(e.value));
  }
  const rules = (await getManyValues<ReplicaRule>(kv, keys)).filter((r) => inScope(actor, replicaScope(r)));
  const policies = new Map(
    (await getManyValues<PolicyCore>(kv, [...new Set(rules.map((r) => r.policyId))].map(policyKey)))
      .map((p) => [p.id, p]),
  );
  return (await toRows(kv, actor, rules, policies)).sort((a, b) =>
    a.policyName.localeCompare(b.policyName) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
  );
}

/**
 * The 3-2-1 verdict of a policy: its primary target and its replica rules (rules whose target is gone
 * or is the primary itself do not count as copies). Needs backup.view on the policy.
 */
export async function evaluatePolicy321(kv: Deno.Kv, actor: Actor, policyId: string): Promise<ThreeTwoOne> {
  const policy = await requirePolicy(kv, actor, policyId);
  authorize(actor, "backup.view", { accountId: policy.accountId, orgId: policy.orgId });
  const rules = (await readPolicyRules(kv, policyId)).filter((r) => r.targetId !== policy.targetId);
  const targets = new Map(
    (await getManyValues<StorageTarget>(
      kv,
      [policy.targetId, ...rules.map((r) => r.targetId)].map(targetKey),
    ))
      .map((t) => [t.id, t]),
  );
  const primary = targets.get(policy.targetId);
  if (!primary) {
    throw new NotFoundError(`Storage target ${policy.targetId} of policy ${policy.name} not found`);
  }
  return evaluate321({
    primary: { type: primary.type },
    replicas: rules.flatMap((r) => {
      const t = targets.get(r.targetId);
      return t ? [{ targetType: t.type, isOffsite: r.isOffsite }] : [];
    }),
  });
}

/** Adds to `op` a check that the engine exists and is not being deleted; throws ConflictError if it is. */
async function checkEngineNotDeleting(kv: Deno.Kv, op: Deno.AtomicOperation, besId: string): Promise<void> {
  const entry = await kv.get<Engine>(engineKey(besId));
  if (!entry.value || entry.value.status === "deleting") throw new ConflictError("This BES is being deleted");
  op.check(entry);
}

/**
 * Validates a secondary target for a policy and returns its entry. Throws ValidationError for a target
 * the actor cannot see, of another account, the policy's primary target, or one the policy already
 * replicates to (other than the rule `selfId`).
 */
async function readSecondaryTarget(
  kv: Deno.Kv,
  actor: Actor,
  policy: Policy,
  targetId: string,
  selfId: string | null,
): Promise<Deno.KvEntryMaybe<StorageTarget> & { value: StorageTarget }> {
  const entry = await kv.get<StorageTarget>(targetKey(targetId));
  const target = entry.value;
  if (!target || !inScope(actor, targetScope(target))) {
    throw new ValidationError("Unknown storage target", { targetId: "Choose a storage target you can see" });
  }
  if (target.accountId !== policy.accountId) {
    throw new ValidationError("The replica target must belong to the policy's account", {
      targetId: "Choose a storage target of this policy's account",
    });
  }
  if (target.id === policy.targetId) {
    throw new ValidationError("The replica target cannot be the policy's own storage target", {
      targetId: "Choose a target other than the policy's primary target",
    });
  }
  if ((await readPolicyRules(kv, policy.id)).some((r) => r.targetId === target.id && r.id !== selfId)) {
    throw new ValidationError(`Policy ${policy.name} already replicates to ${target.name}`, {
      targetId: "This policy already has a replica rule for this target",
    });
  }
  return entry as Deno.KvEntryMaybe<StorageTarget> & { value: StorageTarget };
}

function flags(r: ReplicaRule): string {
  const when = [r.replicateAfterFull && "full", r.replicateAfterIncremental && "incremental"].filter(Boolean);
  return `after ${when.join(" and ")} backups, KEK ${r.kekSource}${r.isOffsite ? ", offsite" : ""}`;
}

/**
 * Creates a replica rule. Needs backup.manage on the policy. In one atomic operation: the policy and
 * the target entries are checked, the target's `policyCount` is bumped, neither BES is being deleted.
 * Throws NotFoundError for an unknown policy, ValidationError for a target of another account, the
 * policy's own target or a duplicate (policy, target) rule.
 */
export async function createReplica(
  kv: Deno.Kv,
  actor: Actor,
  input: ReplicaCreateInput,
  now: Date,
): Promise<ReplicaRule> {
  const data = ReplicaCreateInput.parse(input);
  return await withRetry(async () => {
    const policyEntry = await kv.get<Policy>(policyKey(data.policyId));
    const policy = policyEntry.value;
    if (!policy || !inScope(actor, policy)) throw new NotFoundError(`Policy ${data.policyId} not found`);
    const scope = { accountId: policy.accountId, orgId: policy.orgId };
    authorize(actor, "backup.manage", scope);
    const targetEntry = await readSecondaryTarget(kv, actor, policy, data.targetId, null);
    const target = targetEntry.value;
    const op = kv.atomic().check(policyEntry, targetEntry);
    await checkEngineNotDeleting(kv, op, policy.besId);
    if (target.besId !== policy.besId) await checkEngineNotDeleting(kv, op, target.besId);
    const at = now.toISOString();
    const rule: ReplicaRule = {
      id: newId(now),
      policyId: policy.id,
      ...scope,
      targetId: target.id,
      kekSource: data.kekSource,
      replicateAfterFull: data.replicateAfterFull,
      replicateAfterIncremental: data.replicateAfterIncremental,
      isOffsite: data.isOffsite,
      createdAt: at,
      updatedAt: at,
    };
    const [primary, ...pointers] = replicaKeys(rule);
    op.check({ key: primary, versionstamp: null }).set(primary, rule)
      .set(targetKey(target.id), { ...target, policyCount: target.policyCount + 1 });
    for (const key of pointers) op.set(key, rule.id);
    appendAudit(op, actor, {
      ...scope,
      action: "replica.create",
      objectType: "replica",
      objectId: rule.id,
      summary: `Added replica rule: policy ${policy.name} → ${target.name} (${flags(rule)})`,
    }, now);
    return (await op.commit()).ok ? { value: rule } : null;
  });
}

/**
 * Updates a rule (its policy never changes). A new target passes the same checks as on create, and
 * the old and new targets' `policyCount` move in the same atomic operation. Needs backup.manage.
 */
export async function updateReplica(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: ReplicaUpdateInput,
  now: Date,
): Promise<ReplicaRule> {
  const data = ReplicaFields.parse(input);
  return await withRetry(async () => {
    const live = await readLiveRule(kv, id);
    const rule = live?.entry.value;
    if (!live || !rule || !inScope(actor, replicaScope(rule))) {
      throw new NotFoundError(`Replica rule ${id} not found`);
    }
    authorize(actor, "backup.manage", replicaScope(rule));
    const { policy } = live;
    const next: ReplicaRule = { ...rule, ...data, updatedAt: now.toISOString() };
    const op = kv.atomic().check(live.entry, live.policyEntry);
    let note = "";
    if (next.targetId !== rule.targetId) {
      const newEntry = await readSecondaryTarget(kv, actor, policy, next.targetId, id);
      const oldEntry = await kv.get<StorageTarget>(targetKey(rule.targetId));
      if (newEntry.value.besId !== policy.besId) await checkEngineNotDeleting(kv, op, newEntry.value.besId);
      op.check(newEntry, oldEntry)
        .set(targetKey(next.targetId), { ...newEntry.value, policyCount: newEntry.value.policyCount + 1 })
        .delete(replicasByTargetKey(rule.targetId, id))
        .set(replicasByTargetKey(next.targetId, id), id);
      if (oldEntry.value) {
        op.set(targetKey(rule.targetId), {
          ...oldEntry.value,
          policyCount: Math.max(0, oldEntry.value.policyCount - 1),
        });
      }
      note = `; now to ${newEntry.value.name}`;
    }
    op.set(replicaKey(id), next);
    appendAudit(op, actor, {
      ...replicaScope(rule),
      action: "replica.update",
      objectType: "replica",
      objectId: id,
      summary: `Updated replica rule of policy ${policy.name} (${flags(next)})${note}`,
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  });
}

/**
 * Removes one rule with all its keys and releases its target (`policyCount` − 1), checked against
 * both entries and retried. `audit` names who removed it, if anyone. Returns false if already gone.
 */
async function removeRule(
  kv: Deno.Kv,
  id: string,
  audit: { actor: Actor; now: Date; summary: (rule: ReplicaRule) => string } | null,
): Promise<boolean> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const entry = await kv.get<ReplicaRule>(replicaKey(id));
    const rule = entry.value;
    if (!rule) return false;
    const targetEntry = await kv.get<StorageTarget>(targetKey(rule.targetId));
    const op = kv.atomic().check(entry, targetEntry);
    for (const key of replicaKeys(rule)) op.delete(key);
    if (targetEntry.value) {
      op.set(targetKey(rule.targetId), {
        ...targetEntry.value,
        policyCount: Math.max(0, targetEntry.value.policyCount - 1),
      });
    }
    if (audit) {
      appendAudit(op, audit.actor, {
        ...replicaScope(rule),
        action: "replica.delete",
        objectType: "replica",
        objectId: id,
        summary: audit.summary(rule),
      }, audit.now);
    }
    if ((await op.commit()).ok) return true;
  }
  throw new ConflictError(`Replica rule ${id} kept changing while it was being removed; try again`);
}

/** Deletes a replica rule and releases its target. Needs backup.manage on the rule's policy. */
export async function deleteReplica(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<void> {
  const live = await readLiveRule(kv, id);
  const rule = live?.entry.value;
  if (!live || !rule || !inScope(actor, replicaScope(rule))) {
    throw new NotFoundError(`Replica rule ${id} not found`);
  }
  authorize(actor, "backup.manage", replicaScope(rule));
  const target = (await kv.get<StorageTarget>(targetKey(rule.targetId))).value;
  const removed = await removeRule(kv, id, {
    actor,
    now,
    summary: () => `Removed replica rule: policy ${live.policy.name} → ${target?.name ?? rule.targetId}`,
  });
  if (!removed) throw new NotFoundError(`Replica rule ${id} not found`);
}

/**
 * Deletes every replica rule of a policy and releases their targets (for the policy's cascade;
 * idempotent). Call it before the cascade clears `["replicas_by_policy", policyId]`, which is how it
 * finds them.
 */
export async function deleteReplicasOfPolicy(kv: Deno.Kv, policyId: string): Promise<number> {
  let n = 0;
  for await (const e of kv.list<unknown>({ prefix: ["replicas_by_policy", policyId] })) {
    // A pointer without its record (or not a pointer at all) is simply dropped.
    if (typeof e.value === "string" && await removeRule(kv, e.value, null)) n++;
    else await kv.delete(e.key);
  }
  return n;
}

/**
 * Removes replica rules whose policy or target no longer exists (a policy delete whose cascade knew
 * only `["replicas_by_policy", …]` leaves them, with their target still counted) and releases their
 * targets; audited as the system. Only `accountId`'s rules when given. Idempotent; returns the count.
 */
export async function sweepOrphanReplicas(
  kv: Deno.Kv,
  now: Date,
  options: {
    accountId?: string;
    isDoomed?: (rule: ReplicaRule, policy: PolicyCore | null, target: StorageTarget | null) => boolean;
    audit?: boolean;
  } = {},
): Promise<number> {
  const isDoomed = options.isDoomed ?? ((_, p, t) => p === null || t === null);
  const found: ReplicaRule[] = [];
  if (options.accountId) {
    const keys: Deno.KvKey[] = [];
    for await (const e of kv.list<string>({ prefix: ["replicas_by_account", options.accountId] })) {
      keys.push(replicaKey(e.value));
    }
    found.push(...await getManyValues<ReplicaRule>(kv, keys));
  } else {
    for await (const e of kv.list<ReplicaRule>({ prefix: ["replicas"] })) found.push(e.value);
  }
  // Only well-formed rules (nothing else is written under these prefixes, but a sweep must not crash).
  const rules = found.filter((r) => typeof r?.policyId === "string" && typeof r.targetId === "string");
  const policies = new Map(
    (await getManyValues<PolicyCore>(kv, [...new Set(rules.map((r) => r.policyId))].map(policyKey)))
      .map((p) => [p.id, p]),
  );
  const targets = new Map(
    (await getManyValues<StorageTarget>(kv, [...new Set(rules.map((r) => r.targetId))].map(targetKey)))
      .map((t) => [t.id, t]),
  );
  const audit = options.audit === false ? null : {
    actor: systemActor("replica-sweep"),
    now,
    summary: (r: ReplicaRule) =>
      `Removed replica rule of policy ${r.policyId} to target ${r.targetId}: ` +
      (policies.has(r.policyId) ? "its target is gone" : "its policy was deleted"),
  };
  let n = 0;
  for (const rule of rules) {
    const doomed = isDoomed(rule, policies.get(rule.policyId) ?? null, targets.get(rule.targetId) ?? null);
    if (doomed && await removeRule(kv, rule.id, audit)) n++;
  }
  return n;
}

// A BES cascade removes, whatever the order of the steps, the rules of its policies and the rules
// writing to its targets (policies of other BES included), releasing targets that survive. No new rule
// can attach meanwhile: createReplica checks that neither BES is being deleted.
registerEngineCascade({
  name: "replica_rules",
  async run(kv, engine, now) {
    return await sweepOrphanReplicas(kv, now, {
      accountId: engine.accountId,
      audit: false,
      isDoomed: (_, p, t) => p === null || t === null || p.besId === engine.id || t.besId === engine.id,
    });
  },
});
