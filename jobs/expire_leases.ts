/** Minute job: expired job leases go back to the queue, or fail with LEASE_EXPIRED after the last attempt. */
import { expireLeases as expire } from "../domain/jobs.ts";

export async function expireLeases(kv: Deno.Kv, now: Date) {
  return await expire(kv, now);
}
