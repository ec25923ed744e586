import assert from "node:assert/strict";
import { assignHost, setAssignmentState } from "../../domain/assignments.ts";
import { userActor } from "../../domain/auth.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { NotFoundError, ValidationError } from "../../domain/errors.ts";
import { createHook } from "../../domain/hooks.ts";
import { applyHostHeartbeat, enrollHost, sweepHostHeartbeats } from "../../domain/hosts.ts";
import { applyResult, claimJobs, getJob } from "../../domain/job_queue.ts";
import { createPolicy, updatePolicy } from "../../domain/policies.ts";
import { checkInvariants } from "../../domain/invariants.ts";
import { createReplica } from "../../domain/replicas.ts";
import { createScript } from "../../domain/scripts.ts";
import { retryJob } from "../../domain/job_views.ts";
import type { Policy } from "../../domain/policies.ts";
import { readSummary } from "../../domain/dashboard.ts";
import { systemActor } from "../../domain/rbac.ts";
import { applyJobOutcome, applyJobResultToRun } from "../../domain/job_outcomes.ts";
import { AUTO_RETRY_DELAY_MS, AUTO_RETRY_MAX, autoRetryRuns } from "../../domain/auto_retry.ts";
import { buildBackupPayload } from "../../domain/backup_payload.ts";
import { dueKinds, firesInMinute, runSchedulerTick } from "../../domain/scheduler.ts";
import { listRuns, listRunsByPolicy } from "../../domain/runs.ts";
import { requestPrePatch } from "../../domain/prepatch.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { retryRun } from "../../domain/run_retry.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import {
  addUser,
  auditEntries,
  createTenant,
  engineMetrics,
  registerTestEngine,
  targetInput,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);
// Sunday 2026-11-29 02:00 UTC: the full schedule "0 2 * * 0" fires.
const SUNDAY_2AM = new Date("2026-11-29T02:00:00Z");
/** The tick reads per policy, or — from a threshold of due policies on — scans whole prefixes: both must agree. */
const READ_MODES = [["per-policy reads", Infinity], ["bulk reads", 1]] as const;

async function fixture(kv: Deno.Kv, account = "Acme") {
  const clock = new TestClock(new Date("2026-11-29T01:50:00Z"));
  const tenant = await createTenant(kv, account, ["Ops"], clock.now());
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, clock.now());
  await applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, clock.now());
  const target = await createTarget(kv, system, targetInput(engine.id), { now: clock.now(), masterKey });
  const policy = await createPolicy(kv, system, {
    name: "files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    incrementalSchedule: "0 2 * * *",
    exclusionTemplate: "caches",
  }, clock.now());
  const hosts = [];
  for (const name of ["h1", "h2", "h3"]) {
    const { host } = await enrollHost(kv, scope, {
      hostname: `${name}.acme.example`,
      os: "Debian 12",
      ipAddress: "10.0.0.2",
      publicKey: generateKeyPair().publicKey,
      version: "1",
    }, clock.now());
    await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, clock.now());
    await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, clock.now());
    hosts.push(host);
  }
  return { tenant, engine, target, policy, hosts, clock };
}

Deno.test("firesInMinute() and dueKinds(): the full run wins over an incremental in the same minute", () => {
  assert.equal(firesInMinute("0 2 * * 0", SUNDAY_2AM, "UTC"), true);
  assert.equal(firesInMinute("0 2 * * 0", new Date("2026-11-29T02:01:00Z"), "UTC"), false);
  assert.equal(
    firesInMinute("0 2 * * 0", new Date("2026-11-29T01:00:00Z"), "Europe/Berlin"),
    true,
    "02:00 Berlin = 01:00 UTC",
  );
  const policy = {
    fullSchedule: "0 2 * * 0",
    incrementalSchedule: "0 2 * * *",
    syntheticFullSchedule: null,
    timeZone: "UTC",
  };
  assert.deepEqual(dueKinds(policy, SUNDAY_2AM), ["full"]);
  assert.deepEqual(dueKinds(policy, new Date("2026-11-30T02:00:00Z")), ["incremental"]);
});

