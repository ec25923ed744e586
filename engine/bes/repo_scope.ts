/**
 * What one namespace of a repository may see, decided without a key from the clear parts of the format
 * (docs/repository-format.md): a pack's namespace is in its trailer, an index segment's in its listings,
 * a snapshot's in its clear header, a reference segment belongs to the snapshots that name it, and a
 * condemnation marker to its pack. The data API (data_api.ts) filters listings and refuses reads with it.
 *
 * Everything cached here is keyed by the name of an immutable, content-addressed object (a pack, a
 * segment, a snapshot), so a cache entry is never wrong — only the listings say what exists now, and they
 * are read afresh for every request that needs them.
 */
import type { Backend, ObjectInfo } from "../repo/backend.ts";
import type { BlobId } from "../repo/chunk_id.ts";
import { sha256Hex } from "../repo/chunk_id.ts";
import { IntegrityError, MissingObjectError } from "../repo/errors.ts";
import { CONDEMNED_PREFIX, listCondemned } from "../repo/gc.ts";
import { decodeIndexSegment, encodeIndexSegment } from "../repo/index.ts";
import { type PackListing, packObjectName, parsePackTail } from "../repo/pack.ts";
import { parseSnapshotObject, type SnapshotHeader } from "../repo/snapshot.ts";

/** How many namespaces' blob indexes one repository keeps in memory (least recently used go first). */
const NAMESPACE_INDEXES_KEPT = 8;
/** Trailer namespaces remembered per repository (a bound on memory; forgotten ones are read again). */
const PACK_NAMESPACES_KEPT = 200_000;
const TAIL_READ = 64 * 1024;
/**
 * Entries of the trailers of packs just received (`notePackReceived`) kept for the index segment that lists
 * them (`storedTrailer`), at most this many in all (oldest packs forgotten first; a forgotten one is read
 * back from the target as before).
 */
const STORED_TRAILER_ENTRIES_KEPT = 100_000;

/** What an index segment lists, per namespace. */
interface SegmentSummary {
  /** Pack ids by namespace. */
  packs: Map<string, string[]>;
  /**
   * For a segment listing several namespaces (written by `repair index`): per namespace, the name and size
   * of the segment holding only that namespace's packs, which is what its tokens are shown instead.
   */
  filtered: Map<string, { name: string; size: number }> | null;
  damaged: boolean;
}

/** One namespace's blobs: id → the pack (or packs) holding it, and the segments read for it. */
interface NamespaceIndex {
  segments: Set<string>;
  blobs: Map<BlobId, string | string[]>;
}

/** A namespace's view of one repository. */
export class RepositoryScope {
  #segments = new Map<string, SegmentSummary>();
  #loadingSegments = new Map<string, Promise<SegmentSummary>>();
  /** Filtered segment name → its source segment and namespace. */
  #filtered = new Map<string, { source: string; namespace: string }>();
  /** Pack id → namespace named by its trailer (null: trailer damaged). */
  #trailerNamespace = new Map<string, string | null>();
  /** Snapshot id → clear header (null: damaged). */
  #snapshots = new Map<string, SnapshotHeader | null>();
  #namespaceIndexes = new Map<string, NamespaceIndex>();
  /** Pack id → the listing of its trailer, for packs this process received, checked and wrote (`notePackReceived`). */
  #storedTrailers = new Map<string, PackListing>();
  #storedTrailerEntries = 0;

  constructor(readonly backend: Backend) {}

  async #summary(name: string): Promise<SegmentSummary> {
    const known = this.#segments.get(name);
    if (known) return known;
    let loading = this.#loadingSegments.get(name);
    if (!loading) {
      loading = (async () => {
        try {
          return this.#summarize(name, decodeIndexSegment(name, await this.backend.get(name)));
        } catch (e) {
          if (!(e instanceof IntegrityError)) throw e;
          return { packs: new Map(), filtered: null, damaged: true };
        }
      })();
      this.#loadingSegments.set(name, loading);
      loading.finally(() => this.#loadingSegments.delete(name)).catch(() => {});
    }
    const summary = await loading;
    this.#segments.set(name, summary);
    return summary;
  }

