/**
 * Archive On Host Deactivation (issue 14, item 9): decommissioning a host archives its assignments; with
 * the policy setting on its restore points are kept (archived, out of retention until an operator
 * expires them), with it off they follow retention; reassigning reactivates the host; refusals change
 * nothing; a decommission interrupted by a crash is finished by the host sweep.
 */
import assert from "node:assert/strict";
import { createApiToken } from "../../domain/api_tokens.ts";
import {
  ARCHIVE_ASSIGNMENT_BATCH,
  decommissionHost,
  expireArchivedPoint,
  finishDecommission,
} from "../../domain/archive.ts";
import { assignHost, type Assignment, setAssignmentState } from "../../domain/assignments.ts";
import { userActor } from "../../domain/auth.ts";
import { readSummary } from "../../domain/dashboard.ts";

import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import { applyHostHeartbeat, enrollHost, getHost, type Host } from "../../domain/hosts.ts";
import { checkInvariants } from "../../domain/invariants.ts";
import { applyResult, claimJobs, type Job } from "../../domain/job_queue.ts";
import { createPolicy, type Policy } from "../../domain/policies.ts";
import { readProtectedFor } from "../../domain/protected.ts";
import { systemActor } from "../../domain/rbac.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import { applyRetention } from "../../domain/retention_apply.ts";
import { indexRestorePointsByHost, type RestorePoint } from "../../domain/restore_points.ts";
import { listRunsByPolicy } from "../../domain/runs.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import type { Permission, User } from "../../domain/types.ts";
import { sweepHosts } from "../../jobs/sweep_hosts.ts";
import {
  addUser,
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
const DAY = 86_400_000;

/** A tenant with an online BES, a daily-full policy (7 daily, nothing weekly or monthly) and one host. */
async function fixture(kv: Deno.Kv, options: { archive?: boolean } = {}) {
  const clock = new TestClock(new Date("2026-11-01T01:00:00Z"));
  const { app } = testApp(kv, clock);
  const tenant = await createTenant(kv, "Acme", ["Ops", "Dev"], clock.now());
  const [ops, dev] = tenant.orgs;
  const scope = { accountId: tenant.account.id, orgId: ops.id };
  const { engine } = await onlineTestEngine(kv, scope, clock.now());
  const target = await createTarget(kv, system, targetInput(engine.id), { now: clock.now(), masterKey });
  const newPolicy = (name: string, archive: boolean) =>
    createPolicy(kv, system, {
      name,
      besId: engine.id,
      targetId: target.id,
      backupType: "file",
      fullSchedule: "0 2 * * *",
      retentionDaily: 7,
      retentionWeekly: 0,
      retentionMonthly: 0,
      verifyAfterBackup: false,
      archiveOnHostDeactivation: archive,
    }, clock.now());
  const policy = await newPolicy("daily", options.archive ?? true);
  const host = await enrollTestHost(kv, scope, "h1", clock.now());
  const { assignment } = await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, clock.now());
  const users = {
    admin: await addUser(kv, tenant, "admin@acme.example", "admin", "all", clock.now()),
    operator: await addUser(kv, tenant, "op@acme.example", "operator", [ops], clock.now()),
    viewer: await addUser(kv, tenant, "viewer@acme.example", "viewer", [ops], clock.now()),
    restorer: await addUser(kv, tenant, "restore@acme.example", "restore_operator", [ops], clock.now()),
    devOperator: await addUser(kv, tenant, "dev@acme.example", "operator", [dev], clock.now()),
  };
  return { app, clock, tenant, ops, dev, engine, target, policy, host, assignment, users, newPolicy };
}

type Fixture = Awaited<ReturnType<typeof fixture>>;

/** The agent answers the host's pending backup job of `policyId` at `at` with a restore point. */
async function answerBackup(
  kv: Deno.Kv,
  hostId: string,
  at: Date,
  point: { id: string; type: "full" | "incremental"; parentId?: string | null },
) {
  const [job] = await claimJobs(kv, `agent:${hostId}`, 1, at);
  assert.ok(job, `a backup job for the host at ${at.toISOString()}`);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "success",
    startedAt: at.toISOString(),
    endedAt: new Date(at.getTime() + 600_000).toISOString(),
    bytesTransferred: 100,
    protectedBytes: 100,
    output: {
      restorePoint: {
        id: point.id,
        chainId: point.type === "full" ? `chain-${point.id}` : "chain-full",
        type: point.type,
        parentId: point.parentId ?? null,
        sizeBytes: 100,
        fileCount: 1,
        completedAt: new Date(at.getTime() + 600_000).toISOString(),
      },
    },
  }, at);
  await applyJobOutcome(kv, done as Job, at);
}

