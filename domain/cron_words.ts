/**
 * The plain-words reading of a 5-field cron expression (minute hour day-of-month month day-of-week), as
 * croner evaluates it: steps (`*\/2`, `8-18/2`), ranges, lists, names (`MON`, `JAN`), `?`, and croner's
 * `L`, `W`, `#` and `+` extensions. Pure and dependency-free, so the cron island shares it.
 *
 * Day-of-month and day-of-week both restricted fire on either (croner's default, like Vixie cron); a `+`
 * before the weekday asks for both. A field the reader does not understand gives null, and callers show
 * the expression itself once.
 */

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];
const MONTHS = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
];
const DAY_NAMES: Record<string, number> = { SUN: 0, MON: 1, TUE: 2, WED: 3, THU: 4, FRI: 5, SAT: 6 };
const MONTH_NAMES: Record<string, number> = Object.fromEntries(
  MONTHS.map((m, i) => [m.slice(0, 3).toUpperCase(), i + 1]),
);
const ORDINALS = ["", "first", "second", "third", "fourth", "fifth"];

/** One item of a field's comma list: a value, or a range with a step (`*` is the whole range). */
interface Range {
  from: number;
  to: number;
  step: number;
  /** Written as `*` or `*\/n`: the field's whole range. */
  whole: boolean;
}

interface FieldBounds {
  min: number;
  max: number;
  names?: Record<string, number>;
}

const MINUTE: FieldBounds = { min: 0, max: 59 };
const HOUR: FieldBounds = { min: 0, max: 23 };
const DOM: FieldBounds = { min: 1, max: 31 };
const MONTH: FieldBounds = { min: 1, max: 12, names: MONTH_NAMES };
const DOW: FieldBounds = { min: 0, max: 7, names: DAY_NAMES };

function parseValue(text: string, bounds: FieldBounds): number | null {
  const named = bounds.names?.[text.toUpperCase()];
  if (named !== undefined) return named;
  if (!/^\d{1,2}$/.test(text)) return null;
  const n = Number(text);
  return n >= bounds.min && n <= bounds.max ? n : null;
}

/** Parses one list item (`5`, `1-5`, `*`, `*\/15`, `10-50/10`); null when it is not of these forms. */
function parseRange(text: string, bounds: FieldBounds): Range | null {
  const [base, stepText, extra] = text.split("/");
  if (extra !== undefined) return null;
  const step = stepText === undefined ? 1 : /^\d{1,2}$/.test(stepText) ? Number(stepText) : 0;
  if (step < 1) return null;
  if (base === "*" || base === "?") return { from: bounds.min, to: bounds.max, step, whole: true };
  const [a, b, more] = base.split("-");
  if (more !== undefined) return null;
  const from = parseValue(a, bounds);
  // `a/n` (croner's "sloppy" form) runs from a to the end of the field.
  const to = b === undefined ? (stepText === undefined ? from : bounds.max) : parseValue(b, bounds);
  if (from === null || to === null || to < from) return null;
  return { from, to, step, whole: false };
}

/** Parses a comma list; null when any item is not understood. */
function parseList(text: string, bounds: FieldBounds): Range[] | null {
  const items = text.split(",").map((t) => parseRange(t, bounds));
  return items.every((i): i is Range => i !== null) ? items : null;
}

function isAny(items: Range[]): boolean {
  return items.length === 1 && items[0].whole && items[0].step === 1;
}

/** The values a list selects, ascending. */
function expand(items: Range[]): number[] {
  const out = new Set<number>();
  for (const r of items) for (let v = r.from; v <= r.to; v += r.step) out.add(v);
  return [...out].sort((a, b) => a - b);
}

/** "a", "a and b", "a, b and c". */
function joinWords(words: string[]): string {
  return words.length <= 1 ? words.join("") : `${words.slice(0, -1).join(", ")} and ${words.at(-1)}`;
}

const pad = (n: number) => String(n).padStart(2, "0");
const plural = (n: number, unit: string) => n === 1 ? unit : `${n} ${unit}s`;

/** Runs of consecutive values as [first, last] pairs. */
function runs(values: number[]): [number, number][] {
  const out: [number, number][] = [];
  for (const v of values) {
    const last = out.at(-1);
    if (last && v === last[1] + 1) last[1] = v;
    else out.push([v, v]);
  }
  return out;
}

/** Names of a set of values, consecutive runs of three or more as "a to b". */
function namedSet(values: number[], name: (v: number) => string): string {
  return joinWords(
    runs(values).flatMap(([a, b]) =>
      b - a >= 2 ? [`${name(a)} to ${name(b)}`] : b === a ? [name(a)] : [name(a), name(b)]
    ),
  );
}

