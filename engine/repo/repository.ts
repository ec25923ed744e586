/**
 * A repository opened with a key: its config, its index, and a handle per namespace it can open.
 * A namespace handle is the repository API of restic's shape — has, save blob, load blob, flush —
 * with packing and index checkpoints inside it. docs/repository-format.md §Layout lists the objects.
 */
import type { Backend } from "./backend.ts";
import { type BlobCodec, createBlobCodec } from "./blob.ts";
import { CodecPool } from "./codec_pool.ts";
import { PackReader } from "./pack_reader.ts";
import { type BlobId, type ChunkIdHasher, createChunkIdHasher, sha256Hex } from "./chunk_id.ts";
import {
  CONFIG_OBJECT,
  encodeConfig,
  newConfig,
  readConfig,
  type RepoConfig,
  type RepoOptions,
} from "./config.ts";
import { IntegrityError, MissingObjectError, RepoConfigError, RepoError, WrongKeyError } from "./errors.ts";
import { BlobIndex, loadIndex, writeIndexSegment } from "./index.ts";
import {
  generateNamespaceKeys,
  kekId,
  keyObjectName,
  type NamespaceKeys,
  parseKeyObject,
  unwrapNamespaceKeys,
  validateNamespace,
  wrapNamespaceKeys,
} from "./keys.ts";
import {
  assemblePack,
  type BlobType,
  PackBuilder,
  type PackListing,
  packObjectName,
  readPackListing,
} from "./pack.ts";
import { listCondemned } from "./gc.ts";

/** Index segments are checkpointed after this many packs, so an interrupted backup can resume. */
export const PACKS_PER_INDEX_CHECKPOINT = 4;

/** The outcome of saving one blob. */
export interface SaveResult {
  id: BlobId;
  /** False when the blob was already stored (deduplicated). */
  isNew: boolean;
  /** Bytes added to the repository for it (0 when deduplicated). */
  storedBytes: number;
}

/** An open repository. */
export class Repository {
  #namespaces = new Map<string, Namespace>();
  /** Packs condemned by gc or found missing: their blobs count as absent and may be stored again. */
  readonly deadPacks = new Set<string>();
  /** Index segments found damaged when the repository was opened (skipped; `repairIndex` replaces them). */
  readonly indexDamage: IntegrityError[] = [];
  /** What opening had to work around, one line each, naming the object (the command line prints them). */
  readonly warnings: string[] = [];
  #configSha256: string;

  private constructor(
    readonly backend: Backend,
    readonly config: RepoConfig,
    configBytes: Uint8Array,
    readonly index: BlobIndex,
    readonly kek: Uint8Array,
  ) {
    this.#configSha256 = sha256Hex(configBytes);
  }

  /**
   * Creates a repository at `backend` with one namespace, its keys wrapped by `kek`. Throws
   * `RepoConfigError` if a repository is already there or an option is invalid.
   */
  static async init(
    backend: Backend,
    kek: Uint8Array,
    options: RepoOptions & { namespace: string; now?: Date },
  ): Promise<Repository> {
    validateNamespace(options.namespace);
    if (await backend.exists(CONFIG_OBJECT)) {
      throw new RepoConfigError(`${backend.location} already holds a repository`);
    }
    const now = options.now ?? new Date();
    const config = newConfig(options, now);
    const bytes = encodeConfig(config);
    const repo = new Repository(backend, config, bytes, new BlobIndex(), kek);
    await repo.createNamespace(options.namespace, now);
    // The config is written last: a location without it is not (yet) a repository.
    await backend.put(CONFIG_OBJECT, bytes);
    return repo;
  }

  /**
   * Opens the repository at `backend` with `kek`, unwrapping every namespace key it wraps. Throws
   * `RepoConfigError` (not a repository), `FormatVersionError` (newer format), `WrongKeyError` (the key
   * opens nothing) or `IntegrityError` (a damaged key object or config). Writes nothing.
   */
  static async open(backend: Backend, kek: Uint8Array): Promise<Repository> {
    const { config, bytes } = await readConfig(backend);
    const id = kekId(kek);
    const keys: NamespaceKeys[] = [];
    for await (const obj of backend.list("keys/")) {
      if (!obj.name.endsWith(`/${id}`)) continue;
      const ko = parseKeyObject(obj.name, await backend.get(obj.name));
      keys.push(
        await unwrapNamespaceKeys(obj.name, ko, kek, { repoId: config.id, configSha256: sha256Hex(bytes) }),
      );
    }
    if (keys.length === 0) {
      throw new WrongKeyError(
        `The key (id ${id}) opens no namespace of the repository at ${backend.location}`,
      );
    }
    const markerDamage: IntegrityError[] = [];
    const dead = new Set((await listCondemned(backend, { onDamaged: (e) => markerDamage.push(e) })).keys());
    const isDead = (p: string) => dead.has(p);
    const indexDamage: IntegrityError[] = [];
    const index = await loadIndex(backend, { isDead, onDamaged: (e) => indexDamage.push(e) });
    const repo = new Repository(backend, config, bytes, index, kek);
    for (const p of dead) repo.deadPacks.add(p);
    for (const e of markerDamage) {
      repo.warnings.push(`damaged condemnation marker ${e.id}: ${e.detail}; its pack counts as condemned`);
    }
    if (indexDamage.length > 0) await repo.#recoverIndex(indexDamage, isDead);
    for (const k of keys) repo.#namespaces.set(k.namespace, await Namespace.create(repo, k));
    return repo;
  }

