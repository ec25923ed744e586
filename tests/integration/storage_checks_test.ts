/** Storage checks for every target (issue 14 item 7): the target page's buttons, the API, host choice and refusals. */
import assert from "node:assert/strict";
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";

import { ConflictError } from "../../domain/errors.ts";
import { decommissionHost } from "../../domain/archive.ts";
import { applyHostHeartbeat, type Host } from "../../domain/hosts.ts";
import { applyResult, claimJobs, type Job } from "../../domain/job_queue.ts";
import type { Permission } from "../../domain/types.ts";
import { systemActor } from "../../domain/rbac.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";

import {
  applyCapacityReport,
  createTarget,
  healthCheckHostRank,
  readStorageChecks,
  requestStorageCheck,
} from "../../domain/storage.ts";
import {
  addUser,
  assertIncludes,
  auditEntries,
  Browser,
  createTenant,
  dumpKv,
  engineMetrics,
  enrollTestHost,
  onlineTestEngine,
  signInAs,
  targetInput,
  testApp,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

/** An account with orgs Ops and Lab, an online BES in Ops with a healthy target (10 % used), and users. */
async function fixture(kv: Deno.Kv) {
  const clock = new TestClock(new Date("2026-11-29T10:00:00Z"));
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops", "Lab"], now);
  const [ops, lab] = tenant.orgs;
  const { engine } = await onlineTestEngine(kv, { accountId: tenant.account.id, orgId: ops.id }, now);
  const target = await createTarget(kv, system, targetInput(engine.id), { now, masterKey });
  await applyCapacityReport(kv, engine.id, {
    targetId: target.id,
    totalBytes: 1000,
    usedBytes: 100,
    freeBytes: 900,
  }, now);
  // An account-level BES (no org) with its own target.
  const { engine: accountEngine } = await onlineTestEngine(
    kv,
    { accountId: tenant.account.id, orgId: null },
    now,
    "bes-acct",
  );
  const accountTarget = await createTarget(kv, system, targetInput(accountEngine.id), { now, masterKey });
  const users = {
    viewer: await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", now),
    operator: await addUser(kv, tenant, "operator@acme.example", "operator", "all", now),
    labOperator: await addUser(kv, tenant, "lab@acme.example", "operator", [lab], now),
  };
  /** Enrolls a host (online unless said otherwise). */
  const host = (
    name: string,
    options: { org?: string; relay?: boolean; online?: boolean; accountId?: string } = {},
  ): Promise<Host> =>
    enrollTestHost(
      kv,
      { accountId: options.accountId ?? tenant.account.id, orgId: options.org ?? ops.id },
      name,
      clock.now(),
      options,
    );
  return { clock, tenant, ops, lab, engine, target, accountEngine, accountTarget, users, host };
}

/** The storage-check jobs queued so far: [kind, principal]. */
async function checkJobs(kv: Deno.Kv) {
  return (await Array.fromAsync(kv.list<Job>({ prefix: ["jobs"] }))).map((e) => e.value)
    .filter((j) => j.payload.scope === "storage_target").map((j) => [j.kind, j.principal]);
}

function snapshot(kv: Deno.Kv) {
  return dumpKv(kv).then((d) => JSON.stringify(d, (_k, v) => typeof v === "bigint" ? v.toString() : v));
}

Deno.test("storage checks on a healthy target: the target page's buttons queue them and show the last result", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const relay = await f.host("relay-1", { relay: true });
  const { app } = testApp(kv, f.clock);
  const page = `/backup/storage/${f.target.id}`;

  const viewer = new Browser(app);
  await signInAs(viewer, kv, f.users.viewer, f.clock.now());
  const seen = await (await viewer.get(page)).text();
  assertIncludes(seen, "Storage checks");
  assertIncludes(seen, ">healthy<", "the target is healthy: not on the dashboard's alert cards");
  assert.ok(!seen.includes(`action="${page}/health-check"`), "no buttons without backup.manage");
  assert.equal((await viewer.postForm(`${page}/health-check`, {}, { tokenFrom: page })).status, 403);

  const operator = new Browser(app);
  await signInAs(operator, kv, f.users.operator, f.clock.now());
  const html = await (await operator.get(page)).text();
  assertIncludes(html, `action="${page}/health-check"`);
  assertIncludes(html, `action="${page}/verify"`);
  for (const path of ["health-check", "verify"]) {
    const res = await operator.postForm(`${page}/${path}`, {}, { tokenFrom: page });
    assert.equal(res.status, 303, path);
    assert.equal(res.headers.get("location"), `${page}#checks`);
  }
  assert.deepEqual(await checkJobs(kv), [["health_check", `agent:${relay.id}`], [
    "verify",
    `bes:${f.engine.id}`,
  ]]);
  const queued = await (await operator.get(page)).text();
  assertIncludes(queued, "relay-1.acme.example", "where the health check runs");
  assertIncludes(queued, ">queued<");

  // The agent answers the probe, the BES the verification: the page shows both results.
  const [probe] = await claimJobs(kv, `agent:${relay.id}`, 1, f.clock.now());
  assert.deepEqual(probe.payload.target, { id: f.target.id, type: f.target.type, config: f.target.config });
  const { job: probed } = await applyResult(kv, probe.principal, probe.id, {
    status: "success",
    startedAt: f.clock.now().toISOString(),
    endedAt: f.clock.now().toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    output: { probe: { reachable: true, latencyMs: 12, error: null } },
  }, f.clock.now());
  await applyJobOutcome(kv, probed, f.clock.now());
  const [verify] = await claimJobs(kv, `bes:${f.engine.id}`, 1, f.clock.now());
  const { job: verified } = await applyResult(kv, verify.principal, verify.id, {
    status: "failed",
    startedAt: f.clock.now().toISOString(),
    endedAt: f.clock.now().toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    error: { reason: "VERIFY_MISMATCH", message: "2 chains broken\nchain c1: missing parent" },
    retryable: false,
    output: { verification: { status: "failed", sampled: 50, failedCount: 2, details: "" } },
  }, f.clock.now());
  await applyJobOutcome(kv, verified, f.clock.now());
  const done = await (await operator.get(page)).text();
  assertIncludes(done, "reachable, 12 ms");
  assertIncludes(done, "failed: 50 sampled, 2 failed");
  assertIncludes(done, "2 chains broken");
  assert.ok(!done.includes("missing parent"), "only the first line of the error");
  const actions = (await auditEntries(kv, f.tenant.account.id)).map((e) => e.action);
  assert.deepEqual(actions.filter((a) => a.startsWith("storage.")), [
    "storage.health_check",
    "storage.verify",
  ]);
});

