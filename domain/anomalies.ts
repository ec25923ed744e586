/**
 * The anomaly guard applied (the rule itself is anomaly.ts): each backup's figures are judged against its
 * (policy, host) baseline when its result is recorded, in the same atomic write as the run and its restore
 * point. A flagged backup:
 * - becomes an **anomaly** awaiting review (the dashboard's "Suspicious changes" queue);
 * - raises a critical `suspicious_change` alert on the host naming the figures (alert events notify);
 * - marks its restore point **suspect** and the host's last clean point (the newest point of the policy and
 *   host that was judged normal while nothing was under review) **last clean**;
 * - **freezes prune** for the host: retention neither expires its points nor queues prune jobs for them
 *   (`readPruneFreeze`), under any policy, and the retention preview says why.
 *
 * Review (backup.manage, the anomaly's org, audited in the same atomic write):
 * - **approve** as an expected change: the baseline accepts its figures, the host's freeze loses it (and
 *   lifts when no other anomaly of the host is open; the alert resolves then);
 * - **confirm incident**: the freeze and the alert stay until an operator **releases** it explicitly.
 *
 * The baseline is one bounded record per (policy, host) — the figures of the last `ANOMALY_RULE.window`
 * accepted backups, the last clean point and the newest point — never a scan of runs.
 */
import { restorePointKey } from "./keys/restore.ts";
import { z } from "zod";
import { LimitField } from "./list_filters.ts";
import { ANOMALY_RULE, type AnomalyVerdict, assessRun, type RunFigures } from "./anomaly.ts";
import { raiseAlert, readOpenAlert, resolveAlert } from "./alerts.ts";
import { appendAudit } from "./audit.ts";
import { orgPart } from "./dashboard.ts";
import { ConflictError, NotFoundError } from "./errors.ts";
import { newId } from "./ids.ts";
import type { Job } from "./job_queue.ts";
import { getManyValues, withRetry } from "./kv.ts";
import { idsInScope } from "./pointer_index.ts";
import { type Actor, authorize, inScope, systemActor } from "./rbac.ts";
import type { RetentionPreview } from "./retention.ts";
import type { RestorePoint } from "./restore_points.ts";
import type { PolicyHostRecord } from "./policy_host.ts";
import type { Run } from "./runs.ts";
import {
  anomaliesByAccountKey,
  anomaliesByAccountPrefix,
  anomalyByRunKey,
  anomalyKey,
  baselineKey,
  openAnomaliesKey,
  openAnomaliesPrefix,
  pruneFreezeKey,
} from "./keys/anomalies.ts";
export { anomaliesByAccountKey, anomalyByRunKey, anomalyKey, baselineKey, openAnomaliesKey, pruneFreezeKey };

export type AnomalyStatus = "pending" | "approved" | "incident" | "released";

export interface Anomaly extends PolicyHostRecord {
  id: string;
  runId: string;
  restorePointId: string;
  /** The host's newest point of the policy judged normal before this one (null: none yet). */
  lastCleanPointId: string | null;
  /** The backup's figures (what the baseline takes on approval). */
  figures: RunFigures;
  verdict: AnomalyVerdict;
  status: AnomalyStatus;
  flaggedAt: string;
  reviewedAt: string | null;
  reviewedBy: string | null;
  reviewNote: string | null;
  releasedAt: string | null;
  releasedBy: string | null;
  releaseNote: string | null;
}

/** The rolling baseline of one (policy, host). */
export interface AnomalyBaseline {
  policyId: string;
  hostId: string;
  /** Accepted backups' figures, oldest first, at most `ANOMALY_RULE.window`. */
  samples: RunFigures[];
  lastCleanPointId: string | null;
  newestPointId: string | null;
  updatedAt: string;
}

/** A host's prune freeze: while `anomalyIds` holds an open anomaly, retention leaves the host alone. */
export interface PruneFreeze {
  hostId: string;
  accountId: string;
  orgId: string | null;
  hostName: string;
  anomalyIds: string[];
  since: string;
}

/** How a restore point is marked by the guard (kept on the point). */
export interface PointAnomalyMark {
  mark: "suspect" | "last_clean";
  anomalyId: string;
}

