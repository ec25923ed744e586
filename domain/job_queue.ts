/**
 * The job queue of DESIGN.md §5 for BES and agents: jobs are queued per principal, claimed with a
 * lease (highest priority first, then oldest), renewed by progress (which can carry a cancel flag),
 * and finished by exactly one result: a duplicate post is a no-op, a conflicting one is refused
 * (invariant 6). An expired lease returns the job to the queue; a job that exhausts its attempts fails.
 */
import { z } from "zod";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { newId } from "./ids.ts";
import { AtomicRecorder, groupCommitter } from "./group_commit.ts";
import { groupReader } from "./group_read.ts";
import { counterValue, getManyValues, kvValueBytes } from "./kv.ts";
import { countQueueEntry, principalQueueCountKey } from "./ops_counters.ts";
import { commitOrConflict, withRetry } from "./retry.ts";
import {
  dropStaleParts,
  ErrorItem,
  keepInlineErrorsInOp,
  type ListFacts,
  MAX_INLINE_ERRORS,
  MAX_PARTS,
  RESULT_LISTS,
  type ResultList,
  settleResultLists,
} from "./result_parts.ts";
import { runByJobKey, runKey } from "./keys/runs.ts";
import type { Run } from "./runs.ts";
import { jobKey, leaseBoundKey, leaseKey, queuePrefix, queueRankKey } from "./keys/jobs.ts";
export { jobKey, leaseKey };

export const JOB_KINDS = [
  "backup",
  "restore_files",
  "restore_image",
  "health_check",
  "synthetic_full",
  "replicate",
  "verify",
  "prune",
  "browse",
  "search",
  "bmr",
  "file_history",
  /** A restore drill on an agent (drills.ts): restore to scratch, verify, measure, delete. */
  "restore_drill",
] as const;
export type JobKind = (typeof JOB_KINDS)[number];
export const PRIORITIES = ["critical", "high", "normal"] as const;
export type Priority = (typeof PRIORITIES)[number];
/** Queue order: a lower rank is claimed first. */
const PRIORITY_RANK: Record<Priority, number> = { critical: 0, high: 1, normal: 2 };

/** The claimable jobs of a principal, in claim order: priority rank, then id (time-ordered). */
export function queueKey(principal: string, priority: Priority, id: string) {
  return queueRankKey(principal, PRIORITY_RANK[priority], id);
}

/** How long a claim holds a job without progress. */
export const LEASE_MS = 5 * 60_000;
export const DEFAULT_MAX_ATTEMPTS = 3;

export type JobStatus = "queued" | "leased" | "succeeded" | "failed" | "cancelled";

export interface JobResult {
  status: "success" | "warning" | "failed";
  startedAt: string;
  endedAt: string;
  bytesTransferred: number;
  protectedBytes: number;
  error: { reason: string; message: string } | null;
  retryable: boolean;
  output: Record<string, unknown> | null;
  /** What each hook printed, in execution order (kept with the run). */
  hookOutput: HookOutput[];
  /** What the engine measured (backups and restores); null when it sent none. */
  stats?: ResultStats | null;
  /**
   * The result's long lists (result_parts.ts): parts uploaded, items kept, items found. The inline
   * `errors` of the request are kept as part -1 of `errors`, not here.
   */
  lists?: Partial<Record<ResultList, ListFacts>>;
  /** The attempt whose parts the lists are (the job's `attempts` when the result was recorded). */
  partsAttempt?: number;
}

/**
 * What an engine measured running a job (all optional, counts and bytes ≥ 0): files and folders seen,
 * bytes read from the source, bytes of new content (not deduplicated), bytes added to the repository,
 * its duration, and the changes against the parent (added, modified, deleted files); of the new bytes, those
 * that did not compress.
 */
