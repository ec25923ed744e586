import assert from "node:assert/strict";
import { ConflictError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import {
  applyResult,
  cancelJob,
  claimJobs,
  countQueued,
  enqueueJob,
  expireLeases,
  getJob,
  LEASE_MS,
  reportProgress,
  type ResultInput,
} from "../../domain/job_queue.ts";
import { createTenant, engineClient, engineMetrics, testApp, TestClock } from "../helpers.ts";

const BES = "bes:01KAHZ3Y3N4G2D8QF5T0V7W9XB";
const OTHER = "bes:01KAHZ3Y3N4G2D8QF5T0V7W9XC";
const scope = { accountId: "acc", orgId: "org" };

function result(overrides: Partial<ResultInput> = {}): ResultInput {
  return {
    status: "success",
    startedAt: "2026-11-22T10:00:00Z",
    endedAt: "2026-11-22T10:05:00Z",
    bytesTransferred: 1000,
    protectedBytes: 5000,
    ...overrides,
  };
}

Deno.test("claimJobs() hands out the highest priority first, then the oldest", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new TestClock();
  const normal = await enqueueJob(kv, { kind: "backup", principal: BES, ...scope }, clock.now());
  clock.advance(1000);
  const critical = await enqueueJob(
    kv,
    { kind: "bmr", principal: BES, ...scope, priority: "critical" },
    clock.now(),
  );
  clock.advance(1000);
  const high = await enqueueJob(
    kv,
    { kind: "restore_files", principal: BES, ...scope, priority: "high" },
    clock.now(),
  );
  clock.advance(1000);
  const normal2 = await enqueueJob(kv, { kind: "backup", principal: BES, ...scope }, clock.now());
  await enqueueJob(kv, { kind: "backup", principal: OTHER, ...scope, priority: "critical" }, clock.now());
  const jobs = await claimJobs(kv, BES, 10, clock.now());
  assert.deepEqual(jobs.map((j) => j.id), [critical.id, high.id, normal.id, normal2.id]);
  assert.ok(jobs.every((j) => j.status === "leased" && j.attempts === 1));
  assert.equal(await countQueued(kv, BES), 0);
  assert.equal(await countQueued(kv, OTHER), 1, "another principal's job is not handed out");
});

Deno.test("invariant 6 under races: many concurrent claimers never claim a job twice", async () => {
  for (let iteration = 0; iteration < 20; iteration++) {
    using kv = await Deno.openKv(":memory:");
    const clock = new TestClock();
    const ids = [];
    for (let i = 0; i < 30; i++) {
      ids.push((await enqueueJob(kv, { kind: "backup", principal: BES, ...scope }, clock.now())).id);
    }
    const batches = await Promise.all(Array.from({ length: 12 }, () => claimJobs(kv, BES, 5, clock.now())));
    const claimed = batches.flat().map((j) => j.id);
    assert.equal(new Set(claimed).size, claimed.length, `iteration ${iteration}: a job was claimed twice`);
    assert.ok(claimed.length <= 30);
    for (const id of claimed) assert.equal((await getJob(kv, id))!.attempts, 1);
    const again = await claimJobs(kv, BES, 50, clock.now());
    assert.equal(claimed.length + again.length, 30, "every job is claimed exactly once in the end");
  }
});

Deno.test("concurrent claims of many principals share group commits; each job is claimed exactly once", async () => {
  for (let iteration = 0; iteration < 20; iteration++) {
    using kv = await Deno.openKv(":memory:");
    const clock = new TestClock();
    const principals = Array.from(
      { length: 30 },
      (_, i) => `agent:01KAHZ3Y3N4G2D8QF5T0V7W${String(i).padStart(3, "0")}`,
    );
    const jobs = new Map<string, string>();
    for (const principal of principals) {
      for (let j = 0; j < 2; j++) {
        const job = await enqueueJob(kv, { kind: "backup", principal, ...scope }, clock.now());
        jobs.set(job.id, principal);
      }
    }
    // Two claimers per principal at once, one job each: they race for the same first job.
    const claims = await Promise.all(
      principals.flatMap((p) => [claimJobs(kv, p, 1, clock.now()), claimJobs(kv, p, 1, clock.now())]),
    );
    const claimed = claims.flat();
    assert.equal(claimed.length, 60, `iteration ${iteration}: every claimer got a job`);
    assert.equal(new Set(claimed.map((j) => j.id)).size, 60, `iteration ${iteration}: no job twice`);
    for (const job of claimed) {
      assert.equal(job.principal, jobs.get(job.id), "only the principal's own jobs");
      const stored = (await getJob(kv, job.id))!;
      assert.deepEqual([stored.status, stored.attempts], ["leased", 1]);
      assert.equal(stored.leaseExpiresAt, new Date(clock.now().getTime() + LEASE_MS).toISOString());
    }
    for (const p of principals) assert.equal(await countQueued(kv, p), 0);
    assert.equal((await Array.fromAsync(kv.list({ prefix: ["job_leases"] }))).length, 60, "one lease each");
  }
});

