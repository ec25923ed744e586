/**
 * The exact longest gap between cron runs (domain/cron_gaps.ts), checked against a brute-force minute
 * matcher written here from croner's documented rules (not from its code), against croner's own
 * `nextRuns` where the scheduler's truth matters (DST, whole cycles), and on the examples.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { Cron } from "croner";
import { compileCron } from "../../domain/cron_rules.ts";
import { deriveRpoHours, longestGapInWindow, longestGapMs, RPO_GRACE_HOURS } from "../../domain/cron_gaps.ts";

const MINUTE = 60_000;
const HOUR = 3_600_000;
const DAY = 86_400_000;

// ---------------------------------------------------------------------------------------------------------
// Brute force: every minute of a window, matched field by field.

interface Brute {
  minute: Uint8Array;
  hour: Uint8Array;
  month: Uint8Array;
  dom: Uint8Array;
  domLast: boolean;
  domLastWeekday: boolean;
  domNearest: number[];
  dow: Uint8Array;
  dowNth: [number, number][];
  dowLast: number[];
  and: boolean;
  fixed: boolean;
}

/** `*`, `a`, `a-b`, `*\/n`, `a-b/n` and lists of them, as a membership array over [0, size). */
function values(
  text: string,
  min: number,
  max: number,
  size: number,
  into: Uint8Array = new Uint8Array(size),
) {
  for (const part of text.split(",")) {
    const [range, step] = part.split("/");
    let [lo, hi] = range === "*" ? [min, max] : range.split("-").map(Number);
    if (hi === undefined) hi = lo;
    for (let v = lo; v <= hi; v += step ? Number(step) : 1) into[v] = 1;
  }
  return into;
}

function brute(expression: string): Brute {
  const [min, hour, dom, mon, dowText] = expression.trim().split(/\s+/);
  const b: Brute = {
    minute: values(min, 0, 59, 60),
    hour: values(hour, 0, 23, 24),
    month: values(mon, 1, 12, 13),
    dom: new Uint8Array(32),
    domLast: false,
    domLastWeekday: false,
    domNearest: [],
    dow: new Uint8Array(8),
    dowNth: [],
    dowLast: [],
    and: dowText.startsWith("+"),
    fixed: false,
  };
  // Fixed-time (croner's DST rule): one minute and one hour, neither from a wildcard nor a step.
  const single = (text: string, set: Uint8Array) =>
    !/[*/]/.test(text) && set.reduce((n, v) => n + v, 0) === 1;
  b.fixed = single(min, b.minute) && single(hour, b.hour);
  const domStar = dom === "*";
  const dow = dowText.replace(/^\+/, "");
  const dowStar = dow === "*";
  for (const part of dom.split(",")) {
    if (part === "L") b.domLast = true;
    else if (part === "LW") b.domLastWeekday = true;
    else if (part.endsWith("W")) b.domNearest.push(Number(part.slice(0, -1)));
    else values(part, 1, 31, 32, b.dom);
  }
  for (const part of dow.split(",")) {
    if (part.includes("#")) {
      const [w, k] = part.split("#");
      if (k === "L") b.dowLast.push(Number(w) % 7);
      else b.dowNth.push([Number(w) % 7, Number(k)]);
    } else if (part.endsWith("L")) b.dowLast.push(Number(part.slice(0, -1)) % 7);
    else values(part, 0, 7, 8, b.dow);
  }
  if (b.dow[7]) b.dow[0] = 1;
  // Both day fields restricted: either may match (croner's default); `+` or a `*` field: both must.
  if (domStar || dowStar) b.and = true;
  return b;
}

function dayMatches(b: Brute, month: number, d: number, wd: number, len: number): boolean {
  if (!b.month[month]) return false;
  const weekdayOf = (n: number) => (wd + n - d + 35) % 7;
  const nearest = (n: number) => {
    if (n > len) return -1;
    const w = weekdayOf(n);
    if (w === 6) return n === 1 ? 3 : n - 1;
    if (w === 0) return n === len ? n - 2 : n + 1;
    return n;
  };
  const lastWeekday = weekdayOf(len) === 6 ? len - 1 : weekdayOf(len) === 0 ? len - 2 : len;
  const domOk = b.dom[d] === 1 || (b.domLast && d === len) || (b.domLastWeekday && d === lastWeekday) ||
    b.domNearest.some((n) => nearest(n) === d);
  const dowOk = b.dow[wd] === 1 || b.dowNth.some(([w, k]) => w === wd && Math.ceil(d / 7) === k) ||
    b.dowLast.some((w) => w === wd && d + 7 > len);
  return b.and ? domOk && dowOk : domOk || dowOk;
}

