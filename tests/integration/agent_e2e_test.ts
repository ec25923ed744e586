/**
 * Issue 16 item 2, the agent end to end: the real app on loopback, a BES data API registered through the
 * engine client (pinned HTTPS), a Local target and a file policy made through the API, and the agent as a
 * subprocess. Assign, run now: the agent backs up a folder (hooks in order, output captured), the run
 * succeeds with a restore point; an incremental after a change stores about the change and counts it;
 * a folder restored to another path through the restore API has the same bytes, modes and times; the
 * account recovery key opens the repository without the control plane; a missing include root is a warning
 * naming it; an incremental with a warm cache reads no tree or index from the BES. Faults (the BES, the agent
 * or the control plane stopping mid-job) are in engine_faults_test.ts, bad input in agent_bad_input_test.ts.
 */
import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { recoveryOpener } from "../../engine/repo/keys.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { listSnapshots } from "../../engine/repo/snapshot.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { cancelJob } from "../../domain/job_queue.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { restorePointKey } from "../../domain/keys/restore.ts";
import type { Run } from "../../domain/runs.ts";
import { runKey } from "../../domain/keys/runs.ts";
import { deterministicBytes } from "../engine/helpers.ts";
import { assertSameTree } from "../engine/tree_fixture.ts";
import { REPO_ROOT } from "../helpers.ts";
import { type AgentWorld, agentWorld, createPolicy as createWorldPolicy, runNow } from "./agent_world.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const text = (s: string) => new TextEncoder().encode(s);

async function writeSource(src: string) {
  await Deno.mkdir(`${src}/docs/deep`, { recursive: true });
  await Deno.mkdir(`${src}/empty`);
  await Deno.writeFile(`${src}/docs/report.bin`, deterministicBytes("report", 300_000));
  await Deno.writeFile(`${src}/docs/notes.txt`, text("notes line\n".repeat(800)));
  await Deno.writeFile(`${src}/docs/deep/old.bin`, deterministicBytes("old", 20_000));
  await Deno.writeFile(`${src}/small.txt`, text("hello"));
  await Deno.writeFile(`${src}/scratch.tmp`, deterministicBytes("tmp", 50_000));
  await Deno.chmod(`${src}/small.txt`, 0o600);
  await Deno.chmod(`${src}/docs/deep`, 0o750);
  await Deno.symlink("docs/report.bin", `${src}/link`);
  await Deno.utime(
    `${src}/docs/notes.txt`,
    new Date("2025-01-02T03:04:05Z"),
    new Date("2025-01-02T03:04:05Z"),
  );
}

/** The world's policy, with the e2e tests' exclude pattern ("*.tmp") unless `extra` says otherwise. */
function createPolicy(w: AgentWorld, name: string, extra: Record<string, unknown> = {}) {
  return createWorldPolicy(w, name, { excludePatterns: ["*.tmp"], ...extra });
}

async function addHook(w: AgentWorld, policyId: string, type: string, body: string, sequence: number) {
  const script = await w.api("POST", "/api/v1/scripts", {
    name: `${type} ${sequence}`,
    interpreter: "bash",
    body,
    orgId: w.tenant.orgs[0].id,
  });
  assert.equal(script.status, 201, script.text);
  const hook = await w.api("POST", `/api/v1/policies/${policyId}/hooks`, {
    type,
    scriptId: script.body.id,
    sequence,
    timeoutSeconds: 30,
    failOnError: true,
  });
  assert.equal(hook.status, 201, hook.text);
}

