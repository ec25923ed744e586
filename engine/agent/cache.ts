/**
 * The agent's local cache of its repositories' trees and index (ENGINE.md §4: "so that an incremental does
 * not read them back from the BES"), in `<data dir>/cache/`:
 *
 * - `index/<sha256>`: index segments, whole; an index segment's name is the SHA-256 of its bytes.
 * - `trees/<pack>.<offset>.<length>.<sha256>`: the stored (encrypted) bytes of one tree blob — that range of
 *   pack `<pack>`, whose name is the SHA-256 of the whole pack, so the range never changes — named by the
 *   SHA-256 of those bytes too.
 *
 * Content-addressed and validated: a cached object is used only when its bytes hash to the name it is kept
 * under (else it is deleted and read from the BES again), and the library still authenticates every blob it
 * decodes. Nothing in it is secret beyond what the BES stores (ciphertext and clear index listings). Bounded:
 * when the cache grows past its size, the least recently used objects go. Every process (the agent's
 * workers, one per job) opens the cache on its own; writes are atomic renames, so a concurrent reader sees a
 * whole object or none.
 *
 * `CachingBackend` puts the cache in front of the data API's `RemoteBackend`: reads of index segments and of
 * tree blobs are served from it when present, and what the job reads or uploads (index segments, the tree
 * blobs of its packs) is added to it.
 */
import { type Backend, type ByteRange, type ObjectInfo, putParts } from "../repo/backend.ts";
import { concat } from "../repo/bytes.ts";
import { sha256Hex } from "../repo/chunk_id.ts";
import { decodeIndexSegment } from "../repo/index.ts";
import { type PackListing, parsePackTail } from "../repo/pack.ts";

/** Default bound of the cache (`--cache-max-mib`). */
export const DEFAULT_CACHE_MAX_BYTES = 1024 * 1024 * 1024;

const INDEX_NAME = /^index\/([0-9a-f]{64})$/;
const PACK_NAME = /^data\/[0-9a-f]{2}\/([0-9a-f]{64})$/;
const TREE_FILE = /^([0-9a-f]{64})\.(\d+)\.(\d+)\.([0-9a-f]{64})$/;

interface Entry {
  /** Path below the cache folder. */
  file: string;
  size: number;
  /** Last use (ms); the oldest go first. */
  used: number;
}

/** What a cache did, for tests and the job's notes. */
export interface CacheStats {
  hits: number;
  misses: number;
  /** Cached objects whose bytes no longer matched their name (deleted, read again from the BES). */
  discarded: number;
  added: number;
  evicted: number;
}

/** The cache folder of one agent: index segments and tree blobs, by content. */
export class ObjectCache {
  /** Index segments by name hash; tree ranges by "pack.offset.length". */
  #index = new Map<string, Entry>();
  #trees = new Map<string, Entry>();
  #bytes = 0;
  readonly stats: CacheStats = { hits: 0, misses: 0, discarded: 0, added: 0, evicted: 0 };

  private constructor(readonly dir: string, readonly maxBytes: number) {}

  /** Opens (creating) the cache in `dir`, bounded to `maxBytes`; removes what interrupted writes left. */
  static async open(dir: string, maxBytes = DEFAULT_CACHE_MAX_BYTES): Promise<ObjectCache> {
    const cache = new ObjectCache(dir, maxBytes);
    for (const sub of ["index", "trees"]) {
      await Deno.mkdir(`${dir}/${sub}`, { recursive: true, mode: 0o700 });
      for await (const e of Deno.readDir(`${dir}/${sub}`)) {
        if (!e.isFile) continue;
        const file = `${sub}/${e.name}`;
        if (e.name.startsWith(".tmp-")) {
          await Deno.remove(`${dir}/${file}`).catch(() => {});
          continue;
        }
        const info = await Deno.stat(`${dir}/${file}`).catch(() => null);
        if (!info) continue;
        const entry = { file, size: info.size, used: info.mtime?.getTime() ?? 0 };
        if (sub === "index" && /^[0-9a-f]{64}$/.test(e.name)) cache.#index.set(e.name, entry);
        else if (sub === "trees" && TREE_FILE.test(e.name)) {
          const [, pack, offset, length] = TREE_FILE.exec(e.name)!;
          cache.#trees.set(`${pack}.${offset}.${length}`, entry);
        } else {
          await Deno.remove(`${dir}/${file}`).catch(() => {}); // not ours
          continue;
        }
        cache.#bytes += info.size;
      }
    }
    await cache.#evict();
    return cache;
  }

