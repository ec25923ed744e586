/** The KV keys of replicas (no imports). */

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

/** Prefixes of the replica rule indexes: a policy's, a target's. */
export function replicasByPolicyPrefix(policyId: string): Deno.KvKey {
  return ["replicas_by_policy", policyId];
}
export function replicasByTargetPrefix(targetId: string): Deno.KvKey {
  return ["replicas_by_target", targetId];
}

/** How many of a rule's replications are in one status (`pending`, `succeeded`, `failed`). */
export function replicaCountKey(ruleId: string, status: string) {
  return ["replica_counts", ruleId, status] as const;
}
/** Every replication record (`["replications", restorePointId, ruleId]`), or one restore point's. */
export function replicationsPrefix(restorePointId?: string): Deno.KvKey {
  return restorePointId === undefined ? ["replications"] : ["replications", restorePointId];
}
