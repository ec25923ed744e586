/**
 * forget + gc, without a key (the BES runs them holding none). The safety rule, after PBS: gc
 * (a) marks every blob a snapshot's clear reference list names;
 * (b) condemns — writes "condemned/<packId>" — each pack that holds no marked blob at the copy the index names
 *     (a duplicate a killed backup left unindexed is garbage), but never a pack
 *     written at or after the start of the oldest live writer lock (that writer may be about to name it);
 * (c) deletes a condemned pack only in a later gc, at least `graceMs` after its condemnation, when it is
 *     still unmarked and no writer lock that started before the condemnation is live; a condemned pack
 *     that became marked again is pardoned;
 * (d) rewrites packs that are mostly dead (live blobs under `repackLiveFraction` of their blob bytes): it
 *     copies the live blobs' ciphertext into new packs, indexes them, and only then condemns the old pack,
 *     which (c) deletes like any other. No key is needed: blobs are copied as they are.
 * Writers treat a blob in a condemned or missing pack as absent and check this again before they commit
 * (Namespace.checkCommit): a commit naming such a blob is refused and the blob uploaded again.
 */
import type { Backend, ObjectInfo } from "./backend.ts";
import { sha256Hex } from "./chunk_id.ts";
import { IntegrityError, MissingObjectError, RepoError } from "./errors.ts";
import { readConfig } from "./config.ts";
import { decodeIndexSegment, writeIndexSegment } from "./index.ts";
import { acquireLock, listLiveLocks, LOCK_STALE_MS } from "./lock.ts";
import { checkPackBytes, PackBuilder, type PackListing, packObjectName, readPackListing } from "./pack.ts";
import { listSnapshots, readSnapshotRefs } from "./snapshot.ts";

/** Default time between a pack's condemnation and its deletion. */
export const GC_GRACE_MS = 24 * 60 * 60_000;
/**
 * Packs written less than this before the oldest live writer started are not condemned either: file
 * and object store times are coarse (Linux file times lag the clock by a few ms) or set by another clock.
 */
export const GC_CLOCK_MARGIN_MS = 5_000;
/**
 * Prefix of condemnation markers: "condemned/<packId>" holding
 * { condemnedAt, checksum: SHA-256 hex of "cadres-condemned-v1" NUL packId NUL condemnedAt }.
 */
export const CONDEMNED_PREFIX = "condemned/";
/**
 * A live pack whose live blobs (the copies gc keeps) take less than this share of the bytes of all its
 * blobs is rewritten: at most half of what such a pack holds is worth keeping, so copying it out frees at
 * least as many bytes as it copies.
 */
export const GC_REPACK_LIVE_FRACTION = 0.5;
/** The rewrite writes an index segment after this many new packs (and after its last). */
const REPACK_PACKS_PER_SEGMENT = 4;

function markerChecksum(packId: string, condemnedAt: string): string {
  return sha256Hex(new TextEncoder().encode(`cadres-condemned-v1\u0000${packId}\u0000${condemnedAt}`));
}

/** The bytes of the condemnation marker of `packId`, condemned at `at`. */
export function encodeCondemnedMarker(packId: string, at: Date): Uint8Array {
  const condemnedAt = at.toISOString();
  return new TextEncoder().encode(
    JSON.stringify({ condemnedAt, checksum: markerChecksum(packId, condemnedAt) }),
  );
}

/**
 * When the marker `name` ("condemned/<packId>") says its pack was condemned. Throws `IntegrityError`
 * naming it if it is not JSON, its time is not one, or its checksum does not match (a marker of format
 * v1 written before checksums, `{ condemnedAt }` alone, is still read).
 */
