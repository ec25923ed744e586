/**
 * The worker of `CodecPool` (codec_pool.ts): encodes and decodes blobs with the very codec of blob.ts,
 * off the main thread. Messages: {op: "init", ...codec options} once, then {op: "encode" | "decode", n, ...};
 * each answered with {n, bytes} (transferred) or {n, error}.
 */
/// <reference lib="deno.worker" />
import { createBlobCodec, type PartsBlobCodec } from "./blob.ts";
import { type ChunkIdHasher, createChunkIdHasher } from "./chunk_id.ts";
import { isAllZero } from "./bytes.ts";
import { type ChunkerParams, Cutter } from "./chunker.ts";
import { IntegrityError, MissingObjectError } from "./errors.ts";
import { packIdOf } from "./pack.ts";
import { restoreFile } from "./worker_restore.ts";

let codec: Promise<PartsBlobCodec> | null = null;

/** One file being chunked (see `ChunkSession` in codec_pool.ts). */
interface Session {
  cutter: Cutter | null;
  hasher: ChunkIdHasher;
  /** Chunks cut and reported, waiting for the calling thread's decision: copies of their bytes. */
  held: Map<number, { id: string; bytes: Uint8Array<ArrayBuffer> }>;
  /** Chunks being encoded. */
  encoding: number;
  next: number;
}

const sessions = new Map<number, Session>();
/** Windows of finished sessions, and chunk buffers, kept for reuse (fresh pages cost page faults). */
const spareWindows: Uint8Array[] = [];
const spareChunks: ArrayBuffer[] = [];
const SPARE_WINDOWS = 4;
const SPARE_CHUNK_BYTES = 48 * 1024 * 1024;
const CHUNK_BUFFER_STEP = 1024 * 1024;
let spareChunkBytes = 0;

function chunkBuffer(n: number): Uint8Array<ArrayBuffer> {
  let best = -1;
  for (let i = 0; i < spareChunks.length; i++) {
    const len = spareChunks[i].byteLength;
    if (len >= n && (best < 0 || len < spareChunks[best].byteLength)) best = i;
  }
  if (best >= 0) {
    const [b] = spareChunks.splice(best, 1);
    spareChunkBytes -= b.byteLength;
    return new Uint8Array(b, 0, n);
  }
  return new Uint8Array(new ArrayBuffer(Math.ceil(n / CHUNK_BUFFER_STEP) * CHUNK_BUFFER_STEP), 0, n);
}

function recycleChunk(b: Uint8Array<ArrayBuffer>) {
  if (spareChunkBytes + b.buffer.byteLength > SPARE_CHUNK_BYTES) return;
  spareChunks.push(b.buffer);
  spareChunkBytes += b.buffer.byteLength;
}

function endSession(f: number, s: Session) {
  if (s.cutter === null && s.held.size === 0 && s.encoding === 0) sessions.delete(f);
}

/** A "cdc" message: bytes of a file (see `ChunkSession.push`); the first of a session opens it. */
interface ChunkData {
  f: number;
  buf?: ArrayBuffer;
  length: number;
  eof: boolean;
  discard: boolean;
  params?: ChunkerParams;
  hasher?: { idKey: Uint8Array | null; salt: Uint8Array | null };
}

function onChunkData(m: ChunkData) {
  let s = sessions.get(m.f);
  if (!s) {
    s = {
      cutter: new Cutter(m.params!, spareWindows.pop()),
      hasher: createChunkIdHasher(m.hasher!),
      held: new Map(),
      encoding: 0,
      next: 0,
    };
    sessions.set(m.f, s);
  }
  const seqs: number[] = [];
  const ids: string[] = [];
  const lengths: number[] = [];
  if (s.cutter && !m.discard) {
    const piece = m.buf ? new Uint8Array(m.buf, 0, m.length) : new Uint8Array(0);
    for (const c of s.cutter.push(piece, m.eof)) {
      const bytes = chunkBuffer(c.length);
      bytes.set(c);
      const id = s.hasher.id(bytes);
      s.held.set(s.next, { id, bytes });
      seqs.push(s.next++);
      ids.push(id);
      lengths.push(c.length);
    }
  }
  if (m.eof && s.cutter) {
    if (spareWindows.length < SPARE_WINDOWS) spareWindows.push(s.cutter.window);
    s.cutter = null;
  }
  const msg = { ev: "cut", f: m.f, seqs, ids, lengths, done: m.eof === true, back: m.buf };
  self.postMessage(msg, m.buf ? [m.buf] : []);
  endSession(m.f, s);
}

async function onChunkDecide(m: { f: number; store: number[]; drop: number[]; give?: number[] }) {
  const s = sessions.get(m.f);
  if (!s) return;
  for (const seq of m.drop) {
    const h = s.held.get(seq);
    if (!h) continue;
    s.held.delete(seq);
    recycleChunk(h.bytes);
  }
  // Chunks another worker encodes (this one is busier): their bytes go back to the calling thread.
  for (const seq of m.give ?? []) {
    const h = s.held.get(seq);
    if (!h) {
      self.postMessage({
        ev: "error",
        f: m.f,
        error: { name: "Error", message: `chunk ${seq} is not held` },
      });
      continue;
    }
    s.held.delete(seq);
    self.postMessage({ ev: "chunk", f: m.f, seq, id: h.id, bytes: h.bytes }, [h.bytes.buffer]);
  }
  const c = await codec!;
  for (const seq of m.store) {
    const h = s.held.get(seq);
    if (!h) {
      self.postMessage({
        ev: "error",
        f: m.f,
        error: { name: "Error", message: `chunk ${seq} is not held` },
      });
      continue;
    }
    s.held.delete(seq);
    s.encoding++;
    c.encodeParts(h.id, h.bytes).then((parts) => {
      const own = ownParts(parts, h.bytes.buffer);
      recycleChunk(h.bytes);
      self.postMessage({ ev: "stored", f: m.f, seq, parts: own }, own.map((p) => p.buffer));
    }, (e) => {
      const err = errorRecord(e);
      self.postMessage({ ev: "error", f: m.f, error: err });
    }).finally(() => {
      s.encoding--;
      endSession(m.f, s);
    });
  }
  endSession(m.f, s);
}

