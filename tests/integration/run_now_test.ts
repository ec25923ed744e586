/** Run now (guide, backup.manage "run-now"): the domain rule, its refusals and races, the JSON API and the policy page. */
import assert from "node:assert/strict";
import { createApiToken } from "../../domain/api_tokens.ts";
import { assignHost, setAssignmentState } from "../../domain/assignments.ts";
import { userActor } from "../../domain/auth.ts";
import { applyHeartbeat, markEngineDeleting } from "../../domain/engines.ts";
import { ConflictError, ValidationError } from "../../domain/errors.ts";
import { createHook } from "../../domain/hooks.ts";
import { applyHostHeartbeat, enrollHost, type Host } from "../../domain/hosts.ts";
import { applyResult, claimJobs, getJob } from "../../domain/job_queue.ts";
import { type Policy, updatePolicy } from "../../domain/policies.ts";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { runNowBlockedReason, runPolicyNow } from "../../domain/run_now.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import { buildBackupPayload } from "../../domain/backup_payload.ts";
import { indexOpenRuns } from "../../domain/run_lifecycle.ts";
import { listRunsByPolicy, type Run } from "../../domain/runs.ts";
import { retryRun } from "../../domain/run_retry.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { applyCapacityReport, createTarget, type StorageTarget } from "../../domain/storage.ts";
import type { Engine } from "../../domain/engines.ts";
import {
  addUser,
  assertIncludes,
  auditEntries,
  Browser,
  createTenant,
  engineClient,
  engineMetrics,
  enrollTestHost,
  kvSnapshot,
  onlineTestEngine,
  setFleetStatus,
  signInAs,
  targetInput,
  testApp,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

/** A tenant (two orgs) with an online BES, a target, a policy with three active hosts and a paused one. */
async function fixture(kv: Deno.Kv) {
  const clock = new TestClock(new Date("2026-11-29T10:00:00Z"));
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops", "Lab"], now);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine, keys } = await onlineTestEngine(kv, scope, now);
  const target = await createTarget(kv, system, targetInput(engine.id), { now, masterKey });
  const policy = await createPolicy(kv, system, {
    name: "files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    incrementalSchedule: "0 2 * * 1-6",
    exclusionTemplate: "caches",
  }, now) as Policy;
  await createHook(kv, system, { policyId: policy.id, type: "pre_backup", template: "mysql" }, now);
  const hosts: Host[] = [];
  const assignments: string[] = [];
  for (const name of ["h1", "h2", "h3", "h4"]) {
    const host = await enrollTestHost(kv, scope, name, now);
    assignments.push(
      (await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, now)).assignment.id,
    );
    hosts.push(host);
  }
  await setAssignmentState(kv, system, assignments[3], "paused", now); // h4: not active
  const users = {
    viewer: await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", now),
    operator: await addUser(kv, tenant, "operator@acme.example", "operator", "all", now),
    labOperator: await addUser(kv, tenant, "lab@acme.example", "operator", [tenant.orgs[1]], now),
  };
  return { clock, tenant, engine, keys, target, policy, hosts, users };
}

/** Posts the result of a run's job, as its agent would. */
async function finish(kv: Deno.Kv, run: Run, now: Date, status: "success" | "failed" = "success") {
  const job = (await getJob(kv, run.jobId!))!;
  await claimJobs(kv, job.principal, 50, now);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status,
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 10,
    protectedBytes: 10,
    ...(status === "failed"
      ? { error: { reason: "TARGET_UNREACHABLE", message: "NAS did not answer" }, retryable: true }
      : {
        output: {
          restorePoint: { id: `rp-${run.id}`, chainId: "c", type: run.kind, sizeBytes: 10, fileCount: 1 },
        },
      }),
  }, now);
  await applyJobOutcome(kv, done, now);
}

Deno.test("runPolicyNow() starts one manual run per active host, each job exactly the scheduler's", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  const created = await runPolicyNow(kv, userActor(f.users.operator), f.policy.id, { kind: "full" }, now);
  assert.deepEqual(created.map((c) => c.hostname).sort(), [
    "h1.acme.example",
    "h2.acme.example",
    "h3.acme.example",
  ]);
  const runs = await listRunsByPolicy(kv, f.policy.id);
  assert.equal(runs.length, 3, "the paused host h4 gets no run");
  const engine = (await kv.get<Engine>(["engines", f.engine.id])).value!;
  const target = (await kv.get<StorageTarget>(["storage_targets", f.target.id])).value!;
  const policy = (await kv.get<Policy>(["policies", f.policy.id])).value!;
  const expected = await buildBackupPayload(kv, policy, engine, target, "full");
  for (const run of runs) {
    assert.equal(run.trigger, "manual");
    assert.equal(run.status, "pending");
    assert.equal(run.kind, "full");
    const job = (await getJob(kv, run.jobId!))!;
    assert.equal(job.kind, "backup");
    assert.equal(job.principal, `agent:${run.hostId}`);
    assert.equal(job.priority, "normal");
    assert.deepEqual(job.payload, { ...expected, hostId: run.hostId }, "the scheduler's payload builder");
  }
  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "policy.run_now");
  assert.equal(audit.length, 1);
  assertIncludes(audit[0].summary, "3 full runs");
});

