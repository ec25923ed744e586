/** Minute job: hosts whose agent is silent for more than 3 minutes go offline with a warning alert. */
import { sweepHostHeartbeats } from "../domain/hosts.ts";

/** Idempotent for the same `now`: a host already offline is left alone. Returns the ids taken offline. */
export async function sweepHosts(kv: Deno.Kv, now: Date): Promise<{ offline: string[] }> {
  return await sweepHostHeartbeats(kv, now);
}
