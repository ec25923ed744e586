/**
 * Backup policies — the part the storage code needs today: the keys, the storage-critical auto-pause
 * and auto-resume (DESIGN.md invariant 8), and the cascade from engines and targets. The policies issue
 * adds the rest of the aggregate on these same keys.
 */
import { appendAudit } from "./audit.ts";
import { getManyValues } from "./kv.ts";
import { systemActor } from "./rbac.ts";

export interface PolicyCore {
  id: string;
  accountId: string;
  orgId: string | null;
  besId: string;
  targetId: string;
  name: string;
  /** The operator's switch. Auto-pause never changes it. */
  enabled: boolean;
  /** Set by the system; a paused policy dispatches nothing until the reason clears. */
  pausedReason: "storage_critical" | null;
  updatedAt: string;
}

export function policyKey(id: string) {
  return ["policies", id] as const;
}
export function policiesByTargetKey(targetId: string, policyId: string) {
  return ["policies_by_target", targetId, policyId] as const;
}
export function policiesByBesKey(besId: string, policyId: string) {
  return ["policies_by_bes", besId, policyId] as const;
}
export function policiesByAccountKey(accountId: string, policyId: string) {
  return ["policies_by_account", accountId, policyId] as const;
}

/** Prefixes of a policy's children (assignments, hooks, replica rules), deleted with it. */
export function policyChildPrefixes(policyId: string): Deno.KvKey[] {
  return [["assignments_by_policy", policyId], ["hooks_by_policy", policyId], [
    "replicas_by_policy",
    policyId,
  ]];
}

/** The policies writing to a target. */
export async function listPoliciesByTarget(kv: Deno.Kv, targetId: string): Promise<PolicyCore[]> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: ["policies_by_target", targetId] })) {
    keys.push(policyKey(e.value));
  }
  return await getManyValues<PolicyCore>(kv, keys);
}

async function setPaused(
  kv: Deno.Kv,
  targetId: string,
  pause: boolean,
  now: Date,
): Promise<string[]> {
  const changed: string[] = [];
  const actor = systemActor("storage-health");
  for (const policy of await listPoliciesByTarget(kv, targetId)) {
    for (let i = 0; i < 5; i++) {
      const entry = await kv.get<PolicyCore>(policyKey(policy.id));
      const p = entry.value;
      if (!p) break;
      // Pause only running policies; resume only what this rule paused. Disabled stays disabled.
      if (pause ? p.pausedReason !== null : p.pausedReason !== "storage_critical") break;
      const next: PolicyCore = {
        ...p,
        pausedReason: pause ? "storage_critical" : null,
        updatedAt: now.toISOString(),
      };
      const op = kv.atomic().check(entry).set(policyKey(p.id), next);
      appendAudit(op, actor, {
        accountId: p.accountId,
        orgId: p.orgId,
        action: pause ? "policy.auto_pause" : "policy.auto_resume",
        objectType: "policy",
        objectId: p.id,
        summary: pause
          ? `Paused policy ${p.name}: its storage target reached critical capacity`
          : `Resumed policy ${p.name}: its storage target is healthy again`,
      }, now);
      if ((await op.commit()).ok) {
        changed.push(p.id);
        break;
      }
    }
  }
  return changed;
}

/** Pauses every policy on the target with `paused_reason = storage_critical`. Returns their ids. */
export async function pausePoliciesForStorage(kv: Deno.Kv, targetId: string, now: Date): Promise<string[]> {
  return await setPaused(kv, targetId, true, now);
}

/** Resumes exactly the policies paused for storage_critical on the target. Returns their ids. */
export async function resumePoliciesForStorage(kv: Deno.Kv, targetId: string, now: Date): Promise<string[]> {
  return await setPaused(kv, targetId, false, now);
}

/** Deletes a policy with its children and indexes (used by the engine cascade). */
export async function deletePolicyCascade(kv: Deno.Kv, policy: PolicyCore): Promise<void> {
  for (const prefix of policyChildPrefixes(policy.id)) {
    const keys: Deno.KvKey[] = [];
    for await (const e of kv.list({ prefix })) keys.push(e.key);
    for (let i = 0; i < keys.length; i += 500) {
      const op = kv.atomic();
      for (const key of keys.slice(i, i + 500)) op.delete(key);
      await op.commit();
    }
  }
  await kv.atomic()
    .delete(policyKey(policy.id))
    .delete(policiesByTargetKey(policy.targetId, policy.id))
    .delete(policiesByBesKey(policy.besId, policy.id))
    .delete(policiesByAccountKey(policy.accountId, policy.id))
    .commit();
}
