/**
 * File backup: walks the include paths (one file system, never /proc /sys /dev /run, skipping
 * CACHEDIR.TAG folders and excluded paths), chunks each file as it streams, stores new blobs, builds a
 * tree per folder, and writes the snapshot last. An incremental reuses a parent's entry for a file
 * whose size, mtime, ctime and inode are unchanged — unless the parent saw it within 2 s of its start
 * (the racy-file rule), or one of its chunks is no longer stored. What cannot be read is listed in
 * `errors`, never silently left out.
 */
import { fromHex, toHex } from "./bytes.ts";
import { chunkFile } from "./chunker.ts";
import type { BlobId, ChunkIdHasher } from "./chunk_id.ts";
import { RepoError } from "./errors.ts";
import { CACHEDIR_SIGNATURE, compileExcludes, SYSTEM_EXCLUDES } from "./exclude.ts";
import { absolutePath, denoFileSystem, type FileSystem, joinPath, type ReadableFile } from "./fs.ts";
import type { Namespace } from "./repository.ts";
import { loadSnapshot, type Snapshot, writeSnapshot } from "./snapshot.ts";
import { createThrottle, type Throttle } from "./throttle.ts";
import { acquireLock, type Lock } from "./lock.ts";
import { loadTree, saveTree, type TreeEntry } from "./tree.ts";

/** Files whose mtime or ctime lies within this window before the parent's start are read again. */
export const RACY_WINDOW_MS = 2000;

/** Times a backup repeats its run when the commit check refuses it (gc removed blobs it reused). */
export const MAX_COMMIT_ATTEMPTS = 3;

/** Entries of one folder backed up at once, and files read at once in the whole run. */
const ENTRIES_AT_ONCE = 4;
const FILES_READ_AT_ONCE = 4;

/**
 * Files of at least the chunker's minimum are chunked on a worker: read in pieces of this size, with at most
 * `max` + 2 pieces of each file's bytes read but not yet stored or found stored (a bound on memory).
 */
const PIECE_BYTES = 2 * 1024 * 1024;

/**
 * Packs being uploaded at once before no further chunk starts being encoded (back-pressure: a slow store,
 * such as a BES over the network, holds the backup to its pace instead of letting finished packs pile up in
 * memory). Packs filled by the encodes already running may still start: with the defaults (8 encodes of about
 * 1 MiB, 16 MiB packs) one more at most.
 */
export const PACKS_IN_FLIGHT = 3;

/** Progress of a backup or restore. */
export interface Progress {
  files: number;
  bytes: number;
  currentPath: string;
  /** The bytes the whole run will read or write, when known in advance (images). */
  totalBytes?: number;
}

/** One thing that could not be backed up or restored. */
export interface EntryError {
  path: string;
  error: string;
}

/** Options of `backupFiles`. */
export interface BackupOptions {
  /** Folders or files to back up; relative ones are resolved against the working folder. */
  paths: string[];
  /** Host name recorded in the snapshot (default: the namespace name). */
  host?: string;
  /** Snapshot id of the parent: unchanged files are reused from it (an incremental). */
  parent?: string | null;
  excludePaths?: string[];
  excludePatterns?: string[];
  /** Stay on the file system of each include path (default true). */
  oneFileSystem?: boolean;
  /** Most blobs being encoded and stored at once (default 8). */
  concurrency?: number;
  /** Packs in upload at once before no further blob starts being encoded (default `PACKS_IN_FLIGHT`). */
  packsInFlight?: number;
  /** Limit on bytes read per second (null: none). */
  limitBytesPerSecond?: number | null;
  /** A throttle to use instead of one of `limitBytesPerSecond` (e.g. one that applies on a schedule). */
  throttle?: Throttle;
  progress?: (p: Progress) => void;
  fs?: FileSystem;
  /** The clock of the snapshot's times. */
  now?: () => Date;
  /** The writer lock's timing (defaults: lock.ts); its clock is the real one unless `now` is given here. */
  lock?: { refreshMs?: number; staleMs?: number; now?: () => Date };
}