/** Ten days of daily fulls of the fixture's host (2026-11-01 … 2026-11-10). */
async function tenDays(kv: Deno.Kv, f: Fixture) {
  for (let d = 0; d < 10; d++) {
    const at = new Date(Date.UTC(2026, 10, 1 + d, 2));
    await runSchedulerTick(kv, at);
    await answerBackup(kv, f.host.id, at, { id: `rp-${d}`, type: "full" });
  }
}

async function pointsOf(kv: Deno.Kv, policyId: string): Promise<RestorePoint[]> {
  const out: RestorePoint[] = [];
  for await (const e of kv.list<string>({ prefix: ["restore_points_by_policy", policyId] })) {
    out.push((await kv.get<RestorePoint>(["restore_points", e.value])).value!);
  }
  return out;
}

async function assignmentsOf(kv: Deno.Kv, hostId: string): Promise<Assignment[]> {
  const out: Assignment[] = [];
  for await (const e of kv.list<string>({ prefix: ["assignments_by_host", hostId] })) {
    out.push((await kv.get<Assignment>(["assignments", e.value])).value!);
  }
  return out;
}

async function bearer(kv: Deno.Kv, user: User, permissions: Permission[], now: Date) {
  const { secret } = await createApiToken(
    kv,
    userActor(user),
    { name: "t", permissions, expiresInDays: 1 },
    now,
  );
  return { authorization: `Bearer ${secret}`, "content-type": "application/json" };
}

const AFTER = new Date("2026-11-11T05:00:00Z");

for (const archive of [true, false]) {
  Deno.test(`decommission with Archive On Host Deactivation ${archive ? "on keeps every restore point through retention" : "off lets retention expire them per GFS"}`, async () => {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv, { archive });
    await tenDays(kv, f);
    const operator = userActor(f.users.operator);
    const before = await readSummary(kv, operator, AFTER);
    assert.deepEqual([before.protected, before.unprotectedHosts], [1, 0]);

    const result = await decommissionHost(
      kv,
      operator,
      f.host.id,
      { confirmHostname: "h1.acme.example" },
      AFTER,
    );
    assert.equal(result.host.status, "decommissioned");
    assert.equal(result.archivedAssignments, 1);
    assert.equal(result.archivedPoints, archive ? 10 : 0);
    assert.deepEqual([result.keptUnder, result.retainedUnder], archive ? [["daily"], []] : [[], ["daily"]]);
    const host = (await getHost(kv, f.host.id))!;
    assert.deepEqual([host.status, host.decommissionedAt], ["decommissioned", AFTER.toISOString()]);
    assert.deepEqual((await assignmentsOf(kv, f.host.id)).map((a) => a.state), ["archived"]);
    const object = (await readProtectedFor(kv, f.host.id, f.policy.id)).entry!.value!;
    assert.equal(object.protection, "archived");
    // Numbers stay honest: nothing protected any more, and a retired host is not an unprotected one.
    const after = await readSummary(kv, operator, AFTER);
    assert.deepEqual([after.protected, after.unprotectedHosts], [0, 0]);
    const [audit] = (await auditEntries(kv, f.tenant.account.id)).filter((e) =>
      e.action === "host.decommission"
    );
    assert.match(
      audit.summary,
      archive
        ? /1 assignment archived; restore points kept \(archived\) under daily/
        : /follow retention under daily/,
    );

    const { expired } = await applyRetention(kv, AFTER);
    const points = await pointsOf(kv, f.policy.id);
    if (archive) {
      assert.equal(expired, 0);
      assert.ok(points.every((p) => p.status === "complete" && p.archivedAt === AFTER.toISOString()));
    } else {
      // GFS: 7 daily buckets kept, the 3 oldest expired.
      assert.equal(expired, 3);
      assert.deepEqual(
        points.filter((p) => p.status === "expired").map((p) => p.engineRestorePointId),
        ["rp-0", "rp-1", "rp-2"],
      );
      assert.ok(points.every((p) => !p.archivedAt));
    }
    // No run is dispatched to a decommissioned host.
    const runs = (await listRunsByPolicy(kv, f.policy.id)).length;
    await runSchedulerTick(kv, new Date("2026-11-12T02:00:00Z"));
    assert.equal((await listRunsByPolicy(kv, f.policy.id)).length, runs);
    // Its heartbeat does not bring it back.
    await applyHostHeartbeat(kv, f.host.id, { version: "1", metrics: engineMetrics() }, AFTER);
    assert.equal((await getHost(kv, f.host.id))!.status, "decommissioned");
    assert.deepEqual(await checkInvariants(kv), []);
  });
}

