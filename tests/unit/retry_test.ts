import assert from "node:assert/strict";
import { ConflictError, NotFoundError, toErrorStatus } from "../../domain/errors.ts";
import { withRetry as fromKv } from "../../domain/kv.ts";
import { releaseAttempt, reserveAttempt } from "../../domain/rate_limit.ts";
import { COMMIT_CONFLICT_MESSAGE, CommitConflictError, withRetry } from "../../domain/retry.ts";

Deno.test("withRetry() returns the first result and stops trying", async () => {
  let calls = 0;
  const value = await withRetry(() => {
    calls++;
    return Promise.resolve(calls < 3 ? null : { value: `won on try ${calls}` });
  });
  assert.equal(value, "won on try 3");
  assert.equal(calls, 3);
  // A result whose value is undefined (nothing to do) is a result, not a lost race.
  let once = 0;
  assert.equal(await withRetry(() => Promise.resolve((once++, { value: undefined }))), undefined);
  assert.equal(once, 1);
});

Deno.test("withRetry() throws a named 409 conflict after exactly `tries` lost races", async () => {
  for (const tries of [1, 5, 10]) {
    let calls = 0;
    const error = await withRetry(() => Promise.resolve((calls++, null)), tries).then(() => null, (e) => e);
    assert.equal(calls, tries);
    assert.ok(error instanceof CommitConflictError);
    assert.ok(error instanceof ConflictError, "handled wherever conflicts are");
    assert.equal(error.name, "CommitConflictError");
    assert.equal(error.tries, tries);
    assert.equal(error.message, COMMIT_CONFLICT_MESSAGE);
    assert.deepEqual(toErrorStatus(error), { status: 409, code: "conflict" });
  }
  await assert.rejects(() => withRetry(() => Promise.resolve(null), 2, "Run r1 changed meanwhile"), {
    name: "CommitConflictError",
    message: "Run r1 changed meanwhile",
  });
  await assert.rejects(() => withRetry(() => Promise.resolve({ value: 1 }), 0), RangeError);
  assert.equal(fromKv, withRetry, "kv.ts re-exports the same helper");
});

Deno.test("withRetry() lets an attempt's own error through at once", async () => {
  let calls = 0;
  await assert.rejects(
    () =>
      withRetry(() => {
        calls++;
        throw new NotFoundError("Policy p1 not found");
      }),
    NotFoundError,
  );
  assert.equal(calls, 1);
});

Deno.test("withRetry() around a checked KV commit loses no update among concurrent writers", async () => {
  for (let round = 0; round < 20; round++) {
    using kv = await Deno.openKv(":memory:");
    const key = ["counter"];
    await kv.set(key, 0);
    const writers = 12;
    const outcomes = await Promise.allSettled(
      Array.from({ length: writers }, () =>
        withRetry(async () => {
          const entry = await kv.get<number>(key);
          const ok = (await kv.atomic().check(entry).set(key, entry.value! + 1).commit()).ok;
          return ok ? { value: entry.value! + 1 } : null;
        }, 3)),
    );
    const won = outcomes.filter((o) => o.status === "fulfilled").length;
    for (const o of outcomes) {
      if (o.status === "rejected") assert.ok(o.reason instanceof CommitConflictError, String(o.reason));
    }
    // Each writer either committed its increment or was told it did not: the count is exactly the winners.
    assert.equal((await kv.get<number>(key)).value, won);
    const values = outcomes.flatMap((o) => o.status === "fulfilled" ? [o.value] : []).sort((a, b) => a - b);
    assert.deepEqual(values, Array.from({ length: won }, (_, i) => i + 1), "each winner saw its own write");
  }
});

/** `kv` whose atomic commits all report a lost race (another writer always wins). */
function alwaysLosing(kv: Deno.Kv): { kv: Deno.Kv; commits: () => number } {
  let commits = 0;
  const proxy = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          op.commit = () => Promise.resolve((commits++, { ok: false }) as Deno.KvCommitError);
          return op;
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { kv: proxy, commits: () => commits };
}

Deno.test("rate limits keep their safe answers when every commit loses: refuse, keep the attempt counted", async () => {
  using kv = await Deno.openKv(":memory:");
  const limits = [{ key: ["login_failures", "email", "a@b.example", 0], max: 5 }];
  const losing = alwaysLosing(kv);
  assert.equal(await reserveAttempt(losing.kv, limits, 60_000), false, "refused after 50 lost races");
  assert.equal(losing.commits(), 50);
  assert.equal((await kv.get(limits[0].key)).value, null, "nothing reserved");
  assert.equal(await reserveAttempt(kv, limits, 60_000), true);
  await releaseAttempt(losing.kv, limits, 60_000); // gives up quietly after 20 lost races…
  assert.equal(losing.commits(), 70);
  assert.equal((await kv.get(limits[0].key)).value, 1, "…and the attempt stays counted (the safe side)");
  await releaseAttempt(kv, limits, 60_000);
  assert.equal((await kv.get(limits[0].key)).value, 0);
});
