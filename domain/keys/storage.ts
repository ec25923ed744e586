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
