/**
 * Restore (issue 7): restore points and chains, browse and search jobs and their outcomes, file and
 * image restores (target-host scope, priorities), bare-metal restore preconditions and its one-time
 * token (single use under concurrency, expiry, stored only hashed), permission gating of the JSON API,
 * and the whole flow against the simulated BES and agent over the signed protocol.
 */
import assert from "node:assert/strict";
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { assignHost } from "../../domain/assignments.ts";
import { applyHeartbeat, type Engine, engineKey } from "../../domain/engines.ts";
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import { applyHostHeartbeat, enrollHost, type Host } from "../../domain/hosts.ts";
import { newId, sha256Hex } from "../../domain/ids.ts";
import {
  applyResult,
  claimJobs,
  enqueueJob,
  expireLeases,
  getJob,
  type Job,
  reportProgress,
  type ResultInput,
} from "../../domain/job_queue.ts";
import { createPolicy, type Policy } from "../../domain/policies.ts";
import { type Actor, systemActor } from "../../domain/rbac.ts";
import { BMR_TOKEN_TTL_MS, redeemBmrToken, requestBmr } from "../../domain/bmr.ts";
import {
  getBrowse,
  getSearch,
  requestBrowse,
  requestSearch,
  RESTORE_PICKUP_MS,
} from "../../domain/restore_browse.ts";
import {
  getRestore,
  listRestores,
  requestFileRestore,
  requestImageRestore,
  restorePathsChunk,
  type RestoreRequest,
} from "../../domain/restore_requests.ts";
import {
  latestRestorePointOfHost,
  listRestorePoints,
  requireRestorePoint,
  restorePointChain,
} from "../../domain/restore_points.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { restorePointKey } from "../../domain/keys/restore.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { classifyKey } from "../../domain/self_backup.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import type { User } from "../../domain/types.ts";
import {
  processJobs,
  simulatedChildren,
  simulatedEntry,
  simulatedFilesUnder,
  simulatedSearch,
  treeSeed,
} from "../../tools/simulator.ts";
import {
  addUser,
  auditEntries,
  createTenant,
  engineClient,
  engineMetrics,
  registerTestEngine,
  setFleetStatus,
  targetInput,
  type Tenant,
  testApp,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);
const START = new Date("2026-11-29T01:50:00Z");

interface Fixture {
  tenant: Tenant;
  other: Tenant;
  engine: Engine;
  filePolicy: Policy;
  imagePolicy: Policy;
  h1: Host;
  h2: Host;
  lab: Host;
  foreign: Host;
  users: Record<"viewer" | "operator" | "restorer" | "labRestorer" | "admin" | "foreignAdmin", User>;
  clock: TestClock;
}

async function enroll(kv: Deno.Kv, scope: { accountId: string; orgId: string }, name: string, now: Date) {
  const { host } = await enrollHost(kv, scope, {
    hostname: `${name}.acme.example`,
    os: "Debian 12",
    ipAddress: "10.0.0.2",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, now);
  return await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, now).then(() =>
    host
  );
}

async function fixture(kv: Deno.Kv): Promise<Fixture> {
  const clock = new TestClock(START);
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops", "Lab"], now);
  const other = await createTenant(kv, "Other", ["X"], now);
  const [ops, labOrg] = tenant.orgs;
  const scope = { accountId: tenant.account.id, orgId: ops.id };
  const { engine } = await registerTestEngine(kv, scope, now);
  await applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, now);
  const target = await createTarget(kv, system, targetInput(engine.id), { now, masterKey });
  const base = { besId: engine.id, targetId: target.id, fullSchedule: "0 2 * * 0" };
  const filePolicy = await createPolicy(kv, system, { ...base, name: "files", backupType: "file" }, now);
  const imagePolicy = await createPolicy(kv, system, { ...base, name: "images", backupType: "image" }, now);
  const h1 = await enroll(kv, scope, "h1", now);
  const h2 = await enroll(kv, scope, "h2", now);
  const lab = await enroll(kv, { accountId: tenant.account.id, orgId: labOrg.id }, "lab1", now);
  const foreign = await enroll(kv, { accountId: other.account.id, orgId: other.orgs[0].id }, "x1", now);
  for (const policy of [filePolicy, imagePolicy]) {
    await assignHost(kv, system, { policyId: policy.id, hostId: h1.id }, now);
  }
  const users = {
    viewer: await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", now),
    operator: await addUser(kv, tenant, "operator@acme.example", "operator", "all", now),
    restorer: await addUser(kv, tenant, "restorer@acme.example", "restore_operator", [ops], now),
    labRestorer: await addUser(kv, tenant, "lab@acme.example", "restore_operator", [labOrg], now),
    admin: await addUser(kv, tenant, "admin@acme.example", "admin", "all", now),
    foreignAdmin: await addUser(kv, other, "admin@other.example", "admin", "all", now),
  };
  return { tenant, other, engine, filePolicy, imagePolicy, h1, h2, lab, foreign, users, clock };
}

/** Writes a restore point of `policy` directly (what a backup result creates), completed at `at`. */
async function putPoint(
  kv: Deno.Kv,
  policy: Policy,
  hostId: string | null,
  at: Date,
  fields: Partial<RestorePoint> = {},
): Promise<RestorePoint> {
  const id = newId(at);
  const point: RestorePoint = {
    id,
    engineRestorePointId: `engine-${id}`,
    engineId: policy.besId,
    policyId: policy.id,
    hostId,
    runId: newId(at),
    chainId: "chain-1",
    type: "full",
    parentId: null,
    sizeBytes: 10 * 1024 ** 3,
    fileCount: 12_000,
    completedAt: at.toISOString(),
    status: "complete",
    verification: "passed",
    ...fields,
  };
  const res = await kv.atomic().set(restorePointKey(id), point).set(
    ["restore_points_by_policy", policy.id, id],
    id,
  ).commit();
  assert.ok(res.ok);
  return point;
}

function actorOf(user: User): Actor {
  return userActor(user);
}

/** Claims the principal's jobs and posts `result` for the one with id `jobId`. */
async function finish(kv: Deno.Kv, job: Job, result: Partial<ResultInput>, now: Date): Promise<Job> {
  const claimed = await claimJobs(kv, job.principal, 50, now);
  assert.ok(claimed.some((j) => j.id === job.id), `job ${job.kind} was claimable`);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "success",
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    ...result,
  }, now);
  await applyJobOutcome(kv, done, now);
  return done;
}

async function jobsOf(kv: Deno.Kv, kind: string): Promise<Job[]> {
  const out: Job[] = [];
  for await (const e of kv.list<Job>({ prefix: ["jobs"] })) if (e.value.kind === kind) out.push(e.value);
  return out;
}