function dayFields(wall: number) {
  const date = new Date(wall);
  const y = date.getUTCFullYear();
  const month = date.getUTCMonth() + 1;
  return {
    month,
    d: date.getUTCDate(),
    wd: date.getUTCDay(),
    len: new Date(Date.UTC(y, month, 0)).getUTCDate(),
    minuteOfDay: date.getUTCHours() * 60 + date.getUTCMinutes(),
  };
}

function matchesAt(b: Brute, wall: number): boolean {
  const f = dayFields(wall);
  return dayMatches(b, f.month, f.d, f.wd, f.len) && b.hour[Math.floor(f.minuteOfDay / 60)] === 1 &&
    b.minute[f.minuteOfDay % 60] === 1;
}

/** Longest gap among the runs in [start, end) in UTC, every minute tested (days no schedule matches skipped). */
function bruteGapUtc(expressions: string[], start: number, end: number): number {
  const bs = expressions.map(brute);
  let last = NaN;
  let gap = 0;
  let runs = 0;
  let dayOk: boolean[] = [];
  let dayOf = NaN;
  for (let t = start; t < end; t += MINUTE) {
    const day = Math.floor(t / DAY);
    if (day !== dayOf) {
      dayOf = day;
      const f = dayFields(t);
      dayOk = bs.map((b) => dayMatches(b, f.month, f.d, f.wd, f.len));
      if (!dayOk.some(Boolean)) {
        t = (day + 1) * DAY - MINUTE;
        continue;
      }
    }
    const m = Math.floor((t - day * DAY) / MINUTE);
    if (bs.some((b, i) => dayOk[i] && b.hour[Math.floor(m / 60)] && b.minute[m % 60])) {
      if (runs++) gap = Math.max(gap, t - last);
      last = t;
    }
  }
  return runs < 2 ? Infinity : gap;
}

function offsetReader(timeZone: string) {
  const f = new Intl.DateTimeFormat("en-US", { timeZone, timeZoneName: "longOffset" });
  return (t: number) => {
    const m = /GMT(?:([+-])(\d{2}):(\d{2}))?$/.exec(f.format(t))!;
    return m[1] ? (m[1] === "-" ? -1 : 1) * (Number(m[2]) * 60 + Number(m[3])) * MINUTE : 0;
  };
}

/**
 * Longest gap among the runs in [start, end) in a time zone: every UTC minute, read on the wall clock,
 * with croner's documented DST rules: interval jobs run at every instant whose wall time matches (a
 * repeated time twice, a skipped time never); fixed-time jobs (one minute, one hour) run a repeated time
 * once, the first time, and a skipped time at the end of the gap if that is the same day.
 */
function bruteGapZoned(expressions: string[], walls: number[], start: number): number {
  const bs = expressions.map(brute);
  const runs: number[] = [];
  for (let i = 0; i < walls.length; i++) {
    const at = start + i * MINUTE;
    for (const b of bs) {
      if (matchesAt(b, walls[i])) {
        const repeated = b.fixed && walls.slice(Math.max(0, i - 300), i).includes(walls[i]);
        if (!repeated) runs.push(at);
      }
      if (b.fixed && i > 0 && walls[i] - walls[i - 1] > MINUTE) {
        for (let w = walls[i - 1] + MINUTE; w < walls[i]; w += MINUTE) {
          if (matchesAt(b, w) && Math.floor(w / DAY) === Math.floor(walls[i] / DAY)) {
            runs.push(at);
            break;
          }
        }
      }
    }
  }
  runs.sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < runs.length; i++) gap = Math.max(gap, runs[i] - runs[i - 1]);
  return runs.length < 2 ? Infinity : gap;
}