/** The figures of a finished backup run, or null when its engine did not report what the rule needs. */
export function figuresOfRun(run: Run, point: RestorePoint): RunFigures | null {
  const s = run.stats;
  if (!s || s.added === undefined || s.modified === undefined || s.deleted === undefined) return null;
  if (s.bytesNew === undefined) return null;
  return {
    at: run.endedAt ?? point.completedAt,
    kind: point.type === "incremental" ? "incremental" : "full",
    files: s.files ?? point.fileCount,
    added: s.added,
    modified: s.modified,
    deleted: s.deleted,
    bytesNew: s.bytesNew,
    bytesNewIncompressible: s.bytesNewIncompressible ?? null,
    protectedBytes: run.protectedBytes,
  };
}

/** Whether the job's engine compared the snapshot with a previous one (a first backup has no changes to judge). */
function comparedWithPrevious(job: Job): boolean {
  const since = job.result?.output?.changesSince;
  return typeof since === "string" && since.length > 0;
}

/**
 * The host's prune freeze, for retention: `frozen` when an anomaly of the host is open. `entry` is to be
 * checked in the atomic write that expires the host's points, so a flag committing meanwhile makes it fail.
 */
export async function readPruneFreeze(
  kv: Deno.Kv,
  hostId: string,
): Promise<{ frozen: boolean; freeze: PruneFreeze | null; entry: Deno.KvEntryMaybe<PruneFreeze> }> {
  const entry = await kv.get<PruneFreeze>(pruneFreezeKey(hostId));
  const freeze = entry.value;
  return { frozen: Boolean(freeze?.anomalyIds.length), freeze, entry };
}

/**
 * Retention's guard for one protected object (a host id, or "bes"): `frozen` when the host's prune is frozen;
 * otherwise `check` adds to a write that expires its points a check that it is still not frozen.
 */
export async function pruneGuard(
  kv: Deno.Kv,
  object: string,
): Promise<{ frozen: boolean; check: (op: Deno.AtomicOperation) => void }> {
  if (object === "bes") return { frozen: false, check: () => {} };
  const { frozen, entry } = await readPruneFreeze(kv, object);
  return { frozen, check: (op) => void op.check(entry) };
}

/** The freezes of some hosts (by host id), for the retention preview. */
export async function pruneFreezesOf(kv: Deno.Kv, hostIds: string[]): Promise<Map<string, PruneFreeze>> {
  const freezes = await getManyValues<PruneFreeze>(kv, hostIds.map(pruneFreezeKey));
  return new Map(freezes.filter((f) => f.anomalyIds.length).map((f) => [f.hostId, f]));
}

/** A retention preview of one protected object, with why it keeps everything when its prune is frozen. */
export type FrozenPreview = RetentionPreview & { frozen?: string | null };

/**
 * Retention previews (keyed by protected object: host id or "bes") as retention will apply them: a host
 * whose prune is frozen keeps every point, each with the reason, and `frozen` says why.
 */
export async function withPruneFreezes(
  kv: Deno.Kv,
  previews: Record<string, RetentionPreview>,
): Promise<Record<string, FrozenPreview>> {
  const freezes = await pruneFreezesOf(kv, Object.keys(previews).filter((k) => k !== "bes"));
  if (!freezes.size) return previews;
  const out: Record<string, FrozenPreview> = { ...previews };
  for (const [hostId, freeze] of freezes) {
    const p = previews[hostId];
    if (!p) continue;
    const reasons = { ...p.reasons };
    for (const id of p.expire) reasons[id] = [...(reasons[id] ?? []), "prune frozen (suspicious change)"];
    out[hostId] = {
      ...p,
      keep: [...p.keep, ...p.expire],
      expire: [],
      bytesFreed: 0,
      reasons,
      needsConfirmation: false,
      warning: null,
      frozen: freezeReason(freeze),
    };
  }
  return out;
}

/** Why retention leaves a frozen host alone (the preview and the policy page show it). */
export function freezeReason(freeze: PruneFreeze): string {
  const n = freeze.anomalyIds.length;
  return `Prune frozen since ${freeze.since}: ${n} suspicious change${
    n === 1 ? "" : "s"
  } of ${freeze.hostName} ` +
    `await${
      n === 1 ? "s" : ""
    } review (Backup > Dashboard, Suspicious changes); nothing of this host expires until then`;
}

function alertMessage(hostName: string, policyName: string, verdict: AnomalyVerdict): string {
  return `Suspicious change on ${hostName} (policy ${policyName}): ${verdict.reasons.join("; ")}. ` +
    `Prune is frozen for ${hostName} until an operator reviews it.`;
}

