import assert from "node:assert/strict";
import { LockLapsedError, WriterLocks } from "../../engine/bes/writer_locks.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { listLiveLocks, LOCK_STALE_MS, parseLock } from "../../engine/repo/lock.ts";
import { tempDir } from "./helpers.ts";

const HOLDER = { namespace: "host-a", hostname: "host-a" };

Deno.test("WriterLocks rewrites a held lock only as requests arrive, and refuses a commit after a silence", async () => {
  await using dir = await tempDir();
  const backend = new LocalBackend(dir.path);
  let t = Date.parse("2027-03-01T10:00:00Z");
  const locks = new WriterLocks({ now: () => new Date(t) });
  await locks.acquire("job", backend, HOLDER);
  const [name] = (await Array.fromAsync(backend.list("locks/"))).map((o) => o.name);
  const first = parseLock(name, await backend.get(name));
  assert.equal(first.refreshed, new Date(t).toISOString());

  // A request 40 s later rewrites it (older than 30 s); one 10 s after that does not.
  t += 40_000;
  await locks.touch("job");
  assert.equal(parseLock(name, await backend.get(name)).refreshed, new Date(t).toISOString());
  t += 10_000;
  await locks.touch("job");
  assert.equal(parseLock(name, await backend.get(name)).refreshed, new Date(t - 10_000).toISOString());
  await locks.check("job"); // never lapsed: passes, and rewrites it
  assert.equal(parseLock(name, await backend.get(name)).refreshed, new Date(t).toISOString());

  // Silent for more than half the stale limit: gc may have taken it for stale, so the commit is refused
  // and the lock forgotten (the next write takes a fresh one).
  t += LOCK_STALE_MS / 2 + 1000;
  await locks.touch("job");
  await assert.rejects(() => locks.check("job"), LockLapsedError);
  assert.equal(locks.isHeld("job"), false);
  assert.deepEqual(await Array.fromAsync(backend.list("locks/")), []);
});

Deno.test("WriterLocks forgets and deletes the lock of a job silent past the idle limit; gc sees it stale before", async () => {
  await using dir = await tempDir();
  const backend = new LocalBackend(dir.path);
  let t = Date.parse("2027-03-01T10:00:00Z");
  const locks = new WriterLocks({ now: () => new Date(t) });
  await locks.acquire("quiet", backend, { ...HOLDER, parent: "ab".repeat(32) });
  await locks.acquire("busy", backend, HOLDER);
  assert.equal((await listLiveLocks(backend, { now: new Date(t) })).length, 2);
  const live = await listLiveLocks(backend, { now: new Date(t) });
  assert.ok(live.some((l) => l.parent === "ab".repeat(32)));
  for (let i = 0; i < 11; i++) {
    t += 30_000;
    await locks.touch("busy");
  }
  // 5.5 minutes later: the quiet job's lock is stale for gc, the busy one's is live.
  const seen = await listLiveLocks(backend, { now: new Date(t) });
  assert.equal(seen.length, 1);
  assert.equal(await locks.sweep(), 1);
  assert.equal(locks.isHeld("quiet"), false);
  assert.equal(locks.isHeld("busy"), true);
  assert.equal((await Array.fromAsync(backend.list("locks/"))).length, 1);
  await locks.close();
  assert.deepEqual(await Array.fromAsync(backend.list("locks/")), []);
});
