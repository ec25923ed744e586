/**
 * The operational counters (domain/ops_counters.ts) under races: heartbeats, sweeps, deletions, claims,
 * cancels and lease expiry running at once leave every counter equal to what the records imply.
 */
import assert from "node:assert/strict";
import {
  applyHeartbeat,
  deleteEngine,
  finishEngineDeletion,
  sweepEngineHeartbeats,
} from "../../domain/engines.ts";
import { applyHostHeartbeat, sweepHostHeartbeats } from "../../domain/hosts.ts";
import {
  cancelJob,
  claimJobs,
  countQueued,
  enqueueJob,
  expireLeases,
  LEASE_MS,
  queuedCount,
} from "../../domain/job_queue.ts";
import { readOpenAlert } from "../../domain/alerts.ts";
import { checkInvariants, checkInvariantsBounded } from "../../domain/invariants.ts";
import {
  checkOpsCounters,
  deliveryCountKey,
  fleetCountKey,
  OPS_COUNTER_PREFIXES,
  principalQueueCountKey,
  pruneQueueCounts,
  queueCountKey,
  readOpsCounts,
  rebuildOpsCounters,
} from "../../domain/ops_counters.ts";
import { systemActor } from "../../domain/rbac.ts";
import { checkStoredInvariants } from "../../jobs/check_invariants.ts";
import { createTenant, engineMetrics, enrollTestHost, registerTestEngine, TestClock } from "../helpers.ts";

const ITERATIONS = 15;

Deno.test("engine and host status counters stay exact under racing heartbeats, sweeps and deletions", async () => {
  for (let i = 0; i < ITERATIONS; i++) {
    using kv = await Deno.openKv(":memory:");
    const clock = new TestClock();
    const t0 = clock.now();
    const tenant = await createTenant(kv, "Acme", ["Ops"], t0);
    const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
    const engines = await Promise.all(
      Array.from({ length: 6 }, (_, n) => registerTestEngine(kv, scope, t0, `bes-${n}`)),
    );
    const hosts = await Promise.all(
      Array.from({ length: 6 }, (_, n) => enrollTestHost(kv, scope, `h${n}`, t0, { online: false })),
    );
    const later = new Date(t0.getTime() + 5 * 60_000);
    const beat = (id: string, at: Date, memoryPercent = 40) =>
      applyHeartbeat(kv, id, { version: "1", metrics: engineMetrics({ memoryPercent }) }, at).catch(() => {});
    await Promise.all([
      ...engines.map(({ engine }, n) => beat(engine.id, t0, n % 3 === 0 ? 97 : 40)),
      ...hosts.map((h) => applyHostHeartbeat(kv, h.id, { version: "1", metrics: engineMetrics() }, t0)),
    ]);
    // Silence (the sweeps at +5 min) races fresh heartbeats and a deletion.
    await Promise.all([
      sweepEngineHeartbeats(kv, later),
      sweepEngineHeartbeats(kv, later),
      sweepHostHeartbeats(kv, later),
      sweepHostHeartbeats(kv, later),
      beat(engines[1].engine.id, later),
      beat(engines[2].engine.id, later, 97),
      applyHostHeartbeat(kv, hosts[0].id, { version: "1", metrics: engineMetrics() }, later),
      deleteEngine(kv, systemActor("test"), engines[5].engine.id, later),
      finishEngineDeletion(kv, engines[5].engine.id, later),
    ]);
    assert.deepEqual(await checkOpsCounters(kv), [], `iteration ${i}`);
    const counts = await readOpsCounts(kv);
    const total = (r: Record<string, number>) => Object.values(r).reduce((a, b) => a + b, 0);
    assert.equal(total(counts.engines), 5, "the deleted engine is uncounted once");
    assert.equal(total(counts.hosts), 6);
    assert.equal(counts.hosts.online, 1, "only the host that heartbeated at +5 min is online");
  }
});

