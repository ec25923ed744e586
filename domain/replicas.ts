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
 *
 * Replication status (the guide's "Replication status is tracked and reported back via ingest"): each
 * restore point a rule applies to gets a record `["replications", restorePointId, ruleId]` in the same
 * atomic operation as its replicate job, indexed by `["replications_by_rule", ruleId, restorePointId]`.
 * Per rule, `["replica_counts", ruleId, status]` counts points pending, succeeded and failed (KV sums:
 * a backup result never conflicts with another over them) and `["replica_last", ruleId]` holds the last
 * success and the last failure. A record is final once its job's result is applied; until then it is
 * read together with its job, so a claimed job shows as running.
 */
import {
  replicaCountKey,
  replicaIndexCleanupKey,
  replicaIndexCleanupsPrefix,
  replicaKey,
  replicaLastKey,
  replicasByAccountKey,
  replicasByAccountPrefix,
  replicasByPolicyKey,
  replicasByPolicyPrefix,
  replicasByTargetKey,
  replicasPrefix,
  replicationKey,
  replicationsByRuleKey,
  replicationsByRulePrefix,
  replicationsPrefix,
} from "./keys/replicas.ts";
import { z } from "zod";
import { appendAudit } from "./audit.ts";
import { kekReference as kekReferenceOf } from "./keks.ts";
import type { Engine } from "./engines.ts";
import { engineKey } from "./keys/engines.ts";
import { NotFoundError, ValidationError } from "./errors.ts";
import { newId } from "./ids.ts";
import { getJobs, type Job, queueJobInOp } from "./job_queue.ts";
import { COUNT_DOWN, COUNT_UP, counterValue, getManyValues, type Page, withRetry } from "./kv.ts";
import { pageOf, PageQuery } from "./paging.ts";
import { deleteByPointerIndex } from "./pointer_index.ts";
import type { Policy, PolicyCore } from "./policies.ts";
import { policyKey } from "./policy_keys.ts";
import { checkEngineNotDeleting, policyForNewChild, requirePolicy } from "./policy_reads.ts";
import { type Actor, authorize, inScope, systemActor } from "./rbac.ts";
import type { StorageTarget } from "./storage.ts";
import { targetKey, targetScope } from "./storage_keys.ts";
import { addTargetReference, releaseTargetReference } from "./target_references.ts";
import { TARGET_TYPE_LABELS, type TargetType } from "./storage_types.ts";
import { evaluate321, type ThreeTwoOne } from "./three_two_one.ts";
import type { RestorePoint } from "./restore_points.ts";
import { restorePointKey } from "./keys/restore.ts";
import { type Host, hostKey, hostScope } from "./hosts.ts";
import { dataFixKey } from "./keys/data_fixes.ts";
export { replicaKey, replicasByAccountKey, replicasByPolicyKey, replicasByTargetKey };

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
  /** Points replicated, pending and failed under this rule, and its last success and failure. */
  stats: ReplicaStats;
}

/**
 * Which key-encryption key guards a rule's replica, never the key itself (engines never hold a KEK: the
 * job key endpoint hands them namespace keys, keks.ts/namespace_keys.ts). For `account`
 * it names the control plane's KEK of the account (`account:<accountId>`); for `pam_vault` the
 * identity the external vault keeps the KEK under (`pam_vault:<accountId>:<orgId>`, `account` for an
 * account-level policy).
 */
interface KekReference {
  source: KekSource;
  keyId: string;
}

