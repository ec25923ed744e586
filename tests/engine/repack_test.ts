/**
 * gc's pack rewriting: a pack whose live blobs take less than half of its blob bytes is rewritten — the live
 * blobs' ciphertext copied into new packs, indexed, and only then the old pack condemned (and deleted by a
 * later gc past the grace period). The repository shrinks; every remaining snapshot restores byte-identical;
 * a gc that throws or is killed at any point of the rewrite leaves a repository that verifies, and the next
 * gc completes the job.
 */
import assert from "node:assert/strict";
import { type Backend, LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import {
  forgetSnapshots,
  garbageCollect,
  GC_REPACK_LIVE_FRACTION,
  type GcResult,
  listCondemned,
} from "../../engine/repo/gc.ts";
import { acquireLock, LOCK_STALE_MS } from "../../engine/repo/lock.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { assertIntact, bytesUnder, copyTree, digests, packStats } from "./gc_helpers.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const PARAMS = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 32 * 1024 };
const DRIVER = new URL("./crash_driver.ts", import.meta.url).pathname;
/** Backups date themselves 10 s ahead, so the files just written are not racy and are reused. */
const later = () => new Date(Date.now() + 10_000);
/** Files of the test folder: a third of them never change. */
const FILES = 24;

/**
 * A repository whose kept snapshot references a third of the blobs of the first backup's packs: FILES files
 * backed up, then files other than 0, 3, 6, 9 changed twice; the first two snapshots forgotten.
 */
async function sparseRepo(dir: string): Promise<Sparse> {
  const kek = crypto.getRandomValues(new Uint8Array(32));
  const repoPath = `${dir}/repo`;
  const src = `${dir}/src`;
  const be = new LocalBackend(repoPath);
  const repo = await Repository.init(be, kek, { namespace: "h", ...PARAMS });
  await Deno.mkdir(src);
  const ids: string[] = [];
  for (let gen = 0; gen < 3; gen++) {
    for (let i = 0; i < FILES; i++) {
      if (gen > 0 && i % 3 === 0) continue;
      const name = `${src}/f${String(i).padStart(2, "0")}`;
      await Deno.writeFile(name, deterministicBytes(`repack-${gen}-${i}`, 12_000));
    }
    ids.push((await backupFiles(repo.namespace("h"), { paths: [src], now: later })).snapshotId);
  }
  await forgetSnapshots(be, ids.slice(0, 2));
  const expected = new Map([[ids[2], await digests(src)]]);
  return { kek, repoPath, src, be, kept: ids[2], expected };
}

interface Sparse {
  kek: Uint8Array;
  repoPath: string;
  src: string;
  be: Backend;
  kept: string;
  expected: Map<string, Map<string, string>>;
}

/** A fresh copy of `tpl`'s repository at `repoPath` (same source folder, same keys). */
async function copyOf(tpl: Sparse, repoPath: string): Promise<Sparse> {
  await copyTree(tpl.repoPath, repoPath);
  return { ...tpl, repoPath, be: new LocalBackend(repoPath), expected: new Map(tpl.expected) };
}

/** Packs that hold referenced blobs, but less than the repack fraction of their blob bytes. */
async function sparsePacks(be: Backend): Promise<string[]> {
  return (await packStats(be))
    .filter((p) => p.referencedBytes > 0 && p.referencedBytes < GC_REPACK_LIVE_FRACTION * p.blobBytes)
    .map((p) => p.packId);
}

/**
 * After gc ran to completion: no pack is unreferenced or mostly dead, each referenced blob is stored once
 * (unless `copiesAllowed`), nothing is condemned.
 */
async function assertCompact(be: Backend, what: string, copiesAllowed = false) {
  const copies = new Map<string, number>();
  for (const p of await packStats(be)) {
    assert.ok(
      p.referencedBytes >= GC_REPACK_LIVE_FRACTION * p.blobBytes,
      `${what}: pack ${p.packId.slice(0, 12)} is mostly live (${p.referencedBytes} of ${p.blobBytes} bytes)`,
    );
    for (const k of p.referenced) copies.set(k, (copies.get(k) ?? 0) + 1);
  }
  if (!copiesAllowed) {
    assert.deepEqual([...copies.values()].filter((n) => n !== 1), [], `${what}: every blob stored once`);
  }
  assert.equal((await listCondemned(be)).size, 0, `${what}: no condemnation left`);
}

