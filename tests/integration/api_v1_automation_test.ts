/**
 * The automation routes of issue 18 (this half): per-run retry, PATCH of a policy, the self-backup
 * settings and actions, and the dashboard heatmap — each through an API token, with its refusals, its
 * audit entry, and "a refusal changes nothing".
 */
import assert from "node:assert/strict";
import { createApp } from "../../app.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { assignHost } from "../../domain/assignments.ts";
import { testConfig } from "../../domain/config.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { applyResult, claimJobs } from "../../domain/job_queue.ts";
import { createLogger } from "../../domain/log.ts";
import { createPlatform, listPlatformJobs } from "../../domain/platforms.ts";
import { syncPlatform } from "../../domain/platform_sync.ts";
import { createPolicy, getPolicy, type Policy } from "../../domain/policies.ts";
import { permissionsOf, systemActor } from "../../domain/rbac.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import type { Run } from "../../domain/runs.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { createTarget } from "../../domain/storage.ts";
import type { User } from "../../domain/types.ts";
import { fillSampleVeeam, startFakeVeeam, VEEAM_PASSWORD, VEEAM_USER } from "../fakes/veeam_server.ts";
import {
  addUser,
  auditEntries,
  Browser,
  createTenant,
  engineMetrics,
  enrollTestHost,
  kvSnapshot,
  registerTestEngine,
  signInAs,
  targetInput,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = testConfig().masterKey!;

/**
 * Two accounts (the first is the operator account), orgs A1 and A2; an admin over all of A, an admin of A2
 * only, an operator and a viewer of A1, an admin of B; in A1 a BES online, two targets, a policy whose
 * first backup failed (retryable) on an assigned host. Tokens carry their owner's permissions.
 */
async function fixture(kv: Deno.Kv) {
  const clock = new TestClock(new Date("2026-11-01T00:00:00Z"));
  const now = clock.now();
  const dataDir = await Deno.makeTempDir({ prefix: "cadres-automation-" });
  const a = await createTenant(kv, "Acme", ["A1", "A2"], now);
  const b = await createTenant(kv, "Other", ["B1"], now);
  const [a1, a2] = a.orgs;
  const scope = { accountId: a.account.id, orgId: a1.id };
  const { engine } = await registerTestEngine(kv, scope, now);
  await applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, now);
  const target = await createTarget(kv, system, targetInput(engine.id), { now, masterKey });
  const target2 = await createTarget(kv, system, targetInput(engine.id, "local", { name: "second" }), {
    now,
    masterKey,
  });
  const policy = await createPolicy(kv, system, {
    name: "nightly files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 0 1 1 *",
    incrementalSchedule: "* * * * *",
    excludePatterns: ["*.tmp"],
  }, now) as Policy;
  const host = await enrollTestHost(kv, scope, "db-01", now);
  await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, now);
  await runSchedulerTick(kv, now);
  const [job] = await claimJobs(kv, `agent:${host.id}`, 1, now);
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
  const failed = (await Array.fromAsync(kv.list<Run>({ prefix: ["runs"] }))).map((e) => e.value)
    .find((r) => r.status === "failed")!;
  assert.ok(failed, "the fixture has a failed run");
  const users = {
    admin: await addUser(kv, a, "admin@acme.example", "admin", "all", now),
    a2Admin: await addUser(kv, a, "admin-a2@acme.example", "admin", [a2], now),
    operator: await addUser(kv, a, "operator@acme.example", "operator", [a1], now),
    viewer: await addUser(kv, a, "viewer@acme.example", "viewer", [a1], now),
    otherAdmin: await addUser(kv, b, "admin@other.example", "admin", "all", now),
  };
  const app = createApp({
    kv,
    config: testConfig({ dataDir }),
    clock: clock.now,
    logger: createLogger("error"),
  });
  // Every user's API token (all the permissions of their role), made before any test takes a snapshot.
  const tokens = new Map<User, string>();
  for (const user of Object.values(users)) {
    const permissions = [...permissionsOf(user.role)];
    const { secret } = await createApiToken(kv, userActor(user), {
      name: "automation",
      permissions,
      expiresInDays: 0,
    }, now);
    tokens.set(user, secret);
  }
  /** A request with `who`'s API token. */
  const api = async (
    who: keyof typeof users,
    path: string,
    init: { method?: string; body?: unknown } = {},
  ) => {
    const user = users[who];
    const headers: Record<string, string> = { authorization: `Bearer ${tokens.get(user)}` };
    if (init.body !== undefined) headers["content-type"] = "application/json";
    const res = await app.request(`http://localhost:8000${path}`, {
      method: init.method ?? "GET",
      headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  /** The database without the API tokens' lastUsedAt (a read touches it). */
  const snapshot = async () =>
    JSON.parse(await kvSnapshot(kv)).filter((e: { key: unknown[] }) => e.key[0] !== "api_tokens");
  return {
    app,
    clock,
    a,
    b,
    a1,
    a2,
    engine,
    target,
    target2,
    policy,
    host,
    failed,
    users,
    api,
    snapshot,
    dataDir,
    [Symbol.asyncDispose]: () => Deno.remove(dataDir, { recursive: true }),
  };
}

// ---------------------------------------------------------------------------------------------------
// Per-run retry

Deno.test("POST /api/v1/runs/{runId}/retry queues one retry run with its job and audit; a second is 409", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const res = await f.api("operator", `/api/v1/runs/${f.failed.id}/retry`, { method: "POST" });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  assert.equal(res.body.platform, false);
  assert.equal(res.body.runs.length, 1);
  const [retry] = res.body.runs;
  assert.deepEqual(
    [retry.trigger, retry.status, retry.retryable, retry.hostId, retry.policyId],
    ["retry", "pending", false, f.host.id, f.policy.id],
  );
  assert.ok(retry.jobId, "the retry has its job");
  assert.ok((await kv.get(["jobs", retry.jobId])).value, "the job exists");
  const audit = (await auditEntries(kv, f.a.account.id)).filter((e) => e.action === "run.retry");
  assert.equal(audit.length, 1);

  const before = await f.snapshot();
  const again = await f.api("operator", `/api/v1/runs/${f.failed.id}/retry`, { method: "POST" });
  assert.equal(again.status, 422, "no longer the latest run of its host");
  assert.equal(again.body.error.code, "invalid");
  assert.match(again.body.error.message, /latest run/);
  // The retry itself is not retryable.
  const ofRetry = await f.api("operator", `/api/v1/runs/${retry.id}/retry`, { method: "POST" });
  assert.equal(ofRetry.status, 422);
  assert.deepEqual(await f.snapshot(), before, "refusals change nothing");
});

Deno.test("two racing API retries of one run create exactly one run: one 201, the other 409 or 422", async () => {
  for (let i = 0; i < 10; i++) {
    using kv = await Deno.openKv(":memory:");
    await using f = await fixture(kv);
    const results = await Promise.all([
      f.api("operator", `/api/v1/runs/${f.failed.id}/retry`, { method: "POST" }),
      f.api("admin", `/api/v1/runs/${f.failed.id}/retry`, { method: "POST" }),
    ]);
    const statuses = results.map((r) => r.status).sort();
    assert.equal(statuses[0], 201, JSON.stringify(results.map((r) => r.body)));
    assert.ok([409, 422].includes(statuses[1]), `the loser is refused: ${statuses}`);
    const retries = (await Array.fromAsync(kv.list<Run>({ prefix: ["runs"] }))).filter((e) =>
      e.value.trigger === "retry"
    );
    assert.equal(retries.length, 1);
  }
});

Deno.test("run retry: a viewer is 403, another org's admin and another account 404, an unknown run 404", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const before = await f.snapshot();
  const path = `/api/v1/runs/${f.failed.id}/retry`;
  assert.equal((await f.api("viewer", path, { method: "POST" })).status, 403);
  assert.equal((await f.api("a2Admin", path, { method: "POST" })).status, 404);
  assert.equal((await f.api("otherAdmin", path, { method: "POST" })).status, 404);
  assert.equal(
    (await f.api("admin", "/api/v1/runs/01JC9Z8X7W6V5T4S3R2Q1P0N9M/retry", { method: "POST" })).status,
    404,
  );
  assert.deepEqual(await f.snapshot(), before);
});