  /** Bytes the cache holds. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Whether a tree blob at this range of the pack is cached (its bytes are checked when read). */
  hasTree(packId: string, offset: number, length: number): boolean {
    return this.#trees.has(`${packId}.${offset}.${length}`);
  }

  /** Index segment `hash`, if cached and intact. */
  async index(hash: string): Promise<Uint8Array<ArrayBuffer> | null> {
    return await this.#read(this.#index, hash, hash);
  }

  /** The stored bytes of the tree blob at `offset`+`length` of pack `packId`, if cached and intact. */
  async tree(packId: string, offset: number, length: number): Promise<Uint8Array<ArrayBuffer> | null> {
    const key = `${packId}.${offset}.${length}`;
    const entry = this.#trees.get(key);
    if (!entry) {
      this.stats.misses++;
      return null;
    }
    const bytes = await this.#read(this.#trees, key, entry.file.slice(entry.file.lastIndexOf(".") + 1));
    if (bytes && bytes.length !== length) {
      await this.#drop(this.#trees, key, true);
      return null;
    }
    return bytes;
  }

  async addIndex(hash: string, bytes: Uint8Array): Promise<void> {
    if (sha256Hex(bytes) !== hash) return; // only what hashes to its name
    await this.#write(this.#index, hash, `index/${hash}`, bytes);
  }

  async addTree(packId: string, offset: number, length: number, bytes: Uint8Array): Promise<void> {
    if (bytes.length !== length) return;
    const key = `${packId}.${offset}.${length}`;
    await this.#write(this.#trees, key, `trees/${key}.${sha256Hex(bytes)}`, bytes);
  }

