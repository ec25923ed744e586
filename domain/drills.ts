/**
 * Restore drills (issue 21 item 2): a drill policy restores, on a schedule, the newest complete restore
 * point of every (backup policy, host) in its scope — a sample of N files or the whole point — to a scratch
 * folder on a chosen agent, which checks every restored byte against the repository and every restored
 * file against the backup's record (its chunk ids), measures the time to restore (the RTO) and the
 * throughput, deletes the scratch copy and reports pass or fail with the failing files by name.
 *
 * Pure rules (unit-tested): `drillFiresInMinute` (due computation), `pickDrillTargets` (scope resolution),
 * `drillVerdict` and `rtoBreached` (the breach rule). The rest reads and writes KV: CRUD with its audit
 * entry in the same atomic operation, `dispatchDueDrills` (the cron, idempotent per drill and minute),
 * `applyDrillJobOutcome` (called from job_outcomes.ts when a `restore_drill` job reports), runs and trend, the
 * "Last proven restore" per policy, and alerts (`drill_failed` critical, `rto_breach` warning; both
 * resolved by the next passing drill of the same drill, policy and host).
 *
 * Permissions: a drill writes backed-up data onto a host (for a while), so creating, changing, running and
 * deleting one needs `backup.restore` — like a restore — on the drill (its agent host's organization) and on
 * every policy and host it names; reading drills and their runs needs `backup.view`. A drill acts within
 * the org scope of whoever last saved it (`actsForOrgs`): at dispatch, a (policy, host) pair outside it —
 * a host of another organization assigned to a policy in scope — is skipped, as Restore would hide its
 * points. Restored data is never shown to anyone: the scratch copy lives only on the chosen agent and is
 * deleted by the drill itself.
 */
import { readByPointerIndex } from "./pointer_index.ts";
import type { PolicyHostRecord } from "./policy_host.ts";
import { assignmentsByHostPrefix, assignmentsByPolicyPrefix } from "./keys/policies.ts";
import { z } from "zod";
import { type Alert, type AlertReason, raiseAlert, readOpenAlert, resolveAlert } from "./alerts.ts";
import { appendAudit, auditTarget } from "./audit.ts";
import { compileCron } from "./cron_rules.ts";
import { NotFoundError, ValidationError } from "./errors.ts";
import { type Host, hostKey, hostScope } from "./hosts.ts";
import { newId } from "./ids.ts";
import { cancelJob, getJob, getJobs, type Job, queueJobInOp } from "./job_queue.ts";
import { getManyValues, withRetry } from "./kv.ts";
import type { Policy } from "./policies.ts";
import { policyKey } from "./policy_keys.ts";
import { type Actor, authorize, can, inScope } from "./rbac.ts";
import { pathMismatchForHost, RestorePath } from "./restore_paths.ts";
import type { RestorePoint } from "./restore_points.ts";
import { restorePointKey } from "./keys/restore.ts";
import { CronExpression } from "./schedules.ts";
import { type ProvenRestore, type ProvenView, setProvenInOp, visibleProven } from "./proven_restores.ts";
import { DisplayName } from "./validation.ts";
import {
  drillByNameKey,
  drillKey,
  drillRunByJobKey,
  drillRunKey,
  drillRunsByDrillKey,
  drillRunsByDrillPrefix,
  drillsByAccountKey,
  drillsByAccountPrefix,
  drillSlotKey,
  drillsPrefix,
  openDrillRunKey,
  openDrillRunsPrefix,
  provenRestoreKey,
  provenRestoresPrefix,
} from "./keys/drills.ts";
import { openAlertsSubjectRange } from "./keys/alerts.ts";
import { restorePointsByHostPrefix } from "./keys/restore.ts";
export {
  drillByNameKey,
  drillKey,
  drillRunByJobKey,
  drillRunKey,
  drillRunsByDrillKey,
  drillsByAccountKey,
  drillSlotKey,
  openDrillRunKey,
  provenRestoreKey,
};

export const DRILL_MODES = ["sample", "whole"] as const;
export type DrillMode = (typeof DRILL_MODES)[number];
export const DRILL_SCOPES = ["policies", "hosts"] as const;
export type DrillScope = (typeof DRILL_SCOPES)[number];
export const DRILL_MODE_LABELS: Record<DrillMode, string> = {
  sample: "A sample of files",
  whole: "The whole restore point",
};
export const DRILL_SCOPE_LABELS: Record<DrillScope, string> = {
  policies: "Backup policies",
  hosts: "Hosts",
};

/** Most policies or hosts one drill names. */
export const MAX_DRILL_SCOPE = 50;
/** Most files a sample drill restores. */
export const MAX_SAMPLE_COUNT = 1000;
/** The longest RTO objective: a week. */
export const MAX_RTO_SECONDS = 7 * 86_400;
/** Most (policy, host) targets one drill dispatch restores; the rest wait for the next slot. */
export const MAX_TARGETS_PER_DISPATCH = 50;
/** Restore points of one (policy, host) read back to find its newest complete one. */
const POINT_LOOKBACK = 20;
/** Failures kept with a drill run (the rest counted). */
export const MAX_KEPT_FAILURES = 100;
/** How long a drill's job may wait for its agent before the run fails and the job is cancelled. */
export const DRILL_PICKUP_MS = 6 * 3_600_000;
/** Runs the trend shows. */
export const TREND_LENGTH = 30;

export interface DrillPolicy {
  id: string;
  accountId: string;
  /** The organization of the agent host that runs the drill. */
  orgId: string | null;
  name: string;
  /** 5-field cron (UTC). */
  schedule: string;
  scopeType: DrillScope;
  policyIds: string[];
  hostIds: string[];
  mode: DrillMode;
  /** Files restored per (policy, host) in sample mode. */
  sampleCount: number;
  /** The host whose agent restores (the scratch folder is on it). */
  agentHostId: string;
  /** An absolute folder on the agent; each run restores into its own subfolder and deletes it. */
  scratchPath: string;
  /** The recovery time objective: a passing drill slower than this raises an `rto_breach` alert. */
  rtoObjectiveSeconds: number;
  /** Objectives of single backup policies, overriding `rtoObjectiveSeconds` for their points. */
  policyRtoObjectives: Array<{ policyId: string; rtoObjectiveSeconds: number }>;
  enabled: boolean;
  /** The org scope of whoever last saved the drill: it restores only policies and hosts inside it. */
  actsForOrgs: "all" | string[];
  createdAt: string;
  updatedAt: string;
}

