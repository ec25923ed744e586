/**
 * The group reader (domain/group_read.ts): point reads that arrive while a read is in flight share the
 * next `getMany` (at most 10 keys), each gets its own entry, a read sees every write committed before it
 * was asked for, and one bad key does not fail the reads it was grouped with.
 */
import assert from "node:assert/strict";
import { GroupReader } from "../../domain/group_read.ts";
import { gatedKv } from "../fakes/gated_kv.ts";

Deno.test("GroupReader: reads asked while one is in flight share getManys of at most 10 keys, each gets its own entry", async () => {
  using real = await Deno.openKv(":memory:");
  for (let i = 0; i < 25; i++) await real.set(["k", i], i);
  const gated = gatedKv(real, { reads: true });
  const reader = new GroupReader(gated.kv, 1);
  gated.close();
  const first = reader.get<number>(["k", 0]);
  const rest = Array.from({ length: 24 }, (_, i) => reader.get<number>(["k", i + 1]));
  const missing = reader.get<number>(["absent"]);
  gated.open();
  const entries = await Promise.all([first, ...rest, missing]);
  entries.slice(0, 25).forEach((e, i) => {
    assert.deepEqual(e.key, ["k", i]);
    assert.equal(e.value, i);
    assert.ok(e.versionstamp);
  });
  assert.deepEqual([entries[25].value, entries[25].versionstamp], [null, null]);
  // The first read alone, then 25 queued reads in getManys of 10, 10 and 5.
  assert.deepEqual(reader.stats, { reads: 4, keys: 26 });
});

Deno.test("GroupReader: a read sees every write committed before it was asked for, never a read started earlier (many iterations)", async () => {
  using kv = await Deno.openKv(":memory:");
  const reader = new GroupReader(kv, 2);
  for (let i = 0; i < 200; i++) {
    // Readers keep the group busy while a writer commits and then reads its own write back.
    const noise = Array.from({ length: 8 }, (_, n) => reader.get(["noise", n]));
    await kv.set(["x"], i);
    const seen = await reader.get<number>(["x"]);
    assert.equal(seen.value, i, `iteration ${i}: the read sees the write committed before it`);
    await Promise.all(noise);
  }
});

Deno.test("GroupReader: a key KV refuses fails its own read only; the others in its getMany are answered", async () => {
  using kv = await Deno.openKv(":memory:");
  await kv.set(["ok", 1], "one");
  const reader = new GroupReader(kv, 1);
  const blocker = reader.get(["ok", 0]);
  const good = reader.get<string>(["ok", 1]);
  const bad = reader.get(["x".repeat(5000)]); // over KV's key size limit
  const good2 = reader.get<string>(["ok", 2]);
  // The refusal is observed from the start: awaiting the others first would leave it unhandled meanwhile.
  const refused = assert.rejects(bad, /key too large/i);
  await blocker;
  assert.equal((await good).value, "one");
  await refused;
  assert.equal((await good2).value, null);
});