/** Longest gap among croner's own runs in [start, end). */
function cronerGap(expressions: string[], start: number, end: number, timezone = "UTC"): number {
  const runs: number[] = [];
  for (const e of expressions) {
    const cron = new Cron(e, { paused: true, timezone });
    let at: Date | null = new Date(start - 1);
    while ((at = cron.nextRun(at)) && at.getTime() < end) runs.push(at.getTime());
  }
  runs.sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < runs.length; i++) gap = Math.max(gap, runs[i] - runs[i - 1]);
  return runs.length < 2 ? Infinity : gap;
}

// ---------------------------------------------------------------------------------------------------------
// Generators: croner's syntax with small sets.

const int = (min: number, max: number) => fc.integer({ min, max });
const pair = (min: number, max: number) =>
  fc.tuple(int(min, max), int(min, max)).map(([a, b]) => [Math.min(a, b), Math.max(a, b)]);

function numeric(min: number, max: number, maxStep: number) {
  return fc.oneof(
    fc.constant("*"),
    int(min, max).map(String),
    pair(min, max).map(([a, b]) => `${a},${b}`),
    pair(min, max).map(([a, b]) => `${a}-${b}`),
    int(1, maxStep).map((n) => `*/${n}`),
    fc.tuple(pair(min, max), int(1, maxStep)).map(([[a, b], n]) => `${a}-${b}/${n}`),
  );
}
const minuteField = numeric(0, 59, 59);
const hourField = numeric(0, 23, 23);
const domField = fc.oneof(
  { weight: 5, arbitrary: numeric(1, 31, 31) },
  fc.constantFrom("L", "LW"),
  int(1, 31).map((n) => `${n}W`),
  int(1, 31).map((n) => `L,${n}`),
);
const monthField = numeric(1, 12, 12);
const dowField = fc.oneof(
  { weight: 5, arbitrary: numeric(0, 7, 7) },
  fc.tuple(int(0, 6), int(1, 5)).map(([w, k]) => `${w}#${k}`),
  int(0, 6).map((w) => `${w}L`),
  fc.tuple(int(0, 6), int(0, 6)).map(([a, b]) => `+${Math.min(a, b)}-${Math.max(a, b)}`),
);
const expression = (minute = minuteField, hour = hourField, dom = domField, dow = dowField) =>
  fc.tuple(minute, hour, dom, monthField, dow).map((f) => f.join(" "))
    .filter((e) => compileCron(e).ok);

// ---------------------------------------------------------------------------------------------------------

Deno.test("the issue's example: a weekly full and an incremental every 2 minutes are 2 minutes apart", () => {
  const from = new Date("2026-03-01T10:17:00Z");
  assert.equal(longestGapMs(["0 2 * * 0", "*/2 * * * *"], from), 2 * MINUTE);
  assert.equal(deriveRpoHours(["0 2 * * 0", "*/2 * * * *"], from), 1 + RPO_GRACE_HOURS);
  assert.equal(longestGapMs(["* * * * *"], from), MINUTE);
  assert.equal(longestGapMs(["0 2 * * 0"], from), 7 * DAY);
  assert.equal(longestGapMs(["0 2 * * 0", "0 2 * * 1-5"], from), 2 * DAY, "no Saturday run");
});

Deno.test("rare dates are seen whole: 29 February skips 2100, a fifth Monday in February comes every 28–40 years", () => {
  const from = new Date("2026-01-01T00:00:00Z");
  // 2096-02-29 → 2104-02-29.
  assert.equal(longestGapMs(["0 0 29 2 *"], from), Date.UTC(2104, 1, 29) - Date.UTC(2096, 1, 29));
  // Whatever the start, the answer is the whole cycle's: 29 February on a Monday is 40 years apart once
  // per cycle (2072 → 2112); from just after 2072 that gap is the one across the cycle's end.
  assert.equal(longestGapMs(["0 0 29 2 *"], new Date("2397-05-01T00:00:00Z")), 2921 * DAY);
  assert.equal(longestGapMs(["0 0 29 2 +1"], new Date("2072-03-01T00:00:00Z")), 14_609 * DAY);
  assert.equal(longestGapMs(["0 0 29 2 +1"], new Date("2000-01-01T00:00:00Z")), 14_609 * DAY);
  for (
    const e of ["0 0 29 2 *", "0 0 * 2 1#5", "0 0 29 2 +1", "30 4 31 */5 *", "0 0 LW 2 *", "0 12 1W 2 6L"]
  ) {
    assert.equal(
      longestGapMs([e], from),
      cronerGap([e], Date.UTC(2000, 0, 1), Date.UTC(2800, 0, 1)),
      `${e}: the longest gap croner shows over 800 years`,
    );
  }
});

