/**
 * Restore requests: file and image restores of a restore point (from its own repository or a replica),
 * their jobs, long path lists in chunks, their state read from the job, and the restores list. Bare-metal
 * restores build on these in bmr.ts.
 */
import { appendAudit } from "./audit.ts";
import { openIdCursor } from "./cursor.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { type Engine, engineKey } from "./engines.ts";
import { getManyValues } from "./kv.ts";
import { newId } from "./ids.ts";
import { getJob, getJobs, type Job, queueJobInOp } from "./job_queue.ts";
import { type Host, hostKey, hostScope } from "./hosts.ts";
import { type Actor, authorize, can, inScope } from "./rbac.ts";
import type { StorageTarget } from "./storage.ts";
import { targetKey } from "./storage_keys.ts";
import { z } from "zod";
import { listPartNumbers, readResultPart } from "./result_parts.ts";
import { listReplicationsOfPoint } from "./replicas.ts";
import { MAX_PATH_LENGTH, PathList, RestorePath } from "./restore_paths.ts";
import {
  restoreByJobKey,
  restoreKey,
  restorePathsKey,
  restoresByAccountKey,
  restoresByAccountPrefix,
  restoresPrefix,
} from "./keys/restore.ts";
import {
  besEndpoint,
  hostOrgsOf,
  hostsInScope,
  ID_PATTERN,
  loadPoint,
  pointPayload,
  requireComplete,
  requireIdShape,
  RESTORE_POINT_SCAN_LIMIT,
  type RestorePointView,
} from "./restore_points.ts";
import { jobFailure, packByWeight, resultError, updateWithOutcome } from "./restore_jobs.ts";

/** Per-file errors kept with a restore's result (the rest are counted). */
export const MAX_RESULT_ERRORS = 100;

export const Id = z.string({ error: "is required" }).regex(ID_PATTERN, "must be an id");

const Overwrite = z.boolean({ error: "must be true or false" }).default(false);

const OptionalId = z.union([z.literal("").transform(() => undefined), Id]).optional();

/** A file-level restore: paths to restore, where, and whether to overwrite. */
export const FileRestoreInput = z.object({
  restorePointId: Id,
  paths: PathList,
  /** Defaults to the point's host. */
  targetHostId: OptionalId,
  targetPath: RestorePath,
  overwrite: Overwrite,
  /**
   * Where the data is read from: the storage target of a finished replica of the point (its replica copy,
   * on that target's BES); empty or the point's own target: the point's own repository.
   */
  sourceTargetId: OptionalId,
});

export type FileRestoreInput = z.input<typeof FileRestoreInput>;

/** An image restore: target host and path are required. */
export const ImageRestoreInput = z.object({
  restorePointId: Id,
  targetHostId: Id,
  targetPath: RestorePath,
  overwrite: Overwrite,
  /** As for a file restore: a finished replica's storage target, or empty for the point's own. */
  sourceTargetId: OptionalId,
});

export type ImageRestoreInput = z.input<typeof ImageRestoreInput>;

