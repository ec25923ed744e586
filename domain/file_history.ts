/**
 * File version history (issue 21 item 3): from a file's path on a host, a timeline of the distinct versions
 * its restore points hold (size, modification time, mode, content id), each with the points that hold it, and
 * the restore of any version in one request.
 *
 * Served from the engines' trees: `requestFileHistory` queues `file_history` BES jobs (engine/bes/
 * file_history.ts) for the host's complete file-backup points — one job per repository (so one namespace's
 * keys) and at most MAX_HISTORY_JOB_POINTS points — and each job answers one observation per point. Cached
 * per (host, path): the state `["file_history", hostId, sha256(path)]` lists the jobs, and each point's
 * observation is `["file_history_points", hostId, sha256(path), pointId]`, so the set of points the cache
 * covers is the set of those keys. A new restore point makes the cache stale: a request queues jobs for the
 * uncovered points only (extending it); an expired or pruned point simply drops out (its observation is
 * ignored and deleted). Everything expires HISTORY_TTL_MS after it was written; an expired observation is
 * looked up again. At most MAX_HISTORY_POINTS (the host's newest) points are examined.
 *
 * Versions (`collapseVersions`, pure): points in completion order; consecutive points whose file is the same
 * — present in both with the same type, size, mtime, mode, symlink target and the same content (equal content
 * SHA-256 when both were hashed, else equal chunk lists: equal chunk lists are equal content, while unequal
 * lists of different repositories can still be equal content, so such versions stay apart) — or absent from
 * both are one version. A point that could not be read is a version of its own, marked unreadable.
 *
 * Every read needs `backup.restore` on the host (its org) and shows only the points of policies the actor
 * may restore from. Requests write an audit entry in the same atomic operation as the jobs they queue.
 */
import { z } from "zod";
import { appendAudit, auditTarget } from "./audit.ts";
import { NotFoundError, ValidationError } from "./errors.ts";
import { type Host, hostScope, requireHost } from "./hosts.ts";
import { sha256Hex } from "./ids.ts";
import { getManyValues } from "./kv.ts";
import { CommitConflictError, withRetry } from "./retry.ts";
import { getJob, type Job, queueJobInOp } from "./job_queue.ts";
import type { Policy } from "./policies.ts";
import { type Actor, authorize } from "./rbac.ts";
import { normalizeRestorePath } from "./restore_paths.ts";
import { requestFileRestore, type RestoreRequest } from "./restore_requests.ts";
import { requireRestorePoint, restorablePolicies } from "./restore_points.ts";
import { RESTORE_PICKUP_MS } from "./restore_browse.ts";
import type { RestorePoint } from "./restore_points.ts";
import { restorePointKey, restorePointsByHostPrefix } from "./keys/restore.ts";
import {
  fileHistoryByJobKey,
  fileHistoryObservationKey,
  fileHistoryObservationsPrefix,
  fileHistoryStateKey,
} from "./keys/file_history.ts";
export { fileHistoryByJobKey };

/** The host's newest points examined at most (older ones are left out, and the page says so). */
export const MAX_HISTORY_POINTS = 500;
/** Points one `file_history` job examines at most (engine/bes/file_history.ts has the same limit). */
export const MAX_HISTORY_JOB_POINTS = 50;
/** How long a history (its state and each observation) is kept after it was written. */
export const HISTORY_TTL_MS = 7 * 86_400_000;
/** Versions on one page of the timeline. */
export const VERSIONS_PAGE_SIZE = 25;
/** Finished jobs a state remembers (pending ones are always kept). */
const KEPT_FINISHED_JOBS = 20;

// ---------------------------------------------------------------------------------------------------
// Keys

function pathHash(path: string): string {
  return sha256Hex(path);
}
export function fileHistoryKey(hostId: string, path: string) {
  return fileHistoryStateKey(hostId, pathHash(path));
}
export function fileHistoryPointKey(hostId: string, path: string, pointId: string) {
  return fileHistoryObservationKey(hostId, pathHash(path), pointId);
}

// ---------------------------------------------------------------------------------------------------
// Inputs