/** The KEK reference of a rule (see `KekReference`). */
function kekReference(rule: Pick<ReplicaRule, "kekSource" | "accountId" | "orgId">): KekReference {
  return kekReferenceOf(rule.kekSource, rule.accountId, rule.orgId);
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

/** The fields of a rule, without their cross-field rule. Strict: unknown fields are refused. */
const ReplicaShape = z.object({
  targetId: z.string().min(1, "is required").max(40),
  kekSource: z.enum(KEK_SOURCES, { error: "must be account or pam_vault" }).default("account"),
  replicateAfterFull: z.boolean().default(true),
  replicateAfterIncremental: z.boolean().default(true),
  isOffsite: z.boolean().default(false),
}).strict();

/** A rule replicates after full backups, after incrementals, or both. */
function whenRule(
  r: { replicateAfterFull: boolean; replicateAfterIncremental: boolean },
  ctx: z.RefinementCtx,
) {
  if (!r.replicateAfterFull && !r.replicateAfterIncremental) {
    ctx.addIssue({
      code: "custom",
      path: ["replicateAfterFull"],
      message: "choose when to replicate: after full backups, after incrementals, or both",
    });
  }
}

/** The editable fields of a rule (its policy is set once, at creation). */
export const ReplicaFields = ReplicaShape.superRefine(whenRule);
export type ReplicaUpdateInput = z.input<typeof ReplicaFields>;

/** A new rule: its policy and its fields (the Replicas page's form, the policy page's, the API). */
export const ReplicaCreateInput = ReplicaShape.extend({ policyId: z.string().min(1, "is required").max(40) })
  .superRefine(whenRule);
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
  for await (const e of kv.list<string>({ prefix: replicasByPolicyPrefix(policyId) })) {
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
  const stats = await replicaStats(kv, rules.map((r) => r.id));
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
      stats: stats.get(r.id)!,
    }];
  });
}

