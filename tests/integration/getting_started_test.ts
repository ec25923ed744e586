/**
 * The first run and the getting-started checklist: setup ends signed in on a page that shows the
 * organization's secret once with the commands that start a BES and an agent; the checklist ticks each
 * step (engine → storage → policy → host → first backup) from real data, in the actor's scope; the
 * dashboard renders its sections on the server and guides while nothing is set up; its 24-hour counts
 * lead to the runs behind them.
 */
import assert from "node:assert/strict";
import { createApp } from "../../app.ts";
import { assignHost } from "../../domain/assignments.ts";
import { userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import { readSetupProgress, SETUP_STEPS, type SetupStep } from "../../domain/getting_started.ts";
import { sha256Hex } from "../../domain/ids.ts";
import { applyResult, claimJobs } from "../../domain/job_queue.ts";
import { createLogger } from "../../domain/log.ts";
import { createPolicy, type Policy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { createRecoveryKey } from "../../domain/recovery_keys.ts";
import { issueSetupToken } from "../../domain/setup.ts";
import { indexFirstBackups } from "../../domain/restore_points.ts";
import { firstBackupKey } from "../../domain/keys/restore.ts";
import { createTarget } from "../../domain/storage.ts";
import type { Org } from "../../domain/types.ts";
import { SECTIONS } from "../../routes/dashboard.tsx";
import {
  addUser,
  assertExcludes,
  assertIncludes,
  Browser,
  createTenant,
  engineClient,
  enrollTestHost,
  onlineTestEngine,
  registerTestEngine,
  signInAs,
  targetInput,
  testApp,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

function doneSteps(done: Record<SetupStep, boolean>): SetupStep[] {
  return SETUP_STEPS.filter((s) => done[s]);
}

/** Runs the policy's due backup for `hostId` at `now` and reports `status` (a restore point on success). */
async function backUp(kv: Deno.Kv, hostId: string, now: Date, status: "success" | "failed") {
  await runSchedulerTick(kv, now);
  const [job] = await claimJobs(kv, `agent:${hostId}`, 1, now);
  assert.ok(job, "a backup job was dispatched to the host");
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status,
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 10,
    protectedBytes: 10,
    ...(status === "failed"
      ? { error: { reason: "TARGET_UNREACHABLE", message: "NFS server not responding" }, retryable: true }
      : {
        output: {
          restorePoint: {
            id: `rp-${now.getTime()}`,
            chainId: "c1",
            type: "full",
            sizeBytes: 10,
            fileCount: 1,
          },
        },
      }),
  }, now);
  await applyJobOutcome(kv, done, now);
}

/**
 * The checklist from real data. `markers`: the start-up data fix has run (as main.ts does), so the first
 * backup is read from the per-org markers written with each restore point; without it, from the policies'
 * points.
 */
async function checklistFromRealData(markers: boolean) {
  using kv = await Deno.openKv(":memory:");
  if (markers) await indexFirstBackups(kv, new Date("2026-11-01T00:00:00Z"));
  const clock = new TestClock(new Date("2026-11-01T00:00:00Z"));
  const tenant = await createTenant(kv, "Acme", ["Ops", "Finance"], clock.now());
  const [ops, finance] = tenant.orgs;
  const scope = { accountId: tenant.account.id, orgId: ops.id };
  const admin = userActor(await addUser(kv, tenant, "admin@acme.example", "admin", "all", clock.now()));
  const financeViewer = userActor(
    await addUser(kv, tenant, "viewer@acme.example", "viewer", [finance] as Org[], clock.now()),
  );
  const progress = () => readSetupProgress(kv, admin, clock.now());

  let p = await progress();
  assert.deepEqual(doneSteps(p.done), []);
  assert.equal(p.complete, false);
  assert.deepEqual(p.engines, { registered: 0, online: 0 });
  assert.equal(p.hosts.enrolled, false);

  const { engine } = await registerTestEngine(kv, scope, clock.now());
  p = await progress();
  assert.deepEqual(doneSteps(p.done), ["engine"]);
  assert.deepEqual(p.engines, { registered: 1, online: 0 }, "registered, not yet heard from");

  const target = await createTarget(kv, system, targetInput(engine.id), { now: clock.now(), masterKey });
  const policy = await createPolicy(kv, system, {
    name: "nightly files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 0 1 1 *",
    incrementalSchedule: "* * * * *",
  }, clock.now()) as Policy;
  p = await progress();
  assert.deepEqual(doneSteps(p.done), ["engine", "storage", "policy"]);

  const host = await enrollTestHost(kv, scope, "db-01", clock.now());
  p = await progress();
  assert.deepEqual(p.hosts, { enrolled: true, unassigned: 1, assigned: false }, "enrolled, not assigned");
  assert.equal(p.done.host, false);

  await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, clock.now());
  p = await progress();
  assert.deepEqual(p.hosts, { enrolled: true, unassigned: 0, assigned: true });
  assert.deepEqual(doneSteps(p.done), ["engine", "storage", "policy", "host"]);

  // A failed backup is not a first backup; a successful one (a restore point) is.
  clock.advance(60_000);
  await backUp(kv, host.id, clock.now(), "failed");
  assert.equal((await progress()).done.backup, false, "a failed backup leaves no restore point");
  clock.advance(60_000);
  await backUp(kv, host.id, clock.now(), "success");
  p = await progress();
  assert.deepEqual(doneSteps(p.done), [...SETUP_STEPS]);
  assert.equal(p.complete, true);

  // Everything above lives in Ops: a viewer of Finance has nothing set up.
  const other = await readSetupProgress(kv, financeViewer, clock.now());
  assert.deepEqual(doneSteps(other.done), []);
  assert.deepEqual(other.hosts, { enrolled: false, unassigned: 0, assigned: false });

  if (markers) {
    // The marker was written with the point, in the policy's org; the data fix rebuilds a lost one.
    const key = firstBackupKey(tenant.account.id, policy.orgId);
    assert.equal((await kv.get(key)).value, true);
    await kv.delete(key);
    assert.equal((await progress()).done.backup, false, "the markers are what is read once the fix has run");
    const fix = await indexFirstBackups(kv, clock.now(), { force: true });
    assert.equal(fix.indexed, 1);
    assert.equal((await progress()).done.backup, true);
    assert.equal((await readSetupProgress(kv, financeViewer, clock.now())).done.backup, false);
  }
}

