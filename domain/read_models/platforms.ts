/** Read models of Backup > Platforms: the list, the register form, a platform's page and its delete confirmation. */
import { listPlatformJobs, listPlatforms, type Platform, platformFootprint } from "../platforms.ts";
import { type Actor, can } from "../rbac.ts";
import { listOrgs } from "../tenancy.ts";
import { accountOrgs } from "./common.ts";

/** Every platform, the organization names, and whether the actor may register one anywhere. */
export async function getPlatformList(kv: Deno.Kv, actor: Actor, _params: unknown, _now: Date) {
  const [platforms, { orgs, orgName }] = await Promise.all([
    listPlatforms(kv, actor),
    accountOrgs(kv, actor),
  ]);
  return {
    platforms,
    orgName,
    manage: orgs.some((o) => can(actor, "backup.manage", { accountId: o.accountId, orgId: o.id })),
  };
}

/** The organizations where the actor may register a platform. */
export async function getPlatformForm(kv: Deno.Kv, actor: Actor, _params: unknown, _now: Date) {
  return {
    orgs: (await listOrgs(kv, actor, actor.accountId!))
      .filter((o) => can(actor, "backup.manage", { accountId: o.accountId, orgId: o.id })),
  };
}

/** A platform's page: its jobs and its account's organizations. */
export async function getPlatformDetail(
  kv: Deno.Kv,
  actor: Actor,
  params: { platform: Platform },
  _now: Date,
) {
  const [jobs, orgs] = await Promise.all([
    listPlatformJobs(kv, params.platform.id),
    listOrgs(kv, actor, params.platform.accountId),
  ]);
  return { jobs, orgs };
}

/** The delete confirmation: what the platform's sync brought in. */
export async function getPlatformDelete(
  kv: Deno.Kv,
  _actor: Actor,
  params: { platform: Platform },
  _now: Date,
) {
  return { footprint: await platformFootprint(kv, params.platform.id) };
}