Deno.test("runPolicyNow() queues the same payload as a scheduled run of that host", async () => {
  using manual = await Deno.openKv(":memory:");
  using scheduled = await Deno.openKv(":memory:");
  const a = await fixture(manual);
  const b = await fixture(scheduled);
  await runPolicyNow(manual, system, a.policy.id, { kind: "full", hostIds: [a.hosts[0].id] }, a.clock.now());
  await runSchedulerTick(scheduled, new Date("2026-11-29T02:00:00Z"));
  const payloadOf = async (kv: Deno.Kv, policyId: string, hostId: string) => {
    const run = (await listRunsByPolicy(kv, policyId)).find((r) => r.hostId === hostId)!;
    const { hostId: _h, policyId: _p, bes, target, hooks, repository, ...rest } =
      (await getJob(kv, run.jobId!))!
        .payload;
    const repo = repository as { target: string; path: string; generation: number };
    assert.equal(repo.target, (target as { id: string }).id, "the repository is on the policy's target");
    assert.equal(repo.path, `cadres/${policyId}/g1`);
    return {
      rest,
      hooks: (hooks as Array<{ type: string }>).map((h) => h.type),
      bes: typeof bes,
      target: typeof target,
      generation: repo.generation,
    };
  };
  assert.deepEqual(
    await payloadOf(manual, a.policy.id, a.hosts[0].id),
    await payloadOf(scheduled, b.policy.id, b.hosts[0].id),
  );
});

Deno.test("runPolicyNow() runs only the chosen hosts; a host that is not active on the policy is 422 and nothing changes", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  const { host: stranger } = await enrollHost(kv, {
    accountId: f.tenant.account.id,
    orgId: f.tenant.orgs[0].id,
  }, {
    hostname: "stranger.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.3",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, now);
  const before = await kvSnapshot(kv);
  for (
    const [hostIds, message] of [
      [[f.hosts[0].id, f.hosts[3].id], /h4\.acme\.example is paused on this policy, not active/],
      [[stranger.id], /stranger\.acme\.example is not assigned to this policy/],
    ] as const
  ) {
    const error = await runPolicyNow(
      kv,
      system,
      f.policy.id,
      { kind: "incremental", hostIds: [...hostIds] },
      now,
    )
      .catch((e) => e);
    assert.ok(error instanceof ValidationError, String(error));
    assert.match(error.message, message);
    assert.match(error.fields.hostIds, message);
  }
  assert.equal(await kvSnapshot(kv), before, "a refusal changes nothing");
  const created = await runPolicyNow(kv, system, f.policy.id, {
    kind: "incremental",
    hostIds: [f.hosts[1].id, f.hosts[1].id],
  }, now);
  assert.deepEqual(created.map((c) => c.run.hostId), [f.hosts[1].id], "a repeated id is one host");
  assert.equal(created[0].run.kind, "incremental");
});

Deno.test("runPolicyNow() with synthetic_full queues one BES job per active host, naming it; hostIds are refused for it", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  await assert.rejects(
    () => runPolicyNow(kv, system, f.policy.id, { kind: "synthetic_full", hostIds: [f.hosts[0].id] }, now),
    /left out for a synthetic full/,
  );
  await assert.rejects(
    () => runPolicyNow(kv, system, f.policy.id, { kind: "differential" as "full" }, now),
    /must be full, incremental or synthetic_full/,
  );
  const created = await runPolicyNow(kv, system, f.policy.id, { kind: "synthetic_full" }, now);
  assert.deepEqual(
    created.map((c) => c.run.hostId).sort(),
    f.hosts.slice(0, 3).map((h) => h.id).sort(),
    "the active hosts h1-h3; the paused h4 gets none",
  );
  for (const { run } of created) {
    assert.equal(run.kind, "synthetic_full");
    const job = (await getJob(kv, run.jobId!))!;
    assert.equal(job.kind, "synthetic_full");
    assert.equal(job.principal, `bes:${f.engine.id}`);
    assert.deepEqual(job.payload, {
      policyId: f.policy.id,
      targetId: f.target.id,
      repository: { target: f.target.id, path: `cadres/${f.policy.id}/g1`, generation: 1 },
      hostId: run.hostId,
    }, "the scheduler's shape");
  }
  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "policy.run_now");
  assert.match(audit[0].summary, /Ran policy files now: 3 synthetic fulls on BES bes-1 \(h\d/);
  await assert.rejects(
    () => runPolicyNow(kv, system, f.policy.id, { kind: "synthetic_full" }, now),
    /already pending or running on h\d/,
  );
  // One host's synthetic full holds off a backup of that host (both write its namespace).
  await assert.rejects(
    () => runPolicyNow(kv, system, f.policy.id, { kind: "full", hostIds: [f.hosts[0].id] }, now),
    /A synthetic full of policy files is already pending on its BES for h1\.acme\.example/,
  );
});

