/**
 * Third-party platforms end to end against fake Veeam and Cohesity servers on loopback: registration
 * (password only in the vault), sync of jobs, runs and objects with source = the platform, idempotence
 * and incremental reads, a sync that fails part-way, bad endpoints and credentials, the platform retry
 * (pending run → next sync starts the job → later sync updates the run), the Jobs view, protected
 * objects and dashboard counts, deletion, the minute tick, and permissions.
 */
import assert from "node:assert/strict";
import { userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import { readLast24h, readSummary } from "../../domain/dashboard.ts";
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import { checkInvariants } from "../../domain/invariants.ts";
import { getJob, listJobRuns, listJobs, parseJobFilter, retryJob } from "../../domain/job_views.ts";
import {
  createPlatform,
  deletePlatform,
  getPlatform,
  listPlatformJobs,
  type PlatformCreateInput,
  type PlatformRun,
  updatePlatform,
} from "../../domain/platforms.ts";
import { syncDuePlatforms, syncPlatform } from "../../domain/platform_sync.ts";
import type { VendorJob } from "../../domain/connectors/types.ts";
import { VeeamConnector } from "../../domain/connectors/veeam.ts";
import { listProtectedObjects, type ProtectedObject, sweepRpoBreaches } from "../../domain/protected.ts";
import { type Actor, systemActor } from "../../domain/rbac.ts";
import { classifyKey } from "../../domain/self_backup.ts";
import { AUTO_RETRY_DELAY_MS } from "../../domain/auto_retry.ts";
import type { Run } from "../../domain/runs.ts";
import { autoRetry } from "../../jobs/auto_retry.ts";
import type { User } from "../../domain/types.ts";
import {
  COHESITY_PASSWORD,
  COHESITY_USER,
  type FakeCohesity,
  startFakeCohesity,
} from "../fakes/cohesity_server.ts";
import { makeTestCertificates } from "../fakes/fake_http.ts";
import {
  type FakeVeeam,
  fillSampleVeeam,
  startFakeVeeam,
  VEEAM_PASSWORD,
  VEEAM_USER,
} from "../fakes/veeam_server.ts";
import {
  addUser,
  auditEntries,
  Browser,
  createTenant,
  dumpKv,
  freePort,
  signInAs,
  type Tenant,
  testApp,
  TestClock,
} from "../helpers.ts";

const masterKey = testConfig().masterKey!;
const NOW = new Date("2026-11-22T10:00:00Z");
const noSleep = () => Promise.resolve();

interface World {
  tenant: Tenant;
  other: Tenant;
  admin: User;
  operator: User;
  viewer: User;
  a2Admin: User;
  outsider: User;
}

async function world(kv: Deno.Kv): Promise<World> {
  const tenant = await createTenant(kv, "Acme", ["A1", "A2"], NOW);
  const other = await createTenant(kv, "Other", ["B1"], NOW);
  const [a1, a2] = tenant.orgs;
  return {
    tenant,
    other,
    admin: await addUser(kv, tenant, "admin@acme.example", "admin", "all", NOW),
    operator: await addUser(kv, tenant, "operator@acme.example", "operator", [a1], NOW),
    viewer: await addUser(kv, tenant, "viewer@acme.example", "viewer", [a1], NOW),
    a2Admin: await addUser(kv, tenant, "a2@acme.example", "admin", [a2], NOW),
    outsider: await addUser(kv, other, "admin@other.example", "admin", "all", NOW),
  };
}

/** A VBR server with three jobs (VM, Linux agent, SQL log), four objects and four sessions. */
function fillVeeam(fake: FakeVeeam) {
  fillSampleVeeam(fake);
  fake.addSession("j-vm", "2026-11-21T01:00:00Z", "Success", { id: "s-vm-1" });
  fake.addSession("j-vm", "2026-11-22T01:00:00Z", "Success", { id: "s-vm-2" });
  fake.addSession("j-agent", "2026-11-22T02:00:00Z", "Failed", {
    id: "s-agent-1",
    message: "Disk full on repo",
  });
  fake.addSession("j-log", "2026-11-22T09:30:00Z", null, { id: "s-log-1" });
}

function veeamInput(
  fake: FakeVeeam,
  orgId: string,
  overrides: Partial<PlatformCreateInput> = {},
): PlatformCreateInput {
  return {
    type: "veeam",
    name: "VBR Paris",
    orgId,
    endpointUrl: fake.url,
    username: VEEAM_USER,
    password: VEEAM_PASSWORD,
    ...overrides,
  };
}

/** The common setup: the filled VBR server, the tenant world, and a platform for it in org A1. */
async function veeamPlatform(kv: Deno.Kv, fake: FakeVeeam) {
  fillVeeam(fake);
  const w = await world(kv);
  const admin = userActor(w.admin);
  const platform = await createPlatform(kv, admin, veeamInput(fake, w.tenant.orgs[0].id), {
    now: NOW,
    masterKey,
  });
  return { w, admin, platform };
}

function deps(now: Date, extra: Record<string, unknown> = {}) {
  return { masterKey, now, sleep: noSleep, pageSize: 2, ...extra };
}

/** Every entry whose prefix is part of imported data (what a second sync must not change). */
async function imported(kv: Deno.Kv) {
  const prefixes = [
    "platform_jobs",
    "platform_jobs_by_vendor",
    "platform_jobs_by_account",
    "platform_objects",
    "platform_runs",
    "platform_pending",
    "runs",
    "runs_by_policy",
    "runs_latest",
    "runs_failing",
    "run_outcomes",
    "run_daily",
    "protected_objects",
    "po_name",
    "po_by",
    "po_due",
    "po_breached",
    "po_counts",
    "alerts",
    "alerts_open",
  ];
  return (await dumpKv(kv)).filter((e) => prefixes.includes(String(e.key[0])));
}

async function runsOf(kv: Deno.Kv): Promise<PlatformRun[]> {
  const out: PlatformRun[] = [];
  for await (const e of kv.list<PlatformRun>({ prefix: ["runs"] })) out.push(e.value);
  return out;
}

async function objectsOf(
  kv: Deno.Kv,
  actor: Actor,
  platformId: string,
): Promise<Map<string, ProtectedObject>> {
  const page = await listProtectedObjects(kv, actor, { source: `platform:${platformId}`, limit: 200 }, NOW);
  return new Map(page.values.map((o) => [o.name, o]));
}

Deno.test("syncPlatform() imports Veeam jobs, runs and objects as the platform's; a second sync changes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  const { admin, platform } = await veeamPlatform(kv, fake);

  const report = await syncPlatform(kv, platform.id, deps(NOW));
  assert.equal(report.status, "success", report.error ?? "");
  assert.deepEqual(report.jobs, { created: 3, updated: 0, removed: 0 });
  assert.deepEqual(report.runs, { imported: 4, updated: 0 });
  assert.deepEqual(report.objects, { created: 4, updated: 0, unprotected: 0 });
  assert.ok(fake.calls("/api/v1/sessions").length >= 2, "sessions were read over several pages");

  const jobs = await listPlatformJobs(kv, platform.id);
  const jobId = new Map(jobs.map((j) => [j.vendorJobId, j.id]));
  const runs = await runsOf(kv);
  assert.equal(runs.length, 4);
  for (const r of runs) {
    assert.equal(r.hostId, null);
    assert.equal(r.platform.platformId, platform.id);
    assert.ok([...jobId.values()].includes(r.policyId), "a platform job is the policy of its runs");
  }
  const failed = runs.find((r) => r.platform.runId === "s-agent-1")!;
  assert.equal(failed.status, "failed");
  assert.equal(failed.error?.reason, "PLATFORM_RUN_FAILED");
  assert.equal(failed.errorLine, "Disk full on repo");
  assert.equal(failed.retryable, true);
  assert.equal(runs.find((r) => r.platform.runId === "s-log-1")!.status, "running");

  const objects = await objectsOf(kv, admin, platform.id);
  assert.deepEqual([...objects.keys()].sort(), ["db01", "sql01", "web01", "web02"]);
  const web01 = objects.get("web01")!;
  assert.equal(web01.type, "vm");
  assert.deepEqual(web01.source, {
    kind: "platform",
    platformId: platform.id,
    platformType: "veeam",
    vendorObjectId: "vm-web01",
    vendorType: "VM (VMware)",
  });
  assert.equal(web01.hostId, `platform:${platform.id}`);
  assert.equal(web01.rpoHours, 24);
  assert.equal(web01.lastBackupStatus, "success");
  assert.equal(web01.lastSuccessAt, "2026-11-22T01:20:00.000Z");
  assert.equal(objects.get("db01")!.type, "physical");
  assert.equal(objects.get("db01")!.lastBackupStatus, "failed");
  assert.equal(objects.get("sql01")!.lastBackupStatus, "never", "its only session is still running");

  assert.deepEqual(await readSummary(kv, admin, NOW), {
    protected: 4,
    atRisk: 1,
    rpoBreach: 0,
    unprotectedHosts: 0,
  });
  assert.deepEqual(await readLast24h(kv, admin, NOW), { success: 1, failed: 1, warning: 0 });
  assert.deepEqual(await checkInvariants(kv), []);
  const unclassified = (await dumpKv(kv)).filter((e) => classifyKey(e.key) === null).map((e) => e.key[0]);
  assert.deepEqual(unclassified, [], "self-backup knows every key a sync writes");

  const before = await imported(kv);
  const later = new Date(NOW.getTime() + 3_600_000);
  const again = await syncPlatform(kv, platform.id, deps(later));
  assert.equal(again.status, "success");
  assert.deepEqual([again.jobs, again.runs, again.objects], [
    { created: 0, updated: 0, removed: 0 },
    { imported: 0, updated: 0 },
    { created: 0, updated: 0, unprotected: 0 },
  ]);
  assert.deepEqual(await imported(kv), before, "a second sync changes nothing");
  const sessionCalls = fake.calls("/api/v1/sessions");
  assert.equal(
    sessionCalls[sessionCalls.length - 1].query.get("createdAfterFilter"),
    "2026-11-22T08:30:00.000Z",
    "incremental: from the oldest run still in flight (09:30) or the watermark minus an hour",
  );
  assert.equal((await getPlatform(kv, platform.id))!.lastSuccessAt, later.toISOString());
});