Deno.test("applyResult() applies once: a duplicate is a no-op, a different one is refused", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new TestClock();
  const job = await enqueueJob(kv, { kind: "backup", principal: BES, ...scope }, clock.now());
  await claimJobs(kv, BES, 1, clock.now());
  assert.equal((await applyResult(kv, BES, job.id, result(), clock.now())).applied, true);
  assert.equal((await applyResult(kv, BES, job.id, result(), clock.now())).applied, false);
  await assert.rejects(
    () => applyResult(kv, BES, job.id, result({ bytesTransferred: 1 }), clock.now()),
    ConflictError,
  );
  await assert.rejects(
    () => applyResult(kv, OTHER, job.id, result(), clock.now()),
    NotFoundError,
    "another principal",
  );
  assert.equal((await getJob(kv, job.id))!.status, "succeeded");
});

Deno.test("concurrent duplicate results are applied exactly once", async () => {
  for (let i = 0; i < 20; i++) {
    using kv = await Deno.openKv(":memory:");
    const clock = new TestClock();
    const job = await enqueueJob(kv, { kind: "backup", principal: BES, ...scope }, clock.now());
    await claimJobs(kv, BES, 1, clock.now());
    const outcomes = await Promise.all(
      Array.from({ length: 5 }, () => applyResult(kv, BES, job.id, result(), clock.now())),
    );
    assert.equal(outcomes.filter((o) => o.applied).length, 1, `iteration ${i}`);
  }
});

Deno.test("impossible results are refused and change nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new TestClock();
  const job = await enqueueJob(kv, { kind: "backup", principal: BES, ...scope }, clock.now());
  await claimJobs(kv, BES, 1, clock.now());
  const before = await getJob(kv, job.id);
  await assert.rejects(() =>
    applyResult(kv, BES, job.id, result({ endedAt: "2026-11-22T09:00:00Z" }), clock.now())
  );
  await assert.rejects(() => applyResult(kv, BES, job.id, result({ bytesTransferred: -1 }), clock.now()));
  await assert.rejects(
    () => applyResult(kv, BES, job.id, result({ status: "failed" }), clock.now()),
    /error/,
  );
  await assert.rejects(
    () => applyResult(kv, BES, "01KAHZ3Y3N4G2D8QF5T0V7W9XZ", result(), clock.now()),
    NotFoundError,
  );
  assert.deepEqual(await getJob(kv, job.id), before);
});

Deno.test("a result that would not fit beside its payload in KV: hook bodies go, then hook outputs keep their tails", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new TestClock();
  const hooks = ["a", "b", "c"].map((c) => ({ id: c, type: "pre_backup", body: c.repeat(15_000) }));
  const enqueue = (payload: Record<string, unknown>) =>
    enqueueJob(kv, { kind: "backup", principal: BES, ...scope, payload }, clock.now());
  const hookOutput = (n: number, chars: number) =>
    Array.from(
      { length: n },
      (_, i) => ({ hookId: `h${i}`, type: "pre_backup", exitCode: 0, output: `${i}`.repeat(chars) }),
    );

  // 45 KB of hook bodies + 19.5 KB of hook output: the bodies are dropped, the outputs kept whole.
  const big = await enqueue({ hooks });
  await claimJobs(kv, BES, 1, clock.now());
  const first = await applyResult(kv, BES, big.id, result({ hookOutput: hookOutput(5, 3900) }), clock.now());
  assert.equal(first.applied, true);
  const stored = (await getJob(kv, big.id))!;
  assert.deepEqual(stored.payload.hooks, hooks.map(({ id, type }) => ({ id, type, bodyOmitted: true })));
  assert.deepEqual(stored.result!.hookOutput, hookOutput(5, 3900));
  assert.equal(stored.status, "succeeded");

  // No bodies to drop, 40 KB of output and 30 KB of hook output: each hook output keeps its last lines.
  const chatty = await enqueue({});
  await claimJobs(kv, BES, 1, clock.now());
  const trimmed = await applyResult(
    kv,
    BES,
    chatty.id,
    result({
      output: { log: "x".repeat(40_000) },
      hookOutput: hookOutput(10, 3000),
    }),
    clock.now(),
  );
  const outputs = (await getJob(kv, chatty.id))!.result!.hookOutput;
  assert.equal(outputs.length, 10);
  for (const [i, o] of outputs.entries()) {
    assert.ok(o.output.startsWith("...") && o.output.length <= 2003, `hook ${i}: ${o.output.length}`);
    assert.ok(o.output.endsWith(`${i}`.repeat(10)), "the tail is what is kept");
  }
  assert.deepEqual(trimmed.job.result!.hookOutput, outputs, "the run gets what was stored");

  // Too large even without hook output: refused with the field named, and nothing is recorded.
  const huge = await enqueue({});
  await claimJobs(kv, BES, 1, clock.now());
  await assert.rejects(
    applyResult(kv, BES, huge.id, result({ output: { log: "y".repeat(70_000) } }), clock.now()),
    (e) => e instanceof ValidationError && typeof e.fields.output === "string",
  );
  const after = (await getJob(kv, huge.id))!;
  assert.deepEqual([after.status, after.result], ["leased", null]);
  // A result that fits is then accepted for the same job.
  assert.equal((await applyResult(kv, BES, huge.id, result(), clock.now())).applied, true);
});