export const ResultStats = z.object({
  files: z.number().int().min(0, "must not be negative").optional(),
  dirs: z.number().int().min(0, "must not be negative").optional(),
  bytesRead: z.number().int().min(0, "must not be negative").optional(),
  bytesNew: z.number().int().min(0, "must not be negative").optional(),
  /**
   * Of `bytesNew`, the bytes of new chunks that did not compress (stored raw). Absent when not measured (the
   * repository compresses nothing). The anomaly guard (anomaly.ts) compares its share with the host's baseline.
   */
  bytesNewIncompressible: z.number().int().min(0, "must not be negative").optional(),
  bytesStored: z.number().int().min(0, "must not be negative").optional(),
  durationMs: z.number().int().min(0, "must not be negative").optional(),
  added: z.number().int().min(0, "must not be negative").optional(),
  modified: z.number().int().min(0, "must not be negative").optional(),
  deleted: z.number().int().min(0, "must not be negative").optional(),
}).strict();
export type ResultStats = z.infer<typeof ResultStats>;

const ListCounts = (max: number, what: string) =>
  z.object(
    Object.fromEntries(
      RESULT_LISTS.map((l) => [
        l,
        z.number().int("must be a whole number").min(0, "must not be negative").max(max, `${what}`)
          .optional(),
      ]),
    ) as Record<ResultList, z.ZodOptional<z.ZodNumber>>,
  ).strict();

export interface HookOutput {
  hookId: string;
  type: string;
  exitCode: number;
  output: string;
}

export interface Job {
  id: string;
  kind: JobKind;
  /** `bes:<id>` or `agent:<id>`: the only principal that may claim it. */
  principal: string;
  accountId: string;
  orgId: string | null;
  priority: Priority;
  payload: Record<string, unknown>;
  status: JobStatus;
  attempts: number;
  maxAttempts: number;
  leaseExpiresAt: string | null;
  progress: { percent: number; bytesTransferred: number; message: string } | null;
  cancelRequested: boolean;
  /** Why a job failed without a result from its engine (e.g. LEASE_EXPIRED). */
  failureReason: string | null;
  result: JobResult | null;
  createdAt: string;
  updatedAt: string;
}

export const EnqueueInput = z.object({
  /** A pre-allocated id (when a run must point at its job before the job exists). */
  id: z.string().regex(/^[0-9A-Z]{26}$/).optional(),
  kind: z.enum(JOB_KINDS),
  principal: z.string().regex(/^(bes|agent):[0-9A-Z]{26}$/, "must be bes:<id> or agent:<id>"),
  accountId: z.string().min(1),
  orgId: z.string().nullable(),
  priority: z.enum(PRIORITIES).default("normal"),
  payload: z.record(z.string(), z.unknown()).default({}),
  maxAttempts: z.number().int().min(1).max(10).default(DEFAULT_MAX_ATTEMPTS),
});
export type EnqueueInput = z.input<typeof EnqueueInput>;

/** Queues a job for one principal. Returns it. */
export async function enqueueJob(kv: Deno.Kv, input: EnqueueInput, now: Date): Promise<Job> {
  const op = kv.atomic();
  const job = queueJobInOp(op, input, now);
  await commitOrConflict(op, "Could not queue the job; try again");
  return job;
}

/**
 * Adds a new queued job to `op` (committed by the caller with whatever the job follows from, so a
 * follow-up job exists exactly when its cause was recorded). Returns the job.
 */
export function queueJobInOp(
  op: Deno.AtomicOperation,
  input: EnqueueInput,
  now: Date,
  options: { fresh?: boolean } = {},
): Job {
  return addQueuedJob(op, EnqueueInput.parse(input), now, options);
}

/** A parsed `EnqueueInput` (the tick validates one per policy and varies only the host). */
export type EnqueueData = z.output<typeof EnqueueInput>;

/** `queueJobInOp` for input already parsed with `EnqueueInput`. */
export function addQueuedJob(
  op: Deno.AtomicOperation,
  data: EnqueueData,
  now: Date,
  options: { fresh?: boolean } = {},
): Job {
  const at = now.toISOString();
  const { id, ...rest } = data;
  const job: Job = {
    id: id ?? newId(now),
    ...rest,
    status: "queued",
    attempts: 0,
    leaseExpiresAt: null,
    progress: null,
    cancelRequested: false,
    failureReason: null,
    result: null,
    createdAt: at,
    updatedAt: at,
  };
  // `fresh`: the caller vouches the id was just minted (no check, so large batches stay within limits).
  if (!options.fresh || id) op.check({ key: jobKey(job.id), versionstamp: null });
  op.set(jobKey(job.id), job).set(queueKey(job.principal, job.priority, job.id), job.id);
  countQueueEntry(op, job, 1);
  return job;
}