export type DrillRunStatus = "pending" | "running" | "passed" | "failed";

export interface DrillFailure {
  path: string;
  message: string;
}

/** A drill run's `hostId` is the host whose restore point is restored. */
export interface DrillRun extends PolicyHostRecord {
  id: string;
  drillId: string;
  drillName: string;
  restorePointId: string;
  restorePointCompletedAt: string;
  agentHostId: string;
  jobId: string | null;
  mode: DrillMode;
  /** "cron" (the schedule's minute) or "manual". */
  trigger: "cron" | "manual";
  status: DrillRunStatus;
  /** Time to restore and verify, seconds (null until the agent reports). */
  rtoSeconds: number | null;
  rtoObjectiveSeconds: number;
  rtoBreached: boolean;
  files: number;
  bytes: number;
  bytesPerSecond: number | null;
  /** Files read back and found equal to the backup's record. */
  verified: number;
  failures: DrillFailure[];
  failureCount: number;
  /** Whether the agent removed the scratch copy (null until it reports). */
  scratchRemoved: boolean | null;
  error: string | null;
  createdAt: string;
  endedAt: string | null;
}

export type { ProvenRestore };

// ---------------------------------------------------------------------------------------------------
// Input

const Id = z.string({ error: "is required" }).regex(/^[0-9A-Z]{26}$/, "must be an id");
const IdList = z.array(Id, { error: "must be a list of ids" }).max(
  MAX_DRILL_SCOPE,
  `must name at most ${MAX_DRILL_SCOPE}`,
).transform((ids) => [...new Set(ids)]);

const RtoSeconds = z.coerce.number({ error: "must be a number" }).int("must be a whole number")
  .min(1, "must be at least 1 second").max(MAX_RTO_SECONDS, `must be at most ${MAX_RTO_SECONDS} seconds`);

/** A drill policy as created or replaced (POST and PUT /api/v1/drills; the form parses the same). */
export const DrillInput = z.strictObject({
  name: DisplayName,
  schedule: CronExpression(),
  scopeType: z.enum(DRILL_SCOPES, { error: "must be policies or hosts" }),
  policyIds: IdList.default([]),
  hostIds: IdList.default([]),
  mode: z.enum(DRILL_MODES, { error: "must be sample or whole" }).default("sample"),
  sampleCount: z.coerce.number({ error: "must be a number" }).int("must be a whole number")
    .min(1, "must be at least 1").max(MAX_SAMPLE_COUNT, `must be at most ${MAX_SAMPLE_COUNT}`).default(20),
  agentHostId: Id,
  scratchPath: RestorePath.refine((p) => p !== "/" && !/^[A-Z]:\\$/.test(p), {
    message: "must be a folder, not the root",
  }),
  rtoObjectiveSeconds: RtoSeconds,
  /** Objectives of single backup policies, overriding `rtoObjectiveSeconds` for their restore points. */
  policyRtoObjectives: z.array(
    z.strictObject({ policyId: Id, rtoObjectiveSeconds: RtoSeconds }),
    { error: "must be a list of {policyId, rtoObjectiveSeconds}" },
  ).max(MAX_DRILL_SCOPE, `must name at most ${MAX_DRILL_SCOPE} policies`).default([]),
  enabled: z.boolean({ error: "must be true or false" }).default(true),
}).superRefine((v, ctx) => {
  const seen = new Set<string>();
  for (const [i, o] of v.policyRtoObjectives.entries()) {
    if (seen.has(o.policyId)) {
      ctx.addIssue({ code: "custom", path: ["policyRtoObjectives", i], message: "names a policy twice" });
    }
    seen.add(o.policyId);
  }
  if (v.scopeType === "policies" && v.policyIds.length === 0) {
    ctx.addIssue({ code: "custom", path: ["policyIds"], message: "choose at least one policy" });
  }
  if (v.scopeType === "hosts" && v.hostIds.length === 0) {
    ctx.addIssue({ code: "custom", path: ["hostIds"], message: "choose at least one host" });
  }
});
export type DrillInput = z.input<typeof DrillInput>;

function parseInput(input: unknown): z.output<typeof DrillInput> {
  const parsed = DrillInput.safeParse(input);
  if (parsed.success) return parsed.data;
  const fields: Record<string, string> = {};
  for (const issue of parsed.error.issues) {
    const names = issue.code === "unrecognized_keys" ? issue.keys : [issue.path.map(String).join(".")];
    for (const name of names) {
      const field = name || "body";
      const message = issue.code === "unrecognized_keys" ? "is not a known field" : issue.message;
      fields[field] ??= message[0].toUpperCase() + message.slice(1);
    }
  }
  const [first, message] = Object.entries(fields)[0] ?? ["body", "is invalid"];
  throw new ValidationError(`The ${first} ${message[0].toLowerCase()}${message.slice(1)}`, fields);
}

// ---------------------------------------------------------------------------------------------------
// Pure rules

/** True when `schedule` (UTC cron) fires in the minute starting at `minuteStart` (seconds ignored). */
export function drillFiresInMinute(schedule: string, minuteStart: Date): boolean {
  const minute = Math.floor(minuteStart.getTime() / 60_000) * 60_000;
  const r = compileCron(schedule, "UTC");
  if (!r.ok) return false;
  const next = r.cron.nextRun(new Date(minute - 1));
  return next !== null && next.getTime() < minute + 60_000;
}

/** The minute slot of `now` (`YYYY-MM-DDTHH:MM`, UTC). */
export function minuteSlot(now: Date): string {
  return now.toISOString().slice(0, 16);
}

