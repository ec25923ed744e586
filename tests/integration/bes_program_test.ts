/**
 * The BES program end to end: the real app on a loopback port (in-memory KV) and `engine/bes/main.ts` as
 * a subprocess. It registers (signed, key kept 0600 in its data folder), goes online with measured
 * metrics, reports the capacity of a Local target, registers again with the same id after a restart, runs
 * the verify jobs of restore points (reading back samples with the keys of the control plane's key
 * endpoint) and the prune job the control plane's retention issues against a repository made with
 * engine/repo under the namespace keys the control plane handed out for the backups, finds a damaged pack in
 * a target-wide verify, fails the jobs of targets it cannot reach with TARGET_UNREACHABLE, and answers
 * browse and search through the real control plane, long listings uploaded in parts.
 */
import assert from "node:assert/strict";
import { type Engine, engineKey } from "../../domain/engines.ts";
import { enqueueJob, getJob, type Job } from "../../domain/job_queue.ts";
import { createPolicy } from "../../domain/policies.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import { applyRetention } from "../../domain/retention_apply.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { applyResult, claimJobs } from "../../domain/job_queue.ts";
import { createTarget, getTarget, requestStorageCheck } from "../../domain/storage.ts";
import { assignHost } from "../../domain/assignments.ts";
import { enrollHost } from "../../domain/hosts.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { type NamespaceKeys, namespaceKeysOpener } from "../../engine/repo/keys.ts";
import { deliverJobKeys } from "../../domain/namespace_keys.ts";
import { getBrowse, getSearch, requestBrowse, requestSearch } from "../../domain/restore_browse.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { createReplica } from "../../domain/replicas.ts";
import { fileSystemUsage } from "../../engine/bes/metrics.ts";
import { deterministicBytes } from "../engine/helpers.ts";
import { auditEntries, freePort, targetInput, TestClock } from "../helpers.ts";
import {
  config,
  controlPlane,
  engineNamed,
  finished,
  onlineBes,
  SMALL,
  spawnBes,
  system,
  waitFor,
} from "./bes_world.ts";

/** Asks for a browse of `path` in restore point `pointId` and waits (30 s) until it is no longer pending. */
async function browsed(
  kv: Deno.Kv,
  bes: { exited: boolean; output: string },
  pointId: string,
  path: string,
  what: string,
) {
  await requestBrowse(kv, system, pointId, path, new Date());
  return await waitFor(
    what,
    async () => {
      const state = await getBrowse(kv, system, pointId, path, new Date());
      return state && state.status !== "pending" ? state : null;
    },
    30_000,
    bes,
  );
}

/** Starts a search for `pattern` in restore point `pointId` and waits (30 s) until it is no longer pending. */
async function searched(
  kv: Deno.Kv,
  bes: { exited: boolean; output: string },
  pointId: string,
  pattern: string,
  what: string,
) {
  const search = await requestSearch(kv, system, pointId, pattern, new Date());
  return await waitFor(
    what,
    async () => {
      const state = await getSearch(kv, system, search.id, new Date());
      return state.status !== "pending" ? state : null;
    },
    30_000,
    bes,
  );
}