Deno.test("decommission archives a host's points only under the policies with the setting on", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv, { archive: true });
  const off = await f.newPolicy("weekly-off", false);
  await assignHost(kv, system, { policyId: off.id, hostId: f.host.id }, f.clock.now());
  for (let d = 0; d < 10; d++) {
    const at = new Date(Date.UTC(2026, 10, 1 + d, 2));
    await runSchedulerTick(kv, at);
    await answerBackup(kv, f.host.id, at, { id: `a-${d}`, type: "full" });
    await answerBackup(kv, f.host.id, at, { id: `b-${d}`, type: "full" });
  }
  const result = await decommissionHost(kv, system, f.host.id, { confirmHostname: "h1.acme.example" }, AFTER);
  assert.deepEqual([result.archivedAssignments, result.archivedPoints], [2, 10]);
  await applyRetention(kv, AFTER);
  assert.deepEqual((await pointsOf(kv, f.policy.id)).filter((p) => p.status === "expired").length, 0);
  assert.deepEqual((await pointsOf(kv, off.id)).filter((p) => p.status === "expired").length, 3);
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("reassigning a decommissioned host reactivates it and its assignment, never a duplicate", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await tenDays(kv, f);
  const operator = userActor(f.users.operator);
  await decommissionHost(kv, operator, f.host.id, { confirmHostname: "h1.acme.example" }, AFTER);
  const later = new Date(AFTER.getTime() + DAY);
  const { assignment, created } = await assignHost(
    kv,
    operator,
    { policyId: f.policy.id, hostId: f.host.id },
    later,
  );
  assert.deepEqual([created, assignment.id, assignment.state], [false, f.assignment.id, "active"]);
  assert.equal((await assignmentsOf(kv, f.host.id)).length, 1);
  // Its agent has been silent for a day: pending until the next heartbeat, then online.
  assert.equal((await getHost(kv, f.host.id))!.status, "pending");
  assert.equal((await getHost(kv, f.host.id))!.decommissionedAt, null);
  await applyHostHeartbeat(kv, f.host.id, { version: "1", metrics: engineMetrics() }, later);
  assert.equal((await getHost(kv, f.host.id))!.status, "online");
  const summary = await readSummary(kv, operator, later);
  assert.deepEqual([summary.protected, summary.unprotectedHosts], [1, 0]);
  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) =>
    e.action === "assignment.reactivate"
  );
  assert.match(audit[0].summary, /the decommissioned host is back in service/);
  // Backups resume; the archived points stay kept (an operator expires them).
  await runSchedulerTick(kv, new Date("2026-11-13T02:00:00Z"));
  assert.equal((await claimJobs(kv, `agent:${f.host.id}`, 5, later)).length, 1);
  assert.ok((await pointsOf(kv, f.policy.id)).every((p) => p.archivedAt));
  assert.deepEqual(await checkInvariants(kv), []);

  // Setting an archived assignment of a decommissioned host back to active reactivates it too.
  await decommissionHost(kv, operator, f.host.id, { confirmHostname: "h1.acme.example" }, later);
  await setAssignmentState(kv, operator, f.assignment.id, "active", later);
  assert.equal((await getHost(kv, f.host.id))!.status, "online");
  const again = await readSummary(kv, operator, later);
  assert.deepEqual([again.protected, again.unprotectedHosts], [1, 0]);
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("decommission refusals: permission, scope, wrong confirmation, twice — nothing changes", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = AFTER;
  const confirm = { confirmHostname: "h1.acme.example" };
  const before = await dumpKv(kv);
  await assert.rejects(
    () => decommissionHost(kv, userActor(f.users.viewer), f.host.id, confirm, now),
    ForbiddenError,
  );
  await assert.rejects(
    () => decommissionHost(kv, userActor(f.users.devOperator), f.host.id, confirm, now),
    NotFoundError,
  );
  await assert.rejects(
    () => decommissionHost(kv, userActor(f.users.operator), f.host.id, { confirmHostname: "h2" }, now),
    (e) => e instanceof ValidationError && Boolean(e.fields.confirmHostname),
  );
  assert.deepEqual(await dumpKv(kv), before, "refusals changed nothing");

  const post = (headers: Record<string, string>, body: unknown) =>
    f.app.request(`/api/v1/hosts/${f.host.id}/decommission`, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
    });
  const viewer = await bearer(kv, f.users.viewer, ["backup.view"], now);
  const dev = await bearer(kv, f.users.devOperator, ["backup.view", "backup.manage"], now);
  const op = await bearer(kv, f.users.operator, ["backup.view", "backup.manage"], now);
  const tokens = await dumpKv(kv);
  let res = await post(viewer, confirm);
  assert.equal(res.status, 403);
  res = await post(dev, confirm);
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error.code, "not_found");
  res = await post(op, {});
  assert.equal(res.status, 422);
  assert.ok((await res.json()).error.fields.confirmHostname);
  res = await post(op, { confirmHostname: "h1" });
  assert.equal(res.status, 422);
  assert.match((await res.json()).error.fields.confirmHostname, /h1\.acme\.example/);
  const withoutSessions = (entries: Awaited<ReturnType<typeof dumpKv>>) =>
    entries.filter((e) => !["api_tokens", "rate_limits"].includes(String(e.key[0])));
  assert.deepEqual(
    withoutSessions(await dumpKv(kv)),
    withoutSessions(tokens),
    "API refusals changed nothing",
  );

  res = await post(op, confirm);
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.deepEqual([body.host.status, body.archivedAssignments], ["decommissioned", 1]);
  res = await post(op, confirm);
  assert.equal(res.status, 409);
  const detail = await (await f.app.request(`/api/v1/hosts/${f.host.id}`, { headers: op })).json();
  assert.deepEqual([detail.status, detail.assignments.map((a: Assignment) => a.state)], [
    "decommissioned",
    ["archived"],
  ]);
  const list = await (await f.app.request("/api/v1/hosts?status=decommissioned", { headers: op })).json();
  assert.deepEqual(list.values.map((h: Host) => h.id), [f.host.id]);
  await assert.rejects(
    () => decommissionHost(kv, userActor(f.users.operator), f.host.id, confirm, now),
    ConflictError,
  );
});