Deno.test("readSetupProgress() ticks engine, storage, policy, host and first backup from real data, in scope", async () => {
  await checklistFromRealData(false);
});

Deno.test("readSetupProgress() reads the first backup from the per-org markers once their data fix has run", async () => {
  await checklistFromRealData(true);
});

Deno.test("setup ends signed in on the first-run page: the secret once, the exact commands, no caching", async () => {
  using kv = await Deno.openKv(":memory:");
  const { app, clock } = testApp(kv);
  const token = (await issueSetupToken(kv, clock.now()))!;
  const browser = new Browser(app);
  const res = await browser.postForm("/setup", {
    token,
    accountName: "Acme",
    orgName: "Head Office",
    name: "First Admin",
    email: "first@acme.example",
    password: "a long enough password",
  }, { tokenFrom: `/setup?token=${token}` });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "no-store");
  const page = await res.text();
  const secret = /data-testid="secret">(cdo_[\w-]+)</.exec(page)?.[1];
  assert.ok(secret, "the registration secret is on the page");
  const org = (await Array.fromAsync(kv.list<{ name: string; secretHash: string }>({ prefix: ["orgs"] })))[0]
    .value;
  assert.equal(org.secretHash, sha256Hex(secret), "the secret shown is the first organization's");
  assertIncludes(page, "Head Office");
  assertIncludes(
    page,
    `deno task bes --control-plane http://localhost:8000 --secret ${secret} --data ./bes-data`,
  );
  assertIncludes(
    page,
    `deno task agent --control-plane http://localhost:8000 --secret ${secret} --data ./agent-data`,
  );
  assertIncludes(page, "--listen HOST:PORT");
  assertIncludes(page, "--include-root PATH");
  assertIncludes(page, 'data-tick="bes" data-done="false"');
  assertIncludes(page, 'data-tick="agent" data-done="false"');
  assertIncludes(page, "Create and download the recovery key");

  // Signed in: the getting-started page answers, and never shows the secret again.
  const again = await browser.get("/backup/getting-started");
  assert.equal(again.status, 200);
  const later = await again.text();
  assertExcludes(later, secret, "the org secret after setup");
  assertIncludes(later, "--secret &lt;ORG-SECRET> --data ./bes-data");
  assertIncludes(later, `/admin/orgs/`, "a link to issue a new secret");

  // A BES registers with the secret (signed registration): the page ticks it without JavaScript.
  const client = engineClient(app, clock);
  const registered = await client.registerBes(secret, {
    name: "bes-1",
    hostname: "bes-1.local",
    ipAddress: "127.0.0.1",
    port: 8443,
    version: "1.0.0",
  });
  assert.equal(registered.response.status, 201, JSON.stringify(registered.body));
  const ticked = await (await browser.get("/backup/getting-started")).text();
  assertIncludes(ticked, 'data-tick="bes" data-done="true"');
  assertIncludes(ticked, "BES registered (waiting for its first heartbeat)");
  const json = await (await browser.get("/api/v1/dashboard/getting-started")).json();
  assert.deepEqual(json.engines, { registered: 1, online: 0 });
  assert.equal(json.done.engine, true);
  assert.equal(json.hosts.enrolled, false);
});

