/** Minute job: objects past their RPO are marked breached and get a critical alert (protected.ts). */
import { sweepRpoBreaches } from "../domain/protected.ts";

export async function sweepRpo(kv: Deno.Kv, now: Date) {
  return await sweepRpoBreaches(kv, now);
}
