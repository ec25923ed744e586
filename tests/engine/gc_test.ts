import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { forgetSnapshots, garbageCollect, type GcResult, listCondemned } from "../../engine/repo/gc.ts";
import { denoFileSystem, type FileSystem } from "../../engine/repo/fs.ts";
import { acquireLock, listLiveLocks } from "../../engine/repo/lock.ts";
import { PackBuilder, packObjectName } from "../../engine/repo/pack.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { listSnapshots } from "../../engine/repo/snapshot.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 64 * 1024 };
const KEK = crypto.getRandomValues(new Uint8Array(32));
/** Backups date themselves 10 s ahead, so the files just written are not racy and are reused. */
const later = () => new Date(Date.now() + 10_000);

async function fileBytes(root: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for (const name of (await Array.fromAsync(Deno.readDir(root))).map((e) => e.name).sort()) {
    out.set(name, (await Deno.readFile(`${root}/${name}`)).join(","));
  }
  return out;
}

/** A file system whose lstat of `path` waits for `gate` (the moment another process acts). */
function pausingFs(path: string, gate: () => Promise<void>): FileSystem {
  let paused = false;
  return {
    ...denoFileSystem,
    lstat: async (p) => {
      if (p === path && !paused) {
        paused = true;
        await gate();
      }
      return await denoFileSystem.lstat(p);
    },
  };
}

type Order =
  | "gc while the backup runs, paused at its first file"
  | "gc while the backup runs, paused at its last file"
  | "gc after the backup commits";

async function race(order: Order, seed: number) {
  await using dir = await tempDir();
  const repoPath = `${dir.path}/repo`;
  const src = `${dir.path}/src`;
  await Deno.mkdir(src);
  for (let i = 0; i < 4; i++) {
    await Deno.writeFile(`${src}/f${i}.bin`, deterministicBytes(`race-${seed}-${i}`, 20_000 + 7_000 * i));
  }
  const writer = await Repository.init(new LocalBackend(repoPath), KEK, { namespace: "h", ...SMALL });
  const parent = await backupFiles(writer.namespace("h"), { paths: [src], now: later });
  // A file changes, so the new snapshot also uploads something of its own.
  await Deno.writeFile(`${src}/f3.bin`, deterministicBytes(`race-${seed}-changed`, 9_000));

  // The other process: forgets the parent and runs gc twice, past a grace period of 0.
  const other = new LocalBackend(repoPath);
  const gcs: GcResult[] = [];
  const forgetAndGcTwice = async () => {
    // Deleted directly: forgetSnapshots refuses the parent of a running backup, but a forget that read the
    // locks just before the backup wrote its lock gets through — the race this test plays.
    await other.delete(`snapshots/${parent.snapshotId}`);
    gcs.push(await garbageCollect(other, { graceMs: 0, clockMarginMs: 20 }));
    gcs.push(await garbageCollect(other, { graceMs: 0, clockMarginMs: 20 }));
  };
  // Past the clock margin, so the parent's packs are old enough to be condemned while the backup runs.
  await new Promise((r) => setTimeout(r, 100));

  const ns = (await Repository.open(new LocalBackend(repoPath), KEK)).namespace("h");
  const lock = await acquireLock(ns.repo.backend, { kind: "backup", namespace: "h" });
  let result;
  try {
    if (order === "gc after the backup commits") {
      result = await backupFiles(ns, { paths: [src], parent: parent.snapshotId, now: later });
    } else {
      const at = order.includes("first") ? `${src}/f0.bin` : `${src}/f3.bin`;
      result = await backupFiles(ns, {
        paths: [src],
        parent: parent.snapshotId,
        now: later,
        fs: pausingFs(at, forgetAndGcTwice),
      });
    }
  } finally {
    await lock.release();
  }
  if (order === "gc after the backup commits") await forgetAndGcTwice();
  else {
    assert.ok(gcs[0].condemned.length > 0, `${order}: the parent's packs were condemned`);
    assert.deepEqual(gcs[1].deleted, [], `${order}: the live writer held their deletion back`);
  }
  // And twice more, now that no writer is live.
  await garbageCollect(other, { graceMs: 0 });
  await garbageCollect(other, { graceMs: 0 });

  const reader = await Repository.open(new LocalBackend(repoPath), KEK);
  const verified = await verifyRepository(reader, { all: true });
  assert.deepEqual(verified.problems, [], `${order}: verify`);
  const target = `${dir.path}/out`;
  const restored = await restoreSnapshot(reader.namespace("h"), result.snapshotId, { target });
  assert.deepEqual(restored.errors, [], `${order}: restore errors`);
  assert.deepEqual(await fileBytes(`${target}${src}`), await fileBytes(src), `${order}: byte-identical`);
}

for (
  const order of [
    "gc while the backup runs, paused at its first file",
    "gc while the backup runs, paused at its last file",
    "gc after the backup commits",
  ] as Order[]
) {
  Deno.test(`garbageCollect() race: ${order} — the new snapshot restores byte-identical`, async () => {
    for (let i = 0; i < 3; i++) await race(order, i);
  });
}

