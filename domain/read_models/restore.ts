/**
 * Read models of Backup > Restore: the restore points list (with a deep link's selection and its chain), a
 * restore point's page (chain, replications, browse, search, run, legal holds, anomaly, hosts) and a restore
 * request's page.
 */
import { anomalyOfPoint } from "../anomalies.ts";
import { EngineFilter, getEngine, listEngines } from "../engines.ts";
import { NotFoundError } from "../errors.ts";
import { holdsCoveringPoint } from "../holds.ts";
import { getHost, hostScope, listHosts } from "../hosts.ts";
import { listPolicies } from "../policies.ts";
import { type Actor, can, inScope } from "../rbac.ts";
import { listReplicationsOfPoint } from "../replicas.ts";
import {
  chainOf,
  latestRestorePointOfHost,
  listRestorePoints,
  requireRestorePoint,
  type RestorePointFilter,
  type RestorePointView,
} from "../restore_points.ts";
import { getBrowse, getSearch } from "../restore_browse.ts";
import { getRestore, listRestores } from "../restore_requests.ts";
import { getRun } from "../run_results.ts";
import { getTarget } from "../storage.ts";
import { readPage } from "./paging.ts";

/**
 * The restore points list. A deep link (`restorePointId`) selects the named point (and, when the link names
 * no host, filters its host); with only a host, its newest complete point (of the filtered policy, if any)
 * is selected. `filter` is returned as applied (the deep link's host; a refused cursor cleared).
 */
export async function getRestoreIndex(
  kv: Deno.Kv,
  actor: Actor,
  params: { filter: RestorePointFilter; restorePointId: string; hostGiven: boolean },
  _now: Date,
) {
  const filter = { ...params.filter };
  let selected: RestorePointView | null = null;
  let selectionNote = "";
  const wanted = params.restorePointId;
  if (wanted) {
    try {
      selected = await requireRestorePoint(kv, actor, wanted);
      if (!params.hostGiven && selected.hostId) filter.hostId = selected.hostId;
    } catch (e) {
      if (!(e instanceof NotFoundError)) throw e;
      selectionNote =
        "The linked restore point does not exist any more (retention may have pruned it) or is outside your organizations.";
    }
  }
  if (!selected && filter.hostId && !filter.cursor) {
    selected = await latestRestorePointOfHost(kv, actor, filter.hostId, filter.policyId || undefined).catch(
      (e) => {
        if (e instanceof NotFoundError) return null;
        throw e;
      },
    );
  }
  const [{ page, staleCursor }, chain, hosts, policies, engines, recent] = await Promise.all([
    readPage(filter.cursor, (cursor) => listRestorePoints(kv, actor, { ...filter, cursor })),
    selected ? chainOf(kv, selected) : Promise.resolve([]),
    listHosts(kv, actor, { limit: 200 }),
    listPolicies(kv, actor),
    listEngines(kv, actor, EngineFilter.parse({ limit: 200 })),
    listRestores(kv, actor, { cursor: "", limit: 10 }),
  ]);
  if (staleCursor) filter.cursor = "";
  const hostOptions = hosts.values.map((h) => ({ value: h.id, label: h.hostname }));
  if (filter.hostId && !hostOptions.some((o) => o.value === filter.hostId)) {
    const host = await getHost(kv, filter.hostId);
    hostOptions.unshift({
      value: filter.hostId,
      label: host && inScope(actor, hostScope(host)) ? host.hostname : filter.hostId,
    });
  }
  return {
    filter,
    selected,
    selectionNote,
    page,
    staleCursor,
    chain,
    hosts,
    policies,
    engines,
    recent,
    hostOptions,
  };
}

/** A restore point's page; `search` is null without a search or when the search is gone. */
export async function getRestorePointPage(
  kv: Deno.Kv,
  actor: Actor,
  params: {
    point: RestorePointView;
    browsePath: string;
    searchId: string;
    pages: { page: number; searchPage: number };
  },
  now: Date,
) {
  const { point, browsePath, searchId, pages } = params;
  const [chain, replications, engine, hosts, browse, search, run, holds] = await Promise.all([
    chainOf(kv, point),
    listReplicationsOfPoint(kv, point.id, now),
    getEngine(kv, point.engineId),
    listHosts(kv, actor, { limit: 200 }),
    getBrowse(kv, actor, point.id, browsePath, now, pages.page),
    searchId
      ? getSearch(kv, actor, searchId, now, pages.searchPage).catch(() => null)
      : Promise.resolve(null),
    getRun(kv, point.runId),
    holdsCoveringPoint(kv, actor, point),
  ]);
  const anomaly = await anomalyOfPoint(kv, point);
  const mayHold = point.status !== "expired" && point.status !== "failed" &&
    can(actor, "backup.hold", { accountId: point.accountId, orgId: point.orgId });
  const original = point.hostId
    ? hosts.values.find((h) => h.id === point.hostId) ?? await getHost(kv, point.hostId)
    : null;
  return { chain, replications, engine, hosts, browse, search, run, holds, anomaly, mayHold, original };
}

/** A restore request's page: the request, its hosts, its point (null once pruned) and a replica's target. */
export async function getRestoreRequest(
  kv: Deno.Kv,
  actor: Actor,
  params: { restoreId: string },
  _now: Date,
) {
  const r = await getRestore(kv, actor, params.restoreId);
  const [source, target, point, replicaTarget] = await Promise.all([
    r.sourceHostId ? getHost(kv, r.sourceHostId) : null,
    r.targetHostId ? getHost(kv, r.targetHostId) : null,
    // Retention may have pruned the point since; the request keeps its id.
    requireRestorePoint(kv, actor, r.restorePointId).catch((e) => {
      if (e instanceof NotFoundError) return null;
      throw e;
    }),
    r.sourceTargetId ? getTarget(kv, r.sourceTargetId) : null,
  ]);
  return { r, source, target, point, replicaTarget };
}
