/**
 * Backup runs and the scheduler (issue 5, core loop): the minute tick evaluates each enabled,
 * unpaused policy's full / incremental / synthetic-full schedules and dispatches — backup jobs to the
 * agent of every active assignment, synthetic fulls to the BES — recording one run per job. A job's
 * result updates its run, and a backup result creates its restore point. The tick is idempotent:
 * each (policy, schedule, minute) is claimed with an atomic check, so a second tick — in this
 * process or another instance — dispatches nothing twice.
 */
import { openAlertKey } from "./keys/alerts.ts";
import { hostDecommissionsPrefix, hostsPrefix } from "./keys/hosts.ts";
import {
  assignmentKey,
  assignmentsByHostPrefix,
  assignmentsByPolicyPrefix,
  assignmentsPrefix,
  hooksByPolicyAllPrefix,
  policiesPrefix,
  retiredPoliciesByAccountKey,
  retiredPoliciesPrefix,
} from "./keys/policies.ts";
import {
  restorePointsByHostPrefix,
  restorePointsByPolicyKey,
  restorePointsByPolicyPrefix,
  restorePointsPrefix,
} from "./keys/restore.ts";
import {
  autoRetryCountKey,
  deferredPrefix,
  retryableKey,
  retryablePrefix,
  runsByPolicyPrefix,
  runsPrefix,
  scheduleSlotKey,
} from "./keys/runs.ts";
import { appendAudit } from "./audit.ts";
import { compileCron } from "./cron_rules.ts";
import { openIdCursor } from "./cursor.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { type Engine, engineKey } from "./engines.ts";
import { getManyValues, kvValueBytes } from "./kv.ts";
import { CommitConflictError, withRetry } from "./retry.ts";
import { type HookPlan, hookPlan } from "./hooks.ts";
import { consoleBusy, giveWayToConsole } from "./foreground.ts";
import { idAt, newId } from "./ids.ts";
import { runByJobKey, runKey, runsOpenKey, runsOpenPrefix } from "./run_keys.ts";
import { restorePointKey, restorePointsByHostKey } from "./restore_point_keys.ts";
import {
  addQueuedJob,
  EnqueueInput,
  type HookOutput,
  type Job,
  jobKey,
  queueJobInOp,
  type ResultStats,
} from "./job_queue.ts";
import { effectiveExcludes, type Policy, policyKey, requirePolicy } from "./policies.ts";
import { type Host, hostKey } from "./hosts.ts";
import { type HoldGuard, holdGuard } from "./holds.ts";
import type { Assignment } from "./assignments.ts";
import {
  planRetention,
  previewRetention,
  type RetentionCounts,
  type RetentionPoint,
  type RetentionPreview,
} from "./retention.ts";
import { type Actor, authorize, inScope, systemActor } from "./rbac.ts";
import {
  countRunOutcome,
  type LatestOutcome,
  latestOutcomeKey,
  orgPart,
  verifyFailedKey,
} from "./dashboard.ts";
import { afterBackup, readProtectedFor, writeProtected } from "./protected.ts";
import { assessBackupInOp, type PointAnomalyMark, pruneGuard, withPruneFreezes } from "./anomalies.ts";
import { raiseAlert, readOpenAlert, resolveAlert } from "./alerts.ts";
import type { StorageTarget } from "./storage.ts";
import { targetKey } from "./storage_keys.ts";
import { applyRestoreJobOutcome } from "./restore.ts";
import { applyFileHistoryOutcome } from "./file_history.ts";
import { applyDrillJobOutcome } from "./drills.ts";
import { applyReplicationOutcome, queueReplicationsInOp } from "./replicas.ts";
import {
  hostBackupPayload,
  hostsNeedingFull,
  pointsByTargetKey,
  type Repository,
  repositoryHostKey,
  repositoryOf,
  repositoryOfPayload,
} from "./repositories.ts";
import { deferredKey, retryGuardKey, runsByPolicyKey } from "./keys/runs.ts";
export { deferredKey, retryGuardKey, runsByPolicyKey };

/** Job kinds whose outcome belongs to restore (browse and search states, restore requests). */
const RESTORE_JOB_KINDS: readonly string[] = ["browse", "search", "restore_files", "restore_image", "bmr"];

export type RunKind = "full" | "incremental" | "synthetic_full";
export type RunStatus = "pending" | "running" | "success" | "warning" | "failed" | "skipped";

/**
 * Machine-readable failure reasons of failed, warning and skipped runs (the jobs API and page filter on
 * them): ENGINE_OFFLINE (the agent or BES was offline at dispatch), TARGET_UNREACHABLE, TARGET_FULL,
 * HOOK_FAILED, AUTH, PARTIAL_FILES (warning: some files could not be read), LEASE_EXPIRED (the engine
 * stopped reporting and attempts ran out), CANCELLED, NO_BACKUP (skipped: a synthetic full of a host with
 * no backup yet), and whatever reason an engine reports otherwise.
 */
export const FAILURE_REASONS = [
  "ENGINE_OFFLINE",
  "TARGET_UNREACHABLE",
  "TARGET_FULL",
  "HOOK_FAILED",
  "AUTH",
  "PARTIAL_FILES",
  "LEASE_EXPIRED",
  "CANCELLED",
  "PAYLOAD_TOO_LARGE",
  "NO_BACKUP",
] as const;

export interface Run {
  id: string;
  policyId: string;
  accountId: string;
  orgId: string | null;
  hostId: string | null;
  jobId: string | null;
  kind: RunKind;
  trigger: "schedule" | "manual" | "retry" | "pre_patch" | "catch_up";
  status: RunStatus;
  scheduledFor: string;
  startedAt: string | null;
  endedAt: string | null;
  bytesTransferred: number;
  protectedBytes: number;
  restorePointId: string | null;
  error: { reason: string; message: string } | null;
  /** The first non-empty line of the error message (what the runs table shows). */
  errorLine?: string | null;
  /** What each hook printed, as the agent reported it. */
  hookOutput?: HookOutput[];
  /** What the engine measured (files, bytes read/new/stored, duration, changes); absent before it reported. */
  stats?: ResultStats | null;
  /** Per-file errors the engine met in all, and how many of them are kept (`runErrorsPage` reads them). */
  errorCount?: number;
  errorsKept?: number;
  retryable: boolean;
  /** The engine's offline alert a skipped run belongs to (one alert, not N failures). */
  alertId: string | null;
  createdAt: string;
  updatedAt: string;
}

export interface RestorePoint {
  id: string;
  /** The engine's own id of the point; `parentId` refers to the parent by this id. */
  engineRestorePointId?: string;
  engineId: string;
  policyId: string;
  hostId: string | null;
  runId: string;
  chainId: string;
  type: RunKind;
  parentId: string | null;
  sizeBytes: number;
  fileCount: number;
  completedAt: string;
  status: "complete" | "running" | "failed" | "expired";
  verification: "passed" | "failed" | "partial" | "pending";
  /**
   * Set when the point's host was decommissioned under a policy with Archive On Host Deactivation on
   * (archive.ts): retention keeps it until an operator expires it.
   */
  archivedAt?: string | null;
  /**
   * The repository the point was written to (repositories.ts): storage target, path, generation. Points
   * older than generations get it from the start-up data fix (`indexRestorePointsByTarget`).
   */
  repository?: Repository;
  /** What the engine measured writing the point (as its run's `stats`). */
  stats?: ResultStats | null;
  /**
   * The anomaly guard's mark (anomalies.ts): "suspect" on a flagged backup's point, "last_clean" on the host's
   * newest point judged normal before it.
   */
  anomaly?: PointAnomalyMark | null;
}

export { restorePointKey, restorePointsByHostKey, runByJobKey, runKey, runsOpenKey, runsOpenPrefix };
/** Set once every restore point has its `restore_points_by_host` entry (points older than the index had none). */
const POINTS_BY_HOST_FIX_KEY = ["data_fixes", "restore_points_by_host_v1"] as const;
/** Set once every open run has its `runs_open` entry (runs older than the index had none). */
const OPEN_RUNS_INDEX_FIX_KEY = ["data_fixes", "runs_open_v1"] as const;

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
): Promise<{ indexed: number; skipped: boolean }> {
  if (!options.force && (await kv.get(OPEN_RUNS_INDEX_FIX_KEY)).value) return { indexed: 0, skipped: true };
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
  await kv.set(OPEN_RUNS_INDEX_FIX_KEY, { at: now.toISOString(), indexed });
  return { indexed, skipped: false };
}

/** True while a run has not ended. */
export function isOpenRun(run: Pick<Run, "status">): boolean {
  return run.status === "pending" || run.status === "running";
}
function slotKey(policyId: string, kind: RunKind, minute: string) {
  return scheduleSlotKey(policyId, kind, minute);
}