Deno.test({
  name:
    "BES subprocess: registers with its key (0600), goes online with measured metrics, reports a Local target's capacity, registers again with the same id",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using cp = await controlPlane();
    const data = `${cp.dir}/bes`;
    let bes = spawnBes(cp.url, cp.tenant.secrets[0], data);
    try {
      const engine = await waitFor(
        "the BES to go online",
        async () => {
          const e = await engineNamed(cp.kv, "bes-e2e");
          return e?.status === "online" && e.metrics ? e : null;
        },
        30_000,
        bes,
      );
      // Identity in the data folder.
      assert.equal((await Deno.stat(`${data}/bes.key`)).mode! & 0o777, 0o600);
      assert.equal((await Deno.stat(data)).mode! & 0o777, 0o700);
      const identity = JSON.parse(await Deno.readTextFile(`${data}/identity.json`));
      assert.equal(identity.id, engine.id);
      assert.equal(identity.publicKey, engine.publicKey);
      assert.equal(identity.registration.heartbeatIntervalSeconds, 60);
      assert.ok(!(await Deno.readTextFile(`${data}/identity.json`)).includes(cp.tenant.secrets[0]));
      // Measured metrics: memory as the system reports it, disk of the data folder's file system.
      const m = engine.metrics!;
      const mem = Deno.systemMemoryInfo();
      assert.ok(
        Math.abs(m.memoryPercent - ((mem.total - mem.available) / mem.total) * 100) < 15,
        `${m.memoryPercent}`,
      );
      const fs = await fileSystemUsage(data);
      assert.ok(Math.abs(m.diskPercent - (fs.usedBytes / (fs.usedBytes + fs.freeBytes)) * 100) < 2);
      assert.ok(m.cpuPercent >= 0 && m.cpuPercent <= 100);
      assert.ok(m.uptimeSeconds >= 0 && m.uptimeSeconds < 120);
      assert.equal(m.activeJobs, 0);

      // A Local target created on it: the next heartbeats carry its file system's capacity.
      const targetDir = `${cp.dir}/target`;
      await Deno.mkdir(targetDir);
      const target = await createTarget(
        cp.kv,
        system,
        targetInput(engine.id, "local", { config: { path: targetDir } }),
        {
          now: new Date(),
          masterKey: config.masterKey!,
        },
      );
      const reported = await waitFor(
        "the target's capacity",
        async () => (await getTarget(cp.kv, target.id))?.capacity,
      );
      const expected = await fileSystemUsage(targetDir);
      assert.equal(reported.totalBytes, expected.totalBytes);
      assert.ok(Math.abs(reported.freeBytes - expected.freeBytes) < 64 * 1024 * 1024);

      // A credentialed S3 target: the BES gets its secret (audited), and never logs it.
      const secret = "S3-SECRET-never-logged-8c1f";
      const s3 = await createTarget(cp.kv, system, {
        ...targetInput(engine.id, "s3_compatible", {
          config: { endpoint: `http://127.0.0.1:${freePort()}`, bucket: "backups", region: "us-east-1" },
        }),
        credentials: { username: "AKIATEST", secret, credentialType: "access_key" },
      }, { now: new Date(), masterKey: config.masterKey! });
      await waitFor(
        "the BES to fetch the S3 target",
        () => Promise.resolve(bes.output.includes(s3.id)),
        30_000,
        bes,
      );
      await waitFor(
        "the S3 capacity attempt",
        () => Promise.resolve(bes.output.includes("capacity not reported")),
        30_000,
        bes,
      );
      const deliveries = (await auditEntries(cp.kv, cp.scope.accountId)).filter((a) =>
        a.action === "storage_target.credentials_delivered"
      );
      assert.ok(deliveries.length >= 1);
      assert.ok(deliveries.every((a) => !a.summary.includes(secret)));
      assert.ok(!bes.output.includes(secret), "the credential is never in the BES's log");
      assert.ok(!cp.logs.join("\n").includes(secret), "nor in the control plane's");

      // Restart: the same key registers again — same id, one engine.
      assert.equal((await bes.stop()).code, 0);
      bes = spawnBes(cp.url, cp.tenant.secrets[0], data);
      await waitFor("the second registration", async () => {
        const again = JSON.parse(await Deno.readTextFile(`${data}/identity.json`));
        return again.lastRegisteredAt !== identity.lastRegisteredAt ? again : null;
      });
      const after = JSON.parse(await Deno.readTextFile(`${data}/identity.json`));
      assert.equal(after.id, engine.id);
      assert.equal(after.firstRegisteredAt, identity.firstRegisteredAt);
      const engines = await Array.fromAsync(cp.kv.list<Engine>({ prefix: ["engines"] }));
      assert.equal(engines.length, 1);
      assert.ok(!bes.output.includes(cp.tenant.secrets[0]), "the secret is never logged");
    } finally {
      const status = await bes.stop();
      if (status.code !== 0 || Deno.env.get("DEBUG_BES")) console.error(bes.output);
    }
  },
});

