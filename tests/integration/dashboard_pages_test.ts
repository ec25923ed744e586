import assert from "node:assert/strict";
import { createApp } from "../../app.ts";
import { assignHost } from "../../domain/assignments.ts";
import { testConfig } from "../../domain/config.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { applyHostHeartbeat, enrollHost } from "../../domain/hosts.ts";
import { applyResult, claimJobs, type Job } from "../../domain/job_queue.ts";
import { createLogger } from "../../domain/log.ts";
import { createPolicy, type Policy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import type { Run } from "../../domain/runs.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { applyCapacityReport, createTarget } from "../../domain/storage.ts";
import { SECTIONS } from "../../routes/dashboard.tsx";
import {
  addUser,
  assertIncludes,
  auditEntries,
  Browser,
  createTenant,
  engineMetrics,
  registerTestEngine,
  signInAs,
  targetInput,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

/** A tenant with a failed retryable backup, a storage target at 90 % and a viewer, operator and admin. */
async function setup(kv: Deno.Kv, faults: string[] = []) {
  const clock = new TestClock(new Date("2026-11-01T00:00:00Z"));
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops"], now);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, now);
  await applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, now);
  const target = await createTarget(kv, system, targetInput(engine.id), { now, masterKey });
  await applyCapacityReport(kv, engine.id, {
    targetId: target.id,
    totalBytes: 1000,
    usedBytes: 900,
    freeBytes: 100,
  }, now);
  const policy = await createPolicy(kv, system, {
    name: "nightly files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 0 1 1 *",
    incrementalSchedule: "* * * * *",
    rpoHours: 1,
  }, now) as Policy;
  const { host } = await enrollHost(kv, scope, {
    hostname: "db-01.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.2",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, now);
  await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, now);
  await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, now);
  await runSchedulerTick(kv, now);
  const [job]: Job[] = await claimJobs(kv, `agent:${host.id}`, 1, now);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "failed",
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    error: { reason: "TARGET_UNREACHABLE", message: "NFS server not responding" },
    retryable: true,
  }, now);
  await applyJobOutcome(kv, done, now);
  clock.advance(2 * 3_600_000); // past the 1 h RPO
  const app = createApp({
    kv,
    config: testConfig({ faults }),
    clock: clock.now,
    logger: createLogger("error", () => {}),
  });
  const users = {
    viewer: await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", now),
    operator: await addUser(kv, tenant, "operator@acme.example", "operator", "all", now),
    admin: await addUser(kv, tenant, "admin@acme.example", "admin", "all", now),
  };
  const as = async (who: keyof typeof users) => {
    const b = new Browser(app);
    await signInAs(b, kv, users[who], clock.now());
    return b;
  };
  const run = (await Array.fromAsync(kv.list<Run>({ prefix: ["runs"] })))[0].value;
  return { app, clock, tenant, engine, target, policy, host, users, as, run };
}

Deno.test("the dashboard page is a frame of independently loaded sections; each section renders its data", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const viewer = await s.as("viewer");
  const page = await (await viewer.get("/backup/dashboard")).text();
  for (const section of SECTIONS) {
    assertIncludes(page, `/backup/dashboard/sections/${section.name}`, `the ${section.name} island`);
  }
  const fragment = async (name: string) => {
    const res = await viewer.get(`/backup/dashboard/sections/${name}`);
    assert.equal(res.status, 200, name);
    return await res.text();
  };
  const summary = await fragment("summary");
  assert.match(summary, /data-metric="Protected"><a[^>]*><span[^>]*>1</);
  assert.match(summary, /data-metric="At risk"><a[^>]*><span[^>]*>1</);
  assert.match(summary, /data-metric="RPO breach"><a[^>]*><span[^>]*>1</);
  assert.match(summary, /data-metric="Unprotected hosts"><a[^>]*><span[^>]*>0</);
  const activity = await fragment("activity");
  const failedLink = /data-metric="Failed"><a href="([^"]+)"><span[^>]*>1</.exec(activity);
  assert.ok(failedLink, activity);
  // The count leads to the runs behind it: failed runs that ended in the same 24 hours.
  const runs = await (await viewer.get(failedLink[1].replaceAll("&amp;", "&"))).text();
  assertIncludes(runs, `data-run="${s.run.id}"`);
  assertIncludes(runs, "NFS server not responding");
  assert.match(
    await fragment("engines"),
    /data-metric="BES offline"><a[^>]*><span[^>]*>1</,
    "no heartbeat for 2 h",
  );
  const failed = await fragment("failed");
  assertIncludes(failed, "nightly files");
  assertIncludes(failed, "NFS server not responding");
  const rpo = await fragment("rpo");
  assertIncludes(rpo, `/backup/restore?hostId=${s.host.id}`);
  assertIncludes(rpo, "1 h 0 min", "never succeeded: breached since 1 h after it became active");
  const storage = await fragment("storage");
  assertIncludes(storage, `/backup/storage/${s.target.id}`);
  assertIncludes(storage, "90.0 % used");
  assertIncludes(await fragment("verification"), "All verifications passing");
  assertIncludes(await fragment("heatmap"), "2026-11-01: 0 success, 0 warning, 1 failed");
});

