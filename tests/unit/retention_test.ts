/** GFS retention over restore-point chains (domain/retention.ts): examples, then properties over random histories. */
import assert from "node:assert/strict";
import fc from "fast-check";
import { ValidationError } from "../../domain/errors.ts";
import {
  planRetention,
  previewRetention,
  RETENTION_LIMITS,
  retentionBuckets,
  type RetentionCounts,
  type RetentionPoint,
} from "../../domain/retention.ts";

const DAY = 86_400_000;
const HOUR = 3_600_000;

function point(id: string, completedAt: string, overrides: Partial<RetentionPoint> = {}): RetentionPoint {
  return {
    id,
    chainId: "c1",
    type: "full",
    parentId: null,
    completedAt,
    sizeBytes: 1000,
    status: "complete",
    ...overrides,
  };
}

/** One full per day at 02:00 UTC, ids `d<date>`, from `first` for `days` days. */
function dailyFulls(first: string, days: number): RetentionPoint[] {
  const start = Date.parse(`${first}T02:00:00Z`);
  return Array.from({ length: days }, (_, i) => {
    const at = new Date(start + i * DAY).toISOString();
    return point(`d${at.slice(0, 10)}`, at, { chainId: `c${i}` });
  });
}

function sorted(ids: string[]): string[] {
  return [...ids].sort();
}

// ---------------------------------------------------------------------------------------------------
// Examples

Deno.test("retentionBuckets() labels the local day, ISO week (Monday-based, ISO week-year) and month", () => {
  assert.deepEqual(retentionBuckets("2026-11-20T10:00:00Z"), {
    day: "2026-11-20",
    week: "2026-W47",
    month: "2026-11",
  });
  // Monday starts a week; Sunday ends it.
  assert.equal(retentionBuckets("2026-11-16T00:00:00Z").week, "2026-W47");
  assert.equal(retentionBuckets("2026-11-15T23:59:59Z").week, "2026-W46");
  // ISO week-years: 2027-01-01 (a Friday) is in the last week of 2026; 2025-12-29 is in 2026-W01.
  assert.equal(retentionBuckets("2027-01-01T12:00:00Z").week, "2026-W53");
  assert.equal(retentionBuckets("2025-12-29T12:00:00Z").week, "2026-W01");
});

Deno.test("retentionBuckets() buckets in the given time zone", () => {
  // Sunday 23:30 UTC on the last day of a month is Monday 00:30 of the next month in Berlin (CET).
  assert.deepEqual(retentionBuckets("2026-11-29T23:30:00Z", "UTC"), {
    day: "2026-11-29",
    week: "2026-W48",
    month: "2026-11",
  });
  assert.deepEqual(retentionBuckets("2026-11-30T23:30:00Z", "Europe/Berlin"), {
    day: "2026-12-01",
    week: "2026-W49",
    month: "2026-12",
  });
  // West of UTC the local day is the previous one.
  assert.equal(retentionBuckets("2026-11-20T03:00:00Z", "America/New_York").day, "2026-11-19");
});

Deno.test("retentionBuckets() and planRetention() refuse an unknown time zone or a bad date", () => {
  assert.throws(() => retentionBuckets("2026-11-20T10:00:00Z", "Mars/Olympus"), ValidationError);
  assert.throws(() => retentionBuckets("yesterday"), ValidationError);
  assert.throws(
    () =>
      planRetention(
        [point("a", "2026-11-20T10:00:00Z")],
        { daily: 7, weekly: 0, monthly: 0 },
        "Mars/Olympus",
      ),
    /Cannot bucket restore points in time zone "Mars\/Olympus": unknown time zone/,
  );
  assert.throws(
    () => planRetention([point("a", "not a date")], { daily: 7, weekly: 0, monthly: 0 }),
    /restore point "a": completedAt "not a date" is not a date/,
  );
});

