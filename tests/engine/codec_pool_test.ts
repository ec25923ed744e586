import assert from "node:assert/strict";
import { createBlobCodec, type Encryption } from "../../engine/repo/blob.ts";
import { createChunkIdHasher } from "../../engine/repo/chunk_id.ts";
import { CodecPool, POOL_MIN_BYTES } from "../../engine/repo/codec_pool.ts";
import { IntegrityError } from "../../engine/repo/errors.ts";
import { deterministicBytes } from "./helpers.ts";

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