Deno.test("a run that finishes on the platform is updated by the next sync and counted once", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  const { admin, platform } = await veeamPlatform(kv, fake);
  await syncPlatform(kv, platform.id, deps(NOW));
  fake.finishSession("s-log-1", "Warning", "2026-11-22T09:50:00Z", "1 database skipped");
  const t1 = new Date(NOW.getTime() + 5 * 60_000);
  const report = await syncPlatform(kv, platform.id, deps(t1));
  assert.deepEqual(report.runs, { imported: 0, updated: 1 });
  const run = (await runsOf(kv)).find((r) => r.platform.runId === "s-log-1")!;
  assert.equal(run.status, "warning");
  assert.equal(run.platform.jobType, "log");
  assert.equal(run.endedAt, "2026-11-22T09:50:00.000Z");
  assert.equal((await objectsOf(kv, admin, platform.id)).get("sql01")!.lastBackupStatus, "warning");
  assert.deepEqual(await readLast24h(kv, admin, t1), { success: 1, failed: 1, warning: 1 });
  await syncPlatform(kv, platform.id, deps(new Date(t1.getTime() + 60_000)));
  assert.deepEqual(await readLast24h(kv, admin, t1), { success: 1, failed: 1, warning: 1 }, "counted once");
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("jobs and objects the platform drops or disables: job removed, objects unprotected or paused", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  const { admin, platform } = await veeamPlatform(kv, fake);
  await syncPlatform(kv, platform.id, deps(NOW));
  fake.jobs = fake.jobs.filter((j) => j.id !== "j-agent");
  fake.backups = fake.backups.filter((b) => b.jobId !== "j-agent");
  fake.objects = fake.objects.filter((o) => o.id !== "pc-db01");
  fake.jobs.find((j) => j.id === "j-vm")!.status = "Disabled";
  const report = await syncPlatform(kv, platform.id, deps(new Date(NOW.getTime() + 60_000)));
  assert.deepEqual([report.jobs.removed, report.jobs.updated], [1, 1]);
  assert.deepEqual([report.objects.unprotected, report.objects.updated], [1, 2]);
  const objects = await objectsOf(kv, admin, platform.id);
  assert.equal(objects.get("db01")!.protection, "unprotected");
  assert.equal(objects.get("web01")!.protection, "paused");
  assert.equal(objects.get("sql01")!.protection, "active");
  assert.deepEqual(await readSummary(kv, admin, NOW), {
    protected: 1,
    atRisk: 0,
    rpoBreach: 0,
    unprotectedHosts: 0,
  });
  const agentJob = (await listPlatformJobs(kv, platform.id)).find((j) => j.vendorJobId === "j-agent")!;
  assert.equal(agentJob.removed, true);
  await assert.rejects(retryJob(kv, admin, agentJob.id, NOW), /removed from the platform/);
  assert.equal((await runsOf(kv)).filter((r) => r.policyId === agentJob.id).length, 1, "its history is kept");
  assert.deepEqual(await checkInvariants(kv), []);
  // An empty job list while jobs are imported (an account that lost its rights) removes nothing.
  fake.jobs = [];
  await syncPlatform(kv, platform.id, deps(new Date(NOW.getTime() + 120_000)));
  const after = (await getPlatform(kv, platform.id))!;
  assert.equal(after.lastSync?.status, "failed");
  assert.match(after.lastSync?.error ?? "", /listed no jobs while 2 are imported; nothing was removed/);
  assert.equal((await listPlatformJobs(kv, platform.id)).filter((j) => !j.removed).length, 2);
  assert.equal((await objectsOf(kv, admin, platform.id)).get("sql01")!.protection, "active");
});