export async function getJob(kv: Deno.Kv, id: string): Promise<Job | null> {
  return (await kv.get<Job>(jobKey(id))).value;
}

/** Jobs waiting for a principal (for the heartbeat's `pendingJobs`), counted up to `cap`. */
export async function countQueued(kv: Deno.Kv, principal: string, cap = 1000): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix: queuePrefix(principal) }, { limit: cap })) n++;
  return n;
}

/**
 * How many jobs `principal` has queued (at most `cap`), from its queue counter (ops_counters.ts): one
 * point read, grouped with concurrent reads (domain/group_read.ts), instead of listing its queue. The
 * heartbeats' `pendingJobs`.
 */
export async function queuedCount(kv: Deno.Kv, principal: string, cap = 1000): Promise<number> {
  const entry = await groupReader(kv).get(principalQueueCountKey(principal));
  return Math.min(cap, Math.max(0, counterValue(entry.value)));
}

/** True when `principal` has a queued job of `priority` or more urgent (one read: the queue is ordered by priority). */
export async function hasQueuedAtLeast(kv: Deno.Kv, principal: string, priority: Priority): Promise<boolean> {
  for await (const e of kv.list({ prefix: queuePrefix(principal) }, { limit: 1 })) {
    return Number(e.key[2]) <= PRIORITY_RANK[priority];
  }
  return false;
}

/**
 * Claims per group commit. Each claim checks two or three keys (queue entry, job, and its pending run);
 * the group committer also keeps a commit within KV's 100 checks per atomic operation.
 */
const CLAIMS_PER_COMMIT = 32;

/**
 * The run a job belongs to while it is still pending (null when the job has no run, or its run has
 * already started or ended: a retried attempt keeps the first start).
 */
async function pendingRunOf(kv: Deno.Kv, jobId: string): Promise<Deno.KvEntry<Run> | null> {
  const runId = (await kv.get<string>(runByJobKey(jobId))).value;
  if (!runId) return null;
  const entry = await kv.get<Run>(runKey(runId));
  return entry.value?.status === "pending" ? entry as Deno.KvEntry<Run> : null;
}

/**
 * Claims up to `max` jobs of `principal`, highest priority first, then oldest. Each claim is checked
 * on the queue entry and the job (and committed with concurrent claims: `GroupCommitter`): when two
 * claimers race for a job, exactly one claim succeeds and the other moves on (invariant 6). A job's
 * pending run becomes `running` (started now) in the same atomic write as the claim, checked too: a
 * losing claim changes neither, and a run changed meanwhile (cancelled, say) makes the claim retry
 * on the next poll.
 */
export async function claimJobs(
  kv: Deno.Kv,
  principal: string,
  max: number,
  now: Date,
): Promise<Job[]> {
  const claimed: Job[] = [];
  const leaseExpires = now.getTime() + LEASE_MS;
  const iter = kv.list<string>({ prefix: queuePrefix(principal) }, { limit: Math.min(500, max * 4) });
  for await (const entry of iter) {
    if (claimed.length >= max) break;
    const jobEntry = await kv.get<Job>(jobKey(entry.value));
    const job = jobEntry.value;
    if (!job || job.status !== "queued") {
      // A stale pointer (jobs are never deleted, so `job` is there): it was counted, so it is uncounted.
      const op = kv.atomic().check(entry).delete(entry.key);
      if (job) countQueueEntry(op, job, -1);
      await op.commit();
      continue;
    }
    const next: Job = {
      ...job,
      status: "leased",
      attempts: job.attempts + 1,
      leaseExpiresAt: new Date(leaseExpires).toISOString(),
      updatedAt: now.toISOString(),
    };
    // Claims that arrive together share a group commit, each with its own checks (domain/group_commit.ts);
    // the queue counter and the pending run's start move in the same write.
    const runEntry = await pendingRunOf(kv, job.id);
    const at = now.toISOString();
    const write = new AtomicRecorder().check(entry, jobEntry)
      .delete(entry.key).set(jobKey(job.id), next).set(leaseKey(leaseExpires, job.id), job.id);
    countQueueEntry(write, job, -1);
    if (runEntry) {
      write.check(runEntry).set(runEntry.key, {
        ...runEntry.value,
        status: "running",
        startedAt: at,
        updatedAt: at,
      });
    }
    if ((await groupCommitter(kv, "claims", CLAIMS_PER_COMMIT).submit(write)).ok) claimed.push(next);
  }
  return claimed;
}

