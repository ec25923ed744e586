/**
 * Replication made visible and complete (issue 14, item 8): the replicate payload carries the rule's KEK
 * source and the reference the engine fetches the key by; each replication's status (per restore point)
 * and each rule's status are shown on the policy and restore point pages and returned by the API; rules
 * can be created from Backup > Replicas with the same schema as the policy page and the API.
 */
import assert from "node:assert/strict";
import { createApiToken } from "../../domain/api_tokens.ts";
import { assignHost } from "../../domain/assignments.ts";
import { userActor } from "../../domain/auth.ts";

import { applyHostHeartbeat, enrollHost } from "../../domain/hosts.ts";
import { applyResult, claimJobs, type Job } from "../../domain/job_queue.ts";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { checkInvariants } from "../../domain/invariants.ts";
import {
  createReplica,
  deleteReplica,
  listRecentReplications,
  listReplicasByPolicy,
  listReplicationsOfPoint,
  rebuildReplicaCounts,
  type ReplicaRule,
  replicaStats,
  type ReplicationView,
  resumeReplicaIndexCleanups,
} from "../../domain/replicas.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import { listRunsByPolicy } from "../../domain/runs.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import type { Engine } from "../../domain/engines.ts";
import type { Permission } from "../../domain/types.ts";
import { expireLeases } from "../../jobs/expire_leases.ts";
import {
  addUser,
  auditEntries,
  Browser,
  createTenant,
  engineMetrics,
  enrollTestHost,
  onlineTestEngine,
  registerTestEngine,
  setFleetStatus,
  signInAs,
  targetInput,
  testApp,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);
// Sunday 2026-11-29 02:00 UTC: the full schedule fires; Monday 02:00 the incremental one.
const SUNDAY_2AM = new Date("2026-11-29T02:00:00Z");
const MONDAY_2AM = new Date("2026-11-30T02:00:00Z");

async function fixture(kv: Deno.Kv) {
  const clock = new TestClock(new Date("2026-11-29T01:50:00Z"));
  const { app } = testApp(kv, clock);
  const tenant = await createTenant(kv, "Acme", ["Ops", "Dev"], clock.now());
  const [ops, dev] = tenant.orgs;
  const scope = { accountId: tenant.account.id, orgId: ops.id };
  const { engine } = await onlineTestEngine(kv, scope, clock.now(), "bes-1");
  const { engine: far } = await registerTestEngine(kv, scope, clock.now(), "bes-far");
  const target = (besId: string, name: string, type: "local" | "s3" = "local") =>
    createTarget(kv, system, { ...targetInput(besId, type), name }, { now: clock.now(), masterKey });
  const primary = await target(engine.id, "primary-disk");
  const nas = await target(engine.id, "nas-copy");
  const cloud = await target(far.id, "cloud-bucket", "s3");
  const policy = await createPolicy(kv, system, {
    name: "files",
    besId: engine.id,
    targetId: primary.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    incrementalSchedule: "0 2 * * *",
    verifyAfterBackup: false,
  }, clock.now());
  const host = await enrollTestHost(kv, scope, "h1", clock.now());
  await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, clock.now());
  const local = await createReplica(kv, system, { policyId: policy.id, targetId: nas.id }, clock.now());
  const offsite = await createReplica(kv, system, {
    policyId: policy.id,
    targetId: cloud.id,
    kekSource: "pam_vault",
    replicateAfterIncremental: false,
    isOffsite: true,
  }, clock.now());
  const users = {
    admin: await addUser(kv, tenant, "admin@acme.example", "admin", "all", clock.now()),
    operator: await addUser(kv, tenant, "op@acme.example", "operator", [ops], clock.now()),
    viewer: await addUser(kv, tenant, "viewer@acme.example", "viewer", [ops], clock.now()),
    devOperator: await addUser(kv, tenant, "dev@acme.example", "operator", [dev], clock.now()),
  };
  return {
    app,
    clock,
    tenant,
    ops,
    dev,
    engine,
    far,
    primary,
    nas,
    cloud,
    policy,
    host,
    local,
    offsite,
    users,
  };
}

