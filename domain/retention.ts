/**
 * GFS retention over restore-point chains: which restore points a daily/weekly/monthly policy keeps
 * and which it expires, and a preview that flags risky policy changes before they are saved. Pure
 * functions: the hourly retention job loads the points, dispatches BES prune jobs for `expire` and
 * marks those points expired.
 *
 * Bucketing, always in the policy's IANA `timeZone` (default `"UTC"`):
 * - The `completedAt` instant of each complete point is turned into a local calendar date (year,
 *   month, day; Gregorian calendar) with `Intl.DateTimeFormat` in `timeZone`, so a point completed at
 *   23:30 UTC falls on the next day in Europe/Berlin. Daylight saving time is handled by the time
 *   zone database: a local day is whatever 23, 24 or 25 hours it has.
 * - Day bucket: the local date, labelled `YYYY-MM-DD`.
 * - Week bucket: the ISO 8601 week of the local date — weeks start on Monday, week 1 holds the
 *   year's first Thursday — labelled with the ISO week-year, `YYYY-Www` (2027-01-01 is in 2026-W53).
 * - Month bucket: the local calendar month, labelled `YYYY-MM`.
 * - For a count N, the N most recent buckets of that kind that contain a complete point are
 *   selected — days, weeks or months without one do not use up the count — and the newest point of
 *   each is kept: latest `completedAt` instant, equal instants broken by the greatest id (ids are
 *   time-ordered). The kinds are independent: one point can be the daily, weekly and monthly pick.
 *
 * Statuses:
 * - `complete` points are the candidates; each ends up in exactly one of `keep` and `expire`.
 * - `running` points are always kept (with their ancestors) and never fill a bucket.
 * - `archived` points (their host was decommissioned under Archive On Host Deactivation) are kept the
 *   same way, with their ancestors, until an operator expires them; they never fill a bucket either.
 * - `held` points (a legal hold covers them, holds.ts) are kept whatever the counts, with each hold's
 *   reason, and keep their ancestors; unlike archived ones they still fill their buckets as usual.
 * - `failed` points hold nothing restorable and `expired` ones were already pruned: they are in
 *   neither list (never kept, never expired again), never fill a bucket and never keep a parent.
 *
 * Chains: an incremental depends on its `parentId`; a full or synthetic full is self-contained and
 * ends a chain (a synthetic full's `parentId`, if set, is not followed). Every kept point keeps its
 * ancestors up to the full or synthetic full, so a full is never dropped while a retained incremental
 * depends on it. The walk stops at a parent that is missing from the input or is failed/expired:
 * nothing there can be kept, so a point whose parent is missing is kept only if selected itself.
 */

import { z } from "zod";
import { ValidationError } from "./errors.ts";

export type RestorePointType = "full" | "incremental" | "synthetic_full";
export type RestorePointStatus = "complete" | "running" | "failed" | "expired";

/** One restore point as retention sees it. */
export interface RetentionPoint {
  id: string;
  chainId: string;
  type: RestorePointType;
  /** The point this one depends on (incrementals); null for a chain's first full. */
  parentId: string | null;
  /** ISO 8601 instant; only read for complete points. */
  completedAt: string;
  sizeBytes: number;
  status: RestorePointStatus;
  /** Kept whatever the counts (see the module notes); only read for complete and running points. */
  archived?: boolean;
  /** The legal holds covering the point (e.g. `"legal hold CASE-7"`): kept whatever the counts, with its chain. */
  holds?: string[];
}

/** How many daily, weekly and monthly buckets a policy keeps. */
export interface RetentionCounts {
  daily: number;
  weekly: number;
  monthly: number;
}

/** Retention counts as a query string (the preview's what-if), with the policy's ranges. */
export const RetentionCountsQuery = z.object({
  daily: z.coerce.number().int().min(1, "daily must be 1–365").max(365, "daily must be 1–365"),
  weekly: z.coerce.number().int().min(0, "weekly must be 0–52").max(52, "weekly must be 0–52"),
  monthly: z.coerce.number().int().min(0, "monthly must be 0–120").max(120, "monthly must be 0–120"),
});

/** Allowed range of each count (inclusive). */
export const RETENTION_LIMITS = {
  daily: { min: 1, max: 365 },
  weekly: { min: 0, max: 52 },
  monthly: { min: 0, max: 120 },
} as const;

