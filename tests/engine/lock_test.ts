/** Writer locks: taken by backupFiles itself, checked before the snapshot is written. */
import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { denoFileSystem, type FileSystem } from "../../engine/repo/fs.ts";
import { forgetSnapshots, garbageCollect } from "../../engine/repo/gc.ts";
import { acquireLock, encodeLock, listLiveLocks, LOCK_STALE_MS, parseLock } from "../../engine/repo/lock.ts";
import { createKeyFile } from "../../engine/repo/keys.ts";
import { runRepoCli } from "../../engine/cli.ts";
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

/** A repository whose only snapshot is forgotten: its packs are garbage, old enough to condemn. */
async function garbageRepo(dir: string) {
  const { be, ns, src } = await setup(dir);
  const s = await backupFiles(ns, { paths: [src] });
  await forgetSnapshots(be, [s.snapshotId]);
  await new Promise((r) => setTimeout(r, 30));
  return be;
}

const GOOD_LOCK = {
  version: 1,
  kind: "backup",
  namespace: "h",
  hostname: "x",
  pid: 1,
  start: new Date().toISOString(),
  refreshed: new Date().toISOString(),
};

for (
  const [what, bytes] of [
    ["a garbage start", JSON.stringify({ ...GOOD_LOCK, start: "garbage" })],
    ["a garbage refreshed", JSON.stringify({ ...GOOD_LOCK, refreshed: "yesterday" })],
    ["no JSON at all", "\u0000\u0001not a lock"],
    [
      "a checksum mismatch",
      (() => {
        const v2 = new TextDecoder().decode(
          encodeLock({ ...GOOD_LOCK, version: 2, kind: "backup", parent: null }),
        );
        return v2.replace(/"start":"[^"]+"/, `"start":"${new Date(Date.now() + 3_600_000).toISOString()}"`);
      })(),
    ],
  ] as const
) {
  Deno.test(`garbageCollect() condemns and deletes nothing while a damaged lock (${what}) is live`, async () => {
    await using dir = await tempDir();
    const be = await garbageRepo(dir.path);
    const name = "locks/0badf00d-0000-4000-8000-000000000000";
    await be.put(name, new TextEncoder().encode(bytes));
    const held = await garbageCollect(be, { graceMs: 0, clockMarginMs: 0 });
    assert.deepEqual(held.condemned, []);
    assert.deepEqual(held.damagedLocks, [name]);
    await assert.rejects(forgetSnapshots(be, []), new RegExp(`lock ${name} is damaged`));
    // Packs condemned before the damaged lock appeared are not deleted while it is live.
    await be.delete(name);
    const first = await garbageCollect(be, { graceMs: 0, clockMarginMs: 0 });
    assert.ok(first.condemned.length > 0);
    assert.deepEqual(first.damagedLocks, []);
    await be.put(name, new TextEncoder().encode(bytes));
    const second = await garbageCollect(be, { graceMs: 0, clockMarginMs: 0 });
    assert.deepEqual(second.deleted, [], "nothing deleted while the damaged lock is live");
    assert.deepEqual(second.pending.sort(), first.condemned.sort());
    assert.deepEqual(second.damagedLocks, [name]);
  });
}

Deno.test("Locks are strict: a lock this program writes parses; a damaged one is named", () => {
  const info = { ...GOOD_LOCK, version: 2, kind: "backup" as const, parent: "ab".repeat(32) };
  assert.deepEqual(parseLock("locks/a", encodeLock(info)), info);
  assert.deepEqual(parseLock("locks/a", new TextEncoder().encode(JSON.stringify(GOOD_LOCK))), {
    ...GOOD_LOCK,
    parent: null,
  });
  assert.throws(
    () => parseLock("locks/b", new TextEncoder().encode(JSON.stringify({ ...GOOD_LOCK, pid: "1" }))),
    /Damaged lock locks\/b: pid/,
  );
});

Deno.test("forgetSnapshots() refuses the parent of a running backup while its lock is live", async () => {
  await using dir = await tempDir();
  const { be, ns, src } = await setup(dir.path);
  const parent = await backupFiles(ns, { paths: [src] });
  let refused: unknown = null;
  await backupFiles(ns, {
    paths: [src],
    parent: parent.snapshotId,
    fs: fsWith(`${src}/a`, async () => {
      refused = await forgetSnapshots(be, [parent.snapshotId]).then(() => null, (e) => e);
    }),
  });
  assert.match(
    String(refused),
    new RegExp(
      `Cannot forget snapshot ${parent.snapshotId}: it is the parent of a running backup \\(lock locks/`,
    ),
  );
  assert.equal((await listSnapshots(be)).length, 2, "nothing forgotten");
  await forgetSnapshots(be, [parent.snapshotId]); // the backup is done
  assert.equal((await listSnapshots(be)).length, 1);
});

Deno.test("deno task repo unlock --stale removes stale locks (a killed gc's) and keeps live ones", async () => {
  await using dir = await tempDir();
  const keyFile = `${dir.path}/key`;
  const repoPath = `${dir.path}/repo`;
  const be = new LocalBackend(repoPath);
  await Repository.init(be, await createKeyFile(keyFile), { namespace: "h" });
  // The lock of a gc killed 6 minutes ago: stale, so it no longer blocks gc, but it stays until removed.
  const old = new Date(Date.now() - LOCK_STALE_MS - 60_000).toISOString();
  const info = { version: 2, kind: "gc" as const, namespace: null, hostname: "x", pid: 1, parent: null };
  await be.put("locks/killed-gc", encodeLock({ ...info, start: old, refreshed: old }));
  const live = await acquireLock(be, { kind: "backup", namespace: "h" });
  const run = (...a: string[]) => runRepoCli(["unlock", "--repo", repoPath, "--key-file", keyFile, ...a]);
  assert.equal(await run(), 2, "--stale is required");
  assert.equal(await run("--stale"), 0);
  assert.deepEqual((await Array.fromAsync(be.list("locks/"))).map((o) => o.name), [live.name]);
  await live.release();
  await garbageCollect(be);
});
