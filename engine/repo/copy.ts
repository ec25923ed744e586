/**
 * Copy snapshots into another repository (ENGINE.md §4 "replicate"; restic's `copy`). The destination
 * shares the namespace's keys: blobs are copied as stored (ciphertext, never re-encrypted), each one first
 * authenticated and re-hashed with the source's keys so damage is never propagated, into new packs of the
 * destination with their index segments; then the snapshot's reference segments, and the snapshot object
 * last, byte for byte (its id is the SHA-256 of its bytes, so it keeps its id). The namespace's keys are
 * wrapped by the destination's key. Whoever holds the destination's key can therefore read the copied
 * namespace's data — and, the data key being shared, its data in the source too.
 *
 * Rules: the destination is created when it holds no repository (with the source's compression,
 * encryption, deduplication, chunker and pack settings and the copied namespace's keys); an existing one
 * must use the same encryption and deduplication setting. A destination that holds the namespace with
 * other keys, or under a key the destination key does not open, is refused (nothing is re-encrypted).
 * Blobs the destination already holds are not copied again; a snapshot it already holds is skipped, so a
 * second copy adds nothing. Every check is made before the first write.
 */
import type { Backend } from "./backend.ts";
import { fromHex } from "./bytes.ts";
import type { BlobId, ChunkIdHasher } from "./chunk_id.ts";
import { sha256Hex } from "./chunk_id.ts";
import { CONFIG_OBJECT } from "./config.ts";
import { IntegrityError, MissingObjectError, RepoConfigError, RepoError, WrongKeyError } from "./errors.ts";
import { writeIndexSegment } from "./index.ts";
import { type KeyOpener, sameNamespaceKeys } from "./keys.ts";
import { acquireLock, type LockOptions } from "./lock.ts";
import { type BlobType, PackBuilder, type PackListing, packObjectName } from "./pack.ts";
import { type Namespace, PACKS_PER_INDEX_CHECKPOINT, Repository } from "./repository.ts";
import {
  decodeRefSegment,
  loadSnapshot,
  readSnapshotInfo,
  readSnapshotRefs,
  type SnapshotInfo,
} from "./snapshot.ts";

/** A destination given by location and key rather than as an open repository. */
export interface CopyTarget {
  backend: Backend;
  /** The destination's key: a KEK (bare or as an opener) or the recovery private key. */
  key: Uint8Array | KeyOpener;
}

/** Options of `copySnapshots`. */
export interface CopyOptions {
  now?: () => Date;
  /** The destination writer lock's timing (defaults: lock.ts). */
  lock?: Pick<LockOptions, "refreshMs" | "staleMs" | "now">;
}

/** What a copy did. */
export interface CopyResult {
  /** The destination, open with its key. */
  destination: Repository;
  /** Whether the destination repository was created by this copy. */
  created: boolean;
  /** Each snapshot asked for; `copied` false when the destination already held it. */
  snapshots: { id: string; namespace: string; copied: boolean }[];
  /** Blobs copied, and their stored bytes. */
  blobsCopied: number;
  bytesCopied: number;
  /** Blobs the snapshots need that the destination already held. */
  blobsPresent: number;
  packsWritten: number;
  /** Key objects written in the destination (the namespaces' keys wrapped by its key). */
  keysWrapped: string[];
}

/** Retries when the destination's gc condemns a pack this copy relies on (as a backup's commit check). */
const MAX_COPY_ATTEMPTS = 3;
/** Blobs read and authenticated at once. */
const READ_AHEAD = 8;

interface Planned {
  info: SnapshotInfo;
  bytes: Uint8Array;
  hasher: ChunkIdHasher;
  refs: BlobId[];
}

/**
 * Copies snapshots `snapshotIds` (full ids) of `src` into `to` (see the module comment). Throws, having
 * written nothing, if a snapshot is missing, damaged or of a namespace the source key does not open, if a
 * blob it needs is missing from the source, or if the destination is incompatible; throws naming the
 * object if a blob turns out damaged while copying (then no snapshot of its namespace is written).
 */
