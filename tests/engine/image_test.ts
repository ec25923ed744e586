import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import type { Progress } from "../../engine/repo/backup.ts";
import { fixedFileChunks } from "../../engine/repo/chunker.ts";
import { backupImage, restoreImage } from "../../engine/repo/image.ts";
import { packObjectName } from "../../engine/repo/pack.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { loadSnapshot } from "../../engine/repo/snapshot.ts";
import { loadTree } from "../../engine/repo/tree.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";
import { collect, deterministicBytes, tempDir } from "./helpers.ts";

const CHUNK = 64 * 1024;
const KEK = crypto.getRandomValues(new Uint8Array(32));

/** A piece of a test image: pseudo-random data, or a run of zeros left as a hole. */
type Piece = { data: string; length: number } | { zero: number };

/** Writes a sparse image file of `pieces` (zero runs are holes); returns its bytes. */
async function writeImage(path: string, pieces: Piece[]): Promise<Uint8Array> {
  const total = pieces.reduce((n, p) => n + ("zero" in p ? p.zero : p.length), 0);
  const bytes = new Uint8Array(total);
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  let off = 0;
  for (const p of pieces) {
    if ("zero" in p) {
      off += p.zero;
      continue;
    }
    const d = deterministicBytes(p.data, p.length);
    bytes.set(d, off);
    await f.seek(off, Deno.SeekMode.Start);
    await f.write(d);
    off += p.length;
  }
  await f.truncate(total);
  return bytes;
}

/** Bytes the file system allocated for `path` (`st_blocks` × 512). */
async function allocated(path: string): Promise<number> {
  return (await Deno.stat(path)).blocks! * 512;
}

async function setup(dir: string, options = {}) {
  const be = new LocalBackend(`${dir}/repo`);
  const repo = await Repository.init(be, KEK, {
    namespace: "h",
    imageChunkSize: CHUNK,
    packTargetBytes: 256 * 1024,
    ...options,
  });
  return { be, repo, ns: repo.namespace("h") };
}

// 3 MiB + 1000 bytes: data, a long zero run, data straddling chunk edges, zeros, a short last chunk.
const LAYOUT: Piece[] = [
  { data: "img-a", length: 5 * CHUNK + 123 },
  { zero: 20 * CHUNK - 123 },
  { data: "img-b", length: 3 * CHUNK + 500 },
  { zero: 20 * CHUNK - 500 },
  { data: "img-c", length: 1000 },
];

Deno.test("fixedFileChunks() cuts fixed chunks from a file and flags all-zero ones", async () => {
  const data = new Uint8Array(2500);
  data.set(deterministicBytes("fixed", 700), 1000);
  let pos = 0;
  const file = {
    read(p: Uint8Array) {
      if (pos >= data.length) return Promise.resolve(null);
      const n = Math.min(p.length, 300, data.length - pos); // short reads, as a pipe or device may give
      p.set(data.subarray(pos, pos + n));
      pos += n;
      return Promise.resolve(n);
    },
  };
  const chunks = await collect(fixedFileChunks(file, 1000));
  assert.deepEqual(chunks.map((c) => [c.data.length, c.zero]), [[1000, true], [1000, false], [500, true]]);
  assert.deepEqual(chunks[1].data, data.subarray(1000, 2000));
});