Deno.test("planRetention() refuses counts out of range and duplicate ids", () => {
  const bad: RetentionCounts[] = [
    { daily: 0, weekly: 0, monthly: 0 },
    { daily: 366, weekly: 0, monthly: 0 },
    { daily: 1.5, weekly: 0, monthly: 0 },
    { daily: 7, weekly: -1, monthly: 0 },
    { daily: 7, weekly: 53, monthly: 0 },
    { daily: 7, weekly: 4, monthly: 121 },
  ];
  for (const counts of bad) {
    assert.throws(() => planRetention([], counts), ValidationError, JSON.stringify(counts));
  }
  assert.deepEqual(planRetention([], { daily: 365, weekly: 52, monthly: 120 }), {
    keep: [],
    expire: [],
    bytesFreed: 0,
    reasons: {},
  });
  const a = point("a", "2026-11-20T10:00:00Z");
  assert.throws(() => planRetention([a, a], { daily: 7, weekly: 0, monthly: 0 }), /"a" appears twice/);
});

Deno.test("planRetention() over 30 daily points with {7, 4, 12} keeps 7 days, 4 weeks, 2 months", () => {
  // 2026-10-22 (Thu) … 2026-11-20 (Fri), one full a day at 02:00 UTC.
  const points = dailyFulls("2026-10-22", 30);
  const plan = planRetention(points, { daily: 7, weekly: 4, monthly: 12 });
  assert.deepEqual(plan.keep, [
    "d2026-10-31", // monthly 2026-10
    "d2026-11-01", // weekly 2026-W44 (Sun)
    "d2026-11-08", // weekly 2026-W45 (Sun)
    "d2026-11-14", // daily
    "d2026-11-15", // daily, weekly 2026-W46 (Sun)
    "d2026-11-16",
    "d2026-11-17",
    "d2026-11-18",
    "d2026-11-19",
    "d2026-11-20", // daily, weekly 2026-W47, monthly 2026-11
  ]);
  assert.equal(plan.expire.length, 20);
  assert.deepEqual(sorted([...plan.keep, ...plan.expire]), sorted(points.map((p) => p.id)));
  assert.equal(plan.bytesFreed, 20 * 1000);
  assert.deepEqual(plan.reasons, {
    "d2026-10-31": ["monthly 2026-10"],
    "d2026-11-01": ["weekly 2026-W44"],
    "d2026-11-08": ["weekly 2026-W45"],
    "d2026-11-14": ["daily 2026-11-14"],
    "d2026-11-15": ["daily 2026-11-15", "weekly 2026-W46"],
    "d2026-11-16": ["daily 2026-11-16"],
    "d2026-11-17": ["daily 2026-11-17"],
    "d2026-11-18": ["daily 2026-11-18"],
    "d2026-11-19": ["daily 2026-11-19"],
    "d2026-11-20": ["daily 2026-11-20", "weekly 2026-W47", "monthly 2026-11"],
  });
});

Deno.test("planRetention() counts only days that have a point: gaps do not use up the daily count", () => {
  const points = [
    point("a", "2026-11-01T02:00:00Z"),
    point("b", "2026-11-10T02:00:00Z"),
    point("c", "2026-11-20T02:00:00Z"),
  ];
  const plan = planRetention(points, { daily: 2, weekly: 0, monthly: 0 });
  assert.deepEqual(plan.keep, ["b", "c"]);
  assert.deepEqual(plan.expire, ["a"]);
});