export const ProgressInput = z.object({
  percent: z.number().min(0, "must be 0–100").max(100, "must be 0–100"),
  bytesTransferred: z.number().int().min(0, "must not be negative"),
  message: z.string().max(500).default(""),
});
export type ProgressInput = z.input<typeof ProgressInput>;

async function leasedBy(kv: Deno.Kv, principal: string, id: string, now: Date) {
  const entry = await kv.get<Job>(jobKey(id));
  const job = entry.value;
  if (!job || job.principal !== principal) throw new NotFoundError("No such job for this principal");
  return {
    entry,
    job,
    live: job.status === "leased" && now.getTime() < Date.parse(job.leaseExpiresAt ?? ""),
  };
}

/**
 * Records progress and renews the lease. Throws ConflictError when the lease has expired or the job ended,
 * CommitConflictError (transient: nothing written; the protocol answers 503 `busy`) when every commit lost.
 */
export async function reportProgress(
  kv: Deno.Kv,
  principal: string,
  id: string,
  input: ProgressInput,
  now: Date,
): Promise<{ leaseExpiresAt: string; cancel: boolean }> {
  const data = ProgressInput.parse(input);
  const attempt = async (): Promise<{ value: { leaseExpiresAt: string; cancel: boolean } } | null> => {
    const { entry, job, live } = await leasedBy(kv, principal, id, now);
    if (!live) throw new ConflictError("The lease of this job has expired or the job has ended");
    const expires = now.getTime() + LEASE_MS;
    const next: Job = {
      ...job,
      progress: data,
      leaseExpiresAt: new Date(expires).toISOString(),
      updatedAt: now.toISOString(),
    };
    const res = await kv.atomic().check(entry)
      .delete(leaseKey(Date.parse(job.leaseExpiresAt!), id))
      .set(leaseKey(expires, id), id)
      .set(jobKey(id), next).commit();
    return res.ok ? { value: { leaseExpiresAt: next.leaseExpiresAt!, cancel: job.cancelRequested } } : null;
  };
  return await withRetry(attempt, 5, "Progress conflicted repeatedly; retry");
}

const Iso = z.iso.datetime({ offset: true, error: "must be an ISO 8601 time" });

export const ResultInput = z.object({
  status: z.enum(["success", "warning", "failed"]),
  startedAt: Iso,
  endedAt: Iso,
  bytesTransferred: z.number().int().min(0, "must not be negative"),
  protectedBytes: z.number().int().min(0, "must not be negative"),
  error: z.object({ reason: z.string().min(1).max(64), message: z.string().max(2000) }).nullable().default(
    null,
  ),
  retryable: z.boolean().default(false),
  output: z.record(z.string(), z.unknown()).nullable().default(null),
  hookOutput: z.array(
    z.object({
      hookId: z.string().min(1).max(64),
      type: z.string().min(1).max(32),
      exitCode: z.number().int().min(-255).max(255),
      output: z.string().max(4000, "must be at most 4000 characters (send the tail)"),
    }).strict(),
  ).max(20, "at most 20 hooks").default([]),
  stats: ResultStats.nullable().default(null),
  /** The first per-file errors; more go in parts (`parts.errors`), and `totals.errors` counts them all. */
  errors: z.array(ErrorItem).max(
    MAX_INLINE_ERRORS,
    `at most ${MAX_INLINE_ERRORS} inline: upload the rest in parts (POST …/jobs/{id}/parts)`,
  ).default([]),
  /** Parts uploaded per list (POST …/jobs/{id}/parts with part 0…n-1); the result is refused while one is missing. */
  parts: ListCounts(MAX_PARTS, `must be at most ${MAX_PARTS}`).default({}),
  /** Items the engine found per list, when it sent fewer (a cut list keeps its total). */
  totals: ListCounts(Number.MAX_SAFE_INTEGER, "is too large").default({}),
}).superRefine((r, ctx) => {
  if (Date.parse(r.endedAt) < Date.parse(r.startedAt)) {
    ctx.addIssue({ code: "custom", path: ["endedAt"], message: "must not be before startedAt" });
  }
  if (r.status !== "success" && !r.error) {
    ctx.addIssue({ code: "custom", path: ["error"], message: "is required when the status is not success" });
  }
});
export type ResultInput = z.input<typeof ResultInput>;

