/**
 * Namespace isolation (issue 15, ENGINE.md §3): one repository, host A's namespace "a" and host B's "b",
 * their keys wrapped by different KEKs, so B's opener opens only "b". B can neither read A's data, nor
 * list or open A's snapshots, nor learn whether A holds some content, nor make A's next backup reuse a blob
 * B uploaded — even one stored under an id copied from A's clear index, and even once A's own copy is gone.
 */
import assert from "node:assert/strict";
import { type Backend, LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { type BlobId, type ChunkIdHasher, sha256Hex } from "../../engine/repo/chunk_id.ts";
import { chunkStream } from "../../engine/repo/chunker.ts";
import { runRepoCli } from "../../engine/cli.ts";
import { readConfig } from "../../engine/repo/config.ts";
import { IntegrityError, MissingObjectError, RepoError, WrongKeyError } from "../../engine/repo/errors.ts";
import { forgetSnapshots, garbageCollect } from "../../engine/repo/gc.ts";
import { decodeIndexSegment, loadIndex, writeIndexSegment } from "../../engine/repo/index.ts";
import {
  createKeyFile,
  generateNamespaceKeys,
  kekId,
  keyObjectName,
  wrapNamespaceKeys,
} from "../../engine/repo/keys.ts";
import { PackBuilder, packObjectName } from "../../engine/repo/pack.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { listSnapshots, loadSnapshot, writeSnapshot } from "../../engine/repo/snapshot.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";
import { assertIntact, digests } from "./gc_helpers.ts";
import { deterministicBytes, piecesOf, tempDir } from "./helpers.ts";

const PARAMS = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 64 * 1024 };

/** Adds namespace `name` to the repository at `backend`, its keys wrapped by `kek` alone. */
async function addNamespace(backend: Backend, name: string, kek: Uint8Array) {
  const { config, bytes } = await readConfig(backend);
  const ko = await wrapNamespaceKeys(generateNamespaceKeys(name), kek, {
    repoId: config.id,
    configSha256: sha256Hex(bytes),
    now: new Date(),
  });
  await backend.put(keyObjectName(name, kekId(kek)), new TextEncoder().encode(JSON.stringify(ko)));
}

/** A repository with A's namespace "a" (one snapshot of `srcA`) and B's "b", under different KEKs. */
async function twoHosts(dir: string) {
  const repoPath = `${dir}/repo`;
  const keyA = `${dir}/a.key`;
  const keyB = `${dir}/b.key`;
  const kekA = await createKeyFile(keyA);
  const kekB = await createKeyFile(keyB);
  const be = new LocalBackend(repoPath);
  const repoA = await Repository.init(be, kekA, { namespace: "a", ...PARAMS });
  await addNamespace(be, "b", kekB);
  const srcA = `${dir}/a`;
  await Deno.mkdir(srcA);
  for (let i = 0; i < 3; i++) {
    await Deno.writeFile(`${srcA}/x${i}`, deterministicBytes(`host-a-${i}`, 30_000));
  }
  const snapA = await backupFiles(repoA.namespace("a"), { paths: [srcA] });
  const expectedA = new Map([[snapA.snapshotId, await digests(srcA)]]);
  return { repoPath, keyA, keyB, kekA, kekB, be, srcA, snapA: snapA.snapshotId, expectedA };
}

/** Every blob id of namespace `ns` in the clear index (what anyone who can list the repository sees). */
async function clearIds(
  be: Backend,
  ns: string,
): Promise<{ id: BlobId; type: "data" | "tree"; length: number }[]> {
  const out = new Map<BlobId, { id: BlobId; type: "data" | "tree"; length: number }>();
  for await (const obj of be.list("index/")) {
    for (const l of decodeIndexSegment(obj.name, await be.get(obj.name))) {
      if (l.namespace !== ns) continue;
      for (const e of l.entries) out.set(e.id, { id: e.id, type: e.type, length: e.length });
    }
  }
  return [...out.values()];
}