Deno.test({
  name:
    "agent e2e: enroll, back up with hooks, incremental of a change, restore a folder, recovery key opens it",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await agentWorld();
  const src = `${w.tmp}/src`;
  await writeSource(src);
  const policy = await createPolicy(w, "files");
  // The pre-backup hook runs before anything is read: the file it writes is in the backup.
  await addHook(
    w,
    policy.id,
    "pre_backup",
    `[ -f "${src}/from-hook.txt" ] || echo "written by the hook" > "${src}/from-hook.txt"\necho "pre hook says hello"`,
    1,
  );
  await addHook(w, policy.id, "post_backup", 'echo "post hook: backup $CADRES_BACKUP_STATUS"', 1);

  const agentDir = `${w.tmp}/agent`;
  const agent = w.startAgent(agentDir, ["--include-root", src]);
  const host = await w.enrolledHost(agentDir);
  assert.deepEqual(host.defaultRoots, [src], "the agent reports its default roots");
  assert.equal((await Deno.stat(`${agentDir}/agent.key`)).mode! & 0o777, 0o600);
  const assigned = await w.api("POST", `/api/v1/policies/${policy.id}/assignments`, { hostIds: [host.id] });
  assert.equal(assigned.status, 201, assigned.text);
  await sleep(2100); // files older than 2 s before a backup starts can be reused by the next incremental

  // A full backup.
  const first = await w.finishedRun((await runNow(w, policy.id, "full"))[0].id);
  assert.equal(first.run.status, "success", `${JSON.stringify(first.run.error)}\n${agent.output.join("")}`);
  const point1 = (await w.kv.get<RestorePoint>(restorePointKey(first.run.restorePointId!))).value!;
  assert.match(point1.engineRestorePointId!, /^[0-9a-f]{64}$/);
  assert.equal(point1.type, "full");
  assert.equal(point1.chainId, point1.engineRestorePointId);
  // report.bin, notes.txt, old.bin, small.txt, from-hook.txt; scratch.tmp is excluded.
  assert.equal(first.output.files, 5);
  assert.equal(point1.fileCount, 5);
  assert.equal(first.output.errorCount, 0);
  assert.equal(first.output.added, 5);
  // The control plane keeps what the agent measured with the run (shown on the run's page).
  const firstStats = (first.run as { stats?: Record<string, number> | null }).stats;
  assert.equal(firstStats?.files, 5, JSON.stringify(firstStats));
  assert.equal(firstStats?.added, 5);
  assert.ok((firstStats?.bytesStored ?? 0) > 0 && (firstStats?.bytesRead ?? 0) >= 300_000);
  assert.equal(first.run.protectedBytes, 300_000 + 8800 + 20_000 + 5 + "written by the hook\n".length);
  assert.ok(first.run.bytesTransferred > 0 && first.run.bytesTransferred < 400_000);
  assert.deepEqual(first.run.hookOutput!.map((h) => h.type), ["pre_backup", "post_backup"]);
  assert.match(first.run.hookOutput![0].output, /pre hook says hello/);
  assert.match(first.run.hookOutput![1].output, /post hook: backup success/);
  const repository = first.output.repository as { path: string; created: boolean; recoveryKey: string };
  assert.equal(repository.created, true);
  assert.equal(repository.recoveryKey, "written");

  // The account recovery key opens the repository without the control plane.
  const storage = new LocalBackend(`${w.targetRoot}/${repository.path}`);
  const byRecovery = await Repository.open(storage, recoveryOpener(w.recovery!.privatePem));
  assert.deepEqual(byRecovery.namespaces(), [host.id]);
  const offline = `${w.tmp}/offline-restore`;
  const r0 = await restoreSnapshot(byRecovery.namespace(host.id), point1.engineRestorePointId!, {
    target: offline,
    include: [`${src}/docs`],
  });
  assert.deepEqual(r0.errors, []);
  await assertSameTree(`${src}/docs`, `${offline}${src}/docs`);

  // An incremental after a change: one file modified, one added, one deleted.
  await Deno.writeFile(`${src}/docs/notes.txt`, text("a changed line\n"), { append: true });
  await Deno.utime(
    `${src}/docs/notes.txt`,
    new Date("2025-02-03T04:05:06Z"),
    new Date("2025-02-03T04:05:06Z"),
  );
  await Deno.writeFile(`${src}/docs/new.bin`, deterministicBytes("new", 7000));
  await Deno.remove(`${src}/docs/deep/old.bin`);
  const second = await w.finishedRun((await runNow(w, policy.id, "incremental"))[0].id);
  assert.equal(second.run.status, "success", `${JSON.stringify(second.run.error)}\n${agent.output.join("")}`);
  const point2 = (await w.kv.get<RestorePoint>(restorePointKey(second.run.restorePointId!))).value!;
  assert.equal(point2.type, "incremental");
  assert.equal(point2.parentId, point1.engineRestorePointId);
  assert.equal(point2.chainId, point1.chainId);
  assert.deepEqual(
    [second.output.added, second.output.modified, second.output.deleted],
    [1, 1, 1],
    JSON.stringify(second.output),
  );
  // It stores about the change: the new file and the changed one, not the 300 kB report again.
  assert.ok(Number(second.output.bytesNew) <= 7000 + 8800 + 15, `bytesNew ${second.output.bytesNew}`);
  assert.ok(Number(second.output.bytesStored) < 40_000, `bytesStored ${second.output.bytesStored}`);
  assert.ok(Number(second.output.reusedFiles) >= 2, `reusedFiles ${second.output.reusedFiles}`);
  assert.equal(storage.root, `${w.targetRoot}/${repository.path}`);
  assert.equal((await listSnapshots(storage)).length, 2);

  // Restore the folder to another path through the restore API.
  const restoreDir = `${w.tmp}/restored`;
  const restore = await w.api("POST", "/api/v1/restores", {
    restorePointId: point2.id,
    paths: [`${src}/docs`],
    targetPath: restoreDir,
    overwrite: false,
  });
  assert.equal(restore.status, 201, restore.text);
  const done = await w.finishedRestore(restore.body.id) as { status: string; result: { files: number } };
  assert.equal(done.status, "success", `${JSON.stringify(done)}\n${agent.output.join("")}`);
  assert.equal(done.result.files, 3);
  await assertSameTree(`${src}/docs`, `${restoreDir}${src}/docs`);
  // Nothing outside the selected folder was written.
  assert.deepEqual(
    (await Array.fromAsync(Deno.readDir(`${restoreDir}${src}`))).map((e) => e.name),
    ["docs"],
  );

  // Restoring again without overwrite leaves every existing file alone and names each one.
  await Deno.mkdir(`${restoreDir}${src}`, { recursive: true });
  await Deno.writeFile(`${restoreDir}${src}/small.txt`, text("local edit"));
  const again = await w.api("POST", "/api/v1/restores", {
    restorePointId: point2.id,
    paths: [`${src}/small.txt`, `${src}/missing.txt`],
    targetPath: restoreDir,
    overwrite: false,
  });
  assert.equal(again.status, 201, again.text);
  const refused = await w.finishedRestore(again.body.id) as {
    status: string;
    result: { errors: { path: string; message: string }[] };
  };
  assert.equal(refused.status, "failed");
  const messages = refused.result.errors.map((e) => `${e.path}: ${e.message}`).join("\n");
  assert.match(messages, /small\.txt: .*exists/);
  assert.match(messages, /missing\.txt: not in this restore point/);
  assert.equal(await Deno.readTextFile(`${restoreDir}${src}/small.txt`), "local edit");

  // No key appears in the agent's output, the control plane's log or the agent's data folder.
  const keys = byRecovery.namespace(host.id).keys;
  const needles = [keys.dataKey, keys.idKey].flatMap((k) => [
    k.toBase64(),
    k.toBase64({ omitPadding: true }),
    k.toBase64({ alphabet: "base64url", omitPadding: true }),
    Array.from(k, (b) => b.toString(16).padStart(2, "0")).join(""),
  ]);
  const haystacks = [agent.output.join(""), w.logs.join("\n")];
  for await (const e of Deno.readDir(agentDir)) {
    if (e.isFile) haystacks.push(await Deno.readTextFile(`${agentDir}/${e.name}`));
  }
  for (const hay of haystacks) for (const n of needles) assert.ok(!hay.includes(n), "a namespace key leaked");
});

