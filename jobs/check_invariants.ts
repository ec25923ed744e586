/**
 * The consistency check (domain/invariant_checks.ts), bounded so it never holds up a start or a minute
 * tick for long on a large KV; logs one line per violation (sentences of ids and key names: no values,
 * no secrets) and a summary.
 */
import { type InvariantTrigger, runInvariantCheck } from "../domain/invariant_checks.ts";
import type { Logger } from "../domain/log.ts";

/** How long one run may read before it stops and says it is partial. */
export const INVARIANT_TIME_BOX_MS = 10_000;
/** How many entries one run may read before it stops and says it is partial. */
export const INVARIANT_MAX_ENTRIES = 200_000;
/** Violations logged one per line; beyond this, one line says how many more there are. */
const LOGGED_VIOLATIONS = 200;

export interface CheckInvariantsOptions {
  trigger: InvariantTrigger;
  logger?: Logger;
  timeBoxMs?: number;
  maxEntries?: number;
  /** Monotonic milliseconds; defaults to `performance.now()` (tests pass their own). */
  elapsedMs?: () => number;
}

/** Runs the bounded check, stores and alerts (see runInvariantCheck), and logs what it found. */
export async function checkStoredInvariants(kv: Deno.Kv, now: Date, options: CheckInvariantsOptions) {
  const { record, violations } = await runInvariantCheck(kv, {
    now,
    trigger: options.trigger,
    elapsedMs: options.elapsedMs ?? (() => performance.now()),
    timeBoxMs: options.timeBoxMs ?? INVARIANT_TIME_BOX_MS,
    maxEntries: options.maxEntries ?? INVARIANT_MAX_ENTRIES,
  });
  const logger = options.logger;
  for (const v of violations.slice(0, LOGGED_VIOLATIONS)) {
    logger?.log("error", "invariant violation", {
      trigger: options.trigger,
      section: v.section,
      accountId: v.accountId,
      violation: v.message,
    });
  }
  if (violations.length > LOGGED_VIOLATIONS) {
    logger?.log("error", "invariant violations not logged one by one", {
      trigger: options.trigger,
      more: violations.length - LOGGED_VIOLATIONS,
    });
  }
  const summary = {
    trigger: options.trigger,
    complete: record.complete,
    entriesRead: record.entriesRead,
    violations: record.violationCount,
    durationMs: record.durationMs,
  };
  logger?.log(violations.length ? "error" : record.complete ? "info" : "warn", "invariant check", summary);
  return summary;
}