Deno.test("a sync that fails part-way records the error, keeps what it imported and does not move the watermark", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  const { admin, platform } = await veeamPlatform(kv, fake);
  fake.faults.push({
    path: "/api/v1/backups/b-agent/objects",
    status: 500,
    body: { message: "SQL timeout" },
    times: Infinity,
  });
  const report = await syncPlatform(kv, platform.id, deps(NOW));
  assert.equal(report.status, "failed");
  assert.equal(report.stage, "objects");
  assert.match(
    report.error!,
    /Veeam GET \/api\/v1\/backups\/b-agent\/objects: server error 500 after 4 attempts \(SQL timeout\)/,
  );
  const stored = (await getPlatform(kv, platform.id))!;
  assert.equal(stored.lastSync?.status, "failed");
  assert.equal(stored.lastSync?.error, report.error);
  assert.deepEqual(stored.syncState, { watermark: null, openSince: null });
  assert.equal(stored.lastSuccessAt, null);
  assert.equal((await listPlatformJobs(kv, platform.id)).length, 3, "jobs kept");
  assert.equal((await runsOf(kv)).length, 4, "runs kept");
  assert.equal((await objectsOf(kv, admin, platform.id)).size, 0);

  fake.faults = [];
  const next = await syncPlatform(kv, platform.id, deps(new Date(NOW.getTime() + 60_000)));
  assert.equal(next.status, "success");
  assert.deepEqual(next.runs, { imported: 0, updated: 0 });
  assert.equal(next.objects.created, 4);
  assert.equal((await objectsOf(kv, admin, platform.id)).get("db01")!.lastBackupStatus, "failed");
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("bad credentials, an unreachable endpoint and a malformed response leave a clear error and change nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  fillVeeam(fake);
  const w = await world(kv);
  const admin = userActor(w.admin);
  const org = w.tenant.orgs[0].id;
  const cases: Array<[PlatformCreateInput, RegExp, () => void]> = [
    [
      veeamInput(fake, org, { name: "bad password", password: "not-the-password" }),
      /rejected the credentials of/,
      () => {},
    ],
    [
      veeamInput(fake, org, { name: "nowhere", endpointUrl: `http://127.0.0.1:${freePort()}` }),
      /cannot reach http:\/\/127\.0\.0\.1:\d+/,
      () => {},
    ],
    [
      veeamInput(fake, org, { name: "garbled" }),
      /unexpected response shape at data\.0\.name/,
      () =>
        fake.faults.push({
          path: "/api/v1/jobs/states",
          status: 200,
          body: { data: [{ id: "x" }], pagination: { total: 1, count: 1 } },
        }),
    ],
  ];
  for (const [input, message, arrange] of cases) {
    const platform = await createPlatform(kv, admin, input, { now: NOW, masterKey });
    arrange();
    const before = await imported(kv);
    const report = await syncPlatform(kv, platform.id, deps(NOW));
    assert.equal(report.status, "failed", input.name);
    assert.match(report.error!, message);
    assert.ok(!report.error!.includes(VEEAM_PASSWORD) && !report.error!.includes("not-the-password"));
    assert.deepEqual(await imported(kv), before, `${input.name}: nothing imported`);
    assert.equal((await getPlatform(kv, platform.id))!.lastSync?.error, report.error);
    await deletePlatform(kv, admin, platform.id, NOW); // one platform per server: the next case registers it anew
  }
});

Deno.test("TLS is always verified: an unknown CA fails the sync clearly, the platform's CA certificate fixes it", async (t) => {
  const certs = await makeTestCertificates();
  if (!certs) {
    await t.step({ name: "openssl is not installed", ignore: true, fn: () => {} });
    return;
  }
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam({ cert: certs.cert, key: certs.key });
  const { admin, platform } = await veeamPlatform(kv, fake);
  assert.match(platform.endpointUrl, /^https:/);
  const before = await imported(kv);
  const report = await syncPlatform(kv, platform.id, deps(NOW));
  assert.equal(report.status, "failed");
  assert.equal(report.stage, "jobs");
  assert.match(report.error!, /TLS verification failed .*UnknownIssuer/);
  assert.deepEqual(await imported(kv), before);
  await updatePlatform(kv, admin, platform.id, {
    name: platform.name,
    endpointUrl: platform.endpointUrl,
    username: platform.username,
    password: VEEAM_PASSWORD,
    caCertificate: certs.ca,
  }, { now: NOW, masterKey });
  const fixed = await syncPlatform(kv, platform.id, deps(NOW));
  assert.equal(fixed.status, "success", fixed.error ?? "");
  assert.equal(fixed.objects.created, 4);
});

Deno.test("automatic retry of platform jobs: a recent failure once, after the delay; never a warning or an old failure", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  fillVeeam(fake);
  // A warning on the VM job, and a failure of the SQL log job two days ago followed by a success.
  fake.addSession("j-vm", "2026-11-22T03:00:00Z", "Warning", { id: "s-vm-3", message: "1 file skipped" });
  fake.addSession("j-log", "2026-11-20T01:00:00Z", "Failed", { id: "s-log-0", message: "old failure" });
  const w = await world(kv);
  const platform = await createPlatform(kv, userActor(w.admin), veeamInput(fake, w.tenant.orgs[0].id), {
    now: NOW,
    masterKey,
  });
  await syncPlatform(kv, platform.id, deps(NOW));
  const agentJob = (await listPlatformJobs(kv, platform.id)).find((j) => j.vendorJobId === "j-agent")!;
  const retriesOf = async () => (await runsOf(kv)).filter((r) => r.trigger === "retry");

  const due = new Date(NOW.getTime() + AUTO_RETRY_DELAY_MS);
  assert.deepEqual(await autoRetry(kv, new Date(due.getTime() - 1)), { retried: 0, skipped: 0 }, "waits");
  assert.deepEqual(
    await autoRetry(kv, due),
    { retried: 1, skipped: 0 },
    "only the agent job's failure (08:00)",
  );
  assert.deepEqual(await autoRetry(kv, due), { retried: 0, skipped: 0 }, "idempotent");
  const [retry] = await retriesOf();
  assert.equal(retry.policyId, agentJob.id);
  assert.deepEqual([retry.status, retry.retryable, retry.platform.startRequestedAt], [
    "pending",
    false,
    null,
  ]);
  const audit = (await auditEntries(kv, w.tenant.account.id)).filter((a) => a.action === "job.retry");
  assert.equal(audit.length, 1);
  assert.match((audit[0] as { actorLabel?: string }).actorLabel ?? "", /auto-retry/);
  // The next sync starts it on the platform; when it fails too, nothing cascades (retry runs are not retryable).
  fake.now = new Date(due.getTime() + 60_000);
  assert.equal((await syncPlatform(kv, platform.id, deps(fake.now))).retries.started, 1);
  const session = fake.sessions[fake.sessions.length - 1];
  fake.finishSession(session.id, "Failed", new Date(due.getTime() + 5 * 60_000).toISOString());
  const later = new Date(due.getTime() + 10 * 60_000);
  await syncPlatform(kv, platform.id, deps(later));
  assert.equal((await kv.get<PlatformRun>(["runs", retry.id])).value?.status, "failed");
  assert.deepEqual(await autoRetry(kv, new Date(later.getTime() + AUTO_RETRY_DELAY_MS)), {
    retried: 0,
    skipped: 0,
  });
  assert.equal((await retriesOf()).length, 1);
  assert.equal(fake.calls(/\/start$/).length, 1);
});

