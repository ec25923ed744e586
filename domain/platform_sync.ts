/**
 * Platform sync (see platforms.ts for what it imports and why): reads a platform through its connector
 * and writes jobs, runs and protected objects, in this order: jobs → pending retries (start job) → runs
 * since the watermark → jobs' last outcomes → objects → objects' last backups. Each vendor listing is
 * read completely and checked before anything from it is written, and every write is idempotent, so a
 * sync that fails part-way keeps what it wrote and the next sync (the watermark only moves after a
 * complete sync) picks up the rest. One sync per platform at a time (the platform's lease).
 */
import { ulid } from "ulid";
import { raiseAlert, readOpenAlert, resolveAlert } from "./alerts.ts";
import { appendAudit } from "./audit.ts";
import { CohesityConnector } from "./connectors/cohesity.ts";
import {
  ConnectorError,
  type FetchLike,
  type PlatformConnector,
  type VendorJob,
  type VendorJobType,
  type VendorObject,
  type VendorRun,
} from "./connectors/types.ts";
import { VeeamConnector } from "./connectors/veeam.ts";
import { countRunOutcome, type LatestOutcome, latestOutcomeKey } from "./dashboard.ts";
import { ConflictError, NotFoundError } from "./errors.ts";
import { newId } from "./ids.ts";
import { withRetry } from "./kv.ts";
import {
  acquireLock,
  finishPlatformDeletion,
  getPlatform,
  INITIAL_LOOKBACK_DAYS,
  isFinalRun,
  listPlatformJobs,
  pendingPlatformRun,
  type Platform,
  type PlatformJob,
  type PlatformRun,
  platformScope,
  releaseLock,
  requirePlatform,
  resolveEndedBreach,
  rewritePlatformObject,
  type SyncReport,
  type SyncStage,
  WATERMARK_OVERLAP_MS,
} from "./platforms.ts";
import * as keys from "./keys/platforms.ts";
import {
  afterBackup,
  isRpoBreached,
  type ProtectedObject,
  protectedObjectKey,
  type ProtectionState,
  writeProtected,
} from "./protected.ts";
import { type Actor, authorize, systemActor } from "./rbac.ts";
import { firstLine, indexRetryableInOp, type Run } from "./runs.ts";
import { runKey, runsByPolicyKey } from "./keys/runs.ts";
import { openSecret, vaultKey, type VaultRecord } from "./vault.ts";

/** A retry's vendor run may start this much before our start request (vendor clock skew). */
const MATCH_SKEW_MS = 5 * 60_000;
/** A started retry whose vendor run never appears is failed after this long. */
const START_CONFIRM_MS = 24 * 3_600_000;

// ---------------------------------------------------------------------------------------------------
// Connectors

/** What sync and the connectivity test need from outside (tests inject the transport and the waits). */
export interface ConnectorDeps {
  masterKey: Uint8Array;
  fetch?: FetchLike;
  sleep?: (ms: number) => Promise<void>;
  pageSize?: number;
  /** Builds the connector (tests may replace it); defaults to the platform type's connector. */
  connectorFor?: (platform: Platform, password: string) => PlatformConnector;
}

async function openConnector(
  kv: Deno.Kv,
  platform: Platform,
  deps: ConnectorDeps,
): Promise<PlatformConnector> {
  if (!platform.credentialId) throw new ConnectorError("auth", "The platform has no stored password");
  const record = (await kv.get<VaultRecord>(vaultKey(platform.credentialId))).value;
  if (!record) throw new ConnectorError("auth", "The platform's password is missing from the vault");
  const password = await openSecret(deps.masterKey, record).catch(() => {
    throw new ConnectorError(
      "auth",
      "The stored password cannot be decrypted with this server's master key; enter the password again",
    );
  });
  if (deps.connectorFor) return deps.connectorFor(platform, password);
  const options = {
    endpoint: platform.endpointUrl,
    username: platform.username,
    password,
    domain: platform.domain,
    apiVersion: platform.apiVersion,
    caCertificate: platform.caCertificate,
    fetch: deps.fetch,
    sleep: deps.sleep,
    pageSize: deps.pageSize,
  };
  return platform.type === "veeam" ? new VeeamConnector(options) : new CohesityConnector(options);
}

/**
 * Tests the connection (log in and read one resource) and records the outcome on the platform, with an
 * audit entry. Needs backup.manage. Returns the outcome; never throws for a vendor failure.
 */
