/**
 * Image backup and restore: a block device or image file read in fixed chunks of the repository's
 * `imageChunkSize` (4 MiB, as Proxmox Backup Server), every chunk re-read on each backup (a device has no
 * mtime to trust) and deduplicated by its id, so an incremental stores only the chunks that changed.
 * All-zero chunks are stored once and known by their id: a restore never reads them, and writes them as
 * holes in a file, or as zeros on a device unless the caller says the device already reads as zeros.
 *
 * An image snapshot (kind "image") is an ordinary snapshot whose tree holds the image as one file entry at
 * its full absolute path — its content list the chunk ids in order — and whose body records the image
 * (`ImageInfo`), so ls, find, verify, gc and copy treat it like any other. docs/repository-format.md
 * §Image snapshots describes it.
 */
import { type BackupResult, passCommitCheck, type Progress, snapshotSalt, withBackupLock } from "./backup.ts";
import { fromHex, toHex } from "./bytes.ts";
import { fixedFileChunks } from "./chunker.ts";
import type { BlobId, ChunkIdHasher } from "./chunk_id.ts";
import { RepoError } from "./errors.ts";
import { absolutePath, parentDir, syncDir } from "./fs.ts";
import type { Lock } from "./lock.ts";
import type { Namespace } from "./repository.ts";
import { type ImageInfo, loadSnapshot, type Snapshot, writeSnapshot } from "./snapshot.ts";
import { createThrottle, type Throttle } from "./throttle.ts";
import { loadTree, saveTree, type TreeEntry } from "./tree.ts";

/** Chunks a restore reads and verifies ahead of the one it writes (a bound on memory: 4 × 4 MiB). */
const CHUNKS_AHEAD = 4;

/** Options of `backupImage`. */
export interface ImageBackupOptions {
  /** The block device or image file; a relative path is resolved against the working folder. */
  path: string;
  /** Host name recorded in the snapshot (default: the namespace name). */
  host?: string;
  /** Snapshot id of an earlier image snapshot: recorded as the parent (and, without dedup, its id salt). */
  parent?: string | null;
  /** Most chunks being encoded and stored at once (default 8). */
  concurrency?: number;
  /** Limit on bytes read per second (null: none). */
  limitBytesPerSecond?: number | null;
  /** A throttle to use instead of one of `limitBytesPerSecond` (e.g. one that applies on a schedule). */
  throttle?: Throttle;
  progress?: (p: Progress) => void;
  /** The clock of the snapshot's times. */
  now?: () => Date;
  /** The writer lock's timing (defaults: lock.ts). */
  lock?: { refreshMs?: number; staleMs?: number; now?: () => Date };
}

/** The outcome of an image backup (`files` is 1, `dirs` and `reusedFiles` 0). */
export interface ImageBackupResult extends BackupResult {
  /** Bytes of the image. */
  size: number;
  chunks: number;
  /** All-zero chunks (stored once, whatever their number). */
  zeroChunks: number;
  /** Chunks that were not yet stored; the others were already in the repository. */
  newChunks: number;
}

/** Options of `restoreImage`. */
export interface ImageRestoreOptions {
  /** A regular file (created, or replaced with `overwrite`) or a block device (written with `overwrite`). */
  target: string;
  /** Replace a non-empty file; write over a block device. Without it both are refused. */
  overwrite?: boolean;
  /**
   * The target block device is known to read as zeros (new, discarded or zeroed): its all-zero chunks
   * are skipped instead of written. Default false — zeros are written, the safe choice, since a device
   * that held data would otherwise keep the old bytes there. Regular files always get holes.
   */
  targetZeroed?: boolean;
  /** Limit on bytes written per second (null: none). */
  limitBytesPerSecond?: number | null;
  progress?: (p: Progress) => void;
}

/** A chunk of an image that could not be restored. */
export interface ImageChunkError {
  /** Byte offset of the chunk in the image. */
  offset: number;
  chunk: BlobId;
  error: string;
}