Deno.test("backupImage() then restoreImage() is byte-identical and keeps zero chunks as holes", async () => {
  await using dir = await tempDir();
  const { be, ns } = await setup(dir.path);
  const image = `${dir.path}/disk.img`;
  const bytes = await writeImage(image, LAYOUT);
  const seen: Progress[] = [];
  const r = await backupImage(ns, { path: image, progress: (p) => seen.push(p) });
  assert.deepEqual(r.errors, []);
  assert.equal(r.size, bytes.length);
  assert.equal(r.bytesRead, bytes.length);
  assert.equal(r.chunks, 49);
  // Chunks 0-5 (data), 25-28 (data), 48 (1000 bytes) are data; the other 38 are all zero.
  assert.equal(r.zeroChunks, 38);
  assert.equal(r.newChunks, 11 + 1, "11 data chunks and the zero chunk, stored once");
  assert.ok(r.bytesNew < 12 * CHUNK + 1000);
  assert.equal(seen.at(-1)?.bytes, bytes.length);
  assert.equal(seen.at(-1)?.totalBytes, bytes.length);

  const snap = await loadSnapshot(ns, r.snapshotId);
  assert.equal(snap.kind, "image");
  assert.deepEqual(snap.image, { path: image, size: bytes.length, chunkSize: CHUNK, blockDevice: false });
  assert.deepEqual(snap.paths, [image]);

  const reopened = await Repository.open(be, KEK);
  const target = `${dir.path}/out/restored.img`;
  const restored = await restoreImage(reopened.namespace("h"), r.snapshotId, { target });
  assert.deepEqual(restored.errors, []);
  assert.equal(restored.zeroChunks, 38);
  assert.equal(restored.bytesWritten, 10 * CHUNK + 1000, "the 11 data chunks, zero chunks not written");
  assert.deepEqual(await Deno.readFile(target), bytes);
  // Sparse: only the data chunks take space (the file system rounds each run up to its block size).
  assert.ok(await allocated(target) <= 11 * CHUNK + 64 * 1024, `allocated ${await allocated(target)}`);
  assert.ok(await allocated(target) < bytes.length / 2);
  assert.equal((await Deno.stat(target)).mode! & 0o777, 0o600);
  assert.deepEqual([...Deno.readDirSync(`${dir.path}/out`)].map((e) => e.name), ["restored.img"]);

  // The same snapshot restored as files gives the image file at its full path, also sparse.
  const asFiles = await restoreSnapshot(reopened.namespace("h"), r.snapshotId, {
    target: `${dir.path}/files`,
  });
  assert.deepEqual(asFiles.errors, []);
  assert.deepEqual(await Deno.readFile(`${dir.path}/files${image}`), bytes);

  const v = await verifyRepository(reopened, { all: true });
  assert.deepEqual(v.problems, []);
});

Deno.test("backupImage() with a parent stores about the changed chunks; both snapshots restore", async () => {
  await using dir = await tempDir();
  const { ns } = await setup(dir.path);
  const image = `${dir.path}/disk.img`;
  const v1 = await writeImage(image, LAYOUT);
  const first = await backupImage(ns, { path: image });

  // Two bytes changed in chunk 2, one in chunk 26, and chunk 10 (a hole) now holds data.
  const v2 = v1.slice();
  using f = await Deno.open(image, { write: true });
  for (const [off, b] of [[2 * CHUNK + 7, 1], [2 * CHUNK + 9000, 2], [26 * CHUNK + 1, 3]]) {
    v2[off] ^= b;
    await f.seek(off, Deno.SeekMode.Start);
    await f.write(v2.subarray(off, off + 1));
  }
  const fill = deterministicBytes("img-new", 4096);
  v2.set(fill, 10 * CHUNK + 100);
  await f.seek(10 * CHUNK + 100, Deno.SeekMode.Start);
  await f.write(fill);

  const second = await backupImage(ns, { path: image, parent: first.snapshotId });
  assert.deepEqual(second.errors, []);
  assert.equal(second.bytesRead, v2.length, "an image is read whole every time");
  assert.equal(second.newChunks, 3);
  assert.equal(second.bytesNew, 3 * CHUNK);
  assert.ok(second.bytesStored < 3 * CHUNK + 8192, `stored ${second.bytesStored}`);
  assert.equal((await loadSnapshot(ns, second.snapshotId)).parent, first.snapshotId);

  await restoreImage(ns, first.snapshotId, { target: `${dir.path}/v1.img` });
  await restoreImage(ns, second.snapshotId, { target: `${dir.path}/v2.img` });
  assert.deepEqual(await Deno.readFile(`${dir.path}/v1.img`), v1);
  assert.deepEqual(await Deno.readFile(`${dir.path}/v2.img`), v2);

  // Without dedup, an incremental shares its parent's id salt and still stores only the changes.
  await using dir2 = await tempDir();
  const nd = await setup(dir2.path, { dedup: false });
  const a = await backupImage(nd.ns, { path: image });
  const b = await backupImage(nd.ns, { path: image, parent: a.snapshotId });
  const c = await backupImage(nd.ns, { path: image });
  assert.equal(b.newChunks, 0);
  assert.equal(c.newChunks, a.newChunks, "a full without dedup stores every chunk anew");
});