Deno.test("the dashboard renders every section on the server and, with nothing set up, guides instead of reassuring", async () => {
  using kv = await Deno.openKv(":memory:");
  const { app, clock } = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const operator = await addUser(kv, tenant, "op@acme.example", "operator", "all", clock.now());
  const browser = new Browser(app);
  await signInAs(browser, kv, operator, clock.now());
  const empty = await (await browser.get("/backup/dashboard")).text();
  assertIncludes(empty, 'data-testid="getting-started"');
  for (const step of SETUP_STEPS) assertIncludes(empty, `data-step="${step}" data-done="false"`);
  assertIncludes(empty, 'href="/backup/storage/new"', "an operator is led to the add pages");
  assert.doesNotMatch(empty, /Loading…/, "no section waits for JavaScript");
  for (const s of SECTIONS) assertIncludes(empty, `id="section-${s.name}"`);
  assert.equal(empty.match(/data-section-state="ready"/g)?.length, SECTIONS.length);
  assert.doesNotMatch(empty, /All objects within RPO|All storage healthy|All verifications passing/);
  assertIncludes(empty, "No protected objects yet");
  assertIncludes(empty, "No backup engine registered yet");

  // Part of the way: the engine and storage steps tick, the rest stay to do.
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await onlineTestEngine(kv, scope, clock.now());
  await createTarget(kv, system, targetInput(engine.id), { now: clock.now(), masterKey });
  const partial = await (await browser.get("/backup/dashboard")).text();
  assertIncludes(partial, 'data-step="engine" data-done="true"');
  assertIncludes(partial, 'data-step="storage" data-done="true"');
  assertIncludes(partial, 'data-step="policy" data-done="false"');
  assertIncludes(partial, "1 engine registered, 1 online");
  assertIncludes(partial, "All storage healthy", "a target exists: its health is a real reassurance");
});

Deno.test("a failing section fails alone in the server-rendered page too", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new TestClock();
  const app = createApp({
    kv,
    config: testConfig({ faults: ["dashboard.storage"] }),
    clock: clock.now,
    logger: createLogger("error", () => {}),
  });
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const viewer = await addUser(kv, tenant, "v@acme.example", "viewer", "all", clock.now());
  const browser = new Browser(app);
  await signInAs(browser, kv, viewer, clock.now());
  const res = await browser.get("/backup/dashboard");
  assert.equal(res.status, 200);
  const page = await res.text();
  assert.equal(page.match(/data-section-state="ready"/g)?.length, SECTIONS.length - 1);
  assert.match(page, /id="section-storage"[^]*?data-section-state="error"/);
  assertIncludes(page, "This section could not load: The storage data source failed");
});

