/**
 * Repositories and generations (ENGINE.md §3): every restore point records its repository; a change of a
 * policy's storage target, encryption or deduplication starts a new generation whose first backup on each
 * host is sent as a full, and nothing else does; prune jobs go to the repository that holds the points;
 * a target that holds restore points is not deleted (domain, page and API); a deleted policy is kept
 * retired while its points remain. Also: include paths (validation, 422 naming the field, the payload)
 * and the default roots agents report.
 */
import assert from "node:assert/strict";
import { assignHost } from "../../domain/assignments.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { ConflictError } from "../../domain/errors.ts";
import { applyHostHeartbeat, enrollHost, getHost } from "../../domain/hosts.ts";
import { applyResult, claimJobs, getJob, type Job } from "../../domain/job_queue.ts";
import {
  createPolicy,
  deletePolicy,
  getPolicy,
  type Policy,
  PolicyFields,
  updatePolicy,
} from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { countPointsOnTarget, indexRestorePointsByTarget, repositoryOf } from "../../domain/repositories.ts";
import { listRestorePoints, requireRestorePoint } from "../../domain/restore_points.ts";
import { requestBrowse } from "../../domain/restore_browse.ts";
import { runPolicyNow } from "../../domain/run_now.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import { applyRetention } from "../../domain/retention_apply.ts";
import { listRunsByPolicy } from "../../domain/runs.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget, deleteTarget, getTarget } from "../../domain/storage.ts";
import {
  addUser,
  assertIncludes,
  auditEntries,
  Browser,
  createTenant,
  engineClient,
  engineMetrics,
  registerTestEngine,
  signInAs,
  targetInput,
  testApp,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);
/** Monday 2026-11-02; the policy's incremental runs daily at 01:00, its full on Sundays at 00:00. */
const MONDAY = Date.parse("2026-11-02T01:00:00Z");
const day = (n: number) => new Date(MONDAY + n * 86_400_000);

async function setup(kv: Deno.Kv) {
  const clock = new TestClock(new Date("2026-11-01T12:00:00Z"));
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops"], now);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, now, "bes-repo");
  const t1 = await createTarget(kv, system, targetInput(engine.id, "local", { name: "disk-1" }), {
    now,
    masterKey,
  });
  const t2 = await createTarget(
    kv,
    system,
    targetInput(engine.id, "local", { name: "disk-2", config: { path: "/srv/disk-2" } }),
    { now, masterKey },
  );
  const policy = await createPolicy(kv, system, {
    name: "Files",
    besId: engine.id,
    targetId: t1.id,
    backupType: "file",
    fullSchedule: "0 0 * * 0",
    incrementalSchedule: "0 1 * * *",
    retentionDaily: 1,
    retentionWeekly: 0,
    retentionMonthly: 0,
    includePaths: ["/srv/data", "/etc/"],
  }, now);
  const { host } = await enrollHost(kv, scope, {
    hostname: "files-01.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.2",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, now);
  await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, now);
  const online = async (at: Date) => {
    await applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, at);
    await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, at);
  };
  /** The scheduler's backup jobs for the host at `at` (claimed). */
  const tick = async (at: Date): Promise<Job[]> => {
    clock.time = at;
    await online(at);
    await runSchedulerTick(kv, at);
    return (await claimJobs(kv, `agent:${host.id}`, 10, at)).filter((j) => j.kind === "backup");
  };
  let n = 0;
  /** Finishes a claimed backup as its agent with a restore point; returns our point. */
  const finish = async (job: Job, point: { type: string; parentId?: string }) => {
    const at = clock.now();
    const id = `rp-${++n}`;
    const { job: done } = await applyResult(kv, job.principal, job.id, {
      status: "success",
      startedAt: at.toISOString(),
      endedAt: at.toISOString(),
      bytesTransferred: 100,
      protectedBytes: 100,
      output: {
        restorePoint: { id, chainId: `chain-${id}`, sizeBytes: 100, fileCount: 1, ...point },
      },
    }, at);
    await applyJobOutcome(kv, done, at);
    const run = (await listRunsByPolicy(kv, policy.id)).find((r) => r.jobId === job.id)!;
    return (await kv.get<RestorePoint>(["restore_points", run.restorePointId!])).value!;
  };
  const edit = async (change: Partial<Policy>) =>
    await updatePolicy(
      kv,
      system,
      policy.id,
      { ...(await getPolicy(kv, policy.id))!, ...change },
      clock.now(),
    );
  return { clock, tenant, scope, engine, t1, t2, policy, host, tick, finish, edit, online };
}