for (const [mode, bulkReadMinPolicies] of READ_MODES) {
  Deno.test(`runSchedulerTick() dispatches one backup job per active assignment with the full payload (${mode})`, async () => {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    await createHook(
      kv,
      system,
      { policyId: f.policy.id, type: "pre_backup", template: "mysql" },
      f.clock.now(),
    );
    await setAssignmentState(
      kv,
      system,
      (await Array.fromAsync(kv.list<string>({ prefix: ["assignments_by_policy", f.policy.id] })))[2].value,
      "paused",
      f.clock.now(),
    );
    assert.deepEqual(await runSchedulerTick(kv, new Date("2026-11-29T01:59:00Z"), { bulkReadMinPolicies }), {
      dispatched: 0,
      skipped: 0,
    });
    assert.deepEqual(
      await runSchedulerTick(kv, new Date(SUNDAY_2AM.getTime() + 20_000), { bulkReadMinPolicies }),
      {
        dispatched: 2,
        skipped: 0,
      },
    );
    const runs = await listRunsByPolicy(kv, f.policy.id);
    assert.equal(runs.length, 2);
    assert.ok(
      runs.every((r) => r.kind === "full" && r.status === "pending" && r.trigger === "schedule" && r.jobId),
    );
    const job = (await getJob(kv, runs[0].jobId!))!;
    assert.equal(job.kind, "backup");
    assert.match(job.principal, /^agent:/);
    const payload = job.payload as Record<string, unknown>;
    assert.equal(payload.runKind, "full");
    assert.deepEqual((payload.target as { id: string }).id, f.target.id);
    assert.ok((payload.excludePatterns as string[]).includes("Thumbs.db"), "the template is expanded");
    assert.equal((payload.hooks as unknown[]).length, 1);
  });
}

for (const [mode, bulkReadMinPolicies] of READ_MODES) {
  Deno.test(`runSchedulerTick() is idempotent for a minute, also when two ticks race (${mode})`, async () => {
    for (let i = 0; i < 10; i++) {
      using kv = await Deno.openKv(":memory:");
      const f = await fixture(kv);
      const results = await Promise.all([
        runSchedulerTick(kv, SUNDAY_2AM, { bulkReadMinPolicies }),
        runSchedulerTick(kv, SUNDAY_2AM, { bulkReadMinPolicies }),
      ]);
      assert.equal(results[0].dispatched + results[1].dispatched, 3, `iteration ${i}`);
      assert.deepEqual(
        await runSchedulerTick(kv, new Date(SUNDAY_2AM.getTime() + 59_000), { bulkReadMinPolicies }),
        {
          dispatched: 0,
          skipped: 0,
        },
      );
      assert.equal((await listRunsByPolicy(kv, f.policy.id)).length, 3);
    }
  });
}

for (const [mode, bulkReadMinPolicies] of READ_MODES) {
  Deno.test(`disabled or paused policies dispatch nothing; offline hosts get one skipped run linked to their alert (${mode})`, async () => {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    await updatePolicy(kv, system, f.policy.id, { ...f.policy, catchUpOnReconnect: false }, f.clock.now());
    await sweepHostHeartbeats(kv, new Date(SUNDAY_2AM.getTime() - 60_000)); // > 3 min since 01:50: all offline
    await applyHostHeartbeat(kv, f.hosts[0].id, { version: "1", metrics: engineMetrics() }, SUNDAY_2AM);
    assert.deepEqual(await runSchedulerTick(kv, SUNDAY_2AM, { bulkReadMinPolicies }), {
      dispatched: 1,
      skipped: 2,
    });
    const skipped = (await listRunsByPolicy(kv, f.policy.id)).filter((r) => r.status === "skipped");
    assert.equal(skipped.length, 2);
    for (const r of skipped) {
      assert.equal(r.error?.reason, "ENGINE_OFFLINE");
      assert.ok(r.alertId, "linked to the host's offline alert");
    }
    // Without catch-up, the host coming back online does not replay the missed window.
    await applyHostHeartbeat(kv, f.hosts[1].id, { version: "1", metrics: engineMetrics() }, SUNDAY_2AM);
    assert.deepEqual(await runSchedulerTick(kv, new Date("2026-11-29T02:05:00Z"), { bulkReadMinPolicies }), {
      dispatched: 0,
      skipped: 0,
    });
    await updatePolicy(kv, system, f.policy.id, { ...f.policy, enabled: false }, SUNDAY_2AM);
    assert.deepEqual(await runSchedulerTick(kv, new Date("2026-11-30T02:00:00Z"), { bulkReadMinPolicies }), {
      dispatched: 0,
      skipped: 0,
    });
  });
}

