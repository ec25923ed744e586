/**
 * Issue 21 item 2, end to end with the real BES and agent programs (engines_world.ts): a policy backs up a
 * small folder; a restore drill created through the API restores a sample of its files to a scratch folder
 * on the agent, verifies them, measures the RTO and throughput, deletes the scratch copy and passes; the cron
 * handler starts it once in a minute of its schedule, and that run passes too — the policy's "Last proven
 * restore" shows it. Then a byte flipped inside
 * one file's chunk in its pack on the target: a whole-point drill fails, its result names that file (and
 * only files whose data is damaged), a critical alert opens, and the scratch folder is empty again.
 */
import assert from "node:assert/strict";
import type { Alert } from "../../domain/alerts.ts";
import type { DrillRun } from "../../domain/drills.ts";
import { dispatchDrills } from "../../jobs/dispatch_drills.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { restorePointKey } from "../../domain/keys/restore.ts";
import { TreeCache } from "../../engine/agent/tree_walk.ts";
import { findEntry } from "../../engine/agent/tree_walk.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { fromHex } from "../../engine/repo/bytes.ts";
import { recoveryOpener } from "../../engine/repo/keys.ts";
import { packObjectName } from "../../engine/repo/pack.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { loadSnapshot } from "../../engine/repo/snapshot.ts";
import { deterministicBytes } from "../engine/helpers.ts";
import { type EnginesWorld, enginesWorld, waitFor } from "./engines_world.ts";

const text = (s: string) => new TextEncoder().encode(s);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function finishedDrillRun(w: EnginesWorld, id: string): Promise<DrillRun> {
  return await waitFor(`drill run ${id} to end`, async () => {
    const r = await w.api("GET", `/api/v1/drill-runs/${id}`);
    assert.equal(r.status, 200, r.text);
    return r.body.status === "passed" || r.body.status === "failed" ? r.body as DrillRun : null;
  }, 90_000);
}

