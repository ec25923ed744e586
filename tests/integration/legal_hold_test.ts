/**
 * Legal holds (holds.ts) against retention and prune: held points are kept (the preview says why),
 * no prune job ever names one, early expiry refuses one, a hold placed while retention plans wins,
 * and releasing a hold goes through four-eyes when on.
 */
import assert from "node:assert/strict";
import { approveRequest, setFourEyesSettings } from "../../domain/approvals.ts";
import { ConflictError, ForbiddenError, NotFoundError } from "../../domain/errors.ts";
import { holdGuard, listHolds, placeHold, releaseHold } from "../../domain/holds.ts";
import { type Job } from "../../domain/job_queue.ts";
import { applyRetention, previewPolicyRetention } from "../../domain/retention_apply.ts";
import { restorePointKey } from "../../domain/keys/restore.ts";
import { addUser, auditEntries, Browser, createTenant, signInAs } from "../helpers.ts";
import { userActor } from "../../domain/auth.ts";
import { allPoints, apiAs, fourEyesWorld, masterKey, type World } from "./four_eyes_world.ts";

/** Every prune job queued so far (read straight from the job table, whatever its state). */
async function pruneJobs(kv: Deno.Kv): Promise<Job[]> {
  const jobs: Job[] = [];
  for await (const e of kv.list<Job>({ prefix: ["jobs"] })) {
    if (e.value && typeof e.value === "object" && e.value.kind === "prune") jobs.push(e.value);
  }
  return jobs;
}

/** The engine ids (`rp-N`) of the points in every prune job's payload. */
async function prunedIds(kv: Deno.Kv): Promise<string[]> {
  return (await pruneJobs(kv)).flatMap((j) => j.payload.restorePointIds as string[]).sort();
}

async function engineIdsWith(kv: Deno.Kv, status: string): Promise<string[]> {
  return (await allPoints(kv)).filter((p) => p.status === status).map((p) => p.engineRestorePointId!).sort();
}

function pointByEngineId(points: Awaited<ReturnType<typeof allPoints>>, id: string) {
  return points.find((p) => p.engineRestorePointId === id)!;
}

const NOW = new Date("2026-11-11T05:00:00Z");

async function held(kv: Deno.Kv, w: World, scope: "host" | "policy" | "point", subjectId: string) {
  return await placeHold(kv, w.actors.admin1, {
    scope,
    subjectId,
    reason: "Litigation hold",
    caseReference: "CASE-7",
  }, w.clock.now());
}

Deno.test("a hold on a host: retention expires none of its points and no prune job names one; released, they expire", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv);
  const hold = await held(kv, w, "host", w.host.id);
  assert.deepEqual(await applyRetention(kv, NOW), { expired: 0, pruneJobs: 0 });
  assert.deepEqual(await engineIdsWith(kv, "expired"), []);
  assert.deepEqual(await prunedIds(kv), [], "the engine never receives a held point");
  await releaseHold(kv, w.actors.admin2, hold.id, w.clock.now());
  assert.deepEqual(await applyRetention(kv, NOW), { expired: 3, pruneJobs: 1 });
  assert.deepEqual(await prunedIds(kv), ["rp-0", "rp-1", "rp-2"]);
  const audit = (await auditEntries(kv, w.tenant.account.id)).map((e) => e.action);
  assert.ok(audit.includes("legal_hold.place") && audit.includes("legal_hold.release"));
});

Deno.test("a hold on one point: retention expires the others, and the prune job payload leaves it out", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv);
  const rp0 = pointByEngineId(await allPoints(kv), "rp-0");
  await held(kv, w, "point", rp0.id);
  assert.deepEqual(await applyRetention(kv, NOW), { expired: 2, pruneJobs: 1 });
  const [job] = await pruneJobs(kv);
  assert.deepEqual([...(job.payload.restorePointIds as string[])].sort(), ["rp-1", "rp-2"]);
  assert.equal((await kv.get<{ status: string }>(restorePointKey(rp0.id))).value!.status, "complete");
  assert.deepEqual(await applyRetention(kv, NOW), { expired: 0, pruneJobs: 0 }, "the held point stays kept");
});