Deno.test("the host page decommissions after a typed confirmation (POST then 303)", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const browser = new Browser(f.app);
  await signInAs(browser, kv, f.users.operator, f.clock.now());
  const page = await (await browser.get(`/backup/hosts/${f.host.id}`)).text();
  assert.match(page, /Type <code>h1\.acme\.example<\/code> to confirm/);
  const path = `/backup/hosts/${f.host.id}/decommission`;
  let res = await browser.postForm(path, { confirmHostname: "h1" }, {
    tokenFrom: `/backup/hosts/${f.host.id}`,
  });
  assert.equal(res.status, 422);
  assert.match(await res.text(), /Type the host's name, h1\.acme\.example, to confirm/);
  assert.equal((await getHost(kv, f.host.id))!.status, "online");

  res = await browser.postForm(path, { confirmHostname: "h1.acme.example" }, {
    tokenFrom: `/backup/hosts/${f.host.id}`,
  });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), `/backup/hosts/${f.host.id}`);
  assert.equal((await getHost(kv, f.host.id))!.status, "decommissioned");
  const shown = await (await browser.get(`/backup/hosts/${f.host.id}`)).text();
  assert.match(shown, /data-testid="decommissioned"/);
  assert.ok(!shown.includes("Decommission host"));
  // Again (a second tab, a resubmitted form): 409 and the reason on the decommissioned page.
  res = await browser.postForm(path, { confirmHostname: "h1.acme.example" }, {
    tokenFrom: `/backup/hosts/${f.host.id}`,
  });
  assert.equal(res.status, 409);
  const again = await res.text();
  assert.match(again, /data-testid="decommissioned"/);
  assert.match(
    again,
    /<p class="form-error" role="alert">Host h1\.acme\.example is already decommissioned<\/p>/,
  );
  assert.match(
    await (await browser.get("/backup/hosts?status=decommissioned")).text(),
    /h1\.acme\.example/,
  );

  // A viewer sees no form and cannot post one.
  const viewer = new Browser(f.app);
  await signInAs(viewer, kv, f.users.viewer, f.clock.now());
  const { host: other } = await enrollHost(kv, { accountId: f.tenant.account.id, orgId: f.ops.id }, {
    hostname: "h2.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.8",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, f.clock.now());
  assert.ok(!(await (await viewer.get(`/backup/hosts/${other.id}`)).text()).includes("Decommission host"));
  res = await viewer.postForm(`/backup/hosts/${other.id}/decommission`, {
    confirmHostname: "h2.acme.example",
  }, {
    tokenFrom: `/backup/hosts/${other.id}`,
  });
  assert.equal(res.status, 403);
  assert.equal((await getHost(kv, other.id))!.status, "pending");
});

