/**
 * Issue 21 item 1 end to end, with the real engines (the app on a loopback port, the BES and agent programs as
 * subprocesses, everything through the API): seven ordinary backups of a folder with a little churn each —
 * fulls and incrementals — are not flagged; then every file of the folder is overwritten with random bytes
 * (what ransomware does) and the next backup is flagged from the agent's own figures (files modified, new data
 * that did not compress): a critical alert names the host, the point is suspect, prune is frozen for the host
 * (retention expires nothing, the preview says why) until an operator approves the change, after which
 * retention prunes again. Small data: 120 files of 24 KiB.
 */
import assert from "node:assert/strict";
import { type Anomaly, anomalyOfRun, pruneFreezeKey } from "../../domain/anomalies.ts";
import type { Alert } from "../../domain/alerts.ts";
import { applyRetention } from "../../domain/retention_apply.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { restorePointKey } from "../../domain/keys/restore.ts";
import { type EnginesWorld, enginesWorld } from "./engines_world.ts";

const FILES = 120;
const SIZE = 24 * 1024;

/** A compressible text file (log-like lines), different per name and version. */
function textFile(name: string, version: number): Uint8Array {
  let s = "";
  for (let i = 0; s.length < SIZE; i++) s += `${name} v${version} line ${i}: status ok, 200 bytes served\n`;
  return new TextEncoder().encode(s.slice(0, SIZE));
}

async function runNow(w: EnginesWorld, policyId: string, kind: "full" | "incremental") {
  const res = await w.api("POST", `/api/v1/policies/${policyId}/run`, { kind });
  assert.equal(res.status, 201, res.text);
  const { run, output } = await w.finishedRun(res.body.runs[0].id as string, 120_000);
  assert.equal(run.status, "success", `${JSON.stringify(run.error)}\n${w.output()}`);
  return { run, output };
}