/** One rule as listed (names and status). Throws NotFoundError like `requireReplica`. */
export async function requireReplicaRow(kv: Deno.Kv, actor: Actor, id: string): Promise<ReplicaRow> {
  const rule = await requireReplica(kv, actor, id);
  const policy = (await kv.get<PolicyCore>(policyKey(rule.policyId))).value;
  const [row] = policy ? await toRows(kv, actor, [rule], new Map([[policy.id, policy]])) : [];
  if (!row) throw new NotFoundError(`Replica rule ${id} not found`);
  return row;
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
  for await (const e of kv.list<string>({ prefix: replicasByAccountPrefix(actor.accountId) })) {
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

/** The Replicas list as a strict query with a cursor (`GET /api/v1/replicas`): optionally one policy's rules. */
export const ReplicaQuery = z.object({ policyId: z.string().max(40, "must be a policy id").optional() })
  .extend(PageQuery.shape).strict();
export type ReplicaQuery = z.input<typeof ReplicaQuery>;

/**
 * The rules of `listReplicas` (or, with `policyId`, of `listReplicasByPolicy`: NotFoundError for a
 * policy out of scope) a page at a time, by policy name then age. Throws ZodError for a bad query,
 * InvalidCursorError for a cursor of another list.
 */
export async function listReplicasPage(
  kv: Deno.Kv,
  actor: Actor,
  query: ReplicaQuery,
): Promise<Page<ReplicaRow>> {
  const { policyId, cursor, limit } = ReplicaQuery.parse(query);
  const rows = policyId ? await listReplicasByPolicy(kv, actor, policyId) : await listReplicas(kv, actor);
  return pageOf(rows, { list: "replicas", key: (r) => [r.policyName, r.id], cursor, limit });
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
    const { policyEntry, policy, scope } = await policyForNewChild(kv, actor, data.policyId);
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
    addTargetReference(op.check({ key: primary, versionstamp: null }).set(primary, rule), target);
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
        .delete(replicasByTargetKey(rule.targetId, id))
        .set(replicasByTargetKey(next.targetId, id), id);
      addTargetReference(op, newEntry.value);
      releaseTargetReference(op, oldEntry);
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
  const attempt = async (): Promise<{ value: boolean } | null> => {
    const entry = await kv.get<ReplicaRule>(replicaKey(id));
    const rule = entry.value;
    if (!rule) return { value: false };
    const targetEntry = await kv.get<StorageTarget>(targetKey(rule.targetId));
    const op = kv.atomic().check(entry, targetEntry);
    for (const key of replicaKeys(rule)) op.delete(key);
    for (const key of replicaStatsKeys(id)) op.delete(key);
    // The rule's index of its replications goes in this write when small; a larger one is recorded for
    // `resumeReplicaIndexCleanups` (readers go through the rule, so its entries are ignored meanwhile).
    const index: Deno.KvKey[] = [];
    for await (
      const e of kv.list({ prefix: replicationsByRulePrefix(id) }, { limit: INDEX_DELETE_INLINE + 1 })
    ) index.push(e.key);
    if (index.length <= INDEX_DELETE_INLINE) { for (const key of index) op.delete(key); }
    else op.set(replicaIndexCleanupKey(id), true);
    releaseTargetReference(op, targetEntry);
    if (audit) {
      appendAudit(op, audit.actor, {
        ...replicaScope(rule),
        action: "replica.delete",
        objectType: "replica",
        objectId: id,
        summary: audit.summary(rule),
      }, audit.now);
    }
    if (!(await op.commit()).ok) return null;
    // The per-point records stay (a restore point keeps its history); the rule's index of them goes.
    if (index.length > INDEX_DELETE_INLINE) await cleanUpRuleIndex(kv, id);
    return { value: true };
  };
  return await withRetry(
    attempt,
    10,
    `Replica rule ${id} kept changing while it was being removed; try again`,
  );
}

/** A rule's index entries deleted in the rule's own removal write at most (KV allows 1000 mutations). */
const INDEX_DELETE_INLINE = 500;

/** Deletes a removed rule's replication index in batches, then its cleanup record. Idempotent. */
async function cleanUpRuleIndex(kv: Deno.Kv, ruleId: string): Promise<void> {
  if ((await kv.get(replicaKey(ruleId))).versionstamp) {
    await kv.delete(replicaIndexCleanupKey(ruleId)); // not removed after all: its index stays
    return;
  }
  let keys: Deno.KvKey[] = [];
  for await (const e of kv.list({ prefix: replicationsByRulePrefix(ruleId) })) {
    keys.push(e.key);
    if (keys.length === INDEX_DELETE_INLINE) {
      const op = kv.atomic();
      for (const key of keys) op.delete(key);
      await op.commit();
      keys = [];
    }
  }
  const op = kv.atomic();
  for (const key of keys) op.delete(key);
  await op.delete(replicaIndexCleanupKey(ruleId)).commit();
}

/**
 * Finishes the index deletions of removed rules that a crash interrupted (the 10-minute purge job).
 * Returns how many rules it finished.
 */
export async function resumeReplicaIndexCleanups(kv: Deno.Kv): Promise<number> {
  let n = 0;
  for await (const e of kv.list({ prefix: replicaIndexCleanupsPrefix() })) {
    await cleanUpRuleIndex(kv, String(e.key[1]));
    n++;
  }
  return n;
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
  return await deleteByPointerIndex(kv, replicasByPolicyPrefix(policyId), (id) => removeRule(kv, id, null));
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
    for await (const e of kv.list<string>({ prefix: replicasByAccountPrefix(options.accountId) })) {
      keys.push(replicaKey(e.value));
    }
    found.push(...await getManyValues<ReplicaRule>(kv, keys));
  } else {
    for await (const e of kv.list<ReplicaRule>({ prefix: replicasPrefix() })) found.push(e.value);
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

// ---------------------------------------------------------------------------------------------------
// Replication status

/** What pages and the API show: `running` is not stored, it is the record's job being claimed. */
export const REPLICATION_STATUSES = ["pending", "running", "succeeded", "failed"] as const;
export type ReplicationStatus = (typeof REPLICATION_STATUSES)[number];
type StoredStatus = "pending" | "succeeded" | "failed";

/** Replication of one restore point under one rule, as stored (final once its job's result is applied). */
export interface Replication {
  restorePointId: string;
  ruleId: string;
  targetId: string;
  jobId: string;
  /** Records written before issue 14 say `success` for `succeeded`. */
  status: StoredStatus;
  queuedAt?: string;
  startedAt?: string | null;
  endedAt?: string | null;
  bytes: number;
  error: string | null;
  updatedAt: string;
}

/** A replication as pages and the API show it, with its rule's target. */
export interface ReplicationView {
  restorePointId: string;
  ruleId: string;
  /** False when the rule was removed since (the record stays with the point). */
  ruleExists: boolean;
  targetId: string;
  targetName: string | null;
  kekSource: KekSource | null;
  status: ReplicationStatus;
  queuedAt: string | null;
  startedAt: string | null;
  endedAt: string | null;
  bytes: number;
  error: string | null;
  jobId: string;
  updatedAt: string;
}

/** Per rule: how many points were replicated, are pending (or running) and failed; the last of each. */
export interface ReplicaStats {
  replicated: number;
  pending: number;
  failed: number;
  lastReplicatedPointId: string | null;
  lastSuccessAt: string | null;
  lastFailedPointId: string | null;
  lastFailureAt: string | null;
  lastError: string | null;
}

interface ReplicaLast {
  success: { restorePointId: string; at: string; bytes: number } | null;
  failure: { restorePointId: string; at: string; error: string | null } | null;
}

/** The per-rule status keys, removed with the rule. */
function replicaStatsKeys(ruleId: string): [Deno.KvKey, Deno.KvKey, Deno.KvKey, Deno.KvKey] {
  return [
    replicaCountKey(ruleId, "pending"),
    replicaCountKey(ruleId, "succeeded"),
    replicaCountKey(ruleId, "failed"),
    replicaLastKey(ruleId),
  ];
}

/**
 * The payload of a replicate job (docs/engine-protocol.md, "Replication"): the point (ours and the
 * engine's id), where it is and where it goes, and the rule's KEK source with the reference the engine
 * fetches that key by. Never key material.
 */
function replicatePayload(
  rule: Pick<ReplicaRule, "id" | "targetId" | "kekSource" | "accountId" | "orgId" | "isOffsite">,
  policy: Pick<PolicyCore, "id" | "targetId">,
  point: Pick<RestorePoint, "id" | "engineRestorePointId" | "chainId" | "type" | "hostId" | "repository">,
  target: Pick<StorageTarget, "id" | "type" | "besId" | "config">,
): Record<string, unknown> {
  return {
    // The repository that holds the point (ENGINE.md §3); the copy goes to the same path on `targetId`.
    ...(point.repository ? { repository: point.repository } : {}),
    restorePointId: point.id,
    engineRestorePointId: point.engineRestorePointId ?? point.id,
    chainId: point.chainId,
    pointType: point.type,
    policyId: policy.id,
    hostId: point.hostId,
    ruleId: rule.id,
    sourceTargetId: policy.targetId,
    targetId: rule.targetId,
    target: { id: target.id, type: target.type, besId: target.besId, config: target.config },
    isOffsite: rule.isOffsite,
    kekSource: rule.kekSource,
    kek: kekReference(rule),
  };
}

/**
 * After a backup's restore point: a replicate job to the policy's BES for each rule of the policy that
 * applies to the point's type (after full / after incremental), with its replication record, index and
 * pending count — all in the caller's atomic operation. Returns the jobs queued.
 */
export async function queueReplicationsInOp(
  kv: Deno.Kv,
  op: Deno.AtomicOperation,
  policy: Pick<PolicyCore, "id" | "besId" | "targetId" | "accountId" | "orgId">,
  point: RestorePoint,
  now: Date,
): Promise<Job[]> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: replicasByPolicyPrefix(policy.id) })) {
    keys.push(replicaKey(e.value));
  }
  const rules: ReplicaRule[] = [];
  for (let i = 0; i < keys.length; i += 10) {
    for (const e of await kv.getMany<ReplicaRule[]>(keys.slice(i, i + 10))) {
      const rule = e.value;
      if (
        !rule || !(point.type === "incremental" ? rule.replicateAfterIncremental : rule.replicateAfterFull)
      ) {
        continue;
      }
      // Checked: a rule removed meanwhile fails the write (its counts must not come back).
      op.check(e);
      rules.push(rule);
    }
  }
  if (!rules.length) return [];
  const targets = new Map(
    (await getManyValues<StorageTarget>(kv, rules.map((r) => targetKey(r.targetId)))).map((t) => [t.id, t]),
  );
  const jobs: Job[] = [];
  for (const rule of rules) {
    const target = targets.get(rule.targetId);
    if (!target) continue; // a rule whose target is going away with its BES: nothing to copy to
    const job = queueJobInOp(op, {
      kind: "replicate",
      principal: `bes:${policy.besId}`,
      accountId: policy.accountId,
      orgId: policy.orgId,
      payload: replicatePayload(rule, policy, point, target),
    }, now);
    const at = now.toISOString();
    const record: Replication = {
      restorePointId: point.id,
      ruleId: rule.id,
      targetId: rule.targetId,
      jobId: job.id,
      status: "pending",
      queuedAt: at,
      startedAt: null,
      endedAt: null,
      bytes: 0,
      error: null,
      updatedAt: at,
    };
    op.set(replicationKey(point.id, rule.id), record)
      .set(replicationsByRuleKey(rule.id, point.id), point.id)
      .sum(replicaCountKey(rule.id, "pending"), COUNT_UP);
    jobs.push(job);
  }
  return jobs;
}