async function rejects(promise: Promise<unknown>, type: new (...a: never[]) => Error, pattern?: RegExp) {
  await assert.rejects(promise, (e: Error) => {
    assert.ok(e instanceof type, `expected ${type.name}, got ${e.name}: ${e.message}`);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------------
// Restore points

Deno.test("listRestorePoints() filters by host, policy, BES, chain, status and verification, newest first", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const t = (h: number) => new Date(START.getTime() - h * 3600_000);
  const full = await putPoint(kv, f.filePolicy, f.h1.id, t(30), { chainId: "c1" });
  const inc = await putPoint(kv, f.filePolicy, f.h1.id, t(20), {
    chainId: "c1",
    type: "incremental",
    parentId: full.engineRestorePointId!,
    verification: "failed",
  });
  const other = await putPoint(kv, f.filePolicy, f.h2.id, t(10), { chainId: "c2", status: "running" });
  const image = await putPoint(kv, f.imagePolicy, f.h1.id, t(5), { chainId: "c3", verification: "partial" });
  const actor = actorOf(f.users.restorer);
  const ids = async (filter: Record<string, string | number>) =>
    (await listRestorePoints(kv, actor, filter)).values.map((p) => p.id);
  assert.deepEqual(await ids({}), [image.id, other.id, inc.id, full.id]);
  assert.deepEqual(await ids({ hostId: f.h1.id }), [image.id, inc.id, full.id]);
  assert.deepEqual(await ids({ policyId: f.filePolicy.id }), [other.id, inc.id, full.id]);
  assert.deepEqual(await ids({ besId: f.engine.id, chainId: "c1" }), [inc.id, full.id]);
  assert.deepEqual(await ids({ status: "running" }), [other.id]);
  assert.deepEqual(await ids({ verification: "failed" }), [inc.id]);
  assert.deepEqual(await ids({ verification: "partial", status: "complete" }), [image.id]);
  assert.deepEqual(await ids({ besId: newId(START) }), []);
  // A raw query object with junk falls back to defaults.
  assert.equal(
    (await listRestorePoints(kv, actor, { status: "bogus" as never, limit: "x" as never })).values.length,
    4,
  );
  const [view] = (await listRestorePoints(kv, actor, { limit: 1 })).values;
  assert.equal(view.policyName, "images");
  assert.equal(view.backupType, "image");
  assert.equal(view.hostName, "h1.acme.example");
  assert.equal(view.besName, "bes-1");
  assert.equal(view.orgId, f.tenant.orgs[0].id);
  // Pages: cursor is the last point of the page; the last page answers an empty cursor.
  const p1 = await listRestorePoints(kv, actor, { limit: 3 });
  assert.equal(p1.values.length, 3);
  const p2 = await listRestorePoints(kv, actor, { limit: 3, cursor: p1.cursor });
  assert.deepEqual(p2.values.map((p) => p.id), [full.id]);
  assert.equal(p2.cursor, "");
  // Other scopes: another org's restorer and another account see none; no backup.restore is refused.
  assert.equal((await listRestorePoints(kv, actorOf(f.users.labRestorer))).values.length, 0);
  assert.equal((await listRestorePoints(kv, actorOf(f.users.foreignAdmin))).values.length, 0);
  await rejects(listRestorePoints(kv, actorOf(f.users.operator)), ForbiddenError, /backup\.restore/);
});

Deno.test("requireRestorePoint() hides other scopes; restorePointChain() lists the full then its incrementals", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const t = (h: number) => new Date(START.getTime() - h * 3600_000);
  await putPoint(kv, f.filePolicy, f.h1.id, t(100), { chainId: "old" });
  const full = await putPoint(kv, f.filePolicy, f.h1.id, t(72), { chainId: "c1", sizeBytes: 40 });
  const i1 = await putPoint(kv, f.filePolicy, f.h1.id, t(48), {
    chainId: "c1",
    type: "incremental",
    sizeBytes: 2,
    parentId: full.engineRestorePointId!,
  });
  await putPoint(kv, f.filePolicy, f.h2.id, t(40), { chainId: "c1-of-h2" });
  const i2 = await putPoint(kv, f.filePolicy, f.h1.id, t(24), {
    chainId: "c1",
    type: "incremental",
    sizeBytes: 3,
    verification: "failed",
    parentId: i1.engineRestorePointId!,
  });
  await putPoint(kv, f.filePolicy, f.h1.id, t(1), { chainId: "c2" });
  const chain = await restorePointChain(kv, actorOf(f.users.restorer), i1.id);
  assert.deepEqual(chain.map((p) => [p.id, p.type, p.sizeBytes, p.verification]), [
    [full.id, "full", 40, "passed"],
    [i1.id, "incremental", 2, "passed"],
    [i2.id, "incremental", 3, "failed"],
  ]);
  await rejects(requireRestorePoint(kv, actorOf(f.users.labRestorer), full.id), NotFoundError);
  await rejects(requireRestorePoint(kv, actorOf(f.users.foreignAdmin), full.id), NotFoundError);
  await rejects(requireRestorePoint(kv, actorOf(f.users.viewer), full.id), ForbiddenError, /backup\.restore/);
  await rejects(requireRestorePoint(kv, actorOf(f.users.admin), newId(START)), NotFoundError);
});

Deno.test("restorePointChain() finds the chain of an old point behind 20,000 newer points of its policy", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const t = (h: number) => new Date(START.getTime() - h * 3600_000);
  const full = await putPoint(kv, f.filePolicy, f.h1.id, t(72), { chainId: "old" });
  const inc = await putPoint(kv, f.filePolicy, f.h1.id, t(48), { chainId: "old", type: "incremental" });
  // Index entries of the policy newer than the chain (their points are not even read back).
  for (let i = 0; i < 20_050; i += 500) {
    const op = kv.atomic();
    for (let j = i; j < Math.min(20_050, i + 500); j++) {
      const id = newId(new Date(t(24).getTime() + j));
      op.set(["restore_points_by_policy", f.filePolicy.id, id], id);
    }
    assert.ok((await op.commit()).ok);
  }
  const chain = await restorePointChain(kv, actorOf(f.users.restorer), inc.id);
  assert.deepEqual(chain.map((p) => p.id), [full.id, inc.id]);
  assert.deepEqual(
    (await restorePointChain(kv, actorOf(f.users.restorer), full.id)).map((p) => p.id),
    [full.id, inc.id],
  );
});

Deno.test("a point of a host outside the actor's orgs is hidden even when its policy is in scope", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  // An all-scope admin may assign the Lab host to the Ops policy; its points hold Lab's files.
  await assignHost(kv, system, { policyId: f.filePolicy.id, hostId: f.lab.id }, now);
  const labPoint = await putPoint(kv, f.filePolicy, f.lab.id, START, { chainId: "lab" });
  const opsPoint = await putPoint(kv, f.filePolicy, f.h1.id, START, { chainId: "ops" });
  const opsOnly = actorOf(f.users.restorer);
  const admin = actorOf(f.users.admin);
  assert.deepEqual((await listRestorePoints(kv, opsOnly)).values.map((p) => p.id), [opsPoint.id]);
  assert.deepEqual((await listRestorePoints(kv, opsOnly, { hostId: f.lab.id })).values, []);
  assert.deepEqual((await listRestorePoints(kv, admin)).values.map((p) => p.id), [opsPoint.id, labPoint.id]);
  assert.equal((await requireRestorePoint(kv, admin, labPoint.id)).hostOrgId, f.tenant.orgs[1].id);
  await rejects(requireRestorePoint(kv, opsOnly, labPoint.id), NotFoundError);
  await rejects(restorePointChain(kv, opsOnly, labPoint.id), NotFoundError);
  await rejects(requestBrowse(kv, opsOnly, labPoint.id, "/", now), NotFoundError);
  await rejects(requestSearch(kv, opsOnly, labPoint.id, "*.pdf", now), NotFoundError);
  await rejects(requestBmr(kv, opsOnly, { restorePointId: labPoint.id, mode: "iso" }, now), NotFoundError);
  // What the admin started there stays hidden from the Ops-only restorer: a search of the Lab point, a
  // restore of it, and a restore of an Ops point onto the Lab host.
  const search = await requestSearch(kv, admin, labPoint.id, "*.pdf", now);
  const fromLab = await requestFileRestore(kv, admin, {
    restorePointId: labPoint.id,
    paths: ["/etc"],
    targetHostId: f.h1.id,
    targetPath: "/r",
  }, now);
  const toLab = await requestFileRestore(kv, admin, {
    restorePointId: opsPoint.id,
    paths: ["/etc"],
    targetHostId: f.lab.id,
    targetPath: "/r",
  }, now);
  const own = await requestFileRestore(kv, opsOnly, {
    restorePointId: opsPoint.id,
    paths: ["/etc"],
    targetPath: "/r",
  }, now);
  await rejects(getSearch(kv, opsOnly, search.id, START), NotFoundError);
  await rejects(getRestore(kv, opsOnly, fromLab.id), NotFoundError);
  await rejects(getRestore(kv, opsOnly, toLab.id), NotFoundError);
  assert.deepEqual((await listRestores(kv, opsOnly)).values.map((r) => r.id), [own.id]);
  assert.deepEqual((await listRestores(kv, admin)).values.map((r) => r.id), [own.id, toLab.id, fromLab.id]);
  assert.equal((await getSearch(kv, admin, search.id, START)).id, search.id);
});

