/**
 * A backup counts the new bytes that did not compress (`bytesNewIncompressible`, what the control plane's
 * anomaly guard compares with the host's baseline): exactly the random content among new chunks, for small
 * files and large streamed ones, files and images; nothing on an unchanged incremental; everything with
 * compression "none" (nothing is tried, so the agent reports it as not measured).
 */
import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import type { Compression } from "../../engine/repo/compression.ts";
import { createBlobCodec } from "../../engine/repo/blob.ts";
import { backupImage } from "../../engine/repo/image.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 64 * 1024 };

function text(seed: string, n: number): Uint8Array {
  const line = new TextEncoder().encode(`${seed}: a line of ordinary, compressible log text\n`);
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = line[i % line.length];
  return out;
}

async function repoWith(dir: string, compression: Compression) {
  const kek = crypto.getRandomValues(new Uint8Array(32));
  const repo = await Repository.init(new LocalBackend(`${dir}/repo`), kek, {
    namespace: "host-a",
    compression,
    encryption: "aes-256-gcm",
    ...SMALL,
  });
  return repo.namespace("host-a");
}

for (const compression of ["zstd", "lz4"] as Compression[]) {
  Deno.test(`backupFiles() counts the new bytes that did not compress (${compression})`, async () => {
    await using dir = await tempDir();
    const ns = await repoWith(dir.path, compression);
    const src = `${dir.path}/src`;
    await Deno.mkdir(src);
    // Small files (one chunk each) and large ones (chunked while read), text and random.
    const random = [8_000, 300_000];
    for (const [i, n] of random.entries()) {
      await Deno.writeFile(`${src}/r${i}.bin`, deterministicBytes(`r${i}`, n));
    }
    for (const [i, n] of [8_000, 300_000].entries()) {
      await Deno.writeFile(`${src}/t${i}.log`, text(`t${i}`, n));
    }
    const first = await backupFiles(ns, { paths: [src] });
    assert.equal(first.bytesNew, 616_000);
    assert.equal(first.bytesNewIncompressible, 308_000, "exactly the random bytes");
    // Nothing changed: nothing new, nothing incompressible.
    await new Promise((r) => setTimeout(r, 2100)); // past the racy-file window
    const snap = await backupFiles(ns, { paths: [src], parent: first.snapshotId });
    assert.equal(snap.bytesNew, 0);
    assert.equal(snap.bytesNewIncompressible, 0);
    // Ransomware: the text files rewritten with random bytes.
    for (const [i, n] of [8_000, 300_000].entries()) {
      await Deno.writeFile(`${src}/t${i}.log`, deterministicBytes(`enc${i}`, n));
    }
    const enc = await backupFiles(ns, { paths: [src], parent: snap.snapshotId });
    assert.equal(enc.bytesNew, 308_000);
    assert.equal(enc.bytesNewIncompressible, 308_000);
  });
}

Deno.test("backupFiles() with compression none stores every new byte raw; backupImage() counts too", async () => {
  await using dir = await tempDir();
  const none = await repoWith(`${dir.path}/a`, "none");
  const src = `${dir.path}/src`;
  await Deno.mkdir(src);
  await Deno.writeFile(`${src}/t.log`, text("t", 50_000));
  const r = await backupFiles(none, { paths: [src] });
  assert.equal(r.bytesNewIncompressible, r.bytesNew);

  const zstd = await repoWith(`${dir.path}/b`, "zstd");
  const image = `${dir.path}/disk.img`;
  const half = 4 * 1024 * 1024;
  const bytes = new Uint8Array(2 * half);
  bytes.set(deterministicBytes("disk", half), 0);
  bytes.set(text("disk", half), half);
  await Deno.writeFile(image, bytes);
  const img = await backupImage(zstd, { path: image });
  assert.equal(img.bytesNew, 2 * half);
  assert.equal(img.bytesNewIncompressible, half, "the random half of the image");
});

Deno.test("a blob encoded without encryption has parts a worker can take (zstd output leaves node's Buffer pool)", async () => {
  // The pack of a backup is hashed on a worker, its parts' buffers transferred: a part in node's shared Buffer
  // pool cannot be ("Provided key doesn't match [[ArrayBufferDetachKey]]"), which failed small compressible
  // blobs of repositories without encryption.
  for (const compression of ["zstd", "lz4", "none"] as Compression[]) {
    const codec = await createBlobCodec({ encryption: "none", compression });
    const plain = text("small", 900);
    const id = "ab".repeat(32);
    const parts = await codec.encodeParts(id, plain);
    for (const p of parts) {
      const copy = p.slice();
      const moved = structuredClone(p.buffer, { transfer: [p.buffer] });
      assert.equal(p.buffer.byteLength, 0, `${compression}: the part's buffer was transferred`);
      assert.ok(moved.byteLength >= copy.length);
    }
  }
});