/** A file's path for its history: absolute, normalized, POSIX (the reference engine's trees), not the root. */
export const HistoryPath = z.string({ error: "is required" }).trim().min(1, "is required")
  .max(4096, "must be at most 4096 characters")
  .transform((value, ctx) => {
    const n = normalizeRestorePath(value);
    if (!n.ok) {
      ctx.addIssue({ code: "custom", message: n.message });
      return z.NEVER;
    }
    if (n.windows) {
      ctx.addIssue({ code: "custom", message: "must be a POSIX path (/…): the engine's trees are POSIX" });
      return z.NEVER;
    }
    if (n.path === "/") {
      ctx.addIssue({ code: "custom", message: "must name a file, not the root folder" });
      return z.NEVER;
    }
    return n.path;
  });

const Id = z.string({ error: "must be an id" }).regex(/^[0-9A-Z]{26}$/, "must be an id");

/** "Restore this version": the point, where to, whether to overwrite (which needs `confirm`). */
export const VersionRestoreInput = z.object({
  path: HistoryPath,
  restorePointId: Id,
  location: z.enum(["original", "other"], { error: "must be original or other" }).default("original"),
  targetHostId: z.union([z.literal("").transform(() => undefined), Id]).optional(),
  targetPath: z.string().max(4096, "must be at most 4096 characters").optional(),
  overwrite: z.boolean({ error: "must be true or false" }).default(false),
  confirm: z.boolean({ error: "must be true or false" }).default(false),
}).superRefine((v, ctx) => {
  if (v.location === "other" && !v.targetPath?.trim()) {
    ctx.addIssue({
      code: "custom",
      path: ["targetPath"],
      message: "Is required to restore to another folder",
    });
  }
  if (v.overwrite && !v.confirm) {
    ctx.addIssue({
      code: "custom",
      path: ["confirm"],
      message: "Confirm that the file at the target is replaced by this version",
    });
  }
});
export type VersionRestoreInput = z.input<typeof VersionRestoreInput>;

// ---------------------------------------------------------------------------------------------------
// Observations and versions (pure)

/** One point's answer, as the engine reports it (engine/bes/file_history.ts `Observation`). */
export const ObservationItem = z.object({
  restorePointId: z.string().min(1).max(200),
  exists: z.boolean(),
  type: z.enum(["file", "dir", "symlink"]).optional(),
  size: z.number().int().min(0).optional(),
  mtime: z.iso.datetime({ offset: true }).optional(),
  mode: z.number().int().min(0).max(0o7777).optional(),
  chunksId: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  contentId: z.string().regex(/^[0-9a-f]{64}$/).nullable().optional(),
  target: z.string().max(4096).optional(),
  error: z.string().max(2000).optional(),
});
export type Observation = z.infer<typeof ObservationItem>;

/** A restore point as the history shows it. */
export interface HistoryPoint {
  id: string;
  engineRestorePointId: string;
  policyId: string;
  policyName: string;
  engineId: string;
  completedAt: string;
  type: RestorePoint["type"];
  repository?: RestorePoint["repository"];
}

/** One version of the file: what it was and the points (newest first) that hold it. */
export interface FileVersion {
  state: "present" | "absent" | "unreadable";
  type: "file" | "dir" | "symlink" | null;
  size: number | null;
  mtime: string | null;
  mode: number | null;
  /** SHA-256 of the bytes (null when not hashed: the file was over the job's budget). */
  contentId: string | null;
  /** SHA-256 of the chunk id list. */
  chunksId: string | null;
  target: string | null;
  error: string | null;
  points: HistoryPoint[];
  /** When the oldest and newest of its points were completed. */
  firstSeen: string;
  lastSeen: string;
}

/** Whether two observations are the same version of the file (see the module comment). */
export function sameVersion(a: Observation, b: Observation): boolean {
  if (a.error || b.error) return false;
  if (!a.exists || !b.exists) return !a.exists && !b.exists;
  if (a.type !== b.type || a.size !== b.size || a.mtime !== b.mtime || a.mode !== b.mode) return false;
  if ((a.target ?? null) !== (b.target ?? null)) return false;
  if (a.type !== "file") return true;
  if (a.contentId && b.contentId) return a.contentId === b.contentId;
  return Boolean(a.chunksId) && a.chunksId === b.chunksId;
}