/** Files of the backed-up folder's `many/` subfolder: more than a browse answer used to hold (500). */
const MANY = 1200;

/**
 * A Local target on `engine`, a policy on it (daily fulls, two days kept, verify after backup with
 * `sampleCount`), a host assigned, and four daily backups done as the agent does them (the agent itself is
 * another program): each claims the agent's backup job, takes the namespace's keys from the control plane's
 * key endpoint (the first creates them), writes with engine/repo into the repository the payload names, and
 * reports the restore point. Returns the verify jobs queued and the namespace keys of the host.
 */
async function backedUpPolicy(
  cp: Awaited<ReturnType<typeof controlPlane>>,
  engine: Engine,
  sampleCount: number,
  beforeBackups: (policy: { id: string }) => Promise<void> = () => Promise.resolve(),
) {
  const clock = new TestClock();
  const targetDir = `${cp.dir}/target`;
  await Deno.mkdir(targetDir);
  const target = await createTarget(
    cp.kv,
    system,
    targetInput(engine.id, "local", { config: { path: targetDir } }),
    {
      now: clock.now(),
      masterKey: config.masterKey!,
    },
  );
  const policy = await createPolicy(cp.kv, system, {
    name: "daily",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * *",
    retentionDaily: 2,
    retentionWeekly: 0,
    retentionMonthly: 0,
    verifyAfterBackup: true,
    verifySampleCount: sampleCount,
  }, clock.now());
  const { host } = await enrollHost(cp.kv, cp.scope, {
    hostname: "h.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.9",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, clock.now());
  await assignHost(cp.kv, system, { policyId: policy.id, hostId: host.id }, clock.now());
  await beforeBackups(policy);
  const src = `${cp.dir}/src`;
  await Deno.mkdir(`${src}/many`, { recursive: true });
  await Deno.writeFile(`${src}/same.bin`, deterministicBytes(`same-${crypto.randomUUID()}`, 20_000));
  for (let i = 0; i < MANY; i++) {
    await Deno.writeFile(`${src}/many/f${String(i).padStart(5, "0")}.txt`, new TextEncoder().encode(`${i}`));
  }
  const snapshots: string[] = [];
  let keys: NamespaceKeys | null = null;
  let repoPath = "";
  for (let d = 0; d < 4; d++) {
    const at = new Date(Date.UTC(2026, 10, 1 + d, 2));
    await runSchedulerTick(cp.kv, at);
    const [job] = await claimJobs(cp.kv, `agent:${host.id}`, 1, at);
    const repository = job.payload.repository as { target: string; path: string; generation: number };
    assert.deepEqual(repository, { target: target.id, path: `cadres/${policy.id}/g1`, generation: 1 });
    repoPath = `${targetDir}/${repository.path}`;
    const delivered = await deliverJobKeys(cp.kv, config.masterKey!, job.principal, job.id, null, at);
    assert.deepEqual(delivered.repository, repository);
    const jobKeys = { namespace: delivered.namespace, dataKey: delivered.dataKey, idKey: delivered.idKey };
    keys ??= jobKeys;
    const backend = new LocalBackend(repoPath);
    const repo = d === 0
      ? await Repository.init(backend, namespaceKeysOpener(jobKeys), { namespace: host.id, ...SMALL })
      : await Repository.openNamespace(backend, jobKeys);
    await Deno.writeFile(
      `${src}/day.bin`,
      deterministicBytes(`day-${d}-${crypto.randomUUID()}`, 100_000 + d * 1000),
    );
    snapshots.push((await backupFiles(repo.namespace(host.id), { paths: [src] })).snapshotId);
    const end = new Date(at.getTime() + 600_000).toISOString();
    const { job: done } = await applyResult(cp.kv, job.principal, job.id, {
      status: "success",
      startedAt: at.toISOString(),
      endedAt: end,
      bytesTransferred: 100,
      protectedBytes: 100,
      output: {
        restorePoint: {
          id: snapshots[d],
          chainId: `chain-${d}`,
          type: "full",
          parentId: null,
          sizeBytes: 100,
          fileCount: 2,
          completedAt: end,
        },
      },
    }, at);
    await applyJobOutcome(cp.kv, done, at);
  }
  const verifyJobs: string[] = [];
  for await (const e of cp.kv.list<Job>({ prefix: ["jobs"] })) {
    if (e.value.kind === "verify") verifyJobs.push(e.value.id);
  }
  assert.equal(verifyJobs.length, 4);
  return { target, policy, host, repoPath, src, snapshots, verifyJobs, keys: keys! };
}

Deno.test({
  name:
    "BES subprocess: verify jobs check each point's snapshot and read samples back with the control plane's keys, retention's prune removes snapshots from a Local repository, a damaged pack fails a target verify, unreachable targets fail with TARGET_UNREACHABLE",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using cp = await controlPlane();
    await using bes = await onlineBes(cp);
    const engine = bes.engine;
    const { target, policy, snapshots, repoPath, verifyJobs, keys } = await backedUpPolicy(cp, engine, 3);
    for (const id of verifyJobs) {
      const job = await finished(cp.kv, id);
      // The structure is checked, then 3 sampled blobs are read back with the keys the control plane's key
      // endpoint delivers to the BES holding the job.
      assert.equal(job.result?.status, "success", JSON.stringify(job.result));
      const v = job.result?.output?.verification as Record<string, unknown>;
      assert.equal(v.status, "passed");
      assert.equal(v.failedCount, 0);
      assert.equal(v.snapshots, 1);
      assert.equal(v.sampled, 3);
      assert.ok((v.referencedBlobs as number) > 0);
    }
    const points = (await Array.fromAsync(cp.kv.list<RestorePoint>({ prefix: ["restore_points"] })))
      .map((e) => e.value);
    assert.deepEqual(points.map((p) => p.verification), ["passed", "passed", "passed", "passed"]);

    // Retention keeps the newest two: the prune job it issues removes the other two from the repository.
    const { expired, pruneJobs } = await applyRetention(cp.kv, new Date(Date.UTC(2026, 10, 4, 5)));
    assert.deepEqual({ expired, pruneJobs }, { expired: 2, pruneJobs: 1 });
    const prune = (await Array.fromAsync(cp.kv.list<Job>({ prefix: ["jobs"] }))).map((e) => e.value)
      .find((j) => j.kind === "prune")!;
    const pruned = await finished(cp.kv, prune.id);
    assert.equal(pruned.result?.status, "success", JSON.stringify(pruned.result));
    const out = pruned.result!.output!.pruned as { restorePointIds: string[]; absent: string[] };
    assert.deepEqual([...out.restorePointIds].sort(), [snapshots[0], snapshots[1]].sort());
    assert.deepEqual(out.absent, []);
    const backend = new LocalBackend(repoPath);
    for (const [i, id] of snapshots.entries()) {
      assert.equal(await backend.exists(`snapshots/${id}`), i >= 2, `snapshot ${i}`);
    }
    // gc condemned what only the pruned snapshots used; the kept ones are whole.
    assert.ok((await Array.fromAsync(backend.list("condemned/"))).length > 0);
    const check = await verifyRepository(await Repository.open(backend, namespaceKeysOpener(keys)), {
      all: true,
    });
    assert.deepEqual(check.problems, []);
    assert.equal(check.snapshots, 2);

    // A target-wide verify passes, then finds a flipped byte in a pack's trailer.
    const first = await requestStorageCheck(cp.kv, system, target.id, "verify", new Date());
    const passed = await finished(cp.kv, first.jobId);
    assert.equal(passed.result?.status, "success", JSON.stringify(passed.result));
    const packs = await Array.fromAsync(backend.list("data/"));
    const pack = packs.sort((a, b) => a.name.localeCompare(b.name))[0];
    const bytes = await Deno.readFile(`${repoPath}/${pack.name}`);
    bytes[bytes.length - 10] ^= 0xff;
    await Deno.writeFile(`${repoPath}/${pack.name}`, bytes);
    const second = await requestStorageCheck(cp.kv, system, target.id, "verify", new Date());
    const failed = await finished(cp.kv, second.jobId);
    assert.equal(failed.result?.status, "failed");
    assert.equal(failed.result?.error?.reason, "VERIFY_MISMATCH");
    const packId = pack.name.slice(pack.name.lastIndexOf("/") + 1);
    assert.ok(failed.result?.error?.message.includes(packId), failed.result?.error?.message);

    // Targets the BES cannot reach: an NFS target that is not mounted, a Local folder that is gone.
    const nfs = await createTarget(cp.kv, system, targetInput(engine.id, "nfs"), {
      now: new Date(),
      masterKey: config.masterKey!,
    });
    const gone = await createTarget(
      cp.kv,
      system,
      targetInput(engine.id, "local", { name: "gone", config: { path: `${cp.dir}/no-such-folder` } }),
      { now: new Date(), masterKey: config.masterKey! },
    );
    const unreachable = [];
    for (const t of [nfs, gone]) {
      const job = await enqueueJob(cp.kv, {
        kind: "prune",
        principal: `bes:${engine.id}`,
        accountId: cp.scope.accountId,
        orgId: cp.scope.orgId,
        payload: {
          policyId: policy.id,
          targetId: t.id,
          repository: { target: t.id, path: `cadres/${policy.id}/g1`, generation: 1 },
          restorePointIds: [snapshots[2]],
        },
      }, new Date());
      unreachable.push(await finished(cp.kv, job.id));
    }
    assert.deepEqual(unreachable.map((j) => j.result?.error?.reason), [
      "TARGET_UNREACHABLE",
      "TARGET_UNREACHABLE",
    ]);
    assert.match(unreachable[0].result!.error!.message, /is not mounted/);
    assert.match(unreachable[1].result!.error!.message, /no-such-folder does not exist/);
    assert.equal(unreachable[0].result?.retryable, true);
    // A browse of a restore point the control plane does not know: its key endpoint gives no keys (409).
    const browse = await enqueueJob(cp.kv, {
      kind: "browse",
      principal: `bes:${engine.id}`,
      accountId: cp.scope.accountId,
      orgId: cp.scope.orgId,
      payload: { restorePointId: "x", engineRestorePointId: snapshots[2], policyId: policy.id, path: "/" },
    }, new Date());
    const refused = (await finished(cp.kv, browse.id)).result;
    assert.equal(refused?.error?.reason, "KEY_UNAVAILABLE");
    assert.match(refused!.error!.message, /\(409\): .*restore point x no longer exists/);
    // A replicate job that names no replica target: one clear refusal naming the field.
    const replicate = await enqueueJob(cp.kv, {
      kind: "replicate",
      principal: `bes:${engine.id}`,
      accountId: cp.scope.accountId,
      orgId: cp.scope.orgId,
      payload: { restorePointId: "x", policyId: policy.id },
    }, new Date());
    const refusedReplicate = (await finished(cp.kv, replicate.id)).result;
    assert.equal(refusedReplicate?.error?.reason, "BAD_PAYLOAD");
    assert.match(refusedReplicate!.error!.message, /targetId/);
    assert.ok(await backend.exists(`snapshots/${snapshots[2]}`), "nothing was pruned elsewhere");
    assert.equal((await cp.kv.get<Engine>(engineKey(engine.id))).value?.status, "online");
  },
});

