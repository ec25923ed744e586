/**
 * A repository opened with a key: its config, its index, and a handle per namespace it can open.
 * A namespace handle is the repository API of restic's shape — has, save blob, load blob, flush —
 * with packing and index checkpoints inside it. docs/repository-format.md §Layout lists the objects.
 */
import { type Backend, LocalBackend, putParts } from "./backend.ts";
import type { RestoreBlobRef } from "./worker_restore.ts";
import { createBlobCodec, type PartsBlobCodec, partsCompressed } from "./blob.ts";
import { type ChunkSession, type ChunkSessionEvents, CodecPool } from "./codec_pool.ts";
import type { ChunkerParams } from "./chunker.ts";
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
  asOpener,
  encodeKeyObject,
  generateNamespaceKeys,
  type KeyObject,
  keyObjectName,
  type KeyOpener,
  type KeyWrapper,
  type NamespaceKeys,
  namespaceKeysOpener,
  parseKeyObject,
  type ResolvedOpener,
  resolveOpener,
  sameNamespaceKeys,
  unwrapNamespaceKeys,
  validateNamespace,
  wrapNamespaceKeys,
  wrapperId,
  type WrapperKind,
} from "./keys.ts";
import {
  type BlobType,
  PackBuilder,
  packIdOf,
  type PackListing,
  packObjectName,
  readPackListing,
} from "./pack.ts";
import { listCondemned } from "./gc.ts";
import { loadSnapshot, readSnapshotInfo } from "./snapshot.ts";
import { loadTree } from "./tree.ts";
import { fromHex, isAllZero } from "./bytes.ts";

/** Index segments are checkpointed after this many packs, so an interrupted backup can resume. */
export const PACKS_PER_INDEX_CHECKPOINT = 4;

/** The outcome of saving one blob. */
export interface SaveResult {
  id: BlobId;
  /** False when the blob was already stored (deduplicated). */
  isNew: boolean;
  /** Bytes added to the repository for it (0 when deduplicated). */
  storedBytes: number;
  /** For a new blob: whether it was stored compressed (false: it did not shrink and was stored raw). */
  compressed?: boolean;
}

/** One key object as `Repository.listKeys` reports it. */
export interface KeyListing {
  /** Object name, `keys/<namespace>/<id>`. */
  name: string;
  namespace: string;
  /** `kek` or `recovery`; `unknown` for a damaged object. */
  kind: WrapperKind | "unknown";
  id: string;
  /** When the key object was made: sealed in it when this key opens it, else the object's modification time. */
  created: string;
  /** Whether the key the repository was opened with opens this object. */
  opens: boolean;
  /** Set when the object is not a readable key object (then `kind` and `id` come from its name). */
  damaged?: string;
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
  /** What the repository was opened with; null when opened without a key (`openStorage`). */
  #key: ResolvedOpener | null;

  private constructor(
    readonly backend: Backend,
    readonly config: RepoConfig,
    configBytes: Uint8Array,
    readonly index: BlobIndex,
    key: ResolvedOpener | null,
  ) {
    this.#configSha256 = sha256Hex(configBytes);
    this.#key = key;
  }

  /** What the repository was opened with. Throws `WrongKeyError` when it was opened without a key. */
  get opener(): KeyOpener {
    if (!this.#key) throw new WrongKeyError(`${this.backend.location} was opened without a key`);
    return this.#key.opener;
  }

  /** True when opened without a key (`openStorage`): no namespace opens, only what needs no key works. */
  get keyless(): boolean {
    return this.#key === null;
  }

  /** For messages: what the repository was opened with. */
  get #describe(): string {
    return this.#key?.describe ?? "no key";
  }

  /**
   * The id of the key objects the opening key opens (KEK or recovery key id); null for namespace keys and
   * without a key.
   */
  get keyId(): string | null {
    return this.#key?.id ?? null;
  }

  /** The KEK the repository was opened with. Throws `WrongKeyError` if it was opened otherwise. */
  get kek(): Uint8Array {
    if (this.#key?.opener.kind !== "kek") {
      throw new WrongKeyError(`This repository was opened with ${this.#describe}, not a KEK`);
    }
    return this.#key.opener.kek;
  }