/** The outcome of a backup. */
export interface BackupResult {
  snapshotId: string;
  files: number;
  dirs: number;
  /** Files taken unchanged from the parent without reading them. */
  reusedFiles: number;
  bytesRead: number;
  /** Plaintext bytes of blobs that were not yet stored. */
  bytesNew: number;
  /**
   * Of `bytesNew`, the plaintext bytes of new data chunks that did not compress and were stored raw (always
   * all of them with compression "none", which tries nothing). Encrypted data does not compress: a jump in
   * this share is what the control plane's anomaly guard looks for.
   */
  bytesNewIncompressible?: number;
  /** Bytes added to the repository (encoded blobs). */
  bytesStored: number;
  durationMs: number;
  errors: EntryError[];
  /** Size of every file in the snapshot, read or reused (what it protects). */
  totalBytes?: number;
}

/** An error of reading a source file (as opposed to storing it). */
class ReadFailure extends Error {}

function tagReadErrors(file: { read(p: Uint8Array): Promise<number | null> }) {
  return {
    async read(p: Uint8Array): Promise<number | null> {
      try {
        return await file.read(p);
      } catch (e) {
        throw new ReadFailure((e as Error).message, { cause: e });
      }
    },
  };
}

/** A chunk of a file being read on a worker, claimed for storing (see `BackupRun.#readStreamed`). */
interface Claimed {
  seq: number;
  id: BlobId;
  length: number;
  /** Whether it holds one of the run's encode slots. */
  slot: boolean;
}

interface PathNode {
  children: Map<string, PathNode>;
  included: boolean;
}

class BackupRun {
  readonly errors: EntryError[] = [];
  readonly refs = new Set<BlobId>();
  files = 0;
  dirs = 0;
  reusedFiles = 0;
  totalBytes = 0;
  bytesRead = 0;
  bytesNew = 0;
  bytesNewIncompressible = 0;
  bytesStored = 0;
  /** Blobs that may still start being encoded and stored, and the starts waiting for one to end. */
  #freeSlots: number;
  #slotQueue: (() => void)[] = [];
  /** Whether `#pump` waits for an upload to end. */
  #awaitingUploads = false;
  readonly excluded: (path: string) => boolean;
  readonly throttle: Throttle;
  readonly fs: FileSystem;
  readonly concurrency: number;
  readonly packsInFlight: number;
  /** The chunker's read windows, one per file being read, reused from file to file. */
  #windows: Uint8Array[] = [];
  /** Buffers of `PIECE_BYTES` that pieces of files are read into, back from the workers for reuse. */
  #pieces: ArrayBuffer[] = [];
  /** Files being read at once (and their waiters): reads, chunking and hashing of one overlap another's. */
  #readers = 0;
  #readerQueue: (() => void)[] = [];

  constructor(
    readonly ns: Namespace,
    readonly hasher: ChunkIdHasher,
    readonly options: BackupOptions,
    readonly parent: Snapshot | null,
  ) {
    this.excluded = compileExcludes(options.excludePaths, options.excludePatterns);
    this.throttle = options.throttle ?? createThrottle(options.limitBytesPerSecond);
    this.fs = options.fs ?? denoFileSystem;
    this.concurrency = Math.max(1, options.concurrency ?? 8);
    this.packsInFlight = Math.max(1, options.packsInFlight ?? PACKS_IN_FLIGHT);
    this.#freeSlots = this.concurrency;
  }

  report(path: string) {
    this.options.progress?.({ files: this.files, bytes: this.bytesRead, currentPath: path });
  }