for (const [mode, bulkReadMinPolicies] of READ_MODES) {
  Deno.test(`catch-up on reconnect: a missed window runs once, on the newest deferred run, when the agent is back (${mode})`, async () => {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const h = f.hosts[0];
    await sweepHostHeartbeats(kv, new Date(SUNDAY_2AM.getTime() - 60_000)); // all offline
    for (const other of f.hosts.slice(1)) {
      await applyHostHeartbeat(kv, other.id, { version: "1", metrics: engineMetrics() }, SUNDAY_2AM);
    }
    assert.deepEqual(await runSchedulerTick(kv, SUNDAY_2AM, { bulkReadMinPolicies }), {
      dispatched: 2,
      skipped: 1,
    });
    // Next day's window is missed too while h stays offline (the others keep heartbeating).
    const MONDAY_2AM = new Date("2026-11-30T02:00:00Z");
    for (const other of f.hosts.slice(1)) {
      await applyHostHeartbeat(kv, other.id, { version: "1", metrics: engineMetrics() }, MONDAY_2AM);
    }
    await sweepHostHeartbeats(kv, MONDAY_2AM);
    assert.deepEqual(await runSchedulerTick(kv, MONDAY_2AM, { bulkReadMinPolicies }), {
      dispatched: 2,
      skipped: 1,
    });
    const deferred = (await listRunsByPolicy(kv, f.policy.id)).filter((r) => r.hostId === h.id);
    assert.equal(deferred.length, 2);
    for (const r of deferred) {
      assert.equal(r.status, "pending", "waits for the agent rather than failing");
      assert.equal(r.jobId, null);
      assert.equal(r.error?.reason, "ENGINE_OFFLINE");
      assert.ok(r.alertId);
    }
    // A tick while h is still offline dispatches nothing for it.
    assert.deepEqual(await runSchedulerTick(kv, new Date("2026-11-30T02:01:00Z"), { bulkReadMinPolicies }), {
      dispatched: 0,
      skipped: 0,
    });

    const BACK = new Date("2026-11-30T09:00:00Z");
    await applyHostHeartbeat(kv, h.id, { version: "1", metrics: engineMetrics() }, BACK);
    assert.deepEqual(await runSchedulerTick(kv, BACK, { bulkReadMinPolicies }), {
      dispatched: 1,
      skipped: 0,
    });
    const after = (await listRunsByPolicy(kv, f.policy.id)).filter((r) => r.hostId === h.id);
    const caught = after.filter((r) => r.trigger === "catch_up");
    assert.equal(caught.length, 1, "one catch-up run, not one per missed window");
    assert.equal(
      caught[0].scheduledFor.slice(0, 10),
      "2026-11-30",
      "the newest missed window is the one run",
    );
    assert.ok(caught[0].jobId);
    assert.equal(caught[0].error, null);
    const job = (await getJob(kv, caught[0].jobId!))!;
    assert.equal(job.principal, `agent:${h.id}`);
    assert.equal(after.filter((r) => r.status === "skipped").length, 1, "the older missed window is skipped");
    // Idempotent: the next tick does not dispatch the catch-up again.
    assert.deepEqual(await runSchedulerTick(kv, new Date("2026-11-30T09:01:00Z"), { bulkReadMinPolicies }), {
      dispatched: 0,
      skipped: 0,
    });
  });
}

