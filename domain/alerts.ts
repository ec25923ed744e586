/**
 * Alerts: open → acknowledged → resolved, at most one open alert per subject and reason. Raising and
 * resolving are added to the caller's atomic operation, so an alert changes together with the state
 * that caused it (an engine going offline and its critical alert commit as one).
 */
import { z } from "zod";
import { LimitField } from "./list_filters.ts";
import { appendAudit } from "./audit.ts";
import { CursorField, CursorList } from "./cursor.ts";
import { NotFoundError } from "./errors.ts";
import { newId } from "./ids.ts";
import { COUNT_DOWN, COUNT_UP, counterValue, getManyValues, type Page, withRetry } from "./kv.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import {
  alertCountsPrefix,
  alertEventKey,
  alertKey,
  alertsByAccountKey,
  alertsByAccountPrefix,
  openAlertCountKey,
  openAlertKey,
  openAlertsByAccountKey,
} from "./keys/alerts.ts";
export {
  alertEventKey,
  alertKey,
  alertsByAccountKey,
  openAlertCountKey,
  openAlertKey,
  openAlertsByAccountKey,
};

export const ALERT_SEVERITIES = ["critical", "warning", "info"] as const;
export type AlertSeverity = (typeof ALERT_SEVERITIES)[number];
export const ALERT_STATUSES = ["open", "acknowledged", "resolved"] as const;
export type AlertStatus = (typeof ALERT_STATUSES)[number];

/** Why an alert exists. One open alert per (subject, reason). */
export type AlertReason =
  | "engine_offline"
  | "engine_degraded"
  | "storage_warning"
  | "storage_critical"
  /** Projected full within 14 days at the current growth (the early warning, beside the status). */
  | "storage_full_soon"
  | "host_offline"
  | "backup_failed"
  | "rpo_breach"
  /** The consistency check found stored data breaking an invariant (invariant_checks.ts). */
  | "invariant_violation"
  /** A restore drill failed (drills.ts): a restore that was tried did not come back whole. */
  | "drill_failed"
  /** A restore drill passed but took longer than its RTO objective. */
  | "rto_breach"
  /** A backup's change rate or entropy was far outside the host's baseline (anomalies.ts): prune is frozen. */
  | "suspicious_change";

export interface Alert {
  id: string;
  accountId: string;
  orgId: string | null;
  /** `drill`: a (drill, policy, host), subjectId `<drillId>~<policyId>~<hostId>`. */
  subjectType: "engine" | "storage_target" | "host" | "protected_object" | "account" | "drill";
  subjectId: string;
  subjectName: string;
  reason: AlertReason;
  severity: AlertSeverity;
  status: AlertStatus;
  message: string;
  openedAt: string;
  lastSeenAt: string;
  /** How many times the condition was raised while this alert stayed open. */
  count: number;
  acknowledgedAt: string | null;
  acknowledgedBy: string | null;
  resolvedAt: string | null;
}

/** What raises an alert: its subject, reason, severity and message (`raiseAlert`). */
export interface RaiseInput {
  accountId: string;
  orgId: string | null;
  subjectType: Alert["subjectType"];
  subjectId: string;
  subjectName: string;
  reason: AlertReason;
  severity: AlertSeverity;
  message: string;
}

/**
 * The transactional outbox of alert notifications: raising a new alert or resolving one writes an
 * event here in the same atomic operation as the alert itself; the notification dispatcher
 * (notification_delivery.ts) routes each event to channels and deletes it. Repeats of an open alert
 * only bump its counter and write no event: five failures of one object notify once.
 */
export interface AlertEvent extends RaiseInput {
  id: string;
  event: "opened" | "resolved";
  alertId: string;
  /** The alert's repeat counter at the time of the event. */
  count: number;
  at: string;
}