export function decodeCondemnedMarker(name: string, bytes: Uint8Array): Date {
  const fail = (detail: string): never => {
    throw new IntegrityError("condemned", name, detail);
  };
  const packId = name.slice(CONDEMNED_PREFIX.length);
  let raw: { condemnedAt?: unknown; checksum?: unknown };
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return fail("not valid JSON");
  }
  if (typeof raw?.condemnedAt !== "string" || !Number.isFinite(Date.parse(raw.condemnedAt))) {
    return fail("no valid condemnedAt time");
  }
  const keys = Object.keys(raw);
  if (raw.checksum === undefined && keys.length === 1) return new Date(raw.condemnedAt);
  if (raw.checksum !== markerChecksum(packId, raw.condemnedAt)) fail("checksum mismatch");
  return new Date(raw.condemnedAt);
}

/**
 * The condemned packs and when each was condemned. A damaged marker throws `IntegrityError` naming it
 * (so gc stops before it deletes anything), unless `onDamaged` is given: then it is reported there and
 * its pack still counts as condemned (writers store its blobs anew rather than trust it).
 */
export async function listCondemned(
  backend: Backend,
  options: { onDamaged?: (e: IntegrityError) => void } = {},
): Promise<Map<string, Date>> {
  const out = new Map<string, Date>();
  for await (const obj of backend.list(CONDEMNED_PREFIX)) {
    const packId = obj.name.slice(CONDEMNED_PREFIX.length);
    let bytes: Uint8Array;
    try {
      bytes = await backend.get(obj.name);
    } catch (e) {
      if (e instanceof MissingObjectError) continue; // pardoned or deleted while listing
      throw e;
    }
    try {
      out.set(packId, decodeCondemnedMarker(obj.name, bytes));
    } catch (e) {
      if (!(e instanceof IntegrityError) || !options.onDamaged) throw e;
      options.onDamaged(e);
      out.set(packId, obj.modified);
    }
  }
  return out;
}

/**
 * Deletes snapshots `ids` (full ids); their data goes at the next gc runs. Throws `RepoError`, deleting
 * nothing, if one of them is the parent of a backup whose lock is live, or a live lock is damaged (its
 * parent is unknown).
 */
export async function forgetSnapshots(
  backend: Backend,
  ids: string[],
  options: { now?: Date; staleMs?: number } = {},
): Promise<void> {
  const forget = new Set(ids);
  for (const l of await listLiveLocks(backend, options)) {
    if (l.damaged) {
      throw new RepoError(
        `Cannot forget while lock ${l.name} is damaged (${l.damaged}) and live: it may be a backup building on ` +
          `one of these snapshots; it counts as stale ${LOCK_STALE_MS / 60_000} minutes after its last write`,
      );
    }
    if (l.kind === "backup" && l.parent && forget.has(l.parent)) {
      throw new RepoError(
        `Cannot forget snapshot ${l.parent}: it is the parent of a running backup (lock ${l.name}, ` +
          `${l.hostname} pid ${l.pid})`,
      );
    }
  }
  for (const id of ids) await backend.delete(`snapshots/${id}`);
}

/** Options of `garbageCollect`. */
export interface GcOptions {
  now?: () => Date;
  graceMs?: number;
  staleMs?: number;
  clockMarginMs?: number;
  /** Packs whose live share of blob bytes is below this are rewritten (default `GC_REPACK_LIVE_FRACTION`; 0: never). */
  repackLiveFraction?: number;
  /** At most this many bytes of live blobs are copied by one run (default: no bound; 0: no rewriting). */
  maxRepackBytes?: number;
}

