/**
 * Minute job: finishes engine deletions interrupted by a crash or restart, then (when it resumed any)
 * runs the bounded consistency check over what the cascade left.
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
