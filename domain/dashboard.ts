/**
 * The dashboard (guide, "Monitoring and Dashboard"): summary, engine status, the last 24 hours, the
 * four exception queues and a 30-day outcome heatmap.
 *
 * Its cost does not grow with history: every figure comes from counters and indexes that the writes
 * keep up to date in the same atomic operation as the change they count —
 * - protected / at-risk / breached objects and unprotected hosts: `po_counts` and `host_counts`
 *   (protected.ts `writeProtected`), plus the few objects that fell due since the last RPO sweep;
 * - run outcomes: per-minute and per-hour buckets (`run_outcomes`) and per-policy days (`run_daily`),
 *   summed by `countRunOutcome` when a run finishes;
 * - failed backups: `runs_failing`, one entry per (policy, host) whose latest backup failed;
 * - verification failures: `rp_verify_failed`, one entry per restore point that failed verification.
 * Engines and storage targets are read directly: there is one record per engine and target, not per run.
 */
import { idsInScope, readByPointerIndex } from "./pointer_index.ts";
import { enginesByAccountPrefix } from "./keys/engines.ts";
import { failingPrefix, runDailyBound, runOutcomesPrefix, verifyFailedPrefix } from "./keys/dashboard.ts";
import { hostKey } from "./keys/hosts.ts";
import { platformJobKey } from "./keys/platforms.ts";
import { policyKey } from "./keys/policies.ts";
import { objectCountsPrefix, objectsDueBound, unprotectedHostsPrefix } from "./keys/protected.ts";
import { restorePointKey } from "./keys/restore.ts";
import { runKey } from "./keys/runs.ts";
import { targetsByAccountPrefix } from "./keys/storage.ts";
import { type Engine, engineKey, engineScope, OFFLINE_AFTER_MS } from "./engines.ts";
import { COUNT_UP, counterValue, getManyValues } from "./kv.ts";
import type { Policy } from "./policies.ts";
import { countVisiblePolicies, listPolicyNames } from "./policy_names.ts";
import {
  isRpoBreached,
  listProtectedObjects,
  type ObjectMetric,
  type ProtectedObject,
  rpoDueAt,
} from "./protected.ts";
import { type Actor, inScope } from "./rbac.ts";
import type { RestorePoint } from "./restore_points.ts";
import type { Run } from "./runs.ts";
import type { StorageTarget } from "./storage.ts";
import { targetKey, targetScope } from "./storage_keys.ts";
import {
  failingKey,
  latestOutcomeKey,
  runDailyKey,
  runOutcomeKey,
  verifyFailedKey,
} from "./keys/dashboard.ts";
export { failingKey, latestOutcomeKey, runDailyKey, runOutcomeKey, verifyFailedKey };

/** The org part of a counter key: the org id, "-" for account-level records, "*" for the whole account. */
export function orgPart(orgId: string | null): string {
  return orgId ?? "-";
}
const ACCOUNT = "*";

/** The outcomes the dashboard counts. Skipped runs (engine offline) are not backups and are not counted. */
export type Outcome = "success" | "warning" | "failed";

const DAILY_SHIFT: Record<Outcome, bigint> = { success: 0n, warning: 21n, failed: 42n };
const DAILY_MASK = (1n << 21n) - 1n;
/** The three counts of a packed day. */
export function unpackDaily(v: unknown): Record<Outcome, number> {
  const n = v instanceof Deno.KvU64 ? v.value : 0n;
  return {
    success: Number((n >> DAILY_SHIFT.success) & DAILY_MASK),
    warning: Number((n >> DAILY_SHIFT.warning) & DAILY_MASK),
    failed: Number((n >> DAILY_SHIFT.failed) & DAILY_MASK),
  };
}
export interface LatestOutcome {
  endedAt: string;
  failingKey: Deno.KvKey | null;
}

const MINUTE_MS = 60_000;
const HOUR_MS = 3_600_000;
const DAY_MS = 86_400_000;

/**
 * The time a finished run counts at: its end as reported, but never later than `now`, when we learn
 * of it (an engine's clock running ahead must not hide a run from "the last 24 hours"); `now` when the
 * run has no end.
 */
function outcomeTime(run: Pick<Run, "endedAt">, now: Date): Date {
  const t = run.endedAt ? Date.parse(run.endedAt) : NaN;
  return Number.isFinite(t) ? new Date(Math.min(t, now.getTime())) : now;
}

/**
 * Adds to `op` what a finished backup run changes on the dashboard: its outcome counters (always) and
 * the failed-backups queue (only when it is the newest outcome of its policy and host: results can
 * arrive out of order). `latest` is that pair's entry, read before and checked. Call it exactly once
 * per run, in the operation that finishes it.
 */