Deno.test("POST /api/v1/storage/{id}/health-check and …/verify queue checks of any target; GET …/checks shows them", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const relay = await f.host("relay-1", { relay: true });
  const { app } = testApp(kv, f.clock);
  const tokenOf = async (user: typeof f.users.operator, permissions: Permission[]) =>
    (await createApiToken(kv, userActor(user), { name: "ci", permissions, expiresInDays: 90 }, f.clock.now()))
      .secret;
  const call = (secret: string, method: string, path: string) =>
    app.request(`http://localhost:8000${path}`, {
      method,
      headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
      body: method === "POST" ? "{}" : undefined,
    });
  const operator = await tokenOf(f.users.operator, ["backup.view", "backup.manage"]);
  const base = `/api/v1/storage/${f.target.id}`;

  const before = await call(operator, "GET", `${base}/checks`);
  assert.equal(before.status, 200);
  assert.deepEqual(await before.json(), { health_check: null, verify: null });

  const health = await call(operator, "POST", `${base}/health-check`);
  assert.equal(health.status, 202);
  const queued = await health.json();
  assert.equal(queued.check, "health_check");
  assert.equal(queued.principal, `agent:${relay.id}`);
  assert.equal(queued.runsOn, "relay-1.acme.example");
  assert.match(queued.jobId, /^[0-9A-Z]{26}$/);
  const verify = await call(operator, "POST", `${base}/verify`);
  assert.equal(verify.status, 202);
  assert.equal((await verify.json()).principal, `bes:${f.engine.id}`);
  const checks = await (await call(operator, "GET", `${base}/checks`)).json();
  assert.equal(checks.health_check.jobId, queued.jobId);
  assert.equal(checks.health_check.state, "queued");
  assert.equal(checks.verify.runsOn, "bes-1");

  // Permission and scope: a viewer's token is 403, an operator of another org 404; nothing is queued.
  const jobs = (await checkJobs(kv)).length;
  const viewer = await tokenOf(f.users.viewer, ["backup.view"]);
  const lab = await tokenOf(f.users.labOperator, ["backup.view", "backup.manage"]);
  for (const path of ["health-check", "verify"]) {
    assert.equal((await call(viewer, "POST", `${base}/${path}`)).status, 403);
    assert.equal((await call(lab, "POST", `${base}/${path}`)).status, 404);
  }
  assert.equal((await call(lab, "GET", `${base}/checks`)).status, 404);
  assert.equal((await checkJobs(kv)).length, jobs);
});

