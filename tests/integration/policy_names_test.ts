/**
 * The policies' name index (domain/policy_names.ts): written with the policy on create, rename and delete
 * (and the engine cascade), ordered without accents and case, scoped like the policies, rebuilt by the data
 * fix for policies that predate it; the jobs list and the heatmap page through it and read only the
 * page's policy records.
 */
import assert from "node:assert/strict";
import { userActor } from "../../domain/auth.ts";
import { readHeatmap } from "../../domain/dashboard.ts";
import { deleteEngine } from "../../domain/engines.ts";
import { listJobs, parseJobFilter } from "../../domain/job_views.ts";
import { checkInvariants } from "../../domain/invariants.ts";
import { counterValue } from "../../domain/kv.ts";
import {
  createPolicy,
  deletePolicy,
  deletePolicyCascade,
  type Policy,
  updatePolicy,
} from "../../domain/policies.ts";
import {
  indexPolicyNames,
  listPolicyNames,
  POLICY_NAMES_FIX_KEY,
  policyCountKey,
  policyNameKey,
} from "../../domain/policy_names.ts";
import { systemActor } from "../../domain/rbac.ts";
import { createTarget } from "../../domain/storage.ts";
import { addUser, createTenant, registerTestEngine, targetInput } from "../helpers.ts";

const system = systemActor("test");
const NOW = new Date("2026-11-29T12:00:00Z");
const masterKey = new Uint8Array(32).fill(7);

async function world(kv: Deno.Kv) {
  const tenant = await createTenant(kv, "Acme", ["Ops", "Labs"], NOW);
  const [ops, labs] = tenant.orgs;
  const accountId = tenant.account.id;
  const { engine: e1 } = await registerTestEngine(kv, { accountId, orgId: ops.id }, NOW, "bes-ops");
  const { engine: e2 } = await registerTestEngine(kv, { accountId, orgId: labs.id }, NOW, "bes-labs");
  const t1 = await createTarget(kv, system, targetInput(e1.id), { now: NOW, masterKey });
  const t2 = await createTarget(kv, system, targetInput(e2.id), { now: NOW, masterKey });
  const policy = async (name: string, labsOrg = false) =>
    await createPolicy(kv, system, {
      name,
      besId: labsOrg ? e2.id : e1.id,
      targetId: labsOrg ? t2.id : t1.id,
      backupType: "file",
      fullSchedule: "0 2 * * 0",
    }, NOW) as Policy;
  const admin = userActor(await addUser(kv, tenant, "admin@acme.example", "admin", "all", NOW));
  const opsViewer = userActor(await addUser(kv, tenant, "viewer@acme.example", "viewer", [ops], NOW));
  return { tenant, e1, e2, policy, admin, opsViewer };
}

/** The per-org policy counters, by org id. */
async function counters(kv: Deno.Kv) {
  const out: Record<string, number> = {};
  for await (const e of kv.list({ prefix: ["policy_counts"] })) out[String(e.key[2])] = counterValue(e.value);
  return out;
}

async function indexDump(kv: Deno.Kv) {
  return (await Array.fromAsync(kv.list({ prefix: ["policies_by_name"] }))).map((e) => ({
    key: e.key,
    value: e.value,
  }));
}