/** Whether a 5-field cron fires within the minute starting at `minuteStart` (in `timeZone`). */
export function firesInMinute(expression: string, minuteStart: Date, timeZone: string): boolean {
  // Policies share few distinct (expression, time zone) pairs: a tick evaluates each once per minute.
  const minute = minuteStart.getTime();
  if (firesCache.minute !== minute) firesCache.minute = minute, firesCache.results.clear();
  const key = `${timeZone}\u0000${expression}`;
  const cached = firesCache.results.get(key);
  if (cached !== undefined) return cached;
  const r = compileCron(expression, timeZone);
  const next = r.ok ? r.cron.nextRun(new Date(minute - 1)) : null;
  const fires = next !== null && next.getTime() < minute + 60_000;
  if (firesCache.results.size < 50_000) firesCache.results.set(key, fires);
  return fires;
}
const firesCache = { minute: NaN, results: new Map<string, boolean>() };

/** The schedules of a policy due in a minute, full winning over incremental in the same minute. */
export function dueKinds(
  policy: Pick<Policy, "fullSchedule" | "incrementalSchedule" | "syntheticFullSchedule" | "timeZone">,
  minuteStart: Date,
): RunKind[] {
  const tz = policy.timeZone ?? "UTC";
  const kinds: RunKind[] = [];
  const full = firesInMinute(policy.fullSchedule, minuteStart, tz);
  if (full) kinds.push("full");
  if (!full && policy.incrementalSchedule && firesInMinute(policy.incrementalSchedule, minuteStart, tz)) {
    kinds.push("incremental");
  }
  if (policy.syntheticFullSchedule && firesInMinute(policy.syntheticFullSchedule, minuteStart, tz)) {
    kinds.push("synthetic_full");
  }
  return kinds;
}

/**
 * The payload of a synthetic full job, less the `hostId` each host's job adds (the namespace the BES makes
 * it of): the policy, its target and its current repository.
 */
export function syntheticFullPayload(
  policy: Pick<Policy, "id" | "targetId" | "generation">,
  target: Pick<StorageTarget, "id">,
): Record<string, unknown> {
  return { policyId: policy.id, targetId: target.id, repository: repositoryOf(policy) };
}

/**
 * Everything an agent needs to run a backup (the guide's `build_backup_payload`): the BES endpoint,
 * the target, type, data protection, excludes with the template expanded, hooks in execution order,
 * throttling and verification settings. Used by schedules, manual runs and retries alike.
 */
export async function buildBackupPayload(
  kv: Deno.Kv,
  policy: Policy,
  engine: Pick<Engine, "id" | "hostname" | "ipAddress" | "port">,
  target: Pick<StorageTarget, "id" | "type" | "config">,
  kind: RunKind,
): Promise<Record<string, unknown>> {
  return backupPayload(policy, engine, target, kind, await hookPlan(kv, policy.id)).payload;
}

/** `buildBackupPayload` with the policy's hook plan already read (the tick reads it once per policy). */
function backupPayload(
  policy: Policy,
  engine: Pick<Engine, "id" | "hostname" | "ipAddress" | "port">,
  target: Pick<StorageTarget, "id" | "type" | "config">,
  kind: RunKind,
  hooks: HookPlan,
): { payload: Record<string, unknown>; bytes: number } {
  const payload = {
    policyId: policy.id,
    backupType: policy.backupType,
    runKind: kind,
    bes: {
      id: engine.id,
      endpoint: `https://${engine.hostname}:${engine.port}`,
      ipAddress: engine.ipAddress,
    },
    target: { id: target.id, type: target.type, config: target.config },
    // Where the backup writes (ENGINE.md §3): `cadres/<policyId>/g<N>` on the target.
    repository: repositoryOf(policy),
    compression: policy.compression,
    encryption: policy.encryption,
    deduplication: policy.deduplication,
    // Empty: the agent's default roots (it reported them when it enrolled).
    includePaths: policy.includePaths ?? [],
    excludePaths: policy.excludePaths,
    excludePatterns: effectiveExcludes(policy),
    hooks,
    throttle: {
      maxTransferMbps: policy.maxTransferMbps,
      schedule: policy.throttleSchedule,
      ioPriority: policy.ioPriority,
      /** The time zone the throttle schedule is read in (the policy's). */
      timeZone: policy.timeZone ?? "UTC",
    },
    vssEnabled: policy.vssEnabled,
    verify: { afterBackup: policy.verifyAfterBackup, sampleCount: policy.verifySampleCount },
  };
  const bytes = kvValueBytes(payload);
  if (bytes > MAX_PAYLOAD_BYTES) {
    const kb = (n: number) => `${Math.ceil(n / 1000)} KB`;
    throw new ValidationError(
      `Policy ${policy.name} needs ${kb(bytes)} to send with a backup job, more than the ${
        kb(MAX_PAYLOAD_BYTES)
      } a job can carry: shorten its hook scripts or exclude lists`,
      { hooks: `The hooks and excludes come to ${kb(bytes)}; at most ${kb(MAX_PAYLOAD_BYTES)}` },
    );
  }
  return { payload, bytes };
}

/**
 * The most a backup payload may take in KV (`kvValueBytes`), which keeps the job — the payload plus
 * about 1.5 KB of its own fields — under KV's 64 KiB per value.
 */
export const MAX_PAYLOAD_BYTES = 60_000;

/** The first non-empty line of a message, at most 300 characters; null without one. */
export function firstLine(message: string | null | undefined): string | null {
  const line = (message ?? "").split(/\r?\n/).map((l) => l.trim()).find((l) => l.length > 0);
  return line ? line.slice(0, 300) : null;
}

/** What a caller gives `newRunInOp`; the rest of the run starts empty. */
export type NewRun = Omit<
  Run,
  | "id"
  | "createdAt"
  | "updatedAt"
  | "bytesTransferred"
  | "protectedBytes"
  | "restorePointId"
  | "startedAt"
  | "endedAt"
  | "retryable"
  | "errorLine"
  | "hookOutput"
>;

/**
 * Adds a new run (and its indexes) to `op`; the caller commits it with the job it follows. `finish`
 * shapes the run before it is written (a run that ends as it is created).
 */
export function newRunInOp(
  op: Deno.AtomicOperation,
  base: NewRun,
  now: Date,
  finish: (run: Run) => Run = (run) => run,
): Run {
  const at = now.toISOString();
  const run = finish({
    ...base,
    id: newId(now),
    startedAt: null,
    endedAt: null,
    bytesTransferred: 0,
    protectedBytes: 0,
    restorePointId: null,
    retryable: base.status === "skipped",
    errorLine: firstLine(base.error?.message),
    createdAt: at,
    updatedAt: at,
  });
  indexRunInOp(op, run);
  return run;
}