/** What a policy keeps and expires; `reasons[id]` says why each kept point is kept. */
export interface RetentionPlan {
  /** Ids of kept points (complete and running), in input order. */
  keep: string[];
  /** Ids of complete points to expire, in input order. */
  expire: string[];
  /** Sum of `sizeBytes` of the expired points. */
  bytesFreed: number;
  /** E.g. `["daily 2026-11-20", "weekly 2026-W47", "monthly 2026-11", "parent of X"]`. */
  reasons: Record<string, string[]>;
}

/** A plan for one protected object, with the confirmation a risky change needs. */
export interface RetentionPreview extends RetentionPlan {
  /** True when the plan expires more than half of the complete points or keeps fewer than two. */
  needsConfirmation: boolean;
  /** A sentence for the operator when `needsConfirmation`, otherwise null. */
  warning: string | null;
}

/** The day, ISO week and month labels of one instant, in the documented bucketing. */
export interface RetentionBuckets {
  day: string;
  week: string;
  month: string;
}

const KINDS = ["daily", "weekly", "monthly"] as const;
type Kind = typeof KINDS[number];
const BUCKET_OF: Record<Kind, keyof RetentionBuckets> = { daily: "day", weekly: "week", monthly: "month" };

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let f = formatters.get(timeZone);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat("en-US", {
        timeZone,
        calendar: "gregory",
        numberingSystem: "latn",
        year: "numeric",
        month: "numeric",
        day: "numeric",
      });
    } catch {
      throw new ValidationError(
        `Cannot bucket restore points in time zone "${timeZone}": unknown time zone`,
        {
          timeZone: "Unknown time zone",
        },
      );
    }
    formatters.set(timeZone, f);
  }
  return f;
}

function pad(n: number, width = 2): string {
  return String(n).padStart(width, "0");
}

/** Day (`YYYY-MM-DD`), ISO week (`YYYY-Www`) and month (`YYYY-MM`) of `instantMs` in `timeZone`. */
function bucketsOfInstant(instantMs: number, timeZone: string): RetentionBuckets {
  const parts = formatterFor(timeZone).formatToParts(instantMs);
  const part = (type: string) => Number(parts.find((p) => p.type === type)?.value);
  const year = part("year");
  const month = part("month");
  const day = part("day");
  // ISO week: the week belongs to the year of its Thursday.
  const date = Date.UTC(year, month - 1, day);
  const isoWeekday = new Date(date).getUTCDay() || 7;
  const thursday = new Date(date + (4 - isoWeekday) * 86_400_000);
  const weekYear = thursday.getUTCFullYear();
  const week = Math.floor((thursday.getTime() - Date.UTC(weekYear, 0, 1)) / (7 * 86_400_000)) + 1;
  return {
    day: `${pad(year, 4)}-${pad(month)}-${pad(day)}`,
    week: `${pad(weekYear, 4)}-W${pad(week)}`,
    month: `${pad(year, 4)}-${pad(month)}`,
  };
}

/**
 * The day, ISO week and month buckets of an ISO instant in `timeZone` (see the module notes).
 * Throws a `ValidationError` if `at` is not a date or `timeZone` is unknown.
 */
export function retentionBuckets(at: string, timeZone = "UTC"): RetentionBuckets {
  const ms = Date.parse(at);
  if (Number.isNaN(ms)) throw new ValidationError(`Cannot bucket restore point time "${at}": not a date`);
  return bucketsOfInstant(ms, timeZone);
}

/** Throws a `ValidationError` unless every count is an integer within `RETENTION_LIMITS`. */
export function validateRetentionCounts(counts: RetentionCounts): void {
  for (const kind of KINDS) {
    const { min, max } = RETENTION_LIMITS[kind];
    const n = counts[kind];
    if (!Number.isInteger(n) || n < min || n > max) {
      throw new ValidationError(
        `Cannot apply retention: ${kind} count ${n} is not an integer in ${min}–${max}`,
        {
          [kind]: `Must be a whole number from ${min} to ${max}`,
        },
      );
    }
  }
}

/** True when `a` is newer than `b`: later instant, then greater id. */
function isNewer(a: { ms: number; id: string }, b: { ms: number; id: string }): boolean {
  return a.ms !== b.ms ? a.ms > b.ms : a.id > b.id;
}

/**
 * Applies a GFS policy to one object's restore points (see the module notes for bucketing, statuses
 * and chains). Throws a `ValidationError` if a count is out of range, the time zone is unknown, an id
 * appears twice or a complete point's `completedAt` is not a date.
 */
