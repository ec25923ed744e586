/** The KV keys of drills (no imports). */

export function drillKey(id: string) {
  return ["drills", id] as const;
}

export function drillsByAccountKey(accountId: string, id: string) {
  return ["drills_by_account", accountId, id] as const;
}

export function drillRunKey(id: string) {
  return ["drill_runs", id] as const;
}

export function drillRunsByDrillKey(drillId: string, runId: string) {
  return ["drill_runs_by_drill", drillId, runId] as const;
}

export function drillRunByJobKey(jobId: string) {
  return ["drill_runs_by_job", jobId] as const;
}

/** Runs not ended yet (the dispatch tick catches them up with their jobs). */
export function openDrillRunKey(runId: string) {
  return ["drill_runs_open", runId] as const;
}

/** Claimed once per drill and minute: a tick that runs twice dispatches once. */
export function drillSlotKey(drillId: string, minute: string) {
  return ["drill_slots", drillId, minute] as const;
}

export function provenRestoreKey(accountId: string, policyId: string) {
  return ["drill_proven", accountId, policyId] as const;
}

/** Unique: one drill per (account, lower-cased name). */
export function drillByNameKey(accountId: string, name: string) {
  return ["drills_by_name", accountId, name.toLowerCase()] as const;
}
/** Every drill (the dispatch tick), an account's (`drillsByAccountKey`). */
export function drillsPrefix(): Deno.KvKey {
  return ["drills"];
}
export function drillsByAccountPrefix(accountId: string): Deno.KvKey {
  return ["drills_by_account", accountId];
}
/** Every open drill run (`openDrillRunKey`), a drill's runs (`drillRunsByDrillKey`). */
export function openDrillRunsPrefix(): Deno.KvKey {
  return ["drill_runs_open"];
}
export function drillRunsByDrillPrefix(drillId: string): Deno.KvKey {
  return ["drill_runs_by_drill", drillId];
}
/** An account's proven restores (`provenRestoreKey`). */
export function provenRestoresPrefix(accountId: string): Deno.KvKey {
  return ["drill_proven", accountId];
}
/**
 * "Last proven restore" by time: one entry per proven policy, at its last proof (the dashboard card reads
 * the newest few without reading every policy). Account-wide, and per the policy's org (`"account"`
 * for account-level policies) for actors limited to some orgs.
 */
export function provenRecentKey(accountId: string, at: string, policyId: string) {
  return ["drill_proven_recent", accountId, at, policyId] as const;
}

export function provenRecentPrefix(accountId: string) {
  return ["drill_proven_recent", accountId] as const;
}

export function provenRecentByOrgKey(
  accountId: string,
  policyOrgId: string | null,
  at: string,
  policyId: string,
) {
  return ["drill_proven_recent_by_org", accountId, policyOrgId ?? "account", at, policyId] as const;
}

export function provenRecentByOrgPrefix(accountId: string, policyOrgId: string | null) {
  return ["drill_proven_recent_by_org", accountId, policyOrgId ?? "account"] as const;
}

/** How many policies of an org (`"account"`: account-level) have a proven restore (a counter). */
export function provenCountKey(accountId: string, policyOrgId: string | null) {
  return ["drill_proven_counts", accountId, policyOrgId ?? "account"] as const;
}

export function provenCountPrefix(accountId: string) {
  return ["drill_proven_counts", accountId] as const;
}

/** Set once the account's proven restores written before the time index have been indexed. */
export function provenIndexedKey(accountId: string) {
  return ["drill_proven_indexed", accountId] as const;
}