Deno.test("healthCheckHostRank(): an org's target only on its org's hosts (relay first); an account-level target on any host of the account", () => {
  const target = { accountId: "A", orgId: "ops" };
  const rank = (host: { orgId: string; relay: boolean; accountId?: string }) =>
    healthCheckHostRank({ accountId: "A", ...host }, target);
  assert.equal(rank({ orgId: "ops", relay: true }), 0);
  assert.equal(rank({ orgId: "ops", relay: false }), 1);
  assert.equal(rank({ orgId: "lab", relay: true }), null, "never a host of another org");
  assert.equal(rank({ orgId: "lab", relay: false }), null, "never a host of another org");
  assert.equal(rank({ orgId: "ops", relay: true, accountId: "B" }), null, "never a host of another account");
  const accountLevel = { accountId: "A", orgId: null };
  assert.equal(healthCheckHostRank({ accountId: "A", orgId: "lab", relay: true }, accountLevel), 0);
  assert.equal(healthCheckHostRank({ accountId: "A", orgId: "ops", relay: false }, accountLevel), 1);
  assert.equal(healthCheckHostRank({ accountId: "B", orgId: "ops", relay: true }, accountLevel), null);
});

Deno.test("the health check runs on an online host of the target's org (relay first); an account-level target on any host of the account", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const op = userActor(f.users.operator);
  const now = () => f.clock.now();
  const runsOn = async (targetId = f.target.id) =>
    (await requestStorageCheck(kv, op, targetId, "health_check", now())).runsOn;

  // Only offline hosts, and hosts of another account: nothing may run it.
  await f.host("offline-relay", { relay: true, online: false });
  const other = await createTenant(kv, "Other", ["X"], now());
  await f.host("foreign-relay", { relay: true, accountId: other.account.id, org: other.orgs[0].id });
  await assert.rejects(() => runsOn(), ConflictError);

  // Online hosts of another org of the same account never run the Ops target's check (its settings would
  // reach Lab's agent, and Ops's viewers would see Lab's hostname): refused, nothing written.
  await f.host("lab-plain", { org: f.lab.id });
  await f.host("lab-relay", { org: f.lab.id, relay: true });
  const before = await snapshot(kv);
  const refused = await runsOn().catch((e) => e);
  assert.ok(refused instanceof ConflictError, "no host of the target's org is online");
  assert.match(refused.message, /No host of the target's organization is online to run the health check of /);
  assert.equal(await snapshot(kv), before, "nothing queued, nothing audited");
  // The account-level target may use any host of the account, a relay host first.
  assert.equal(await runsOn(f.accountTarget.id), "lab-relay.acme.example");

  await f.host("ops-plain");
  assert.equal(await runsOn(), "ops-plain.acme.example", "a host of the target's org");
  await f.host("ops-relay", { relay: true });
  assert.equal(await runsOn(), "ops-relay.acme.example", "a relay host of the target's org first");
  const principals = (await checkJobs(kv)).filter(([kind]) => kind === "health_check").map(([, p]) => p);
  const labIds = new Set(
    (await Array.fromAsync(kv.list<Host>({ prefix: ["hosts"] }))).map((e) => e.value)
      .filter((h) => h.orgId === f.lab.id).map((h) => `agent:${h.id}`),
  );
  assert.deepEqual(
    principals.map((p) => labIds.has(p)),
    [true, false, false],
    "only the account-level target's check went to a Lab host",
  );

  // A host whose heartbeat is older than 3 minutes no longer counts, whatever its stored status says.
  f.clock.advance(4 * 60_000);
  await assert.rejects(() => runsOn(), /No host of the target's organization is online/);
  await assert.rejects(() => runsOn(f.accountTarget.id), /No host of this account is online/);
});

Deno.test("storage check refusals: no online host, BES offline; each changes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const op = userActor(f.users.operator);
  const before = await snapshot(kv);
  const health = await requestStorageCheck(kv, op, f.target.id, "health_check", f.clock.now()).catch((e) =>
    e
  );
  assert.ok(health instanceof ConflictError);
  assert.match(health.message, /No host of the target's organization is online to run the health check of /);
  f.clock.advance(10 * 60_000); // the BES stops heartbeating
  const verify = await requestStorageCheck(kv, op, f.target.id, "verify", f.clock.now()).catch((e) => e);
  assert.ok(verify instanceof ConflictError);
  assert.match(
    verify.message,
    /runs on its BES bes-1, which is offline \(last heartbeat 2026-11-29T10:00:00\.000Z\)/,
  );
  assert.equal(await snapshot(kv), before, "nothing queued, nothing audited");
  assert.deepEqual(await readStorageChecks(kv, op, f.target), { health_check: null, verify: null });

  // The page reports the refusal as its notice.
  const { app } = testApp(kv, f.clock);
  const operator = new Browser(app);
  await signInAs(operator, kv, f.users.operator, f.clock.now());
  const page = `/backup/storage/${f.target.id}`;
  assert.equal((await operator.postForm(`${page}/verify`, {}, { tokenFrom: page })).status, 303);
  assertIncludes(await (await operator.get(page)).text(), "Not queued: The integrity verification of");
  assert.equal(await snapshot(kv).then((s) => s.includes('"storage_checks"')), false);
});

Deno.test("a decommissioned host whose agent still heartbeats never runs a health check", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const op = userActor(f.users.operator);
  const relay = await f.host("retired-relay", { relay: true });
  await decommissionHost(
    kv,
    system,
    relay.id,
    { confirmHostname: "retired-relay.acme.example" },
    f.clock.now(),
  );
  for (let i = 0; i < 3; i++) {
    f.clock.advance(60_000);
    const { host } = await applyHostHeartbeat(
      kv,
      relay.id,
      { version: "1", metrics: engineMetrics() },
      f.clock.now(),
    );
    assert.equal(host.status, "decommissioned");
    assert.equal(host.lastHeartbeatAt, f.clock.now().toISOString(), "its agent still heartbeats");
    await assert.rejects(
      () => requestStorageCheck(kv, op, f.target.id, "health_check", f.clock.now()),
      /No host of the target's organization is online/,
    );
    await assert.rejects(
      () => requestStorageCheck(kv, op, f.accountTarget.id, "health_check", f.clock.now()),
      /No host of this account is online/,
    );
  }
  // An in-service plain host is chosen over the retired relay host.
  await f.host("ops-plain");
  const queued = await requestStorageCheck(kv, op, f.target.id, "health_check", f.clock.now());
  assert.equal(queued.runsOn, "ops-plain.acme.example");
  assert.deepEqual((await checkJobs(kv)).filter(([, p]) => p === `agent:${relay.id}`), []);
});
