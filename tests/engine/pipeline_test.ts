import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { packObjectName } from "../../engine/repo/pack.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { loadSnapshot } from "../../engine/repo/snapshot.ts";
import { loadTree } from "../../engine/repo/tree.ts";
import { concat } from "../../engine/repo/bytes.ts";
import { denoFileSystem, type FileSystem } from "../../engine/repo/fs.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const MIB = 1024 * 1024;

// Default chunk sizes: blobs go through the worker threads (codec_pool.ts) and the open-pack reader.
Deno.test("backup and restore with the default chunker: workers, holes, read-ahead, and a damaged blob", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, crypto.getRandomValues(new Uint8Array(32)), { namespace: "h" });
  const ns = repo.namespace("h");
  const src = `${dir.path}/src`;
  await Deno.mkdir(src);
  const files: Record<string, Uint8Array> = {
    "big.bin": deterministicBytes("big", 5 * MIB),
    "mid-hole.bin": concat(
      deterministicBytes("m1", MIB),
      new Uint8Array(9 * MIB),
      deterministicBytes("m2", MIB),
    ),
    "end-hole.bin": concat(deterministicBytes("e1", 700 * 1024), new Uint8Array(9 * MIB)),
    "text.txt": new TextEncoder().encode("a line of text to compress\n".repeat(100_000)),
    "small.bin": deterministicBytes("small", 1000),
  };
  for (const [name, bytes] of Object.entries(files)) await Deno.writeFile(`${src}/${name}`, bytes);
  const r = await backupFiles(ns, { paths: [src] });
  assert.deepEqual(r.errors, []);
  const target = `${dir.path}/out`;
  const restored = await restoreSnapshot(ns, r.snapshotId, { target });
  assert.deepEqual(restored.errors, []);
  for (const [name, bytes] of Object.entries(files)) {
    assert.deepEqual(await Deno.readFile(`${target}${src}/${name}`), bytes, name);
  }
  // A throttled restore writes from the main thread (where the throttle is), each blob verified on a worker.
  const throttled = `${dir.path}/out-throttled`;
  const slow = await restoreSnapshot(ns, r.snapshotId, { target: throttled, limitBytesPerSecond: 1e10 });
  assert.deepEqual(slow.errors, []);
  for (const [name, bytes] of Object.entries(files)) {
    assert.deepEqual(await Deno.readFile(`${throttled}${src}/${name}`), bytes, name);
  }
  assert.equal((await Deno.stat(`${throttled}${src}/end-hole.bin`)).size, files["end-hole.bin"].length);

  // Damage one blob of big.bin: that file is refused (nothing under its name), the rest restores.
  const snap = await loadSnapshot(ns, r.snapshotId);
  let tree = await loadTree(ns, snap.tree, ns.hasher());
  for (const part of src.slice(1).split("/")) {
    tree = await loadTree(ns, tree.entries.find((e) => e.name === part)!.subtree!, ns.hasher());
  }
  const big = tree.entries.find((e) => e.name === "big.bin")!;
  assert.ok(big.content!.length >= 2);
  const entry = repo.index.lookup("h", big.content![1])!;
  const path = `${dir.path}/repo/${packObjectName(entry.packId)}`;
  const pack = await Deno.readFile(path);
  pack[entry.offset + entry.length - 20] ^= 0x40;
  await Deno.writeFile(path, pack);
  const reopened = await Repository.open(be, repo.kek);
  const target2 = `${dir.path}/out2`;
  const again = await restoreSnapshot(reopened.namespace("h"), r.snapshotId, { target: target2 });
  assert.deepEqual(again.errors.map((e) => e.path), [`${src}/big.bin`]);
  assert.match(again.errors[0].error, new RegExp(`Damaged blob ${big.content![1]}`));
  await assert.rejects(Deno.stat(`${target2}${src}/big.bin`), Deno.errors.NotFound);
  for (const [name, bytes] of Object.entries(files)) {
    if (name !== "big.bin") assert.deepEqual(await Deno.readFile(`${target2}${src}/${name}`), bytes, name);
  }
  // The same from the main thread (a throttled restore).
  const target3 = `${dir.path}/out3`;
  const slow2 = await restoreSnapshot(reopened.namespace("h"), r.snapshotId, {
    target: target3,
    limitBytesPerSecond: 1e10,
  });
  assert.deepEqual(slow2.errors.map((e) => e.path), [`${src}/big.bin`]);
  assert.match(slow2.errors[0].error, new RegExp(`Damaged blob ${big.content![1]}`));
  await assert.rejects(Deno.stat(`${target3}${src}/big.bin`), Deno.errors.NotFound);
});