/** A non-negative whole number of bytes from an engine's report (0 for anything else). */
function byteCount(value: unknown): number {
  const n = Number(value);
  return Number.isFinite(n) && n >= 0 ? Math.round(n) : 0;
}

/** The final state a job's result gives a pending record. */
function finished(record: Replication, result: NonNullable<Job["result"]>, now: Date): Replication {
  const output = result.output?.replication as { bytes?: unknown } | undefined;
  return {
    ...record,
    status: result.status === "failed" ? "failed" : "succeeded",
    startedAt: result.startedAt,
    endedAt: result.endedAt,
    bytes: byteCount(output?.bytes ?? result.bytesTransferred),
    error: result.error?.message ?? null,
    updatedAt: now.toISOString(),
  };
}

/**
 * Applies a replicate job's result to its record (pending → succeeded or failed), the rule's counts and
 * its last success or failure, in one checked atomic operation. Idempotent: a final record is left.
 */
export async function applyReplicationOutcome(kv: Deno.Kv, job: Job, now: Date): Promise<void> {
  const result = job.result;
  if (!result) return;
  const pointId = String(job.payload.restorePointId ?? "");
  const ruleId = String(job.payload.ruleId ?? "");
  const key = replicationKey(pointId, ruleId);
  // Commit retry (retry.ts): ten lost races throw CommitConflictError (the result route answers 503
  // `busy`; the engine re-posts the result). Giving up quietly left the record pending for ever and the
  // rule's counts and last success or failure wrong.
  const attempt = async (): Promise<{ value: void } | null> => {
    const [entry, lastEntry, rule] = await kv.getMany<[Replication, ReplicaLast, ReplicaRule]>([
      key,
      replicaLastKey(ruleId),
      replicaKey(ruleId),
    ]);
    if (!entry.value || entry.value.status !== "pending" || entry.value.jobId !== job.id) {
      return { value: undefined };
    }
    const next = finished(entry.value, result, now);
    const op = kv.atomic().check(entry, lastEntry, rule).set(key, next);
    // A removed rule's counts went with it; only its point keeps the record.
    if (rule.value) {
      const last: ReplicaLast = lastEntry.value ?? { success: null, failure: null };
      const at = next.endedAt ?? next.updatedAt;
      if (next.status === "succeeded" && (!last.success || last.success.at <= at)) {
        last.success = { restorePointId: pointId, at, bytes: next.bytes };
      }
      if (next.status === "failed" && (!last.failure || last.failure.at <= at)) {
        last.failure = { restorePointId: pointId, at, error: next.error };
      }
      op.sum(replicaCountKey(ruleId, "pending"), COUNT_DOWN)
        .sum(replicaCountKey(ruleId, next.status), COUNT_UP)
        .set(replicaLastKey(ruleId), last);
    }
    return (await op.commit()).ok ? { value: undefined } : null;
  };
  await withRetry(
    attempt,
    10,
    `The replication of restore point ${pointId} (rule ${ruleId}) conflicted; post it again`,
  );
}