Deno.test({
  name:
    "agent e2e: a missing default root warns, a restore of 300 paths fetches them in chunks, pre-patch --wait",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await agentWorld({ recoveryKey: false });
  const src = `${w.tmp}/src`;
  await writeSource(src);
  // Enough files that a restore of all of them sends its path list in chunks.
  await Deno.mkdir(`${src}/many`);
  const many = Array.from(
    { length: 300 },
    (_, i) => `${src}/many/file-${String(i).padStart(4, "0")}-${"x".repeat(40)}.txt`,
  );
  for (const [i, f] of many.entries()) await Deno.writeFile(f, text(`file ${i}\n`));
  const policy = await createPolicy(w, "files", { prePatchBackup: true });
  const agentDir = `${w.tmp}/agent`;
  const missing = `${w.tmp}/not-there`;
  const agent = w.startAgent(agentDir, ["--include-root", src, "--include-root", missing]);
  const host = await w.enrolledHost(agentDir);
  assert.equal(
    (await w.api("POST", `/api/v1/policies/${policy.id}/assignments`, { hostIds: [host.id] })).status,
    201,
  );

  const up = await w.finishedRun((await runNow(w, policy.id, "full"))[0].id);
  assert.equal(up.run.status, "warning", `${JSON.stringify(up.run.error)}\n${agent.output.join("")}`);
  assert.equal(up.run.error?.reason, "INCLUDE_PATHS_MISSING");
  assert.ok(up.run.error!.message.includes(missing), up.run.error!.message);
  assert.ok(up.run.restorePointId, "the paths that exist are backed up");
  assert.equal(up.output.files, 304);
  assert.equal((up.output.repository as { recoveryKey: string }).recoveryKey, "none");

  // A file restore of 300 paths: the job carries no inline list, the agent fetches it in chunks.
  const restoreDir = `${w.tmp}/restored`;
  const restore = await w.api("POST", "/api/v1/restores", {
    restorePointId: up.run.restorePointId,
    paths: many,
    targetPath: restoreDir,
    overwrite: false,
  });
  assert.equal(restore.status, 201, restore.text);
  const job = (await w.kv.get<{ payload: Record<string, unknown> }>(["jobs", restore.body.jobId])).value!;
  assert.equal(job.payload.paths, null);
  assert.ok(Number(job.payload.pathChunks) > 1);
  const done = await w.finishedRestore(restore.body.id) as { status: string; result: { files: number } };
  assert.equal(done.status, "success", `${JSON.stringify(done)}\n${agent.output.join("")}`);
  assert.equal(done.result.files, 300);
  await assertSameTree(`${src}/many`, `${restoreDir}${src}/many`);

  // `agent pre-patch --wait`: asks for the pre-patch backup (signed with the agent's key, no secret) and
  // waits until the running agent has made it.
  const prePatch = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      `--config=${REPO_ROOT}deno.json`,
      `${REPO_ROOT}engine/agent/main.ts`,
      "pre-patch",
      "--control-plane",
      w.baseUrl,
      "--data",
      agentDir,
      "--reason",
      "kernel update",
      "--wait",
      "--timeout",
      "60",
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const said = new TextDecoder().decode(prePatch.stdout) + new TextDecoder().decode(prePatch.stderr);
  assert.equal(prePatch.code, 0, said);
  assert.match(said, /Pre-patch backups queued: policy .* \(job [0-9A-Z]{26}\)/);
  assert.match(said, /job [0-9A-Z]{26}: warning/); // the missing root still warns
});

