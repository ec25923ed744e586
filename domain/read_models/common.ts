/** What the read models share: the type of a read model's data, and the account's organizations. */
import type { Actor } from "../rbac.ts";
import { listOrgs } from "../tenancy.ts";

/** The data a read model (or any async reader) returns: what a page receives as props. */
export type Data<F extends (...args: never[]) => unknown> = Awaited<ReturnType<F>>;

/**
 * The organizations of the actor's account it may see, and their names by id: what a list's org filter
 * offers and how its rows name their organization.
 */
export async function accountOrgs(kv: Deno.Kv, actor: Actor) {
  const orgs = await listOrgs(kv, actor, actor.accountId!);
  return { orgs, orgName: new Map(orgs.map((o) => [o.id, o.name])) };
}
