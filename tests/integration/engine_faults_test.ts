/**
 * Issue 16, faults, with the real app on loopback, a BES data API over pinned HTTPS and the agent as a
 * subprocess (agent_world.ts):
 *
 * - the BES down before a backup, or killed in the middle of one: the run fails with a clear reason naming the
 *   BES, leaves no snapshot, and the next run (a new BES process) succeeds and restores byte-identical;
 * - the agent killed (SIGKILL) in the middle of a restore: its worker stops with it, the job's lease runs out
 *   and the lease rules retry it, and the retry completes with the right bytes over what the killed attempt
 *   left; killed on its last attempt, the restore fails (LEASE_EXPIRED) and the operator's new restore
 *   completes;
 * - the control plane restarted (same KV file, same port) in the middle of a backup: the agent keeps going,
 *   its progress and result reach the new process, the job completes within its lease.
 *
 * Time: the lease is 5 minutes (domain/job_queue.ts LEASE_MS, no knob); its expiry is the minute sweep
 * (`expireLeases`) run as it would run once the lease has passed, with a `now` past it. Slow jobs are made
 * with the policy's transfer cap or a data API hook delaying reads, so the faults land mid-job.
 */
import assert from "node:assert/strict";
import { expireLeases, getJob, type Job, jobKey, LEASE_MS } from "../../domain/job_queue.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { restorePointKey } from "../../domain/keys/restore.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { deterministicBytes } from "../engine/helpers.ts";
import { assertSameTree } from "../engine/tree_fixture.ts";
import { type AgentWorld, agentWorld, assignHosts, createPolicy, runNow, waitFor } from "./agent_world.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until job `jobId` (attempt `attempt`) reported moving bytes: it is in the middle of its work. */
async function midJob(w: AgentWorld, jobId: string, attempt = 1) {
  await waitFor(`job ${jobId} to move bytes`, async () => {
    const job = (await w.kv.get<Job>(jobKey(jobId))).value;
    return job?.status === "leased" && job.attempts === attempt && (job.progress?.bytesTransferred ?? 0) > 0;
  }, 60_000);
}

/** Writes `count` incompressible files of `size` bytes under `dir`. */
async function writeFiles(dir: string, count: number, size: number) {
  await Deno.mkdir(dir, { recursive: true });
  for (let i = 0; i < count; i++) {
    await Deno.writeFile(
      `${dir}/file-${String(i).padStart(3, "0")}.bin`,
      deterministicBytes(`${dir}${i}`, size),
    );
  }
}

async function setUp(w: AgentWorld, src: string, policyExtra: Record<string, unknown> = {}) {
  const policy = await createPolicy(w, "files", { includePaths: [src], ...policyExtra });
  const agentDir = `${w.tmp}/agent`;
  const agent = w.startAgent(agentDir, ["--include-root", src]);
  const host = await w.enrolledHost(agentDir);
  await assignHosts(w, policy.id, [host.id]);
  return { policy, agentDir, agent, host };
}

Deno.test({
  name:
    "faults: the BES down, or killed mid-backup, fails the run with ENGINE_OFFLINE naming the BES, no snapshot; the next run succeeds",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await agentWorld({ recoveryKey: false });
  const src = `${w.tmp}/src`;
  await writeFiles(src, 4, 1_000_000);
  // 2 MB/s over 4 MB: the backup reads for about two seconds, then uploads its pack.
  const { policy, agent } = await setUp(w, src, { maxTransferMbps: 2 });

  // Down before the run: the run fails at once, naming the BES.
  await w.stopDataApi();
  const before = await w.finishedRun((await runNow(w, policy.id))[0].id);
  assert.equal(before.run.status, "failed");
  assert.equal(before.run.error?.reason, "ENGINE_OFFLINE", JSON.stringify(before.run.error));
  assert.match(before.run.error!.message, /the BES at https:\/\/127\.0\.0\.1:\d+/);
  assert.equal(before.run.restorePointId, null);
  w.startDataApi();

  // Killed in the middle of the backup.
  const started = Date.now();
  const [first] = await runNow(w, policy.id);
  await midJob(w, first.jobId);
  await w.stopDataApi();
  const down = await w.finishedRun(first.id);
  assert.equal(down.run.status, "failed");
  assert.equal(down.run.error?.reason, "ENGINE_OFFLINE", JSON.stringify(down.run.error));
  assert.match(
    down.run.error!.message,
    /at the BES at https:\/\/127\.0\.0\.1:\d+: failed: .*\(after 5 attempts\)/,
  );
  assert.equal(down.run.restorePointId, null);
  assert.ok(Date.now() - started < 60_000, "it failed within seconds, not at the lease's end");
  const storage = new LocalBackend(`${w.targetRoot}/cadres/${policy.id}/g1`);
  assert.deepEqual(await Array.fromAsync(storage.list("snapshots/")), [], "no snapshot of the failed run");

  // A new BES process (no writer lock held in memory): the next run succeeds, and restores byte-identical.
  w.startDataApi({ fresh: true });
  const [next] = await runNow(w, policy.id);
  const up = await w.finishedRun(next.id);
  assert.equal(up.run.status, "success", `${JSON.stringify(up.run.error)}\n${agent.output.join("")}`);
  assert.equal((await Array.fromAsync(storage.list("snapshots/"))).length, 1);
  const restoreDir = `${w.tmp}/restored`;
  const restore = await w.api("POST", "/api/v1/restores", {
    restorePointId: up.run.restorePointId,
    paths: [src],
    targetPath: restoreDir,
    overwrite: false,
  });
  assert.equal(restore.status, 201, restore.text);
  const done = await w.finishedRestore(restore.body.id) as { status: string };
  assert.equal(done.status, "success", JSON.stringify(done));
  await assertSameTree(src, `${restoreDir}${src}`);
});