  /** SHA-256 (hex) of the exact config bytes: what key objects of this repository seal. */
  get configSha256(): string {
    return this.#configSha256;
  }

  /**
   * Creates a repository at `backend` with one namespace, its keys wrapped by `key` (a KEK, bare or as an
   * opener, or the recovery private key, which wraps for its public half) and for each of
   * `recoveryPublicKeys` (SPKI PEM). With one namespace's keys as the opener, no key object is written for
   * them (only the recovery ones). `keys` gives the namespace existing keys instead of fresh ones (a copy
   * destination). Throws `RepoConfigError` if a repository is already there or an option is invalid,
   * `WrongKeyError` if a key is unusable; writes nothing then.
   */
  static async init(
    backend: Backend,
    key: Uint8Array | KeyOpener,
    options: RepoOptions & {
      namespace: string;
      now?: Date;
      recoveryPublicKeys?: string[];
      keys?: NamespaceKeys;
    },
  ): Promise<Repository> {
    validateNamespace(options.namespace);
    const resolved = await resolveOpener(asOpener(key));
    let keys = options.keys ?? null;
    if (resolved.opener.kind === "namespace") {
      if (
        resolved.opener.keys.namespace !== options.namespace ||
        (keys && !sameNamespaceKeys(keys, resolved.opener.keys))
      ) {
        throw new WrongKeyError(
          `Cannot create namespace "${options.namespace}" with ${resolved.describe}`,
        );
      }
      keys = resolved.opener.keys;
    }
    if (keys && keys.namespace !== options.namespace) {
      throw new RepoConfigError(
        `The keys given are namespace "${keys.namespace}"'s, not "${options.namespace}"'s`,
      );
    }
    if (await backend.exists(CONFIG_OBJECT)) {
      throw new RepoConfigError(`${backend.location} already holds a repository`);
    }
    const now = options.now ?? new Date();
    const config = newConfig(options, now);
    const bytes = encodeConfig(config);
    const repo = new Repository(backend, config, bytes, new BlobIndex(), resolved);
    await repo.#addNamespace(
      keys ?? generateNamespaceKeys(options.namespace),
      now,
      options.recoveryPublicKeys,
    );
    // The config is written last: a location without it is not (yet) a repository.
    await backend.put(CONFIG_OBJECT, bytes);
    return repo;
  }

  /**
   * Opens the repository at `backend` with `key`: a KEK (bare or as an opener) or the recovery private key
   * unwraps every namespace key object wrapped for it; one namespace's keys open that namespace alone,
   * without any key object (they are checked against one of its snapshots when it has any). Throws
   * `RepoConfigError` (not a repository), `FormatVersionError` (newer format), `WrongKeyError` (the key
   * opens nothing) or `IntegrityError` (a damaged key object or config). Writes nothing.
   */
  static async open(backend: Backend, key: Uint8Array | KeyOpener): Promise<Repository> {
    const { config, bytes } = await readConfig(backend);
    const resolved = await resolveOpener(asOpener(key));
    const keys: NamespaceKeys[] = [];
    if (resolved.opener.kind === "namespace") {
      keys.push(resolved.opener.keys);
    } else {
      for await (const obj of backend.list("keys/")) {
        if (!obj.name.endsWith(`/${resolved.id}`)) continue;
        const ko = parseKeyObject(obj.name, await backend.get(obj.name));
        keys.push(
          await unwrapNamespaceKeys(obj.name, ko, resolved.opener, {
            repoId: config.id,
            configSha256: sha256Hex(bytes),
          }),
        );
      }
      if (keys.length === 0) {
        throw new WrongKeyError(
          `${resolved.describe[0].toUpperCase()}${resolved.describe.slice(1)} opens no namespace of the ` +
            `repository at ${backend.location}`,
        );
      }
    }
    const repo = await Repository.#load(backend, config, bytes, resolved);
    for (const k of keys) repo.#namespaces.set(k.namespace, await Namespace.create(repo, k));
    if (resolved.opener.kind === "namespace") {
      await repo.#checkNamespaceKeys(repo.namespace(keys[0].namespace));
    }
    return repo;
  }

  /**
   * Opens the repository at `backend` without a key, for what needs none (a BES's structural verify):
   * its config, condemned packs and index, with the same recovery from a damaged index segment as `open`.
   * No namespace opens; blobs cannot be read, and nothing that needs a key works. Throws `RepoConfigError`
   * (not a repository), `FormatVersionError` (newer format) or `IntegrityError` (a damaged config). Writes
   * nothing.
   */
  static async openStorage(backend: Backend): Promise<Repository> {
    const { config, bytes } = await readConfig(backend);
    return await Repository.#load(backend, config, bytes, null);
  }

  /** The key-independent part of opening: condemned packs and the index (recovered around damage). */
  static async #load(
    backend: Backend,
    config: RepoConfig,
    bytes: Uint8Array,
    key: ResolvedOpener | null,
  ): Promise<Repository> {
    const markerDamage: IntegrityError[] = [];
    const dead = new Set((await listCondemned(backend, { onDamaged: (e) => markerDamage.push(e) })).keys());
    const isDead = (p: string) => dead.has(p);
    const indexDamage: IntegrityError[] = [];
    const index = await loadIndex(backend, { isDead, onDamaged: (e) => indexDamage.push(e) });
    const repo = new Repository(backend, config, bytes, index, key);
    for (const p of dead) repo.deadPacks.add(p);
    for (const e of markerDamage) {
      repo.warnings.push(`damaged condemnation marker ${e.id}: ${e.detail}; its pack counts as condemned`);
    }
    if (indexDamage.length > 0) await repo.#recoverIndex(indexDamage, isDead);
    return repo;
  }

  /**
   * Opens the repository at `backend` with one namespace's keys, as a job gets them from the control plane
   * (`open` with `namespaceKeysOpener`: no KEK, the keys are checked against the namespace's snapshots, no
   * namespace can be created). `expect` names settings the caller knows from its policy: a config that says
   * otherwise — say, a config switched to encryption "none" so that a host would write in clear — is refused
   * with `RepoConfigError`. Throws as `open` does. Writes nothing.
   */
  static async openNamespace(
    backend: Backend,
    keys: NamespaceKeys,
    options: { expect?: Partial<Pick<RepoConfig, "encryption" | "compression" | "dedup">> } = {},
  ): Promise<Repository> {
    validateNamespace(keys.namespace);
    const { config } = await readConfig(backend);
    for (const [field, want] of Object.entries(options.expect ?? {})) {
      const have = config[field as keyof RepoConfig];
      if (want !== undefined && have !== want) {
        throw new RepoConfigError(
          `The repository at ${backend.location} has ${field} ${JSON.stringify(have)}, not the expected ${
            JSON.stringify(want)
          }; refusing to use it`,
        );
      }
    }
    return await Repository.open(backend, namespaceKeysOpener(keys));
  }

  /**
   * Namespace keys given directly have no key object to authenticate them: they are checked against the
   * namespace's snapshots instead — the first whose body authenticates under the data key proves it, and
   * its root tree, re-hashed, proves the id key. A namespace without snapshots accepts any keys (a first
   * backup). Throws `WrongKeyError` when snapshots exist and none opens (up to 3 tried, so one damaged
   * snapshot is not taken for a wrong key) or the id key does not match.
   */
  async #checkNamespaceKeys(ns: Namespace): Promise<void> {
    if (this.config.encryption === "none") return; // no key is used: ids are SHA-256, blobs in clear
    let tried = 0;
    const ids: string[] = [];
    for await (const obj of this.backend.list("snapshots/")) ids.push(obj.name.slice("snapshots/".length));
    for (const id of ids) {
      let info;
      try {
        info = await readSnapshotInfo(this.backend, id);
      } catch (e) {
        if (e instanceof IntegrityError) continue;
        throw e;
      }
      if (info.namespace !== ns.name) continue;
      let snap;
      try {
        snap = await loadSnapshot(ns, id);
      } catch (e) {
        if (!(e instanceof IntegrityError)) throw e;
        if (++tried >= 3) break;
        continue;
      }
      try {
        await loadTree(ns, snap.tree, ns.hasher(snap.chainSalt ? fromHex(snap.chainSalt) : null));
      } catch (e) {
        if (e instanceof IntegrityError && /does not hash to its id/.test(e.detail)) {
          throw new WrongKeyError(
            `The id key given for namespace "${ns.name}" is not the one its snapshots were written with`,
          );
        }
        if (!(e instanceof RepoError)) throw e;
        // A damaged or missing root tree says nothing about the keys: the data key opened the snapshot.
      }
      return;
    }
    if (tried > 0) {
      throw new WrongKeyError(
        `The keys given for namespace "${ns.name}" open none of its snapshots in ${this.backend.location} ` +
          `(wrong keys, or those snapshots are damaged)`,
      );
    }
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

  /**
   * Creates namespace `name` with fresh keys wrapped by the key the repository was opened with (and for
   * each of `options.recoveryPublicKeys`). Throws `RepoConfigError` if it exists, `WrongKeyError` when
   * opened with one namespace's keys (they wrap nothing).
   */
  async createNamespace(
    name: string,
    now = new Date(),
    options: { recoveryPublicKeys?: string[] } = {},
  ): Promise<Namespace> {
    validateNamespace(name);
    if (this.#namespaces.has(name)) throw new RepoConfigError(`Namespace "${name}" already exists`);
    if (!this.#key?.wrapper) {
      throw new WrongKeyError(`Opened with ${this.#describe}: cannot create namespace "${name}"`);
    }
    return await this.#addNamespace(generateNamespaceKeys(name), now, options.recoveryPublicKeys);
  }

  /**
   * Adds namespace `keys.namespace` with these existing keys (a copy's destination shares its source's
   * keys), wrapped by the opening key. Returns the handle and whether a key object was written; a
   * namespace this repository already opens with the same keys is kept as it is. Throws `RepoConfigError`
   * if the namespace exists with other keys or under a key this one does not open.
   */
  async adoptNamespace(
    keys: NamespaceKeys,
    now = new Date(),
  ): Promise<{ namespace: Namespace; wrapped: boolean }> {
    validateNamespace(keys.namespace);
    const have = this.#namespaces.get(keys.namespace);
    if (have) {
      if (!sameNamespaceKeys(have.keys, keys)) {
        throw new RepoConfigError(
          `${this.backend.location} already holds namespace "${keys.namespace}" with other keys`,
        );
      }
      return { namespace: have, wrapped: false };
    }
    if (!this.#key?.wrapper) {
      throw new WrongKeyError(`Opened with ${this.#describe}: cannot add namespace "${keys.namespace}"`);
    }
    return { namespace: await this.#addNamespace(keys, now), wrapped: true };
  }

  /** Writes the key objects of new namespace `keys` (opener's wrapper, then recovery keys) and opens it. */
  async #addNamespace(keys: NamespaceKeys, now: Date, recoveryPublicKeys: string[] = []): Promise<Namespace> {
    const name = keys.namespace;
    for await (const _ of this.backend.list(`keys/${name}/`)) {
      throw new RepoConfigError(`Namespace "${name}" already exists (under another key)`);
    }
    const wrappers: KeyWrapper[] = [
      ...(this.#key?.wrapper ? [this.#key.wrapper] : []),
      ...recoveryPublicKeys.map((publicPem) => ({ kind: "recovery", publicPem }) as const),
    ];
    // Every wrapping first (a bad recovery key fails here), then the writes; one object per wrapper id.
    const objects = new Map<string, KeyObject>();
    for (const w of wrappers) {
      const ko = await this.#wrap(keys, w, now);
      if (!objects.has(ko.wrappedBy.id)) objects.set(ko.wrappedBy.id, ko);
    }
    for (const ko of objects.values()) {
      await this.backend.put(keyObjectName(name, ko.wrappedBy.id), encodeKeyObject(ko));
    }
    const ns = await Namespace.create(this, keys);
    this.#namespaces.set(name, ns);
    return ns;
  }

  #wrap(keys: NamespaceKeys, wrapper: KeyWrapper, now: Date): Promise<KeyObject> {
    return wrapNamespaceKeys(keys, wrapper, {
      repoId: this.config.id,
      configSha256: this.#configSha256,
      now,
    });
  }

  /**
   * Wraps every namespace this repository was opened for with `wrapper` (another KEK, or a recovery public
   * key), writing `keys/<namespace>/<wrapper id>`. A namespace it already wraps is left as it is (for a
   * KEK, after checking that it unwraps to the same keys). Returns the names written and skipped.
   */
  async addWrapper(wrapper: KeyWrapper, now = new Date()): Promise<{ added: string[]; skipped: string[] }> {
    const id = wrapperId(wrapper);
    const objects: KeyObject[] = [];
    const skipped: string[] = [];
    for (const name of this.namespaces()) {
      const ns = this.namespace(name);
      const objectName = keyObjectName(name, id);
      if (await this.backend.exists(objectName)) {
        if (wrapper.kind === "kek") {
          const ko = parseKeyObject(objectName, await this.backend.get(objectName));
          const k = await unwrapNamespaceKeys(objectName, ko, wrapper.kek, {
            repoId: this.config.id,
            configSha256: this.#configSha256,
          });
          if (!sameNamespaceKeys(k, ns.keys)) {
            throw new IntegrityError("key", objectName, "unwraps to other keys than the namespace's");
          }
        }
        skipped.push(objectName);
        continue;
      }
      objects.push(await this.#wrap(ns.keys, wrapper, now));
    }
    const added: string[] = [];
    for (const ko of objects) {
      const objectName = keyObjectName(ko.namespace, ko.wrappedBy.id);
      await this.backend.put(objectName, encodeKeyObject(ko));
      added.push(objectName);
    }
    return { added, skipped };
  }

  /**
   * Every key object of the repository, sorted by namespace and id. A damaged one is listed with
   * `damaged` set rather than hiding the others.
   */
  async listKeys(): Promise<KeyListing[]> {
    const out: KeyListing[] = [];
    for await (const obj of this.backend.list("keys/")) {
      const parts = obj.name.split("/");
      const fromName = { namespace: parts[1] ?? "", id: parts[2] ?? "" };
      let ko: KeyObject;
      try {
        ko = parseKeyObject(obj.name, await this.backend.get(obj.name));
      } catch (e) {
        if (!(e instanceof IntegrityError)) throw e;
        out.push({
          name: obj.name,
          ...fromName,
          kind: "unknown",
          created: obj.modified.toISOString(),
          opens: false,
          damaged: e.detail,
        });
        continue;
      }
      let created = obj.modified.toISOString();
      const key = this.#key;
      const opens = key !== null && ko.wrappedBy.id === key.id;
      if (opens) {
        try {
          created = (await unwrapNamespaceKeys(obj.name, ko, key.opener, {
            repoId: this.config.id,
            configSha256: this.#configSha256,
          })).createdAt || created;
        } catch (e) {
          if (!(e instanceof RepoError)) throw e;
          out.push({
            name: obj.name,
            namespace: ko.namespace,
            kind: ko.wrappedBy.kind,
            id: ko.wrappedBy.id,
            created,
            opens: false,
            damaged: e.message,
          });
          continue;
        }
      }
      out.push({
        name: obj.name,
        namespace: ko.namespace,
        kind: ko.wrappedBy.kind,
        id: ko.wrappedBy.id,
        created,
        opens,
      });
    }
    return out.sort((a, b) => a.namespace.localeCompare(b.namespace) || a.id.localeCompare(b.id));
  }

  /**
   * Removes every key object of wrapper `id` (`keys/*\/<id>`). Refuses — removing nothing — the key this
   * repository was opened with, a wrapper of a namespace this key does not open, and the last readable
   * wrapper of any namespace. Returns the names removed.
   */
  async removeWrapper(id: string): Promise<string[]> {
    if (id === this.#key?.id) {
      throw new RepoConfigError(
        `Key ${id} is the key in use: open the repository with another key to remove it`,
      );
    }
    const byNamespace = new Map<string, string[]>();
    for (const k of await this.listKeys()) {
      if (k.damaged) continue;
      byNamespace.set(k.namespace, [...(byNamespace.get(k.namespace) ?? []), k.id]);
    }
    const targets: string[] = [];
    for await (const obj of this.backend.list("keys/")) {
      if (obj.name.endsWith(`/${id}`)) targets.push(obj.name);
    }
    if (targets.length === 0) throw new RepoConfigError(`No key ${id} in ${this.backend.location}`);
    for (const name of targets) {
      const namespace = name.split("/")[1];
      if (!this.#namespaces.has(namespace)) {
        throw new WrongKeyError(
          `Key ${id} also wraps namespace "${namespace}", which ${this.#describe} does not open; ` +
            `nothing was removed`,
        );
      }
      const others = (byNamespace.get(namespace) ?? []).filter((x) => x !== id);
      if (others.length === 0) {
        throw new RepoConfigError(
          `Key ${id} is the last key of namespace "${namespace}": removing it would make its data ` +
            `unreadable; nothing was removed`,
        );
      }
    }
    for (const name of targets.sort()) await this.backend.delete(name);
    return targets;
  }
}

/** One namespace of an open repository: its keys, codec, and blob storage. */
export class Namespace {
  #builder: PackBuilder;
  /** Blobs being encoded: a save of the same id waits until it sits in a pack builder. */
  #encoding = new Map<BlobId, Promise<void>>();
  /** Blobs claimed (`claim`) and not yet stored: how to settle their `#encoding` promise. */
  #claims = new Map<BlobId, { resolve: () => void; reject: (e: unknown) => void }>();
  /** Blobs in a pack that is not yet uploaded and indexed. */
  #unflushed = new Set<BlobId>();
  #uploads = new Set<Promise<void>>();
  /** Index checkpoints being written (`#checkpointIndex`). */
  #indexWrites = new Set<Promise<void>>();
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
    readonly codec: PartsBlobCodec,
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
   * A session that chunks one file's bytes on a worker thread (codec_pool.ts `ChunkSession`), or null when
   * no workers run (outside `withWorkers`) or `hasher` cannot run on one.
   */
  chunkSession(
    params: ChunkerParams,
    hasher: ChunkIdHasher,
    events: ChunkSessionEvents,
  ): ChunkSession | null {
    return this.#pool ? this.#pool.openChunker(params, hasher, events) : null;
  }

  /**
   * Claims blob `id` for the caller to store: true when it is neither stored nor being stored — the caller
   * must then end the claim with `storeClaimed` or `abandonClaim`; false when it exists (nothing to do).
   * Saves of the same id wait for the claim as for any blob being encoded.
   */
  claim(id: BlobId): boolean {
    this.#throwIfFailed();
    if (this.has(id)) return false;
    const settled = Promise.withResolvers<void>();
    settled.promise.catch(() => {}); // awaited by saves of the same id; a lone failure is not unhandled
    this.#encoding.set(id, settled.promise);
    this.#claims.set(id, settled);
    return true;
  }

  /**
   * Adds claimed blob `id`, encoded as `parts`, to the pack being built; returns its stored size and, when it
   * filled the pack, the pack's upload (the caller waits for it: backpressure, as in `saveBlob`).
   */
  storeClaimed(
    type: BlobType,
    id: BlobId,
    parts: Uint8Array[],
  ): { storedBytes: number; upload: Promise<void> | null; compressed: boolean } {
    const claim = this.#claims.get(id);
    if (!claim) throw new RepoError(`Blob ${id} is stored without a claim`);
    this.#claims.delete(id);
    this.#encoding.delete(id);
    this.#builder.addParts(type, id, parts);
    this.#unflushed.add(id);
    claim.resolve();
    let storedBytes = 0;
    for (const p of parts) storedBytes += p.length;
    const upload = this.#builder.size >= this.repo.config.packTargetBytes ? this.#startUpload() : null;
    return { storedBytes, upload, compressed: partsCompressed(parts) };
  }

  /** Ends claim `id` without storing the blob (the run failed): saves waiting for it fail with `error`. */
  abandonClaim(id: BlobId, error: unknown): void {
    const claim = this.#claims.get(id);
    if (!claim) return;
    this.#claims.delete(id);
    this.#encoding.delete(id);
    claim.reject(error);
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
   * be in flight; a full pack is uploaded before the save that filled it resolves (backpressure) — unless
   * `awaitUpload` is false, for a caller that bounds the packs in upload itself (`uploadRoom`; a failed
   * upload then fails the next save and `flush()`). A blob is durable only after `flush()`. With
   * `handOver`, the caller gives up `plain` (its buffer may be transferred to a worker thread and read as
   * empty afterwards).
   */
  async saveBlob(
    type: BlobType,
    plain: Uint8Array,
    hasher: ChunkIdHasher,
    handOver = false,
    awaitUpload = true,
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
    const encoded = this.#pool
      ? this.#pool.encodeParts(id, plain, handOver)
      : this.codec.encodeParts(id, plain);
    const task = encoded.then((parts) => {
      if (!this.#pool) parts = parts.map((p) => p.buffer === plain.buffer ? p.slice() : p);
      this.#builder.addParts(type, id, parts);
      this.#unflushed.add(id);
      const upload = this.#builder.size >= this.repo.config.packTargetBytes ? this.#startUpload() : null;
      let storedBytes = 0;
      for (const p of parts) storedBytes += p.length;
      return { storedBytes, upload, compressed: partsCompressed(parts) };
    });
    this.#encoding.set(id, task.then(() => {}));
    let added: { storedBytes: number; upload: Promise<void> | null; compressed: boolean };
    try {
      added = await task;
    } finally {
      this.#encoding.delete(id);
    }
    // Backpressure: the save that filled a pack waits for its upload (a failure is the run's, see above).
    if (added.upload && awaitUpload) await added.upload;
    return { id, isNew: true, storedBytes: added.storedBytes, compressed: added.compressed };
  }

  #startUpload(): Promise<void> {
    const builder = this.#builder;
    this.#builder = new PackBuilder(this.name);
    const pool = this.#pool;
    const { parts, namespace, entries } = builder.pieces();
    const upload = (async () => {
      try {
        // With workers, a worker hashes the pack; its parts are written as they are, never joined here.
        const { packId, parts: out } = pool ? await pool.packId(parts) : { packId: packIdOf(parts), parts };
        const listing: PackListing = { packId, namespace, entries };
        await putParts(this.repo.backend, packObjectName(listing.packId), out);
        this.repo.index.addPack(listing, (p) => this.repo.deadPacks.has(p));
        for (const e of listing.entries) this.#forbidden.delete(e.id);
        this.#unindexed.push(listing);
        // Beside the uploads, not inside this one: a slow store would otherwise hold one of the backup's
        // upload places (PACKS_IN_FLIGHT) while it checks the segment (measured: docs/performance.md).
        if (this.#unindexed.length >= PACKS_PER_INDEX_CHECKPOINT) this.#checkpointIndex();
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

  /** Writes an index segment for the packs not yet indexed, tracked for `flush` (a failure fails the run). */
  #checkpointIndex(): void {
    const write = this.#writeIndex().catch((e) => {
      this.#failure ??= e;
    });
    this.#indexWrites.add(write);
    write.finally(() => this.#indexWrites.delete(write));
  }

  async #writeIndex(): Promise<void> {
    if (this.#unindexed.length === 0) return;
    const batch = this.#unindexed;
    this.#unindexed = [];
    await writeIndexSegment(this.repo.backend, batch);
  }

  #throwIfFailed() {
    if (this.#failure) {
      throw new RepoError(`An earlier upload failed: ${(this.#failure as Error).message}`, {
        cause: this.#failure,
      });
    }
  }

  /** Packs being uploaded now (each holds its blobs in memory until it is stored). */
  get uploadsInFlight(): number {
    return this.#uploads.size;
  }

  /** Resolves once fewer than `max` packs are being uploaded (at once when they are already fewer). */
  async uploadRoom(max: number): Promise<void> {
    while (this.#uploads.size >= max) {
      await Promise.race([...this.#uploads].map((u) => u.catch(() => {})));
    }
  }

  /** Uploads the current pack and writes an index segment for every pack not yet indexed. */
  async flush(): Promise<void> {
    while (this.#encoding.size > 0) await Promise.allSettled([...this.#encoding.values()]);
    if (this.#builder.count > 0) await this.#startUpload().catch(() => {});
    await Promise.allSettled([...this.#uploads]);
    await Promise.allSettled([...this.#indexWrites]);
    this.#throwIfFailed();
    await this.#writeIndex();
  }

  /**
   * The plaintext of blob `id`, verified (authenticated, and re-hashed when `hasher` is given). Throws
   * `MissingObjectError` if no pack holds it, `IntegrityError` naming the blob if it is damaged.
   */
  async loadBlob(id: BlobId, hasher?: ChunkIdHasher): Promise<Uint8Array> {
    const stored = await this.readStored(id, false);
    return await (this.#pool
      ? this.#pool.decode(id, stored, hasher, true)
      : this.codec.decode(id, stored, hasher));
  }

  /**
   * The stored (encoded) form of blob `id`, unverified: `decode` or `writeBlob` checks it. With `reuse`
   * (for `writeBlob`, which gives the buffer back) it is read into a reused buffer while `withWorkers`
   * runs. Throws `MissingObjectError` if no pack holds it, `IntegrityError` naming the blob if it cannot be
   * read.
   */
  async readStored(id: BlobId, reuse = true): Promise<Uint8Array<ArrayBuffer>> {
    const entry = this.repo.index.lookup(this.name, id);
    if (!entry) throw new MissingObjectError("blob", id, "not in the index");
    try {
      const name = packObjectName(entry.packId);
      const pool = reuse ? this.#pool : null;
      return this.#reader
        ? await this.#reader.read(
          name,
          entry.offset,
          entry.length,
          pool ? (n) => pool.buffer(n, 2 << 20) : undefined,
        )
        : await this.repo.backend.get(name, { offset: entry.offset, length: entry.length });
    } catch (e) {
      if (e instanceof MissingObjectError) {
        throw new MissingObjectError("blob", id, `its pack ${entry.packId} is missing`);
      }
      throw new IntegrityError("blob", id, `cannot read from pack ${entry.packId}: ${(e as Error).message}`, {
        cause: e,
      });
    }
  }

  /**
   * Restores a file whose content is the blobs `ids` into the existing, empty file at `path` on a worker
   * thread (codec_pool.ts `restoreFile`): each blob is verified — authenticated, re-hashed with `hasher` —
   * before a byte of it is written; all-zero blobs are left as holes. Null when this cannot be done on a
   * worker (outside `withWorkers`, or the repository is not a local folder): the caller restores it itself.
   * Rejects with `MissingObjectError` or `IntegrityError` naming the first blob that could not be restored.
   */
  restoreFile(
    path: string,
    ids: BlobId[],
    hasher: ChunkIdHasher,
    progress: (bytes: number) => void,
  ): Promise<{ written: number; endsInHole: boolean }> | null {
    const backend = this.repo.backend;
    if (!this.#pool || !(backend instanceof LocalBackend) || !hasher.spec) return null;
    const blobs: RestoreBlobRef[] = [];
    for (const id of ids) {
      const e = this.repo.index.lookup(this.name, id);
      if (!e) return Promise.reject(new MissingObjectError("blob", id, "not in the index"));
      const pack = `${backend.root}/${packObjectName(e.packId)}`;
      blobs.push({ id, pack, packId: e.packId, offset: e.offset, length: e.length });
    }
    return this.#pool.restoreFile({ path, blobs, hasher: hasher.spec }, progress);
  }

  /**
   * Decodes `stored` (blob `id`, from `readStored`), verifying it — authenticated, and re-hashed with
   * `hasher` — and only then writes its plaintext at `offset` of the existing file at `path` (on a worker
   * while `withWorkers` runs); an all-zero plaintext is not written (a hole), and `zero` says so. Throws
   * `IntegrityError` naming the blob when it is damaged: then nothing is written. `stored` is given up.
   */
  async writeBlob(
    id: BlobId,
    stored: Uint8Array<ArrayBuffer>,
    hasher: ChunkIdHasher,
    path: string,
    offset: number,
  ): Promise<{ zero: boolean; length: number }> {
    const length = storedPlainLength(stored);
    if (this.#pool && hasher.spec) {
      const { zero } = await this.#pool.restoreBlob(id, stored, hasher, path, offset);
      return { zero, length };
    }
    const plain = await this.codec.decode(id, stored, hasher);
    const zero = isAllZero(plain);
    if (!zero) {
      const f = await Deno.open(path, { write: true });
      try {
        await f.seek(offset, Deno.SeekMode.Start);
        for (let off = 0; off < plain.length;) off += await f.write(plain.subarray(off));
      } finally {
        f.close();
      }
    }
    return { zero, length: plain.length };
  }
}

/**
 * The plaintext length a stored blob's header declares (bytes 4–7, little-endian): what `decode` yields
 * when the blob is authentic (it checks the header); 0 for a blob shorter than its header.
 */
export function storedPlainLength(stored: Uint8Array): number {
  if (stored.length < 8) return 0;
  return new DataView(stored.buffer, stored.byteOffset, 8).getUint32(4, true);
}
