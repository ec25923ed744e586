/** Minute job: engines silent for more than 3 minutes go offline with a critical alert. */
import { sweepEngineHeartbeats } from "../domain/engines.ts";

/** Idempotent for the same `now`: an engine already offline is left alone. */
export async function sweepHeartbeats(kv: Deno.Kv, now: Date) {
  return await sweepEngineHeartbeats(kv, now);
}