Deno.test("run retry of a platform run retries its platform job (one pending run for the next sync), as the dashboard", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  await using fake = await startFakeVeeam();
  fillSampleVeeam(fake);
  fake.addSession("j-agent", "2026-10-31T22:00:00Z", "Failed", {
    id: "s-agent-1",
    message: "Disk full on repo",
  });
  const now = f.clock.now();
  const platform = await createPlatform(kv, userActor(f.users.admin), {
    type: "veeam",
    name: "VBR",
    orgId: f.a1.id,
    endpointUrl: fake.url,
    username: VEEAM_USER,
    password: VEEAM_PASSWORD,
  }, { now, masterKey });
  const report = await syncPlatform(kv, platform.id, { masterKey, now, sleep: () => Promise.resolve() });
  assert.equal(report.status, "success", report.error ?? "");
  const agentJob = (await listPlatformJobs(kv, platform.id)).find((j) => j.vendorJobId === "j-agent")!;
  const failedRun = (await Array.fromAsync(kv.list<Run>({ prefix: ["runs"] }))).map((e) => e.value)
    .find((r) => r.policyId === agentJob.id && r.status === "failed")!;
  assert.ok(failedRun, "the platform's failed run was imported");
  const res = await f.api("operator", `/api/v1/runs/${failedRun.id}/retry`, { method: "POST" });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  assert.equal(res.body.platform, true);
  assert.deepEqual([res.body.runs[0].policyId, res.body.runs[0].status, res.body.runs[0].trigger], [
    agentJob.id,
    "pending",
    "retry",
  ]);
});