Deno.test({
  name:
    "faults: the agent killed mid-restore — the lease runs out, the retry completes with the right bytes; killed on its last attempt the restore fails and a new one completes",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await agentWorld({ recoveryKey: false });
  const src = `${w.tmp}/src`;
  await writeFiles(src, 24, 200_000);
  const set = await setUp(w, src);
  let agent = set.agent;
  const backup = await w.finishedRun((await runNow(w, set.policy.id))[0].id);
  assert.equal(backup.run.status, "success", `${JSON.stringify(backup.run.error)}\n${agent.output.join("")}`);
  const point = (await w.kv.get<RestorePoint>(restorePointKey(backup.run.restorePointId!))).value!;
  // The BES answers each read of file content after 400 ms: a restore of 24 files takes a few seconds.
  w.setDataFault(async (req) => {
    if (
      req.method === "GET" && req.headers.get("range") && new URL(req.url).pathname.includes("/objects/data/")
    ) {
      await sleep(400);
    }
    return null;
  });

  const listing = async (dir: string) => {
    const names = (await Array.fromAsync(Deno.readDir(`${dir}${src}`)).catch(() => [])).map((e) => e.name);
    return {
      files: names.filter((n) => n.startsWith("file-")).length,
      temps: names.filter((n) => n.startsWith(".cadres-restore-")).length,
    };
  };
  /**
   * Kills the agent in the middle of attempt `attempt` of `jobId` — some files restored, others being
   * written — and checks that its worker stopped with it.
   */
  const killMidRestore = async (jobId: string, attempt: number, dir: string) => {
    await midJob(w, jobId, attempt);
    await waitFor("two files restored", async () => (await listing(dir)).files >= 2);
    await agent.stop("SIGKILL");
    const left = await listing(dir);
    assert.ok(left.files < 24, `killed mid-restore (${left.files} of 24 files written)`);
    assert.ok(left.temps > 0, "files were being written when it was killed");
    // The worker noticed its agent is gone and stopped: the BES hears nothing more from it.
    await sleep(1500);
    const heard = w.dataRequests.length;
    await sleep(1500);
    assert.equal(w.dataRequests.length, heard, "the killed agent's worker went on talking to the BES");
  };
  /** The minute sweep, run once the lease has passed. */
  const leaseRunsOut = () => expireLeases(w.kv, new Date(Date.now() + LEASE_MS + 1000));

  // 1. Killed in attempt 1: the lease runs out, the job is queued again (attempt 1 used), the restore waits.
  const dirA = `${w.tmp}/restored-a`;
  const a = await w.api("POST", "/api/v1/restores", {
    restorePointId: point.id,
    paths: [src],
    targetPath: dirA,
    overwrite: false,
  });
  assert.equal(a.status, 201, a.text);
  await killMidRestore(a.body.jobId, 1, dirA);
  assert.deepEqual(await leaseRunsOut(), { requeued: 1, failed: 0, failedIds: [] });
  const queued = (await getJob(w.kv, a.body.jobId))!;
  assert.deepEqual([queued.status, queued.attempts], ["queued", 1]);
  assert.equal((await w.api("GET", `/api/v1/restores/${a.body.id}`)).body.status, "pending");
  // The agent comes back: attempt 2 completes over what attempt 1 left (files it finished count as restored,
  // its half-written temporary file is removed), every byte right.
  agent = w.startAgent(set.agentDir, ["--include-root", src]);
  const doneA = await w.finishedRestore(a.body.id) as {
    status: string;
    result: { files: number; errorCount: number };
  };
  assert.equal(doneA.status, "success", `${JSON.stringify(doneA)}\n${agent.output.join("")}`);
  assert.deepEqual([doneA.result.files, doneA.result.errorCount], [24, 0]);
  assert.equal((await getJob(w.kv, a.body.jobId))!.attempts, 2);
  await assertSameTree(src, `${dirA}${src}`);
  assert.equal((await listing(dirA)).temps, 0, "the killed attempt's temporary files are gone");

  // 2. Killed on its last attempt: the lease runs out and the restore fails, saying why.
  const dirB = `${w.tmp}/restored-b`;
  const b = await w.api("POST", "/api/v1/restores", {
    restorePointId: point.id,
    paths: [src],
    targetPath: dirB,
    overwrite: false,
  });
  assert.equal(b.status, 201, b.text);
  await killMidRestore(b.body.jobId, 1, dirB);
  // (Its last attempt: as if the earlier ones had run out too.)
  const entry = await w.kv.get<Job>(jobKey(b.body.jobId));
  await w.kv.set(jobKey(b.body.jobId), { ...entry.value!, maxAttempts: 1 });
  assert.deepEqual(await leaseRunsOut(), { requeued: 0, failed: 1, failedIds: [b.body.jobId] });
  const failedB = (await w.api("GET", `/api/v1/restores/${b.body.id}`)).body;
  assert.equal(failedB.status, "failed");
  assert.match(failedB.error, /stopped answering and the job used all its attempts/);
  // The operator restores again to the same folder (without overwrite): it completes, every byte right.
  agent = w.startAgent(set.agentDir, ["--include-root", src]);
  const c = await w.api("POST", "/api/v1/restores", {
    restorePointId: point.id,
    paths: [src],
    targetPath: dirB,
    overwrite: false,
  });
  assert.equal(c.status, 201, c.text);
  const doneC = await w.finishedRestore(c.body.id) as { status: string; result: { files: number } };
  assert.equal(doneC.status, "success", `${JSON.stringify(doneC)}\n${agent.output.join("")}`);
  assert.equal(doneC.result.files, 24);
  await assertSameTree(src, `${dirB}${src}`);
  assert.equal((await listing(dirB)).temps, 0);
});