Deno.test("queue counters stay exact under racing claims, cancels and lease expiry", async () => {
  for (let i = 0; i < ITERATIONS; i++) {
    using kv = await Deno.openKv(":memory:");
    const t0 = new TestClock().now();
    const tenant = { accountId: "acc", orgId: null };
    const principal = "bes:01JAAAAAAAAAAAAAAAAAAAAAAA";
    const jobs = [];
    for (let n = 0; n < 30; n++) {
      jobs.push(
        await enqueueJob(kv, {
          ...tenant,
          kind: n % 2 ? "verify" : "prune",
          principal,
          priority: (["normal", "high", "critical"] as const)[n % 3],
        }, new Date(t0.getTime() + (n % 4) * 60_000)),
      );
    }
    // Two claimers, cancels of queued and leased jobs, all at once.
    const claimers = Promise.all([claimJobs(kv, principal, 8, t0), claimJobs(kv, principal, 8, t0)]);
    await Promise.all(jobs.slice(20, 26).map((j) => cancelJob(kv, j.id, t0).catch(() => null)));
    const [a, b] = await claimers;
    assert.equal(new Set([...a, ...b].map((j) => j.id)).size, a.length + b.length, "no job claimed twice");
    // The leases expire (twice at once): each claimed job returns to the queue once.
    const expiry = new Date(t0.getTime() + LEASE_MS + 1);
    await Promise.all([expireLeases(kv, expiry), expireLeases(kv, expiry), pruneQueueCounts(kv)]);
    assert.deepEqual(await checkOpsCounters(kv), [], `iteration ${i}`);
    assert.equal(
      await queuedCount(kv, principal),
      await countQueued(kv, principal),
      "the principal's counter (pendingJobs) equals its queue",
    );
    const counts = await readOpsCounts(kv);
    const queued = Object.values(counts.queued).flatMap((p) => Object.values(p)).reduce((x, y) => x + y, 0);
    let expected = 0;
    for await (const _ of kv.list({ prefix: ["job_queue"] })) expected++;
    assert.equal(queued, expected);
    assert.equal(counts.oldestQueuedMinute, t0.toISOString().slice(0, 16));
  }
});

Deno.test("pruneQueueCounts() drops empty minute buckets and keeps the rest", async () => {
  using kv = await Deno.openKv(":memory:");
  const t0 = new TestClock().now();
  const principal = "agent:01JAAAAAAAAAAAAAAAAAAAAAAA";
  const old = await enqueueJob(kv, { accountId: "acc", orgId: null, kind: "backup", principal }, t0);
  await enqueueJob(
    kv,
    { accountId: "acc", orgId: null, kind: "backup", principal },
    new Date(t0.getTime() + 120_000),
  );
  await cancelJob(kv, old.id, t0);
  assert.equal(await pruneQueueCounts(kv), 1);
  const keys = [];
  for await (const e of kv.list({ prefix: ["job_queue_counts"] })) keys.push(e.key);
  assert.equal(keys.length, 1);
  assert.equal(
    (await readOpsCounts(kv)).oldestQueuedMinute,
    new Date(t0.getTime() + 120_000).toISOString().slice(0, 16),
  );
});

Deno.test("rebuildOpsCounters() sets the counters from the records, once", async () => {
  using kv = await Deno.openKv(":memory:");
  const t0 = new TestClock().now();
  const tenant = await createTenant(kv, "Acme", ["Ops"], t0);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  await registerTestEngine(kv, scope, t0, "bes-a");
  await enrollTestHost(kv, scope, "h1", t0);
  await enqueueJob(kv, { ...scope, kind: "verify", principal: "bes:01JAAAAAAAAAAAAAAAAAAAAAAA" }, t0);
  // An installation from before the counters: none exist, and one is wrong.
  for (const prefix of OPS_COUNTER_PREFIXES) {
    for await (const e of kv.list({ prefix: [prefix] })) await kv.delete(e.key);
  }
  await kv.set(fleetCountKey("engine", scope.accountId, "offline"), new Deno.KvU64(7n));
  assert.notDeepEqual(await checkOpsCounters(kv), []);
  assert.deepEqual(await rebuildOpsCounters(kv, t0), { counters: 4, skipped: false });
  assert.equal(await queuedCount(kv, "bes:01JAAAAAAAAAAAAAAAAAAAAAAA"), 1, "the principal's queue counted");
  assert.deepEqual(await checkOpsCounters(kv), []);
  assert.deepEqual(
    await rebuildOpsCounters(kv, t0),
    { counters: 0, skipped: true },
    "the marker stops a second run",
  );
  const counts = await readOpsCounts(kv);
  assert.deepEqual(counts.engines, { pending: 1 });
  assert.deepEqual(counts.hosts, { online: 1 });
  assert.deepEqual(counts.queued, { verify: { normal: 1 } });
});