/** The outcome of an image restore. */
export interface ImageRestoreResult {
  /** The path written (symlinks resolved). */
  target: string;
  blockDevice: boolean;
  size: number;
  chunks: number;
  zeroChunks: number;
  /** Bytes written (zero chunks left as holes, or skipped on a zeroed device, are not counted). */
  bytesWritten: number;
  /**
   * Chunks that could not be restored (damaged or missing data). A file target is then not created (nor
   * an existing one replaced); on a block device those ranges keep their old bytes. Never wrong bytes.
   */
  errors: ImageChunkError[];
}

function errorText(e: unknown): string {
  // Deno grants access to devices (anything below /dev) only to a program run with --allow-all.
  if (e instanceof Deno.errors.NotCapable) return `${e.message} (devices need deno run --allow-all)`;
  return e instanceof Error ? e.message : String(e);
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

/** The size of the device or file open as `f` (its end), leaving it positioned at the start. */
async function sizeOf(f: Deno.FsFile): Promise<number> {
  const size = await f.seek(0, Deno.SeekMode.End);
  await f.seek(0, Deno.SeekMode.Start);
  return size;
}

/** The id of an all-zero chunk of each length, computed once. */
class ZeroIds {
  #ids = new Map<number, BlobId>();
  constructor(readonly hasher: ChunkIdHasher) {}

  of(length: number): BlobId {
    let id = this.#ids.get(length);
    if (id === undefined) {
      id = this.hasher.id(new Uint8Array(length));
      this.#ids.set(length, id);
    }
    return id;
  }
}

/** One reading of the image: its chunks stored, their ids in order. */
class ImageRun {
  readonly refs = new Set<BlobId>();
  readonly errors: { path: string; error: string }[] = [];
  bytesRead = 0;
  bytesNew = 0;
  bytesNewIncompressible = 0;
  bytesStored = 0;
  chunks = 0;
  zeroChunks = 0;
  newChunks = 0;
  #inflight = new Set<Promise<unknown>>();
  #zeroIds = new Map<number, BlobId>();

  constructor(
    readonly ns: Namespace,
    readonly hasher: ChunkIdHasher,
    readonly throttle: Throttle,
    readonly concurrency: number,
  ) {}

  async #save(data: Uint8Array, handOver: boolean): Promise<BlobId> {
    const length = data.length;
    const r = await this.ns.saveBlob("data", data, this.hasher, handOver);
    if (r.isNew) {
      this.newChunks++;
      this.bytesNew += length;
      this.bytesStored += r.storedBytes;
      if (r.compressed === false) this.bytesNewIncompressible += length;
    }
    this.refs.add(r.id);
    return r.id;
  }

  /** Starts storing a chunk (handed over), waiting first while `concurrency` saves are in flight. */
  async #saveBounded(data: Uint8Array): Promise<{ id: Promise<BlobId> }> {
    while (this.#inflight.size >= this.concurrency) await Promise.race(this.#inflight);
    const p = this.#save(data, true);
    const tracked = p.then(() => {}, () => {});
    this.#inflight.add(tracked);
    tracked.finally(() => this.#inflight.delete(tracked));
    return { id: p };
  }

  /** Reads the open image `f` of `size` bytes; returns its chunk ids in order and the bytes read. */
  async read(
    f: Deno.FsFile,
    path: string,
    size: number,
    chunkSize: number,
    progress?: (p: Progress) => void,
  ): Promise<BlobId[]> {
    const pending: Promise<BlobId>[] = [];
    let offset = 0;
    const source = {
      read: async (p: Uint8Array) => {
        try {
          return await f.read(p);
        } catch (e) {
          throw new RepoError(`Cannot read image ${path} in the chunk at offset ${offset}: ${errorText(e)}`);
        }
      },
    };
    try {
      const chunks = fixedFileChunks(source, chunkSize, { alloc: (n) => this.ns.blobBuffer(n) });
      for await (const { data, zero } of chunks) {
        const length = data.length;
        await this.throttle.take(length);
        this.chunks++;
        if (zero) {
          // Stored once (awaited: the chunker reuses a zero chunk's buffer), then known by its id.
          this.zeroChunks++;
          let id = this.#zeroIds.get(length);
          if (id === undefined) {
            id = await this.#save(data, false);
            this.#zeroIds.set(length, id);
          }
          this.refs.add(id);
          pending.push(Promise.resolve(id));
        } else {
          pending.push((await this.#saveBounded(data)).id);
        }
        offset += length;
        this.bytesRead += length;
        progress?.({ files: 0, bytes: this.bytesRead, currentPath: path, totalBytes: size });
      }
    } catch (e) {
      await Promise.allSettled(pending);
      throw e;
    }
    return await Promise.all(pending);
  }
}

/**
 * Backs up the block device or image file `options.path` into namespace `ns` as an image snapshot,
 * holding a writer lock as `backupFiles` does. Throws (writing no snapshot) if the path is missing, not a
 * regular file or block device, cannot be read, or the repository fails. A size or (for a file) mtime that
 * changed while it was read is listed in `errors`: the image may then be inconsistent (back up a snapshot
 * of a device — LVM, btrfs — or an unmounted one).
 */
export function backupImage(ns: Namespace, options: ImageBackupOptions): Promise<ImageBackupResult> {
  return ns.withWorkers(() => backupImageHere(ns, options));
}

async function backupImageHere(ns: Namespace, options: ImageBackupOptions): Promise<ImageBackupResult> {
  const now = options.now ?? (() => new Date());
  const start = now();
  const t0 = performance.now();
  const path = absolutePath(options.path);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    throw new RepoError(`Cannot back up image ${path}: ${errorText(e)}`);
  }
  if (!info.isFile && !info.isBlockDevice) {
    throw new RepoError(`Cannot back up image ${path}: not a block device or regular file`);
  }
  return await withBackupLock(ns, options, (lock) => backupImageLocked(ns, options, path, lock, start, t0));
}

/** The image's file entry (metadata of the device node or file, followed through symlinks). */
function imageEntry(path: string, info: Deno.FileInfo, size: number, content: BlobId[]): TreeEntry {
  return {
    name: baseName(path),
    type: "file",
    mode: (info.mode ?? 0) & 0o7777,
    uid: info.uid ?? 0,
    gid: info.gid ?? 0,
    mtimeMs: info.mtime?.getTime() ?? 0,
    size,
    content,
    xattrs: null,
  };
}

/** Stores the folders from "/" down to the image's folder around `entry`; returns the root tree id. */
async function saveSkeleton(run: ImageRun, path: string, entry: TreeEntry): Promise<BlobId> {
  let entries = [entry];
  for (let dir = parentDir(path); dir !== "/"; dir = parentDir(dir)) {
    const r = await saveTree(run.ns, entries, run.hasher);
    if (r.isNew) run.bytesStored += r.storedBytes;
    run.refs.add(r.id);
    const info = await Deno.lstat(dir);
    entries = [{
      name: baseName(dir),
      type: "dir",
      mode: (info.mode ?? 0) & 0o7777,
      uid: info.uid ?? 0,
      gid: info.gid ?? 0,
      mtimeMs: info.mtime?.getTime() ?? 0,
      size: 0,
      subtree: r.id,
      xattrs: null,
    }];
  }
  const root = await saveTree(run.ns, entries, run.hasher);
  if (root.isNew) run.bytesStored += root.storedBytes;
  run.refs.add(root.id);
  return root.id;
}

async function backupImageLocked(
  ns: Namespace,
  options: ImageBackupOptions,
  path: string,
  lock: Lock,
  start: Date,
  t0: number,
): Promise<ImageBackupResult> {
  const now = options.now ?? (() => new Date());
  const parent: Snapshot | null = options.parent ? await loadSnapshot(ns, options.parent) : null;
  if (parent && parent.kind !== "image") {
    throw new RepoError(`Parent snapshot ${parent.id} is a ${parent.kind} backup of files, not an image`);
  }
  const salt = snapshotSalt(ns, parent);
  const chunkSize = ns.repo.config.imageChunkSize;
  const throttle = options.throttle ?? createThrottle(options.limitBytesPerSecond);
  // The commit check, as in a file backup: when gc removed a chunk this run found already stored, the
  // image is read again and only what is missing is stored.
  const { run, tree, image } = await passCommitCheck(ns, "chunks", async () => {
    const run = new ImageRun(ns, ns.hasher(salt), throttle, Math.max(1, options.concurrency ?? 8));
    const f = await Deno.open(path, { read: true }).catch((e) => {
      throw new RepoError(`Cannot back up image ${path}: ${errorText(e)}`);
    });
    let content: BlobId[];
    let size: number;
    let before: Deno.FileInfo;
    try {
      before = await f.stat();
      size = await sizeOf(f);
      content = await run.read(f, path, size, chunkSize, options.progress);
      const after = await f.stat();
      if (run.bytesRead !== size) {
        run.errors.push({
          path,
          error: `its size changed while being read (${size} bytes at the start, ${run.bytesRead} read)`,
        });
      } else if (before.isFile && after.mtime?.getTime() !== before.mtime?.getTime()) {
        run.errors.push({
          path,
          error: "changed while being read; the stored image may mix old and new content",
        });
      }
    } finally {
      f.close();
    }
    const image: ImageInfo = {
      path,
      size: run.bytesRead,
      chunkSize,
      blockDevice: before.isBlockDevice === true,
    };
    const tree = await saveSkeleton(run, path, imageEntry(path, before, run.bytesRead, content));
    return { run, tree, image, refs: run.refs };
  });
  await lock.check();
  const durationMs = Math.round(performance.now() - t0);
  const stats = {
    files: 1,
    dirs: 0,
    bytesRead: run.bytesRead,
    bytesNew: run.bytesNew,
    bytesStored: run.bytesStored,
    durationMs,
  };
  const snapshotId = await writeSnapshot(ns, {
    version: 1,
    namespace: ns.name,
    host: options.host ?? ns.name,
    kind: "image",
    paths: [path],
    parent: parent?.id ?? null,
    tree,
    startTime: start.toISOString(),
    endTime: now().toISOString(),
    stats,
    errors: run.errors,
    chainSalt: salt ? toHex(salt) : null,
    image,
  }, run.refs);
  return {
    snapshotId,
    ...stats,
    reusedFiles: 0,
    errors: run.errors,
    size: image.size,
    chunks: run.chunks,
    zeroChunks: run.zeroChunks,
    newChunks: run.newChunks,
    bytesNewIncompressible: run.bytesNewIncompressible,
  };
}

/** The image's file entry in snapshot `snap`, found along its path. Throws if the tree does not hold it. */
async function findImageEntry(ns: Namespace, snap: Snapshot, hasher: ChunkIdHasher): Promise<TreeEntry> {
  const image = snap.image!;
  const parts = image.path.split("/").filter((p) => p !== "");
  let treeId = snap.tree;
  for (let i = 0; i < parts.length; i++) {
    const tree = await loadTree(ns, treeId, hasher);
    const e = tree.entries.find((x) => x.name === parts[i]);
    const last = i === parts.length - 1;
    if (!e || (last ? e.type !== "file" : e.type !== "dir")) {
      throw new RepoError(`Snapshot ${snap.id} does not hold its image ${image.path} in its tree`);
    }
    if (last) {
      const chunks = Math.ceil(image.size / image.chunkSize);
      if (e.size !== image.size || e.content!.length !== chunks) {
        throw new RepoError(
          `Snapshot ${snap.id}: the tree entry of ${image.path} (${e.size} bytes, ${
            e.content!.length
          } chunks) does not match its image record (${image.size} bytes, ${chunks} chunks)`,
        );
      }
      return e;
    }
    treeId = e.subtree!;
  }
  throw new RepoError(`Snapshot ${snap.id} records an invalid image path ${image.path}`);
}

/** Whether absolute `path` is `dir` or lies below it. */
function isInside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === "/" ? "/" : dir + "/");
}