/** Adds to `op`: writes a new run with its indexes (by policy, by job when it has one, open runs while open). */
export function indexRunInOp(op: Deno.AtomicOperation, run: Run): void {
  op.set(runKey(run.id), run).set(runsByPolicyKey(run.policyId, run.id), run.id);
  if (run.jobId) op.set(runByJobKey(run.jobId), run.id);
  if (isOpenRun(run)) op.set(runsOpenKey(run.policyId, run.hostId, run.id), run.id);
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

/** `run` failed at `now` before any job ran it (its payload could not be built): final, not retryable. */
function failedBeforeDispatch(run: Run, message: string, now: Date): Run {
  const at = now.toISOString();
  return {
    ...run,
    status: "failed",
    error: { reason: "PAYLOAD_TOO_LARGE", message },
    errorLine: firstLine(message),
    startedAt: at,
    endedAt: at,
    retryable: false,
    updatedAt: at,
  };
}

/**
 * A new run that failed before any job could be queued: written finished, with its outcome counted
 * like any failure (dashboard, failed queue, the object's backup-failed alert).
 */
async function recordFailedBeforeDispatch(
  kv: Deno.Kv,
  base: Omit<NewRun, "status" | "error" | "jobId" | "alertId">,
  message: string,
  now: Date,
): Promise<void> {
  const op = kv.atomic();
  const run = newRunInOp(
    op,
    { ...base, status: "pending", error: null, jobId: null, alertId: null },
    now,
    (created) => failedBeforeDispatch(created, message, now),
  );
  await recordOutcomeInOp(kv, op, "backup", run, run, now);
  if (!(await op.commit()).ok) {
    throw new ConflictError("Could not record the failed run; the next tick retries");
  }
}

async function newRun(kv: Deno.Kv, base: NewRun, now: Date): Promise<Run> {
  const op = kv.atomic();
  const run = newRunInOp(op, base, now);
  await op.commit();
  return run;
}

/**
 * The minute tick. For each enabled, unpaused policy, claims each due (schedule, minute) once and
 * dispatches. An offline agent or BES gets a `skipped` run with reason ENGINE_OFFLINE linked to the
 * engine's offline alert, instead of a job that would only fail.
 *
 * So that a minute in which thousands of policies fire at once stays fast: the policies are scanned
 * (pure cron checks), then the due ones are taken SLOT_BATCH at a time — their slots claimed in one
 * write, the policies prepared DISPATCH_PARALLEL at a time (their reads overlap) — while their jobs and
 * runs stream into shared batch writes.
 */
export async function runSchedulerTick(
  kv: Deno.Kv,
  now: Date,
  options: { bulkReadMinPolicies?: number } = {},
): Promise<{ dispatched: number; skipped: number }> {
  const { minutes, cursor } = await tickMinutes(kv, now);
  const caughtUp = await catchUpDeferred(kv, now);
  const active: Policy[] = [];
  let policies = 0;
  for await (const entry of kv.list<Policy>({ prefix: policiesPrefix() }, { batchSize: 500 })) {
    policies++;
    if (entry.value.enabled && !entry.value.pausedReason) active.push(entry.value);
  }
  const due: DueSlot[] = [];
  for (const minuteStart of minutes) {
    for (const policy of active) {
      for (const kind of dueKinds(policy, minuteStart)) due.push({ policy, kind, minuteStart });
    }
  }
  const writer = new DispatchWriter(kv);
  const context = new TickContext(kv);
  // A storm — many policies, and at least a quarter of all, due in one minute — reads the assignments
  // and hosts in a few large scans instead of a few small reads per policy.
  if (due.length >= (options.bulkReadMinPolicies ?? BULK_READ_MIN_POLICIES) && due.length * 4 >= policies) {
    await context.preload(new Set(due.map((d) => d.policy.id)));
  }
  let skipped = 0;
  // Slots are claimed a batch at a time, right before that batch is dispatched: a crash mid-tick loses
  // at most the batch in hand (and the writes in flight), not every slot claimed ahead.
  for (let i = 0; i < due.length; i += SLOT_BATCH) {
    const claimed = await claimSlots(kv, due.slice(i, i + SLOT_BATCH));
    let next = 0;
    await Promise.all(Array.from({ length: Math.min(DISPATCH_PARALLEL, claimed.length) }, async () => {
      while (next < claimed.length) {
        // A console request in flight goes first (bounded): the tick's work shares its thread.
        if (consoleBusy(kv)) await giveWayToConsole(kv, GIVE_WAY_MS);
        if (next >= claimed.length) break;
        const { policy, kind, minuteStart } = claimed[next++];
        skipped += await dispatchPolicy(kv, context, writer, policy, kind, minuteStart, now);
      }
    }));
  }
  const dispatched = await writer.close();
  // The cursor only moves forward (a late tick for an older minute leaves it; so does a racing tick that
  // moved it first: the check fails).
  const reached = minutes[minutes.length - 1];
  if (!cursor.value || Date.parse(cursor.value) < reached.getTime()) {
    await kv.atomic().check(cursor).set(SCHEDULER_CURSOR_KEY, reached.toISOString()).commit();
  }
  return { dispatched: caughtUp + dispatched, skipped };
}

/** A (policy, schedule, minute) that is due. */
interface DueSlot {
  policy: Policy;
  kind: RunKind;
  minuteStart: Date;
}

/** The last minute a tick evaluated (ISO time of its start). */
const SCHEDULER_CURSOR_KEY = ["scheduler_cursor"] as const;
/** How far back a tick looks for minutes no tick evaluated (a skipped cron run, a short outage). */
export const TICK_CATCH_UP_MINUTES = 10;

/**
 * The minutes this tick evaluates, oldest first: the current one, and before it every minute since the
 * last tick's, up to TICK_CATCH_UP_MINUTES back. Deno.cron skips a run while the previous one of the
 * same cron is still going, and a restart loses the minutes it was down: those schedules still run,
 * once (each slot is claimed), scheduled for their own minute. Older ones are not replayed: the RPO
 * of the objects shows the gap.
 */
async function tickMinutes(
  kv: Deno.Kv,
  now: Date,
): Promise<{ minutes: Date[]; cursor: Deno.KvEntryMaybe<string> }> {
  const current = Math.floor(now.getTime() / 60_000) * 60_000;
  const cursor = await kv.get<string>(SCHEDULER_CURSOR_KEY);
  const lastMs = cursor.value ? Date.parse(cursor.value) : NaN;
  const from = Number.isFinite(lastMs) && lastMs < current
    ? Math.max(lastMs + 60_000, current - TICK_CATCH_UP_MINUTES * 60_000)
    : current;
  const minutes: Date[] = [];
  for (let t = from; t <= current; t += 60_000) minutes.push(new Date(t));
  return { minutes, cursor };
}

/**
 * Claims due (policy, schedule, minute) slots (at most SLOT_BATCH) in one write; returns the ones this
 * tick won. When the write fails, another tick claimed one of them, and they are claimed one by one.
 */
async function claimSlots(kv: Deno.Kv, due: DueSlot[]): Promise<DueSlot[]> {
  const claimOne = (op: Deno.AtomicOperation, d: DueSlot) => {
    const key = slotKey(d.policy.id, d.kind, d.minuteStart.toISOString().slice(0, 16));
    return op.check({ key, versionstamp: null }).set(key, true, { expireIn: 2 * 86_400_000 });
  };
  const op = kv.atomic();
  for (const d of due) claimOne(op, d);
  if ((await op.commit()).ok) return due;
  const won: DueSlot[] = [];
  for (const d of due) if ((await claimOne(kv.atomic(), d).commit()).ok) won.push(d);
  return won;
}

/** Reads shared by the policies of one tick: each engine, target and hook plan is read once. */
class TickContext {
  #cache = new Map<string, Promise<unknown>>();
  /** After `preload`: the policies that have hooks, and each due policy's active hosts. */
  #withHooks: Set<string> | null = null;
  #hosts: Map<string, TickHost[]> | null = null;
  constructor(private kv: Deno.Kv) {}

  /** Scans hook pointers, assignments and hosts once for all of `policyIds`. */
  async preload(policyIds: Set<string>) {
    let scanned = 0;
    // Every 1,000 entries a console request in flight goes first (bounded), as in the dispatch.
    const giveWay = async () => {
      if (++scanned % 1000 === 0 && consoleBusy(this.kv)) await giveWayToConsole(this.kv, GIVE_WAY_MS);
    };
    const withHooks = new Set<string>();
    for await (const e of this.kv.list({ prefix: hooksByPolicyAllPrefix() }, { batchSize: 1000 })) {
      await giveWay();
      withHooks.add(String(e.key[1]));
    }
    const hostIdsByPolicy = new Map<string, string[]>();
    const needed = new Set<string>();
    for await (const e of this.kv.list<Assignment>({ prefix: assignmentsPrefix() }, { batchSize: 1000 })) {
      await giveWay();
      const a = e.value;
      if (a.state !== "active" || !policyIds.has(a.policyId)) continue;
      const list = hostIdsByPolicy.get(a.policyId);
      if (list) list.push(a.hostId);
      else hostIdsByPolicy.set(a.policyId, [a.hostId]);
      needed.add(a.hostId);
    }
    const hosts = new Map<string, TickHost>();
    for await (const e of this.kv.list<TickHost>({ prefix: hostsPrefix() }, { batchSize: 1000 })) {
      await giveWay();
      if (needed.has(e.value.id)) hosts.set(e.value.id, e.value);
    }
    this.#withHooks = withHooks;
    this.#hosts = new Map(
      [...hostIdsByPolicy].map(([policyId, ids]) => [policyId, ids.flatMap((id) => hosts.get(id) ?? [])]),
    );
  }

  #once<T>(key: string, read: () => Promise<T>): Promise<T> {
    let p = this.#cache.get(key) as Promise<T> | undefined;
    if (!p) this.#cache.set(key, p = read());
    return p;
  }
  engine(id: string) {
    return this.#once(`e:${id}`, async () => (await this.kv.get<Engine>(engineKey(id))).value);
  }
  target(id: string) {
    return this.#once(
      `t:${id}`,
      async () => (await this.kv.get<StorageTarget>(targetKey(id))).value,
    );
  }
  hooks(policyId: string) {
    if (this.#withHooks && !this.#withHooks.has(policyId)) return Promise.resolve([]);
    return this.#once(`h:${policyId}`, () => hookPlan(this.kv, policyId));
  }
  /** The hosts of a policy's active assignments. */
  async hosts(policyId: string): Promise<TickHost[]> {
    if (this.#hosts) return this.#hosts.get(policyId) ?? [];
    const assignmentIds: Deno.KvKey[] = [];
    for await (const a of this.kv.list<string>({ prefix: assignmentsByPolicyPrefix(policyId) })) {
      assignmentIds.push(assignmentKey(a.value));
    }
    const assignments = (await getManyValues<Assignment>(this.kv, assignmentIds)).filter((a) =>
      a.state === "active"
    );
    return await getManyValues(this.kv, assignments.map((a) => hostKey(a.hostId)));
  }
}

type TickHost = { id: string; status: string; hostname: string };

/**
 * Streams new jobs and runs into atomic writes of DISPATCH_BATCH jobs, DISPATCH_IN_FLIGHT at once.
 * Every key is fresh (no checks), so batches cannot conflict and their order does not matter.
 */
class DispatchWriter {
  #op: Deno.AtomicOperation;
  #size = 0;
  #bytes = 0;
  #written = 0;
  #inFlight: Promise<void>[] = [];
  constructor(private kv: Deno.Kv) {
    this.#op = kv.atomic();
  }

  /** The write to add one job (and its run) to; call `added` right after, before any await. */
  get op() {
    return this.#op;
  }

  async added(bytes: number) {
    this.#bytes += bytes;
    if (++this.#size >= DISPATCH_BATCH || this.#bytes > DISPATCH_BATCH_BYTES) await this.#flush();
  }

  async #flush() {
    if (this.#size) {
      const [op, size] = [this.#op, this.#size];
      const earlier = this.#inFlight.slice();
      const pending = (async () => {
        // While the console is in use, one write at a time, each after its requests (bounded): the
        // pages' reads would otherwise queue behind several large writes (domain/foreground.ts).
        if (consoleBusy(this.kv)) {
          await Promise.allSettled(earlier);
          await giveWayToConsole(this.kv, GIVE_WAY_MS);
        }
        // A failed commit here is a storage error, not a conflict: it propagates.
        if (!(await op.commit()).ok) throw new Error("Could not write a batch of scheduled jobs");
        this.#written += size;
      })();
      pending.catch(() => {}); // awaited in close(); this only keeps an early failure from being "unhandled"
      this.#inFlight.push(pending);
    }
    this.#op = this.kv.atomic();
    this.#size = 0;
    this.#bytes = 0;
    const limit = consoleBusy(this.kv) ? 1 : DISPATCH_IN_FLIGHT;
    while (this.#inFlight.length >= limit) await this.#inFlight.shift();
  }

  /** Writes what is left; returns the number of jobs written. */
  async close(): Promise<number> {
    await this.#flush();
    await Promise.all(this.#inFlight);
    return this.#written;
  }
}

/** Dispatches one claimed (policy, schedule); returns the number of runs skipped or deferred. */
async function dispatchPolicy(
  kv: Deno.Kv,
  context: TickContext,
  writer: DispatchWriter,
  policy: Policy,
  kind: RunKind,
  minuteStart: Date,
  now: Date,
): Promise<number> {
  const [engine, target] = await Promise.all([context.engine(policy.besId), context.target(policy.targetId)]);
  if (!engine || !target) return 0;
  const base = {
    policyId: policy.id,
    accountId: policy.accountId,
    orgId: policy.orgId,
    kind,
    trigger: "schedule" as const,
    scheduledFor: minuteStart.toISOString(),
  };
  if (kind === "synthetic_full") {
    // One job per active host, on the BES: a repository's data is per host namespace (ENGINE.md §3), so
    // the BES makes each host's synthetic full of that host's chain with that namespace's keys. The
    // agent plays no part: an offline host still gets its job; an offline BES skips every host's run.
    const hosts = (await context.hosts(policy.id)).filter((h) => h.status !== "decommissioned");
    if (engine.status === "offline") {
      const alertId = await offlineAlertId(kv, "engine", engine.id);
      for (const host of hosts) {
        await newRun(kv, {
          ...base,
          hostId: host.id,
          jobId: null,
          status: "skipped",
          error: { reason: "ENGINE_OFFLINE", message: `BES ${engine.name} is offline` },
          alertId,
        }, now);
      }
      return hosts.length;
    }
    const template = EnqueueInput.parse({
      kind: "synthetic_full",
      principal: `bes:${engine.id}`,
      accountId: policy.accountId,
      orgId: policy.orgId,
      payload: syntheticFullPayload(policy, target),
    });
    for (const host of hosts) {
      const job = addQueuedJob(
        writer.op,
        { ...template, payload: { ...template.payload, hostId: host.id } },
        now,
        { fresh: true },
      );
      newRunInOp(writer.op, {
        ...base,
        hostId: host.id,
        jobId: job.id,
        status: "pending",
        error: null,
        alertId: null,
      }, now);
      await writer.added(2048);
    }
    return 0;
  }
  const [hooks, hosts] = await Promise.all([context.hooks(policy.id), context.hosts(policy.id)]);
  let payload: Record<string, unknown>;
  let bytes: number;
  try {
    ({ payload, bytes } = backupPayload(policy, engine, target, kind, hooks));
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    // One policy that cannot be sent must not hold up the others: each of its hosts gets a failed run
    // that says why (and the object's backup-failed alert), and the tick goes on.
    for (const host of hosts) {
      await recordFailedBeforeDispatch(kv, { ...base, hostId: host.id }, error.message, now);
    }
    return hosts.length;
  }
  // A job and its run are about the payload's size plus 2 KB: batches stay under KV's 800 KB per write.
  const batchBytes = bytes + 2048;
  // Validated once per policy; each host's job differs only in its principal and `hostId`.
  const template = EnqueueInput.parse({
    kind: "backup",
    principal: `agent:${hosts[0]?.id ?? engine.id}`,
    accountId: policy.accountId,
    orgId: policy.orgId,
    payload,
  });
  // Hosts without a restore point in the policy's current generation back up in full (one read per
  // ten hosts, and only for incrementals of a policy past its first generation).
  const needsFull = await hostsNeedingFull(kv, policy, kind === "incremental" ? hosts.map((h) => h.id) : []);
  let skipped = 0;
  for (const host of hosts) {
    // Its assignments are archived with it; this guards the moment in between.
    if (host.status === "decommissioned") continue;
    if (host.status === "offline") {
      const op = kv.atomic();
      offlineHostRunInOp(op, policy, base, host, await offlineAlertId(kv, "host", host.id), now);
      await op.commit();
      skipped++;
      continue;
    }
    const sent = hostBackupPayload(template.payload, kind, host.id, needsFull);
    const job = addQueuedJob(
      writer.op,
      { ...template, principal: `agent:${host.id}`, payload: sent.payload },
      now,
      { fresh: true },
    );
    newRunInOp(writer.op, {
      ...base,
      kind: sent.kind,
      hostId: host.id,
      jobId: job.id,
      status: "pending",
      error: null,
      alertId: null,
    }, now);
    await writer.added(batchBytes);
  }
  return skipped;
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
 * Carries a job's recorded result into its run, and for a backup creates the restore point the engine
 * reported (output.restorePoint). Idempotent: a run already finished is left as it is.
 */
export async function applyJobResultToRun(kv: Deno.Kv, job: Job, now: Date): Promise<Run | null> {
  const runId = (await kv.get<string>(runByJobKey(job.id))).value;
  if (!runId || !job.result) return null;
  const r = job.result;
  // Commit retry (retry.ts): five lost races throw CommitConflictError (the result route answers 503
  // `busy`; the engine re-posts the result), never return as if the run had been finished.
  const attempt = async (): Promise<{ value: Run | null } | null> => {
    const entry = await kv.get<Run>(runKey(runId));
    const run = entry.value;
    if (!run || ["success", "warning", "failed", "skipped"].includes(run.status)) return { value: run };
    const next: Run = {
      ...run,
      status: skippedByEngine(job) ? "skipped" : r.status,
      startedAt: r.startedAt,
      endedAt: r.endedAt,
      bytesTransferred: r.bytesTransferred,
      protectedBytes: r.protectedBytes,
      error: r.error,
      errorLine: firstLine(r.error?.message),
      hookOutput: r.hookOutput ?? [],
      stats: r.stats ?? null,
      errorCount: r.lists?.errors?.total ?? 0,
      errorsKept: r.lists?.errors?.kept ?? 0,
      // A retry run is never retryable, whatever its engine says: retries must not cascade.
      retryable: run.trigger !== "retry" && r.status !== "success" && r.retryable,
      updatedAt: now.toISOString(),
    };
    const op = kv.atomic().check(entry);
    if (!isOpenRun(next)) op.delete(runsOpenKey(run.policyId, run.hostId, run.id));
    indexRetryableInOp(op, next, now);
    const rp = r.output?.restorePoint as Partial<RestorePoint> & { id?: string } | undefined;
    if (rp?.id && r.status !== "failed" && (job.kind === "backup" || job.kind === "synthetic_full")) {
      const completedAt = String(rp.completedAt ?? r.endedAt);
      const point: RestorePoint = {
        id: restorePointId(completedAt, now),
        engineId: job.principal.startsWith("bes:")
          ? job.principal.slice(4)
          : String((job.payload.bes as { id?: string })?.id ?? ""),
        policyId: run.policyId,
        hostId: run.hostId,
        runId: run.id,
        engineRestorePointId: String(rp.id),
        chainId: String(rp.chainId ?? rp.id),
        type: (rp.type as RunKind) ?? run.kind,
        parentId: rp.parentId ?? null,
        sizeBytes: Number(rp.sizeBytes ?? 0),
        fileCount: Number(rp.fileCount ?? 0),
        completedAt,
        status: "complete",
        verification: "pending",
        stats: r.stats ?? null,
      };
      // Host and policy read once; the host's entry is checked, so a decommission committing meanwhile
      // makes this write retry (and archive the point) instead of leaving it to retention.
      const { hostEntry, policy } = await readPointContext(kv, run);
      if (hostEntry) op.check(hostEntry);
      if (archivesNewPoints(hostEntry?.value ?? null, policy)) point.archivedAt = now.toISOString();
      // The repository the job was sent to (the policy may have moved on since).
      point.repository = jobRepository(job, run.policyId, policy);
      // The anomaly guard judges the backup's figures in this same write (it may mark the point suspect).
      await assessBackupInOp(kv, op, {
        run: next,
        job,
        point,
        policyName: policy?.name ?? run.policyId,
        hostName: hostEntry?.value?.hostname ?? run.hostId ?? "BES",
      }, now);
      next.restorePointId = point.id;
      op.set(restorePointKey(point.id), point)
        .set(restorePointsByPolicyKey(run.policyId, point.id), point.id)
        .set(restorePointsByHostKey(run.policyId, run.hostId, point.id), point.id);
      if (point.repository) {
        op.set(pointsByTargetKey(point.repository.target, point.id), point.id)
          .set(repositoryHostKey(run.policyId, point.repository.generation, run.hostId), point.id);
      }
      await queueFollowUps(kv, op, run, policy, point, now);
    }
    // After the restore point: the protected object keeps it as the dashboard's deep link into Restore.
    await recordOutcomeInOp(kv, op, job.kind, run, next, now);
    return (await op.set(runKey(run.id), next).commit()).ok ? { value: next } : null;
  };
  return await withRetry(attempt, 5, `The result of run ${runId} conflicted; post it again`);
}

/**
 * Whether the engine skipped the job instead of running it: a synthetic full of a host that has no backup
 * yet (its result's `output.skipped`, reason NO_BACKUP). Its run is `skipped`, not failed or warning.
 */
function skippedByEngine(job: Job): boolean {
  const r = job.result;
  return job.kind === "synthetic_full" && r !== null && r.status !== "failed" &&
    typeof r.output?.skipped === "object" && r.output.skipped !== null && !r.output.restorePoint;
}

/**
 * A new restore point's id, dated by its completion (never later than `now`, `now` when unreadable): the
 * point indexes list by id, so Restore's "newest first" and a chain's order follow completion even when
 * an engine reports a backup late or two backups finish out of order.
 */
export function restorePointId(completedAt: string, now: Date): string {
  const completed = Date.parse(completedAt);
  return idAt(new Date(Number.isFinite(completed) ? Math.min(completed, now.getTime()) : now.getTime()));
}

/**
 * The repository a backup job wrote to: the one its payload names, else (jobs queued before generations)
 * the target its payload names in generation 1, else the policy's current one.
 */
function jobRepository(job: Job, policyId: string, policy: Policy | null): Repository | undefined {
  const named = repositoryOfPayload(job.payload);
  if (named) return named;
  const target = (job.payload.target as { id?: unknown } | undefined)?.id ?? job.payload.targetId;
  if (typeof target === "string" && target) {
    return repositoryOf({ id: policyId, targetId: target, generation: 1 });
  }
  return policy ? repositoryOf(policy) : undefined;
}

/** The run's host entry (null for a BES run) and policy, read together where a run's restore point is written. */
async function readPointContext(
  kv: Deno.Kv,
  run: Run,
): Promise<{ hostEntry: Deno.KvEntryMaybe<Host> | null; policy: Policy | null }> {
  if (!run.hostId) return { hostEntry: null, policy: (await kv.get<Policy>(policyKey(run.policyId))).value };
  const [hostEntry, policy] = await kv.getMany<[Host, Policy]>([
    hostKey(run.hostId),
    policyKey(run.policyId),
  ]);
  return { hostEntry, policy: policy.value };
}

/**
 * Whether a point a run just produced is archived at once: its host was decommissioned while the run
 * was in flight, under a policy with Archive On Host Deactivation on (its other points were archived).
 */
function archivesNewPoints(host: Pick<Host, "status"> | null, policy: Policy | null): boolean {
  return host?.status === "decommissioned" && Boolean(policy?.archiveOnHostDeactivation);
}

/**
 * Adds to `op` what a finished backup changes besides its run: the dashboard's outcome counters and
 * failed-backups queue, and for an agent backup the protected object (last backup, RPO clock) and its
 * alerts — a failure raises (or repeats) the object's `backup_failed` alert, a success resolves it and
 * ends an RPO breach. The reads are checked by `op`, so a concurrent change makes the caller retry.
 */
async function recordOutcomeInOp(
  kv: Deno.Kv,
  op: Deno.AtomicOperation,
  kind: Job["kind"],
  run: Run,
  next: Run,
  now: Date,
): Promise<void> {
  if (kind !== "backup" && kind !== "synthetic_full") return;
  if (next.status !== "success" && next.status !== "warning" && next.status !== "failed") return;
  countRunOutcome(op, next, await kv.get<LatestOutcome>(latestOutcomeKey(run.policyId, run.hostId)), now);
  if (kind !== "backup" || !run.hostId) return;
  const current = await readProtectedFor(kv, run.hostId, run.policyId);
  const object = current.entry?.value;
  if (!current.entry || !object) return;
  const after = afterBackup(object, {
    status: next.status,
    // An engine clock running ahead must not push the RPO clock into the future.
    endedAt: next.endedAt && Date.parse(next.endedAt) < now.getTime() ? next.endedAt : now.toISOString(),
    restorePointId: next.restorePointId,
  }, now);
  if (!after) return;
  op.check(current.entry);
  writeProtected(op, object, after);
  const failedAlert = await readOpenAlert(kv, "protected_object", object.id, "backup_failed");
  if (next.status === "failed") {
    raiseAlert(op, failedAlert, {
      accountId: object.accountId,
      orgId: object.orgId,
      subjectType: "protected_object",
      subjectId: object.id,
      subjectName: object.name,
      reason: "backup_failed",
      severity: "warning",
      message: `Backup of ${object.name} failed: ${
        next.errorLine ?? next.error?.reason ?? "no reason given"
      }`,
    }, now);
    return;
  }
  resolveAlert(op, failedAlert, now);
  if (object.breached && !after.breached) {
    resolveAlert(op, await readOpenAlert(kv, "protected_object", object.id, "rpo_breach"), now);
  }
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

/** A policy's runs, newest first. */
export async function listRunsByPolicy(kv: Deno.Kv, policyId: string, limit = 50): Promise<Run[]> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: runsByPolicyPrefix(policyId) }, { reverse: true, limit })) {
    keys.push(runKey(e.value));
  }
  return await getManyValues<Run>(kv, keys);
}

/**
 * Retries a failed or warning run, exactly as the guide states: only the latest run of its policy and
 * host, only when it is retryable, never while a run of that policy and host is pending or running; the
 * retry run is not retryable itself. The retry job uses the same payload builder. Two retries racing
 * create exactly one run (invariant 5): each must create the run's guard key.
 * Retry glossary: the **run retry** (README › Architecture › "Retry: six meanings").
 */
export async function retryRun(
  kv: Deno.Kv,
  actor: Actor,
  runId: string,
  now: Date,
): Promise<Run> {
  const run = (await kv.get<Run>(runKey(runId))).value;
  if (!run || !inScope(actor, { accountId: run.accountId, orgId: run.orgId })) {
    throw new NotFoundError("Run not found");
  }
  authorize(actor, "backup.manage", { accountId: run.accountId, orgId: run.orgId });
  const siblings = (await listRunsByPolicy(kv, run.policyId, 200)).filter((r) => r.hostId === run.hostId);
  if (siblings[0]?.id !== run.id) {
    throw new ValidationError("Only the latest run can be retried", { run: "Not the latest run" });
  }
  if (run.status !== "failed" && run.status !== "warning") {
    throw new ValidationError("Only a failed or warning run can be retried", {
      run: `The run is ${run.status}`,
    });
  }
  if (!run.retryable) throw new ValidationError("This run is not retryable", { run: "Not retryable" });
  const host = run.hostId ? (await kv.get<Host>(hostKey(run.hostId))).value : null;
  if (host?.status === "decommissioned") {
    throw new ValidationError(`Host ${host.hostname} is decommissioned: assign it to a policy again first`, {
      run: "The host is decommissioned",
    });
  }
  const policy = (await kv.get<Policy>(policyKey(run.policyId))).value;
  if (!policy) throw new NotFoundError("The policy of this run is gone");
  const [engine, target] = await kv.getMany<[Engine, StorageTarget]>([
    engineKey(policy.besId),
    targetKey(policy.targetId),
  ]);
  if (!engine.value || !target.value) throw new ConflictError("The policy's BES or storage target is gone");
  const at = now.toISOString();
  const retry: Run = {
    ...run,
    id: newId(now),
    trigger: "retry",
    status: "pending",
    jobId: null,
    startedAt: null,
    endedAt: null,
    bytesTransferred: 0,
    protectedBytes: 0,
    restorePointId: null,
    error: null,
    retryable: false,
    alertId: null,
    scheduledFor: at,
    createdAt: at,
    updatedAt: at,
  };
  let kind = run.kind;
  let payload: Record<string, unknown>;
  if (run.kind === "synthetic_full") {
    if (!run.hostId) {
      throw new ValidationError(
        "This synthetic full names no host (it predates one synthetic full per host, which the BES needs): " +
          "run a synthetic full of the policy now instead",
        { run: "The run names no host" },
      );
    }
    payload = { ...syntheticFullPayload(policy, target.value), hostId: run.hostId };
  } else {
    const built = await buildBackupPayload(kv, policy, engine.value, target.value, run.kind);
    const needsFull = await hostsNeedingFull(kv, policy, run.hostId ? [run.hostId] : []);
    ({ payload, kind } = hostBackupPayload(built, run.kind, run.hostId ?? "", needsFull));
  }
  retry.kind = kind;
  const principal = run.kind === "synthetic_full" ? `bes:${engine.value.id}` : `agent:${run.hostId}`;
  // The guard, the run, its job and the audit entry commit together: two racing retries create one.
  const op = kv.atomic().check({ key: retryGuardKey(run.id), versionstamp: null });
  const job = queueJobInOp(op, {
    kind: run.kind === "synthetic_full" ? "synthetic_full" : "backup",
    principal,
    accountId: run.accountId,
    orgId: run.orgId,
    payload,
    priority: "normal",
  }, now);
  retry.jobId = job.id;
  op.set(retryGuardKey(run.id), retry.id);
  indexRunInOp(op, retry);
  appendAudit(op, actor, {
    accountId: run.accountId,
    orgId: run.orgId,
    action: "run.retry",
    objectType: "run",
    objectId: retry.id,
    summary: `Retried the ${run.kind} run ${run.id} of policy ${policy.name}`,
  }, now);
  if (!(await op.commit()).ok) throw new ConflictError("This run has already been retried");
  return retry;
}

/**
 * After a backup's restore point: a BES verify job when the policy verifies after backup (with its
 * sample count), and a BES replicate job for each replica rule that applies to the point's type (after
 * full / after incremental), with its replication record (replicas.ts `queueReplicationsInOp`) — all in
 * the caller's atomic operation.
 */
async function queueFollowUps(
  kv: Deno.Kv,
  op: Deno.AtomicOperation,
  run: Run,
  policy: Policy | null,
  point: RestorePoint,
  now: Date,
) {
  if (!policy) return;
  const base = { principal: `bes:${policy.besId}`, accountId: run.accountId, orgId: run.orgId };
  if (policy.verifyAfterBackup) {
    queueJobInOp(op, {
      ...base,
      kind: "verify",
      payload: {
        restorePointId: point.id,
        engineRestorePointId: point.engineRestorePointId ?? point.id,
        policyId: policy.id,
        hostId: point.hostId,
        // The repository that holds the point (ENGINE.md §3).
        repository: point.repository ?? repositoryOf(policy),
        targetId: (point.repository ?? repositoryOf(policy)).target,
        sampleCount: policy.verifySampleCount,
      },
    }, now);
  }
  await queueReplicationsInOp(kv, op, policy, point, now);
}

/**
 * Applies a recorded job result where it belongs: a backup or synthetic full to its run (and restore
 * point), a verification to its restore point, a replication to its record, browse, search and restore
 * jobs to their states in restore.ts. Idempotent.
 */
export async function applyJobOutcome(kv: Deno.Kv, job: Job, now: Date): Promise<void> {
  if (!job.result) return;
  if (RESTORE_JOB_KINDS.includes(job.kind)) return await applyRestoreJobOutcome(kv, job, now);
  if (job.kind === "file_history") return await applyFileHistoryOutcome(kv, job, now);
  if (job.kind === "restore_drill") return await applyDrillJobOutcome(kv, job, now);
  if (job.kind === "verify") {
    const id = String(job.payload.restorePointId ?? "");
    const reported = (job.result.output?.verification as { status?: string } | undefined)?.status ?? "";
    const status: RestorePoint["verification"] =
      reported === "passed" || reported === "failed" || reported === "partial"
        ? reported
        : job.result.status === "success"
        ? "passed"
        : "failed";
    // Commit retry (retry.ts): five lost races throw CommitConflictError (the result route answers 503
    // `busy`; the engine re-posts the result, which re-applies it), so the verification is never dropped.
    const attempt = async (): Promise<{ value: void } | null> => {
      const entry = await kv.get<RestorePoint>(restorePointKey(id));
      if (!entry.value || entry.value.verification !== "pending") return { value: undefined };
      const op = kv.atomic().check(entry).set(restorePointKey(id), { ...entry.value, verification: status });
      if (status === "failed") {
        // The dashboard's verification-failures queue reads this index, never the restore points.
        const policy = (await kv.get<Policy>(policyKey(entry.value.policyId))).value;
        if (policy) {
          op.set(verifyFailedKey(policy.accountId, entry.value.completedAt, id), orgPart(policy.orgId));
        }
      }
      return (await op.commit()).ok ? { value: undefined } : null;
    };
    const conflicted = `The verification result of restore point ${id} conflicted; post it again`;
    return await withRetry(attempt, 5, conflicted);
  }
  if (job.kind === "replicate") return await applyReplicationOutcome(kv, job, now);
  await applyJobResultToRun(kv, job, now);
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

/** Automatic retries allowed per policy and host per UTC day (the guide's "up to 3 times"). */
export const AUTO_RETRY_MAX = 3;

/** What the auto-retry index holds per run; `platform` marks a platform job's run. */
interface RetryableEntry {
  policyId: string;
  hostId: string | null;
  at?: string;
  platform?: true;
}

/**
 * Indexes a finished run for the auto-retry job when it failed and is retryable, so the job finds it
 * without scanning all runs. A warning run is retried by hand only (the guide: automatic retries
 * "only trigger when the latest run is failed and retryable").
 */
export function indexRetryableInOp(
  op: Deno.AtomicOperation,
  run: Pick<Run, "id" | "policyId" | "hostId" | "status" | "retryable">,
  now: Date,
  options: { platform?: boolean } = {},
) {
  if (!run.retryable || run.status !== "failed") return;
  const entry: RetryableEntry = { policyId: run.policyId, hostId: run.hostId, at: now.toISOString() };
  if (options.platform) entry.platform = true;
  op.set(retryableKey(run.id), entry);
}

/**
 * How long a failure waits before its automatic retry: the cause (a full target, an unreachable share) gets
 * a moment to clear, and an operator looking at the failure can retry by hand first.
 */
export const AUTO_RETRY_DELAY_MS = 10 * 60_000;

/**
 * The automatic retry job: each failed, retryable run that is still its host's latest gets one retry,
 * AUTO_RETRY_DELAY_MS after it failed
 * (through `retryRun` — or, for a platform job's run, the `retryPlatformJob` passed in — so the same
 * rules hold: never while a run is pending or running, one retry per run, retry runs not retryable),
 * within `max` automatic retries per policy (or platform job) and host per UTC day.
 * Retry glossary: the **auto-retry** (README › Architecture › "Retry: six meanings").
 */
export async function autoRetryRuns(
  kv: Deno.Kv,
  now: Date,
  max = AUTO_RETRY_MAX,
  retryPlatformJob?: (kv: Deno.Kv, actor: Actor, jobId: string, now: Date) => Promise<unknown>,
): Promise<{ retried: number; skipped: number }> {
  const system = systemActor("auto-retry");
  const day = now.toISOString().slice(0, 10);
  let retried = 0;
  let skipped = 0;
  for await (
    const e of kv.list<RetryableEntry>({ prefix: retryablePrefix() })
  ) {
    const runId = String(e.key[1]);
    if (e.value.at && Date.parse(e.value.at) + AUTO_RETRY_DELAY_MS > now.getTime()) continue; // not yet
    const countKey = autoRetryCountKey(e.value.policyId, e.value.hostId, day);
    const count = await kv.get<number>(countKey);
    if ((count.value ?? 0) >= max) {
      skipped++;
      continue; // budget spent today; the entry stays for tomorrow unless superseded
    }
    try {
      // A platform job's retry is a pending run its platform's next sync starts; it retries the job's
      // latest run, and refuses (like retryRun) when that is not a failed retryable run or one is in flight.
      if (e.value.platform) {
        if (!retryPlatformJob) continue;
        await retryPlatformJob(kv, system, e.value.policyId, now);
      } else await retryRun(kv, system, runId, now);
      await kv.atomic().check(count).set(countKey, (count.value ?? 0) + 1, { expireIn: 2 * 86_400_000 })
        .delete(e.key).commit();
      retried++;
    } catch (error) {
      if (
        !(error instanceof ValidationError) && !(error instanceof ConflictError) &&
        !(error instanceof NotFoundError)
      ) {
        throw error;
      }
      await kv.delete(e.key); // superseded, already retried, or gone: nothing left to retry
      skipped++;
    }
  }
  return { retried, skipped };
}

/**
 * A protected object's restore points as retention sees them (parents translated to our ids), each with
 * the legal holds covering it when `holds` is given (holds.ts).
 */
function retentionPoints(points: RestorePoint[], holds?: HoldGuard): RetentionPoint[] {
  const byEngineId = new Map(points.map((p) => [p.engineRestorePointId ?? p.id, p.id]));
  return points.map((p) => ({
    id: p.id,
    chainId: p.chainId,
    type: p.type,
    parentId: p.parentId ? byEngineId.get(p.parentId) ?? null : null,
    completedAt: p.completedAt,
    sizeBytes: p.sizeBytes,
    status: p.status,
    archived: Boolean(p.archivedAt),
    ...(holds ? { holds: holds.reasonsFor(p) } : {}),
  }));
}

/** A policy's restore points grouped by protected object (host, or the BES for synthetic fulls). */
/** A policy's restore points grouped by protected object (host id, or "bes" for BES-side points). */
export async function pointsByObject(kv: Deno.Kv, policyId: string): Promise<Map<string, RestorePoint[]>> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: restorePointsByPolicyPrefix(policyId) })) {
    keys.push(restorePointKey(e.value));
  }
  const groups = new Map<string, RestorePoint[]>();
  for (const p of await getManyValues<RestorePoint>(kv, keys)) {
    const key = p.hostId ?? "bes";
    groups.set(key, [...(groups.get(key) ?? []), p]);
  }
  return groups;
}