  async #save(type: "data" | "tree", data: Uint8Array): Promise<BlobId> {
    const length = data.length;
    // The chunk is this run's own: it may be handed to a worker thread.
    // Not waiting for the upload of a pack this blob filled: `#pump` bounds the packs in upload for the whole
    // run, so a file's reader goes on at once (waiting held one of the FILES_READ_AT_ONCE places per upload).
    const r = await this.ns.saveBlob(type, data, this.hasher, true, false);
    if (r.isNew) {
      this.bytesNew += length;
      this.bytesStored += r.storedBytes;
      if (type === "data" && r.compressed === false) this.bytesNewIncompressible += length;
    }
    this.refs.add(r.id);
    return r.id;
  }

  /**
   * Starts `start` once fewer than `concurrency` blobs are being encoded and stored (a semaphore) and fewer
   * than `packsInFlight` packs are being uploaded; waiters start in order.
   */
  #acquireSlot(start: () => void): void {
    this.#slotQueue.push(start);
    this.#pump();
  }

  #releaseSlot(): void {
    this.#freeSlots++;
    this.#pump();
  }

  /** Starts waiting saves while slots are free and uploads leave room; else waits for an upload to end. */
  #pump(): void {
    while (this.#freeSlots > 0 && this.#slotQueue.length > 0) {
      if (this.ns.uploadsInFlight >= this.packsInFlight) {
        if (!this.#awaitingUploads) {
          this.#awaitingUploads = true;
          this.ns.uploadRoom(this.packsInFlight).then(() => {
            this.#awaitingUploads = false;
            this.#pump();
          });
        }
        return;
      }
      this.#freeSlots--;
      this.#slotQueue.shift()!();
    }
  }

  /** Starts storing a chunk, waiting first while `concurrency` saves are in flight. */
  async #saveBounded(data: Uint8Array): Promise<{ id: Promise<BlobId> }> {
    await new Promise<void>((r) => this.#acquireSlot(r));
    const p = this.#save("data", data);
    p.finally(() => this.#releaseSlot()).catch(() => {});
    return { id: p };
  }

  async saveTree(entries: TreeEntry[]): Promise<BlobId> {
    const r = await saveTree(this.ns, entries, this.hasher);
    if (r.isNew) this.bytesStored += r.storedBytes;
    this.refs.add(r.id);
    return r.id;
  }

  /** The parent snapshot's entries of folder `path` (from `entry`), or null when there are none. */
  async parentEntries(
    entry: TreeEntry | null | undefined,
    path: string,
  ): Promise<Map<string, TreeEntry> | null> {
    if (!entry || entry.type !== "dir" || !entry.subtree || !this.parent) return null;
    try {
      const tree = await loadTree(this.ns, entry.subtree, this.hasher);
      return new Map(tree.entries.map((e) => [e.name, e]));
    } catch (e) {
      if (!(e instanceof RepoError)) throw e;
      // A damaged parent tree only costs reuse (the files are read again), but it is said, naming the
      // parent snapshot: it will fail to restore there too.
      this.errors.push({
        path,
        error: `parent snapshot ${this.parent.id}: folder not reused, its tree is unreadable (${e.message})`,
      });
      return null;
    }
  }

  #canReuse(prev: TreeEntry | undefined, info: Deno.FileInfo): prev is TreeEntry {
    if (!prev || prev.type !== "file" || !this.parent || !prev.content) return false;
    const cutoff = Date.parse(this.parent.startTime) - RACY_WINDOW_MS;
    return prev.size === info.size && prev.mtimeMs === (info.mtime?.getTime() ?? 0) &&
      prev.ctimeMs === (info.ctime?.getTime() ?? 0) && prev.inode === (info.ino ?? 0) &&
      prev.mtimeMs < cutoff && (prev.ctimeMs ?? Infinity) < cutoff &&
      prev.content.every((id) => this.ns.has(id));
  }

  baseEntry(name: string, info: Deno.FileInfo): Omit<TreeEntry, "type" | "size"> {
    return {
      name,
      mode: (info.mode ?? 0) & 0o7777,
      uid: info.uid ?? 0,
      gid: info.gid ?? 0,
      mtimeMs: info.mtime?.getTime() ?? 0,
      xattrs: null,
    };
  }

  /** The entry of the file at `path`, read (or reused) and stored; null if it could not be read. */
  async file(
    path: string,
    name: string,
    info: Deno.FileInfo,
    prev: TreeEntry | undefined,
  ): Promise<TreeEntry | null> {
    const reuse = {
      ...this.baseEntry(name, info),
      type: "file" as const,
      ctimeMs: info.ctime?.getTime() ?? 0,
      inode: info.ino ?? 0,
      size: info.size,
    };
    this.report(path);
    if (this.#canReuse(prev, info)) {
      for (const id of prev.content!) this.refs.add(id);
      this.files++;
      this.reusedFiles++;
      this.totalBytes += info.size;
      return { ...reuse, content: prev.content };
    }
    while (this.#readers >= FILES_READ_AT_ONCE) await new Promise<void>((r) => this.#readerQueue.push(r));
    this.#readers++;
    try {
      return await this.#read(path, info, reuse);
    } finally {
      this.#readers--;
      this.#readerQueue.shift()?.();
    }
  }

  async #read(
    path: string,
    info: Deno.FileInfo,
    reuse: Omit<TreeEntry, "content">,
  ): Promise<TreeEntry | null> {
    let file;
    try {
      file = await this.fs.open(path);
    } catch (e) {
      this.errors.push({ path, error: `cannot open: ${(e as Error).message}` });
      return null;
    }
    if (info.size >= this.ns.repo.config.chunker.min) {
      const streamed = await this.#readStreamed(path, info, reuse, file);
      if (streamed !== false) return streamed;
    }
    const pending: Promise<BlobId>[] = [];
    let size = 0;
    let window: Uint8Array | undefined;
    try {
      const params = this.ns.repo.config.chunker;
      window = this.#windows.pop() ?? new Uint8Array(2 * params.max);
      const chunks = chunkFile(tagReadErrors(file), params, { window, alloc: (n) => this.ns.blobBuffer(n) });
      for await (const chunk of chunks) {
        await this.throttle.take(chunk.length);
        size += chunk.length;
        this.bytesRead += chunk.length;
        pending.push((await this.#saveBounded(chunk)).id);
        this.report(path);
      }
      const after = await file.stat();
      if (after.size !== size || after.mtime?.getTime() !== info.mtime?.getTime()) {
        this.errors.push({
          path,
          error: "changed while being read; the stored copy may mix old and new content",
        });
      }
    } catch (e) {
      await Promise.allSettled(pending);
      // Only a failed read is this file's problem; a failed store aborts the backup.
      if (!(e instanceof ReadFailure)) throw e;
      this.errors.push({ path, error: `cannot read: ${e.message}` });
      return null;
    } finally {
      file.close();
      if (window) this.#windows.push(window);
    }
    const content = await Promise.all(pending);
    this.files++;
    this.totalBytes += size;
    return { ...reuse, size, content };
  }

  /**
   * `#read` for a larger file: its bytes go to a worker in pieces, which cuts the chunks and computes their
   * ids; this thread claims the new ones (`Namespace.claim`), which the worker then encodes, and packs them.
   * False (with nothing read) when no worker can take it; the caller reads it here. Closes `file`.
   */
  async #readStreamed(
    path: string,
    info: Deno.FileInfo,
    reuse: Omit<TreeEntry, "content">,
    file: ReadableFile,
  ): Promise<TreeEntry | null | false> {
    const params = this.ns.repo.config.chunker;
    const limit = params.max + 2 * PIECE_BYTES;
    const content: BlobId[] = [];
    /** Chunks claimed, by seq: waiting for their stored form. */
    const claimed = new Map<number, Claimed>();
    let outstanding = 0; // bytes handed to the worker and not yet stored or found stored
    let done = false; // the worker has cut every byte it was given
    let failure: unknown = null;
    let wake: (() => void) | null = null;
    const changed = () => {
      const w = wake;
      wake = null;
      w?.();
    };
    const until = async (ready: () => boolean) => {
      while (!ready() && failure === null) await new Promise<void>((r) => wake = r);
      if (failure !== null) throw failure;
    };
    const settle = (length: number) => {
      outstanding -= length;
      changed();
    };
    // A claimed chunk is encoded (asked of the worker) once it has one of the run's `concurrency` slots, which
    // it holds until it is in a pack; no slot is given while `packsInFlight` packs are in upload (`#pump`).
    const release = (c: Claimed) => {
      if (c.slot) {
        c.slot = false;
        this.#releaseSlot();
      }
    };
    const session = this.ns.chunkSession(params, this.hasher, {
      cut: (chunks, last) => {
        try {
          const drop: number[] = [];
          for (const c of chunks) {
            content[c.seq] = c.id;
            this.refs.add(c.id);
            if (this.ns.claim(c.id)) {
              const claim: Claimed = { ...c, slot: false };
              claimed.set(c.seq, claim);
              this.#acquireSlot(() => {
                claim.slot = true;
                if (failure !== null || !claimed.has(c.seq)) return release(claim);
                session!.decide([c.seq], []);
              });
            } else {
              drop.push(c.seq);
              settle(c.length);
            }
          }
          session!.decide([], drop);
        } catch (e) {
          failure ??= e;
        }
        if (last) done = true;
        changed();
      },
      stored: (seq, parts) => {
        const c = claimed.get(seq);
        if (!c) return;
        claimed.delete(seq);
        try {
          const r = this.ns.storeClaimed("data", c.id, parts);
          this.bytesNew += c.length;
          this.bytesStored += r.storedBytes;
          if (!r.compressed) this.bytesNewIncompressible += c.length;
          // The pack this chunk filled is not waited for here: `#pump` bounds the packs in upload for the whole
          // run. Its failure fails this file while it is read, and the run at `flush` in any case.
          r.upload?.catch((e) => {
            failure ??= e;
            changed();
          });
          release(c);
          settle(c.length);
        } catch (e) {
          release(c);
          failure ??= e;
          changed();
        }
      },
      returned: (buffer) => {
        if (this.#pieces.length < 2 * FILES_READ_AT_ONCE) this.#pieces.push(buffer);
      },
      failed: (e) => {
        failure ??= e;
        changed();
      },
    });
    if (!session) return false;
    const reader = tagReadErrors(file);
    let size = 0;
    try {
      try {
        for (let eof = false; !eof;) {
          await until(() => outstanding + PIECE_BYTES <= limit);
          const buf = new Uint8Array(this.#pieces.pop() ?? new ArrayBuffer(PIECE_BYTES));
          let n = 0;
          while (n < buf.length) {
            const r = await reader.read(buf.subarray(n));
            if (r === null) {
              eof = true;
              break;
            }
            n += r;
          }
          await this.throttle.take(n);
          size += n;
          this.bytesRead += n;
          outstanding += n;
          session.push(buf, n, eof);
          this.report(path);
        }
        await until(() => done);
        const after = await file.stat();
        if (after.size !== size || after.mtime?.getTime() !== info.mtime?.getTime()) {
          this.errors.push({
            path,
            error: "changed while being read; the stored copy may mix old and new content",
          });
        }
      } catch (e) {
        if (!done && failure === null) {
          // The bytes not yet cut are dropped; the chunks already claimed are still stored.
          session.push(null, 0, true, true);
          await until(() => done).catch(() => {});
        }
        await until(() => claimed.size === 0).catch(() => {});
        // Only a failed read is this file's problem; a failed store aborts the backup.
        if (!(e instanceof ReadFailure) || failure !== null) throw failure ?? e;
        this.errors.push({ path, error: `cannot read: ${e.message}` });
        return null;
      }
      await until(() => claimed.size === 0);
    } finally {
      for (const c of claimed.values()) {
        release(c);
        this.ns.abandonClaim(c.id, failure ?? new RepoError("backup failed"));
      }
      claimed.clear();
      session.close();
      file.close();
    }
    this.files++;
    return { ...reuse, size, content };
  }

  /** The entry of `path` (any type); null when it is skipped or could not be read (then in `errors`). */
  async entry(
    path: string,
    name: string,
    rootDev: number,
    prev: TreeEntry | undefined,
  ): Promise<TreeEntry | null> {
    let info: Deno.FileInfo;
    try {
      info = await this.fs.lstat(path);
    } catch (e) {
      this.errors.push({ path, error: `cannot stat: ${(e as Error).message}` });
      return null;
    }
    if (info.isSymlink) {
      try {
        const target = await this.fs.readLink(path);
        return { ...this.baseEntry(name, info), type: "symlink", size: 0, target };
      } catch (e) {
        this.errors.push({ path, error: `cannot read link: ${(e as Error).message}` });
        return null;
      }
    }
    if (info.isFile) return await this.file(path, name, info, prev);
    if (info.isDirectory) {
      const base = { ...this.baseEntry(name, info), type: "dir" as const, size: 0 };
      if (this.options.oneFileSystem !== false && info.dev !== rootDev) {
        // A mount point of another file system: kept as an empty folder, as restic does.
        this.dirs++;
        return { ...base, subtree: await this.saveTree([]) };
      }
      if (await this.#isCacheDir(path)) return null;
      const subtree = await this.dir(path, rootDev, await this.parentEntries(prev, path));
      return subtree === null ? null : { ...base, subtree };
    }
    this.errors.push({ path, error: "special file (device, socket or fifo) not backed up" });
    return null;
  }

  async #isCacheDir(path: string): Promise<boolean> {
    let f;
    try {
      f = await this.fs.open(joinPath(path, "CACHEDIR.TAG"));
    } catch {
      return false;
    }
    try {
      const buf = new Uint8Array(CACHEDIR_SIGNATURE.length);
      let n = 0;
      while (n < buf.length) {
        const r = await f.read(buf.subarray(n));
        if (r === null) break;
        n += r;
      }
      return new TextDecoder().decode(buf.subarray(0, n)) === CACHEDIR_SIGNATURE;
    } catch {
      return false;
    } finally {
      f.close();
    }
  }

  /** Stores the folder at `path` and everything below it; returns its tree id, or null if unreadable. */
  async dir(path: string, rootDev: number, prev: Map<string, TreeEntry> | null): Promise<BlobId | null> {
    let names: string[];
    try {
      names = (await this.fs.readDir(path)).sort();
    } catch (e) {
      this.errors.push({ path, error: `cannot list folder: ${(e as Error).message}` });
      return null;
    }
    this.dirs++;
    // Up to ENTRIES_AT_ONCE entries are backed up at once, the next one starting as soon as any of them
    // ends (their tree order is kept).
    const entries: (TreeEntry | null)[] = [];
    const running = new Set<Promise<void>>();
    let failure: { error: unknown } | null = null as { error: unknown } | null;
    for (const name of names) {
      const child = joinPath(path, name);
      if (name.includes("\uFFFD")) {
        this.errors.push({
          path: child,
          error: "name is not valid UTF-8 (Deno cannot open it); not backed up",
        });
        continue;
      }
      if (SYSTEM_EXCLUDES.includes(child) || this.excluded(child)) continue;
      const slot = entries.push(null) - 1;
      // A failure (of storing, not of reading: those are in `errors`) ends the backup: it is kept and thrown.
      const task: Promise<void> = this.entry(child, name, rootDev, prev?.get(name))
        .then((e) => void (entries[slot] = e), (e) => void (failure ??= { error: e }))
        .finally(() => running.delete(task));
      running.add(task);
      if (running.size >= ENTRIES_AT_ONCE) await Promise.race(running);
      if (failure) break;
    }
    await Promise.all(running);
    if (failure) throw failure.error;
    return await this.saveTree(entries.filter((e): e is TreeEntry => e !== null));
  }

  /** Stores the path skeleton from "/" down to the include paths; returns the root tree id. */
  async skeleton(path: string, node: PathNode, prev: Map<string, TreeEntry> | null): Promise<BlobId> {
    const entries: TreeEntry[] = [];
    for (const [name, child] of [...node.children.entries()].sort()) {
      const childPath = joinPath(path, name);
      if (child.included) {
        const info = await this.fs.lstat(childPath);
        const e = await this.entry(childPath, name, info.dev, prev?.get(name));
        if (e) entries.push(e);
        continue;
      }
      let info: Deno.FileInfo;
      try {
        info = await this.fs.lstat(childPath);
      } catch (e) {
        this.errors.push({ path: childPath, error: `cannot stat: ${(e as Error).message}` });
        continue;
      }
      const prevEntry = prev?.get(name);
      const subtree = await this.skeleton(childPath, child, await this.parentEntries(prevEntry, childPath));
      entries.push({ ...this.baseEntry(name, info), type: "dir", size: 0, subtree });
    }
    return await this.saveTree(entries);
  }
}