for (const [mode, bulkReadMinPolicies] of READ_MODES) {
  Deno.test(`a policy too large to send fails its runs with PAYLOAD_TOO_LARGE; the tick goes on for the others (${mode})`, async () => {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const scope = { accountId: f.tenant.account.id, orgId: f.tenant.orgs[0].id };
    // Three custom hooks whose scripts grow — behind the checks' back, as a race or older data could —
    // to 31,000 two-byte characters each: together they cannot travel in one job.
    const scripts = [];
    for (let i = 0; i < 3; i++) {
      const script = await createScript(kv, system, {
        name: `big-${i}`,
        interpreter: "bash",
        body: "echo small",
        ...scope,
      }, f.clock.now());
      await createHook(
        kv,
        system,
        { policyId: f.policy.id, type: "pre_backup", scriptId: script.id },
        f.clock.now(),
      );
      scripts.push(script);
    }
    for (const script of scripts) {
      await kv.set(["scripts", script.id], { ...script, body: "é".repeat(31_000) });
    }
    const small = await createPolicy(kv, system, {
      name: "small",
      besId: f.engine.id,
      targetId: f.target.id,
      backupType: "file",
      fullSchedule: "0 2 * * 0",
    }, f.clock.now());
    const { host } = await enrollHost(kv, scope, {
      hostname: "small.acme.example",
      os: "Debian 12",
      ipAddress: "10.0.0.9",
      publicKey: generateKeyPair().publicKey,
      version: "1",
    }, f.clock.now());
    await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, f.clock.now());
    await assignHost(kv, system, { policyId: small.id, hostId: host.id }, f.clock.now());

    assert.deepEqual(await runSchedulerTick(kv, SUNDAY_2AM, { bulkReadMinPolicies }), {
      dispatched: 1,
      skipped: 3,
    });
    const [smallRun] = await listRunsByPolicy(kv, small.id);
    assert.equal(smallRun.status, "pending", "the other policy's job went out");
    const failed = await listRunsByPolicy(kv, f.policy.id);
    assert.equal(failed.length, 3);
    for (const r of failed) {
      assert.deepEqual([r.status, r.error?.reason, r.retryable, r.jobId], [
        "failed",
        "PAYLOAD_TOO_LARGE",
        false,
        null,
      ]);
      assert.match(
        r.errorLine ?? "",
        /Policy files needs \d+ KB to send with a backup job, more than the 60 KB/,
      );
    }
    assert.equal(
      (await Array.fromAsync(kv.list({ prefix: ["jobs"] }))).length,
      1,
      "no job for the big policy",
    );
    const admin = await addUser(kv, f.tenant, "big@acme.example", "admin", "all", SUNDAY_2AM);
    const summary = await readSummary(kv, userActor(admin), SUNDAY_2AM);
    assert.equal(summary.atRisk, 3, "its objects are at risk, as after any failed backup");
    assert.equal(
      (await Array.fromAsync(kv.list<{ reason: string }>({ prefix: ["alerts"] })))
        .filter((a) => a.value.reason === "backup_failed").length,
      3,
    );
    assert.deepEqual(await checkInvariants(kv), [], "counters equal what they count");
    // The failed runs are not retryable (retrying cannot help), and every other dispatch of the policy
    // (retry, catch-up, pre-patch) gets the same clear error from the one payload builder.
    await assert.rejects(retryJob(kv, system, f.policy.id, SUNDAY_2AM), /not marked retryable/);
    await assert.rejects(
      buildBackupPayload(
        kv,
        (await kv.get<Policy>(["policies", f.policy.id])).value!,
        f.engine,
        f.target,
        "full",
      ),
      (e) => e instanceof ValidationError && /more than the 60 KB a job can carry/.test(e.message),
    );
  });
}

Deno.test("a minute no tick evaluated (a skipped cron run, a restart) is dispatched by the next tick, once, up to 10 minutes back", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await updatePolicy(kv, system, f.policy.id, {
    ...f.policy,
    fullSchedule: "0 2 * * 0",
    incrementalSchedule: "*/5 * * * *",
  }, f.clock.now());
  const at = (hhmm: string) => new Date(`2026-11-30T${hhmm}:00Z`);
  // Monday 01:59 is evaluated; then no tick runs at 02:00 (the previous run overran) nor until 02:03.
  assert.deepEqual(await runSchedulerTick(kv, at("01:59")), { dispatched: 0, skipped: 0 });
  assert.deepEqual(
    await runSchedulerTick(kv, at("02:03")),
    { dispatched: 3, skipped: 0 },
    "02:00 for 3 hosts",
  );
  const runs = await listRunsByPolicy(kv, f.policy.id);
  assert.deepEqual(
    [...new Set(runs.map((r) => `${r.kind} ${r.scheduledFor} ${r.trigger}`))],
    ["incremental 2026-11-30T02:00:00.000Z schedule"],
    "scheduled for its own minute",
  );
  // Evaluating again (also a late tick for a minute already covered) adds nothing.
  assert.deepEqual(await runSchedulerTick(kv, at("02:04")), { dispatched: 0, skipped: 0 });
  assert.deepEqual(await runSchedulerTick(kv, at("02:03")), { dispatched: 0, skipped: 0 });
  // Down from 02:05 to 02:30: 02:05 … 02:15 are older than 10 minutes and not replayed; 02:20, 02:25 and
  // 02:30 are dispatched once each.
  assert.deepEqual(await runSchedulerTick(kv, at("02:30")), { dispatched: 9, skipped: 0 });
  const minutes = [
    ...new Set((await listRunsByPolicy(kv, f.policy.id)).map((r) => r.scheduledFor.slice(11, 16))),
  ]
    .sort();
  assert.deepEqual(minutes, ["02:00", "02:20", "02:25", "02:30"]);
});

Deno.test("pre-patch: an agent's request queues a high-priority incremental only for policies that opt in", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const h = f.hosts[0];
  assert.deepEqual(await requestPrePatch(kv, h.id, SUNDAY_2AM), [], "prePatchBackup is off by default");
  await updatePolicy(kv, system, f.policy.id, { ...f.policy, prePatchBackup: true }, SUNDAY_2AM);
  const runs = await requestPrePatch(kv, h.id, SUNDAY_2AM);
  assert.equal(runs.length, 1);
  assert.equal(runs[0].trigger, "pre_patch");
  assert.equal(runs[0].kind, "incremental");
  assert.equal(runs[0].hostId, h.id);
  const job = (await getJob(kv, runs[0].jobId!))!;
  assert.equal(job.priority, "high");
  assert.equal(job.principal, `agent:${h.id}`);
  await updatePolicy(
    kv,
    system,
    f.policy.id,
    { ...f.policy, prePatchBackup: true, enabled: false },
    SUNDAY_2AM,
  );
  assert.deepEqual(
    await requestPrePatch(kv, h.id, SUNDAY_2AM),
    [],
    "a disabled policy takes no pre-patch backup",
  );
});

