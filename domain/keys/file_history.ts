/** The KV keys of file_history (no imports). */

export function fileHistoryByJobKey(jobId: string) {
  return ["file_history_by_job", jobId] as const;
}

/**
 * The history state of one file of a host, by the SHA-256 (hex) of its path (file_history.ts hashes it:
 * a path may be longer than a key part may be).
 */
export function fileHistoryStateKey(hostId: string, pathHash: string) {
  return ["file_history", hostId, pathHash] as const;
}
/** What one restore point held of that file. */
export function fileHistoryObservationKey(hostId: string, pathHash: string, pointId: string) {
  return ["file_history_points", hostId, pathHash, pointId] as const;
}
/** Every observation of one file (`fileHistoryObservationKey`). */
export function fileHistoryObservationsPrefix(hostId: string, pathHash: string): Deno.KvKey {
  return ["file_history_points", hostId, pathHash];
}