Deno.test("the name index follows create, rename, delete and the engine cascade, in the same writes", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await world(kv);
  const a = await w.policy("Alpha files");
  const b = await w.policy("beta-db", true);
  assert.deepEqual(await indexDump(kv), [
    {
      key: ["policies_by_name", a.accountId, "alpha files", a.id],
      value: { name: "Alpha files", orgId: a.orgId, besId: a.besId },
    },
    {
      key: ["policies_by_name", b.accountId, "beta-db", b.id],
      value: { name: "beta-db", orgId: b.orgId, besId: b.besId },
    },
  ]);
  assert.deepEqual(await counters(kv), { [a.orgId!]: 1, [b.orgId!]: 1 });
  await updatePolicy(kv, system, a.id, { ...a, name: "Zeta files" }, NOW);
  assert.deepEqual((await indexDump(kv)).map((e) => e.key[2]), ["beta-db", "zeta files"], "old name gone");
  await updatePolicy(kv, system, a.id, { ...a, name: "Zeta files", enabled: false }, NOW);
  assert.equal((await indexDump(kv)).length, 2, "an edit that keeps the name keeps one entry");
  await deletePolicy(kv, system, b.id, NOW);
  assert.deepEqual((await indexDump(kv)).map((e) => e.key[3]), [a.id]);
  assert.deepEqual(await counters(kv), { [a.orgId!]: 1, [b.orgId!]: 0 });
  await deleteEngine(kv, system, w.e1.id, NOW);
  assert.deepEqual(await indexDump(kv), [], "the engine cascade removes its policies' entries");
  assert.deepEqual(await counters(kv), { [a.orgId!]: 0, [b.orgId!]: 0 }, "counted down once");
  // Resuming a cascade that already removed the policy counts nothing down again.
  await deletePolicyCascade(kv, a, NOW);
  assert.deepEqual(await counters(kv), { [a.orgId!]: 0, [b.orgId!]: 0 });
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("jobs and the heatmap sort by name without accents or case, then id; scope and filters apply to the index", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await world(kv);
  for (const name of ["beta", "Zulu", "Été", "alpha", "ete", "zeta"]) await w.policy(name);
  await w.policy("labs-only", true);
  const names = async (actor = w.admin, query: Record<string, string> = {}) =>
    (await listJobs(kv, actor, parseJobFilter(query).data!)).values.map((j) => j.name);
  const sorted = await names();
  assert.deepEqual(sorted.map(policyNameKey), ["alpha", "beta", "ete", "ete", "labs-only", "zeta", "zulu"]);
  assert.deepEqual(await names(w.admin, { sort: "-name" }), [...sorted].reverse());
  // Org scope: the Ops viewer never sees the Labs policy, and the total counts only what it sees.
  const scoped = await listJobs(kv, w.opsViewer, parseJobFilter({}).data!);
  assert.equal(scoped.total, 6);
  assert.ok(!scoped.values.some((j) => j.name === "labs-only"));
  // Pages of the default listing (first entries + counters) match the full listing.
  const all = (await listJobs(kv, w.admin, parseJobFilter({ limit: "200" }).data!)).values.map((j) => j.id);
  for (const offset of [0, 2, 5, 7]) {
    const page = await listJobs(kv, w.admin, parseJobFilter({ offset: String(offset), limit: "2" }).data!);
    assert.equal(page.total, 7);
    assert.deepEqual(page.values.map((j) => j.id), all.slice(offset, offset + 2));
  }
  // The search, BES and org filters run on the index entries. The search matches the name as written
  // (any case, accents count: "ET" finds "ete", not "Été").
  assert.deepEqual(await names(w.admin, { q: "ET" }), ["beta", "ete", "zeta"]);
  assert.deepEqual(await names(w.admin, { source: `bes:${w.e2.id}` }), ["labs-only"]);
  // The heatmap pages the same order.
  const heat = await readHeatmap(kv, w.admin, NOW, { offset: 2, limit: 3 });
  assert.equal(heat.total, 7);
  assert.deepEqual(heat.rows.map((r) => r.policyName), sorted.slice(2, 5));
});

Deno.test("the data fix indexes policies that predate the index, drops stale entries, and runs once unless forced", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await world(kv);
  const a = await w.policy("alpha");
  const b = await w.policy("beta", true);
  const complete = await indexDump(kv);
  // As before the index: no entries; plus one stale entry of a policy that is gone.
  for (const e of complete) await kv.delete(e.key);
  await kv.set(["policies_by_name", a.accountId, "ghost", "01KGHOSTGHOSTGHOSTGHOSTGHO"], {
    name: "ghost",
    orgId: null,
    besId: a.besId,
  });
  assert.deepEqual(await listPolicyNames(kv, w.admin), [{
    id: "01KGHOSTGHOSTGHOSTGHOSTGHO",
    nameKey: "ghost",
    name: "ghost",
    orgId: null,
    besId: a.besId,
  }]);
  // As before the counters: one missing, one wrong.
  const rightCounts = await counters(kv);
  await kv.delete(policyCountKey(a.accountId, a.orgId));
  await kv.set(policyCountKey(b.accountId, b.orgId), new Deno.KvU64(5n));
  const fix = await indexPolicyNames(kv, NOW);
  assert.deepEqual(fix, { indexed: 2, removed: 1, recounted: 2, skipped: false });
  assert.deepEqual(await indexDump(kv), complete);
  assert.deepEqual(await counters(kv), rightCounts);
  assert.ok((await kv.get(POLICY_NAMES_FIX_KEY)).value);
  assert.deepEqual(await indexPolicyNames(kv, NOW), { indexed: 0, removed: 0, recounted: 0, skipped: true });
  await kv.delete(complete[1].key);
  assert.deepEqual(await indexPolicyNames(kv, NOW, { force: true }), {
    indexed: 1,
    removed: 0,
    recounted: 0,
    skipped: false,
  });
  assert.deepEqual(await checkInvariants(kv), []);
  assert.deepEqual((await listPolicyNames(kv, w.admin)).map((e) => e.id), [a.id, b.id]);
});