Deno.test("malformed ids of points, searches and restores are not found (never a KV key error)", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const admin = actorOf(f.users.admin);
  for (const id of ["x".repeat(3000), "", "01NOSUCHPOINT", "../01KAHZ3Y3N4G2D8QF5T0V7W9XB"]) {
    await rejects(requireRestorePoint(kv, admin, id), NotFoundError);
    await rejects(getSearch(kv, admin, id, START), NotFoundError);
    await rejects(getRestore(kv, admin, id), NotFoundError);
  }
});

Deno.test("latestRestorePointOfHost() is the newest complete point of the host (optionally of one policy)", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const t = (h: number) => new Date(START.getTime() - h * 3600_000);
  const older = await putPoint(kv, f.filePolicy, f.h1.id, t(30));
  const image = await putPoint(kv, f.imagePolicy, f.h1.id, t(20));
  await putPoint(kv, f.filePolicy, f.h1.id, t(10), { status: "failed" });
  await putPoint(kv, f.filePolicy, f.h2.id, t(5));
  const actor = actorOf(f.users.restorer);
  assert.equal((await latestRestorePointOfHost(kv, actor, f.h1.id))?.id, image.id);
  assert.equal((await latestRestorePointOfHost(kv, actor, f.h1.id, f.filePolicy.id))?.id, older.id);
  assert.equal(await latestRestorePointOfHost(kv, actorOf(f.users.admin), f.lab.id), null);
  await rejects(latestRestorePointOfHost(kv, actor, f.lab.id), NotFoundError, /Host/);
  await rejects(latestRestorePointOfHost(kv, actor, f.foreign.id), NotFoundError);
});

// ---------------------------------------------------------------------------------------------------
// Browse and search

Deno.test("requestBrowse() queues one high-priority BES job per folder and serves the kept listing after", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const point = await putPoint(kv, f.filePolicy, f.h1.id, new Date(START.getTime() - 3600_000));
  const actor = actorOf(f.users.restorer);
  const now = f.clock.now();
  // Ten racing requests for the same folder queue exactly one job and write exactly one audit entry.
  const states = await Promise.all(
    Array.from({ length: 10 }, () => requestBrowse(kv, actor, point.id, undefined, now)),
  );
  const jobs = await jobsOf(kv, "browse");
  assert.equal(jobs.length, 1);
  assert.ok(states.every((s) => s.jobId === jobs[0].id && s.status === "pending" && s.path === "/"));
  assert.equal(jobs[0].principal, `bes:${f.engine.id}`);
  assert.equal(jobs[0].priority, "high");
  assert.deepEqual(
    { ...jobs[0].payload, completedAt: undefined },
    {
      restorePointId: point.id,
      engineRestorePointId: point.engineRestorePointId,
      policyId: f.filePolicy.id,
      hostId: f.h1.id,
      completedAt: undefined,
      path: "/",
    },
  );
  const audits = (await auditEntries(kv, f.tenant.account.id)).filter((a) => a.action === "restore.browse");
  assert.equal(audits.length, 1);
  // The BES answers (DESIGN's `mtime` spelling is accepted too); dirs first, then by name.
  await finish(kv, jobs[0], {
    output: {
      entries: [
        { name: "notes.txt", type: "file", size: 120, mtime: "2026-11-01T10:00:00Z" },
        { path: "/etc", name: "etc", type: "dir", size: 0, modifiedAt: "2026-10-01T10:00:00Z" },
        { name: "bad/name", type: "file", size: 1 },
        // Not children: they would list the folder itself and its parent as selectable paths.
        { name: ".", type: "dir", size: 0 },
        { name: "..", type: "dir", size: 0 },
      ],
    },
  }, now);
  const ready = await getBrowse(kv, actor, point.id, "/", now);
  assert.equal(ready?.status, "ready");
  assert.deepEqual(ready?.entries, [
    { path: "/etc", name: "etc", type: "dir", size: 0, modifiedAt: "2026-10-01T10:00:00.000Z" },
    {
      path: "/notes.txt",
      name: "notes.txt",
      type: "file",
      size: 120,
      modifiedAt: "2026-11-01T10:00:00.000Z",
    },
  ]);
  // A second visit is the kept state: no new job, no new audit entry.
  const again = await requestBrowse(kv, actor, point.id, "//", now);
  assert.deepEqual(again, ready);
  assert.equal((await jobsOf(kv, "browse")).length, 1);
  // Another folder is another job; a bad path is refused with the field named.
  const etc = await requestBrowse(kv, actor, point.id, "/etc/", now);
  assert.equal(etc.path, "/etc");
  assert.equal((await jobsOf(kv, "browse")).length, 2);
  await assert.rejects(requestBrowse(kv, actor, point.id, "/etc/../root", now), (e: ValidationError) => {
    assert.ok(e instanceof ValidationError);
    assert.match(e.fields.path, /\.\./);
    return true;
  });
  assert.equal(await getBrowse(kv, actor, point.id, "/never", now), null);
  await rejects(requestBrowse(kv, actorOf(f.users.labRestorer), point.id, "/", now), NotFoundError);
});

Deno.test("a failed browse (engine failure or lease run out) is requested again with a new job", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const point = await putPoint(kv, f.filePolicy, f.h1.id, new Date(START.getTime() - 3600_000));
  const actor = actorOf(f.users.restorer);
  const now = f.clock.now();
  const first = await requestBrowse(kv, actor, point.id, "/srv", now);
  await finish(kv, (await getJob(kv, first.jobId))!, {
    status: "failed",
    error: { reason: "CATALOG_UNAVAILABLE", message: "catalog locked" },
  }, now);
  const failed = await getBrowse(kv, actor, point.id, "/srv", now);
  assert.equal(failed?.status, "failed");
  assert.match(failed?.error ?? "", /CATALOG_UNAVAILABLE: catalog locked/);
  const second = await requestBrowse(kv, actor, point.id, "/srv", now);
  assert.notEqual(second.jobId, first.jobId);
  assert.equal(second.status, "pending");
  // The BES goes silent: after the last attempt's lease the state reads failed, and a retry queues anew.
  let at = now.getTime();
  for (let i = 0; i < 3; i++) {
    await claimJobs(kv, `bes:${f.engine.id}`, 50, new Date(at));
    at += 6 * 60_000;
    await expireLeases(kv, new Date(at));
  }
  const expired = await getBrowse(kv, actor, point.id, "/srv", now);
  assert.equal(expired?.status, "failed");
  assert.match(expired?.error ?? "", /stopped answering/);
  await applyHeartbeat(kv, f.engine.id, { version: "1", metrics: engineMetrics() }, new Date(at));
  const third = await requestBrowse(kv, actor, point.id, "/srv", new Date(at));
  assert.notEqual(third.jobId, second.jobId);
});

