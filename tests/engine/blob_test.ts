import assert from "node:assert/strict";
import fc from "fast-check";
import { createBlobCodec, type Encryption } from "../../engine/repo/blob.ts";
import { concat, fromHex, toHex } from "../../engine/repo/bytes.ts";
import { createChunkIdHasher } from "../../engine/repo/chunk_id.ts";
import {
  compress,
  type Compression,
  decompress,
  looksIncompressible,
} from "../../engine/repo/compression.ts";
import { IntegrityError } from "../../engine/repo/errors.ts";
import { deterministicBytes } from "./helpers.ts";

const range = (from: number, n: number) => Uint8Array.from({ length: n }, (_, i) => from + i);
const ID_KEY = range(0, 32);
const SALT = range(32, 32);
const DATA_KEY = range(64, 32);
const VECTOR = new TextEncoder().encode("cadres test vector");
const ENCRYPTIONS: Encryption[] = ["aes-256-gcm", "aes-256-cbc", "none"];
const COMPRESSIONS: Compression[] = ["zstd", "lz4", "none"];

// Vectors computed with an independent implementation (Python cryptography); docs/repository-format.md.
Deno.test("createChunkIdHasher() matches the documented chunk id vectors", () => {
  assert.equal(
    createChunkIdHasher({ idKey: ID_KEY }).id(VECTOR),
    "4a21acf920d5cd01324b6fb444d83b3d1abd0e47112acfc4f31f2e67e0757656",
  );
  assert.equal(
    createChunkIdHasher({}).id(VECTOR),
    "84f18f550a19208da172b3f8df98fe5666860ba64f0cd4bd7d0993cbdaf53b75",
  );
  assert.equal(
    createChunkIdHasher({ idKey: ID_KEY, salt: SALT }).id(VECTOR),
    "f3f25ed2eb17fcacd85cbb8056864b69912785a0f9849954e84ea47a8c79d529",
  );
  assert.equal(
    createChunkIdHasher({ salt: SALT }).id(VECTOR),
    "524ecfe78b466d617fd96758d5803220da2c1ba10b9e16c668846cfcd9805081",
  );
});

const BLOB_VECTORS: { encryption: Encryption; id: string; hex: string }[] = [
  {
    encryption: "aes-256-gcm",
    id: "4a21acf920d5cd01324b6fb444d83b3d1abd0e47112acfc4f31f2e67e0757656",
    hex:
      "0100010012000000000102030405060708090a0b5964080a12ff64d4a761f4e2ce88afcfecb66451a5f154b44eb6f9498e17b8310013",
  },
  {
    encryption: "aes-256-cbc",
    id: "4a21acf920d5cd01324b6fb444d83b3d1abd0e47112acfc4f31f2e67e0757656",
    hex: "0100020012000000000102030405060708090a0b0c0d0e0f5c75ab52007f5533b0b6d44d4bdb82f78e71acecfc916c4f" +
      "0199ce7cb8b4e63adf58fcf9b51e3cbb84c67b19965e07d595a89a12353c4f21e3f7d8f6bd311689",
  },
  {
    encryption: "none",
    id: "84f18f550a19208da172b3f8df98fe5666860ba64f0cd4bd7d0993cbdaf53b75",
    hex: "0100000012000000636164726573207465737420766563746f7237ae2c76495373f11c313807bcc1052a84a41924e9" +
      "4416d860cdfb26a9a9bfa8",
  },
];

Deno.test("createBlobCodec() encodes and decodes the documented blob vectors", async () => {
  for (const v of BLOB_VECTORS) {
    const codec = await createBlobCodec({
      encryption: v.encryption,
      compression: "none",
      dataKey: DATA_KEY,
      randomBytes: (n) => range(0, n),
    });
    assert.equal(toHex(await codec.encode(v.id, VECTOR)), v.hex, v.encryption);
    const hasher = createChunkIdHasher({ idKey: v.encryption === "none" ? null : ID_KEY });
    assert.deepEqual(await codec.decode(v.id, fromHex(v.hex), hasher), VECTOR);
  }
});

