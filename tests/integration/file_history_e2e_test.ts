/**
 * Issue 21 item 3, end to end with the real BES and agent programs: five restore points of a host in which a
 * file has two distinct versions. The history (BES `file_history` jobs over the points' trees) shows exactly
 * two versions with the right points and content hashes; it is kept per (host, path) and a new point makes it
 * stale, extended by one job for that point only; restoring the older version (original location, overwrite
 * confirmed) writes its bytes back on the host.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import type { Job } from "../../domain/job_queue.ts";
import { deterministicBytes } from "../engine/helpers.ts";
import { type EnginesWorld, enginesWorld, waitFor } from "./engines_world.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

async function backup(w: EnginesWorld, policyId: string, kind: "full" | "incremental"): Promise<string> {
  const res = await w.api("POST", `/api/v1/policies/${policyId}/run`, { kind });
  assert.equal(res.status, 201, res.text);
  const { run } = await w.finishedRun(res.body.runs[0].id);
  assert.equal(run.status, "success", `${JSON.stringify(run.error)}\n${w.output()}`);
  return run.restorePointId!;
}

async function historyJobs(w: EnginesWorld): Promise<Job[]> {
  return (await Array.fromAsync(w.kv.list<Job>({ prefix: ["jobs"] }))).map((e) => e.value)
    .filter((j) => j.kind === "file_history");
}

Deno.test({
  name:
    "file history e2e: five points, two versions of a file; extended by a new point; the older version restored",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await enginesWorld();
  const src = `${w.tmp}/src`;
  await Deno.mkdir(`${src}/docs`, { recursive: true });
  const file = `${src}/docs/budget.xlsx`;
  const v1 = deterministicBytes("budget v1", 20_000);
  const v2 = deterministicBytes("budget v2", 26_000);
  await Deno.writeFile(file, v1);
  await Deno.utime(file, new Date("2026-03-01T10:00:00Z"), new Date("2026-03-01T10:00:00Z"));
  await Deno.writeFile(`${src}/docs/other.txt`, new TextEncoder().encode("unrelated"));
  const { engine, bes } = await w.startBes();
  const target = await w.addLocalTarget(engine.id, "target");
  const policy = await w.api("POST", "/api/v1/policies", {
    name: "files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    encryption: "AES-256-GCM",
  });
  assert.equal(policy.status, 201, policy.text);
  const policyId = policy.body.id as string;
  const { host } = await w.startAgent("agent", [src]);
  const assigned = await w.api("POST", `/api/v1/policies/${policyId}/assignments`, { hostIds: [host.id] });
  assert.equal(assigned.status, 201, assigned.text);
  await sleep(2100);

  // Points 1–2 hold v1; then v2 (other bytes, size and time) for points 3–4.
  const p1 = await backup(w, policyId, "full");
  const p2 = await backup(w, policyId, "incremental");
  await Deno.writeFile(file, v2);
  await Deno.utime(file, new Date("2026-03-05T10:00:00Z"), new Date("2026-03-05T10:00:00Z"));
  const p3 = await backup(w, policyId, "incremental");
  const p4 = await backup(w, policyId, "incremental");

  const base = `/api/v1/hosts/${host.id}/file-history`;
  const read = async () => {
    const r = await w.api("GET", `${base}?path=${encodeURIComponent(file)}`);
    assert.equal(r.status, 200, r.text);
    return r.body;
  };
  assert.equal((await read()).status, "none");
  const asked = await w.api("POST", base, { path: file });
  assert.equal(asked.status, 202, asked.text);
  assert.equal(asked.body.status, "pending");
  const ready = async () =>
    await waitFor(
      "the history to be computed",
      async () => {
        const h = await read();
        return h.status === "ready" ? h : null;
      },
      60_000,
      bes,
    );
  let h = await ready();
  assert.deepEqual(h.errors, [], JSON.stringify(h));
  assert.equal(h.pointsExamined, 4);
  assert.deepEqual(
    h.versions.map((v: { size: number; contentId: string; points: { id: string }[] }) => [
      v.size,
      v.contentId,
      v.points.map((p) => p.id),
    ]),
    [[26_000, sha(v2), [p4, p3]], [20_000, sha(v1), [p2, p1]]],
  );
  assert.equal(h.versions[0].mtime, "2026-03-05T10:00:00.000Z");
  assert.equal((await historyJobs(w)).length, 1, "one job for the four points of one repository");

  // Asking again while up to date queues nothing (the kept history answers).
  const again = await w.api("POST", base, { path: file });
  assert.equal(again.status, 200, again.text);
  assert.equal((await historyJobs(w)).length, 1);

  // A fifth point (v2 still): the history is stale by one point; asking again examines only that one.
  const p5 = await backup(w, policyId, "incremental");
  const stale = await read();
  assert.equal(stale.status, "ready");
  assert.equal(stale.pointsNew, 1);
  const extended = await w.api("POST", base, { path: file });
  assert.equal(extended.status, 202, extended.text);
  const jobs = await historyJobs(w);
  assert.equal(jobs.length, 2);
  const newest = jobs[1]; // job ids are time-ordered
  assert.deepEqual((newest.payload.points as { restorePointId: string }[]).map((p) => p.restorePointId), [
    p5,
  ]);
  h = await ready();
  assert.equal(h.pointsExamined, 5);
  assert.equal(h.pointsNew, 0);
  assert.deepEqual(
    h.versions.map((v: { points: { id: string }[] }) => v.points.map((p) => p.id)),
    [[p5, p4, p3], [p2, p1]],
  );

  // Restore the older version over the current file: refused without the confirmation, then done.
  const older = h.versions[1].points[0].id as string;
  const refused = await w.api("POST", `${base}/restore`, {
    path: file,
    restorePointId: older,
    location: "original",
    overwrite: true,
  });
  assert.equal(refused.status, 422, refused.text);
  assert.ok(refused.body.error.fields.confirm, refused.text);
  assert.deepEqual(await Deno.readFile(file), v2, "a refused restore changes nothing");
  const restore = await w.api("POST", `${base}/restore`, {
    path: file,
    restorePointId: older,
    location: "original",
    overwrite: true,
    confirm: true,
  });
  assert.equal(restore.status, 201, restore.text);
  const done = await w.finishedRestore(restore.body.id);
  assert.equal(done.status, "success", `${JSON.stringify(done)}\n${w.output()}`);
  assert.deepEqual(await Deno.readFile(file), v1, "the older version's bytes are back");
  assert.equal((await Deno.stat(file)).mtime!.toISOString(), "2026-03-01T10:00:00.000Z");
});
