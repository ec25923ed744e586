/**
 * Policies in name order without reading them: `["policies_by_name", accountId, nameKey, policyId]` →
 * `{ name, orgId, besId }`, and how many there are: `["policy_counts", accountId, orgId | "account"]`
 * (a counter), both written in the same atomic operation as the policy (create, rename, delete). The jobs
 * page and the dashboard's heatmap show a page of policies sorted by name, with the total: with 10,000
 * policies, reading every policy record to sort them costs hundreds of milliseconds; the first page is
 * the index's first entries and the total is the sum of the actor's orgs' counters. Filters (name, BES,
 * org) scan the index's small entries, never the records.
 *
 * Order: `nameKey` (the name without accents, lower-cased: "Été" sorts with "ete"), then the policy id.
 * `compareNameKeys` gives the same order in memory.
 */
import { COUNT_DOWN, COUNT_UP, counterValue, withRetry } from "./kv.ts";
import { type Actor, inScope } from "./rbac.ts";
import {
  policiesByNamePrefix,
  policiesPrefix,
  policyCountKey,
  policyCountsPrefix,
  policyKey,
  policyNameIndexKey,
} from "./keys/policies.ts";
import { dataFixKey } from "./keys/data_fixes.ts";
export { policyCountKey };

/** What an index entry carries: enough to filter without reading the policy. */
export interface PolicyNameEntry {
  id: string;
  name: string;
  orgId: string | null;
  besId: string;
  /** `policyNameKey(name)`, as the index key holds it. */
  nameKey: string;
}

type StoredEntry = Omit<PolicyNameEntry, "id" | "nameKey">;

/** The name's sort key: accents removed (NFKD, marks dropped), lower case. */
export function policyNameKey(name: string): string {
  return name.normalize("NFKD").replace(/\p{M}/gu, "").toLowerCase();
}

export function policiesByNameKey(accountId: string, name: string, policyId: string) {
  return policyNameIndexKey(accountId, policyNameKey(name), policyId);
}

/** Counts a new policy (`up`) or a deleted one (`down`) in `op`. */
export function countPolicy(
  op: Deno.AtomicOperation,
  policy: { accountId: string; orgId: string | null },
  direction: "up" | "down",
): void {
  op.sum(policyCountKey(policy.accountId, policy.orgId), direction === "up" ? COUNT_UP : COUNT_DOWN);
}

/** How many policies the actor can see: the sum of the counters of the orgs in its scope. */
export async function countVisiblePolicies(kv: Deno.Kv, actor: Actor): Promise<number> {
  if (!actor.accountId) return 0;
  let total = 0;
  for await (const e of kv.list({ prefix: policyCountsPrefix(actor.accountId) })) {
    const orgId = e.key[2] === "account" ? null : String(e.key[2]);
    if (inScope(actor, { accountId: actor.accountId, orgId })) total += counterValue(e.value);
  }
  return total;
}

/** Sets a policy's index entry in `op` (and removes its old one when `before` had another name). */
export function setPolicyName(
  op: Deno.AtomicOperation,
  policy: { id: string; accountId: string; orgId: string | null; besId: string; name: string },
  before?: { name: string } | null,
): void {
  if (before && policyNameKey(before.name) !== policyNameKey(policy.name)) {
    op.delete(policiesByNameKey(policy.accountId, before.name, policy.id));
  }
  op.set(policiesByNameKey(policy.accountId, policy.name, policy.id), {
    name: policy.name,
    orgId: policy.orgId,
    besId: policy.besId,
  });
}

/** Removes a policy's index entry in `op`. */
export function deletePolicyName(
  op: Deno.AtomicOperation,
  policy: { id: string; accountId: string; name: string },
) {
  op.delete(policiesByNameKey(policy.accountId, policy.name, policy.id));
}