Deno.test("platform retry: one pending run, the next sync starts the Veeam job, a later sync finishes the run", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  fillVeeam(fake);
  const w = await world(kv);
  const operator = userActor(w.operator);
  const platform = await createPlatform(kv, operator, veeamInput(fake, w.tenant.orgs[0].id), {
    now: NOW,
    masterKey,
  });
  await syncPlatform(kv, platform.id, deps(NOW));
  const agentJob = (await listPlatformJobs(kv, platform.id)).find((j) => j.vendorJobId === "j-agent")!;
  const vmJob = (await listPlatformJobs(kv, platform.id)).find((j) => j.vendorJobId === "j-vm")!;

  await assert.rejects(
    retryJob(kv, operator, vmJob.id, NOW),
    (e) => e instanceof ValidationError && /latest run succeeded/.test(e.message),
  );
  await assert.rejects(retryJob(kv, userActor(w.viewer), agentJob.id, NOW), ForbiddenError);
  await assert.rejects(retryJob(kv, userActor(w.a2Admin), agentJob.id, NOW), NotFoundError);

  const t1 = new Date(NOW.getTime() + 60_000);
  const results = await Promise.allSettled([
    retryJob(kv, operator, agentJob.id, t1),
    retryJob(kv, operator, agentJob.id, t1),
  ]);
  assert.equal(results.filter((r) => r.status === "fulfilled").length, 1, "racing retries create one run");
  const retry = (results.find((r) => r.status === "fulfilled") as PromiseFulfilledResult<{ runs: Run[] }>)
    .value
    .runs[0] as PlatformRun;
  assert.equal(retry.status, "pending");
  assert.equal(retry.trigger, "retry");
  assert.equal(retry.retryable, false);
  assert.equal(fake.calls(/\/start$/).length, 0, "nothing is started before the next sync");
  assert.ok((await auditEntries(kv, w.tenant.account.id)).some((a) => a.action === "job.retry"));
  const { retry: state } = await getJob(kv, operator, agentJob.id);
  assert.equal(state.latest?.id, retry.id);

  fake.now = new Date("2026-11-22T10:05:00Z");
  const s1 = await syncPlatform(kv, platform.id, deps(new Date("2026-11-22T10:05:00Z")));
  assert.equal(s1.retries.started, 1);
  assert.equal(fake.calls(/\/jobs\/j-agent\/start$/).length, 1);
  const session = fake.sessions[fake.sessions.length - 1];
  let run = (await kv.get<PlatformRun>(["runs", retry.id])).value!;
  assert.equal(run.status, "running");
  assert.equal(run.platform.runId, session.id, "linked to the session Veeam answered");
  assert.equal((await runsOf(kv)).length, 5, "the session is not imported a second time");

  await syncPlatform(kv, platform.id, deps(new Date("2026-11-22T10:10:00Z")));
  assert.equal(fake.calls(/\/start$/).length, 1, "started once");

  fake.finishSession(session.id, "Success", "2026-11-22T10:25:00Z");
  const t3 = new Date("2026-11-22T10:30:00Z");
  const before = await readLast24h(kv, operator, t3);
  await syncPlatform(kv, platform.id, deps(t3));
  run = (await kv.get<PlatformRun>(["runs", retry.id])).value!;
  assert.equal(run.status, "success");
  assert.equal(run.trigger, "retry");
  assert.equal(run.endedAt, "2026-11-22T10:25:00.000Z");
  assert.deepEqual(await readLast24h(kv, operator, t3), { ...before, success: before.success + 1 });
  const db01 = (await objectsOf(kv, operator, platform.id)).get("db01")!;
  assert.equal(db01.lastBackupStatus, "success");
  assert.equal((await kv.get(["alerts_open", "protected_object", db01.id, "backup_failed"])).value, null);
  const view = await getJob(kv, operator, agentJob.id);
  assert.equal(view.job.lastRun?.status, "success");
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("a retry Veeam refuses to start fails its run; a rate-limited start waits for the next sync", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  const { admin, platform } = await veeamPlatform(kv, fake);
  await syncPlatform(kv, platform.id, deps(NOW));
  const agentJob = (await listPlatformJobs(kv, platform.id)).find((j) => j.vendorJobId === "j-agent")!;
  const { runs: [retry] } = await retryJob(kv, admin, agentJob.id, NOW);
  fake.faults.push({ path: /\/start$/, status: 429, headers: { "retry-after": "900" } });
  const s1 = await syncPlatform(kv, platform.id, deps(new Date(NOW.getTime() + 60_000)));
  assert.equal(s1.status, "success");
  assert.equal(s1.retries.deferred, 1);
  assert.match(s1.warnings[0], /not started yet/);
  assert.equal((await kv.get<Run>(["runs", retry.id])).value!.status, "pending");

  fake.faults.push({
    path: /\/start$/,
    status: 403,
    body: { errorCode: "Forbidden", message: "Operator role required" },
  });
  const s2 = await syncPlatform(kv, platform.id, deps(new Date(NOW.getTime() + 120_000)));
  assert.equal(s2.retries.failed, 1);
  const failed = (await kv.get<Run>(["runs", retry.id])).value!;
  assert.equal(failed.status, "failed");
  assert.equal(failed.error?.reason, "PLATFORM_START_FAILED");
  assert.match(failed.error!.message, /Operator role required/);
  assert.equal(failed.retryable, false);
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("a retry start whose answer is lost (502 after Veeam started it) is not sent again; the session becomes its run", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  const { admin, platform } = await veeamPlatform(kv, fake);
  await syncPlatform(kv, platform.id, deps(NOW));
  const agentJob = (await listPlatformJobs(kv, platform.id)).find((j) => j.vendorJobId === "j-agent")!;
  const { runs: [retry] } = await retryJob(kv, admin, agentJob.id, NOW);
  // Veeam starts the session, then a proxy answers 502 instead of the 201.
  fake.now = new Date("2026-11-22T10:05:00Z");
  fake.addSession("j-agent", fake.now.toISOString(), null, { id: "s-lost" });
  fake.faults.push({ path: /\/start$/, status: 502, body: { message: "Bad gateway" } });
  const s1 = await syncPlatform(kv, platform.id, deps(new Date("2026-11-22T10:05:00Z")));
  assert.equal(s1.status, "success", s1.error ?? "");
  assert.equal(fake.calls(/\/jobs\/j-agent\/start$/).length, 1, "the start is sent once");
  assert.match(s1.warnings.join(" "), /did not confirm the retry of Linux agents/);
  let run = (await kv.get<PlatformRun>(["runs", retry.id])).value!;
  assert.equal(run.status, "running");
  assert.equal(run.platform.runId, "s-lost", "the job's next session is the retry's");
  assert.equal((await runsOf(kv)).filter((r) => r.platform.runId === "s-lost").length, 1);
  fake.finishSession("s-lost", "Success", "2026-11-22T10:20:00Z");
  await syncPlatform(kv, platform.id, deps(new Date("2026-11-22T10:30:00Z")));
  run = (await kv.get<PlatformRun>(["runs", retry.id])).value!;
  assert.equal(run.status, "success");
  assert.equal(fake.calls(/\/start$/).length, 1);
  assert.deepEqual(await checkInvariants(kv), []);
});

/** A Cohesity cluster: VMs (two), a Linux host and a NAS share; runs with per-object outcomes. */
function fillCohesity(fake: FakeCohesity) {
  fake.sources = [
    {
      id: 11,
      name: "web01",
      environment: "kVMware",
      vmWareProtectionSource: { type: "kVirtualMachine", name: "web01" },
    },
    {
      id: 12,
      name: "web02",
      environment: "kVMware",
      vmWareProtectionSource: { type: "kVirtualMachine", name: "web02" },
    },
    {
      id: 13,
      name: "db01",
      environment: "kPhysical",
      physicalProtectionSource: { type: "kHost", hostType: "kLinux", name: "db01" },
    },
    { id: 14, name: "projects", environment: "kGenericNas" },
  ];
  fake.addJob(101, "VMs", "kVMware", [11, 12]);
  fake.addJob(102, "Linux", "kPhysical", [13]);
  fake.addJob(103, "NAS", "kGenericNas", [14]);
  fake.addRun(101, "2026-11-22T01:00:00Z", "kWarning", {
    objects: [{ id: 11, status: "kSuccess" }, { id: 12, status: "kFailure", error: "VM is locked" }],
  });
  fake.addRun(102, "2026-11-22T02:00:00Z", "kSuccess", { runType: "kFull" });
  fake.addRun(103, "2026-11-21T03:00:00Z", "kSuccess");
  fake.addRun(103, "2026-11-22T03:00:00Z", "kFailure", { error: "Share unreachable" });
}

Deno.test("Cohesity: per-object outcomes, job types, and a retry matched to the run that follows its start", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeCohesity();
  fillCohesity(fake);
  const w = await world(kv);
  const admin = userActor(w.admin);
  const platform = await createPlatform(kv, admin, {
    type: "cohesity",
    name: "Cohesity Lyon",
    orgId: w.tenant.orgs[0].id,
    endpointUrl: fake.url,
    username: COHESITY_USER,
    password: COHESITY_PASSWORD,
    defaultRpoHours: 12,
  }, { now: NOW, masterKey });
  const report = await syncPlatform(kv, platform.id, deps(NOW));
  assert.equal(report.status, "success", report.error ?? "");
  const objects = await objectsOf(kv, admin, platform.id);
  assert.equal(objects.get("web01")!.lastBackupStatus, "success");
  assert.equal(objects.get("web02")!.lastBackupStatus, "failed", "the object's own outcome, not the run's");
  assert.equal(objects.get("projects")!.type, "nas");
  assert.equal(objects.get("projects")!.rpoHours, 12);
  assert.equal(objects.get("db01")!.type, "physical");
  const linux = (await listPlatformJobs(kv, platform.id)).find((j) => j.vendorJobId === "102")!;
  const nas = (await listPlatformJobs(kv, platform.id)).find((j) => j.vendorJobId === "103")!;
  const full = await listJobs(kv, admin, parseJobFilter({ type: "full" }).data!);
  assert.deepEqual(full.values.map((j) => j.id), [linux.id]);

  const { runs: [retry] } = await retryJob(kv, admin, nas.id, NOW);
  fake.now = new Date("2026-11-22T10:02:00Z");
  const s1 = await syncPlatform(kv, platform.id, deps(new Date("2026-11-22T10:02:00Z")));
  assert.equal(s1.retries.started, 1);
  assert.equal(fake.calls(/protectionJobs\/run\/103$/).length, 1);
  let run = (await kv.get<PlatformRun>(["runs", retry.id])).value!;
  assert.equal(run.status, "running");
  assert.equal(
    run.platform.runId,
    `103:${fake.runs[fake.runs.length - 1].backupRun.jobRunId}`,
    "matched by time",
  );
  fake.finishRun(fake.runs[fake.runs.length - 1], "kSuccess", "2026-11-22T10:20:00Z");
  await syncPlatform(kv, platform.id, deps(new Date("2026-11-22T10:30:00Z")));
  run = (await kv.get<PlatformRun>(["runs", retry.id])).value!;
  assert.equal(run.status, "success");
  assert.equal(run.bytesTransferred, 1_073_741_824);
  assert.equal((await objectsOf(kv, admin, platform.id)).get("projects")!.lastBackupStatus, "success");
  assert.equal(fake.calls(/protectionJobs\/run\//).length, 1);
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("the Jobs view lists platform jobs with the guide's filters, history and detail page", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  const { w, admin, platform } = await veeamPlatform(kv, fake);
  await syncPlatform(kv, platform.id, deps(NOW));
  const jobs = new Map((await listPlatformJobs(kv, platform.id)).map((j) => [j.vendorJobId, j]));
  const ids = async (query: Record<string, string>) => {
    const parsed = parseJobFilter(query);
    assert.ok(parsed.success);
    return (await listJobs(kv, admin, parsed.data)).values.map((j) => j.name);
  };
  assert.deepEqual(await ids({ source: `platform:${platform.id}` }), [
    "Linux agents",
    "SQL logs",
    "VM nightly",
  ]);
  assert.deepEqual(await ids({ status: "failed" }), ["Linux agents"]);
  assert.deepEqual(await ids({ status: "running", type: "log" }), ["SQL logs"]);
  assert.deepEqual(await ids({ type: "incremental" }), ["Linux agents", "VM nightly"]);
  assert.deepEqual(await ids({ q: "j-agent" }), ["Linux agents"], "search by the source job id");
  assert.deepEqual(await ids({ q: "nightly" }), ["VM nightly"]);
  assert.deepEqual(await ids({ orgId: w.tenant.orgs[1].id }), []);
  assert.deepEqual(await ids({ from: "2026-11-22", to: "2026-11-22", source: `platform:${platform.id}` }), [
    "Linux agents",
    "SQL logs",
    "VM nightly",
  ]);
  const { values: sources } = { values: (await listJobs(kv, admin, parseJobFilter({}).data!)).sources };
  assert.ok(sources.some((s) => s.value === `platform:${platform.id}` && /VBR Paris/.test(s.label)));
  const history = await listJobRuns(kv, admin, jobs.get("j-vm")!.id, { limit: 1 });
  assert.equal(history.values[0].startedAt, "2026-11-22T01:00:00.000Z", "newest first");
  assert.ok(history.cursor);
  assert.equal((await listJobs(kv, userActor(w.a2Admin), parseJobFilter({}).data!)).total, 0);

  const { app } = testApp(kv, new TestClock(NOW));
  const browser = new Browser(app);
  await signInAs(browser, kv, w.admin, NOW);
  const page = await browser.get(`/backup/jobs/${jobs.get("j-agent")!.id}`);
  assert.equal(page.status, 200);
  const html = await page.text();
  assert.match(html, /Platform job of VBR Paris/);
  assert.match(html, /Disk full on repo/);
  assert.match(html, /data-testid="retry-job"/);
  const list = await (await browser.get(`/backup/jobs?source=platform:${platform.id}`)).text();
  assert.match(list, /VM nightly/);
  assert.match(list, /scheduled on the platform/);
});

Deno.test("platform objects appear in the protected objects page and API with the source filter", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  const { w, platform } = await veeamPlatform(kv, fake);
  await syncPlatform(kv, platform.id, deps(NOW));
  const { app } = testApp(kv, new TestClock(NOW));
  const browser = new Browser(app);
  await signInAs(browser, kv, w.viewer, NOW);
  const html = await (await browser.get(`/backup/protected?source=platform:${platform.id}`)).text();
  for (const name of ["web01", "web02", "db01", "sql01"]) assert.match(html, new RegExp(`>${name}<`));
  assert.match(html, /VBR Paris/);
  const api = await browser.get(
    `/api/v1/protected-objects?source=platform:${platform.id}&lastBackupStatus=failed`,
  );
  assert.equal(api.status, 200);
  const body = await api.json();
  assert.deepEqual(body.values.map((o: ProtectedObject) => o.name), ["db01"]);
  const type = await (await browser.get(`/backup/protected?source=platform:${platform.id}&type=vm`)).text();
  assert.match(type, />web01</);
  assert.doesNotMatch(type, />db01</);
});

Deno.test("deletePlatform() removes its jobs and objects (counters back to zero) and keeps the runs", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  const { w, admin, platform } = await veeamPlatform(kv, fake);
  await syncPlatform(kv, platform.id, deps(NOW));
  const agentJob = (await listPlatformJobs(kv, platform.id)).find((j) => j.vendorJobId === "j-agent")!;
  await retryJob(kv, admin, agentJob.id, NOW);
  const db01 = (await objectsOf(kv, admin, platform.id)).get("db01")!;
  assert.ok((await kv.get(["alerts_open", "protected_object", db01.id, "backup_failed"])).value);

  await assert.rejects(deletePlatform(kv, userActor(w.viewer), platform.id, NOW), ForbiddenError);
  await deletePlatform(kv, admin, platform.id, NOW);
  assert.equal(await getPlatform(kv, platform.id), null);
  assert.deepEqual(await readSummary(kv, admin, NOW), {
    protected: 0,
    atRisk: 0,
    rpoBreach: 0,
    unprotectedHosts: 0,
  });
  assert.equal((await listProtectedObjects(kv, admin, {}, NOW)).values.length, 0);
  assert.equal((await listJobs(kv, admin, parseJobFilter({}).data!)).total, 0);
  assert.equal((await dumpKv(kv)).filter((e) => String(e.key[0]).startsWith("platform")).length, 0);
  assert.equal((await dumpKv(kv)).filter((e) => e.key[0] === "vault").length, 0, "the vault record is gone");
  const runs = await runsOf(kv);
  assert.equal(runs.length, 5, "run history kept");
  assert.equal(runs.find((r) => r.trigger === "retry")!.status, "skipped");
  assert.equal((await kv.get(["alerts_open", "protected_object", db01.id, "backup_failed"])).value, null);
  assert.equal((await dumpKv(kv)).filter((e) => e.key[0] === "runs_failing").length, 0);
  assert.deepEqual(await checkInvariants(kv), []);
  const audit = await auditEntries(kv, w.tenant.account.id);
  assert.match(
    audit.find((a) => a.action === "platform.delete")!.summary,
    /3 imported job\(s\) and 4 protected object/,
  );
});

Deno.test("a platform deleted while a sync outlives its lease gets nothing written after the deletion", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  const { admin, platform } = await veeamPlatform(kv, fake);
  // The vendor is slow: by the time its objects arrive the sync's 15-minute lease has run out and an
  // operator deleted the platform.
  const later = new Date(NOW.getTime() + 16 * 60_000);
  const report = await syncPlatform(kv, platform.id, {
    ...deps(NOW),
    connectorFor: (p, password) => {
      const real = new VeeamConnector({
        endpoint: p.endpointUrl,
        username: p.username,
        password,
        pageSize: 2,
      });
      return Object.assign(Object.create(real), {
        listJobs: () => real.listJobs(),
        listRuns: (jobs: VendorJob[], since: Date | null) => real.listRuns(jobs, since),
        startJob: (job: VendorJob) => real.startJob(job),
        testConnection: () => real.testConnection(),
        close: () => real.close(),
        listObjects: async (jobs: VendorJob[]) => {
          const objects = await real.listObjects(jobs);
          await deletePlatform(kv, admin, platform.id, later);
          return objects;
        },
      });
    },
  });
  assert.equal(report.status, "failed");
  assert.match(report.error!, /deleted while it synced/);
  assert.equal(await getPlatform(kv, platform.id), null);
  assert.equal((await listProtectedObjects(kv, admin, {}, NOW)).values.length, 0, "no orphaned object");
  assert.deepEqual(await readSummary(kv, admin, NOW), {
    protected: 0,
    atRisk: 0,
    rpoBreach: 0,
    unprotectedHosts: 0,
  });
  assert.equal((await dumpKv(kv)).filter((e) => String(e.key[0]).startsWith("platform")).length, 0);
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("syncDuePlatforms() syncs each platform when its interval has elapsed, never twice at once", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  fillVeeam(fake);
  const w = await world(kv);
  const admin = userActor(w.admin);
  const p = await createPlatform(
    kv,
    admin,
    veeamInput(fake, w.tenant.orgs[0].id, { syncIntervalMinutes: 60 }),
    {
      now: NOW,
      masterKey,
    },
  );
  await using otherFake = await startFakeVeeam(); // one platform per server
  fillVeeam(otherFake);
  const off = await createPlatform(
    kv,
    admin,
    veeamInput(otherFake, w.tenant.orgs[0].id, { name: "off", syncEnabled: false }),
    {
      now: NOW,
      masterKey,
    },
  );
  const tick = (minutes: number) =>
    syncDuePlatforms(kv, new Date(NOW.getTime() + minutes * 60_000), { masterKey, sleep: noSleep });
  assert.deepEqual(await tick(0), { synced: 1, failed: 0, deleted: 0, busy: 0 });
  assert.deepEqual(await tick(30), { synced: 0, failed: 0, deleted: 0, busy: 0 });
  assert.deepEqual(await tick(61), { synced: 1, failed: 0, deleted: 0, busy: 0 });
  assert.equal((await getPlatform(kv, off.id))!.lastSync, null);
  // A sync already running holds the platform: a second one is refused, not run alongside.
  const [first, second] = await Promise.allSettled([
    syncPlatform(kv, p.id, deps(new Date(NOW.getTime() + 130 * 60_000))),
    syncPlatform(kv, p.id, deps(new Date(NOW.getTime() + 130 * 60_000))),
  ]);
  assert.equal([first, second].filter((r) => r.status === "fulfilled").length, 1);
  assert.ok([first, second].some((r) => r.status === "rejected" && r.reason instanceof ConflictError));
});

Deno.test("updatePlatform() rotates the password in the vault and carries a new RPO to the objects", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  const { admin, platform } = await veeamPlatform(kv, fake);
  await syncPlatform(kv, platform.id, deps(NOW));
  const oldVault = platform.credentialId!;
  const next = await updatePlatform(kv, admin, platform.id, {
    name: "VBR Paris 2",
    endpointUrl: fake.url,
    username: VEEAM_USER,
    password: "rotated-Passw0rd",
    defaultRpoHours: 4,
  }, { now: NOW, masterKey });
  assert.notEqual(next.credentialId, oldVault);
  assert.equal((await kv.get(["vault", oldVault])).value, null);
  const objects = await objectsOf(kv, admin, platform.id);
  assert.ok([...objects.values()].every((o) => o.rpoHours === 4));
  // web01 and web02 last succeeded at 01:20: at 10:00 with a 4 h RPO they are in breach. db01 and
  // sql01 never succeeded in the imported history: their RPO clock started when they were imported.
  assert.equal((await readSummary(kv, admin, NOW)).rpoBreach, 2);
  await sweepRpoBreaches(kv, NOW);
  assert.equal((await readSummary(kv, admin, NOW)).rpoBreach, 2);
  const web01 = (await objectsOf(kv, admin, platform.id)).get("web01")!;
  assert.equal(web01.breached, true);
  assert.ok((await kv.get(["alerts_open", "protected_object", web01.id, "rpo_breach"])).value);
  assert.deepEqual(await checkInvariants(kv), []);
  // The rotated password is what the next sync sends (the fake still expects the old one).
  const report = await syncPlatform(kv, platform.id, deps(NOW));
  assert.match(report.error ?? "", /rejected the credentials/);
});