Deno.test({
  name:
    "BES subprocess with the control plane's key endpoint: sampled verify reads every blob back, browse lists a real folder whole (in parts, paged by the control plane), search finds a real file",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using cp = await controlPlane();
    await using bes = await onlineBes(cp);
    const engine = bes.engine;
    const f = await backedUpPolicy(cp, engine, 10_000);
    for (const id of f.verifyJobs) {
      const job = await finished(cp.kv, id);
      assert.equal(job.result?.status, "success", JSON.stringify(job.result));
      const v = job.result?.output?.verification as {
        status: string;
        sampled: number;
        referencedBlobs: number;
      };
      assert.equal(v.status, "passed");
      assert.ok(v.sampled > 0 && v.sampled === v.referencedBlobs, `${v.sampled} of ${v.referencedBlobs}`);
    }
    const points = (await Array.fromAsync(cp.kv.list<RestorePoint>({ prefix: ["restore_points"] })))
      .map((e) => e.value);
    assert.deepEqual(points.map((p) => p.verification), ["passed", "passed", "passed", "passed"]);
    const latest = points.find((p) => p.engineRestorePointId === f.snapshots[3])!;

    // Browse the backed-up folder of the newest point: the control plane's browse state gets its entries.
    const listed = await browsed(cp.kv, bes, latest.id, f.src, "the browse");
    assert.equal(listed.status, "ready", JSON.stringify(listed));
    assert.deepEqual(listed.entries!.map((e) => [e.name, e.type, e.size, e.path]), [
      ["many", "dir", 0, `${f.src}/many`],
      ["day.bin", "file", 103_000, `${f.src}/day.bin`],
      ["same.bin", "file", 20_000, `${f.src}/same.bin`],
    ]);
    assert.equal(
      listed.entries!.find((e) => e.name === "same.bin")!.modifiedAt,
      (await Deno.stat(`${f.src}/same.bin`)).mtime!.toISOString(),
    );
    // A folder longer than one result body: uploaded in parts, kept whole, served in pages of 200.
    const many = await browsed(cp.kv, bes, latest.id, `${f.src}/many`, "the long browse");
    assert.equal(many.status, "ready", JSON.stringify({ ...many, entries: many.entries?.length }));
    assert.deepEqual([many.total, many.kept, many.truncated, many.pages], [MANY, MANY, false, MANY / 200]);
    const last = await getBrowse(cp.kv, system, latest.id, `${f.src}/many`, new Date(), MANY / 200 - 1);
    assert.equal(last!.entries!.at(-1)!.name, `f${String(MANY - 1).padStart(5, "0")}.txt`);
    const browseJob = await getJob(cp.kv, many.jobId);
    assert.ok((browseJob!.result!.lists?.entries?.parts ?? 0) >= 1, JSON.stringify(browseJob!.result));
    // Search the whole point by name.
    const found = await searched(cp.kv, bes, latest.id, "DAY", "the search");
    assert.equal(found.status, "ready", JSON.stringify(found));
    assert.deepEqual(found.matches!.map((m) => m.path), [`${f.src}/day.bin`]);
    // Many matches: every one of them, in path order.
    const matched = await searched(cp.kv, bes, latest.id, "f0*.txt", "the long search");
    assert.equal(matched.status, "ready", matched.error ?? "");
    assert.deepEqual([matched.total, matched.kept, matched.truncated], [MANY, MANY, false]);
    assert.equal(matched.matches![0].path, `${f.src}/many/f00000.txt`);
    // The BES asked the key endpoint for each job's keys (4 verifies, 2 browses, 2 searches): audited.
    const deliveries = (await auditEntries(cp.kv, cp.scope.accountId)).filter((a) =>
      a.action === "keys.deliver" && a.summary.includes("BES bes-e2e")
    );
    assert.equal(deliveries.length, 8, deliveries.map((d) => d.summary).join("\n"));
    assert.ok(!bes.output.includes(f.keys.dataKey.toBase64()), "no key in the BES's log");
    assert.ok(!bes.output.includes(f.keys.idKey.toBase64()), "no key in the BES's log");
  },
});