/** Runs one scheduled backup of the host at `at` and reports a restore point; returns the point's id. */
async function backUp(
  kv: Deno.Kv,
  f: Awaited<ReturnType<typeof fixture>>,
  at: Date,
  type: "full" | "incremental",
) {
  await runSchedulerTick(kv, at);
  const [job] = await claimJobs(kv, `agent:${f.host.id}`, 1, at);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "success",
    startedAt: at.toISOString(),
    endedAt: new Date(at.getTime() + 600_000).toISOString(),
    bytesTransferred: 100,
    protectedBytes: 100,
    output: {
      restorePoint: {
        id: `rp-${at.toISOString().slice(0, 10)}`,
        chainId: "chain-1",
        type,
        parentId: type === "full" ? null : "rp-2026-11-29",
        sizeBytes: 100,
        fileCount: 1,
        completedAt: new Date(at.getTime() + 600_000).toISOString(),
      },
    },
  }, at);
  await applyJobOutcome(kv, done, at);
  const run = (await listRunsByPolicy(kv, f.policy.id)).find((r) => r.jobId === job.id)!;
  return (await kv.get<{ restorePointId: string }>(["runs", run.id])).value!.restorePointId;
}

async function answer(kv: Deno.Kv, job: Job, at: Date, outcome: "success" | "failed") {
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: outcome,
    startedAt: at.toISOString(),
    endedAt: new Date(at.getTime() + 120_000).toISOString(),
    bytesTransferred: outcome === "success" ? 4096 : 0,
    protectedBytes: 0,
    error: outcome === "failed"
      ? { reason: "TARGET_UNREACHABLE", message: "bucket offsite: 403 Forbidden" }
      : null,
    output: outcome === "success"
      ? {
        replication: {
          restorePointId: job.payload.restorePointId,
          targetId: job.payload.targetId,
          bytes: 4096,
        },
      }
      : null,
  }, at);
  await applyJobOutcome(kv, done, at);
}

async function allRules(kv: Deno.Kv) {
  return (await Array.fromAsync(kv.list<ReplicaRule>({ prefix: ["replicas"] }))).map((e) => e.value);
}

function byTarget(rows: ReplicationView[]) {
  return Object.fromEntries(rows.map((r) => [r.targetName, r]));
}

async function bearer(
  kv: Deno.Kv,
  user: Parameters<typeof userActor>[0],
  permissions: Permission[],
  now: Date,
) {
  const { secret } = await createApiToken(
    kv,
    userActor(user),
    { name: "t", permissions, expiresInDays: 1 },
    now,
  );
  return { authorization: `Bearer ${secret}`, "content-type": "application/json" };
}