Deno.test("browse and search need the point's BES online; a request it never picks up reads failed after 2 minutes", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const point = await putPoint(kv, f.filePolicy, f.h1.id, new Date(START.getTime() - 3600_000));
  const actor = actorOf(f.users.restorer);
  const now = f.clock.now();
  const kept = await requestBrowse(kv, actor, point.id, "/kept", now);
  await finish(kv, (await getJob(kv, kept.jobId))!, { output: { entries: [] } }, now);
  // Picked up in time: still pending at exactly the deadline.
  const browse = await requestBrowse(kv, actor, point.id, "/srv", now);
  const search = await requestSearch(kv, actor, point.id, "*.pdf", now);
  const atDeadline = new Date(now.getTime() + RESTORE_PICKUP_MS);
  assert.equal((await getBrowse(kv, actor, point.id, "/srv", atDeadline))?.status, "pending");
  assert.equal((await getSearch(kv, actor, search.id, atDeadline)).status, "pending");
  // The BES never claims: one millisecond later both read failed, naming the likely cause.
  const late = new Date(atDeadline.getTime() + 1);
  const overdue = await getBrowse(kv, actor, point.id, "/srv", late);
  assert.equal(overdue?.status, "failed");
  assert.match(overdue?.error ?? "", /has not picked up this request in 2 minutes; it may be offline/);
  assert.equal((await getSearch(kv, actor, search.id, late)).status, "failed");
  // A claimed (leased) job is being worked on: not overdue.
  await claimJobs(kv, `bes:${f.engine.id}`, 1, late);
  const claimed = (await getJob(kv, browse.jobId))!.status === "leased" ? "browse" : "search";
  if (claimed === "browse") {
    assert.equal((await getBrowse(kv, actor, point.id, "/srv", late))?.status, "pending");
  } else assert.equal((await getSearch(kv, actor, search.id, late)).status, "pending");
  // The BES is offline now (last heartbeat at START, > 3 minutes ago): a new request is refused at once,
  // naming the BES and its last heartbeat, and queues nothing.
  const jobsBefore = (await jobsOf(kv, "browse")).length + (await jobsOf(kv, "search")).length;
  const offline = new Date(START.getTime() + 10 * 60_000);
  await rejects(
    requestBrowse(kv, actor, point.id, "/etc", offline),
    ValidationError,
    new RegExp(`BES ${f.engine.name} is offline \\(last heartbeat ${START.toISOString()}\\); browsing needs`),
  );
  await rejects(requestSearch(kv, actor, point.id, "*.doc", offline), ValidationError, /searching needs/);
  assert.equal((await jobsOf(kv, "browse")).length + (await jobsOf(kv, "search")).length, jobsBefore);
  // A folder already browsed is still answered from what was kept while the BES is down.
  assert.equal((await requestBrowse(kv, actor, point.id, "/kept", offline)).status, "ready");
});

Deno.test("browse and search refuse points that are not complete", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const actor = actorOf(f.users.restorer);
  for (const status of ["running", "failed", "expired"] as const) {
    const point = await putPoint(kv, f.filePolicy, f.h1.id, START, { status });
    await rejects(requestBrowse(kv, actor, point.id, "/", START), ValidationError, new RegExp(status));
    await rejects(requestSearch(kv, actor, point.id, "*.pdf", START), ValidationError, /complete/);
  }
  assert.equal((await jobsOf(kv, "browse")).length + (await jobsOf(kv, "search")).length, 0);
});

Deno.test("requestSearch() queues a search job; its matches (path, size, time) come back with truncation", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const point = await putPoint(kv, f.filePolicy, f.h1.id, START);
  const actor = actorOf(f.users.restorer);
  const now = f.clock.now();
  await rejects(requestSearch(kv, actor, point.id, "  ", now), ValidationError, /required/);
  await rejects(requestSearch(kv, actor, point.id, "x".repeat(201), now), ValidationError, /200/);
  const search = await requestSearch(kv, actor, point.id, " *.pdf ", now);
  assert.equal(search.query, "*.pdf");
  const job = (await getJob(kv, search.jobId))!;
  assert.equal(job.kind, "search");
  assert.equal(job.priority, "high");
  assert.equal(job.principal, `bes:${f.engine.id}`);
  assert.equal(job.payload.mode, "glob");
  assert.equal(job.payload.query, "*.pdf");
  assert.equal((await getSearch(kv, actor, search.id, START)).status, "pending");
  await finish(kv, job, {
    output: {
      matches: [
        { path: "/srv/a.pdf", size: 10, mtime: "2026-11-02T00:00:00Z" },
        { path: "/srv/../etc/shadow", size: 1 },
        { path: "/home/b.pdf", name: "b.pdf", type: "file", size: 20, modifiedAt: "2026-11-03T00:00:00Z" },
      ],
      truncated: true,
    },
  }, now);
  const ready = await getSearch(kv, actor, search.id, START);
  assert.equal(ready.status, "ready");
  assert.equal(ready.truncated, true);
  assert.deepEqual(ready.matches, [
    { path: "/srv/a.pdf", name: "a.pdf", type: "file", size: 10, modifiedAt: "2026-11-02T00:00:00.000Z" },
    { path: "/home/b.pdf", name: "b.pdf", type: "file", size: 20, modifiedAt: "2026-11-03T00:00:00.000Z" },
  ]);
  await rejects(getSearch(kv, actorOf(f.users.labRestorer), search.id, START), NotFoundError);
  await rejects(getSearch(kv, actorOf(f.users.foreignAdmin), search.id, START), NotFoundError);
  const audits = (await auditEntries(kv, f.tenant.account.id)).filter((a) => a.action === "restore.search");
  assert.equal(audits.length, 1);
  assert.match(audits[0].summary, /\*\.pdf/);
});

// ---------------------------------------------------------------------------------------------------
// File and image restores

Deno.test("requestFileRestore() targets the original host by default with a high-priority agent job", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const point = await putPoint(kv, f.filePolicy, f.h1.id, START);
  const actor = actorOf(f.users.restorer);
  const now = f.clock.now();
  const restore = await requestFileRestore(kv, actor, {
    restorePointId: point.id,
    paths: ["/srv/data/", "/srv/data/a.txt", "/etc//hosts"],
    targetPath: "/restore/",
  }, now);
  assert.equal(restore.kind, "file");
  assert.equal(restore.targetHostId, f.h1.id);
  assert.equal(restore.sourceHostId, f.h1.id);
  assert.equal(restore.overwrite, false);
  assert.equal(restore.targetPath, "/restore");
  assert.deepEqual(restore.paths, ["/srv/data", "/etc/hosts"]);
  assert.equal(restore.pathCount, 2);
  assert.equal(restore.priority, "high");
  const job = (await getJob(kv, restore.jobId))!;
  assert.equal(job.kind, "restore_files");
  assert.equal(job.principal, `agent:${f.h1.id}`);
  assert.equal(job.priority, "high");
  assert.deepEqual(job.payload.paths, ["/srv/data", "/etc/hosts"]);
  assert.equal(job.payload.pathChunks, 0);
  assert.equal(job.payload.restoreId, restore.id);
  assert.equal((job.payload.bes as { endpoint: string }).endpoint, "https://bes-1.acme.example:8443");
  const [audit] = (await auditEntries(kv, f.tenant.account.id)).filter((a) => a.action === "restore.files");
  assert.match(audit.summary, /2 path\(s\).*h1\.acme\.example:\/restore/);
  // Restoring to another host of the scope works; listing shows both, newest first.
  const other = await requestFileRestore(kv, actor, {
    restorePointId: point.id,
    paths: ["/etc"],
    targetHostId: f.h2.id,
    targetPath: "/tmp/r",
    overwrite: true,
  }, now);
  assert.equal((await getJob(kv, other.jobId))!.principal, `agent:${f.h2.id}`);
  assert.deepEqual((await listRestores(kv, actor)).values.map((r) => r.id), [other.id, restore.id]);
  assert.deepEqual((await listRestores(kv, actorOf(f.users.labRestorer))).values, []);
});

