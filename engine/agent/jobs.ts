/**
 * The agent's jobs (docs/engine-protocol.md, Jobs): `backup` (files or image; hooks, VSS snapshot hook,
 * IO priority, throttle), `restore_files`, `restore_image`, `restore_drill` (drill.ts) and `health_check`. Each runs with a `JobHandle`
 * reporting progress every few seconds and ends with one result in the protocol's shapes. The heavy part
 * of backups and restores runs in a worker process (worker.ts).
 */
import { absolutePath } from "../repo/fs.ts";
import { drillJob } from "./drill.ts";
import { type AgentContext, dataApiOf, snapshotIdOf, withErrors, workerData } from "./job_context.ts";
import type { ClaimedJob, JobResultBody } from "./control.ts";
import { AgentJobError, describeFailure, type JobFailure } from "./failure.ts";
import { type HookOutcome, hookOutputOf, parseHooks, runHook } from "./hooks.ts";
import { probeTarget } from "./health.ts";
import { JobHandle } from "./job_handle.ts";
import { priorityPlan } from "./priority.ts";
import { type SnapshotSet, takeSnapshots } from "./snapshot.ts";
import { runInWorker } from "./worker_client.ts";
import type {
  BackupOutcome,
  BackupRequest,
  PathError,
  RestoreOutcome,
  WorkerData,
  WorkerMessage,
  WorkerRequest,
} from "./worker_protocol.ts";

export type { AgentContext };

/** "N paths were not <what>:" and the first five of them. */
function summary(errors: PathError[], what: string): string {
  const first = errors.slice(0, 5).map((e) => `${e.path}: ${e.message}`).join("\n");
  const one = errors.length === 1;
  return `${errors.length} path${one ? " was" : "s were"} not ${what}:\n${first}${
    errors.length > 5 ? "\n…" : ""
  }`;
}

const ENCRYPTION: Record<string, BackupRequest["settings"]["encryption"]> = {
  "AES-256-GCM": "aes-256-gcm",
  "AES-256-CBC": "aes-256-cbc",
  "aes-256-gcm": "aes-256-gcm",
  "aes-256-cbc": "aes-256-cbc",
  none: "none",
};

/** The repository settings a backup payload asks for (the guide's defaults where it says nothing). */
export function repositorySettings(payload: Record<string, unknown>): BackupRequest["settings"] {
  const compression = ["zstd", "lz4", "none"].includes(String(payload.compression))
    ? payload.compression as BackupRequest["settings"]["compression"]
    : "zstd";
  const encryption = ENCRYPTION[String(payload.encryption ?? "AES-256-GCM")];
  if (!encryption) throw new AgentJobError("INVALID_PAYLOAD", `Unknown encryption "${payload.encryption}"`);
  return { compression, encryption, dedup: payload.deduplication !== false };
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string" && x.length > 0) : [];
}

/** The result of a job that failed before or while it ran. */
export function failedResult(
  startedAt: Date,
  failure: JobFailure,
  extra: Partial<JobResultBody> = {},
): JobResultBody {
  return {
    status: "failed",
    startedAt: startedAt.toISOString(),
    endedAt: new Date().toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    error: { reason: failure.reason.slice(0, 64), message: failure.message.slice(0, 2000) },
    retryable: failure.retryable,
    output: null,
    ...extra,
  };
}

/** Runs one claimed job to its result (never throws: a failure is a failed result). */
export async function runJob(ctx: AgentContext, job: ClaimedJob, handle: JobHandle): Promise<JobResultBody> {
  const startedAt = new Date();
  try {
    switch (job.kind) {
      case "backup":
        return await backupJob(ctx, job, handle, startedAt);
      case "restore_files":
        return await restoreFilesJob(ctx, job, handle, startedAt);
      case "restore_image":
        return await restoreImageJob(ctx, job, handle, startedAt);
      case "health_check":
        return await healthCheckJob(job, startedAt);
      case "restore_drill":
        return await drillJob(ctx, job, handle, startedAt);
      default:
        return failedResult(startedAt, {
          reason: "UNSUPPORTED",
          message: `This agent does not run ${job.kind} jobs`,
          retryable: false,
        });
    }
  } catch (e) {
    return failedResult(startedAt, describeFailure(e));
  }
}