/** A point a drill may restore: its policy, host, completion and status. */
export type CandidatePoint = Pick<
  RestorePoint,
  "id" | "policyId" | "hostId" | "completedAt" | "status" | "engineRestorePointId"
>;

/**
 * Scope resolution: for every (policy, host) pair of the scope — a policy scope takes every host of the
 * listed policies, a host scope every policy of the listed hosts — the newest complete point (by
 * completion time, then id). Points without a host (BES-made) and points outside the scope are ignored.
 * Sorted by policy, then host.
 */
export function pickDrillTargets<P extends CandidatePoint>(
  drill: Pick<DrillPolicy, "scopeType" | "policyIds" | "hostIds">,
  points: Iterable<P>,
): P[] {
  const inScope = (p: P) =>
    p.hostId !== null &&
    (drill.scopeType === "policies"
      ? drill.policyIds.includes(p.policyId)
      : drill.hostIds.includes(p.hostId));
  const best = new Map<string, P>();
  for (const p of points) {
    if (p.status !== "complete" || !inScope(p)) continue;
    const key = `${p.policyId}\u0000${p.hostId}`;
    const current = best.get(key);
    if (
      !current || p.completedAt > current.completedAt ||
      (p.completedAt === current.completedAt && p.id > current.id)
    ) best.set(key, p);
  }
  return [...best.values()].sort((a, b) =>
    a.policyId.localeCompare(b.policyId) || a.hostId!.localeCompare(b.hostId!)
  );
}

/** The RTO objective a drill holds a policy's points to: the policy's own, else the drill's. */
export function rtoObjectiveFor(
  drill: Pick<DrillPolicy, "rtoObjectiveSeconds" | "policyRtoObjectives">,
  policyId: string,
): number {
  return (drill.policyRtoObjectives ?? []).find((o) => o.policyId === policyId)?.rtoObjectiveSeconds ??
    drill.rtoObjectiveSeconds;
}

/** The breach rule: a measured RTO strictly above the objective breaches it. */
export function rtoBreached(rtoSeconds: number, objectiveSeconds: number): boolean {
  return rtoSeconds > objectiveSeconds;
}

/** What an agent reported for a drill (`output.drill` of its result). */
export interface DrillReport {
  files: number;
  bytes: number;
  verified: number;
  /** Time to restore and verify, milliseconds. */
  restoreMs: number;
  failures: DrillFailure[];
  failureCount: number;
  scratchRemoved: boolean;
}

/**
 * The verdict on a drill: it passes only when the job succeeded, restored at least one file, every
 * restored file was verified, nothing failed, and the scratch copy was removed. A passing drill slower
 * than the objective breaches it (`rtoBreached`); a failing one has no RTO to judge.
 */
export function drillVerdict(
  jobStatus: "success" | "warning" | "failed",
  report: DrillReport | null,
  objectiveSeconds: number,
): {
  status: "passed" | "failed";
  rtoSeconds: number | null;
  bytesPerSecond: number | null;
  breached: boolean;
} {
  if (!report) return { status: "failed", rtoSeconds: null, bytesPerSecond: null, breached: false };
  const rtoSeconds = Math.round(report.restoreMs) / 1000;
  const bytesPerSecond = report.restoreMs > 0 ? Math.round(report.bytes / (report.restoreMs / 1000)) : null;
  const passed = jobStatus === "success" && report.files > 0 && report.failureCount === 0 &&
    report.failures.length === 0 && report.verified >= report.files && report.scratchRemoved;
  return {
    status: passed ? "passed" : "failed",
    rtoSeconds,
    bytesPerSecond,
    breached: passed && rtoBreached(rtoSeconds, objectiveSeconds),
  };
}

/** Reads `output.drill` of a result leniently (engines are external): null when it is not a report. */
export function readDrillReport(output: unknown): DrillReport | null {
  const drill = (output as { drill?: unknown } | null)?.drill as Record<string, unknown> | undefined;
  if (!drill || typeof drill !== "object") return null;
  const count = (v: unknown) => typeof v === "number" && Number.isFinite(v) && v >= 0 ? Math.floor(v) : null;
  const files = count(drill.files);
  const bytes = count(drill.bytes);
  const restoreMs = typeof drill.restoreMs === "number" && Number.isFinite(drill.restoreMs) &&
      drill.restoreMs >= 0
    ? drill.restoreMs
    : null;
  if (files === null || bytes === null || restoreMs === null) return null;
  const failures = (Array.isArray(drill.failures) ? drill.failures : []).flatMap((f) => {
    const item = f as { path?: unknown; message?: unknown } | null;
    return item && typeof item.path === "string"
      ? [{ path: item.path.slice(0, 4096), message: String(item.message ?? "").slice(0, 500) }]
      : [];
  });
  return {
    files,
    bytes,
    verified: count(drill.verified) ?? 0,
    restoreMs,
    failures: failures.slice(0, MAX_KEPT_FAILURES),
    failureCount: Math.max(failures.length, count(drill.failureCount) ?? 0),
    scratchRemoved: drill.scratchRemoved === true,
  };
}

// ---------------------------------------------------------------------------------------------------
// CRUD

function policyScope(p: Pick<Policy, "accountId" | "orgId">) {
  return { accountId: p.accountId, orgId: p.orgId };
}

function drillScope(d: Pick<DrillPolicy, "accountId" | "orgId">) {
  return { accountId: d.accountId, orgId: d.orgId };
}

/** The drill if the actor may see it (backup.view); NotFoundError otherwise. */
export async function requireDrill(kv: Deno.Kv, actor: Actor, id: string): Promise<DrillPolicy> {
  if (!/^[0-9A-Z]{26}$/.test(id)) throw new NotFoundError(`Drill ${id.slice(0, 40)} not found`);
  const drill = (await kv.get<DrillPolicy>(drillKey(id))).value;
  if (!drill || !inScope(actor, drillScope(drill))) throw new NotFoundError(`Drill ${id} not found`);
  authorize(actor, "backup.view", drillScope(drill));
  return drill;
}

