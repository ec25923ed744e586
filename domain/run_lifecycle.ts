/**
 * A run between its creation and its end: the offline-agent run (skipped or deferred, linked to the
 * offline alert), the `runs_open` index and its start-up data fix, the minute sweep that brings runs left
 * open up to their finished jobs, and failing the runs of jobs whose lease expired for good.
 */
import { type DataFixResult, runDataFix } from "./data_fixes.ts";
import { openAlertKey } from "./keys/alerts.ts";
import { deferredKey, runKey, runsOpenKey, runsOpenPrefix, runsPrefix } from "./keys/runs.ts";
import { getManyValues } from "./kv.ts";
import { CommitConflictError, withRetry } from "./retry.ts";
import { type Job, jobKey } from "./job_queue.ts";
import type { Policy } from "./policies.ts";
import { applyReplicationOutcome } from "./replicas.ts";
import { applyJobOutcome, applyJobResultToRun } from "./job_outcomes.ts";
import { isOpenRun, type NewRun, newRunInOp, type Run } from "./runs.ts";
import { dataFixKey } from "./keys/data_fixes.ts";

/** Set once every open run has its `runs_open` entry (runs older than the index had none). */
const OPEN_RUNS_INDEX_FIX_KEY = dataFixKey("runs_open_v1");

/**
 * Data fix run on start (and after a results-DB restore, `force`): gives every pending or running run its
 * `runs_open` entry — runs created before the index existed, or restored from an older bundle, had none,
 * so run-now did not see them. Each entry is written checked against its run (a run that ends meanwhile
 * is re-read) and only when missing. Idempotent: once complete a marker makes later calls skip it (unless
 * `force`); a crash part-way leaves no marker, so the next start finishes it. Returns what it indexed.
 */
export async function indexOpenRuns(
  kv: Deno.Kv,
  now: Date,
  options: { force?: boolean } = {},
): Promise<DataFixResult> {
  return await runDataFix(kv, OPEN_RUNS_INDEX_FIX_KEY, now, options, async () => {
    let indexed = 0;
    for await (const listed of kv.list<Run>({ prefix: runsPrefix() }, { batchSize: 500 })) {
      if (!listed.value || !isOpenRun(listed.value)) continue;
      let entry: Deno.KvEntryMaybe<Run> | null = null;
      // Commit retry (retry.ts): five lost races throw, so the marker is not written and the next start
      // finishes the fix (giving up quietly would leave the run out of run-now's index for ever).
      await withRetry(async () => {
        entry = entry ? await kv.get<Run>(listed.key) : listed;
        if (!entry.value || !isOpenRun(entry.value)) return { value: undefined };
        const run = entry.value;
        const key = runsOpenKey(run.policyId, run.hostId, run.id);
        const op = kv.atomic().check(entry).check({ key, versionstamp: null }).set(key, run.id);
        if ((await op.commit()).ok) {
          indexed++;
          return { value: undefined };
        }
        if ((await kv.get(key)).versionstamp) return { value: undefined }; // already indexed
        return null;
      });
    }
    return indexed;
  });
}

/**
 * Adds to `op` the run an offline agent gets instead of a job (the tick, run now): with catch-up on it
 * waits for the agent (pending, in `deferredKey`), otherwise it is skipped; either way it is linked to
 * the host's one offline alert (`alertId`) instead of becoming a failure of its own.
 */
export function offlineHostRunInOp(
  op: Deno.AtomicOperation,
  policy: Pick<Policy, "id" | "catchUpOnReconnect">,
  base: Omit<NewRun, "hostId" | "jobId" | "status" | "error" | "alertId">,
  host: { id: string; hostname: string },
  alertId: string | null,
  now: Date,
): Run {
  const run = newRunInOp(op, {
    ...base,
    hostId: host.id,
    jobId: null,
    status: policy.catchUpOnReconnect ? "pending" : "skipped",
    error: { reason: "ENGINE_OFFLINE", message: `Agent on ${host.hostname} is offline` },
    alertId,
  }, now);
  if (policy.catchUpOnReconnect) op.set(deferredKey(host.id, run.id), policy.id);
  return run;
}

/** The open offline alert of an engine or a host (what a skipped run links to), or null. */
export async function offlineAlertId(
  kv: Deno.Kv,
  subject: "engine" | "host",
  id: string,
): Promise<string | null> {
  const reason = subject === "engine" ? "engine_offline" : "host_offline";
  return (await kv.get<string>(openAlertKey(subject, id, reason))).value;
}

/**
 * Fails the runs of jobs the lease sweep gave up on (LEASE_EXPIRED after the last attempt), so they
 * do not stay "running" forever and count as failed backups; a replicate job's replication fails the
 * same way. Idempotent.
 */
