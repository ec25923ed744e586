/**
 * Cron rules for policy schedules (croner): standard 5-field expressions only (minute resolution, so
 * nothing can fire every second) that fire at least once, plus the pure helpers the form and the cron
 * island use: the next runs and, from cron_words.ts, a plain-words reading (the longest gap and the RPO are
 * in cron_gaps.ts).
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

// The plain-words reading lives in its own module (steps, ranges, lists, names and croner's extensions).
export { describeCron, readCron } from "./cron_words.ts";
