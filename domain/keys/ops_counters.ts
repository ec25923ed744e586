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

/** Every engine/host status counter, every queue bucket, every delivery status counter. */
export function fleetCountsPrefix(): Deno.KvKey {
  return ["fleet_counts"];
}
export function queueCountsPrefix(): Deno.KvKey {
  return ["job_queue_counts"];
}
export function deliveryCountsPrefix(): Deno.KvKey {
  return ["delivery_counts"];
}

/** The roots of the operational counters (a rebuild replaces everything under them). */
export const OPS_COUNTER_PREFIXES = [
  "fleet_counts",
  "job_queue_counts",
  "job_queue_principal_counts",
  "delivery_counts",
] as const;