/**
 * The policy's restore points of one host (null: the BES's own), read through `restore_points_by_host`
 * — or, until that index's start-up backfill has completed, through all the policy's points.
 */
export async function pointsOfHost(
  kv: Deno.Kv,
  policyId: string,
  hostId: string | null,
): Promise<RestorePoint[]> {
  if (!(await kv.get(POINTS_BY_HOST_FIX_KEY)).value) {
    return (await pointsByObject(kv, policyId)).get(hostId ?? "bes") ?? [];
  }
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: restorePointsByHostPrefix(policyId, hostId) })) {
    keys.push(restorePointKey(e.value));
  }
  return await getManyValues<RestorePoint>(kv, keys);
}

/**
 * Data fix run on start (and after a results-DB restore, `force`): gives every restore point its
 * `restore_points_by_host` entry (points written before the index had none). Points are never deleted
 * and their policy and host never change, so a plain set is idempotent. Once complete a marker makes later
 * calls skip it (unless `force`); until then `pointsOfHost` reads all the policy's points instead.
 */
export async function indexRestorePointsByHost(
  kv: Deno.Kv,
  now: Date,
  options: { force?: boolean } = {},
): Promise<{ indexed: number; skipped: boolean }> {
  if (!options.force && (await kv.get(POINTS_BY_HOST_FIX_KEY)).value) return { indexed: 0, skipped: true };
  let indexed = 0;
  let op = kv.atomic();
  let pending = 0;
  for await (const e of kv.list<RestorePoint>({ prefix: restorePointsPrefix() }, { batchSize: 500 })) {
    const point = e.value;
    if (!point?.policyId) continue;
    op.set(restorePointsByHostKey(point.policyId, point.hostId, point.id), point.id);
    indexed++;
    if (++pending === 500) {
      await op.commit();
      op = kv.atomic();
      pending = 0;
    }
  }
  if (pending) await op.commit();
  await kv.set(POINTS_BY_HOST_FIX_KEY, { at: now.toISOString(), indexed });
  return { indexed, skipped: false };
}