/** The drills of the actor's account in scope, by name. */
export async function listDrills(kv: Deno.Kv, actor: Actor): Promise<DrillPolicy[]> {
  authorize(actor, "backup.view");
  if (!actor.accountId) return [];
  return (await readByPointerIndex<DrillPolicy>(kv, drillsByAccountPrefix(actor.accountId), drillKey)).filter(
    (d) => inScope(actor, drillScope(d)),
  )
    .sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Checks what a drill names, for `actor` in `accountId`: the agent host, and every policy or host of
 * its scope, must exist in the account, in the actor's scope, with backup.restore (else a 422 naming the
 * field — an id the actor cannot see reads as unknown), and the scratch path must suit the agent's OS
 * (`pathMismatchForHost`: a Windows path only on a Windows agent, a POSIX one elsewhere). Returns the
 * agent host.
 */
async function checkReferences(
  kv: Deno.Kv,
  actor: Actor,
  accountId: string,
  data: z.output<typeof DrillInput>,
): Promise<Host> {
  const usable = (o: { accountId: string; orgId?: string | null } | null) =>
    o !== null && o.accountId === accountId && can(actor, "backup.restore", o);
  const agent = (await kv.get<Host>(hostKey(data.agentHostId))).value;
  if (!agent || !usable(hostScope(agent)) || agent.status === "decommissioned" || agent.decommissionedAt) {
    throw new ValidationError("The agent host is unknown, decommissioned or outside your scope", {
      agentHostId: "Choose a host in service that you manage",
    });
  }
  // The scratch folder is on the agent: a Windows path on a Linux agent (or the reverse) would only fail
  // when the drill runs, on the agent.
  const mismatch = pathMismatchForHost(data.scratchPath, agent.os, agent.hostname);
  if (mismatch) throw new ValidationError(`Scratch path ${mismatch}`, { scratchPath: mismatch });
  if (data.scopeType === "policies") {
    const found = await getManyValues<Policy>(kv, data.policyIds.map(policyKey));
    const ok = new Set(found.filter((p) => usable(policyScope(p))).map((p) => p.id));
    const missing = data.policyIds.filter((id) => !ok.has(id));
    if (missing.length) {
      throw new ValidationError(`Unknown policy ${missing[0]}`, {
        policyIds: `Policy ${missing[0]} is unknown or outside your scope`,
      });
    }
  }
  if (data.policyRtoObjectives.length) {
    const ids = data.policyRtoObjectives.map((o) => o.policyId);
    const found = await getManyValues<Policy>(kv, ids.map(policyKey));
    const ok = new Set(found.filter((p) => usable(policyScope(p))).map((p) => p.id));
    const missing = ids.filter((id) => !ok.has(id));
    if (missing.length) {
      throw new ValidationError(`Unknown policy ${missing[0]}`, {
        policyRtoObjectives: `Policy ${missing[0]} is unknown or outside your scope`,
      });
    }
  }
  if (data.scopeType === "hosts") {
    const found = await getManyValues<Host>(kv, data.hostIds.map(hostKey));
    const ok = new Set(found.filter((h) => usable(hostScope(h))).map((h) => h.id));
    const missing = data.hostIds.filter((id) => !ok.has(id));
    if (missing.length) {
      throw new ValidationError(`Unknown host ${missing[0]}`, {
        hostIds: `Host ${missing[0]} is unknown or outside your scope`,
      });
    }
  }
  return agent;
}

function describeDrill(d: DrillPolicy): string {
  const scope = d.scopeType === "policies"
    ? `${d.policyIds.length} policy(ies)`
    : `${d.hostIds.length} host(s)`;
  const mode = d.mode === "sample" ? `a sample of ${d.sampleCount} file(s)` : "whole restore points";
  const own = d.policyRtoObjectives.length ? ` (${d.policyRtoObjectives.length} policy objective(s))` : "";
  return `"${d.name}" (${d.schedule}; ${scope}; ${mode}; RTO objective ${d.rtoObjectiveSeconds} s${own}; ` +
    `agent ${d.agentHostId}:${d.scratchPath}${d.enabled ? "" : "; disabled"})`;
}

/** Creates a drill policy (backup.restore). Throws ValidationError naming the field. */
export async function createDrill(
  kv: Deno.Kv,
  actor: Actor,
  input: unknown,
  now: Date,
): Promise<DrillPolicy> {
  authorize(actor, "backup.restore");
  const data = parseInput(input);
  // The system (CLI, tests) acts in the account of the drill's agent host.
  const accountId = actor.accountId ??
    (actor.kind === "system" ? (await kv.get<Host>(hostKey(data.agentHostId))).value?.accountId : null);
  if (!accountId) {
    throw new ValidationError("The agent host is unknown", { agentHostId: "Choose a host in service" });
  }
  const agent = await checkReferences(kv, actor, accountId, data);
  const at = now.toISOString();
  const drill: DrillPolicy = {
    id: newId(now),
    accountId,
    orgId: agent.orgId,
    ...data,
    actsForOrgs: actor.orgScope,
    createdAt: at,
    updatedAt: at,
  };
  const byName = drillByNameKey(drill.accountId, drill.name);
  const op = kv.atomic()
    .check({ key: byName, versionstamp: null })
    .set(drillKey(drill.id), drill)
    .set(drillsByAccountKey(drill.accountId, drill.id), drill.id)
    .set(byName, drill.id);
  appendAudit(op, actor, {
    ...auditTarget("drill", drill),
    action: "drill.create",
    summary: `Created restore drill ${describeDrill(drill)}`,
  }, now);
  if (!(await op.commit()).ok) {
    throw new ValidationError(`A drill named ${drill.name} already exists`, { name: "Is already used" });
  }
  return drill;
}