/**
 * Devices holding a mounted file system or active swap: their own paths (symlinks resolved) from
 * /proc/self/mounts and /proc/swaps. Empty where /proc is not readable.
 */
async function busyDevices(): Promise<string[]> {
  const out: string[] = [];
  for (const [file, column] of [["/proc/self/mounts", 0], ["/proc/swaps", 0]] as const) {
    let text = "";
    try {
      text = await Deno.readTextFile(file);
    } catch {
      continue;
    }
    for (const line of text.split("\n")) {
      const source = line.split(/\s+/)[column];
      if (!source?.startsWith("/dev/")) continue;
      out.push(await Deno.realPath(source).catch(() => source));
    }
  }
  return out;
}

/**
 * Checks `target` before anything is written: a missing path becomes a new file (never under /dev, where
 * a mistyped device name would silently fill a file in memory), a folder or other special file is
 * refused, a non-empty file needs `overwrite`, a block device needs `overwrite`, must not be mounted (nor
 * a partition of it) and must hold the whole image.
 */
async function checkTarget(
  target: string,
  size: number,
  overwrite: boolean,
): Promise<{ path: string; blockDevice: boolean }> {
  let info: Deno.FileInfo | null = null;
  try {
    info = await Deno.stat(target);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new RepoError(`Cannot restore the image to ${target}: ${errorText(e)}`);
    }
  }
  if (info === null) {
    if (isInside(target, "/dev")) {
      throw new RepoError(`Cannot restore the image to ${target}: no such device`);
    }
    return { path: target, blockDevice: false };
  }
  const path = await Deno.realPath(target);
  if (info.isDirectory) {
    throw new RepoError(
      `Image restore target ${target} is a folder; give the path of a file or block device`,
    );
  }
  if (info.isBlockDevice) {
    if (!overwrite) {
      throw new RepoError(
        `Image restore target ${target} is a block device: its contents are written over only with overwrite`,
      );
    }
    for (const busy of await busyDevices()) {
      if (busy === path || (busy.startsWith(path) && /^p?\d+$/.test(busy.slice(path.length)))) {
        throw new RepoError(
          `Image restore target ${target} is in use (${busy} is mounted or swap); unmount it`,
        );
      }
    }
    const f = await Deno.open(path, { read: true });
    let deviceSize: number;
    try {
      deviceSize = await sizeOf(f);
    } finally {
      f.close();
    }
    if (deviceSize < size) {
      throw new RepoError(
        `Block device ${target} holds ${deviceSize} bytes, less than the image's ${size}; nothing written`,
      );
    }
    return { path, blockDevice: true };
  }
  if (!info.isFile) {
    throw new RepoError(`Image restore target ${target} is neither a regular file nor a block device`);
  }
  if (info.size > 0 && !overwrite) {
    throw new RepoError(`Image restore target ${target} exists and is not empty; remove it or overwrite`);
  }
  return { path, blockDevice: false };
}