// Files of at least the chunker's minimum are chunked on a worker (backup.ts #readStreamed): duplicates
// across files being read at once are stored once, and a read that fails midway names the file, keeps
// the rest of the backup whole, and leaves no claim behind.
Deno.test("worker-chunked files: dedup across files read at once, a read failing midway, no claim left", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, crypto.getRandomValues(new Uint8Array(32)), { namespace: "h" });
  const ns = repo.namespace("h");
  const src = `${dir.path}/src`;
  await Deno.mkdir(src);
  const shared = deterministicBytes("shared", 6 * MIB);
  const files: Record<string, Uint8Array> = {
    "a.bin": shared,
    "b.bin": shared,
    "c.bin": concat(shared.subarray(0, 3 * MIB), deterministicBytes("c-tail", 2 * MIB)),
    "d.bin": deterministicBytes("d", 3 * MIB),
    "fails.bin": deterministicBytes("fails", 5 * MIB),
  };
  for (const [name, bytes] of Object.entries(files)) await Deno.writeFile(`${src}/${name}`, bytes);
  const failAfter = 3 * MIB + 12345;
  const fs: FileSystem = {
    ...denoFileSystem,
    async open(path) {
      const f = await denoFileSystem.open(path);
      if (!path.endsWith("/fails.bin")) return f;
      let read = 0;
      return {
        stat: () => f.stat(),
        close: () => f.close(),
        async read(p: Uint8Array) {
          if (read >= failAfter) throw new Error("Input/output error");
          const n = await f.read(p.subarray(0, Math.min(p.length, failAfter - read)));
          if (n !== null) read += n;
          return n;
        },
      };
    },
  };
  const r = await backupFiles(ns, { paths: [src], fs });
  assert.deepEqual(r.errors, [{ path: `${src}/fails.bin`, error: "cannot read: Input/output error" }]);
  assert.equal(r.files, 4);
  // The shared 6 MiB are stored once (the chunks of b.bin and c.bin's first half dedup against a.bin's).
  assert.ok(r.bytesNew < 6 * MIB + 2 * MIB + 3 * MIB + failAfter + MIB, `bytesNew ${r.bytesNew}`);
  assert.ok(r.bytesNew >= 6 * MIB + 3 * MIB, `bytesNew ${r.bytesNew}`);
  const v = await verifyRepository(repo, { all: true });
  assert.deepEqual(v.problems, []);
  const target = `${dir.path}/out`;
  const restored = await restoreSnapshot(ns, r.snapshotId, { target });
  assert.deepEqual(restored.errors, []);
  for (const [name, bytes] of Object.entries(files)) {
    if (name === "fails.bin") {
      await assert.rejects(Deno.stat(`${target}${src}/${name}`), Deno.errors.NotFound);
    } else {
      assert.deepEqual(await Deno.readFile(`${target}${src}/${name}`), bytes, name);
    }
  }
  // Every claim ended: a second backup of the same files (now readable) stores only the failed file's rest.
  const again = await backupFiles(ns, { paths: [src] });
  assert.deepEqual(again.errors, []);
  assert.ok(again.bytesNew <= 5 * MIB, `bytesNew ${again.bytesNew}`);
  const target2 = `${dir.path}/out2`;
  assert.deepEqual((await restoreSnapshot(ns, again.snapshotId, { target: target2 })).errors, []);
  for (const [name, bytes] of Object.entries(files)) {
    assert.deepEqual(await Deno.readFile(`${target2}${src}/${name}`), bytes, name);
  }
});

// A failure to store (not to read) ends the backup with that error and no snapshot, whichever path the
// files took (read here, or chunked on a worker) and however many were in flight.
Deno.test("a pack that cannot be written fails the backup, naming why; no snapshot is written", async () => {
  await using dir = await tempDir();
  class FailingBackend extends LocalBackend {
    packs = 0;
    override putParts(name: string, parts: Uint8Array[]): Promise<void> {
      if (name.startsWith("data/") && ++this.packs >= 2) {
        return Promise.reject(new Error("No space left on device"));
      }
      return super.putParts(name, parts);
    }
  }
  const be = new FailingBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, crypto.getRandomValues(new Uint8Array(32)), { namespace: "h" });
  const src = `${dir.path}/src`;
  for (let d = 0; d < 3; d++) {
    await Deno.mkdir(`${src}/d${d}`, { recursive: true });
    for (let i = 0; i < 6; i++) {
      const size = i % 2 ? 3 * MIB : 200 * 1024;
      await Deno.writeFile(`${src}/d${d}/f${i}`, deterministicBytes(`f${d}-${i}`, size));
    }
  }
  await assert.rejects(backupFiles(repo.namespace("h"), { paths: [src] }), /No space left on device/);
  assert.deepEqual(await Array.fromAsync(be.list("snapshots/")), []);
});
