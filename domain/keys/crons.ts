/** The KV keys of the Deno.cron handlers (no imports). */

/** The claim of one cron tick's time slot, `name@slot`, by the one instance that runs it. */
export function cronSlotKey(name: string, slot: string): Deno.KvKey {
  return ["cron_slots", name, slot];
}