/** The index's order for two things with a name key and an id (policies, jobs). */
export function compareNameKeys(
  a: { nameKey: string; id: string },
  b: { nameKey: string; id: string },
): number {
  return a.nameKey < b.nameKey ? -1 : a.nameKey > b.nameKey ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/**
 * The actor's policies in name order (`reverse`: descending), as index entries, those `keep` accepts —
 * the first `max` of them, or all. One scan of the account's index (as far as needed); no policy record
 * is read.
 */
export async function listPolicyNames(
  kv: Deno.Kv,
  actor: Actor,
  options: { reverse?: boolean; keep?: (entry: PolicyNameEntry) => boolean; max?: number } = {},
): Promise<PolicyNameEntry[]> {
  if (!actor.accountId) return [];
  const accountId = actor.accountId;
  const max = options.max ?? Infinity;
  const out: PolicyNameEntry[] = [];
  if (max <= 0) return out;
  const iter = kv.list<StoredEntry>(
    { prefix: policiesByNamePrefix(accountId) },
    { reverse: options.reverse, batchSize: Math.min(1000, Math.max(10, max)) },
  );
  for await (const e of iter) {
    const entry = { id: String(e.key[3]), nameKey: String(e.key[2]), ...e.value };
    if (!inScope(actor, { accountId, orgId: entry.orgId })) continue;
    if (options.keep && !options.keep(entry)) continue;
    out.push(entry);
    if (out.length >= max) break;
  }
  return out;
}

/** Marks that every policy has its name index entry (see `indexPolicyNames`). */
export const POLICY_NAMES_FIX_KEY = dataFixKey("policies_by_name_v1");

/**
 * Data fix run on start (and after a restore of the Config DB, `force`): every policy gets its name index
 * entry — policies created before the index existed, or restored from an older bundle, had none — an
 * entry whose policy is gone or renamed is removed, and the per-org counters are set to the policies
 * counted. Each index write is checked against the policy it indexes (a policy changed meanwhile is read
 * again); the counters are set checked against what they held, so it runs before the server serves (on
 * start) or while it is stopped (the CLI's restore). Idempotent; once complete a marker makes later calls
 * skip it. Returns what it changed.
 */
export async function indexPolicyNames(
  kv: Deno.Kv,
  now: Date,
  options: { force?: boolean } = {},
): Promise<{ indexed: number; removed: number; recounted: number; skipped: boolean }> {
  if (!options.force && (await kv.get(POLICY_NAMES_FIX_KEY)).value) {
    return { indexed: 0, removed: 0, recounted: 0, skipped: true };
  }
  type Indexed = { id: string; accountId: string; orgId: string | null; besId: string; name: string };
  let indexed = 0;
  const counts = new Map<string, { accountId: string; orgId: string | null; count: number }>();
  for await (const listed of kv.list<Indexed>({ prefix: policiesPrefix() }, { batchSize: 500 })) {
    const p = listed.value;
    const countKey = `${p.accountId}\u0000${p.orgId ?? ""}`;
    const count = counts.get(countKey) ?? { accountId: p.accountId, orgId: p.orgId, count: 0 };
    count.count++;
    counts.set(countKey, count);
    let entry: Deno.KvEntryMaybe<Indexed> | null = null;
    // Commit retry (retry.ts): five lost races throw, so the marker is not written and the next start
    // finishes the fix (giving up quietly left the policy out of the name index for ever).
    await withRetry(async () => {
      entry = entry ? await kv.get<Indexed>(listed.key) : listed;
      const policy = entry.value;
      if (!policy) return { value: undefined };
      const key = policiesByNameKey(policy.accountId, policy.name, policy.id);
      const current = await kv.get<StoredEntry>(key);
      if (
        current.value?.name === policy.name && current.value.orgId === policy.orgId &&
        current.value.besId === policy.besId
      ) return { value: undefined };
      const op = kv.atomic().check(entry, current);
      setPolicyName(op, policy);
      if (!(await op.commit()).ok) return null;
      indexed++;
      return { value: undefined };
    });
  }
  // Entries of policies that are gone, or whose name changed outside the index (older code), go.
  let removed = 0;
  for await (const e of kv.list<StoredEntry>({ prefix: policiesByNamePrefix() })) {
    const policy = await kv.get<Indexed>(policyKey(String(e.key[3])));
    const stale = !policy.value || policy.value.accountId !== e.key[1] ||
      policyNameKey(policy.value.name) !== e.key[2];
    if (stale && (await kv.atomic().check(policy, e).delete(e.key).commit()).ok) removed++;
  }
  // The counters: what the scan counted, and zero for a counter of an org that has none left.
  let recounted = 0;
  const wanted = new Map(
    [...counts.values()].map((c) => [JSON.stringify(policyCountKey(c.accountId, c.orgId)), c]),
  );
  for await (const e of kv.list({ prefix: policyCountsPrefix() })) {
    if (!wanted.has(JSON.stringify(e.key))) {
      wanted.set(JSON.stringify(e.key), { accountId: "", orgId: null, count: 0 });
    }
  }
  for (const [key, { count }] of wanted) {
    const entry = await kv.get(JSON.parse(key) as Deno.KvKey);
    if (counterValue(entry.value) === count && entry.versionstamp) continue;
    const res = await kv.atomic().check(entry).set(entry.key, new Deno.KvU64(BigInt(count))).commit();
    if (!res.ok) throw new Error("A policy changed while its counters were rebuilt; run the fix again");
    recounted++;
  }
  await kv.set(POLICY_NAMES_FIX_KEY, { at: now.toISOString(), indexed, removed, recounted });
  return { indexed, removed, recounted, skipped: false };
}
