/** Minute job: dispatches the policies' due full, incremental and synthetic-full runs. */
import { runSchedulerTick } from "../domain/scheduler.ts";

/** Idempotent for the same minute, also when two instances tick at once (each slot is claimed). */
export async function dispatchSchedules(kv: Deno.Kv, now: Date) {
  return await runSchedulerTick(kv, now);
}
