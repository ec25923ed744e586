/** Hourly job: GFS retention over each protected object's restore points; expired ones are pruned by the BES. */
import { applyRetention as apply } from "../domain/retention_apply.ts";

export async function applyRetention(kv: Deno.Kv, now: Date) {
  return await apply(kv, now);
}