/** The outcome of a gc. */
export interface GcResult {
  snapshots: number;
  referencedBlobs: number;
  packs: number;
  condemned: string[];
  deleted: string[];
  pardoned: string[];
  /** Condemned packs kept for a later gc (grace period or an older writer still running). */
  pending: string[];
  bytesFreed: number;
  refSegmentsDeleted: number;
  indexSegmentsRewritten: number;
  /** Temporary files of writes that never completed (a killed writer's), removed. */
  temporariesRemoved: number;
  /** Live locks that are damaged: each counts as the oldest writer, so nothing was condemned or deleted. */
  damagedLocks: string[];
  /** Mostly dead packs rewritten: their live blobs were copied into new, indexed packs, then they were condemned. */
  repacked: string[];
  /** The packs the rewrite wrote. */
  repackWritten: string[];
  /** Bytes of live blobs the rewrite copied. */
  bytesRepacked: number;
  /**
   * Packs the rewrite left as they were: a pack whose bytes do not hash to its name (never copied; `verify
   * --all` names it), or one whose rewrite would have produced a pack this run deletes (tried again later).
   */
  repackSkipped: { pack: string; reason: string }[];
}

/**
 * Runs one gc over `backend` (see the module comment). It reads everything it decides on — locks, snapshots
 * and their reference segments, index segments, pack trailers — before its first write or delete, so it
 * throws `RepoError` with the repository unchanged if another gc is live or any of these cannot be read:
 * gc never guesses.
 */
export async function garbageCollect(backend: Backend, options: GcOptions = {}): Promise<GcResult> {
  const now = options.now ?? (() => new Date());
  const graceMs = options.graceMs ?? GC_GRACE_MS;
  const staleMs = options.staleMs ?? LOCK_STALE_MS;
  const others = await listLiveLocks(backend, { now: now(), staleMs });
  if (others.some((l) => l.kind === "gc")) throw new RepoError("Another gc is running on this repository");
  const lock = await acquireLock(backend, { kind: "gc", now });
  try {
    return await collect(backend, now, graceMs, staleMs, options.clockMarginMs ?? GC_CLOCK_MARGIN_MS, {
      fraction: options.repackLiveFraction ?? GC_REPACK_LIVE_FRACTION,
      maxBytes: options.maxRepackBytes ?? Infinity,
    });
  } finally {
    await lock.release();
  }
}

