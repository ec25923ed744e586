/**
 * The policy cascade: everything a change to a policy does to the modules that hang off it, in one
 * place and in a fixed order, called explicitly (no module registers a callback on import):
 *
 * - a policy is deleted (`deletePolicy`, or a BES cascade's `deletePolicyCascade`, both in policies.ts):
 *   `deletePolicyChildren` removes its assignments (assignments.ts, which marks their protected objects
 *   `unprotected`), its hooks (hooks.ts, which drops the scripts' pointers) and its replica rules
 *   (replicas.ts, which releases their targets), then sweeps the children's prefixes and its open runs;
 * - a policy is saved (`updatePolicy`, `patchPolicy`): `applyPolicySave` carries its RPO to its protected
 *   objects (protected.ts). A rename or a disable needs nothing more: the name index moves in the save's
 *   own operation (policy_names.ts), and readers of the children read the policy itself;
 * - a BES is deleted (engines.ts runs its cascade steps): `deleteEnginePolicyChildren`'s two steps sweep the
 *   hooks and replica rules of the BES's policies and the rules writing to its targets, whatever order the
 *   steps run in (storage.ts's step deletes the policies themselves through `deletePolicyCascade`).
 *
 * Layering: policies.ts → policy_cascade.ts → assignments.ts, hooks.ts, replicas.ts, protected.ts; those
 * read a policy through policy_reads.ts and policy_keys.ts and import policies.ts for its types only.
 * A script's new body is checked by scripts.ts calling hooks.ts's `checkScriptBodyFitsHooks` directly.
 */
import { assignmentsByPolicyPrefix, hooksByPolicyPrefix } from "./keys/policies.ts";
import { replicasByPolicyPrefix } from "./keys/replicas.ts";
import { deletePolicyAssignments } from "./assignments.ts";
import { type CascadeStep, registerEngineCascade } from "./engines.ts";
import { deleteHooksOfPolicy, sweepOrphanHooks } from "./hooks.ts";
import { deleteKeysUnder } from "./pointer_index.ts";
import { deleteProvenOfPolicy } from "./proven_restores.ts";
import type { Policy } from "./policies.ts";
import { applyPolicyRpo } from "./protected.ts";
import { deleteReplicasOfPolicy, sweepOrphanReplicas } from "./replicas.ts";
import { runsOpenPrefix } from "./keys/runs.ts";

/**
 * Prefixes of a policy's children (assignments, hooks, replica rules) and of its open-run index,
 * deleted with it (its runs stay, as history).
 */
export function policyChildPrefixes(policyId: string): Deno.KvKey[] {
  return [
    assignmentsByPolicyPrefix(policyId),
    hooksByPolicyPrefix(policyId),
    replicasByPolicyPrefix(policyId),
    runsOpenPrefix(policyId),
  ];
}

/**
 * Deletes a policy's children. Those with records and indexes of their own go through their modules
 * (which also keep protected objects, scripts' usage and targets' reference counts right), before the
 * prefixes they are found by are swept. Idempotent: a crash is finished by running it again.
 */
export async function deletePolicyChildren(
  kv: Deno.Kv,
  policy: { id: string; accountId: string },
  now: Date,
): Promise<void> {
  await deletePolicyAssignments(kv, policy.id, now);
  await deleteHooksOfPolicy(kv, policy.id);
  await deleteReplicasOfPolicy(kv, policy.id);
  await deleteProvenOfPolicy(kv, policy); // its "last proven restore" and the card's indexes
  for (const prefix of policyChildPrefixes(policy.id)) await deleteKeysUnder(kv, prefix);
}

/**
 * What a saved policy carries to the modules under it: its RPO to its protected objects (idempotent;
 * objects already right are not written), so saving again finishes what a crash or a lost race left.
 * Returns how many protected objects it changed.
 */
export async function applyPolicySave(
  kv: Deno.Kv,
  policy: Pick<Policy, "id" | "rpoHours">,
  now: Date,
): Promise<number> {
  return await applyPolicyRpo(kv, policy, now);
}

/**
 * The BES cascade's steps for the children of its policies: the hooks of policies already deleted or
 * still on the BES, and the replica rules of its policies or writing to its targets (policies of other
 * BES included), releasing targets that survive. No new hook or rule can attach meanwhile: createHook
 * and createReplica check that the BES is not being deleted.
 */
export const deleteEnginePolicyChildren: readonly CascadeStep[] = [
  {
    name: "hooks",
    async run(kv, engine, now) {
      return await sweepOrphanHooks(kv, now, (_, p) => p === null || p.besId === engine.id, false);
    },
  },
  {
    name: "replica_rules",
    async run(kv, engine, now) {
      return await sweepOrphanReplicas(kv, now, {
        accountId: engine.accountId,
        audit: false,
        isDoomed: (_, p, t) => p === null || t === null || p.besId === engine.id || t.besId === engine.id,
      });
    },
  },
];
// engines.ts keeps the BES cascade's steps in a list that storage.ts and this module fill when they load
// (engines.ts cannot import them: both import it). Every step is correct in any order; storage.ts imports
// policies.ts, which imports this module, and the app (app.ts) loads storage.ts before anything runs.
for (const step of deleteEnginePolicyChildren) registerEngineCascade(step);
