/**
 * Restore drills in the control plane (domain/drills.ts, no engines): create with its audit entry in the
 * same write and field errors otherwise; the cron dispatch, idempotent per drill and minute, queueing a
 * `restore_drill` job on the drill's agent that gets a read token for the point's repository; outcomes
 * (pass, RTO breach alert, failure alert naming the file, resolution by the next pass, last proven
 * restore); runs whose job ended without a result; permission and organization scope; pages and forms.
 */
import assert from "node:assert/strict";
import { type Alert, readOpenAlert } from "../../domain/alerts.ts";
import { assignHost } from "../../domain/assignments.ts";
import { userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import { jobDataScope } from "../../domain/data_access.ts";
import {
  createDrill,
  deleteDrill,
  dispatchDueDrills,
  type DrillRun,
  drillRunKey,
  listDrillRuns,
  listDrills,
  provenRestores,
  requireDrill,
  requireDrillRun,
  runDrillNow,
  updateDrill,
} from "../../domain/drills.ts";
import { ForbiddenError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import { applyResult, claimJobs, expireLeases, getJob, type Job, LEASE_MS } from "../../domain/job_queue.ts";
import { createPolicy, listPolicies } from "../../domain/policies.ts";
import { lastProvenRestores } from "../../domain/proven_restores.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { enrollHost } from "../../domain/hosts.ts";
import { ROLE_PERMISSIONS } from "../../domain/types.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { systemActor } from "../../domain/rbac.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import { listRunsByPolicy } from "../../domain/runs.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { classifyKey } from "../../domain/self_backup.ts";
import { createTarget } from "../../domain/storage.ts";
import {
  addUser,
  auditEntries,
  Browser,
  createTenant,
  dumpKv,
  enrollTestHost,
  kvSnapshot,
  onlineTestEngine,
  signInAs,
  testApp,
  TestClock,
} from "../helpers.ts";

/** A tenant with two orgs, a BES, a policy of A1 with a host that has one complete restore point. */
async function world() {
  const kv = await Deno.openKv(":memory:");
  const clock = new TestClock(new Date("2026-11-22T01:00:00Z"));
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["A1", "A2"], now);
  const [a1, a2] = tenant.orgs;
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", now);
  const operatorA2 = await addUser(kv, tenant, "op-a2@acme.example", "backup_admin", [a2], now);
  const operatorA1 = await addUser(kv, tenant, "op-a1@acme.example", "operator", [a1], now);
  const restorerA1 = await addUser(kv, tenant, "restore-a1@acme.example", "backup_admin", [a1], now);
  const viewer = await addUser(kv, tenant, "viewer@acme.example", "viewer", [a1], now);
  const { engine } = await onlineTestEngine(kv, { accountId: tenant.account.id, orgId: a1.id }, now);
  const target = await createTarget(kv, systemActor("test"), {
    name: "t",
    besId: engine.id,
    type: "local",
    config: { path: "/srv/backup" },
  }, { now, masterKey: testConfig().masterKey! });
  const policy = await createPolicy(kv, systemActor("test"), {
    name: "files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, now);
  const host = await enrollTestHost(kv, { accountId: tenant.account.id, orgId: a1.id }, "web", now);
  const agent = await enrollTestHost(kv, { accountId: tenant.account.id, orgId: a1.id }, "drill", now);
  const hostA2 = await enrollTestHost(kv, { accountId: tenant.account.id, orgId: a2.id }, "other", now);
  await assignHost(kv, systemActor("test"), { policyId: policy.id, hostId: host.id }, now);
  await runSchedulerTick(kv, new Date("2026-11-22T02:00:00Z"));
  const [job] = await claimJobs(kv, `agent:${host.id}`, 1, now);
  const { job: done } = await applyResult(kv, `agent:${host.id}`, job.id, {
    status: "success",
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 1024,
    protectedBytes: 1024,
    output: {
      restorePoint: { id: "a".repeat(64), chainId: "c", type: "full", sizeBytes: 1024, fileCount: 3 },
    },
  }, now);
  await applyJobOutcome(kv, done, now);
  const [run] = await listRunsByPolicy(kv, policy.id);
  const pointId = (await kv.get<{ restorePointId: string }>(["runs", run.id])).value!.restorePointId;
  return {
    kv,
    clock,
    tenant,
    a1,
    a2,
    admin,
    operatorA2,
    operatorA1,
    restorerA1,
    viewer,
    engine,
    policy,
    host,
    agent,
    hostA2,
    pointId,
  };
}

const input = (w: Awaited<ReturnType<typeof world>>, over: Record<string, unknown> = {}) => ({
  name: "weekly",
  schedule: "0 3 * * 6",
  scopeType: "policies",
  policyIds: [w.policy.id],
  mode: "sample",
  sampleCount: 5,
  agentHostId: w.agent.id,
  scratchPath: "/var/tmp/drills",
  rtoObjectiveSeconds: 60,
  ...over,
});

/** Assigns A2's host to A1's policy and stores one restore point of it; returns the world's now. */
async function backUpHostA2(w: Awaited<ReturnType<typeof world>>): Promise<Date> {
  await assignHost(w.kv, systemActor("test"), { policyId: w.policy.id, hostId: w.hostA2.id }, w.clock.now());
  const now = w.clock.now();
  await runSchedulerTick(w.kv, new Date("2026-11-29T02:00:00Z"));
  const [job] = await claimJobs(w.kv, `agent:${w.hostA2.id}`, 1, now);
  const { job: done } = await applyResult(w.kv, `agent:${w.hostA2.id}`, job.id, {
    status: "success",
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 1,
    protectedBytes: 1,
    output: { restorePoint: { id: "b".repeat(64), chainId: "c2", type: "full", sizeBytes: 1, fileCount: 1 } },
  }, now);
  await applyJobOutcome(w.kv, done, now);
  return now;
}

/** The agent claims its drill job and posts `drill` as the result's report, then the outcome applies. */
async function answer(
  w: Awaited<ReturnType<typeof world>>,
  drill: Record<string, unknown> | null,
  status: "success" | "failed" = "success",
): Promise<Job> {
  const now = w.clock.now();
  const [job] = await claimJobs(w.kv, `agent:${w.agent.id}`, 1, now);
  assert.equal(job.kind, "restore_drill");
  const { job: done } = await applyResult(w.kv, `agent:${w.agent.id}`, job.id, {
    status,
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    ...(status === "failed" ? { error: { reason: "DRILL_FAILED", message: "1 file did not restore" } } : {}),
    output: drill ? { drill } : null,
  }, now);
  await applyJobOutcome(w.kv, done, now);
  return done;
}

const goodReport = (restoreMs: number) => ({
  files: 5,
  bytes: 5_000_000,
  verified: 5,
  restoreMs,
  failures: [],
  failureCount: 0,
  scratchRemoved: true,
});

Deno.test("create: audited in the same write; bad input is one 422 naming the field and changes nothing", async () => {
  const w = await world();
  using _kv = w.kv;
  const actor = userActor(w.admin);
  const before = await kvSnapshot(w.kv);
  for (
    const [over, field] of [
      [{ schedule: "61 * * * *" }, "schedule"],
      [{ policyIds: [] }, "policyIds"],
      [{ scratchPath: "/" }, "scratchPath"],
      [{ agentHostId: "01JBQ6Z3S8V1N2M4K5P7R9T0WY" }, "agentHostId"],
      [{ policyIds: ["01JBQ6Z3S8V1N2M4K5P7R9T0WX"] }, "policyIds"],
      [{ typo: true }, "typo"],
    ] as const
  ) {
    await assert.rejects(() => createDrill(w.kv, actor, input(w, over), w.clock.now()), (e: unknown) => {
      assert.ok(e instanceof ValidationError, String(e));
      assert.ok(field in e.fields, `${field}: ${JSON.stringify(e.fields)}`);
      return true;
    });
  }
  assert.equal(await kvSnapshot(w.kv), before, "a refused drill changes nothing");
  const drill = await createDrill(w.kv, actor, input(w), w.clock.now());
  assert.equal(drill.orgId, w.a1.id, "the drill belongs to its agent's organization");
  const audit = await auditEntries(w.kv, w.tenant.account.id);
  assert.ok(audit.some((a) => a.action === "drill.create" && a.summary.includes("weekly")));
  await assert.rejects(
    () => createDrill(w.kv, actor, input(w), w.clock.now()),
    ValidationError,
    "name taken",
  );
  const renamed = await updateDrill(
    w.kv,
    actor,
    drill.id,
    input(w, { name: "renamed", mode: "whole" }),
    w.clock.now(),
  );
  assert.equal(renamed.mode, "whole");
  await createDrill(w.kv, actor, input(w), w.clock.now()); // the old name is free again
  assert.ok((await auditEntries(w.kv, w.tenant.account.id)).some((a) => a.action === "drill.update"));
});

Deno.test("scope: other orgs neither see nor name; view-only cannot change; drills need manage on what they name", async () => {
  const w = await world();
  using _kv = w.kv;
  const drill = await createDrill(w.kv, userActor(w.admin), input(w), w.clock.now());
  const a2 = userActor(w.operatorA2);
  await assert.rejects(() => requireDrill(w.kv, a2, drill.id), NotFoundError);
  assert.deepEqual(await listDrills(w.kv, a2), []);
  await assert.rejects(() => deleteDrill(w.kv, a2, drill.id, w.clock.now()), NotFoundError);
  await assert.rejects(() => listDrillRuns(w.kv, a2, drill.id), NotFoundError);
  // An operator of A2 cannot point a drill at A1's policy or agent.
  await assert.rejects(
    () => createDrill(w.kv, a2, input(w, { agentHostId: w.hostA2.id }), w.clock.now()),
    (e: unknown) => e instanceof ValidationError && "policyIds" in e.fields,
  );
  // Restoring is what a drill does: an operator without backup.restore may read drills, not make or run them.
  const operator = userActor(w.operatorA1);
  assert.deepEqual((await listDrills(w.kv, operator)).map((d) => d.id), [drill.id]);
  await assert.rejects(
    () => createDrill(w.kv, operator, input(w, { name: "o" }), w.clock.now()),
    ForbiddenError,
  );
  await assert.rejects(() => runDrillNow(w.kv, operator, drill.id, w.clock.now()), ForbiddenError);
  await assert.rejects(
    () => updateDrill(w.kv, operator, drill.id, input(w, { name: "o" }), w.clock.now()),
    ForbiddenError,
  );
  const viewer = userActor(w.viewer);
  assert.deepEqual((await listDrills(w.kv, viewer)).map((d) => d.id), [drill.id]);
  await assert.rejects(
    () => createDrill(w.kv, viewer, input(w, { name: "v" }), w.clock.now()),
    ForbiddenError,
  );
  await assert.rejects(() => runDrillNow(w.kv, viewer, drill.id, w.clock.now()), ForbiddenError);
  await assert.rejects(() => deleteDrill(w.kv, viewer, drill.id, w.clock.now()), ForbiddenError);
});

Deno.test("dispatch: due drills start once per minute slot, on the drill's agent, with a read token for the point", async () => {
  const w = await world();
  using _kv = w.kv;
  const drill = await createDrill(w.kv, userActor(w.admin), input(w), w.clock.now());
  await createDrill(w.kv, userActor(w.admin), input(w, { name: "off", enabled: false }), w.clock.now());
  // Not due at 03:01 on Saturday, nor on Friday 03:00.
  assert.equal((await dispatchDueDrills(w.kv, new Date("2026-11-28T03:01:00Z"))).runs, 0);
  assert.equal((await dispatchDueDrills(w.kv, new Date("2026-11-27T03:00:00Z"))).runs, 0);
  // Due on Saturday 03:00: the same minute dispatched by several ticks at once starts one run.
  const at = new Date("2026-11-28T03:00:05Z");
  const results = await Promise.all(Array.from({ length: 5 }, () => dispatchDueDrills(w.kv, at)));
  assert.equal(results.reduce((n, r) => n + r.runs, 0), 1, JSON.stringify(results));
  assert.equal((await dispatchDueDrills(w.kv, new Date("2026-11-28T03:00:50Z"))).runs, 0);
  const runs = await listDrillRuns(w.kv, userActor(w.admin), drill.id);
  assert.equal(runs.length, 1);
  assert.deepEqual([runs[0].status, runs[0].restorePointId, runs[0].trigger], ["pending", w.pointId, "cron"]);
  const job = (await getJob(w.kv, runs[0].jobId!))!;
  assert.equal(job.kind, "restore_drill");
  assert.equal(job.principal, `agent:${w.agent.id}`);
  assert.equal(job.payload.scratchPath, "/var/tmp/drills");
  assert.equal(job.payload.sampleCount, 5);
  assert.equal(job.payload.engineRestorePointId, "a".repeat(64));
  const scope = await jobDataScope(w.kv, job);
  assert.equal(scope.kind, "scope");
  if (scope.kind === "scope") {
    assert.equal(scope.scope.access, "read");
    assert.equal(scope.scope.namespace, w.host.id, "the token opens the point's host's namespace");
    assert.equal(scope.scope.bes, w.engine.id);
  }
  // A week later the next slot starts a new run.
  assert.equal((await dispatchDueDrills(w.kv, new Date("2026-12-05T03:00:00Z"))).runs, 1);
});

Deno.test("outcomes: pass, RTO breach alert, failure alert naming the file, resolution, last proven restore", async () => {
  const w = await world();
  using _kv = w.kv;
  const admin = userActor(w.admin);
  const drill = await createDrill(w.kv, admin, input(w), w.clock.now());
  const subject = `${drill.id}~${w.policy.id}~${w.host.id}`;
  const proven = async () =>
    (await provenRestores(w.kv, admin, await listPolicies(w.kv, admin))).find((r) =>
      r.policy.id === w.policy.id
    )!
      .proven;
  assert.equal(await proven(), null, "never proven before a drill");

  // 1. A pass within the objective.
  const [first] = await runDrillNow(w.kv, admin, drill.id, w.clock.now());
  await answer(w, goodReport(12_500));
  let run = (await w.kv.get<DrillRun>(drillRunKey(first.id))).value!;
  assert.deepEqual(
    [run.status, run.rtoSeconds, run.bytesPerSecond, run.rtoBreached, run.scratchRemoved],
    ["passed", 12.5, 400_000, false, true],
  );
  assert.equal((await proven())?.drillRunId, first.id);
  assert.equal((await proven())?.rtoSeconds, 12.5);

  // 2. A pass slower than the objective: an RTO breach alert (warning).
  w.clock.advance(60_000);
  await runDrillNow(w.kv, admin, drill.id, w.clock.now());
  await answer(w, goodReport(90_000));
  const rto = (await readOpenAlert(w.kv, "drill", subject, "rto_breach")).alert?.value as Alert;
  assert.equal(rto?.severity, "warning");
  assert.match(rto.message, /took 90 s .* RTO objective of 60 s/);

  // 3. A failure: a critical alert naming the file; the last proven restore stays the last pass.
  w.clock.advance(60_000);
  const [third] = await runDrillNow(w.kv, admin, drill.id, w.clock.now());
  await answer(w, {
    ...goodReport(3000),
    verified: 4,
    failures: [{ path: "/srv/data/report.bin", message: "chunk 1f… damaged: authentication failed" }],
    failureCount: 1,
  }, "failed");
  run = (await w.kv.get<DrillRun>(drillRunKey(third.id))).value!;
  assert.equal(run.status, "failed");
  assert.equal(run.failures[0].path, "/srv/data/report.bin");
  const failed = (await readOpenAlert(w.kv, "drill", subject, "drill_failed")).alert?.value as Alert;
  assert.equal(failed?.severity, "critical");
  assert.ok(failed.message.includes("/srv/data/report.bin"), failed.message);
  assert.notEqual((await proven())?.drillRunId, third.id);

  // 4. The next pass within the objective resolves both alerts.
  w.clock.advance(60_000);
  const [fourth] = await runDrillNow(w.kv, admin, drill.id, w.clock.now());
  const job = await answer(w, goodReport(1000));
  assert.equal((await readOpenAlert(w.kv, "drill", subject, "drill_failed")).alert, null);
  assert.equal((await readOpenAlert(w.kv, "drill", subject, "rto_breach")).alert, null);
  assert.equal((await proven())?.drillRunId, fourth.id);
  // Applying the same outcome again changes nothing.
  const snapshot = await kvSnapshot(w.kv);
  await applyJobOutcome(w.kv, job, w.clock.now());
  assert.equal(await kvSnapshot(w.kv), snapshot);
  const trend = await listDrillRuns(w.kv, admin, drill.id);
  assert.deepEqual(trend.map((r) => r.status), ["passed", "failed", "passed", "passed"]);
  // Self-backup knows every key a drill writes (config, results, or ephemeral).
  const unclassified = (await dumpKv(w.kv)).filter((e) => classifyKey(e.key) === null).map((e) => e.key[0]);
  assert.deepEqual([...new Set(unclassified)], []);
});

Deno.test("a drill whose job ends without a result fails (lease expired), and its alert opens", async () => {
  const w = await world();
  using _kv = w.kv;
  const admin = userActor(w.admin);
  const drill = await createDrill(w.kv, admin, input(w), w.clock.now());
  const [run] = await runDrillNow(w.kv, admin, drill.id, w.clock.now());
  for (let attempt = 0; attempt < 2; attempt++) {
    await claimJobs(w.kv, `agent:${w.agent.id}`, 1, w.clock.now());
    w.clock.advance(LEASE_MS + 1000);
    await expireLeases(w.kv, w.clock.now());
  }
  assert.equal((await getJob(w.kv, run.jobId!))?.status, "failed");
  assert.equal(
    (await listDrillRuns(w.kv, admin, drill.id))[0].status,
    "failed",
    "reads reconcile with the job",
  );
  const { caughtUp } = await dispatchDueDrills(w.kv, w.clock.now());
  assert.equal(caughtUp, 1);
  const stored = (await w.kv.get<DrillRun>(drillRunKey(run.id))).value!;
  assert.equal(stored.status, "failed");
  assert.match(stored.error ?? "", /did not finish/);
  assert.ok(
    (await readOpenAlert(w.kv, "drill", `${drill.id}~${w.policy.id}~${w.host.id}`, "drill_failed")).alert,
  );
});

Deno.test("run now with nothing to restore is one clear 422; a decommissioned agent fails the run saying so", async () => {
  const w = await world();
  using _kv = w.kv;
  const admin = userActor(w.admin);
  const empty = await createDrill(
    w.kv,
    admin,
    input(w, { name: "hosts", scopeType: "hosts", hostIds: [w.agent.id] }),
    w.clock.now(),
  );
  await assert.rejects(() => runDrillNow(w.kv, admin, empty.id, w.clock.now()), ValidationError);
  const drill = await createDrill(w.kv, admin, input(w), w.clock.now());
  const op = w.kv.atomic().set(["hosts", w.agent.id], { ...w.agent, status: "decommissioned" });
  assert.ok((await op.commit()).ok);
  const [run] = await runDrillNow(w.kv, admin, drill.id, w.clock.now());
  assert.equal(run.status, "failed");
  assert.equal(run.jobId, null);
  assert.match(run.error!, /decommissioned/);
});

Deno.test("pages: list, new form, create (303), 422 with field errors, detail with trend, delete with confirmation", async () => {
  const w = await world();
  using _kv = w.kv;
  const { app } = testApp(w.kv, w.clock);
  const browser = new Browser(app);
  await signInAs(browser, w.kv, w.admin, w.clock.now());
  const form = await browser.get("/backup/drills/new");
  assert.equal(form.status, 200);
  const html = await form.text();
  assert.ok(html.includes('name="_csrf"') && html.includes(w.policy.id) && html.includes(w.agent.id), html);
  const bad = await browser.postForm(
    "/backup/drills",
    { name: "x", schedule: "nope", scopeType: "policies" },
    {
      tokenFrom: "/backup/drills/new",
    },
  );
  assert.equal(bad.status, 422);
  const badHtml = await bad.text();
  assert.ok(badHtml.includes("field--error"), "the fields are marked");
  const created = await browser.postForm("/backup/drills", {
    name: "from the form",
    schedule: "0 3 * * 6",
    scopeType: "policies",
    policyIds: w.policy.id,
    mode: "sample",
    sampleCount: "5",
    agentHostId: w.agent.id,
    scratchPath: "/var/tmp/drills",
    rtoObjectiveSeconds: "120",
    enabled: "on",
  }, { tokenFrom: "/backup/drills/new" });
  assert.equal(created.status, 303, await created.text());
  const location = created.headers.get("location")!;
  const drillId = location.split("/").pop()!;
  await runDrillNow(w.kv, userActor(w.admin), drillId, w.clock.now());
  await answer(w, goodReport(2000));
  const detail = await (await browser.get(location)).text();
  assert.ok(detail.includes("drill-trend") && detail.includes("passed") && detail.includes("2.00 s"), detail);
  const dashboard = await (await browser.get("/backup/dashboard/sections/proven")).text();
  assert.ok(dashboard.includes("proven-restores") && dashboard.includes("files"), dashboard);
  const confirm = await browser.get(`/backup/drills/${drillId}/delete`);
  assert.ok((await confirm.text()).includes("Delete drill"));
  const deleted = await browser.postForm(`/backup/drills/${drillId}/delete`, {}, {
    tokenFrom: `/backup/drills/${drillId}/delete`,
  });
  assert.equal(deleted.status, 303);
  assert.deepEqual(await listDrills(w.kv, userActor(w.admin)), []);
});

Deno.test("a drill acts within its author's org scope: a host of another org on a policy in scope is skipped", async () => {
  const w = await world();
  using _kv = w.kv;
  // An all-scope admin assigns A2's host to A1's policy, and it gets a restore point too.
  const now = await backUpHostA2(w);
  const scoped = await createDrill(w.kv, userActor(w.restorerA1), input(w, { name: "a1 only" }), now);
  assert.deepEqual(scoped.actsForOrgs, [w.a1.id]);
  const a1Runs = await runDrillNow(w.kv, userActor(w.restorerA1), scoped.id, now);
  assert.deepEqual(a1Runs.map((r) => r.hostId), [w.host.id], "A2's host is not restored for an A1 user");
  const all = await createDrill(w.kv, userActor(w.admin), input(w, { name: "all" }), now);
  const allRuns = await runDrillNow(w.kv, userActor(w.admin), all.id, now);
  assert.deepEqual(allRuns.map((r) => r.hostId).sort(), [w.host.id, w.hostA2.id].sort());
});

Deno.test("run now acts within the runner's org scope too: an A1 user running an all-scope drill restores no A2 host", async () => {
  const w = await world();
  using _kv = w.kv;
  const now = await backUpHostA2(w);
  // The admin's drill (agent in A1, so A1 users see and may run it) acts for every org.
  const all = await createDrill(w.kv, userActor(w.admin), input(w, { name: "all" }), now);
  const a1Runs = await runDrillNow(w.kv, userActor(w.restorerA1), all.id, now);
  assert.deepEqual(
    a1Runs.map((r) => r.hostId),
    [w.host.id],
    "an A1 user's run now must not restore A2's data onto the drill's agent",
  );
  const jobs = [];
  for await (const e of w.kv.list<Job>({ prefix: ["jobs"] })) {
    if (e.value.kind === "restore_drill") jobs.push(e.value);
  }
  assert.deepEqual(jobs.map((j) => j.payload.sourceHostId), [w.host.id]);
});

Deno.test("a drill run restoring another org's host is not shown to users of the drill's org only", async () => {
  const w = await world();
  using _kv = w.kv;
  const now = await backUpHostA2(w);
  // The admin's drill: its agent is in A1 (so A1 users see the drill), it restores A1's and A2's hosts.
  const all = await createDrill(w.kv, userActor(w.admin), input(w, { name: "all" }), now);
  const runs = await runDrillNow(w.kv, userActor(w.admin), all.id, now);
  const a2Run = runs.find((r) => r.hostId === w.hostA2.id)!;
  assert.ok(a2Run);
  const seenByA1 = await listDrillRuns(w.kv, userActor(w.viewer), all.id);
  assert.deepEqual(
    seenByA1.map((r) => r.hostId),
    [w.host.id],
    "A2's host, its files and failures stay out of A1",
  );
  await assert.rejects(() => requireDrillRun(w.kv, userActor(w.viewer), a2Run.id), NotFoundError);
  const seenByAdmin = await listDrillRuns(w.kv, userActor(w.admin), all.id);
  assert.equal(seenByAdmin.length, 2);
  assert.equal((await requireDrillRun(w.kv, userActor(w.operatorA2), a2Run.id)).hostId, w.hostA2.id);
});

Deno.test("a policy's own RTO objective overrides the drill's, for its runs and its breach", async () => {
  const w = await world();
  using _kv = w.kv;
  const admin = userActor(w.admin);
  await assert.rejects(
    () =>
      createDrill(
        w.kv,
        admin,
        input(w, {
          policyRtoObjectives: [{ policyId: "01JBQ6Z3S8V1N2M4K5P7R9T0WX", rtoObjectiveSeconds: 5 }],
        }),
        w.clock.now(),
      ),
    (e: unknown) => e instanceof ValidationError && "policyRtoObjectives" in e.fields,
  );
  const drill = await createDrill(
    w.kv,
    admin,
    input(w, {
      rtoObjectiveSeconds: 3600,
      policyRtoObjectives: [{ policyId: w.policy.id, rtoObjectiveSeconds: 5 }],
    }),
    w.clock.now(),
  );
  const [run] = await runDrillNow(w.kv, admin, drill.id, w.clock.now());
  assert.equal(run.rtoObjectiveSeconds, 5);
  await answer(w, goodReport(10_000));
  const ended = (await w.kv.get<DrillRun>(drillRunKey(run.id))).value!;
  assert.deepEqual([ended.status, ended.rtoSeconds, ended.rtoBreached], ["passed", 10, true]);
  const alert = await readOpenAlert(w.kv, "drill", `${drill.id}~${w.policy.id}~${w.host.id}`, "rto_breach");
  assert.match(alert.alert?.value?.message ?? "", /RTO objective of 5 s/);

  // The form sets and shows it too.
  const { app } = testApp(w.kv, w.clock);
  const browser = new Browser(app);
  await signInAs(browser, w.kv, w.admin, w.clock.now());
  const edit = await browser.get(`/backup/drills/${drill.id}/edit`);
  assert.ok((await edit.text()).includes(`name="rto_${w.policy.id}" value="5"`));
  const saved = await browser.postForm(`/backup/drills/${drill.id}/edit`, {
    name: "weekly",
    schedule: "0 3 * * 6",
    scopeType: "policies",
    policyIds: w.policy.id,
    mode: "sample",
    sampleCount: "5",
    agentHostId: w.agent.id,
    scratchPath: "/var/tmp/drills",
    rtoObjectiveSeconds: "3600",
    [`rto_${w.policy.id}`]: "30",
    enabled: "on",
  }, { tokenFrom: `/backup/drills/${drill.id}/edit` });
  assert.equal(saved.status, 303, await saved.text());
  assert.deepEqual((await requireDrill(w.kv, admin, drill.id)).policyRtoObjectives, [
    { policyId: w.policy.id, rtoObjectiveSeconds: 30 },
  ]);
});

Deno.test("a drill whose agent never picks it up fails after 6 hours, and its job is cancelled", async () => {
  const w = await world();
  using _kv = w.kv;
  const admin = userActor(w.admin);
  const drill = await createDrill(w.kv, admin, input(w), w.clock.now());
  const [run] = await runDrillNow(w.kv, admin, drill.id, w.clock.now());
  w.clock.advance(5 * 3_600_000);
  assert.equal((await dispatchDueDrills(w.kv, w.clock.now())).caughtUp, 0, "5 hours: still waiting");
  w.clock.advance(3_600_000 + 1000);
  assert.equal((await dispatchDueDrills(w.kv, w.clock.now())).caughtUp, 1);
  const stored = (await w.kv.get<DrillRun>(drillRunKey(run.id))).value!;
  assert.equal(stored.status, "failed");
  assert.match(stored.error ?? "", /did not pick the drill up within 6 hours/);
  assert.equal((await getJob(w.kv, run.jobId!))?.status, "cancelled");
  assert.deepEqual(
    await claimJobs(w.kv, `agent:${w.agent.id}`, 5, w.clock.now()),
    [],
    "nothing left to claim",
  );
});

Deno.test("deleting a drill resolves its open drill_failed and rto_breach alerts in the same write; other drills' stay open", async () => {
  const w = await world();
  using _kv = w.kv;
  const admin = userActor(w.admin);
  const drill = await createDrill(w.kv, admin, input(w), w.clock.now());
  const other = await createDrill(w.kv, admin, input(w, { name: "other" }), w.clock.now());
  const subject = (d: { id: string }) => `${d.id}~${w.policy.id}~${w.host.id}`;
  // An RTO breach, then a failure: both alerts of `drill` are open.
  await runDrillNow(w.kv, admin, drill.id, w.clock.now());
  await answer(w, goodReport(90_000));
  w.clock.advance(60_000);
  await runDrillNow(w.kv, admin, drill.id, w.clock.now());
  await answer(w, {
    ...goodReport(3000),
    failures: [{ path: "/srv/a", message: "damaged" }],
    failureCount: 1,
  }, "failed");
  // `other` fails too: its alert is not `drill`'s to resolve.
  w.clock.advance(60_000);
  await runDrillNow(w.kv, admin, other.id, w.clock.now());
  await answer(
    w,
    { ...goodReport(3000), failures: [{ path: "/srv/b", message: "x" }], failureCount: 1 },
    "failed",
  );
  const open = async (d: { id: string }, reason: "drill_failed" | "rto_breach") =>
    (await readOpenAlert(w.kv, "drill", subject(d), reason)).alert?.value ?? null;
  const failedId = (await open(drill, "drill_failed"))!.id;
  const rtoId = (await open(drill, "rto_breach"))!.id;
  assert.ok(await open(other, "drill_failed"));

  // A delete losing its race to a concurrent change of an alert resolves nothing and deletes nothing.
  let injected = false;
  const racing = new Proxy(w.kv, {
    get(target, prop) {
      if (prop === "atomic" && !injected) {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = async () => {
            if (!injected) {
              injected = true;
              const a = await target.get<Alert>(["alerts", failedId]);
              await target.set(["alerts", failedId], { ...a.value!, lastSeenAt: "2026-11-22T01:30:00.000Z" });
            }
            return await commit();
          };
          return op;
        };
      }
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  await deleteDrill(racing, admin, drill.id, w.clock.now());
  assert.ok(injected, "the race was staged");
  await assert.rejects(() => requireDrill(w.kv, admin, drill.id), NotFoundError);
  assert.equal(await open(drill, "drill_failed"), null);
  assert.equal(await open(drill, "rto_breach"), null);
  for (const id of [failedId, rtoId]) {
    const a = (await w.kv.get<Alert>(["alerts", id])).value!;
    assert.equal(a.status, "resolved", id);
    assert.equal(a.resolvedAt, w.clock.now().toISOString());
  }
  assert.ok(await open(other, "drill_failed"), "another drill's alert stays open");
  const entry = (await auditEntries(w.kv, w.tenant.account.id)).find((e) => e.action === "drill.delete")!;
  assert.match(entry.summary, /resolved its 2 open alerts/);
});

Deno.test("deleting a drill with more open alerts than one write holds resolves every one of them", async () => {
  const w = await world();
  using _kv = w.kv;
  const admin = userActor(w.admin);
  const drill = await createDrill(w.kv, admin, input(w), w.clock.now());
  const { raiseAlert } = await import("../../domain/alerts.ts");
  for (let i = 0; i < 95; i++) {
    const subjectId = `${drill.id}~policy${i}~host${i}`;
    const reason = i % 2 ? "drill_failed" : "rto_breach";
    const op = w.kv.atomic();
    raiseAlert(op, await readOpenAlert(w.kv, "drill", subjectId, reason), {
      accountId: w.tenant.account.id,
      orgId: w.a1.id,
      subjectType: "drill",
      subjectId,
      subjectName: `drill ${i}`,
      reason,
      severity: "critical",
      message: "m",
    }, w.clock.now());
    assert.ok((await op.commit()).ok);
  }
  await deleteDrill(w.kv, admin, drill.id, w.clock.now());
  const left = await Array.fromAsync(w.kv.list({ prefix: ["alerts_open", "drill"] }));
  assert.deepEqual(left, []);
  let resolved = 0;
  for await (const e of w.kv.list<Alert>({ prefix: ["alerts"] })) {
    if (e.value.status === "resolved") resolved++;
  }
  assert.equal(resolved, 95);
});

Deno.test("last proven restore: an admin's cross-org drill never shows another org's host name", async () => {
  const w = await world();
  using _kv = w.kv;
  const now = await backUpHostA2(w);
  const admin = userActor(w.admin);
  const all = await createDrill(w.kv, admin, input(w, { name: "cross-org" }), now);
  const runs = await runDrillNow(w.kv, admin, all.id, now);
  assert.equal(runs.length, 2);
  // The agent answers A1's host's job first, then A2's: A2's host is the policy's newest proof.
  await answer(w, goodReport(1000));
  w.clock.advance(1000);
  await answer(w, goodReport(1000));
  const a2Run = runs.find((r) => r.hostId === w.hostA2.id)!;
  assert.equal((await w.kv.get<DrillRun>(drillRunKey(a2Run.id))).value!.status, "passed");

  // The admin sees it whole.
  const adminCard = await lastProvenRestores(w.kv, admin, 20);
  assert.deepEqual(
    [adminCard.rows[0].proven.hostName, adminCard.rows[0].proven.hidden],
    [w.hostA2.hostname, false],
  );
  // A1's users see that the policy was proven, when and how fast — not A2's host, drill or run.
  for (const user of [w.viewer, w.operatorA1, w.restorerA1]) {
    const actor = userActor(user);
    const card = await lastProvenRestores(w.kv, actor, 20);
    assert.equal(card.rows.length, 1);
    const { proven } = card.rows[0];
    assert.equal(proven.hidden, true);
    assert.deepEqual([proven.hostId, proven.hostName, proven.drillRunId], ["", "", ""]);
    const list = await provenRestores(w.kv, actor, await listPolicies(w.kv, actor));
    assert.equal(list.find((r) => r.policy.id === w.policy.id)!.proven!.hostName, "");
    assert.ok(!JSON.stringify([card, list]).includes(w.hostA2.hostname), "A2's host name leaks to A1");
  }
  // The rendered card too.
  const { app } = testApp(w.kv, w.clock);
  const browser = new Browser(app);
  await signInAs(browser, w.kv, w.viewer, w.clock.now());
  const html = await (await browser.get("/backup/dashboard/sections/proven")).text();
  assert.ok(html.includes("proven-restores"), html);
  assert.ok(html.includes("on a host of another organization"), html);
  assert.ok(!html.includes(w.hostA2.hostname) && !html.includes(a2Run.id), html);
});

Deno.test("scratch path must suit the agent's OS: a Windows path on a Linux agent is one 422 naming scratchPath (domain, API, form)", async () => {
  const w = await world();
  using _kv = w.kv;
  const admin = userActor(w.admin);
  const before = await kvSnapshot(w.kv);
  // The world's agent reports Debian 12: a Windows path (either slash) is refused, naming the host.
  for (const scratchPath of ["C:\\drills", "c:/drills", "D:\\backup\\scratch"]) {
    await assert.rejects(
      () => createDrill(w.kv, admin, input(w, { scratchPath }), w.clock.now()),
      (e: unknown) => {
        assert.ok(e instanceof ValidationError, String(e));
        assert.match(
          e.fields.scratchPath ?? "",
          /must be a POSIX path .*drill\.acme\.example runs Debian 12/,
        );
        return true;
      },
    );
  }
  assert.equal(await kvSnapshot(w.kv), before, "a refused drill changes nothing");

  // A Windows agent takes a Windows path and refuses a POSIX one.
  const { host: win } = await enrollHost(w.kv, { accountId: w.tenant.account.id, orgId: w.a1.id }, {
    hostname: "win.acme.example",
    os: "windows 10.0.22631",
    ipAddress: "10.0.0.20",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, w.clock.now());
  await assert.rejects(
    () => createDrill(w.kv, admin, input(w, { agentHostId: win.id }), w.clock.now()),
    (e: unknown) =>
      e instanceof ValidationError &&
      /must be a Windows path .*win\.acme\.example/.test(e.fields.scratchPath ?? ""),
  );
  const onWindows = await createDrill(
    w.kv,
    admin,
    input(w, { agentHostId: win.id, scratchPath: "c:/drills" }),
    w.clock.now(),
  );
  assert.equal(onWindows.scratchPath, "C:\\drills");
  // Moving a drill to a Linux agent without changing its Windows path is refused too.
  await assert.rejects(
    () => updateDrill(w.kv, admin, onWindows.id, input(w, { scratchPath: "C:\\drills" }), w.clock.now()),
    (e: unknown) => e instanceof ValidationError && "scratchPath" in e.fields,
  );

  // The API: 422 with the error shape naming the field; the form: 422 with the field marked.
  const { app } = testApp(w.kv, w.clock);
  const { secret } = await createApiToken(w.kv, admin, {
    name: "t",
    permissions: [...ROLE_PERMISSIONS.admin],
    expiresInDays: 0,
  }, w.clock.now());
  const res = await app.request("http://localhost:8000/api/v1/drills", {
    method: "POST",
    headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
    body: JSON.stringify(input(w, { name: "api", scratchPath: "C:\\drills" })),
  });
  assert.equal(res.status, 422);
  const body = await res.json();
  assert.equal(body.error.code, "invalid", JSON.stringify(body));
  assert.match(body.error.fields.scratchPath, /must be a POSIX path/);
  const browser = new Browser(app);
  await signInAs(browser, w.kv, w.admin, w.clock.now());
  const page = await browser.postForm("/backup/drills", {
    name: "form",
    schedule: "0 3 * * 6",
    scopeType: "policies",
    policyIds: w.policy.id,
    mode: "sample",
    sampleCount: "5",
    agentHostId: w.agent.id,
    scratchPath: "C:\\drills",
    rtoObjectiveSeconds: "120",
  }, { tokenFrom: "/backup/drills/new" });
  assert.equal(page.status, 422);
  assert.match(await page.text(), /must be a POSIX path/);
});