Deno.test("a backup result queues replicate jobs whose payload carries the rule's KEK source and key reference", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const pointId = await backUp(kv, f, SUNDAY_2AM, "full");
  const jobs = await claimJobs(kv, `bes:${f.engine.id}`, 50, SUNDAY_2AM);
  assert.deepEqual(jobs.map((j) => j.kind), ["replicate", "replicate"]);
  const toNas = jobs.find((j) => j.payload.ruleId === f.local.id)!;
  const toCloud = jobs.find((j) => j.payload.ruleId === f.offsite.id)!;
  assert.equal(toNas.payload.kekSource, "account");
  assert.deepEqual(toNas.payload.kek, { source: "account", keyId: `account:${f.tenant.account.id}` });
  assert.equal(toCloud.payload.kekSource, "pam_vault");
  assert.deepEqual(toCloud.payload.kek, {
    source: "pam_vault",
    keyId: `pam_vault:${f.tenant.account.id}:${f.ops.id}`,
  });
  // What the engine needs besides the key: both ids of the point, where it is and where it goes.
  assert.deepEqual(
    [toCloud.payload.restorePointId, toCloud.payload.engineRestorePointId, toCloud.payload.pointType],
    [pointId, "rp-2026-11-29", "full"],
  );
  assert.equal(toCloud.payload.sourceTargetId, f.primary.id);
  assert.equal(toCloud.payload.isOffsite, true);
  const target = toCloud.payload.target as { id: string; type: string; besId: string };
  assert.deepEqual([target.id, target.type, target.besId], [f.cloud.id, "s3", f.far.id]);
  // A reference, never key material: the payload holds no secret of the vault.
  const text = JSON.stringify(toCloud.payload);
  assert.ok(!/secret|password|privateKey|keyMaterial/i.test(text), text);
  // An incremental only goes to the rule that replicates incrementals.
  await backUp(kv, f, MONDAY_2AM, "incremental");
  const monday = await claimJobs(kv, `bes:${f.engine.id}`, 50, MONDAY_2AM);
  assert.deepEqual(monday.map((j) => [j.kind, j.payload.ruleId, j.payload.pointType]), [
    ["replicate", f.local.id, "incremental"],
  ]);
});

Deno.test("replication status per point goes pending → running → succeeded/failed, and per rule counts and remembers the last", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const pointId = await backUp(kv, f, SUNDAY_2AM, "full");
  let rows = byTarget(await listReplicationsOfPoint(kv, pointId, SUNDAY_2AM));
  assert.deepEqual([rows["nas-copy"].status, rows["cloud-bucket"].status], ["pending", "pending"]);
  assert.equal(rows["cloud-bucket"].kekSource, "pam_vault");
  assert.equal((await replicaStats(kv, [f.local.id])).get(f.local.id)!.pending, 1);

  const at = new Date(SUNDAY_2AM.getTime() + 15 * 60_000);
  const jobs = await claimJobs(kv, `bes:${f.engine.id}`, 50, at);
  rows = byTarget(await listReplicationsOfPoint(kv, pointId, at));
  assert.deepEqual([rows["nas-copy"].status, rows["cloud-bucket"].status], ["running", "running"]);

  await answer(kv, jobs.find((j) => j.payload.ruleId === f.local.id)!, at, "success");
  await answer(kv, jobs.find((j) => j.payload.ruleId === f.offsite.id)!, at, "failed");
  rows = byTarget(await listReplicationsOfPoint(kv, pointId, at));
  assert.deepEqual(
    [rows["nas-copy"].status, rows["nas-copy"].bytes, rows["nas-copy"].endedAt],
    ["succeeded", 4096, "2026-11-29T02:17:00.000Z"],
  );
  assert.deepEqual(
    [rows["cloud-bucket"].status, rows["cloud-bucket"].error],
    ["failed", "bucket offsite: 403 Forbidden"],
  );
  const stats = await replicaStats(kv, [f.local.id, f.offsite.id]);
  assert.deepEqual(stats.get(f.local.id), {
    replicated: 1,
    pending: 0,
    failed: 0,
    lastReplicatedPointId: pointId,
    lastSuccessAt: "2026-11-29T02:17:00.000Z",
    lastFailedPointId: null,
    lastFailureAt: null,
    lastError: null,
  });
  const cloud = stats.get(f.offsite.id)!;
  assert.deepEqual(
    [cloud.replicated, cloud.pending, cloud.failed, cloud.lastFailedPointId, cloud.lastError],
    [0, 0, 1, pointId, "bucket offsite: 403 Forbidden"],
  );
  // The same result again changes nothing (a result is applied once).
  await answer(kv, jobs.find((j) => j.payload.ruleId === f.local.id)!, at, "success").catch(() => {});
  assert.equal((await replicaStats(kv, [f.local.id])).get(f.local.id)!.replicated, 1);
});