/**
 * The versions of a file, newest first: `points` in completion order (any order in, sorted here), each with
 * its observation (points without one are left out); consecutive equal observations are one version.
 */
export function collapseVersions(
  points: HistoryPoint[],
  observations: ReadonlyMap<string, Observation>,
): FileVersion[] {
  const sorted = points.filter((p) => observations.has(p.id))
    .sort((a, b) => a.completedAt.localeCompare(b.completedAt) || a.id.localeCompare(b.id));
  const out: Array<{ obs: Observation; version: FileVersion }> = [];
  for (const point of sorted) {
    const obs = observations.get(point.id)!;
    const last = out[out.length - 1];
    if (last && sameVersion(last.obs, obs)) {
      last.version.points.push(point);
      last.version.lastSeen = point.completedAt;
      // The newest point's hash wins when an older one was not hashed (same chunks, same bytes).
      last.version.contentId ??= obs.contentId ?? null;
      continue;
    }
    out.push({
      obs,
      version: {
        state: obs.error ? "unreadable" : obs.exists ? "present" : "absent",
        type: obs.exists ? obs.type ?? null : null,
        size: obs.exists ? obs.size ?? null : null,
        mtime: obs.exists ? obs.mtime ?? null : null,
        mode: obs.exists ? obs.mode ?? null : null,
        contentId: obs.contentId ?? null,
        chunksId: obs.chunksId ?? null,
        target: obs.target ?? null,
        error: obs.error ?? null,
        points: [point],
        firstSeen: point.completedAt,
        lastSeen: point.completedAt,
      },
    });
  }
  return out.map((x) => ({ ...x.version, points: [...x.version.points].reverse() })).reverse();
}

/**
 * What a cache lacks: the current points it neither covers nor has a pending job for (`missing`), and the
 * points it covers that are no longer current (`gone`: expired or pruned).
 */
export function staleness(
  current: readonly string[],
  covered: ReadonlySet<string>,
  pending: ReadonlySet<string>,
): { missing: string[]; gone: string[] } {
  const now = new Set(current);
  return {
    missing: current.filter((id) => !covered.has(id) && !pending.has(id)),
    gone: [...covered].filter((id) => !now.has(id)),
  };
}

// ---------------------------------------------------------------------------------------------------
// State

export interface HistoryJob {
  id: string;
  besId: string;
  pointIds: string[];
  status: "pending" | "done" | "failed";
  error: string | null;
  requestedAt: string;
}

export interface FileHistoryState {
  hostId: string;
  accountId: string;
  orgId: string | null;
  path: string;
  jobs: HistoryJob[];
  requestedAt: string;
  updatedAt: string;
}

/** What pages and the API show. */
export interface FileHistoryView {
  hostId: string;
  hostname: string;
  path: string;
  /** none: never asked; pending: jobs running; ready: every current point examined or failed. */
  status: "none" | "pending" | "ready";
  /** Current points (in the actor's scope) and how many of them the cache covers. */
  pointsTotal: number;
  pointsExamined: number;
  /** Current points neither covered nor being examined (new since): a request extends the history. */
  pointsNew: number;
  /** True when the host has more points than MAX_HISTORY_POINTS (the oldest are left out). */
  pointsCapped: boolean;
  /** Why some points could not be examined (failed jobs). */
  errors: string[];
  versionsTotal: number;
  page: number;
  pages: number;
  versions: FileVersion[];
  requestedAt: string | null;
  updatedAt: string | null;
}