Deno.test("a failed result keeps the first error line and the hook output with its run; oversized hook output is refused", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await runSchedulerTick(kv, SUNDAY_2AM);
  const [run] = await listRunsByPolicy(kv, f.policy.id);
  const job = (await getJob(kv, run.jobId!))!;
  await claimJobs(kv, job.principal, 1, SUNDAY_2AM);
  const result = {
    status: "failed" as const,
    startedAt: "2026-11-29T02:00:05Z",
    endedAt: "2026-11-29T02:00:40Z",
    bytesTransferred: 0,
    protectedBytes: 0,
    error: {
      reason: "HOOK_FAILED",
      message: "\n  pre_backup hook exited with 2  \nstack line 1\nstack line 2",
    },
    retryable: true,
    hookOutput: [{ hookId: "h1", type: "pre_backup", exitCode: 2, output: "x".repeat(4001) }],
  };
  await assert.rejects(() => applyResult(kv, job.principal, job.id, result, SUNDAY_2AM));
  assert.equal((await getJob(kv, job.id))!.status, "leased", "a refused result changes nothing");
  const hookOutput = [{
    hookId: "h1",
    type: "pre_backup",
    exitCode: 2,
    output: "quiescing\nerror: lock timeout",
  }];
  const { job: done } = await applyResult(kv, job.principal, job.id, { ...result, hookOutput }, SUNDAY_2AM);
  await applyJobOutcome(kv, done, SUNDAY_2AM);
  const after = (await listRunsByPolicy(kv, f.policy.id)).find((r) => r.id === run.id)!;
  assert.equal(after.status, "failed");
  assert.equal(after.errorLine, "pre_backup hook exited with 2");
  assert.deepEqual(after.hookOutput, hookOutput);
  assert.equal(after.error?.message, result.error.message, "the whole message is kept too");
});

Deno.test("a backup result finishes its run and creates the restore point", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await runSchedulerTick(kv, SUNDAY_2AM);
  const [run] = await listRunsByPolicy(kv, f.policy.id);
  const job = (await getJob(kv, run.jobId!))!;
  await claimJobs(kv, job.principal, 1, SUNDAY_2AM);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "success",
    startedAt: "2026-11-29T02:00:05Z",
    endedAt: "2026-11-29T02:10:00Z",
    bytesTransferred: 4096,
    protectedBytes: 10_000,
    output: {
      restorePoint: {
        id: "rp-1",
        chainId: "chain-1",
        type: "full",
        parentId: null,
        sizeBytes: 4096,
        fileCount: 12,
        completedAt: "2026-11-29T02:10:00Z",
      },
    },
  }, SUNDAY_2AM);
  const finished = (await applyJobResultToRun(kv, done, SUNDAY_2AM))!;
  assert.equal(finished.status, "success");
  assert.equal(finished.bytesTransferred, 4096);
  const point = (await kv.get<RestorePoint>(["restore_points", finished.restorePointId!])).value!;
  assert.deepEqual([point.chainId, point.type, point.fileCount, point.status, point.verification], [
    "chain-1",
    "full",
    12,
    "complete",
    "pending",
  ]);
  assert.equal(point.hostId, run.hostId);
  assert.deepEqual(
    await applyJobResultToRun(kv, done, SUNDAY_2AM),
    finished,
    "applying again changes nothing",
  );
});

