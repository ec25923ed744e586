/**
 * The getting-started checklist (engine → storage → policy → host → first backup) and the first-run
 * page's live ticks ("BES registered", "agent enrolled"), read from real data in the actor's scope.
 *
 * Its cost does not grow with history or with the number of policies: engines and storage targets are one
 * record each (the dashboard reads them already), policies are counted by their per-org counters; hosts
 * come from the dashboard's counters (`host_counts`) plus one short range per engine of the protected
 * objects' source index; the first backup is one marker per org, written with the org's restore points
 * (before its start-up data fix has run: one short range per policy of its points, up to the first found).
 */
import { readByPointerIndex } from "./pointer_index.ts";
import { policiesByAccountPrefix, policyKey } from "./keys/policies.ts";
import { objectsByDimensionPrefix, unprotectedHostsPrefix } from "./keys/protected.ts";
import { enginesByAccountPrefix } from "./keys/engines.ts";
import { targetsByAccountPrefix } from "./keys/storage.ts";
import { firstBackupsPrefix, restorePointsByPolicyPrefix } from "./keys/restore.ts";
import { hasFirstBackupMarkers } from "./restore_points.ts";
import { countVisiblePolicies } from "./policy_names.ts";
import { type Engine, engineKey, OFFLINE_AFTER_MS } from "./engines.ts";
import { counterValue } from "./kv.ts";
import type { Policy } from "./policies.ts";
import { type Actor, inScope } from "./rbac.ts";
import { type StorageTarget, targetKey } from "./storage.ts";

/** The checklist's steps, in the order an operator takes them. */
export const SETUP_STEPS = ["engine", "storage", "policy", "host", "backup"] as const;
export type SetupStep = (typeof SETUP_STEPS)[number];

/** What is set up in the actor's scope. */
export interface SetupProgress {
  /** Registered backup engines (any state but being deleted) and those among them heard from. */
  engines: { registered: number; online: number };
  targets: number;
  policies: number;
  /** Enrolled hosts (agents): at least `enrolled` (the counters know hosts, not their exact total). */
  hosts: { enrolled: boolean; unassigned: number; assigned: boolean };
  /** Some policy in scope has a restore point: a backup completed. */
  firstBackup: boolean;
  /** Each step, done or not. */
  done: Record<SetupStep, boolean>;
  /** Every step is done. */
  complete: boolean;
}

async function recordsInScope<T extends { accountId: string; orgId: string | null }>(
  kv: Deno.Kv,
  actor: Actor,
  index: Deno.KvKey,
  key: (id: string) => Deno.KvKey,
): Promise<T[]> {
  return (await readByPointerIndex<T>(kv, index, key)).filter((r) => inScope(actor, r));
}

/** The ids of the policies in scope: the account's index alone for a whole-account scope, else the records. */
async function policyIdsInScope(kv: Deno.Kv, actor: Actor): Promise<string[]> {
  if (actor.orgScope === "all") {
    const ids: string[] = [];
    for await (const e of kv.list<string>({ prefix: policiesByAccountPrefix(actor.accountId!) })) {
      ids.push(e.value);
    }
    return ids;
  }
  return (await recordsInScope<Policy>(kv, actor, policiesByAccountPrefix(actor.accountId!), policyKey)).map((
    p,
  ) => p.id);
}

/** Whether `prefix` holds an entry whose value (an org id, "-" for account-level) is in the actor's scope. */
async function anyInScope(kv: Deno.Kv, actor: Actor, prefix: Deno.KvKey, limit = 50): Promise<boolean> {
  for await (const e of kv.list<string>({ prefix }, { limit })) {
    const orgId = typeof e.value === "string" && e.value !== "-" ? e.value : null;
    if (inScope(actor, { accountId: actor.accountId!, orgId })) return true;
  }
  return false;
}

/**
 * The setup progress in the actor's scope at `now`. A BES counts as online when its last heartbeat is
 * recent (the engines page's rule); a host counts as assigned once a policy of one of the engines in
 * scope has protected it (an unassigned host is counted by the dashboard's unprotected-hosts counter).
 */
export async function readSetupProgress(kv: Deno.Kv, actor: Actor, now: Date): Promise<SetupProgress> {
  const empty: SetupProgress = {
    engines: { registered: 0, online: 0 },
    targets: 0,
    policies: 0,
    hosts: { enrolled: false, unassigned: 0, assigned: false },
    firstBackup: false,
    done: { engine: false, storage: false, policy: false, host: false, backup: false },
    complete: false,
  };
  if (!actor.accountId) return empty;
  const [engines, targets, policyCount, markers] = await Promise.all([
    recordsInScope<Engine>(kv, actor, enginesByAccountPrefix(actor.accountId!), engineKey),
    recordsInScope<StorageTarget>(kv, actor, targetsByAccountPrefix(actor.accountId!), targetKey),
    countVisiblePolicies(kv, actor),
    hasFirstBackupMarkers(kv),
  ]);
  const live = engines.filter((e) => e.status !== "deleting");
  const online =
    live.filter((e) =>
      e.status !== "pending" && e.status !== "offline" && e.lastHeartbeatAt !== null &&
      now.getTime() - Date.parse(e.lastHeartbeatAt) <= OFFLINE_AFTER_MS
    ).length;
  let unassigned = 0;
  for await (const e of kv.list({ prefix: unprotectedHostsPrefix(actor.accountId) })) {
    const orgId = String(e.key[2]);
    if (inScope(actor, { accountId: actor.accountId, orgId: orgId === "-" ? null : orgId })) {
      unassigned += counterValue(e.value);
    }
  }
  let assigned = false;
  for (const engine of live) {
    if (await anyInScope(kv, actor, objectsByDimensionPrefix(actor.accountId!, "src", `bes:${engine.id}`))) {
      assigned = true;
      break;
    }
  }
  let firstBackup = false;
  if (markers) {
    // One marker per org with a restore point (set in the point's write; start-up data fix for older ones).
    for await (const e of kv.list({ prefix: firstBackupsPrefix(actor.accountId) })) {
      const orgId = String(e.key[2]);
      if (inScope(actor, { accountId: actor.accountId, orgId: orgId === "account" ? null : orgId })) {
        firstBackup = true;
        break;
      }
    }
  }
  // Before the data fix has run: the policies' points, ten policies at a time, up to the first one found.
  const policies = markers ? [] : await policyIdsInScope(kv, actor);
  for (let i = 0; i < policies.length && !firstBackup; i += 10) {
    const found = await Promise.all(
      policies.slice(i, i + 10).map(async (id) =>
        !(await kv.list({ prefix: restorePointsByPolicyPrefix(id) }, { limit: 1 }).next()).done
      ),
    );
    firstBackup = found.some(Boolean);
  }
  const done: Record<SetupStep, boolean> = {
    engine: live.length > 0,
    storage: targets.length > 0,
    policy: policyCount > 0,
    host: assigned,
    backup: firstBackup,
  };
  return {
    engines: { registered: live.length, online },
    targets: targets.length,
    policies: policyCount,
    hosts: { enrolled: unassigned > 0 || assigned, unassigned, assigned },
    firstBackup,
    done,
    complete: SETUP_STEPS.every((s) => done[s]),
  };
}

/** Whether the actor's scope has a storage target (reads the account's targets, one record each). */
export async function hasStorageTargets(kv: Deno.Kv, actor: Actor): Promise<boolean> {
  if (!actor.accountId) return false;
  return (await recordsInScope<StorageTarget>(kv, actor, targetsByAccountPrefix(actor.accountId!), targetKey))
    .length > 0;
}