Deno.test("the policy page's and the dashboard's Retry forms and the API are one rule: one retry between them", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const browser = new Browser(f.app);
  await signInAs(browser, kv, f.users.operator, f.clock.now());
  const page = `/backup/policies/${f.policy.id}`;
  const res = await browser.postForm(`/backup/runs/${f.failed.id}/retry`, {}, { tokenFrom: page });
  assert.equal(res.status, 303);
  assert.ok(res.headers.get("location")?.startsWith(page), res.headers.get("location") ?? "");
  const retries = async () =>
    (await Array.fromAsync(kv.list<Run>({ prefix: ["runs"] }))).filter((e) => e.value.trigger === "retry");
  assert.equal((await retries()).length, 1, "the page queued the retry");
  const api = await f.api("operator", `/api/v1/runs/${f.failed.id}/retry`, { method: "POST" });
  assert.equal(api.status, 422, "the API sees the same rule: no longer the latest run");
  const dashboard = await browser.postForm(`/backup/dashboard/runs/${f.failed.id}/retry`, {}, {
    tokenFrom: "/backup/dashboard",
  });
  assert.equal(dashboard.status, 303);
  assert.equal((await retries()).length, 1, "still one retry");
});

// ---------------------------------------------------------------------------------------------------
// PATCH a policy

