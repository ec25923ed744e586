/**
 * The KV keys of a storage target and of its capacity samples (no imports), so that policies, runs, restore
 * and the dashboard can read a target without importing storage.ts and closing an import cycle.
 */
export function targetKey(id: string) {
  return ["storage_targets", id] as const;
}
export function targetsByBesKey(besId: string, id: string) {
  return ["storage_targets_by_bes", besId, id] as const;
}
export function targetsByAccountKey(accountId: string, id: string) {
  return ["storage_targets_by_account", accountId, id] as const;
}
export function capacitySampleKey(targetId: string, at: number) {
  return ["capacity_samples", targetId, at] as const;
}
export function capacityDailyKey(targetId: string, day: string) {
  return ["capacity_daily", targetId, day] as const;
}

/** Prefixes of the storage target indexes: a BES's, an account's. */
export function targetsByBesPrefix(besId: string): Deno.KvKey {
  return ["storage_targets_by_bes", besId];
}
export function targetsByAccountPrefix(accountId: string): Deno.KvKey {
  return ["storage_targets_by_account", accountId];
}

/** The latest request of each on-demand check of a target (`health_check`, `verify`): the job answering it. */
export function storageCheckKey(targetId: string, check: string) {
  return ["storage_checks", targetId, check] as const;
}
/** Prefixes of a target's capacity samples, daily capacity and check requests (every target's without one). */
export function capacitySamplesPrefix(targetId?: string): Deno.KvKey {
  return targetId === undefined ? ["capacity_samples"] : ["capacity_samples", targetId];
}
export function capacityDailyPrefix(targetId?: string): Deno.KvKey {
  return targetId === undefined ? ["capacity_daily"] : ["capacity_daily", targetId];
}
export function storageChecksPrefix(targetId: string): Deno.KvKey {
  return ["storage_checks", targetId];
}
