/**
 * The KV keys of a restore point and of its per-host index, in a module of their own (no imports), so that
 * restore, drills, replicas and file history can read a point without importing runs.ts, which applies
 * their job outcomes (the `runs ↔ restore` import cycle).
 */
export function restorePointKey(id: string) {
  return ["restore_points", id] as const;
}
/** A policy's restore points of one host (`"bes"`: the BES's own), written with the point. */
export function restorePointsByHostKey(policyId: string, hostId: string | null, pointId: string) {
  return ["restore_points_by_host", policyId, hostId ?? "bes", pointId] as const;
}

/** The prefix of a policy's restore points (`["restore_points_by_policy", policyId, pointId]`). */
export function restorePointsByPolicyPrefix(policyId: string): Deno.KvKey {
  return ["restore_points_by_policy", policyId];
}
/** A policy's restore point in its per-policy index (written with the point). */
export function restorePointsByPolicyKey(policyId: string, pointId: string) {
  return ["restore_points_by_policy", policyId, pointId] as const;
}
/** Every restore point. */
export function restorePointsPrefix(): Deno.KvKey {
  return ["restore_points"];
}
/** A policy's restore points of one host (`"bes"`: the BES's own), the prefix of `restorePointsByHostKey`. */
export function restorePointsByHostPrefix(policyId: string, hostId: string | null): Deno.KvKey {
  return ["restore_points_by_host", policyId, hostId ?? "bes"];
}