/** `parts` each in a buffer of its own (to be transferred), none of them `plain`'s buffer. */
function ownParts(parts: Uint8Array<ArrayBuffer>[], plain: ArrayBuffer): Uint8Array<ArrayBuffer>[] {
  const own = parts.map((p) =>
    p.buffer === plain || p.byteOffset !== 0 || p.byteLength !== p.buffer.byteLength ? p.slice() : p
  );
  if (new Set(own.map((p) => p.buffer)).size !== own.length) {
    throw new Error("encodeParts: parts share a buffer");
  }
  return own;
}

function reply(n: number, bytes: Uint8Array, back?: ArrayBuffer) {
  // A view of part of a larger buffer is copied out first, so that only its bytes are transferred.
  const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
  const transfer = [own.buffer as ArrayBuffer];
  if (back && back !== own.buffer) transfer.push(back);
  self.postMessage({ n, bytes: own, back: back !== own.buffer ? back : undefined }, transfer);
}

/** Writes `data` at `offset` of the existing file at `path` (a restore's temporary file). */
function writeAt(path: string, offset: number, data: Uint8Array) {
  const f = Deno.openSync(path, { write: true });
  try {
    f.seekSync(offset, Deno.SeekMode.Start);
    for (let off = 0; off < data.length;) off += f.writeSync(data.subarray(off));
  } finally {
    f.close();
  }
}

function errorRecord(e: unknown): Record<string, string> {
  const err = e as Error;
  if (e instanceof IntegrityError) {
    return { name: "IntegrityError", kind: e.kind, id: e.id, detail: e.detail };
  }
  if (e instanceof MissingObjectError) {
    const detail = e.message.slice(`Missing ${e.kind} ${e.id}: `.length);
    return { name: "MissingObjectError", kind: e.kind, id: e.id, detail };
  }
  return { name: err?.name ?? "Error", message: err?.message ?? String(e) };
}

function replyError(n: number, e: unknown) {
  self.postMessage({ n, error: errorRecord(e) });
}

self.onmessage = async (ev: MessageEvent) => {
  const m = ev.data;
  if (m.op === "init") {
    codec = createBlobCodec({ encryption: m.encryption, compression: m.compression, dataKey: m.dataKey });
    return;
  }
  if (m.op === "cdc" || m.op === "cdc-decide") {
    try {
      if (m.op === "cdc") onChunkData(m);
      else await onChunkDecide(m);
    } catch (e) {
      self.postMessage({ ev: "error", f: m.f, error: errorRecord(e) });
    }
    return;
  }
  try {
    const c = await codec!;
    if (m.op === "pack") {
      const buffers = m.parts as ArrayBuffer[];
      const id = packIdOf(buffers.map((b, i) => new Uint8Array(b, m.offsets[i], m.lengths[i])));
      self.postMessage({ n: m.n, parts: buffers, id }, buffers);
    } else if (m.op === "encodeParts") {
      const plain = new Uint8Array(m.plain as ArrayBuffer, 0, m.length);
      // Each part is sent in a buffer of its own; one that is a view of the plaintext is copied out.
      const own = ownParts(await c.encodeParts(m.id, plain), plain.buffer);
      self.postMessage({ n: m.n, parts: own, back: m.plain }, [...own.map((p) => p.buffer), m.plain]);
    } else if (m.op === "restore-file") {
      // Progress in steps of at least 8 MiB (the rest is in the answer).
      let unreported = 0;
      const r = await restoreFile(c, m.job, (bytes) => {
        unreported += bytes;
        if (unreported < 8 * 1024 * 1024) return;
        self.postMessage({ ev: "progress", n: m.n, bytes: unreported });
        unreported = 0;
      });
      self.postMessage({ n: m.n, written: r.written, endsInHole: r.endsInHole });
    } else if (m.op === "restore") {
      // Decoded (authenticated, decompressed, re-hashed) before a single byte of it is written.
      const hasher = createChunkIdHasher(m.hasher);
      const plain = await c.decode(m.id, new Uint8Array(m.stored, 0, m.length), hasher);
      const zero = isAllZero(plain);
      if (!zero) writeAt(m.path, m.offset, plain);
      self.postMessage({ n: m.n, zero, back: m.stored }, [m.stored]);
    } else if (m.op === "encode") {
      const stored = await c.encode(m.id, new Uint8Array(m.plain, 0, m.length));
      reply(m.n, stored, m.plain); // the plaintext's buffer goes back for reuse
    } else {
      const hasher: ChunkIdHasher | undefined = m.hasher ? createChunkIdHasher(m.hasher) : undefined;
      reply(m.n, await c.decode(m.id, new Uint8Array(m.stored, 0, m.length), hasher));
    }
  } catch (e) {
    replyError(m.n, e);
  }
};