export function planRetention(
  points: RetentionPoint[],
  counts: RetentionCounts,
  timeZone = "UTC",
): RetentionPlan {
  validateRetentionCounts(counts);
  formatterFor(timeZone);

  const byId = new Map<string, RetentionPoint>();
  for (const p of points) {
    if (byId.has(p.id)) {
      throw new ValidationError(`Cannot plan retention: restore point "${p.id}" appears twice`);
    }
    byId.set(p.id, p);
  }

  const reasons: Record<string, string[]> = {};
  const addReason = (id: string, reason: string) => {
    const list = (reasons[id] ??= []);
    if (!list.includes(reason)) list.push(reason);
  };

  // Newest complete point of every bucket, per kind.
  const newest: Record<Kind, Map<string, { ms: number; id: string }>> = {
    daily: new Map(),
    weekly: new Map(),
    monthly: new Map(),
  };
  for (const p of points) {
    if (p.status !== "complete" || p.archived) continue;
    const ms = Date.parse(p.completedAt);
    if (Number.isNaN(ms)) {
      throw new ValidationError(
        `Cannot plan retention for restore point "${p.id}": completedAt "${p.completedAt}" is not a date`,
      );
    }
    const buckets = bucketsOfInstant(ms, timeZone);
    for (const kind of KINDS) {
      const key = buckets[BUCKET_OF[kind]];
      const current = newest[kind].get(key);
      const candidate = { ms, id: p.id };
      if (!current || isNewer(candidate, current)) newest[kind].set(key, candidate);
    }
  }

  // Roots: the picks of the N most recent buckets of each kind, and every running point.
  const kept = new Set<string>();
  for (const kind of KINDS) {
    // Labels are zero-padded, so string order is chronological order.
    const keys = [...newest[kind].keys()].sort().reverse().slice(0, counts[kind]);
    for (const key of keys) {
      const { id } = newest[kind].get(key)!;
      kept.add(id);
      addReason(id, `${kind} ${key}`);
    }
  }
  for (const p of points) {
    if (p.status === "running") {
      kept.add(p.id);
      addReason(p.id, "running");
    }
    if (p.archived && (p.status === "complete" || p.status === "running")) {
      kept.add(p.id);
      addReason(p.id, "archived");
    }
    if (p.holds?.length && (p.status === "complete" || p.status === "running")) {
      kept.add(p.id);
      for (const hold of p.holds) addReason(p.id, hold);
    }
  }

  // Chain closure: an incremental keeps its parent, up to the full or synthetic full.
  const pending = [...kept];
  while (pending.length > 0) {
    const child = byId.get(pending.pop()!)!;
    if (child.type !== "incremental" || child.parentId === null) continue;
    const parent = byId.get(child.parentId);
    if (!parent || (parent.status !== "complete" && parent.status !== "running")) continue;
    addReason(parent.id, `parent of ${child.id}`);
    if (!kept.has(parent.id)) {
      kept.add(parent.id);
      pending.push(parent.id);
    }
  }

  const keep: string[] = [];
  const expire: string[] = [];
  let bytesFreed = 0;
  for (const p of points) {
    if (kept.has(p.id)) {
      keep.push(p.id);
    } else if (p.status === "complete") {
      expire.push(p.id);
      bytesFreed += p.sizeBytes;
    }
  }
  return { keep, expire, bytesFreed, reasons };
}

/**
 * Plans retention for each object under a proposed policy, before it is saved. A plan needs an
 * explicit confirmation when it expires more than half of the object's complete points, or keeps
 * fewer than two complete points while the object has at least two. Throws like `planRetention`.
 */
export function previewRetention(
  pointsByObject: Record<string, RetentionPoint[]>,
  counts: RetentionCounts,
  timeZone = "UTC",
): Record<string, RetentionPreview> {
  const previews: Record<string, RetentionPreview> = {};
  for (const [objectId, points] of Object.entries(pointsByObject)) {
    const plan = planRetention(points, counts, timeZone);
    const complete = points.filter((p) => p.status === "complete").length;
    const keptComplete = complete - plan.expire.length;
    const problems: string[] = [];
    if (plan.expire.length > complete / 2) {
      problems.push(`expires ${plan.expire.length} of ${complete} restore points`);
    }
    if (complete >= 2 && keptComplete < 2) {
      problems.push(`keeps only ${keptComplete} complete restore point${keptComplete === 1 ? "" : "s"}`);
    }
    previews[objectId] = {
      ...plan,
      needsConfirmation: problems.length > 0,
      warning: problems.length > 0
        ? `This retention change ${problems.join(" and ")}; confirm to save it.`
        : null,
    };
  }
  return previews;
}
