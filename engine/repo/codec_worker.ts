/**
 * The worker of `CodecPool` (codec_pool.ts): encodes and decodes blobs with the very codec of blob.ts,
 * off the main thread. Messages: {op: "init", ...codec options} once, then {op: "encode" | "decode", n, ...};
 * each answered with {n, bytes} (transferred) or {n, error}.
 */
/// <reference lib="deno.worker" />
import { createBlobCodec, type PartsBlobCodec } from "./blob.ts";
import { type ChunkIdHasher, createChunkIdHasher } from "./chunk_id.ts";
import { IntegrityError } from "./errors.ts";
import { packIdOf } from "./pack.ts";

let codec: Promise<PartsBlobCodec> | null = null;

function reply(n: number, bytes: Uint8Array, back?: ArrayBuffer) {
  // A view of part of a larger buffer is copied out first, so that only its bytes are transferred.
  const own = bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
  const transfer = [own.buffer as ArrayBuffer];
  if (back && back !== own.buffer) transfer.push(back);
  self.postMessage({ n, bytes: own, back: back !== own.buffer ? back : undefined }, transfer);
}

function replyError(n: number, e: unknown) {
  const err = e as Error;
  self.postMessage({
    n,
    error: e instanceof IntegrityError
      ? { name: "IntegrityError", kind: e.kind, id: e.id, detail: e.detail }
      : { name: err?.name ?? "Error", message: err?.message ?? String(e) },
  });
}

self.onmessage = async (ev: MessageEvent) => {
  const m = ev.data;
  if (m.op === "init") {
    codec = createBlobCodec({ encryption: m.encryption, compression: m.compression, dataKey: m.dataKey });
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
      const parts = await c.encodeParts(m.id, plain);
      // Each part is sent in a buffer of its own; one that is a view of the plaintext is copied out.
      const own = parts.map((p) =>
        p.buffer === plain.buffer || p.byteOffset !== 0 || p.byteLength !== p.buffer.byteLength ? p.slice() : p
      );
      const transfer = own.map((p) => p.buffer);
      if (new Set(transfer).size !== transfer.length) throw new Error("encodeParts: parts share a buffer");
      self.postMessage({ n: m.n, parts: own, back: m.plain }, [...transfer, m.plain]);
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