function writeEvent(op: Deno.AtomicOperation, alert: Alert, event: AlertEvent["event"], now: Date) {
  const value: AlertEvent = {
    id: newId(now),
    event,
    alertId: alert.id,
    accountId: alert.accountId,
    orgId: alert.orgId,
    subjectType: alert.subjectType,
    subjectId: alert.subjectId,
    subjectName: alert.subjectName,
    reason: alert.reason,
    severity: alert.severity,
    message: alert.message,
    count: alert.count,
    at: now.toISOString(),
  };
  op.set(alertEventKey(value.id), value);
}

/**
 * Adds "raise" to `op`: creates the alert, or bumps the open one's count. `current` is the result of
 * `readOpenAlert` for the same subject and reason (its versionstamp is checked). Returns the alert.
 */
export function raiseAlert(
  op: Deno.AtomicOperation,
  current: { pointer: Deno.KvEntryMaybe<string>; alert: Deno.KvEntryMaybe<Alert> | null },
  input: RaiseInput,
  now: Date,
): Alert {
  const at = now.toISOString();
  op.check(current.pointer);
  if (current.alert?.value) {
    op.check(current.alert);
    const next = {
      ...current.alert.value,
      lastSeenAt: at,
      count: current.alert.value.count + 1,
      message: input.message,
    };
    op.set(alertKey(next.id), next);
    return next;
  }
  const alert: Alert = {
    id: newId(now),
    ...input,
    status: "open",
    openedAt: at,
    lastSeenAt: at,
    count: 1,
    acknowledgedAt: null,
    acknowledgedBy: null,
    resolvedAt: null,
  };
  op.set(alertKey(alert.id), alert)
    .set(openAlertKey(input.subjectType, input.subjectId, input.reason), alert.id)
    .set(alertsByAccountKey(alert.accountId, alert.id), alert.id)
    .set(openAlertsByAccountKey(alert.accountId, alert.id), alert.id)
    .sum(openAlertCountKey(alert.accountId, alert.orgId), COUNT_UP);
  writeEvent(op, alert, "opened", now);
  return alert;
}

/** Adds "resolve" to `op` when an alert is open for the subject and reason; no-op otherwise. */
export function resolveAlert(
  op: Deno.AtomicOperation,
  current: { pointer: Deno.KvEntryMaybe<string>; alert: Deno.KvEntryMaybe<Alert> | null },
  now: Date,
): Alert | null {
  op.check(current.pointer);
  const alert = current.alert?.value;
  if (!alert || !current.alert) return null;
  op.check(current.alert);
  const next: Alert = { ...alert, status: "resolved", resolvedAt: now.toISOString() };
  op.set(alertKey(alert.id), next)
    .delete(openAlertKey(alert.subjectType, alert.subjectId, alert.reason))
    .delete(openAlertsByAccountKey(alert.accountId, alert.id))
    .sum(openAlertCountKey(alert.accountId, alert.orgId), COUNT_DOWN);
  writeEvent(op, next, "resolved", now);
  return next;
}

/** Reads the open alert of a subject and reason (for `raiseAlert`/`resolveAlert`). */
export async function readOpenAlert(
  kv: Deno.Kv,
  subjectType: Alert["subjectType"],
  subjectId: string,
  reason: AlertReason,
) {
  const pointer = await kv.get<string>(openAlertKey(subjectType, subjectId, reason));
  const alert = pointer.value ? await kv.get<Alert>(alertKey(pointer.value)) : null;
  return { pointer, alert };
}

/**
 * How many open or acknowledged alerts the actor may see (the navigation badge): a counter per org kept
 * by `raiseAlert`/`resolveAlert` in the same atomic operation, so every page pays a few reads, not one
 * per open alert.
 */
export async function countOpenAlerts(kv: Deno.Kv, actor: Actor): Promise<number> {
  if (!actor.accountId) return 0;
  let total = 0;
  for await (const e of kv.list<Deno.KvU64>({ prefix: alertCountsPrefix(actor.accountId) })) {
    const org = String(e.key[2]);
    if (!inScope(actor, { accountId: actor.accountId, orgId: org === "-" ? null : org })) continue;
    total += counterValue(e.value);
  }
  return total;
}

