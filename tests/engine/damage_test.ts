/**
 * Damage and hostile input: crafted trees, damaged snapshots, index segments, reference segments,
 * condemnation markers and configs. Each is named, never silently wrong, and never blocks the rest.
 */
import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { FormatVersionError, IntegrityError } from "../../engine/repo/errors.ts";
import { type Namespace, Repository } from "../../engine/repo/repository.ts";
import { CONDEMNED_PREFIX, forgetSnapshots, garbageCollect } from "../../engine/repo/gc.ts";
import { packObjectName } from "../../engine/repo/pack.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { repairIndex } from "../../engine/repo/index.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";
import { assertSameTree } from "./tree_fixture.ts";
import { loadSnapshot, readSnapshotInfo, writeSnapshot } from "../../engine/repo/snapshot.ts";
import { decodeTree, loadTree } from "../../engine/repo/tree.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 64 * 1024 };
const KEK = crypto.getRandomValues(new Uint8Array(32));

function treeBytes(entries: Record<string, unknown>[]): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ version: 1, entries }));
}

Deno.test("decodeTree() refuses the entry names encodeTree() refuses, naming the tree", () => {
  const base = { type: "file", mode: 0o644, uid: 0, gid: 0, mtimeMs: 0, size: 0, content: [], xattrs: null };
  for (const name of ["../escaped", "a/b", ".", "..", "", "nul\u0000x", "/abs"]) {
    assert.throws(
      () => decodeTree("t-bad", treeBytes([{ name, ...base }])),
      (e: unknown) => e instanceof IntegrityError && e.kind === "tree" && e.id === "t-bad",
      JSON.stringify(name),
    );
  }
  assert.equal(decodeTree("t-ok", treeBytes([{ name: "..x", ...base }])).entries.length, 1);
});

Deno.test("restore of a crafted tree naming ../escaped writes nothing outside the target", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", encryption: "none", ...SMALL });
  const ns = repo.namespace("h");
  const h = ns.hasher();
  const data = new TextEncoder().encode("pwned\n");
  const { id: cid } = await ns.saveBlob("data", data, h);
  const entry = { type: "file", mode: 0o644, uid: 0, gid: 0, mtimeMs: 0, size: data.length, content: [cid] };
  const { id: tid } = await ns.saveBlob(
    "tree",
    treeBytes([{ name: "../escaped", ...entry, xattrs: null }]),
    h,
  );
  await ns.flush();
  const now = new Date().toISOString();
  const sid = await writeSnapshot(ns, {
    version: 1,
    namespace: "h",
    host: "h",
    kind: "full",
    paths: ["/x"],
    parent: null,
    tree: tid,
    startTime: now,
    endTime: now,
    stats: { files: 1, dirs: 0, bytesRead: 0, bytesNew: 0, bytesStored: 0, durationMs: 0 },
    errors: [],
    chainSalt: null,
  }, [cid, tid]);
  await Deno.mkdir(`${dir.path}/t/inner`, { recursive: true });
  const res = await restoreSnapshot(ns, sid, { target: `${dir.path}/t/inner` });
  assert.equal(res.errors.length, 1);
  assert.match(res.errors[0].error, new RegExp(`Damaged tree ${tid}`));
  await assert.rejects(Deno.lstat(`${dir.path}/t/escaped`), Deno.errors.NotFound);
  assert.deepEqual([...Deno.readDirSync(`${dir.path}/t/inner`)], []);
});