Deno.test("an operator expires an archived restore point (incrementals first), with confirmation and audit", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  // A chain: a full and two incrementals.
  const days = ["full", "incremental", "incremental"] as const;
  for (const [d, type] of days.entries()) {
    const at = new Date(Date.UTC(2026, 10, 1 + d, 2));
    await runSchedulerTick(kv, at);
    await answerBackup(kv, f.host.id, at, { id: `p${d}`, type, parentId: d === 0 ? null : `p${d - 1}` });
  }
  const [full, inc1, inc2] = await pointsOf(kv, f.policy.id);
  // Not archived yet: retention's business, refused.
  await assert.rejects(
    () => expireArchivedPoint(kv, userActor(f.users.admin), inc2.id, { confirm: true }, AFTER),
    ConflictError,
  );
  await decommissionHost(kv, system, f.host.id, { confirmHostname: "h1.acme.example" }, AFTER);

  const admin = await bearer(kv, f.users.admin, ["backup.view", "backup.manage", "backup.restore"], AFTER);
  const restorer = await bearer(kv, f.users.restorer, ["backup.view", "backup.restore"], AFTER);
  const dev = await bearer(kv, f.users.devOperator, ["backup.view", "backup.manage"], AFTER);
  const expire = (headers: Record<string, string>, id: string, body: unknown) =>
    f.app.request(`/api/v1/restore-points/${id}/expire`, {
      method: "POST",
      headers,
      body: JSON.stringify(body),
    });
  const state = async () => (await pointsOf(kv, f.policy.id)).map((p) => p.status);

  assert.equal((await expire(restorer, inc2.id, { confirm: true })).status, 403);
  assert.equal((await expire(dev, inc2.id, { confirm: true })).status, 404);
  let res = await expire(admin, inc2.id, {});
  assert.equal(res.status, 422);
  assert.ok((await res.json()).error.fields.confirm);
  res = await expire(admin, full.id, { confirm: true });
  assert.equal(res.status, 409, "an incremental still depends on the full");
  assert.match((await res.json()).error.message, /depends on this one/);
  assert.deepEqual(await state(), ["complete", "complete", "complete"]);

  res = await expire(admin, inc2.id, { confirm: true });
  assert.equal(res.status, 200);
  assert.equal((await res.json()).status, "expired");
  const prune = (await claimJobs(kv, `bes:${f.engine.id}`, 10, AFTER)).filter((j) => j.kind === "prune");
  assert.deepEqual(prune.map((j) => j.payload.restorePointIds), [["p2"]]);
  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) =>
    e.action === "restore_point.expire"
  );
  assert.equal(audit.length, 1);
  assert.match(audit[0].summary, /h1\.acme\.example under policy daily/);

  // The page: a confirmation checkbox, POST then 303.
  const browser = new Browser(f.app);
  await signInAs(browser, kv, f.users.admin, AFTER);
  const page = await (await browser.get(`/backup/restore/points/${inc1.id}`)).text();
  assert.match(page, /data-testid="archived"/);
  // The decommissioned original host is offered but not preselected for a file restore.
  const filesForm = page.slice(page.indexOf('id="restore-files"'));
  const hostSelect = filesForm.slice(0, filesForm.indexOf("</select>"));
  assert.match(hostSelect, /h1\.acme\.example \(original, decommissioned\)/);
  assert.doesNotMatch(hostSelect, new RegExp(`value="${f.host.id}"[^>]*selected`), "not the default target");
  assert.match(filesForm, /The original host is decommissioned: choose the host to receive the files/);
  res = await browser.postForm(`/backup/restore/points/${inc1.id}/expire`, {}, {
    tokenFrom: `/backup/restore/points/${inc1.id}`,
  });
  assert.equal(res.status, 303, "without the confirmation: back with a notice");
  assert.deepEqual(await state(), ["complete", "complete", "expired"]);
  res = await browser.postForm(`/backup/restore/points/${inc1.id}/expire`, { confirm: "on" }, {
    tokenFrom: `/backup/restore/points/${inc1.id}`,
  });
  assert.equal(res.status, 303);
  assert.deepEqual(await state(), ["complete", "expired", "expired"]);
  res = await expire(admin, full.id, { confirm: true });
  assert.equal(res.status, 200);
  assert.deepEqual(await state(), ["expired", "expired", "expired"]);
  // Retention never touched them on its own.
  assert.equal((await applyRetention(kv, AFTER)).expired, 0);
});

