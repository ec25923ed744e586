/**
 * What browse, search and restore requests share about their jobs: a failed job in words, and the checked
 * update that carries a job's outcome into the request's state; also packing items into weighted groups
 * (listing pages, path chunks).
 */
import { withRetry } from "./retry.ts";
import type { Job } from "./job_queue.ts";

/** Why a job ended without a result, in words. */
export function jobFailure(job: Job): string {
  if (job.failureReason === "LEASE_EXPIRED") {
    return "The engine stopped answering and the job used all its attempts";
  }
  if (job.failureReason === "CANCELLED") return "The job was cancelled";
  return `The job failed${job.failureReason ? ` (${job.failureReason})` : ""}`;
}

export function resultError(job: Job): string {
  const e = job.result?.error;
  return e ? `${e.reason}: ${e.message}`.slice(0, 2000) : "The engine reported a failure";
}

/**
 * Splits `items`, in order, into groups of at most `maxCount` items whose `weightOf` sums stay within
 * `budget` (an item heavier than `budget` gets a group of its own).
 */
export function packByWeight<T>(
  items: T[],
  weightOf: (item: T) => number,
  budget: number,
  maxCount = Infinity,
): T[][] {
  const groups: T[][] = [];
  let group: T[] = [];
  let weight = 0;
  for (const item of items) {
    const w = weightOf(item);
    if (group.length && (group.length >= maxCount || weight + w > budget)) {
      groups.push(group);
      group = [];
      weight = 0;
    }
    group.push(item);
    weight += w;
  }
  if (group.length) groups.push(group);
  return groups;
}

/**
 * Read, change and write one value with a check; does nothing when unchanged. Commit retry (retry.ts):
 * five lost races throw CommitConflictError (the result route answers 503 `busy`; the engine re-posts the
 * result), so a job's outcome is never dropped with its request left pending or running.
 */
export async function updateWithOutcome<T extends { status: string }>(
  kv: Deno.Kv,
  key: Deno.KvKey,
  change: (value: T) => T | Promise<T>,
  options?: { expireIn: number },
): Promise<void> {
  await withRetry(
    async () => {
      const entry = await kv.get<T>(key);
      if (!entry.value) return { value: undefined };
      const next = await change(entry.value);
      if (next === entry.value || next.status === "pending" || next.status === "running") {
        return {
          value: undefined,
        };
      }
      return (await kv.atomic().check(entry).set(key, next, options).commit()).ok
        ? { value: undefined }
        : null;
    },
    5,
    `${String(key[0])} ${String(key[key.length - 1])}: the job's outcome conflicted; post it again`,
  );
}