Deno.test("time zones: a DST change lengthens or shortens a gap as croner runs it", () => {
  const from = new Date("2026-01-01T00:00:00Z");
  // A daily fixed time is 25 h apart across the end of summer time.
  assert.equal(longestGapMs(["0 2 * * 0", "0 2 * * 1-6"], from, "Europe/Berlin"), 25 * HOUR);
  assert.equal(deriveRpoHours(["0 2 * * 0", "0 2 * * 1-6"], from, "Europe/Berlin"), 25 + RPO_GRACE_HOURS);
  assert.equal(longestGapMs(["0 2 * * 0"], from, "Europe/Berlin"), 7 * DAY + HOUR);
  // An interval job skips times that do not exist: 02:30 Saturday → 02:00 Monday in spring.
  assert.equal(longestGapMs(["*/30 2 * * *"], from, "Europe/Berlin"), 46.5 * HOUR);
  assert.equal(longestGapMs(["15 2 * * *"], from, "Australia/Lord_Howe"), 24.5 * HOUR);
  assert.equal(longestGapMs(["*/2 * * * *"], from, "America/New_York"), 2 * MINUTE);
  assert.equal(longestGapMs(["0 0 29 2 *"], from, "America/New_York"), 2921 * DAY);
  // A zone Intl does not know runs nothing (croner refuses it): no gap, the default RPO.
  assert.equal(longestGapMs(["0 2 * * *"], from, "Mars/Olympus"), Infinity);
  assert.equal(deriveRpoHours(["0 2 * * *"], from, "Mars/Olympus"), 7 * 24 + RPO_GRACE_HOURS);
});

Deno.test("property: the exact gap over a window equals a brute-force minute matcher (UTC)", () => {
  fc.assert(
    fc.property(
      fc.array(expression(), { minLength: 1, maxLength: 3 }),
      int(Date.UTC(1999, 0, 1) / MINUTE, Date.UTC(2410, 0, 1) / MINUTE),
      int(1, 900 * 1440),
      (expressions, startMinute, minutes) => {
        const start = startMinute * MINUTE;
        const end = start + minutes * MINUTE;
        assert.equal(longestGapInWindow(expressions, start, end), bruteGapUtc(expressions, start, end));
      },
    ),
    { numRuns: 120 },
  );
});

Deno.test("property: the days chosen (L, W, #, +, OR) are croner's own", () => {
  // One run a day, so croner itself can be the oracle over years.
  const once = expression(int(0, 59).map(String), int(0, 23).map(String));
  fc.assert(
    fc.property(
      fc.array(once, { minLength: 1, maxLength: 2 }),
      int(1999, 2400),
      int(1, 3),
      (expressions, year, years) => {
        const start = Date.UTC(year, 0, 1);
        const end = Date.UTC(year + years, 0, 1);
        assert.equal(longestGapInWindow(expressions, start, end), cronerGap(expressions, start, end));
      },
    ),
    { numRuns: 60 },
  );
});

Deno.test("property: sparse day patterns over decades (leap years, 2100, fifth weekdays) match the brute force", () => {
  const rareDom = fc.oneof(
    int(28, 31).map(String),
    fc.constantFrom("L", "LW", "29W", "31W", "29,31"),
  );
  const rareDow = fc.oneof(
    fc.constant("*"),
    fc.tuple(int(0, 6), fc.constantFrom(5)).map(([w, k]) => `${w}#${k}`),
    fc.tuple(int(0, 6), int(0, 6)).map(([a, b]) => `+${Math.min(a, b)},${Math.max(a, b)}`),
  );
  const rare = fc.tuple(int(0, 59), int(0, 23), rareDom, fc.constantFrom("2", "2,4", "*/6"), rareDow)
    .map((f) => f.join(" ")).filter((e) => compileCron(e).ok);
  fc.assert(
    fc.property(
      fc.array(rare, { minLength: 1, maxLength: 2 }),
      int(2080, 2110),
      int(4, 30),
      (expressions, year, years) => {
        const start = Date.UTC(year, 0, 1);
        const end = Date.UTC(year + years, 0, 1);
        assert.equal(longestGapInWindow(expressions, start, end), bruteGapUtc(expressions, start, end));
      },
    ),
    { numRuns: 60 },
  );
});

