/**
 * Read model of Backup > Dashboard: the page's own data (`getDashboard`) and each section's
 * (`getDashboardSection`, one call per section so that a failing data source fails only its section).
 * Plain data; routes/dashboard.tsx renders it.
 */
import { suspiciousChangesQueue } from "../anomalies.ts";
import {
  failedBackupsQueue,
  readEngineStatus,
  readHeatmap,
  readLast24h,
  readSummary,
  rpoBreachQueue,
  storageHealthQueue,
  verificationFailuresQueue,
} from "../dashboard.ts";
import { hasStorageTargets, readSetupProgress } from "../getting_started.ts";
import { type Actor, can } from "../rbac.ts";
import { getRecoveryKey } from "../recovery_keys.ts";
import { lastProvenRestores } from "../proven_restores.ts";
import { type Data } from "./common.ts";

/** An exception queue; `watched` (how many objects are protected) is read only when the queue is empty. */
export interface Queue<Row> {
  rows: Row[];
  watched: number | null;
}

/** Each section's data by name. */
export interface DashboardSections {
  summary: Data<typeof readSummary>;
  engines: Data<typeof readEngineStatus>;
  activity: Data<typeof readLast24h>;
  failed: Queue<Data<typeof failedBackupsQueue>[number]>;
  suspicious: Queue<Data<typeof suspiciousChangesQueue>[number]>;
  rpo: Queue<Data<typeof rpoBreachQueue>[number]>;
  /** `hasTargets` is read only when no target needs attention. */
  storage: { targets: Data<typeof storageHealthQueue>; hasTargets: boolean | null };
  verification: Queue<Data<typeof verificationFailuresQueue>[number]>;
  heatmap: Data<typeof readHeatmap> & { offset: number };
  /** "Last proven restore": the newest `PROVEN_CARD_ROWS` proofs and the count of unproven policies. */
  proven: Data<typeof lastProvenRestores>;
}

export type DashboardSectionName = keyof DashboardSections;

/** Rows of the heatmap per page. */
export const HEATMAP_PAGE = 15;
/** Rows of the "Last proven restore" card: the newest proofs. */
export const PROVEN_CARD_ROWS = 20;

async function queue<Row>(kv: Deno.Kv, actor: Actor, now: Date, rows: Row[]): Promise<Queue<Row>> {
  return { rows, watched: rows.length ? null : (await readSummary(kv, actor, now)).protected };
}

/** One section's data; throws what its data source throws. `offset` pages the heatmap. */
export async function getDashboardSection<N extends DashboardSectionName>(
  kv: Deno.Kv,
  actor: Actor,
  params: { name: N; offset?: number },
  now: Date,
): Promise<DashboardSections[N]> {
  const read: { [K in DashboardSectionName]: () => Promise<DashboardSections[K]> } = {
    summary: () => readSummary(kv, actor, now),
    engines: () => readEngineStatus(kv, actor, now),
    activity: () => readLast24h(kv, actor, now),
    failed: async () => queue(kv, actor, now, await failedBackupsQueue(kv, actor)),
    suspicious: async () => queue(kv, actor, now, await suspiciousChangesQueue(kv, actor)),
    rpo: async () => queue(kv, actor, now, await rpoBreachQueue(kv, actor, now)),
    storage: async () => {
      const targets = await storageHealthQueue(kv, actor);
      return { targets, hasTargets: targets.length ? null : await hasStorageTargets(kv, actor) };
    },
    verification: async () => queue(kv, actor, now, await verificationFailuresQueue(kv, actor)),
    heatmap: async () => {
      const offset = params.offset ?? 0;
      return { ...(await readHeatmap(kv, actor, now, { offset, limit: HEATMAP_PAGE })), offset };
    },
    proven: () => lastProvenRestores(kv, actor, PROVEN_CARD_ROWS),
  };
  return await read[params.name]();
}

/** The page around the sections: the setup checklist and the recovery-key reminder. */
export interface Dashboard {
  /** Null when the checklist could not be read (`progressError` says why): the page goes without it. */
  progress: Data<typeof readSetupProgress> | null;
  progressError: string | null;
  /** An all-scope administrator has not created the account recovery key yet. */
  recoveryKeyMissing: boolean;
}

export async function getDashboard(
  kv: Deno.Kv,
  actor: Actor,
  _params: unknown,
  now: Date,
): Promise<Dashboard> {
  const keyMissing = can(actor, "admin") && actor.orgScope === "all"
    ? getRecoveryKey(kv, actor.accountId!).then((k) => k === null, () => false)
    : Promise.resolve(false);
  const [progress, recoveryKeyMissing] = await Promise.all([
    readSetupProgress(kv, actor, now).then(
      (p) => ({ p, error: null }),
      (error) => ({ p: null, error: String(error) }),
    ),
    keyMissing,
  ]);
  return { progress: progress.p, progressError: progress.error, recoveryKeyMissing };
}
