/** Read models of Backup > Engines: the list, an engine's page and its delete confirmation. */
import { type Engine, type EngineFilter, listEngineMetrics, listEngines } from "../engines.ts";
import { type Actor, can } from "../rbac.ts";
import { listTargets, TargetFilter } from "../storage.ts";
import { listOrgs } from "../tenancy.ts";
import { accountOrgs, type Data } from "./common.ts";

/** The engines on the filter's page, and the organizations the filter offers. */
export async function getEngineList(kv: Deno.Kv, actor: Actor, params: { filter: EngineFilter }, _now: Date) {
  const [engines, orgs] = await Promise.all([listEngines(kv, actor, params.filter), accountOrgs(kv, actor)]);
  return { engines, ...orgs };
}
export type EngineList = Data<typeof getEngineList>;

/** An engine's page: its metrics, its storage targets, its organization's name, whether the actor manages it. */
export async function getEngineDetail(kv: Deno.Kv, actor: Actor, params: { engine: Engine }, now: Date) {
  const { engine } = params;
  const [metrics, targets, orgs] = await Promise.all([
    listEngineMetrics(kv, engine.id, now),
    listTargets(kv, actor, TargetFilter.parse({ besId: engine.id, limit: 200 })),
    listOrgs(kv, actor, actor.accountId!),
  ]);
  return {
    metrics,
    targets: targets.values,
    orgName: engine.orgId ? orgs.find((o) => o.id === engine.orgId)?.name ?? "—" : "Account-scoped",
    canManage: can(actor, "backup.manage", { accountId: engine.accountId, orgId: engine.orgId }),
  };
}
export type EngineDetail = Data<typeof getEngineDetail>;

/** The delete confirmation: how many storage targets go with the engine. */
export async function getEngineDelete(kv: Deno.Kv, actor: Actor, params: { engine: Engine }, _now: Date) {
  const targets = await listTargets(kv, actor, TargetFilter.parse({ besId: params.engine.id, limit: 200 }));
  return { targetCount: targets.total };
}