Deno.test("a policy starts at generation 1; its backup payload names the repository and its include paths", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  assert.equal(s.policy.generation, 1);
  assert.deepEqual(repositoryOf(s.policy), {
    target: s.t1.id,
    path: `cadres/${s.policy.id}/g1`,
    generation: 1,
  });
  assert.deepEqual(s.policy.includePaths, ["/srv/data", "/etc"], "normalized: the trailing slash goes");
  const [job] = await s.tick(day(0));
  assert.equal(job.payload.runKind, "incremental", "generation 1: as before, the agent decides");
  assert.equal(job.payload.fullReason, undefined);
  assert.deepEqual(job.payload.repository, repositoryOf(s.policy));
  assert.deepEqual(job.payload.includePaths, ["/srv/data", "/etc"]);
  const point = await s.finish(job, { type: "full" });
  assert.deepEqual(point.repository, repositoryOf(s.policy), "the point records its repository");
});

Deno.test("only a change of target, encryption or deduplication starts a new generation", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  // Edits that keep the repository: name, schedules, compression, retention, paths, throttling, enabled.
  for (
    const change of [
      { name: "Files renamed" },
      { incrementalSchedule: "0 3 * * *" },
      { compression: "zstd" as const },
      { retentionDaily: 9 },
      { includePaths: ["/home"] },
      { excludePatterns: ["*.tmp"] },
      { maxTransferMbps: 50 },
      { verifySampleCount: 7 },
      { enabled: false },
      { enabled: true },
    ]
  ) {
    const next = await s.edit(change);
    assert.equal(next.generation, 1, `${JSON.stringify(change)} keeps generation 1`);
  }
  assert.equal((await s.edit({ encryption: "AES-256-CBC" })).generation, 2);
  assert.equal((await s.edit({ encryption: "AES-256-CBC", name: "again" })).generation, 2, "same value");
  assert.equal((await s.edit({ deduplication: false })).generation, 3);
  const moved = await s.edit({ targetId: s.t2.id });
  assert.equal(moved.generation, 4);
  assert.deepEqual(repositoryOf(moved), { target: s.t2.id, path: `cadres/${s.policy.id}/g4`, generation: 4 });
  // Several at once are one new generation.
  const both = await s.edit({ targetId: s.t1.id, encryption: "none", deduplication: true });
  assert.equal(both.generation, 5);
  const summaries = (await auditEntries(kv, s.tenant.account.id))
    .filter((a) => a.action === "policy.update").map((a) => a.summary);
  assert.ok(summaries.some((m) => /encryption changed: repository generation 2 starts/.test(m)), "audited");
  assert.ok(
    summaries.some((m) =>
      /storage target, encryption, deduplication changed: repository generation 5 starts/.test(m)
    ),
    summaries.join("\n"),
  );
});