Deno.test("PATCH /api/v1/policies/{id} with {enabled:false} disables it and keeps every other field", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const before = (await getPolicy(kv, f.policy.id))!;
  const res = await f.api("operator", `/api/v1/policies/${f.policy.id}`, {
    method: "PATCH",
    body: { enabled: false },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const after = (await getPolicy(kv, f.policy.id))!;
  assert.equal(after.enabled, false);
  const { enabled: _e1, updatedAt: _u1, ...restBefore } = before;
  const { enabled: _e2, updatedAt: _u2, ...restAfter } = after;
  assert.deepEqual(restAfter, restBefore, "nothing else changed (the derived RPO stays derived)");
  assert.equal(after.rpoDerived, true);
  assert.deepEqual(res.body, JSON.parse(JSON.stringify(after)));
  const audit = (await auditEntries(kv, f.a.account.id)).filter((e) => e.action === "policy.update");
  assert.equal(audit.length, 1);
  assert.match(audit[0].summary, /disabled/);

  const enabled = await f.api("operator", `/api/v1/policies/${f.policy.id}`, {
    method: "PATCH",
    body: { enabled: true },
  });
  assert.equal(enabled.status, 200);
  assert.equal((await getPolicy(kv, f.policy.id))!.enabled, true);
});

Deno.test("PATCH a policy: several fields, a new target on the same BES (policyCount moves), rpoHours back to derived", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const res = await f.api("admin", `/api/v1/policies/${f.policy.id}`, {
    method: "PATCH",
    body: { name: "  renamed  ", retentionDaily: 14, targetId: f.target2.id, rpoHours: 48 },
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  const p = (await getPolicy(kv, f.policy.id))!;
  assert.deepEqual([p.name, p.retentionDaily, p.targetId, p.rpoHours, p.rpoDerived], [
    "renamed",
    14,
    f.target2.id,
    48,
    false,
  ]);
  assert.deepEqual(p.excludePatterns, ["*.tmp"], "untouched fields stay");
  const counts = await kv.getMany<{ policyCount: number }[]>([
    ["storage_targets", f.target.id],
    ["storage_targets", f.target2.id],
  ]);
  assert.deepEqual(counts.map((e) => e.value!.policyCount), [0, 1]);
  const derived = await f.api("admin", `/api/v1/policies/${f.policy.id}`, {
    method: "PATCH",
    body: { rpoHours: null },
  });
  assert.equal(derived.status, 200);
  assert.equal((await getPolicy(kv, f.policy.id))!.rpoDerived, true);
  assert.equal((await getPolicy(kv, f.policy.id))!.incrementalSchedule, "* * * * *", "still there");
  const cleared = await f.api("admin", `/api/v1/policies/${f.policy.id}`, {
    method: "PATCH",
    body: { incrementalSchedule: null },
  });
  assert.equal(cleared.status, 200);
  assert.equal((await getPolicy(kv, f.policy.id))!.incrementalSchedule, null, "an explicit null clears it");
});

Deno.test("PATCH a policy: an unknown field, a bad value, another BES and a foreign target are 422 naming the field, and change nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const before = await f.snapshot();
  const patch = (body: unknown) =>
    f.api("operator", `/api/v1/policies/${f.policy.id}`, { method: "PATCH", body });
  const typo = await patch({ enabeld: false });
  assert.equal(typo.status, 422);
  assert.deepEqual(typo.body.error.fields, { enabeld: "Unknown field" });
  const bad = await patch({ retentionDaily: 0, fullSchedule: "not cron" });
  assert.equal(bad.status, 422);
  assert.deepEqual(Object.keys(bad.body.error.fields).sort(), ["fullSchedule", "retentionDaily"]);
  const bes = await patch({ besId: "01JC9Z8X7W6V5T4S3R2Q1P0N9M" });
  assert.equal(bes.status, 422);
  assert.ok(bes.body.error.fields.besId);
  const target = await patch({ targetId: "01JC9Z8X7W6V5T4S3R2Q1P0N9M" });
  assert.equal(target.status, 422);
  assert.ok(target.body.error.fields.targetId);
  const array = await patch([]);
  assert.equal(array.status, 422);
  assert.deepEqual(await f.snapshot(), before);
});

Deno.test("PATCH a policy: two racing PATCHes of different fields both land, each with its audit entry (30 rounds)", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const path = `/api/v1/policies/${f.policy.id}`;
  const rounds = 30;
  for (let round = 1; round <= rounds; round++) {
    const name = `nightly files r${round}`;
    const excludePatterns = [`*.r${round}`, "*.tmp"];
    // Both requests are in flight together: each reads the policy before the other commits (or retries).
    const [renamed, excluded] = await Promise.all([
      f.api("operator", path, { method: "PATCH", body: { name } }),
      f.api("admin", path, { method: "PATCH", body: { excludePatterns } }),
    ]);
    assert.equal(renamed.status, 200, JSON.stringify(renamed.body));
    assert.equal(excluded.status, 200, JSON.stringify(excluded.body));
    const p = (await getPolicy(kv, f.policy.id))!;
    assert.equal(p.name, name, `round ${round}: the rename landed`);
    assert.deepEqual(p.excludePatterns, excludePatterns, `round ${round}: the exclusions landed`);
  }
  const updates = (await auditEntries(kv, f.a.account.id)).filter((e) => e.action === "policy.update");
  assert.equal(updates.length, 2 * rounds, "one audit entry per PATCH");
});

