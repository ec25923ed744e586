import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { createChunkIdHasher } from "../../engine/repo/chunk_id.ts";
import { IntegrityError, MissingObjectError } from "../../engine/repo/errors.ts";
import {
  decodeIndexSegment,
  encodeIndexSegment,
  loadIndex,
  rebuildIndex,
  writeIndexSegment,
} from "../../engine/repo/index.ts";
import {
  checkPackBytes,
  PackBuilder,
  packObjectName,
  parsePackTail,
  readPackListing,
} from "../../engine/repo/pack.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const hasher = createChunkIdHasher({});

function samplePack(namespace = "host-a", n = 3) {
  const b = new PackBuilder(namespace);
  const blobs = Array.from({ length: n }, (_, i) => deterministicBytes(`p${namespace}${i}`, 100 + i * 37));
  blobs.forEach((x, i) => b.add(i === 0 ? "tree" : "data", hasher.id(x), x));
  return { blobs, ...b.finish() };
}

Deno.test("LocalBackend puts atomically, gets ranges, lists, deletes", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(dir.path);
  await be.put("data/ab/abc", new Uint8Array([1, 2, 3, 4, 5]));
  await be.put("config", new Uint8Array([9]));
  assert.deepEqual(await be.get("data/ab/abc", { offset: 1, length: 2 }), new Uint8Array([2, 3]));
  assert.deepEqual(await be.get("data/ab/abc", { suffix: 2 }), new Uint8Array([4, 5]));
  assert.deepEqual(await be.get("data/ab/abc", { suffix: 99 }), new Uint8Array([1, 2, 3, 4, 5]));
  const listed = await Array.fromAsync(be.list("data/"));
  assert.deepEqual(listed.map(({ name, size }) => ({ name, size })), [{ name: "data/ab/abc", size: 5 }]);
  assert.ok(
    Math.abs(listed[0].modified.getTime() - Date.now()) < 60_000,
    "listing carries the object's time",
  );
  assert.equal((await Deno.stat(`${dir.path}/data/ab/abc`)).mode! & 0o777, 0o600);
  assert.equal(await be.exists("data/ab/abc"), true);
  await be.delete("data/ab/abc");
  await be.delete("data/ab/abc");
  assert.equal(await be.exists("data/ab/abc"), false);
  await assert.rejects(be.get("data/ab/abc"), MissingObjectError);
  await assert.rejects(be.put("../escape", new Uint8Array(1)), /Invalid object name/);
  assert.deepEqual(await Array.fromAsync(be.list("nothing/")), []);
});

Deno.test("PackBuilder writes a trailer that lists its blobs and reads back without a key", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(dir.path);
  const { bytes, listing, blobs } = samplePack();
  checkPackBytes(listing.packId, bytes);
  await be.put(packObjectName(listing.packId), bytes);
  const read = await readPackListing(be, listing.packId, bytes.length);
  assert.deepEqual(read, listing);
  for (const [i, e] of read.entries.entries()) {
    assert.deepEqual(bytes.subarray(e.offset, e.offset + e.length), blobs[i]);
  }
});

Deno.test("parsePackTail() names the pack when any trailer or footer byte is flipped", () => {
  const { bytes, listing } = samplePack();
  const dataEnd = listing.entries.at(-1)!.offset + listing.entries.at(-1)!.length;
  for (let pos = dataEnd; pos < bytes.length; pos++) {
    const bad = bytes.slice();
    bad[pos] ^= 0x40;
    assert.throws(() => parsePackTail(listing.packId, bad, bad.length), (e: unknown) => {
      assert.ok(e instanceof IntegrityError && e.kind === "pack" && e.id === listing.packId, String(e));
      return true;
    });
    assert.throws(() => checkPackBytes(listing.packId, bad), IntegrityError);
  }
});

Deno.test("index segments round-trip, fail on damage naming the segment, and rebuild from packs", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(dir.path);
  const a = samplePack("host-a");
  const b = samplePack("host-b", 2);
  for (const p of [a, b]) await be.put(packObjectName(p.listing.packId), p.bytes);
  const name = await writeIndexSegment(be, [a.listing, b.listing]);
  assert.deepEqual(decodeIndexSegment(name, await be.get(name)), [a.listing, b.listing]);

  const index = await loadIndex(be);
  const first = a.listing.entries[1];
  assert.deepEqual(index.lookup("host-a", first.id), {
    packId: a.listing.packId,
    type: "data",
    offset: first.offset,
    length: first.length,
  });
  assert.equal(index.lookup("host-b", first.id), null, "namespaces do not share lookups");
  assert.equal(index.size, 5);

  const seg = encodeIndexSegment([a.listing]);
  for (const pos of [0, 5, 20, seg.length - 1]) {
    const bad = seg.slice();
    bad[pos] ^= 1;
    assert.throws(
      () => decodeIndexSegment(name, bad),
      (e: unknown) => e instanceof IntegrityError && e.id === name,
    );
  }

  // Damage the stored segment: loading fails naming it; a rebuild from the packs restores every entry.
  const stored = await be.get(name);
  stored[10] ^= 1;
  await be.put(name, stored);
  await assert.rejects(loadIndex(be), (e: unknown) => e instanceof IntegrityError && e.id === name);
  const damaged: string[] = [];
  assert.equal((await loadIndex(be, { onDamaged: (e) => damaged.push(e.id) })).size, 0);
  assert.deepEqual(damaged, [name]);
  const rebuilt = await rebuildIndex(be);
  assert.equal(rebuilt.damaged.length, 0);
  assert.equal(rebuilt.index.size, 5);
  assert.deepEqual(rebuilt.index.lookup("host-a", first.id), index.lookup("host-a", first.id));
});
