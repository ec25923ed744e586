/** Writer locks: taken by backupFiles itself, checked before the snapshot is written. */
import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { denoFileSystem, type FileSystem } from "../../engine/repo/fs.ts";
import { listLiveLocks } from "../../engine/repo/lock.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { listSnapshots } from "../../engine/repo/snapshot.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 64 * 1024 };
const KEK = crypto.getRandomValues(new Uint8Array(32));

/** A local backend whose lock writes fail once `failLocks` is set. */
class FlakyLockBackend extends LocalBackend {
  failLocks = false;
  override async put(name: string, data: Uint8Array): Promise<void> {
    if (this.failLocks && name.startsWith("locks/")) throw new Error("injected: lock write refused");
    await super.put(name, data);
  }
}

/** A file system that runs `during` once, when the backup stats `path`. */
function fsWith(path: string, during: () => Promise<void>): FileSystem {
  let done = false;
  return {
    ...denoFileSystem,
    lstat: async (p) => {
      if (p === path && !done) {
        done = true;
        await during();
      }
      return await denoFileSystem.lstat(p);
    },
  };
}

async function setup(dir: string) {
  const be = new FlakyLockBackend(`${dir}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", ...SMALL });
  await Deno.mkdir(`${dir}/src`);
  await Deno.writeFile(`${dir}/src/a`, deterministicBytes("lock-a", 40_000));
  return { be, ns: repo.namespace("h"), src: `${dir}/src` };
}

Deno.test("backupFiles() holds a writer lock while it runs, for every library caller", async () => {
  await using dir = await tempDir();
  const { be, ns, src } = await setup(dir.path);
  let seen: Awaited<ReturnType<typeof listLiveLocks>> = [];
  await backupFiles(ns, {
    paths: [src],
    fs: fsWith(`${src}/a`, async () => void (seen = await listLiveLocks(be))),
  });
  assert.deepEqual(seen.map((l) => [l.kind, l.namespace]), [["backup", "h"]]);
  assert.deepEqual(await Array.fromAsync(be.list("locks/")), [], "released when done");
});

Deno.test("backupFiles() aborts before its snapshot when its lock cannot be refreshed", async () => {
  await using dir = await tempDir();
  const { be, ns, src } = await setup(dir.path);
  await assert.rejects(
    backupFiles(ns, {
      paths: [src],
      lock: { refreshMs: 5 },
      fs: fsWith(`${src}/a`, async () => {
        be.failLocks = true;
        await new Promise((r) => setTimeout(r, 30)); // refreshes fail meanwhile
      }),
    }),
    /Lock locks\/[0-9a-f-]{36} could not be refreshed: injected: lock write refused/,
  );
  assert.deepEqual(await listSnapshots(be), [], "no snapshot written");
});

Deno.test("backupFiles() aborts before its snapshot when its lock went unrefreshed for half the stale limit", async () => {
  await using dir = await tempDir();
  const { be, ns, src } = await setup(dir.path);
  let skew = 0;
  await assert.rejects(
    backupFiles(ns, {
      paths: [src],
      lock: { staleMs: 60_000, now: () => new Date(Date.now() + skew) },
      // The process was suspended (or its refreshes failed) for 40 s: gc would see the lock 40 s old.
      fs: fsWith(`${src}/a`, () => Promise.resolve(void (skew = 40_000))),
    }),
    /Lock locks\/[0-9a-f-]{36} went 40 s without a refresh \(gc takes it for stale after 60 s\)/,
  );
  assert.deepEqual(await listSnapshots(be), []);
  assert.deepEqual(await Array.fromAsync(be.list("locks/")), [], "released on failure");
});
