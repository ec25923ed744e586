/**
 * The longest gap between consecutive runs of a set of 5-field cron schedules, exact, and the RPO derived
 * from it. Pure (the caller passes `from`); no zod, so it stays out of the islands' way.
 *
 * How it is exact without listing every minute:
 * - A cron run is a (day, minute of day) pair: the day fields (day of month, month, day of week, with
 *   croner's `L`, `W`, `#` and its OR rule when both day fields are restricted) choose the days, the minute
 *   and hour fields choose the same minutes on every chosen day. Which schedules fire on a day (a bit mask)
 *   depends only on the date's place in its year, and a year's dates depend only on whether it is a leap
 *   year and on the weekday of 1 January: 14 year types, whose masks are computed once each.
 * - Everything a cron field can see (month lengths, leap years, weekdays) repeats exactly every 400
 *   Gregorian years: 146,097 days, which is also a whole number of weeks (20,871). So the runs repeat with
 *   that period, and the longest gap over all time is the longest gap over one period starting anywhere,
 *   or the gap across its end (last run → first run + one period). No shorter window is safe: `0 0 29 2 *`
 *   skips 2100 (an 8-year gap) and a `#5` weekday can stay away for decades.
 * - A day whose runs all share one UTC offset contributes its first and last run and the longest gap
 *   inside it, all read from the mask (the minutes are precomputed per mask): one step per day, 146,097
 *   steps per period, whatever the schedules.
 * - Time zones with DST: the offsets come from `Intl` (the data croner uses), transitions found by a
 *   weekly sample and a search to the second. A day that meets a transition is expanded minute by minute
 *   with croner's rules (README "DST handling"): a time that occurs twice runs at both occurrences for
 *   interval jobs and only the first for fixed-time jobs (single minute and hour); a time that does not
 *   exist is skipped by interval jobs and runs at the end of the gap, on the same day, for fixed-time jobs.
 *   The period then starts at `from`: the zone's rules repeat like the calendar once its last announced
 *   change is in force.
 */
import { CronPattern } from "croner";

const MINUTE = 60_000;
const DAY = 86_400_000;
/** Days in one Gregorian cycle (400 years), a whole number of weeks. */
const GREGORIAN_CYCLE_DAYS = 146_097;
const CYCLE_MS = GREGORIAN_CYCLE_DAYS * DAY;
/** croner's nth-weekday bits for the 1st..5th occurrence (and 32 for the last). */
const NTH_BITS = [1, 2, 4, 8, 16];
const MONTH_START = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
const MONTH_LENGTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

interface Schedule {
  pattern: CronPattern;
  /** Minutes of the day (0–1439) the hour and minute fields allow, ascending. */
  minutes: number[];
  fixed: boolean;
}

