/**
 * The agent's cache of trees and index (engine/agent/cache.ts) in front of a repository: what a backup
 * uploads and what a job reads is kept, so that the next job (a new process) reads no index segment and no
 * tree blob from the storage; a cached object whose bytes no longer hash to its name is never used (it is
 * read again and replaced); the cache stays within its bound, least recently used first.
 */
import assert from "node:assert/strict";
import { type Backend, type ByteRange, LocalBackend, type ObjectInfo } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import type { NamespaceKeys } from "../../engine/repo/keys.ts";
import { decodeIndexSegment } from "../../engine/repo/index.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { CachingBackend, ObjectCache } from "../../engine/agent/cache.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";
import { assertSameTree } from "./tree_fixture.ts";

const PARAMS = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 64 * 1024 };

/** A backend that records every read. */
class CountingBackend implements Backend {
  readonly gets: Array<{ name: string; range?: ByteRange }> = [];
  constructor(readonly inner: Backend) {}
  get location() {
    return this.inner.location;
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  get(name: string, range?: ByteRange) {
    this.gets.push({ name, range });
    return this.inner.get(name, range);
  }
  put(name: string, data: Uint8Array) {
    return this.inner.put(name, data);
  }
  delete(name: string) {
    return this.inner.delete(name);
  }
  exists(name: string) {
    return this.inner.exists(name);
  }
  /** Reads of index segments and of tree blobs (the ranges `trees` names). */
  treeAndIndexReads(trees: Set<string>) {
    return this.gets.filter((g) =>
      g.name.startsWith("index/") ||
      (g.range && "offset" in g.range &&
        trees.has(`${g.name.slice(-64)}.${g.range.offset}.${g.range.length}`))
    );
  }
}

/** The ranges ("pack.offset.length") of every tree blob the repository's index lists. */
async function treeRanges(local: Backend): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const obj of local.list("index/")) {
    for (const l of decodeIndexSegment(obj.name, await local.get(obj.name))) {
      for (const e of l.entries) if (e.type === "tree") out.add(`${l.packId}.${e.offset}.${e.length}`);
    }
  }
  return out;
}

async function world(dir: string) {
  const src = `${dir}/src`;
  for (let d = 0; d < 40; d++) {
    await Deno.mkdir(`${src}/d${d}/inner`, { recursive: true });
    await Deno.writeFile(`${src}/d${d}/a.txt`, new TextEncoder().encode(`folder ${d}`));
    await Deno.writeFile(`${src}/d${d}/inner/b.bin`, deterministicBytes(`b${d}`, 3000));
  }
  const local = new LocalBackend(`${dir}/repo`);
  const created = await Repository.init(local, crypto.getRandomValues(new Uint8Array(32)), {
    namespace: "h",
    ...PARAMS,
  });
  const keys: NamespaceKeys = created.namespace("h").keys;
  /** Opens the repository as a new job would: a new process, the cache in `cacheDir` in front. */
  const open = async (cacheDir: string, maxBytes?: number) => {
    const counting = new CountingBackend(local);
    const cache = await ObjectCache.open(cacheDir, maxBytes);
    const repo = await Repository.openNamespace(new CachingBackend(counting, cache), keys);
    return { counting, cache, ns: repo.namespace("h") };
  };
  return { src, local, open };
}

Deno.test("agent cache: an incremental after a backup with the same cache reads no tree or index segment", async () => {
  await using dir = await tempDir("cadres-cache-");
  const w = await world(dir.path);
  const cacheDir = `${dir.path}/cache`;
  const first = await w.open(cacheDir);
  const full = await backupFiles(first.ns, { paths: [w.src] });
  assert.ok(first.cache.stats.added > 80, `written through: ${JSON.stringify(first.cache.stats)}`);

  await Deno.writeFile(`${w.src}/d3/a.txt`, new TextEncoder().encode("changed"));
  const warm = await w.open(cacheDir);
  const incr = await backupFiles(warm.ns, { paths: [w.src], parent: full.snapshotId });
  const trees = await treeRanges(w.local);
  assert.ok(trees.size >= 80);
  assert.deepEqual(warm.counting.treeAndIndexReads(trees), [], "everything came from the cache");
  assert.ok(warm.cache.stats.hits > 80 && warm.cache.stats.misses === 0, JSON.stringify(warm.cache.stats));

  // A cold cache reads them from the storage (and keeps them): the count above can fail.
  const cold = await w.open(`${dir.path}/cold-cache`);
  await restoreSnapshot(cold.ns, incr.snapshotId, { target: `${dir.path}/out-cold` });
  const coldReads = cold.counting.treeAndIndexReads(trees);
  assert.ok(coldReads.some((g) => g.name.startsWith("index/")));
  assert.ok(coldReads.filter((g) => g.name.startsWith("data/")).length >= 80);
  await assertSameTree(w.src, `${dir.path}/out-cold${w.src}`);
  // The same restore from the warm cache reads file content only.
  const again = await w.open(cacheDir);
  await restoreSnapshot(again.ns, incr.snapshotId, { target: `${dir.path}/out-warm` });
  assert.deepEqual(again.counting.treeAndIndexReads(trees), []);
  assert.ok(again.counting.gets.some((g) => g.name.startsWith("data/")), "file content is not cached");
  assert.ok(again.cache.stats.hits > 80);
  await assertSameTree(w.src, `${dir.path}/out-warm${w.src}`);
});