/** Restores `snapshot` from the repository at `path` with `keys` and compares it with the folder `src`. */
async function assertRestoresAs(
  path: string,
  keys: NamespaceKeys,
  snapshot: string,
  src: string,
  out: string,
) {
  const repo = await Repository.open(new LocalBackend(path), namespaceKeysOpener(keys));
  await restoreSnapshot(repo.namespace(keys.namespace), snapshot, { target: out });
  for (
    const rel of ["day.bin", "same.bin", "many/f00000.txt", `many/f${String(MANY - 1).padStart(5, "0")}.txt`]
  ) {
    assert.deepEqual(await Deno.readFile(`${out}${src}/${rel}`), await Deno.readFile(`${src}/${rel}`), rel);
  }
  assert.equal(
    (await Array.fromAsync(Deno.readDir(`${out}${src}/many`))).length,
    MANY,
    "every file of the folder",
  );
}

Deno.test({
  name:
    "BES subprocess: the replicate jobs the control plane queues after backups copy each point to the replica target (restored from there byte-identical, the replica's keys wrapped by the rule's KEK source); a synthetic full of the host's chain restores byte-identical",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using cp = await controlPlane();
    await using bes = await onlineBes(cp);
    const engine = bes.engine;
    const replicaDir = `${cp.dir}/replica`;
    await Deno.mkdir(replicaDir);
    let replicaId = "";
    const f = await backedUpPolicy(cp, engine, 3, async (policy) => {
      const replica = await createTarget(
        cp.kv,
        system,
        targetInput(engine.id, "local", { name: "replica", config: { path: replicaDir } }),
        { now: new Date(), masterKey: config.masterKey! },
      );
      replicaId = replica.id;
      await createReplica(cp.kv, system, {
        policyId: policy.id,
        targetId: replica.id,
        kekSource: "pam_vault",
        replicateAfterFull: true,
        replicateAfterIncremental: true,
        isOffsite: true,
      }, new Date());
    });
    const jobs = (await Array.fromAsync(cp.kv.list<Job>({ prefix: ["jobs"] }))).map((e) => e.value)
      .filter((j) => j.kind === "replicate");
    assert.equal(jobs.length, 4, "one per restore point");
    assert.deepEqual(jobs[0].payload.repository, {
      target: f.target.id,
      path: `cadres/${f.policy.id}/g1`,
      generation: 1,
    });
    for (const job of jobs) {
      const done = await finished(cp.kv, job.id);
      assert.equal(done.result?.status, "success", JSON.stringify(done.result));
      const r = done.result!.output!.replication as { targetId: string; bytes: number };
      assert.equal(r.targetId, replicaId);
    }
    // The control plane's records say so; the replica holds every point, and the newest restores from it.
    // (The route records the result, then its outcome: the records follow a moment later.)
    await waitFor("the replication records", async () => {
      const records = await Array.fromAsync(cp.kv.list<{ status: string }>({ prefix: ["replications"] }));
      return records.length === 4 && records.every((e) => e.value.status === "succeeded");
    });
    const replicaRepo = `${replicaDir}/cadres/${f.policy.id}/g1`;
    for (const id of f.snapshots) {
      assert.ok(await new LocalBackend(replicaRepo).exists(`snapshots/${id}`), id);
    }
    await assertRestoresAs(replicaRepo, f.keys, f.snapshots[3], f.src, `${cp.dir}/from-replica`);
    // The keys of the replica: wrapped by the rule's KEK source (the organization's vault key), audited.
    const audit = await auditEntries(cp.kv, cp.scope.accountId);
    assert.ok(
      audit.some((a) => a.action === "keys.wrap" && a.summary.includes("(pam_vault)")),
      audit.map((a) => a.action).join(", "),
    );

    // A synthetic full of the host's chain, made on the BES.
    const synthetic = await enqueueJob(cp.kv, {
      kind: "synthetic_full",
      principal: `bes:${engine.id}`,
      accountId: cp.scope.accountId,
      orgId: cp.scope.orgId,
      payload: {
        policyId: f.policy.id,
        targetId: f.target.id,
        repository: { target: f.target.id, path: `cadres/${f.policy.id}/g1`, generation: 1 },
        hostId: f.host.id,
      },
    }, new Date());
    const made = await finished(cp.kv, synthetic.id);
    assert.equal(made.result?.status, "success", JSON.stringify(made.result));
    const rp = made.result!.output!.restorePoint as {
      id: string;
      type: string;
      parentId: null;
      fileCount: number;
    };
    assert.deepEqual([rp.type, rp.parentId, rp.fileCount], ["synthetic_full", null, MANY + 2]);
    assert.equal((made.result!.output!.syntheticFull as { base: string }).base, f.snapshots[3]);
    await assertRestoresAs(f.repoPath, f.keys, rp.id, f.src, `${cp.dir}/from-synthetic`);
    assert.ok(!bes.output.includes(f.keys.dataKey.toBase64()), "no key in the BES's log");
  },
});
