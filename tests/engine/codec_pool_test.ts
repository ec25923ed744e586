import assert from "node:assert/strict";
import { createBlobCodec, type Encryption } from "../../engine/repo/blob.ts";
import { createChunkIdHasher } from "../../engine/repo/chunk_id.ts";
import { CodecPool, type CutChunk, POOL_MIN_BYTES } from "../../engine/repo/codec_pool.ts";
import { chunkStream } from "../../engine/repo/chunker.ts";
import { IntegrityError, MissingObjectError } from "../../engine/repo/errors.ts";
import { concat } from "../../engine/repo/bytes.ts";
import { collect, deterministicBytes, piecesOf, tempDir } from "./helpers.ts";

const DATA_KEY = Uint8Array.from({ length: 32 }, (_, i) => i + 1);
const ID_KEY = Uint8Array.from({ length: 32 }, (_, i) => 100 + i);

Deno.test("CodecPool encodes and decodes on workers exactly as the inline codec, and names damage", async () => {
  for (const encryption of ["aes-256-gcm", "aes-256-cbc", "none"] as Encryption[]) {
    const inline = await createBlobCodec({ encryption, compression: "zstd", dataKey: DATA_KEY });
    const pool = new CodecPool(inline, DATA_KEY, 2);
    try {
      const hasher = createChunkIdHasher({ idKey: ID_KEY, salt: new Uint8Array([9, 9]) });
      const text = new TextEncoder().encode("restore me ".repeat(20_000));
      for (const plain of [deterministicBytes("pool", 300_000), text, deterministicBytes("small", 100)]) {
        const id = hasher.id(plain);
        // A handed-over buffer larger than the blob: only its first bytes are the blob.
        const handed = pool.buffer(plain.length).subarray(0, plain.length);
        handed.set(plain);
        const stored = await pool.encode(id, handed, true);
        assert.deepEqual(await inline.decode(id, stored, hasher), plain);
        assert.deepEqual(await pool.decode(id, stored.slice(), hasher, true), plain);
        if (stored.length < POOL_MIN_BYTES) continue;
        const damaged = stored.slice();
        damaged[damaged.length - 40] ^= 1;
        await assert.rejects(
          pool.decode(id, damaged, hasher),
          (e) => e instanceof IntegrityError && e.id === id,
        );
        // Authentic bytes under another id's hasher: the re-hash (or the AEAD binding) refuses them.
        const other = createChunkIdHasher({ idKey: ID_KEY });
        await assert.rejects(pool.decode(id, stored, other), IntegrityError);
      }
    } finally {
      pool.close();
    }
  }
});

Deno.test("CodecPool.restoreFile: each blob verified then written at its place, holes left, damage and loss named", async () => {
  await using dir = await tempDir();
  const inline = await createBlobCodec({ encryption: "aes-256-gcm", compression: "zstd", dataKey: DATA_KEY });
  const pool = new CodecPool(inline, DATA_KEY, 2);
  try {
    const hasher = createChunkIdHasher({ idKey: ID_KEY });
    const plains = [
      deterministicBytes("r1", 300_000),
      new Uint8Array(200_000), // a hole
      new TextEncoder().encode("text ".repeat(50_000)),
      new Uint8Array(70_000), // a hole at the end
    ];
    // A "pack": the stored blobs back to back.
    const stored = await Promise.all(plains.map((p) => inline.encode(hasher.id(p), p)));
    const pack = `${dir.path}/pack`;
    await Deno.writeFile(pack, concat(...stored));
    let offset = 0;
    const blobs = stored.map((s, i) => {
      const ref = { id: hasher.id(plains[i]), pack, packId: "p1", offset, length: s.length };
      offset += s.length;
      return ref;
    });
    const out = `${dir.path}/out`;
    await Deno.writeFile(out, new Uint8Array(0));
    let progress = 0;
    const r = await pool.restoreFile({ path: out, blobs, hasher: hasher.spec! }, (n) => progress += n);
    const whole = concat(...plains);
    assert.deepEqual(r, { written: whole.length, endsInHole: true });
    await Deno.truncate(out, r.written);
    assert.deepEqual(await Deno.readFile(out), whole);
    assert.ok(progress <= whole.length);

    // A damaged blob: IntegrityError naming it. A missing pack: MissingObjectError naming the blob.
    const damaged = concat(...stored);
    damaged[blobs[2].offset + 30] ^= 1;
    await Deno.writeFile(pack, damaged);
    const out2 = `${dir.path}/out2`;
    await Deno.writeFile(out2, new Uint8Array(0));
    await assert.rejects(
      pool.restoreFile({ path: out2, blobs, hasher: hasher.spec! }, () => {}),
      (e) => e instanceof IntegrityError && e.id === blobs[2].id,
    );
    await assert.rejects(
      pool.restoreFile({
        path: out2,
        blobs: [{ ...blobs[0], pack: `${dir.path}/gone`, packId: "p9" }],
        hasher: hasher.spec!,
      }, () => {}),
      (e) =>
        e instanceof MissingObjectError && e.id === blobs[0].id && /its pack p9 is missing/.test(e.message),
    );
  } finally {
    pool.close();
  }
});

Deno.test("ChunkSession: the worker's chunks and ids are chunkStream's; stored chunks decode, here or on another worker", async () => {
  const params = { min: 64 * 1024, avg: 128 * 1024, max: 512 * 1024 };
  const data = concat(
    deterministicBytes("session", 3_000_000),
    new TextEncoder().encode("text ".repeat(200_000)),
  );
  const ref = await collect(chunkStream(piecesOf(data, 65536), params));
  const hasher = createChunkIdHasher({ idKey: ID_KEY });
  for (const giveMargin of [Infinity, -Infinity]) {
    const inline = await createBlobCodec({
      encryption: "aes-256-gcm",
      compression: "zstd",
      dataKey: DATA_KEY,
    });
    const pool = new CodecPool(inline, DATA_KEY, 2, giveMargin);
    try {
      const cut: CutChunk[] = [];
      const stored = new Map<number, Uint8Array[]>();
      let done = false;
      let failure: unknown = null;
      let wake = () => {};
      const session = pool.openChunker(params, hasher, {
        cut(chunks, last) {
          cut.push(...chunks);
          // Store the even ones, drop the odd ones.
          session.decide(
            chunks.filter((c) => c.seq % 2 === 0).map((c) => c.seq),
            chunks.filter((c) => c.seq % 2).map((c) => c.seq),
          );
          if (last) done = true;
          wake();
        },
        stored(seq, parts) {
          stored.set(seq, parts);
          wake();
        },
        returned() {},
        failed(e) {
          failure = e;
          wake();
        },
      })!;
      // Starts the second worker (a chunk is given to another worker only when there is one).
      await pool.encodeParts(hasher.id(data.subarray(0, 100_000)), data.slice(0, 100_000));
      for (let off = 0; off < data.length; off += 700_000) {
        const piece = data.slice(off, off + 700_000);
        session.push(piece, piece.length, off + 700_000 >= data.length);
      }
      const want = Math.ceil(ref.length / 2);
      while (!(done && stored.size === want) && failure === null) await new Promise<void>((r) => wake = r);
      assert.equal(failure, null);
      assert.deepEqual(cut.map((c) => c.length), ref.map((c) => c.length));
      assert.deepEqual(cut.map((c) => c.id), ref.map((c) => hasher.id(c)));
      for (const [seq, parts] of stored) {
        assert.deepEqual(await inline.decode(cut[seq].id, concat(...parts), hasher), ref[seq]);
      }
      session.close();
    } finally {
      pool.close();
    }
  }
});
