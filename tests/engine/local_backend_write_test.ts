/**
 * The Local backend writes objects in pieces of at most `WRITE_PIECE` bytes (engine/repo/backend.ts): every
 * byte still lands, in order, whatever the sizes of the parts and of the staged writes.
 */
import assert from "node:assert/strict";
import { LocalBackend, WRITE_PIECE, writePieces } from "../../engine/repo/backend.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const NAME = "data/ab/ab12";

Deno.test("putParts() stores parts larger than a write piece, mixed with small ones, byte for byte", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(dir.path);
  const parts = [
    deterministicBytes("w1", 3 * WRITE_PIECE + 17),
    deterministicBytes("w2", 100),
    deterministicBytes("w3", 7),
    deterministicBytes("w4", WRITE_PIECE),
    deterministicBytes("w5", WRITE_PIECE - 1),
    deterministicBytes("w6", 2 * WRITE_PIECE + 1),
    // Small parts are joined before they are written: a run of them longer than a piece is cut into pieces.
    ...Array.from({ length: 12 }, (_, k) => deterministicBytes(`s${k}`, 60 * 1024 + k)),
  ];
  await be.putParts(NAME, parts);
  const want = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) want.set(p, (o += p.length) - p.length);
  assert.deepEqual(await be.get(NAME), want);
});

Deno.test("a staged object written in blocks larger than a write piece reads back whole, then commits", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(dir.path);
  const a = deterministicBytes("w7", 4 * WRITE_PIECE + 65_536);
  const b = deterministicBytes("w8", WRITE_PIECE + 3);
  const staged = await be.stage(NAME);
  await staged.write(a);
  // A read in between moves the file's position; the next write must still append.
  assert.deepEqual(await staged.read(WRITE_PIECE + 10, 20), a.subarray(WRITE_PIECE + 10, WRITE_PIECE + 30));
  await staged.write(b);
  await staged.commit();
  const got = await be.get(NAME);
  assert.equal(got.length, a.length + b.length);
  assert.deepEqual(got.subarray(0, a.length), a);
  assert.deepEqual(got.subarray(a.length), b);
});

Deno.test("writePieces() never gives one write more than WRITE_PIECE bytes and writes them all", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/f`;
  const data = deterministicBytes("w9", 5 * WRITE_PIECE + 12_345);
  using file = await Deno.open(path, { write: true, createNew: true });
  const sizes: number[] = [];
  const write = file.write.bind(file);
  // Watches the writes: each short write (the kernel may write less) is continued from where it stopped.
  file.write = (p: Uint8Array) => {
    sizes.push(p.length);
    return write(p.length > 1000 ? p.subarray(0, p.length - 1000) : p);
  };
  await writePieces(file, data);
  assert.ok(sizes.every((n) => n <= WRITE_PIECE), `a write of ${Math.max(...sizes)} bytes`);
  assert.deepEqual(await Deno.readFile(path), data);
});