/** What retention `counts` would keep and expire for each of the policy's protected objects. */
export async function previewPolicyRetention(
  kv: Deno.Kv,
  policy: Pick<Policy, "id" | "timeZone" | "accountId">,
  counts: RetentionCounts,
  /** The policy's points by object, when the caller has read them already. */
  groups?: Map<string, RestorePoint[]>,
): Promise<Record<string, RetentionPreview & { frozen?: string | null }>> {
  groups ??= await pointsByObject(kv, policy.id);
  // Held points show as kept, with the hold as the reason; a host whose prune is frozen (anomalies.ts)
  // keeps every point, and its preview says why.
  const holds = await holdGuard(kv, policy.accountId);
  return await withPruneFreezes(
    kv,
    previewRetention(
      Object.fromEntries([...groups].map(([k, v]) => [k, retentionPoints(v, holds)])),
      counts,
      policy.timeZone ?? "UTC",
    ),
  );
}

/**
 * The hourly retention job: for every policy and protected object, applies GFS retention — marks the
 * expired restore points `expired` and queues one BES prune job with their ids, in one atomic
 * operation per batch. Idempotent: expired points are no longer candidates. Archived points (their host
 * was decommissioned under Archive On Host Deactivation) are kept; the points of a host whose
 * decommission is still archiving them (`["host_decommissions", hostId]`) wait for the next run.
 */