Deno.test("actions are gated by backup.manage: no buttons for a viewer, 403 on POST; an operator retries and checks", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const viewer = await s.as("viewer");
  const failedForViewer = await (await viewer.get("/backup/dashboard/sections/failed")).text();
  assert.ok(!failedForViewer.includes(">Retry<"), "no Retry button without backup.manage");
  const storageForViewer = await (await viewer.get("/backup/dashboard/sections/storage")).text();
  assert.ok(!storageForViewer.includes("Health check"), "no health check button without backup.manage");
  const runsBefore = (await Array.fromAsync(kv.list({ prefix: ["runs"] }))).length;
  for (
    const path of [
      `/backup/dashboard/runs/${s.run.id}/retry`,
      `/backup/dashboard/storage/${s.target.id}/health-check`,
      `/backup/dashboard/storage/${s.target.id}/verify`,
    ]
  ) {
    const res = await viewer.postForm(path, {}, { tokenFrom: "/backup/dashboard" });
    assert.equal(res.status, 403, path);
  }
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["runs"] }))).length, runsBefore, "nothing changed");

  const operator = await s.as("operator");
  const failed = await (await operator.get("/backup/dashboard/sections/failed")).text();
  assertIncludes(failed, `action="/backup/dashboard/runs/${s.run.id}/retry"`);
  const retried = await operator.postForm(`/backup/dashboard/runs/${s.run.id}/retry`, {}, {
    tokenFrom: "/backup/dashboard",
  });
  assert.equal(retried.status, 303);
  const runs = (await Array.fromAsync(kv.list<Run>({ prefix: ["runs"] }))).map((e) => e.value);
  assert.equal(runs.length, runsBefore + 1, "the retry created a run");
  assert.equal(runs.find((r) => r.id !== s.run.id)!.trigger, "retry");
  const again = await operator.postForm(`/backup/dashboard/runs/${s.run.id}/retry`, {}, {
    tokenFrom: "/backup/dashboard",
  });
  assert.equal(again.status, 303, "a second retry is refused with a notice, not an error page");
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["runs"] }))).length, runsBefore + 1);

  const storageJobs = async () =>
    (await Array.fromAsync(kv.list<Job>({ prefix: ["jobs"] }))).map((e) => e.value)
      .filter((j) => j.payload.scope === "storage_target").map((j) => [j.kind, j.principal]).sort();
  const noRelay = await operator.postForm(`/backup/dashboard/storage/${s.target.id}/health-check`, {}, {
    tokenFrom: "/backup/dashboard",
  });
  assert.equal(noRelay.status, 303);
  assertIncludes(
    await (await operator.get("/backup/dashboard")).text(),
    "No host of the target's organization is online",
  );
  assert.deepEqual(await storageJobs(), [], "no host online: nothing queued");
  const offlineBes = await operator.postForm(`/backup/dashboard/storage/${s.target.id}/verify`, {}, {
    tokenFrom: "/backup/dashboard",
  });
  assert.equal(offlineBes.status, 303);
  assertIncludes(await (await operator.get("/backup/dashboard")).text(), "is offline (last heartbeat");
  assert.deepEqual(await storageJobs(), [], "the BES is offline: no verification queued");
  await applyHeartbeat(kv, s.engine.id, { version: "1", metrics: engineMetrics() }, s.clock.now());
  const { host: relay } = await enrollHost(
    kv,
    { accountId: s.tenant.account.id, orgId: s.tenant.orgs[0].id },
    {
      hostname: "relay-01.acme.example",
      os: "Debian 12",
      ipAddress: "10.0.0.9",
      publicKey: generateKeyPair().publicKey,
      version: "1",
      relay: true,
    },
    s.clock.now(),
  );
  await applyHostHeartbeat(kv, relay.id, { version: "1", metrics: engineMetrics() }, s.clock.now());
  for (const check of ["health-check", "verify"]) {
    const res = await operator.postForm(`/backup/dashboard/storage/${s.target.id}/${check}`, {}, {
      tokenFrom: "/backup/dashboard",
    });
    assert.equal(res.status, 303, check);
  }
  assert.deepEqual(await storageJobs(), [["health_check", `agent:${relay.id}`], [
    "verify",
    `bes:${s.engine.id}`,
  ]]);
  const actions = (await auditEntries(kv, s.tenant.account.id)).map((e) => e.action);
  for (const a of ["run.retry", "storage.health_check", "storage.verify"]) assert.ok(actions.includes(a), a);
});