export async function testPlatform(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  options: ConnectorDeps & { now: Date },
): Promise<{ ok: boolean; message: string }> {
  const platform = await requirePlatform(kv, actor, id);
  authorize(actor, "backup.manage", platformScope(platform));
  let outcome: { ok: boolean; message: string };
  let connector: PlatformConnector | null = null;
  try {
    connector = await openConnector(kv, platform, options);
    outcome = { ok: true, message: `Connected: ${(await connector.testConnection()).detail}` };
  } catch (error) {
    if (!(error instanceof ConnectorError)) throw error;
    outcome = { ok: false, message: error.message };
  } finally {
    connector?.close();
  }
  const at = options.now.toISOString();
  await withRetry(async () => {
    const entry = await kv.get<Platform>(keys.platformKey(id));
    if (!entry.value) return { value: undefined };
    const op = kv.atomic().check(entry).set(keys.platformKey(id), {
      ...entry.value,
      lastTest: { at, ...outcome },
    });
    appendAudit(op, actor, {
      accountId: platform.accountId,
      orgId: platform.orgId,
      action: "platform.test",
      objectType: "platform",
      objectId: id,
      summary: `Tested the connection to platform ${platform.name}: ${outcome.ok ? "connected" : "failed"}`,
    }, options.now);
    return (await op.commit()).ok ? { value: undefined } : null;
  });
  return outcome;
}

// ---------------------------------------------------------------------------------------------------
// Sync

/** How recent a failed platform run must be for an automatic retry: older ones are history. */
export const AUTO_RETRY_RECENT_MS = 24 * 3_600_000;

function isCounted(status: Run["status"]): status is "success" | "warning" | "failed" {
  return status === "success" || status === "warning" || status === "failed";
}

function emptyReport(now: Date): SyncReport {
  return {
    status: "success",
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    stage: null,
    error: null,
    warnings: [],
    jobs: { created: 0, updated: 0, removed: 0 },
    runs: { imported: 0, updated: 0 },
    objects: { created: 0, updated: 0, unprotected: 0 },
    retries: { started: 0, failed: 0, deferred: 0 },
  };
}

/**
 * Syncs one platform now: imports jobs, starts pending retries, imports runs and objects (see the module
 * comment), and records the report on the platform. A vendor failure ends the sync with a clear error
 * on the platform and keeps what was written before it. Throws ConflictError when another sync of the
 * platform is running, NotFoundError when the actor cannot see it.
 */
export async function syncPlatform(
  kv: Deno.Kv,
  id: string,
  options: ConnectorDeps & { now: Date; actor?: Actor },
): Promise<SyncReport> {
  const { now } = options;
  const actor = options.actor ?? systemActor("platform-sync");
  const found = await requirePlatform(kv, actor, id);
  authorize(actor, "backup.manage", platformScope(found));
  const token = await acquireLock(kv, id, now);
  if (!token) {
    throw new ConflictError(`A sync of platform ${found.name} is already running; try again shortly`);
  }
  const report = emptyReport(now);
  let connector: PlatformConnector | null = null;
  let nextState: Platform["syncState"] | null = null;
  let stage: SyncStage = "connect";
  try {
    const platform = (await getPlatform(kv, id)) ?? found;
    connector = await openConnector(kv, platform, options);
    stage = "jobs";
    const vendorJobs = await connector.listJobs();
    const jobs = await upsertJobs(kv, platform, vendorJobs, now, report);
    stage = "retries";
    const awaiting = await startPendingRetries(kv, platform, connector, vendorJobs, jobs, now, report);
    stage = "runs";
    const since = sinceOf(platform, awaiting, now);
    const runs = await connector.listRuns(vendorJobs, since);
    await importRuns(kv, platform, jobs, runs, awaiting, now, report);
    await updateJobOutcomes(kv, jobs, runs, now);
    stage = "objects";
    const objects = await connector.listObjects(vendorJobs);
    const written = await upsertObjects(kv, platform, jobs, objects, now, report);
    await applyObjectOutcomes(kv, jobs, runs, written, now);
    const starts = runs.map((r) => r.startedAt).filter((s): s is string => s !== null).sort();
    const open = runs.filter((r) => !isFinalRun(r.status) && r.startedAt).map((r) => r.startedAt!).sort();
    const watermark = [platform.syncState.watermark, starts[starts.length - 1]].filter(Boolean).sort().pop();
    nextState = { watermark: watermark ?? now.toISOString(), openSince: open[0] ?? null };
  } catch (error) {
    report.status = "failed";
    report.stage = stage;
    report.error = error instanceof ConnectorError
      ? error.message
      : error instanceof PlatformGone
      ? "The platform was deleted while it synced; nothing more was written"
      : `Internal error while syncing ${stage}: ${String((error as Error)?.message ?? error).slice(0, 200)}`;
  } finally {
    connector?.close();
    report.endedAt = now.toISOString();
    // A sync a user asked for is audited in the same atomic operation that records its report.
    const audit = options.actor
      ? (op: Deno.AtomicOperation) =>
        appendAudit(op, actor, {
          accountId: found.accountId,
          orgId: found.orgId,
          action: "platform.sync",
          objectType: "platform",
          objectId: id,
          summary: `Synced platform ${found.name}: ${report.status}${
            report.error ? ` (${report.error})` : ""
          }`,
        }, now)
      : undefined;
    try {
      await recordSync(kv, id, report, nextState, now, audit);
    } finally {
      // Released even when recording lost every race (recordSync throws then), so a new sync can start.
      await releaseLock(kv, id, token);
    }
  }
  return report;
}