Deno.test("agent cache: a cached object whose bytes do not hash to its name is never used, and is replaced", async () => {
  await using dir = await tempDir("cadres-cache-");
  const w = await world(dir.path);
  const cacheDir = `${dir.path}/cache`;
  const first = await w.open(cacheDir);
  const full = await backupFiles(first.ns, { paths: [w.src] });
  // Damage one cached index segment and one cached tree blob (a flipped byte each), and put a stranger in.
  const flip = async (path: string) => {
    const bytes = await Deno.readFile(path);
    bytes[Math.floor(bytes.length / 2)] ^= 0x40;
    await Deno.writeFile(path, bytes);
  };
  const indexFile = (await Array.fromAsync(Deno.readDir(`${cacheDir}/index`)))[0].name;
  const trees = (await Array.fromAsync(Deno.readDir(`${cacheDir}/trees`))).map((e) => e.name).sort();
  await flip(`${cacheDir}/index/${indexFile}`);
  await flip(`${cacheDir}/trees/${trees[0]}`);
  await Deno.writeTextFile(`${cacheDir}/trees/not-a-cache-file`, "x");

  const next = await w.open(cacheDir);
  await restoreSnapshot(next.ns, full.snapshotId, { target: `${dir.path}/out` });
  await assertSameTree(w.src, `${dir.path}/out${w.src}`);
  assert.equal(next.cache.stats.discarded, 2, JSON.stringify(next.cache.stats));
  const [pack, offset, length] = trees[0].split(".");
  const reads = next.counting.treeAndIndexReads(await treeRanges(w.local));
  assert.deepEqual(reads.filter((g) => g.name.startsWith("index/")).map((g) => g.name), [
    `index/${indexFile}`,
  ]);
  assert.ok(
    reads.some((g) =>
      g.name.endsWith(pack) && g.range && "offset" in g.range && g.range.offset === Number(offset) &&
      g.range.length === Number(length)
    ),
    "the damaged tree blob was read from the storage",
  );
  // Replaced by intact copies; the stranger is gone.
  const after = await w.open(cacheDir);
  await restoreSnapshot(after.ns, full.snapshotId, { target: `${dir.path}/out2` });
  assert.deepEqual(after.counting.treeAndIndexReads(await treeRanges(w.local)), []);
  assert.equal(after.cache.stats.discarded, 0);
  assert.ok(
    !(await Array.fromAsync(Deno.readDir(`${cacheDir}/trees`))).some((e) => e.name === "not-a-cache-file"),
  );
});

Deno.test("agent cache: stays within its bound, least recently used first", async () => {
  await using dir = await tempDir("cadres-cache-");
  const w = await world(dir.path);
  const cacheDir = `${dir.path}/cache`;
  const max = 8 * 1024;
  const first = await w.open(cacheDir, max);
  const full = await backupFiles(first.ns, { paths: [w.src] });
  const onDisk = async () => {
    let n = 0;
    for (const sub of ["index", "trees"]) {
      for await (const e of Deno.readDir(`${cacheDir}/${sub}`)) {
        n += (await Deno.stat(`${cacheDir}/${sub}/${e.name}`)).size;
      }
    }
    return n;
  };
  assert.ok(first.cache.stats.evicted > 0, JSON.stringify(first.cache.stats));
  assert.ok(first.cache.bytes <= max && (await onDisk()) <= max, `${first.cache.bytes} bytes`);
  // What a job just used stays; the bound holds across processes.
  const second = await w.open(cacheDir, max);
  await restoreSnapshot(second.ns, full.snapshotId, { target: `${dir.path}/out` });
  await assertSameTree(w.src, `${dir.path}/out${w.src}`);
  assert.ok((await onDisk()) <= max);
  const recent = (await Array.fromAsync(Deno.readDir(`${cacheDir}/trees`))).length;
  assert.ok(recent > 0);
  const third = await w.open(cacheDir, max);
  await restoreSnapshot(third.ns, full.snapshotId, { target: `${dir.path}/out3` });
  assert.ok(third.cache.stats.hits > 0, "the most recently used trees were kept");
  // A cache of 0 bytes keeps nothing.
  const none = await w.open(`${dir.path}/tiny`, 0);
  await restoreSnapshot(none.ns, full.snapshotId, { target: `${dir.path}/out4` });
  assert.equal(none.cache.bytes, 0);
});
