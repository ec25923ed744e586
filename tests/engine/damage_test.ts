/**
 * Damage and hostile input: crafted trees, damaged snapshots, index segments, reference segments,
 * condemnation markers and configs. Each is named, never silently wrong, and never blocks the rest.
 */
import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { IntegrityError } from "../../engine/repo/errors.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { repairIndex } from "../../engine/repo/index.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";
import { assertSameTree } from "./tree_fixture.ts";
import { writeSnapshot } from "../../engine/repo/snapshot.ts";
import { decodeTree } from "../../engine/repo/tree.ts";
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
