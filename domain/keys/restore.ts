/**
 * The KV keys of restore points and their indexes, and of restore requests, browse and search results and
 * BMR tokens (restore.ts), with no imports, so that restore, drills, replicas and file history can read a
 * point without importing runs.ts, which applies their job outcomes (the `runs ↔ restore` import cycle).
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

export function restoreKey(id: string) {
  return ["restores", id] as const;
}

export function restoresByAccountKey(accountId: string, id: string) {
  return ["restores_by_account", accountId, id] as const;
}

export function restoreByJobKey(jobId: string) {
  return ["restores_by_job", jobId] as const;
}

/** A chunk of a file restore's path list (lists too long for the job payload are fetched by the agent). */
export function restorePathsKey(restoreId: string, chunk: number) {
  return ["restore_paths", restoreId, chunk] as const;
}

export function browseByJobKey(jobId: string) {
  return ["restore_browse_by_job", jobId] as const;
}

export function searchKey(id: string) {
  return ["restore_searches", id] as const;
}

export function searchByJobKey(jobId: string) {
  return ["restore_searches_by_job", jobId] as const;
}

/** A BMR token by the SHA-256 of the token: the token itself is never stored. */
export function bmrTokenKey(tokenHash: string) {
  return ["bmr_tokens", tokenHash] as const;
}

/** A stored page of a browse listing or search (`ListingPages`), by the job that answered it. */
export function listPageKey(jobId: string, page: number) {
  return ["restore_list_pages", jobId, page] as const;
}

/** The browse state of a (restore point, path), by the path's hash (keys are limited to 2 KiB). */
export function browseStateKey(restorePointId: string, pathHash: string) {
  return ["restore_browse", restorePointId, pathHash] as const;
}

export function restoresByAccountPrefix(accountId: string): Deno.KvKey {
  return ["restores_by_account", accountId];
}

export function restoresPrefix(): Deno.KvKey {
  return ["restores"];
}

/**
 * Set once an org (`"account"`: account-level policies) has its first restore point: the getting-started
 * checklist's "first backup" step reads these instead of every policy's points.
 */
export function firstBackupKey(accountId: string, orgId: string | null) {
  return ["first_backups", accountId, orgId ?? "account"] as const;
}
export function firstBackupsPrefix(accountId: string): Deno.KvKey {
  return ["first_backups", accountId];
}