export function countRunOutcome(
  op: Deno.AtomicOperation,
  run: Run,
  latest: Deno.KvEntryMaybe<LatestOutcome>,
  now: Date,
): void {
  if (run.status !== "success" && run.status !== "warning" && run.status !== "failed") return;
  countOutcomeBuckets(op, run, now);
  const at = outcomeTime(run, now).toISOString();
  op.check(latest);
  if (latest.value && latest.value.endedAt > at) return;
  if (latest.value?.failingKey) op.delete(latest.value.failingKey);
  const failing = run.status === "failed" ? failingKey(run.accountId, at, run.id) : null;
  if (failing) op.set(failing, orgPart(run.orgId));
  op.set(latestOutcomeKey(run.policyId, run.hostId), { endedAt: at, failingKey: failing });
}

/** Adds to `op` the sums of a finished run: minute and hour buckets per org and for the account, and the policy's day. */
export function countOutcomeBuckets(op: Deno.AtomicOperation, run: Run, now: Date): void {
  if (run.status !== "success" && run.status !== "warning" && run.status !== "failed") return;
  const at = outcomeTime(run, now).toISOString();
  for (const org of [orgPart(run.orgId), ACCOUNT]) {
    op.sum(runOutcomeKey(run.accountId, org, "m", at.slice(0, 16), run.status), COUNT_UP);
    op.sum(runOutcomeKey(run.accountId, org, "h", at.slice(0, 13), run.status), COUNT_UP);
  }
  op.sum(runDailyKey(run.policyId, at.slice(0, 10)), 1n << DAILY_SHIFT[run.status]);
}

/** Org parts an actor reads counters from: the whole account, or its orgs plus account-level records. */
function counterOrgs(actor: Actor): string[] {
  return actor.orgScope === "all" ? [ACCOUNT] : [...actor.orgScope, "-"];
}

// ---------------------------------------------------------------------------------------------------
// Summary

export interface Summary {
  protected: number;
  atRisk: number;
  rpoBreach: number;
  unprotectedHosts: number;
}

/**
 * The four summary counts in the actor's scope at `now`. RPO breaches are the swept ones (a counter)
 * plus the objects that fell due since the last sweep (a short index range): exact at `now`.
 */