Deno.test("run-now refusals: disabled, paused (storage_critical), BES offline, a pending run; each changes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const operator = userActor(f.users.operator);
  let now = f.clock.now();
  const refused = async (input: Parameters<typeof runPolicyNow>[3], pattern: RegExp) => {
    const before = await kvSnapshot(kv);
    const error = await runPolicyNow(kv, operator, f.policy.id, input, now).catch((e) => e);
    assert.ok(error instanceof ConflictError, `expected a 409 refusal, got ${error}`);
    assert.match(error.message, pattern);
    assert.equal(await kvSnapshot(kv), before, `refusal "${error.message}" changed the database`);
  };
  const stored = async () => (await kv.get<Policy>(["policies", f.policy.id])).value!;

  await updatePolicy(kv, system, f.policy.id, { ...(await stored()), enabled: false }, now);
  await refused({ kind: "full" }, /Policy files is disabled/);
  await updatePolicy(kv, system, f.policy.id, { ...(await stored()), enabled: true }, now);

  // The target reports critical capacity: its policies are auto-paused (pause acts on the target's health).
  const totalBytes = 1_000_000_000_000;
  const critical = {
    targetId: f.target.id,
    totalBytes,
    usedBytes: totalBytes * 0.97,
    freeBytes: totalBytes * 0.03,
  };
  assert.deepEqual((await applyCapacityReport(kv, f.engine.id, critical, now))?.paused, [f.policy.id]);
  await refused(
    { kind: "full" },
    /Policy files is paused \(storage_critical\): its storage target is at critical capacity/,
  );
  await kv.set(["policies", f.policy.id], { ...(await stored()), pausedReason: null });

  f.clock.advance(10 * 60_000); // no heartbeat for 10 minutes: the BES is offline (before any sweep marks it)
  now = f.clock.now();
  for (const h of f.hosts) {
    await applyHostHeartbeat(kv, h.id, { version: "1", metrics: engineMetrics() }, now);
  }
  await refused({ kind: "incremental" }, /BES bes-1 is offline \(last heartbeat 2026-11-29T10:00:00\.000Z\)/);
  await refused({ kind: "synthetic_full" }, /BES bes-1 is offline/);
  await applyHeartbeat(kv, f.engine.id, { version: "1", metrics: engineMetrics() }, now);

  const [first] = await runPolicyNow(
    kv,
    operator,
    f.policy.id,
    { kind: "full", hostIds: [f.hosts[0].id] },
    now,
  );
  await refused({ kind: "incremental", hostIds: [f.hosts[0].id] }, /already pending on h1\.acme\.example/);
  await refused({ kind: "full" }, /A full run of policy files is already pending on h1\.acme\.example/);
  // Once that run ends, the host may run again.
  await finish(kv, first.run, now);
  const again = await runPolicyNow(kv, operator, f.policy.id, { kind: "incremental" }, now);
  assert.equal(again.length, 3);
  await refused(
    { kind: "full" },
    /already pending or running on h1\.acme\.example, h2\.acme\.example, h3\.acme\.example/,
  );

  // A scheduled run that is still pending blocks it too (the index is written by every dispatch).
  for (const c of again) await finish(kv, c.run, now);
  assert.deepEqual(await runSchedulerTick(kv, new Date("2026-11-30T02:00:00Z")), {
    dispatched: 3,
    skipped: 0,
  });
  await refused(
    { kind: "full", hostIds: [f.hosts[2].id] },
    /incremental run of policy files is already pending on h3/,
  );
});

Deno.test("runNowBlockedReason() names the reason; a degraded BES may run", () => {
  const now = new Date("2026-11-29T10:00:00Z");
  const policy = { name: "p", enabled: true, pausedReason: null };
  const engine = { name: "bes", status: "online" as const, lastHeartbeatAt: "2026-11-29T09:59:00Z" };
  assert.equal(runNowBlockedReason({ policy, engine, now }), null);
  assert.equal(runNowBlockedReason({ policy, engine: { ...engine, status: "degraded" }, now }), null);
  assert.match(runNowBlockedReason({ policy, engine: null, now })!, /gone/);
  assert.match(
    runNowBlockedReason({ policy, engine: { ...engine, status: "deleting" }, now })!,
    /being deleted/,
  );
  assert.match(
    runNowBlockedReason({ policy, engine: { ...engine, status: "pending", lastHeartbeatAt: null }, now })!,
    /BES bes is offline \(no heartbeat yet\)/,
  );
  assert.match(
    runNowBlockedReason({ policy, engine: { ...engine, lastHeartbeatAt: "2026-11-29T09:56:59Z" }, now })!,
    /offline \(last heartbeat 2026-11-29T09:56:59Z\)/,
  );
});