export async function applyRetention(
  kv: Deno.Kv,
  now: Date,
): Promise<{ expired: number; pruneJobs: number }> {
  let expired = 0;
  let pruneJobs = 0;
  const decommissioning = new Set<string>();
  for await (const e of kv.list({ prefix: hostDecommissionsPrefix() })) decommissioning.add(String(e.key[1]));
  // Live policies, then deleted ones kept for their restore points (under their last retention).
  for (const prefix of [policiesPrefix(), retiredPoliciesPrefix()]) {
    for await (const entry of kv.list<Policy>({ prefix }, { batchSize: 200 })) {
      const policy = entry.value;
      const groups = await pointsByObject(kv, policy.id);
      const done = await expireObjects(kv, policy, groups, decommissioning, now);
      expired += done.expired;
      pruneJobs += done.pruneJobs;
      if (prefix[0] === "policies_retired") await dropRetiredWithoutPoints(kv, entry, now);
    }
  }
  return { expired, pruneJobs };
}

/** A retired policy goes once none of its restore points is left (complete or still running). */
async function dropRetiredWithoutPoints(kv: Deno.Kv, entry: Deno.KvEntry<Policy>, now: Date): Promise<void> {
  const policy = entry.value;
  const left = [...(await pointsByObject(kv, policy.id)).values()].flat()
    .filter((p) => p.status === "complete" || p.status === "running");
  if (left.length) return;
  const op = kv.atomic().check(entry).delete(entry.key)
    .delete(retiredPoliciesByAccountKey(policy.accountId, policy.id));
  appendAudit(op, systemActor("retention"), {
    accountId: policy.accountId,
    orgId: policy.orgId,
    action: "policy.retired_purge",
    objectType: "policy",
    objectId: policy.id,
    summary: `The last restore point of deleted policy ${policy.name} expired: its record is gone`,
  }, now);
  await op.commit();
}

