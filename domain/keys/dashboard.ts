/** The KV keys of the dashboard's counters and read models (dashboard.ts; no imports). */

export function runOutcomeKey(
  accountId: string,
  org: string,
  grain: "m" | "h",
  slot: string,
  status: "success" | "warning" | "failed",
) {
  return ["run_outcomes", accountId, org, grain, slot, status] as const;
}

/**
 * One key per policy and UTC day holding its three outcome counts packed in one KvU64 (21 bits each:
 * success, warning, failed; up to 2,097,151 runs of a policy a day), so a 30-day heatmap row reads at most
 * 30 entries, and a sum keeps writers free of read-modify-write.
 */
export function runDailyKey(policyId: string, day: string) {
  return ["run_daily", policyId, day] as const;
}

/** One entry per (policy, host) whose latest backup failed, newest failure last. */
export function failingKey(accountId: string, endedAt: string, runId: string) {
  return ["runs_failing", accountId, endedAt, runId] as const;
}

/** The latest outcome of (policy, host): when it ended and its failing entry, if it failed. */
export function latestOutcomeKey(policyId: string, hostId: string | null) {
  return ["runs_latest", policyId, hostId ?? "bes"] as const;
}

export function verifyFailedKey(accountId: string, completedAt: string, restorePointId: string) {
  return ["rp_verify_failed", accountId, completedAt, restorePointId] as const;
}

/** Prefixes of the dashboard's read models: every run outcome counter, or an account's of one org. */
export function runOutcomesPrefix(accountId?: string, org?: string): Deno.KvKey {
  if (accountId === undefined) return ["run_outcomes"];
  return org === undefined ? ["run_outcomes", accountId] : ["run_outcomes", accountId, org];
}
/** The failing runs of an account (`failingKey`), or of every account. */
export function failingPrefix(accountId?: string): Deno.KvKey {
  return accountId === undefined ? ["runs_failing"] : ["runs_failing", accountId];
}
/** The failed verifications of an account (`verifyFailedKey`). */
export function verifyFailedPrefix(accountId: string): Deno.KvKey {
  return ["rp_verify_failed", accountId];
}
/** A policy's daily outcome counts from `day` on (a range start), or past every day (the range end). */
export function runDailyBound(policyId: string, day: string | "end"): Deno.KvKey {
  return ["run_daily", policyId, day === "end" ? "9999" : day];
}