Deno.test("a host with more assignments than one write holds is archived in batches", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const count = ARCHIVE_ASSIGNMENT_BATCH * 2 + 5;
  for (let i = 1; i < count; i++) {
    const policy = await f.newPolicy(`p-${String(i).padStart(3, "0")}`, i % 2 === 0);
    await assignHost(kv, system, { policyId: policy.id, hostId: f.host.id }, f.clock.now());
  }
  const result = await decommissionHost(kv, system, f.host.id, { confirmHostname: "h1.acme.example" }, AFTER);
  assert.equal(result.archivedAssignments, count);
  const states = (await assignmentsOf(kv, f.host.id)).map((a) => a.state);
  assert.equal(states.length, count);
  assert.ok(states.every((s) => s === "archived"));
  assert.deepEqual(await checkInvariants(kv), []);
  const summary = await readSummary(kv, userActor(f.users.admin), AFTER);
  assert.deepEqual([summary.protected, summary.unprotectedHosts], [0, 0]);
});

Deno.test("a decommission interrupted after its first write is finished by the host sweep; retention waits for it", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await tenDays(kv, f);
  await decommissionHost(kv, system, f.host.id, { confirmHostname: "h1.acme.example" }, AFTER);
  // Put the KV back where a crash right after the first write leaves it: the record of the work still to
  // do, and the restore points not archived yet.
  const record = {
    hostId: f.host.id,
    accountId: f.tenant.account.id,
    orgId: f.ops.id,
    archivePolicyIds: [f.policy.id],
    at: AFTER.toISOString(),
  };
  const op = kv.atomic().set(["host_decommissions", f.host.id], record);
  for (const p of await pointsOf(kv, f.policy.id)) {
    op.set(["restore_points", p.id], { ...p, archivedAt: null });
  }
  assert.ok((await op.commit()).ok);

  assert.equal(
    (await applyRetention(kv, AFTER)).expired,
    0,
    "retention leaves a host being decommissioned alone",
  );
  assert.deepEqual(await sweepHosts(kv, AFTER), { offline: [], decommissions: 1 });
  assert.ok((await pointsOf(kv, f.policy.id)).every((p) => p.archivedAt === AFTER.toISOString()));
  assert.equal((await kv.get(["host_decommissions", f.host.id])).versionstamp, null);
  assert.equal((await applyRetention(kv, AFTER)).expired, 0);
  assert.deepEqual(
    await finishDecommission(kv, f.host.id, AFTER),
    { assignments: 0, points: 0 },
    "idempotent",
  );
});

