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

/** The queue of one principal, in claim order (`queueRankKey` entries). */
export function queuePrefix(principal: string): Deno.KvKey {
  return ["job_queue", principal];
}

/** A bound of the lease index: leases expiring before `expiresAt` lie below it. */
export function leaseBoundKey(expiresAt: number): Deno.KvKey {
  return ["job_leases", expiresAt];
}

/** The uploaded result parts of a job (of one attempt, of one list of it). */
export function partsPrefix(jobId: string, attempt?: number, list?: string): Deno.KvKey {
  return [
    "job_parts",
    jobId,
    ...(attempt === undefined ? [] : [attempt]),
    ...(list === undefined ? [] : [list]),
  ];
}

/** The item counts of a job's uploaded result parts (of one attempt, of one list of it). */
export function partCountsPrefix(jobId: string, attempt?: number, list?: string): Deno.KvKey {
  return [
    "job_part_counts",
    jobId,
    ...(attempt === undefined ? [] : [attempt]),
    ...(list === undefined ? [] : [list]),
  ];
}