export async function copySnapshots(
  src: Repository,
  to: Repository | CopyTarget,
  snapshotIds: string[],
  options: CopyOptions = {},
): Promise<CopyResult> {
  const now = options.now ?? (() => new Date());
  // 1. Everything about the source is checked before anything is written.
  const plan: Planned[] = [];
  for (const id of [...new Set(snapshotIds)]) plan.push(await planSnapshot(src, id));
  if (plan.length === 0) throw new RepoError("Nothing to copy: no snapshots given");

  // 2. The destination: opened, or created with the source's settings and the first namespace's keys.
  let dst: Repository;
  let created = false;
  const keysWrapped: string[] = [];
  if (to instanceof Repository) {
    dst = to;
  } else if (await to.backend.exists(CONFIG_OBJECT)) {
    dst = await Repository.open(to.backend, to.key);
  } else {
    const c = src.config;
    const first = src.namespace(plan[0].info.namespace);
    dst = await Repository.init(to.backend, to.key, {
      namespace: first.name,
      keys: first.keys,
      compression: c.compression,
      encryption: c.encryption,
      dedup: c.dedup,
      chunker: c.chunker,
      imageChunkSize: c.imageChunkSize,
      packTargetBytes: c.packTargetBytes,
      now: now(),
    });
    created = true;
    for await (const obj of dst.backend.list("keys/")) keysWrapped.push(obj.name);
  }
  if (dst.config.id === src.config.id) {
    throw new RepoConfigError(`Source and destination are the same repository (${src.config.id})`);
  }
  if (dst.config.encryption !== src.config.encryption || dst.config.dedup !== src.config.dedup) {
    throw new RepoConfigError(
      `Cannot copy into ${dst.backend.location}: it uses encryption ${dst.config.encryption} with dedup ` +
        `${dst.config.dedup ? "on" : "off"}, the source ${src.config.encryption} with dedup ` +
        `${src.config.dedup ? "on" : "off"}; a copy shares the stored blobs, so both must be the same ` +
        `(copy into a new location instead)`,
    );
  }
  const namespaces = [...new Set(plan.map((p) => p.info.namespace))];
  for (const name of namespaces) await checkDestinationNamespace(dst, src.namespace(name));

  // 3. The keys, then per namespace the blobs, reference segments and snapshots.
  for (const name of namespaces) {
    const { wrapped } = await dst.adoptNamespace(src.namespace(name).keys, now());
    if (wrapped && dst.keyId) keysWrapped.push(`keys/${name}/${dst.keyId}`);
  }
  const result: CopyResult = {
    destination: dst,
    created,
    snapshots: [],
    blobsCopied: 0,
    bytesCopied: 0,
    blobsPresent: 0,
    packsWritten: 0,
    keysWrapped,
  };
  for (const name of namespaces) {
    const group = plan.filter((p) => p.info.namespace === name);
    const todo: Planned[] = [];
    for (const p of group) {
      const present = await dst.backend.exists(`snapshots/${p.info.id}`);
      result.snapshots.push({ id: p.info.id, namespace: name, copied: !present });
      if (!present) todo.push(p);
    }
    if (todo.length === 0) continue;
    const lock = await acquireLock(dst.backend, { kind: "backup", namespace: name, ...options.lock });
    try {
      await copyGroup(src.namespace(name), dst, todo, result);
      // Had the lock lapsed, gc may have condemned and deleted packs since the commit check.
      await lock.check();
      for (const p of todo) {
        for (const seg of p.info.refSegments) {
          const segName = `refs/${seg}`;
          const bytes = await src.backend.get(segName);
          decodeRefSegment(segName, bytes); // checked again: what is written is what the check read
          // Always written, never skipped: a fresh time keeps gc from removing a segment about to be named.
          await dst.backend.put(segName, bytes);
        }
        await dst.backend.put(`snapshots/${p.info.id}`, p.bytes);
      }
    } catch (e) {
      await lock.release().catch(() => {});
      throw e;
    }
    await lock.release();
  }
  return result;
}

async function planSnapshot(src: Repository, id: string): Promise<Planned> {
  const info = await readSnapshotInfo(src.backend, id);
  if (!src.namespaces().includes(info.namespace)) {
    throw new WrongKeyError(
      `Snapshot ${id} belongs to namespace "${info.namespace}", which the source key does not open`,
    );
  }
  const ns = src.namespace(info.namespace);
  const snap = await loadSnapshot(ns, id); // its body authenticates under the namespace's keys
  const bytes = await src.backend.get(`snapshots/${id}`);
  if (sha256Hex(bytes) !== id) throw new IntegrityError("snapshot", id, "content does not hash to its name");
  const refs = await readSnapshotRefs(src.backend, info);
  for (const ref of refs) {
    const entry = src.index.lookup(ns.name, ref);
    if (!entry) {
      throw new MissingObjectError("blob", ref, `needed by snapshot ${id}: not in the source index`);
    }
    if (src.deadPacks.has(entry.packId)) {
      throw new MissingObjectError(
        "blob",
        ref,
        `needed by snapshot ${id}: its pack ${entry.packId} is condemned`,
      );
    }
  }
  return { info, bytes, hasher: ns.hasher(snap.chainSalt ? fromHex(snap.chainSalt) : null), refs };
}

/** Refuses a destination holding the namespace with other keys or under a key it does not open. */
async function checkDestinationNamespace(dst: Repository, ns: Namespace): Promise<void> {
  if (dst.namespaces().includes(ns.name)) {
    if (!sameNamespaceKeys(dst.namespace(ns.name).keys, ns.keys)) {
      throw new RepoConfigError(
        `${dst.backend.location} already holds namespace "${ns.name}" with other keys: its blobs could not ` +
          `be read with the copied ones; copy into another repository (nothing was written)`,
      );
    }
    return;
  }
  for await (const obj of dst.backend.list(`keys/${ns.name}/`)) {
    throw new RepoConfigError(
      `${dst.backend.location} holds namespace "${ns.name}" under a key the destination key does not ` +
        `open (${obj.name}); open it with that key (nothing was written)`,
    );
  }
  if (dst.opener.kind === "namespace") {
    throw new WrongKeyError(
      `The destination was opened with the keys of namespace "${dst.opener.keys.namespace}" alone: it cannot ` +
        `take namespace "${ns.name}"`,
    );
  }
}

