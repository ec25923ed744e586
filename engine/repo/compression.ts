/**
 * Per-blob compression: zstd (node:zlib, native), lz4 (lz4-wasm-nodejs: the lz4_flex block format
 * with the uncompressed size prepended, u32 little-endian; WebAssembly, no native build) or none.
 */
import { constants as zlibConstants, zstdCompressSync, zstdDecompressSync } from "node:zlib";
type Lz4 = typeof import("lz4-wasm-nodejs");

/** The lz4 WebAssembly module, loaded by `loadCompression` only where lz4 is used (15 MiB per thread). */
let lz4: Lz4 | null = null;

/** Loads what compressing or decompressing with `kind` needs; call it before `compress` / `decompress`. */
export async function loadCompression(kind: Compression): Promise<void> {
  if (kind === "lz4" && lz4 === null) lz4 = await import("lz4-wasm-nodejs");
}

function lz4Module(): Lz4 {
  if (lz4 === null) throw new Error("lz4 is not loaded (loadCompression)");
  return lz4;
}

/** Compression names as the repository config and the CLI spell them. */
export type Compression = "zstd" | "lz4" | "none";

/** Compression codes in a blob header (format v1). */
export const COMPRESSION_CODES: Readonly<Record<Compression, number>> = Object.freeze({
  none: 0,
  zstd: 1,
  lz4: 2,
});

/** Compression name of a header code, or null if unknown. */
export function compressionOfCode(code: number): Compression | null {
  for (const [k, v] of Object.entries(COMPRESSION_CODES)) if (v === code) return k as Compression;
  return null;
}

/** zstd level used by format v1 writers (readers do not need it). */
export const ZSTD_LEVEL = 3;

/** ZSTD_COMPRESSBOUND: the most bytes zstd writes for `n` bytes of input (at least node:zlib's minimum, 64). */
function zstdBound(n: number): number {
  const margin = n < 128 * 1024 ? (128 * 1024 - n) >> 11 : 0;
  return Math.max(64, n + (n >> 8) + margin + 64);
}

/** A plain Uint8Array over the bytes of a node Buffer, without copying them. */
function view(b: Uint8Array): Uint8Array {
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
}

/** Blobs at least this long are sampled before zstd compresses them whole (`looksIncompressible`). */
const SAMPLED_FROM = 256 * 1024;
const SAMPLE_BYTES = 16 * 1024;
const SAMPLES = 4;

function zstd(data: Uint8Array): Uint8Array {
  // One output buffer that fits the worst case (zstd's bound): node:zlib otherwise fills 16 KiB pieces,
  // copies each and joins them — three copies of every blob.
  return view(zstdCompressSync(data, {
    chunkSize: zstdBound(data.length),
    params: { [zlibConstants.ZSTD_c_compressionLevel]: ZSTD_LEVEL },
  }));
}

/**
 * Whether zstd gains nothing on any of four 16 KiB samples of `data` (its start, end and two places
 * between): then the whole blob would not shrink either, or by too little to matter, and is stored raw
 * without compressing it (random, encrypted or already compressed content costs zstd's time for nothing).
 * Any gain on any sample and the whole blob is compressed, as before.
 */
export function looksIncompressible(data: Uint8Array): boolean {
  const step = Math.floor((data.length - SAMPLE_BYTES) / (SAMPLES - 1));
  for (let i = 0; i < SAMPLES; i++) {
    const sample = data.subarray(i * step, i * step + SAMPLE_BYTES);
    if (zstd(sample).length < sample.length) return false;
  }
  return true;
}

/** `data` compressed with `kind`, or null when that would not make it smaller (the blob is stored raw). */
export function compress(kind: Compression, data: Uint8Array): Uint8Array | null {
  if (kind === "none" || data.length === 0) return null;
  let out: Uint8Array;
  if (kind === "zstd") {
    if (data.length >= SAMPLED_FROM && looksIncompressible(data)) return null;
    out = zstd(data);
  } else {
    out = lz4Module().compress(data);
  }
  return out.length < data.length ? out : null;
}

/**
 * `data` decompressed with `kind`; throws if the result is not exactly `expectedLength` bytes (callers
 * decompress only authenticated payloads, so the length check is a second line of defence).
 */
export function decompress(kind: Compression, data: Uint8Array, expectedLength: number): Uint8Array {
  let out: Uint8Array;
  if (kind === "none") {
    out = data;
  } else if (kind === "zstd") {
    out = view(zstdDecompressSync(data, {
      chunkSize: Math.max(expectedLength, 64), // one output buffer (see `compress`)
      maxOutputLength: Math.max(expectedLength, 1),
    }));
  } else {
    if (data.length < 4) throw new Error("lz4 payload shorter than its size prefix");
    const declared = new DataView(data.buffer, data.byteOffset, 4).getUint32(0, true);
    if (declared !== expectedLength) throw new Error(`lz4 size prefix ${declared} != ${expectedLength}`);
    out = lz4Module().decompress(data);
  }
  if (out.length !== expectedLength) {
    throw new Error(`decompressed ${out.length} bytes, expected ${expectedLength}`);
  }
  return out;
}