Deno.test("a replicate job whose lease runs out after its last attempt fails its replication with LEASE_EXPIRED", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const pointId = await backUp(kv, f, SUNDAY_2AM, "full");
  let at = SUNDAY_2AM;
  for (let attempt = 0; attempt < 3; attempt++) {
    assert.equal((await claimJobs(kv, `bes:${f.engine.id}`, 50, at)).length, 2);
    at = new Date(at.getTime() + 6 * 60_000);
    await expireLeases(kv, at);
  }
  const rows = await listReplicationsOfPoint(kv, pointId, at);
  assert.deepEqual(rows.map((r) => [r.status, r.error]), [
    ["failed", "The engine stopped reporting and the job used all its attempts"],
    ["failed", "The engine stopped reporting and the job used all its attempts"],
  ]);
  const stats = await replicaStats(kv, [f.local.id]);
  assert.deepEqual([stats.get(f.local.id)!.pending, stats.get(f.local.id)!.failed], [0, 1]);
});

Deno.test("GET /api/v1/restore-points/{id} and /api/v1/replicas return replication status per point and per rule", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const pointId = await backUp(kv, f, SUNDAY_2AM, "full");
  const jobs = await claimJobs(kv, `bes:${f.engine.id}`, 50, SUNDAY_2AM);
  await answer(kv, jobs.find((j) => j.payload.ruleId === f.local.id)!, SUNDAY_2AM, "success");
  const admin = await bearer(kv, f.users.admin, ["backup.view", "backup.restore"], f.clock.now());

  const res = await f.app.request(`/api/v1/restore-points/${pointId}`, { headers: admin });
  assert.equal(res.status, 200);
  const body = await res.json();
  const rows = byTarget(body.replications);
  assert.deepEqual(
    [rows["nas-copy"].status, rows["nas-copy"].bytes, rows["cloud-bucket"].status],
    ["succeeded", 4096, "running"],
  );

  const list = await f.app.request(`/api/v1/replicas?policyId=${f.policy.id}`, { headers: admin });
  assert.equal(list.status, 200);
  const rules = Object.fromEntries(
    (await list.json()).values.map((r: { targetName: string; stats: unknown }) => [r.targetName, r.stats]),
  );
  assert.deepEqual(
    [rules["nas-copy"].replicated, rules["nas-copy"].lastReplicatedPointId, rules["cloud-bucket"].pending],
    [1, pointId, 1],
  );
  const one = await f.app.request(`/api/v1/replicas/${f.local.id}`, { headers: admin });
  assert.equal(one.status, 200);
  const detail = await one.json();
  assert.deepEqual(
    [
      detail.kekSource,
      detail.stats.replicated,
      detail.recent.map((r: ReplicationView) => [r.restorePointId, r.status]),
    ],
    ["account", 1, [[pointId, "succeeded"]]],
  );
  // Another org's operator sees neither the rule nor its status.
  const dev = await bearer(kv, f.users.devOperator, ["backup.view", "backup.manage"], f.clock.now());
  assert.equal((await f.app.request(`/api/v1/replicas/${f.local.id}`, { headers: dev })).status, 404);
  assert.deepEqual((await (await f.app.request("/api/v1/replicas", { headers: dev })).json()).values, []);
  // ?policyId= reads that policy's rules: a policy out of scope (or unknown) is 404, not an empty list.
  const ofPolicy = (headers: HeadersInit, id: string) =>
    f.app.request(`/api/v1/replicas?policyId=${id}`, { headers });
  const outOfScope = await ofPolicy(dev, f.policy.id);
  assert.equal(outOfScope.status, 404);
  assert.equal((await outOfScope.json()).error.code, "not_found");
  assert.equal((await ofPolicy(admin, "01J0000000000000000000NONE")).status, 404);
});