// ---------------------------------------------------------------------------------------------------
// Backup

async function runHooksOfType(
  ctx: AgentContext,
  job: ClaimedJob,
  hooks: ReturnType<typeof parseHooks>,
  type: string,
  outcomes: HookOutcome[],
  env: Record<string, string>,
): Promise<HookOutcome | null> {
  for (const hook of hooks.filter((h) => h.type === type)) {
    ctx.log("info", `job ${job.id}: running ${hook.type} hook ${hook.id}`);
    const outcome = await runHook(hook, { workDir: `${ctx.dataDir}/tmp`, env });
    outcomes.push(outcome);
    if (!outcome.ok && outcome.failOnError) return outcome;
  }
  return null;
}

/** Include paths: the payload's, else the agent's default roots; split into existing and missing. */
async function includePaths(ctx: AgentContext, payload: Record<string, unknown>) {
  const given = strings(payload.includePaths);
  const paths = [...new Set((given.length > 0 ? given : ctx.defaultRoots).map((p) => absolutePath(p, "/")))];
  const existing: string[] = [];
  const missing: string[] = [];
  for (const p of paths) {
    try {
      await Deno.lstat(p);
      existing.push(p);
    } catch {
      missing.push(p);
    }
  }
  return { existing, missing, fromPolicy: given.length > 0 };
}