/**
 * Backs up `options.paths` into namespace `ns` and writes a snapshot, holding a writer lock (lock.ts) from
 * before it decides which blobs exist until it is done. Throws (writing no snapshot) if an include path
 * does not exist, the repository fails, or the lock lapsed (`Lock.check`); unreadable entries end up in
 * `errors`. Blobs are compressed and encrypted on worker threads while this thread reads, chunks and packs.
 */
export function backupFiles(ns: Namespace, options: BackupOptions): Promise<BackupResult> {
  return ns.withWorkers(() => backupFilesHere(ns, options));
}

async function backupFilesHere(ns: Namespace, options: BackupOptions): Promise<BackupResult> {
  const now = options.now ?? (() => new Date());
  const start = now();
  const t0 = performance.now();
  const fs = options.fs ?? denoFileSystem;
  if (options.paths.length === 0) throw new RepoError("Nothing to back up: no paths given");
  const paths = [...new Set(options.paths.map((p) => absolutePath(p)))].sort();
  for (const p of paths) {
    try {
      await fs.lstat(p);
    } catch (e) {
      throw new RepoError(`Cannot back up ${p}: ${(e as Error).message}`);
    }
  }
  return await withBackupLock(ns, options, (lock) => backupLocked(ns, options, paths, lock, start, t0));
}

