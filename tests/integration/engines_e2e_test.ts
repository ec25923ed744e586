/**
 * Issue 16, the engines end to end: the real app on a loopback port (temporary KV), the BES program and the
 * agent program as subprocesses (loopback, temporary folders), everything else through the API as an
 * operator does it. A Local target and a policy, the host assigned, run now: the restore point is browsed,
 * searched, and a folder of it restored to another path with the same bytes, modes and times; an incremental
 * after a change stores about the change; verify passes, then a flipped byte in a pack fails it and the
 * dashboard's verification queue shows the point; retention prunes data from the target; a replica rule
 * copies the points to a second target, from which a restore is byte-identical.
 */
import assert from "node:assert/strict";
import type { Job } from "../../domain/job_queue.ts";
import { applyRetention } from "../../domain/retention_apply.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { restorePointKey } from "../../domain/keys/restore.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { recoveryOpener } from "../../engine/repo/keys.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { deterministicBytes } from "../engine/helpers.ts";
import { assertSameTree } from "../engine/tree_fixture.ts";
import { type EnginesWorld, enginesWorld, waitFor } from "./engines_world.ts";

const text = (s: string) => new TextEncoder().encode(s);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function writeSource(src: string) {
  await Deno.mkdir(`${src}/docs/deep`, { recursive: true });
  await Deno.writeFile(`${src}/docs/report.bin`, deterministicBytes("report", 50_000));
  await Deno.writeFile(`${src}/docs/notes.txt`, text("notes line\n".repeat(500)));
  await Deno.writeFile(`${src}/docs/deep/old.bin`, deterministicBytes("old", 300_000));
  await Deno.writeFile(`${src}/small.txt`, text("hello"));
  await Deno.chmod(`${src}/small.txt`, 0o600);
  await Deno.chmod(`${src}/docs/deep`, 0o750);
  await Deno.utime(
    `${src}/docs/notes.txt`,
    new Date("2025-01-02T03:04:05Z"),
    new Date("2025-01-02T03:04:05Z"),
  );
}

async function runNow(w: EnginesWorld, policyId: string, kind: "full" | "incremental") {
  const res = await w.api("POST", `/api/v1/policies/${policyId}/run`, { kind });
  assert.equal(res.status, 201, res.text);
  return res.body.runs[0].id as string;
}

async function point(w: EnginesWorld, id: string) {
  return (await w.kv.get<RestorePoint>(restorePointKey(id))).value!;
}

