/** The KV keys of the engine job queue (job_queue.ts; no imports). */

export function jobKey(id: string) {
  return ["jobs", id] as const;
}

/** The claimable jobs of a principal, in claim order: priority rank, then id (time-ordered). */
export function queueRankKey(principal: string, rank: number, id: string) {
  return ["job_queue", principal, rank, id] as const;
}
/** Every claimable job of every principal (`queueRankKey`). */
export function queueRanksPrefix(): Deno.KvKey {
  return ["job_queue"];
}

/** Leased jobs by lease expiry, for the sweep. */
export function leaseKey(expiresAt: number, id: string) {
  return ["job_leases", expiresAt, id] as const;
}

export function partKey(jobId: string, attempt: number, list: string, part: number) {
  return ["job_parts", jobId, attempt, list, part] as const;
}

export function partCountKey(jobId: string, attempt: number, list: string, part: number) {
  return ["job_part_counts", jobId, attempt, list, part] as const;
}