Deno.test("invariant 5 under races: two retries of a failed run create exactly one run, which is not retryable", async () => {
  for (let i = 0; i < 20; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    await runSchedulerTick(kv, SUNDAY_2AM);
    const run = (await listRunsByPolicy(kv, f.policy.id)).find((r) => r.hostId === f.hosts[0].id)!;
    const job = (await getJob(kv, run.jobId!))!;
    await claimJobs(kv, job.principal, 1, SUNDAY_2AM);
    const { job: done } = await applyResult(kv, job.principal, job.id, {
      status: "failed",
      startedAt: "2026-11-29T02:00:05Z",
      endedAt: "2026-11-29T02:01:00Z",
      bytesTransferred: 0,
      protectedBytes: 0,
      error: { reason: "TARGET_UNREACHABLE", message: "NAS did not answer" },
      retryable: true,
    }, SUNDAY_2AM);
    await applyJobResultToRun(kv, done, SUNDAY_2AM);
    const outcomes = await Promise.allSettled([
      retryRun(kv, system, run.id, SUNDAY_2AM),
      retryRun(kv, system, run.id, SUNDAY_2AM),
    ]);
    assert.equal(outcomes.filter((o) => o.status === "fulfilled").length, 1, `iteration ${i}`);
    const runs = (await listRunsByPolicy(kv, f.policy.id)).filter((r) => r.hostId === f.hosts[0].id);
    assert.equal(runs.length, 2, "the failed run and exactly one retry");
    const retry = runs.find((r) => r.trigger === "retry")!;
    assert.equal(retry.retryable, false);
    assert.equal((await getJob(kv, retry.jobId!))!.kind, "backup", "the retry's job is queued");
    const retries = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "run.retry");
    assert.equal(retries.length, 1, "one audit entry, written with the one retry");
    await assert.rejects(
      () => retryRun(kv, system, retry.id, SUNDAY_2AM),
      /failed or warning|latest/,
      "a pending retry cannot be retried",
    );
  }
});

Deno.test("retryRun() refuses a successful, a non-retryable, or an older run", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await runSchedulerTick(kv, SUNDAY_2AM);
  const [run] = await listRunsByPolicy(kv, f.policy.id);
  await assert.rejects(() => retryRun(kv, system, run.id, SUNDAY_2AM), /failed or warning/);
  const job = (await getJob(kv, run.jobId!))!;
  await claimJobs(kv, job.principal, 1, SUNDAY_2AM);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "failed",
    startedAt: "2026-11-29T02:00:05Z",
    endedAt: "2026-11-29T02:01:00Z",
    bytesTransferred: 0,
    protectedBytes: 0,
    error: { reason: "AUTH", message: "bad credentials" },
    retryable: false,
  }, SUNDAY_2AM);
  await applyJobResultToRun(kv, done, SUNDAY_2AM);
  await assert.rejects(() => retryRun(kv, system, run.id, SUNDAY_2AM), /not retryable/);
  await runSchedulerTick(kv, new Date("2026-11-30T02:00:00Z"));
  await assert.rejects(() => retryRun(kv, system, run.id, SUNDAY_2AM), /latest/);
});

Deno.test("a full backup queues a verify job and a replicate job per applying rule; their results land on the point", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const second = await createTarget(kv, system, { ...targetInput(f.engine.id), name: "copy" }, {
    now: f.clock.now(),
    masterKey,
  });
  const third = await createTarget(kv, system, { ...targetInput(f.engine.id), name: "incr-only" }, {
    now: f.clock.now(),
    masterKey,
  });
  const fullRule = await createReplica(
    kv,
    system,
    { policyId: f.policy.id, targetId: second.id },
    f.clock.now(),
  );
  await createReplica(kv, system, {
    policyId: f.policy.id,
    targetId: third.id,
    replicateAfterFull: false,
    replicateAfterIncremental: true,
  }, f.clock.now());
  await runSchedulerTick(kv, SUNDAY_2AM);
  const run = (await listRunsByPolicy(kv, f.policy.id))[0];
  const job = (await getJob(kv, run.jobId!))!;
  await claimJobs(kv, job.principal, 1, SUNDAY_2AM);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "success",
    startedAt: "2026-11-29T02:00:05Z",
    endedAt: "2026-11-29T02:10:00Z",
    bytesTransferred: 10,
    protectedBytes: 10,
    output: {
      restorePoint: {
        id: "rp",
        chainId: "c",
        type: "full",
        parentId: null,
        sizeBytes: 10,
        fileCount: 1,
        completedAt: "2026-11-29T02:10:00Z",
      },
    },
  }, SUNDAY_2AM);
  await applyJobOutcome(kv, done, SUNDAY_2AM);
  await applyJobOutcome(kv, done, SUNDAY_2AM); // idempotent: no second set of follow-ups
  const besJobs = await claimJobs(kv, `bes:${f.engine.id}`, 50, SUNDAY_2AM);
  assert.deepEqual(
    besJobs.map((j) => j.kind).sort(),
    ["replicate", "verify"],
    "verify + one replicate (the incremental-only rule does not apply)",
  );
  const verify = besJobs.find((j) => j.kind === "verify")!;
  assert.equal(verify.payload.sampleCount, f.policy.verifySampleCount);
  const replicate = besJobs.find((j) => j.kind === "replicate")!;
  assert.equal(replicate.payload.ruleId, fullRule.id);
  const pointId = (await getRun(kv, run.id)).restorePointId!;
  const { job: verified } = await applyResult(kv, verify.principal, verify.id, {
    status: "warning",
    startedAt: "2026-11-29T02:11:00Z",
    endedAt: "2026-11-29T02:12:00Z",
    bytesTransferred: 0,
    protectedBytes: 0,
    error: { reason: "PARTIAL_FILES", message: "2 of 50 sampled files differ" },
    output: { verification: { status: "partial", sampled: 50, failedCount: 2, details: "" } },
  }, SUNDAY_2AM);
  await applyJobOutcome(kv, verified, SUNDAY_2AM);
  assert.equal((await kv.get<RestorePoint>(["restore_points", pointId])).value!.verification, "partial");
  const { job: copied } = await applyResult(kv, replicate.principal, replicate.id, {
    status: "success",
    startedAt: "2026-11-29T02:11:00Z",
    endedAt: "2026-11-29T02:15:00Z",
    bytesTransferred: 10,
    protectedBytes: 10,
    output: { replication: { restorePointId: pointId, targetId: second.id, bytes: 10 } },
  }, SUNDAY_2AM);
  await applyJobOutcome(kv, copied, SUNDAY_2AM);
  const record = (await kv.get<{ status: string; bytes: number }>(["replications", pointId, fullRule.id]))
    .value!;
  assert.deepEqual([record.status, record.bytes], ["succeeded", 10]);
});