Deno.test("a hold on a policy keeps every point of it; the retention preview shows them kept with the hold as the reason", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv);
  await held(kv, w, "policy", w.policy.id);
  const preview =
    (await previewPolicyRetention(kv, w.policy, { daily: 1, weekly: 0, monthly: 0 }))[w.host.id];
  assert.equal(preview.expire.length, 0);
  assert.equal(preview.keep.length, 10);
  for (const id of preview.keep) assert.ok(preview.reasons[id].includes("legal hold CASE-7"), id);
  // The same through the API and the policy's retention page.
  const api = await apiAs(w, kv, w.users.viewer);
  const res = await api(
    "GET",
    `/api/v1/policies/${w.policy.id}/retention-preview?daily=1&weekly=0&monthly=0`,
  );
  assert.equal(res.status, 200);
  const rp0 = pointByEngineId(await allPoints(kv), "rp-0");
  assert.deepEqual(res.body.objects[w.host.id].reasons[rp0.id], ["legal hold CASE-7"]);
  const browser = new Browser(w.app);
  await signInAs(browser, kv, w.users.viewer, w.clock.now());
  const page = await (await browser.get(`/backup/policies/${w.policy.id}?daily=1&weekly=0&monthly=0`)).text();
  assert.match(page, /legal hold CASE-7/, "the policy page's retention preview says why each point is kept");
  assert.deepEqual(await applyRetention(kv, NOW), { expired: 0, pruneJobs: 0 });
  assert.deepEqual(await prunedIds(kv), []);
});

Deno.test("a hold placed after retention read the holds makes its write fail (the hold epoch is checked)", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 2);
  const guard = await holdGuard(kv, w.tenant.account.id);
  await held(kv, w, "host", w.host.id);
  const op = guard.check(kv.atomic()).set(["probe"], 1);
  assert.equal((await op.commit()).ok, false, "a write planned before the hold does not land");
  const fresh = await holdGuard(kv, w.tenant.account.id);
  assert.equal((await fresh.check(kv.atomic()).set(["probe"], 1).commit()).ok, true);
});

Deno.test("applyRetention() checks the hold epoch: a hold placed between its plan and its write wins", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv);
  // Retention's writes go through this KV; just before its first commit, an operator places a hold.
  let injected = false;
  const racing = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = async () => {
            if (!injected) {
              injected = true;
              await held(kv, w, "host", w.host.id);
            }
            return await commit();
          };
          return op;
        };
      }
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  assert.deepEqual(await applyRetention(racing, NOW), { expired: 0, pruneJobs: 0 });
  assert.ok(injected);
  assert.deepEqual(await engineIdsWith(kv, "expired"), []);
  assert.deepEqual(await prunedIds(kv), []);
});

Deno.test("legal hold race: holds placed while retention runs never let a held point be pruned (many iterations)", async () => {
  for (let i = 0; i < 8; i++) {
    using kv = await Deno.openKv(":memory:");
    const w = await fourEyesWorld(kv);
    const rp1 = pointByEngineId(await allPoints(kv), "rp-1");
    const [retention, hold] = await Promise.allSettled([
      applyRetention(kv, NOW),
      held(kv, w, "point", rp1.id),
    ]);
    assert.equal(retention.status, "fulfilled");
    const point = (await kv.get<{ status: string }>(restorePointKey(rp1.id))).value!;
    if (hold.status === "fulfilled") {
      // The hold landed on a complete point (its write checks the point): it must still be complete.
      assert.equal(point.status, "complete", `iteration ${i}: a held point was expired`);
    } else {
      // Refused: retention had already expired it (nothing to keep).
      assert.ok(hold.reason instanceof ConflictError, `iteration ${i}: ${hold.reason}`);
      assert.equal(point.status, "expired");
    }
    // Whatever happened, one more retention run settles and never prunes the held point.
    await applyRetention(kv, NOW);
    if (hold.status === "fulfilled") assert.ok(!(await prunedIds(kv)).includes("rp-1"), `iteration ${i}`);
  }
});

Deno.test("early expiry refuses a held point with a clear error and queues nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 2);
  const [point] = await allPoints(kv);
  await kv.set(restorePointKey(point.id), { ...point, archivedAt: "2026-11-20T00:00:00.000Z" });
  await held(kv, w, "host", w.host.id);
  const api = await apiAs(w, kv, w.users.admin1);
  const res = await api("POST", `/api/v1/restore-points/${point.id}/expire`, { confirm: true });
  assert.equal(res.status, 409);
  assert.match(res.body.error.message, /under legal hold \(case CASE-7: Litigation hold\)/);
  assert.equal((await kv.get<{ status: string }>(restorePointKey(point.id))).value!.status, "complete");
  assert.deepEqual(await pruneJobs(kv), []);
  // With four-eyes on, the refusal comes at once: no request is created for a held point.
  await setFourEyesSettings(kv, w.actors.admin1, { enabled: true, ttlHours: 24 }, w.clock.now());
  const again = await api("POST", `/api/v1/restore-points/${point.id}/expire`, { confirm: true });
  assert.equal(again.status, 409);
  assert.deepEqual((await api("GET", "/api/v1/approvals")).body.values, []);
});

