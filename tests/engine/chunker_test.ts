import assert from "node:assert/strict";
import {
  type ChunkerParams,
  chunkFile,
  chunkStream,
  Cutter,
  DEFAULT_CHUNKER_PARAMS,
  findCut,
  fixedChunks,
  GEAR,
  validateChunkerParams,
} from "../../engine/repo/chunker.ts";
import { concat } from "../../engine/repo/bytes.ts";
import { collect, deterministicBytes, piecesOf } from "./helpers.ts";

const SMALL: ChunkerParams = { min: 2048, avg: 8192, max: 65536 };

Deno.test("GEAR is the documented table", () => {
  assert.equal(GEAR.length, 256);
  assert.equal(GEAR[0].toString(16).padStart(8, "0"), "20bbf585");
  assert.equal(GEAR[255].toString(16).padStart(8, "0"), "f4e659c4");
});

Deno.test("chunkStream() cuts the documented boundaries of the test vector", async () => {
  const data = deterministicBytes("cadres-chunker-vector", 256 * 1024);
  const lengths = (await collect(chunkStream(piecesOf(data, 4096), SMALL))).map((c) => c.length);
  // Computed by an independent implementation (docs/repository-format.md §Chunking).
  assert.deepEqual(lengths, [
    2828,
    8830,
    9157,
    6512,
    6588,
    9298,
    10174,
    13495,
    11328,
    8967,
    9986,
    9162,
    9803,
    9672,
    12061,
    10163,
    4666,
    9204,
    8432,
    9913,
    8310,
    8977,
    7836,
    12462,
    12328,
    9150,
    4865,
    2702,
    9703,
    5572,
  ]);
});

Deno.test("chunkStream() is independent of how the input is split and respects min/max", async () => {
  const data = deterministicBytes("split", 600 * 1024);
  const ref = await collect(chunkStream(piecesOf(data, data.length), SMALL));
  for (const size of [997, 4096, 65536, 100_000]) {
    const chunks = await collect(chunkStream(piecesOf(data, size), SMALL));
    assert.deepEqual(chunks.map((c) => c.length), ref.map((c) => c.length));
  }
  assert.deepEqual(concat(...ref), data);
  for (const c of ref.slice(0, -1)) {
    assert.ok(c.length >= SMALL.min && c.length <= SMALL.max, `chunk of ${c.length}`);
  }
  // Normalized chunking keeps the mean near avg.
  const mean = data.length / ref.length;
  assert.ok(mean > SMALL.avg / 2 && mean < SMALL.avg * 2, `mean ${mean}`);
});

Deno.test("chunkStream() resynchronizes after an insertion (content-defined)", async () => {
  const data = deterministicBytes("shift", 512 * 1024);
  const shifted = concat(new Uint8Array([1, 2, 3, 4, 5]), data);
  const a = new Set((await collect(chunkStream(piecesOf(data, 65536), SMALL))).map((c) => c.join(",")));
  const b = await collect(chunkStream(piecesOf(shifted, 65536), SMALL));
  const shared = b.filter((c) => a.has(c.join(","))).length;
  assert.ok(shared >= b.length - 2, `${shared} of ${b.length} chunks shared`);
});

Deno.test("chunkStream() handles empty input, tiny input and a forced cut at max", async () => {
  assert.deepEqual(await collect(chunkStream(piecesOf(new Uint8Array(0), 1), SMALL)), []);
  const tiny = await collect(chunkStream(piecesOf(new Uint8Array([7]), 1), SMALL));
  assert.deepEqual(tiny, [new Uint8Array([7])]);
  const zeros = await collect(chunkStream(piecesOf(new Uint8Array(200_000), 8192), SMALL));
  assert.deepEqual(zeros.map((c) => c.length), [65536, 65536, 65536, 200_000 - 3 * 65536]);
});

Deno.test("findCut() never cuts before min nor after max", () => {
  const data = deterministicBytes("cut", 100_000);
  const n = findCut(data, 0, data.length, SMALL);
  assert.ok(n >= SMALL.min && n <= SMALL.max);
  assert.equal(findCut(data, 10, 10 + 100, SMALL), 100);
});