Deno.test("an expired lease returns the job to the queue; the last attempt fails it with LEASE_EXPIRED", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new TestClock();
  const job = await enqueueJob(kv, { kind: "backup", principal: BES, ...scope, maxAttempts: 2 }, clock.now());
  await claimJobs(kv, BES, 1, clock.now());
  clock.advance(LEASE_MS - 1);
  assert.deepEqual(
    await expireLeases(kv, clock.now()),
    { requeued: 0, failed: 0, failedIds: [] },
    "not yet expired",
  );
  clock.advance(2);
  assert.deepEqual(await expireLeases(kv, clock.now()), { requeued: 1, failed: 0, failedIds: [] });
  assert.deepEqual(
    await expireLeases(kv, clock.now()),
    { requeued: 0, failed: 0, failedIds: [] },
    "idempotent",
  );
  await assert.rejects(
    () => applyResult(kv, BES, job.id, result(), clock.now()),
    ConflictError,
    "a late result is refused",
  );
  const [again] = await claimJobs(kv, BES, 1, clock.now());
  assert.equal(again.attempts, 2);
  clock.advance(LEASE_MS + 1);
  assert.deepEqual(await expireLeases(kv, clock.now()), { requeued: 0, failed: 1, failedIds: [job.id] });
  const failed = (await getJob(kv, job.id))!;
  assert.equal(failed.status, "failed");
  assert.equal(failed.failureReason, "LEASE_EXPIRED");
  assert.equal(await countQueued(kv, BES), 0);
});

Deno.test("progress renews the lease and carries a cancel request", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new TestClock();
  const job = await enqueueJob(
    kv,
    { kind: "restore_files", principal: BES, ...scope, priority: "high" },
    clock.now(),
  );
  await claimJobs(kv, BES, 1, clock.now());
  clock.advance(LEASE_MS - 1000);
  const first = await reportProgress(kv, BES, job.id, { percent: 40, bytesTransferred: 100 }, clock.now());
  assert.equal(first.cancel, false);
  assert.equal(Date.parse(first.leaseExpiresAt), clock.now().getTime() + LEASE_MS);
  clock.advance(LEASE_MS - 1000);
  assert.deepEqual(
    await expireLeases(kv, clock.now()),
    { requeued: 0, failed: 0, failedIds: [] },
    "the renewed lease holds",
  );
  await cancelJob(kv, job.id, clock.now());
  assert.equal(
    (await reportProgress(kv, BES, job.id, { percent: 50, bytesTransferred: 200 }, clock.now())).cancel,
    true,
  );
  await assert.rejects(() =>
    reportProgress(kv, BES, job.id, { percent: 101, bytesTransferred: 0 }, clock.now())
  );
});

Deno.test("POST /api/bes/v1/jobs/claim, progress and result over the signed protocol", async () => {
  using kv = await Deno.openKv(":memory:");
  const { app, clock } = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const client = engineClient(app, clock);
  const { identity } = await client.registerBes(tenant.secrets[0], {
    name: "bes-1",
    hostname: "bes-1.example",
    ipAddress: "10.0.0.1",
  });
  const principal = `bes:${identity.id}`;
  const job = await enqueueJob(kv, {
    kind: "verify",
    principal,
    accountId: tenant.account.id,
    orgId: tenant.orgs[0].id,
  }, clock.now());
  const hb = await (await client.heartbeat(identity, engineMetrics())).json();
  assert.equal(hb.pendingJobs, 1);
  const claim = await client.post(identity, "/api/bes/v1/jobs/claim", { max: 5 });
  assert.equal(claim.status, 200);
  const { jobs } = await claim.json();
  assert.deepEqual(jobs.map((j: { id: string }) => j.id), [job.id]);
  const after = await (await client.heartbeat(identity, engineMetrics())).json();
  assert.equal(after.pendingJobs, 0, "pendingJobs (the principal's queue counter) follows the claim");
  const progress = await client.post(identity, `/api/bes/v1/jobs/${job.id}/progress`, {
    percent: 10,
    bytesTransferred: 5,
    message: "",
  });
  assert.equal(progress.status, 200);
  const bad = await client.post(identity, `/api/bes/v1/jobs/${job.id}/result`, {
    ...result(),
    protectedBytes: -5,
  });
  assert.equal(bad.status, 422);
  const ok = await client.post(identity, `/api/bes/v1/jobs/${job.id}/result`, result());
  assert.deepEqual([ok.status, await ok.json()], [200, { applied: true }]);
  const dup = await client.post(identity, `/api/bes/v1/jobs/${job.id}/result`, result());
  assert.deepEqual([dup.status, await dup.json()], [200, { applied: false }]);
  const conflict = await client.post(
    identity,
    `/api/bes/v1/jobs/${job.id}/result`,
    result({ bytesTransferred: 7 }),
  );
  assert.equal(conflict.status, 409);
  const unknown = await client.post(identity, "/api/bes/v1/jobs/01KAHZ3Y3N4G2D8QF5T0V7W9XZ/result", result());
  assert.equal(unknown.status, 404);
});