/** The host's complete points of file policies the actor may restore from, newest first (at most MAX). */
export async function hostHistoryPoints(
  kv: Deno.Kv,
  actor: Actor,
  host: Host,
): Promise<{ points: HistoryPoint[]; capped: boolean }> {
  const policies = (await restorablePolicies(kv, actor)).filter((p: Policy) =>
    p.accountId === host.accountId && p.backupType === "file"
  );
  const points: HistoryPoint[] = [];
  for (const policy of policies) {
    const ids: string[] = [];
    const prefix = restorePointsByHostPrefix(policy.id, host.id);
    for await (const e of kv.list<string>({ prefix }, { reverse: true, limit: 2 * MAX_HISTORY_POINTS })) {
      ids.push(String(e.key[3]));
    }
    for (const p of await getManyValues<RestorePoint>(kv, ids.map(restorePointKey))) {
      if (p.status !== "complete" || p.hostId !== host.id) continue;
      points.push({
        id: p.id,
        engineRestorePointId: p.engineRestorePointId ?? p.id,
        policyId: p.policyId,
        policyName: policy.name,
        engineId: p.engineId,
        completedAt: p.completedAt,
        type: p.type,
        ...(p.repository ? { repository: p.repository } : {}),
      });
    }
  }
  points.sort((a, b) => b.completedAt.localeCompare(a.completedAt) || b.id.localeCompare(a.id));
  return { points: points.slice(0, MAX_HISTORY_POINTS), capped: points.length > MAX_HISTORY_POINTS };
}

/** The observations kept for (host, path), by point id. */
async function readObservations(
  kv: Deno.Kv,
  hostId: string,
  path: string,
): Promise<Map<string, Observation>> {
  const out = new Map<string, Observation>();
  for await (
    const e of kv.list<Observation>({ prefix: fileHistoryObservationsPrefix(hostId, pathHash(path)) })
  ) {
    out.set(String(e.key[3]), e.value);
  }
  return out;
}

function parsePath(raw: string | undefined): string {
  const r = HistoryPath.safeParse(raw ?? "");
  if (!r.success) {
    const message = r.error.issues[0]?.message ?? "is invalid";
    throw new ValidationError(`The path ${message}`, { path: `Path ${message}` });
  }
  return r.data;
}

/** The host, if the actor may restore its files (its org in scope, backup.restore there). */
async function requireHistoryHost(kv: Deno.Kv, actor: Actor, hostId: string): Promise<Host> {
  if (!/^[0-9A-Z]{26}$/.test(hostId)) throw new NotFoundError(`Host ${hostId.slice(0, 40)} not found`);
  const host = await requireHost(kv, actor, hostId);
  authorize(actor, "backup.restore", hostScope(host));
  return host;
}

function jobError(job: Job): string {
  const e = job.result?.error;
  if (job.result?.status === "failed" && e) return `${e.reason}: ${e.message}`.slice(0, 1000);
  if (job.failureReason === "LEASE_EXPIRED") {
    return "The BES stopped answering and the job used all its attempts";
  }
  if (job.failureReason === "CANCELLED") return "The job was cancelled";
  return `The job failed${job.failureReason ? ` (${job.failureReason})` : ""}`;
}

/**
 * Brings the state's pending jobs up to date: a recorded result is applied (its observations stored), a
 * failed or cancelled job or one its BES has not picked up in RESTORE_PICKUP_MS is marked failed. Returns
 * the state as stored afterwards (null when none).
 */
async function settle(
  kv: Deno.Kv,
  hostId: string,
  path: string,
  now: Date,
): Promise<Deno.KvEntryMaybe<FileHistoryState>> {
  let entry = await kv.get<FileHistoryState>(fileHistoryKey(hostId, path));
  for (const hj of entry.value?.jobs ?? []) {
    if (hj.status !== "pending") continue;
    const job = await getJob(kv, hj.id);
    const overdue = job?.status === "queued" &&
      now.getTime() - Date.parse(hj.requestedAt) > RESTORE_PICKUP_MS;
    if (job?.result || !job || overdue || job.status === "failed" || job.status === "cancelled") {
      await applyHistoryJob(kv, hostId, path, hj.id, job, now, overdue);
    }
  }
  entry = await kv.get<FileHistoryState>(fileHistoryKey(hostId, path));
  return entry;
}

/**
 * Applies what job `jobId` answered to the history of (host, path): the observations of the points it was
 * asked about (anything else it sent is ignored), and the job marked done or failed. Idempotent.
 */