Deno.test("planRetention() never drops a full that a kept incremental of a weekly chain depends on", () => {
  // Weekly fulls on Sundays (Nov 1, 8, 15) with daily incrementals in between, up to Fri Nov 20.
  const points: RetentionPoint[] = [];
  let parent: string | null = null;
  for (let day = 1; day <= 20; day++) {
    const date = `2026-11-${String(day).padStart(2, "0")}`;
    const isFull = new Date(date).getUTCDay() === 0;
    const id = `${isFull ? "f" : "i"}${date}`;
    points.push(
      point(id, `${date}T02:00:00Z`, {
        type: isFull ? "full" : "incremental",
        parentId: isFull ? null : parent,
        chainId: `chain-${isFull ? date : points.findLast((p) => p.type === "full")!.id}`,
        sizeBytes: isFull ? 10_000 : 100,
      }),
    );
    parent = id;
  }
  const plan = planRetention(points, { daily: 7, weekly: 0, monthly: 0 });
  // Daily picks Nov 14–20; Nov 14 is an incremental of the chain started Nov 8, which needs Nov 8–13.
  assert.deepEqual(
    plan.keep,
    points.filter((p) => p.completedAt >= "2026-11-08").map((p) => p.id),
  );
  assert.deepEqual(
    plan.expire,
    ["f2026-11-01", "i2026-11-02", "i2026-11-03", "i2026-11-04", "i2026-11-05", "i2026-11-06", "i2026-11-07"],
  );
  assert.equal(plan.bytesFreed, 10_000 + 6 * 100);
  assert.deepEqual(plan.reasons["f2026-11-08"], ["parent of i2026-11-09"]);
  assert.deepEqual(plan.reasons["i2026-11-13"], ["parent of i2026-11-14"]);
  assert.deepEqual(plan.reasons["i2026-11-14"], ["daily 2026-11-14"]);
  assert.deepEqual(plan.reasons["f2026-11-15"], ["daily 2026-11-15", "parent of i2026-11-16"]);
  // Every kept incremental reaches a kept full through kept parents.
  const byId = new Map(points.map((p) => [p.id, p]));
  const keep = new Set(plan.keep);
  for (const id of plan.keep) {
    let p = byId.get(id)!;
    while (p.type === "incremental") {
      assert.ok(keep.has(p.parentId!), `${p.parentId} (parent of ${p.id}) must be kept`);
      p = byId.get(p.parentId!)!;
    }
    assert.equal(p.type, "full");
  }
});

Deno.test("planRetention() stops a chain at a synthetic full and keeps an orphan only if selected", () => {
  const points = [
    point("f1", "2026-11-01T02:00:00Z"),
    point("i1", "2026-11-02T02:00:00Z", { type: "incremental", parentId: "f1" }),
    // A synthetic full built from f1 + i1 restores on its own.
    point("s1", "2026-11-03T02:00:00Z", { type: "synthetic_full", parentId: "i1" }),
    point("i2", "2026-11-04T02:00:00Z", { type: "incremental", parentId: "s1" }),
    // Parent already pruned elsewhere: missing from the input.
    point("o1", "2026-10-01T02:00:00Z", { type: "incremental", parentId: "gone" }),
    point("o2", "2026-11-05T02:00:00Z", { type: "incremental", parentId: "gone" }),
  ];
  const plan = planRetention(points, { daily: 3, weekly: 0, monthly: 0 });
  assert.deepEqual(plan.keep, ["s1", "i2", "o2"]);
  assert.deepEqual(plan.expire, ["f1", "i1", "o1"]);
  assert.deepEqual(plan.reasons.s1, ["daily 2026-11-03", "parent of i2"]);
});

Deno.test("planRetention() buckets days in the policy's time zone: 23:30 UTC is the next day in Berlin", () => {
  const points = [
    point("a", "2026-11-19T12:00:00Z"),
    point("b", "2026-11-20T10:00:00Z"),
    point("c", "2026-11-20T23:30:00Z"), // 2026-11-21 00:30 in Berlin (CET, UTC+1)
  ];
  const counts = { daily: 2, weekly: 0, monthly: 0 };
  const utc = planRetention(points, counts);
  assert.deepEqual(utc.keep, ["a", "c"]);
  assert.deepEqual(utc.expire, ["b"]);
  assert.deepEqual(utc.reasons, { a: ["daily 2026-11-19"], c: ["daily 2026-11-20"] });

  const berlin = planRetention(points, counts, "Europe/Berlin");
  assert.deepEqual(berlin.keep, ["b", "c"]);
  assert.deepEqual(berlin.expire, ["a"]);
  assert.deepEqual(berlin.reasons, { b: ["daily 2026-11-20"], c: ["daily 2026-11-21"] });
});