Deno.test("the policy page's Enable/Disable is PATCH {enabled}'s write: a derived RPO stays derived, a racing edit is kept", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const browser = new Browser(f.app);
  await signInAs(browser, kv, f.users.operator, f.clock.now());
  const page = `/backup/policies/${f.policy.id}`;
  const before = (await getPolicy(kv, f.policy.id))!;
  assert.equal(before.rpoDerived, true);
  const off = await browser.postForm(`${page}/toggle`, {}, { tokenFrom: page });
  assert.equal(off.status, 303);
  const disabled = (await getPolicy(kv, f.policy.id))!;
  assert.deepEqual([disabled.enabled, disabled.rpoDerived, disabled.rpoHours], [
    false,
    true,
    before.rpoHours,
  ]);
  // The toggle and a PATCH of another field, in flight together, both land (10 rounds).
  for (let round = 1; round <= 10; round++) {
    const current = (await getPolicy(kv, f.policy.id))!;
    const [toggled, patched] = await Promise.all([
      browser.postForm(`${page}/toggle`, {}, { tokenFrom: page }),
      f.api("admin", `/api/v1/policies/${f.policy.id}`, {
        method: "PATCH",
        body: { retentionDaily: 7 + round },
      }),
    ]);
    assert.equal(toggled.status, 303);
    assert.equal(patched.status, 200, JSON.stringify(patched.body));
    const after = (await getPolicy(kv, f.policy.id))!;
    assert.equal(after.enabled, !current.enabled, `round ${round}: the toggle landed`);
    assert.equal(after.retentionDaily, 7 + round, `round ${round}: the PATCH landed`);
    assert.equal(after.rpoDerived, true);
  }
});

Deno.test("PATCH a policy: a viewer is 403, an admin of another org or account 404", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const before = await f.snapshot();
  const path = `/api/v1/policies/${f.policy.id}`;
  const body = { enabled: false };
  assert.equal((await f.api("viewer", path, { method: "PATCH", body })).status, 403);
  assert.equal((await f.api("a2Admin", path, { method: "PATCH", body })).status, 404);
  assert.equal((await f.api("otherAdmin", path, { method: "PATCH", body })).status, 404);
  assert.deepEqual(await f.snapshot(), before);
});

// ---------------------------------------------------------------------------------------------------
// Self-backup

const SETTINGS = {
  config: { enabled: true, hour: 4, retentionDays: 10 },
  results: { enabled: false, hour: 5, retentionDays: 3 },
  directory: "/srv/cadres-backups",
  minFreeBytes: 0,
  s3: {
    enabled: true,
    endpoint: "https://s3.eu-west-1.amazonaws.com",
    bucket: "acme-cadres",
    region: "eu-west-1",
    prefix: "cp/",
    accessKeyId: "AKIAEXAMPLE",
    secretAccessKey: "s3-Secret-Never-Shown",
  },
};