Deno.test("an offline agent gets the run the scheduler would give it: waiting with catch-up on", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  f.clock.advance(10 * 60_000);
  const now = f.clock.now();
  await applyHeartbeat(kv, f.engine.id, { version: "1", metrics: engineMetrics() }, now);
  for (const h of f.hosts.slice(1)) {
    await applyHostHeartbeat(kv, h.id, { version: "1", metrics: engineMetrics() }, now);
  }
  await setFleetStatus(kv, "host", f.hosts[0].id, "offline"); // as the host sweep leaves it
  const created = await runPolicyNow(kv, system, f.policy.id, { kind: "full" }, now);
  const offline = created.find((c) => c.run.hostId === f.hosts[0].id)!.run;
  assert.equal(offline.status, "pending");
  assert.equal(offline.jobId, null);
  assert.equal(offline.error?.reason, "ENGINE_OFFLINE");
  assert.ok(
    (await kv.get(["runs_deferred", f.hosts[0].id, offline.id])).value,
    "catch-up dispatches it later",
  );
  assert.equal(created.filter((c) => c.run.jobId).length, 2);
});

Deno.test("two concurrent run-nows of one policy and host create exactly one run (many iterations)", async () => {
  for (let i = 0; i < 30; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const now = f.clock.now();
    const inputs = i % 2
      ? [{ kind: "full" as const }, { kind: "incremental" as const, hostIds: [f.hosts[1].id] }]
      : [{ kind: "full" as const, hostIds: [f.hosts[0].id] }, {
        kind: "full" as const,
        hostIds: [f.hosts[0].id],
      }];
    const outcomes = await Promise.allSettled(
      inputs.map((input) => runPolicyNow(kv, system, f.policy.id, input, now)),
    );
    const won = outcomes.filter((o) => o.status === "fulfilled");
    assert.equal(won.length, 1, `iteration ${i}: exactly one call starts runs`);
    const lost = outcomes.find((o) => o.status === "rejected") as PromiseRejectedResult;
    assert.ok(lost.reason instanceof ConflictError, `iteration ${i}: ${lost.reason}`);
    assert.match(lost.reason.message, /already pending/);
    const runs = await listRunsByPolicy(kv, f.policy.id);
    const perHost = new Map<string, number>();
    for (const r of runs) perHost.set(r.hostId!, (perHost.get(r.hostId!) ?? 0) + 1);
    assert.ok([...perHost.values()].every((n) => n === 1), `iteration ${i}: one run per host`);
    assert.equal(runs.length, (won[0] as PromiseFulfilledResult<unknown[]>).value.length);
    const jobs = await Array.fromAsync(kv.list({ prefix: ["jobs"] }));
    assert.equal(jobs.length, runs.length, `iteration ${i}: one job per run`);
    const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "policy.run_now");
    assert.equal(audit.length, 1, `iteration ${i}: one audit entry`);
  }
});

Deno.test("concurrent run-nows of one policy on different hosts both start", async () => {
  for (let i = 0; i < 10; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const now = f.clock.now();
    const results = await Promise.all(
      f.hosts.slice(0, 3).map((h) =>
        runPolicyNow(kv, system, f.policy.id, { kind: "full", hostIds: [h.id] }, now)
      ),
    );
    assert.deepEqual(results.map((r) => r.length), [1, 1, 1], `iteration ${i}`);
  }
});