/**
 * Judges a backup run's restore point against its baseline and adds the consequences to `op` (the write that
 * records the run and creates `point`, which must not be set in `op` yet: its mark is set here on the object).
 * Reads are checked by `op`. Nothing for runs other than agent backups that reported change counts.
 */
export async function assessBackupInOp(
  kv: Deno.Kv,
  op: Deno.AtomicOperation,
  input: { run: Run; job: Job; point: RestorePoint; policyName: string; hostName: string },
  now: Date,
): Promise<AnomalyVerdict | null> {
  const { run, job, point } = input;
  if (job.kind !== "backup" || !run.hostId) return null;
  if (run.status !== "success" && run.status !== "warning") return null;
  const figures = figuresOfRun(run, point);
  const bKey = baselineKey(run.policyId, run.hostId);
  const [baseEntry, freezeEntry] = await kv.getMany<[AnomalyBaseline, PruneFreeze]>([
    bKey,
    pruneFreezeKey(run.hostId),
  ]);
  op.check(baseEntry, freezeEntry);
  const baseline: AnomalyBaseline = baseEntry.value ?? {
    policyId: run.policyId,
    hostId: run.hostId,
    samples: [],
    lastCleanPointId: null,
    newestPointId: null,
    updatedAt: now.toISOString(),
  };
  const frozen = Boolean(freezeEntry.value?.anomalyIds.length);
  const next: AnomalyBaseline = { ...baseline, newestPointId: point.id, updatedAt: now.toISOString() };
  if (!figures || !comparedWithPrevious(job)) {
    // Nothing to judge (a first backup, or an engine that counts no changes): the point is clean unless
    // the host is under review.
    if (!frozen) next.lastCleanPointId = point.id;
    op.set(bKey, next);
    return null;
  }
  const verdict = assessRun(baseline.samples, figures);
  if (!verdict.flagged) {
    next.samples = [...baseline.samples, figures].slice(-ANOMALY_RULE.window);
    // While an anomaly of the host is open, later points are not vouched for: the last clean one stays.
    if (!frozen) next.lastCleanPointId = point.id;
    op.set(bKey, next);
    return verdict;
  }
  const at = now.toISOString();
  const anomaly: Anomaly = {
    id: newId(now),
    accountId: run.accountId,
    orgId: run.orgId,
    policyId: run.policyId,
    policyName: input.policyName,
    hostId: run.hostId,
    hostName: input.hostName,
    runId: run.id,
    restorePointId: point.id,
    lastCleanPointId: baseline.lastCleanPointId,
    figures,
    verdict,
    status: "pending",
    flaggedAt: at,
    reviewedAt: null,
    reviewedBy: null,
    reviewNote: null,
    releasedAt: null,
    releasedBy: null,
    releaseNote: null,
  };
  point.anomaly = { mark: "suspect", anomalyId: anomaly.id };
  if (baseline.lastCleanPointId) {
    const clean = await kv.get<RestorePoint>(restorePointKey(baseline.lastCleanPointId));
    if (clean.value && clean.value.status !== "expired") {
      op.check(clean).set(clean.key, {
        ...clean.value,
        anomaly: { mark: "last_clean", anomalyId: anomaly.id },
      });
    }
  }
  const freeze: PruneFreeze = freezeEntry.value && freezeEntry.value.anomalyIds.length
    ? { ...freezeEntry.value, anomalyIds: [...freezeEntry.value.anomalyIds, anomaly.id] }
    : {
      hostId: run.hostId,
      accountId: run.accountId,
      orgId: run.orgId,
      hostName: input.hostName,
      anomalyIds: [anomaly.id],
      since: at,
    };
  op.set(bKey, next)
    .set(anomalyKey(anomaly.id), anomaly)
    .set(anomaliesByAccountKey(anomaly.accountId, anomaly.id), orgPart(anomaly.orgId))
    .set(openAnomaliesKey(anomaly.accountId, anomaly.id), orgPart(anomaly.orgId))
    .set(anomalyByRunKey(run.id), anomaly.id)
    .set(pruneFreezeKey(run.hostId), freeze);
  raiseAlert(op, await readOpenAlert(kv, "host", run.hostId, "suspicious_change"), {
    accountId: run.accountId,
    orgId: run.orgId,
    subjectType: "host",
    subjectId: run.hostId,
    subjectName: input.hostName,
    reason: "suspicious_change",
    severity: "critical",
    message: alertMessage(input.hostName, input.policyName, verdict),
  }, now);
  appendAudit(op, systemActor("anomaly-guard"), {
    accountId: anomaly.accountId,
    orgId: anomaly.orgId,
    action: "anomaly.flagged",
    objectType: "anomaly",
    objectId: anomaly.id,
    summary:
      `Flagged run ${run.id} of ${input.hostName} (policy ${input.policyName}) and froze prune for the ` +
      `host: ${verdict.reasons.join("; ")}`,
  }, now);
  return verdict;
}