Deno.test("restoreImage() of a damaged chunk names its offset and writes no wrong bytes", async () => {
  await using dir = await tempDir();
  const { be, ns } = await setup(dir.path, { compression: "none" });
  const image = `${dir.path}/disk.img`;
  const bytes = await writeImage(image, LAYOUT);
  const r = await backupImage(ns, { path: image });

  // Damage the blob of chunk 26 in its pack.
  const snap = await loadSnapshot(ns, r.snapshotId);
  const hasher = ns.hasher(null);
  let tree = await loadTree(ns, snap.tree, hasher);
  for (const part of image.split("/").filter(Boolean).slice(0, -1)) {
    tree = await loadTree(ns, tree.entries.find((e) => e.name === part)!.subtree!, hasher);
  }
  const content = tree.entries.find((e) => e.name === "disk.img")!.content!;
  const loc = ns.repo.index.lookup("h", content[26])!;
  const packPath = `${be.root}/${packObjectName(loc.packId)}`;
  const pack = await Deno.readFile(packPath);
  pack[loc.offset + 100] ^= 0x40;
  await Deno.writeFile(packPath, pack);

  const reopened = await Repository.open(be, KEK);
  const rns = reopened.namespace("h");
  const target = `${dir.path}/out.img`;
  const result = await restoreImage(rns, r.snapshotId, { target });
  assert.equal(result.errors.length, 1);
  assert.equal(result.errors[0].offset, 26 * CHUNK);
  assert.equal(result.errors[0].chunk, content[26]);
  assert.match(result.errors[0].error, new RegExp(`Damaged blob ${content[26]}`));
  await assert.rejects(Deno.stat(target), Deno.errors.NotFound);
  assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name).sort(), ["disk.img", "repo"]);

  // An existing image is left as it was, even with overwrite.
  const old = deterministicBytes("old image", 5000);
  await Deno.writeFile(target, old);
  const again = await restoreImage(rns, r.snapshotId, { target, overwrite: true });
  assert.equal(again.errors[0].offset, 26 * CHUNK);
  assert.deepEqual(await Deno.readFile(target), old);
  assert.equal(bytes.length, r.size);
});

Deno.test("restoreImage() and backupImage() refuse bad targets and sources before writing", async () => {
  await using dir = await tempDir();
  const { ns } = await setup(dir.path);
  const image = `${dir.path}/disk.img`;
  const bytes = await writeImage(image, LAYOUT.slice(0, 2));
  const r = await backupImage(ns, { path: image });

  const existing = `${dir.path}/existing.img`;
  await Deno.writeTextFile(existing, "keep me");
  await assert.rejects(restoreImage(ns, r.snapshotId, { target: existing }), /exists and is not empty/);
  assert.equal(await Deno.readTextFile(existing), "keep me");
  await restoreImage(ns, r.snapshotId, { target: existing, overwrite: true });
  assert.deepEqual(await Deno.readFile(existing), bytes);

  const empty = `${dir.path}/empty.img`;
  await Deno.writeFile(empty, new Uint8Array());
  await restoreImage(ns, r.snapshotId, { target: empty });
  assert.deepEqual(await Deno.readFile(empty), bytes);

  await assert.rejects(restoreImage(ns, r.snapshotId, { target: dir.path }), /is a folder/);
  await assert.rejects(
    restoreImage(ns, r.snapshotId, { target: "/dev/cadres-no-such-disk" }),
    /no such device|devices need deno run --allow-all/,
  );
  // (Without --allow-all, Deno cannot even look: then it could not have been created either.)
  assert.notEqual(
    await Deno.lstat("/dev/cadres-no-such-disk").then(() => "exists", () => "absent"),
    "exists",
  );

  await Deno.mkdir(`${dir.path}/src`);
  await Deno.writeTextFile(`${dir.path}/src/f`, "x");
  const files = await backupFiles(ns, { paths: [`${dir.path}/src`] });
  await assert.rejects(restoreImage(ns, files.snapshotId, { target: `${dir.path}/x.img` }), /not an image/);
  await assert.rejects(backupImage(ns, { path: `${dir.path}/src` }), /not a block device or regular file/);
  await assert.rejects(backupImage(ns, { path: `${dir.path}/nope.img` }), /Cannot back up image .*nope\.img/);
  await assert.rejects(
    backupImage(ns, { path: image, parent: files.snapshotId }),
    /backup of files, not an image/,
  );
});

