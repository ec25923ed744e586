/**
 * Cron rules for policy schedules (croner): standard 5-field expressions only (minute resolution, so
 * nothing can fire every second) that fire at least once, plus the pure helpers the form and the cron
 * island use: the next runs and a plain-words reading (the longest gap and the RPO are in cron_gaps.ts).
 * No zod here, so the island can share it (DESIGN's "islands import only types" has this one exception: pure rules).
 */
import { Cron } from "croner";

type Compiled = { ok: true; cron: Cron } | { ok: false; error: string };

/**
 * Compiled expressions by time zone and expression: compiling checks the expression fires at all, which
 * costs a search; policies share few schedules, and a page lists 50 jobs' next runs. Bounded.
 */
const compiled = new Map<string, Compiled>();

/** Parses a 5-field cron in `timeZone`; returns an error sentence or the compiled Cron. */
export function compileCron(expression: string, timeZone = "UTC"): Compiled {
  const key = `${timeZone}\u0000${expression}`;
  let result = compiled.get(key);
  if (!result) {
    if (compiled.size >= 1000) compiled.clear();
    compiled.set(key, result = compile(expression, timeZone));
  }
  return result;
}

function compile(expression: string, timeZone: string): Compiled {
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
