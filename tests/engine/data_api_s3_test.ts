/** The data API over an S3-compatible target (s3rver on loopback): a backup and restore through the BES. */
import assert from "node:assert/strict";
import S3rver from "s3rver";
import { backupFiles } from "../../engine/repo/backup.ts";
import { MissingObjectError } from "../../engine/repo/errors.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { S3Backend } from "../../engine/repo/s3_backend.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";
import { names, startBes } from "./data_api_fixture.ts";
import { assertSameTree } from "./tree_fixture.ts";

async function startS3rver(): Promise<AsyncDisposable & { endpoint: string }> {
  const dir = await tempDir("cadres-s3rver-");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const server = new S3rver({
    port,
    address: "127.0.0.1",
    silent: true,
    directory: dir.path,
    configureBuckets: [{ name: "bucket" }],
  });
  await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    async [Symbol.asyncDispose]() {
      await server.close();
      await dir[Symbol.asyncDispose]();
    },
  };
}

Deno.test("data API over an S3 target: backup and restore through the BES, namespaces kept apart", async () => {
  await using s3 = await startS3rver();
  const storage = new S3Backend({
    endpoint: s3.endpoint,
    bucket: "bucket",
    prefix: "cadres/pol_1/g1",
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
  });
  await using bes = await startBes({ storage });
  const src = `${bes.dir}/src`;
  await Deno.mkdir(`${src}/sub`, { recursive: true });
  // Larger than one 64 KiB tail read: the BES reads pack trailers without knowing the packs' sizes.
  await Deno.writeFile(`${src}/big.bin`, deterministicBytes("s3-big", 300_000));
  await Deno.writeFile(`${src}/sub/small.txt`, new TextEncoder().encode("small"));
  const writer = bes.remote(bes.token());
  const repo = await Repository.openNamespace(writer, bes.keys.a);
  const result = await backupFiles(repo.namespace("host-a"), { paths: [src] });
  assert.deepEqual(result.errors, []);
  assert.deepEqual(await names(storage, "locks/"), []);

  const reader = bes.remote(bes.token({ access: "read", job: "job_r" }));
  const opened = await Repository.openNamespace(reader, bes.keys.a);
  const target = `${bes.dir}/restored`;
  const restored = await restoreSnapshot(opened.namespace("host-a"), result.snapshotId, { target });
  assert.deepEqual(restored.errors, []);
  await assertSameTree(src, `${target}${src}`);

  const other = bes.remote(bes.token({ job: "job_b", host: "host-b", namespace: "host-b", access: "read" }));
  assert.deepEqual(await names(other, "data/"), []);
  await assert.rejects(() => other.get(`snapshots/${result.snapshotId}`), MissingObjectError);
});