Deno.test("the stored password never follows the platform to another endpoint or CA without being typed again", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  await using rogue = await startFakeVeeam();
  fillVeeam(fake);
  const w = await world(kv);
  const platform = await createPlatform(kv, userActor(w.admin), veeamInput(fake, w.tenant.orgs[0].id), {
    now: NOW,
    masterKey,
  });
  const operator = userActor(w.operator);
  const edit = { name: platform.name, endpointUrl: rogue.url, username: VEEAM_USER };
  const ca = (await makeTestCertificates())?.ca; // null without openssl: the CA case is then skipped
  for (const change of [edit, ...(ca ? [{ ...edit, endpointUrl: fake.url, caCertificate: ca }] : [])]) {
    await assert.rejects(
      updatePlatform(kv, operator, platform.id, change, { now: NOW, masterKey }),
      (e) => e instanceof ValidationError && /Type the password again/.test(e.fields.password ?? ""),
    );
  }
  assert.equal((await getPlatform(kv, platform.id))!.endpointUrl, fake.url, "nothing changed");

  const { app } = testApp(kv, new TestClock(NOW));
  const browser = new Browser(app);
  await signInAs(browser, kv, w.operator, NOW);
  const page = `/backup/platforms/${platform.id}`;
  const res = await browser.postForm(page, { ...edit, password: "", syncEnabled: "on" }, { tokenFrom: page });
  assert.equal(res.status, 422);
  assert.match(await res.text(), /Type the password again/);
  const api = await browser.request(`/api/v1/platforms/${platform.id}`, {
    method: "PUT",
    headers: { "content-type": "application/json", "x-csrf-token": await browser.csrfFor(page) },
    body: JSON.stringify(edit),
  });
  assert.equal(api.status, 422);
  await browser.postForm(`${page}/test`, {}, { tokenFrom: page });
  assert.equal(rogue.calls("/api/oauth2/token").length, 0, "the rogue server never saw a login");
  assert.equal((await getPlatform(kv, platform.id))!.lastTest?.ok, true);

  // Typing the password with the new endpoint is an ordinary edit.
  const moved = await updatePlatform(kv, operator, platform.id, { ...edit, password: "typed-Again1" }, {
    now: NOW,
    masterKey,
  });
  assert.equal(moved.endpointUrl, rogue.url);
  assert.notEqual(moved.credentialId, platform.credentialId);
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("Platforms pages: register through the form, the password never shown, logged or audited; bad input is 422", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  fillVeeam(fake);
  const w = await world(kv);
  const clock = new TestClock(NOW);
  const { app, logs } = testApp(kv, clock);
  const browser = new Browser(app);
  await signInAs(browser, kv, w.operator, NOW);
  const form = {
    type: "veeam",
    name: "VBR Paris",
    orgId: w.tenant.orgs[0].id,
    endpointUrl: fake.url,
    username: VEEAM_USER,
    password: VEEAM_PASSWORD,
    syncIntervalMinutes: "30",
    defaultRpoHours: "24",
    syncEnabled: "on",
  };
  const before = await dumpKv(kv);
  for (
    const [field, value, message] of [
      ["endpointUrl", "http://vbr.example.com:9419", /must use https/i],
      ["endpointUrl", "https://user:pw@vbr.example.com", /must not contain credentials/i],
      ["syncIntervalMinutes", "2", /must be 5–1440 minutes/i],
      ["password", "", /is required/i],
      ["type", "netbackup", /must be one of veeam, cohesity/i],
      ["caCertificate", "not a certificate", /PEM certificate/i],
      ["apiVersion", "1.0-rev2", /1\.1-rev0 or later/],
      ["orgId", w.tenant.orgs[1].id, /Choose an organization you can see/],
    ] as const
  ) {
    const res = await browser.postForm("/backup/platforms/new", { ...form, [field]: value }, {
      tokenFrom: "/backup/platforms/new",
    });
    assert.equal(res.status, 422, `${field}=${value}`);
    const html = await res.text();
    assert.match(html, message);
    assert.ok(!html.includes(VEEAM_PASSWORD), "the typed password is not echoed");
  }
  const after = (await dumpKv(kv)).filter((e) =>
    !["sessions", "sessions_by_user"].includes(String(e.key[0]))
  );
  assert.deepEqual(
    after,
    before.filter((e) => !["sessions", "sessions_by_user"].includes(String(e.key[0]))),
    "nothing stored",
  );

  const created = await browser.postForm("/backup/platforms/new", form, {
    tokenFrom: "/backup/platforms/new",
  });
  assert.equal(created.status, 303);
  const location = created.headers.get("location")!;
  const id = location.split("/").pop()!;
  const record = (await getPlatform(kv, id))!;
  assert.ok(!JSON.stringify(record).includes(VEEAM_PASSWORD));
  const vault = (await kv.get<{ ciphertext: string }>(["vault", record.credentialId!])).value!;
  assert.ok(!JSON.stringify(vault).includes(VEEAM_PASSWORD));

  const test = await browser.postForm(`/backup/platforms/${id}/test`, {}, { tokenFrom: location });
  assert.equal(test.status, 303);
  const sync = await browser.postForm(`/backup/platforms/${id}/sync`, {}, { tokenFrom: location });
  assert.equal(sync.status, 303);
  const detail = await (await browser.get(location)).text();
  assert.match(detail, /Veeam Backup &amp; Replication 12\.1\.2\.172/);
  assert.match(detail, /Linux agents/);
  const list = await (await browser.get("/backup/platforms")).text();
  assert.match(list, /VBR Paris/);
  assert.match(list, /synced/);
  const api = await (await browser.get(`/api/v1/platforms/${id}`)).text();
  assert.match(api, /"hasCredentials":true/);
  assert.ok(!api.includes("credentialId"));
  const edit = await browser.postForm(location, { ...form, name: "VBR Paris (prod)", password: "" }, {
    tokenFrom: location,
  });
  assert.equal(edit.status, 303);
  assert.equal(
    (await getPlatform(kv, id))!.credentialId,
    record.credentialId,
    "an empty password keeps the stored one",
  );

  // A failing sync shows its error on the list and the detail page.
  fake.faults.push({ path: "/api/v1/jobs/states", status: 401, times: Infinity });
  await browser.postForm(`/backup/platforms/${id}/sync`, {}, { tokenFrom: location });
  const failedList = await (await browser.get("/backup/platforms")).text();
  assert.match(failedList, /sync failed/);
  assert.match(
    failedList,
    /data-testid="sync-error"[^>]*>Veeam GET \/api\/v1\/jobs\/states: not authorized \(401\)/,
  );

  const confirm = await (await browser.get(`/backup/platforms/${id}/delete`)).text();
  assert.match(confirm, /its 3 imported job\(s\) and its\s+4\s+protected object\(s\)/);
  const deleted = await browser.postForm(`/backup/platforms/${id}/delete`, {}, {
    tokenFrom: `/backup/platforms/${id}/delete`,
  });
  assert.equal(deleted.status, 303);
  assert.equal(await getPlatform(kv, id), null);

  const everything = [
    ...(await auditEntries(kv, w.tenant.account.id)).map((a) => JSON.stringify(a)),
    ...logs,
    list,
    detail,
    api,
  ].join("\n");
  assert.ok(!everything.includes(VEEAM_PASSWORD), "the password is never in pages, audit, logs or replies");
  assert.ok((await auditEntries(kv, w.tenant.account.id)).some((a) => a.action === "platform.create"));
});

