/**
 * The KV keys of a policy and of its pointer indexes, in a module of their own (no imports), so that the
 * modules the policy cascade reaches (assignments, hooks, replicas, holds, scripts, drills) can build a
 * policy key without importing policies.ts and closing an import cycle.
 */
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
/**
 * A deleted policy as it was last (with `deletedAt`), kept while it has restore points: retention goes
 * on expiring them under its last settings, and Restore still finds their policy.
 */
export function retiredPolicyKey(policyId: string) {
  return ["policies_retired", policyId] as const;
}
export function retiredPoliciesByAccountKey(accountId: string, policyId: string) {
  return ["policies_retired_by_account", accountId, policyId] as const;
}

/** Primary key of an assignment. */
export function assignmentKey(id: string) {
  return ["assignments", id] as const;
}

/** Unique per (policy, host): invariant 3. Under `policyChildPrefixes`, so a policy delete removes it. */
export function assignmentByPolicyKey(policyId: string, hostId: string) {
  return ["assignments_by_policy", policyId, hostId] as const;
}

/** A host's assignments, one per policy. */
export function assignmentByHostKey(hostId: string, policyId: string) {
  return ["assignments_by_host", hostId, policyId] as const;
}

export function hookKey(id: string) {
  return ["hooks", id] as const;
}

export function hooksByPolicyKey(policyId: string, id: string) {
  return ["hooks_by_policy", policyId, id] as const;
}

/** Prefixes of the policy indexes: every policy, a target's, an account's. */
export function policiesPrefix(): Deno.KvKey {
  return ["policies"];
}
export function policiesByTargetPrefix(targetId: string): Deno.KvKey {
  return ["policies_by_target", targetId];
}
export function policiesByAccountPrefix(accountId: string): Deno.KvKey {
  return ["policies_by_account", accountId];
}
export function policiesByBesPrefix(besId: string): Deno.KvKey {
  return ["policies_by_bes", besId];
}
export function assignmentsByPolicyPrefix(policyId: string): Deno.KvKey {
  return ["assignments_by_policy", policyId];
}
export function assignmentsByHostPrefix(hostId: string): Deno.KvKey {
  return ["assignments_by_host", hostId];
}
export function hooksByPolicyPrefix(policyId: string): Deno.KvKey {
  return ["hooks_by_policy", policyId];
}
/** Every deleted policy still kept (`retiredPolicyKey`). */
export function retiredPoliciesPrefix(): Deno.KvKey {
  return ["policies_retired"];
}
/** Every assignment, every policy's hooks (the scheduler's tick reads them whole). */
export function assignmentsPrefix(): Deno.KvKey {
  return ["assignments"];
}
export function hooksByPolicyAllPrefix(): Deno.KvKey {
  return ["hooks_by_policy"];
}

export function scriptKey(id: string) {
  return ["scripts", id] as const;
}

export function scriptsByAccountKey(accountId: string, id: string) {
  return ["scripts_by_account", accountId, id] as const;
}

/** Pointer from a script to a hook that runs it (written by hooks.ts). */
export function hooksByScriptKey(scriptId: string, hookId: string) {
  return ["hooks_by_script", scriptId, hookId] as const;
}

/** The counter of an account's policies in one org (`"account"`: account-scoped policies). */
export function policyCountKey(accountId: string, orgId: string | null) {
  return ["policy_counts", accountId, orgId ?? "account"] as const;
}

/** Every policy counter, or an account's (`policyCountKey`). */
export function policyCountsPrefix(accountId?: string): Deno.KvKey {
  return accountId === undefined ? ["policy_counts"] : ["policy_counts", accountId];
}
/** The name index (`["policies_by_name", accountId, nameKey, policyId]`): every account's, or one account's. */
export function policiesByNamePrefix(accountId?: string): Deno.KvKey {
  return accountId === undefined ? ["policies_by_name"] : ["policies_by_name", accountId];
}