Deno.test("decommission racing a reassignment leaves one consistent outcome (many iterations)", async () => {
  for (let i = 0; i < 15; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const second: Policy = await f.newPolicy("second", true);
    const now = AFTER;
    const outcomes = await Promise.allSettled([
      decommissionHost(kv, system, f.host.id, { confirmHostname: "h1.acme.example" }, now),
      assignHost(kv, system, { policyId: second.id, hostId: f.host.id }, now),
    ]);
    for (const o of outcomes) {
      if (o.status === "rejected") assert.ok(o.reason instanceof ConflictError, String(o.reason));
    }
    await sweepHosts(kv, now);
    const host = (await getHost(kv, f.host.id))!;
    const states = (await assignmentsOf(kv, f.host.id)).map((a) => a.state);
    const coverage =
      (await kv.get<{ active: number; decommissioned?: boolean }>(["host_coverage", f.host.id])).value!;
    const summary = await readSummary(kv, userActor(f.users.admin), now);
    if (host.status === "decommissioned") {
      assert.ok(states.every((s) => s === "archived"), `iteration ${i}: ${states}`);
      assert.deepEqual([coverage.active, coverage.decommissioned], [0, true]);
      assert.deepEqual([summary.protected, summary.unprotectedHosts], [0, 0]);
    } else {
      assert.ok(!coverage.decommissioned, `iteration ${i}`);
      assert.equal(coverage.active, states.filter((s) => s === "active").length);
      assert.equal(summary.unprotectedHosts, coverage.active === 0 ? 1 : 0);
    }
    assert.equal((await kv.get(["host_decommissions", f.host.id])).versionstamp, null);
    assert.deepEqual(await checkInvariants(kv), [], `iteration ${i}`);
  }
});

