/**
 * Reading one policy (`getPolicy`, `requirePolicy`, `policyForNewChild`) in a module of its own, so that the
 * modules the policy cascade reaches (assignments, hooks, replicas), which read their policy, do not import
 * policies.ts: policies.ts → policy_cascade.ts → those modules.
 */
import type { Engine } from "./engines.ts";
import { ConflictError, NotFoundError } from "./errors.ts";
import { engineKey } from "./keys/engines.ts";
import type { Policy, PolicyCore, RetiredPolicy } from "./policies.ts";
import { policyKey, retiredPolicyKey } from "./policy_keys.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";

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

/**
 * The start of a new child of a policy (a hook, a replica rule): the policy's entry, to check in the
 * child's write, and its scope. Throws NotFoundError for a policy the actor cannot see, and the
 * authorization error without backup.manage on it.
 */
export async function policyForNewChild(
  kv: Deno.Kv,
  actor: Actor,
  policyId: string,
): Promise<
  { policyEntry: Deno.KvEntry<Policy>; policy: Policy; scope: { accountId: string; orgId: string | null } }
> {
  const policyEntry = await kv.get<Policy>(policyKey(policyId));
  const policy = policyEntry.value;
  if (!policy || !inScope(actor, policy)) throw new NotFoundError(`Policy ${policyId} not found`);
  const scope = policyScope(policy);
  authorize(actor, "backup.manage", scope);
  return { policyEntry: policyEntry as Deno.KvEntry<Policy>, policy, scope };
}

/**
 * Adds to `op` a check that the BES exists and is not being deleted: its cascade must see every hook and
 * replica rule created before it started. Throws ConflictError if it is.
 */
export async function checkEngineNotDeleting(
  kv: Deno.Kv,
  op: Deno.AtomicOperation,
  besId: string,
): Promise<void> {
  const entry = await kv.get<Engine>(engineKey(besId));
  if (!entry.value || entry.value.status === "deleting") throw new ConflictError("This BES is being deleted");
  op.check(entry);
}