Deno.test("a wrong operational counter is an invariant violation: its own area names it, the consistency check alerts its account (queue counters: the operator's), a rebuild clears it", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new TestClock();
  const t0 = clock.now();
  const operator = await createTenant(kv, "Operator", ["Main"], t0);
  const globex = await createTenant(kv, "Globex", ["Lab"], t0);
  const scope = { accountId: globex.account.id, orgId: globex.orgs[0].id };
  await registerTestEngine(kv, scope, t0, "bes-g");
  await enrollTestHost(kv, scope, "g1", t0);
  const job = await enqueueJob(
    kv,
    { ...scope, kind: "verify", principal: "bes:01JAAAAAAAAAAAAAAAAAAAAAAA" },
    t0,
  );
  assert.deepEqual(await checkInvariants(kv), [], "counters kept by the domain agree");

  const engineKey = fleetCountKey("engine", scope.accountId, "pending");
  const queueKey = queueCountKey("verify", job.priority, job.createdAt.slice(0, 16));
  const deliveryKey = deliveryCountKey(scope.accountId, "failed");
  await kv.atomic()
    .set(engineKey, new Deno.KvU64(5n))
    .set(queueKey, new Deno.KvU64(3n))
    .set(deliveryKey, new Deno.KvU64(2n))
    .commit();
  const report = await checkInvariantsBounded(kv, { confirm: true });
  assert.equal(report.complete, true);
  assert.deepEqual(
    report.violations.map((v) => [v.section, v.accountId, v.message]).sort(),
    [
      ["ops", null, `counter ${JSON.stringify(queueKey)} is 3 but counts 1`],
      ["ops", scope.accountId, `counter ${JSON.stringify(deliveryKey)} is 2 but counts 0`],
      ["ops", scope.accountId, `counter ${JSON.stringify(engineKey)} is 5 but counts 1`],
    ].sort(),
  );
  assert.equal(report.sections.find((s) => s.name === "ops")?.violations, 3);

  // The bounded check on start alerts Globex for its counters, the operator account for the queue's.
  const raised = await checkStoredInvariants(kv, t0, { trigger: "startup" });
  assert.deepEqual([raised.complete, raised.violations], [true, 3]);
  const open = async (accountId: string) =>
    (await readOpenAlert(kv, "account", accountId, "invariant_violation")).alert?.value ?? null;
  assert.match((await open(globex.account.id))!.message, /2 stored-data invariant violations/);
  assert.match((await open(operator.account.id))!.message, /job_queue_counts/);

  await rebuildOpsCounters(kv, t0, { force: true });
  assert.deepEqual(await checkInvariants(kv), []);
  clock.advance(60_000);
  const clean = await checkStoredInvariants(kv, clock.now(), { trigger: "startup" });
  assert.deepEqual([clean.complete, clean.violations], [true, 0]);
  assert.equal(await open(globex.account.id), null, "resolved");
  assert.equal(await open(operator.account.id), null, "resolved");
});

Deno.test("a principal's queue counter (the heartbeat's pendingJobs) that disagrees with its queue is reported; a rebuild clears it", async () => {
  using kv = await Deno.openKv(":memory:");
  const t0 = new TestClock().now();
  const principal = "agent:01JAAAAAAAAAAAAAAAAAAAAAAA";
  for (let n = 0; n < 3; n++) {
    await enqueueJob(kv, { accountId: "acc", orgId: null, kind: "backup", principal }, t0);
  }
  assert.equal(await queuedCount(kv, principal), 3);
  assert.equal(await queuedCount(kv, principal, 2), 2, "capped like the listing it replaces");
  assert.equal(await queuedCount(kv, "agent:01JBBBBBBBBBBBBBBBBBBBBBBB"), 0, "no counter: nothing queued");
  const key = principalQueueCountKey(principal);
  await kv.set(key, new Deno.KvU64(9n));
  assert.deepEqual(await checkOpsCounters(kv), [`counter ${JSON.stringify(key)} is 9 but counts 3`]);
  await rebuildOpsCounters(kv, t0, { force: true });
  assert.deepEqual(await checkOpsCounters(kv), []);
  assert.equal(await queuedCount(kv, principal), 3);
});
