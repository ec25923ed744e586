/**
 * The agent's `restore_drill` job (docs/engine-protocol.md, "Restore drills"): restores a sample of files
 * (or the whole restore point) into a folder of its own below the payload's scratch path —
 * `<scratchPath>/cadres-drill-<job id>` — in a worker (worker_drill.ts: every chunk verified as it is
 * written, every restored file read back and checked against the backup's chunk ids), measures the time
 * to restore and the throughput, and deletes that folder whatever happened (a failed or cancelled drill
 * too). It passes only when every selected file was restored and verified and the folder is gone; its
 * result's `output.drill` carries the figures and every failing file by path.
 */
import { absolutePath } from "../repo/fs.ts";
import type { ClaimedJob, JobResultBody } from "./control.ts";
import { AgentJobError, describeFailure, type JobFailure } from "./failure.ts";
import type { JobHandle } from "./job_handle.ts";
import { type AgentContext, dataApiOf, snapshotIdOf, withErrors, workerData } from "./job_context.ts";
import { runInWorker } from "./worker_client.ts";
import type { DrillOutcome, PathError } from "./worker_protocol.ts";

/** Failures sent inline in `output.drill.failures` (all of them go to the result's error list). */
const INLINE_FAILURES = 100;

/**
 * Removes the drill's folder and everything in it, also folders restored without write permission (their
 * modes are restored as backed up). Returns null when it is gone, else why not.
 */
export async function removeScratch(dir: string): Promise<string | null> {
  const gone = async () => {
    try {
      await Deno.lstat(dir);
      return false;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return true;
      throw e;
    }
  };
  try {
    await Deno.remove(dir, { recursive: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    // A folder restored read-only: make every folder writable by us, then try again.
    const open = async (path: string) => {
      const info = await Deno.lstat(path).catch(() => null);
      if (!info?.isDirectory) return;
      await Deno.chmod(path, 0o700).catch(() => {});
      for await (const child of Deno.readDir(path)) await open(`${path}/${child.name}`);
    };
    try {
      await open(dir);
      await Deno.remove(dir, { recursive: true });
    } catch (again) {
      if (!(again instanceof Deno.errors.NotFound)) return (again as Error).message;
    }
  }
  return await gone() ? null : `${dir} still exists`;
}

function summary(failures: PathError[]): string {
  const first = failures.slice(0, 5).map((f) => `${f.path}: ${f.message}`).join("\n");
  return `${failures.length} file${failures.length === 1 ? "" : "s"} did not restore as backed up:\n${first}${
    failures.length > 5 ? "\n…" : ""
  }`;
}

export async function drillJob(
  ctx: AgentContext,
  job: ClaimedJob,
  handle: JobHandle,
  startedAt: Date,
): Promise<JobResultBody> {
  const p = job.payload;
  const snapshotId = snapshotIdOf(p);
  const api = dataApiOf(p);
  const mode = p.mode === "whole" ? "whole" : "sample";
  const sampleCount =
    typeof p.sampleCount === "number" && Number.isInteger(p.sampleCount) && p.sampleCount > 0
      ? Math.min(p.sampleCount, 100_000)
      : 20;
  if (typeof p.scratchPath !== "string" || !p.scratchPath.startsWith("/") || p.scratchPath.includes("\0")) {
    throw new AgentJobError("INVALID_PAYLOAD", "The drill names no absolute scratch path");
  }
  const scratchRoot = absolutePath(p.scratchPath);
  if (scratchRoot === "/") throw new AgentJobError("INVALID_PAYLOAD", "The scratch path must not be /");
  // The job id names the folder that is deleted: a plain name only ("/" or ".." would climb out of it).
  if (!/^[0-9A-Za-z_-]{1,128}$/.test(job.id)) {
    throw new AgentJobError("INVALID_PAYLOAD", "The drill's job id is not a plain name: nothing was touched");
  }
  // A folder of this job's own: only it is ever deleted, never the scratch path or anything else in it.
  const dir = `${scratchRoot}/cadres-drill-${job.id}`;
  let outcome: DrillOutcome | null = null;
  let failure: JobFailure | null = null;
  let cleanup: string | null = null;
  handle.progress(0, 0, "fetching the keys");
  const keys = await ctx.control.keys(job.id);
  try {
    // A previous attempt of this job may have left its folder: start clean.
    cleanup = await removeScratch(dir);
    if (cleanup) throw new AgentJobError("SCRATCH_NOT_CLEAN", `The drill's folder ${dir}: ${cleanup}`);
    await Deno.mkdir(scratchRoot, { recursive: true });
    handle.progress(0, 0, `restoring into ${dir}`);
    outcome = await runInWorker(handle, {
      op: "restore_drill",
      data: workerData(ctx, api, keys),
      snapshotId,
      mode,
      sampleCount,
      seed: typeof p.seed === "string" ? p.seed : job.id,
      targetPath: dir,
    }, {
      log: ctx.log,
      onProgress: (m) => handle.progress(m.percent, m.bytes, m.message),
    }) as DrillOutcome;
  } catch (e) {
    failure = describeFailure(e);
  } finally {
    keys.dataKey.fill(0);
    keys.idKey.fill(0);
    cleanup = await removeScratch(dir).catch((e) => (e as Error).message);
    if (cleanup) ctx.log("error", `job ${job.id}: the drill's scratch copy was not removed: ${cleanup}`);
  }
  const endedAt = new Date().toISOString();
  const failures = outcome?.failures ?? [];
  const drill = {
    mode,
    scratchPath: dir,
    scratchRemoved: cleanup === null,
    selected: outcome?.selected ?? 0,
    files: outcome?.files ?? 0,
    bytes: outcome?.bytes ?? 0,
    verified: outcome?.verified ?? 0,
    restoreMs: outcome?.restoreMs ?? 0,
    bytesPerSecond: outcome && outcome.restoreMs > 0
      ? Math.round(outcome.bytes / (outcome.restoreMs / 1000))
      : null,
    failures: failures.slice(0, INLINE_FAILURES),
    failureCount: failures.length,
  };
  const problems: Array<{ reason: string; message: string }> = [];
  if (failure) problems.push({ reason: failure.reason, message: failure.message });
  if (failures.length) problems.push({ reason: "DRILL_FAILED", message: summary(failures) });
  if (outcome && outcome.selected === 0) {
    problems.push({ reason: "NOTHING_TO_RESTORE", message: "The restore point holds no file to restore" });
  }
  if (outcome && !failures.length && outcome.verified < outcome.selected) {
    problems.push({
      reason: "DRILL_FAILED",
      message: `Only ${outcome.verified} of ${outcome.selected} files were verified`,
    });
  }
  if (cleanup) {
    problems.push({
      reason: "SCRATCH_NOT_REMOVED",
      message: `The scratch copy ${dir} was not removed: ${cleanup}`,
    });
  }
  return await withErrors(ctx, job.id, {
    status: problems.length ? "failed" : "success",
    startedAt: startedAt.toISOString(),
    endedAt,
    bytesTransferred: drill.bytes,
    protectedBytes: 0,
    error: problems.length
      ? {
        reason: problems[0].reason.slice(0, 64),
        message: problems.map((x) => x.message).join("\n").slice(0, 2000),
      }
      : null,
    // A drill that found damage must not be retried into a pass; one that could not start may be.
    retryable: !outcome && (failure?.retryable ?? false),
    output: { drill },
  }, failures);
}
