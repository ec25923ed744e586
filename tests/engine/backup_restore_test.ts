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