Deno.test("BlobCodec round-trips every compression × encryption, raw when it does not shrink", async () => {
  const hasher = createChunkIdHasher({ idKey: ID_KEY });
  const random = deterministicBytes("blob", 100_000);
  const text = new TextEncoder().encode("a line of very compressible text\n".repeat(3000));
  for (const encryption of ENCRYPTIONS) {
    for (const compression of COMPRESSIONS) {
      const codec = await createBlobCodec({ encryption, compression, dataKey: DATA_KEY });
      for (const plain of [new Uint8Array(0), random, text]) {
        const id = hasher.id(plain);
        const stored = await codec.encode(id, plain);
        const expectCode = compression !== "none" && plain === text ? (compression === "zstd" ? 1 : 2) : 0;
        assert.equal(stored[1], expectCode, `${encryption} ${compression} compression code`);
        if (expectCode) assert.ok(stored.length < plain.length / 5);
        assert.deepEqual(await codec.decode(id, stored, hasher), plain);
      }
    }
  }
});

Deno.test("BlobCodec.decode() fails naming the blob on any flipped byte", async () => {
  const plain = deterministicBytes("flip", 3000);
  for (const encryption of ENCRYPTIONS) {
    for (const compression of COMPRESSIONS) {
      const codec = await createBlobCodec({ encryption, compression, dataKey: DATA_KEY });
      const hasher = createChunkIdHasher({ idKey: encryption === "none" ? null : ID_KEY });
      const id = hasher.id(plain);
      const stored = await codec.encode(id, plain);
      await fc.assert(
        fc.asyncProperty(fc.nat(stored.length - 1), fc.integer({ min: 1, max: 255 }), async (pos, x) => {
          const bad = stored.slice();
          bad[pos] ^= x;
          await assert.rejects(codec.decode(id, bad, hasher), (e: unknown) => {
            assert.ok(e instanceof IntegrityError, String(e));
            assert.equal(e.id, id);
            assert.match(e.message, new RegExp(`^Damaged blob ${id}`));
            return true;
          });
        }),
        { numRuns: 30 },
      );
      // The same bytes under another id are refused: the id is bound to the blob.
      const other = hasher.id(new Uint8Array([1]));
      await assert.rejects(codec.decode(other, stored, hasher), IntegrityError);
    }
  }
});

Deno.test("BlobCodec.decode() refuses a blob sealed with another key", async () => {
  for (const encryption of ["aes-256-gcm", "aes-256-cbc"] as const) {
    const a = await createBlobCodec({ encryption, compression: "zstd", dataKey: DATA_KEY });
    const b = await createBlobCodec({ encryption, compression: "zstd", dataKey: range(1, 32) });
    const id = createChunkIdHasher({ idKey: ID_KEY }).id(VECTOR);
    await assert.rejects(b.decode(id, await a.encode(id, VECTOR)), /authentication failed/);
  }
});

Deno.test("zstd: a large blob whose samples do not compress is stored raw untried; any gain and it is compressed", async () => {
  const random = deterministicBytes("incompressible", 1024 * 1024);
  assert.equal(looksIncompressible(random), true);
  assert.equal(compress("zstd", random), null);
  // Compressible bytes at one sampled place (the end) are enough for the whole blob to be compressed.
  const tail = random.slice();
  tail.fill(0x61, tail.length - 64 * 1024);
  assert.equal(looksIncompressible(tail), false);
  const packed = compress("zstd", tail);
  assert.ok(packed !== null && packed.length < tail.length - 50_000);
  assert.deepEqual(decompress("zstd", packed!, tail.length), tail);
  // Text compresses; a blob under the sampling threshold is always tried whole.
  const text = new TextEncoder().encode("some text that compresses well\n".repeat(40_000));
  assert.equal(looksIncompressible(text), false);
  assert.ok(compress("zstd", text)!.length < text.length / 10);
  const small = concat(deterministicBytes("small", 200 * 1024), new Uint8Array(50_000));
  assert.ok(compress("zstd", small)!.length < small.length);
  // The codec agrees: the random blob is stored raw (code 0) and round-trips.
  const codec = await createBlobCodec({ encryption: "aes-256-gcm", compression: "zstd", dataKey: DATA_KEY });
  const hasher = createChunkIdHasher({ idKey: ID_KEY });
  const stored = await codec.encode(hasher.id(random), random);
  assert.equal(stored[1], 0);
  assert.deepEqual(await codec.decode(hasher.id(random), stored, hasher), random);
});
