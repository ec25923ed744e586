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
/** Every replica rule; an account's rules. */
export function replicasPrefix(): Deno.KvKey {
  return ["replicas"];
}
export function replicasByAccountPrefix(accountId: string): Deno.KvKey {
  return ["replicas_by_account", accountId];
}

/** A removed rule whose replication index is still being deleted (`resumeReplicaIndexCleanups`). */
export function replicaIndexCleanupKey(ruleId: string) {
  return ["replica_index_cleanups", ruleId] as const;
}
export function replicaIndexCleanupsPrefix(): Deno.KvKey {
  return ["replica_index_cleanups"];
}

/** The replication of one restore point by one rule. */
export function replicationKey(restorePointId: string, ruleId: string) {
  return ["replications", restorePointId, ruleId] as const;
}
/** Every replication; a restore point's replications. */
export function replicationsPrefix(restorePointId?: string): Deno.KvKey {
  return restorePointId === undefined ? ["replications"] : ["replications", restorePointId];
}
/** A rule's replications, oldest point first (point ids are time-ordered). */
export function replicationsByRuleKey(ruleId: string, restorePointId: string) {
  return ["replications_by_rule", ruleId, restorePointId] as const;
}
export function replicationsByRulePrefix(ruleId: string): Deno.KvKey {
  return ["replications_by_rule", ruleId];
}
/** Per rule: how many points are pending, succeeded and failed (KV sums), and the last success and failure. */
export function replicaCountKey(ruleId: string, status: "pending" | "succeeded" | "failed") {
  return ["replica_counts", ruleId, status] as const;
}
export function replicaLastKey(ruleId: string) {
  return ["replica_last", ruleId] as const;
}