async function collect(
  backend: Backend,
  now: () => Date,
  graceMs: number,
  staleMs: number,
  marginMs: number,
  repack: { fraction: number; maxBytes: number },
): Promise<GcResult> {
  if (!(repack.fraction >= 0 && repack.fraction <= 1) || !(repack.maxBytes >= 0)) {
    throw new RepoError("gc: the repack fraction must lie in [0, 1] and the repack bound must be at least 0");
  }
  // Locks first: a writer that starts after this point writes only packs newer than its own start. A damaged
  // lock starts at the epoch (listLiveLocks): older than every pack and condemnation.
  const writers = (await listLiveLocks(backend, { now: now(), staleMs })).filter((l) => l.kind === "backup");
  const writerStarts = writers.map((l) => Date.parse(l.start));
  const cutoff = writerStarts.length > 0 ? Math.min(...writerStarts) - marginMs : Infinity;

  const packs: ObjectInfo[] = [];
  for await (const obj of backend.list("data/")) packs.push(obj);
  const refSegments: ObjectInfo[] = [];
  for await (const obj of backend.list("refs/")) refSegments.push(obj);
  const condemned = await listCondemned(backend);
  // The index, read after the pack listing. Its segments (checksummed, named by their hash) give each indexed
  // pack's listing, so only the trailers of packs no segment lists are read. Segments never change, so phase
  // 3 reuses what is read here.
  const segments = new Map<string, PackListing[]>();
  for await (const obj of backend.list("index/")) {
    segments.set(obj.name, decodeIndexSegment(obj.name, await backend.get(obj.name)));
  }
  const indexed = new Map<string, PackListing>();
  for (const listings of segments.values()) for (const l of listings) indexed.set(l.packId, l);
  const listed = new Map(packs.map((p) => [p.name.slice(p.name.lastIndexOf("/") + 1), p]));

  // Marks are read after the listings, so a snapshot committed meanwhile is seen.
  const snapshots = await listSnapshots(backend);
  const marked = new Set<string>();
  const liveSegments = new Set<string>();
  for (const s of snapshots) {
    for (const seg of s.refSegments) liveSegments.add(`refs/${seg}`);
    for (const id of await readSnapshotRefs(backend, s)) marked.add(`${s.namespace}\u0000${id}`);
  }

  const result: GcResult = {
    snapshots: snapshots.length,
    referencedBlobs: marked.size,
    packs: packs.length,
    condemned: [],
    deleted: [],
    pardoned: [],
    pending: [],
    bytesFreed: 0,
    refSegmentsDeleted: 0,
    indexSegmentsRewritten: 0,
    temporariesRemoved: 0,
    damagedLocks: writers.filter((l) => l.damaged).map((l) => l.name),
    repacked: [],
    repackWritten: [],
    bytesRepacked: 0,
    repackSkipped: [],
  };
  // Phase 1 reads and decides; nothing is written or deleted until every listing is read: a damaged trailer
  // (of a pack the index does not list), snapshot, reference segment or index segment stops gc with the
  // repository as it was.
  const listings: PackListing[] = [];
  for (const [packId, obj] of listed) {
    listings.push(indexed.get(packId) ?? await readPackListing(backend, packId, obj.size));
  }
  // The copy of each marked blob that gc keeps: among the listed packs an index segment lists (readers find
  // only those), one not condemned, else the oldest, else the lowest id — the oldest live copy wins, so no
  // later upload under a known id displaces it. When no such pack holds a marked blob, every listed copy is kept.
  const keeps = (a: string, b: string): boolean => {
    const ca = condemned.has(a), cb = condemned.has(b);
    if (ca !== cb) return !ca;
    const ma = listed.get(a)!.modified.getTime(), mb = listed.get(b)!.modified.getTime();
    return ma !== mb ? ma < mb : a < b;
  };
  const kept = new Map<string, string>();
  for (const l of indexed.values()) {
    if (!listed.has(l.packId)) continue;
    for (const e of l.entries) {
      const key = `${l.namespace}\u0000${e.id}`;
      if (!marked.has(key)) continue;
      const cur = kept.get(key);
      if (cur === undefined || keeps(l.packId, cur)) kept.set(key, l.packId);
    }
  }
  const t = now();
  const candidates: RepackSource[] = [];
  for (const listing of listings) {
    const packId = listing.packId;
    const obj = listed.get(packId)!;
    // A pack is live when it holds the kept copy of a marked blob. A copy not kept (a killed backup's pack that
    // was never indexed, then uploaded again; a rewritten pack's original) is garbage.
    let blobBytes = 0;
    const live: PackListing["entries"] = [];
    for (const e of listing.entries) {
      blobBytes += e.length;
      const key = `${listing.namespace}\u0000${e.id}`;
      if (!marked.has(key)) continue;
      const k = kept.get(key);
      if (k === undefined || k === packId) live.push(e);
    }
    const at = condemned.get(packId);
    if (live.length > 0) {
      if (at) result.pardoned.push(packId);
      else if (indexed.has(packId) && obj.modified.getTime() < cutoff) {
        const liveBytes = live.reduce((n, e) => n + e.length, 0);
        if (liveBytes < repack.fraction * blobBytes) candidates.push({ listing, live, liveBytes, blobBytes });
      }
      continue;
    }
    if (at) {
      const olderWriter = writerStarts.some((s) => s < at.getTime());
      if (t.getTime() - at.getTime() >= graceMs && !olderWriter) {
        result.deleted.push(packId);
        result.bytesFreed += obj.size;
      } else {
        result.pending.push(packId);
      }
      continue;
    }
    if (obj.modified.getTime() >= cutoff) continue;
    result.condemned.push(packId);
  }
  // The sparsest packs first: most bytes freed per byte copied.
  candidates.sort((a, b) =>
    a.liveBytes / a.blobBytes - b.liveBytes / b.blobBytes || (a.listing.packId < b.listing.packId ? -1 : 1)
  );
  const selected: RepackSource[] = [];
  let budget = repack.maxBytes;
  for (const c of candidates) {
    if (c.liveBytes > budget) continue;
    budget -= c.liveBytes;
    selected.push(c);
  }
  // The size of the packs it writes (and a readable config) is settled before anything is written.
  const packTargetBytes = selected.length > 0 ? (await readConfig(backend)).config.packTargetBytes : 0;

  const gone = new Set(result.deleted);
  for (const packId of indexed.keys()) {
    // Named by the index but not listed: gone only if it is still absent now (a writer puts a pack before
    // the index segment naming it, so a pack written after the listing exists here).
    if (!listed.has(packId) && !(await backend.exists(packObjectName(packId)))) gone.add(packId);
  }
  const rewrite = new Map<string, PackListing[]>();
  if (gone.size > 0) {
    for await (const obj of backend.list("index/")) {
      const listings = segments.get(obj.name) ?? decodeIndexSegment(obj.name, await backend.get(obj.name));
      if (listings.some((l) => gone.has(l.packId))) rewrite.set(obj.name, listings);
    }
  }

  // Phase 2 writes: pardons, the rewrite (new packs, their index, then the old packs' condemnation), then
  // condemnations.
  for (const packId of result.pardoned) await backend.delete(`${CONDEMNED_PREFIX}${packId}`);
  if (selected.length > 0) {
    const r = await rewritePacks(backend, selected, packTargetBytes, gone);
    result.repackWritten = r.written;
    result.repackSkipped = r.skipped;
    // A pack it wrote may be one this run was to condemn, or condemned earlier (a killed rewrite's identical
    // output, which the older original outranked): it is the new home of the blobs now, so it stays.
    const adopted = new Set(r.written);
    result.condemned = result.condemned.filter((p) => !adopted.has(p));
    result.pending = result.pending.filter((p) => !adopted.has(p));
    for (const p of r.written) {
      if (condemned.has(p)) await backend.delete(`${CONDEMNED_PREFIX}${p}`);
    }
    for (const s of r.copied) {
      await backend.put(`${CONDEMNED_PREFIX}${s.listing.packId}`, encodeCondemnedMarker(s.listing.packId, t));
      result.repacked.push(s.listing.packId);
      result.bytesRepacked += s.liveBytes;
    }
  }
  for (const packId of result.condemned) {
    await backend.put(`${CONDEMNED_PREFIX}${packId}`, encodeCondemnedMarker(packId, t));
  }
  // Phase 3: the index forgets the packs to delete before they go (and any pack a killed gc deleted already),
  // so that no crash leaves an index entry pointing at a missing pack; then the packs go, then their markers.
  for (const [name, listings] of rewrite) {
    const keep = listings.filter((l) => !gone.has(l.packId));
    if (keep.length > 0) await writeIndexSegment(backend, keep);
    await backend.delete(name);
    result.indexSegmentsRewritten++;
  }
  for (const packId of result.deleted) {
    await backend.delete(packObjectName(packId));
    await backend.delete(`${CONDEMNED_PREFIX}${packId}`);
  }
  // Markers whose pack is already gone.
  for (const packId of condemned.keys()) {
    if (!listed.has(packId)) await backend.delete(`${CONDEMNED_PREFIX}${packId}`);
  }

  for (const seg of refSegments) {
    if (liveSegments.has(seg.name) || seg.modified.getTime() >= cutoff) continue;
    await backend.delete(seg.name);
    result.refSegmentsDeleted++;
    result.bytesFreed += seg.size;
  }

  // Stale locks of dead writers are removed so they do not accumulate, and so are the half-written objects of
  // killed writes, by the same age (no write takes that long between its last byte and its rename).
  for await (const obj of backend.list("locks/")) {
    if (t.getTime() - obj.modified.getTime() > 4 * staleMs) await backend.delete(obj.name);
  }
  result.temporariesRemoved = (await backend.removeTemporaries?.(new Date(t.getTime() - 4 * staleMs))) ?? 0;
  return result;
}

