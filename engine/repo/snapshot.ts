/**
 * Snapshots and their reference lists.
 *
 * A snapshot is the object "snapshots/<SHA-256 of the object>", written last by a backup:
 * "CSNP" | version u8 = 1 | 3 reserved zero bytes | clear length u32 | clear part (JSON) | sealed body.
 * The clear part (namespace, time, kind, parent, reference segments) lets a key-less BES run gc; the
 * body is a blob (blob.ts) of the namespace whose id is the SHA-256 of everything before it, holding
 * the snapshot JSON (root tree, host, paths, times, stats, errors, chain salt).
 *
 * A reference list — every blob id the snapshot needs — is stored as clear "refs/<SHA-256>" segments:
 * "CREF" | version u8 = 1 | 3 reserved | count u32 | ids (32 bytes each, ascending) | SHA-256 of the
 * preceding bytes. Segments end after an id whose first byte is 0 and second byte < 0x40 (about one
 * id in 1024) or at 16384 ids, so consecutive snapshots share most segments.
 */
import type { Backend } from "./backend.ts";
import { ByteReader, concat, fromHex, toHex } from "./bytes.ts";
import { type BlobId, ID_BYTES, sha256Hex } from "./chunk_id.ts";
import { checkedBody, readSectionHeader, sectionWriter, withChecksum } from "./framing.ts";
import { IntegrityError, MissingObjectError, RepoError } from "./errors.ts";
import type { Namespace } from "./repository.ts";

/** Snapshot object format version. */
export const SNAPSHOT_VERSION = 1;
/** Most ids in one reference segment. */
export const REFS_MAX_IDS = 16384;
const SNAP_MAGIC = new TextEncoder().encode("CSNP");
const REFS_MAGIC = new TextEncoder().encode("CREF");

/** Run kinds, as the control plane names them. */
export type SnapshotKind = "full" | "incremental" | "synthetic_full" | "image";

/** Statistics of the backup that wrote a snapshot. */
export interface SnapshotStats {
  files: number;
  dirs: number;
  bytesRead: number;
  bytesNew: number;
  bytesStored: number;
  durationMs: number;
}

/** The sealed body of a snapshot. */
export interface SnapshotBody {
  version: number;
  namespace: string;
  host: string;
  kind: SnapshotKind;
  paths: string[];
  parent: string | null;
  /** Root tree: the folder "/", holding each backed-up path at its full absolute path. */
  tree: BlobId;
  startTime: string;
  endTime: string;
  stats: SnapshotStats;
  errors: { path: string; error: string }[];
  /** Hex salt of the chain's ids when the repository does not deduplicate; null otherwise. */
  chainSalt: string | null;
  /** Image snapshots (kind "image") only: what was read, in fixed chunks (image.ts). */
  image?: ImageInfo;
}

/** The image an image snapshot holds: the file entry at `path` in its tree, in chunks of `chunkSize`. */
export interface ImageInfo {
  /** The absolute path of the device or image file, as given to the backup. */
  path: string;
  /** Bytes read: the image's size. */
  size: number;
  /** Every chunk but the last is this long. */
  chunkSize: number;
  /** Whether it was a block device (else a regular file). */
  blockDevice: boolean;
}

/** The clear part of a snapshot, readable without a key. */
export interface SnapshotHeader {
  namespace: string;
  time: string;
  kind: SnapshotKind;
  parent: string | null;
  refSegments: string[];
  refCount: number;
}

/** A listed snapshot: its id and clear header. */
export interface SnapshotInfo extends SnapshotHeader {
  id: string;
}

/** A decrypted snapshot. */
export interface Snapshot extends SnapshotBody {
  id: string;
}

/** Splits sorted ids into reference segments (content-defined, so unchanged runs give equal segments). */
export function splitRefs(sortedIds: BlobId[]): BlobId[][] {
  const out: BlobId[][] = [];
  let cur: BlobId[] = [];
  for (const id of sortedIds) {
    cur.push(id);
    const b0 = parseInt(id.slice(0, 2), 16);
    const b1 = parseInt(id.slice(2, 4), 16);
    if ((b0 === 0 && b1 < 0x40) || cur.length >= REFS_MAX_IDS) {
      out.push(cur);
      cur = [];
    }
  }
  if (cur.length > 0) out.push(cur);
  return out;
}