/** Replaces a drill's settings (backup.restore on it); it then acts within the actor's org scope. */
export async function updateDrill(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: unknown,
  now: Date,
): Promise<DrillPolicy> {
  const data = parseInput(input);
  const attempt = async (): Promise<{ value: DrillPolicy } | null> => {
    const current = await requireDrill(kv, actor, id);
    authorize(actor, "backup.restore", drillScope(current));
    const entry = await kv.get<DrillPolicy>(drillKey(id));
    const agent = await checkReferences(kv, actor, current.accountId, data);
    const next: DrillPolicy = {
      ...current,
      ...data,
      orgId: agent.orgId,
      actsForOrgs: actor.orgScope,
      updatedAt: now.toISOString(),
    };
    const op = kv.atomic().check(entry).set(drillKey(id), next);
    if (next.name.toLowerCase() !== current.name.toLowerCase()) {
      op.check({ key: drillByNameKey(next.accountId, next.name), versionstamp: null })
        .delete(drillByNameKey(current.accountId, current.name))
        .set(drillByNameKey(next.accountId, next.name), id);
    }
    appendAudit(op, actor, {
      accountId: next.accountId,
      orgId: next.orgId,
      action: "drill.update",
      objectType: "drill",
      objectId: id,
      summary: `Changed restore drill to ${describeDrill(next)}`,
    }, now);
    if ((await op.commit()).ok) return { value: next };
    const holder = (await kv.get<string>(drillByNameKey(next.accountId, next.name))).value;
    if (holder && holder !== id) {
      throw new ValidationError(`A drill named ${next.name} already exists`, { name: "Is already used" });
    }
    return null;
  };
  return await withRetry(attempt, 5, "The drill changed concurrently; try again");
}