/** Applies a policy's retention to each of its protected objects; returns what it expired. */
async function expireObjects(
  kv: Deno.Kv,
  policy: Policy,
  groups: Map<string, RestorePoint[]>,
  decommissioning: Set<string>,
  now: Date,
): Promise<{ expired: number; pruneJobs: number }> {
  let expired = 0;
  let pruneJobs = 0;
  const counts = {
    daily: policy.retentionDaily,
    weekly: policy.retentionWeekly,
    monthly: policy.retentionMonthly,
  };
  // Legal holds (holds.ts): held points and their chains are kept, and each write checks the hold epoch,
  // so a hold placed while this plans makes the write fail rather than prune a point just held.
  const holds = await holdGuard(kv, policy.accountId);
  for (const [object, points] of groups) {
    if (decommissioning.has(object)) continue;
    // A host with a suspicious change under review keeps everything (anomalies.ts: prune frozen).
    const freeze = await pruneGuard(kv, object);
    if (freeze.frozen) continue;
    const plan = planRetention(retentionPoints(points, holds), counts, policy.timeZone ?? "UTC");
    // One prune job per repository: an older generation (or target) keeps its points where they are.
    const byRepository = new Map<string, RestorePoint[]>();
    for (const p of points.filter((p) => plan.expire.includes(p.id))) {
      const repo = p.repository ?? repositoryOf(policy);
      const key = `${repo.target}\u0000${repo.path}`;
      byRepository.set(key, [...(byRepository.get(key) ?? []), p]);
    }
    const batches: RestorePoint[][] = [];
    for (const doomed of byRepository.values()) {
      for (let i = 0; i < doomed.length; i += 200) batches.push(doomed.slice(i, i + 200));
    }
    for (const batch of batches) {
      const repository = batch[0].repository ?? repositoryOf(policy);
      const entries = [];
      for (let j = 0; j < batch.length; j += 10) {
        entries.push(
          ...await kv.getMany<RestorePoint[]>(batch.slice(j, j + 10).map((p) => restorePointKey(p.id))),
        );
      }
      const op = holds.check(kv.atomic());
      freeze.check(op);
      for (const e of entries) if (e.value) op.check(e).set(e.key, { ...e.value, status: "expired" });
      queueJobInOp(op, {
        kind: "prune",
        principal: `bes:${policy.besId}`,
        accountId: policy.accountId,
        orgId: policy.orgId,
        payload: {
          policyId: policy.id,
          targetId: repository.target,
          repository,
          restorePointIds: batch.map((p) => p.engineRestorePointId ?? p.id),
        },
      }, now);
      if ((await op.commit()).ok) {
        expired += batch.length;
        pruneJobs++;
      }
    }
  }
  return { expired, pruneJobs };
}