Deno.test("garbageCollect() condemns first, deletes only in a later gc after the grace period", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", ...SMALL });
  await Deno.mkdir(`${dir.path}/src`);
  await Deno.writeFile(`${dir.path}/src/a`, deterministicBytes("gc-a", 30_000));
  const snap = await backupFiles(repo.namespace("h"), { paths: [`${dir.path}/src`] });
  await forgetSnapshots(be, [snap.snapshotId]);

  const t0 = Date.now();
  const first = await garbageCollect(be, { graceMs: 60_000, now: () => new Date(t0) });
  assert.ok(first.condemned.length > 0);
  assert.deepEqual(first.deleted, []);
  const early = await garbageCollect(be, { graceMs: 60_000, now: () => new Date(t0 + 30_000) });
  assert.deepEqual(early.deleted, []);
  assert.deepEqual(early.pending.sort(), [...first.condemned].sort());

  // A writer that started before the condemnation and is still live holds the deletion back.
  const lock = await acquireLock(be, { kind: "backup", now: () => new Date(t0 - 1_000) });
  const held = await garbageCollect(be, { graceMs: 60_000, now: () => new Date(t0 + 61_000), staleMs: 1e9 });
  assert.deepEqual(held.deleted, []);
  await lock.release();
  assert.deepEqual(await listLiveLocks(be), []);

  const late = await garbageCollect(be, { graceMs: 60_000, now: () => new Date(t0 + 61_000) });
  assert.deepEqual(late.deleted.sort(), [...first.condemned].sort());
  assert.equal((await listCondemned(be)).size, 0);
  assert.deepEqual(await Array.fromAsync(be.list("data/")), []);
  assert.deepEqual(await Array.fromAsync(be.list("index/")), []);
});

Deno.test("garbageCollect() never condemns a pack written after the oldest live writer started", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", ...SMALL });
  const lock = await acquireLock(be, { kind: "backup", namespace: "h" });
  // A pack of a running backup: no snapshot names it yet.
  const ns = repo.namespace("h");
  await ns.saveBlob("data", deterministicBytes("young", 5_000), ns.hasher());
  await ns.flush();
  const r = await garbageCollect(be, { graceMs: 0 });
  assert.deepEqual(r.condemned, []);
  await lock.release();
  const after = await garbageCollect(be, { graceMs: 0 });
  assert.equal(after.condemned.length, 1);
});

Deno.test("Namespace.checkCommit() refuses a blob in a condemned pack, which is then stored again", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", ...SMALL });
  const ns = repo.namespace("h");
  const data = deterministicBytes("condemned", 3_000);
  const { id } = await ns.saveBlob("data", data, ns.hasher());
  await ns.flush();
  const oldPack = repo.index.lookup("h", id)!.packId;
  assert.deepEqual(await ns.checkCommit([id]), []);

  await be.put(`condemned/${oldPack}`, new TextEncoder().encode(JSON.stringify({ condemnedAt: new Date() })));
  assert.deepEqual(await ns.checkCommit([id]), [id]);
  assert.equal(ns.has(id), false);
  const again = await ns.saveBlob("data", data, ns.hasher());
  assert.equal(again.isNew, true);
  await ns.flush();
  assert.notEqual(repo.index.lookup("h", id)!.packId, oldPack);
  assert.deepEqual(await ns.checkCommit([id]), []);
  assert.deepEqual(await ns.loadBlob(id, ns.hasher()), data);

  // A fresh reader prefers the live copy over the condemned one.
  const reader = await Repository.open(be, KEK);
  assert.notEqual(reader.index.lookup("h", id)!.packId, oldPack);
});

/** Every object of the repository with its size (gc's own lock comes and goes). */
async function objects(be: LocalBackend): Promise<string[]> {
  return (await Array.fromAsync(be.list(""))).map((o) => `${o.name} ${o.size}`).sort();
}