async function backupJob(
  ctx: AgentContext,
  job: ClaimedJob,
  handle: JobHandle,
  startedAt: Date,
): Promise<JobResultBody> {
  const p = job.payload;
  const policyId = String(p.policyId ?? "");
  const backupType = p.backupType === "image" ? "image" : "file";
  const hooks = parseHooks(p.hooks);
  const settings = repositorySettings(p);
  const api = dataApiOf(p);
  const throttle = (p.throttle ?? {}) as Record<string, unknown>;
  const imagePath = typeof p.imagePath === "string" ? [p.imagePath] : null;
  const { existing, missing, fromPolicy } = imagePath
    ? { ...(await includePaths(ctx, { includePaths: imagePath })), fromPolicy: true }
    : await includePaths(ctx, p);
  if (existing.length === 0) {
    return failedResult(startedAt, {
      reason: "INCLUDE_PATHS_MISSING",
      message: `Nothing to back up: ${
        missing.length
          ? `${missing.join(", ")} do${missing.length === 1 ? "es" : ""} not exist on ${ctx.hostname}`
          : "no include paths"
      }`,
      retryable: false,
    });
  }
  if (backupType === "image" && existing.length !== 1) {
    return failedResult(startedAt, {
      reason: "INVALID_PAYLOAD",
      message: `An image policy backs up one device or image file; it names ${existing.length} (${
        existing.join(", ")
      })`,
      retryable: false,
    });
  }
  handle.progress(0, 0, "fetching the keys");
  const keys = await ctx.control.keys(job.id);
  const outcomes: HookOutcome[] = [];
  const env = {
    CADRES_JOB_ID: job.id,
    CADRES_POLICY_ID: policyId,
    CADRES_BACKUP_TYPE: backupType,
    CADRES_RUN_KIND: String(p.runKind ?? ""),
    CADRES_INCLUDE_PATHS: existing.join("\n"),
  };
  let snapshots: SnapshotSet | null = null;
  let outcome: BackupOutcome | null = null;
  let chainId = "";
  let failure: JobFailure | null = null;
  const warnings: Array<{ reason: string; message: string }> = [];
  if (missing.length > 0) {
    warnings.push({
      reason: "INCLUDE_PATHS_MISSING",
      message: `${
        fromPolicy ? "Include paths" : "Default roots"
      } not found on ${ctx.hostname}, not backed up: ${missing.join(", ")}`,
    });
  }
  const priority = priorityPlan(throttle.ioPriority);
  try {
    handle.progress(0, 0, "running pre-backup hooks");
    let fatal = await runHooksOfType(ctx, job, hooks, "pre_backup", outcomes, env);
    if (!fatal) fatal = await runHooksOfType(ctx, job, hooks, "pre_snapshot", outcomes, env);
    if (!fatal) {
      snapshots = backupType === "file"
        ? await takeSnapshots(ctx.snapshotHook, existing, { enabled: p.vssEnabled !== false })
        : await takeSnapshots(null, [], { enabled: false });
      if (backupType === "image" && p.vssEnabled !== false) {
        snapshots.status = "not applied";
        snapshots.detail =
          "image backups read the device as it is: back up an LVM snapshot device for a consistent image";
      }
      fatal = await runHooksOfType(ctx, job, hooks, "post_snapshot", outcomes, env);
    }
    if (fatal) {
      failure = {
        reason: "HOOK_FAILED",
        message:
          `${fatal.type} hook ${fatal.hookId} failed (exit ${fatal.exitCode}): the backup did not run\n${fatal.output}`,
        retryable: true,
      };
    } else {
      if (snapshots?.failed) warnings.push({ reason: "VSS_FAILED", message: `VSS: ${snapshots.detail}` });
      if (handle.signal.aborted) {
        throw new AgentJobError("CANCELLED", "The job was cancelled before it read anything");
      }
      const previous = ctx.state.lastSnapshot(policyId, keys.repository);
      const request: BackupRequest = {
        op: "backup",
        data: workerData(ctx, api, keys),
        jobId: job.id,
        hostname: ctx.hostname,
        backupType,
        paths: existing,
        excludePaths: strings(p.excludePaths),
        excludePatterns: strings(p.excludePatterns),
        settings,
        recoveryPublicKey: keys.recoveryPublicKey,
        previous: previous && previous.backupType === backupType
          ? { snapshotId: previous.snapshotId, files: previous.files }
          : null,
        full: p.runKind === "full",
        throttle: {
          maxTransferMbps: typeof throttle.maxTransferMbps === "number" ? throttle.maxTransferMbps : null,
          schedule: typeof throttle.schedule === "string" ? throttle.schedule : null,
          timeZone: typeof throttle.timeZone === "string" ? throttle.timeZone : null,
        },
        snapshots: snapshots?.mappings ?? [],
      };
      handle.progress(0, 0, "backing up");
      const result = await runInWorker(handle, request, {
        prefix: priority.prefix,
        log: ctx.log,
        onProgress: (m) => handle.progress(m.percent, m.bytes, m.message),
      });
      outcome = result as BackupOutcome;
      chainId = outcome.kind === "incremental" && previous && previous.snapshotId === outcome.parentId
        ? previous.chainId
        : outcome.snapshotId;
      await ctx.state.recordSnapshot({
        policyId,
        repository: keys.repository,
        backupType,
        snapshotId: outcome.snapshotId,
        chainId,
        type: outcome.kind,
        completedAt: new Date().toISOString(),
        files: outcome.files,
        totalBytes: outcome.totalBytes,
      });
    }
  } catch (e) {
    failure = describeFailure(e);
  } finally {
    keys.dataKey.fill(0);
    keys.idKey.fill(0);
    if (snapshots) {
      for (const problem of await snapshots.release()) {
        warnings.push({ reason: "VSS_FAILED", message: `A snapshot was not removed: ${problem}` });
      }
    }
  }
  const postFatal = await runHooksOfType(ctx, job, hooks, "post_backup", outcomes, {
    ...env,
    CADRES_BACKUP_STATUS: failure ? "failed" : "success",
    CADRES_SNAPSHOT_ID: outcome?.snapshotId ?? "",
  });
  for (const o of outcomes) {
    if (!o.ok && (!o.failOnError || o === postFatal)) {
      warnings.push({
        reason: "HOOK_FAILED",
        message: `${o.type} hook ${o.hookId} failed (exit ${o.exitCode})${
          o.failOnError ? " after the backup completed" : "; fail on error is off, so the backup went on"
        }`,
      });
    }
  }
  const hookOutput = hookOutputOf(outcomes);
  const vss = snapshots
    ? { status: snapshots.status, detail: snapshots.detail, paths: snapshots.paths }
    : { status: "not applied", detail: "the backup did not reach the snapshot step", paths: [] };
  if (failure || !outcome) {
    return failedResult(
      startedAt,
      failure ?? { reason: "AGENT_ERROR", message: "no outcome", retryable: true },
      {
        hookOutput,
        output: { vss, ioPriority: priority.applied, notes: warnings.map((w) => w.message) },
      },
    );
  }
  if (outcome.errors.length > 0) {
    warnings.unshift({ reason: "PARTIAL_FILES", message: summary(outcome.errors, "backed up") });
  }
  const endedAt = new Date();
  return await withErrors(ctx, job.id, {
    status: warnings.length > 0 ? "warning" : "success",
    startedAt: startedAt.toISOString(),
    endedAt: endedAt.toISOString(),
    bytesTransferred: outcome.bytesStored,
    protectedBytes: outcome.totalBytes,
    error: warnings.length > 0
      ? { reason: warnings[0].reason, message: warnings.map((w) => w.message).join("\n").slice(0, 2000) }
      : null,
    retryable: false,
    hookOutput,
    stats: {
      files: outcome.files,
      dirs: outcome.dirs,
      bytesRead: outcome.bytesRead,
      bytesNew: outcome.bytesNew,
      ...(outcome.bytesNewIncompressible === null
        ? {}
        : { bytesNewIncompressible: outcome.bytesNewIncompressible }),
      bytesStored: outcome.bytesStored,
      durationMs: outcome.durationMs,
      added: outcome.changes.added,
      modified: outcome.changes.modified,
      deleted: outcome.changes.deleted,
    },
    output: {
      restorePoint: {
        id: outcome.snapshotId,
        chainId,
        type: outcome.kind,
        parentId: outcome.parentId,
        sizeBytes: outcome.bytesStored,
        fileCount: outcome.files,
        completedAt: endedAt.toISOString(),
      },
      files: outcome.files,
      dirs: outcome.dirs,
      reusedFiles: outcome.reusedFiles,
      bytesRead: outcome.bytesRead,
      bytesNew: outcome.bytesNew,
      bytesNewIncompressible: outcome.bytesNewIncompressible,
      bytesStored: outcome.bytesStored,
      totalBytes: outcome.totalBytes,
      durationMs: outcome.durationMs,
      added: outcome.changes.added,
      modified: outcome.changes.modified,
      deleted: outcome.changes.deleted,
      changesSince: outcome.changes.against,
      errorCount: outcome.errors.length,
      paths: existing,
      repository: {
        ...keys.repository,
        created: outcome.repositoryCreated,
        recoveryKey: outcome.recoveryKey,
      },
      vss,
      ioPriority: priority.applied,
      throttle: outcome.throttle,
      notes: outcome.notes,
      cache: outcome.cache ?? null,
    },
  }, outcome.errors);
}