Deno.test("POST /api/v1/replicas creates a rule with the form's schema; refusals change nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const third = await createTarget(kv, system, { ...targetInput(f.far.id), name: "third" }, {
    now: f.clock.now(),
    masterKey,
  });
  const operator = await bearer(kv, f.users.operator, ["backup.view", "backup.manage"], f.clock.now());
  const post = (headers: Record<string, string>, body: unknown) =>
    f.app.request("/api/v1/replicas", { method: "POST", headers, body: JSON.stringify(body) });
  const before = (await allRules(kv)).length;

  let res = await post(operator, {
    policyId: f.policy.id,
    targetId: third.id,
    replicateAfterFull: false,
    replicateAfterIncremental: false,
  });
  assert.equal(res.status, 422);
  const invalid = await res.json();
  assert.ok(invalid.error.fields.replicateAfterFull, JSON.stringify(invalid));
  res = await post(operator, { policyId: f.policy.id, targetId: third.id, kekSource: "hsm" });
  assert.equal(res.status, 422);
  assert.ok((await res.json()).error.fields.kekSource);
  const viewer = await bearer(kv, f.users.viewer, ["backup.view"], f.clock.now());
  assert.equal((await post(viewer, { policyId: f.policy.id, targetId: third.id })).status, 403);
  const dev = await bearer(kv, f.users.devOperator, ["backup.view", "backup.manage"], f.clock.now());
  assert.equal((await post(dev, { policyId: f.policy.id, targetId: third.id })).status, 404);
  assert.equal((await allRules(kv)).length, before, "refusals created nothing");

  res = await post(operator, { policyId: f.policy.id, targetId: third.id, kekSource: "pam_vault" });
  assert.equal(res.status, 201);
  const created = await res.json();
  assert.deepEqual(
    [created.policyId, created.targetId, created.kekSource, created.replicateAfterFull, created.isOffsite],
    [f.policy.id, third.id, "pam_vault", true, false],
  );
  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "replica.create");
  assert.match(audit.at(-1)!.summary, /files → third/);
});

Deno.test("the policy page and the restore point page show replication status per rule and per point", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const pointId = await backUp(kv, f, SUNDAY_2AM, "full");
  const jobs = await claimJobs(kv, `bes:${f.engine.id}`, 50, SUNDAY_2AM);
  await answer(kv, jobs.find((j) => j.payload.ruleId === f.local.id)!, SUNDAY_2AM, "success");
  await answer(kv, jobs.find((j) => j.payload.ruleId === f.offsite.id)!, SUNDAY_2AM, "failed");
  const browser = new Browser(f.app);
  await signInAs(browser, kv, f.users.admin, f.clock.now());

  const policyPage = await (await browser.get(`/backup/policies/${f.policy.id}`)).text();
  assert.match(policyPage, /1 replicated · 0 pending · 0 failed/);
  assert.match(policyPage, /0 replicated · 0 pending · 1 failed/);
  assert.match(policyPage, /last failure[\s\S]*bucket offsite: 403 Forbidden/);
  assert.match(policyPage, /Latest replications/);
  assert.ok(policyPage.includes(`/backup/restore/points/${pointId}#replication`));

  const pointPage = await (await browser.get(`/backup/restore/points/${pointId}`)).text();
  const section = pointPage.slice(pointPage.indexOf('id="replication"'));
  assert.match(section, /nas-copy[\s\S]*?data-status="succeeded"|data-status="succeeded"[\s\S]*?nas-copy/);
  assert.match(
    section,
    /<tr[^>]*data-status="failed"[^>]*>[\s\S]*?cloud-bucket[\s\S]*?bucket offsite: 403 Forbidden/,
  );
  assert.match(section, /4\.0 KiB|4 KiB|4096/);
});

