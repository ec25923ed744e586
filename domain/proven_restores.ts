/**
 * "Last proven restore" (issue 21 item 2): per backup policy, its last passing restore drill, kept by
 * drills.ts when a drill passes (`setProvenInOp`, in the run's own atomic operation).
 *
 * Bounded reads: the dashboard card shows the newest `limit` proofs and how many policies are still
 * unproven, without reading every policy or every proof. Beside `["drill_proven", account, policy]`
 * the same write keeps a time index, account-wide (`drill_proven_recent`) and per the policy's org
 * (`drill_proven_recent_by_org`, for actors limited to some orgs), and a counter of proven policies per
 * policy org (`drill_proven_counts`, subtracted from the policy counters of policy_names.ts). A deleted
 * policy's proof goes with it (`deleteProvenOfPolicy`, in the policy cascade). Proofs written before the
 * index existed are indexed once per account, on first read (`ensureProvenIndex`).
 *
 * Tenancy: a proof belongs to the org of the host whose data was restored (`orgId`, the run's org),
 * which may differ from the policy's org when an all-scope admin drills another org's host under an
 * account-level policy. Everything naming that host or its drill is shown only to actors whose scope
 * covers it (`visibleProven`); others see that the policy was proven, when, and how fast, not where.
 */
import {
  provenCountKey,
  provenCountPrefix,
  provenIndexedKey,
  provenRecentByOrgKey,
  provenRecentByOrgPrefix,
  provenRecentKey,
  provenRecentPrefix,
  provenRestoreKey,
  provenRestoresPrefix,
} from "./keys/drills.ts";
import { policyKey } from "./policy_keys.ts";
import { COUNT_DOWN, COUNT_UP, counterValue, getManyValues } from "./kv.ts";
import { countVisiblePolicies } from "./policy_names.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import { withRetry } from "./retry.ts";
import type { PolicyHostRecord } from "./policy_host.ts";

/** The last passing drill of a backup policy (the dashboard's "Last proven restore"). */
/** `orgId` is the org of the restored host (the drill run's org); null: account-level. */
export interface ProvenRestore extends PolicyHostRecord {
  /** The policy's org when the proof was written (absent on proofs written before it was kept). */
  policyOrgId?: string | null;
  drillId: string;
  drillName: string;
  drillRunId: string;
  at: string;
  rtoSeconds: number;
  rtoObjectiveSeconds: number;
  bytesPerSecond: number | null;
}

/** A proof as one actor may see it: `hidden` when the restored host is outside the actor's scope. */
export interface ProvenView extends ProvenRestore {
  /** True: host and drill are of an org outside the actor's scope; their ids and names are blanked. */
  hidden: boolean;
}

/** What the dashboard card shows. */
export interface ProvenCard {
  /** The newest proofs in scope, newest first, with each policy's current name. */
  rows: Array<{ policy: { id: string; name: string }; proven: ProvenView }>;
  /** Policies in scope. */
  policies: number;
  /** Policies in scope with no proven restore yet. */
  unproven: number;
}

/** The proof as `actor` may see it (host and drill blanked when the restored host is not in its scope). */
export function visibleProven(actor: Actor, p: ProvenRestore): ProvenView {
  if (inScope(actor, { accountId: p.accountId, orgId: p.orgId })) return { ...p, hidden: false };
  return { ...p, hostId: "", hostName: "", drillId: "", drillName: "", drillRunId: "", hidden: true };
}

function policyOrgOf(p: ProvenRestore): string | null {
  return p.policyOrgId === undefined ? p.orgId : p.policyOrgId;
}

/** In `op`: replaces the policy's proof `before` (checked) by `next`, with its time index and counter. */
export function setProvenInOp(
  op: Deno.AtomicOperation,
  before: Deno.KvEntryMaybe<ProvenRestore>,
  next: ProvenRestore,
): void {
  op.check(before).set(provenRestoreKey(next.accountId, next.policyId), next);
  const old = before.value;
  // A proof written before the index existed (no policyOrgId) has no index entry and is not counted.
  if (old && old.policyOrgId !== undefined) {
    op.delete(provenRecentKey(old.accountId, old.at, old.policyId))
      .delete(provenRecentByOrgKey(old.accountId, policyOrgOf(old), old.at, old.policyId));
    if (policyOrgOf(old) !== policyOrgOf(next)) {
      op.sum(provenCountKey(old.accountId, policyOrgOf(old)), COUNT_DOWN);
      op.sum(provenCountKey(next.accountId, policyOrgOf(next)), COUNT_UP);
    }
  } else op.sum(provenCountKey(next.accountId, policyOrgOf(next)), COUNT_UP);
  op.set(provenRecentKey(next.accountId, next.at, next.policyId), next)
    .set(provenRecentByOrgKey(next.accountId, policyOrgOf(next), next.at, next.policyId), next);
}