Deno.test("platform permissions: viewers see, only managers change; other orgs and accounts see nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  fillVeeam(fake);
  const w = await world(kv);
  const platform = await createPlatform(kv, systemActor("test"), veeamInput(fake, w.tenant.orgs[0].id), {
    now: NOW,
    masterKey,
  });
  const { app } = testApp(kv, new TestClock(NOW));
  const as = async (user: User) => {
    const b = new Browser(app);
    await signInAs(b, kv, user, NOW);
    return b;
  };
  const viewer = await as(w.viewer);
  assert.equal((await viewer.get("/backup/platforms")).status, 200);
  assert.match(await (await viewer.get(`/backup/platforms/${platform.id}`)).text(), /VBR Paris/);
  for (
    const path of [
      "/backup/platforms/new",
      `/backup/platforms/${platform.id}/sync`,
      `/backup/platforms/${platform.id}/delete`,
    ]
  ) {
    const res = await viewer.postForm(path, {}, { tokenFrom: "/backup/platforms" });
    assert.equal(res.status, 403, path);
  }
  const api = await viewer.request("/api/v1/platforms", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-csrf-token": await viewer.csrfFor("/backup/platforms"),
    },
    body: JSON.stringify(veeamInput(fake, w.tenant.orgs[0].id)),
  });
  assert.equal(api.status, 403);
  assert.equal((await getPlatform(kv, platform.id))!.lastSync, null, "the viewer's sync did not run");

  for (const user of [w.a2Admin, w.outsider]) {
    const b = await as(user);
    assert.equal((await b.get(`/backup/platforms/${platform.id}`)).status, 404);
    assert.doesNotMatch(await (await b.get("/backup/platforms")).text(), /VBR Paris/);
    assert.equal(
      (await b.postForm(`/backup/platforms/${platform.id}/sync`, {}, { tokenFrom: "/backup/platforms" }))
        .status,
      404,
    );
    const list = await (await b.get("/api/v1/platforms")).json();
    assert.deepEqual(list.values, []);
  }

  const operator = await as(w.operator);
  const res = await operator.request("/api/v1/platforms", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-csrf-token": await operator.csrfFor("/backup/platforms"),
    },
    body: JSON.stringify({ ...veeamInput(fake, w.tenant.orgs[0].id), endpointUrl: "ftp://vbr.example.com" }),
  });
  assert.equal(res.status, 422);
  assert.match(JSON.stringify(await res.json()), /endpointUrl/);
  const dupRes = await operator.request("/api/v1/platforms", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-csrf-token": await operator.csrfFor("/backup/platforms"),
    },
    body: JSON.stringify(veeamInput(fake, w.tenant.orgs[0].id, { name: "Second" })),
  });
  assert.equal(dupRes.status, 422, "the same server again is refused");
  assert.match(JSON.stringify(await dupRes.json()), /already registered/);
  await using secondFake = await startFakeVeeam();
  const okRes = await operator.request("/api/v1/platforms", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-csrf-token": await operator.csrfFor("/backup/platforms"),
    },
    body: JSON.stringify(veeamInput(secondFake, w.tenant.orgs[0].id, { name: "Second" })),
  });
  assert.equal(okRes.status, 201);
  const created = await okRes.json();
  assert.equal(created.hasCredentials, true);
  assert.ok(!JSON.stringify(created).includes(VEEAM_PASSWORD));
  const sync = await operator.request(`/api/v1/platforms/${created.id}/sync`, {
    method: "POST",
    headers: { "x-csrf-token": await operator.csrfFor("/backup/platforms") },
  });
  assert.equal(sync.status, 200);
  assert.equal((await sync.json()).status, "success");
});