// ---------------------------------------------------------------------------------------------------
// Restores

/** The whole path list of a file restore (fetched in chunks when the payload does not carry it). */
async function restorePaths(ctx: AgentContext, job: ClaimedJob): Promise<string[]> {
  if (Array.isArray(job.payload.paths)) return strings(job.payload.paths);
  const chunks = Number(job.payload.pathChunks ?? 0);
  const paths: string[] = [];
  for (let chunk = 0; chunk < chunks; chunk++) paths.push(...(await ctx.control.paths(job.id, chunk)).paths);
  return paths;
}

async function restoreResult(
  ctx: AgentContext,
  jobId: string,
  startedAt: Date,
  outcome: RestoreOutcome,
): Promise<JobResultBody> {
  const restoredSome = outcome.files > 0 || (outcome.found > 0 && outcome.errors.length === 0);
  const status = outcome.errors.length === 0 ? "success" : restoredSome ? "warning" : "failed";
  return await withErrors(ctx, jobId, {
    status,
    startedAt: startedAt.toISOString(),
    endedAt: new Date().toISOString(),
    bytesTransferred: outcome.bytes,
    protectedBytes: 0,
    error: status === "success" ? null : {
      reason: status === "warning" ? "PARTIAL_FILES" : "NOTHING_RESTORED",
      message: summary(outcome.errors, "restored"),
    },
    retryable: false,
    output: {
      files: outcome.files,
      bytes: outcome.bytes,
      verified: outcome.verified,
      errorCount: outcome.errors.length,
    },
  }, outcome.errors);
}