/** Stores the report (and the next sync state) on the platform, with `audit` in the same operation. */
async function recordSync(
  kv: Deno.Kv,
  id: string,
  report: SyncReport,
  state: Platform["syncState"] | null,
  now: Date,
  audit?: (op: Deno.AtomicOperation) => void,
): Promise<void> {
  // Commit retry (retry.ts): ten lost races throw CommitConflictError, never return as if the report, the
  // sync state and the audit entry had been written.
  await withRetry(
    async () => {
      const entry = await kv.get<Platform>(keys.platformKey(id));
      const op = kv.atomic().check(entry);
      audit?.(op);
      if (entry.value) {
        op.set(
          keys.platformKey(id),
          {
            ...entry.value,
            lastSync: report,
            lastSuccessAt: report.status === "success" ? now.toISOString() : entry.value.lastSuccessAt,
            syncState: state ?? entry.value.syncState,
          } satisfies Platform,
        );
      } else if (!audit) return { value: undefined }; // deleted meanwhile: nothing to record
      return (await op.commit()).ok ? { value: undefined } : null;
    },
    10,
    `The sync report of platform ${id} conflicted; sync again`,
  );
}

/** Where this sync's run listing starts (see `Platform.syncState`). */
function sinceOf(platform: Platform, awaiting: PlatformRun[], now: Date): Date {
  const candidates = [
    platform.syncState.watermark
      ? Date.parse(platform.syncState.watermark) - WATERMARK_OVERLAP_MS
      : now.getTime() - INITIAL_LOOKBACK_DAYS * 86_400_000,
    platform.syncState.openSince ? Date.parse(platform.syncState.openSince) : Infinity,
    ...awaiting.map((r) => Date.parse(r.platform.startRequestedAt!) - MATCH_SKEW_MS),
  ];
  return new Date(Math.min(...candidates));
}

type Change = "created" | "updated" | "same";

/** The platform was deleted (or is being deleted) while it synced. */
class PlatformGone extends Error {}

/**
 * The platform's entry, to check in a sync write that adds keys (a job, a run, an object, a dashboard
 * outcome): a deletion marks the platform `deleting` before it removes what it imported, so a write
 * checked against an active platform either lands before that scan or fails. Without it, a sync that
 * outlived its lease (a slow vendor) could write jobs and objects for a platform already deleted —
 * orphans counted on the dashboard for ever. Throws PlatformGone.
 */
async function livePlatform(kv: Deno.Kv, id: string): Promise<Deno.KvEntryMaybe<Platform>> {
  const entry = await kv.get<Platform>(keys.platformKey(id));
  if (!entry.value || entry.value.status !== "active") throw new PlatformGone();
  return entry;
}

async function upsertJobs(
  kv: Deno.Kv,
  platform: Platform,
  vendorJobs: VendorJob[],
  now: Date,
  report: SyncReport,
): Promise<Map<string, PlatformJob>> {
  const at = now.toISOString();
  const out = new Map<string, PlatformJob>();
  if (vendorJobs.length === 0) {
    // An empty list where jobs were imported is more likely a service account that lost its rights than
    // a platform whose every job was deleted: refuse it rather than mark everything removed.
    const imported = (await listPlatformJobs(kv, platform.id)).filter((j) => !j.removed).length;
    if (imported > 0) {
      throw new ConnectorError(
        "bad_response",
        `The platform listed no jobs while ${imported} are imported; nothing was removed (check the account's permissions)`,
      );
    }
  }
  for (const vj of vendorJobs) {
    const { job, change } = await withRetry<{ job: PlatformJob; change: Change }>(async () => {
      const ptr = await kv.get<string>(keys.platformJobByVendorKey(platform.id, vj.id));
      const entry = ptr.value ? await kv.get<PlatformJob>(keys.platformJobKey(ptr.value)) : null;
      const fields = {
        name: vj.name,
        vendorType: vj.vendorType,
        jobType: vj.jobType,
        objectType: vj.objectType,
        enabled: vj.enabled,
        removed: false,
        sourceIds: vj.sourceIds ?? [],
      };
      if (entry?.value) {
        const old = entry.value;
        const same = (Object.keys(fields) as (keyof typeof fields)[])
          .every((k) => JSON.stringify(old[k] ?? []) === JSON.stringify(fields[k] ?? []));
        if (same) return { value: { job: old, change: "same" } };
        const next: PlatformJob = { ...old, ...fields, updatedAt: at };
        const ok = (await kv.atomic().check(entry).set(keys.platformJobKey(old.id), next).commit()).ok;
        return ok ? { value: { job: next, change: "updated" } } : null;
      }
      const job: PlatformJob = {
        id: newId(now),
        platformId: platform.id,
        platformType: platform.type,
        accountId: platform.accountId,
        orgId: platform.orgId,
        vendorJobId: vj.id,
        ...fields,
        lastOutcome: null,
        lastSuccessAt: null,
        createdAt: at,
        updatedAt: at,
      };
      const ok = (await kv.atomic().check(ptr, await livePlatform(kv, platform.id))
        .check({ key: keys.platformJobKey(job.id), versionstamp: null })
        .set(keys.platformJobKey(job.id), job)
        .set(keys.platformJobByVendorKey(platform.id, vj.id), job.id)
        .set(keys.platformJobsByAccountKey(job.accountId, job.id), job.id)
        .commit()).ok;
      return ok ? { value: { job, change: "created" } } : null;
    });
    if (change !== "same") report.jobs[change]++;
    out.set(vj.id, job);
  }
  for (const job of await listPlatformJobs(kv, platform.id)) {
    if (out.has(job.vendorJobId) || job.removed) continue;
    const removed = await withRetry(async () => {
      const entry = await kv.get<PlatformJob>(keys.platformJobKey(job.id));
      if (!entry.value || entry.value.removed) return { value: false };
      const next = { ...entry.value, removed: true, enabled: false, updatedAt: at };
      return (await kv.atomic().check(entry).set(keys.platformJobKey(job.id), next).commit()).ok
        ? { value: true }
        : null;
    });
    if (removed) report.jobs.removed++;
  }
  return out;
}

