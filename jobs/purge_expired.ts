/**
 * Deletes what has outlived its retention: sessions, login counters, engine metrics older than 24 h,
 * capacity samples older than 48 h and roll-ups older than 365 days (KV's own expiry is lazy).
 */
import { purgeOrphanAssignments } from "../domain/assignments.ts";
import { purgeLoginFailures, purgeSessions } from "../domain/auth.ts";
import { sweepOrphanHooks } from "../domain/hooks.ts";
import { resumeReplicaIndexCleanups, sweepOrphanReplicas } from "../domain/replicas.ts";
import { purgeEngineMetrics } from "../domain/engines.ts";
import { purgeCapacityHistory } from "../domain/storage.ts";
import { purgeOutcomeBuckets } from "../domain/dashboard.ts";

/** Idempotent: running it twice for the same `now` removes nothing the second time. */
export async function purgeExpired(kv: Deno.Kv, now: Date) {
  return {
    sessions: await purgeSessions(kv, now),
    loginCounters: await purgeLoginFailures(kv, now),
    engineMetrics: await purgeEngineMetrics(kv, now),
    capacity: await purgeCapacityHistory(kv, now),
    outcomeBuckets: await purgeOutcomeBuckets(kv, now),
    // Safety nets for a crash between a policy's delete and its cascade.
    orphanAssignments: await purgeOrphanAssignments(kv, now),
    orphanHooks: await sweepOrphanHooks(kv, now),
    orphanReplicas: await sweepOrphanReplicas(kv, now),
    replicaIndexCleanups: await resumeReplicaIndexCleanups(kv),
  };
}