// ---------------------------------------------------------------------------------------------------
// Reading

/** The anomaly if the actor may see it (backup.view in its org); NotFoundError otherwise. */
export async function requireAnomaly(kv: Deno.Kv, actor: Actor, id: string): Promise<Anomaly> {
  const anomaly = /^[0-9A-Z]{26}$/.test(id) ? (await kv.get<Anomaly>(anomalyKey(id))).value : null;
  if (!anomaly || !inScope(actor, { accountId: anomaly.accountId, orgId: anomaly.orgId })) {
    throw new NotFoundError(`Anomaly ${id.slice(0, 40)} not found`);
  }
  authorize(actor, "backup.view", { accountId: anomaly.accountId, orgId: anomaly.orgId });
  return anomaly;
}

/** The anomaly of a run, if it was flagged and the actor may see the run (the caller checked). */
export async function anomalyOfRun(kv: Deno.Kv, runId: string): Promise<Anomaly | null> {
  const id = (await kv.get<string>(anomalyByRunKey(runId))).value;
  return id ? (await kv.get<Anomaly>(anomalyKey(id))).value : null;
}

/** The anomaly a restore point's mark refers to (null without a mark). */
export async function anomalyOfPoint(
  kv: Deno.Kv,
  point: Pick<RestorePoint, "anomaly">,
): Promise<Anomaly | null> {
  return point.anomaly ? (await kv.get<Anomaly>(anomalyKey(point.anomaly.anomalyId))).value : null;
}

/**
 * The actor's open anomalies (pending first, then confirmed incidents; newest first within each), at most
 * `limit`: the dashboard's "Suspicious changes" queue.
 */
export async function suspiciousChangesQueue(kv: Deno.Kv, actor: Actor, limit = 10): Promise<Anomaly[]> {
  if (!actor.accountId) return [];
  const ids = await idsInScope(kv, actor, openAnomaliesPrefix(actor.accountId), 2, 500);
  const open = (await getManyValues<Anomaly>(kv, ids.map(anomalyKey)))
    .filter((a) => a.status === "pending" || a.status === "incident");
  open.sort((a, b) =>
    (a.status === b.status ? 0 : a.status === "pending" ? -1 : 1) || b.id.localeCompare(a.id)
  );
  return open.slice(0, limit);
}

export const AnomalyListQuery = z.object({
  status: z.enum(["pending", "approved", "incident", "released", "open"], {
    error: "must be one of pending, approved, incident, released, open",
  }).optional(),
  limit: LimitField.default(50),
});
export type AnomalyListQuery = z.infer<typeof AnomalyListQuery>;

/** The actor's anomalies newest first, optionally of one status ("open": pending or incident). */
export async function listAnomalies(kv: Deno.Kv, actor: Actor, query: AnomalyListQuery): Promise<Anomaly[]> {
  if (!actor.accountId) return [];
  const out: Anomaly[] = [];
  let batch: string[] = [];
  const flush = async () => {
    for (const a of await getManyValues<Anomaly>(kv, batch.map(anomalyKey))) {
      if (
        !query.status || a.status === query.status ||
        (query.status === "open" && (a.status === "pending" || a.status === "incident"))
      ) out.push(a);
    }
    batch = [];
  };
  let scanned = 0;
  for await (
    const e of kv.list<string>({ prefix: anomaliesByAccountPrefix(actor.accountId) }, { reverse: true })
  ) {
    if (!inScope(actor, { accountId: actor.accountId, orgId: e.value === "-" ? null : e.value })) continue;
    batch.push(String(e.key[2]));
    if (batch.length >= 10) await flush();
    if (out.length >= query.limit || ++scanned >= 5000) break;
  }
  await flush();
  return out.slice(0, query.limit);
}

// ---------------------------------------------------------------------------------------------------
// Review

const Note = z.string().trim().max(500, "must be at most 500 characters").default("");