Deno.test("requestFileRestore(): another account's host is not found, a host outside the actor's scope is refused", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const point = await putPoint(kv, f.filePolicy, f.h1.id, START);
  const input = { restorePointId: point.id, paths: ["/etc"], targetPath: "/r" };
  const now = f.clock.now();
  await rejects(
    requestFileRestore(kv, actorOf(f.users.restorer), { ...input, targetHostId: f.foreign.id }, now),
    NotFoundError,
    /Target host/,
  );
  // Even a system actor cannot cross accounts.
  await rejects(requestFileRestore(kv, system, { ...input, targetHostId: f.foreign.id }, now), NotFoundError);
  // The Ops-only restorer cannot restore onto a Lab host (it is invisible to them) …
  await rejects(
    requestFileRestore(kv, actorOf(f.users.restorer), { ...input, targetHostId: f.lab.id }, now),
    NotFoundError,
    /Target host/,
  );
  // … an all-scope admin can.
  const ok = await requestFileRestore(kv, actorOf(f.users.admin), { ...input, targetHostId: f.lab.id }, now);
  assert.equal(ok.targetHostId, f.lab.id);
  // A BES-side point (no host) needs an explicit target.
  const bes = await putPoint(kv, f.filePolicy, null, START, { type: "synthetic_full" });
  await rejects(
    requestFileRestore(kv, actorOf(f.users.restorer), { ...input, restorePointId: bes.id }, now),
    ValidationError,
    /target host/,
  );
  assert.equal((await jobsOf(kv, "restore_files")).length, 1);
});

Deno.test("requestFileRestore() takes 10,000 paths: stored in chunks the agent fetches, all of them in order", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const point = await putPoint(kv, f.filePolicy, f.h1.id, START);
  const paths = Array.from(
    { length: 10_000 },
    (_, i) => `/srv/projects/customer-${i % 250}/files/document-${i}.pdf`,
  );
  const restore = await requestFileRestore(kv, actorOf(f.users.restorer), {
    restorePointId: point.id,
    paths,
    targetPath: "/restore",
  }, f.clock.now());
  assert.equal(restore.pathCount, 10_000);
  assert.ok(restore.paths.length > 0 && restore.paths.length <= 100);
  const job = (await getJob(kv, restore.jobId))!;
  assert.equal(job.payload.paths, null);
  const chunks = Number(job.payload.pathChunks);
  assert.ok(chunks > 1);
  const fetched: string[] = [];
  for (let i = 0; i < chunks; i++) {
    fetched.push(...(await restorePathsChunk(kv, `agent:${f.h1.id}`, job.id, i)).paths);
  }
  assert.deepEqual(fetched, paths);
  await rejects(restorePathsChunk(kv, `agent:${f.h2.id}`, job.id, 0), NotFoundError);
  await rejects(restorePathsChunk(kv, `agent:${f.h1.id}`, job.id, chunks), NotFoundError);
  await rejects(
    requestFileRestore(kv, actorOf(f.users.restorer), {
      restorePointId: point.id,
      paths: [...paths, "/one/more"],
      targetPath: "/restore",
    }, f.clock.now()),
    Error,
  );
});

Deno.test("the queue hands out an image restore (critical), then a file restore (high), then a backup (normal)", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const filePoint = await putPoint(kv, f.filePolicy, f.h1.id, START);
  const imagePoint = await putPoint(kv, f.imagePolicy, f.h1.id, START);
  const actor = actorOf(f.users.restorer);
  const now = f.clock.now();
  const scope = { accountId: f.tenant.account.id, orgId: f.tenant.orgs[0].id };
  await enqueueJob(kv, { kind: "backup", principal: `agent:${f.h1.id}`, ...scope }, now);
  await requestFileRestore(
    kv,
    actor,
    { restorePointId: filePoint.id, paths: ["/etc"], targetPath: "/r" },
    now,
  );
  await requestImageRestore(kv, actor, {
    restorePointId: imagePoint.id,
    targetHostId: f.h1.id,
    targetPath: "/dev/sdb",
  }, now);
  const claimed = await claimJobs(kv, `agent:${f.h1.id}`, 10, now);
  assert.deepEqual(claimed.map((j) => [j.kind, j.priority]), [
    ["restore_image", "critical"],
    ["restore_files", "high"],
    ["backup", "normal"],
  ]);
});

Deno.test("requestImageRestore() only for complete image points; target host and path required", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const actor = actorOf(f.users.restorer);
  const now = f.clock.now();
  const filePoint = await putPoint(kv, f.filePolicy, f.h1.id, START);
  const running = await putPoint(kv, f.imagePolicy, f.h1.id, START, { status: "running" });
  const image = await putPoint(kv, f.imagePolicy, f.h1.id, START);
  const input = { targetHostId: f.h2.id, targetPath: "/mnt/restore" };
  await rejects(
    requestImageRestore(kv, actor, { ...input, restorePointId: filePoint.id }, now),
    ValidationError,
    /image policy/,
  );
  await rejects(
    requestImageRestore(kv, actor, { ...input, restorePointId: running.id }, now),
    ValidationError,
    /running/,
  );
  await assert.rejects(
    requestImageRestore(kv, actor, { restorePointId: image.id, targetHostId: "", targetPath: "" }, now),
    (e: Error) => e.name === "ZodError",
  );
  await rejects(
    requestImageRestore(kv, actor, { ...input, restorePointId: image.id, targetHostId: f.foreign.id }, now),
    NotFoundError,
  );
  const restore = await requestImageRestore(kv, actor, {
    ...input,
    restorePointId: image.id,
    overwrite: true,
  }, now);
  assert.equal(restore.kind, "image");
  assert.equal(restore.priority, "critical");
  assert.equal(restore.overwrite, true);
  const job = (await getJob(kv, restore.jobId))!;
  assert.deepEqual([job.kind, job.priority, job.principal], [
    "restore_image",
    "critical",
    `agent:${f.h2.id}`,
  ]);
  assert.equal(job.payload.targetPath, "/mnt/restore");
  assert.equal(job.payload.sizeBytes, image.sizeBytes);
  assert.equal(
    (await auditEntries(kv, f.tenant.account.id)).filter((a) => a.action === "restore.image").length,
    1,
  );
});

Deno.test("a restore shows its job's live progress, then files, bytes and per-file errors", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const point = await putPoint(kv, f.filePolicy, f.h1.id, START);
  const actor = actorOf(f.users.restorer);
  const now = f.clock.now();
  const restore = await requestFileRestore(kv, actor, {
    restorePointId: point.id,
    paths: ["/srv"],
    targetPath: "/r",
  }, now);
  assert.equal((await getRestore(kv, actor, restore.id)).status, "pending");
  const principal = `agent:${f.h1.id}`;
  await claimJobs(kv, principal, 1, now);
  let view = await getRestore(kv, actor, restore.id);
  assert.deepEqual([view.status, view.progress], ["running", { percent: 0, bytesTransferred: 0 }]);
  await reportProgress(kv, principal, restore.jobId, { percent: 42.5, bytesTransferred: 4096 }, now);
  view = await getRestore(kv, actor, restore.id);
  assert.deepEqual([view.status, view.progress], ["running", { percent: 42.5, bytesTransferred: 4096 }]);
  assert.equal((await listRestores(kv, actor)).values[0].progress?.percent, 42.5);
  const { job } = await applyResult(kv, principal, restore.jobId, {
    status: "warning",
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 9000,
    protectedBytes: 0,
    error: { reason: "PARTIAL_FILES", message: "1 path could not be restored" },
    output: { files: 12, bytes: 9000, errors: [{ path: "/srv/locked.db", message: "Permission denied" }] },
  }, now);
  await applyJobOutcome(kv, job, now);
  await applyJobOutcome(kv, job, now); // idempotent
  view = await getRestore(kv, actor, restore.id);
  assert.equal(view.status, "warning");
  assert.deepEqual(view.result, {
    files: 12,
    bytes: 9000,
    errors: [{ path: "/srv/locked.db", message: "Permission denied" }],
    errorCount: 1,
  });
  assert.deepEqual(view.progress, { percent: 100, bytesTransferred: 9000 });
  assert.match(view.error ?? "", /PARTIAL_FILES/);
  // The stored record carries the outcome (not only the read-time view).
  const stored = (await kv.get<{ status: string }>(["restores", restore.id])).value!;
  assert.equal(stored.status, "warning");
  // DESIGN's `restored: {files, bytes, errors}` spelling is read too.
  const second = await requestFileRestore(kv, actor, {
    restorePointId: point.id,
    paths: ["/etc"],
    targetPath: "/r",
  }, now);
  await finish(kv, (await getJob(kv, second.jobId))!, {
    bytesTransferred: 50,
    output: { restored: { files: 3, bytes: 50, errors: [] } },
  }, now);
  const done = await getRestore(kv, actor, second.id);
  assert.deepEqual([done.status, done.result?.files, done.result?.bytes, done.error], [
    "success",
    3,
    50,
    null,
  ]);
  await rejects(getRestore(kv, actorOf(f.users.labRestorer), second.id), NotFoundError);
  await rejects(getRestore(kv, actorOf(f.users.viewer), second.id), ForbiddenError);
});