Deno.test({
  name:
    "agent e2e: image backups (full, incremental) and an image restore; a cancelled backup stops, no point",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await agentWorld();
  const disk = `${w.tmp}/disk.img`;
  const chunk = 4 * 1024 * 1024;
  const image = new Uint8Array(3 * chunk);
  image.set(deterministicBytes("disk-a", 100_000), 0); // chunk 0: data; chunk 1: zeros; chunk 2: data
  image.set(deterministicBytes("disk-c", 100_000), 2 * chunk + 5000);
  await Deno.writeFile(disk, image);
  const agentDir = `${w.tmp}/agent`;
  const agent = w.startAgent(agentDir, ["--include-root", disk]);
  const host = await w.enrolledHost(agentDir);
  const imagePolicy = await createPolicy(w, "disk", { backupType: "image", excludePatterns: [] });
  const slowPolicy = await createPolicy(w, "disk slow", {
    backupType: "image",
    excludePatterns: [],
    maxTransferMbps: 1,
  });
  for (const p of [imagePolicy, slowPolicy]) {
    assert.equal(
      (await w.api("POST", `/api/v1/policies/${p.id}/assignments`, { hostIds: [host.id] })).status,
      201,
    );
  }

  const full = await w.finishedRun((await runNow(w, imagePolicy.id, "full"))[0].id);
  assert.equal(full.run.status, "success", `${JSON.stringify(full.run.error)}\n${agent.output.join("")}`);
  assert.equal(full.output.totalBytes, image.length);
  // One block changes: the incremental stores about one chunk.
  image.set(deterministicBytes("disk-a2", 10_000), 0);
  await Deno.writeFile(disk, image);
  const incr = await w.finishedRun((await runNow(w, imagePolicy.id, "incremental"))[0].id);
  assert.equal(incr.run.status, "success", JSON.stringify(incr.run.error));
  const point = (await w.kv.get<RestorePoint>(restorePointKey(incr.run.restorePointId!))).value!;
  assert.equal(point.type, "incremental");
  assert.ok(Number(incr.output.bytesNew) <= chunk, `bytesNew ${incr.output.bytesNew}`);
  assert.equal(incr.output.modified, 1);

  const restored = `${w.tmp}/restored.img`;
  const res = await w.api("POST", "/api/v1/restores/image", {
    restorePointId: point.id,
    targetHostId: host.id,
    targetPath: restored,
    overwrite: false,
  });
  assert.equal(res.status, 201, res.text);
  const done = await w.finishedRestore(res.body.id) as { status: string };
  assert.equal(done.status, "success", `${JSON.stringify(done)}\n${agent.output.join("")}`);
  assert.deepEqual(await Deno.readFile(restored), image);

  // Cancelled while it reads (1 MBps over 12 MiB): the worker stops, the run fails CANCELLED, no snapshot.
  const storage = new LocalBackend(`${w.targetRoot}/cadres/${slowPolicy.id}/g1`);
  const runId = (await runNow(w, slowPolicy.id, "full"))[0].id;
  const run = (await w.kv.get<Run>(runKey(runId))).value!;
  await waitForProgress(w, run.jobId!);
  await cancelJob(w.kv, run.jobId!, new Date());
  const cancelled = await w.finishedRun(runId, 60_000);
  assert.equal(cancelled.run.status, "failed");
  assert.equal(cancelled.run.error?.reason, "CANCELLED", JSON.stringify(cancelled.run.error));
  assert.equal(cancelled.run.restorePointId, null);
  assert.deepEqual(await Array.fromAsync(storage.list("snapshots/")), []);
});