Deno.test({
  name:
    "faults: the control plane restarted mid-backup (same KV, same port) — progress and the result reach the new process; the job completes in its lease",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await agentWorld({ recoveryKey: false, kvFile: true });
  const src = `${w.tmp}/src`;
  // 10 MB at 2 MB/s: the backup reads for about five seconds, so the outage lands mid-backup however soon
  // the uploads end (with 4 MB, a fast upload path finished before the first progress report met the outage).
  await writeFiles(src, 10, 1_000_000);
  const { policy, agent } = await setUp(w, src, { maxTransferMbps: 2 });
  const [first] = await runNow(w, policy.id);
  await midJob(w, first.jobId);
  // Down for 5 s, longer than the rest of the backup: its last progress reports and its result meet a
  // control plane that is not there, and are retried.
  await w.restartControlPlane(5000);
  const run = await w.finishedRun(first.id);
  assert.equal(run.run.status, "success", `${JSON.stringify(run.run.error)}\n${agent.output.join("")}`);
  assert.ok(run.run.restorePointId);
  const job = (await getJob(w.kv, first.jobId))!;
  assert.equal(job.attempts, 1, "completed in its first lease, not retried");
  assert.match(agent.output.join(""), /progress not reported: .*unreachable/);
  // The new process serves the agent as the old one did: an incremental after it succeeds too.
  await Deno.writeFile(`${src}/new.txt`, new TextEncoder().encode("after the restart"));
  const next = await w.finishedRun((await runNow(w, policy.id, "incremental"))[0].id);
  assert.equal(next.run.status, "success", JSON.stringify(next.run.error));
  assert.equal(next.output.added, 1);
});
