import assert from "node:assert/strict";
import fc from "fast-check";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import type { Encryption } from "../../engine/repo/blob.ts";
import type { Compression } from "../../engine/repo/compression.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { tempDir } from "./helpers.ts";
import { assertSameTree, treeArb, writeTree } from "./tree_fixture.ts";

const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 64 * 1024 };
const MIB = 1024 * 1024;

/** A file of the large-file property: its content is made of blocks, each random, text or zeros. */
interface BigFile {
  size: number;
  /** Share of text blocks among the non-zero ones (0: incompressible, 1: all text). */
  compressibility: number;
  /** Share of all-zero blocks. */
  zeros: number;
  seed: number;
  mode: number;
  mtime: number;
}

const bigFileArb: fc.Arbitrary<BigFile> = fc.record({
  size: fc.oneof(
    fc.constant(0),
    fc.integer({ min: 1, max: 100_000 }),
    fc.integer({ min: MIB, max: 5 * MIB }),
    fc.integer({ min: MIB, max: 5 * MIB }),
  ),
  compressibility: fc.constantFrom(0, 0.3, 0.7, 1),
  zeros: fc.constantFrom(0, 0, 0.2, 0.6),
  seed: fc.integer({ min: 1, max: 0x7fffffff }),
  mode: fc.constantFrom(0o644, 0o600, 0o755),
  mtime: fc.integer({ min: 0, max: 1_900_000_000_000 }),
});

/** One to three files named distinctly, at least one of them 1 MiB or more. */
const bigFilesArb = fc.uniqueArray(
  fc.tuple(fc.stringMatching(/^[a-z0-9é日]{1,8}$/), bigFileArb),
  { minLength: 1, maxLength: 3, selector: (t) => t[0] },
).filter((files) => files.some(([, f]) => f.size >= MIB));

/** The content of `f`: 16 KiB blocks of xorshift32 noise, repeated text, or zeros, chosen by its seed. */
function bigContent(f: BigFile): Uint8Array {
  const out = new Uint8Array(f.size);
  let x = f.seed;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
  const text = new TextEncoder().encode(`block ${f.seed} of some compressible text; `);
  const BLOCK = 16 * 1024;
  for (let off = 0; off < f.size; off += BLOCK) {
    const end = Math.min(f.size, off + BLOCK);
    const pick = next() / 2 ** 32;
    if (pick < f.zeros) continue;
    if ((pick - f.zeros) / (1 - f.zeros) < f.compressibility) {
      for (let i = off; i < end; i++) out[i] = text[i % text.length];
    } else {
      const words = new Uint32Array(Math.ceil((end - off) / 4));
      for (let i = 0; i < words.length; i++) words[i] = next();
      out.set(new Uint8Array(words.buffer).subarray(0, end - off), off);
    }
  }
  return out;
}

for (const encryption of ["aes-256-gcm", "aes-256-cbc", "none"] as Encryption[]) {
  for (const compression of ["zstd", "lz4", "none"] as Compression[]) {
    Deno.test(`backupFiles() then restoreSnapshot() is byte-identical with metadata (${compression}, ${encryption})`, async () => {
      await fc.assert(
        fc.asyncProperty(treeArb, async (tree) => {
          await using dir = await tempDir();
          const kek = crypto.getRandomValues(new Uint8Array(32));
          const be = new LocalBackend(`${dir.path}/repo`);
          const repo = await Repository.init(be, kek, {
            namespace: "host-a",
            compression,
            encryption,
            ...SMALL,
          });
          const src = `${dir.path}/src`;
          await writeTree(src, tree);
          const result = await backupFiles(repo.namespace("host-a"), { paths: [src] });
          assert.deepEqual(result.errors, []);

          const reopened = await Repository.open(be, kek);
          const target = `${dir.path}/target`;
          const restored = await restoreSnapshot(reopened.namespace("host-a"), result.snapshotId, { target });
          assert.deepEqual(restored.errors, []);
          await assertSameTree(src, `${target}${src}`);
        }),
        { numRuns: 4 },
      );
    });
  }
}

// Files of 0 B to 5 MiB with the format's own chunker (512 KiB / 1 MiB / 8 MiB) and several packs: few
// runs, as each moves megabytes through every codec.
for (const encryption of ["aes-256-gcm", "aes-256-cbc", "none"] as Encryption[]) {
  for (const compression of ["zstd", "lz4", "none"] as Compression[]) {
    Deno.test(`backupFiles() then restoreSnapshot() is byte-identical for files of up to 5 MiB (${compression}, ${encryption})`, async () => {
      await fc.assert(
        fc.asyncProperty(bigFilesArb, async (files) => {
          await using dir = await tempDir();
          const kek = crypto.getRandomValues(new Uint8Array(32));
          const be = new LocalBackend(`${dir.path}/repo`);
          const repo = await Repository.init(be, kek, {
            namespace: "host-a",
            compression,
            encryption,
            packTargetBytes: 2 * MIB,
          });
          const src = `${dir.path}/src`;
          await Deno.mkdir(src);
          for (const [name, f] of files) {
            await Deno.writeFile(`${src}/${name}`, bigContent(f));
            await Deno.chmod(`${src}/${name}`, f.mode);
            await Deno.utime(`${src}/${name}`, new Date(f.mtime), new Date(f.mtime));
          }
          const result = await backupFiles(repo.namespace("host-a"), { paths: [src] });
          assert.deepEqual(result.errors, []);
          assert.equal(result.bytesRead, files.reduce((n, [, f]) => n + f.size, 0));

          const reopened = await Repository.open(be, kek);
          const target = `${dir.path}/target`;
          const restored = await restoreSnapshot(reopened.namespace("host-a"), result.snapshotId, { target });
          assert.deepEqual(restored.errors, []);
          await assertSameTree(src, `${target}${src}`);
        }),
        { numRuns: 2 },
      );
    });
  }
}
