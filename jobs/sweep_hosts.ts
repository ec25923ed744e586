/**
 * Minute job: hosts whose agent is silent for more than 3 minutes go offline with a warning alert, and
 * host decommissions a crash or restart interrupted are finished (archive.ts).
 */
import { resumeHostDecommissions } from "../domain/archive.ts";
import { sweepHostHeartbeats } from "../domain/hosts.ts";

/** Idempotent for the same `now`: a host already offline is left alone. Returns the ids taken offline. */
export async function sweepHosts(
  kv: Deno.Kv,
  now: Date,
): Promise<{ offline: string[]; decommissions: number }> {
  const { offline } = await sweepHostHeartbeats(kv, now);
  return { offline, decommissions: await resumeHostDecommissions(kv, now) };
}