async function getRun(kv: Deno.Kv, id: string) {
  return (await kv.get<Awaited<ReturnType<typeof listRunsByPolicy>>[number]>(["runs", id])).value!;
}

async function failLatest(kv: Deno.Kv, policyId: string, hostId: string, at: Date, retryable = true) {
  const run = (await listRunsByPolicy(kv, policyId)).find((r) => r.hostId === hostId)!;
  const job = (await getJob(kv, run.jobId!))!;
  await claimJobs(kv, job.principal, 10, at);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "failed",
    startedAt: at.toISOString(),
    endedAt: at.toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    error: { reason: "TARGET_UNREACHABLE", message: "no answer" },
    retryable,
  }, at);
  await applyJobOutcome(kv, done, at);
  return run;
}

Deno.test("autoRetryRuns() retries each failed retryable latest run once, never a retry, and within the daily budget", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const host = f.hosts[0].id;
  await runSchedulerTick(kv, SUNDAY_2AM);
  await failLatest(kv, f.policy.id, host, SUNDAY_2AM);
  await failLatest(kv, f.policy.id, f.hosts[1].id, SUNDAY_2AM, false); // not retryable: never retried
  const due = new Date(SUNDAY_2AM.getTime() + AUTO_RETRY_DELAY_MS);
  assert.deepEqual(
    await autoRetryRuns(kv, new Date(due.getTime() - 1)),
    { retried: 0, skipped: 0 },
    "a failure waits AUTO_RETRY_DELAY_MS before its automatic retry",
  );
  assert.deepEqual(await autoRetryRuns(kv, due), { retried: 1, skipped: 0 });
  assert.deepEqual(await autoRetryRuns(kv, due), { retried: 0, skipped: 0 }, "idempotent");
  const runs = (await listRunsByPolicy(kv, f.policy.id)).filter((r) => r.hostId === host);
  assert.equal(runs.length, 2);
  assert.equal(runs[0].trigger, "retry");
  // The retry fails too: retry runs are not retryable, so nothing cascades.
  await failLatest(kv, f.policy.id, host, due);
  assert.deepEqual(await autoRetryRuns(kv, new Date(due.getTime() + AUTO_RETRY_DELAY_MS)), {
    retried: 0,
    skipped: 0,
  });
  assert.equal((await listRunsByPolicy(kv, f.policy.id)).filter((r) => r.hostId === host).length, 2);
  // Later scheduled runs keep failing: at most AUTO_RETRY_MAX automatic retries that day.
  let retried = 1;
  for (let hour = 3; hour < 9; hour++) {
    const at = new Date(`2026-11-29T0${hour}:00:00Z`);
    await updatePolicy(kv, system, f.policy.id, {
      ...f.policy,
      fullSchedule: `0 ${hour} * * 0`,
      incrementalSchedule: null,
    }, at);
    await runSchedulerTick(kv, at);
    await failLatest(kv, f.policy.id, host, at);
    retried += (await autoRetryRuns(kv, new Date(at.getTime() + AUTO_RETRY_DELAY_MS))).retried;
    const latest = (await listRunsByPolicy(kv, f.policy.id)).find((r) => r.hostId === host)!;
    if (latest.trigger === "retry") await failLatest(kv, f.policy.id, host, at);
  }
  assert.equal(retried, AUTO_RETRY_MAX, "the daily budget caps automatic retries");
});