async function applyHistoryJob(
  kv: Deno.Kv,
  hostId: string,
  path: string,
  jobId: string,
  job: Job | null,
  now: Date,
  overdue = false,
): Promise<void> {
  const attempt = async (): Promise<{ value: void } | null> => {
    const entry = await kv.get<FileHistoryState>(fileHistoryKey(hostId, path));
    const state = entry.value;
    const hj = state?.jobs.find((j) => j.id === jobId);
    const answered = Boolean(job?.result && job.result.status !== "failed");
    // A job marked failed while its BES was silent still lands when it answers after all.
    if (!state || !hj || hj.status === "done" || (hj.status === "failed" && !answered)) {
      return { value: undefined };
    }
    const op = kv.atomic().check(entry);
    let next: HistoryJob;
    if (answered && job?.result) {
      const asked = new Set(hj.pointIds);
      const raw = (job.result.output as { observations?: unknown } | null)?.observations;
      const stored: string[] = [];
      for (const item of Array.isArray(raw) ? raw : []) {
        const r = ObservationItem.safeParse(item);
        if (!r.success || !asked.has(r.data.restorePointId)) continue;
        op.set(fileHistoryPointKey(hostId, path, r.data.restorePointId), r.data, {
          expireIn: HISTORY_TTL_MS,
        });
        stored.push(r.data.restorePointId);
      }
      const unanswered = hj.pointIds.length - stored.length;
      next = {
        ...hj,
        status: unanswered ? "failed" : "done",
        error: unanswered
          ? `The BES answered ${stored.length} of the ${hj.pointIds.length} points asked`
          : null,
      };
    } else {
      next = {
        ...hj,
        status: "failed",
        error: overdue
          ? `BES has not picked up the job in ${
            RESTORE_PICKUP_MS / 60_000
          } minutes; it may be offline or busy`
          : job
          ? jobError(job)
          : "The job is gone",
      };
    }
    op.set(entry.key, {
      ...state,
      jobs: state.jobs.map((j) => j.id === jobId ? next : j),
      updatedAt: now.toISOString(),
    }, {
      expireIn: HISTORY_TTL_MS,
    });
    return (await op.commit()).ok ? { value: undefined } : null;
  };
  try {
    await withRetry(attempt, 5);
  } catch (error) {
    // Giving up is deliberate, not a dropped change: nothing was written, the history's job stays
    // pending, and every read of the history (`settle`) applies the job's recorded result again.
    if (!(error instanceof CommitConflictError)) throw error;
  }
}

/** Called from job_outcomes.ts when a `file_history` job's result is recorded. */
export async function applyFileHistoryOutcome(kv: Deno.Kv, job: Job, now: Date): Promise<void> {
  const ref = (await kv.get<{ hostId: string; path: string }>(fileHistoryByJobKey(job.id))).value;
  if (ref) await applyHistoryJob(kv, ref.hostId, ref.path, job.id, job, now);
}

/** Groups points into jobs: one repository (and BES) a job, at most MAX_HISTORY_JOB_POINTS each. */
export function planJobs(points: HistoryPoint[]): HistoryPoint[][] {
  const groups = new Map<string, HistoryPoint[]>();
  for (const p of points) {
    const key = `${p.engineId}\u0000${p.policyId}\u0000${p.repository?.target ?? ""}\u0000${
      p.repository?.path ?? ""
    }`;
    const g = groups.get(key) ?? [];
    g.push(p);
    groups.set(key, g);
  }
  const out: HistoryPoint[][] = [];
  for (const g of groups.values()) {
    for (let i = 0; i < g.length; i += MAX_HISTORY_JOB_POINTS) {
      out.push(g.slice(i, i + MAX_HISTORY_JOB_POINTS));
    }
  }
  return out;
}

/**
 * Asks for the history of `path` on host `hostId`: queues `file_history` jobs for the host's current points
 * the cache neither covers nor is examining (none when it is up to date), in one atomic operation with the
 * state and an audit entry; two requests racing queue one set of jobs. Throws NotFoundError for a host out
 * of scope, ForbiddenError without backup.restore, ValidationError (422 `path`) for a bad path.
 */