/** A repository with forgotten snapshots (garbage packs) and one kept snapshot. */
async function repoWithGarbage(dir: string) {
  const be = new LocalBackend(`${dir}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", ...SMALL });
  await Deno.mkdir(`${dir}/src`);
  const ids = [];
  for (let gen = 0; gen < 3; gen++) {
    await Deno.writeFile(`${dir}/src/a`, deterministicBytes(`garbage-${gen}`, 150_000));
    ids.push((await backupFiles(repo.namespace("h"), { paths: [`${dir}/src`] })).snapshotId);
  }
  await forgetSnapshots(be, ids.slice(0, 2));
  return { be, repo, kept: ids[2] };
}

/**
 * A pack no index segment names (a killed backup's) whose trailer is damaged, listed after at least one
 * other pack: a gc that acted pack by pack would already have acted on that one.
 */
async function damagedOrphanPack(be: LocalBackend): Promise<string> {
  for (let i = 0;; i++) {
    const b = new PackBuilder("h");
    b.add("data", "ab".repeat(32), deterministicBytes(`orphan-${i}`, 2_000));
    const { bytes, listing } = b.finish();
    bytes[bytes.length - 12] ^= 0xff; // inside the trailer's checksum
    await be.put(packObjectName(listing.packId), bytes);
    const order = (await Array.fromAsync(be.list("data/"))).map((o) => o.name);
    if (order.indexOf(packObjectName(listing.packId)) > 0) return listing.packId;
    await be.delete(packObjectName(listing.packId));
  }
}

Deno.test("garbageCollect() reads everything before it changes anything: a damaged trailer changes nothing", async () => {
  await using dir = await tempDir();
  const { be } = await repoWithGarbage(dir.path);
  const packId = await damagedOrphanPack(be);
  const before = await objects(be);
  await assert.rejects(garbageCollect(be, { graceMs: 0, clockMarginMs: 0 }), (e: Error) => {
    assert.match(e.message, new RegExp(`pack ${packId}`));
    return true;
  });
  assert.deepEqual(await objects(be), before, "no object written or deleted");

  // Packs condemned by an earlier gc are not deleted either when a later gc finds a damaged trailer.
  await be.delete(packObjectName(packId));
  const first = await garbageCollect(be, { graceMs: 0, clockMarginMs: 0 });
  assert.ok(first.condemned.length > 0);
  const again = await damagedOrphanPack(be);
  const condemned = await objects(be);
  await assert.rejects(garbageCollect(be, { graceMs: 0, clockMarginMs: 0 }), new RegExp(`pack ${again}`));
  assert.deepEqual(await objects(be), condemned, "no condemned pack deleted");
});

Deno.test("garbageCollect() stops with nothing changed at an unreadable snapshot, a missing reference segment or a damaged index segment", async () => {
  await using dir = await tempDir();
  const { be, kept } = await repoWithGarbage(dir.path);
  const good = await Deno.readFile(`${dir.path}/repo/snapshots/${kept}`);
  const damaged = good.slice();
  damaged[10] ^= 0xff;
  await Deno.writeFile(`${dir.path}/repo/snapshots/${kept}`, damaged);
  const before = await objects(be);
  await assert.rejects(garbageCollect(be, { graceMs: 0, clockMarginMs: 0 }), new RegExp(kept));
  assert.deepEqual(await objects(be), before);

  await Deno.writeFile(`${dir.path}/repo/snapshots/${kept}`, good);
  const [info] = (await listSnapshots(be)).filter((s) => s.id === kept);
  const seg = `refs/${info.refSegments[0]}`;
  const segBytes = await be.get(seg);
  await be.delete(seg);
  const without = await objects(be);
  await assert.rejects(garbageCollect(be, { graceMs: 0, clockMarginMs: 0 }), /Missing refs/);
  assert.deepEqual(await objects(be), without);
  await be.put(seg, segBytes);

  // A damaged index segment: it gives the listings of the packs it names, so gc stops there too.
  const [idx] = await Array.fromAsync(be.list("index/"));
  const idxPath = `${dir.path}/repo/${idx.name}`;
  const idxBytes = await Deno.readFile(idxPath);
  const badIdx = idxBytes.slice();
  badIdx[20] ^= 0xff;
  await Deno.writeFile(idxPath, badIdx);
  const withBadIndex = await objects(be);
  await assert.rejects(garbageCollect(be, { graceMs: 0, clockMarginMs: 0 }), /Damaged index/);
  assert.deepEqual(await objects(be), withBadIndex);
  await Deno.writeFile(idxPath, idxBytes);
  const ok = await garbageCollect(be, { graceMs: 0, clockMarginMs: 0 });
  assert.ok(ok.condemned.length > 0);
});

/** A local backend that records the packs read from. */
class CountingBackend extends LocalBackend {
  packReads: string[] = [];
  override get(name: string, range?: Parameters<LocalBackend["get"]>[1]) {
    if (name.startsWith("data/")) this.packReads.push(name.slice(name.lastIndexOf("/") + 1));
    return super.get(name, range);
  }
}

Deno.test("garbageCollect() reads the trailers only of packs no index segment lists", async () => {
  await using dir = await tempDir();
  const { be } = await repoWithGarbage(dir.path);
  const counting = new CountingBackend(be.root);
  const r = await garbageCollect(counting, { graceMs: 0, clockMarginMs: 0 });
  assert.ok(r.packs > 5 && r.condemned.length > 0);
  assert.deepEqual(counting.packReads, [], "the index listed every pack");

  const b = new PackBuilder("h");
  b.add("data", "cd".repeat(32), deterministicBytes("unindexed", 2_000));
  const { bytes, listing } = b.finish();
  await be.put(packObjectName(listing.packId), bytes);
  counting.packReads = [];
  await new Promise((r) => setTimeout(r, 20));
  const again = await garbageCollect(counting, { graceMs: 0, clockMarginMs: 0 });
  assert.deepEqual([...new Set(counting.packReads)], [listing.packId], "only the unindexed pack's trailer");
  assert.ok(again.condemned.includes(listing.packId));
});