/** Deletes a drill (backup.restore); its past runs stay readable through their ids, its trend goes. */
export async function deleteDrill(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<DrillPolicy> {
  const attempt = async (): Promise<{ value: DrillPolicy } | null> => {
    const drill = await requireDrill(kv, actor, id);
    authorize(actor, "backup.restore", drillScope(drill));
    const entry = await kv.get<DrillPolicy>(drillKey(id));
    // Its open alerts (drill_failed, rto_breach of every policy × host) are resolved with it: no alert
    // is left open about a drill that no longer exists. They go in the deleting operation itself; only a
    // drill with more than ALERTS_PER_DELETE open alerts (a KV operation takes 100 checks) has the
    // surplus resolved first, in checked batches, a retry resolving whatever is left.
    const alerts = await openDrillAlerts(kv, id);
    if (alerts.length > ALERTS_PER_DELETE) {
      const extra = alerts.splice(ALERTS_PER_DELETE);
      for (let b = 0; b < extra.length; b += ALERTS_PER_DELETE) {
        const batch = kv.atomic().check(entry);
        for (const a of extra.slice(b, b + ALERTS_PER_DELETE)) resolveAlert(batch, a, now);
        await batch.commit();
      }
      return null; // read again, with the surplus resolved (this counts as a try)
    }
    const op = kv.atomic().check(entry)
      .delete(drillKey(id))
      .delete(drillsByAccountKey(drill.accountId, id))
      .delete(drillByNameKey(drill.accountId, drill.name));
    appendAudit(op, actor, {
      accountId: drill.accountId,
      orgId: drill.orgId,
      action: "drill.delete",
      objectType: "drill",
      objectId: id,
      summary: `Deleted restore drill ${describeDrill(drill)}${
        alerts.length ? `; resolved its ${alerts.length} open alert${alerts.length === 1 ? "" : "s"}` : ""
      }`,
    }, now);
    for (const a of alerts) resolveAlert(op, a, now);
    return (await op.commit()).ok ? { value: drill } : null;
  };
  return await withRetry(attempt, 5, "The drill changed concurrently; try again");
}

/** Open alerts resolved in a drill's deleting operation (2 checks each; the drill's entry takes 1). */
const ALERTS_PER_DELETE = 40;

/** The open alerts (drill_failed, rto_breach) of every (policy, host) of a drill, read for resolveAlert. */
async function openDrillAlerts(kv: Deno.Kv, drillId: string) {
  // Alert subjects are `<drillId>~<policyId>~<hostId>` (alertSubject): one key range holds them all.
  const out: Array<Awaited<ReturnType<typeof readOpenAlert>>> = [];
  for await (
    const e of kv.list<string>(openAlertsSubjectRange("drill", drillId))
  ) {
    out.push(await readOpenAlert(kv, "drill", String(e.key[2]), e.key[3] as AlertReason));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Dispatch

/** The newest points of every (policy, host) of the drill's scope (POINT_LOOKBACK per pair). */
async function candidatePoints(kv: Deno.Kv, drill: DrillPolicy): Promise<RestorePoint[]> {
  const pairs: Array<[string, string]> = [];
  if (drill.scopeType === "policies") {
    for (const policyId of drill.policyIds) {
      for await (const e of kv.list({ prefix: assignmentsByPolicyPrefix(policyId) })) {
        pairs.push([policyId, String(e.key[2])]);
      }
    }
  } else {
    for (const hostId of drill.hostIds) {
      for await (const e of kv.list({ prefix: assignmentsByHostPrefix(hostId) })) {
        pairs.push([String(e.key[2]), hostId]);
      }
    }
  }
  const out: RestorePoint[] = [];
  for (const [policyId, hostId] of pairs) {
    const ids: string[] = [];
    const prefix = restorePointsByHostPrefix(policyId, hostId);
    for await (const e of kv.list<string>({ prefix }, { reverse: true, limit: POINT_LOOKBACK })) {
      ids.push(e.value);
    }
    out.push(...await getManyValues<RestorePoint>(kv, ids.map(restorePointKey)));
  }
  return out;
}

/**
 * The (policy, host) targets a drill restores now: the newest complete point of each pair of its scope
 * whose policy still exists in the drill's account, policy and host inside the drill's `actsForOrgs`
 * (at most MAX_TARGETS_PER_DISPATCH).
 */
export async function resolveDrillTargets(
  kv: Deno.Kv,
  drill: DrillPolicy,
): Promise<Array<{ point: RestorePoint; policy: Policy; host: Host | null }>> {
  const picked = pickDrillTargets(drill, await candidatePoints(kv, drill)).slice(0, MAX_TARGETS_PER_DISPATCH);
  const policies = new Map(
    (await getManyValues<Policy>(kv, [...new Set(picked.map((p) => p.policyId))].map(policyKey)))
      .map((p) => [p.id, p]),
  );
  const hosts = new Map(
    (await getManyValues<Host>(kv, [...new Set(picked.map((p) => p.hostId!))].map(hostKey)))
      .map((h) => [h.id, h]),
  );
  const orgs = drill.actsForOrgs ?? "all";
  const within = (orgId: string | null) => orgs === "all" || orgId === null || orgs.includes(orgId);
  return picked.flatMap((point) => {
    const policy = policies.get(point.policyId);
    const host = hosts.get(point.hostId!) ?? null;
    if (!policy || policy.accountId !== drill.accountId || !within(policy.orgId)) return [];
    if (host && (host.accountId !== drill.accountId || !within(host.orgId))) return [];
    return [{ point, policy, host }];
  });
}

function newRun(
  drill: DrillPolicy,
  target: { point: RestorePoint; policy: Policy; host: Host | null },
  trigger: DrillRun["trigger"],
  now: Date,
): DrillRun {
  return {
    id: newId(now),
    drillId: drill.id,
    drillName: drill.name,
    accountId: drill.accountId,
    // The run (its files, failures and alerts) belongs to the org whose data it restores, which may differ
    // from the drill's (its agent's) when an all-scope author names another org's policy or host.
    orgId: target.host?.orgId ?? target.policy.orgId ?? drill.orgId,
    policyId: target.policy.id,
    policyName: target.policy.name,
    hostId: target.point.hostId!,
    hostName: target.host?.hostname ?? "(deleted host)",
    restorePointId: target.point.id,
    restorePointCompletedAt: target.point.completedAt,
    agentHostId: drill.agentHostId,
    jobId: null,
    mode: drill.mode,
    trigger,
    status: "pending",
    rtoSeconds: null,
    rtoObjectiveSeconds: rtoObjectiveFor(drill, target.policy.id),
    rtoBreached: false,
    files: 0,
    bytes: 0,
    bytesPerSecond: null,
    verified: 0,
    failures: [],
    failureCount: 0,
    scratchRemoved: null,
    error: null,
    createdAt: now.toISOString(),
    endedAt: null,
  };
}

/**
 * Starts one drill now: a drill run and a `restore_drill` job on the drill's agent for every target,
 * all in one atomic operation with `slot` claimed (a slot already claimed dispatches nothing: returns
 * []). A drill whose agent is decommissioned or gone records one failed run saying so.
 */
async function dispatchDrill(
  kv: Deno.Kv,
  drill: DrillPolicy,
  slot: Deno.KvKey,
  trigger: DrillRun["trigger"],
  now: Date,
  audit: { actor: Actor } | null,
): Promise<DrillRun[]> {
  const agent = (await kv.get<Host>(hostKey(drill.agentHostId))).value;
  const targets = await resolveDrillTargets(kv, drill);
  const op = kv.atomic().check({ key: slot, versionstamp: null }).set(slot, true, { expireIn: 86_400_000 });
  const runs: DrillRun[] = [];
  for (const target of targets) {
    const run = newRun(drill, target, trigger, now);
    if (!agent || agent.status === "decommissioned" || agent.decommissionedAt) {
      runs.push({
        ...run,
        status: "failed",
        error: `The drill's agent host ${agent?.hostname ?? drill.agentHostId} is decommissioned or deleted`,
        endedAt: now.toISOString(),
      });
      continue;
    }
    const point = target.point;
    const job = queueJobInOp(op, {
      kind: "restore_drill",
      principal: `agent:${agent.id}`,
      accountId: drill.accountId,
      orgId: drill.orgId,
      priority: "normal",
      maxAttempts: 2,
      payload: {
        drillId: drill.id,
        drillRunId: run.id,
        restorePointId: point.id,
        engineRestorePointId: point.engineRestorePointId ?? point.id,
        policyId: point.policyId,
        sourceHostId: point.hostId,
        ...(point.repository ? { repository: point.repository } : {}),
        bes: { id: point.engineId },
        mode: drill.mode,
        sampleCount: drill.sampleCount,
        scratchPath: drill.scratchPath,
        seed: run.id,
      },
    }, now);
    runs.push({ ...run, jobId: job.id });
  }
  for (const run of runs) {
    op.check({ key: drillRunKey(run.id), versionstamp: null })
      .set(drillRunKey(run.id), run)
      .set(drillRunsByDrillKey(drill.id, run.id), run.id);
    if (run.jobId) op.set(drillRunByJobKey(run.jobId), run.id).set(openDrillRunKey(run.id), run.id);
  }
  if (audit) {
    appendAudit(op, audit.actor, {
      ...auditTarget("drill", drill),
      action: "drill.run",
      summary: `Started restore drill "${drill.name}" now: ${runs.length} restore point(s)`,
    }, now);
  }
  if (!(await op.commit()).ok) return [];
  return runs;
}

/**
 * The cron handler (jobs/dispatch_drills.ts): every enabled drill whose schedule fires in the minute of
 * `now` is dispatched once (its (drill, minute) slot is claimed in the same atomic operation as its runs
 * and jobs, so a tick run twice, or by two instances, dispatches once). Also catches up open runs whose
 * job ended without a result (lease expired, cancelled). Returns what it did.
 */
export async function dispatchDueDrills(
  kv: Deno.Kv,
  now: Date,
): Promise<{ drills: number; runs: number; caughtUp: number }> {
  let drills = 0;
  let runs = 0;
  const minute = minuteSlot(now);
  for await (const e of kv.list<DrillPolicy>({ prefix: drillsPrefix() })) {
    const drill = e.value;
    if (!drill.enabled || !drillFiresInMinute(drill.schedule, now)) continue;
    const started = await dispatchDrill(kv, drill, drillSlotKey(drill.id, minute), "cron", now, null);
    if (started.length) drills++;
    runs += started.length;
  }
  return { drills, runs, caughtUp: await catchUpOpenDrillRuns(kv, now) };
}

/** Starts a drill now, outside its schedule (backup.restore on it). Returns its runs (none: nothing to restore). */
export async function runDrillNow(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<DrillRun[]> {
  const drill = await requireDrill(kv, actor, id);
  authorize(actor, "backup.restore", drillScope(drill));
  // Started by hand, the drill acts within both its author's org scope and the runner's: someone who sees
  // the drill (its agent's org) must not restore another org's data through it.
  const saved = drill.actsForOrgs ?? "all";
  const runner = actor.orgScope;
  const actsForOrgs = saved === "all"
    ? runner
    : runner === "all"
    ? saved
    : saved.filter((o) => runner.includes(o));
  const runs = await dispatchDrill(
    kv,
    { ...drill, actsForOrgs },
    drillSlotKey(drill.id, `manual-${newId(now)}`),
    "manual",
    now,
    {
      actor,
    },
  );
  if (runs.length === 0) {
    throw new ValidationError(
      "Nothing to restore: no policy or host of this drill has a complete restore point yet",
      { scope: "No complete restore point in scope" },
    );
  }
  return runs;
}

// ---------------------------------------------------------------------------------------------------
// Outcomes

function alertSubject(run: Pick<DrillRun, "drillId" | "policyId" | "hostId">): string {
  return `${run.drillId}~${run.policyId}~${run.hostId}`;
}

/** A run brought up to date with its job (without writing): running while leased, failed when it ended without a result. */
function runWithJob(run: DrillRun, job: Job | null): DrillRun {
  if (run.status === "passed" || run.status === "failed" || !job || job.id !== run.jobId) return run;
  if (job.result) return run; // applied by applyDrillJobOutcome
  if (job.status === "failed" || job.status === "cancelled") {
    return {
      ...run,
      status: "failed",
      error: job.status === "cancelled"
        ? "The drill's job was cancelled"
        : `The agent did not finish the drill (${job.failureReason ?? "job failed"})`,
      endedAt: job.updatedAt,
    };
  }
  return job.status === "leased" ? { ...run, status: "running" } : run;
}

/**
 * Writes an ended run (failed or passed) with its alerts and, for a passing one, the policy's "Last
 * proven restore" — in one atomic operation checked against the run's entry. Returns false on a lost race.
 */
async function settleRun(
  kv: Deno.Kv,
  entry: Deno.KvEntry<DrillRun>,
  next: DrillRun,
  now: Date,
): Promise<boolean> {
  const op = kv.atomic().check(entry).set(drillRunKey(next.id), next).delete(openDrillRunKey(next.id));
  const subject = alertSubject(next);
  const base = {
    accountId: next.accountId,
    orgId: next.orgId,
    subjectType: "drill" as Alert["subjectType"],
    subjectId: subject,
    subjectName: `${next.drillName}: ${next.policyName} on ${next.hostName}`,
  };
  const failedAlert = await readOpenAlert(kv, "drill", subject, "drill_failed");
  if (next.status === "failed") {
    const first = next.failures[0];
    raiseAlert(op, failedAlert, {
      ...base,
      reason: "drill_failed",
      severity: "critical",
      message: `Restore drill ${next.drillName} failed for ${next.policyName} on ${next.hostName}: ${
        first ? `${first.path}: ${first.message}` : next.error ?? "no reason given"
      }${next.failureCount > 1 ? ` (and ${next.failureCount - 1} more)` : ""}`,
    }, now);
  } else {
    resolveAlert(op, failedAlert, now);
    const rtoAlert = await readOpenAlert(kv, "drill", subject, "rto_breach");
    if (next.rtoBreached) {
      raiseAlert(op, rtoAlert, {
        ...base,
        reason: "rto_breach",
        severity: "warning",
        message:
          `Restore drill ${next.drillName}: ${next.policyName} on ${next.hostName} took ${next.rtoSeconds} s ` +
          `to restore, above its RTO objective of ${next.rtoObjectiveSeconds} s`,
      }, now);
    } else resolveAlert(op, rtoAlert, now);
    // The policy's org keys the proof's time index; a policy deleted meanwhile gets no proof (checked:
    // the policy cascade removes proofs after the record).
    const policy = await kv.get<Pick<Policy, "orgId">>(policyKey(next.policyId));
    const provenKey = provenRestoreKey(next.accountId, next.policyId);
    const proven = await kv.get<ProvenRestore>(provenKey);
    if (policy.value && (!proven.value || proven.value.at <= (next.endedAt ?? ""))) {
      op.check(policy);
      setProvenInOp(op, proven, {
        accountId: next.accountId,
        orgId: next.orgId,
        policyId: next.policyId,
        policyOrgId: policy.value.orgId ?? null,
        policyName: next.policyName,
        hostId: next.hostId,
        hostName: next.hostName,
        drillId: next.drillId,
        drillName: next.drillName,
        drillRunId: next.id,
        at: next.endedAt ?? now.toISOString(),
        rtoSeconds: next.rtoSeconds ?? 0,
        rtoObjectiveSeconds: next.rtoObjectiveSeconds,
        bytesPerSecond: next.bytesPerSecond,
      });
    }
  }
  return (await op.commit()).ok;
}

/**
 * Applies a `restore_drill` job's recorded result to its run (called from job_outcomes.ts `applyJobOutcome`):
 * the verdict (`drillVerdict`), the figures and failures, alerts and the proven restore. Idempotent.
 */
export async function applyDrillJobOutcome(kv: Deno.Kv, job: Job, now: Date): Promise<void> {
  const result = job.result;
  if (!result) return;
  const runId = (await kv.get<string>(drillRunByJobKey(job.id))).value;
  if (!runId) return;
  // Commit retry (retry.ts): five lost races throw CommitConflictError (the result route answers 503
  // `busy`; the engine re-posts the result). Giving up quietly left the drill run running for ever.
  const attempt = async (): Promise<{ value: void } | null> => {
    const entry = await kv.get<DrillRun>(drillRunKey(runId));
    const run = entry.value;
    if (!run || run.status === "passed" || run.status === "failed") return { value: undefined };
    const report = readDrillReport(result.output);
    const verdict = drillVerdict(result.status, report, run.rtoObjectiveSeconds);
    const error = verdict.status === "failed"
      ? (result.error ? `${result.error.reason}: ${result.error.message}`.slice(0, 2000) : null) ??
        (report && !report.scratchRemoved ? "The scratch copy was not removed" : "The drill did not pass")
      : null;
    const next: DrillRun = {
      ...run,
      status: verdict.status,
      rtoSeconds: verdict.rtoSeconds,
      rtoBreached: verdict.breached,
      bytesPerSecond: verdict.bytesPerSecond,
      files: report?.files ?? 0,
      bytes: report?.bytes ?? 0,
      verified: report?.verified ?? 0,
      failures: report?.failures ?? [],
      failureCount: report?.failureCount ?? 0,
      scratchRemoved: report?.scratchRemoved ?? null,
      error,
      endedAt: result.endedAt && Date.parse(result.endedAt) <= now.getTime()
        ? result.endedAt
        : now.toISOString(),
    };
    return await settleRun(kv, entry as Deno.KvEntry<DrillRun>, next, now) ? { value: undefined } : null;
  };
  await withRetry(attempt, 5, `The result of drill run ${runId} conflicted; post it again`);
}

/**
 * Ends the open runs whose job ended without a result (the dispatch tick), and those whose agent has not
 * picked the job up within DRILL_PICKUP_MS (the job is cancelled: an agent back much later must not restore
 * an old point). Returns how many.
 */
export async function catchUpOpenDrillRuns(kv: Deno.Kv, now: Date): Promise<number> {
  let n = 0;
  const ids: string[] = [];
  for await (const e of kv.list<string>({ prefix: openDrillRunsPrefix() }, { limit: 500 })) ids.push(e.value);
  for (const run of await getManyValues<DrillRun>(kv, ids.map(drillRunKey))) {
    let job = run.jobId ? await getJob(kv, run.jobId) : null;
    if (job?.status === "queued" && now.getTime() - Date.parse(run.createdAt) > DRILL_PICKUP_MS) {
      job = await cancelJob(kv, job.id, now);
      if (job.status === "cancelled") {
        const entry = await kv.get<DrillRun>(drillRunKey(run.id));
        if (entry.value?.status !== run.status) continue;
        const next: DrillRun = {
          ...run,
          status: "failed",
          error: `The agent ${run.agentHostId} did not pick the drill up within ${
            DRILL_PICKUP_MS / 3_600_000
          } hours (offline?); the job was cancelled`,
          endedAt: now.toISOString(),
        };
        if (await settleRun(kv, entry as Deno.KvEntry<DrillRun>, next, now)) n++;
        continue;
      }
    }
    if (job?.result) {
      await applyDrillJobOutcome(kv, job, now);
      n++;
      continue;
    }
    const next = runWithJob(run, job);
    if (next.status !== "failed") continue;
    const entry = await kv.get<DrillRun>(drillRunKey(run.id));
    if (
      entry.value?.status === run.status && await settleRun(kv, entry as Deno.KvEntry<DrillRun>, next, now)
    ) {
      n++;
    }
  }
  return n;
}

// ---------------------------------------------------------------------------------------------------
// Reads

/** A drill's runs, newest first (the trend), at most `limit`, brought up to date with their jobs. */
export async function listDrillRuns(
  kv: Deno.Kv,
  actor: Actor,
  drillId: string,
  limit = TREND_LENGTH,
): Promise<DrillRun[]> {
  const drill = await requireDrill(kv, actor, drillId);
  const ids: string[] = [];
  for await (
    const e of kv.list<string>({ prefix: drillRunsByDrillPrefix(drill.id) }, {
      reverse: true,
      limit: Math.max(1, Math.min(200, limit)),
    })
  ) ids.push(e.value);
  const runs = (await getManyValues<DrillRun>(kv, ids.map(drillRunKey))).filter((r) =>
    inScope(actor, drillScope(r))
  );
  const jobs = new Map(
    (await getJobs(kv, runs.flatMap((r) => r.jobId ? [r.jobId] : []))).map((j) => [j.id, j]),
  );
  return runs.map((r) => runWithJob(r, r.jobId ? jobs.get(r.jobId) ?? null : null));
}

/** One drill run (backup.view in its scope); NotFoundError otherwise. */
export async function requireDrillRun(kv: Deno.Kv, actor: Actor, id: string): Promise<DrillRun> {
  if (!/^[0-9A-Z]{26}$/.test(id)) throw new NotFoundError(`Drill run ${id.slice(0, 40)} not found`);
  const run = (await kv.get<DrillRun>(drillRunKey(id))).value;
  if (!run || !inScope(actor, drillScope(run))) throw new NotFoundError(`Drill run ${id} not found`);
  authorize(actor, "backup.view", drillScope(run));
  return runWithJob(run, run.jobId ? await getJob(kv, run.jobId) : null);
}

/**
 * "Last proven restore" per backup policy in the actor's scope: every policy, with its last passing
 * drill (null: never proven), by name — the host and drill blanked when the restored host is of an org
 * outside the actor's scope (`visibleProven`). Reads every proof: the API's list; the dashboard card
 * reads the bounded `lastProvenRestores` (proven_restores.ts).
 */
export async function provenRestores(
  kv: Deno.Kv,
  actor: Actor,
  policies: Policy[],
): Promise<Array<{ policy: Pick<Policy, "id" | "name">; proven: ProvenView | null }>> {
  authorize(actor, "backup.view");
  if (!actor.accountId) return [];
  const proven = new Map<string, ProvenRestore>();
  for await (const e of kv.list<ProvenRestore>({ prefix: provenRestoresPrefix(actor.accountId) })) {
    proven.set(e.value.policyId, e.value);
  }
  return policies.filter((p) => inScope(actor, policyScope(p))).map((p) => {
    const found = proven.get(p.id);
    return { policy: { id: p.id, name: p.name }, proven: found ? visibleProven(actor, found) : null };
  });
}