Deno.test("gc rewrites mostly dead packs: twice past the grace period the repository shrinks and restores byte-identical", async () => {
  await using dir = await tempDir("cadres-repack-");
  const { kek, repoPath, src, be, expected } = await sparseRepo(dir.path);
  const sparse = await sparsePacks(be);
  assert.ok(sparse.length >= 2, `packs partly live, mostly dead: ${sparse.length}`);
  const stats = await packStats(be);
  const liveBytes = stats.reduce((n, p) => n + p.referencedBytes, 0);
  const before = await bytesUnder(be, "data/");

  const first = await garbageCollect(be, { graceMs: 0 });
  assert.deepEqual(first.repacked.sort(), sparse, "exactly the mostly dead packs are rewritten");
  assert.ok(first.repackWritten.length >= 1);
  assert.ok(first.repackWritten.length < first.repacked.length, "fewer new packs than rewritten ones");
  assert.equal(
    first.bytesRepacked,
    stats.filter((p) => sparse.includes(p.packId)).reduce((n, p) => n + p.referencedBytes, 0),
    "only the live blobs are copied",
  );
  assert.deepEqual(first.deleted, [], "the first gc deletes nothing");
  for (const p of first.repacked) assert.ok((await listCondemned(be)).has(p), "the original is condemned");
  // Condemned originals still hold their bytes: a reader that opened before still finds them; a fresh one
  // reads the new copies.
  await assertIntact(repoPath, kek, expected, src, "after the first gc");

  const second = await garbageCollect(be, { graceMs: 0 });
  assert.deepEqual(second.repacked, [], "nothing left to rewrite");
  assert.deepEqual(
    second.deleted.sort(),
    [...first.repacked, ...first.condemned].sort(),
    "the originals and the unreferenced packs go",
  );
  const after = await bytesUnder(be, "data/");
  assert.ok(after < before / 2, `the packs shrank from ${before} to ${after} bytes`);
  // What is left, exactly: the packs that were mostly live, whole, and the live blobs of the rewritten ones
  // (which packs were mostly live depends on the order the workers packed the blobs in).
  const keptBlobBytes = stats
    .filter((p) => p.referencedBytes > 0 && !sparse.includes(p.packId))
    .reduce((n, p) => n + p.blobBytes, 0);
  const remaining = await packStats(be);
  assert.equal(
    remaining.reduce((n, p) => n + p.blobBytes, 0),
    keptBlobBytes + first.bytesRepacked,
    "the mostly live packs whole and the rewritten packs' live blobs are what is left",
  );
  assert.equal(remaining.reduce((n, p) => n + p.referencedBytes, 0), liveBytes, "every live byte is kept");
  await assertCompact(be, "after two gcs");
  await assertIntact(repoPath, kek, expected, src, "after the second gc");
  const third = await garbageCollect(be, { graceMs: 0 });
  assert.deepEqual(
    [third.condemned, third.repacked, third.deleted],
    [[], [], []],
    "a third gc has nothing to do",
  );
});

Deno.test("gc's rewrite honours --max-repack-bytes and the live-fraction threshold", async () => {
  await using dir = await tempDir("cadres-repack-");
  const { kek, repoPath, src, be, expected } = await sparseRepo(dir.path);
  const sparse = await sparsePacks(be);
  const none = await garbageCollect(be, { graceMs: 60_000, maxRepackBytes: 0 });
  assert.deepEqual(none.repacked, []);
  const off = await garbageCollect(be, { graceMs: 60_000, repackLiveFraction: 0 });
  assert.deepEqual(off.repacked, []);

  const live = (await packStats(be)).filter((p) => sparse.includes(p.packId)).map((p) => p.referencedBytes);
  const bound = Math.min(...live);
  const one = await garbageCollect(be, { graceMs: 60_000, maxRepackBytes: bound });
  assert.equal(one.repacked.length, 1, "a bound that fits one pack's live blobs rewrites one pack");
  assert.ok(one.bytesRepacked <= bound);
  const rest = await garbageCollect(be, { graceMs: 60_000 });
  assert.deepEqual([...one.repacked, ...rest.repacked].sort(), sparse, "a later gc rewrites the rest");
  await assertIntact(repoPath, kek, expected, src, "after bounded rewrites");
  await assert.rejects(garbageCollect(be, { repackLiveFraction: 2 }), /repack fraction/);
});

Deno.test("gc's rewrite: a live writer older than the rewrite holds the original back; a writer reuses the moved blobs without uploading them again", async () => {
  await using dir = await tempDir("cadres-repack-");
  const { kek, repoPath, src, be, kept, expected } = await sparseRepo(dir.path);
  // A writer that opened the repository before gc rewrote the packs holding its parent's unchanged files.
  const writer = await Repository.open(new LocalBackend(repoPath), kek);
  // Another writer, live while gc runs, started after every pack was written (file times are coarse).
  await new Promise((r) => setTimeout(r, 50));
  const lock = await acquireLock(be, { kind: "backup", namespace: "h" });
  const first = await garbageCollect(be, { graceMs: 0, clockMarginMs: 20 });
  assert.ok(first.repacked.length >= 2);
  const held = await garbageCollect(be, { graceMs: 0, clockMarginMs: 20 });
  for (const p of first.repacked) assert.ok(!held.deleted.includes(p), "held back by the older writer");
  await lock.release();

  const r = await backupFiles(writer.namespace("h"), { paths: [src], parent: kept, now: later });
  assert.equal(r.reusedFiles, FILES, "every unchanged file reused from the parent");
  assert.equal(r.bytesRead, 0, "nothing read again");
  assert.equal(r.bytesNew, 0, "nothing uploaded again: the writer found the rewritten copies");
  expected.set(r.snapshotId, await digests(src));

  const done = await garbageCollect(be, { graceMs: 0 });
  assert.deepEqual(done.deleted.sort(), [...first.repacked, ...first.condemned].sort());
  await assertCompact(be, "after the writer and gc");
  await assertIntact(repoPath, kek, expected, src, "after the writer and gc");
});