Deno.test("a damaged index segment: open works, restore is byte-identical, verify names it; repair mends it", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", ...SMALL });
  const src = `${dir.path}/src`;
  await Deno.mkdir(`${src}/sub`, { recursive: true });
  await Deno.writeFile(`${src}/a.bin`, deterministicBytes("idx-a", 300_000));
  await Deno.writeFile(`${src}/sub/b.bin`, deterministicBytes("idx-b", 40_000));
  const r = await backupFiles(repo.namespace("h"), { paths: [src] });
  const segs = (await Array.fromAsync(be.list("index/"))).map((o) => o.name);
  assert.ok(segs.length >= 2, "several segments (one is damaged, the others stay)");
  const seg = segs[0];
  const bytes = await be.get(seg);
  bytes[20] ^= 1;
  await be.put(seg, bytes);

  const opened = await Repository.open(be, KEK);
  assert.deepEqual(opened.indexDamage.map((e) => e.id), [seg]);
  assert.ok(opened.warnings[0].includes(seg));
  const target = `${dir.path}/t`;
  const res = await restoreSnapshot(opened.namespace("h"), r.snapshotId, { target });
  assert.deepEqual(res.errors, []);
  await assertSameTree(src, `${target}${src}`);
  const v = await verifyRepository(opened, { all: true });
  assert.equal(v.ok, false);
  assert.deepEqual(v.problems.map((p) => [p.kind, p.id]), [["index", seg]]);

  const repair = await repairIndex(be);
  assert.deepEqual(repair.damagedSegments.map((e) => e.id), [seg]);
  assert.ok(repair.removed.includes(seg));
  assert.equal(await be.exists(seg), false);
  const mended = await Repository.open(be, KEK);
  assert.deepEqual(mended.indexDamage, []);
  assert.deepEqual(mended.warnings, []);
  assert.deepEqual((await verifyRepository(mended, { all: true })).problems, []);
  // A second repair writes the same segment again and must not delete it.
  await repairIndex(be);
  assert.deepEqual((await verifyRepository(await Repository.open(be, KEK), { all: true })).problems, []);
  const t2 = `${dir.path}/t2`;
  assert.deepEqual((await restoreSnapshot(mended.namespace("h"), r.snapshotId, { target: t2 })).errors, []);
  await assertSameTree(src, `${t2}${src}`);
});

Deno.test("a damaged condemnation marker stops gc before it deletes anything; verify and open name it", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", ...SMALL });
  const src = `${dir.path}/src`;
  await Deno.mkdir(src);
  await Deno.writeFile(`${src}/a.bin`, deterministicBytes("cm-a", 100_000));
  const r = await backupFiles(repo.namespace("h"), { paths: [src] });
  await forgetSnapshots(be, [r.snapshotId]);
  const first = await garbageCollect(be, { graceMs: 0 });
  assert.ok(first.condemned.length >= 2);
  const markers = (await Array.fromAsync(be.list(CONDEMNED_PREFIX))).map((o) => o.name).sort();
  const bad = markers[0];
  const bytes = await be.get(bad);
  bytes[bytes.indexOf(0x3a /* ":" */) + 5] ^= 1; // a digit of condemnedAt: still JSON, still a time
  await be.put(bad, bytes);
  const packsBefore = (await Array.fromAsync(be.list("data/"))).length;

  await assert.rejects(
    garbageCollect(be, { graceMs: 0 }),
    (e: unknown) => e instanceof IntegrityError && e.kind === "condemned" && e.id === bad,
  );
  assert.equal((await Array.fromAsync(be.list("data/"))).length, packsBefore, "nothing deleted");
  const opened = await Repository.open(be, KEK);
  assert.ok(opened.warnings.some((w) => w.includes(bad)));
  assert.ok(opened.deadPacks.has(bad.slice(CONDEMNED_PREFIX.length)), "its pack still counts as condemned");
  const v = await verifyRepository(opened);
  assert.deepEqual(v.problems.map((p) => [p.kind, p.id]), [["condemned", bad]]);

  // Written markers carry a checksum; one of the form before checksums is still read.
  await be.put(bad, new TextEncoder().encode(JSON.stringify({ condemnedAt: new Date(0).toISOString() })));
  const second = await garbageCollect(be, { graceMs: 0 });
  assert.equal(second.deleted.length, first.condemned.length);
  assert.equal((await Array.fromAsync(be.list("data/"))).length, packsBefore - first.condemned.length);
});