Deno.test("validateChunkerParams() accepts the default and refuses nonsense", () => {
  validateChunkerParams(DEFAULT_CHUNKER_PARAMS);
  assert.throws(() => validateChunkerParams({ min: 10, avg: 3000, max: 100 }), /Invalid chunker parameters/);
});

Deno.test("fixedChunks() cuts fixed sizes and flags all-zero chunks", async () => {
  const data = concat(new Uint8Array(1000), deterministicBytes("img", 1000), new Uint8Array(500));
  const chunks = await collect(fixedChunks(piecesOf(data, 333), 1000));
  assert.deepEqual(chunks.map((c) => [c.data.length, c.zero]), [[1000, true], [1000, false], [500, true]]);
  assert.deepEqual(concat(...chunks.map((c) => c.data)), data);
});

/** A file-like reader over `data` that returns at most `step` bytes per read. */
function readerOf(data: Uint8Array, step: number) {
  let pos = 0;
  return {
    read(p: Uint8Array): Promise<number | null> {
      if (pos >= data.length) return Promise.resolve(null);
      const n = Math.min(p.length, step, data.length - pos);
      p.set(data.subarray(pos, pos + n));
      pos += n;
      return Promise.resolve(n);
    },
  };
}

Deno.test("chunkFile() cuts exactly the chunks of chunkStream(), whatever the reads, window and buffers", async () => {
  const data = deterministicBytes("chunk-file", 700 * 1024);
  const ref = await collect(chunkStream(piecesOf(data, 4096), SMALL));
  const window = new Uint8Array(3 * SMALL.max);
  for (const step of [1000, 65536, 1 << 20]) {
    for (const options of [{}, { window, readSize: 7000, alloc: (n: number) => new Uint8Array(n + 123) }]) {
      const chunks = await collect(chunkFile(readerOf(data, step), SMALL, options));
      assert.deepEqual(chunks, ref);
    }
  }
  assert.deepEqual(await collect(chunkFile(readerOf(new Uint8Array(0), 10), SMALL)), []);
});

Deno.test("Cutter cuts exactly the chunks of chunkStream(), whatever the pieces and the window", () => {
  for (
    const [name, data] of [
      ["random", deterministicBytes("cutter", 900 * 1024)],
      // Long runs without a cut point: forced cuts at max, and chunks waiting over many pieces.
      [
        "zeros",
        concat(new Uint8Array(300 * 1024), deterministicBytes("tail", 50_000), new Uint8Array(200_000)),
      ],
    ] as const
  ) {
    const ref = chunkStreamSync(data, SMALL);
    for (const step of [13, 999, 4096, 65536, 65537, 300_000, data.length]) {
      for (const window of [undefined, new Uint8Array(10), new Uint8Array(SMALL.max + 5000)]) {
        const cutter = new Cutter(SMALL, window);
        const got: Uint8Array[] = [];
        for (let off = 0; off < data.length || off === 0; off += step) {
          const piece = data.slice(off, off + step);
          const eof = off + step >= data.length;
          // Views are valid until the next push: copy them, then scribble over the piece to prove it was copied.
          for (const c of cutter.push(piece, eof)) got.push(c.slice());
          piece.fill(0xee);
          if (eof) break;
        }
        assert.deepEqual(got.map((c) => c.length), ref.map((c) => c.length), `${name} step ${step}`);
        assert.deepEqual(concat(...got), data);
        assert.equal(cutter.pending, 0);
      }
    }
  }
  assert.deepEqual(new Cutter(SMALL).push(new Uint8Array(0), true), []);
});

/** chunkStream()'s chunks of `data`, synchronously (findCut over the whole buffer, as chunkStream does). */
function chunkStreamSync(data: Uint8Array, params: ChunkerParams): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let s = 0; s < data.length;) {
    const n = findCut(data, s, Math.min(data.length, s + params.max), params);
    out.push(data.subarray(s, s + n));
    s += n;
  }
  return out;
}

Deno.test("chunkStreamSync() (the Cutter test's reference) agrees with chunkStream()", async () => {
  const data = deterministicBytes("cutter-ref", 700 * 1024);
  const ref = await collect(chunkStream(piecesOf(data, 4096), SMALL));
  assert.deepEqual(chunkStreamSync(data, SMALL).map((c) => c.length), ref.map((c) => c.length));
});