/** What makes two result posts "the same" (a retry of the same post) versus conflicting. */
function sameResult(a: JobResult, b: JobResult): boolean {
  return JSON.stringify([a.status, a.startedAt, a.endedAt, a.bytesTransferred, a.protectedBytes, a.error]) ===
    JSON.stringify([b.status, b.startedAt, b.endedAt, b.bytesTransferred, b.protectedBytes, b.error]);
}

/**
 * Applies a job's result exactly once: `applied: false` for a duplicate of the recorded result, a
 * ConflictError for a different one, or when the lease expired before any result was recorded;
 * CommitConflictError (transient: nothing written; the protocol answers 503 `busy`) when every commit lost.
 */
export async function applyResult(
  kv: Deno.Kv,
  principal: string,
  id: string,
  input: ResultInput,
  now: Date,
): Promise<{ applied: boolean; job: Job }> {
  const { errors, parts, totals, ...parsed } = ResultInput.parse(input);
  const result = parsed as JobResult;
  const attempt = async (): Promise<{ value: { applied: boolean; job: Job } } | null> => {
    const { entry, job, live } = await leasedBy(kv, principal, id, now);
    if (job.result) {
      if (sameResult(job.result, result)) return { value: { applied: false, job } };
      throw new ConflictError("A different result was already recorded for this job");
    }
    if (!live) {
      throw new ConflictError("The lease of this job has expired; the job was returned to the queue");
    }
    // Every part the result names must be there (never a list cut silently); inline errors count first.
    const lists = await settleResultLists(kv, job, parts, totals, { errors: errors.length });
    const next = storableJob({
      ...job,
      status: result.status === "failed" ? "failed" : "succeeded",
      result: {
        ...result,
        ...(Object.keys(lists).length ? { lists, partsAttempt: job.attempts } : {}),
      },
      leaseExpiresAt: null,
      updatedAt: now.toISOString(),
    });
    const op = kv.atomic().check(entry)
      .delete(leaseKey(Date.parse(job.leaseExpiresAt!), id))
      .set(jobKey(id), next);
    keepInlineErrorsInOp(op, job, errors);
    if (!(await op.commit()).ok) return null;
    if (job.attempts > 1) await dropStaleParts(kv, id, job.attempts);
    return { value: { applied: true, job: next } };
  };
  return await withRetry(attempt, 5, "The result conflicted repeatedly; retry");
}

/** Most a stored job may take (`kvValueBytes`; KV allows 64 KiB a value). */
const MAX_STORED_JOB_BYTES = 63_000;

/**
 * A finished job as it can be stored: a payload of up to 60 KB and a result of up to 64 KiB do not
 * always fit in one KV value together. First the payload's hook script bodies go (the job is done;
 * the scripts stay in the library), then each hook's output keeps only its last lines. Throws
 * ValidationError (nothing is recorded) when even that does not fit: the engine sends a smaller result.
 */
