/**
 * File version history, the domain against KV: racing requests queue one set of jobs; a failed job leaves its
 * points uncovered (named in `errors`) and a new request asks for them again; an answer about a point that
 * was not asked is ignored; an expired point drops out of the timeline and its observation is deleted; a
 * restore of a version names the point and path, and a point the history does not show the file in is refused.
 */
import assert from "node:assert/strict";
import { userActor } from "../../domain/auth.ts";
import {
  fileHistoryPointKey,
  getFileHistory,
  requestFileHistory,
  restoreFileVersion,
} from "../../domain/file_history.ts";
import { claimJobs, type Job } from "../../domain/job_queue.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { restorePointKey } from "../../domain/keys/restore.ts";
import { classifyKey } from "../../domain/self_backup.ts";
import { FILE, H, setup } from "./file_history_world.ts";

async function historyJobs(kv: Deno.Kv, path?: string): Promise<Job[]> {
  return (await Array.fromAsync(kv.list<Job>({ prefix: ["jobs"] }))).map((e) => e.value)
    .filter((j) => j.kind === "file_history" && (!path || j.payload.path === path));
}

Deno.test("file history: racing requests for one (host, path) queue one set of jobs (15 rounds of 3)", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const actor = userActor(s.users.restorer);
  for (let i = 0; i < 15; i++) {
    const path = `/srv/race/${i}.txt`;
    const results = await Promise.all(
      [0, 1, 2].map(() => requestFileHistory(kv, actor, s.host.id, path, s.clock.now())),
    );
    assert.equal(results.reduce((n, r) => n + r.queued, 0), 1, `round ${i}: one request queued`);
    const jobs = await historyJobs(kv, path);
    assert.equal(jobs.length, 1, `round ${i}: one job`);
    assert.equal((jobs[0].payload.points as unknown[]).length, 3);
    for (const r of results) assert.equal(r.view.status, "pending");
  }
});

Deno.test("file history: a failed job is retried by the next request; unasked answers are ignored; an expired point drops out", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const actor = userActor(s.users.restorer);
  const now = () => s.clock.now();
  const claim = async () =>
    (await claimJobs(kv, `bes:${s.engine.id}`, 50, now())).filter((j) => j.kind === "file_history");

  await requestFileHistory(kv, actor, s.host.id, FILE, now());
  const [first] = await claim();
  await s.finish(first, {
    status: "failed",
    error: { reason: "TARGET_UNREACHABLE", message: "Target Primary is unreachable" },
    retryable: false,
  });
  let view = await getFileHistory(kv, actor, s.host.id, FILE, now());
  assert.equal(view.status, "ready");
  assert.equal(view.pointsExamined, 0);
  assert.equal(view.pointsNew, 3, "the failed job's points are still to be read");
  assert.ok(view.errors.some((e) => e.includes("TARGET_UNREACHABLE")), JSON.stringify(view.errors));

  const again = await requestFileHistory(kv, actor, s.host.id, FILE, now());
  assert.equal(again.queued, 1);
  const [second] = await claim();
  const obs = (id: string, size: number, c: string) => ({
    restorePointId: id,
    exists: true,
    type: "file",
    size,
    mtime: "2026-11-01T00:00:00.000Z",
    mode: 0o644,
    chunksId: H(c),
    contentId: H(c === "1" ? "e" : "f"),
  });
  await s.finish(second, {
    status: "success",
    output: {
      path: FILE,
      observations: [
        obs(s.pointIds[0], 10, "1"),
        obs(s.pointIds[1], 10, "1"),
        obs(s.pointIds[2], 12, "2"),
        obs("01ARZ3NDEKTSV4RRFFQ69G5FAV", 1, "3"),
      ],
    },
  });
  assert.equal(
    (await kv.get(fileHistoryPointKey(s.host.id, FILE, "01ARZ3NDEKTSV4RRFFQ69G5FAV"))).value,
    null,
    "an answer about a point that was not asked is not kept",
  );
  view = await getFileHistory(kv, actor, s.host.id, FILE, now());
  assert.deepEqual(view.errors, []);
  assert.deepEqual(view.versions.map((v) => v.points.length), [1, 2]);

  // Restoring: the point must hold the file per the history, and be the host's.
  const restore = await restoreFileVersion(kv, actor, s.host.id, {
    path: FILE,
    restorePointId: s.pointIds[0],
    location: "other",
    targetPath: "/restore",
  }, now());
  assert.deepEqual([restore.restorePointId, restore.paths, restore.targetPath], [
    s.pointIds[0],
    [FILE],
    "/restore",
  ]);
  await assert.rejects(
    restoreFileVersion(
      kv,
      actor,
      s.host.id,
      { path: "/srv/other.txt", restorePointId: s.pointIds[0] },
      now(),
    ),
    /has not examined restore point/,
  );

  // The newest point expires: it leaves the timeline (one version left), and the next request deletes its
  // observation and queues nothing.
  const key = restorePointKey(s.pointIds[2]);
  const point = (await kv.get<RestorePoint>(key)).value!;
  await kv.set(key, { ...point, status: "expired" });
  view = await getFileHistory(kv, actor, s.host.id, FILE, now());
  assert.equal(view.pointsTotal, 2);
  assert.deepEqual(view.versions.map((v) => v.points.map((p) => p.id)), [[s.pointIds[1], s.pointIds[0]]]);
  const after = await requestFileHistory(kv, actor, s.host.id, FILE, now());
  assert.equal(after.queued, 0);
  assert.equal((await kv.get(fileHistoryPointKey(s.host.id, FILE, s.pointIds[2]))).value, null);
  assert.equal((await historyJobs(kv)).length, 2);
  // Every key the history wrote is classified for the control plane's own backups.
  for await (const e of kv.list({ prefix: [] })) {
    assert.notEqual(classifyKey(e.key), null, `unclassified key prefix ${String(e.key[0])}`);
  }
});

Deno.test("file history: a job its BES has not picked up in 2 minutes reads failed; a late answer still lands", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const actor = userActor(s.users.restorer);
  await requestFileHistory(kv, actor, s.host.id, FILE, s.clock.now());
  s.clock.time = new Date(s.clock.now().getTime() + 3 * 60_000);
  let view = await getFileHistory(kv, actor, s.host.id, FILE, s.clock.now());
  assert.equal(view.status, "ready");
  assert.ok(view.errors.some((e) => e.includes("has not picked up")), JSON.stringify(view.errors));
  const [job] = (await claimJobs(kv, `bes:${s.engine.id}`, 50, s.clock.now())).filter((j) =>
    j.kind === "file_history"
  );
  await s.finish(job, {
    output: {
      path: FILE,
      observations: s.pointIds.map((id) => ({ restorePointId: id, exists: false })),
    },
  });
  view = await getFileHistory(kv, actor, s.host.id, FILE, s.clock.now());
  assert.deepEqual(view.errors, []);
  assert.equal(view.pointsExamined, 3);
  assert.deepEqual(view.versions.map((v) => [v.state, v.points.length]), [["absent", 3]]);
});
