/**
 * The domain side of `/metrics` (routes/metrics.ts): the figures an operator alerts on, read from the
 * counters the writes keep (never the records): the dashboard's counters per account (`readSummary`,
 * `readLast24h`), the operational counters (ops_counters.ts) and the last successful self-backups.
 * A scrape reads O(accounts + statuses + queue minutes) keys, whatever the fleet's size.
 */
import { type Outcome, readLast24h, readSummary } from "./dashboard.ts";
import { ENGINE_STATUSES } from "./engines.ts";
import { HOST_STATUSES } from "./hosts.ts";
import { JOB_KINDS, PRIORITIES } from "./job_queue.ts";
import { DELIVERY_STATUSES } from "./notification_delivery.ts";
import { readOpsCounts } from "./ops_counters.ts";
import { type Actor, systemActor } from "./rbac.ts";
import { getSettings, lastSuccessfulBackups } from "./self_backup_runs.ts";
import { listAccounts } from "./tenancy.ts";

export interface OpsGauges {
  /** Every status of ENGINE_STATUSES, 0 when none. */
  engines: Record<string, number>;
  /** Every status of HOST_STATUSES, 0 when none. */
  hosts: Record<string, number>;
  protectedObjects: number;
  atRisk: number;
  rpoBreaches: number;
  unprotectedHosts: number;
  /** Backup runs finished in the last 24 hours, by outcome. */
  runsLast24h: Record<Outcome, number>;
  /** Every kind × priority, 0 when none. */
  queued: Array<{ kind: string; priority: string; count: number }>;
  /** Age in seconds of the oldest queued job (to the minute it was created); 0 when the queue is empty. */
  oldestQueuedAgeSeconds: number;
  /** Every status of DELIVERY_STATUSES, 0 when none. */
  deliveries: Record<string, number>;
  /** Unix seconds of the last successful self-backup per database; null when none yet. */
  lastSelfBackup: Record<"config" | "results", number | null>;
  /** Whether each database's scheduled self-backup is on (a stale-backup alert matters only then). */
  selfBackupEnabled: Record<"config" | "results", boolean>;
  accounts: number;
}

function zeros(names: readonly string[], counts: Record<string, number>): Record<string, number> {
  return Object.fromEntries(names.map((n) => [n, counts[n] ?? 0]));
}

/** Reads every domain gauge at `now`, summed over all accounts (`dataDir`: for the self-backup settings' defaults). */
export async function readOpsGauges(
  kv: Deno.Kv,
  now: Date,
  options: { dataDir: string },
): Promise<OpsGauges> {
  const accounts = await listAccounts(kv);
  const [counts, backups, settings, perAccount] = await Promise.all([
    readOpsCounts(kv),
    lastSuccessfulBackups(kv),
    getSettings(kv, options.dataDir),
    Promise.all(accounts.map(async (account) => {
      // The dashboard's own readers, for an all-orgs view of one account.
      const actor: Actor = { ...systemActor("metrics"), accountId: account.id };
      const [summary, activity] = await Promise.all([
        readSummary(kv, actor, now),
        readLast24h(kv, actor, now),
      ]);
      return { summary, activity };
    })),
  ]);
  const out: OpsGauges = {
    engines: zeros(ENGINE_STATUSES, counts.engines),
    hosts: zeros(HOST_STATUSES, counts.hosts),
    protectedObjects: 0,
    atRisk: 0,
    rpoBreaches: 0,
    unprotectedHosts: 0,
    runsLast24h: { success: 0, warning: 0, failed: 0 },
    queued: JOB_KINDS.flatMap((kind) =>
      PRIORITIES.map((priority) => ({ kind, priority, count: counts.queued[kind]?.[priority] ?? 0 }))
    ),
    oldestQueuedAgeSeconds: counts.oldestQueuedMinute
      ? Math.max(0, Math.floor((now.getTime() - Date.parse(`${counts.oldestQueuedMinute}:00Z`)) / 1000))
      : 0,
    deliveries: zeros(DELIVERY_STATUSES, counts.deliveries),
    lastSelfBackup: {
      config: backups.config ? Date.parse(backups.config) / 1000 : null,
      results: backups.results ? Date.parse(backups.results) / 1000 : null,
    },
    selfBackupEnabled: { config: settings.config.enabled, results: settings.results.enabled },
    accounts: accounts.length,
  };
  for (const { summary, activity } of perAccount) {
    out.protectedObjects += summary.protected;
    out.atRisk += summary.atRisk;
    out.rpoBreaches += summary.rpoBreach;
    out.unprotectedHosts += summary.unprotectedHosts;
    for (const o of ["success", "warning", "failed"] as const) out.runsLast24h[o] += activity[o];
  }
  return out;
}
