/** Minute job: finishes engine deletions interrupted by a crash or restart. */
import { resumeEngineDeletions } from "../domain/engines.ts";

export async function resumeDeletions(kv: Deno.Kv, now: Date) {
  return { resumed: await resumeEngineDeletions(kv, now) };
}