Deno.test("the runs list filters by status and end time, in scope", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new TestClock(new Date("2026-11-01T00:00:00Z"));
  const tenant = await createTenant(kv, "Acme", ["Ops", "Finance"], clock.now());
  const [ops, finance] = tenant.orgs;
  const scope = { accountId: tenant.account.id, orgId: ops.id };
  const { engine } = await onlineTestEngine(kv, scope, clock.now());
  const target = await createTarget(kv, system, targetInput(engine.id), { now: clock.now(), masterKey });
  const policy = await createPolicy(kv, system, {
    name: "nightly files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 0 1 1 *",
    incrementalSchedule: "* * * * *",
  }, clock.now()) as Policy;
  const host = await enrollTestHost(kv, scope, "db-01", clock.now());
  await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, clock.now());
  // A failure two days ago, then a failure and a success within the last day.
  clock.advance(60_000);
  await backUp(kv, host.id, clock.now(), "failed");
  clock.advance(2 * 86_400_000);
  await backUp(kv, host.id, clock.now(), "failed");
  clock.advance(60_000);
  await backUp(kv, host.id, clock.now(), "success");
  const runs = (await Array.fromAsync(kv.list<{ id: string; status: string; endedAt: string }>({
    prefix: ["runs"],
  }))).map((e) => e.value).filter((r) => typeof r === "object");
  const [oldFailure, recentFailure] = runs.filter((r) => r.status === "failed")
    .sort((a, b) => a.endedAt.localeCompare(b.endedAt));
  const app = createApp({
    kv,
    config: testConfig(),
    clock: clock.now,
    logger: createLogger("error", () => {}),
  });
  const browser = new Browser(app);
  await signInAs(
    browser,
    kv,
    await addUser(kv, tenant, "v@acme.example", "viewer", "all", clock.now()),
    clock.now(),
  );

  // The dashboard's Failed count (1 in the last 24 hours) links to exactly that run.
  const activity = await (await browser.get("/backup/dashboard/sections/activity")).text();
  const href = /data-metric="Failed"><a href="([^"]+)"><span[^>]*>1</.exec(activity)?.[1];
  assert.ok(href, activity);
  const list = await (await browser.get(href.replaceAll("&amp;", "&"))).text();
  assertIncludes(list, `data-run="${recentFailure.id}"`);
  assertExcludes(list, `data-run="${oldFailure.id}"`, "a run that ended before the 24 hours");
  assert.equal(list.match(/data-run="/g)?.length, 1, "only the failed run of the last 24 hours");
  assertIncludes(list, "TARGET_UNREACHABLE", "the error under the status");

  // Without the time filter, both failures; a Finance viewer sees none of Ops's runs.
  const allFailed = await (await browser.get("/backup/runs?status=failed")).text();
  assert.equal(allFailed.match(/data-run="/g)?.length, 2);
  const outsider = new Browser(app);
  await signInAs(
    outsider,
    kv,
    await addUser(kv, tenant, "f@acme.example", "viewer", [finance] as Org[], clock.now()),
    clock.now(),
  );
  assertIncludes(await (await outsider.get("/backup/runs?status=failed")).text(), "No runs match");
  // The API takes the same filter; a bad time is a 422 naming the field.
  const api = await browser.get(
    `/api/v1/runs?status=failed&endedAfter=${
      encodeURIComponent(href.split("endedAfter=")[1].replaceAll("%3A", ":"))
    }`,
  );
  assert.equal(api.status, 200);
  assert.deepEqual((await api.json()).values.map((r: { id: string }) => r.id), [recentFailure.id]);
  const bad = await browser.get("/api/v1/runs?endedAfter=yesterday");
  assert.equal(bad.status, 422);
  assertIncludes(await bad.text(), "endedAfter");
});

Deno.test("the dashboard reminds an all-scope administrator to create the account recovery key until it exists", async () => {
  using kv = await Deno.openKv(":memory:");
  const { app, clock } = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const adminUser = await addUser(kv, tenant, "admin@acme.example", "admin", "all", clock.now());
  const admin = new Browser(app);
  await signInAs(admin, kv, adminUser, clock.now());
  const operator = new Browser(app);
  await signInAs(
    operator,
    kv,
    await addUser(kv, tenant, "op@acme.example", "operator", "all", clock.now()),
    clock.now(),
  );
  const before = await (await admin.get("/backup/dashboard")).text();
  assertIncludes(before, 'data-testid="recovery-key-missing"');
  assertIncludes(before, 'href="/admin/recovery-key"');
  assertExcludes(
    await (await operator.get("/backup/dashboard")).text(),
    'data-testid="recovery-key-missing"',
    "a reminder only for who can act on it",
  );
  await createRecoveryKey(kv, userActor(adminUser), tenant.account.id, clock.now());
  assertExcludes(await (await admin.get("/backup/dashboard")).text(), 'data-testid="recovery-key-missing"');
});