// ---------------------------------------------------------------------------------------------------
// Time of day

/** The time part: a short list of fixed times, or a repetition ("every 5 minutes from 09:00 to 17:59"). */
type TimePart = { fixed: true; text: string } | { fixed: false; text: string };

function readTime(minuteText: string, hourText: string): TimePart | null {
  const minute = parseList(minuteText, MINUTE);
  const hour = parseList(hourText, HOUR);
  if (!minute || !hour) return null;
  const minutes = expand(minute);
  const hours = expand(hour);
  const minuteValues = minute.every((r) => r.from === r.to);
  const hourFinite = hour.every((r) => r.step === 1 && !r.whole);
  if (minuteValues && hourFinite && minutes.length * hours.length <= 6) {
    const times = hours.flatMap((h) => minutes.map((m) => `${pad(h)}:${pad(m)}`));
    return { fixed: true, text: `at ${joinWords(times)}` };
  }
  const hourAny = isAny(hour);
  // Minute values inside hours ("every hour at minute 5", "every 6 hours at minute 0").
  if (minuteValues) {
    const at = `at ${minutes.length === 1 ? "minute" : "minutes"} ${joinWords(minutes.map(String))}`;
    if (hourAny) return { fixed: false, text: `every hour ${at}` };
    if (hour.length === 1 && hour[0].step > 1) {
      const h = hour[0];
      if (h.whole || minutes.length > 1) {
        const span = h.whole ? "" : ` from ${pad(h.from)}:00 to ${pad(lastOf(h))}:59`;
        return { fixed: false, text: `every ${h.step} hours ${at}${span}` };
      }
      const m = pad(minutes[0]);
      return {
        fixed: false,
        text: `every ${h.step} hours from ${pad(h.from)}:${m} to ${pad(lastOf(h))}:${m}`,
      };
    }
    if (hour.length === 1 && minutes.length === 1) {
      const h = hour[0];
      return {
        fixed: false,
        text: `every hour from ${pad(h.from)}:${pad(minutes[0])} to ${pad(h.to)}:${pad(minutes[0])}`,
      };
    }
    return { fixed: false, text: `${at} past ${hoursText(hour)}` };
  }
  // A repetition inside the hour.
  const within = minuteRepetition(minute);
  return { fixed: false, text: hourAny ? within : `${within} ${hoursSpan(hour)}` };
}

function lastOf(r: Range): number {
  return r.from + Math.floor((r.to - r.from) / r.step) * r.step;
}

/** "every minute", "every 5 minutes", "every minute from minute 10 to 20", or a mixed list. */
function minuteRepetition(items: Range[]): string {
  const one = (r: Range) => {
    const every = `every ${plural(r.step, "minute")}`;
    if (r.whole) return r.step === 1 ? "every minute" : every;
    if (r.from === r.to) return `at minute ${r.from}`;
    return `${r.step === 1 ? "every minute" : every} from minute ${r.from} to ${lastOf(r)}`;
  };
  return joinWords(items.map(one));
}

/** The hours a repetition runs in: "from 09:00 to 17:59", "during every 2nd hour", "during hours 02 and 14". */
function hoursSpan(items: Range[]): string {
  if (items.length === 1) {
    const r = items[0];
    if (r.step === 1) return `from ${pad(r.from)}:00 to ${pad(r.to)}:59`;
    const every = `during every ${ordinal(r.step)} hour`;
    return r.whole ? every : `${every} from ${pad(r.from)}:00 to ${pad(lastOf(r))}:59`;
  }
  return `during hours ${joinWords(expand(items).map(pad))}`;
}

function hoursText(items: Range[]): string {
  const hours = expand(items);
  return `${hours.length === 1 ? "hour" : "hours"} ${joinWords(hours.map(pad))}`;
}

function ordinal(n: number): string {
  if (n === 2) return "2nd";
  if (n === 3) return "3rd";
  return `${n}th`;
}

// ---------------------------------------------------------------------------------------------------
// Days and months

/** A day-of-month part, e.g. "on day 1", "on days 1 to 7", "on the last day", "every 2 days from day 1". */
function readDayOfMonth(text: string): string | null {
  const parts = text.split(",").map((item) => {
    if (item === "L") return "the last day";
    if (item === "LW") return "the last weekday";
    const w = /^(\d{1,2})W$/.exec(item);
    if (w && Number(w[1]) >= 1 && Number(w[1]) <= 31) return `the weekday nearest day ${Number(w[1])}`;
    const r = parseRange(item, DOM);
    if (!r) return null;
    if (r.step > 1) return `every ${r.step} days from day ${r.from}${r.to < 31 ? ` to ${lastOf(r)}` : ""}`;
    return r.from === r.to ? `day ${r.from}` : `days ${r.from} to ${r.to}`;
  });
  if (parts.some((p) => p === null)) return null;
  // Plain values read as one list: "on days 1 and 15".
  const values = text.split(",").every((i) => /^\d{1,2}$/.test(i));
  if (values && parts.length > 1) {
    return `on days ${joinWords(text.split(",").map((d) => String(Number(d))))}`;
  }
  const [first] = parts;
  return parts.length === 1 && first!.startsWith("every") ? first! : `on ${joinWords(parts as string[])}`;
}