Deno.test("planRetention() keeps the newest point of a bucket, equal instants broken by the greater id", () => {
  const points = [
    point("01A", "2026-11-20T01:00:00Z"),
    point("01C", "2026-11-20T22:00:00Z"),
    point("01B", "2026-11-20T09:00:00Z"),
    // Offsets are honoured: 23:00+02:00 is 21:00Z, older than 01C.
    point("01D", "2026-11-20T23:00:00+02:00"),
  ];
  const plan = planRetention(points, { daily: 1, weekly: 1, monthly: 1 });
  assert.deepEqual(plan.keep, ["01C"]);
  assert.deepEqual(plan.reasons["01C"], ["daily 2026-11-20", "weekly 2026-W47", "monthly 2026-11"]);

  const tie = [point("01X", "2026-11-20T10:00:00Z"), point("01Y", "2026-11-20T10:00:00.000Z")];
  assert.deepEqual(planRetention(tie, { daily: 1, weekly: 0, monthly: 0 }).keep, ["01Y"]);
  assert.deepEqual(planRetention(tie.toReversed(), { daily: 1, weekly: 0, monthly: 0 }).keep, ["01Y"]);
});

Deno.test("planRetention() always keeps running points and their parents, and never buckets them", () => {
  const points = [
    point("f1", "2026-11-18T02:00:00Z"),
    point("i1", "2026-11-19T02:00:00Z", { type: "incremental", parentId: "f1" }),
    point("f2", "2026-11-20T02:00:00Z"),
    point("r1", "", { type: "incremental", parentId: "i1", status: "running" }),
  ];
  const plan = planRetention(points, { daily: 1, weekly: 0, monthly: 0 });
  assert.deepEqual(plan.keep, ["f1", "i1", "f2", "r1"]);
  assert.deepEqual(plan.expire, []);
  assert.deepEqual(plan.reasons, {
    f1: ["parent of i1"],
    i1: ["parent of r1"],
    f2: ["daily 2026-11-20"],
    r1: ["running"],
  });
});

Deno.test("planRetention() keeps archived points and their parents whatever the counts, and never buckets them", () => {
  const points = [
    point("f1", "2026-11-10T02:00:00Z", { archived: true }),
    point("i1", "2026-11-11T02:00:00Z", { type: "incremental", parentId: "f1", archived: true }),
    point("f2", "2026-11-12T02:00:00Z", { chainId: "c2" }),
    point("i2", "2026-11-15T02:00:00Z", {
      type: "incremental",
      parentId: "f2",
      chainId: "c2",
      archived: true,
    }),
    point("f3", "2026-11-14T02:00:00Z", { chainId: "c3" }),
    point("gone", "2026-11-09T02:00:00Z", { status: "expired", archived: true }),
  ];
  const plan = planRetention(points, { daily: 1, weekly: 0, monthly: 0 });
  assert.deepEqual(plan.keep, ["f1", "i1", "f2", "i2", "f3"]);
  assert.deepEqual(plan.expire, []);
  assert.deepEqual(plan.reasons, {
    f1: ["archived", "parent of i1"],
    i1: ["archived"],
    f2: ["parent of i2"],
    i2: ["archived"],
    f3: ["daily 2026-11-14"],
  });
  // The daily count goes to f3, not to the newer i2 (archived): without the flag, i2 would take it.
  const withoutArchive = planRetention(points.map((p) => ({ ...p, archived: false })), {
    daily: 1,
    weekly: 0,
    monthly: 0,
  });
  assert.deepEqual(withoutArchive.keep, ["f2", "i2"]);
});

