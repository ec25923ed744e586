/**
 * Deletes what has outlived its retention: sessions, login counters, engine metrics older than 24 h,
 * capacity samples older than 48 h and roll-ups older than 365 days (KV's own expiry is lazy).
 */
import { purgeLoginFailures, purgeSessions } from "../domain/auth.ts";
import { purgeEngineMetrics } from "../domain/engines.ts";
import { purgeCapacityHistory } from "../domain/storage.ts";

/** Idempotent: running it twice for the same `now` removes nothing the second time. */
export async function purgeExpired(kv: Deno.Kv, now: Date) {
  return {
    sessions: await purgeSessions(kv, now),
    loginCounters: await purgeLoginFailures(kv, now),
    engineMetrics: await purgeEngineMetrics(kv, now),
    capacity: await purgeCapacityHistory(kv, now),
  };
}