/** Runs the command line in this process; returns its exit code and what it printed. */
async function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const log = console.log;
  const error = console.error;
  let stdout = "";
  let stderr = "";
  console.log = (...a: unknown[]) => void (stdout += a.join(" ") + "\n");
  console.error = (...a: unknown[]) => void (stderr += a.join(" ") + "\n");
  try {
    return { code: await runRepoCli(args), stdout, stderr };
  } finally {
    console.log = log;
    console.error = error;
  }
}

Deno.test("namespaces: B's key opens only B's namespace; B cannot read A's data or open A's snapshots", async () => {
  await using dir = await tempDir("cadres-ns-");
  const { repoPath, be, kekB, snapA, keyB, expectedA, kekA, srcA } = await twoHosts(dir.path);

  const repoB = await Repository.open(new LocalBackend(repoPath), kekB);
  assert.deepEqual(repoB.namespaces(), ["b"]);
  assert.throws(
    () => repoB.namespace("a"),
    (e: Error) => e instanceof WrongKeyError && /"a"/.test(e.message),
  );
  const nsB = repoB.namespace("b");

  // A's snapshot: B cannot open it, restore it, or reach its blobs.
  await assert.rejects(loadSnapshot(nsB, snapA), (e: Error) => {
    assert.ok(e instanceof RepoError);
    assert.match(e.message, new RegExp(`Snapshot ${snapA} belongs to namespace "a"`));
    return true;
  });
  const target = `${dir.path}/b-restore`;
  await assert.rejects(restoreSnapshot(nsB, snapA, { target }), /belongs to namespace "a"/);
  assert.equal(await Deno.stat(target).then(() => true, () => false), false, "nothing written");
  const idsA = await clearIds(be, "a");
  assert.ok(idsA.length >= 4);
  for (const { id } of idsA) {
    assert.equal(repoB.index.lookup("b", id), null);
    await assert.rejects(nsB.loadBlob(id), (e: Error) => e instanceof MissingObjectError);
  }
  // Even holding A's ciphertext (it can read the pack files), B's key does not open it.
  const repoA = await Repository.open(new LocalBackend(repoPath), kekA);
  for (const { id } of idsA) {
    const at = repoA.index.lookup("a", id)!;
    const stored = await be.get(packObjectName(at.packId), { offset: at.offset, length: at.length });
    await assert.rejects(nsB.codec.decode(id, stored), (e: Error) => e instanceof IntegrityError);
  }
  // verify with B's key checks B's snapshots only.
  assert.equal((await verifyRepository(repoB, { all: true })).snapshots, 0);

  // The command line with B's key: A's snapshots are neither listed nor opened, each with one clear error.
  const common = ["--repo", repoPath, "--key-file", keyB, "--host", "b"];
  const listed = await cli("snapshots", ...common, "--json");
  assert.equal(listed.code, 0, listed.stderr);
  assert.deepEqual(JSON.parse(listed.stdout).snapshots, []);
  const refusal = new RegExp(`Snapshot ${snapA} belongs to a namespace this key does not open`);
  for (
    const args of [
      ["restore", snapA.slice(0, 12), "--target", target],
      ["ls", snapA.slice(0, 12)],
      ["find", snapA.slice(0, 12), "x*"],
      ["verify", snapA.slice(0, 12)],
      ["forget", snapA.slice(0, 12)],
    ]
  ) {
    const r = await cli(args[0], ...common, ...args.slice(1));
    assert.equal(r.code, 1, `${args[0]}: ${r.stdout} ${r.stderr}`);
    assert.match(r.stderr, refusal, args[0]);
    assert.equal(r.stderr.trim().split("\n").length, 1, `${args[0]}: one clear line`);
  }
  assert.equal(await Deno.stat(target).then(() => true, () => false), false, "restore wrote nothing");
  assert.deepEqual((await listSnapshots(be)).map((s) => s.id), [snapA], "A's snapshot is still there");
  await assertIntact(repoPath, kekA, expectedA, srcA, "A after B's attempts");
});