async function restoreFilesJob(
  ctx: AgentContext,
  job: ClaimedJob,
  handle: JobHandle,
  startedAt: Date,
): Promise<JobResultBody> {
  const p = job.payload;
  const snapshotId = snapshotIdOf(p);
  const api = dataApiOf(p);
  const targetPath = typeof p.targetPath === "string" && p.targetPath ? p.targetPath : null;
  if (!targetPath) throw new AgentJobError("INVALID_PAYLOAD", "The restore names no target path");
  handle.progress(0, 0, "fetching the path list");
  const paths = await restorePaths(ctx, job);
  if (paths.length === 0) throw new AgentJobError("INVALID_PAYLOAD", "The restore names no paths");
  return await restoreInWorker(ctx, job, handle, startedAt, api, (data) => ({
    op: "restore_files",
    data,
    snapshotId,
    paths,
    targetPath,
    overwrite: p.overwrite === true,
  }));
}

type ProgressMessage = Extract<WorkerMessage, { type: "progress" }>;

async function restoreImageJob(
  ctx: AgentContext,
  job: ClaimedJob,
  handle: JobHandle,
  startedAt: Date,
): Promise<JobResultBody> {
  const p = job.payload;
  const snapshotId = snapshotIdOf(p);
  const api = dataApiOf(p);
  if (typeof p.targetPath !== "string" || !p.targetPath) {
    throw new AgentJobError("INVALID_PAYLOAD", "The image restore names no target path");
  }
  const targetPath = p.targetPath;
  return await restoreInWorker(ctx, job, handle, startedAt, api, (data) => ({
    op: "restore_image",
    data,
    snapshotId,
    targetPath,
    overwrite: p.overwrite === true,
  }));
}

/**
 * Runs the restore `request(data)` (its `data` made from the job's keys) in a worker and reports its
 * outcome; the keys are zeroed after, whatever happened. Shared by file and image restores.
 */
async function restoreInWorker(
  ctx: AgentContext,
  job: ClaimedJob,
  handle: JobHandle,
  startedAt: Date,
  api: { dataUrl: string; certificate: string | null },
  request: (data: WorkerData) => WorkerRequest,
): Promise<JobResultBody> {
  const keys = await ctx.control.keys(job.id);
  try {
    const outcome = await runInWorker(handle, request(workerData(ctx, api, keys)), {
      log: ctx.log,
      onProgress: (m: ProgressMessage) => handle.progress(m.percent, m.bytes, m.message),
    });
    return await restoreResult(ctx, job.id, startedAt, outcome as RestoreOutcome);
  } finally {
    keys.dataKey.fill(0);
    keys.idKey.fill(0);
  }
}

// ---------------------------------------------------------------------------------------------------
// Health check (relay agents)

async function healthCheckJob(job: ClaimedJob, startedAt: Date): Promise<JobResultBody> {
  const target = (job.payload.target ?? {}) as { id?: string; type?: unknown; config?: unknown };
  const probe = await probeTarget(target);
  const status = probe.reachable === true ? "success" : probe.reachable === null ? "warning" : "failed";
  return {
    status,
    startedAt: startedAt.toISOString(),
    endedAt: new Date().toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    error: status === "success" ? null : {
      reason: status === "warning" ? "NOT_PROBED" : "TARGET_UNREACHABLE",
      message: `${target.type} target ${target.id ?? ""}${
        probe.endpoint ? ` at ${probe.endpoint}` : ""
      }: ${probe.error}`,
    },
    retryable: false,
    output: { probe },
  };
}