Deno.test({
  name:
    "drills e2e: real BES + agent: a sample drill passes with RTO and throughput; a damaged chunk fails a whole-point drill naming the file",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await enginesWorld();
  const src = `${w.tmp}/src`;
  await Deno.mkdir(`${src}/docs/deep`, { recursive: true });
  await Deno.writeFile(`${src}/docs/report.bin`, deterministicBytes("drill-report", 200_000));
  await Deno.writeFile(`${src}/docs/notes.txt`, text("notes line\n".repeat(500)));
  await Deno.writeFile(`${src}/docs/deep/a.bin`, deterministicBytes("drill-a", 30_000));
  await Deno.writeFile(`${src}/docs/deep/b.bin`, deterministicBytes("drill-b", 20_000));
  await Deno.writeFile(`${src}/small.txt`, text("hello"));
  await Deno.writeFile(`${src}/empty.txt`, new Uint8Array());
  // A folder without write permission: the drill must still delete its scratch copy.
  await Deno.chmod(`${src}/docs/deep`, 0o555);
  const { engine } = await w.startBes();
  const target = await w.addLocalTarget(engine.id, "target");
  const policyRes = await w.api("POST", "/api/v1/policies", {
    name: "files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    compression: "zstd",
    encryption: "AES-256-GCM",
    verifyAfterBackup: false,
  });
  assert.equal(policyRes.status, 201, policyRes.text);
  const policyId = policyRes.body.id as string;
  const { host } = await w.startAgent("agent", [src]);
  const assigned = await w.api("POST", `/api/v1/policies/${policyId}/assignments`, { hostIds: [host.id] });
  assert.equal(assigned.status, 201, assigned.text);
  await sleep(2100);
  const runRes = await w.api("POST", `/api/v1/policies/${policyId}/run`, { kind: "full" });
  assert.equal(runRes.status, 201, runRes.text);
  const backup = await w.finishedRun(runRes.body.runs[0].id);
  assert.equal(backup.run.status, "success", `${JSON.stringify(backup.run.error)}\n${w.output()}`);
  const point = (await w.kv.get<RestorePoint>(restorePointKey(backup.run.restorePointId!))).value!;

  // Before any drill: the policy has never been proven.
  const before = await w.api("GET", "/api/v1/proven-restores");
  assert.equal(before.status, 200, before.text);
  assert.deepEqual(before.body.values, [{ policyId, policyName: "files", proven: null }]);

  // A sample drill of 3 files, created through the API, run now.
  const scratch = `${w.tmp}/scratch`;
  const created = await w.api("POST", "/api/v1/drills", {
    name: "sample",
    schedule: "0 3 * * 6",
    scopeType: "policies",
    policyIds: [policyId],
    mode: "sample",
    sampleCount: 3,
    agentHostId: host.id,
    scratchPath: scratch,
    rtoObjectiveSeconds: 3600,
  });
  assert.equal(created.status, 201, created.text);
  const drillId = created.body.id as string;
  const started = await w.api("POST", `/api/v1/drills/${drillId}/run`);
  assert.equal(started.status, 202, started.text);
  assert.equal(started.body.values.length, 1, started.text);
  assert.equal(started.body.values[0].restorePointId, point.id);
  const passed = await finishedDrillRun(w, started.body.values[0].id);
  assert.equal(passed.status, "passed", `${JSON.stringify(passed)}\n${w.output()}`);
  assert.equal(passed.files, 3);
  assert.equal(passed.verified, 3);
  assert.deepEqual(passed.failures, []);
  assert.equal(passed.scratchRemoved, true);
  assert.equal(passed.rtoBreached, false);
  assert.ok(passed.rtoSeconds! > 0 && passed.rtoSeconds! < 3600, `RTO ${passed.rtoSeconds}`);
  assert.ok(passed.bytes > 0 && passed.bytesPerSecond! > 0, JSON.stringify(passed));
  assert.deepEqual(await Array.fromAsync(Deno.readDir(scratch)), [], "the scratch copy is gone");

  // The cron handler starts it on its schedule too (a minute of its schedule: Saturday 03:00 UTC), once.
  const saturday = new Date("2026-12-12T03:00:10Z");
  const [cron, again] = [await dispatchDrills(w.kv, saturday), await dispatchDrills(w.kv, saturday)];
  assert.deepEqual([cron.runs, again.runs], [1, 0]);
  const scheduled = await waitFor("the scheduled drill run", async () => {
    const r = await w.api("GET", `/api/v1/drills/${drillId}/runs`);
    return r.body.values.length === 2 ? r.body.values[0] as DrillRun : null;
  }, 30_000);
  assert.equal(scheduled.trigger, "cron");
  assert.equal((await finishedDrillRun(w, scheduled.id)).status, "passed");

  // The trend and the last proven restore.
  const trend = await w.api("GET", `/api/v1/drills/${drillId}/runs`);
  assert.equal(trend.status, 200, trend.text);
  assert.deepEqual(trend.body.values.map((r: DrillRun) => r.status), ["passed", "passed"]);
  const proven = await w.api("GET", "/api/v1/proven-restores");
  assert.equal(proven.body.values[0].proven.drillRunId, scheduled.id, proven.text);

  // Damage one file's data: flip a byte inside the first chunk of report.bin in its pack on the target.
  const repoPath = `${target.root}/cadres/${policyId}/g1`;
  const backend = new LocalBackend(repoPath);
  const repo = await Repository.open(backend, recoveryOpener(w.recovery.privatePem));
  const ns = repo.namespace(host.id);
  const snap = await loadSnapshot(ns, point.engineRestorePointId!);
  const trees = new TreeCache(ns, ns.hasher(snap.chainSalt ? fromHex(snap.chainSalt) : null));
  const report = await findEntry(trees, snap.tree, `${src}/docs/report.bin`);
  assert.ok(report?.content?.length, "report.bin has chunks");
  const loc = repo.index.lookup(host.id, report.content[0])!;
  const pack = await backend.get(packObjectName(loc.packId));
  pack[loc.offset + Math.floor(loc.length / 2)] ^= 0xff;
  await backend.put(packObjectName(loc.packId), pack);

  // A whole-point drill (its objective deliberately tiny, which a failed drill does not judge) now fails.
  const whole = await w.api("POST", "/api/v1/drills", {
    name: "whole",
    schedule: "0 4 * * 6",
    scopeType: "hosts",
    hostIds: [host.id],
    mode: "whole",
    agentHostId: host.id,
    scratchPath: scratch,
    rtoObjectiveSeconds: 1,
  });
  assert.equal(whole.status, 201, whole.text);
  const wholeRun = await w.api("POST", `/api/v1/drills/${whole.body.id}/run`);
  assert.equal(wholeRun.status, 202, wholeRun.text);
  const failed = await finishedDrillRun(w, wholeRun.body.values[0].id);
  assert.equal(failed.status, "failed", JSON.stringify(failed));
  assert.deepEqual(failed.failures.map((f) => f.path), [`${src}/docs/report.bin`], JSON.stringify(failed));
  assert.equal(failed.failureCount, 1);
  assert.match(failed.failures[0].message, /\S/);
  assert.ok(failed.error?.includes(`${src}/docs/report.bin`), failed.error ?? "");
  assert.equal(failed.verified, 5, "the other five files restored and verified");
  assert.equal(failed.scratchRemoved, true);
  assert.equal(failed.rtoBreached, false);
  assert.deepEqual(
    await Array.fromAsync(Deno.readDir(scratch)),
    [],
    "the scratch copy is gone after a failure too",
  );

  // A critical alert names the drill, the policy, the host and the file.
  const alerts = (await Array.fromAsync(w.kv.list<Alert>({ prefix: ["alerts"] }))).map((e) => e.value)
    .filter((a) => a.reason === "drill_failed");
  assert.equal(alerts.length, 1, JSON.stringify(alerts));
  assert.equal(alerts[0].severity, "critical");
  assert.ok(alerts[0].message.includes(`${src}/docs/report.bin`), alerts[0].message);
  // The last proven restore is still the passing sample drill.
  const still = await w.api("GET", "/api/v1/proven-restores");
  assert.equal(still.body.values[0].proven.drillRunId, scheduled.id, still.text);
  await Deno.chmod(`${src}/docs/deep`, 0o755);
});