/** The filter fields of the Alerts page, once: the page reads them leniently, the API strictly. */
const ALERT_FILTER_FIELDS = {
  status: z.enum(["", ...ALERT_STATUSES], { error: `must be one of ${ALERT_STATUSES.join(", ")}` }),
  severity: z.enum(["", ...ALERT_SEVERITIES], { error: `must be one of ${ALERT_SEVERITIES.join(", ")}` }),
  limit: LimitField,
};

/** Filters of the alerts list; every field falls back to its default, so a raw query object parses. */
export const AlertFilter = z.object({
  status: ALERT_FILTER_FIELDS.status.catch(""),
  severity: ALERT_FILTER_FIELDS.severity.catch(""),
  cursor: CursorField,
  limit: ALERT_FILTER_FIELDS.limit.catch(50),
});
export type AlertFilter = z.infer<typeof AlertFilter>;

/**
 * The same filters as a strict query (`GET /api/v1/alerts`): a bad value is refused (422 naming it). Unlike
 * the page, whose default is the open alerts, the API lists every status unless `status` is given.
 */
export const AlertQuery = z.object({
  status: ALERT_FILTER_FIELDS.status.default(""),
  severity: ALERT_FILTER_FIELDS.severity.default(""),
  cursor: CursorField,
  limit: ALERT_FILTER_FIELDS.limit.default(50),
});

/** Alerts of the actor's account newest first, filtered, within scope. Throws InvalidCursorError. */
export async function listAlerts(kv: Deno.Kv, actor: Actor, filter: AlertFilter): Promise<Page<Alert>> {
  if (!actor.accountId) return { values: [], cursor: "" };
  const selector = { prefix: alertsByAccountPrefix(actor.accountId) };
  const iter = CursorList.fromCursor<string>(kv, selector, filter.cursor, { reverse: true, batchSize: 100 });
  const values: Alert[] = [];
  let batch: Deno.KvKey[] = [];
  let scanned = 0;
  const flush = async () => {
    for (const a of await getManyValues<Alert>(kv, batch)) {
      if (!inScope(actor, { accountId: a.accountId, orgId: a.orgId })) continue;
      if (filter.status && a.status !== filter.status) continue;
      if (filter.severity && a.severity !== filter.severity) continue;
      values.push(a);
    }
    batch = [];
  };
  for await (const e of iter) {
    batch.push(alertKey(e.value));
    scanned++;
    // Never read more candidates than the page still needs: the cursor points after the last key read,
    // so an alert beyond the limit would be skipped by the next page.
    if (batch.length >= Math.min(10, filter.limit - values.length)) await flush();
    if (values.length >= filter.limit || scanned >= 5000) {
      await flush();
      return { values, cursor: iter.cursor };
    }
  }
  await flush();
  return { values, cursor: "" };
}

/** Acknowledges an open alert (it stays until its condition clears). Needs backup.manage. */
export async function acknowledgeAlert(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<Alert> {
  return await withRetry(async () => {
    const entry = await kv.get<Alert>(alertKey(id));
    const alert = entry.value;
    if (!alert || !inScope(actor, { accountId: alert.accountId, orgId: alert.orgId })) {
      throw new NotFoundError("Alert not found");
    }
    authorize(actor, "backup.manage", { accountId: alert.accountId, orgId: alert.orgId ?? undefined });
    if (alert.status !== "open") return { value: alert };
    const next: Alert = {
      ...alert,
      status: "acknowledged",
      acknowledgedAt: now.toISOString(),
      acknowledgedBy: actor.label,
    };
    const op = kv.atomic().check(entry).set(alertKey(id), next);
    appendAudit(op, actor, {
      accountId: alert.accountId,
      orgId: alert.orgId,
      action: "alert.acknowledge",
      objectType: "alert",
      objectId: id,
      summary: `Acknowledged alert: ${alert.message}`,
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  });
}