/** An API client with a bearer token of `user`. */
async function apiAs(kv: Deno.Kv, clock: TestClock, user: Parameters<typeof userActor>[0]) {
  const { app } = testApp(kv, clock);
  const { secret } = await createApiToken(
    kv,
    userActor(user),
    { name: "ci", permissions: [...userActor(user).permissions] as never, expiresInDays: 90 },
    clock.now(),
  );
  return (path: string, body: unknown) =>
    app.request(`http://localhost:8000${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
}

Deno.test("POST /api/v1/policies/{id}/run answers 201 with the runs, 409 with the reason, 422 naming the field", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const post = await apiAs(kv, f.clock, f.users.operator);
  const path = `/api/v1/policies/${f.policy.id}/run`;
  const res = await post(path, { kind: "full", hostIds: [f.hosts[0].id, f.hosts[1].id] });
  assert.equal(res.status, 201);
  const { runs } = await res.json();
  assert.equal(runs.length, 2);
  for (const r of runs) {
    assert.match(r.id, /^[0-9A-Z]{26}$/);
    assert.match(r.jobId, /^[0-9A-Z]{26}$/);
    assert.ok([f.hosts[0].id, f.hosts[1].id].includes(r.hostId));
    assert.equal(r.trigger, "manual");
    assert.equal(r.status, "pending");
  }
  const conflict = await post(path, { kind: "incremental", hostIds: [f.hosts[0].id] });
  assert.equal(conflict.status, 409);
  const body = await conflict.json();
  assert.equal(body.error.code, "conflict");
  assertIncludes(body.error.message, "already pending on h1.acme.example");
  for (
    const [input, field] of [
      [{ kind: "weekly" }, "kind"],
      [{}, "kind"],
      [{ kind: "full", hostIds: ["nope"] }, "hostIds"],
      [{ kind: "full", hostIds: [] }, "hostIds"],
      [{ kind: "synthetic_full", hostIds: [f.hosts[2].id] }, "hostIds"],
      [{ kind: "full", hostIds: [f.hosts[3].id] }, "hostIds"],
    ] as const
  ) {
    const bad = await post(path, input);
    assert.equal(bad.status, 422, JSON.stringify(input));
    const e = await bad.json();
    assert.equal(e.error.code, "invalid");
    assert.ok(e.error.fields?.[field], `${JSON.stringify(input)} names ${field}: ${JSON.stringify(e)}`);
  }
  // Permission and scope: a viewer is 403, an operator of another org 404; neither starts anything.
  const runsBefore = (await listRunsByPolicy(kv, f.policy.id)).length;
  assert.equal((await (await apiAs(kv, f.clock, f.users.viewer))(path, { kind: "full" })).status, 403);
  assert.equal((await (await apiAs(kv, f.clock, f.users.labOperator))(path, { kind: "full" })).status, 404);
  assert.equal((await listRunsByPolicy(kv, f.policy.id)).length, runsBefore);
});

Deno.test("the policy page offers Run now to backup.manage, explains it to others, and reports what started or why not", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const { app } = testApp(kv, f.clock);
  const viewer = new Browser(app);
  await signInAs(viewer, kv, f.users.viewer, f.clock.now());
  const page = `/backup/policies/${f.policy.id}`;
  const seen = await (await viewer.get(page)).text();
  assertIncludes(seen, 'data-testid="run-now-denied"');
  assert.ok(!seen.includes('data-testid="run-now-form"'), "no form without backup.manage");
  assert.equal((await viewer.postForm(`${page}/run`, { kind: "full" }, { tokenFrom: page })).status, 403);

  const operator = new Browser(app);
  await signInAs(operator, kv, f.users.operator, f.clock.now());
  const html = await (await operator.get(page)).text();
  assertIncludes(html, `action="/backup/policies/${f.policy.id}/run"`);
  for (const h of f.hosts.slice(0, 3)) assertIncludes(html, `value="${h.id}"`);
  assert.ok(!html.includes(`value="${f.hosts[3].id}"`), "a paused host is not offered");
  assert.ok(!html.includes('data-testid="run-now-blocked"'));

  const started = await operator.postForm(`${page}/run`, { kind: "incremental", hostIds: [f.hosts[0].id] }, {
    tokenFrom: page,
  });
  assert.equal(started.status, 303);
  assert.equal(started.headers.get("location"), `${page}#runs`);
  const after = await (await operator.get(page)).text();
  assertIncludes(after, "Started 1 incremental run on h1.acme.example: 1 queued.");
  assertIncludes(after, "incremental (manual)", "the runs table shows the manual run");

  const refused = await operator.postForm(`${page}/run`, { kind: "full", hostIds: [f.hosts[0].id] }, {
    tokenFrom: page,
  });
  // A refusal renders the page again (409 a conflict, 422 an invalid form) with the reason.
  assert.equal(refused.status, 409);
  assertIncludes(
    await refused.text(),
    "Not run: An incremental run of policy files is already pending on h1.acme.example",
  );
  const invalid = await operator.postForm(`${page}/run`, { kind: "" }, { tokenFrom: page });
  assert.equal(invalid.status, 422);
  assertIncludes(
    await invalid.text(),
    "Not run: kind must be full, incremental or synthetic_full",
  );
  assert.equal((await listRunsByPolicy(kv, f.policy.id)).length, 1, "refusals started nothing");

  // Disabled: the page says why and the button is disabled.
  await updatePolicy(kv, system, f.policy.id, {
    name: "files",
    targetId: f.target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    enabled: false,
  }, f.clock.now());
  const disabled = await (await operator.get(page)).text();
  assertIncludes(disabled, "Policy files is disabled: enable it to run it.");
  assert.match(disabled, /<button type="submit" class="btn btn--primary" disabled/);
});

Deno.test("a refused Run now renders the policy page again with the kind and the ticked hosts kept", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const { app } = testApp(kv, f.clock);
  const operator = new Browser(app);
  await signInAs(operator, kv, f.users.operator, f.clock.now());
  const page = `/backup/policies/${f.policy.id}`;
  await runPolicyNow(kv, system, f.policy.id, { kind: "full", hostIds: [f.hosts[0].id] }, f.clock.now());
  const runsBefore = (await listRunsByPolicy(kv, f.policy.id)).length;
  const ticked = [f.hosts[0].id, f.hosts[1].id];
  /** The host ids whose checkbox is checked in the Run now panel. */
  const checked = (html: string) =>
    [...html.matchAll(/<input type="checkbox" name="hostIds" value="([0-9A-Z]{26})"( checked)?/g)]
      .filter((m) => m[2]).map((m) => m[1]).sort();
  /** The kind selected in the Run now panel. */
  const selectedKind = (html: string) =>
    html.match(/<select id="run-now-kind"[^]*?<\/select>/)?.[0].match(/value="(\w+)"\s*selected/)?.[1];

  // Refused (a run is pending on h1): 409, the reason, and the two ticked hosts still ticked — pressing
  // Run now again must not mean "every active host".
  const refused = await operator.postForm(`${page}/run`, { kind: "incremental", hostIds: ticked }, {
    tokenFrom: page,
  });
  assert.equal(refused.status, 409);
  const html = await refused.text();
  assertIncludes(html, "Not run: A full run of policy files is already pending on h1.acme.example");
  assert.deepEqual(checked(html), [...ticked].sort(), "the ticked hosts are kept");
  assert.equal(selectedKind(html), "incremental", "the kind is kept");

  // Invalid (hosts with a synthetic full): 422 naming the field, the form as submitted.
  const invalid = await operator.postForm(`${page}/run`, { kind: "synthetic_full", hostIds: ticked }, {
    tokenFrom: page,
  });
  assert.equal(invalid.status, 422);
  const invalidHtml = await invalid.text();
  assertIncludes(invalidHtml, "Not run: hostIds must be left out for a synthetic full");
  assert.deepEqual(checked(invalidHtml), [...ticked].sort());
  assert.equal(selectedKind(invalidHtml), "synthetic_full");
  assert.equal((await listRunsByPolicy(kv, f.policy.id)).length, runsBefore, "refusals started nothing");

  // A plain page load ticks nothing.
  assert.deepEqual(checked(await (await operator.get(page)).text()), []);
});

