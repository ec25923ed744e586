import { dispatchDueDrills } from "../domain/drills.ts";

/**
 * Starts the restore drills whose schedule fires in the minute of `now` (once per drill and minute, even
 * if the tick runs twice), and ends drill runs whose job ended without a result.
 */
export function dispatchDrills(kv: Deno.Kv, now: Date) {
  return dispatchDueDrills(kv, now);
}
