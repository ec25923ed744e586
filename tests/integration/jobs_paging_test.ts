/**
 * The jobs list pages before it reads last runs: sorted by name with no filter on the last run, only the
 * page's newest runs are read (the cost no longer grows with the number of jobs' histories read); a
 * filter on the last run or the sort by last run time still reads every candidate's. Either way only the
 * page's policy records are read (the name index gives the order). Same rows either way.
 */
import assert from "node:assert/strict";
import { userActor } from "../../domain/auth.ts";
import { listJobs, parseJobFilter } from "../../domain/job_views.ts";
import { createPolicy, type Policy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { newRunInOp, type Run } from "../../domain/runs.ts";
import { runKey } from "../../domain/keys/runs.ts";
import { createTarget } from "../../domain/storage.ts";
import { addUser, createTenant, registerTestEngine, targetInput } from "../helpers.ts";

const system = systemActor("test");
const NOW = new Date("2026-11-29T12:00:00Z");

/** A KV that counts the newest-run lookups (`runs_by_policy` lists). */
function countingKv(real: Deno.Kv) {
  const counter = { lastRunLists: 0, policiesRead: 0, indexEntries: 0 };
  const kv = new Proxy(real, {
    get(target, prop) {
      if (prop === "list") {
        return (selector: Deno.KvListSelector, options?: Deno.KvListOptions) => {
          if ("prefix" in selector && selector.prefix[0] === "runs_by_policy") counter.lastRunLists++;
          // A scan of the policy records themselves counts as reading all of them.
          if ("prefix" in selector && selector.prefix[0] === "policies") counter.policiesRead += 1e6;
          const iter = target.list(selector, options);
          if (!("prefix" in selector) || selector.prefix[0] !== "policies_by_name") return iter;
          return (async function* () {
            for await (const e of iter) {
              counter.indexEntries++;
              yield e;
            }
          })();
        };
      }
      if (prop === "getMany") {
        return (keys: Deno.KvKey[], options?: { consistency?: Deno.KvConsistencyLevel }) => {
          counter.policiesRead += keys.filter((k) => k[0] === "policies").length;
          return target.getMany(keys, options);
        };
      }
      if (prop === "get") {
        return (key: Deno.KvKey, options?: { consistency?: Deno.KvConsistencyLevel }) => {
          if (key[0] === "policies") counter.policiesRead++;
          return target.get(key, options);
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { kv, counter };
}

async function world(kv: Deno.Kv, jobs: number) {
  const tenant = await createTenant(kv, "Acme", ["Ops"], NOW);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, NOW);
  const target = await createTarget(kv, system, targetInput(engine.id), {
    now: NOW,
    masterKey: new Uint8Array(32).fill(7),
  });
  const policies: Policy[] = [];
  for (let i = 0; i < jobs; i++) {
    policies.push(
      await createPolicy(kv, system, {
        // Names out of creation order, so the page's sort is not the ids' order.
        name: `job-${String((i * 37) % jobs).padStart(3, "0")}`,
        besId: engine.id,
        targetId: target.id,
        backupType: "file",
        fullSchedule: "0 2 * * 0",
      }, NOW) as Policy,
    );
  }
  // Two runs each for most jobs (the newer one counts), none for every seventh.
  for (const [i, policy] of policies.entries()) {
    if (i % 7 === 0) continue;
    for (const [k, status] of (["success", i % 3 ? "failed" : "success"] as const).entries()) {
      const at = new Date(NOW.getTime() - (2 - k) * 3600_000 - i * 1000);
      const op = kv.atomic();
      const run = newRunInOp(op, {
        policyId: policy.id,
        accountId: policy.accountId,
        orgId: policy.orgId,
        hostId: null,
        jobId: null,
        kind: "full",
        trigger: "schedule",
        status,
        scheduledFor: at.toISOString(),
        error: null,
        alertId: null,
      }, at);
      assert.ok((await op.commit()).ok);
      await kv.set(runKey(run.id), { ...run, status, startedAt: at.toISOString() } satisfies Run);
    }
  }
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", NOW);
  return { policies, actor: userActor(admin) };
}

Deno.test("listJobs() sorted by name with no last-run filter reads only the page's newest runs, and pages like the full read", async () => {
  using real = await Deno.openKv(":memory:");
  const { policies, actor } = await world(real, 130);
  const { kv, counter } = countingKv(real);
  // The reference: every job with its newest run, through the path that reads them all (last-run sort).
  const all = await listJobs(real, actor, parseJobFilter({ sort: "lastRunAt", limit: "200" }).data!);
  assert.equal(all.total, 130);
  const byId = new Map(all.values.map((j) => [j.id, j]));
  const names = all.values.map((j) => j.name).sort((a, b) => a.localeCompare(b));
  const seen: string[] = [];
  for (const sort of ["name", "-name"]) {
    const order = sort === "name" ? names : [...names].reverse();
    for (let offset = 0; offset < 130; offset += 50) {
      counter.lastRunLists = 0;
      counter.policiesRead = 0;
      counter.indexEntries = 0;
      const page = await listJobs(kv, actor, parseJobFilter({ sort, offset: String(offset) }).data!);
      assert.equal(page.total, 130);
      assert.equal(counter.lastRunLists, page.values.length, "one newest-run lookup per row of the page");
      assert.equal(counter.policiesRead, page.values.length, "only the page's policy records are read");
      assert.equal(counter.indexEntries, Math.min(130, offset + 50), "the index is read up to the page only");
      assert.deepEqual(page.values.map((j) => j.name), order.slice(offset, offset + 50));
      for (const row of page.values) {
        assert.deepEqual(row, byId.get(row.id), "the same row, last run included");
      }
      if (sort === "name") seen.push(...page.values.map((j) => j.name));
    }
  }
  assert.ok(
    all.values.some((j) => j.lastRun === null) && all.values.some((j) => j.lastRun?.status === "failed"),
  );
  assert.deepEqual(seen, policies.map((p) => p.name).sort(), "every job once, in name order");
});

Deno.test("listJobs() with a last-run filter or the last-run sort reads every candidate's newest run", async () => {
  using real = await Deno.openKv(":memory:");
  const { actor } = await world(real, 60);
  const { kv, counter } = countingKv(real);
  for (
    const query of [{ status: "failed" }, { sort: "-lastRunAt" }, { from: "2026-11-29" }, { type: "full" }]
  ) {
    counter.lastRunLists = 0;
    counter.policiesRead = 0;
    const page = await listJobs(kv, actor, parseJobFilter(query).data!);
    assert.equal(counter.lastRunLists, 60, JSON.stringify(query));
    assert.equal(counter.policiesRead, page.values.length, "still only the page's policy records");
    if ("status" in query) {
      assert.ok(page.values.every((j) => j.lastRun?.status === "failed"));
      // Jobs i with i % 7 ≠ 0 and i % 3 ≠ 0 end with a failed run.
      const expected = Array.from({ length: 60 }, (_, i) => i).filter((i) => i % 7 && i % 3).length;
      assert.equal(page.total, expected);
    }
  }
  // Searching by name narrows the candidates first: only the matches' runs are read.
  counter.lastRunLists = 0;
  const one = await listJobs(kv, actor, parseJobFilter({ q: "job-007", status: "failed" }).data!);
  assert.equal(counter.lastRunLists, 1);
  assert.ok(one.total <= 1);
});
