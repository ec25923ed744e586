/** Read model of Backup > Legal holds: the holds, and what a new hold may cover (for actors who may place one). */
import { listHolds } from "../holds.ts";
import { listHosts } from "../hosts.ts";
import { listPolicies } from "../policies.ts";
import type { Actor } from "../rbac.ts";

export async function getHoldsPage(kv: Deno.Kv, actor: Actor, params: { all: boolean }, _now: Date) {
  const holds = await listHolds(kv, actor, { status: params.all ? "all" : "active" });
  const mayPlace = actor.permissions.has("backup.hold");
  const [hosts, policies] = mayPlace
    ? await Promise.all([listHosts(kv, actor, { limit: 200 }), listPolicies(kv, actor)])
    : [{ values: [] }, []];
  return { holds, mayPlace, hosts: hosts.values, policies };
}