Deno.test("planRetention() never keeps or re-expires failed and expired points, and they fill no bucket", () => {
  const points = [
    point("old", "2026-11-18T02:00:00Z", { status: "expired" }),
    point("a", "2026-11-19T02:00:00Z"),
    point("b", "2026-11-20T02:00:00Z", { status: "failed" }),
    // A failed parent cannot be kept: the walk stops there.
    point("c", "2026-11-20T03:00:00Z", { type: "incremental", parentId: "b", status: "failed" }),
  ];
  const plan = planRetention(points, { daily: 1, weekly: 0, monthly: 0 });
  assert.deepEqual(plan.keep, ["a"]);
  assert.deepEqual(plan.expire, []);
  assert.equal(plan.bytesFreed, 0);
  assert.deepEqual(Object.keys(plan.reasons), ["a"]);

  const orphan = [
    point("f", "2026-11-19T02:00:00Z", { status: "failed" }),
    point("i", "2026-11-20T02:00:00Z", { type: "incremental", parentId: "f" }),
  ];
  assert.deepEqual(planRetention(orphan, { daily: 1, weekly: 0, monthly: 0 }).keep, ["i"]);
});

Deno.test("previewRetention() flags a change from {30, 0, 0} to {1, 0, 0}", () => {
  const objects = { vm1: dailyFulls("2026-10-22", 30), vm2: [point("x", "2026-11-20T02:00:00Z")] };
  const before = previewRetention(objects, { daily: 30, weekly: 0, monthly: 0 });
  assert.equal(before.vm1.keep.length, 30);
  assert.equal(before.vm1.needsConfirmation, false);
  assert.equal(before.vm1.warning, null);

  const after = previewRetention(objects, { daily: 1, weekly: 0, monthly: 0 });
  assert.deepEqual(after.vm1.keep, ["d2026-11-20"]);
  assert.equal(after.vm1.expire.length, 29);
  assert.equal(after.vm1.bytesFreed, 29_000);
  assert.equal(after.vm1.needsConfirmation, true);
  assert.equal(
    after.vm1.warning,
    "This retention change expires 29 of 30 restore points and keeps only 1 complete restore point; " +
      "confirm to save it.",
  );
  // An object with a single point keeps it and needs no confirmation.
  assert.deepEqual([after.vm2.keep, after.vm2.needsConfirmation, after.vm2.warning], [["x"], false, null]);
});

Deno.test("previewRetention() confirms at more than half expired or fewer than two kept, not at exactly half", () => {
  const four = dailyFulls("2026-11-17", 4);
  const half = previewRetention({ o: four }, { daily: 2, weekly: 0, monthly: 0 }, "UTC").o;
  assert.deepEqual([half.expire.length, half.needsConfirmation, half.warning], [2, false, null]);

  const two = dailyFulls("2026-11-19", 2);
  const one = previewRetention({ o: two }, { daily: 1, weekly: 0, monthly: 0 }).o;
  assert.equal(one.needsConfirmation, true);
  assert.equal(one.warning, "This retention change keeps only 1 complete restore point; confirm to save it.");

  const five = dailyFulls("2026-11-16", 5);
  const most = previewRetention({ o: five }, { daily: 2, weekly: 0, monthly: 0 }).o;
  assert.equal(most.warning, "This retention change expires 3 of 5 restore points; confirm to save it.");
  // Running points are kept but do not count as complete restore points.
  const withRunning = [...two, point("r", "", { status: "running" })];
  assert.equal(
    previewRetention({ o: withRunning }, { daily: 1, weekly: 0, monthly: 0 }).o.needsConfirmation,
    true,
  );
});

// ---------------------------------------------------------------------------------------------------
// Properties over random histories

const TIME_ZONES = [
  "UTC",
  "Europe/Berlin",
  "America/New_York",
  "Asia/Kolkata",
  "Pacific/Auckland",
  "America/St_Johns",
];

interface ChainSpec {
  head: "full" | "synthetic_full";
  headStatus: "complete" | "failed";
  /** The head was pruned elsewhere: its incrementals reference an id missing from the input. */
  headMissing: boolean;
  /** A synthetic full records the previous chain's last point as its parent. */
  synthParent: boolean;
  incrementals: ("complete" | "failed" | "expired" | "running")[];
  sizes: number[];
}