/** A record as it stands now: a pending one takes its job's state (claimed → running, result → final). */
function currentState(
  record: Replication,
  job: Job | null,
  now: Date,
): Omit<Replication, "status"> & { status: ReplicationStatus } {
  const stored = (record.status as string) === "success" ? "succeeded" : record.status;
  if (stored !== "pending") return { ...record, status: stored };
  if (!job || job.id !== record.jobId) return { ...record, status: "pending" };
  if (job.result) return finished(record, job.result, now);
  if (job.status === "failed" || job.status === "cancelled") {
    return {
      ...record,
      status: "failed",
      error: job.status === "cancelled"
        ? "The replicate job was cancelled"
        : job.failureReason ?? "The job failed",
      updatedAt: job.updatedAt,
    };
  }
  if (job.status === "leased") {
    return {
      ...record,
      status: "running",
      bytes: byteCount(job.progress?.bytesTransferred),
      updatedAt: job.updatedAt,
    };
  }
  return { ...record, status: "pending" };
}

/** Views of records, with their rules' targets and pending records' jobs read in chunks. */
async function toReplicationViews(
  kv: Deno.Kv,
  records: Replication[],
  now: Date,
): Promise<ReplicationView[]> {
  const rules = new Map(
    (await getManyValues<ReplicaRule>(kv, [...new Set(records.map((r) => r.ruleId))].map(replicaKey)))
      .map((r) => [r.id, r]),
  );
  const targets = new Map(
    (await getManyValues<StorageTarget>(kv, [...new Set(records.map((r) => r.targetId))].map(targetKey)))
      .map((t) => [t.id, t]),
  );
  const jobs = new Map(
    (await getJobs(kv, records.filter((r) => r.status === "pending").map((r) => r.jobId))).map((
      j,
    ) => [j.id, j]),
  );
  return records.map((r) => {
    const state = currentState(r, jobs.get(r.jobId) ?? null, now);
    const rule = rules.get(r.ruleId);
    return {
      restorePointId: r.restorePointId,
      ruleId: r.ruleId,
      ruleExists: Boolean(rule),
      targetId: r.targetId,
      targetName: targets.get(r.targetId)?.name ?? null,
      kekSource: rule?.kekSource ?? null,
      status: state.status,
      queuedAt: r.queuedAt ?? null,
      startedAt: state.startedAt ?? null,
      endedAt: state.endedAt ?? null,
      bytes: state.bytes,
      error: state.error,
      jobId: r.jobId,
      updatedAt: state.updatedAt,
    };
  });
}