  #summarize(name: string, listings: PackListing[]): SegmentSummary {
    const packs = new Map<string, string[]>();
    for (const l of listings) {
      const list = packs.get(l.namespace) ?? [];
      list.push(l.packId);
      packs.set(l.namespace, list);
    }
    let filtered: SegmentSummary["filtered"] = null;
    if (packs.size > 1) {
      filtered = new Map();
      for (const ns of packs.keys()) {
        const bytes = encodeIndexSegment(listings.filter((l) => l.namespace === ns));
        const fname = `index/${sha256Hex(bytes)}`;
        filtered.set(ns, { name: fname, size: bytes.length });
        this.#filtered.set(fname, { source: name, namespace: ns });
      }
    }
    return { packs, filtered, damaged: false };
  }

  /** Records a segment the data API just stored (its listings are at hand). */
  noteSegment(name: string, listings: PackListing[]): void {
    this.#segments.set(name, this.#summarize(name, listings));
  }

  /** The index segments as they are now, with their summaries. */
  async #currentSegments(): Promise<{ info: ObjectInfo; summary: SegmentSummary }[]> {
    const infos: ObjectInfo[] = [];
    for await (const o of this.backend.list("index/")) infos.push(o);
    const out = [];
    for (const info of infos) {
      try {
        out.push({ info, summary: await this.#summary(info.name) });
      } catch (e) {
        if (e instanceof MissingObjectError) continue; // removed (by gc) while listing
        throw e;
      }
    }
    const present = new Set(infos.map((i) => i.name));
    for (const name of this.#segments.keys()) if (!present.has(name)) this.#segments.delete(name);
    for (const [fname, f] of this.#filtered) if (!present.has(f.source)) this.#filtered.delete(fname);
    return out;
  }

  /** The index segments `namespace` sees: its own, and filtered copies of segments it shares. */
  async indexObjects(namespace: string): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    for (const { info, summary } of await this.#currentSegments()) {
      if (!summary.packs.has(namespace)) continue;
      const f = summary.filtered?.get(namespace);
      out.push(f ? { name: f.name, size: f.size, modified: info.modified } : info);
    }
    return out;
  }

  /** The bytes of index segment `name` if `namespace` may read it, else null. */
  async readIndexObject(name: string, namespace: string): Promise<Uint8Array | null> {
    const filtered = this.#filtered.get(name);
    if (filtered) {
      if (filtered.namespace !== namespace) return null;
      let listings: PackListing[];
      try {
        listings = decodeIndexSegment(filtered.source, await this.backend.get(filtered.source));
      } catch (e) {
        if (e instanceof MissingObjectError || e instanceof IntegrityError) return null;
        throw e;
      }
      const bytes = encodeIndexSegment(listings.filter((l) => l.namespace === namespace));
      return `index/${sha256Hex(bytes)}` === name ? bytes : null;
    }
    let bytes: Uint8Array;
    try {
      bytes = await this.backend.get(name);
    } catch (e) {
      if (e instanceof MissingObjectError) return null;
      throw e;
    }
    let listings: PackListing[];
    try {
      listings = decodeIndexSegment(name, bytes);
    } catch (e) {
      if (!(e instanceof IntegrityError)) throw e;
      return null; // damaged: no namespace can be told from it
    }
    this.noteSegment(name, listings);
    return listings.length > 0 && listings.every((l) => l.namespace === namespace) ? bytes : null;
  }

  /** Pack id → namespace, as the index segments say. */
  async #indexedPackNamespaces(): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const { summary } of await this.#currentSegments()) {
      for (const [ns, ids] of summary.packs) for (const id of ids) out.set(id, ns);
    }
    return out;
  }

  /**
   * The listing in pack `packId`'s trailer (two range reads at most, without knowing the pack's size:
   * only the trailer, under its checksum, is read); null when the pack does not exist. Throws
   * `IntegrityError` naming the pack if its trailer is damaged.
   */
  async packTrailer(packId: string): Promise<PackListing | null> {
    const name = packObjectName(packId);
    try {
      let tail = await this.backend.get(name, { suffix: TAIL_READ });
      // A shorter tail is the whole pack; otherwise its size is unknown, and only the trailer is needed.
      const size = tail.length < TAIL_READ ? tail.length : Number.MAX_SAFE_INTEGER;
      let parsed = parsePackTail(packId, tail, size);
      if ("need" in parsed) {
        tail = await this.backend.get(name, { suffix: parsed.need });
        parsed = parsePackTail(packId, tail, size);
        if ("need" in parsed) throw new IntegrityError("pack", packId, "trailer unreadable");
      }
      this.notePack(packId, parsed.namespace);
      return parsed;
    } catch (e) {
      if (e instanceof MissingObjectError) return null;
      throw e;
    }
  }

  /**
   * The namespace of pack `packId` as its trailer says (then remembered), or as the index says when the
   * trailer is damaged; null when the pack does not exist.
   */
  async packNamespace(packId: string): Promise<string | null> {
    if (!/^[0-9a-f]{64}$/.test(packId)) return null;
    let ns = this.#trailerNamespace.get(packId);
    if (ns === undefined) {
      try {
        const listing = await this.packTrailer(packId);
        if (listing === null) return null;
        ns = listing.namespace;
      } catch (e) {
        if (!(e instanceof IntegrityError)) throw e;
        ns = null;
        this.#trailerNamespace.set(packId, null);
      }
    }
    if (ns !== null) return ns;
    // A damaged trailer: the index (checked against the trailer when it was written) still knows it.
    return (await this.#indexedPackNamespaces()).get(packId) ?? null;
  }

  /**
   * Records a pack the data API just received and checked, with the listing parsed from its trailer. When
   * `stored` (this request wrote it), the listing is kept for the index segment that lists the pack
   * (`storedTrailer`), which then need not read it back; otherwise a copy was there already, whose own
   * trailer is what counts, so nothing is kept.
   */
  notePackReceived(listing: PackListing, stored: boolean): void {
    this.notePack(listing.packId, listing.namespace);
    this.#forgetStoredTrailer(listing.packId);
    if (!stored) return;
    this.#storedTrailers.set(listing.packId, listing);
    this.#storedTrailerEntries += listing.entries.length + 1;
    for (const [id] of this.#storedTrailers) {
      if (this.#storedTrailerEntries <= STORED_TRAILER_ENTRIES_KEPT) break;
      this.#forgetStoredTrailer(id);
    }
  }

  #forgetStoredTrailer(packId: string): void {
    const known = this.#storedTrailers.get(packId);
    if (!known) return;
    this.#storedTrailers.delete(packId);
    this.#storedTrailerEntries -= known.entries.length + 1;
  }

  /**
   * Pack `packId`'s trailer listing as `packTrailer` gives it: the one `notePackReceived` kept (used once),
   * when the pack is still stored — one existence check instead of reading the trailer back —, else read
   * from the target.
   */
  async storedTrailer(packId: string): Promise<PackListing | null> {
    const known = this.#storedTrailers.get(packId);
    if (known) {
      this.#forgetStoredTrailer(packId);
      if (await this.backend.exists(packObjectName(packId))) return known;
    }
    return await this.packTrailer(packId);
  }

  /** Records the namespace of a pack the data API just stored (its trailer was checked). */
  notePack(packId: string, namespace: string): void {
    if (this.#trailerNamespace.size >= PACK_NAMESPACES_KEPT) this.#trailerNamespace.clear();
    this.#trailerNamespace.set(packId, namespace);
  }

  /** The packs of `namespace` (under `prefix`, "data/" or "data/<hh>/"). */
  async packObjects(namespace: string, prefix: string): Promise<ObjectInfo[]> {
    const indexed = await this.#indexedPackNamespaces();
    const out: ObjectInfo[] = [];
    for await (const o of this.backend.list(prefix)) {
      const packId = o.name.slice(o.name.lastIndexOf("/") + 1);
      if (o.name !== packObjectName(packId)) continue;
      const ns = this.#trailerNamespace.get(packId) ?? indexed.get(packId) ??
        await this.packNamespace(packId);
      if (ns === namespace) out.push(o);
    }
    return out;
  }

  /** The clear header of snapshot `id`, or null when it is missing or damaged. */
  async snapshotHeader(id: string): Promise<SnapshotHeader | null> {
    if (!/^[0-9a-f]{64}$/.test(id)) return null;
    const known = this.#snapshots.get(id);
    if (known !== undefined) return known;
    let bytes: Uint8Array;
    try {
      bytes = await this.backend.get(`snapshots/${id}`);
    } catch (e) {
      if (e instanceof MissingObjectError) return null;
      throw e;
    }
    let header: SnapshotHeader | null;
    try {
      header = parseSnapshotObject(id, bytes).header;
      if (typeof header?.namespace !== "string") header = null;
    } catch (e) {
      if (!(e instanceof IntegrityError)) throw e;
      header = null;
    }
    this.#snapshots.set(id, header);
    return header;
  }

  /** Records a snapshot the data API just stored. */
  noteSnapshot(id: string, header: SnapshotHeader): void {
    this.#snapshots.set(id, header);
  }

  /** The snapshots of `namespace`. */
  async snapshotObjects(namespace: string): Promise<ObjectInfo[]> {
    const listed: ObjectInfo[] = [];
    for await (const o of this.backend.list("snapshots/")) listed.push(o);
    const present = new Set(listed.map((o) => o.name.slice("snapshots/".length)));
    for (const id of this.#snapshots.keys()) if (!present.has(id)) this.#snapshots.delete(id);
    const out: ObjectInfo[] = [];
    for (const o of listed) {
      const header = await this.snapshotHeader(o.name.slice("snapshots/".length));
      if (header?.namespace === namespace) out.push(o);
    }
    return out;
  }

  /** The reference segments the snapshots of `namespace` name (segment hashes). */
  async referenceSegments(namespace: string): Promise<Set<string>> {
    const out = new Set<string>();
    for (const o of await this.snapshotObjects(namespace)) {
      const header = await this.snapshotHeader(o.name.slice("snapshots/".length));
      for (const seg of header?.refSegments ?? []) out.add(seg);
    }
    return out;
  }

  /** The condemnation markers of `namespace`'s packs. */
  async condemnedObjects(namespace: string): Promise<ObjectInfo[]> {
    const indexed = await this.#indexedPackNamespaces();
    const out: ObjectInfo[] = [];
    for await (const o of this.backend.list(CONDEMNED_PREFIX)) {
      const packId = o.name.slice(CONDEMNED_PREFIX.length);
      const ns = indexed.get(packId) ?? await this.packNamespace(packId);
      if (ns === namespace) out.push(o);
    }
    return out;
  }

  /** Whether condemnation marker `name` is of a pack of `namespace`. */
  async isCondemnedObjectOf(name: string, namespace: string): Promise<boolean> {
    const packId = name.slice(CONDEMNED_PREFIX.length);
    if (!/^[0-9a-f]{64}$/.test(packId)) return false;
    const ns = (await this.#indexedPackNamespaces()).get(packId) ?? await this.packNamespace(packId);
    return ns === namespace;
  }

  /** `namespace`'s blobs from the current index segments (segments already read are not read again). */
  async #namespaceIndex(namespace: string): Promise<NamespaceIndex> {
    const segments = (await this.#currentSegments()).filter((s) => s.summary.packs.has(namespace));
    const names = new Set(segments.map((s) => s.info.name));
    let idx = this.#namespaceIndexes.get(namespace);
    this.#namespaceIndexes.delete(namespace); // set again below: most recently used last
    // gc rewrote a segment (dropping deleted packs): start over rather than keep what it dropped.
    if (idx && [...idx.segments].some((s) => !names.has(s))) idx = undefined;
    idx ??= { segments: new Set(), blobs: new Map() };
    for (const s of segments) {
      if (idx.segments.has(s.info.name)) continue;
      let listings: PackListing[];
      try {
        listings = decodeIndexSegment(s.info.name, await this.backend.get(s.info.name));
      } catch (e) {
        if (e instanceof MissingObjectError || e instanceof IntegrityError) continue;
        throw e;
      }
      for (const l of listings) {
        if (l.namespace !== namespace) continue;
        for (const e of l.entries) {
          const had = idx.blobs.get(e.id);
          if (had === undefined) idx.blobs.set(e.id, l.packId);
          else if (typeof had === "string") {
            if (had !== l.packId) idx.blobs.set(e.id, [had, l.packId]);
          } else if (!had.includes(l.packId)) had.push(l.packId);
        }
      }
      idx.segments.add(s.info.name);
    }
    this.#namespaceIndexes.set(namespace, idx);
    while (this.#namespaceIndexes.size > NAMESPACE_INDEXES_KEPT) {
      this.#namespaceIndexes.delete(this.#namespaceIndexes.keys().next().value!);
    }
    return idx;
  }

  /**
   * The ids among `ids` that `namespace` holds in a live pack: indexed, not condemned (a damaged marker
   * counts as a condemnation) and, with `checkPacksExist`, present in the listing of `data/`.
   */
  async liveBlobs(
    namespace: string,
    ids: Iterable<BlobId>,
    options: { checkPacksExist?: boolean } = {},
  ): Promise<Set<BlobId>> {
    const condemned = new Set((await listCondemned(this.backend, { onDamaged: () => {} })).keys());
    let existing: Set<string> | null = null;
    if (options.checkPacksExist) {
      existing = new Set();
      for await (const o of this.backend.list("data/")) {
        existing.add(o.name.slice(o.name.lastIndexOf("/") + 1));
      }
    }
    const idx = await this.#namespaceIndex(namespace);
    const live = (p: string) => !condemned.has(p) && (existing === null || existing.has(p));
    const out = new Set<BlobId>();
    for (const id of ids) {
      const at = idx.blobs.get(id);
      if (at === undefined) continue;
      if (typeof at === "string" ? live(at) : at.some(live)) out.add(id);
    }
    return out;
  }
}