/** The bytes of one reference segment. */
export function encodeRefSegment(ids: BlobId[]): Uint8Array<ArrayBuffer> {
  const w = sectionWriter(REFS_MAGIC, SNAPSHOT_VERSION).u32(ids.length);
  for (const id of ids) w.bytes(fromHex(id));
  return withChecksum(w.finish());
}

/** The ids of reference segment `name`. Throws `IntegrityError` naming it if damaged. */
export function decodeRefSegment(name: string, bytes: Uint8Array): BlobId[] {
  const fail = (detail: string): never => {
    throw new IntegrityError("refs", name, detail);
  };
  if (sha256Hex(bytes) !== name.slice(name.lastIndexOf("/") + 1)) fail("content does not hash to its name");
  const body = checkedBody(bytes) ?? fail("checksum mismatch");
  try {
    const r = new ByteReader(body);
    readSectionHeader(r, REFS_MAGIC, SNAPSHOT_VERSION, "refs", fail);
    const n = r.u32();
    if (r.remaining !== n * ID_BYTES) fail("length does not match its count");
    return Array.from({ length: n }, () => toHex(r.bytes(ID_BYTES)));
  } catch (e) {
    if (e instanceof IntegrityError) throw e;
    return fail(`unreadable: ${(e as Error).message}`);
  }
}

/**
 * Writes the reference segments of `refs` and then the snapshot object (last, so a backup that dies
 * midway leaves no snapshot). Returns the snapshot id. The blobs named must already be flushed.
 */
export async function writeSnapshot(
  ns: Namespace,
  body: SnapshotBody,
  refs: Iterable<BlobId>,
): Promise<string> {
  const backend = ns.repo.backend;
  const sorted = [...new Set(refs)].sort();
  const segments: string[] = [];
  for (const ids of splitRefs(sorted)) {
    const bytes = encodeRefSegment(ids);
    const name = `refs/${sha256Hex(bytes)}`;
    // Always written (never skipped when it exists): the fresh mtime keeps gc, which deletes unreferenced
    // segments older than the oldest live writer, from removing one this snapshot is about to name.
    await backend.put(name, bytes);
    segments.push(name.slice(5));
  }
  const header: SnapshotHeader = {
    namespace: ns.name,
    time: body.endTime,
    kind: body.kind,
    parent: body.parent,
    refSegments: segments,
    refCount: sorted.length,
  };
  const clear = new TextEncoder().encode(JSON.stringify(header));
  const head = sectionWriter(SNAP_MAGIC, SNAPSHOT_VERSION).u32(clear.length).bytes(clear).finish();
  const sealed = await ns.codec.encode(sha256Hex(head), new TextEncoder().encode(JSON.stringify(body)));
  const bytes = concat(head, sealed);
  const id = sha256Hex(bytes);
  await backend.put(`snapshots/${id}`, bytes);
  return id;
}

/**
 * The clear header of snapshot object `id` from its bytes, the clear part and the sealed body (no key
 * needed; the BES checks commits with it). Throws `IntegrityError` naming the snapshot if damaged.
 */
export function parseSnapshotObject(
  id: string,
  bytes: Uint8Array,
): { header: SnapshotHeader; head: Uint8Array; sealed: Uint8Array } {
  const fail = (detail: string): never => {
    throw new IntegrityError("snapshot", id, detail);
  };
  if (sha256Hex(bytes) !== id) fail("content does not hash to its name");
  try {
    const r = new ByteReader(bytes);
    readSectionHeader(r, SNAP_MAGIC, SNAPSHOT_VERSION, "snapshot", fail);
    const header = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(r.bytes(r.u32())),
    ) as SnapshotHeader;
    return { header, head: bytes.subarray(0, r.pos), sealed: bytes.subarray(r.pos) };
  } catch (e) {
    if (e instanceof IntegrityError) throw e;
    return fail(`unreadable: ${(e as Error).message}`);
  }
}