Deno.test("deep links into Restore fail closed with a page naming the missing permission", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const operator = await s.as("operator"); // backup.view + backup.manage, no backup.restore
  const rpo = await (await operator.get("/backup/dashboard/sections/rpo")).text();
  const link = /href="(\/backup\/restore\?[^"]+)"/.exec(rpo)![1].replaceAll("&amp;", "&");
  const res = await operator.get(link);
  assert.equal(res.status, 403);
  assertIncludes(await res.text(), "backup.restore");
  const admin = await s.as("admin");
  assert.equal((await admin.get(link)).status, 200, "an admin (backup.restore) gets the Restore page");
});

Deno.test("a failing section answers with its own error; every other section still renders", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv, ["dashboard.storage"]);
  const viewer = await s.as("viewer");
  for (const section of SECTIONS) {
    const res = await viewer.get(`/backup/dashboard/sections/${section.name}`);
    const html = await res.text();
    if (section.name === "storage") {
      assert.equal(res.status, 500);
      assertIncludes(html, "data-error");
      assert.ok(!html.includes("<html"), "a fragment, not a full error page");
    } else {
      assert.equal(res.status, 200, section.name);
    }
  }
});

Deno.test("the protected objects page filters by RPO breach and last status", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const viewer = await s.as("viewer");
  const all = await (await viewer.get("/backup/protected")).text();
  assertIncludes(all, "db-01.acme.example");
  assertIncludes(all, "breach 1 h 0 min");
  const breach = await (await viewer.get("/backup/protected?rpoBreach=true&lastBackupStatus=failed")).text();
  assertIncludes(breach, "db-01.acme.example");
  const within = await (await viewer.get("/backup/protected?rpoBreach=false")).text();
  assertIncludes(within, "No protected objects match");
  const junk = await viewer.get("/backup/protected?type=toaster&limit=-4&cursor=%%%");
  assert.equal(junk.status, 200, "bad filter values fall back to defaults");
});

Deno.test("the JSON API serves the dashboard figures, the queues and the protected objects with rpo_breach", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const viewer = await s.as("viewer");
  const json = async (path: string, status = 200) => {
    const res = await viewer.request(path, { headers: { accept: "application/json" } });
    assert.equal(res.status, status, path);
    return await res.json();
  };
  const dash = await json("/api/v1/dashboard");
  assert.deepEqual(dash.summary, { protected: 1, atRisk: 1, rpoBreach: 1, unprotectedHosts: 0 });
  assert.deepEqual(dash.last24h, { success: 0, failed: 1, warning: 0 });
  assert.deepEqual(dash.engines, { online: 0, offline: 1, other: 0 });
  assert.equal((await json("/api/v1/dashboard/queue?name=failed-backups")).values[0].run.id, s.run.id);
  assert.equal((await json("/api/v1/dashboard/queue?name=rpo-breaches")).values[0].breachMs, 3_600_000);
  const storage = (await json("/api/v1/dashboard/queue?name=storage-health")).values;
  assert.equal(storage[0].id, s.target.id);
  assert.equal("credentialId" in storage[0], false, "no vault reference in the API");
  assert.deepEqual((await json("/api/v1/dashboard/queue?name=verification-failures")).values, []);
  const bad = await json("/api/v1/dashboard/queue?name=everything", 422);
  assert.ok(bad.error.fields.name);
  const objects = await json("/api/v1/protected-objects?rpo_breach=true");
  assert.deepEqual(objects.values.map((o: { name: string; rpoBreach: boolean }) => [o.name, o.rpoBreach]), [[
    "db-01.acme.example",
    true,
  ]]);
  assert.deepEqual((await json("/api/v1/protected-objects?rpo_breach=false")).values, []);
  assert.ok((await json("/api/v1/protected-objects?type=toaster", 422)).error.fields.type);
});