// ---------------------------------------------------------------------------------------------------
// Bare-metal restore

Deno.test("requestBmr() preconditions: complete point, BES online at now, PXE enabled for pxe", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const actor = actorOf(f.users.restorer);
  const now = f.clock.now();
  const running = await putPoint(kv, f.imagePolicy, f.h1.id, START, { status: "running" });
  const point = await putPoint(kv, f.imagePolicy, f.h1.id, START);
  await rejects(
    requestBmr(kv, actor, { restorePointId: running.id, mode: "iso" }, now),
    ValidationError,
    /complete.*running/,
  );
  await rejects(
    requestBmr(kv, actor, { restorePointId: point.id, mode: "pxe" }, now),
    ValidationError,
    /PXE boot is not enabled on BES bes-1/,
  );
  // Three minutes after the last heartbeat the BES still counts as online; one second more and it does not.
  const silent = new Date(now.getTime() + 3 * 60_000 + 1000);
  await rejects(
    requestBmr(kv, actor, { restorePointId: point.id, mode: "iso" }, silent),
    ValidationError,
    /BES bes-1 is offline/,
  );
  const iso = await requestBmr(
    kv,
    actor,
    { restorePointId: point.id, mode: "iso" },
    new Date(now.getTime() + 3 * 60_000),
  );
  assert.match(iso.token, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(iso.expiresAt, new Date(now.getTime() + 3 * 60_000 + BMR_TOKEN_TTL_MS).toISOString());
  assert.ok(iso.instructions.some((line) => /ISO/.test(line)));
  assert.deepEqual([iso.restore.kind, iso.restore.mode, iso.restore.priority], ["bmr", "iso", "critical"]);
  const job = (await getJob(kv, iso.restore.jobId))!;
  assert.deepEqual([job.kind, job.priority, job.principal], ["bmr", "critical", `bes:${f.engine.id}`]);
  assert.equal(job.payload.tokenId, sha256Hex(iso.token));
  assert.ok(!JSON.stringify(job.payload).includes(iso.token), "the payload carries the hash, not the token");
  // With PXE enabled on the BES, pxe works.
  const engine = (await kv.get<Engine>(engineKey(f.engine.id))).value!;
  await kv.set(engineKey(f.engine.id), { ...engine, pxeEnabled: true, pxeNetwork: "10.0.5.0/24" });
  const pxe = await requestBmr(kv, actor, { restorePointId: point.id, mode: "pxe" }, now);
  assert.ok(pxe.instructions.some((line) => line.includes("10.0.5.0/24")));
  // The status `offline` set by the sweep refuses as well, whatever the last heartbeat says.
  await setFleetStatus(kv, "engine", f.engine.id, "offline", engine);
  await rejects(
    requestBmr(kv, actor, { restorePointId: point.id, mode: "iso" }, now),
    ValidationError,
    /offline/,
  );
  await rejects(
    requestBmr(kv, actorOf(f.users.labRestorer), { restorePointId: point.id, mode: "iso" }, now),
    NotFoundError,
  );
  assert.equal((await jobsOf(kv, "bmr")).length, 2);
});

Deno.test("a BMR token is redeemed exactly once under concurrency (20 rounds of 5 racing redeems)", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const point = await putPoint(kv, f.imagePolicy, f.h1.id, START);
  const actor = actorOf(f.users.restorer);
  const now = f.clock.now();
  for (let round = 0; round < 20; round++) {
    const { token, restore } = await requestBmr(kv, actor, { restorePointId: point.id, mode: "iso" }, now);
    const results = await Promise.allSettled(
      Array.from(
        { length: 5 },
        () => redeemBmrToken(kv, f.engine.id, token, new Date(now.getTime() + 60_000)),
      ),
    );
    const won = results.filter((r) => r.status === "fulfilled");
    assert.equal(won.length, 1, `round ${round}: exactly one redeem succeeds`);
    assert.deepEqual((won[0] as PromiseFulfilledResult<unknown>).value, {
      restoreId: restore.id,
      restorePointId: point.id,
      mode: "iso",
    });
    for (const r of results.filter((r) => r.status === "rejected")) {
      assert.ok((r as PromiseRejectedResult).reason instanceof ConflictError);
    }
    await rejects(redeemBmrToken(kv, f.engine.id, token, now), ConflictError, /already used/);
    assert.ok((await getRestore(kv, actor, restore.id)).tokenUsedAt);
  }
  assert.equal(
    (await auditEntries(kv, f.tenant.account.id)).filter((a) => a.action === "restore.bmr_redeem").length,
    20,
  );
});

Deno.test("a BMR token expires 4 hours after it was issued; unknown and other BES's tokens are not found", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const point = await putPoint(kv, f.imagePolicy, f.h1.id, START);
  const actor = actorOf(f.users.restorer);
  const now = f.clock.now();
  const late = await requestBmr(kv, actor, { restorePointId: point.id, mode: "iso" }, now);
  await rejects(
    redeemBmrToken(kv, f.engine.id, late.token, new Date(now.getTime() + 4 * 3600_000 + 1)),
    ConflictError,
    /expired/,
  );
  const onTime = await requestBmr(kv, actor, { restorePointId: point.id, mode: "iso" }, now);
  await redeemBmrToken(kv, f.engine.id, onTime.token.toUpperCase(), new Date(now.getTime() + 4 * 3600_000));
  await rejects(redeemBmrToken(kv, f.engine.id, crypto.randomUUID(), now), NotFoundError);
  await rejects(redeemBmrToken(kv, f.engine.id, "not-a-token", now), NotFoundError);
  const third = await requestBmr(kv, actor, { restorePointId: point.id, mode: "iso" }, now);
  await rejects(redeemBmrToken(kv, newId(now), third.token, now), NotFoundError);
  // The token is nowhere in KV — not in the token record, the job, the restore or the audit log.
  const dump: string[] = [];
  for await (const e of kv.list({ prefix: [] })) {
    dump.push(JSON.stringify([e.key, e.value], (_, v) => typeof v === "bigint" ? String(v) : v));
  }
  const all = dump.join("\n");
  for (const token of [late.token, onTime.token, third.token]) {
    assert.ok(!all.includes(token), "the plain token is not stored");
    assert.ok(all.includes(sha256Hex(token)), "its hash is");
  }
});

Deno.test("a BMR token is refused once its restore has ended or its restore point expired", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const point = await putPoint(kv, f.imagePolicy, f.h1.id, START);
  const actor = actorOf(f.users.restorer);
  const now = f.clock.now();
  const ended = await requestBmr(kv, actor, { restorePointId: point.id, mode: "iso" }, now);
  const restored = (await kv.get<RestoreRequest>(["restores", ended.restore.id])).value!;
  await kv.set(["restores", ended.restore.id], { ...restored, status: "failed" });
  await rejects(redeemBmrToken(kv, f.engine.id, ended.token, now), ConflictError, /already ended \(failed\)/);
  const expired = await requestBmr(kv, actor, { restorePointId: point.id, mode: "iso" }, now);
  const stored = (await kv.get<RestorePoint>(restorePointKey(point.id))).value!;
  await kv.set(restorePointKey(point.id), { ...stored, status: "expired" });
  await rejects(redeemBmrToken(kv, f.engine.id, expired.token, now), ConflictError, /no longer complete/);
  await kv.set(restorePointKey(point.id), stored);
  await redeemBmrToken(kv, f.engine.id, expired.token, now); // unused by the refusals: still redeemable once
});

