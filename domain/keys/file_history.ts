/** The KV keys of file_history (no imports). */

export function fileHistoryByJobKey(jobId: string) {
  return ["file_history_by_job", jobId] as const;
}