/** Every run still pending or running has its open-run entry, and every entry is such a run. */
async function assertOpenIndexExact(kv: Deno.Kv, where: string) {
  const entries = (await Array.fromAsync(kv.list<string>({ prefix: ["runs_open"] }))).map((e) => e.value)
    .sort();
  const open = (await Array.fromAsync(kv.list<Run>({ prefix: ["runs"] })))
    .filter((e) => e.value.status === "pending" || e.value.status === "running").map((e) => e.value.id)
    .sort();
  assert.deepEqual(entries, open, where);
}

Deno.test("the open-run index follows every run: dispatch, deferral, catch-up, results, retry", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  // h1's agent goes offline: two scheduled windows defer a run each (catch-up is on).
  await setFleetStatus(kv, "host", f.hosts[0].id, "offline");
  await runSchedulerTick(kv, new Date("2026-11-30T02:00:00Z"));
  await runSchedulerTick(kv, new Date("2026-12-01T02:00:00Z"));
  await assertOpenIndexExact(kv, "after two ticks");
  // Back online: the newest deferred run is dispatched, the older one skipped.
  await applyHostHeartbeat(kv, f.hosts[0].id, { version: "1", metrics: engineMetrics() }, f.clock.now());
  await runSchedulerTick(kv, new Date("2026-12-01T02:01:00Z"));
  await assertOpenIndexExact(kv, "after catch-up");
  const runs = await listRunsByPolicy(kv, f.policy.id);
  for (const run of runs.filter((r) => r.jobId && r.status === "pending")) {
    await finish(kv, run, f.clock.now(), run.hostId === f.hosts[1].id ? "failed" : "success");
  }
  await assertOpenIndexExact(kv, "after the results");
  const failed = (await listRunsByPolicy(kv, f.policy.id)).find((r) => r.status === "failed")!;
  const retry = await retryRun(kv, system, failed.id, f.clock.now());
  await assertOpenIndexExact(kv, "after a retry");
  await assert.rejects(
    () => runPolicyNow(kv, system, f.policy.id, { kind: "full", hostIds: [f.hosts[1].id] }, f.clock.now()),
    /already pending on h2/,
  );
  await finish(kv, retry, f.clock.now());
  await assertOpenIndexExact(kv, "after the retry's result");
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["runs_open"] }))).length, 0);
});

Deno.test("run-now on a BES being deleted is refused and changes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  await markEngineDeleting(kv, system, f.engine.id, now);
  const before = await kvSnapshot(kv);
  for (const kind of ["full", "synthetic_full"] as const) {
    const error = await runPolicyNow(kv, system, f.policy.id, { kind }, now).catch((e) => e);
    assert.ok(error instanceof ConflictError, String(error));
    assert.match(error.message, /BES bes-1 is being deleted/);
  }
  assert.equal(await kvSnapshot(kv), before);
});

Deno.test("a BES marked deleting while run-now writes: its runs never commit after the mark (many iterations)", async () => {
  let interleaved = 0;
  for (let i = 0; i < 24; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const now = f.clock.now();
    // What deleteEngine does first: mark the BES `deleting`, checked against what it read.
    const markDeleting = async () => {
      for (let k = 0; k < i % 12; k++) await new Promise((r) => setTimeout(r, 0));
      await markEngineDeleting(kv, system, f.engine.id, now);
    };
    const [run] = await Promise.allSettled([
      runPolicyNow(kv, system, f.policy.id, { kind: "full" }, now),
      markDeleting(),
    ]);
    const engineStamp = (await kv.get(["engines", f.engine.id])).versionstamp!;
    const runs = await Array.fromAsync(kv.list<Run>({ prefix: ["runs"] }));
    if (run.status === "rejected") {
      assert.ok(run.reason instanceof ConflictError, String(run.reason));
      assert.match(run.reason.message, /being deleted/);
      assert.equal(runs.length, 0, `iteration ${i}: a refused run-now wrote runs`);
      interleaved++;
      continue;
    }
    for (const r of runs) {
      assert.ok(
        r.versionstamp < engineStamp,
        `iteration ${i}: run ${r.value.id} committed after the BES was marked deleting`,
      );
    }
  }
  assert.ok(interleaved > 0, "some iterations marked the BES between run-now's read and its write");
});