/** `kv` whose getMany runs `after(keys)` once it has read (to interleave a concurrent write at a chosen read). */
function withGetManyHook(kv: Deno.Kv, after: (keys: Deno.KvKey[]) => Promise<void>): Deno.Kv {
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "getMany") {
        return async (keys: Deno.KvKey[], options?: { consistency?: Deno.KvConsistencyLevel }) => {
          const read = await target.getMany(keys, options);
          await after(keys);
          return read;
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

Deno.test("a decommission completing while a backup result is applied never leaves the new point unarchived", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const at = new Date("2026-11-01T02:00:00Z");
  await runSchedulerTick(kv, at);
  const [job] = await claimJobs(kv, `agent:${f.host.id}`, 1, at);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "success",
    startedAt: at.toISOString(),
    endedAt: at.toISOString(),
    bytesTransferred: 1,
    protectedBytes: 1,
    output: {
      restorePoint: {
        id: "rp-late",
        chainId: "c",
        type: "full",
        sizeBytes: 1,
        fileCount: 1,
        completedAt: at.toISOString(),
      },
    },
  }, at);
  // The decommission commits (and finishes) right after the result's write read the host.
  let fired = false;
  const hooked = withGetManyHook(kv, async (keys) => {
    if (fired || keys[0]?.[0] !== "hosts") return;
    fired = true;
    await decommissionHost(kv, system, f.host.id, { confirmHostname: "h1.acme.example" }, at);
  });
  await applyJobOutcome(hooked, done as Job, at);
  assert.ok(fired, "the decommission ran in between");
  const [point] = await pointsOf(kv, f.policy.id);
  assert.equal(point.engineRestorePointId, "rp-late");
  assert.equal(point.archivedAt, at.toISOString(), "the new point is archived with the host's others");
  // Retention leaves it alone, however late.
  assert.equal((await applyRetention(kv, new Date("2027-06-01T00:00:00Z"))).expired, 0);
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("decommission racing backup results: every point of the retired host is archived (many iterations)", async () => {
  for (let i = 0; i < 20; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const at = new Date("2026-11-01T02:00:00Z");
    await runSchedulerTick(kv, at);
    const [job] = await claimJobs(kv, `agent:${f.host.id}`, 1, at);
    const { job: done } = await applyResult(kv, job.principal, job.id, {
      status: "success",
      startedAt: at.toISOString(),
      endedAt: at.toISOString(),
      bytesTransferred: 1,
      protectedBytes: 1,
      output: { restorePoint: { id: `rp-${i}`, type: "full", completedAt: at.toISOString() } },
    }, at);
    await Promise.all([
      applyJobOutcome(kv, done as Job, at),
      decommissionHost(kv, system, f.host.id, { confirmHostname: "h1.acme.example" }, at),
    ]);
    await sweepHosts(kv, at);
    const points = await pointsOf(kv, f.policy.id);
    assert.equal(points.length, 1, `iteration ${i}: one point`);
    assert.equal(points[0].archivedAt, at.toISOString(), `iteration ${i}: archived`);
  }
});

/** `kv` counting the lists of `restore_points_by_policy` (every point of a policy) made through it. */
function countingPolicyPointLists(kv: Deno.Kv): { kv: Deno.Kv; lists: () => number } {
  let lists = 0;
  const counted = new Proxy(kv, {
    get(target, prop) {
      if (prop === "list") {
        return (selector: Deno.KvListSelector, options?: Deno.KvListOptions) => {
          if ("prefix" in selector && selector.prefix[0] === "restore_points_by_policy") lists++;
          return target.list(selector, options);
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { kv: counted, lists: () => lists };
}

Deno.test("decommission and expiry read the host's restore points through the by-host index, not every point of the policy", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  assert.equal((await indexRestorePointsByHost(kv, f.clock.now())).skipped, false); // the start-up backfill
  await tenDays(kv, f);
  // Another host's points under the same policy are never read for h1.
  const h2 = await enrollTestHost(
    kv,
    { accountId: f.tenant.account.id, orgId: f.ops.id },
    "h2",
    f.clock.now(),
  );
  await assignHost(kv, system, { policyId: f.policy.id, hostId: h2.id }, f.clock.now());
  const at = new Date(Date.UTC(2026, 10, 11, 2));
  await runSchedulerTick(kv, at);
  await answerBackup(kv, h2.id, at, { id: "h2-rp", type: "full" });
  const byHost = async (hostId: string) =>
    (await Array.fromAsync(kv.list<string>({ prefix: ["restore_points_by_host", f.policy.id, hostId] })))
      .length;
  assert.deepEqual([await byHost(f.host.id), await byHost(h2.id)], [10, 1], "written with each point");

  const counted = countingPolicyPointLists(kv);
  const result = await decommissionHost(
    counted.kv,
    system,
    f.host.id,
    { confirmHostname: "h1.acme.example" },
    AFTER,
  );
  assert.equal(result.archivedPoints, 10);
  const h1Points = (await pointsOf(kv, f.policy.id)).filter((p) => p.hostId === f.host.id);
  await expireArchivedPoint(counted.kv, system, h1Points[0].id, { confirm: true }, AFTER);
  assert.equal(counted.lists(), 0, "no list of every point of the policy");
  assert.equal(
    (await pointsOf(kv, f.policy.id)).find((p) => p.engineRestorePointId === "h2-rp")!.archivedAt,
    undefined,
  );
});

Deno.test("restore points from before the by-host index: read through the policy until the backfill, which indexes each once", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await tenDays(kv, f);
  // Older data: no by-host entries, no marker.
  for await (const e of kv.list({ prefix: ["restore_points_by_host"] })) await kv.delete(e.key);
  const result = await decommissionHost(kv, system, f.host.id, { confirmHostname: "h1.acme.example" }, AFTER);
  assert.equal(result.archivedPoints, 10, "every point archived before the backfill too");
  const fix = await indexRestorePointsByHost(kv, AFTER);
  assert.deepEqual(fix, { indexed: 10, skipped: false });
  const entries = await Array.fromAsync(
    kv.list<string>({ prefix: ["restore_points_by_host", f.policy.id, f.host.id] }),
  );
  assert.deepEqual(
    entries.map((e) => e.value).sort(),
    (await pointsOf(kv, f.policy.id)).map((p) => p.id).sort(),
  );
  assert.equal((await indexRestorePointsByHost(kv, AFTER)).skipped, true, "once");
  assert.deepEqual(await checkInvariants(kv), []);
});