  /**
   * One damaged index segment must not make the repository unopenable: it is skipped, and the listings of
   * the packs no remaining segment covers are read from their trailers (no key needed). Both are recorded
   * in `indexDamage` and `warnings`; `repairIndex` then writes a fresh index.
   */
  async #recoverIndex(damage: IntegrityError[], isDead: (packId: string) => boolean): Promise<void> {
    this.indexDamage.push(...damage);
    for (const e of damage) this.warnings.push(`damaged index segment ${e.id}: ${e.detail}; skipped`);
    const covered = this.index.packIds();
    let recovered = 0;
    for await (const obj of this.backend.list("data/")) {
      const packId = obj.name.slice(obj.name.lastIndexOf("/") + 1);
      if (covered.has(packId)) continue;
      try {
        this.index.addPack(await readPackListing(this.backend, packId, obj.size), isDead);
        recovered++;
      } catch (e) {
        if (!(e instanceof IntegrityError)) throw e;
        this.warnings.push(`damaged pack ${packId}: ${e.detail}; its blobs cannot be found`);
      }
    }
    this.warnings.push(
      `rebuilt the listings of ${recovered} packs from their trailers; run "deno task repo repair index" ` +
        `to write a fresh index`,
    );
  }

  /**
   * Re-reads gc's condemnation markers and which packs exist, marking condemned and missing packs dead.
   * A writer calls it after taking its lock and before it commits. When a pack the index names was condemned
   * since, the index segments are read again: gc writes a rewritten pack and the index segment naming it
   * before it condemns the original, so the live copy of a blob gc moved takes the dead one's place.
   */
  async refreshDeadPacks(): Promise<void> {
    // Markers first, then the index, then the pack listing: a pack the index names is dead if it is condemned
    // or gone by the time the listing is read.
    // A damaged marker counts as a condemnation here (its blobs are stored anew); gc and verify name it.
    const condemned = await listCondemned(this.backend, { onDamaged: () => {} });
    if ([...condemned.keys()].some((p) => !this.deadPacks.has(p) && this.index.hasPack(p))) {
      // A segment damaged since opening is skipped here (verify names it); what it lists stays unknown.
      const isDead = (p: string) => condemned.has(p) || this.deadPacks.has(p);
      await loadIndex(this.backend, { into: this.index, isDead, onDamaged: () => {} });
    }
    const existing = new Set<string>();
    for await (const obj of this.backend.list("data/")) {
      existing.add(obj.name.slice(obj.name.lastIndexOf("/") + 1));
    }
    this.deadPacks.clear();
    for (const p of condemned.keys()) this.deadPacks.add(p);
    for (const p of this.index.packIds()) if (!existing.has(p)) this.deadPacks.add(p);
  }

  /** Names of the namespaces this repository was opened for, sorted. */
  namespaces(): string[] {
    return [...this.#namespaces.keys()].sort();
  }

  /** The handle of namespace `name`. Throws `WrongKeyError` if the key does not open it. */
  namespace(name: string): Namespace {
    const ns = this.#namespaces.get(name);
    if (!ns) throw new WrongKeyError(`Namespace "${name}" does not exist or this key does not open it`);
    return ns;
  }

  /** Creates namespace `name` with fresh keys wrapped by this repository's KEK. Throws if it exists. */
  async createNamespace(name: string, now = new Date()): Promise<Namespace> {
    validateNamespace(name);
    if (this.#namespaces.has(name)) throw new RepoConfigError(`Namespace "${name}" already exists`);
    for await (const _ of this.backend.list(`keys/${name}/`)) {
      throw new RepoConfigError(`Namespace "${name}" already exists (under another key)`);
    }
    const keys = generateNamespaceKeys(name);
    const ko = await wrapNamespaceKeys(keys, this.kek, {
      repoId: this.config.id,
      configSha256: this.#configSha256,
      now,
    });
    await this.backend.put(
      keyObjectName(name, kekId(this.kek)),
      new TextEncoder().encode(JSON.stringify(ko, null, 2)),
    );
    const ns = await Namespace.create(this, keys);
    this.#namespaces.set(name, ns);
    return ns;
  }
}

/** One namespace of an open repository: its keys, codec, and blob storage. */
export class Namespace {
  #builder: PackBuilder;
  /** Blobs being encoded: a save of the same id waits until it sits in a pack builder. */
  #encoding = new Map<BlobId, Promise<void>>();
  /** Blobs in a pack that is not yet uploaded and indexed. */
  #unflushed = new Set<BlobId>();
  #uploads = new Set<Promise<void>>();
  #unindexed: PackListing[] = [];
  #failure: unknown = null;
  /** Ids a refused commit named: stored again even though the index knows them. */
  #forbidden = new Set<BlobId>();
  /** Worker threads encoding and decoding large blobs while `withWorkers` runs. */
  #pool: CodecPool | null = null;
  /** Pack files kept open for reads while `withWorkers` runs. */
  #reader: PackReader | null = null;
  #poolUsers = 0;

  private constructor(
    readonly repo: Repository,
    readonly keys: NamespaceKeys,
    readonly codec: BlobCodec,
  ) {
    this.#builder = new PackBuilder(keys.namespace);
  }

  /** A handle for `keys` in `repo` (used by `Repository`). */
  static async create(repo: Repository, keys: NamespaceKeys): Promise<Namespace> {
    const codec = await createBlobCodec({
      encryption: repo.config.encryption,
      compression: repo.config.compression,
      dataKey: keys.dataKey,
    });
    return new Namespace(repo, keys, codec);
  }

  get name(): string {
    return this.keys.namespace;
  }

  /**
   * A buffer of at least `n` bytes for a plaintext to hand over to `saveBlob` (reused while
   * `withWorkers` runs, fresh otherwise).
   */
  blobBuffer(n: number): Uint8Array<ArrayBuffer> {
    return this.#pool ? this.#pool.buffer(n) : new Uint8Array(n);
  }

  /**
   * Runs `fn` with large blobs encoded and decoded on worker threads (the same codec, off the main
   * thread, so a backup or restore uses every core); the workers stop when the last caller is done.
   */
  async withWorkers<T>(fn: () => Promise<T>, workers?: number): Promise<T> {
    this.#pool ??= new CodecPool(this.codec, this.keys.dataKey, workers);
    this.#reader ??= new PackReader(this.repo.backend);
    this.#poolUsers++;
    try {
      return await fn();
    } finally {
      if (--this.#poolUsers === 0) {
        this.#pool.close();
        this.#pool = null;
        const reader = this.#reader;
        this.#reader = null;
        await reader.close();
      }
    }
  }

  /**
   * The id hasher of this namespace: HMAC with its id key (SHA-256 without encryption), salted with
   * `chainSalt` when the repository does not deduplicate.
   */
  hasher(chainSalt?: Uint8Array | null): ChunkIdHasher {
    const idKey = this.repo.config.encryption === "none" ? null : this.keys.idKey;
    return createChunkIdHasher({ idKey, salt: chainSalt ?? null });
  }

  /** Whether blob `id` is stored (or being stored) in this namespace, in a pack that is not dead. */
  has(id: BlobId): boolean {
    return this.#encoding.has(id) || this.#unflushed.has(id) || this.#indexedLive(id);
  }

  #indexedLive(id: BlobId): boolean {
    if (this.#forbidden.has(id)) return false;
    const e = this.repo.index.lookup(this.name, id);
    return e !== null && !this.repo.deadPacks.has(e.packId);
  }

  /**
   * The commit check: re-reads the dead packs and returns the ids of `refs` that are not stored in a
   * live pack. Those become absent for this handle, so saving them again stores them anew.
   */
  async checkCommit(refs: Iterable<BlobId>): Promise<BlobId[]> {
    await this.repo.refreshDeadPacks();
    const bad: BlobId[] = [];
    for (const id of refs) {
      if (this.#unflushed.has(id)) continue;
      const e = this.repo.index.lookup(this.name, id);
      if (!e || this.repo.deadPacks.has(e.packId)) {
        bad.push(id);
        this.#forbidden.add(id);
      }
    }
    return bad;
  }

  /**
   * Stores `plain` as a blob of `type` under its id from `hasher`, unless already stored. Many saves may
   * be in flight; a full pack is uploaded before the save that filled it resolves (backpressure). A blob
   * is durable only after `flush()`. With `handOver`, the caller gives up `plain` (its buffer may be
   * transferred to a worker thread and read as empty afterwards).
   */
  async saveBlob(
    type: BlobType,
    plain: Uint8Array,
    hasher: ChunkIdHasher,
    handOver = false,
  ): Promise<SaveResult> {
    this.#throwIfFailed();
    const id = hasher.id(plain);
    const encoding = this.#encoding.get(id);
    if (encoding) {
      if (handOver) this.#pool?.recycle(plain);
      await encoding;
      return { id, isNew: false, storedBytes: 0 };
    }
    if (this.#unflushed.has(id) || this.#indexedLive(id)) {
      if (handOver) this.#pool?.recycle(plain);
      return { id, isNew: false, storedBytes: 0 };
    }
    // The pack is judged full right after each blob is added (not after the save resumes): with many saves
    // in flight, a later check would see every finished blob in one pack far past the target.
    const encoded = this.#pool ? this.#pool.encode(id, plain, handOver) : this.codec.encode(id, plain);
    const task = encoded.then((stored) => {
      this.#builder.add(type, id, stored);
      this.#unflushed.add(id);
      const upload = this.#builder.size >= this.repo.config.packTargetBytes ? this.#startUpload() : null;
      return { storedBytes: stored.length, upload };
    });
    this.#encoding.set(id, task.then(() => {}));
    let added: { storedBytes: number; upload: Promise<void> | null };
    try {
      added = await task;
    } finally {
      this.#encoding.delete(id);
    }
    if (added.upload) await added.upload; // backpressure: the save that filled a pack waits for its upload
    return { id, isNew: true, storedBytes: added.storedBytes };
  }

  #startUpload(): Promise<void> {
    const builder = this.#builder;
    this.#builder = new PackBuilder(this.name);
    const pool = this.#pool;
    const { parts, namespace, entries } = builder.pieces();
    const upload = (async () => {
      try {
        // With workers, a worker copies the pack into one buffer and hashes it.
        const { bytes, packId } = pool ? await pool.assemblePack(parts) : assemblePack(parts);
        const listing: PackListing = { packId, namespace, entries };
        await this.repo.backend.put(packObjectName(listing.packId), bytes);
        this.repo.index.addPack(listing, (p) => this.repo.deadPacks.has(p));
        for (const e of listing.entries) this.#forbidden.delete(e.id);
        this.#unindexed.push(listing);
        if (this.#unindexed.length >= PACKS_PER_INDEX_CHECKPOINT) await this.#writeIndex();
      } catch (e) {
        this.#failure ??= e;
        throw e;
      } finally {
        for (const e of entries) this.#unflushed.delete(e.id);
      }
    })();
    this.#uploads.add(upload);
    upload.finally(() => this.#uploads.delete(upload)).catch(() => {});
    return upload;
  }

  async #writeIndex(): Promise<void> {
    if (this.#unindexed.length === 0) return;
    const batch = this.#unindexed;
    this.#unindexed = [];
    await writeIndexSegment(this.repo.backend, batch);
  }

  #throwIfFailed() {
    if (this.#failure) throw new RepoError(`An earlier upload failed: ${(this.#failure as Error).message}`);
  }

  /** Uploads the current pack and writes an index segment for every pack not yet indexed. */
  async flush(): Promise<void> {
    while (this.#encoding.size > 0) await Promise.allSettled([...this.#encoding.values()]);
    if (this.#builder.count > 0) await this.#startUpload().catch(() => {});
    await Promise.allSettled([...this.#uploads]);
    this.#throwIfFailed();
    await this.#writeIndex();
  }

  /**
   * The plaintext of blob `id`, verified (authenticated, and re-hashed when `hasher` is given). Throws
   * `MissingObjectError` if no pack holds it, `IntegrityError` naming the blob if it is damaged.
   */
  async loadBlob(id: BlobId, hasher?: ChunkIdHasher): Promise<Uint8Array> {
    const entry = this.repo.index.lookup(this.name, id);
    if (!entry) throw new MissingObjectError("blob", id, "not in the index");
    let stored: Uint8Array;
    try {
      const name = packObjectName(entry.packId);
      stored = this.#reader
        ? await this.#reader.read(name, entry.offset, entry.length)
        : await this.repo.backend.get(name, { offset: entry.offset, length: entry.length });
    } catch (e) {
      if (e instanceof MissingObjectError) {
        throw new MissingObjectError("blob", id, `its pack ${entry.packId} is missing`);
      }
      throw new IntegrityError("blob", id, `cannot read from pack ${entry.packId}: ${(e as Error).message}`, {
        cause: e,
      });
    }
    return await (this.#pool
      ? this.#pool.decode(id, stored, hasher, true)
      : this.codec.decode(id, stored, hasher));
  }
}
