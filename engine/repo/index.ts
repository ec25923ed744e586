/**
 * The index: which pack holds each blob (namespace, blob id → pack, offset, length, type). Written as
 * append-only segments "index/<SHA-256 of the segment>", never rewritten in place; everything in it
 * can be rebuilt from the pack trailers (`rebuildIndex`).
 *
 * Segment (little-endian): "CIDX" | version u8 = 1 | 3 reserved zero bytes | pack count u32 | per pack:
 * pack id (32), namespace length u16, namespace (UTF-8), blob count u32, per blob: type u8, id (32),
 * offset u32, length u32 | SHA-256 of everything before (32).
 */
import type { Backend } from "./backend.ts";
import { ByteReader, fromHex, toHex } from "./bytes.ts";
import { type BlobId, ID_BYTES, sha256Hex } from "./chunk_id.ts";
import { IntegrityError } from "./errors.ts";
import { checkedBody, readSectionHeader, sectionWriter, withChecksum } from "./framing.ts";
import { type BlobType, type PackListing, readBlobEntry, readPackListing, writeBlobEntry } from "./pack.ts";

/** Index segment format version. */
export const INDEX_VERSION = 1;
const MAGIC = new TextEncoder().encode("CIDX");

/** Where one blob lives. */
export interface IndexEntry {
  packId: string;
  type: BlobType;
  offset: number;
  length: number;
}

/** The in-memory index of a repository: lookups by namespace and blob id. */
export class BlobIndex {
  #map = new Map<string, IndexEntry>();
  #packs = new Set<string>();

