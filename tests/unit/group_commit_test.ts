/**
 * The group committer (domain/group_commit.ts): writes that arrive while a commit is in flight share the
 * next one with their own checks; writes touching a common key never share one; a failed or refused
 * shared commit falls back to one commit per write; KV's per-operation limits are respected.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { AtomicRecorder, GroupCommitter, keyId } from "../../domain/group_commit.ts";
import { gatedKv } from "../fakes/gated_kv.ts";

function write(build: (op: AtomicRecorder) => void): AtomicRecorder {
  const op = new AtomicRecorder();
  build(op);
  return op;
}

Deno.test("GroupCommitter: writes submitted while a commit is in flight share the next commit, each applied", async () => {
  using real = await Deno.openKv(":memory:");
  const gated = gatedKv(real);
  const committer = new GroupCommitter(gated.kv, 32);
  gated.close();
  const first = committer.submit(write((op) => op.set(["a"], 0)));
  const rest = Array.from(
    { length: 10 },
    (_, i) =>
      committer.submit(write((op) => op.check({ key: ["k", i], versionstamp: null }).set(["k", i], i))),
  );
  gated.open();
  const results = await Promise.all([first, ...rest]);
  assert.ok(results.every((r) => r.ok));
  assert.equal(committer.stats.commits, 2, "the blocker, then one commit for the ten");
  const stamps = new Set(results.slice(1).map((r) => r.ok && r.versionstamp));
  assert.equal(stamps.size, 1, "the ten share one versionstamp");
  for (let i = 0; i < 10; i++) assert.equal((await real.get(["k", i])).value, i);
});

Deno.test("GroupCommitter: two writes claiming the same nonce never share a commit — exactly one is written (many iterations)", async () => {
  for (let iteration = 0; iteration < 25; iteration++) {
    using real = await Deno.openKv(":memory:");
    const gated = gatedKv(real);
    const committer = new GroupCommitter(gated.kv, 32);
    gated.close();
    const blocker = committer.submit(write((op) => op.set(["other", iteration], 1)));
    const claim = (who: number) =>
      committer.submit(
        write((op) =>
          op.check({ key: ["nonce", "n"], versionstamp: null }).set(["nonce", "n"], who).set(
            ["seen", who],
            true,
          )
        ),
      );
    // Unrelated writes around the two claims, so both would be in one shared commit if allowed.
    const noise = (i: number) => committer.submit(write((op) => op.set(["noise", i], i)));
    const results = [noise(0), claim(1), noise(1), claim(2), noise(2)];
    gated.open();
    const [, , a, , b] = await Promise.all([blocker, ...results]);
    assert.deepEqual([a.ok, b.ok], [true, false], "the first claim wins, the second fails its own check");
    assert.equal((await real.get(["nonce", "n"])).value, 1);
    assert.equal((await real.get(["seen", 2])).value, null, "nothing of the refused write is written");
    assert.ok(committer.stats.commits >= 3, "the second claim waited for a later commit");
  }
});

Deno.test("GroupCommitter: counter sums on one key commute and may share a commit", async () => {
  using real = await Deno.openKv(":memory:");
  const gated = gatedKv(real);
  const committer = new GroupCommitter(gated.kv, 32);
  gated.close();
  const blocker = committer.submit(write((op) => op.set(["x"], 1)));
  const sums = [1, 2, 3].map(() => committer.submit(write((op) => op.sum(["count"], 1n))));
  gated.open();
  assert.ok((await Promise.all([blocker, ...sums])).every((r) => r.ok));
  assert.equal(committer.stats.commits, 2);
  assert.equal((await real.get<Deno.KvU64>(["count"])).value?.value, 3n);
});

Deno.test("GroupCommitter: a shared commit that fails falls back to one commit per write — only the write whose check fails is refused", async () => {
  using real = await Deno.openKv(":memory:");
  await real.set(["stale"], "v1");
  const staleEntry = await real.get(["stale"]);
  await real.set(["stale"], "v2");
  const gated = gatedKv(real);
  const committer = new GroupCommitter(gated.kv, 32);
  gated.close();
  const blocker = committer.submit(write((op) => op.set(["b"], 1)));
  const good1 = committer.submit(write((op) => op.set(["g", 1], 1)));
  const bad = committer.submit(write((op) => op.check(staleEntry).set(["stale"], "overwritten")));
  const good2 = committer.submit(write((op) => op.set(["g", 2], 2)));
  gated.open();
  const [, r1, rb, r2] = await Promise.all([blocker, good1, bad, good2]);
  assert.deepEqual([r1.ok, rb.ok, r2.ok], [true, false, true]);
  assert.equal(committer.stats.sharedFailures, 1);
  assert.equal((await real.get(["stale"])).value, "v2");
  assert.equal((await real.get(["g", 2])).value, 2);
});

Deno.test("GroupCommitter: a shared commit over KV's size limit is refused as a whole, then every write commits alone", async () => {
  using real = await Deno.openKv(":memory:");
  const gated = gatedKv(real);
  const committer = new GroupCommitter(gated.kv, 32);
  gated.close();
  const blocker = committer.submit(write((op) => op.set(["b"], 1)));
  // Fifteen values of 60 KiB: each under KV's 64 KiB value limit, together (900 KiB) over the 800 KiB
  // one atomic operation may write.
  const big = "x".repeat(60 * 1024);
  const writes = Array.from(
    { length: 15 },
    (_, i) => committer.submit(write((op) => op.set(["big", i], big))),
  );
  gated.open();
  const results = await Promise.all([blocker, ...writes]);
  assert.ok(results.every((r) => r.ok), "each 60 KiB write fits alone");
  assert.equal(committer.stats.sharedFailures, 1, "15 × 60 KiB is over the 800 KiB of one operation");
  for (let i = 0; i < 15; i++) assert.equal((await real.get<string>(["big", i])).value?.length, big.length);
});

Deno.test("GroupCommitter: at most 100 checks and `maxWrites` writes go in one commit", async () => {
  using real = await Deno.openKv(":memory:");
  const gated = gatedKv(real);
  const committer = new GroupCommitter(gated.kv, 1000);
  gated.close();
  const blocker = committer.submit(write((op) => op.set(["b"], 1)));
  const writes = Array.from(
    { length: 120 },
    (_, i) =>
      committer.submit(
        write((op) =>
          op.check({ key: ["c", i, 0], versionstamp: null }, { key: ["c", i, 1], versionstamp: null })
            .set(["c", i, 0], i)
        ),
      ),
  );
  gated.open();
  assert.ok((await Promise.all([blocker, ...writes])).every((r) => r.ok));
  assert.equal(committer.stats.commits, 1 + 3, "50 + 50 + 20 writes of two checks each");
  assert.equal(committer.stats.sharedFailures, 0);

  const small = new GroupCommitter(gated.kv, 4);
  gated.close();
  const b2 = small.submit(write((op) => op.set(["b2"], 1)));
  const ten = Array.from({ length: 10 }, (_, i) => small.submit(write((op) => op.set(["s", i], i))));
  gated.open();
  await Promise.all([b2, ...ten]);
  assert.equal(small.stats.commits, 1 + 3, "4 + 4 + 2");
});

Deno.test("GroupCommitter: a write that cannot be committed even alone rejects, and only that write", async () => {
  using real = await Deno.openKv(":memory:");
  const gated = gatedKv(real);
  const committer = new GroupCommitter(gated.kv, 32);
  gated.close();
  const blocker = committer.submit(write((op) => op.set(["b"], 1)));
  const tooBig = committer.submit(write((op) => op.set(["huge"], "x".repeat(70 * 1024))));
  const fine = committer.submit(write((op) => op.set(["fine"], 1)));
  gated.open();
  await assert.rejects(tooBig);
  assert.ok((await fine).ok);
  assert.ok((await blocker).ok);
  assert.equal((await real.get(["huge"])).value, null);
});

Deno.test("AtomicRecorder records checks and mutations as a kv.atomic() would apply them", async () => {
  using kv = await Deno.openKv(":memory:");
  await kv.set(["n"], new Deno.KvU64(5n));
  const entry = await kv.get(["n"]);
  const op = new AtomicRecorder().check(entry).sum(["n"], 2n).max(["m"], 7n).min(["l"], 3n)
    .set(["s"], "v", { expireIn: 60_000 }).set(["t"], 1).delete(["gone"]);
  assert.deepEqual(op.checks, [{ key: ["n"], versionstamp: entry.versionstamp }]);
  assert.deepEqual(op.mutations.map((m) => m.type), ["sum", "max", "min", "set", "set", "delete"]);
  assert.equal((op.mutations[3] as { expireIn?: number }).expireIn, 60_000);
  assert.ok(!("expireIn" in op.mutations[4]));
  assert.throws(() => op.enqueue());
  assert.throws(() => op.commit());
  const committer = new GroupCommitter(kv, 8);
  assert.ok((await committer.submit(op)).ok);
  assert.equal((await kv.get<Deno.KvU64>(["n"])).value?.value, 7n);
  assert.equal((await kv.get<Deno.KvU64>(["m"])).value?.value, 7n);
  assert.equal((await kv.get(["s"])).value, "v");
});

Deno.test("keyId: two keys have the same id exactly when they are the same key", () => {
  const part = fc.oneof(
    fc.string({ unit: "binary" }),
    fc.constantFrom("|", "s1:a|", ":", "", "s", "number1"),
    fc.integer(),
    fc.double(),
    fc.bigInt(),
    fc.boolean(),
    fc.uint8Array({ maxLength: 4 }),
  );
  const key = fc.array(part, { maxLength: 4 });
  /** Equality of KV keys: parts equal by type and value (byte arrays by content, -0 as KV encodes it). */
  const same = (a: Deno.KvKey, b: Deno.KvKey) =>
    a.length === b.length && a.every((x, i) => {
      const y = b[i];
      if (x instanceof Uint8Array || y instanceof Uint8Array) {
        return x instanceof Uint8Array && y instanceof Uint8Array && x.join() === y.join();
      }
      return typeof x === typeof y && (Object.is(x, y) || (x === 0 && y === 0));
    });
  fc.assert(
    fc.property(key, key, (a, b) => {
      assert.equal(keyId(a) === keyId(b), same(a, b), `${keyId(a)} vs ${keyId(b)}`);
    }),
    { numRuns: 5000 },
  );
  assert.notEqual(keyId(["a|s1:b"]), keyId(["a", "b"]));
  assert.notEqual(keyId(["ab", "c"]), keyId(["a", "bc"]));
});