export async function readSummary(kv: Deno.Kv, actor: Actor, now: Date): Promise<Summary> {
  const out: Summary = { protected: 0, atRisk: 0, rpoBreach: 0, unprotectedHosts: 0 };
  if (!actor.accountId) return out;
  const field: Record<ObjectMetric, keyof Summary> = {
    protected: "protected",
    at_risk: "atRisk",
    breached: "rpoBreach",
  };
  const visible = (org: string) => inScope(actor, { accountId: actor.accountId!, orgId: org });
  for await (const e of kv.list({ prefix: objectCountsPrefix(actor.accountId) })) {
    if (visible(String(e.key[2]))) out[field[e.key[3] as ObjectMetric]] += counterValue(e.value);
  }
  for await (const e of kv.list({ prefix: unprotectedHostsPrefix(actor.accountId) })) {
    if (visible(String(e.key[2]))) out.unprotectedHosts += counterValue(e.value);
  }
  const due = kv.list<string>({
    start: objectsDueBound(actor.accountId),
    end: objectsDueBound(actor.accountId, now.toISOString()),
  });
  for await (const e of due) if (visible(e.value)) out.rpoBreach++;
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Engines

export interface EngineStatusCounts {
  online: number;
  offline: number;
  /** Pending (never heard from), degraded or being deleted. */
  other: number;
}

/**
 * Engines online and offline in scope. Online means a heartbeat within the last 3 minutes (the same
 * rule as the sweep, evaluated at `now`, so a dead engine is offline here before the sweep runs).
 */
export async function readEngineStatus(kv: Deno.Kv, actor: Actor, now: Date): Promise<EngineStatusCounts> {
  const out: EngineStatusCounts = { online: 0, offline: 0, other: 0 };
  if (!actor.accountId) return out;
  for (
    const engine of await readByPointerIndex<Engine>(kv, enginesByAccountPrefix(actor.accountId), engineKey)
  ) {
    if (!inScope(actor, engineScope(engine))) continue;
    const last = engine.lastHeartbeatAt ? Date.parse(engine.lastHeartbeatAt) : null;
    const stale = last === null || now.getTime() - last > OFFLINE_AFTER_MS;
    if (engine.status === "pending" || engine.status === "deleting") out.other++;
    else if (stale || engine.status === "offline") out.offline++;
    else if (engine.status === "online") out.online++;
    else out.other++;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Last 24 hours

export interface Activity {
  success: number;
  failed: number;
  warning: number;
}

/** The start of "the last 24 hours" at `now`: the first of the 1,440 whole minutes up to the current one. */
export function last24hStart(now: Date): Date {
  return new Date(Math.floor(now.getTime() / MINUTE_MS) * MINUTE_MS - 1439 * MINUTE_MS);
}

/**
 * Backup runs that finished in the last 24 hours: the 1,440 whole minutes up to and including the
 * current one (from `last24hStart`). Reads at most ~120 minute buckets and 24 hour buckets per org part,
 * whatever the history.
 */
export async function readLast24h(kv: Deno.Kv, actor: Actor, now: Date): Promise<Activity> {
  const out: Activity = { success: 0, failed: 0, warning: 0 };
  if (!actor.accountId) return out;
  const endMinute = Math.floor(now.getTime() / MINUTE_MS) * MINUTE_MS;
  const startMinute = last24hStart(now).getTime();
  const firstFullHour = Math.ceil(startMinute / HOUR_MS) * HOUR_MS;
  const currentHour = Math.floor(endMinute / HOUR_MS) * HOUR_MS;
  const iso = (ms: number) => new Date(ms).toISOString();
  for (const org of counterOrgs(actor)) {
    const base = runOutcomesPrefix(actor.accountId, org);
    const ranges: [Deno.KvKey, Deno.KvKey][] = [
      // the minutes before the first whole hour, the whole hours, the minutes of the current hour
      [[...base, "m", iso(startMinute).slice(0, 16)], [...base, "m", iso(firstFullHour).slice(0, 16)]],
      [[...base, "h", iso(firstFullHour).slice(0, 13)], [...base, "h", iso(currentHour).slice(0, 13)]],
      [[...base, "m", iso(Math.max(currentHour, firstFullHour)).slice(0, 16)], [
        ...base,
        "m",
        iso(endMinute + MINUTE_MS).slice(0, 16),
      ]],
    ];
    for (const [start, end] of ranges) {
      if (String(start[4]) >= String(end[4])) continue;
      for await (const e of kv.list({ start, end })) out[e.key[5] as Outcome] += counterValue(e.value);
    }
  }
  return out;
}

/** Deletes minute buckets older than two days (hour buckets and policy days are kept a year). */
export async function purgeOutcomeBuckets(kv: Deno.Kv, now: Date): Promise<number> {
  const minuteCutoff = new Date(now.getTime() - 2 * DAY_MS).toISOString().slice(0, 16);
  const hourCutoff = new Date(now.getTime() - 400 * DAY_MS).toISOString().slice(0, 13);
  let deleted = 0;
  let op = kv.atomic();
  let n = 0;
  for await (const e of kv.list({ prefix: runOutcomesPrefix() }, { batchSize: 500 })) {
    const [, , , grain, slot] = e.key as string[];
    if ((grain === "m" && slot < minuteCutoff) || (grain === "h" && slot < hourCutoff)) {
      op.delete(e.key);
      n++;
      deleted++;
      if (n === 500) {
        await op.commit();
        op = kv.atomic();
        n = 0;
      }
    }
  }
  if (n) await op.commit();
  return deleted;
}

// ---------------------------------------------------------------------------------------------------
// Exception queues

export interface FailedBackupRow {
  run: Run;
  policyName: string;
  hostName: string | null;
}

/** Backups whose latest run failed, most recent failure first (top `limit`). */
export async function failedBackupsQueue(kv: Deno.Kv, actor: Actor, limit = 10): Promise<FailedBackupRow[]> {
  if (!actor.accountId) return [];
  const ids = await idsInScope(kv, actor, failingPrefix(actor.accountId), 3, limit);
  const runs = await getManyValues<Run>(kv, ids.map((id) => runKey(id)));
  const names = await namesOf(kv, runs.map((r) => r.policyId), runs.map((r) => r.hostId));
  return runs.map((run) => ({
    run,
    policyName: names.policies.get(run.policyId) ?? "(deleted policy)",
    hostName: run.hostId ? names.hosts.get(run.hostId) ?? "(unknown host)" : null,
  }));
}

/** The policy (or platform job) and host names of some runs, by id. */
export async function namesOfRuns(
  kv: Deno.Kv,
  runs: Pick<Run, "policyId" | "hostId">[],
): Promise<{ policies: Map<string, string>; hosts: Map<string, string> }> {
  return await namesOf(kv, runs.map((r) => r.policyId), runs.map((r) => r.hostId));
}

async function namesOf(kv: Deno.Kv, policyIds: string[], hostIds: (string | null)[]) {
  const pIds = [...new Set(policyIds)];
  const hIds = [...new Set(hostIds.filter((h): h is string => !!h))];
  const policies = await getManyValues<Policy>(kv, pIds.map((id) => policyKey(id)));
  // A platform job (platforms.ts) is the "policy" of its runs.
  const found = new Set(policies.map((p) => p.id));
  const platformJobs = await getManyValues<{ id: string; name: string }>(
    kv,
    pIds.filter((id) => !found.has(id)).map((id) => platformJobKey(id)),
  );
  const hosts = await getManyValues<{ id: string; hostname: string }>(kv, hIds.map((id) => hostKey(id)));
  return {
    policies: new Map([...policies, ...platformJobs].map((p) => [p.id, p.name])),
    hosts: new Map(hosts.map((h) => [h.id, h.hostname])),
  };
}

export interface BreachRow {
  object: ProtectedObject;
  breachMs: number;
  dueAt: string;
}

/** Objects past their RPO at `now`, longest breach first (top `limit`). */
export async function rpoBreachQueue(kv: Deno.Kv, actor: Actor, now: Date, limit = 10): Promise<BreachRow[]> {
  const page = await listProtectedObjects(kv, actor, { rpoBreach: "true", limit }, now);
  return page.values.filter((o) => isRpoBreached(o, now)).map((object) => {
    const due = rpoDueAt(object)!;
    return { object, breachMs: now.getTime() - due, dueAt: new Date(due).toISOString() };
  });
}

/** Storage targets in warning or critical health (one record per target; critical first). */
export async function storageHealthQueue(kv: Deno.Kv, actor: Actor): Promise<StorageTarget[]> {
  if (!actor.accountId) return [];
  return (await readByPointerIndex<StorageTarget>(kv, targetsByAccountPrefix(actor.accountId), targetKey))
    .filter((t) => inScope(actor, targetScope(t)) && (t.health === "warning" || t.health === "critical"))
    .sort((a, b) =>
      (a.health === b.health ? 0 : a.health === "critical" ? -1 : 1) ||
      (b.capacity?.usagePercent ?? 0) - (a.capacity?.usagePercent ?? 0)
    );
}

export interface VerificationRow {
  point: RestorePoint;
  policyName: string;
  hostName: string | null;
}

/** Restore points whose verification failed, most recent first (top `limit`). */
export async function verificationFailuresQueue(
  kv: Deno.Kv,
  actor: Actor,
  limit = 10,
): Promise<VerificationRow[]> {
  if (!actor.accountId) return [];
  const ids = await idsInScope(kv, actor, verifyFailedPrefix(actor.accountId), 3, limit);
  const points = (await getManyValues<RestorePoint>(kv, ids.map((id) => restorePointKey(id))))
    .filter((p) => p.verification === "failed");
  const names = await namesOf(kv, points.map((p) => p.policyId), points.map((p) => p.hostId));
  return points.map((point) => ({
    point,
    policyName: names.policies.get(point.policyId) ?? "(deleted policy)",
    hostName: point.hostId ? names.hosts.get(point.hostId) ?? "(unknown host)" : null,
  }));
}

// ---------------------------------------------------------------------------------------------------
// Heatmap

export interface HeatmapRow {
  policyId: string;
  policyName: string;
  /** One cell per day, oldest first. */
  days: { day: string; success: number; warning: number; failed: number }[];
}

/**
 * Backup outcomes per policy per UTC day for the last `days` days (today included), for up to `limit`
 * policies in scope by name starting at `offset`. Reads one short range per policy.
 */
export async function readHeatmap(
  kv: Deno.Kv,
  actor: Actor,
  now: Date,
  options: { days?: number; limit?: number; offset?: number } = {},
): Promise<{ rows: HeatmapRow[]; total: number; dayLabels: string[] }> {
  const days = options.days ?? 30;
  const dayLabels = Array.from(
    { length: days },
    (_, i) => new Date(now.getTime() - (days - 1 - i) * DAY_MS).toISOString().slice(0, 10),
  );
  if (!actor.accountId) return { rows: [], total: 0, dayLabels };
  // The visible policies in name order from the name index (only as far as the page), their number from
  // the per-org counters; only the page's policies are read.
  const offset = options.offset ?? 0;
  const limit = options.limit ?? 15;
  const [names, total] = await Promise.all([
    listPolicyNames(kv, actor, { max: offset + limit }),
    countVisiblePolicies(kv, actor),
  ]);
  const slice = await getManyValues<Policy>(kv, names.slice(offset).map((e) => policyKey(e.id)));
  const rows = await Promise.all(slice.map(async (p) => {
    const cells = new Map(dayLabels.map((day) => [day, { day, success: 0, warning: 0, failed: 0 }]));
    const range = kv.list({ start: runDailyBound(p.id, dayLabels[0]), end: runDailyBound(p.id, "end") });
    for await (const e of range) {
      const cell = cells.get(String(e.key[2]));
      if (!cell) continue;
      const counts = unpackDaily(e.value);
      cell.success += counts.success;
      cell.warning += counts.warning;
      cell.failed += counts.failed;
    }
    return { policyId: p.id, policyName: p.name, days: [...cells.values()] };
  }));
  return { rows, total, dayLabels };
}
