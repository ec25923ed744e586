/**
 * File history pages without JavaScript (issue 21 item 3): the host page's path field and a point's Browse
 * lead to `/backup/restore/hosts/:hostId/history`; asking POSTs (CSRF) and queues one BES `file_history` job
 * with its audit entry; the page says "Computing…" and reloads itself until the BES answers, then shows the
 * versions newest first; "Restore this version" is one form (overwrite needs the confirmation) that creates
 * the usual file restore request. Fail-closed for roles without backup.restore.
 */
import assert from "node:assert/strict";
import { claimJobs } from "../../domain/job_queue.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { applyHostHeartbeat } from "../../domain/hosts.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { assertIncludes, engineMetrics } from "../helpers.ts";
import { FILE, H, setup } from "./file_history_world.ts";

Deno.test("file history pages: ask from the host page, computing… then two versions, restore one", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const b = await s.as("restorer");
  const pageUrl = `/backup/restore/hosts/${s.host.id}/history`;

  // The host page has the path field; a point's Browse has the form its History buttons submit.
  const hostPage = await (await b.get(`/backup/hosts/${s.host.id}`)).text();
  assertIncludes(hostPage, `action="${pageUrl}"`);
  const pointPage = await (await b.get(`/backup/restore/points/${s.pointIds[2]}`)).text();
  assert.match(pointPage, new RegExp(`<form id="file-history" method="post" action="${pageUrl}"`));

  // A bad path: one clear error, nothing queued.
  const bad = await b.postForm(pageUrl, { path: "relative/x" }, { tokenFrom: pageUrl });
  assert.equal(bad.status, 422);
  assertIncludes(await bad.text(), "must be an absolute path");
  // (The BES's other jobs — verifications of the backups — are claimed and left aside here.)
  const others = await claimJobs(kv, `bes:${s.engine.id}`, 50, s.clock.now());
  assert.ok(others.every((j) => j.kind !== "file_history"));

  const asked = await b.postForm(pageUrl, { path: FILE }, { tokenFrom: pageUrl });
  assert.equal(asked.status, 303);
  const location = asked.headers.get("location")!;
  assert.ok(location.startsWith(`${pageUrl}?path=${encodeURIComponent(FILE)}`), location);
  const pending = await b.get(location);
  assert.equal(pending.headers.get("refresh"), "3", "the page reloads itself while the BES works");
  assertIncludes(await pending.text(), "Computing…");

  // The BES's job: all three points of the one repository, in one job, with the keys' point first.
  const [job] = (await claimJobs(kv, `bes:${s.engine.id}`, 10, s.clock.now())).filter((j) =>
    j.kind === "file_history"
  );
  assert.equal(job.kind, "file_history");
  assert.equal(job.payload.path, FILE);
  const asked3 = (job.payload.points as { restorePointId: string }[]).map((p) => p.restorePointId);
  assert.deepEqual([...asked3].sort(), [...s.pointIds].sort());
  assert.ok(asked3.includes(String(job.payload.restorePointId)));
  const audit = (await Array.fromAsync(kv.list<{ action: string; summary: string }>({ prefix: ["audit"] })))
    .map((e) => e.value).filter((a) => a.action === "restore.file_history");
  assert.equal(audit.length, 1);
  assertIncludes(audit[0].summary, FILE);

  // It answers: v1 in the first two points, v2 in the third.
  const v = (id: string, size: number, content: string) => ({
    restorePointId: id,
    exists: true,
    type: "file",
    size,
    mtime: size === 10 ? "2026-11-01T00:00:00.000Z" : "2026-11-02T01:30:00.000Z",
    mode: 0o644,
    chunksId: H(content),
    contentId: H(content === "1" ? "e" : "f"),
  });
  await s.finish(job, {
    output: {
      path: FILE,
      observations: [v(s.pointIds[0], 10, "1"), v(s.pointIds[1], 10, "1"), v(s.pointIds[2], 12, "2")],
    },
  });
  const ready = await b.get(location);
  assert.equal(ready.headers.get("refresh"), null);
  const html = await ready.text();
  assertIncludes(html, "2 versions in 3 restore points");
  const rows = [...html.matchAll(/<tr\s+data-version="(\d+)"/g)].map((m) => m[1]);
  assert.deepEqual(rows, ["2", "1"], "newest first");
  const buttons = [...html.matchAll(/name="restorePointId" value="([^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual(buttons, [s.pointIds[2], s.pointIds[1]], "each version restores from its newest point");
  assertIncludes(html, H("e").slice(0, 12));

  // Restore the older version: overwrite without the confirmation is refused, nothing queued.
  const restoreUrl = `${pageUrl}/restore`;
  const refused = await b.postForm(restoreUrl, {
    path: FILE,
    restorePointId: s.pointIds[1],
    location: "original",
    overwrite: "on",
  }, { tokenFrom: location });
  assert.equal(refused.status, 422);
  assertIncludes(await refused.text(), "Confirm that the file at the target is replaced");
  assert.equal((await claimJobs(kv, `agent:${s.host.id}`, 10, s.clock.now())).length, 0);
  // To another folder: one POST, the usual file restore request, then the request's page.
  const done = await b.postForm(restoreUrl, {
    path: FILE,
    restorePointId: s.pointIds[1],
    location: "other",
    targetHostId: s.host.id,
    targetPath: "/restore",
  }, { tokenFrom: location });
  assert.equal(done.status, 303);
  assert.match(done.headers.get("location")!, /^\/backup\/restore\/requests\/[0-9A-Z]{26}$/);
  const [restoreJob] = await claimJobs(kv, `agent:${s.host.id}`, 10, s.clock.now());
  assert.equal(restoreJob.kind, "restore_files");
  assert.deepEqual(restoreJob.payload.paths, [FILE]);
  assert.equal(restoreJob.payload.targetPath, "/restore");
  assert.equal(restoreJob.payload.restorePointId, s.pointIds[1]);
  assert.equal(restoreJob.payload.overwrite, false);

  // A new point makes the history stale; the page says so.
  const at = new Date("2026-11-02T04:00:00Z");
  s.clock.time = at;
  await applyHeartbeat(kv, s.engine.id, { version: "1", metrics: engineMetrics() }, at);
  await applyHostHeartbeat(kv, s.host.id, { version: "1", metrics: engineMetrics() }, at);
  await runSchedulerTick(kv, at);
  const [backup] = (await claimJobs(kv, `agent:${s.host.id}`, 10, at)).filter((j) => j.kind === "backup");
  await s.finish(backup, {
    output: {
      restorePoint: {
        id: H("d"),
        chainId: "chain-A",
        type: "incremental",
        parentId: H("c"),
        sizeBytes: 1,
        fileCount: 2,
        completedAt: at.toISOString(),
      },
    },
  }, at);
  assertIncludes(await (await b.get(location)).text(), "1 restore point is");
});

Deno.test("file history pages and API: a viewer is refused (403), an unknown host is 404", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const viewer = await s.as("viewer");
  assert.equal((await viewer.get(`/backup/restore/hosts/${s.host.id}/history`)).status, 403);
  const restorer = await s.as("restorer");
  assert.equal((await restorer.get(`/backup/restore/hosts/01ARZ3NDEKTSV4RRFFQ69G5FAV/history`)).status, 404);
  const api = await restorer.get(`/api/v1/hosts/${s.host.id}/file-history?path=${encodeURIComponent(FILE)}`);
  assert.equal(api.status, 200);
  assert.equal((await api.json()).status, "none");
});