/** The platform's retry runs, as read from `platform_pending` (stale entries are dropped). */
async function readPending(kv: Deno.Kv, platformId: string): Promise<PlatformRun[]> {
  const out: PlatformRun[] = [];
  for await (const e of kv.list<string>({ prefix: keys.platformPendingPrefix(platformId) })) {
    const run = (await kv.get<PlatformRun>(runKey(String(e.key[2])))).value;
    if (run && !isFinalRun(run.status) && !run.platform.runId) out.push(run);
    else await kv.delete(e.key);
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

/**
 * Adds to `op` what finishing `next` changes: the run, its dashboard outcome (once), and — for a failed,
 * retryable run that ended in the last AUTO_RETRY_RECENT_MS — its place in the auto-retry index (older
 * failures imported from the platform's history are not retried on their own).
 */
async function finishRunInOp(kv: Deno.Kv, op: Deno.AtomicOperation, next: PlatformRun, now: Date) {
  op.set(runKey(next.id), next);
  if (next.endedAt && now.getTime() - Date.parse(next.endedAt) <= AUTO_RETRY_RECENT_MS) {
    indexRetryableInOp(op, next, now, { platform: true });
  }
  if (isCounted(next.status)) {
    countRunOutcome(op, next, await kv.get<LatestOutcome>(latestOutcomeKey(next.policyId, null)), now);
  }
}

/**
 * Starts each pending retry run of the platform once: the run is claimed (pending → running with the
 * request time) before the vendor is called, so two syncs never start it twice. A start the vendor
 * refuses fails the run; one it surely did not act on (unreachable, rate limited) goes back to pending
 * for the next sync; one whose outcome is unknown (timeout, 5xx, an answer we cannot read: the vendor
 * may have started the job) is never sent again — it waits, like a start without a run id, for the
 * job's next vendor run (or fails after 24 hours). Returns the retry runs whose vendor run is not known
 * yet (to match by time).
 * Retry glossary: starts a **platform retry** (README › Architecture › "Retry: six meanings").
 */
async function startPendingRetries(
  kv: Deno.Kv,
  platform: Platform,
  connector: PlatformConnector,
  vendorJobs: VendorJob[],
  jobs: Map<string, PlatformJob>,
  now: Date,
  report: SyncReport,
): Promise<PlatformRun[]> {
  const at = now.toISOString();
  const byOurId = new Map([...jobs.values()].map((j) => [j.id, j]));
  const vendorById = new Map(vendorJobs.map((j) => [j.id, j]));
  const awaiting: PlatformRun[] = [];
  const fail = async (run: PlatformRun, reason: string, message: string) => {
    await withRetry(async () => {
      const entry = await kv.get<PlatformRun>(runKey(run.id));
      const current = entry.value;
      if (!current || isFinalRun(current.status)) return { value: undefined };
      const next: PlatformRun = {
        ...current,
        status: "failed",
        endedAt: at,
        error: { reason, message },
        errorLine: firstLine(message),
        retryable: false,
        updatedAt: at,
      };
      const op = kv.atomic().check(entry, await livePlatform(kv, platform.id))
        .delete(keys.platformPendingKey(platform.id, run.id));
      await finishRunInOp(kv, op, next, now);
      return (await op.commit()).ok ? { value: undefined } : null;
    });
    report.retries.failed++;
  };
  for (const run of await readPending(kv, platform.id)) {
    const job = byOurId.get(run.policyId);
    const vendorJob = job ? vendorById.get(job.vendorJobId) : undefined;
    if (run.platform.startRequestedAt) {
      if (now.getTime() - Date.parse(run.platform.startRequestedAt) > START_CONFIRM_MS) {
        await fail(
          run,
          "PLATFORM_START_UNCONFIRMED",
          "No run of the job appeared on the platform within 24 hours",
        );
      } else awaiting.push(run);
      continue;
    }
    if (!vendorJob) {
      await fail(run, "PLATFORM_START_FAILED", "The job no longer exists on the platform");
      continue;
    }
    // Claim: only the sync that moves the run from pending to running calls the vendor.
    const entry = await kv.get<PlatformRun>(runKey(run.id));
    if (!entry.value || entry.value.status !== "pending" || entry.value.platform.startRequestedAt) continue;
    const claimed: PlatformRun = {
      ...entry.value,
      status: "running",
      startedAt: at,
      platform: { ...entry.value.platform, startRequestedAt: at },
      updatedAt: at,
    };
    if (!(await kv.atomic().check(entry).set(runKey(run.id), claimed).commit()).ok) continue;
    let runId: string | null;
    try {
      runId = (await connector.startJob(vendorJob)).runId;
    } catch (error) {
      if (!(error instanceof ConnectorError)) throw error;
      if (error.code === "timeout" || error.code === "server" || error.code === "bad_response") {
        report.retries.started++;
        report.warnings.push(
          `The platform did not confirm the retry of ${job!.name} (${error.message}); it is not sent ` +
            "again: the next syncs take the job's next run as the retry's",
        );
        awaiting.push(claimed);
        continue;
      }
      if (error.retryable) {
        await kv.set(runKey(run.id), {
          ...claimed,
          status: "pending",
          startedAt: null,
          platform: run.platform,
        });
        report.retries.deferred++;
        report.warnings.push(
          `Retry of ${job!.name} not started yet (${error.message}); the next sync tries again`,
        );
      } else {
        await fail(
          claimed,
          "PLATFORM_START_FAILED",
          `The platform refused to start the job: ${error.message}`,
        );
      }
      continue;
    }
    report.retries.started++;
    if (!runId) {
      awaiting.push(claimed);
      continue;
    }
    await withRetry(async () => {
      const [current, ptr] = await kv.getMany<[PlatformRun, string]>([
        runKey(run.id),
        keys.platformRunKey(platform.id, runId),
      ]);
      if (!current.value) return { value: undefined };
      const linked: PlatformRun = { ...current.value, platform: { ...current.value.platform, runId } };
      const ok = (await kv.atomic().check(current, ptr, await livePlatform(kv, platform.id))
        .set(runKey(run.id), linked)
        .set(keys.platformRunKey(platform.id, runId), run.id)
        .delete(keys.platformPendingKey(platform.id, run.id)).commit()).ok;
      return ok ? { value: undefined } : null;
    });
  }
  return awaiting;
}

function errorOf(vr: VendorRun): Run["error"] {
  if (vr.status === "failed") {
    return vr.cancelled
      ? { reason: "CANCELLED", message: vr.message ?? "The run was cancelled on the platform" }
      : { reason: "PLATFORM_RUN_FAILED", message: vr.message ?? "The platform reported the run as failed" };
  }
  if (vr.status === "warning") {
    return { reason: "PLATFORM_RUN_WARNING", message: vr.message ?? "The platform reported warnings" };
  }
  if (vr.status === "skipped") {
    return { reason: "PLATFORM_RUN_MISSED", message: vr.message ?? "The platform missed this run" };
  }
  return null;
}

function kindOf(jobType: VendorJobType): Run["kind"] {
  return jobType === "full" ? "full" : "incremental";
}

/** The run after the vendor's view of it (status, times, sizes, error). */
function fromVendor(run: PlatformRun, vr: VendorRun, now: Date): PlatformRun {
  const error = errorOf(vr);
  return {
    ...run,
    kind: kindOf(vr.jobType),
    status: vr.status,
    startedAt: vr.startedAt ?? run.startedAt,
    endedAt: vr.endedAt,
    bytesTransferred: vr.bytesTransferred,
    protectedBytes: vr.protectedBytes,
    error,
    errorLine: firstLine(error?.message),
    retryable: run.trigger !== "retry" && (vr.status === "failed" || vr.status === "warning"),
    platform: { ...run.platform, runId: vr.id, jobType: vr.jobType },
    updatedAt: now.toISOString(),
  };
}

function sameRun(a: PlatformRun, b: PlatformRun): boolean {
  return a.status === b.status && a.startedAt === b.startedAt && a.endedAt === b.endedAt &&
    a.bytesTransferred === b.bytesTransferred && a.protectedBytes === b.protectedBytes &&
    a.error?.message === b.error?.message && a.platform.jobType === b.platform.jobType;
}

async function importRuns(
  kv: Deno.Kv,
  platform: Platform,
  jobs: Map<string, PlatformJob>,
  runs: VendorRun[],
  awaiting: PlatformRun[],
  now: Date,
  report: SyncReport,
): Promise<void> {
  const at = now.toISOString();
  for (const vr of runs) {
    const job = jobs.get(vr.jobId);
    if (!job) continue;
    const change = await withRetry<"imported" | "updated" | "same">(async () => {
      const ptr = await kv.get<string>(keys.platformRunKey(platform.id, vr.id));
      if (ptr.value) {
        const entry = await kv.get<PlatformRun>(runKey(ptr.value));
        const run = entry.value;
        if (!run || isFinalRun(run.status)) return { value: "same" };
        const next = fromVendor(run, vr, now);
        if (sameRun(run, next)) return { value: "same" };
        const op = kv.atomic().check(entry, await livePlatform(kv, platform.id));
        await finishRunInOp(kv, op, next, now);
        return (await op.commit()).ok ? { value: "updated" } : null;
      }
      // A retry we started without learning its vendor run id (Cohesity): the first new run of the
      // job that started after the request is it.
      const started = vr.startedAt ? Date.parse(vr.startedAt) : NaN;
      const waiting = awaiting.find((r) =>
        r.policyId === job.id && started >= Date.parse(r.platform.startRequestedAt!) - MATCH_SKEW_MS
      );
      if (waiting) {
        const entry = await kv.get<PlatformRun>(runKey(waiting.id));
        const run = entry.value;
        if (run && !isFinalRun(run.status) && !run.platform.runId) {
          const next = fromVendor(run, vr, now);
          const op = kv.atomic().check(ptr, entry, await livePlatform(kv, platform.id))
            .set(keys.platformRunKey(platform.id, vr.id), run.id)
            .delete(keys.platformPendingKey(platform.id, run.id));
          await finishRunInOp(kv, op, next, now);
          if (!(await op.commit()).ok) return null;
          awaiting.splice(awaiting.indexOf(waiting), 1);
          return { value: "updated" };
        }
      }
      const ms = Number.isFinite(started) ? started : now.getTime();
      const base = pendingPlatformRun({
        id: ulid(ms),
        policyId: job.id,
        accountId: platform.accountId,
        orgId: platform.orgId,
        kind: kindOf(vr.jobType),
        trigger: "schedule",
        scheduledFor: vr.startedAt ?? at,
        platform: { platformId: platform.id, runId: vr.id, jobType: vr.jobType, startRequestedAt: null },
      }, at);
      const run = fromVendor(base, vr, now);
      const op = kv.atomic().check(ptr, await livePlatform(kv, platform.id))
        .check({ key: runKey(run.id), versionstamp: null })
        .set(runsByPolicyKey(job.id, run.id), run.id)
        .set(keys.platformRunKey(platform.id, vr.id), run.id);
      await finishRunInOp(kv, op, run, now);
      return (await op.commit()).ok ? { value: "imported" } : null;
    });
    if (change !== "same") report.runs[change]++;
  }
}

type Outcome = { status: "success" | "warning" | "failed"; endedAt: string };

/** Final runs (success, warning, failed) with an end time, oldest first. */
function finalRuns(runs: VendorRun[]): Array<VendorRun & { status: Outcome["status"]; endedAt: string }> {
  return runs.filter((r): r is VendorRun & { status: Outcome["status"]; endedAt: string } =>
    isCounted(r.status) && r.endedAt !== null
  ).sort((a, b) => a.endedAt.localeCompare(b.endedAt));
}

/** Keeps each job's newest final outcome and last success (what a newly found object starts from). */
async function updateJobOutcomes(
  kv: Deno.Kv,
  jobs: Map<string, PlatformJob>,
  runs: VendorRun[],
  now: Date,
): Promise<void> {
  const done = finalRuns(runs);
  for (const [vendorId, job] of jobs) {
    const mine = done.filter((r) => r.jobId === vendorId);
    if (!mine.length) continue;
    const newest = mine[mine.length - 1];
    const success = mine.filter((r) => r.status !== "failed").pop();
    const next: PlatformJob = { ...job };
    if (!job.lastOutcome || job.lastOutcome.endedAt < newest.endedAt) {
      next.lastOutcome = { status: newest.status, endedAt: newest.endedAt };
    }
    if (success && (!job.lastSuccessAt || job.lastSuccessAt < success.endedAt)) {
      next.lastSuccessAt = success.endedAt;
    }
    if (next.lastOutcome === job.lastOutcome && next.lastSuccessAt === job.lastSuccessAt) continue;
    const written = await withRetry(async () => {
      const entry = await kv.get<PlatformJob>(keys.platformJobKey(job.id));
      if (!entry.value) return { value: job };
      const merged = {
        ...entry.value,
        lastOutcome: next.lastOutcome,
        lastSuccessAt: next.lastSuccessAt,
        updatedAt: now.toISOString(),
      };
      return (await kv.atomic().check(entry).set(keys.platformJobKey(job.id), merged).commit()).ok
        ? { value: merged }
        : null;
    });
    jobs.set(vendorId, written);
  }
}

/** The protection state of a platform object from its jobs: none → unprotected, all disabled → paused. */
function protectionOf(jobs: PlatformJob[]): ProtectionState {
  if (!jobs.length) return "unprotected";
  return jobs.some((j) => j.enabled && !j.removed) ? "active" : "paused";
}

/** The fields of an object that a sync decides (compared to skip writes that change nothing). */
function syncedFields(o: ProtectedObject) {
  return JSON.stringify([
    o.name,
    o.type,
    o.source,
    o.platformJobIds,
    o.policyId,
    o.protection,
    o.rpoHours,
    o.breached ?? false,
    o.activeSince,
    o.lastBackupAt,
    o.lastBackupStatus,
    o.lastSuccessAt,
  ]);
}

async function upsertObjects(
  kv: Deno.Kv,
  platform: Platform,
  jobs: Map<string, PlatformJob>,
  vendorObjects: VendorObject[],
  now: Date,
  report: SyncReport,
): Promise<Map<string, { object: ProtectedObject; vendorJobIds: string[] }>> {
  const at = now.toISOString();
  const out = new Map<string, { object: ProtectedObject; vendorJobIds: string[] }>();
  const seen = new Set<string>();
  for (const vo of vendorObjects) {
    if (seen.has(vo.id)) continue;
    seen.add(vo.id);
    const mine = vo.jobIds.map((id) => jobs.get(id)).filter((j): j is PlatformJob => j !== undefined);
    const protection = protectionOf(mine);
    const source = {
      kind: "platform" as const,
      platformId: platform.id,
      platformType: platform.type,
      vendorObjectId: vo.id,
      vendorType: vo.vendorType,
    };
    const { object, change } = await withRetry<{ object: ProtectedObject; change: Change }>(async () => {
      const ptr = await kv.get<string>(keys.platformObjectKey(platform.id, vo.id));
      const entry = ptr.value ? await kv.get<ProtectedObject>(protectedObjectKey(ptr.value)) : null;
      const existing = entry?.value;
      const fields = {
        name: vo.name,
        type: vo.type,
        source,
        platformJobIds: mine.map((j) => j.id),
        policyId: mine[0]?.id ?? `platform:${platform.id}`,
        rpoHours: platform.defaultRpoHours,
        protection,
      };
      if (entry && existing) {
        const becameActive = protection === "active" && existing.protection !== "active";
        const next: ProtectedObject = {
          ...existing,
          ...fields,
          activeSince: becameActive ? at : existing.activeSince,
          breached: protection === "active" && !becameActive ? existing.breached ?? false : false,
        };
        if (next.breached && !isRpoBreached(next, now)) next.breached = false;
        if (syncedFields(next) === syncedFields(existing)) {
          return { value: { object: existing, change: "same" } };
        }
        next.updatedAt = at;
        const op = kv.atomic().check(entry);
        writeProtected(op, existing, next);
        if (existing.breached && !next.breached) {
          resolveAlert(op, await readOpenAlert(kv, "protected_object", existing.id, "rpo_breach"), now);
        }
        return (await op.commit()).ok ? { value: { object: next, change: "updated" } } : null;
      }
      // A new object starts from its jobs' newest outcome (their runs may have been imported earlier).
      const newest = mine.map((j) => j.lastOutcome).filter((o): o is Outcome => o !== null)
        .sort((a, b) => a.endedAt.localeCompare(b.endedAt)).pop() ?? null;
      const lastSuccess = mine.map((j) =>
        j.lastSuccessAt
      ).filter((s): s is string => s !== null).sort().pop() ??
        null;
      const created: ProtectedObject = {
        id: newId(now),
        accountId: platform.accountId,
        orgId: platform.orgId,
        hostId: `platform:${platform.id}`,
        ...fields,
        lastBackupAt: newest?.endedAt ?? null,
        lastBackupStatus: newest?.status ?? "never",
        lastSuccessAt: lastSuccess,
        lastRestorePointId: null,
        activeSince: at,
        breached: false,
        createdAt: at,
        updatedAt: at,
      };
      const op = kv.atomic().check(ptr, await livePlatform(kv, platform.id))
        .check({ key: protectedObjectKey(created.id), versionstamp: null })
        .set(keys.platformObjectKey(platform.id, vo.id), created.id);
      writeProtected(op, null, created);
      if (created.lastBackupStatus === "failed") {
        raiseAlert(op, await readOpenAlert(kv, "protected_object", created.id, "backup_failed"), {
          accountId: created.accountId,
          orgId: created.orgId,
          subjectType: "protected_object",
          subjectId: created.id,
          subjectName: created.name,
          reason: "backup_failed",
          severity: "warning",
          message: `Backup of ${created.name} failed on the platform`,
        }, now);
      }
      return (await op.commit()).ok ? { value: { object: created, change: "created" } } : null;
    });
    if (change !== "same") report.objects[change]++;
    out.set(vo.id, { object, vendorJobIds: vo.jobIds });
  }
  // Objects the platform no longer lists are no longer protected by it.
  for await (const e of kv.list<string>({ prefix: keys.platformObjectsPrefix(platform.id) })) {
    if (seen.has(String(e.key[2]))) continue;
    const changed = await rewritePlatformObject(
      kv,
      e.value,
      (o) =>
        o.protection === "unprotected"
          ? null
          : { ...o, protection: "unprotected", breached: false, updatedAt: at },
      (op, o, next) => resolveEndedBreach(kv, op, o, next, now),
    );
    if (changed) report.objects.unprotected++;
  }
  return out;
}

/**
 * Applies the listing's final runs to the objects of their jobs (the object's own outcome when the
 * vendor reports one per object), newest last, through `afterBackup`: a failure raises (or repeats)
 * the object's backup_failed alert, a success resolves it and an RPO breach it ends. Writes only
 * objects whose last backup changes, so reading the same runs again changes nothing.
 */
async function applyObjectOutcomes(
  kv: Deno.Kv,
  jobs: Map<string, PlatformJob>,
  runs: VendorRun[],
  objects: Map<string, { object: ProtectedObject; vendorJobIds: string[] }>,
  now: Date,
): Promise<void> {
  const done = finalRuns(runs);
  for (const [vendorObjectId, { object, vendorJobIds }] of objects) {
    const outcomes: Outcome[] = [];
    for (const run of done) {
      if (!vendorJobIds.includes(run.jobId) || !jobs.has(run.jobId)) continue;
      const own = run.objects?.find((x) => x.objectId === vendorObjectId);
      outcomes.push(
        own ? { status: own.status, endedAt: own.endedAt } : { status: run.status, endedAt: run.endedAt },
      );
    }
    if (!outcomes.length) continue;
    outcomes.sort((a, b) => a.endedAt.localeCompare(b.endedAt));
    await rewritePlatformObject(kv, object.id, (o) => {
      let next = o;
      for (const outcome of outcomes) {
        next = afterBackup(next, { ...outcome, restorePointId: null }, now) ?? next;
      }
      return syncedFields(next) === syncedFields(o) ? null : next;
    }, async (op, o, next) => {
      const failedAlert = await readOpenAlert(kv, "protected_object", o.id, "backup_failed");
      if (next.lastBackupStatus === "failed") {
        if (next.lastBackupAt !== o.lastBackupAt) {
          raiseAlert(op, failedAlert, {
            accountId: o.accountId,
            orgId: o.orgId,
            subjectType: "protected_object",
            subjectId: o.id,
            subjectName: o.name,
            reason: "backup_failed",
            severity: "warning",
            message: `Backup of ${o.name} failed on the platform`,
          }, now);
        }
      } else {
        resolveAlert(op, failedAlert, now);
        await resolveEndedBreach(kv, op, o, next, now);
      }
    });
  }
}

/**
 * The minute tick: finishes interrupted deletions, then syncs every platform whose sync is on and whose
 * interval has elapsed since its last sync started. One platform's failure is recorded on it and does
 * not stop the others.
 */
export async function syncDuePlatforms(
  kv: Deno.Kv,
  now: Date,
  deps: ConnectorDeps,
): Promise<{ synced: number; failed: number; deleted: number; busy: number }> {
  const out = { synced: 0, failed: 0, deleted: 0, busy: 0 };
  const platforms: Platform[] = [];
  for await (const e of kv.list<Platform>({ prefix: keys.platformsPrefix() })) platforms.push(e.value);
  for (const p of platforms) {
    if (p.status === "deleting") {
      await finishPlatformDeletion(kv, p, now);
      out.deleted++;
      continue;
    }
    const last = p.lastSync ? Date.parse(p.lastSync.startedAt) : -Infinity;
    if (!p.syncEnabled || now.getTime() - last < p.syncIntervalMinutes * 60_000) continue;
    try {
      const report = await syncPlatform(kv, p.id, { ...deps, now });
      if (report.status === "success") out.synced++;
      else out.failed++;
    } catch (error) {
      if (!(error instanceof ConflictError) && !(error instanceof NotFoundError)) throw error;
      out.busy++;
    }
  }
  return out;
}