export interface RestoreRequest {
  id: string;
  kind: "file" | "image" | "bmr";
  accountId: string;
  orgId: string | null;
  /** The orgs of the source and target hosts: reading the restore needs them in scope too. */
  hostOrgIds: string[];
  restorePointId: string;
  sourceHostId: string | null;
  targetHostId: string | null;
  targetPath: string | null;
  overwrite: boolean;
  /** File restores: the first paths (for display); `pathCount` counts them all. */
  paths: string[];
  pathCount: number;
  mode: "pxe" | "iso" | null;
  /** The storage target of the replica copy the restore reads (absent or null: the point's own repository). */
  sourceTargetId?: string | null;
  jobId: string;
  priority: "high" | "critical";
  status: "pending" | "running" | "success" | "warning" | "failed";
  progress: { percent: number; bytesTransferred: number } | null;
  result:
    | { files: number; bytes: number; errors: { path: string; message: string }[]; errorCount: number }
    | null;
  error: string | null;
  /** BMR only: when the one-time token expires, and when a BES redeemed it. */
  tokenExpiresAt: string | null;
  tokenUsedAt: string | null;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

/** Paths shown with a restore (its full list is in `restore_paths` chunks or the job payload). */
const DISPLAY_PATH_BUDGET = 8_000;

/** A path list this heavy or lighter travels inline in the job payload. */
const INLINE_PATH_BUDGET = 16_000;

/** Weight of one stored path chunk: below KV's 64 KiB per value even for two-byte strings. */
const CHUNK_PATH_BUDGET = 28_000;

function pathWeight(p: string): number {
  return p.length * 2 + 8;
}

/** Splits paths into chunks of at most `budget` weight each. */
function chunkPaths(paths: string[], budget: number): string[][] {
  return packByWeight(paths, pathWeight, budget);
}

/** The target host of a restore: same account as the point and inside the actor's scope, else not found. */
async function requireTargetHost(
  kv: Deno.Kv,
  actor: Actor,
  point: RestorePointView,
  hostId: string,
  known: Host | null = null,
): Promise<Host> {
  const host = known?.id === hostId ? known : (await kv.get<Host>(hostKey(hostId))).value;
  if (!host || host.accountId !== point.accountId || !inScope(actor, hostScope(host))) {
    throw new NotFoundError(`Target host ${hostId} not found`);
  }
  authorize(actor, "backup.restore", hostScope(host));
  return host;
}

export function newRestore(
  actor: Actor,
  point: RestorePointView,
  fields: Pick<
    RestoreRequest,
    | "kind"
    | "targetHostId"
    | "targetPath"
    | "overwrite"
    | "paths"
    | "pathCount"
    | "mode"
    | "priority"
    | "tokenExpiresAt"
  >,
  ids: { id: string; jobId: string },
  now: Date,
  targetHost: Pick<Host, "orgId"> | null = null,
): RestoreRequest {
  const at = now.toISOString();
  return {
    id: ids.id,
    accountId: point.accountId,
    orgId: point.orgId,
    hostOrgIds: hostOrgsOf(point.hostOrgId, targetHost?.orgId),
    restorePointId: point.id,
    sourceHostId: point.hostId,
    ...fields,
    jobId: ids.jobId,
    status: "pending",
    progress: null,
    result: null,
    error: null,
    tokenUsedAt: null,
    createdBy: actor.label,
    createdAt: at,
    updatedAt: at,
  };
}

function writeRestore(op: Deno.AtomicOperation, restore: RestoreRequest): void {
  op.check({ key: restoreKey(restore.id), versionstamp: null })
    .set(restoreKey(restore.id), restore)
    .set(restoresByAccountKey(restore.accountId, restore.id), restore.id)
    .set(restoreByJobKey(restore.jobId), restore.id);
}

export function describePoint(point: RestorePointView): string {
  return `restore point ${point.id} (${point.policyName}, ${point.hostName ?? "BES"}, ${point.completedAt})`;
}

/**
 * Queues a restore's job, writes the restore and its audit entry in one atomic operation (plus `extra`
 * writes, such as a BMR token); false when the commit lost a race.
 */
export async function commitRestore(
  kv: Deno.Kv,
  actor: Actor,
  point: RestorePointView,
  restore: RestoreRequest,
  job: {
    kind: "restore_files" | "restore_image" | "bmr";
    principal: string;
    payload: Record<string, unknown>;
  },
  audit: { action: string; summary: string },
  now: Date,
  extra?: (op: Deno.AtomicOperation) => void,
): Promise<boolean> {
  const op = kv.atomic();
  queueJobInOp(op, {
    id: restore.jobId,
    kind: job.kind,
    principal: job.principal,
    accountId: point.accountId,
    orgId: point.orgId,
    priority: restore.priority,
    payload: { restoreId: restore.id, ...pointPayload(point), sourceHostId: point.hostId, ...job.payload },
  }, now);
  writeRestore(op, restore);
  extra?.(op);
  appendAudit(op, actor, {
    accountId: point.accountId,
    orgId: point.orgId,
    action: audit.action,
    objectType: "restore",
    objectId: restore.id,
    summary: audit.summary,
  }, now);
  return (await op.commit()).ok;
}

/** What an image or bare-metal restore job carries about the whole point. */
export function imagePayload(point: RestorePointView) {
  return { chainId: point.chainId, sizeBytes: point.sizeBytes, fileCount: point.fileCount };
}

/** Where a restore reads its point: the point's own repository on its BES, or a replica copy on another target. */
interface RestoreSource {
  /** The BES whose data API serves the copy, as the payload's `bes`. */
  bes: ReturnType<typeof besEndpoint>;
  /** Payload fields: the copy's repository and, for a replica, `source` (data_access.ts reads it). */
  payload: Record<string, unknown>;
  /** The replica's target id, or null for the point's own repository. */
  targetId: string | null;
  /** For summaries: " from its replica on <target>" or "". */
  describe: string;
}

/**
 * The copy of `point` a restore reads (ENGINE.md §4: a replica shares its source's repository path and
 * keys). Empty or the point's own target: the point's repository on its BES. Otherwise the target must
 * hold a finished replication of the point (a replica rule's job that succeeded, even if the rule was
 * removed since) and still exist in the point's account; the restore then goes to that target's BES with
 * the replica repository and the rule's KEK source. Throws ValidationError naming `sourceTargetId`.
 */
async function restoreSource(
  kv: Deno.Kv,
  point: RestorePointView,
  engine: Engine | null,
  sourceTargetId: string | undefined,
  now: Date,
): Promise<RestoreSource> {
  const primary = {
    bes: besEndpoint(engine, point.engineId),
    payload: {},
    targetId: null,
    describe: "",
  };
  if (!sourceTargetId || sourceTargetId === point.repository?.target) return primary;
  const refuse = (message: string, field: string): never => {
    throw new ValidationError(message, { sourceTargetId: field });
  };
  const replication = (await listReplicationsOfPoint(kv, point.id, now)).find((r) =>
    r.targetId === sourceTargetId && r.status === "succeeded"
  );
  if (!replication) {
    refuse(
      `Restore point ${point.id} has no finished replica on target ${sourceTargetId}: choose its own copy or ` +
        "a replica listed under Replication",
      "No finished replica of this point on that target",
    );
  }
  const target = (await kv.get<StorageTarget>(targetKey(sourceTargetId))).value;
  if (!target || target.accountId !== point.accountId) {
    refuse(`The replica's target ${sourceTargetId} no longer exists`, "That target no longer exists");
  }
  if (!point.repository) {
    refuse(
      `Restore point ${point.id} does not record its repository, so its replica cannot be located`,
      "This point's replica cannot be located",
    );
  }
  const replicaEngine = (await kv.get<Engine>(engineKey(target!.besId))).value;
  const kekSource = replication!.kekSource ?? "account";
  return {
    bes: besEndpoint(replicaEngine, target!.besId),
    payload: {
      repository: { ...point.repository!, target: target!.id },
      source: {
        kind: "replica",
        targetId: target!.id,
        besId: target!.besId,
        kekSource,
        ruleId: replication!.ruleId,
      },
    },
    targetId: target!.id,
    describe: ` (read from its replica on ${target!.name})`,
  };
}

/**
 * A file or image restore to `host` (read from `source`): the restore and its job on the host's agent,
 * queued with its audit entry (`commitRestore`); `queued` is false when the commit lost a race. The job's
 * payload is `payloadFirst`, the source's fields, the BES, target path and overwrite, then `payload`.
 */
async function queueAgentRestore(
  kv: Deno.Kv,
  actor: Actor,
  point: RestorePointView,
  host: Host,
  source: RestoreSource,
  data: { targetPath: string; overwrite: boolean },
  ids: { id: string; jobId: string },
  fields: Pick<RestoreRequest, "paths" | "pathCount" | "priority"> & {
    kind: "file" | "image";
    jobKind: "restore_files" | "restore_image";
    payloadFirst?: Record<string, unknown>;
    payload?: Record<string, unknown>;
  },
  audit: { action: string; summary: string },
  now: Date,
): Promise<{ restore: RestoreRequest; queued: boolean }> {
  const restore = newRestore(
    actor,
    point,
    {
      kind: fields.kind,
      targetHostId: host.id,
      targetPath: data.targetPath,
      overwrite: data.overwrite,
      paths: fields.paths,
      pathCount: fields.pathCount,
      mode: null,
      priority: fields.priority,
      tokenExpiresAt: null,
    },
    ids,
    now,
    host,
  );
  restore.sourceTargetId = source.targetId;
  const queued = await commitRestore(
    kv,
    actor,
    point,
    restore,
    {
      kind: fields.jobKind,
      principal: `agent:${host.id}`,
      payload: {
        ...fields.payloadFirst,
        ...source.payload,
        bes: source.bes,
        targetPath: data.targetPath,
        overwrite: data.overwrite,
        ...fields.payload,
      },
    },
    audit,
    now,
  );
  return { restore, queued };
}

/**
 * The start of a file or image restore: its restore point (NotFoundError outside the actor's scope),
 * which must be complete (and, for `image`, made by an image policy); the target host (default: the
 * point's own host), which must be in the point's account and the actor's scope; the copy it reads
 * from; and the ids of the restore and its job. Throws ValidationError naming the field.
 */
async function prepareAgentRestore(
  kv: Deno.Kv,
  actor: Actor,
  kind: "file" | "image",
  data: { restorePointId: string; targetHostId?: string | null; sourceTargetId?: string },
  now: Date,
): Promise<
  { point: RestorePointView; host: Host; source: RestoreSource; ids: { id: string; jobId: string } }
> {
  const loaded = await loadPoint(kv, actor, data.restorePointId);
  const { point } = loaded;
  if (kind === "image" && point.backupType !== "image") {
    throw new ValidationError(
      `Image restore needs a restore point of an image policy; ${point.policyName} backs up files (use file restore)`,
      { restorePointId: "Not an image restore point" },
    );
  }
  requireComplete(point, "restored");
  const targetHostId = data.targetHostId ?? point.hostId;
  if (!targetHostId) {
    throw new ValidationError(
      "Choose a target host: this restore point was made on the BES and has no host",
      {
        targetHostId: "Is required for this restore point",
      },
    );
  }
  const host = await requireTargetHost(kv, actor, point, targetHostId, loaded.host);
  const source = await restoreSource(kv, point, loaded.engine, data.sourceTargetId, now);
  return { point, host, source, ids: { id: newId(now), jobId: newId(now) } };
}

/**
 * Restores files and folders of a complete restore point: a `restore_files` job on the target host's
 * agent (default: the point's own host), priority high. The target host must be in the point's account
 * and in the actor's scope (else NotFoundError). Long path lists are stored in chunks the agent fetches
 * (`POST /api/agent/v1/jobs/{id}/paths`); short ones travel in the payload.
 */
export async function requestFileRestore(
  kv: Deno.Kv,
  actor: Actor,
  input: FileRestoreInput,
  now: Date,
): Promise<RestoreRequest> {
  const data = FileRestoreInput.parse(input);
  const inline = data.paths.reduce((sum, p) => sum + pathWeight(p), 0) <= INLINE_PATH_BUDGET;
  const chunks = inline ? [] : chunkPaths(data.paths, CHUNK_PATH_BUDGET);
  const { point, host, source, ids } = await prepareAgentRestore(kv, actor, "file", data, now);
  // Chunks first (several writes for a long list), then the restore and its job in one atomic write: a
  // crash in between leaves only unreferenced chunks, never a job without its paths.
  for (let i = 0; i < chunks.length; i += 10) {
    const op = kv.atomic();
    chunks.slice(i, i + 10).forEach((chunk, j) => op.set(restorePathsKey(ids.id, i + j), chunk));
    if (!(await op.commit()).ok) throw new Error("Could not store the path list");
  }
  const display = chunkPaths(data.paths, DISPLAY_PATH_BUDGET)[0].slice(0, 100);
  const { restore, queued } = await queueAgentRestore(kv, actor, point, host, source, data, ids, {
    kind: "file",
    jobKind: "restore_files",
    paths: display,
    pathCount: data.paths.length,
    priority: "high",
    payload: { pathCount: data.paths.length, paths: inline ? data.paths : null, pathChunks: chunks.length },
  }, {
    action: "restore.files",
    summary: `Requested a file restore of ${data.paths.length} path(s) from ${
      describePoint(point)
    }${source.describe} to ${host.hostname}:${data.targetPath}${
      data.overwrite ? ", overwriting existing files" : ""
    }`,
  }, now);
  if (!queued) {
    await deleteChunks(kv, ids.id, chunks.length);
    throw new ConflictError("The restore could not be queued; try again");
  }
  return restore;
}

async function deleteChunks(kv: Deno.Kv, restoreId: string, count: number): Promise<void> {
  for (let i = 0; i < count; i += 100) {
    const op = kv.atomic();
    for (let j = i; j < Math.min(count, i + 100); j++) op.delete(restorePathsKey(restoreId, j));
    await op.commit();
  }
}

/**
 * Restores the full image of a complete restore point of an image policy to a target host and path: a
 * `restore_image` job on the target host's agent, priority critical. Throws ValidationError for a point of
 * a file policy.
 */
export async function requestImageRestore(
  kv: Deno.Kv,
  actor: Actor,
  input: ImageRestoreInput,
  now: Date,
): Promise<RestoreRequest> {
  const data = ImageRestoreInput.parse(input);
  const { point, host, source, ids } = await prepareAgentRestore(kv, actor, "image", data, now);
  const { restore, queued } = await queueAgentRestore(kv, actor, point, host, source, data, ids, {
    kind: "image",
    jobKind: "restore_image",
    paths: [],
    pathCount: 0,
    priority: "critical",
    payloadFirst: imagePayload(point),
  }, {
    action: "restore.image",
    summary: `Requested an image restore of ${
      describePoint(point)
    }${source.describe} to ${host.hostname}:${data.targetPath}${
      data.overwrite ? ", overwriting existing data" : ""
    }`,
  }, now);
  if (!queued) throw new ConflictError("The restore could not be queued; try again");
  return restore;
}

/**
 * One chunk of a file restore's path list, for the agent that holds its job (payloads carry long lists
 * as `pathChunks` instead of `paths`). Throws NotFoundError for another principal's job or a missing chunk.
 */
export async function restorePathsChunk(
  kv: Deno.Kv,
  principal: string,
  jobId: string,
  chunk: number,
): Promise<{ chunk: number; chunks: number; paths: string[] }> {
  const job = await getJob(kv, jobId);
  if (!job || job.principal !== principal || job.kind !== "restore_files") {
    throw new NotFoundError("No such file restore job for this principal");
  }
  const chunks = Number(job.payload.pathChunks ?? 0);
  const restoreId = String(job.payload.restoreId ?? "");
  if (!Number.isInteger(chunk) || chunk < 0 || chunk >= chunks) {
    throw new NotFoundError(`No chunk ${chunk}: this job has ${chunks} path chunk(s)`);
  }
  const paths = (await kv.get<string[]>(restorePathsKey(restoreId, chunk))).value;
  if (!paths) throw new NotFoundError(`Chunk ${chunk} of the path list is missing`);
  return { chunk, chunks, paths };
}

function readResult(job: Job): NonNullable<RestoreRequest["result"]> {
  const output = (job.result?.output ?? {}) as Record<string, unknown>;
  const restored = (output.restored ?? {}) as Record<string, unknown>;
  const count = (v: unknown) => typeof v === "number" && Number.isFinite(v) && v >= 0 ? Math.floor(v) : null;
  const rawErrors = Array.isArray(output.errors)
    ? output.errors
    : Array.isArray(restored.errors)
    ? restored.errors
    : [];
  const errors = rawErrors.flatMap((e) => {
    const item = e as { path?: unknown; message?: unknown } | null;
    if (!item || typeof item.path !== "string") return [];
    return [{ path: item.path.slice(0, MAX_PATH_LENGTH), message: String(item.message ?? "").slice(0, 500) }];
  });
  return {
    files: count(output.files) ?? count(restored.files) ?? 0,
    bytes: count(output.bytes) ?? count(restored.bytes) ?? job.result?.bytesTransferred ?? 0,
    errors: errors.slice(0, MAX_RESULT_ERRORS),
    errorCount: Math.max(
      errors.length,
      count(output.errorCount) ?? 0,
      job.result?.lists?.errors?.total ?? 0,
    ),
  };
}

/**
 * A finished restore with the first errors its engine sent as the result's `errors` (and in parts),
 * when its output listed none: the first MAX_RESULT_ERRORS are kept with the restore, the rest counted.
 */
async function withPartErrors(
  kv: Deno.Kv,
  restore: RestoreRequest,
  job: Job | null,
): Promise<RestoreRequest> {
  const facts = job?.result?.lists?.errors;
  if (!job?.result || !facts?.kept || !restore.result || restore.result.errors.length) return restore;
  const attempt = job.result.partsAttempt ?? job.attempts;
  const errors: Array<{ path: string; message: string }> = [];
  for (const { part } of await listPartNumbers(kv, job.id, attempt, "errors", facts.parts)) {
    const items = await readResultPart<{ path: string; message: string }>(
      kv,
      job.id,
      attempt,
      "errors",
      part,
    );
    errors.push(...(items ?? []).slice(0, MAX_RESULT_ERRORS - errors.length));
    if (errors.length >= MAX_RESULT_ERRORS) break;
  }
  return { ...restore, result: { ...restore.result, errors } };
}

/** A restore as its job stands now: status and progress from the job, the result once it is recorded. */
function restoreWithJob(restore: RestoreRequest, job: Job | null, now: string): RestoreRequest {
  if (restore.status === "success" || restore.status === "warning" || restore.status === "failed") {
    return restore;
  }
  if (!job || job.id !== restore.jobId) return restore;
  if (job.result) {
    const result = readResult(job);
    return {
      ...restore,
      status: job.result.status,
      progress: {
        percent: job.result.status === "failed" ? job.progress?.percent ?? 0 : 100,
        bytesTransferred: job.result.bytesTransferred,
      },
      result,
      error: job.result.status === "success" ? null : resultError(job),
      updatedAt: now,
    };
  }
  if (job.status === "failed" || job.status === "cancelled") {
    return { ...restore, status: "failed", error: jobFailure(job), updatedAt: job.updatedAt };
  }
  if (job.status === "leased") {
    const progress = job.progress
      ? { percent: job.progress.percent, bytesTransferred: job.progress.bytesTransferred }
      : { percent: 0, bytesTransferred: 0 };
    return { ...restore, status: "running", progress };
  }
  return { ...restore, status: "pending", progress: null };
}

/** A restore, brought up to date with its job. Throws NotFoundError when missing or outside the scope. */
export async function getRestore(kv: Deno.Kv, actor: Actor, id: string): Promise<RestoreRequest> {
  requireIdShape(id, "Restore");
  const restore = (await kv.get<RestoreRequest>(restoreKey(id))).value;
  if (!restore || !inScope(actor, restore) || !hostsInScope(actor, restore)) {
    throw new NotFoundError(`Restore ${id} not found`);
  }
  authorize(actor, "backup.restore", restore);
  const job = await getJob(kv, restore.jobId);
  return await withPartErrors(kv, restoreWithJob(restore, job, restore.updatedAt), job);
}

/**
 * Restores of the actor's account in its scope, newest first, a page at a time (bounded scan). The
 * cursor is the id of the last restore of the previous page; another one is an InvalidCursorError.
 */
export async function listRestores(
  kv: Deno.Kv,
  actor: Actor,
  page: { cursor?: string; limit?: number } = {},
): Promise<{ values: RestoreRequest[]; cursor: string }> {
  authorize(actor, "backup.restore");
  const limit = Math.min(200, Math.max(1, page.limit ?? 50));
  if (!actor.accountId && actor.kind !== "system") return { values: [], cursor: "" };
  const prefix: Deno.KvKey = actor.accountId ? restoresByAccountPrefix(actor.accountId) : restoresPrefix();
  const cursor = openIdCursor(page.cursor);
  const selector = cursor ? { prefix, end: [...prefix, cursor] } : { prefix };
  const found: RestoreRequest[] = [];
  let scanned = 0;
  let last = "";
  let done = false;
  const iter = kv.list(selector, { reverse: true, batchSize: 200 })[Symbol.asyncIterator]();
  // Index entries are read in batches no larger than what the page still needs, their restores in one
  // getMany per batch (the system's prefix holds the restores themselves).
  while (!done && found.length < limit && scanned < RESTORE_POINT_SCAN_LIMIT) {
    const want = Math.min(limit - found.length, RESTORE_POINT_SCAN_LIMIT - scanned);
    const batch: Deno.KvEntry<unknown>[] = [];
    while (batch.length < want) {
      const step = await iter.next();
      if (step.done) {
        done = true;
        break;
      }
      batch.push(step.value);
    }
    const ids = batch.flatMap((e) => typeof e.value === "string" ? [e.value] : []);
    const byId = new Map(
      (await getManyValues<RestoreRequest>(kv, ids.map(restoreKey))).map((r) => [r.id, r]),
    );
    for (const e of batch) {
      scanned++;
      last = String(e.key[e.key.length - 1]);
      const restore = typeof e.value === "string" ? byId.get(e.value) : e.value as RestoreRequest;
      if (restore && can(actor, "backup.restore", restore) && hostsInScope(actor, restore)) {
        found.push(restore);
      }
    }
  }
  const more = !done && !(await iter.next()).done;
  const jobs = new Map((await getJobs(kv, found.map((r) => r.jobId))).map((j) => [j.id, j]));
  return {
    values: found.map((r) => restoreWithJob(r, jobs.get(r.jobId) ?? null, r.updatedAt)),
    cursor: more ? last : "",
  };
}

/**
 * Applies a file, image or bare-metal restore job's recorded result to its restore (called from
 * job_outcomes.ts `applyJobOutcome`). Idempotent: a restore that is no longer pending or running, or
 * belongs to another job, is left.
 */
export async function applyRestoreRequestOutcome(kv: Deno.Kv, job: Job, now: Date): Promise<void> {
  if (!job.result) return;
  const at = now.toISOString();
  const id = (await kv.get<string>(restoreByJobKey(job.id))).value;
  if (!id) return;
  await updateWithOutcome<RestoreRequest>(
    kv,
    restoreKey(id),
    (r) => withPartErrors(kv, restoreWithJob(r, job, at), job),
  );
}