/** A local backend that throws once the `n`-th put whose name starts with `prefix` has completed. */
class FailingBackend extends LocalBackend {
  #seen = 0;
  constructor(root: string, readonly prefix: string, readonly n: number) {
    super(root);
  }
  override async put(name: string, data: Uint8Array): Promise<void> {
    await super.put(name, data);
    if (name.startsWith(this.prefix) && ++this.#seen === this.n) {
      throw new Error(`injected failure after put ${name}`);
    }
  }
}

/** Points of the rewrite where the crash tests stop gc: after the N-th completed put of a prefix. */
const POINTS = [
  { prefix: "data/", n: 1, what: "after its first new pack, before any index" },
  { prefix: "index/", n: 1, what: "after the new packs' index, before any condemnation" },
  { prefix: "condemned/", n: 1, what: "after condemning the first original" },
  { prefix: "condemned/", n: 2, what: "after condemning the second original" },
];

/** Runs gc to completion after a crash (twice past the grace period) and checks the outcome. */
async function finishAfterCrash(
  be: Backend,
  repoPath: string,
  kek: Uint8Array,
  src: string,
  expected: Map<string, Map<string, string>>,
  before: number,
  what: string,
  options: { now?: () => Date } = {},
) {
  await assertIntact(repoPath, kek, expected, src, `${what}: right after the crash`);
  const results: GcResult[] = [];
  for (let i = 0; i < 3; i++) results.push(await garbageCollect(be, { graceMs: 0, ...options }));
  // A gc stopped after condemning some originals but not others leaves the others' blobs in two places: the
  // original (kept: the oldest copy wins) and the new pack, whose copies then count as dead bytes of a pack
  // that is still mostly live. That waste stays under the rewrite threshold, as in any mostly live pack.
  await assertCompact(be, what, true);
  const after = await bytesUnder(be, "data/");
  assert.ok(after < before / 2, `${what}: the packs shrank from ${before} to ${after} bytes`);
  await assertIntact(repoPath, kek, expected, src, `${what}: after the next gcs`);
  return results;
}

Deno.test("gc's rewrite interrupted by an error at any step leaves a repository that verifies; the next gc completes", async () => {
  await using dir = await tempDir("cadres-repack-crash-");
  const tpl = await sparseRepo(dir.path);
  assert.ok((await sparsePacks(tpl.be)).length >= 2);
  for (const [i, point] of POINTS.entries()) {
    const { kek, repoPath, src, be, expected } = await copyOf(tpl, `${dir.path}/repo-${i}`);
    const before = await bytesUnder(be, "data/");
    const failing = new FailingBackend(repoPath, point.prefix, point.n);
    await assert.rejects(garbageCollect(failing, { graceMs: 0 }), /injected failure/, point.what);
    await finishAfterCrash(be, repoPath, kek, src, expected, before, `gc throwing ${point.what}`);
  }
});

/** Runs the crash driver's gc until it reports `@@hang` (after the N-th matching write), then SIGKILLs it. */
async function killGcAt(repoPath: string, hangAt: string): Promise<string[]> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", DRIVER, "gc", repoPath],
    env: { CRASH_GRACE_MS: "0", CRASH_HANG_AT: hangAt },
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  let rest = "";
  let killed = false;
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    rest += value;
    const parts = rest.split("\n");
    rest = parts.pop()!;
    for (const l of parts) {
      lines.push(l);
      if (l === "@@hang" && !killed) {
        child.kill("SIGKILL");
        killed = true;
      }
    }
  }
  await child.status;
  assert.ok(killed, `gc killed at ${hangAt} (it ended first): ${lines.slice(-3).join(" | ")}`);
  return lines;
}

Deno.test("gc's rewrite killed (SIGKILL) at any step leaves a repository that verifies; the next gc completes", async () => {
  await using dir = await tempDir("cadres-repack-kill-");
  const tpl = await sparseRepo(dir.path);
  assert.ok((await sparsePacks(tpl.be)).length >= 2);
  for (const [i, point] of POINTS.entries()) {
    const { kek, repoPath, src, be, expected } = await copyOf(tpl, `${dir.path}/repo-${i}`);
    const before = await bytesUnder(be, "data/");
    const lines = await killGcAt(repoPath, `put:${point.prefix}:${point.n}`);
    const puts = lines.filter((l) => l.startsWith(`@@put ${point.prefix}`));
    assert.equal(puts.length, point.n, `killed ${point.what}`);
    // The killed gc's lock is live until it is stale: the next gcs run as if that much later.
    const muchLater = () => new Date(Date.now() + LOCK_STALE_MS + 60_000);
    await finishAfterCrash(be, repoPath, kek, src, expected, before, `gc killed ${point.what}`, {
      now: muchLater,
    });
  }
});
