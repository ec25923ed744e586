/**
 * Cron rules for policy schedules (croner): standard 5-field expressions only (minute resolution, so
 * nothing can fire every second) that fire at least once, plus the pure helpers the form, the cron
 * island and the RPO use: the next runs, a plain-words reading, the longest gap. No zod here, so the
 * island can share it (DESIGN's "islands import only types" has this one exception: pure rules).
 */
import { Cron } from "croner";

const DAY = 86_400_000;

/** Parses a 5-field cron in `timeZone`; returns an error sentence or the compiled Cron. */
export function compileCron(
  expression: string,
  timeZone = "UTC",
): { ok: true; cron: Cron } | { ok: false; error: string } {
  const fields = expression.trim().split(/\s+/);
  if (fields.length !== 5) {
    return {
      ok: false,
      error: fields.length === 6
        ? "must have 5 fields (minute hour day month weekday): seconds are not allowed"
        : "must have 5 fields: minute hour day-of-month month day-of-week, e.g. 0 2 * * 0",
    };
  }
  try {
    const cron = new Cron(expression.trim(), { paused: true, timezone: timeZone });
    if (!cron.nextRun(new Date(0)) && !cron.nextRun()) {
      return { ok: false, error: "never fires (no such date)" };
    }
    return { ok: true, cron };
  } catch (e) {
    return { ok: false, error: (e as Error).message.replace(/^CronPattern: /, "") };
  }
}

/** The next `count` runs after `from`, in `timeZone`. */
export function nextRuns(expression: string, from: Date, count = 5, timeZone = "UTC"): Date[] {
  const r = compileCron(expression, timeZone);
  return r.ok ? r.cron.nextRuns(count, from) : [];
}

/**
 * The longest gap between consecutive runs of the union of the given schedules, measured over the
 * year after `from` (so weekly and monthly patterns are seen whole). Infinity when none fires.
 */
export function longestGapMs(expressions: string[], from: Date, timeZone = "UTC"): number {
  const end = from.getTime() + 366 * DAY;
  const times: number[] = [];
  for (const e of expressions) {
    const r = compileCron(e, timeZone);
    if (!r.ok) continue;
    let at: Date | null = from;
    // Sample at most ~20k runs per schedule (every 30 minutes for a year).
    for (let i = 0; i < 20_000 && at && at.getTime() < end; i++) {
      at = r.cron.nextRun(at);
      if (at && at.getTime() < end) times.push(at.getTime());
    }
  }
  if (times.length < 2) return Infinity;
  times.sort((a, b) => a - b);
  let gap = 0;
  for (let i = 1; i < times.length; i++) gap = Math.max(gap, times[i] - times[i - 1]);
  return gap;
}

/** Grace added to the longest gap when deriving an RPO: a backup may take a while and start late. */
export const RPO_GRACE_HOURS = 6;

/** Default RPO (hours): the longest gap between scheduled full/incremental runs, plus the grace, rounded up. */
export function deriveRpoHours(schedules: string[], from: Date, timeZone = "UTC"): number {
  const gap = longestGapMs(schedules.filter(Boolean), from, timeZone);
  if (!Number.isFinite(gap)) return 24 * 7 + RPO_GRACE_HOURS;
  return Math.ceil(gap / 3_600_000) + RPO_GRACE_HOURS;
}

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"];

/** A plain-words reading of common patterns; falls back to the expression itself. */
export function describeCron(expression: string): string {
  const f = expression.trim().split(/\s+/);
  if (f.length !== 5) return expression;
  const [min, hour, dom, mon, dow] = f;
  const time = /^\d+$/.test(min) && /^\d+$/.test(hour)
    ? `at ${hour.padStart(2, "0")}:${min.padStart(2, "0")}`
    : null;
  const dayName = (d: string) => DAYS[Number(d) % 7];
  if (time && dom === "*" && mon === "*") {
    if (dow === "*") return `Every day ${time}`;
    if (/^\d$/.test(dow)) return `Every ${dayName(dow)} ${time}`;
    const range = /^(\d)-(\d)$/.exec(dow);
    if (range) return `${dayName(range[1])} to ${dayName(range[2])} ${time}`;
    if (/^\d(,\d)+$/.test(dow)) return `On ${dow.split(",").map(dayName).join(", ")} ${time}`;
  }
  if (time && /^\d+$/.test(dom) && mon === "*" && dow === "*") return `On day ${dom} of every month ${time}`;
  const every = /^\*\/(\d+)$/.exec(hour);
  if (/^\d+$/.test(min) && every && dom === "*" && mon === "*" && dow === "*") {
    return `Every ${every[1]} hours at minute ${min}`;
  }
  return expression;
}