  async #read(map: Map<string, Entry>, key: string, hash: string): Promise<Uint8Array<ArrayBuffer> | null> {
    const entry = map.get(key);
    if (!entry) {
      this.stats.misses++;
      return null;
    }
    let bytes: Uint8Array<ArrayBuffer>;
    try {
      bytes = await Deno.readFile(`${this.dir}/${entry.file}`);
    } catch {
      // Evicted by another process meanwhile, or unreadable: read from the BES.
      await this.#drop(map, key, false);
      this.stats.misses++;
      return null;
    }
    if (sha256Hex(bytes) !== hash) {
      await this.#drop(map, key, true);
      this.stats.misses++;
      return null;
    }
    entry.used = Date.now();
    const t = new Date(entry.used);
    await Deno.utime(`${this.dir}/${entry.file}`, t, t).catch(() => {});
    this.stats.hits++;
    return bytes;
  }

  async #drop(map: Map<string, Entry>, key: string, damaged: boolean): Promise<void> {
    const entry = map.get(key);
    if (!entry) return;
    map.delete(key);
    this.#bytes -= entry.size;
    if (damaged) this.stats.discarded++;
    await Deno.remove(`${this.dir}/${entry.file}`).catch(() => {});
  }

  async #write(map: Map<string, Entry>, key: string, file: string, bytes: Uint8Array): Promise<void> {
    if (map.has(key) || bytes.length > this.maxBytes / 8) return;
    const path = `${this.dir}/${file}`;
    const tmp = `${path.slice(0, path.lastIndexOf("/"))}/.tmp-${crypto.randomUUID()}`;
    try {
      await Deno.writeFile(tmp, bytes, { createNew: true, mode: 0o600 });
      await Deno.rename(tmp, path);
    } catch {
      // A cache that cannot be written (disk full, a folder removed) only costs reads from the BES.
      await Deno.remove(tmp).catch(() => {});
      return;
    }
    map.set(key, { file, size: bytes.length, used: Date.now() });
    this.#bytes += bytes.length;
    this.stats.added++;
    await this.#evict();
  }

  /** Removes the least recently used objects until the cache holds at most 90 % of its bound. */
  async #evict(): Promise<void> {
    if (this.#bytes <= this.maxBytes) return;
    const all = [
      ...[...this.#index].map(([k, e]) => ({ map: this.#index, key: k, e })),
      ...[...this.#trees].map(([k, e]) => ({ map: this.#trees, key: k, e })),
    ].sort((a, b) => a.e.used - b.e.used);
    for (const { map, key } of all) {
      if (this.#bytes <= this.maxBytes * 0.9) break;
      await this.#drop(map, key, false);
      this.stats.evicted++;
    }
  }
}

/**
 * A repository backend with the agent's cache in front of another (the BES's data API): index segments and
 * tree blobs come from the cache when it holds them intact; everything else, and every listing, goes to the
 * BES. Which ranges of a pack are tree blobs it learns from the index segments it reads and the packs it
 * uploads (their listings are in clear).
 */
export class CachingBackend implements Backend {
  readonly location: string;
  /** Tree blob ranges ("pack.offset.length") the index or an uploaded pack names. */
  #treeRanges = new Set<string>();

  constructor(readonly inner: Backend, readonly cache: ObjectCache) {
    this.location = inner.location;
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }

  async get(name: string, range?: ByteRange): Promise<Uint8Array<ArrayBuffer>> {
    const index = INDEX_NAME.exec(name);
    if (index && !range) {
      const cached = await this.cache.index(index[1]);
      if (cached && this.#learn(name, cached)) return cached;
      const bytes = await this.inner.get(name);
      if (this.#learn(name, bytes)) await this.cache.addIndex(index[1], bytes);
      return bytes;
    }
    const pack = PACK_NAME.exec(name);
    if (pack && range && "offset" in range) {
      const key = `${pack[1]}.${range.offset}.${range.length}`;
      if (this.#treeRanges.has(key) || this.cache.hasTree(pack[1], range.offset, range.length)) {
        const cached = await this.cache.tree(pack[1], range.offset, range.length);
        if (cached) return cached;
        const bytes = await this.inner.get(name, range);
        await this.cache.addTree(pack[1], range.offset, range.length, bytes);
        return bytes;
      }
    }
    return await this.inner.get(name, range);
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    await this.inner.put(name, data);
    await this.#learnWritten(name, [data]);
  }

  /** Stores `parts` (the inner backend streams them when it can: no joined copy of a pack), then caches. */
  async putParts(name: string, parts: Uint8Array[]): Promise<void> {
    await putParts(this.inner, name, parts);
    await this.#learnWritten(name, parts);
  }

  /** Caches what the BES accepted under `name`: an index segment, or the tree blobs of a pack. */
  async #learnWritten(name: string, parts: Uint8Array[]): Promise<void> {
    const index = INDEX_NAME.exec(name);
    if (index) {
      const data = parts.length === 1 ? parts[0] : concat(...parts);
      if (this.#learn(name, data)) await this.cache.addIndex(index[1], data);
      return;
    }
    const pack = PACK_NAME.exec(name);
    if (!pack) return;
    const listing = packListingOfParts(pack[1], parts);
    if (!listing) return;
    for (const e of listing.entries) {
      if (e.type !== "tree") continue;
      this.#treeRanges.add(`${pack[1]}.${e.offset}.${e.length}`);
      await this.cache.addTree(pack[1], e.offset, e.length, sliceParts(parts, e.offset, e.length));
    }
  }

  delete(name: string): Promise<void> {
    return this.inner.delete(name);
  }

  exists(name: string): Promise<boolean> {
    return this.inner.exists(name);
  }

  /** Records the tree ranges of index segment `name`; false when it does not decode (not cached then). */
  #learn(name: string, bytes: Uint8Array): boolean {
    let listings: PackListing[];
    try {
      listings = decodeIndexSegment(name, bytes);
    } catch {
      return false;
    }
    for (const l of listings) {
      for (const e of l.entries) {
        if (e.type === "tree") this.#treeRanges.add(`${l.packId}.${e.offset}.${e.length}`);
      }
    }
    return true;
  }
}

/** Bytes `offset` to `offset + length` of the concatenation of `parts`, copied out. */
export function sliceParts(parts: Uint8Array[], offset: number, length: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(length);
  let pos = 0; // offset of the current part in the whole
  let o = 0;
  for (const p of parts) {
    if (o >= length) break;
    const end = pos + p.length;
    if (end > offset + o) {
      const from = offset + o - pos;
      const piece = p.subarray(from, Math.min(p.length, from + length - o));
      out.set(piece, o);
      o += piece.length;
    }
    pos = end;
  }
  if (o !== length) throw new RangeError(`bytes ${offset}+${length} lie outside the parts`);
  return out;
}

/** The listing of the pack made of `parts` (its trailer read from the last parts); null when it has none. */
export function packListingOfParts(packId: string, parts: Uint8Array[]): PackListing | null {
  let size = 0;
  for (const p of parts) size += p.length;
  let want = Math.min(size, 64 * 1024);
  for (let tries = 0; tries < 2; tries++) {
    let parsed: PackListing | { need: number };
    try {
      parsed = parsePackTail(packId, sliceParts(parts, size - want, want), size);
    } catch {
      return null;
    }
    if (!("need" in parsed)) return parsed;
    want = parsed.need;
  }
  return null;
}