Deno.test({
  name:
    "engines e2e: real BES + real agent: back up, browse, search, restore a folder, incremental, verify and its failure, prune, replicate and restore from the replica",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await enginesWorld();
  const src = `${w.tmp}/src`;
  await writeSource(src);
  // gc's grace period 0 s: a pack one prune condemns is deleted by the next (the default is 24 h).
  const { bes, engine } = await w.startBes("bes-e2e", ["--gc-grace", "0s"]);
  const target = await w.addLocalTarget(engine.id, "target");
  const policyRes = await w.api("POST", "/api/v1/policies", {
    name: "files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    compression: "zstd",
    encryption: "AES-256-GCM",
    verifyAfterBackup: true,
    verifySampleCount: 10_000,
    retentionDaily: 1,
    retentionWeekly: 0,
    retentionMonthly: 0,
  });
  assert.equal(policyRes.status, 201, policyRes.text);
  const policyId = policyRes.body.id as string;
  const { host } = await w.startAgent("agent", [src]);
  const assigned = await w.api("POST", `/api/v1/policies/${policyId}/assignments`, { hostIds: [host.id] });
  assert.equal(assigned.status, 201, assigned.text);
  await sleep(2100); // files older than 2 s before a backup starts can be reused by the next incremental

  // Run now: a full backup through the BES's data API into the Local target.
  const first = await w.finishedRun(await runNow(w, policyId, "full"));
  assert.equal(first.run.status, "success", `${JSON.stringify(first.run.error)}\n${w.output()}`);
  const p1 = await point(w, first.run.restorePointId!);
  assert.equal(p1.type, "full");
  assert.equal(p1.fileCount, 4);
  const repoPath = `${target.root}/cadres/${policyId}/g1`;
  const storage = new LocalBackend(repoPath);
  assert.ok(await storage.exists(`snapshots/${p1.engineRestorePointId}`), "the snapshot is on the target");

  // Verify after backup (every blob read back by the BES): passed.
  const verified = await waitFor(
    "the verification of the first point",
    async () => {
      const p = await point(w, p1.id);
      return p.verification !== "pending" && p.verification !== null ? p : null;
    },
    60_000,
    bes,
  );
  assert.equal(verified.verification, "passed", w.output());

  // Browse the point.
  const browseQ = `/api/v1/restore-points/${p1.id}/browse?path=${encodeURIComponent(`${src}/docs`)}`;
  const queued = await w.api("POST", browseQ);
  assert.ok([200, 202].includes(queued.status), queued.text);
  const listed = await waitFor(
    "the browse",
    async () => {
      const r = await w.api("GET", browseQ);
      return r.status === 200 && r.body.status !== "pending" ? r.body : null;
    },
    60_000,
    bes,
  );
  assert.equal(listed.status, "ready", JSON.stringify(listed));
  assert.deepEqual(
    listed.entries.map((e: { name: string; type: string; size: number }) => [e.name, e.type, e.size]),
    [["deep", "dir", 0], ["notes.txt", "file", 5500], ["report.bin", "file", 50_000]],
  );
  assert.equal(
    listed.entries.find((e: { name: string }) => e.name === "notes.txt").modifiedAt,
    "2025-01-02T03:04:05.000Z",
  );

  // Search it.
  const search = await w.api("POST", `/api/v1/restore-points/${p1.id}/search`, { query: "*.bin" });
  assert.ok([200, 201, 202].includes(search.status), search.text);
  const found = await waitFor(
    "the search",
    async () => {
      const r = await w.api("GET", `/api/v1/searches/${search.body.id}`);
      return r.status === 200 && r.body.status !== "pending" ? r.body : null;
    },
    60_000,
    bes,
  );
  assert.equal(found.status, "ready", JSON.stringify(found));
  assert.deepEqual(found.matches.map((m: { path: string }) => m.path), [
    `${src}/docs/deep/old.bin`,
    `${src}/docs/report.bin`,
  ]);

  // Restore the folder to another path: same bytes, modes and times.
  const restoreDir = `${w.tmp}/restored`;
  const restore = await w.api("POST", "/api/v1/restores", {
    restorePointId: p1.id,
    paths: [`${src}/docs`],
    targetPath: restoreDir,
    overwrite: false,
  });
  assert.equal(restore.status, 201, restore.text);
  const restored = await w.finishedRestore(restore.body.id);
  assert.equal(restored.status, "success", `${JSON.stringify(restored)}\n${w.output()}`);
  await assertSameTree(`${src}/docs`, `${restoreDir}${src}/docs`);
  assert.equal((await Deno.stat(`${restoreDir}${src}/docs/deep`)).mode! & 0o777, 0o750);
  assert.equal(
    (await Deno.stat(`${restoreDir}${src}/docs/notes.txt`)).mtime!.toISOString(),
    "2025-01-02T03:04:05.000Z",
  );
  assert.deepEqual((await Array.fromAsync(Deno.readDir(`${restoreDir}${src}`))).map((e) => e.name), ["docs"]);

  // A replica rule to a second Local target on the same BES, then an incremental after a change: one file
  // modified, one added, one deleted. It stores about the change, not the 50 kB report again.
  const replicaTarget = await w.addLocalTarget(engine.id, "replica");
  const rule = await w.api("POST", "/api/v1/replicas", {
    policyId,
    targetId: replicaTarget.id,
    kekSource: "account",
    replicateAfterFull: true,
    replicateAfterIncremental: true,
    isOffsite: true,
  });
  assert.equal(rule.status, 201, rule.text);
  await Deno.writeFile(`${src}/docs/notes.txt`, text("a changed line\n"), { append: true });
  await Deno.utime(
    `${src}/docs/notes.txt`,
    new Date("2025-02-03T04:05:06Z"),
    new Date("2025-02-03T04:05:06Z"),
  );
  await Deno.writeFile(`${src}/docs/new.bin`, deterministicBytes("new", 7000));
  await Deno.remove(`${src}/docs/deep/old.bin`);
  const second = await w.finishedRun(await runNow(w, policyId, "incremental"));
  assert.equal(second.run.status, "success", `${JSON.stringify(second.run.error)}\n${w.output()}`);
  const p2 = await point(w, second.run.restorePointId!);
  assert.equal(p2.type, "incremental");
  assert.equal(p2.parentId, p1.engineRestorePointId);
  assert.deepEqual(
    [second.output.added, second.output.modified, second.output.deleted],
    [1, 1, 1],
    JSON.stringify(second.output),
  );
  assert.ok(Number(second.output.bytesNew) <= 7000 + 5500 + 15, `bytesNew ${second.output.bytesNew}`);
  assert.ok(Number(second.output.bytesStored) < 40_000, `bytesStored ${second.output.bytesStored}`);
  const stats = (second.run as { stats?: Record<string, number> | null }).stats;
  assert.equal(stats?.bytesNew, second.output.bytesNew, JSON.stringify(stats));
  const verified2 = await waitFor(
    "the verification of the incremental",
    async () => {
      const p = await point(w, p2.id);
      return p.verification !== "pending" && p.verification !== null ? p : null;
    },
    60_000,
    bes,
  );
  assert.equal(verified2.verification, "passed", w.output());

  // The replication of the incremental: succeeded, and the replica restores byte-identical (opened with the
  // account recovery key, without the control plane).
  const replicated = await waitFor(
    "the replication of the incremental",
    async () => {
      const r = await w.api("GET", `/api/v1/restore-points/${p2.id}`);
      const reps = r.body?.replications as { status: string; error?: string | null }[] | undefined;
      return reps?.length && reps.every((x) => x.status === "succeeded" || x.status === "failed")
        ? reps
        : null;
    },
    60_000,
    bes,
  );
  assert.deepEqual(replicated.map((x) => x.status), ["succeeded"], JSON.stringify(replicated));
  const replicaRepo = await Repository.open(
    new LocalBackend(`${replicaTarget.root}/cadres/${policyId}/g1`),
    recoveryOpener(w.recovery.privatePem),
  );
  const fromReplica = `${w.tmp}/from-replica`;
  const r2 = await restoreSnapshot(replicaRepo.namespace(host.id), p2.engineRestorePointId!, {
    target: fromReplica,
  });
  assert.deepEqual(r2.errors, []);
  await assertSameTree(src, `${fromReplica}${src}`);

  // Restore from the replica through the control plane: the restore names the replica's target, the agent
  // reads it through the BES holding that target (a read token for the replica repository), byte for byte
  // — with the primary repository moved away meanwhile, so nothing can come from it.
  const primaryDir = `${target.root}/cadres/${policyId}`;
  await Deno.rename(primaryDir, `${primaryDir}.away`);
  const viaReplica = `${w.tmp}/via-replica`;
  const fromReplicaRes = await w.api("POST", "/api/v1/restores", {
    restorePointId: p2.id,
    paths: [src],
    targetPath: viaReplica,
    overwrite: false,
    sourceTargetId: replicaTarget.id,
  });
  assert.equal(fromReplicaRes.status, 201, fromReplicaRes.text);
  assert.equal(fromReplicaRes.body.sourceTargetId, replicaTarget.id);
  const replicaJob = (await w.kv.get<Job>(["jobs", fromReplicaRes.body.jobId])).value!;
  assert.deepEqual(replicaJob.payload.repository, {
    target: replicaTarget.id,
    path: `cadres/${policyId}/g1`,
    generation: 1,
  });
  const viaReplicaDone = await w.finishedRestore(fromReplicaRes.body.id);
  await Deno.rename(`${primaryDir}.away`, primaryDir);
  assert.equal(viaReplicaDone.status, "success", `${JSON.stringify(viaReplicaDone)}\n${w.output()}`);
  await assertSameTree(src, `${viaReplica}${src}`);
  // A target that holds no replica of the point is refused, naming the field.
  const noReplica = await w.api("POST", "/api/v1/restores", {
    restorePointId: p2.id,
    paths: [src],
    targetPath: `${w.tmp}/nowhere`,
    sourceTargetId: "01KNOTAREPLICATARGET000000",
  });
  assert.equal(noReplica.status, 422, noReplica.text);
  assert.match(noReplica.text, /sourceTargetId/);
  const deleted = await w.api("DELETE", `/api/v1/replicas/${rule.body.id}`);
  assert.ok([200, 204].includes(deleted.status), deleted.text);

  // Retention keeps one day: after a new full, the retention job run three days later expires the first
  // chain, and the BES's prune job removes its snapshots and the data only they referenced from the target.
  const third = await w.finishedRun(await runNow(w, policyId, "full"));
  assert.equal(third.run.status, "success", `${JSON.stringify(third.run.error)}\n${w.output()}`);
  const p3 = await point(w, third.run.restorePointId!);
  await waitFor(
    "the verification of the new full",
    async () => {
      const p = await point(w, p3.id);
      return p.verification === "passed" ? p : null;
    },
    60_000,
    bes,
  );
  const retention = await applyRetention(w.kv, new Date(Date.now() + 3 * 86_400_000));
  assert.equal(retention.expired, 2, JSON.stringify(retention));
  assert.ok(retention.pruneJobs >= 1, JSON.stringify(retention));
  await waitFor(
    "the prune to remove the expired snapshots",
    async () =>
      !(await storage.exists(`snapshots/${p1.engineRestorePointId}`)) &&
      !(await storage.exists(`snapshots/${p2.engineRestorePointId}`)),
    60_000,
    bes,
  );
  assert.ok(await storage.exists(`snapshots/${p3.engineRestorePointId}`), "the kept point stays");
  // gc: the pack that held the expired data (old.bin, 300 kB of its 356) was rewritten — its live blobs
  // copied into a new pack — and condemned; the next prune's gc deletes it (--gc-grace 0s; 24 h by default).
  const pruneJob = await waitFor(
    "the prune job to end",
    async () =>
      (await Array.fromAsync(w.kv.list<Job>({ prefix: ["jobs"] }))).map((e) => e.value)
        .find((j) => j.kind === "prune" && j.result),
    60_000,
    bes,
  );
  assert.equal(pruneJob?.result?.status, "success", JSON.stringify(pruneJob?.result));
  const [pruned] =
    (pruneJob.result!.output!.pruned as { repositories: Record<string, unknown>[] }).repositories;
  assert.deepEqual(
    [pruned.path, pruned.forgotten, pruned.repackedPacks],
    [`cadres/${policyId}/g1`, [p1.engineRestorePointId, p2.engineRestorePointId], 1],
    JSON.stringify(pruned),
  );
  const condemned = (await Array.fromAsync(storage.list("condemned/"))).map((o) =>
    o.name.slice("condemned/".length)
  );
  assert.equal(condemned.length, 1, JSON.stringify(condemned));
  const condemnedPack = (await Array.fromAsync(storage.list("data/"))).find((o) =>
    o.name.endsWith(condemned[0])
  )!;
  assert.ok(condemnedPack.size > 300_000, `the pack that held old.bin: ${condemnedPack.size} bytes`);
  // What the kept point needs still restores from the target (the agent restores it, byte for byte).
  const restoreAll = async (pointId: string, dir: string) => {
    const kept = await w.api("POST", "/api/v1/restores", {
      restorePointId: pointId,
      paths: [src],
      targetPath: dir,
      overwrite: false,
    });
    assert.equal(kept.status, 201, kept.text);
    const keptDone = await w.finishedRestore(kept.body.id);
    assert.equal(keptDone.status, "success", `${JSON.stringify(keptDone)}\n${w.output()}`);
    await assertSameTree(src, `${dir}${src}`);
  };
  await restoreAll(p3.id, `${w.tmp}/kept`);

  // A later full, then retention a day on expires p3; that prune's gc deletes the pack the first one
  // condemned (grace 0 s): its bytes leave the target, and the point retention keeps still restores.
  const dataBytes = async () => {
    let n = 0;
    for await (const o of storage.list("data/")) n += o.size;
    return n;
  };
  const fifth = await w.finishedRun(await runNow(w, policyId, "full"));
  assert.equal(fifth.run.status, "success", `${JSON.stringify(fifth.run.error)}\n${w.output()}`);
  const p5 = await point(w, fifth.run.restorePointId!);
  await waitFor(
    "the verification of the later full",
    async () => {
      const p = await point(w, p5.id);
      return p.verification === "passed" ? p : null;
    },
    60_000,
    bes,
  );
  const bytesBefore = await dataBytes();
  const prunesBefore = new Set(
    (await Array.fromAsync(w.kv.list<Job>({ prefix: ["jobs"] }))).filter((e) => e.value.kind === "prune")
      .map((e) => e.value.id),
  );
  const retention2 = await applyRetention(w.kv, new Date(Date.now() + 4 * 86_400_000));
  assert.equal(retention2.expired, 1, JSON.stringify(retention2));
  const secondPrune = await waitFor(
    "the second prune job to end",
    async () =>
      (await Array.fromAsync(w.kv.list<Job>({ prefix: ["jobs"] }))).map((e) => e.value)
        .find((j) =>
          j.kind === "prune" && j.result && !prunesBefore.has(j.id) &&
          (j.payload.repository as { target?: string } | undefined)?.target === target.id
        ),
    60_000,
    bes,
  );
  assert.equal(secondPrune.result?.status, "success", JSON.stringify(secondPrune.result));
  const pruned2 = secondPrune.result!.output!.pruned as {
    bytesFreed: number;
    restorePointIds: string[];
    repositories: { deletedPacks: number }[];
  };
  assert.deepEqual(pruned2.restorePointIds, [p3.engineRestorePointId], JSON.stringify(pruned2));
  assert.ok(pruned2.repositories[0].deletedPacks >= 1, JSON.stringify(pruned2));
  assert.ok(pruned2.bytesFreed >= condemnedPack.size, JSON.stringify(pruned2));
  assert.equal(await storage.exists(condemnedPack.name), false, `${condemnedPack.name} is deleted`);
  assert.equal(await storage.exists(`condemned/${condemned[0]}`), false, "and no longer condemned");
  assert.equal(await storage.exists(`snapshots/${p3.engineRestorePointId}`), false);
  assert.ok(
    (await dataBytes()) <= bytesBefore - condemnedPack.size,
    `data/ shrank by the deleted pack: ${bytesBefore} → ${await dataBytes()}`,
  );
  await restoreAll(p5.id, `${w.tmp}/kept-after-gc`);

  // A flipped byte in a pack on the target: the next point's verification (every blob read back) fails,
  // naming the pack, and the dashboard's verification queue shows the point.
  // The largest live pack: mostly report.bin's data, which every point references and no backup re-reads
  // (a byte in a blob no snapshot references any more would rightly not fail a point's verification).
  const condemnedNow = (await Array.fromAsync(storage.list("condemned/"))).map((o) =>
    o.name.slice("condemned/".length)
  );
  const packs = (await Array.fromAsync(storage.list("data/")))
    .filter((o) => !condemnedNow.some((id) => o.name.endsWith(id)))
    .sort((a, b) => b.size - a.size);
  const pack = packs[0];
  assert.ok(pack.size > 50_000, `${pack.name}: ${pack.size} bytes`);
  const bytes = await Deno.readFile(`${repoPath}/${pack.name}`);
  for (const at of [0.25, 0.5, 0.75]) bytes[Math.floor(bytes.length * at)] ^= 0xff;
  await Deno.writeFile(`${repoPath}/${pack.name}`, bytes);
  await Deno.writeFile(`${src}/small.txt`, text("hello again"));
  const fourth = await w.finishedRun(await runNow(w, policyId, "incremental"));
  assert.equal(fourth.run.status, "success", `${JSON.stringify(fourth.run.error)}\n${w.output()}`);
  const p4 = await waitFor(
    "the verification of the point over the damaged pack",
    async () => {
      const p = await point(w, fourth.run.restorePointId!);
      return p.verification !== "pending" && p.verification !== null ? p : null;
    },
    60_000,
    bes,
  );
  assert.equal(p4.verification, "failed");
  const queue = await w.api("GET", "/api/v1/dashboard/queue?name=verification-failures");
  assert.equal(queue.status, 200, queue.text);
  assert.ok(queue.text.includes(p4.id), queue.text);
  const packId = pack.name.slice(pack.name.lastIndexOf("/") + 1);
  const verifyJob = (await Array.fromAsync(w.kv.list<Job>({ prefix: ["jobs"] }))).map((e) => e.value)
    .find((j) => j.kind === "verify" && j.payload.restorePointId === p4.id);
  assert.ok(JSON.stringify(verifyJob?.result).includes(packId), JSON.stringify(verifyJob?.result));
});