/**
 * Runs `body` holding a backup writer lock (lock.ts) on `ns`, released afterwards; when `body` throws, the
 * lock is released on a best-effort basis (one left behind goes stale) and `body`'s error is thrown.
 * Shared by file and image backups.
 */
export async function withBackupLock<T>(
  ns: Namespace,
  options: { parent?: string | null; lock?: BackupOptions["lock"] },
  body: (lock: Lock) => Promise<T>,
): Promise<T> {
  const lock = await acquireLock(ns.repo.backend, {
    kind: "backup",
    namespace: ns.name,
    parent: options.parent ?? null,
    ...options.lock,
  });
  let result: T;
  try {
    result = await body(lock);
  } catch (e) {
    await lock.release().catch(() => {}); // a lock left behind goes stale; the error that matters is `e`
    throw e;
  }
  await lock.release();
  return result;
}

/** The id salt of a new snapshot: none with dedup, else the parent's (so the chain dedups) or a new one. */
export function snapshotSalt(ns: Namespace, parent: Snapshot | null): Uint8Array | null {
  if (ns.repo.config.dedup) return null;
  return parent?.chainSalt ? fromHex(parent.chainSalt) : crypto.getRandomValues(new Uint8Array(32));
}

/**
 * The commit check shared by file and image backups: runs `attempt` (one whole pass storing what the
 * snapshot needs) after refreshing the dead packs, flushes, and repeats it while gc has condemned or deleted
 * a blob the pass reused (such blobs become absent for `ns`, so the next pass stores them again). Throws
 * after MAX_COMMIT_ATTEMPTS refused passes; `what` names the blobs in that error ("blobs", "chunks").
 */