export async function requestFileHistory(
  kv: Deno.Kv,
  actor: Actor,
  hostId: string,
  rawPath: string | undefined,
  now: Date,
): Promise<{ view: FileHistoryView; queued: number }> {
  const host = await requireHistoryHost(kv, actor, hostId);
  const path = parsePath(rawPath);
  const { points } = await hostHistoryPoints(kv, actor, host);
  const attempt = async (): Promise<{ value: { view: FileHistoryView; queued: number } } | null> => {
    const entry = await settle(kv, host.id, path, now);
    const covered = new Set((await readObservations(kv, host.id, path)).keys());
    const pending = new Set(
      (entry.value?.jobs ?? []).filter((j) => j.status === "pending").flatMap((j) => j.pointIds),
    );
    const { missing, gone } = staleness(points.map((p) => p.id), covered, pending);
    if (gone.length) {
      for (let i = 0; i < gone.length; i += 500) {
        const op = kv.atomic();
        for (const id of gone.slice(i, i + 500)) op.delete(fileHistoryPointKey(host.id, path, id));
        await op.commit();
      }
    }
    if (!missing.length && entry.value) {
      return { value: { view: await getFileHistory(kv, actor, host.id, path, now), queued: 0 } };
    }
    const at = now.toISOString();
    const byId = new Map(points.map((p) => [p.id, p]));
    const op = kv.atomic().check(entry);
    const jobs: HistoryJob[] = [];
    for (const group of planJobs(missing.map((id) => byId.get(id)!))) {
      const first = group[0];
      const job = queueJobInOp(op, {
        kind: "file_history",
        principal: `bes:${first.engineId}`,
        ...hostScope(host),
        priority: "high",
        payload: {
          restorePointId: first.id,
          engineRestorePointId: first.engineRestorePointId,
          policyId: first.policyId,
          hostId: host.id,
          ...(first.repository ? { repository: first.repository, targetId: first.repository.target } : {}),
          path,
          points: group.map((p) => ({ restorePointId: p.id, engineRestorePointId: p.engineRestorePointId })),
        },
      }, now);
      jobs.push({
        id: job.id,
        besId: first.engineId,
        pointIds: group.map((p) => p.id),
        status: "pending",
        error: null,
        requestedAt: at,
      });
      op.set(fileHistoryByJobKey(job.id), { hostId: host.id, path }, { expireIn: HISTORY_TTL_MS });
    }
    const previous = entry.value?.jobs ?? [];
    const kept = [
      ...previous.filter((j) => j.status === "pending"),
      ...previous.filter((j) => j.status !== "pending").slice(-KEPT_FINISHED_JOBS),
    ];
    const state: FileHistoryState = {
      hostId: host.id,
      accountId: host.accountId,
      orgId: host.orgId,
      path,
      jobs: [...kept, ...jobs],
      requestedAt: at,
      updatedAt: at,
    };
    op.set(fileHistoryKey(host.id, path), state, { expireIn: HISTORY_TTL_MS });
    appendAudit(op, actor, {
      ...auditTarget("host", host),
      action: "restore.file_history",
      summary:
        `Asked for the version history of ${path} on ${host.hostname}: ${missing.length} restore point${
          missing.length === 1 ? "" : "s"
        } to examine in ${jobs.length} BES job${jobs.length === 1 ? "" : "s"}`,
    }, now);
    if (!(await op.commit()).ok) return null;
    return { value: { view: await getFileHistory(kv, actor, host.id, path, now), queued: jobs.length } };
  };
  return await withRetry(attempt, 5, "The history request conflicted repeatedly; try again");
}

/**
 * The history of `path` on host `hostId` as the cache has it (its jobs brought up to date), with the
 * versions of `page` (0-based, VERSIONS_PAGE_SIZE a page, clamped). Status `none` when never asked.
 */
