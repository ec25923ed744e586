/** The KV keys of repositories (no imports). */

export function pointsByTargetKey(targetId: string, pointId: string) {
  return ["restore_points_by_target", targetId, pointId] as const;
}
/** The restore points stored on a target (`pointsByTargetKey`). */
export function pointsByTargetPrefix(targetId: string): Deno.KvKey {
  return ["restore_points_by_target", targetId];
}

export function repositoryHostKey(policyId: string, generation: number, hostId: string | null) {
  return ["repository_hosts", policyId, generation, hostId ?? "bes"] as const;
}
