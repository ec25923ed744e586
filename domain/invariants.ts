/**
 * Cross-key invariants of the stored data, checked over a whole KV: indexes point at live records,
 * children point at live parents (DESIGN.md §4), no orphaned vault record. Used to verify restored
 * self-backups and by race tests. Returns human-readable violations (empty when all hold).
 */
import type { Alert } from "./alerts.ts";
import type { Engine } from "./engines.ts";
import type { PolicyCore } from "./policies.ts";
import type { StorageTarget } from "./storage.ts";
import type { Org, User } from "./types.ts";

async function all<T>(kv: Deno.Kv, prefix: string): Promise<Map<string, T>> {
  const out = new Map<string, T>();
  for await (const e of kv.list<T>({ prefix: [prefix] })) out.set(String(e.key[1]), e.value);
  return out;
}

async function pointers(kv: Deno.Kv, prefix: string): Promise<Array<{ key: Deno.KvKey; value: string }>> {
  const out = [];
  for await (const e of kv.list<string>({ prefix: [prefix] })) out.push({ key: e.key, value: e.value });
  return out;
}

/** Every violated invariant, as a sentence naming the keys involved. */
export async function checkInvariants(kv: Deno.Kv): Promise<string[]> {
  const problems: string[] = [];
  const accounts = await all<{ id: string }>(kv, "accounts");
  const orgs = await all<Org>(kv, "orgs");
  const users = await all<User>(kv, "users");
  const engines = await all<Engine>(kv, "engines");
  const targets = await all<StorageTarget>(kv, "storage_targets");
  const policies = await all<PolicyCore>(kv, "policies");
  const alerts = await all<Alert>(kv, "alerts");
  const vault = await all<unknown>(kv, "vault");

  for (const org of orgs.values()) {
    if (!accounts.has(org.accountId)) {
      problems.push(`org ${org.id} belongs to missing account ${org.accountId}`);
    }
  }
  for (const user of users.values()) {
    if (!accounts.has(user.accountId)) {
      problems.push(`user ${user.id} belongs to missing account ${user.accountId}`);
    }
  }
  for (const p of await pointers(kv, "users_by_email")) {
    if (users.get(p.value)?.email !== p.key[1]) {
      problems.push(`users_by_email ${String(p.key[1])} points to a missing or different user`);
    }
  }
  for (const p of await pointers(kv, "orgs_by_account")) {
    if (!orgs.has(p.value)) problems.push(`orgs_by_account points to missing org ${p.value}`);
  }
  for (const engine of engines.values()) {
    for (const id of engine.storageTargetIds ?? []) {
      if (targets.get(id)?.besId !== engine.id) {
        problems.push(`engine ${engine.id} lists missing or foreign target ${id}`);
      }
    }
  }
  for (const p of await pointers(kv, "engines_by_public_key")) {
    if (!engines.has(p.value)) problems.push(`engines_by_public_key points to missing engine ${p.value}`);
  }
  const referencedVault = new Set<string>();
  for (const t of targets.values()) {
    const engine = engines.get(t.besId);
    if (!engine) problems.push(`storage target ${t.id} belongs to missing engine ${t.besId}`);
    else if (!engine.storageTargetIds.includes(t.id)) {
      problems.push(`engine ${t.besId} does not list its target ${t.id}`);
    }
    if (t.credentialId) {
      referencedVault.add(t.credentialId);
      if (!vault.has(t.credentialId)) {
        problems.push(`storage target ${t.id} refers to missing vault record ${t.credentialId}`);
      }
    }
  }
  for (const id of vault.keys()) {
    if (!referencedVault.has(id)) problems.push(`vault record ${id} is referenced by nothing`);
  }
  for (const p of await pointers(kv, "storage_targets_by_bes")) {
    if (!targets.has(p.value)) problems.push(`storage_targets_by_bes points to missing target ${p.value}`);
  }
  for (const policy of policies.values()) {
    const target = targets.get(policy.targetId);
    if (!target) problems.push(`policy ${policy.id} writes to missing target ${policy.targetId}`);
    else if (target.besId !== policy.besId) {
      problems.push(`policy ${policy.id} is on BES ${policy.besId} but its target is on ${target.besId}`);
    }
  }
  for (const p of await pointers(kv, "alerts_open")) {
    const alert = alerts.get(p.value);
    if (!alert || alert.status === "resolved") {
      problems.push(`alerts_open points to missing or resolved alert ${p.value}`);
    }
  }
  return problems;
}