/**
 * Restores image snapshot `snapshotId` of `ns` to `options.target`. Every chunk is authenticated and
 * re-hashed before it is written at its offset; all-zero chunks are known by their id and never read.
 * A file target is written to a temporary file beside it, made sparse (zero chunks are holes), synced,
 * and renamed into place only when every chunk was restored. A block device is written in place and
 * synced; its zero chunks are written as zeros unless `targetZeroed`. Throws before writing anything if
 * the snapshot is not an image or the target is refused (see `checkTarget`), and on a write failure
 * (naming the offset); damaged or missing chunks are listed in `errors` (see `ImageRestoreResult`).
 */
export function restoreImage(
  ns: Namespace,
  snapshotId: string,
  options: ImageRestoreOptions,
): Promise<ImageRestoreResult> {
  return ns.withWorkers(() => restoreImageHere(ns, snapshotId, options));
}

async function restoreImageHere(
  ns: Namespace,
  snapshotId: string,
  options: ImageRestoreOptions,
): Promise<ImageRestoreResult> {
  const snap = await loadSnapshot(ns, snapshotId);
  if (snap.kind !== "image" || !snap.image) {
    throw new RepoError(`Snapshot ${snapshotId} is a ${snap.kind} backup of files, not an image`);
  }
  const hasher = ns.hasher(snap.chainSalt ? fromHex(snap.chainSalt) : null);
  const entry = await findImageEntry(ns, snap, hasher);
  const { size, chunkSize } = snap.image;
  const requested = absolutePath(options.target);
  const { path, blockDevice } = await checkTarget(requested, size, options.overwrite ?? false);
  const result: ImageRestoreResult = {
    target: path,
    blockDevice,
    size,
    chunks: entry.content!.length,
    zeroChunks: 0,
    bytesWritten: 0,
    errors: [],
  };
  let tmp: string | null = null;
  let f: Deno.FsFile;
  if (blockDevice) {
    f = await Deno.open(path, { write: true });
  } else {
    await Deno.mkdir(parentDir(path), { recursive: true });
    tmp = `${parentDir(path)}/.cadres-restore-${crypto.randomUUID()}`;
    f = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
  }
  try {
    try {
      if (!blockDevice) await f.truncate(size); // all holes: zero chunks are simply not written
      await writeChunks(ns, hasher, f, entry.content!, { size, chunkSize, blockDevice, options, result });
      await f.sync();
    } finally {
      f.close();
    }
    if (tmp !== null) {
      if (result.errors.length > 0) {
        await Deno.remove(tmp);
      } else {
        await Deno.rename(tmp, path);
        await syncDir(parentDir(path));
      }
      tmp = null;
    }
  } catch (e) {
    if (tmp !== null) await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  return result;
}

async function writeChunks(
  ns: Namespace,
  hasher: ChunkIdHasher,
  f: Deno.FsFile,
  ids: BlobId[],
  run: {
    size: number;
    chunkSize: number;
    blockDevice: boolean;
    options: ImageRestoreOptions;
    result: ImageRestoreResult;
  },
): Promise<void> {
  const { size, chunkSize, blockDevice, options, result } = run;
  const throttle = createThrottle(options.limitBytesPerSecond);
  const zeroIds = new ZeroIds(hasher);
  const lengthOf = (i: number) => Math.min(chunkSize, size - i * chunkSize);
  const isZero = (i: number) => ids[i] === zeroIds.of(lengthOf(i));
  const writeZeros = blockDevice && !options.targetZeroed;
  const zeros = writeZeros ? new Uint8Array(chunkSize) : null;
  // Up to CHUNKS_AHEAD chunks are read and verified ahead of the one being written; zero chunks never are.
  const ahead: (Promise<Uint8Array> | null)[] = [];
  let next = 0;
  const writeAt = async (offset: number, data: Uint8Array) => {
    try {
      await f.seek(offset, Deno.SeekMode.Start);
      let off = 0;
      while (off < data.length) off += await f.write(data.subarray(off));
    } catch (e) {
      throw new RepoError(`Cannot write ${result.target} at offset ${offset}: ${errorText(e)}`);
    }
    result.bytesWritten += data.length;
  };
  for (let i = 0; i < ids.length; i++) {
    while (next < ids.length && next <= i + CHUNKS_AHEAD) {
      if (isZero(next)) {
        ahead.push(null);
      } else {
        const load = ns.loadBlob(ids[next], hasher);
        load.catch(() => {}); // awaited in turn; one failing early is not left unhandled
        ahead.push(load);
      }
      next++;
    }
    const load = ahead.shift()!;
    const offset = i * chunkSize;
    const length = lengthOf(i);
    // A file target with a damaged chunk is discarded: the rest is only verified, to name every damage.
    const writing = blockDevice || result.errors.length === 0;
    if (load === null) {
      result.zeroChunks++;
      if (zeros && writing) {
        await throttle.take(length);
        await writeAt(offset, zeros.subarray(0, length));
      }
    } else {
      let plain: Uint8Array | null = null;
      try {
        plain = await load;
        if (plain.length !== length) {
          throw new RepoError(`it holds ${plain.length} bytes where the image needs ${length}`);
        }
      } catch (e) {
        result.errors.push({ offset, chunk: ids[i], error: errorText(e) });
        plain = null;
      }
      if (plain !== null && writing) {
        await throttle.take(length);
        await writeAt(offset, plain);
      }
    }
    options.progress?.({
      files: 0,
      bytes: offset + length,
      currentPath: result.target,
      totalBytes: size,
    });
  }
}