/** Approve or confirm: the operator ticks the confirmation; a note is optional. */
export const ReviewInput = z.object({
  confirm: z.literal(true, { error: "must be true: tick the confirmation" }),
  note: Note,
});
export type ReviewInput = z.input<typeof ReviewInput>;

/** Which review: approve as an expected change, confirm the incident, or release a confirmed incident. */
export type ReviewAction = "approve" | "incident" | "release";

const ALLOWED_FROM: Record<ReviewAction, AnomalyStatus> = {
  approve: "pending",
  incident: "pending",
  release: "incident",
};

/**
 * Reviews an anomaly (backup.manage in its org). Approve: the baseline accepts the figures and the host's
 * freeze loses the anomaly; confirm incident: nothing unfreezes; release (a confirmed incident): the freeze
 * loses it. When the freeze has no anomaly left it is lifted and the host's alert resolves. The anomaly, the
 * baseline, the freeze, the alert and the audit entry change in one atomic write; a review that lost a race
 * (the anomaly was reviewed meanwhile) throws ConflictError and changes nothing.
 */
export async function reviewAnomaly(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  action: ReviewAction,
  input: ReviewInput,
  now: Date,
): Promise<Anomaly> {
  const parsed = ReviewInput.parse(input);
  return await withRetry(async () => {
    const entry = await kv.get<Anomaly>(anomalyKey(id));
    const anomaly = entry.value;
    if (!anomaly || !inScope(actor, { accountId: anomaly.accountId, orgId: anomaly.orgId })) {
      throw new NotFoundError("Anomaly not found");
    }
    authorize(actor, "backup.manage", { accountId: anomaly.accountId, orgId: anomaly.orgId });
    if (anomaly.status !== ALLOWED_FROM[action]) {
      throw new ConflictError(
        action === "release"
          ? `Only a confirmed incident can be released; this one is ${anomaly.status}`
          : `This suspicious change was already reviewed (${anomaly.status})`,
      );
    }
    const at = now.toISOString();
    const next: Anomaly = action === "release"
      ? {
        ...anomaly,
        status: "released",
        releasedAt: at,
        releasedBy: actor.label,
        releaseNote: parsed.note || null,
      }
      : {
        ...anomaly,
        status: action === "approve" ? "approved" : "incident",
        reviewedAt: at,
        reviewedBy: actor.label,
        reviewNote: parsed.note || null,
      };
    const op = kv.atomic().check(entry).set(entry.key, next);
    if (action !== "incident") {
      op.delete(openAnomaliesKey(anomaly.accountId, anomaly.id));
      const freezeEntry = await kv.get<PruneFreeze>(pruneFreezeKey(anomaly.hostId));
      op.check(freezeEntry);
      const left = (freezeEntry.value?.anomalyIds ?? []).filter((a) => a !== anomaly.id);
      if (left.length) op.set(freezeEntry.key, { ...freezeEntry.value!, anomalyIds: left });
      else {
        op.delete(freezeEntry.key);
        resolveAlert(op, await readOpenAlert(kv, "host", anomaly.hostId, "suspicious_change"), now);
      }
    }
    if (action === "approve") {
      // The baseline accepts the change: its figures join the window, and the point counts as clean.
      const bEntry = await kv.get<AnomalyBaseline>(baselineKey(anomaly.policyId, anomaly.hostId));
      op.check(bEntry);
      if (bEntry.value) {
        const b = bEntry.value;
        const samples = [...b.samples, anomaly.figures].slice(-ANOMALY_RULE.window);
        const lastClean = b.lastCleanPointId && b.lastCleanPointId > anomaly.restorePointId
          ? b.lastCleanPointId
          : anomaly.restorePointId;
        op.set(bEntry.key, { ...b, samples, lastCleanPointId: lastClean, updatedAt: at });
      }
    }
    const verb = action === "approve"
      ? "Approved as an expected change"
      : action === "incident"
      ? "Confirmed as an incident (prune stays frozen)"
      : "Released the confirmed incident";
    appendAudit(op, actor, {
      accountId: anomaly.accountId,
      orgId: anomaly.orgId,
      action: `anomaly.${action}`,
      objectType: "anomaly",
      objectId: anomaly.id,
      summary: `${verb}: the suspicious change of ${anomaly.hostName} (run ${anomaly.runId})` +
        (parsed.note ? ` — ${parsed.note}` : ""),
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  });
}