Deno.test("listRuns() filters by failure reason, status and policy, pages with a cursor, and keeps to the actor's scope", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await updatePolicy(kv, system, f.policy.id, { ...f.policy, catchUpOnReconnect: false }, f.clock.now());
  await sweepHostHeartbeats(kv, new Date(SUNDAY_2AM.getTime() - 60_000)); // all offline
  await applyHostHeartbeat(kv, f.hosts[0].id, { version: "1", metrics: engineMetrics() }, SUNDAY_2AM);
  await runSchedulerTick(kv, SUNDAY_2AM); // 1 pending (h1), 2 skipped ENGINE_OFFLINE
  const other = await fixture(kv, "Other"); // another account, everything online: 3 pending runs
  await runSchedulerTick(kv, SUNDAY_2AM);

  const admin = await addUser(kv, f.tenant, "a@acme.example", "admin", "all", SUNDAY_2AM);
  const actor = userActor(admin);
  const all = await listRuns(kv, actor, {}, { limit: 50 });
  assert.equal(all.values.length, 3, "only this account's runs");
  assert.ok(all.values.every((r) => r.accountId === f.tenant.account.id));
  assert.equal(all.cursor, "");
  const offline = await listRuns(kv, actor, { reason: "ENGINE_OFFLINE" }, { limit: 50 });
  assert.deepEqual(offline.values.map((r) => r.status), ["skipped", "skipped"]);
  assert.equal((await listRuns(kv, actor, { status: "pending" }, { limit: 50 })).values.length, 1);
  assert.equal((await listRuns(kv, actor, { reason: "TARGET_FULL" }, { limit: 50 })).values.length, 0);

  // Pages of one, newest first, through the policy index too; every run exactly once.
  for (const filter of [{}, { policyId: f.policy.id }]) {
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await listRuns(kv, actor, filter, { cursor, limit: 1 });
      seen.push(...page.values.map((r) => r.id));
      cursor = page.cursor || undefined;
    } while (cursor);
    assert.deepEqual(seen, all.values.map((r) => r.id));
  }
  // Another account's policy is not found, not forbidden.
  await assert.rejects(
    () => listRuns(kv, actor, { policyId: other.policy.id }, { limit: 10 }),
    NotFoundError,
  );
});

for (const [mode, bulkReadMinPolicies] of READ_MODES) {
  Deno.test(`a tick larger than one write batch and one slot batch dispatches every job once, each with its run; racing ticks add nothing (${mode})`, async () => {
    for (let iteration = 0; iteration < 3; iteration++) {
      using kv = await Deno.openKv(":memory:");
      const f = await fixture(kv);
      const scope = { accountId: f.tenant.account.id, orgId: f.tenant.orgs[0].id };
      for (let p = 0; p < 110; p++) {
        const policy = await createPolicy(kv, system, {
          name: `files-${p}`,
          besId: f.engine.id,
          targetId: f.target.id,
          backupType: "file",
          fullSchedule: "0 2 * * 0",
        }, f.clock.now());
        for (let h = 0; h < 1; h++) {
          const { host } = await enrollHost(kv, scope, {
            hostname: `p${p}-h${h}.acme.example`,
            os: "Debian 12",
            ipAddress: "10.0.1.2",
            publicKey: generateKeyPair().publicKey,
            version: "1",
          }, f.clock.now());
          await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, f.clock.now());
          await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, f.clock.now());
        }
      }
      const results = await Promise.all([
        runSchedulerTick(kv, SUNDAY_2AM, { bulkReadMinPolicies }),
        runSchedulerTick(kv, SUNDAY_2AM, { bulkReadMinPolicies }),
      ]);
      assert.equal(
        results[0].dispatched + results[1].dispatched,
        113,
        "3 hosts of the first policy + 110 policies × 1 host (two slot batches), once",
      );
      const jobs = await Array.fromAsync(kv.list<{ id: string; principal: string }>({ prefix: ["jobs"] }));
      assert.equal(jobs.length, 113);
      assert.equal(new Set(jobs.map((j) => j.value.principal)).size, 113, "one job per host");
      for (const j of jobs) {
        const runId = (await kv.get<string>(["runs_by_job", j.value.id])).value;
        assert.ok(runId, `job ${j.value.id} has its run`);
        assert.equal((await kv.get<{ jobId: string }>(["runs", runId])).value?.jobId, j.value.id);
      }
      assert.equal(await countQueuedAll(kv), 113);
    }
  });
}

async function countQueuedAll(kv: Deno.Kv): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix: ["job_queue"] })) n++;
  return n;
}
