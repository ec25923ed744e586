/** The KV keys of platforms (no imports). */

export function platformKey(id: string) {
  return ["platforms", id] as const;
}

export function platformsByAccountKey(accountId: string, id: string) {
  return ["platforms_by_account", accountId, id] as const;
}

export function platformJobKey(id: string) {
  return ["platform_jobs", id] as const;
}

/** Unique: one platform job per vendor job. */
export function platformJobByVendorKey(platformId: string, vendorJobId: string) {
  return ["platform_jobs_by_vendor", platformId, vendorJobId] as const;
}

export function platformJobsByAccountKey(accountId: string, id: string) {
  return ["platform_jobs_by_account", accountId, id] as const;
}

/** Unique: one protected object per vendor object. */
export function platformObjectKey(platformId: string, vendorObjectId: string) {
  return ["platform_objects", platformId, vendorObjectId] as const;
}

/** Unique: one run per vendor run. */
export function platformRunKey(platformId: string, vendorRunId: string) {
  return ["platform_runs", platformId, vendorRunId] as const;
}

/** Retry runs the next sync must start, or whose vendor run is not known yet; value: the platform job id. */
export function platformPendingKey(platformId: string, runId: string) {
  return ["platform_pending", platformId, runId] as const;
}

export function syncLockKey(platformId: string) {
  return ["platform_sync_lock", platformId] as const;
}

/**
 * Unique: one platform per (account, type, endpoint identity) — the lower-case origin and path that
 * platforms.ts derives from the endpoint URL (`endpointIdentity`).
 */
export function platformByEndpointIdentityKey(accountId: string, type: string, identity: string) {
  return ["platforms_by_endpoint", accountId, type, identity] as const;
}

/** Every platform; an account's platforms (`platformsByAccountKey`). */
export function platformsPrefix(): Deno.KvKey {
  return ["platforms"];
}
export function platformsByAccountPrefix(accountId: string): Deno.KvKey {
  return ["platforms_by_account", accountId];
}
/** Every platform's, or one platform's, imported objects, jobs by vendor id, and runs by vendor id. */
export function platformObjectsPrefix(platformId?: string): Deno.KvKey {
  return platformId === undefined ? ["platform_objects"] : ["platform_objects", platformId];
}
export function platformJobsByVendorPrefix(platformId?: string): Deno.KvKey {
  return platformId === undefined ? ["platform_jobs_by_vendor"] : ["platform_jobs_by_vendor", platformId];
}
export function platformRunsPrefix(platformId?: string): Deno.KvKey {
  return platformId === undefined ? ["platform_runs"] : ["platform_runs", platformId];
}
/** Every account's, or one account's, platform jobs (`platformJobsByAccountKey`). */
export function platformJobsByAccountPrefix(accountId?: string): Deno.KvKey {
  return accountId === undefined ? ["platform_jobs_by_account"] : ["platform_jobs_by_account", accountId];
}
/** A platform's pending retry runs (`platformPendingKey`). */
export function platformPendingPrefix(platformId: string): Deno.KvKey {
  return ["platform_pending", platformId];
}