Deno.test("Backup > Replicas creates a rule for a policy the user manages (same schema as the policy page)", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const third = await createTarget(kv, system, { ...targetInput(f.far.id), name: "third" }, {
    now: f.clock.now(),
    masterKey,
  });
  const browser = new Browser(f.app);
  await signInAs(browser, kv, f.users.operator, f.clock.now());
  const page = await (await browser.get("/backup/replicas")).text();
  assert.match(page, /Add a replica rule/);
  assert.match(page, new RegExp(`<option\\s+value="${f.policy.id}"[^>]*>files</option>`));
  assert.match(page, /third \(Local/);

  // Invalid: neither after full nor after incremental — 422 with the field's message and the typed values.
  let res = await browser.postForm("/backup/replicas", {
    policyId: f.policy.id,
    targetId: third.id,
    kekSource: "pam_vault",
  }, { tokenFrom: "/backup/replicas" });
  assert.equal(res.status, 422);
  const refused = await res.text();
  assert.match(refused, /choose when to replicate/i);
  assert.match(refused, /<option\s+value="pam_vault"\s+selected/);
  assert.equal((await allRules(kv)).length, 2);

  // A conflict (the target's BES is being deleted): 409 as the API answers, the reason, nothing created.
  const far = await kv.get<Engine>(["engines", f.far.id]);
  await setFleetStatus(kv, "engine", f.far.id, "deleting");
  res = await browser.postForm("/backup/replicas", {
    policyId: f.policy.id,
    targetId: third.id,
    replicateAfterFull: "on",
  }, { tokenFrom: "/backup/replicas" });
  assert.equal(res.status, 409);
  assert.match(await res.text(), /This BES is being deleted/);
  assert.equal((await allRules(kv)).length, 2);
  await setFleetStatus(kv, "engine", f.far.id, far.value!.status, far.value!);

  res = await browser.postForm("/backup/replicas", {
    policyId: f.policy.id,
    targetId: third.id,
    kekSource: "pam_vault",
    replicateAfterFull: "on",
    isOffsite: "on",
  }, { tokenFrom: "/backup/replicas" });
  assert.equal(res.status, 303);
  const rule = (await allRules(kv)).find((r) => r.targetId === third.id)!;
  assert.deepEqual(
    [rule.policyId, rule.kekSource, rule.replicateAfterFull, rule.replicateAfterIncremental, rule.isOffsite],
    [f.policy.id, "pam_vault", true, false, true],
  );
  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "replica.create");
  assert.equal(audit.length, 3);

  // A viewer sees the rules but no form, and cannot post one.
  const viewer = new Browser(f.app);
  await signInAs(viewer, kv, f.users.viewer, f.clock.now());
  const viewerPage = await (await viewer.get("/backup/replicas")).text();
  assert.ok(!viewerPage.includes("Add a replica rule"));
  res = await viewer.postForm("/backup/replicas", { policyId: f.policy.id, targetId: f.nas.id }, {
    tokenFrom: "/backup/replicas",
  });
  assert.equal(res.status, 403);
  // Another org's operator: the policy is not in scope, nothing is created.
  const dev = new Browser(f.app);
  await signInAs(dev, kv, f.users.devOperator, f.clock.now());
  res = await dev.postForm("/backup/replicas", {
    policyId: f.policy.id,
    targetId: third.id,
    replicateAfterFull: "on",
  }, { tokenFrom: "/backup/replicas" });
  assert.equal(res.status, 422);
  assert.equal((await allRules(kv)).length, 3);
});