function isLeap(y: number): boolean {
  return (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0;
}

function toSchedule(expression: string): Schedule | null {
  const fields = expression.trim().split(/\s+/);
  if (fields.length !== 5) return null;
  let pattern: CronPattern;
  try {
    pattern = new CronPattern(expression.trim());
  } catch {
    return null;
  }
  const minutes: number[] = [];
  for (let h = 0; h < 24; h++) {
    if (!pattern.hour[h]) continue;
    for (let m = 0; m < 60; m++) if (pattern.minute[m]) minutes.push(h * 60 + m);
  }
  return minutes.length ? { pattern, minutes, fixed: pattern.isFixedTime } : null;
}

/**
 * Whether day `d` (1-based) of month `m0` (0-based), a weekday `wd` (0 = Sunday) in a month of `len`
 * days, is chosen by the pattern's day fields — croner's own rule (CronDate `_matchDayValue` with the
 * default `domAndDow: false`): day of month (with `L`, `LW`, `nW`), then day of week (with `#n` and
 * `nL`), OR-ed when both fields are restricted, AND-ed with `+` or when the day of month is `*`.
 */
function cronDayMatches(p: CronPattern, m0: number, d: number, wd: number, len: number): boolean {
  if (!p.month[m0]) return false;
  let dom = p.day[d - 1] ? 1 : 0;
  if (!dom) {
    for (let i = 0; i < 31; i++) {
      if (!p.nearestWeekdays[i]) continue;
      const n = i + 1;
      if (n > len) continue;
      const wdn = (((wd + n - d) % 7) + 7) % 7;
      const nearest = wdn === 0 ? (n === len ? n - 2 : n + 1) : wdn === 6 ? (n === 1 ? n + 2 : n - 1) : n;
      if (nearest === d) {
        dom = 1;
        break;
      }
    }
  }
  if (p.lastWeekday) {
    const wdl = (((wd + len - d) % 7) + 7) % 7;
    if (d === (wdl === 0 ? len - 2 : wdl === 6 ? len - 1 : len)) dom = 1;
  }
  if (p.lastDayOfMonth && d === len) dom = 1;
  if (p.starDOW) return dom === 1;
  let dow = p.dayOfWeek[wd];
  if (dow) {
    const nth = Math.ceil(d / 7);
    dow = (dow & NTH_BITS[nth - 1]) || ((dow & 32) && d + 7 > len) ? 1 : 0;
  }
  if (p.useAndLogic || p.starDOM) return dom === 1 && dow === 1;
  return dom === 1 || dow === 1;
}

/** What the union of some schedules runs on a day where exactly those schedules' day fields match. */
interface MaskInfo {
  /** Minutes of the day, ascending. */
  minutes: Int32Array;
  /** Per minute of the day: 1 = a fixed-time schedule runs then, 2 = an interval one, 3 = both. */
  kinds: Uint8Array;
  /** Longest gap between consecutive minutes of the day (ms), 0 with one minute. */
  inner: number;
}

/** The runs of a set of schedules in a time zone, walked day by day. */
class Walker {
  private readonly yearMasks = new Map<number, Uint32Array>();
  private readonly maskInfo = new Map<number, MaskInfo>();

  constructor(private readonly schedules: Schedule[]) {}

  /** Masks of the days of a year of this type (leap, weekday of 1 January), one per day of the year. */
  private masksOfYear(y: number): Uint32Array {
    const jan1 = new Date(Date.UTC(y, 0, 1)).getUTCDay();
    const leap = isLeap(y);
    const type = (leap ? 7 : 0) + jan1;
    let masks = this.yearMasks.get(type);
    if (masks) return masks;
    masks = new Uint32Array(leap ? 366 : 365);
    for (let m0 = 0; m0 < 12; m0++) {
      const len = m0 === 1 && leap ? 29 : MONTH_LENGTH[m0];
      const start = MONTH_START[m0] + (m0 > 1 && leap ? 1 : 0);
      for (let d = 1; d <= len; d++) {
        const doy = start + d - 1;
        const wd = (jan1 + doy) % 7;
        let mask = 0;
        for (let i = 0; i < this.schedules.length; i++) {
          if (cronDayMatches(this.schedules[i].pattern, m0, d, wd, len)) mask |= 1 << i;
        }
        masks[doy] = mask;
      }
    }
    this.yearMasks.set(type, masks);
    return masks;
  }

  private info(mask: number): MaskInfo {
    let info = this.maskInfo.get(mask);
    if (info) return info;
    const kinds = new Uint8Array(1440);
    for (let i = 0; i < this.schedules.length; i++) {
      if (!(mask & (1 << i))) continue;
      const s = this.schedules[i];
      for (const m of s.minutes) kinds[m] |= s.fixed ? 1 : 2;
    }
    const list: number[] = [];
    for (let m = 0; m < 1440; m++) if (kinds[m]) list.push(m);
    let inner = 0;
    for (let i = 1; i < list.length; i++) inner = Math.max(inner, (list[i] - list[i - 1]) * MINUTE);
    info = { minutes: Int32Array.from(list), kinds, inner };
    this.maskInfo.set(mask, info);
    return info;
  }

  /**
   * Walks the runs with an instant in [startMs, endMs), in order, into `acc`. `zone` gives the offsets
   * over the window (and a few days either side).
   */
  walk(zone: Zone, startMs: number, endMs: number, acc: Accumulator): void {
    const trans = zone.transitions;
    const firstDay = Math.floor(startMs / DAY) - 2;
    const lastDay = Math.floor((endMs - 1) / DAY) + 2;
    let ti = 0;
    let offset = zone.initial;
    let day = firstDay;
    let year = new Date(day * DAY).getUTCFullYear();
    let masks = this.masksOfYear(year);
    let doy = Math.round((day * DAY - Date.UTC(year, 0, 1)) / DAY);
    const maskOf = (d: number): number => {
      // Days are visited in increasing order; move the (year, day of year) cursor along.
      doy += d - day;
      day = d;
      while (doy >= masks.length) {
        doy -= masks.length;
        masks = this.masksOfYear(++year);
      }
      return masks[doy];
    };
    for (let d = firstDay; d <= lastDay;) {
      const dayStart = d * DAY;
      while (ti < trans.length && trans[ti].hi <= dayStart) offset = trans[ti++].after;
      if (ti < trans.length && trans[ti].lo < dayStart + DAY) {
        // A transition meets this day: expand it (and any day the same transitions reach) minute by minute.
        let end = d;
        let tj = ti;
        let hiMax = -Infinity;
        while (tj < trans.length && trans[tj].lo < (end + 1) * DAY) {
          hiMax = Math.max(hiMax, trans[tj].hi);
          end = Math.max(end, Math.floor((hiMax - 1) / DAY));
          tj++;
        }
        const days: { start: number; info: MaskInfo }[] = [];
        for (let x = d; x <= end; x++) {
          const mask = maskOf(x);
          if (mask) days.push({ start: x * DAY, info: this.info(mask) });
        }
        if (tj - ti === 1) expandAcrossOne(days, trans[ti], acc);
        else expandAcrossMany(days, offset, trans.slice(ti, tj), acc);
        d = end + 1;
        continue;
      }
      const mask = maskOf(d);
      if (mask) {
        const info = this.info(mask);
        const first = dayStart + info.minutes[0] * MINUTE - offset;
        const last = dayStart + info.minutes[info.minutes.length - 1] * MINUTE - offset;
        if (first >= startMs && last < endMs) acc.addDay(first, last, info.inner, info.minutes.length);
        else for (const m of info.minutes) acc.add(dayStart + m * MINUTE - offset);
      }
      d++;
    }
  }
}

/** Runs across one transition, in order: before it, the first pass (or the gap's end), the second pass, after. */
function expandAcrossOne(days: { start: number; info: MaskInfo }[], t: Transition, acc: Accumulator) {
  const ambiguous = t.after < t.before;
  const gapEndDay = Math.floor(t.hi / DAY);
  let gapRun = false;
  for (const { start, info } of days) {
    for (const m of info.minutes) {
      const wall = start + m * MINUTE;
      if (wall >= t.hi) break;
      if (wall < t.lo || ambiguous) acc.add(wall - t.before);
      else if (!gapRun && info.kinds[m] & 1 && Math.floor(wall / DAY) === gapEndDay) {
        // A fixed-time run in the gap runs when the gap ends, once, if that is still the same day.
        acc.add(t.at);
        gapRun = true;
      }
    }
  }
  if (ambiguous) {
    for (const { start, info } of days) {
      for (const m of info.minutes) {
        const wall = start + m * MINUTE;
        if (wall >= t.hi) break;
        if (wall >= t.lo && info.kinds[m] & 2) acc.add(wall - t.after);
      }
    }
  }
  for (const { start, info } of days) {
    for (const m of info.minutes) {
      const wall = start + m * MINUTE;
      if (wall >= t.hi) acc.add(wall - t.after);
    }
  }
}

/** The general case (transitions closer than a day apart): each wall time resolved on its own, then sorted. */
function expandAcrossMany(
  days: { start: number; info: MaskInfo }[],
  offsetBefore: number,
  trans: Transition[],
  acc: Accumulator,
) {
  const offsetAt = (instant: number) => {
    let o = offsetBefore;
    for (const t of trans) if (t.at <= instant) o = t.after;
    return o;
  };
  const offsets = [...new Set([offsetBefore, ...trans.map((t) => t.after)])];
  const runs: number[] = [];
  for (const { start, info } of days) {
    for (const m of info.minutes) {
      const wall = start + m * MINUTE;
      const kinds = info.kinds[m];
      const valid = offsets.map((o) => wall - o).filter((i) => offsetAt(i) === wall - i);
      const at = [...new Set(valid)].sort((a, b) => a - b);
      if (at.length === 1) runs.push(at[0]);
      else if (at.length > 1) {
        runs.push(at[0]);
        if (kinds & 2) runs.push(at[at.length - 1]);
      } else if (kinds & 1) {
        const gap = trans.find((t) => t.after > t.before && wall >= t.lo && wall < t.hi);
        if (gap && Math.floor(gap.hi / DAY) === Math.floor(wall / DAY)) runs.push(gap.at);
      }
    }
  }
  runs.sort((a, b) => a - b);
  for (const r of runs) acc.add(r);
}

/** Keeps the first and last run of a window and the longest gap between consecutive runs. */
class Accumulator {
  first = NaN;
  last = NaN;
  count = 0;
  gap = 0;
  constructor(private readonly startMs: number, private readonly endMs: number) {}
  add(at: number) {
    if (at < this.startMs || at >= this.endMs) return;
    if (this.count) this.gap = Math.max(this.gap, at - this.last);
    else this.first = at;
    this.last = at;
    this.count++;
  }
  /** A day's runs at once: its first and last run, the longest gap between them, how many. */
  addDay(first: number, last: number, inner: number, runs: number) {
    if (this.count) this.gap = Math.max(this.gap, first - this.last);
    else this.first = first;
    this.gap = Math.max(this.gap, inner);
    this.last = last;
    this.count += runs;
  }
}

// ---------------------------------------------------------------------------------------------------------
// Time zones

/** A change of UTC offset at `at`; `lo`..`hi` is the wall-clock span it skips or repeats (offsets in ms). */
interface Transition {
  at: number;
  before: number;
  after: number;
  lo: number;
  hi: number;
}
interface Zone {
  initial: number;
  transitions: Transition[];
}

const FIXED_ZONES = new Set([
  "UTC",
  "Etc/UTC",
  "GMT",
  "Etc/GMT",
  "Etc/Universal",
  "Etc/Zulu",
  "Universal",
  "Zulu",
]);
const SAMPLE_MS = 7 * DAY;
const zoneCache = new Map<string, { from: number; to: number; zone: Zone }>();
const formatters = new Map<string, Intl.DateTimeFormat>();

/** The `longOffset` formatter of a time zone; null for a name `Intl` does not know. */
function formatterOf(timeZone: string): Intl.DateTimeFormat | null {
  let f = formatters.get(timeZone);
  if (!f) {
    try {
      f = new Intl.DateTimeFormat("en-US", { timeZone, timeZoneName: "longOffset" });
    } catch {
      return null;
    }
    formatters.set(timeZone, f);
  }
  return f;
}

function offsetReader(timeZone: string): (instant: number) => number {
  const format = formatterOf(timeZone);
  if (!format) throw new RangeError(`Unknown time zone ${timeZone}`);
  return (instant) => {
    const m = /GMT(?:([+-])(\d{2}):(\d{2})(?::(\d{2}))?)?$/.exec(format.format(instant));
    if (!m) throw new RangeError(`Cannot read the UTC offset of ${timeZone}`);
    if (!m[1]) return 0;
    const ms = ((Number(m[2]) * 60 + Number(m[3])) * 60 + Number(m[4] ?? 0)) * 1000;
    return m[1] === "-" ? -ms : ms;
  };
}

/**
 * The offsets of `timeZone` over [fromMs, toMs] (plus three days either side). Transitions are found by
 * sampling every 7 days and searching each change to the second, so two changes less than a week apart
 * that cancel out would be missed: no zone has such rules today or announced.
 */
function zoneOffsets(timeZone: string, fromMs: number, toMs: number): Zone {
  if (FIXED_ZONES.has(timeZone)) return { initial: 0, transitions: [] };
  const needFrom = fromMs - 3 * DAY;
  const needTo = toMs + 3 * DAY;
  const cached = zoneCache.get(timeZone);
  if (cached && cached.from <= needFrom && cached.to >= needTo) return cached.zone;
  // Whole years, a year early and two late, so the next calls (a later `from`) reuse the result.
  const from = Date.UTC(new Date(needFrom).getUTCFullYear() - 1, 0, 1);
  const to = Date.UTC(new Date(needTo).getUTCFullYear() + 2, 0, 1);
  const offsetAt = offsetReader(timeZone);
  const transitions: Transition[] = [];
  const initial = offsetAt(from);
  let at = from;
  let off = initial;
  while (at < to) {
    const next = Math.min(at + SAMPLE_MS, to);
    const nextOff = offsetAt(next);
    let cur = at;
    let curOff = off;
    while (curOff !== nextOff) {
      // offsetAt(lo) === curOff and offsetAt(hi) !== curOff; both whole seconds.
      let lo = cur;
      let hi = next;
      while (hi - lo > 1000) {
        const mid = lo + Math.floor((hi - lo) / 2000) * 1000;
        if (offsetAt(mid) === curOff) lo = mid;
        else hi = mid;
      }
      const after = offsetAt(hi);
      transitions.push({
        at: hi,
        before: curOff,
        after,
        lo: hi + Math.min(curOff, after),
        hi: hi + Math.max(curOff, after),
      });
      cur = hi;
      curOff = after;
    }
    at = next;
    off = nextOff;
  }
  const zone = { initial, transitions };
  if (zoneCache.size > 500) zoneCache.clear();
  zoneCache.set(timeZone, { from, to, zone });
  return zone;
}

// ---------------------------------------------------------------------------------------------------------
// Public API

function knownZone(timeZone: string): boolean {
  return FIXED_ZONES.has(timeZone) || formatterOf(timeZone) !== null;
}

function schedulesOf(expressions: string[]): Schedule[] {
  const schedules = [...new Set(expressions.map((e) => e.trim()).filter(Boolean))]
    .map(toSchedule).filter((s): s is Schedule => s !== null);
  if (schedules.length > 30) throw new RangeError("At most 30 schedules");
  return schedules;
}

/**
 * The longest gap (ms) between consecutive runs of the union of `expressions` among the runs with an
 * instant in [startMs, endMs); Infinity with fewer than two runs. Invalid expressions are ignored.
 */
export function longestGapInWindow(
  expressions: string[],
  startMs: number,
  endMs: number,
  timeZone = "UTC",
): number {
  const schedules = schedulesOf(expressions);
  if (!schedules.length || !knownZone(timeZone)) return Infinity;
  const acc = new Accumulator(startMs, endMs);
  new Walker(schedules).walk(zoneOffsets(timeZone, startMs, endMs), startMs, endMs, acc);
  return acc.count < 2 ? Infinity : acc.gap;
}

/**
 * The longest gap (ms) between consecutive runs of the union of the given schedules, over all time:
 * one Gregorian cycle from `from` and the gap across its end (see the module comment). Infinity when none
 * fires (or the time zone is unknown, so no schedule can run). Invalid expressions are ignored.
 */
export function longestGapMs(expressions: string[], from: Date, timeZone = "UTC"): number {
  const schedules = schedulesOf(expressions);
  if (!schedules.length || !knownZone(timeZone)) return Infinity;
  const start = Math.floor(from.getTime() / MINUTE) * MINUTE;
  const end = start + CYCLE_MS;
  const acc = new Accumulator(start, end);
  new Walker(schedules).walk(zoneOffsets(timeZone, start, end), start, end, acc);
  if (!acc.count) return Infinity;
  return Math.max(acc.gap, acc.first + CYCLE_MS - acc.last);
}

/** Grace added to the longest gap when deriving an RPO: a backup may take a while and start late. */
export const RPO_GRACE_HOURS = 6;

/** Default RPO (hours): the longest gap between scheduled full/incremental runs, plus the grace, rounded up. */
export function deriveRpoHours(schedules: string[], from: Date, timeZone = "UTC"): number {
  const gap = longestGapMs(schedules.filter(Boolean), from, timeZone);
  if (!Number.isFinite(gap)) return 24 * 7 + RPO_GRACE_HOURS;
  return Math.ceil(gap / 3_600_000) + RPO_GRACE_HOURS;
}