/** Copies the blobs `todo` needs that `dst` lacks, with the commit check of a backup. */
async function copyGroup(
  srcNs: Namespace,
  dst: Repository,
  todo: Planned[],
  result: CopyResult,
): Promise<void> {
  const name = srcNs.name;
  const needed = new Map<BlobId, { hasher: ChunkIdHasher; snapshot: string }>();
  for (const p of todo) {
    for (const ref of p.refs) {
      if (!needed.has(ref)) needed.set(ref, { hasher: p.hasher, snapshot: p.info.id });
    }
  }
  const live = (id: BlobId) => {
    const e = dst.index.lookup(name, id);
    return e !== null && !dst.deadPacks.has(e.packId);
  };
  for (let attempt = 0;; attempt++) {
    await dst.refreshDeadPacks();
    const missing = [...needed.keys()].filter((id) => !live(id));
    if (attempt === 0) result.blobsPresent = needed.size - missing.length;
    if (missing.length === 0) return;
    if (attempt >= MAX_COPY_ATTEMPTS) {
      throw new RepoError(
        `Cannot commit the copy: ${missing.length} blobs it needs were removed by the destination's gc again ` +
          `and again; nothing was committed`,
      );
    }
    const writer = new PackWriter(dst, name, result);
    for (let i = 0; i < missing.length; i += READ_AHEAD) {
      const batch = missing.slice(i, i + READ_AHEAD);
      const read = await Promise.all(batch.map((id) => readVerified(srcNs, id, needed.get(id)!)));
      for (const r of read) await writer.add(r.type, r.id, r.stored);
    }
    await writer.flush();
  }
}

async function readVerified(
  srcNs: Namespace,
  id: BlobId,
  need: { hasher: ChunkIdHasher; snapshot: string },
): Promise<{ id: BlobId; type: BlobType; stored: Uint8Array }> {
  const entry = srcNs.repo.index.lookup(srcNs.name, id);
  if (!entry) throw new MissingObjectError("blob", id, `needed by snapshot ${need.snapshot}: not indexed`);
  let stored: Uint8Array;
  try {
    stored = await srcNs.repo.backend.get(packObjectName(entry.packId), {
      offset: entry.offset,
      length: entry.length,
    });
  } catch (e) {
    if (e instanceof MissingObjectError) {
      throw new MissingObjectError(
        "blob",
        id,
        `its pack ${entry.packId} is missing (snapshot ${need.snapshot})`,
      );
    }
    throw e;
  }
  if (stored.length !== entry.length) {
    throw new IntegrityError("blob", id, `pack ${entry.packId} is shorter than the index says`);
  }
  try {
    await srcNs.codec.decode(id, stored, need.hasher);
  } catch (e) {
    if (e instanceof IntegrityError) {
      throw new IntegrityError(
        "blob",
        id,
        `${e.detail} (in source pack ${entry.packId}, snapshot ${need.snapshot}); nothing of this namespace's ` +
          `snapshots was committed`,
        { cause: e },
      );
    }
    throw e;
  }
  return { id, type: entry.type, stored };
}

/** Packs copied blobs for one namespace of the destination, indexing them as it goes. */
class PackWriter {
  #builder: PackBuilder;
  #unindexed: PackListing[] = [];

  constructor(readonly dst: Repository, readonly namespace: string, readonly result: CopyResult) {
    this.#builder = new PackBuilder(namespace);
  }

  async add(type: BlobType, id: BlobId, stored: Uint8Array): Promise<void> {
    this.#builder.add(type, id, stored);
    this.result.blobsCopied++;
    this.result.bytesCopied += stored.length;
    if (this.#builder.size >= this.dst.config.packTargetBytes) await this.#upload();
  }

  async #upload(): Promise<void> {
    if (this.#builder.count === 0) return;
    const { bytes, listing } = this.#builder.finish();
    this.#builder = new PackBuilder(this.namespace);
    await this.dst.backend.put(packObjectName(listing.packId), bytes);
    this.dst.index.addPack(listing, (p) => this.dst.deadPacks.has(p));
    this.result.packsWritten++;
    this.#unindexed.push(listing);
    if (this.#unindexed.length >= PACKS_PER_INDEX_CHECKPOINT) await this.#writeIndex();
  }

  async #writeIndex(): Promise<void> {
    if (this.#unindexed.length === 0) return;
    const batch = this.#unindexed;
    this.#unindexed = [];
    await writeIndexSegment(this.dst.backend, batch);
  }

  /** Uploads the last pack and indexes every pack not yet indexed. */
  async flush(): Promise<void> {
    await this.#upload();
    await this.#writeIndex();
  }
}
