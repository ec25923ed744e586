/**
 * Minute job: finishes engine deletions interrupted by a crash or restart, then (when it resumed any)
 * runs the bounded consistency check over what the cascade left. On start, the same order: resume first,
 * then check (startupCheck), so a restart after a crash mid-delete does not check a half-done cascade.
 */
import { resumeEngineDeletions } from "../domain/engines.ts";
import { type CheckInvariantsOptions, checkStoredInvariants } from "./check_invariants.ts";

export async function resumeDeletions(
  kv: Deno.Kv,
  now: Date,
  options: Omit<CheckInvariantsOptions, "trigger"> = {},
) {
  const resumed = await resumeEngineDeletions(kv, now);
  if (!resumed) return { resumed };
  return {
    resumed,
    invariants: await checkStoredInvariants(kv, now, { ...options, trigger: "resumed_deletion" }),
  };
}

/**
 * The start-up check: resumes the engine deletions a crash interrupted, then runs the consistency check.
 * A deletion that cannot finish yet is logged and left to the minute job; the check still runs (it skips
 * an engine still being deleted, see invariants.ts).
 */
export async function startupCheck(
  kv: Deno.Kv,
  now: Date,
  options: Omit<CheckInvariantsOptions, "trigger"> = {},
) {
  let resumed = 0;
  try {
    resumed = await resumeEngineDeletions(kv, now);
    if (resumed) options.logger?.log("info", "resumed engine deletions", { trigger: "startup", resumed });
  } catch (error) {
    options.logger?.log("error", "resuming engine deletions", { trigger: "startup", error: String(error) });
  }
  return { resumed, invariants: await checkStoredInvariants(kv, now, { ...options, trigger: "startup" }) };
}