/** DST changes (a day either side is enough to find them) and windows around them, with each minute's wall time. */
const DST_WINDOWS = [
  ["Europe/Berlin", "2025-03-30", "2025-10-26"],
  ["America/New_York", "2026-03-08", "2026-11-01"],
  ["America/Santiago", "2025-04-06", "2025-09-07"],
  ["Australia/Lord_Howe", "2025-04-06", "2025-10-05"],
  // Samoa skipped 30 December 2011 whole: a gap of 24 h across two midnights.
  ["Pacific/Apia", "2011-12-30"],
].flatMap(([zone, ...days]) =>
  days.map((day) => {
    const start = Date.parse(`${day}T00:00:00Z`) - 3 * DAY;
    const end = start + 7 * DAY;
    const offsetAt = offsetReader(zone);
    const walls: number[] = [];
    for (let t = start; t < end; t += MINUTE) walls.push(t + offsetAt(t));
    return { zone, start, end, walls };
  })
);

Deno.test("property: across DST changes the exact gap equals the brute-force matcher with croner's DST rules", () => {
  // Hours around the changes (00:00/24:00 in Santiago, 02:00–03:00 elsewhere, 02:00–02:30 on Lord Howe),
  // single values often, so that fixed-time jobs (one minute, one hour) meet skipped and repeated times.
  const minute = fc.oneof({ weight: 3, arbitrary: int(0, 59).map(String) }, minuteField);
  const hour = fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom("0", "1", "2", "3", "23", "22") },
    fc.constantFrom("0-3", "1,2", "2,3", "22-23", "23,0", "*/2", "*"),
  );
  const dom = fc.oneof({ weight: 4, arbitrary: fc.constant("*") }, numeric(1, 31, 31));
  const dow = fc.oneof({ weight: 4, arbitrary: fc.constant("*") }, numeric(0, 7, 7));
  fc.assert(
    fc.property(
      fc.array(expression(minute, hour, dom, dow), { minLength: 1, maxLength: 2 }),
      int(0, DST_WINDOWS.length - 1),
      (expressions, w) => {
        const { zone, start, end, walls } = DST_WINDOWS[w];
        assert.equal(
          longestGapInWindow(expressions, start, end, zone),
          bruteGapZoned(expressions, walls, start),
          `${zone} ${new Date(start).toISOString()}`,
        );
      },
    ),
    { numRuns: 150 },
  );
});

Deno.test("across DST changes the gaps are croner's own (the scheduler's truth)", () => {
  const expressions = [
    ["30 2 * * *"],
    ["*/20 2 * * *"],
    ["0 2 * * 0"],
    ["30 0 * * *"],
    ["30 23 * * *"],
    ["10,40 23 * * *"],
    ["15 2 * * *"],
    ["*/15 * * * *"],
    ["0 2,3 * * *"],
    ["45 1 * * *", "50 2 * * *"],
    ["0 12 * * *"],
    ["0 12 30 * *", "0 12 31 * *"],
  ];
  for (const { zone, start, end } of DST_WINDOWS) {
    for (const e of expressions) {
      assert.equal(
        longestGapInWindow(e, start, end, zone),
        cronerGap(e, start, end, zone),
        `${e.join(" + ")} in ${zone} from ${new Date(start).toISOString()}`,
      );
    }
  }
});

Deno.test("a frequent schedule over a whole cycle stays fast", () => {
  const from = new Date("2026-01-01T00:00:00Z");
  longestGapMs(["* * * * *"], from, "Europe/Berlin"); // the zone's offsets for the cycle, once
  const t0 = performance.now();
  assert.equal(longestGapMs(["0 2 * * 0", "* * * * *"], from, "Europe/Berlin"), MINUTE);
  assert.equal(longestGapMs(["*/2 * * * *", "0 2 * * 0"], from), 2 * MINUTE);
  const ms = performance.now() - t0;
  assert.ok(ms < 2000, `took ${ms} ms`);
});