Deno.test("the same server cannot be registered twice in an account (it would be imported and counted twice)", async () => {
  using kv = await Deno.openKv(":memory:");
  await using fake = await startFakeVeeam();
  const w = await world(kv);
  const admin = userActor(w.admin);
  const first = await createPlatform(kv, admin, veeamInput(fake, w.tenant.orgs[0].id), {
    now: NOW,
    masterKey,
  });
  const before = (await Array.fromAsync(kv.list({ prefix: ["platforms"] }))).length;
  for (const endpointUrl of [fake.url, `${fake.url}/`, fake.url.toUpperCase()]) {
    await assert.rejects(
      createPlatform(kv, admin, veeamInput(fake, w.tenant.orgs[0].id, { name: "again", endpointUrl }), {
        now: NOW,
        masterKey,
      }),
      (e: unknown) => e instanceof ValidationError && /already registered/.test(e.fields.endpointUrl ?? ""),
      endpointUrl,
    );
  }
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["platforms"] }))).length, before, "nothing stored");
  await deletePlatform(kv, admin, first.id, NOW);
  const again = await createPlatform(kv, admin, veeamInput(fake, w.tenant.orgs[0].id), {
    now: NOW,
    masterKey,
  });
  assert.notEqual(again.id, first.id, "once deleted, the server can be registered again");
});