Deno.test("after a new generation each host's next backup is sent as a full, then incrementals resume", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const p1 = await s.finish((await s.tick(day(0)))[0], { type: "full" });
  const [inc] = await s.tick(day(1));
  assert.equal(inc.payload.runKind, "incremental", "same generation: incremental");
  const p2 = await s.finish(inc, { type: "incremental", parentId: p1.engineRestorePointId });
  assert.equal(p2.repository!.generation, 1);

  await s.edit({ encryption: "AES-256-CBC" });
  const [first] = await s.tick(day(2));
  assert.equal(first.payload.runKind, "full", "the first backup of generation 2 is a full");
  assert.equal(first.payload.fullReason, "new_generation");
  assert.equal((first.payload.repository as { path: string }).path, `cadres/${s.policy.id}/g2`);
  const run = (await listRunsByPolicy(kv, s.policy.id)).find((r) => r.jobId === first.id)!;
  assert.equal(run.kind, "full", "the run says what was sent");
  const p3 = await s.finish(first, { type: "full" });
  assert.equal(p3.repository!.generation, 2);

  const [next] = await s.tick(day(3));
  assert.equal(next.payload.runKind, "incremental", "the host has a point in generation 2 now");
  assert.equal(next.payload.fullReason, undefined);
  await s.finish(next, { type: "incremental", parentId: p3.engineRestorePointId });

  // Run now (and the other dispatch paths) follow the same rule.
  await s.edit({ targetId: s.t2.id });
  s.clock.time = day(3.5);
  await s.online(s.clock.now());
  const [manual] = await runPolicyNow(kv, system, s.policy.id, { kind: "incremental" }, s.clock.now());
  assert.equal(manual.run.kind, "full");
  const manualJob = (await getJob(kv, manual.run.jobId!))!;
  assert.equal(manualJob.payload.runKind, "full");
  assert.equal(manualJob.payload.fullReason, "new_generation");
  assert.deepEqual(manualJob.payload.repository, {
    target: s.t2.id,
    path: `cadres/${s.policy.id}/g3`,
    generation: 3,
  });
});

Deno.test("older generations keep their points; retention prunes each point in the repository that holds it", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const old = await s.finish((await s.tick(day(0)))[0], { type: "full" });
  await s.edit({ targetId: s.t2.id });
  const fresh = await s.finish((await s.tick(day(1)))[0], { type: "full" });
  assert.equal(fresh.repository!.target, s.t2.id);
  assert.equal(old.repository!.target, s.t1.id, "the old point stays where it was written");
  // Both points are still there and restorable; jobs on the old one name its own repository.
  assert.equal((await requireRestorePoint(kv, system, old.id)).status, "complete");
  const browse = await requestBrowse(kv, system, old.id, "/", s.clock.now());
  assert.deepEqual((await getJob(kv, browse.jobId))!.payload.repository, old.repository);
  const verifies = (await Array.fromAsync(kv.list<Job>({ prefix: ["jobs"] }))).map((e) => e.value)
    .filter((j) => j.kind === "verify");
  assert.deepEqual(
    verifies.map((j) => j.payload.repository),
    [old.repository, fresh.repository],
    "each verify names the repository of its point",
  );
  // Daily retention of 1 expires the older point: its prune job goes to the first target's repository.
  const { expired, pruneJobs } = await applyRetention(kv, day(2));
  assert.equal(expired, 1);
  assert.equal(pruneJobs, 1);
  const prune = (await Array.fromAsync(kv.list<Job>({ prefix: ["jobs"] }))).map((e) => e.value)
    .find((j) => j.kind === "prune")!;
  assert.equal(prune.payload.targetId, s.t1.id);
  assert.deepEqual(prune.payload.repository, old.repository);
  assert.deepEqual(prune.payload.restorePointIds, [old.engineRestorePointId]);
});

