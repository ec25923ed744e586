/** The KV keys of ops_counters (no imports). */

/** Engines or hosts of an account in one status. */
export function fleetCountKey(kind: string, accountId: string, status: string) {
  return ["fleet_counts", kind, accountId, status] as const;
}

/** Queued jobs of one kind and priority created in one UTC minute (`YYYY-MM-DDTHH:MM`). */
export function queueCountKey(kind: string, priority: string, minute: string) {
  return ["job_queue_counts", kind, priority, minute] as const;
}

/**
 * Queued jobs of one principal (`bes:<id>`, `agent:<id>`): the heartbeat's `pendingJobs`, one point read
 * (grouped with other heartbeats' reads) instead of listing the principal's queue.
 */
export function principalQueueCountKey(principal: string) {
  return ["job_queue_principal_counts", principal] as const;
}

/** Notification deliveries of an account in one status (the delivery log, until purged). */
export function deliveryCountKey(accountId: string, status: string) {
  return ["delivery_counts", accountId, status] as const;
}