/** A day-of-week part: "every Sunday", "Monday to Friday", "on the second Friday", "on Monday and Friday". */
function readDayOfWeek(text: string): string | null {
  const special: string[] = [];
  const plain: Range[] = [];
  for (const item of text.split(",")) {
    const nth = /^([A-Za-z]{3}|\d)#([1-5L])$/.exec(item) ?? /^([A-Za-z]{3}|\d)(L)$/.exec(item);
    if (nth) {
      const day = parseValue(nth[1], DOW);
      if (day === null) return null;
      special.push(`the ${nth[2] === "L" ? "last" : ORDINALS[Number(nth[2])]} ${DAYS[day % 7]} of the month`);
      continue;
    }
    const r = parseRange(item, DOW);
    if (!r) return null;
    plain.push(r);
  }
  const days = [...new Set(expand(plain).map((d) => d % 7))].sort((a, b) => a - b);
  if (!special.length) {
    if (days.length === 1) return `every ${DAYS[days[0]]}`;
    const spans = runs(days);
    if (spans.length === 1 && days.length >= 3) return `${DAYS[days[0]]} to ${DAYS[days.at(-1)!]}`;
  }
  return `on ${joinWords([...(days.length ? [namedSet(days, (d) => DAYS[d])] : []), ...special])}`;
}

/** "in January", "from March to October", "in January, April, July and October"; "" for every month. */
function readMonth(text: string): string | null {
  const items = parseList(text, MONTH);
  if (!items) return null;
  if (isAny(items)) return "";
  const months = expand(items);
  const spans = runs(months);
  if (spans.length === 1 && months.length >= 3) {
    return `from ${MONTHS[months[0] - 1]} to ${MONTHS[months.at(-1)! - 1]}`;
  }
  return `in ${namedSet(months, (m) => MONTHS[m - 1])}`;
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/**
 * The plain-words reading of a 5-field cron expression ("Every Sunday at 02:00", "Every 2 minutes",
 * "Every hour from 09:00 to 17:00, Monday to Friday"), or null when some field is not understood.
 */
export function readCron(expression: string): string | null {
  const f = expression.trim().split(/\s+/);
  if (f.length !== 5) return null;
  const [minuteText, hourText, domText, monthText, dowRaw] = f;
  const time = readTime(minuteText, hourText);
  const month = readMonth(monthText);
  const both = dowRaw.startsWith("+");
  const dowText = both ? dowRaw.slice(1) : dowRaw;
  const anyDom = domText === "*" || domText === "?";
  const anyDow = dowText === "*" || dowText === "?";
  const dom = anyDom ? "" : readDayOfMonth(domText);
  const dow = anyDow ? "" : readDayOfWeek(dowText);
  if (time === null || month === null || dom === null || dow === null) return null;
  // The day part: weekday and/or day of the month, with the months they apply in.
  let day: string;
  if (dom && dow) {
    const weekday = dow.replace(/^every /, "on ").replace(/^(\w+day to \w+day)$/, "on $1");
    day = both
      ? `${dom} of the month when it is ${weekday.replace(/^on /, "a ")}`
      : `${dom} of the month or ${weekday}`;
    if (month) day += ` ${month}`;
  } else if (dom) {
    day = dom.startsWith("every")
      ? `${dom} of ${month ? month.replace(/^(in|from) /, "") : "every month"}`
      : `${dom} of ${
        month
          ? month.replace(/^in /, "").replace(/^from (\w+) to (\w+)$/, "each month from $1 to $2")
          : "every month"
      }`;
  } else if (dow) {
    day = month ? `${dow} ${month}` : dow;
  } else {
    if (!time.fixed) return capitalize(month ? `${time.text}, ${month}` : time.text);
    day = month ? `every day ${month}` : "every day";
  }
  if (time.fixed) return capitalize(`${day} ${time.text}`);
  return capitalize(`${time.text}, ${day}`);
}

/** A plain-words reading of a cron expression, or the expression itself when it cannot be read. */
export function describeCron(expression: string): string {
  return readCron(expression) ?? expression;
}