const chainSpec: fc.Arbitrary<ChainSpec> = fc.record({
  head: fc.constantFrom("full" as const, "synthetic_full" as const),
  headStatus: fc.constantFrom(
    "complete" as const,
    "complete" as const,
    "complete" as const,
    "failed" as const,
  ),
  headMissing: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
  synthParent: fc.boolean(),
  incrementals: fc.array(
    fc.oneof(
      { weight: 14, arbitrary: fc.constant("complete" as const) },
      { weight: 2, arbitrary: fc.constant("failed" as const) },
      { weight: 1, arbitrary: fc.constant("expired" as const) },
      { weight: 1, arbitrary: fc.constant("running" as const) },
    ),
    { maxLength: 10 },
  ),
  sizes: fc.array(fc.integer({ min: 0, max: 1e12 }), { minLength: 11, maxLength: 11 }),
});

/** Offsets within 400 days; whole days and hours make ties and midnight boundaries likely. */
const offsetMs = fc.oneof(
  fc.integer({ min: 0, max: 400 * DAY - 1 }),
  fc.integer({ min: 0, max: 399 }).map((d) => d * DAY),
  fc.integer({ min: 0, max: 400 * 24 - 1 }).map((h) => h * HOUR),
);

/** Random history: chains of a full then 0–10 incrementals, increasing timestamps over ≤ 400 days. */
const history: fc.Arbitrary<RetentionPoint[]> = fc
  .tuple(
    fc.integer({ min: Date.parse("2024-01-01"), max: Date.parse("2030-01-01") }),
    fc.array(chainSpec, { maxLength: 30 }),
  )
  .chain(([start, chains]) => {
    const n = chains.reduce((sum, c) => sum + 1 + c.incrementals.length, 0);
    return fc.array(offsetMs, { minLength: n, maxLength: n }).map((offsets) =>
      buildHistory(start, chains, offsets)
    );
  });

function buildHistory(start: number, chains: ChainSpec[], offsets: number[]): RetentionPoint[] {
  const times = offsets.toSorted((a, b) => a - b).map((o) => new Date(start + o).toISOString());
  const points: RetentionPoint[] = [];
  let index = 0;
  let previousLast: string | null = null;
  chains.forEach((c, ci) => {
    const chainId = `c${ci}`;
    const nextId = () => `p${String(index).padStart(4, "0")}`;
    const headId = nextId();
    if (!c.headMissing) {
      points.push({
        id: headId,
        chainId,
        type: c.head,
        parentId: c.head === "synthetic_full" && c.synthParent ? previousLast : null,
        completedAt: times[index],
        sizeBytes: c.sizes[0],
        status: c.headStatus,
      });
    }
    index++;
    let parent = headId;
    c.incrementals.forEach((wanted, i) => {
      const id = nextId();
      // Only a chain's last point can still be running; a failed head starts no chain.
      const status = wanted === "running" && i < c.incrementals.length - 1 ? "complete" : wanted;
      if (c.headMissing || c.headStatus === "complete") {
        points.push({
          id,
          chainId,
          type: "incremental",
          parentId: parent,
          completedAt: status === "running" ? "" : times[index],
          sizeBytes: c.sizes[i + 1],
          status,
        });
        if (status === "complete") parent = id;
      }
      index++;
    });
    if (!c.headMissing && c.headStatus === "complete") previousLast = parent;
  });
  return points;
}

const countsArb: fc.Arbitrary<RetentionCounts> = fc.record({
  daily: fc.integer(RETENTION_LIMITS.daily),
  weekly: fc.integer(RETENTION_LIMITS.weekly),
  monthly: fc.integer(RETENTION_LIMITS.monthly),
});

/** Small counts exercise the "fewer buckets than points" cases far more often. */
const smallCountsArb: fc.Arbitrary<RetentionCounts> = fc.record({
  daily: fc.integer({ min: 1, max: 20 }),
  weekly: fc.integer({ min: 0, max: 8 }),
  monthly: fc.integer({ min: 0, max: 6 }),
});