  /**
   * Adds every blob of a pack; a blob already indexed keeps its first (oldest known) location unless
   * `isDead(packId)` says that location's pack is condemned or gone.
   */
  addPack(listing: PackListing, isDead?: (packId: string) => boolean): void {
    this.#packs.add(listing.packId);
    for (const e of listing.entries) {
      const key = `${listing.namespace}\u0000${e.id}`;
      const old = this.#map.get(key);
      if (!old || (isDead?.(old.packId) && !isDead(listing.packId))) {
        this.#map.set(key, { packId: listing.packId, type: e.type, offset: e.offset, length: e.length });
      }
    }
  }
  /** Where blob `id` of `namespace` lives, or null. */
  lookup(namespace: string, id: BlobId): IndexEntry | null {
    return this.#map.get(`${namespace}\u0000${id}`) ?? null;
  }
  has(namespace: string, id: BlobId): boolean {
    return this.#map.has(`${namespace}\u0000${id}`);
  }
  /** Whether the index names pack `packId`. */
  hasPack(packId: string): boolean {
    return this.#packs.has(packId);
  }
  /** Ids of every pack the index names. */
  packIds(): Set<string> {
    return new Set(this.#packs);
  }
  /** Number of indexed blobs. */
  get size(): number {
    return this.#map.size;
  }
}

/** The bytes of an index segment listing `listings`. */
export function encodeIndexSegment(listings: PackListing[]): Uint8Array<ArrayBuffer> {
  const w = sectionWriter(MAGIC, INDEX_VERSION).u32(listings.length);
  for (const l of listings) {
    const ns = new TextEncoder().encode(l.namespace);
    w.bytes(fromHex(l.packId)).u16(ns.length).bytes(ns).u32(l.entries.length);
    for (const e of l.entries) writeBlobEntry(w, e);
  }
  return withChecksum(w.finish());
}

/** The listings of index segment `name` (its object name). Throws `IntegrityError` naming it if damaged. */
export function decodeIndexSegment(name: string, bytes: Uint8Array): PackListing[] {
  const fail = (detail: string): never => {
    throw new IntegrityError("index", name, detail);
  };
  const expected = name.slice(name.lastIndexOf("/") + 1);
  if (sha256Hex(bytes) !== expected) fail("content does not hash to its name");
  if (bytes.length < 32 + 12) fail("too short");
  const body = checkedBody(bytes) ?? fail("checksum mismatch");
  try {
    const r = new ByteReader(body);
    readSectionHeader(r, MAGIC, INDEX_VERSION, "index", fail);
    const packs = r.u32();
    const out: PackListing[] = [];
    for (let p = 0; p < packs; p++) {
      const packId = toHex(r.bytes(ID_BYTES));
      const namespace = new TextDecoder("utf-8", { fatal: true }).decode(r.bytes(r.u16()));
      const count = r.u32();
      const entries = [];
      for (let i = 0; i < count; i++) entries.push(readBlobEntry(r, fail));
      out.push({ packId, namespace, entries });
    }
    if (r.remaining !== 0) fail("trailing bytes");
    return out;
  } catch (e) {
    if (e instanceof IntegrityError) throw e;
    return fail(`unreadable: ${(e as Error).message}`);
  }
}

/** Writes one index segment for `listings`; returns its object name. */
export async function writeIndexSegment(backend: Backend, listings: PackListing[]): Promise<string> {
  const bytes = encodeIndexSegment(listings);
  const name = `index/${sha256Hex(bytes)}`;
  await backend.put(name, bytes);
  return name;
}

/**
 * The index from every segment. A damaged segment throws `IntegrityError` unless `onDamaged` is given,
 * in which case it is reported there and skipped (its packs are then unknown until `rebuildIndex`).
 * With `into`, the segments are added to that index (a copy in a live pack replaces one in a dead pack).
 * Segments are read oldest first, so of two live copies of a blob the older one is used.
 */
export async function loadIndex(
  backend: Backend,
  options: {
    onDamaged?: (error: IntegrityError) => void;
    isDead?: (packId: string) => boolean;
    into?: BlobIndex;
  } = {},
): Promise<BlobIndex> {
  const index = options.into ?? new BlobIndex();
  // Oldest segments first: of two live copies of a blob, the older is the one read (and reused), so a later
  // upload under a known id never displaces the copy restore points already use.
  const segments = await Array.fromAsync(backend.list("index/"));
  segments.sort((a, b) => a.modified.getTime() - b.modified.getTime() || (a.name < b.name ? -1 : 1));
  for (const obj of segments) {
    try {
      for (const l of decodeIndexSegment(obj.name, await backend.get(obj.name))) {
        index.addPack(l, options.isDead);
      }
    } catch (e) {
      if (e instanceof IntegrityError && options.onDamaged) options.onDamaged(e);
      else throw e;
    }
  }
  return index;
}

/**
 * An index built from the pack trailers alone (no key needed). Damaged packs are reported in `damaged`
 * and left out. Nothing is written; callers decide whether to replace the segments.
 */
export async function rebuildIndex(
  backend: Backend,
): Promise<{ index: BlobIndex; listings: PackListing[]; damaged: IntegrityError[] }> {
  const index = new BlobIndex();
  const listings: PackListing[] = [];
  const damaged: IntegrityError[] = [];
  for await (const obj of backend.list("data/")) {
    const packId = obj.name.slice(obj.name.lastIndexOf("/") + 1);
    try {
      const l = await readPackListing(backend, packId, obj.size);
      listings.push(l);
      index.addPack(l);
    } catch (e) {
      if (e instanceof IntegrityError) damaged.push(e);
      else throw e;
    }
  }
  return { index, listings, damaged };
}

/** The outcome of `repairIndex`. */
export interface RepairResult {
  /** Packs whose trailers the fresh index lists. */
  packs: number;
  /** Index segments written. */
  written: string[];
  /** Old segments removed: every damaged one, and every intact one the fresh index wholly covers. */
  removed: string[];
  /** Damaged segments among the removed. */
  damagedSegments: IntegrityError[];
  /** Packs whose trailer is damaged: left out of the fresh index (old segments naming them are kept). */
  damagedPacks: IntegrityError[];
}

/** Packs per segment `repairIndex` writes. */
export const REPAIR_PACKS_PER_SEGMENT = 1000;

/**
 * Writes a fresh index from every pack trailer and then removes the segments it supersedes: the damaged
 * ones, and intact ones whose every pack it lists (an intact segment naming a pack whose trailer is
 * damaged is kept: it is the only way left to that pack's blobs). New segments are written before any
 * old one is deleted, so an interruption leaves at worst duplicate entries. Needs no key.
 */
export async function repairIndex(backend: Backend): Promise<RepairResult> {
  // Old segments are listed before the packs: each covers only packs that existed when it was listed.
  const old: { name: string; packIds: string[] | null }[] = [];
  const damagedSegments: IntegrityError[] = [];
  for await (const obj of backend.list("index/")) {
    try {
      old.push({
        name: obj.name,
        packIds: decodeIndexSegment(obj.name, await backend.get(obj.name)).map((l) => l.packId),
      });
    } catch (e) {
      if (!(e instanceof IntegrityError)) throw e;
      damagedSegments.push(e);
      old.push({ name: obj.name, packIds: null });
    }
  }
  const { listings, damaged } = await rebuildIndex(backend);
  const written: string[] = [];
  for (let i = 0; i < listings.length; i += REPAIR_PACKS_PER_SEGMENT) {
    written.push(await writeIndexSegment(backend, listings.slice(i, i + REPAIR_PACKS_PER_SEGMENT)));
  }
  const fresh = new Set(listings.map((l) => l.packId));
  const keep = new Set(written); // a fresh segment may equal an old one (same bytes, same name)
  const removed: string[] = [];
  for (const seg of old) {
    if (keep.has(seg.name)) continue;
    if (seg.packIds === null || seg.packIds.every((p) => fresh.has(p))) {
      await backend.delete(seg.name);
      removed.push(seg.name);
    }
  }
  return { packs: listings.length, written, removed, damagedSegments, damagedPacks: damaged };
}