Deno.test("a storage target that holds restore points cannot be deleted (domain, page and API say how many)", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const old = await s.finish((await s.tick(day(0)))[0], { type: "full" });
  await s.edit({ targetId: s.t2.id }); // no policy writes to disk-1 any more
  assert.equal((await getTarget(kv, s.t1.id))!.policyCount, 0);
  assert.deepEqual(await countPointsOnTarget(kv, s.t1.id), { count: 1, sample: [old.id] });
  await assert.rejects(
    () => deleteTarget(kv, system, s.t1.id, s.clock.now()),
    (e: unknown) => e instanceof ConflictError && /still holds 1 restore point/.test(e.message),
  );
  // The page refuses the same way, and the confirmation page says so before anyone presses the button.
  const { app } = testApp(kv, s.clock);
  const admin = await addUser(kv, s.tenant, "admin@acme.example", "admin", "all", s.clock.now());
  const b = new Browser(app);
  await signInAs(b, kv, admin, s.clock.now());
  const confirm = await (await b.get(`/backup/storage/${s.t1.id}/delete`)).text();
  assertIncludes(confirm, "still holds 1 restore point");
  assert.ok(!confirm.includes(`action="/backup/storage/${s.t1.id}/delete"`), "no delete button");
  const posted = await b.postForm(`/backup/storage/${s.t1.id}/delete`, {}, {
    tokenFrom: `/backup/storage/${s.t1.id}`,
  });
  assert.equal(posted.status, 409);
  assertIncludes(await posted.text(), "still holds 1 restore point");
  const api = await b.request(`/api/v1/storage/${s.t1.id}`, {
    method: "DELETE",
    headers: { "x-csrf-token": await b.csrfFor("/backup/storage"), origin: "http://localhost:8000" },
  });
  assert.equal(api.status, 409);
  const body = await api.json();
  assert.equal(body.error.code, "conflict");
  assert.match(body.error.message, /still holds 1 restore point/);
  assert.ok(await getTarget(kv, s.t1.id), "still there");
  // Once its points have expired, it can go.
  const fresh = await s.finish((await s.tick(day(1)))[0], { type: "full" });
  assert.equal(fresh.repository!.target, s.t2.id);
  await applyRetention(kv, day(2));
  assert.equal((await countPointsOnTarget(kv, s.t1.id)).count, 0);
  await deleteTarget(kv, system, s.t1.id, s.clock.now());
  assert.equal(await getTarget(kv, s.t1.id), null);
});

Deno.test("deleting a policy keeps its restore points and repositories until they expire", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const p1 = await s.finish((await s.tick(day(0)))[0], { type: "full" });
  const p2 = await s.finish((await s.tick(day(1)))[0], {
    type: "incremental",
    parentId: p1.engineRestorePointId,
  });
  await deletePolicy(kv, system, s.policy.id, s.clock.now());
  assert.equal(await getPolicy(kv, s.policy.id), null, "the policy is gone");
  assert.equal((await getTarget(kv, s.t1.id))!.policyCount, 0);
  // Its points are still listed and restorable, under the retired policy's name.
  const view = await requireRestorePoint(kv, system, p2.id);
  assert.equal(view.policyName, "Files");
  assert.equal(view.status, "complete");
  const listed = await listRestorePoints(kv, system, { policyId: s.policy.id });
  assert.deepEqual(listed.values.map((p) => p.id).sort(), [p1.id, p2.id].sort());
  // Its target holds them: not deletable.
  await assert.rejects(
    () => deleteTarget(kv, system, s.t1.id, s.clock.now()),
    /still holds 2 restore points/,
  );
  // Retention goes on under its last settings (daily 1): the chain of the newest point is kept.
  await applyRetention(kv, day(5));
  assert.ok((await kv.get(["policies_retired", s.policy.id])).value, "kept while points remain");
  // When its last points expire (an operator's purge does this), the retired record goes and the target can
  // be deleted.
  for (const p of [p1, p2]) {
    const entry = await kv.get<RestorePoint>(["restore_points", p.id]);
    await kv.set(entry.key, { ...entry.value!, status: "expired" });
  }
  await applyRetention(kv, day(6));
  assert.equal((await kv.get(["policies_retired", s.policy.id])).value, null);
  assert.equal((await kv.get(["policies_retired_by_account", s.tenant.account.id, s.policy.id])).value, null);
  await deleteTarget(kv, system, s.t1.id, s.clock.now());
});

