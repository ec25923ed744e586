/** Read models of Backup > Storage: the list, a target's page, the new-target form and the delete confirmation. */
import { EngineFilter, listEngines, requireEngine } from "../engines.ts";
import { listPoliciesByTarget } from "../policies.ts";
import { type Actor, can } from "../rbac.ts";
import { countPointsOnTarget } from "../repositories.ts";
import {
  capacityHistory,
  describeReferences,
  listTargets,
  readStorageChecks,
  type StorageTarget,
  TargetFilter,
  targetReferences,
} from "../storage.ts";
import { type Data } from "./common.ts";

/** The targets on the filter's page, the engines the filter offers, and the fullest targets (the widget). */
export async function getStorageList(
  kv: Deno.Kv,
  actor: Actor,
  params: { filter: TargetFilter },
  _now: Date,
) {
  const [targets, engines, fullest] = await Promise.all([
    listTargets(kv, actor, params.filter),
    listEngines(kv, actor, EngineFilter.parse({ limit: 200 })),
    listTargets(kv, actor, TargetFilter.parse({ limit: 200, sort: "-usage" })),
  ]);
  return { targets, engines, fullest, engineName: new Map(engines.values.map((e) => [e.id, e.name])) };
}
export type StorageList = Data<typeof getStorageList>;

/** The engines a new target may be attached to (not being deleted, managed by the actor). */
export async function getStorageNew(kv: Deno.Kv, actor: Actor, _params: unknown, _now: Date) {
  const { values } = await listEngines(kv, actor, EngineFilter.parse({ limit: 200 }));
  return {
    engines: values.filter((e) =>
      e.status !== "deleting" && can(actor, "backup.manage", { accountId: e.accountId, orgId: e.orgId })
    ),
  };
}

/** A target's page: its engine (null when not visible), capacity history, policies, references and checks. */
export async function getStorageDetail(
  kv: Deno.Kv,
  actor: Actor,
  params: { target: StorageTarget },
  now: Date,
) {
  const { target } = params;
  const [engine, history, policies, refs, checks] = await Promise.all([
    requireEngine(kv, actor, target.besId).catch(() => null),
    capacityHistory(kv, target.id, now),
    listPoliciesByTarget(kv, target.id),
    targetReferences(kv, target.id).then(describeReferences),
    readStorageChecks(kv, actor, target),
  ]);
  const canManage = can(actor, "backup.manage", { accountId: target.accountId, orgId: target.orgId });
  return { engine, history, policies, refs, checks, canManage };
}
export type StorageDetail = Data<typeof getStorageDetail>;

/** The delete confirmation: what references the target and how many restore points it still holds. */
export async function getStorageDelete(
  kv: Deno.Kv,
  _actor: Actor,
  params: { target: StorageTarget },
  _now: Date,
) {
  const refs = describeReferences(await targetReferences(kv, params.target.id));
  const held = await countPointsOnTarget(kv, params.target.id);
  return { refs, held };
}