const anyCounts = fc.oneof(countsArb, smallCountsArb);
const timeZone = fc.constantFrom(...TIME_ZONES);
const RUNS = { numRuns: 300 };

/** Reference bucketing with Temporal (independent of the module's Intl-based code). */
function referenceBuckets(at: string, tz: string): Record<keyof RetentionCounts, string> {
  const z = Temporal.Instant.from(at).toZonedDateTimeISO(tz);
  return {
    daily: z.toPlainDate().toString(),
    weekly: `${z.yearOfWeek}-W${String(z.weekOfYear).padStart(2, "0")}`,
    monthly: z.toPlainDate().toPlainYearMonth().toString(),
  };
}

/** Reference GFS selection: id → reasons, for the newest point of each of the N most recent buckets. */
function referenceSelection(
  points: RetentionPoint[],
  counts: RetentionCounts,
  tz: string,
): Map<string, string[]> {
  const selected = new Map<string, string[]>();
  for (const kind of ["daily", "weekly", "monthly"] as const) {
    const groups = new Map<string, RetentionPoint[]>();
    for (const p of points.filter((p) => p.status === "complete")) {
      const key = referenceBuckets(p.completedAt, tz)[kind];
      groups.set(key, [...(groups.get(key) ?? []), p]);
    }
    const recent = [...groups.keys()].sort((a, b) => (a < b ? 1 : -1)).slice(0, counts[kind]);
    for (const key of recent) {
      const newest = groups.get(key)!.toSorted((a, b) =>
        Date.parse(b.completedAt) - Date.parse(a.completedAt) || (a.id < b.id ? 1 : -1)
      )[0];
      selected.set(newest.id, [...(selected.get(newest.id) ?? []), `${kind} ${key}`]);
    }
  }
  return selected;
}

Deno.test("planRetention() property: keep ∪ expire = complete points, disjoint; running kept; others in neither", () => {
  fc.assert(
    fc.property(history, anyCounts, timeZone, (points, counts, tz) => {
      const plan = planRetention(points, counts, tz);
      const keep = new Set(plan.keep);
      const expire = new Set(plan.expire);
      assert.equal(keep.size, plan.keep.length, "keep has no duplicates");
      assert.equal(expire.size, plan.expire.length, "expire has no duplicates");
      for (const id of keep) assert.ok(!expire.has(id), `${id} both kept and expired`);
      for (const p of points) {
        if (p.status === "complete") assert.ok(keep.has(p.id) !== expire.has(p.id), `${p.id} in exactly one`);
        if (p.status === "running") assert.ok(keep.has(p.id), `running ${p.id} kept`);
        if (p.status === "failed" || p.status === "expired") {
          assert.ok(!keep.has(p.id) && !expire.has(p.id), `${p.status} ${p.id} in neither`);
        }
      }
      assert.deepEqual(sorted(Object.keys(plan.reasons)), sorted(plan.keep), "every kept point has a reason");
    }),
    RUNS,
  );
});

Deno.test("planRetention() property: chain closure — the parent of every kept incremental is kept", () => {
  fc.assert(
    fc.property(history, anyCounts, timeZone, (points, counts, tz) => {
      const plan = planRetention(points, counts, tz);
      const byId = new Map(points.map((p) => [p.id, p]));
      const keep = new Set(plan.keep);
      for (const id of plan.keep) {
        const p = byId.get(id)!;
        // Fulls and synthetic fulls restore on their own; an incremental needs its parent.
        if (p.type !== "incremental" || p.parentId === null || !byId.has(p.parentId)) continue;
        assert.ok(keep.has(p.parentId), `parent ${p.parentId} of kept ${id} must be kept`);
        assert.ok(plan.reasons[p.parentId].includes(`parent of ${id}`));
      }
    }),
    RUNS,
  );
});