// ---------------------------------------------------------------------------------------------------
// JSON API

const RESTORE_ENDPOINTS = (pointId: string, searchId: string, restoreId: string) =>
  [
    ["GET", "/api/v1/restore-points"],
    ["GET", `/api/v1/restore-points/${pointId}`],
    ["GET", `/api/v1/restore-points/${pointId}/browse?path=/`],
    ["POST", `/api/v1/restore-points/${pointId}/browse?path=/`],
    ["POST", `/api/v1/restore-points/${pointId}/search`, { query: "*.pdf" }],
    ["GET", `/api/v1/searches/${searchId}`],
    ["GET", "/api/v1/restores"],
    ["POST", "/api/v1/restores", { restorePointId: pointId, paths: ["/etc"], targetPath: "/r" }],
    ["POST", "/api/v1/restores/image", { restorePointId: pointId, targetHostId: pointId, targetPath: "/r" }],
    ["POST", "/api/v1/restores/bmr", { restorePointId: pointId, mode: "iso" }],
    ["GET", `/api/v1/restores/${restoreId}`],
  ] as const;

async function bearer(kv: Deno.Kv, user: User, permissions: string[], now: Date): Promise<string> {
  const { secret } = await createApiToken(kv, userActor(user), {
    name: `${user.email} token`,
    permissions: permissions as never,
    expiresInDays: 0,
  }, now);
  return secret;
}

Deno.test("every restore API needs backup.restore: viewer and operator get 403, a restore operator does not", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const { app } = testApp(kv, f.clock);
  const point = await putPoint(kv, f.filePolicy, f.h1.id, START);
  const search = await requestSearch(kv, system, point.id, "x", START);
  const restore = await requestFileRestore(kv, system, {
    restorePointId: point.id,
    paths: ["/a"],
    targetPath: "/r",
  }, START);
  const tokens = {
    viewer: await bearer(kv, f.users.viewer, ["backup.view"], START),
    operator: await bearer(kv, f.users.operator, ["backup.view", "backup.manage"], START),
    restorer: await bearer(kv, f.users.restorer, ["backup.view", "backup.restore"], START),
  };
  for (const [method, path, body] of RESTORE_ENDPOINTS(point.id, search.id, restore.id)) {
    for (const [who, token] of Object.entries(tokens)) {
      const res = await app.request(path, {
        method,
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: method === "POST" ? JSON.stringify(body ?? {}) : undefined,
      });
      const text = await res.text();
      if (who === "restorer") {
        assert.ok(
          res.status < 500 && ![401, 403].includes(res.status),
          `${method} ${path} as ${who}: ${res.status} ${text}`,
        );
      } else {
        assert.equal(res.status, 403, `${method} ${path} as ${who}`);
        assert.match(JSON.parse(text).error.message, /backup\.restore/);
      }
    }
    // Anonymous: 401 (a POST without a session is refused by the CSRF check first, 403).
    const anonymous = await app.request(path, { method, headers: { "content-type": "application/json" } });
    assert.equal(anonymous.status, method === "GET" ? 401 : 403, `${method} ${path} anonymous`);
  }
});

Deno.test("the JSON API: list, detail with chain, browse 202 then 200, 422 field errors, 10,000 paths in one body", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const { app } = testApp(kv, f.clock);
  const point = await putPoint(kv, f.filePolicy, f.h1.id, START);
  const token = await bearer(kv, f.users.restorer, ["backup.view", "backup.restore"], START);
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await app.request(path, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
    return { status: res.status, body: await res.json() };
  };
  const list = await call("GET", `/api/v1/restore-points?hostId=${f.h1.id}&status=complete`);
  assert.equal(list.status, 200);
  assert.deepEqual(list.body.values.map((p: { id: string }) => p.id), [point.id]);
  assert.equal((await call("GET", "/api/v1/restore-points?status=bogus")).status, 422);
  const detail = await call("GET", `/api/v1/restore-points/${point.id}`);
  assert.equal(detail.body.restorePoint.id, point.id);
  assert.equal(detail.body.chain.length, 1);
  assert.equal((await call("GET", `/api/v1/restore-points/${point.id}/browse?path=/srv`)).status, 404);
  const first = await call("POST", `/api/v1/restore-points/${point.id}/browse?path=/srv`);
  assert.equal(first.status, 202);
  assert.equal(first.body.status, "pending");
  const again = await call("POST", `/api/v1/restore-points/${point.id}/browse?path=/srv/`);
  assert.equal(again.status, 200);
  assert.equal(again.body.jobId, first.body.jobId);
  assert.equal(
    (await call("GET", `/api/v1/restore-points/${point.id}/browse?path=/srv`)).body.jobId,
    first.body.jobId,
  );
  const badPath = await call("POST", `/api/v1/restore-points/${point.id}/browse?path=../x`);
  assert.equal(badPath.status, 422);
  assert.match(badPath.body.error.fields.path, /absolute/);
  const badRestore = await call("POST", "/api/v1/restores", {
    restorePointId: point.id,
    paths: ["/ok", "/a/../b"],
    targetPath: "relative",
  });
  assert.equal(badRestore.status, 422);
  assert.match(badRestore.body.error.fields.paths, /path 2 \(\/a\/\.\.\/b\)/i);
  assert.match(badRestore.body.error.fields.targetPath, /absolute/);
  const paths = Array.from({ length: 10_000 }, (_, i) => `/srv/share/department-${i % 40}/file-${i}.docx`);
  const big = await call("POST", "/api/v1/restores", { restorePointId: point.id, paths, targetPath: "/r" });
  assert.equal(big.status, 201, JSON.stringify(big.body).slice(0, 300));
  assert.equal(big.body.pathCount, 10_000);
  const tooMany = await call("POST", "/api/v1/restores", {
    restorePointId: point.id,
    paths: [...paths, "/x"],
    targetPath: "/r",
  });
  assert.equal(tooMany.status, 422);
  assert.match(tooMany.body.error.fields.paths, /10,000/);
  assert.equal((await call("GET", `/api/v1/restores/${big.body.id}`)).body.status, "pending");
  const other = await call("POST", "/api/v1/restores", {
    restorePointId: point.id,
    paths: ["/etc"],
    targetHostId: f.foreign.id,
    targetPath: "/r",
  });
  assert.equal(other.status, 404);
  const image = await call("POST", "/api/v1/restores/image", {
    restorePointId: point.id,
    targetHostId: f.h1.id,
    targetPath: "/r",
  });
  assert.equal(image.status, 422);
  assert.match(image.body.error.message, /image policy/);
  const bmr = await call("POST", "/api/v1/restores/bmr", { restorePointId: point.id, mode: "floppy" });
  assert.equal(bmr.status, 422);
  assert.match(bmr.body.error.fields.mode, /pxe or iso/);
  // Other routes keep the 64 KiB body limit.
  const res = await app.request("/api/v1/restores/image", {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ pad: "x".repeat(70_000) }),
  });
  assert.equal(res.status, 413);
});

// ---------------------------------------------------------------------------------------------------
// The whole flow against the simulated BES and agent (signed protocol, in-process)

