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