async function getSnapshotBytes(backend: Backend, id: string): Promise<Uint8Array> {
  try {
    return await backend.get(`snapshots/${id}`);
  } catch (e) {
    if (e instanceof MissingObjectError) throw new MissingObjectError("snapshot", id);
    throw e;
  }
}

/** Every snapshot's clear header (no key needed), oldest first. Damaged ones go to `onDamaged` or throw. */
export async function listSnapshots(
  backend: Backend,
  options: { onDamaged?: (e: IntegrityError) => void } = {},
): Promise<SnapshotInfo[]> {
  const out: SnapshotInfo[] = [];
  for await (const obj of backend.list("snapshots/")) {
    const id = obj.name.slice("snapshots/".length);
    try {
      out.push({ id, ...parseSnapshotObject(id, await backend.get(obj.name)).header });
    } catch (e) {
      if (e instanceof IntegrityError && options.onDamaged) options.onDamaged(e);
      else throw e;
    }
  }
  return out.sort((a, b) => a.time.localeCompare(b.time) || a.id.localeCompare(b.id));
}

/**
 * The clear header of snapshot `id` alone (no key needed), so one damaged snapshot never stands in the
 * way of another. Throws `IntegrityError` naming it if damaged, `MissingObjectError` if absent.
 */
export async function readSnapshotInfo(backend: Backend, id: string): Promise<SnapshotInfo> {
  return { id, ...parseSnapshotObject(id, await getSnapshotBytes(backend, id)).header };
}

/** The id of the one snapshot whose id starts with `prefix`. Throws if none or several match. */
export async function resolveSnapshotId(backend: Backend, prefix: string): Promise<string> {
  const ids: string[] = [];
  for await (const obj of backend.list("snapshots/")) {
    const id = obj.name.slice("snapshots/".length);
    if (id.startsWith(prefix)) ids.push(id);
  }
  if (ids.length === 0) throw new MissingObjectError("snapshot", prefix, "no snapshot has this id");
  if (ids.length > 1) {
    throw new RepoError(`Snapshot id prefix "${prefix}" is ambiguous: ${ids.length} snapshots match`);
  }
  return ids[0];
}

/** Snapshot `id` of namespace `ns`, decrypted and verified. Throws `IntegrityError` naming it if damaged. */
export async function loadSnapshot(ns: Namespace, id: string): Promise<Snapshot> {
  const { header, head, sealed } = parseSnapshotObject(id, await getSnapshotBytes(ns.repo.backend, id));
  if (header.namespace !== ns.name) {
    throw new RepoError(`Snapshot ${id} belongs to namespace "${header.namespace}", not "${ns.name}"`);
  }
  let plain: Uint8Array;
  try {
    plain = await ns.codec.decode(sha256Hex(head), sealed);
  } catch (e) {
    if (e instanceof IntegrityError) throw new IntegrityError("snapshot", id, e.detail, { cause: e });
    throw e;
  }
  const body = JSON.parse(new TextDecoder().decode(plain)) as SnapshotBody;
  if (body.version !== SNAPSHOT_VERSION || body.namespace !== ns.name || typeof body.tree !== "string") {
    throw new IntegrityError("snapshot", id, "body is malformed");
  }
  if (
    body.kind === "image" &&
    (typeof body.image?.path !== "string" || !Number.isSafeInteger(body.image.size) ||
      !Number.isSafeInteger(body.image.chunkSize) || body.image.chunkSize <= 0)
  ) {
    throw new IntegrityError("snapshot", id, "image snapshot without a valid image record");
  }
  return { id, ...body };
}

/** Every blob id snapshot `info` references, read from its segments (no key needed). */
export async function readSnapshotRefs(backend: Backend, info: SnapshotInfo): Promise<BlobId[]> {
  const out: BlobId[] = [];
  for (const seg of info.refSegments) {
    const name = `refs/${seg}`;
    let bytes: Uint8Array;
    try {
      bytes = await backend.get(name);
    } catch (e) {
      if (e instanceof MissingObjectError) {
        throw new MissingObjectError("refs", seg, `needed by snapshot ${info.id}`);
      }
      throw e;
    }
    out.push(...decodeRefSegment(name, bytes));
  }
  if (out.length !== info.refCount) throw new IntegrityError("snapshot", info.id, "reference count mismatch");
  return out;
}
