/** readByPointerIndex, deleteByPointerIndex and deleteKeysUnder (domain/pointer_index.ts): what they delete, keep and count. */
import assert from "node:assert/strict";
import {
  DELETE_BATCH,
  deleteByPointerIndex,
  deleteKeysUnder,
  readByPointerIndex,
} from "../../domain/pointer_index.ts";

async function keysUnder(kv: Deno.Kv, prefix: Deno.KvKey): Promise<string[]> {
  const out: string[] = [];
  for await (const e of kv.list({ prefix })) out.push(JSON.stringify(e.key));
  return out;
}

Deno.test("deleteByPointerIndex: each pointed record goes through remove, dangling and non-id pointers are dropped", async () => {
  using kv = await Deno.openKv(":memory:");
  // Records r1, r2 with their pointers under parent p; r3 is pointed to but gone; one entry is no id.
  await kv.set(["recs", "r1"], { id: "r1" });
  await kv.set(["recs", "r2"], { id: "r2" });
  await kv.set(["recs_by_parent", "p", "r1"], "r1");
  await kv.set(["recs_by_parent", "p", "r2"], "r2");
  await kv.set(["recs_by_parent", "p", "r3"], "r3");
  await kv.set(["recs_by_parent", "p", "junk"], 42);
  // Another parent's pointer and record stay.
  await kv.set(["recs", "o1"], { id: "o1" });
  await kv.set(["recs_by_parent", "q", "o1"], "o1");

  const seen: Array<[string, string]> = [];
  const removed = await deleteByPointerIndex(kv, ["recs_by_parent", "p"], async (id, indexKey) => {
    seen.push([id, JSON.stringify(indexKey)]);
    const entry = await kv.get(["recs", id]);
    if (!entry.value) return false;
    await kv.atomic().check(entry).delete(["recs", id]).delete(indexKey).commit();
    return true;
  });

  assert.equal(removed, 2);
  assert.deepEqual(seen, [
    ["r1", JSON.stringify(["recs_by_parent", "p", "r1"])],
    ["r2", JSON.stringify(["recs_by_parent", "p", "r2"])],
    ["r3", JSON.stringify(["recs_by_parent", "p", "r3"])],
  ]);
  assert.deepEqual(await keysUnder(kv, ["recs_by_parent", "p"]), []);
  assert.deepEqual(await keysUnder(kv, ["recs"]), [JSON.stringify(["recs", "o1"])]);
  assert.deepEqual(await keysUnder(kv, ["recs_by_parent", "q"]), [
    JSON.stringify(["recs_by_parent", "q", "o1"]),
  ]);
  // Idempotent: nothing left to remove.
  assert.equal(await deleteByPointerIndex(kv, ["recs_by_parent", "p"], () => Promise.resolve(true)), 0);
});

Deno.test("deleteByPointerIndex: a failing remove stops it and leaves the rest for a resume", async () => {
  using kv = await Deno.openKv(":memory:");
  for (const id of ["a", "b", "c"]) await kv.set(["idx", "p", id], id);
  let calls = 0;
  await assert.rejects(
    deleteByPointerIndex(kv, ["idx", "p"], async (id, key) => {
      if (++calls === 2) throw new Error(`boom on ${id}`);
      await kv.delete(key);
      return true;
    }),
    /boom on b/,
  );
  assert.deepEqual(await keysUnder(kv, ["idx", "p"]), [
    JSON.stringify(["idx", "p", "b"]),
    JSON.stringify(["idx", "p", "c"]),
  ]);
  const resumed = await deleteByPointerIndex(kv, ["idx", "p"], async (_id, key) => {
    await kv.delete(key);
    return true;
  });
  assert.equal(resumed, 2);
  assert.deepEqual(await keysUnder(kv, ["idx", "p"]), []);
});

Deno.test("deleteKeysUnder: deletes every key under the prefix in batches, only those `where` accepts", async () => {
  using kv = await Deno.openKv(":memory:");
  const n = DELETE_BATCH * 2 + 7; // three atomic writes
  for (let i = 0; i < n; i += 100) {
    const op = kv.atomic();
    for (let j = i; j < Math.min(n, i + 100); j++) op.set(["samples", "t1", j], j);
    await op.commit();
  }
  await kv.set(["samples", "t2", 1], 1);
  await kv.set(["samples_t1"], 1);
  assert.equal(await deleteKeysUnder(kv, ["samples", "t1"], { where: (k) => Number(k[2]) % 2 === 0 }), 504);
  assert.equal((await keysUnder(kv, ["samples", "t1"])).length, n - 504);
  assert.equal(await deleteKeysUnder(kv, ["samples", "t1"], { batch: 3 }), n - 504);
  assert.deepEqual(await keysUnder(kv, ["samples", "t1"]), []);
  assert.deepEqual(await keysUnder(kv, ["samples"]), [JSON.stringify(["samples", "t2", 1])]);
  assert.equal((await kv.get(["samples_t1"])).value, 1);
  assert.equal(await deleteKeysUnder(kv, ["samples", "t1"]), 0);
});

Deno.test("readByPointerIndex: the pointed records in index order, more than one getMany's worth, dangling pointers skipped", async () => {
  using kv = await Deno.openKv(":memory:");
  const ids = Array.from({ length: 23 }, (_, i) => `r${String(i).padStart(2, "0")}`);
  for (const id of ids) {
    await kv.set(["recs_by_parent", "p", id], id);
    if (id !== "r05" && id !== "r17") await kv.set(["recs", id], { id });
  }
  await kv.set(["recs_by_parent", "q", "x"], "x");
  await kv.set(["recs", "x"], { id: "x" });
  const got = await readByPointerIndex<{ id: string }>(kv, ["recs_by_parent", "p"], (id) => ["recs", id]);
  assert.deepEqual(got.map((r) => r.id), ids.filter((id) => id !== "r05" && id !== "r17"));
  assert.deepEqual(await readByPointerIndex(kv, ["recs_by_parent", "none"], (id) => ["recs", id]), []);
});