Deno.test({
  name:
    "agent e2e: an incremental with a warm cache reads no tree blob and no index segment from the BES; a cold one does",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await agentWorld({ recoveryKey: false });
  const src = `${w.tmp}/src`;
  await writeSource(src);
  for (let d = 0; d < 30; d++) {
    await Deno.mkdir(`${src}/tree/d${d}`, { recursive: true });
    await Deno.writeFile(`${src}/tree/d${d}/f.txt`, text(`folder ${d}`));
  }
  const policy = await createPolicy(w, "files");
  const agentDir = `${w.tmp}/agent`;
  const agent = w.startAgent(agentDir, ["--include-root", src]);
  const host = await w.enrolledHost(agentDir);
  assert.equal(
    (await w.api("POST", `/api/v1/policies/${policy.id}/assignments`, { hostIds: [host.id] })).status,
    201,
  );
  const full = await w.finishedRun((await runNow(w, policy.id, "full"))[0].id);
  assert.equal(full.run.status, "success", `${JSON.stringify(full.run.error)}\n${agent.output.join("")}`);

  /** Runs an incremental after a change; returns it with the reads of trees/index it made at the BES. */
  let n = 0;
  const incremental = async () => {
    await Deno.writeFile(`${src}/tree/d${n++}/f.txt`, text(`changed ${n}`));
    const mark = w.dataRequests.length;
    const run = await w.finishedRun((await runNow(w, policy.id, "incremental"))[0].id);
    assert.equal(run.run.status, "success", `${JSON.stringify(run.run.error)}\n${agent.output.join("")}`);
    assert.equal(run.output.added, 0);
    assert.equal(run.output.modified, 1);
    // An incremental reads no file content from the BES: every GET of a pack range is a tree blob.
    const reads = w.dataRequests.slice(mark).filter((r) =>
      r.method === "GET" && /^\/api\/data\/v1\/objects\/(index|data)\//.test(r.path)
    );
    return { run, reads, cache: run.output.cache as { hits: number; misses: number; added: number } };
  };
  const warm = await incremental();
  assert.deepEqual(warm.reads, [], "the trees and index came from the agent's cache");
  assert.ok(warm.cache.hits > 30, JSON.stringify(warm.cache));

  // Without the cache (lost, or a new data folder), the same incremental reads them from the BES…
  await Deno.remove(`${agentDir}/cache`, { recursive: true });
  const cold = await incremental();
  assert.ok(cold.reads.some((r) => r.path.includes("/objects/index/")), JSON.stringify(cold.reads));
  assert.ok(cold.reads.filter((r) => r.path.includes("/objects/data/") && r.range).length >= 30);
  // …and keeps them: the next one reads none again.
  const again = await incremental();
  assert.deepEqual(again.reads, []);
  assert.ok((await Array.fromAsync(Deno.readDir(`${agentDir}/cache/trees`))).length >= 30);
  assert.equal((await Deno.stat(`${agentDir}/cache`)).mode! & 0o777, 0o700);
});

/** Waits until the job reported progress past its start (the worker is reading). */
async function waitForProgress(w: AgentWorld, jobId: string) {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const job = (await w.kv.get<{ progress?: { bytesTransferred: number } }>(["jobs", jobId])).value;
    if ((job?.progress?.bytesTransferred ?? 0) > 0) return;
    if (Date.now() > deadline) throw new Error(`job ${jobId} reported no progress`);
    await sleep(100);
  }
}