Deno.test("points written before generations get their repository and target index from the data fix", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const point = await s.finish((await s.tick(day(0)))[0], { type: "full" });
  // As a point was stored before: no repository, no by-target entry.
  const { repository: _r, ...legacy } = point;
  await kv.set(["restore_points", point.id], legacy);
  await kv.delete(["restore_points_by_target", s.t1.id, point.id]);
  assert.equal((await countPointsOnTarget(kv, s.t1.id)).count, 0);
  const fix = await indexRestorePointsByTarget(kv, s.clock.now());
  assert.equal(fix.indexed, 1);
  const fixed = (await kv.get<RestorePoint>(["restore_points", point.id])).value!;
  assert.deepEqual(fixed.repository, { target: s.t1.id, path: `cadres/${s.policy.id}/g1`, generation: 1 });
  assert.equal((await countPointsOnTarget(kv, s.t1.id)).count, 1);
  assert.equal((await indexRestorePointsByTarget(kv, s.clock.now())).skipped, true, "once");
});

Deno.test("include paths: absolute, no '..', at most 100, each at most 1024 characters; errors name the field", () => {
  const base = { name: "p", targetId: "t", backupType: "file", fullSchedule: "0 2 * * 0" };
  const ok = PolicyFields.parse({ ...base, includePaths: ["/srv//data/", "C:/Users/ann", "/srv/data", "/"] });
  assert.deepEqual(ok.includePaths, ["/srv/data", "C:\\Users\\ann", "/"], "normalized and deduplicated");
  assert.deepEqual(PolicyFields.parse(base).includePaths, [], "empty: the agent's default roots");
  for (
    const [paths, message] of [
      [["srv/data"], /line 1 \(srv\/data\) must be an absolute path/],
      [["/etc", "/srv/../root"], /line 2 .* must not contain "\.\." segments/],
      [["C:\\Users\\..\\x"], /must not contain "\.\." segments/],
      [["/a\u0007b"], /must not contain control characters/],
      [["/" + "x".repeat(1024)], /must be at most 1024 characters/],
      [Array.from({ length: 101 }, (_, i) => `/d${i}`), /at most 100 include paths/],
    ] as const
  ) {
    const r = PolicyFields.safeParse({ ...base, includePaths: paths });
    assert.ok(!r.success, JSON.stringify(paths).slice(0, 80));
    assert.deepEqual(r.error.issues.map((i) => i.path), [["includePaths"]]);
    assert.match(r.error.issues[0].message, message);
  }
});

