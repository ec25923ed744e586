import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { IntegrityError, WrongKeyError } from "../../engine/repo/errors.ts";
import { CACHEDIR_SIGNATURE } from "../../engine/repo/exclude.ts";
import { denoFileSystem, type FileSystem } from "../../engine/repo/fs.ts";
import { packObjectName } from "../../engine/repo/pack.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { ancestorStamp, deterministicBytes, tempDir } from "./helpers.ts";

const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 64 * 1024 };
const KEK = crypto.getRandomValues(new Uint8Array(32));

async function setup(dir: string, options = {}) {
  const be = new LocalBackend(`${dir}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", ...SMALL, ...options });
  const src = `${dir}/src`;
  await Deno.mkdir(`${src}/sub`, { recursive: true });
  await Deno.writeFile(`${src}/a.bin`, deterministicBytes("a", 50_000));
  await Deno.writeFile(`${src}/b.bin`, deterministicBytes("b", 30_000));
  await Deno.writeFile(`${src}/sub/c.txt`, new TextEncoder().encode("hello\n"));
  return { be, repo, ns: repo.namespace("h"), src };
}

function countingFs(): FileSystem & { opened: string[] } {
  const opened: string[] = [];
  return {
    ...denoFileSystem,
    opened,
    open: (path) => {
      opened.push(path);
      return denoFileSystem.open(path);
    },
  };
}

const later = () => new Date(Date.now() + 10_000);

Deno.test("backupFiles() of unchanged data adds almost nothing the second time (dedup)", async () => {
  await using dir = await tempDir();
  const { be, ns, src } = await setup(dir.path);
  // Unchanged data includes the folders above src (a backup stores its full absolute path): if another
  // process touches one of them (e.g. /tmp) around a backup, that backup rightly stores new ancestor trees.
  // So the backup compared is one whose ancestors were the same as those its predecessor saw.
  const stampBefore = await ancestorStamp(src);
  const first = await backupFiles(ns, { paths: [src] });
  let seen: string | null = (await ancestorStamp(src)) === stampBefore ? stampBefore : null;
  assert.ok(first.bytesNew >= 80_000);
  let packs = 0;
  let second = first;
  for (let i = 0; i < 10; i++) {
    const before = await ancestorStamp(src);
    packs = (await Array.fromAsync(be.list("data/"))).length;
    second = await backupFiles(ns, { paths: [src] });
    const after = await ancestorStamp(src);
    if (before === after && before === seen) break;
    seen = before === after ? after : null;
  }
  assert.equal(second.bytesRead, first.bytesRead, "a backup without parent reads everything");
  assert.equal(second.bytesNew, 0);
  assert.equal(second.bytesStored, 0);
  assert.equal((await Array.fromAsync(be.list("data/"))).length, packs);
  // A 1-byte change in one file stores about one chunk, not the file.
  const a = deterministicBytes("a", 50_000);
  a[25_000] ^= 1;
  await Deno.writeFile(`${src}/a.bin`, a);
  const third = await backupFiles(ns, { paths: [src] });
  assert.ok(third.bytesNew > 0 && third.bytesNew <= 2 * 16384, `bytesNew ${third.bytesNew}`);
});

Deno.test("backupFiles() with dedup off shares nothing across chains but reuses within one", async () => {
  await using dir = await tempDir();
  const { ns, src } = await setup(dir.path, { dedup: false });
  const first = await backupFiles(ns, { paths: [src], now: later });
  const full = await backupFiles(ns, { paths: [src] });
  assert.equal(full.bytesNew, first.bytesNew, "a new chain writes every chunk anew");
  const inc = await backupFiles(ns, { paths: [src], parent: first.snapshotId });
  assert.equal(inc.bytesNew, 0);
  assert.equal(inc.reusedFiles, 3);
  const target = `${dir.path}/t`;
  assert.deepEqual((await restoreSnapshot(ns, inc.snapshotId, { target })).errors, []);
  assert.deepEqual(await Deno.readFile(`${target}${src}/a.bin`), await Deno.readFile(`${src}/a.bin`));
});

Deno.test("backupFiles() incremental does not read unchanged files, and reads racy or changed ones", async () => {
  await using dir = await tempDir();
  const { ns, src } = await setup(dir.path);
  // The parent "started" 10 s from now: every file is older than its racy window.
  const parent = await backupFiles(ns, { paths: [src], now: later });
  await Deno.writeFile(`${src}/b.bin`, deterministicBytes("b2", 30_000));
  const fs = countingFs();
  const inc = await backupFiles(ns, { paths: [src], parent: parent.snapshotId, fs });
  assert.deepEqual(fs.opened.filter((p) => !p.endsWith("CACHEDIR.TAG")), [`${src}/b.bin`]);
  assert.equal(inc.reusedFiles, 2);
  assert.equal(inc.bytesRead, 30_000);

  // A parent that started right now: files changed within 2 s of it are read again.
  const racyParent = await backupFiles(ns, { paths: [src] });
  const fs2 = countingFs();
  const again = await backupFiles(ns, { paths: [src], parent: racyParent.snapshotId, fs: fs2 });
  assert.equal(again.reusedFiles, 0);
  assert.equal(fs2.opened.filter((p) => !p.endsWith("CACHEDIR.TAG")).length, 3);

  const target = `${dir.path}/t`;
  assert.deepEqual((await restoreSnapshot(ns, inc.snapshotId, { target })).errors, []);
  for (const f of ["a.bin", "b.bin", "sub/c.txt"]) {
    assert.deepEqual(await Deno.readFile(`${target}${src}/${f}`), await Deno.readFile(`${src}/${f}`));
  }
});

Deno.test("backupFiles() lists unreadable files and honours excludes, globs and CACHEDIR.TAG", async () => {
  await using dir = await tempDir();
  const { ns, src } = await setup(dir.path);
  await Deno.mkdir(`${src}/cache`);
  await Deno.writeTextFile(`${src}/cache/CACHEDIR.TAG`, CACHEDIR_SIGNATURE + "\n");
  await Deno.writeTextFile(`${src}/cache/big`, "cached");
  await Deno.writeTextFile(`${src}/skip.tmp`, "x");
  await Deno.mkdir(`${src}/node_modules`);
  const fs: FileSystem = {
    ...denoFileSystem,
    open: (path) =>
      path.endsWith("/b.bin") ? Promise.reject(new Error("Permission denied")) : denoFileSystem.open(path),
  };
  const progress: string[] = [];
  const r = await backupFiles(ns, {
    paths: [src],
    fs,
    excludePatterns: ["*.tmp", "node_modules"],
    excludePaths: [`${src}/sub`],
    progress: (p) => progress.push(p.currentPath),
  });
  assert.deepEqual(r.errors, [{ path: `${src}/b.bin`, error: "cannot open: Permission denied" }]);
  assert.ok(progress.includes(`${src}/a.bin`));
  const target = `${dir.path}/t`;
  await restoreSnapshot(ns, r.snapshotId, { target });
  const names = (await Array.fromAsync(Deno.readDir(`${target}${src}`))).map((e) => e.name).sort();
  assert.deepEqual(names, ["a.bin"]);
  await assert.rejects(backupFiles(ns, { paths: [`${dir.path}/missing`] }), /Cannot back up .*missing/);
});

Deno.test("restoreSnapshot() never writes a damaged file, names it, and restores the rest", async () => {
  await using dir = await tempDir();
  const { be, repo, ns, src } = await setup(dir.path);
  const r = await backupFiles(ns, { paths: [src] });
  // Damage the first chunk of a.bin inside its pack.
  const { loadSnapshot } = await import("../../engine/repo/snapshot.ts");
  const { loadTree } = await import("../../engine/repo/tree.ts");
  const snap = await loadSnapshot(ns, r.snapshotId);
  let tree = await loadTree(ns, snap.tree, ns.hasher());
  for (const part of src.slice(1).split("/")) {
    tree = await loadTree(ns, tree.entries.find((e) => e.name === part)!.subtree!, ns.hasher());
  }
  const chunkId = tree.entries.find((e) => e.name === "a.bin")!.content![0];
  const loc = repo.index.lookup("h", chunkId)!;
  const pack = await be.get(packObjectName(loc.packId));
  pack[loc.offset + loc.length - 3] ^= 0x10;
  await be.put(packObjectName(loc.packId), pack);

  const target = `${dir.path}/t`;
  const res = await restoreSnapshot(ns, r.snapshotId, { target });
  assert.equal(res.errors.length, 1);
  assert.equal(res.errors[0].path, `${src}/a.bin`);
  assert.match(res.errors[0].error, new RegExp(`Damaged blob ${chunkId}`));
  await assert.rejects(Deno.lstat(`${target}${src}/a.bin`), Deno.errors.NotFound);
  assert.deepEqual(await Deno.readFile(`${target}${src}/b.bin`), await Deno.readFile(`${src}/b.bin`));
  assert.deepEqual(await Deno.readFile(`${target}${src}/sub/c.txt`), await Deno.readFile(`${src}/sub/c.txt`));
  const leftovers = (await Array.fromAsync(Deno.readDir(`${target}${src}`))).map((e) => e.name);
  assert.ok(!leftovers.some((n) => n.startsWith(".cadres-restore-")), "no temporary file left");

  // A damaged tree: its folder is named, its siblings restore.
  const subId = tree.entries.find((e) => e.name === "sub")!.subtree!;
  const tloc = repo.index.lookup("h", subId)!;
  const tpack = await be.get(packObjectName(tloc.packId));
  tpack[tloc.offset + 12] ^= 0x01;
  await be.put(packObjectName(tloc.packId), tpack);
  const target2 = `${dir.path}/t2`;
  const res2 = await restoreSnapshot(ns, r.snapshotId, { target: target2 });
  const subErr = res2.errors.find((e) => e.path === `${src}/sub`);
  assert.ok(subErr && subErr.error.includes(`Damaged tree ${subId}`), JSON.stringify(res2.errors));
  assert.deepEqual(await Deno.readFile(`${target2}${src}/b.bin`), await Deno.readFile(`${src}/b.bin`));
});

Deno.test("restoreSnapshot() of some paths; refuses a non-empty target without overwrite", async () => {
  await using dir = await tempDir();
  const { ns, src } = await setup(dir.path);
  const r = await backupFiles(ns, { paths: [src] });
  const target = `${dir.path}/t`;
  const res = await restoreSnapshot(ns, r.snapshotId, { target, include: [`${src}/sub`] });
  assert.deepEqual(res.errors, []);
  assert.deepEqual((await Array.fromAsync(Deno.readDir(`${target}${src}`))).map((e) => e.name), ["sub"]);
  await assert.rejects(restoreSnapshot(ns, r.snapshotId, { target }), /is not empty/);
  await Deno.writeTextFile(`${target}${src}/sub/c.txt`, "changed");
  const again = await restoreSnapshot(ns, r.snapshotId, { target, overwrite: true });
  assert.deepEqual(again.errors, []);
  assert.equal(await Deno.readTextFile(`${target}${src}/sub/c.txt`), "hello\n");
});

Deno.test("a wrong key opens nothing and nothing is written; a damaged index is named", async () => {
  await using dir = await tempDir();
  const { be, ns, src } = await setup(dir.path);
  await backupFiles(ns, { paths: [src] });
  await assert.rejects(Repository.open(be, crypto.getRandomValues(new Uint8Array(32))), WrongKeyError);
  const [seg] = (await Array.fromAsync(be.list("index/"))).map((o) => o.name);
  const bytes = await be.get(seg);
  bytes[bytes.length - 40] ^= 1;
  await be.put(seg, bytes);
  // Changed on purpose: a damaged index segment no longer makes the repository unopenable. It is named
  // (and skipped, its packs listed from their trailers: tests/engine/damage_test.ts).
  const reopened = await Repository.open(be, KEK);
  assert.ok(reopened.indexDamage.some((e: unknown) => e instanceof IntegrityError && e.id === seg));
  assert.ok(reopened.warnings.some((w) => w.includes(seg)));
});