/** A loop device over a new file of `size` bytes, or null where loop devices are unavailable. */
async function loopDevice(path: string, size: number): Promise<(AsyncDisposable & { dev: string }) | null> {
  if (Deno.uid() !== 0 || (await Deno.permissions.query({ name: "run" })).state !== "granted") return null;
  await Deno.writeFile(path, new Uint8Array(size));
  const out = await new Deno.Command("losetup", {
    args: ["-f", "--show", path],
    stdout: "piped",
    stderr: "null",
  })
    .output().catch(() => null);
  if (!out?.success) return null;
  const dev = new TextDecoder().decode(out.stdout).trim();
  const detach = () => new Deno.Command("losetup", { args: ["-d", dev] }).output();
  try {
    (await Deno.open(dev, { read: true })).close();
  } catch (e) {
    await detach();
    if (e instanceof Deno.errors.NotCapable) return null; // Deno opens devices only with --allow-all
    throw e;
  }
  return {
    dev,
    async [Symbol.asyncDispose]() {
      await detach();
    },
  };
}

/** Writes `data` at the start of device `dev` and syncs it. */
async function writeDevice(dev: string, data: Uint8Array) {
  using f = await Deno.open(dev, { write: true });
  let off = 0;
  while (off < data.length) off += await f.write(data.subarray(off));
  await f.sync();
}

/** The first `n` bytes of device `dev`. */
async function readDevice(dev: string, n: number): Promise<Uint8Array> {
  using f = await Deno.open(dev, { read: true });
  const buf = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const r = await f.read(buf.subarray(off));
    if (r === null) break;
    off += r;
  }
  return buf.subarray(0, off);
}

Deno.test("backupImage() reads a block device; restoreImage() writes one, zeros included unless told", async () => {
  await using dir = await tempDir();
  const MIB = 1024 * 1024;
  await using src = await loopDevice(`${dir.path}/src.loop`, 2 * MIB);
  if (src === null) {
    console.log("skipped: no loop devices (needs root, losetup and deno test --allow-all)");
    return;
  }
  const { ns } = await setup(dir.path);
  // The source device: the image padded to 2 MiB (loop devices are whole sectors), 32 chunks.
  const padded = new Uint8Array(2 * MIB);
  padded.set(await writeImage(`${dir.path}/disk.img`, LAYOUT.slice(0, 3)));
  await writeDevice(src.dev, padded);
  const r = await backupImage(ns, { path: src.dev });
  assert.deepEqual(r.errors, []);
  assert.equal(r.size, padded.length);
  assert.equal(r.zeroChunks, 22);
  assert.equal((await loadSnapshot(ns, r.snapshotId)).image?.blockDevice, true);

  const old = new Uint8Array(3 * MIB).fill(0xee);
  await using small = (await loopDevice(`${dir.path}/small.loop`, MIB))!;
  await assert.rejects(
    restoreImage(ns, r.snapshotId, { target: small.dev, overwrite: true }),
    /less than the image/,
  );
  await using big = (await loopDevice(`${dir.path}/big.loop`, 3 * MIB))!;
  await writeDevice(big.dev, old);
  await assert.rejects(restoreImage(ns, r.snapshotId, { target: big.dev }), /is a block device/);
  assert.deepEqual(await readDevice(big.dev, 3 * MIB), old, "a refused restore wrote nothing");

  // Default: zero chunks are written as zeros; the device beyond the image is left alone.
  const res = await restoreImage(ns, r.snapshotId, { target: big.dev, overwrite: true });
  assert.deepEqual(res.errors, []);
  assert.equal(res.blockDevice, true);
  assert.equal(res.bytesWritten, padded.length);
  let got = await readDevice(big.dev, 3 * MIB);
  assert.deepEqual(got.subarray(0, padded.length), padded);
  assert.deepEqual(got.subarray(padded.length), old.subarray(padded.length));

  // targetZeroed: zero chunks are skipped (the caller vouched the device reads as zeros; here it does not).
  await writeDevice(big.dev, old);
  const skipped = await restoreImage(ns, r.snapshotId, {
    target: big.dev,
    overwrite: true,
    targetZeroed: true,
  });
  assert.equal(skipped.bytesWritten, padded.length - 22 * CHUNK);
  got = await readDevice(big.dev, 3 * MIB);
  assert.deepEqual(got.subarray(0, 5 * CHUNK), padded.subarray(0, 5 * CHUNK));
  assert.deepEqual(got.subarray(7 * CHUNK, 8 * CHUNK), old.subarray(7 * CHUNK, 8 * CHUNK));
});