export function storableJob(job: Job): Job {
  if (kvValueBytes(job) <= MAX_STORED_JOB_BYTES) return job;
  let next = job;
  const hooks = job.payload.hooks;
  if (Array.isArray(hooks) && hooks.some((h) => typeof (h as { body?: unknown })?.body === "string")) {
    next = {
      ...next,
      payload: {
        ...next.payload,
        hooks: hooks.map((h) => {
          const { body: _body, ...rest } = h as Record<string, unknown>;
          return { ...rest, bodyOmitted: true };
        }),
      },
    };
    if (kvValueBytes(next) <= MAX_STORED_JOB_BYTES) return next;
  }
  const outputs = next.result?.hookOutput ?? [];
  for (let keep = 2000; keep >= 0 && outputs.length; keep = keep ? Math.floor(keep / 2) : -1) {
    // "..." rather than an ellipsis: one wide character would double the string's size in KV.
    const tail = (o: string) => o.length <= keep ? o : `...${o.slice(o.length - keep)}`;
    next = {
      ...next,
      result: { ...next.result!, hookOutput: outputs.map((o) => ({ ...o, output: tail(o.output) })) },
    };
    if (kvValueBytes(next) <= MAX_STORED_JOB_BYTES) return next;
  }
  throw new ValidationError("The result is too large to record with its job; send a smaller output", {
    output: "too large to record: send less output or shorter hook output",
  });
}

/** Asks the engine to stop a job (delivered with its next progress reply); a queued job is cancelled at once. */
export async function cancelJob(kv: Deno.Kv, id: string, now: Date): Promise<Job> {
  const attempt = async (): Promise<{ value: Job } | null> => {
    const entry = await kv.get<Job>(jobKey(id));
    const job = entry.value;
    if (!job) throw new NotFoundError("No such job");
    const op = kv.atomic().check(entry);
    let next: Job;
    if (job.status === "queued") {
      next = { ...job, status: "cancelled", failureReason: "CANCELLED", updatedAt: now.toISOString() };
      op.delete(queueKey(job.principal, job.priority, id));
      countQueueEntry(op, job, -1);
    } else if (job.status === "leased") {
      next = { ...job, cancelRequested: true, updatedAt: now.toISOString() };
    } else return { value: job };
    return (await op.set(jobKey(id), next).commit()).ok ? { value: next } : null;
  };
  return await withRetry(attempt, 5, "Cancel conflicted repeatedly; retry");
}

/**
 * The minute job: every lease that expired at `now` returns its job to the queue, or fails it with
 * LEASE_EXPIRED once it has used its attempts. Idempotent.
 */
export async function expireLeases(
  kv: Deno.Kv,
  now: Date,
): Promise<{ requeued: number; failed: number; failedIds: string[] }> {
  let requeued = 0;
  let failed = 0;
  const failedIds: string[] = [];
  for await (
    const lease of kv.list<string>({ start: leaseBoundKey(0), end: leaseBoundKey(now.getTime()) })
  ) {
    const entry = await kv.get<Job>(jobKey(lease.value));
    const job = entry.value;
    const op = kv.atomic().check(lease, entry).delete(lease.key);
    if (!job || job.status !== "leased" || Date.parse(job.leaseExpiresAt ?? "") > now.getTime()) {
      await op.commit();
      continue;
    }
    if (job.attempts >= job.maxAttempts) {
      op.set(jobKey(job.id), {
        ...job,
        status: "failed",
        failureReason: "LEASE_EXPIRED",
        leaseExpiresAt: null,
        updatedAt: now.toISOString(),
      });
      if ((await op.commit()).ok) {
        failed++;
        failedIds.push(job.id);
      }
    } else {
      op.set(jobKey(job.id), { ...job, status: "queued", leaseExpiresAt: null, updatedAt: now.toISOString() })
        .set(queueKey(job.principal, job.priority, job.id), job.id);
      countQueueEntry(op, job, 1);
      if ((await op.commit()).ok) requeued++;
    }
  }
  return { requeued, failed, failedIds };
}

/** Jobs by id (chunked reads), for pages and tests. */
export async function getJobs(kv: Deno.Kv, ids: string[]): Promise<Job[]> {
  return await getManyValues<Job>(kv, ids.map(jobKey));
}
