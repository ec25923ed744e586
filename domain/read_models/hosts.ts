/** Read models of Backup > Hosts: the list and a host's page. */
import { listAssignmentsByHost } from "../assignments.ts";
import { holdsCoveringHost } from "../holds.ts";
import { type Host, type HostFilter, listHosts } from "../hosts.ts";
import { listProtectedByHost } from "../protected.ts";
import { type Actor, can } from "../rbac.ts";
import { accountOrgs, type Data } from "./common.ts";

/** The hosts on the filter's page, and the organizations the filter offers. */
export async function getHostList(kv: Deno.Kv, actor: Actor, params: { filter: HostFilter }, _now: Date) {
  const [hosts, orgs] = await Promise.all([listHosts(kv, actor, params.filter), accountOrgs(kv, actor)]);
  return { hosts, ...orgs };
}
export type HostList = Data<typeof getHostList>;

/** A host's page: its assignments, protected objects and the legal holds covering it. */
export async function getHostDetail(kv: Deno.Kv, actor: Actor, params: { host: Host }, _now: Date) {
  const { host } = params;
  const [assignments, objects] = await Promise.all([
    listAssignmentsByHost(kv, actor, host.id),
    listProtectedByHost(kv, actor, host.id),
  ]);
  const holds = await holdsCoveringHost(kv, actor, host.id, assignments.map((a) => a.policy.id));
  const mayHold = can(actor, "backup.hold", { accountId: host.accountId, orgId: host.orgId });
  return { assignments, objects, holds, mayHold };
}
export type HostDetail = Data<typeof getHostDetail>;
