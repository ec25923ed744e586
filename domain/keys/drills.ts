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