Deno.test("listRecentReplications() leaves out points of a host outside the viewer's scope", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  // An admin assigned a host of Dev to the Ops policy: its points are Dev's files.
  const { host: devHost } = await enrollHost(kv, { accountId: f.tenant.account.id, orgId: f.dev.id }, {
    hostname: "dev1.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.3",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, f.clock.now());
  await applyHostHeartbeat(kv, devHost.id, { version: "1", metrics: engineMetrics() }, f.clock.now());
  await assignHost(kv, system, { policyId: f.policy.id, hostId: devHost.id }, f.clock.now());
  const opsPoint = await backUp(kv, f, SUNDAY_2AM, "full");
  const [job] = await claimJobs(kv, `agent:${devHost.id}`, 1, SUNDAY_2AM);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "success",
    startedAt: SUNDAY_2AM.toISOString(),
    endedAt: SUNDAY_2AM.toISOString(),
    bytesTransferred: 1,
    protectedBytes: 1,
    output: { restorePoint: { id: "dev-rp", chainId: "d", type: "full", sizeBytes: 1, fileCount: 1 } },
  }, SUNDAY_2AM);
  await applyJobOutcome(kv, done, SUNDAY_2AM);
  const seen = async (user: Parameters<typeof userActor>[0]) =>
    new Set(
      (await listRecentReplications(
        kv,
        userActor(user),
        await listReplicasByPolicy(kv, userActor(user), f.policy.id),
        SUNDAY_2AM,
        { limit: 20 },
      ))
        .map((r) => r.restorePointId),
    );
  const admin = await seen(f.users.admin);
  assert.equal(admin.size, 2);
  assert.deepEqual([...await seen(f.users.operator)], [opsPoint]);
});

/** Makes the rule's data look as it did before the per-rule counts and index (and `success`) existed. */
async function toLegacy(kv: Deno.Kv, ruleId: string, options: { success?: boolean } = {}) {
  for await (const e of kv.list({ prefix: ["replications_by_rule", ruleId] })) await kv.delete(e.key);
  for await (const e of kv.list({ prefix: ["replica_counts", ruleId] })) await kv.delete(e.key);
  await kv.delete(["replica_last", ruleId]);
  if (!options.success) return;
  for await (const e of kv.list<{ status: string }>({ prefix: ["replications"] })) {
    if (e.key[2] === ruleId && e.value.status === "succeeded") {
      await kv.set(e.key, { ...e.value, status: "success" });
    }
  }
}

Deno.test("start-up data fix: counts, last results and index of replications from before the counts are rebuilt once", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  // Sunday's full: both rules replicate it; the local one succeeds, then becomes legacy (`success`, no counts).
  const sunday = await backUp(kv, f, SUNDAY_2AM, "full");
  const at = new Date(SUNDAY_2AM.getTime() + 15 * 60_000);
  const jobs = await claimJobs(kv, `bes:${f.engine.id}`, 50, at);
  await answer(kv, jobs.find((j) => j.payload.ruleId === f.local.id)!, at, "success");
  await toLegacy(kv, f.local.id, { success: true });
  // The offsite rule's replication was queued before the counts: its result then takes pending to −1.
  await toLegacy(kv, f.offsite.id);
  await answer(kv, jobs.find((j) => j.payload.ruleId === f.offsite.id)!, at, "failed");
  // Monday's incremental (local rule only) is queued with today's code: pending 1.
  const monday = await backUp(kv, f, MONDAY_2AM, "incremental");
  let stats = await replicaStats(kv, [f.local.id, f.offsite.id]);
  assert.deepEqual(
    [stats.get(f.offsite.id)!.pending, stats.get(f.local.id)!.replicated],
    [-1, 0],
    "wrong before",
  );
  const violations = (await checkInvariants(kv)).join("\n");
  assert.match(violations, /replica_counts/, "the consistency check reports the wrong counts");

  const fix = await rebuildReplicaCounts(kv, MONDAY_2AM);
  assert.equal(fix.skipped, false);
  assert.deepEqual(
    fix.corrected.map((c) => [c.ruleId, c.before, c.after]).sort(),
    [
      [f.local.id, { pending: 1, succeeded: 0, failed: 0 }, { pending: 1, succeeded: 1, failed: 0 }],
      [f.offsite.id, { pending: -1, succeeded: 0, failed: 1 }, { pending: 0, succeeded: 0, failed: 1 }],
    ].sort(),
    "every correction is reported, nothing clamped",
  );
  stats = await replicaStats(kv, [f.local.id, f.offsite.id]);
  const local = stats.get(f.local.id)!;
  assert.deepEqual(
    [local.replicated, local.pending, local.failed, local.lastReplicatedPointId],
    [1, 1, 0, sunday],
  );
  const offsite = stats.get(f.offsite.id)!;
  assert.deepEqual([offsite.replicated, offsite.pending, offsite.failed, offsite.lastFailedPointId], [
    0,
    0,
    1,
    sunday,
  ]);
  const indexed = async (ruleId: string) =>
    (await Array.fromAsync(kv.list<string>({ prefix: ["replications_by_rule", ruleId] }))).map((e) =>
      e.value
    );
  assert.deepEqual(await indexed(f.local.id), [sunday, monday]);
  assert.deepEqual(await indexed(f.offsite.id), [sunday]);
  assert.equal(
    (await kv.get<{ status: string }>(["replications", sunday, f.local.id])).value!.status,
    "succeeded",
  );
  assert.deepEqual(await checkInvariants(kv), []);
  // Once: a marker makes the next start skip it; forced, it finds nothing to correct.
  assert.equal((await rebuildReplicaCounts(kv, MONDAY_2AM)).skipped, true);
  assert.deepEqual((await rebuildReplicaCounts(kv, MONDAY_2AM, { force: true })).corrected, []);
});