/**
 * The replications of one restore point, one per rule that applied to it, by target name. The caller
 * has checked the point's scope (`requireRestorePoint`).
 */
export async function listReplicationsOfPoint(
  kv: Deno.Kv,
  restorePointId: string,
  now: Date,
): Promise<ReplicationView[]> {
  const records: Replication[] = [];
  for await (const e of kv.list<Replication>({ prefix: replicationsPrefix(restorePointId) })) {
    records.push(e.value);
  }
  return (await toReplicationViews(kv, records, now)).sort((a, b) =>
    (a.targetName ?? a.targetId).localeCompare(b.targetName ?? b.targetId) || a.ruleId.localeCompare(b.ruleId)
  );
}

/**
 * The newest replications of replica rules the caller has already read in the actor's scope — a policy's
 * rules (`listReplicasByPolicy`) or one rule (`requireReplicaRow`) — at most `limit`, newest point first.
 * Points of a host outside the actor's scope are left out.
 */
export async function listRecentReplications(
  kv: Deno.Kv,
  actor: Actor,
  rules: readonly Pick<ReplicaRule, "id">[],
  now: Date,
  options: { limit?: number } = {},
): Promise<ReplicationView[]> {
  const limit = options.limit ?? 10;
  const keys: Deno.KvKey[] = [];
  for (const rule of rules) {
    for await (
      const e of kv.list<string>({ prefix: replicationsByRulePrefix(rule.id) }, { reverse: true, limit })
    ) {
      keys.push(replicationKey(e.value, rule.id));
    }
  }
  const sorted = (await getManyValues<Replication>(kv, keys))
    .sort((a, b) => b.restorePointId.localeCompare(a.restorePointId) || a.ruleId.localeCompare(b.ruleId));
  // A point holds its host's files: one of a host outside the actor's scope is not listed (restore.ts's rule).
  const points = await getManyValues<RestorePoint>(
    kv,
    [...new Set(sorted.map((r) => r.restorePointId))].map(restorePointKey),
  );
  const hosts = new Map(
    (await getManyValues<Host>(kv, [...new Set(points.flatMap((p) => p.hostId ?? []))].map(hostKey)))
      .map((h) => [h.id, h]),
  );
  const hidden = new Set(
    points.filter((p) => {
      const host = p.hostId ? hosts.get(p.hostId) : undefined;
      return host !== undefined && !inScope(actor, hostScope(host));
    }).map((p) => p.id),
  );
  const records = sorted.filter((r) => !hidden.has(r.restorePointId)).slice(0, limit);
  return await toReplicationViews(kv, records, now);
}

