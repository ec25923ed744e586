/**
 * Packs: encoded blobs written back to back, followed by a trailer in clear that lists them under a
 * SHA-256 checksum, and an 8-byte footer. A pack is named by the SHA-256 of all its bytes and stored
 * as "data/<first two hex digits>/<hex>". Anyone can list, check and copy packs without a key.
 *
 * Trailer (little-endian): "CPKT" | version u8 = 1 | 3 reserved zero bytes | namespace length u16 |
 * namespace (UTF-8) | blob count u32 | per blob: type u8, id (32 bytes), offset u32, length u32 |
 * SHA-256 of the trailer bytes before it (32). Footer: trailer length u32 (checksum included) | "CPK1".
 */
import { createHash } from "node:crypto";
import type { Backend } from "./backend.ts";
import { ByteReader, bytesEqual, ByteWriter, concat, fromHex, toHex } from "./bytes.ts";
import { type BlobId, ID_BYTES, sha256Hex } from "./chunk_id.ts";
import { IntegrityError } from "./errors.ts";
import { checkedBody, CHECKSUM_BYTES, readSectionHeader, sectionWriter, withChecksum } from "./framing.ts";

/** What a blob holds. */
export type BlobType = "data" | "tree";

/** Blob type codes in trailers and index segments (format v1). */
export const BLOB_TYPE_CODES: Readonly<Record<BlobType, number>> = Object.freeze({ data: 0, tree: 1 });
const BLOB_TYPE_BY_CODE: ReadonlyMap<number, BlobType> = new Map(
  (Object.entries(BLOB_TYPE_CODES) as [BlobType, number][]).map(([type, code]) => [code, type]),
);

/** Target size of a pack: few objects on S3, few syscalls on disk. */
export const PACK_TARGET_BYTES = 16 * 1024 * 1024;

/** Trailer format version. */
export const PACK_VERSION = 1;
const TRAILER_MAGIC = new TextEncoder().encode("CPKT");
const FOOTER_MAGIC = new TextEncoder().encode("CPK1");
const FOOTER_BYTES = 8;
/** Bytes of one blob entry in a trailer or index segment: type u8, id (32), offset u32, length u32. */
export const BLOB_ENTRY_BYTES = 1 + ID_BYTES + 4 + 4;

/** One blob in a pack. */
export interface PackEntry {
  type: BlobType;
  id: BlobId;
  offset: number;
  length: number;
}

/** A pack's listing: its id, the namespace whose blobs it holds, and its blobs. */
export interface PackListing {
  packId: string;
  namespace: string;
  entries: PackEntry[];
}

/** Appends blob entry `e` (type u8, id, offset u32, length u32), as trailers and index segments hold it. */
export function writeBlobEntry(w: ByteWriter, e: PackEntry): void {
  w.u8(BLOB_TYPE_CODES[e.type]).bytes(fromHex(e.id)).u32(e.offset).u32(e.length);
}

/** Reads one blob entry at `r`; calls `fail` on an unknown type code. */
export function readBlobEntry(r: ByteReader, fail: (detail: string) => never): PackEntry {
  const code = r.u8();
  const type = BLOB_TYPE_BY_CODE.get(code) ?? fail(`unknown blob type ${code}`);
  return { type, id: toHex(r.bytes(ID_BYTES)), offset: r.u32(), length: r.u32() };
}

/** The object name of pack `packId`. */
export function packObjectName(packId: string): string {
  return `data/${packId.slice(0, 2)}/${packId}`;
}

/** Collects encoded blobs of one namespace into a pack. */
export class PackBuilder {
  #parts: Uint8Array[] = [];
  #entries: PackEntry[] = [];
  #size = 0;
  constructor(readonly namespace: string) {}