Deno.test("planRetention() property: every daily/weekly/monthly count is satisfied (reference implementation)", () => {
  fc.assert(
    fc.property(history, anyCounts, timeZone, (points, counts, tz) => {
      const plan = planRetention(points, counts, tz);
      const keep = new Set(plan.keep);
      for (const [id, reasons] of referenceSelection(points, counts, tz)) {
        assert.ok(keep.has(id), `${id} (${reasons.join(", ")}) must be kept`);
        for (const r of reasons) assert.ok(plan.reasons[id].includes(r), `${id} lacks reason ${r}`);
      }
    }),
    RUNS,
  );
});

Deno.test("planRetention() property: keeps nothing but selected and running points and their ancestors", () => {
  fc.assert(
    fc.property(history, anyCounts, timeZone, (points, counts, tz) => {
      const plan = planRetention(points, counts, tz);
      const byId = new Map(points.map((p) => [p.id, p]));
      const expected = new Set<string>();
      const roots = [
        ...referenceSelection(points, counts, tz).keys(),
        ...points.filter((p) => p.status === "running").map((p) => p.id),
      ];
      for (const root of roots) {
        let p = byId.get(root);
        while (p && (p.status === "complete" || p.status === "running")) {
          expected.add(p.id);
          p = p.type === "incremental" && p.parentId !== null ? byId.get(p.parentId) : undefined;
        }
      }
      assert.deepEqual(sorted(plan.keep), sorted([...expected]));
    }),
    RUNS,
  );
});

Deno.test("planRetention() property: raising any count never expires a point that was kept", () => {
  const raise = fc.record({
    daily: fc.integer({ min: 0, max: 364 }),
    weekly: fc.integer({ min: 0, max: 52 }),
    monthly: fc.integer({ min: 0, max: 120 }),
  });
  fc.assert(
    fc.property(history, anyCounts, raise, timeZone, (points, counts, delta, tz) => {
      const more = {
        daily: Math.min(RETENTION_LIMITS.daily.max, counts.daily + delta.daily),
        weekly: Math.min(RETENTION_LIMITS.weekly.max, counts.weekly + delta.weekly),
        monthly: Math.min(RETENTION_LIMITS.monthly.max, counts.monthly + delta.monthly),
      };
      const before = planRetention(points, counts, tz);
      const after = new Set(planRetention(points, more, tz).keep);
      for (const id of before.keep) assert.ok(after.has(id), `${id} kept at ${JSON.stringify(counts)}`);
    }),
    RUNS,
  );
});

Deno.test("planRetention() property: bytesFreed is the sum of the expired sizes", () => {
  fc.assert(
    fc.property(history, anyCounts, timeZone, (points, counts, tz) => {
      const plan = planRetention(points, counts, tz);
      const size = new Map(points.map((p) => [p.id, p.sizeBytes]));
      assert.equal(plan.bytesFreed, plan.expire.reduce((sum, id) => sum + size.get(id)!, 0));
    }),
    RUNS,
  );
});

Deno.test("previewRetention() property: needsConfirmation matches its two rules for every object", () => {
  fc.assert(
    fc.property(
      fc.array(history, { minLength: 1, maxLength: 4 }),
      anyCounts,
      timeZone,
      (histories, counts, tz) => {
        const objects = Object.fromEntries(histories.map((h, i) => [`o${i}`, h]));
        const previews = previewRetention(objects, counts, tz);
        assert.deepEqual(Object.keys(previews), Object.keys(objects));
        for (const [id, points] of Object.entries(objects)) {
          const preview = previews[id];
          const complete = points.filter((p) => p.status === "complete").length;
          const keptComplete = points.filter((p) =>
            p.status === "complete" && preview.keep.includes(p.id)
          ).length;
          const expected = preview.expire.length * 2 > complete || (complete >= 2 && keptComplete < 2);
          assert.equal(preview.needsConfirmation, expected);
          assert.equal(preview.warning !== null, expected);
          const { needsConfirmation: _n, warning: _w, ...plan } = preview;
          assert.deepEqual(plan, planRetention(points, counts, tz));
        }
      },
    ),
    { numRuns: 200 },
  );
});
