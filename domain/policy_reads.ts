/**
 * Reading one policy (`getPolicy`, `requirePolicy`) in a module of its own, so that the modules the policy
 * cascade deletes from (assignments, hooks, replicas), which read their policy, do not import policies.ts:
 * policies.ts imports them to delete a policy's assignments, hooks and replica rules.
 */
import { NotFoundError } from "./errors.ts";
import type { Policy, PolicyCore, RetiredPolicy } from "./policies.ts";
import { policyKey, retiredPolicyKey } from "./policy_keys.ts";
import { type Actor, inScope } from "./rbac.ts";

/** The scope (account and organization) of a policy. */
export function policyScope(p: Pick<PolicyCore, "accountId" | "orgId">) {
  return { accountId: p.accountId, orgId: p.orgId };
}

export async function getPolicy(kv: Deno.Kv, id: string): Promise<Policy | null> {
  return (await kv.get<Policy>(policyKey(id))).value;
}

/** The policy, or the deleted policy as it was last while it has restore points (`deletedAt` set); null. */
export async function getPolicyOrRetired(
  kv: Deno.Kv,
  id: string,
): Promise<(Policy & { deletedAt?: string }) | null> {
  const [live, retired] = await kv.getMany<[Policy, RetiredPolicy]>([policyKey(id), retiredPolicyKey(id)]);
  return live.value ?? retired.value;
}

/** Returns the policy if the actor may see it; throws NotFoundError otherwise. */
export async function requirePolicy(kv: Deno.Kv, actor: Actor, id: string): Promise<Policy> {
  const p = await getPolicy(kv, id);
  if (!p || !inScope(actor, policyScope(p))) throw new NotFoundError(`Policy ${id} not found`);
  return p;
}