Deno.test("run-now without hostIds on a policy with 200 active hosts starts all of them in several writes", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  const scope = { accountId: f.tenant.account.id, orgId: f.tenant.orgs[0].id };
  for (let i = 0; i < 197; i++) {
    const host = await enrollTestHost(kv, scope, `bulk-${String(i).padStart(3, "0")}`, now);
    await assignHost(kv, system, { policyId: f.policy.id, hostId: host.id }, now);
  }
  const operator = userActor(f.users.operator);
  const created = await runPolicyNow(kv, operator, f.policy.id, { kind: "full" }, now);
  assert.equal(created.length, 200);
  const runs = (await Array.fromAsync(kv.list<Run>({ prefix: ["runs"] }))).map((e) => e.value);
  assert.equal(runs.length, 200);
  assert.equal(new Set(runs.map((r) => r.hostId)).size, 200, "one run per host");
  assert.ok(runs.every((r) => r.trigger === "manual" && r.status === "pending" && r.jobId));
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["jobs"] }))).length, 200, "one job per run");
  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "policy.run_now");
  assert.equal(audit.length, 2, "one audit entry per write");
  assert.ok(audit.every((e) => /write [12] of 2, 200 hosts in all/.test(e.summary)), audit[0].summary);
  assert.equal(
    (await kv.get<{ writing?: boolean }>(["run_now_guard", f.policy.id])).value?.writing,
    undefined,
    "guard released",
  );

  // The per-host refusal still holds: every host has an open run now.
  const before = await kvSnapshot(kv);
  const again = await runPolicyNow(kv, operator, f.policy.id, { kind: "incremental" }, now).catch((e) => e);
  assert.ok(again instanceof ConflictError, String(again));
  assert.match(again.message, /already pending or running on .* and 195 more/);
  assert.equal(await kvSnapshot(kv), before);
});

Deno.test("run-now in several writes: another run-now of the policy is refused while one is mid-way", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  // Three hosts, one per write: the guard is marked while the writes go on, and released after.
  const created = await runPolicyNow(kv, system, f.policy.id, { kind: "full" }, now, { perWrite: 1 });
  assert.equal(created.length, 3);
  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "policy.run_now");
  assert.equal(audit.length, 3);
  // A run now that died mid-way leaves the mark (it expires after a minute): a second one is refused.
  await kv.set(["run_now_guard", f.policy.id], { at: now.toISOString(), writing: true });
  const before = await kvSnapshot(kv);
  const error = await runPolicyNow(kv, system, f.policy.id, { kind: "synthetic_full" }, now).catch((e) => e);
  assert.ok(error instanceof ConflictError, String(error));
  assert.match(error.message, /Another run now of policy files is still starting its runs/);
  assert.equal(await kvSnapshot(kv), before);
});

/** A job's result, as an engine posts it. */
function successResult(now: Date) {
  return {
    status: "success" as const,
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 10,
    protectedBytes: 10,
  };
}

Deno.test("a duplicate result post brings a run left open up to its job (the process stopped in between)", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  const [{ run }] = await runPolicyNow(kv, system, f.policy.id, { kind: "synthetic_full" }, now);
  const principal = `bes:${f.engine.id}`;
  await claimJobs(kv, principal, 5, now);
  // The result is recorded, then the process dies before applying it to the run.
  assert.equal((await applyResult(kv, principal, run.jobId!, successResult(now), now)).applied, true);
  assert.equal((await kv.get<Run>(["runs", run.id])).value!.status, "running");
  // The engine, unsure its post landed, posts the same result again: 200 applied:false, and the run ends.
  const { app } = testApp(kv, f.clock);
  const client = engineClient(app, f.clock);
  const identity = { kind: "bes" as const, id: f.engine.id, ...f.keys };
  const dup = await client.post(identity, `/api/bes/v1/jobs/${run.jobId}/result`, successResult(now));
  assert.deepEqual([dup.status, await dup.json()], [200, { applied: false }]);
  const ended = (await kv.get<Run>(["runs", run.id])).value!;
  assert.equal(ended.status, "success");
  const stillOpen = (await Array.fromAsync(kv.list<string>({ prefix: ["runs_open"] }))).map((e) => e.value);
  assert.ok(!stillOpen.includes(run.id), "its open-run entry is gone");
  assert.equal(stillOpen.length, 2, "the other hosts' synthetic fulls are still open");
  // Posting it once more changes nothing (applyJobOutcome is idempotent).
  await client.post(identity, `/api/bes/v1/jobs/${run.jobId}/result`, successResult(now));
  assert.deepEqual((await kv.get<Run>(["runs", run.id])).value, ended);
});