Deno.test("self-backup settings: read, replace (secret to the vault, never returned), audit; omit the secret to keep it", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const initial = await f.api("admin", "/api/v1/self-backup/settings");
  assert.equal(initial.status, 200);
  assert.equal(initial.body.directory, `${f.dataDir}/backups`);
  assert.equal(initial.body.s3.hasSecretAccessKey, false);
  assert.ok(!("credentialId" in initial.body.s3));

  const saved = await f.api("admin", "/api/v1/self-backup/settings", { method: "PUT", body: SETTINGS });
  assert.equal(saved.status, 200, JSON.stringify(saved.body));
  assert.deepEqual(saved.body.config, SETTINGS.config);
  assert.equal(saved.body.s3.hasSecretAccessKey, true);
  const read = await f.api("admin", "/api/v1/self-backup/settings");
  assert.deepEqual(read.body, saved.body);
  assert.ok(
    !(await kvSnapshot(kv)).includes(SETTINGS.s3.secretAccessKey),
    "the secret is sealed in the vault",
  );
  assert.ok(!JSON.stringify(read.body).includes(SETTINGS.s3.secretAccessKey));
  const audit = (await auditEntries(kv, f.a.account.id)).filter((e) => e.action === "self_backup.configure");
  assert.equal(audit.length, 1);

  const kept = await f.api("admin", "/api/v1/self-backup/settings", {
    method: "PUT",
    body: { ...SETTINGS, s3: { ...SETTINGS.s3, secretAccessKey: undefined, prefix: "" } },
  });
  assert.equal(kept.status, 200);
  assert.equal(kept.body.s3.hasSecretAccessKey, true, "the stored secret is kept");
  assert.equal(kept.body.s3.prefix, "");
});

Deno.test("self-backup settings: unknown or invalid fields are 422 naming them (dotted), and change nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const before = await f.snapshot();
  const put = (body: unknown) => f.api("admin", "/api/v1/self-backup/settings", { method: "PUT", body });
  const nested = await put({ ...SETTINGS, s3: { ...SETTINGS.s3, buckt: "x" } });
  assert.equal(nested.status, 422);
  assert.deepEqual(nested.body.error.fields, { "s3.buckt": "Unknown field" });
  const top = await put({ ...SETTINGS, retention: 3 });
  assert.deepEqual(top.body.error.fields, { retention: "Unknown field" });
  const invalid = await put({
    ...SETTINGS,
    config: { ...SETTINGS.config, hour: 24 },
    s3: { ...SETTINGS.s3, bucket: "X" },
  });
  assert.equal(invalid.status, 422);
  assert.deepEqual(Object.keys(invalid.body.error.fields).sort(), ["config.hour", "s3.bucket"]);
  const noSecret = await put({ ...SETTINGS, s3: { ...SETTINGS.s3, secretAccessKey: "" } });
  assert.equal(noSecret.status, 422);
  assert.deepEqual(Object.keys(noSecret.body.error.fields), ["s3.secretAccessKey"]);
  assert.deepEqual(await f.snapshot(), before);
});

Deno.test("self-backup: only all-scope admins of the operator account; others 403 and nothing changes", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const before = await f.snapshot();
  for (const who of ["a2Admin", "otherAdmin", "operator"] as const) {
    assert.equal((await f.api(who, "/api/v1/self-backup/settings")).status, 403, who);
    assert.equal(
      (await f.api(who, "/api/v1/self-backup/settings", { method: "PUT", body: SETTINGS })).status,
      403,
      who,
    );
    assert.equal(
      (await f.api(who, "/api/v1/self-backup/backups", { method: "POST", body: { database: "config" } }))
        .status,
      403,
      who,
    );
    assert.equal(
      (await f.api(who, "/api/v1/self-backup/restart-worker", { method: "POST" })).status,
      403,
      who,
    );
  }
  assert.deepEqual(await f.snapshot(), before);
});