/** A pack chosen for rewriting: its listing and the live blobs to copy out of it. */
interface RepackSource {
  listing: PackListing;
  live: PackListing["entries"];
  liveBytes: number;
  blobBytes: number;
}

/**
 * Copies the live blobs of `sources` — their ciphertext, as stored, after checking each source pack against
 * its name — into new packs of their namespace of about `targetBytes`, and writes an index segment after
 * every few new packs and after the last. Returns the sources whose every live blob now sits in a written,
 * indexed pack (only those may be condemned), the packs written, and the sources left alone. A new pack that
 * would be a pack in `gone` (deleted by this run) is not written, and its sources stay as they are.
 */
async function rewritePacks(
  backend: Backend,
  sources: RepackSource[],
  targetBytes: number,
  gone: Set<string>,
): Promise<{ copied: RepackSource[]; written: string[]; skipped: { pack: string; reason: string }[] }> {
  const skipped: { pack: string; reason: string }[] = [];
  const written: string[] = [];
  /** Per source read: how many new packs holding its blobs are not yet written, and whether one never will be. */
  const outputsOf = new Map<RepackSource, { pending: number; failed: boolean }>();
  let unindexed: PackListing[] = [];
  const indexBatch = async () => {
    if (unindexed.length > 0) await writeIndexSegment(backend, unindexed);
    unindexed = [];
  };

  const namespaces = [...new Set(sources.map((s) => s.listing.namespace))];
  for (const namespace of namespaces) {
    let builder = new PackBuilder(namespace);
    let inBuilder = new Set<RepackSource>();
    const emit = async () => {
      if (builder.count === 0) return;
      const { bytes, listing } = builder.finish();
      const contributors = inBuilder;
      builder = new PackBuilder(namespace);
      inBuilder = new Set();
      const ok = !gone.has(listing.packId);
      if (ok) {
        await backend.put(packObjectName(listing.packId), bytes);
        written.push(listing.packId);
        unindexed.push(listing);
      } else {
        for (const s of contributors) {
          skipped.push({
            pack: s.listing.packId,
            reason:
              `its rewrite would re-create pack ${listing.packId}, which this gc deletes; a later gc rewrites it`,
          });
        }
      }
      for (const s of contributors) {
        const o = outputsOf.get(s)!;
        o.pending--;
        o.failed ||= !ok;
      }
      if (unindexed.length >= REPACK_PACKS_PER_SEGMENT) await indexBatch();
    };
    for (const source of sources.filter((s) => s.listing.namespace === namespace)) {
      const packId = source.listing.packId;
      let bytes: Uint8Array;
      try {
        bytes = await backend.get(packObjectName(packId));
        checkPackBytes(packId, bytes);
      } catch (e) {
        if (!(e instanceof IntegrityError) && !(e instanceof MissingObjectError)) throw e;
        skipped.push({ pack: packId, reason: e.message });
        continue;
      }
      const o = { pending: 0, failed: false };
      outputsOf.set(source, o);
      for (const e of source.live) {
        if (!inBuilder.has(source)) {
          inBuilder.add(source);
          o.pending++;
        }
        builder.add(e.type, e.id, bytes.slice(e.offset, e.offset + e.length));
        if (builder.size >= targetBytes) await emit();
      }
    }
    await emit();
  }
  await indexBatch();
  // A source whose live blobs, in the same order, make up a whole new pack is that pack: it stays.
  const copied = [...outputsOf]
    .filter(([s, o]) => o.pending === 0 && !o.failed && !written.includes(s.listing.packId))
    .map(([s]) => s);
  const once = new Map(skipped.map((s) => [s.pack, s]));
  return { copied, written, skipped: [...once.values()] };
}