Deno.test("removing a rule deletes its replication index in the same write (nothing left if the process stops after it)", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await backUp(kv, f, SUNDAY_2AM, "full");
  // The process stops right after the rule's removal commits: nothing is deleted key by key afterwards.
  const stopped = new Proxy(kv, {
    get(target, prop) {
      if (prop === "delete") return () => Promise.reject(new Error("process stopped"));
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  await deleteReplica(stopped, system, f.local.id, SUNDAY_2AM).catch(() => {});
  assert.equal((await kv.get(["replicas", f.local.id])).versionstamp, null, "the rule is gone");
  assert.deepEqual(await Array.fromAsync(kv.list({ prefix: ["replications_by_rule", f.local.id] })), []);
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("a rule with a large replication index: removed, the rest is deleted after, and resumed after a crash", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const many = async (ruleId: string) => {
    for (let i = 0; i < 1200; i += 100) {
      const op = kv.atomic();
      for (let j = i; j < i + 100; j++) {
        op.set(["replications_by_rule", ruleId, `p-${String(j).padStart(5, "0")}`], "x");
      }
      await op.commit();
    }
  };
  await many(f.local.id);
  await deleteReplica(kv, system, f.local.id, SUNDAY_2AM);
  assert.deepEqual(await Array.fromAsync(kv.list({ prefix: ["replications_by_rule", f.local.id] })), []);
  assert.deepEqual(await Array.fromAsync(kv.list({ prefix: ["replica_index_cleanups"] })), []);
  // A crash after the removal's write: its cleanup record stays and the purge job finishes it.
  await many(f.offsite.id);
  const crashing = new Proxy(kv, {
    get(target, prop) {
      if (prop === "list") {
        return (selector: Deno.KvListSelector, options?: Deno.KvListOptions) => {
          // Past the removal's own bounded read, the process is gone.
          if (
            options?.limit === undefined && "prefix" in selector &&
            selector.prefix[0] === "replications_by_rule"
          ) {
            throw new Error("process stopped");
          }
          return target.list(selector, options);
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  await deleteReplica(crashing, system, f.offsite.id, SUNDAY_2AM).catch(() => {});
  assert.equal((await kv.get(["replicas", f.offsite.id])).versionstamp, null, "the rule is gone");
  assert.equal((await kv.get(["replica_index_cleanups", f.offsite.id])).versionstamp !== null, true);
  assert.equal(await resumeReplicaIndexCleanups(kv), 1);
  assert.deepEqual(await Array.fromAsync(kv.list({ prefix: ["replications_by_rule", f.offsite.id] })), []);
  assert.deepEqual(await Array.fromAsync(kv.list({ prefix: ["replica_index_cleanups"] })), []);
});