Deno.test("self-backup: back up now writes a verified bundle and records the trigger; restart worker answers what it abandoned", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  const bad = await f.api("admin", "/api/v1/self-backup/backups", {
    method: "POST",
    body: { database: "all" },
  });
  assert.equal(bad.status, 422);
  assert.ok(bad.body.error.fields.database);
  const res = await f.api("admin", "/api/v1/self-backup/backups", {
    method: "POST",
    body: { database: "config" },
  });
  assert.ok(res.status === 200 || res.status === 202, JSON.stringify(res.body));
  let trigger = res.body.trigger;
  assert.equal(trigger.database, "config");
  assert.equal(trigger.kind, "manual");
  // A small database finishes quickly; wait for it through the health endpoint if it is still running.
  for (let i = 0; i < 100 && trigger.status === "running"; i++) {
    await new Promise((r) => setTimeout(r, 50));
    const health = await f.api("admin", "/api/health/infra/backup");
    trigger = health.body.recentTriggers.find((t: { id: string }) => t.id === trigger.id);
  }
  assert.equal(trigger.status, "success", trigger.error ?? "");
  const bundles = [...Deno.readDirSync(`${f.dataDir}/backups`)].map((e) => e.name);
  assert.equal(bundles.length, 1);
  assert.match(bundles[0], /^config-.*\.cadres-bundle$/);
  const actions = (await auditEntries(kv, f.a.account.id)).map((e) => e.action);
  assert.ok(actions.includes("self_backup.trigger"));

  const restarted = await f.api("admin", "/api/v1/self-backup/restart-worker", { method: "POST" });
  assert.equal(restarted.status, 200);
  assert.deepEqual(restarted.body, { abandoned: null });
  assert.ok((await auditEntries(kv, f.a.account.id)).some((e) => e.action === "self_backup.restart_worker"));
});

// ---------------------------------------------------------------------------------------------------
// Heatmap

Deno.test("GET /api/v1/dashboard/heatmap: 30 days per policy in scope with the outcome counts, paged by cursor", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  // A second policy in A1 and one in A2 (whose BES is in A2).
  await createPolicy(kv, system, {
    name: "another",
    besId: f.engine.id,
    targetId: f.target2.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, f.clock.now());
  const a2Engine =
    (await registerTestEngine(kv, { accountId: f.a.account.id, orgId: f.a2.id }, f.clock.now(), "bes-a2"))
      .engine;
  const a2Target = await createTarget(kv, system, targetInput(a2Engine.id), {
    now: f.clock.now(),
    masterKey,
  });
  await createPolicy(kv, system, {
    name: "a2 policy",
    besId: a2Engine.id,
    targetId: a2Target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, f.clock.now());

  const all = await f.api("admin", "/api/v1/dashboard/heatmap");
  assert.equal(all.status, 200, JSON.stringify(all.body));
  assert.equal(all.body.total, 3);
  assert.equal(all.body.cursor, "");
  assert.equal(all.body.days.length, 30);
  assert.equal(all.body.days.at(-1), "2026-11-01");
  assert.deepEqual(all.body.values.map((r: { policyName: string }) => r.policyName), [
    "a2 policy",
    "another",
    "nightly files",
  ]);
  const nightly = all.body.values.find((r: { policyId: string }) => r.policyId === f.policy.id);
  assert.equal(nightly.days.length, 30);
  assert.deepEqual(nightly.days.at(-1), { day: "2026-11-01", success: 0, warning: 0, failed: 1 });

  // The operator of A1 sees A1's two, one per page.
  const first = await f.api("operator", "/api/v1/dashboard/heatmap?limit=1");
  assert.equal(first.body.total, 2);
  assert.deepEqual(first.body.values.map((r: { policyName: string }) => r.policyName), ["another"]);
  assert.equal(first.body.cursor, "1");
  const second = await f.api("operator", `/api/v1/dashboard/heatmap?limit=1&cursor=${first.body.cursor}`);
  assert.deepEqual(second.body.values.map((r: { policyName: string }) => r.policyName), ["nightly files"]);
  assert.equal(second.body.cursor, "");
  // Another account sees none of them.
  assert.equal((await f.api("otherAdmin", "/api/v1/dashboard/heatmap")).body.total, 0);
});

Deno.test("GET /api/v1/dashboard/heatmap refuses an unknown parameter, a bad cursor or limit (422), anonymous (401)", async () => {
  using kv = await Deno.openKv(":memory:");
  await using f = await fixture(kv);
  for (const query of ["?offset=1", "?cursor=abc", "?limit=0", "?limit=101"]) {
    const res = await f.api("viewer", `/api/v1/dashboard/heatmap${query}`);
    assert.equal(res.status, 422, query);
    assert.equal(res.body.error.code, "invalid");
  }
  const anonymous = await f.app.request("http://localhost:8000/api/v1/dashboard/heatmap");
  assert.equal(anonymous.status, 401);
});