Deno.test("releasing a hold needs four-eyes when on: a request, then a second admin's approval", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv);
  const hold = await held(kv, w, "host", w.host.id);
  await setFourEyesSettings(kv, w.actors.admin1, { enabled: true, ttlHours: 24 }, w.clock.now());
  const api = await apiAs(w, kv, w.users.admin1);
  const res = await api("POST", `/api/v1/legal-holds/${hold.id}/release`);
  assert.equal(res.status, 202);
  const request = res.body.approvalRequest;
  assert.equal(request.kind, "legal_hold.release");
  assert.equal(request.permission, "backup.hold");
  assert.equal((await listHolds(kv, w.actors.admin1)).length, 1, "still active");
  assert.deepEqual(await applyRetention(kv, NOW), { expired: 0, pruneJobs: 0 });
  await assert.rejects(
    approveRequest(kv, w.actors.admin1, request.id, { now: w.clock.now(), masterKey }),
    ForbiddenError,
  );
  // An operator has no backup.hold: they cannot approve a release.
  await assert.rejects(
    approveRequest(kv, w.actors.operator, request.id, { now: w.clock.now(), masterKey }),
    ForbiddenError,
  );
  const { request: done } = await approveRequest(kv, w.actors.admin2, request.id, {
    now: w.clock.now(),
    masterKey,
  });
  assert.equal(done.status, "executed");
  assert.deepEqual(await listHolds(kv, w.actors.admin1), []);
  assert.equal(
    (await listHolds(kv, w.actors.admin1, { status: "released" }))[0].releasedById,
    w.users.admin2.id,
  );
  assert.deepEqual(await applyRetention(kv, NOW), { expired: 3, pruneJobs: 1 });
});

Deno.test("legal hold permissions: backup.hold places and releases (admins), everyone with backup.view lists; scope is enforced", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  const body = { scope: "host" as const, subjectId: w.host.id, reason: "Audit", caseReference: "CASE-9" };
  const operator = await apiAs(w, kv, w.users.operator);
  assert.equal((await operator("POST", "/api/v1/legal-holds", body)).status, 403);
  const admin = await apiAs(w, kv, w.users.admin1);
  const bad = await admin("POST", "/api/v1/legal-holds", { ...body, caseReference: "" });
  assert.equal(bad.status, 422);
  assert.ok(bad.body.error.fields.caseReference);
  const placed = await admin("POST", "/api/v1/legal-holds", body);
  assert.equal(placed.status, 201);
  assert.equal(placed.body.subjectLabel, "h.acme.example");
  const viewer = await apiAs(w, kv, w.users.viewer);
  const listed = await viewer("GET", "/api/v1/legal-holds");
  assert.equal(listed.status, 200);
  assert.deepEqual(listed.body.values.map((h: { caseReference: string }) => h.caseReference), ["CASE-9"]);
  assert.equal((await operator("POST", `/api/v1/legal-holds/${placed.body.id}/release`)).status, 403);
  // Another account's admin neither sees the hold nor reaches the host.
  const other = await createTenant(kv, "Other", ["X"], w.clock.now());
  const stranger = userActor(await addUser(kv, other, "admin@other.example", "admin", "all", w.clock.now()));
  assert.deepEqual(await listHolds(kv, stranger), []);
  await assert.rejects(placeHold(kv, stranger, body, w.clock.now()), NotFoundError);
  await assert.rejects(releaseHold(kv, stranger, placed.body.id, w.clock.now()), NotFoundError);
  // Released once; a second release is a conflict.
  assert.equal((await admin("POST", `/api/v1/legal-holds/${placed.body.id}/release`)).status, 200);
  assert.equal((await admin("POST", `/api/v1/legal-holds/${placed.body.id}/release`)).status, 409);
});

Deno.test("Legal holds page: a hold placed by the form is listed; viewers see it without the form", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  const admin = new Browser(w.app);
  await signInAs(admin, kv, w.users.admin1, w.clock.now());
  const missing = await admin.postForm("/backup/holds", { subject: `host:${w.host.id}`, reason: "x" }, {
    tokenFrom: "/backup/holds",
  });
  assert.equal(missing.status, 422);
  const placed = await admin.postForm("/backup/holds", {
    subject: `host:${w.host.id}`,
    pointId: "",
    reason: "Regulator request",
    caseReference: "REG-1",
  }, { tokenFrom: "/backup/holds" });
  assert.equal(placed.status, 303);
  const viewer = new Browser(w.app);
  await signInAs(viewer, kv, w.users.viewer, w.clock.now());
  const html = await (await viewer.get("/backup/holds")).text();
  assert.match(html, /REG-1/);
  assert.match(html, /Regulator request/);
  assert.doesNotMatch(html, /Place a hold/);
});