/** Jobs (each with its run) per atomic write in the tick: 600 mutations, within KV's 1000. */
const DISPATCH_BATCH = 100;
/** Estimated bytes per batch write (KV allows 800 KB of mutations per atomic operation). */
const DISPATCH_BATCH_BYTES = 500_000;
/** Batch writes of one tick in flight at once. */
const DISPATCH_IN_FLIGHT = 4;
/** Claimed policies of one tick prepared at once (their reads overlap). */
const DISPATCH_PARALLEL = 16;
/** The longest a storm's write waits for the console's requests to finish (domain/foreground.ts). */
const GIVE_WAY_MS = 20;
/** Slot claims per atomic write (KV allows 100 checks per write). */
const SLOT_BATCH = 100;
/** From this many policies due in one tick on (and a quarter of all), the tick scans assignments and hosts whole. */
const BULK_READ_MIN_POLICIES = 500;

/**
 * An agent's backup payload for a policy and the run kind it amounts to (an incremental of a host new to
 * the policy's generation goes as a full), or null when the policy's BES or storage target is gone.
 */
async function agentBackupPayload(
  kv: Deno.Kv,
  policy: Policy,
  kind: RunKind,
  hostId: string,
): Promise<{ payload: Record<string, unknown>; kind: RunKind } | null> {
  const [engine, target] = await kv.getMany<[Engine, StorageTarget]>([
    engineKey(policy.besId),
    targetKey(policy.targetId),
  ]);
  if (!engine.value || !target.value) return null;
  const built = await buildBackupPayload(kv, policy, engine.value, target.value, kind);
  return hostBackupPayload(built, kind, hostId, await hostsNeedingFull(kv, policy, [hostId]));
}

/**
 * Catch-up on reconnect: for every host that is online again, the newest deferred run of each policy
 * is dispatched once (trigger `catch_up`); older deferred runs of the same policy become skipped — a
 * missed window runs once, not once per missed schedule.
 */
async function catchUpDeferred(kv: Deno.Kv, now: Date): Promise<number> {
  const byHost = new Map<string, Array<{ key: Deno.KvKey; runId: string; policyId: string }>>();
  for await (const e of kv.list<string>({ prefix: deferredPrefix() })) {
    const hostId = String(e.key[1]);
    const entry = { key: e.key, runId: String(e.key[2]), policyId: e.value };
    const list = byHost.get(hostId);
    if (list) list.push(entry);
    else byHost.set(hostId, [entry]);
  }
  if (!byHost.size) return 0;
  // Every minute while hosts stay offline: their status is read in batches, not one read per host.
  const hosts = new Map(
    (await getManyValues<{ id: string; status: string }>(kv, [...byHost.keys()].map(hostKey)))
      .map((h) => [h.id, h]),
  );
  let dispatched = 0;
  for (const [hostId, entries] of byHost) {
    // A decommissioned host's deferred runs are skipped, like those of a deleted host.
    const found = hosts.get(hostId) ?? null;
    const host = found?.status === "decommissioned" ? null : found;
    if (host && host.status !== "online") continue;
    const newest = new Map<string, string>();
    for (const e of entries) if ((newest.get(e.policyId) ?? "") < e.runId) newest.set(e.policyId, e.runId);
    for (const e of entries) {
      const entry = await kv.get<Run>(runKey(e.runId));
      const run = entry.value;
      const op = kv.atomic().check(entry).delete(e.key);
      if (!run || run.status !== "pending" || run.jobId) {
        await op.commit();
        continue;
      }
      // Every outcome below but a dispatch ends the run.
      const ended = () => op.delete(runsOpenKey(run.policyId, run.hostId, run.id));
      const policy = host ? (await kv.get<Policy>(policyKey(run.policyId))).value : null;
      if (!policy || newest.get(e.policyId) !== e.runId) {
        ended().set(runKey(run.id), { ...run, status: "skipped", updatedAt: now.toISOString() });
        await op.commit();
        continue;
      }
      let sent: { payload: Record<string, unknown>; kind: RunKind } | null;
      try {
        sent = await agentBackupPayload(kv, policy, run.kind, hostId);
      } catch (error) {
        if (!(error instanceof ValidationError)) throw error;
        // The policy cannot be sent: the deferred run fails with the reason (and its outcome counts).
        const failed = failedBeforeDispatch({ ...run, trigger: "catch_up" }, error.message, now);
        ended().set(runKey(run.id), failed);
        await recordOutcomeInOp(kv, op, "backup", run, failed, now);
        await op.commit();
        continue;
      }
      if (!sent) {
        await ended().set(runKey(run.id), { ...run, status: "skipped", updatedAt: now.toISOString() })
          .commit();
        continue;
      }
      const job = queueJobInOp(op, {
        kind: "backup",
        principal: `agent:${hostId}`,
        accountId: run.accountId,
        orgId: run.orgId,
        payload: sent.payload,
      }, now);
      op.set(runKey(run.id), {
        ...run,
        kind: sent.kind,
        trigger: "catch_up",
        jobId: job.id,
        error: null,
        updatedAt: now.toISOString(),
      })
        .set(runByJobKey(job.id), run.id);
      if ((await op.commit()).ok) dispatched++;
    }
  }
  return dispatched;
}

/**
 * Pre-patch backup: an agent about to apply OS patches asks for an incremental of every active
 * assignment whose policy has `prePatchBackup` on. Returns the runs created.
 */
export async function requestPrePatch(kv: Deno.Kv, hostId: string, now: Date): Promise<Run[]> {
  const created: Run[] = [];
  const ids: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: assignmentsByHostPrefix(hostId) })) {
    ids.push(assignmentKey(e.value));
  }
  for (const a of await getManyValues<{ policyId: string; state: string }>(kv, ids)) {
    if (a.state !== "active") continue;
    const policy = (await kv.get<Policy>(policyKey(a.policyId))).value;
    if (!policy?.prePatchBackup || !policy.enabled || policy.pausedReason) continue;
    const sent = await agentBackupPayload(kv, policy, "incremental", hostId);
    if (!sent) continue;
    // The job and its run in one write, as the scheduler does.
    const op = kv.atomic();
    const job = queueJobInOp(op, {
      kind: "backup",
      principal: `agent:${hostId}`,
      accountId: policy.accountId,
      orgId: policy.orgId,
      priority: "high",
      payload: sent.payload,
    }, now);
    const run = newRunInOp(op, {
      policyId: policy.id,
      accountId: policy.accountId,
      orgId: policy.orgId,
      hostId,
      jobId: job.id,
      kind: sent.kind,
      trigger: "pre_patch",
      status: "pending",
      scheduledFor: now.toISOString(),
      error: null,
      alertId: null,
    }, now);
    if ((await op.commit()).ok) created.push(run);
  }
  return created;
}

/** Filters of the runs API; every field optional. */
export interface RunFilter {
  policyId?: string;
  hostId?: string;
  status?: RunStatus;
  reason?: string;
  kind?: RunKind;
  trigger?: Run["trigger"];
  /** Only runs that ended at or after this time (ISO 8601): the dashboard's "last 24 hours" links. */
  endedAfter?: string;
}

/** Entries a single page may scan before it answers with what it has and a cursor to continue. */
export const RUN_SCAN_LIMIT = 5000;

/**
 * Runs in the actor's scope, newest first, filtered (e.g. by failure reason), a page at a time. The
 * cursor is the id of the last run scanned, so a sparse filter never scans more than RUN_SCAN_LIMIT
 * entries per request; `cursor: ""` means there is nothing more. Throws InvalidCursorError for a cursor
 * that is not a run id.
 */
export async function listRuns(
  kv: Deno.Kv,
  actor: Actor,
  filter: RunFilter,
  page: { cursor?: string; limit: number },
): Promise<{ values: Run[]; cursor: string }> {
  authorize(actor, "backup.view");
  if (filter.policyId) await requirePolicy(kv, actor, filter.policyId); // 404 outside the scope
  const prefix: Deno.KvKey = filter.policyId ? runsByPolicyPrefix(filter.policyId) : runsPrefix();
  const cursor = openIdCursor(page.cursor);
  const selector = cursor ? { prefix, end: [...prefix, cursor] } : { prefix };
  const values: Run[] = [];
  let scanned = 0;
  let last = "";
  const matches = (r: Run) =>
    inScope(actor, { accountId: r.accountId, orgId: r.orgId }) &&
    (!filter.hostId || r.hostId === filter.hostId) &&
    (!filter.status || r.status === filter.status) &&
    (!filter.reason || r.error?.reason === filter.reason) &&
    (!filter.kind || r.kind === filter.kind) &&
    (!filter.trigger || r.trigger === filter.trigger) &&
    (!filter.endedAfter || (r.endedAt !== null && Date.parse(r.endedAt) >= Date.parse(filter.endedAfter)));
  const iter = kv.list<Run | string>(selector, { reverse: true, batchSize: 500 });
  for await (const e of iter) {
    scanned++;
    last = String(e.key[e.key.length - 1]);
    const run = typeof e.value === "string" ? (await kv.get<Run>(runKey(e.value))).value : e.value;
    if (run && matches(run)) values.push(run);
    if (values.length >= page.limit || scanned >= RUN_SCAN_LIMIT) {
      // More may follow: peek once so the last page does not hand out an empty cursor hop.
      const more = await kv.list({ prefix, end: [...prefix, last] }, { reverse: true, limit: 1 }).next();
      return { values, cursor: more.done ? "" : last };
    }
  }
  return { values, cursor: "" };
}