Deno.test("the simulator answers browse, search, file restore and BMR from one consistent tree per point", async () => {
  using kv = await Deno.openKv(":memory:");
  const clock = new TestClock(new Date("2026-11-29T01:59:00Z"));
  const { app } = testApp(kv, clock);
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const client = engineClient(app, clock);
  const { identity: bes } = await client.registerBes(tenant.secrets[0], {
    name: "sim-bes",
    hostname: "sim-bes.acme.example",
    ipAddress: "10.0.0.10",
  });
  const { identity: agent } = await client.enrollAgent(tenant.secrets[0], {
    hostname: "fs01.acme.example",
    ipAddress: "10.0.0.21",
  });
  const metrics = engineMetrics();
  assert.equal((await client.post(bes, "/api/bes/v1/heartbeat", { version: "2", metrics })).status, 200);
  assert.equal((await client.post(agent, "/api/agent/v1/heartbeat", { version: "2", metrics })).status, 200);
  const target = await createTarget(kv, system, targetInput(bes.id), { now: clock.now(), masterKey });
  const policy = await createPolicy(kv, system, {
    name: "files",
    besId: bes.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    verifyAfterBackup: false,
  }, clock.now());
  await assignHost(kv, system, { policyId: policy.id, hostId: agent.id }, clock.now());
  // A scheduled full through the real queue and the signed protocol creates the restore point (the
  // simulator's own backup answers fail now and then on purpose, so this test posts the result itself).
  clock.advance(60_000);
  await runSchedulerTick(kv, clock.now());
  const [backup] = (await (await client.post(agent, "/api/agent/v1/jobs/claim", { max: 1 })).json()).jobs;
  const at = clock.now().toISOString();
  const posted = await client.post(agent, `/api/agent/v1/jobs/${backup.id}/result`, {
    status: "success",
    startedAt: at,
    endedAt: at,
    bytesTransferred: 5e9,
    protectedBytes: 5e9,
    output: {
      restorePoint: {
        id: crypto.randomUUID(),
        chainId: crypto.randomUUID(),
        type: "full",
        parentId: null,
        sizeBytes: 5e9,
        fileCount: 400,
        completedAt: at,
      },
    },
  });
  assert.equal(posted.status, 200);
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", clock.now());
  const token = await bearer(kv, admin, ["backup.view", "backup.restore"], clock.now());
  const call = async (method: string, path: string, body?: unknown) => {
    const res = await app.request(path, {
      method,
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  };
  const [point] = (await call("GET", `/api/v1/restore-points?hostId=${agent.id}`)).body.values;
  assert.ok(point, "the backup created a restore point");
  const seed = treeSeed({ engineRestorePointId: point.engineRestorePointId });
  const pointTime = Date.parse(point.completedAt);

  // Browse "/" and a subfolder: the listing is the tree's, and a second request is the same state.
  await call("POST", `/api/v1/restore-points/${point.id}/browse?path=/`);
  assert.equal(await processJobs(client, bes), 1);
  const root = (await call("GET", `/api/v1/restore-points/${point.id}/browse?path=/`)).body;
  assert.equal(root.status, "ready");
  assert.deepEqual(root.entries, simulatedChildren(seed, "/", pointTime));
  assert.ok(root.entries.some((e: { type: string }) => e.type === "dir"));
  const folder = root.entries.find((e: { type: string }) => e.type === "dir");
  const cached = await call("POST", `/api/v1/restore-points/${point.id}/browse?path=/`);
  assert.deepEqual([cached.status, cached.body], [200, root]);
  await call("POST", `/api/v1/restore-points/${point.id}/browse?path=${encodeURIComponent(folder.path)}`);
  await processJobs(client, bes);
  const sub =
    (await call("GET", `/api/v1/restore-points/${point.id}/browse?path=${encodeURIComponent(folder.path)}`))
      .body;
  assert.deepEqual(sub.entries, simulatedChildren(seed, folder.path, pointTime));
  assert.ok(sub.entries.every((e: { path: string }) => e.path.startsWith(`${folder.path}/`)));

  // Search: every match exists in the tree with the same size and time.
  const search = (await call("POST", `/api/v1/restore-points/${point.id}/search`, { query: "*.pdf" })).body;
  await processJobs(client, bes);
  const found = (await call("GET", `/api/v1/searches/${search.id}`)).body;
  assert.equal(found.status, "ready");
  assert.deepEqual(found.matches, simulatedSearch(seed, "*.pdf", 200, pointTime).matches);
  for (const m of found.matches) {
    assert.match(m.name, /\.pdf$/i);
    assert.deepEqual(simulatedEntry(seed, m.path, pointTime), m);
  }

  // File restore of a browsed folder and a searched file, plus a path that is not in the point.
  const paths = [folder.path, found.matches[0]?.path ?? folder.path, "/no/such/file"];
  const restore =
    (await call("POST", "/api/v1/restores", { restorePointId: point.id, paths, targetPath: "/restore" }))
      .body;
  assert.equal(restore.targetHostId, agent.id);
  assert.equal(await processJobs(client, agent), 1);
  const done = (await call("GET", `/api/v1/restores/${restore.id}`)).body;
  const expected = [...new Set(restore.paths as string[])].flatMap((p) =>
    simulatedFilesUnder(seed, p, pointTime) ?? []
  );
  assert.equal(done.result.files + done.result.errorCount - 1, expected.length, "every file counted once");
  assert.equal(done.status, "warning");
  assert.ok(done.result.errors.some((e: { path: string }) => e.path === "/no/such/file"));
  assert.deepEqual(done.progress.percent, 100);
  assert.equal((await getJob(kv, restore.jobId))!.progress?.percent, 95, "progress was reported in steps");

  // BMR through the simulated BES: the token works once over the protocol.
  const bmr = (await call("POST", "/api/v1/restores/bmr", { restorePointId: point.id, mode: "iso" })).body;
  assert.ok(bmr.token);
  const redeem = await client.post(bes, "/api/bes/v1/bmr/redeem", { token: bmr.token });
  assert.equal(redeem.status, 200);
  assert.deepEqual(await redeem.json(), { restoreId: bmr.restore.id, restorePointId: point.id, mode: "iso" });
  const replay = await client.post(bes, "/api/bes/v1/bmr/redeem", { token: bmr.token });
  assert.equal(replay.status, 409);
  assert.equal((await replay.json()).error.code, "conflict");
  const stranger = await client.post(bes, "/api/bes/v1/bmr/redeem", { token: crypto.randomUUID() });
  assert.equal(stranger.status, 404);
  assert.equal(await processJobs(client, bes), 1);
  const bmrDone = (await call("GET", `/api/v1/restores/${bmr.restore.id}`)).body;
  assert.equal(bmrDone.status, "success");
  assert.ok(bmrDone.tokenUsedAt);

  // Every key this flow wrote belongs to a self-backup database or a listed ephemeral prefix.
  for await (const e of kv.list({ prefix: [] })) {
    assert.notEqual(classifyKey(e.key), null, `unclassified key prefix ${String(e.key[0])}`);
  }
});

Deno.test("the simulated tree is the same for the same point and differs between points", () => {
  const a1 = simulatedChildren("point-a", "/");
  const a2 = simulatedChildren("point-a", "/");
  const b = simulatedChildren("point-b", "/");
  assert.deepEqual(a1, a2);
  assert.notDeepEqual(a1, b);
  const all = simulatedFilesUnder("point-a", "/")!;
  assert.ok(all.length > 50, `a tree of ${all.length} files`);
  for (const file of all.slice(0, 50)) assert.deepEqual(simulatedEntry("point-a", file.path), file);
  assert.equal(simulatedEntry("point-a", "/definitely/not/there"), null);
  assert.deepEqual(simulatedChildren("point-a", all[0].path), [], "a file has no children");
  const everything = simulatedSearch("point-a", "*", 100_000);
  assert.equal(everything.matches.filter((m) => m.type === "file").length, all.length);
  assert.equal(simulatedSearch("point-a", "*", 5).truncated, true);
});