/** Set once every rule's counts, last results and index were rebuilt from its replication records. */
const REPLICA_COUNTS_FIX_KEY = dataFixKey("replica_counts_v1");

/** A rule whose stored counts differed from its records (what the data fix corrected). */
export interface ReplicaCountCorrection {
  ruleId: string;
  before: Record<StoredStatus, number>;
  after: Record<StoredStatus, number>;
}

/**
 * Data fix run on start: replication records written before the per-rule counts and index existed (or
 * with the legacy status `success`) left the counts wrong — a record queued before had no pending count,
 * so its result took pending to −1; such records had no `replications_by_rule` entry; `success` records
 * were never counted. First every record of an existing rule gets its index entry (and `success` becomes
 * `succeeded`, checked against the record), then each rule's counts and last success / failure are set to
 * what its records say, in a write checked against the counters read before its index was listed — a
 * replication queued or finished meanwhile changes them, and the rule is counted again. Nothing is
 * clamped: every rule whose counts changed is returned (before and after) for the log. Idempotent; a
 * marker makes later calls skip it (unless `force`), and a crash part-way leaves none.
 */
export async function rebuildReplicaCounts(
  kv: Deno.Kv,
  now: Date,
  options: { force?: boolean } = {},
): Promise<{ skipped: boolean; rules: number; indexed: number; corrected: ReplicaCountCorrection[] }> {
  if (!options.force && (await kv.get(REPLICA_COUNTS_FIX_KEY)).value) {
    return { skipped: true, rules: 0, indexed: 0, corrected: [] };
  }
  const ruleIds = new Set<string>();
  for await (const e of kv.list<ReplicaRule>({ prefix: replicasPrefix() })) ruleIds.add(String(e.key[1]));
  let indexed = 0;
  for await (const e of kv.list<Replication>({ prefix: replicationsPrefix() }, { batchSize: 500 })) {
    const record = e.value;
    const [, pointId, ruleId] = e.key as [string, string, string];
    if (!ruleIds.has(ruleId)) continue; // a removed rule's records stay with their points, uncounted
    const index = replicationsByRuleKey(ruleId, pointId);
    const op = kv.atomic().set(index, pointId);
    if ((record.status as string) === "success") op.check(e).set(e.key, { ...record, status: "succeeded" });
    if (!(await op.commit()).ok) {
      // Changed meanwhile (only a pending record's result does that): the index entry alone.
      await kv.set(index, pointId);
    }
    indexed++;
  }
  const corrected: ReplicaCountCorrection[] = [];
  for (const ruleId of ruleIds) {
    await withRetry(
      async () => {
        const rule = await kv.get<ReplicaRule>(replicaKey(ruleId));
        if (!rule.value) return { value: undefined }; // removed meanwhile: its counts went with it
        const stats = await kv.getMany<[Deno.KvU64, Deno.KvU64, Deno.KvU64, ReplicaLast]>(
          replicaStatsKeys(ruleId),
        );
        const keys: Deno.KvKey[] = [];
        for await (const e of kv.list<string>({ prefix: replicationsByRulePrefix(ruleId) })) {
          keys.push(replicationKey(e.value, ruleId));
        }
        const after: Record<StoredStatus, number> = { pending: 0, succeeded: 0, failed: 0 };
        const last: ReplicaLast = { success: null, failure: null };
        for (const r of await getManyValues<Replication>(kv, keys)) {
          const status: StoredStatus = (r.status as string) === "success" ? "succeeded" : r.status;
          after[status]++;
          const at = r.endedAt ?? r.updatedAt;
          if (status === "succeeded" && (!last.success || last.success.at <= at)) {
            last.success = { restorePointId: r.restorePointId, at, bytes: r.bytes };
          }
          if (status === "failed" && (!last.failure || last.failure.at <= at)) {
            last.failure = { restorePointId: r.restorePointId, at, error: r.error };
          }
        }
        const before: Record<StoredStatus, number> = {
          pending: counterValue(stats[0].value),
          succeeded: counterValue(stats[1].value),
          failed: counterValue(stats[2].value),
        };
        const op = kv.atomic().check(rule, ...stats);
        for (const status of ["pending", "succeeded", "failed"] as const) {
          op.set(replicaCountKey(ruleId, status), new Deno.KvU64(BigInt(after[status])));
        }
        op.set(replicaLastKey(ruleId), last);
        if (!(await op.commit()).ok) return null;
        if (JSON.stringify(before) !== JSON.stringify(after)) corrected.push({ ruleId, before, after });
        return { value: undefined };
      },
      21,
      `Replica rule ${ruleId} kept changing while being recounted`,
    );
  }
  await kv.set(REPLICA_COUNTS_FIX_KEY, { at: now.toISOString(), rules: ruleIds.size, indexed, corrected });
  return { skipped: false, rules: ruleIds.size, indexed, corrected };
}

/** Per-rule status of `ruleIds` (zeros for a rule without replications yet). */
export async function replicaStats(kv: Deno.Kv, ruleIds: string[]): Promise<Map<string, ReplicaStats>> {
  const out = new Map<string, ReplicaStats>();
  for (const id of ruleIds) {
    const [pending, succeeded, failed, last] = await kv.getMany<
      [Deno.KvU64, Deno.KvU64, Deno.KvU64, ReplicaLast]
    >(
      replicaStatsKeys(id),
    );
    out.set(id, {
      replicated: counterValue(succeeded.value),
      pending: counterValue(pending.value),
      failed: counterValue(failed.value),
      lastReplicatedPointId: last.value?.success?.restorePointId ?? null,
      lastSuccessAt: last.value?.success?.at ?? null,
      lastFailedPointId: last.value?.failure?.restorePointId ?? null,
      lastFailureAt: last.value?.failure?.at ?? null,
      lastError: last.value?.failure?.error ?? null,
    });
  }
  return out;
}
