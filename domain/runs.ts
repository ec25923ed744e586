/**
 * Backup runs, the record: what a run is (`Run`, its kinds, statuses and failure reasons), writing a new
 * run with its indexes (`newRunInOp`), and reading them (`listRunsByPolicy`, the runs API's `listRuns`).
 * What moves a run along lives beside it, one seam per file: scheduler.ts (the minute tick),
 * run_lifecycle.ts (open runs, sweeps, lease expiry), job_outcomes.ts (a job's result into its run and
 * restore point), run_retry.ts and auto_retry.ts (retries), retention_apply.ts, prepatch.ts, and
 * backup_payload.ts (what a backup job carries).
 */
import {
  retryableKey,
  runByJobKey,
  runKey,
  runsByPolicyKey,
  runsByPolicyPrefix,
  runsOpenKey,
  runsPrefix,
} from "./keys/runs.ts";
import { openIdCursor } from "./cursor.ts";
import { getManyValues } from "./kv.ts";
import { newId } from "./ids.ts";
import type { HookOutput, ResultStats } from "./job_queue.ts";
import { requirePolicy } from "./policies.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";

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

/** The fields of a run not started yet, created at `at`: no job, nothing transferred, no outcome. */
export function notStartedRunFields(at: string): Pick<
  Run,
  | "status"
  | "jobId"
  | "startedAt"
  | "endedAt"
  | "bytesTransferred"
  | "protectedBytes"
  | "restorePointId"
  | "error"
  | "retryable"
  | "alertId"
  | "createdAt"
  | "updatedAt"
> {
  return {
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
    createdAt: at,
    updatedAt: at,
  };
}

/** True while a run has not ended. */
export function isOpenRun(run: Pick<Run, "status">): boolean {
  return run.status === "pending" || run.status === "running";
}

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

/** A policy's runs, newest first. */
export async function listRunsByPolicy(kv: Deno.Kv, policyId: string, limit = 50): Promise<Run[]> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: runsByPolicyPrefix(policyId) }, { reverse: true, limit })) {
    keys.push(runKey(e.value));
  }
  return await getManyValues<Run>(kv, keys);
}

/** What the auto-retry index holds per run; `platform` marks a platform job's run. */
export interface RetryableEntry {
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