export async function failRunsOfExpiredJobs(kv: Deno.Kv, jobIds: string[], now: Date): Promise<number> {
  let failed = 0;
  let conflict: CommitConflictError | null = null;
  for (const id of jobIds) {
    const job = (await kv.get<Job>(jobKey(id))).value;
    if (!job || job.status !== "failed" || job.result) continue;
    const at = now.toISOString();
    const expired: Job = {
      ...job,
      result: {
        status: "failed",
        startedAt: job.createdAt,
        endedAt: at,
        bytesTransferred: 0,
        protectedBytes: 0,
        error: {
          reason: "LEASE_EXPIRED",
          message: "The engine stopped reporting and the job used all its attempts",
        },
        retryable: true,
        output: null,
        hookOutput: [],
      },
    };
    try {
      if (job.kind === "replicate") {
        await applyReplicationOutcome(kv, expired, now);
        continue;
      }
      const run = await applyJobResultToRun(kv, expired, now);
      if (run?.status === "failed") failed++;
    } catch (error) {
      // A run that lost every race is not dropped silently: the other runs are still failed, then the
      // first conflict is thrown to the sweep's caller.
      if (!(error instanceof CommitConflictError)) throw error;
      conflict ??= error;
    }
  }
  if (conflict) throw conflict;
  return failed;
}

/** True once a job can no longer change its run: it succeeded, failed or was cancelled. */
export function jobFinished(job: Pick<Job, "status">): boolean {
  return job.status === "succeeded" || job.status === "failed" || job.status === "cancelled";
}

/**
 * Brings a run left open up to its finished job: the process can stop between recording a job's result
 * and applying it (the result route), or between the lease sweep failing a job and failing its run.
 * Applies the recorded result (`applyJobOutcome`) or, for a job failed without one, the lease-expiry
 * failure (`failRunsOfExpiredJobs`). Idempotent: a run already ended is left as it is.
 */
export async function catchUpRunWithJob(kv: Deno.Kv, job: Job, now: Date): Promise<void> {
  if (job.result) return await applyJobOutcome(kv, job, now);
  if (job.status === "failed") await failRunsOfExpiredJobs(kv, [job.id], now);
}

/**
 * Reads the jobs of `runs` (open runs) and splits the runs: `open` still counts as pending or running
 * (no job yet — waiting for its agent — or a job not finished), `ended` holds the jobs of runs left open
 * after their job ended (the process stopped between the job's end and the run's update), for
 * `catchUpRunWithJob`. A run whose job is gone counts as neither.
 */
export async function splitOpenRuns(kv: Deno.Kv, runs: Run[]): Promise<{ open: Run[]; ended: Job[] }> {
  const withJobs = runs.filter((r) => r.jobId);
  const jobs = new Map(
    (await getManyValues<Job>(kv, withJobs.map((r) => jobKey(r.jobId!)))).map((j) => [j.id, j]),
  );
  const open: Run[] = [];
  const ended: Job[] = [];
  for (const run of runs) {
    const job = run.jobId ? jobs.get(run.jobId) : undefined;
    if (!run.jobId || (job && !jobFinished(job))) open.push(run);
    else if (job) ended.push(job);
  }
  return { open, ended };
}

/** `runs_open` entries the sweep reads per batch (each may take a check in one write: KV allows 100). */
const OPEN_RUNS_SWEEP_BATCH = 100;

/**
 * The minute sweep of open runs: walks every `runs_open` entry, brings each run whose job already ended
 * up to its job (`catchUpRunWithJob`, idempotent) so it stops blocking run now and retries, and drops
 * entries whose run ended or is gone (a missed removal). Returns how many runs caught up and entries
 * were dropped.
 */
export async function sweepOpenRuns(kv: Deno.Kv, now: Date): Promise<{ caughtUp: number; dropped: number }> {
  const result = { caughtUp: 0, dropped: 0 };
  let batch: Deno.KvEntry<string>[] = [];
  const sweep = async () => {
    const runs = await kv.getMany<Run[]>(batch.map((e) => runKey(e.value)));
    const open: Run[] = [];
    const stale = kv.atomic();
    batch.forEach((entry, i) => {
      const run = runs[i].value;
      if (run && isOpenRun(run)) open.push(run);
      else {
        stale.check(entry).delete(entry.key);
        result.dropped++;
      }
    });
    if (open.length < batch.length && !(await stale.commit()).ok) {
      result.dropped -= batch.length - open.length; // changed meanwhile: the next sweep looks again
    }
    for (const job of (await splitOpenRuns(kv, open)).ended) {
      await catchUpRunWithJob(kv, job, now);
      result.caughtUp++;
    }
    batch = [];
  };
  for await (const e of kv.list<string>({ prefix: runsOpenPrefix() }, { batchSize: 500 })) {
    batch.push(e);
    if (batch.length === OPEN_RUNS_SWEEP_BATCH) await sweep();
  }
  if (batch.length) await sweep();
  return result;
}
