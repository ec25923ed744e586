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