Deno.test("a damaged parent tree turns off reuse and is recorded, naming the parent snapshot", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", ...SMALL });
  const ns = repo.namespace("h");
  const src = `${dir.path}/src`;
  await Deno.mkdir(`${src}/sub`, { recursive: true });
  await Deno.writeFile(`${src}/sub/a.bin`, deterministicBytes("pt-a", 30_000));
  const parent = await backupFiles(ns, { paths: [src], now: () => new Date(Date.now() + 10_000) });
  // Damage the tree of src/sub inside its pack.
  const snap = await loadSnapshot(ns, parent.snapshotId);
  const subId = (await findSubtree(ns, snap.tree, `${src}/sub`))!;
  const loc = repo.index.lookup("h", subId)!;
  const pack = await be.get(packObjectName(loc.packId));
  pack[loc.offset + 12] ^= 1;
  await be.put(packObjectName(loc.packId), pack);

  const inc = await backupFiles(ns, { paths: [src], parent: parent.snapshotId });
  assert.equal(inc.reusedFiles, 0);
  assert.equal(inc.errors.length, 1);
  assert.equal(inc.errors[0].path, `${src}/sub`);
  assert.match(
    inc.errors[0].error,
    new RegExp(`parent snapshot ${parent.snapshotId}.*Damaged tree ${subId}`),
  );
});

async function findSubtree(ns: Namespace, root: string, path: string): Promise<string | null> {
  let id = root;
  for (const part of path.slice(1).split("/")) {
    const t = await loadTree(ns, id, ns.hasher());
    const e = t.entries.find((x) => x.name === part);
    if (!e?.subtree) return null;
    id = e.subtree;
  }
  return id;
}

Deno.test("a single flipped byte anywhere in the config is a damaged config, named, not 'not a repository'", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  await Repository.init(be, KEK, { namespace: "h", ...SMALL });
  const original = await be.get("config");
  let positions = 0;
  for (let i = 0; i < original.length; i++) {
    const bytes = original.slice();
    bytes[i] ^= 1;
    await be.put("config", bytes);
    await assert.rejects(
      Repository.open(be, KEK),
      (e: unknown) =>
        (e instanceof IntegrityError && e.kind === "config" && /Damaged config config/.test(e.message)) ||
        // a flipped digit of the repository id fails the key objects' authentication, which says so
        (e instanceof IntegrityError && e.kind === "key" && /config's repository id/.test(e.message)) ||
        // a flipped digit of "version" reads as a newer format: also refused, never opened
        (e instanceof FormatVersionError),
      `byte ${i}`,
    );
    positions++;
  }
  assert.ok(positions > 200);
  await be.put("config", original);
  await Repository.open(be, KEK);
});

Deno.test("a damaged reference segment: verify names it, gc stops before deleting, restore still works", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", ...SMALL });
  const src = `${dir.path}/src`;
  await Deno.mkdir(src);
  await Deno.writeFile(`${src}/a.bin`, deterministicBytes("refs-a", 60_000));
  const old = await backupFiles(repo.namespace("h"), { paths: [src] });
  await Deno.writeFile(`${src}/a.bin`, deterministicBytes("refs-b", 60_000));
  const r = await backupFiles(repo.namespace("h"), { paths: [src] });
  await forgetSnapshots(be, [old.snapshotId]);
  const info = await readSnapshotInfo(be, r.snapshotId);
  const seg = `refs/${info.refSegments[0]}`;
  const bytes = await be.get(seg);
  bytes[bytes.length - 40] ^= 0x80;
  await be.put(seg, bytes);

  const v = await verifyRepository(await Repository.open(be, KEK));
  assert.deepEqual(v.problems.map((p) => [p.kind, p.id]), [["refs", seg]]);
  const before = (await Array.fromAsync(be.list(""))).map((o) => o.name).sort();
  await assert.rejects(
    garbageCollect(be, { graceMs: 0 }),
    (e: unknown) => e instanceof IntegrityError && e.kind === "refs" && e.id === seg,
  );
  assert.deepEqual((await Array.fromAsync(be.list(""))).map((o) => o.name).sort(), before, "nothing deleted");
  const target = `${dir.path}/t`;
  const res = await restoreSnapshot((await Repository.open(be, KEK)).namespace("h"), r.snapshotId, {
    target,
  });
  assert.deepEqual(res.errors, []);
  assert.deepEqual(await Deno.readFile(`${target}${src}/a.bin`), await Deno.readFile(`${src}/a.bin`));
});