Deno.test("a run left open after its job finished does not block run-now, and is brought up to its job", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  const [h1, h2] = f.hosts;
  const [done] = await runPolicyNow(kv, system, f.policy.id, { kind: "full", hostIds: [h1.id] }, now);
  const [expired] = await runPolicyNow(kv, system, f.policy.id, { kind: "full", hostIds: [h2.id] }, now);
  // h1: the result was recorded, the process stopped before the run was updated.
  await claimJobs(kv, `agent:${h1.id}`, 5, now);
  await applyResult(kv, `agent:${h1.id}`, done.run.jobId!, successResult(now), now);
  // h2: the lease sweep failed the job after its last attempt, the process stopped before failing the run.
  const job = (await getJob(kv, expired.run.jobId!))!;
  await kv.set(["jobs", job.id], { ...job, status: "failed", failureReason: "LEASE_EXPIRED" });
  // A job still in flight keeps blocking (h3).
  const [inFlight] = await runPolicyNow(
    kv,
    system,
    f.policy.id,
    { kind: "full", hostIds: [f.hosts[2].id] },
    now,
  );
  await refusedWith(
    kv,
    f.policy.id,
    { kind: "full", hostIds: [f.hosts[2].id] },
    now,
    /already pending on h3/,
  );

  const again = await runPolicyNow(
    kv,
    system,
    f.policy.id,
    { kind: "incremental", hostIds: [h1.id, h2.id] },
    now,
  );
  assert.equal(again.length, 2);
  assert.equal((await kv.get<Run>(["runs", done.run.id])).value!.status, "success", "h1's run caught up");
  const failed = (await kv.get<Run>(["runs", expired.run.id])).value!;
  assert.equal(failed.status, "failed", "h2's run caught up");
  assert.equal(failed.error?.reason, "LEASE_EXPIRED");
  assert.equal((await kv.get<Run>(["runs", inFlight.run.id])).value!.status, "pending");
});

/** Asserts run-now is refused (409) with `pattern`. */
async function refusedWith(
  kv: Deno.Kv,
  policyId: string,
  input: Parameters<typeof runPolicyNow>[3],
  now: Date,
  pattern: RegExp,
) {
  const error = await runPolicyNow(kv, system, policyId, input, now).catch((e) => e);
  assert.ok(error instanceof ConflictError, String(error));
  assert.match(error.message, pattern);
}

Deno.test("indexOpenRuns(): open runs without a runs_open entry (older data) are indexed once; run-now sees them", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  const [ended] = await runPolicyNow(
    kv,
    system,
    f.policy.id,
    { kind: "full", hostIds: [f.hosts[0].id] },
    now,
  );
  await finish(kv, ended.run, now);
  // Synthetic fulls of h1-h3 on the BES; h1's ends, then an incremental of h1.
  const synthetic = await runPolicyNow(kv, system, f.policy.id, { kind: "synthetic_full" }, now);
  await finish(kv, synthetic.find((c) => c.run.hostId === f.hosts[0].id)!.run, now);
  const open = await runPolicyNow(kv, system, f.policy.id, { kind: "incremental" }, now)
    .catch((e) => e);
  assert.ok(open instanceof ConflictError, "h2 and h3 are busy with their synthetic fulls");
  const incremental = await runPolicyNow(kv, system, f.policy.id, {
    kind: "incremental",
    hostIds: [f.hosts[0].id],
  }, now);
  const indexed = async () =>
    (await Array.fromAsync(kv.list<string>({ prefix: ["runs_open"] }))).map((e) => e.key);
  const expected = await indexed();
  assert.equal(expected.length, 3);
  // Data from before the index: no entries at all.
  for (const key of expected) await kv.delete(key);
  const created = await runPolicyNow(kv, system, f.policy.id, { kind: "full" }, now);
  assert.equal(created.length, 3, "without its entries run-now did not see the open runs");
  for (const c of created) await kv.delete(["runs", c.run.id]); // undo: only the old runs stay
  for (const key of await indexed()) await kv.delete(key);

  assert.deepEqual(await indexOpenRuns(kv, now), { indexed: 3, skipped: false });
  assert.deepEqual(
    (await indexed()).map(String).sort(),
    expected.map(String).sort(),
    "every open run, no ended one",
  );
  await refusedWith(
    kv,
    f.policy.id,
    { kind: "full", hostIds: [f.hosts[1].id] },
    now,
    /already running on its BES for h2/, // claimed with h1's by `finish`
  );
  await refusedWith(kv, f.policy.id, { kind: "incremental", hostIds: [f.hosts[0].id] }, now, /pending on h1/);
  await refusedWith(kv, f.policy.id, { kind: "synthetic_full" }, now, /already pending or running on h/);
  assert.equal(incremental.length + synthetic.length, 4);

  // A second call is a no-op (the marker), and a forced one (after a restore) finds nothing missing.
  const before = await kvSnapshot(kv);
  assert.deepEqual(await indexOpenRuns(kv, now), { indexed: 0, skipped: true });
  assert.equal(await kvSnapshot(kv), before);
  assert.deepEqual(await indexOpenRuns(kv, now, { force: true }), { indexed: 0, skipped: false });
  assert.deepEqual((await indexed()).map(String).sort(), expected.map(String).sort());
});