export async function passCommitCheck<R extends { refs: Set<BlobId> }>(
  ns: Namespace,
  what: string,
  attempt: () => Promise<R>,
): Promise<R> {
  for (let n = 0;; n++) {
    await ns.repo.refreshDeadPacks();
    const pass = await attempt();
    await ns.flush();
    const refused = await ns.checkCommit(pass.refs);
    if (refused.length === 0) return pass;
    if (n >= MAX_COMMIT_ATTEMPTS - 1) {
      throw new RepoError(
        `Cannot commit the snapshot: ${refused.length} ${what} it needs were removed by gc again and again`,
      );
    }
  }
}

async function backupLocked(
  ns: Namespace,
  options: BackupOptions,
  paths: string[],
  lock: Lock,
  start: Date,
  t0: number,
): Promise<BackupResult> {
  const now = options.now ?? (() => new Date());
  const fs = options.fs ?? denoFileSystem;
  const parent = options.parent ? await loadSnapshot(ns, options.parent) : null;
  const salt = snapshotSalt(ns, parent);
  const root: PathNode = { children: new Map(), included: false };
  for (const p of paths) {
    let node = root;
    if (p === "/") {
      root.included = true;
      break;
    }
    for (const part of p.slice(1).split("/")) {
      if (node.included) break;
      let next = node.children.get(part);
      if (!next) node.children.set(part, next = { children: new Map(), included: false });
      node = next;
    }
    node.included = true;
  }
  // The commit check: gc may have condemned (or deleted) a pack holding a blob this run reused. Such
  // blobs become absent for `ns`, and the run is repeated: unchanged files whose chunks are affected
  // are read again, trees are rebuilt, and only what is missing is uploaded.
  const { run, tree } = await passCommitCheck(ns, "blobs", async () => {
    const run = new BackupRun(ns, ns.hasher(salt), options, parent);
    const prevRoot = parent
      ? await run.parentEntries({ type: "dir", subtree: parent.tree } as TreeEntry, "/")
      : null;
    let tree: BlobId;
    if (root.included) {
      const info = await fs.lstat("/");
      tree = (await run.dir("/", info.dev, prevRoot)) ?? await run.saveTree([]);
    } else {
      tree = await run.skeleton("/", root, prevRoot);
    }
    return { run, tree, refs: run.refs };
  });
  // Last, the lock: had it lapsed, gc may have condemned and deleted packs since the commit check.
  await lock.check();
  const end = now();
  const durationMs = Math.round(performance.now() - t0);
  const stats = {
    files: run.files,
    dirs: run.dirs,
    bytesRead: run.bytesRead,
    bytesNew: run.bytesNew,
    bytesStored: run.bytesStored,
    durationMs,
  };
  const snapshotId = await writeSnapshot(ns, {
    version: 1,
    namespace: ns.name,
    host: options.host ?? ns.name,
    kind: parent ? "incremental" : "full",
    paths,
    parent: parent?.id ?? null,
    tree,
    startTime: start.toISOString(),
    endTime: end.toISOString(),
    stats,
    errors: run.errors,
    chainSalt: salt ? toHex(salt) : null,
  }, run.refs);
  return {
    snapshotId,
    ...stats,
    reusedFiles: run.reusedFiles,
    errors: run.errors,
    totalBytes: run.totalBytes,
    bytesNewIncompressible: run.bytesNewIncompressible,
  };
}