/** Removes a deleted policy's proof, its index entries and its count (idempotent). */
export async function deleteProvenOfPolicy(
  kv: Deno.Kv,
  policy: { id: string; accountId: string },
): Promise<void> {
  await withRetry(async () => {
    const entry = await kv.get<ProvenRestore>(provenRestoreKey(policy.accountId, policy.id));
    const old = entry.value;
    if (!old) return { value: undefined };
    const op = kv.atomic().check(entry).delete(entry.key);
    if (old.policyOrgId !== undefined) {
      op.delete(provenRecentKey(old.accountId, old.at, old.policyId))
        .delete(provenRecentByOrgKey(old.accountId, old.policyOrgId, old.at, old.policyId))
        .sum(provenCountKey(old.accountId, old.policyOrgId), COUNT_DOWN);
    }
    const ok = await op.commit();
    return ok.ok ? { value: undefined } : null;
  }, 10);
}

/**
 * Indexes the account's proofs written before the time index existed (once: a marker records it). The
 * policy's org is read from the policy (a proof of a policy deleted since is dropped).
 */
export async function ensureProvenIndex(kv: Deno.Kv, accountId: string): Promise<void> {
  if ((await kv.get(provenIndexedKey(accountId))).versionstamp) return;
  const entries: Array<Deno.KvEntry<ProvenRestore>> = [];
  for await (const e of kv.list<ProvenRestore>({ prefix: provenRestoresPrefix(accountId) })) {
    if (e.value.policyOrgId === undefined) entries.push(e);
  }
  for (let i = 0; i < entries.length; i += 100) {
    const batch = entries.slice(i, i + 100);
    const policies = await kv.getMany<Array<{ orgId: string | null }>>(
      batch.map((e) => policyKey(e.value.policyId)),
    );
    const op = kv.atomic();
    batch.forEach((e, j) => {
      const policy = policies[j].value;
      if (!policy) {
        op.check(e).delete(e.key);
        return;
      }
      const next = { ...e.value, policyOrgId: policy.orgId ?? null };
      op.check(e).set(e.key, next)
        .set(provenRecentKey(next.accountId, next.at, next.policyId), next)
        .set(provenRecentByOrgKey(next.accountId, next.policyOrgId, next.at, next.policyId), next)
        .sum(provenCountKey(next.accountId, next.policyOrgId), COUNT_UP);
    });
    // A proof changed meanwhile was written by setProvenInOp, indexed already: skip the batch's conflict by
    // retrying the whole pass on the next read (the marker is not set).
    if (!(await op.commit()).ok) return;
  }
  await kv.set(provenIndexedKey(accountId), true);
}

/**
 * The dashboard card: the newest `limit` proofs of policies in the actor's scope (newest first), the
 * number of policies in scope and how many are unproven. Reads at most `limit` index entries per org in
 * scope (plus the account-level ones), `limit` policy records and the per-org counters — never every
 * policy or proof.
 */
export async function lastProvenRestores(kv: Deno.Kv, actor: Actor, limit: number): Promise<ProvenCard> {
  authorize(actor, "backup.view");
  const accountId = actor.accountId;
  if (!accountId || limit < 1) return { rows: [], policies: 0, unproven: 0 };
  await ensureProvenIndex(kv, accountId);
  const proofs: ProvenRestore[] = [];
  const take = async (prefix: Deno.KvKey) => {
    for await (const e of kv.list<ProvenRestore>({ prefix }, { reverse: true, limit, batchSize: limit })) {
      proofs.push(e.value);
    }
  };
  if (actor.kind === "system" || actor.orgScope === "all") await take(provenRecentPrefix(accountId));
  else {
    await take(provenRecentByOrgPrefix(accountId, null));
    for (const orgId of actor.orgScope) await take(provenRecentByOrgPrefix(accountId, orgId));
  }
  proofs.sort((a, b) => b.at.localeCompare(a.at) || a.policyId.localeCompare(b.policyId));
  const newest = proofs.slice(0, limit);
  const policies = await getManyValues<{ id: string; name: string; accountId: string; orgId: string | null }>(
    kv,
    newest.map((p) => policyKey(p.policyId)),
  );
  const byId = new Map(policies.map((p) => [p.id, p]));
  const rows = newest.flatMap((p) => {
    const policy = byId.get(p.policyId);
    if (!policy || policy.accountId !== accountId || !inScope(actor, policy)) return [];
    return [{ policy: { id: policy.id, name: policy.name }, proven: visibleProven(actor, p) }];
  });
  const total = await countVisiblePolicies(kv, actor);
  let proven = 0;
  for await (const e of kv.list({ prefix: provenCountPrefix(accountId) })) {
    const orgId = e.key[2] === "account" ? null : String(e.key[2]);
    if (inScope(actor, { accountId, orgId })) proven += counterValue(e.value);
  }
  return { rows, policies: total, unproven: Math.max(0, total - proven) };
}
