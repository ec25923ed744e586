/**
 * Deno.cron fires in every process that registers it, so each tick first claims its time slot with an
 * atomic check (jobs/crons.ts); only the winner works.
 */
import { cronSlotKey } from "./keys/crons.ts";

/** A claim is remembered for a day, well past any slot a late instance could still try. */
const CRON_SLOT_TTL_MS = 86_400_000;

/** Claims the slot `name@slot` once across all instances. Returns false when another instance has it. */
export async function claimCronSlot(kv: Deno.Kv, name: string, slot: string): Promise<boolean> {
  const key = cronSlotKey(name, slot);
  const res = await kv.atomic().check({ key, versionstamp: null }).set(key, true, {
    expireIn: CRON_SLOT_TTL_MS,
  })
    .commit();
  return res.ok;
}
