/** Read models of Health > Overview and Health > Database. */
import { databaseStats, probeLatency } from "../db_health.ts";
import { EngineFilter, listEngines } from "../engines.ts";
import { getLastInvariantCheck } from "../invariant_checks.ts";
import type { Actor } from "../rbac.ts";
import { authorizePlatformAdmin, backupHealth, getSettings } from "../self_backup_runs.ts";

/** The overview: the self-backup's health, the engines, and a KV probe (`masterKey`, `dataDir`: the instance's). */
export async function getHealthOverview(
  kv: Deno.Kv,
  actor: Actor,
  params: { masterKey: Uint8Array; dataDir: string },
  now: Date,
) {
  const [health, engines, probe] = await Promise.all([
    backupHealth(kv, actor, { now, masterKey: params.masterKey, dataDir: params.dataDir }),
    listEngines(kv, actor, EngineFilter.parse({ limit: 200 })),
    probeLatency(kv, now),
  ]);
  return { health, engines, probe };
}

/** The database page (platform admins only): both databases' statistics, a probe and the last invariant check. */
export async function getHealthDatabase(kv: Deno.Kv, actor: Actor, _params: unknown, now: Date) {
  await authorizePlatformAdmin(kv, actor);
  const [config, results, probe, check] = await Promise.all([
    databaseStats(kv, "config"),
    databaseStats(kv, "results"),
    probeLatency(kv, now),
    getLastInvariantCheck(kv, actor),
  ]);
  return { config, results, probe, check };
}

/** Admin > Backups (platform admins only): the self-backup settings (`dataDir`: the instance's). */
export async function getSelfBackupSettings(
  kv: Deno.Kv,
  actor: Actor,
  params: { dataDir: string },
  _now: Date,
) {
  await authorizePlatformAdmin(kv, actor);
  return await getSettings(kv, params.dataDir);
}