Deno.test("namespaces: B cannot learn whether A holds some content", async () => {
  await using dir = await tempDir("cadres-ns-");
  const { repoPath, be, kekA, kekB, srcA } = await twoHosts(dir.path);
  const repoA = await Repository.open(new LocalBackend(repoPath), kekA);
  const repoB = await Repository.open(new LocalBackend(repoPath), kekB);
  const nsA = repoA.namespace("a");
  const nsB = repoB.namespace("b");
  const idsA = new Set((await clearIds(be, "a")).map((e) => e.id));
  for (const id of idsA) assert.ok(nsA.has(id));
  // B guesses A's content exactly and cuts it into the very chunks A stored (chunking is not keyed; its
  // parameters are in the clear config). B's ids of them are keyed with B's id key: none is among A's ids,
  // so the clear index tells B nothing, and B's exists-check answers "absent".
  let chunks = 0;
  for (let i = 0; i < 3; i++) {
    const bytes = await Deno.readFile(`${srcA}/x${i}`);
    for await (const chunk of chunkStream(piecesOf(bytes, 8192), repoB.config.chunker)) {
      assert.ok(idsA.has(nsA.hasher().id(chunk)), "the same chunks as A's");
      const idB = nsB.hasher().id(chunk);
      assert.ok(!idsA.has(idB), "B's id of A's chunk is not among A's ids");
      assert.equal(nsB.has(idB), false, "B's exists-check of a chunk A holds: absent");
      chunks++;
    }
  }
  assert.ok(chunks >= 6, `chunks guessed: ${chunks}`);
  // The exists-check answers "absent" for A's blobs even asked with A's own ids, copied from the clear index.
  for (const id of idsA) assert.equal(nsB.has(id), false, `B's exists-check of A's blob ${id.slice(0, 12)}`);
  // B backing up the very same files stores every byte anew: no cross-namespace dedup to observe.
  const srcB = `${dir.path}/b`;
  await Deno.mkdir(srcB);
  for (let i = 0; i < 3; i++) await Deno.copyFile(`${srcA}/x${i}`, `${srcB}/x${i}`);
  const r = await backupFiles(nsB, { paths: [srcB] });
  assert.equal(r.bytesNew, 3 * 30_000, "every byte of B's copy is new to B");
  assert.equal(r.reusedFiles, 0);
});

/** A hasher that names every blob with the next id of `ids`: what a hostile host can do. */
function forgedHasher(ids: BlobId[]): ChunkIdHasher {
  let i = 0;
  return { keyed: true, id: () => ids[i++ % ids.length] };
}

Deno.test("namespaces: blobs B uploads under A's ids never become A's — A's next backups store their own and restore byte-identical", async () => {
  await using dir = await tempDir("cadres-ns-");
  const { repoPath, be, kekA, kekB, srcA, snapA, expectedA } = await twoHosts(dir.path);
  const idsA = await clearIds(be, "a");

  // B poisons: under every id it copied from A's clear index, garbage — once through its own namespace
  // handle (a valid blob of B's, garbage inside), once as raw garbage in a pack of its namespace it builds
  // itself — indexed, and kept alive by a snapshot of B's naming them.
  const repoB = await Repository.open(new LocalBackend(repoPath), kekB);
  const nsB = repoB.namespace("b");
  const forged = forgedHasher(idsA.map((e) => e.id));
  for (const e of idsA) await nsB.saveBlob(e.type, deterministicBytes(`poison-${e.id}`, e.length), forged);
  await nsB.flush();
  const raw = new PackBuilder("b");
  for (const e of idsA) raw.add(e.type, e.id, deterministicBytes(`raw-poison-${e.id}`, e.length));
  const { bytes, listing } = raw.finish();
  await be.put(packObjectName(listing.packId), bytes);
  await writeIndexSegment(be, [listing]);
  const now = new Date().toISOString();
  await writeSnapshot(nsB, {
    version: 1,
    namespace: "b",
    host: "b",
    kind: "full",
    paths: ["/"],
    parent: null,
    tree: idsA[0].id,
    startTime: now,
    endTime: now,
    stats: { files: 0, dirs: 0, bytesRead: 0, bytesNew: 0, bytesStored: 0, durationMs: 0 },
    errors: [],
    chainSalt: null,
  }, idsA.map((e) => e.id));
  const index = await loadIndex(be);
  for (const e of idsA) assert.ok(index.lookup("b", e.id), "B's poison is indexed in B's namespace");

  // A's next backups, incremental and full, reuse A's own blobs only: nothing new, and they restore.
  const repoA = await Repository.open(new LocalBackend(repoPath), kekA);
  const inc = await backupFiles(repoA.namespace("a"), { paths: [srcA], parent: snapA });
  const full = await backupFiles(repoA.namespace("a"), { paths: [srcA] });
  assert.equal(full.bytesNew, 0, "a full backup of A dedups against A's own blobs");
  const expected = new Map(expectedA);
  expected.set(inc.snapshotId, expectedA.get(snapA)!);
  expected.set(full.snapshotId, expectedA.get(snapA)!);
  await assertIntact(repoPath, kekA, expected, srcA, "A beside B's poison");

  // Now A's own copies go (A forgets everything; gc twice past the grace period) while B's poison stays,
  // named by B's snapshot: A's next backup finds its ids absent and stores every blob anew.
  await forgetSnapshots(be, [snapA, inc.snapshotId, full.snapshotId]);
  await garbageCollect(be, { graceMs: 0 });
  await garbageCollect(be, { graceMs: 0 });
  const after = await loadIndex(be);
  for (const e of idsA) {
    assert.equal(after.lookup("a", e.id), null, "A's copies are gone");
    assert.ok(after.lookup("b", e.id), "B's poison is still there");
  }
  const again = await Repository.open(new LocalBackend(repoPath), kekA);
  const fresh = await backupFiles(again.namespace("a"), { paths: [srcA] });
  assert.equal(fresh.bytesNew, 3 * 30_000, "every blob stored anew in A's namespace");
  await assertIntact(
    repoPath,
    kekA,
    new Map([[fresh.snapshotId, expectedA.get(snapA)!]]),
    srcA,
    "A after gc",
  );
});

