/** Deletes expired sessions and stale login-failure counters (KV's own expiry is lazy). */
import { purgeLoginFailures, purgeSessions } from "../domain/auth.ts";

/** Idempotent: running it twice for the same `now` removes nothing the second time. */
export async function purgeExpired(
  kv: Deno.Kv,
  now: Date,
): Promise<{ sessions: number; loginCounters: number }> {
  const sessions = await purgeSessions(kv, now);
  const loginCounters = await purgeLoginFailures(kv, now);
  return { sessions, loginCounters };
}