Deno.test({
  name:
    "anomaly e2e: real BES + agent: ordinary churn is not flagged; a mass encryption of the folder is — alert, suspect point, prune frozen until approved",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await enginesWorld();
  const src = `${w.tmp}/src`;
  await Deno.mkdir(`${src}/docs`, { recursive: true });
  const names = Array.from({ length: FILES }, (_, i) => `${src}/docs/file-${String(i).padStart(2, "0")}.log`);
  for (const n of names) await Deno.writeFile(n, textFile(n, 0));
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
    retentionDaily: 1,
    retentionWeekly: 0,
    retentionMonthly: 0,
  });
  assert.equal(policyRes.status, 201, policyRes.text);
  const policyId = policyRes.body.id as string;
  const { host } = await w.startAgent("agent", [src]);
  const assigned = await w.api("POST", `/api/v1/policies/${policyId}/assignments`, { hostIds: [host.id] });
  assert.equal(assigned.status, 201, assigned.text);

  // Seven ordinary backups: a full, incrementals with a file or two changed, a second full (a new chain,
  // so retention has an older chain to expire), more incrementals.
  let version = 0;
  const churn: Array<[kind: "full" | "incremental", change: () => Promise<void>]> = [
    ["full", async () => {}],
    ["incremental", async () => {
      await Deno.writeFile(names[1], textFile(names[1], ++version));
      await Deno.writeFile(`${src}/docs/new-a.log`, textFile("new-a", 0));
    }],
    ["incremental", async () => {
      await Deno.writeFile(names[2], textFile(names[2], ++version));
      await Deno.writeFile(names[3], textFile(names[3], ++version));
    }],
    ["full", async () => await Deno.writeFile(names[4], textFile(names[4], ++version))],
    ["incremental", async () => {
      await Deno.remove(`${src}/docs/new-a.log`);
      await Deno.writeFile(names[5], textFile(names[5], ++version));
    }],
    ["incremental", async () => await Deno.writeFile(names[6], textFile(names[6], ++version))],
    ["incremental", async () => {
      await Deno.writeFile(names[7], textFile(names[7], ++version));
      await Deno.writeFile(names[8], textFile(names[8], ++version));
      await Deno.writeFile(`${src}/docs/new-b.log`, textFile("new-b", 0));
    }],
  ];
  const ordinary = [];
  for (const [kind, change] of churn) {
    await change();
    ordinary.push(await runNow(w, policyId, kind));
  }
  for (const { run, output } of ordinary) {
    assert.equal(
      await anomalyOfRun(w.kv, run.id),
      null,
      `ordinary run flagged: ${JSON.stringify(run.stats)}`,
    );
    // The agent reports how much of its new data did not compress: little, for text.
    assert.equal(typeof run.stats?.bytesNewIncompressible, "number", JSON.stringify(run.stats));
    assert.ok(run.stats!.bytesNewIncompressible! <= run.stats!.bytesNew! / 10, JSON.stringify(run.stats));
    assert.equal(typeof output.bytesNewIncompressible, "number");
  }
  assert.deepEqual(
    [ordinary[2].run.stats?.added, ordinary[2].run.stats?.modified, ordinary[2].run.stats?.deleted],
    [0, 2, 0],
  );

  // Ransomware: every file of the folder rewritten with random bytes of the same size.
  for (const n of [...names, `${src}/docs/new-b.log`]) {
    const bytes = new Uint8Array(SIZE);
    crypto.getRandomValues(bytes);
    await Deno.writeFile(n, bytes);
  }
  const { run } = await runNow(w, policyId, "incremental");
  assert.equal(run.stats?.modified, FILES + 1, JSON.stringify(run.stats));
  assert.ok(run.stats!.bytesNewIncompressible! >= run.stats!.bytesNew! * 0.9, JSON.stringify(run.stats));
  const anomaly = await anomalyOfRun(w.kv, run.id) as Anomaly;
  assert.ok(anomaly, `the encrypted backup is flagged: ${JSON.stringify(run.stats)}`);
  const fired = anomaly.verdict.checks.filter((c) => c.fired).map((c) => c.signal);
  assert.ok(fired.includes("changed_files") && fired.includes("incompressible_share"), JSON.stringify(fired));

  // The critical alert names the host and the figures.
  const alertId = (await w.kv.get<string>(["alerts_open", "host", host.id, "suspicious_change"])).value!;
  const alert = (await w.kv.get<Alert>(["alerts", alertId])).value!;
  assert.equal(alert.severity, "critical");
  assert.match(alert.message, /agent\.acme\.example/);
  assert.match(alert.message, new RegExp(`${FILES + 1} files changed \\(0 added, ${FILES + 1} modified`));
  const alerts = await w.api("GET", "/api/v1/alerts?status=open");
  assert.ok(alerts.body.values.some((a: Alert) => a.reason === "suspicious_change"), alerts.text);

  // The point is suspect; the newest ordinary one is the last clean.
  const suspect = (await w.kv.get<RestorePoint>(restorePointKey(run.restorePointId!))).value!;
  assert.equal(suspect.anomaly?.mark, "suspect");
  assert.equal(anomaly.lastCleanPointId, ordinary.at(-1)!.run.restorePointId);
  const clean = (await w.kv.get<RestorePoint>(restorePointKey(anomaly.lastCleanPointId!))).value!;
  assert.equal(clean.anomaly?.mark, "last_clean");

  // Prune frozen: the first chain would expire (daily 1), but retention expires nothing of this host.
  assert.ok((await w.kv.get(pruneFreezeKey(host.id))).value);
  const preview = await w.api("GET", `/api/v1/policies/${policyId}/retention-preview`);
  const object = preview.body.objects[host.id];
  assert.deepEqual(object.expire, []);
  assert.match(object.frozen, /Prune frozen/);
  assert.ok(
    Object.values(object.reasons as Record<string, string[]>).some((r) =>
      r.includes("prune frozen (suspicious change)")
    ),
    "without the freeze retention would expire points",
  );
  assert.deepEqual(await applyRetention(w.kv, new Date()), { expired: 0, pruneJobs: 0 });
  const queue = await w.api("GET", "/api/v1/dashboard/queue?name=suspicious-changes");
  assert.deepEqual(queue.body.values.map((a: Anomaly) => a.id), [anomaly.id]);

  // The operator approves it as expected (say, an encryption the team did on purpose): prune resumes.
  const approved = await w.api("POST", `/api/v1/anomalies/${anomaly.id}/approve`, {
    confirm: true,
    note: "test",
  });
  assert.equal(approved.status, 200, approved.text);
  assert.equal((await w.kv.get(pruneFreezeKey(host.id))).value, null);
  const applied = await applyRetention(w.kv, new Date());
  assert.ok(applied.expired > 0 && applied.pruneJobs === 1, JSON.stringify(applied));
});