export async function getFileHistory(
  kv: Deno.Kv,
  actor: Actor,
  hostId: string,
  rawPath: string | undefined,
  now: Date,
  page = 0,
): Promise<FileHistoryView> {
  const host = await requireHistoryHost(kv, actor, hostId);
  const path = parsePath(rawPath);
  const [entry, { points, capped }] = await Promise.all([
    settle(kv, host.id, path, now),
    hostHistoryPoints(kv, actor, host),
  ]);
  const observations = await readObservations(kv, host.id, path);
  const state = entry.value;
  const pendingJobs = (state?.jobs ?? []).filter((j) => j.status === "pending");
  const pending = new Set(pendingJobs.flatMap((j) => j.pointIds));
  const current = points.map((p) => p.id);
  const { missing } = staleness(current, new Set(observations.keys()), pending);
  const versions = state ? collapseVersions(points, observations) : [];
  const pages = Math.max(1, Math.ceil(versions.length / VERSIONS_PAGE_SIZE));
  const p = Math.max(0, Math.min(Math.floor(page) || 0, pages - 1));
  const failed = (state?.jobs ?? []).filter((j) =>
    j.status === "failed" && j.pointIds.some((id) => missing.includes(id))
  );
  return {
    hostId: host.id,
    hostname: host.hostname,
    path,
    status: !state ? "none" : pendingJobs.length ? "pending" : "ready",
    pointsTotal: points.length,
    pointsExamined: current.filter((id) => observations.has(id)).length,
    pointsNew: state ? missing.length : points.length,
    pointsCapped: capped,
    errors: [...new Set(failed.map((j) => j.error ?? "The job failed"))],
    versionsTotal: versions.length,
    page: p,
    pages,
    versions: versions.slice(p * VERSIONS_PAGE_SIZE, (p + 1) * VERSIONS_PAGE_SIZE),
    requestedAt: state?.requestedAt ?? null,
    updatedAt: state?.updatedAt ?? null,
  };
}

/** How a refused field of "Restore this version" is named in the message. */
const FIELD_LABELS: Record<string, string> = {
  path: "Path",
  restorePointId: "Restore point",
  location: "Restore to",
  targetHostId: "Target host",
  targetPath: "Target folder",
  overwrite: "Overwrite",
  confirm: "Confirmation",
};

/**
 * Restores one version of the file: the `restore_files` request of restore_requests.ts for the point and the path,
 * to its original place on the host (`location: "original"`) or under another folder and host. The point
 * must be one of the host's, and the history must show the file present in it. Overwriting needs
 * `confirm`. Throws ValidationError (422 naming the field), NotFoundError (host, point or target host out
 * of scope).
 */
export async function restoreFileVersion(
  kv: Deno.Kv,
  actor: Actor,
  hostId: string,
  input: VersionRestoreInput,
  now: Date,
): Promise<RestoreRequest> {
  const host = await requireHistoryHost(kv, actor, hostId);
  const parsed = VersionRestoreInput.safeParse(input);
  if (!parsed.success) {
    const fields: Record<string, string> = {};
    for (const issue of parsed.error.issues) fields[issue.path.join(".") || "input"] ??= issue.message;
    const [field, message] = Object.entries(fields)[0];
    throw new ValidationError(`${FIELD_LABELS[field] ?? field}: ${message}`, fields);
  }
  const data = parsed.data;
  if (data.location === "original" && host.status === "decommissioned") {
    throw new ValidationError(`${host.hostname} is decommissioned: restore the version to another host`, {
      location: "Not offered: the original host is decommissioned",
    });
  }
  const point = await requireRestorePoint(kv, actor, data.restorePointId);
  if (point.hostId !== host.id) {
    throw new ValidationError(`Restore point ${point.id} is not one of ${host.hostname}'s`, {
      restorePointId: `Is not a restore point of ${host.hostname}`,
    });
  }
  const seen = (await kv.get<Observation>(fileHistoryPointKey(host.id, data.path, point.id))).value;
  if (!seen || !seen.exists || seen.error) {
    throw new ValidationError(
      seen
        ? `The history shows no ${data.path} in restore point ${point.id}`
        : `The history of ${data.path} has not examined restore point ${point.id} yet: update it first`,
      { restorePointId: "Does not hold this file" },
    );
  }
  const original = data.location === "original";
  return await requestFileRestore(kv, actor, {
    restorePointId: point.id,
    paths: [data.path],
    targetHostId: original ? host.id : data.targetHostId ?? host.id,
    targetPath: original ? "/" : data.targetPath!.trim(),
    overwrite: data.overwrite,
  }, now);
}