Deno.test("include paths in the form and the API: 422 naming the field, kept, shown, and carried by jobs", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const { app } = testApp(kv, s.clock);
  const admin = await addUser(kv, s.tenant, "admin@acme.example", "admin", "all", s.clock.now());
  const b = new Browser(app);
  await signInAs(b, kv, admin, s.clock.now());
  // API: a relative path is a 422 naming includePaths; nothing is created.
  const before = (await Array.fromAsync(kv.list({ prefix: ["policies"] }))).length;
  const api = await b.request("/api/v1/policies", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-csrf-token": await b.csrfFor("/backup/policies"),
      origin: "http://localhost:8000",
    },
    body: JSON.stringify({
      name: "API policy",
      besId: s.engine.id,
      targetId: s.t1.id,
      backupType: "file",
      fullSchedule: "0 2 * * 0",
      includePaths: ["/home", "var/www"],
    }),
  });
  assert.equal(api.status, 422);
  const body = await api.json();
  assert.match(body.error.fields.includePaths, /Line 2 \(var\/www\) must be an absolute path/);
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["policies"] }))).length, before);
  // The edit form: one path per line; a bad line is a 422 with the message next to the field and the text kept.
  const edit = `/backup/policies/${s.policy.id}/edit`;
  const form = await (await b.get(edit)).text();
  assert.match(form, /<textarea[^>]*name="includePaths"[^>]*>\s*\/srv\/data\n\/etc\s*<\/textarea>/);
  const fields: Record<string, string> = {
    name: "Files",
    targetId: s.t1.id,
    backupType: "file",
    timeZone: "UTC",
    fullSchedule: "0 0 * * 0",
    incrementalSchedule: "0 1 * * *",
    retentionDaily: "1",
    retentionWeekly: "0",
    retentionMonthly: "0",
    compression: "lz4",
    encryption: "AES-256-GCM",
    deduplication: "on",
    ioPriority: "normal",
    verifySampleCount: "50",
    enabled: "on",
  };
  const bad = await b.postForm(edit, { ...fields, includePaths: "/home\n/srv/../etc" }, { tokenFrom: edit });
  assert.equal(bad.status, 422);
  const html = await bad.text();
  assertIncludes(html, "Line 2 (/srv/../etc) must not contain &quot;..&quot; segments");
  assertIncludes(html, "/home\n/srv/../etc", "the text is kept");
  assert.deepEqual((await getPolicy(kv, s.policy.id))!.includePaths, ["/srv/data", "/etc"], "unchanged");
  const good = await b.postForm(edit, { ...fields, includePaths: "/home\r\n\r\n/var/www/" }, {
    tokenFrom: edit,
  });
  assert.equal(good.status, 303);
  const saved = (await getPolicy(kv, s.policy.id))!;
  assert.deepEqual(saved.includePaths, ["/home", "/var/www"]);
  assert.equal(saved.generation, 1, "paths do not change the repository");
  const page = await (await b.get(`/backup/policies/${s.policy.id}`)).text();
  assertIncludes(page, "/home  /var/www");
  assertIncludes(page, `cadres/${s.policy.id}/g1`);
  const [job] = await s.tick(day(0));
  assert.deepEqual(job.payload.includePaths, ["/home", "/var/www"]);
  await signInAs(b, kv, admin, s.clock.now()); // the clock moved on
  // Emptied: the agent's default roots.
  const emptied = await b.postForm(edit, { ...fields, includePaths: "" }, { tokenFrom: edit });
  assert.equal(emptied.status, 303, await emptied.text());
  assert.deepEqual((await getPolicy(kv, s.policy.id))!.includePaths, []);
  assertIncludes(await (await b.get(`/backup/policies/${s.policy.id}`)).text(), "the agent's default roots");
});

Deno.test("agents report their default roots at enrollment and in heartbeats; bad roots are a 422", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const { app } = testApp(kv, s.clock);
  const client = engineClient(app, s.clock);
  const pair = generateKeyPair();
  const enroll = (defaultRoots: unknown) =>
    client.sendRegistration("agent", s.tenant.secrets[0], pair.privateKey, {
      hostname: "roots.acme.example",
      os: "Debian 12",
      ipAddress: "10.0.0.9",
      publicKey: pair.publicKey,
      version: "1",
      defaultRoots,
    });
  const refused = await enroll(["/", "home"]);
  assert.equal(refused.status, 422);
  assert.match((await refused.json()).error.fields["defaultRoots.1"], /absolute path/);
  const res = await enroll(["/", "/home"]);
  assert.equal(res.status, 201);
  const id = (await res.json()).id as string;
  assert.deepEqual((await getHost(kv, id))!.defaultRoots, ["/", "/home"]);
  const identity = { kind: "agent" as const, id, ...pair };
  const hb = await client.post(identity, "/api/agent/v1/heartbeat", {
    version: "1",
    metrics: engineMetrics(),
    defaultRoots: ["/srv"],
  });
  assert.equal(hb.status, 200);
  assert.deepEqual((await getHost(kv, id))!.defaultRoots, ["/srv"]);
  await (await client.post(identity, "/api/agent/v1/heartbeat", { version: "1", metrics: engineMetrics() }))
    .body
    ?.cancel();
  assert.deepEqual((await getHost(kv, id))!.defaultRoots, ["/srv"], "absent: unchanged");
  const admin = await addUser(kv, s.tenant, "admin@acme.example", "admin", "all", s.clock.now());
  const b = new Browser(app);
  await signInAs(b, kv, admin, s.clock.now());
  assertIncludes(await (await b.get(`/backup/hosts/${id}`)).text(), "<code>/srv</code>");
});