/** A local backend that lists index segments newest first (a listing order the library must not rely on). */
class NewestFirstBackend extends LocalBackend {
  override async *list(prefix: string) {
    const all = await Array.fromAsync(super.list(prefix));
    if (prefix === "index/") all.sort((a, b) => b.modified.getTime() - a.modified.getTime());
    yield* all;
  }
}

Deno.test("namespaces: a pack forged under A's namespace after A's own never displaces A's copies (the oldest live copy wins)", async () => {
  await using dir = await tempDir("cadres-ns-");
  const { repoPath, be, kekA, srcA, snapA, expectedA } = await twoHosts(dir.path);
  // What B could write only past the service's upload check (which refuses a pack whose trailer names
  // another namespace than the writer's): garbage under A's ids, in a pack whose trailer says "a".
  const idsA = await clearIds(be, "a");
  await new Promise((r) => setTimeout(r, 20)); // a later object time than A's segments
  const forged = new PackBuilder("a");
  for (const e of idsA) forged.add(e.type, e.id, deterministicBytes(`forged-${e.id}`, e.length));
  const { bytes, listing } = forged.finish();
  await be.put(packObjectName(listing.packId), bytes);
  await writeIndexSegment(be, [listing]);

  // Readers take A's original copies even when the forged segment is listed first.
  const repoA = await Repository.open(new NewestFirstBackend(repoPath), kekA);
  for (const e of idsA) assert.notEqual(repoA.index.lookup("a", e.id)!.packId, listing.packId);
  const target = `${dir.path}/out`;
  const r = await restoreSnapshot(repoA.namespace("a"), snapA, { target });
  assert.deepEqual(r.errors, []);
  assert.deepEqual(await digests(`${target}${srcA}`), expectedA.get(snapA));
  // A's next backup reuses its own blobs; gc keeps the oldest copy and removes the forged pack.
  const next = await backupFiles(repoA.namespace("a"), { paths: [srcA] });
  assert.equal(next.bytesNew, 0);
  const newestFirst = new NewestFirstBackend(repoPath);
  const g1 = await garbageCollect(newestFirst, { graceMs: 0 });
  assert.ok(g1.condemned.includes(listing.packId), "the forged copy is not the one gc keeps");
  const g2 = await garbageCollect(newestFirst, { graceMs: 0 });
  assert.ok(g2.deleted.includes(listing.packId));
  const expected = new Map(expectedA);
  expected.set(next.snapshotId, expectedA.get(snapA)!);
  await assertIntact(repoPath, kekA, expected, srcA, "A after the forged pack");
});