  /** Appends an encoded blob. */
  add(type: BlobType, id: BlobId, stored: Uint8Array): void {
    this.addParts(type, id, [stored]);
  }
  /** Appends an encoded blob given as consecutive parts (kept as they are: the pack is never copied whole). */
  addParts(type: BlobType, id: BlobId, parts: Uint8Array[]): void {
    let length = 0;
    for (const p of parts) length += p.length;
    this.#entries.push({ type, id, offset: this.#size, length });
    this.#parts.push(...parts);
    this.#size += length;
  }
  /** Bytes of blobs added so far. */
  get size(): number {
    return this.#size;
  }
  get count(): number {
    return this.#entries.length;
  }
  /** The finished pack: its bytes, its id (SHA-256 of the bytes) and its listing. */
  finish(): { bytes: Uint8Array<ArrayBuffer>; listing: PackListing } {
    const { bytes, packId } = assemblePack(this.pieces().parts);
    return { bytes, listing: { packId, namespace: this.namespace, entries: this.#entries } };
  }

  /**
   * The pack's pieces in order (the blobs, then trailer and footer) and its entries, for
   * `assemblePack` elsewhere (a worker thread); the builder is done with afterwards.
   */
  pieces(): { parts: Uint8Array[]; namespace: string; entries: PackEntry[] } {
    const trailer = encodeTrailer(this.namespace, this.#entries);
    const footer = new ByteWriter().u32(trailer.length).bytes(FOOTER_MAGIC).finish();
    return { parts: [...this.#parts, trailer, footer], namespace: this.namespace, entries: this.#entries };
  }
}

/** A pack's id, the SHA-256 of its pieces (see `PackBuilder.pieces`) in order, without joining them. */
export function packIdOf(parts: Uint8Array[]): string {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return h.digest("hex");
}

/** A pack's bytes from its pieces (see `PackBuilder.pieces`) and its id, the SHA-256 of those bytes. */
export function assemblePack(parts: Uint8Array[]): { bytes: Uint8Array<ArrayBuffer>; packId: string } {
  const bytes = concat(...parts);
  return { bytes, packId: sha256Hex(bytes) };
}

function encodeTrailer(namespace: string, entries: PackEntry[]): Uint8Array {
  const ns = new TextEncoder().encode(namespace);
  const w = sectionWriter(TRAILER_MAGIC, PACK_VERSION).u16(ns.length).bytes(ns).u32(entries.length);
  for (const e of entries) writeBlobEntry(w, e);
  return withChecksum(w.finish());
}

/**
 * The listing in `tail` (the last bytes of pack `packId`, at least the trailer and footer; `packSize`
 * its total size). Throws `IntegrityError` naming the pack if the trailer is damaged; returns
 * `{ need }` if `tail` is too short and `need` bytes from the end are required.
 */
export function parsePackTail(
  packId: string,
  tail: Uint8Array,
  packSize: number,
): PackListing | { need: number } {
  const fail = (detail: string): never => {
    throw new IntegrityError("pack", packId, detail);
  };
  if (tail.length < FOOTER_BYTES) fail("shorter than its footer");
  const footer = tail.subarray(tail.length - FOOTER_BYTES);
  if (!bytesEqual(footer.subarray(4), FOOTER_MAGIC)) fail("footer magic missing");
  const trailerLen = new DataView(footer.buffer, footer.byteOffset, 4).getUint32(0, true);
  if (trailerLen + FOOTER_BYTES > packSize) fail(`trailer length ${trailerLen} exceeds the pack`);
  if (tail.length < trailerLen + FOOTER_BYTES) return { need: trailerLen + FOOTER_BYTES };
  const trailer = tail.subarray(tail.length - FOOTER_BYTES - trailerLen, tail.length - FOOTER_BYTES);
  if (trailer.length < CHECKSUM_BYTES) fail("trailer too short");
  const body = checkedBody(trailer) ?? fail("trailer checksum mismatch");
  try {
    const r = new ByteReader(body);
    readSectionHeader(r, TRAILER_MAGIC, PACK_VERSION, "trailer", fail);
    const namespace = new TextDecoder("utf-8", { fatal: true }).decode(r.bytes(r.u16()));
    const count = r.u32();
    if (r.remaining !== count * BLOB_ENTRY_BYTES) fail("trailer length does not match its blob count");
    const dataEnd = packSize - FOOTER_BYTES - trailerLen;
    const entries: PackEntry[] = [];
    for (let i = 0; i < count; i++) {
      const e = readBlobEntry(r, fail);
      if (e.offset + e.length > dataEnd) fail(`blob ${e.id} lies outside the pack's data`);
      entries.push(e);
    }
    return { packId, namespace, entries };
  } catch (e) {
    if (e instanceof IntegrityError) throw e;
    return fail(`trailer unreadable: ${(e as Error).message}`);
  }
}

/** The listing of pack `packId` read from its trailer (range reads only). Throws `IntegrityError` if damaged. */
export async function readPackListing(
  backend: Backend,
  packId: string,
  packSize: number,
): Promise<PackListing> {
  const name = packObjectName(packId);
  let tail = await backend.get(name, { suffix: Math.min(packSize, 64 * 1024) });
  let parsed = parsePackTail(packId, tail, packSize);
  if ("need" in parsed) {
    tail = await backend.get(name, { suffix: parsed.need });
    parsed = parsePackTail(packId, tail, packSize);
    if ("need" in parsed) throw new IntegrityError("pack", packId, "trailer unreadable");
  }
  return parsed;
}

/** Checks a whole pack against its name. Throws `IntegrityError` if its bytes do not hash to `packId`. */
export function checkPackBytes(packId: string, bytes: Uint8Array): void {
  if (sha256Hex(bytes) !== packId) {
    throw new IntegrityError("pack", packId, "content does not hash to its name");
  }
}
