/**
 * Restore: writes a snapshot's files below a target folder at their full absolute paths
 * (/home/a/x → <target>/home/a/x), with mode, mtime, symlinks, empty folders, and uid/gid when run as
 * root. Every chunk is authenticated and re-hashed before it is written; a file is written to a
 * temporary name and renamed into place only when complete, so a damaged or missing chunk never
 * leaves wrong bytes under the file's name: the file is listed in `errors` and the rest restores.
 * All-zero chunks become holes (seek instead of write).
 */
import { lchownSync, lutimesSync } from "node:fs";
import type { EntryError, Progress } from "./backup.ts";
import { fromHex } from "./bytes.ts";
import type { ChunkIdHasher } from "./chunk_id.ts";
import { RepoError } from "./errors.ts";
import { absolutePath, joinPath } from "./fs.ts";
import { type Namespace, storedPlainLength } from "./repository.ts";
import { loadSnapshot } from "./snapshot.ts";
import { createThrottle, type Throttle } from "./throttle.ts";
import { entryNameProblem, loadTree, type TreeEntry } from "./tree.ts";

/**
 * Entries of one folder restored at once, and blobs read and not yet written in the whole run (a bound on
 * memory: each is being verified and written by a worker).
 */
const ENTRIES_AT_ONCE = 4;
const BLOBS_IN_FLIGHT = 12;

/** Options of `restoreSnapshot`. */
export interface RestoreOptions {
  /** Folder to restore into; created if missing. */
  target: string;
  /** Absolute paths inside the snapshot to restore (default: everything). */
  include?: string[];
  /** Replace existing files; without it a non-empty target is refused (unless `mergeIntoTarget`). */
  overwrite?: boolean;
  /**
   * Restore into a target folder that is not empty: folders are merged, and without `overwrite` every file
   * or link that already exists is left as it is and listed in `errors`.
   */
  mergeIntoTarget?: boolean;
  /** Restore owners (default: when running as root). */
  owners?: boolean;
  limitBytesPerSecond?: number | null;
  progress?: (p: Progress) => void;
}

/** The outcome of a restore. */
export interface RestoreResult {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
  errors: EntryError[];
}

/** Whether absolute `path` is `dir` or lies below it. */
function isInside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === "/" ? "/" : dir + "/");
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

class RestoreRun {
  files = 0;
  dirs = 0;
  symlinks = 0;
  bytes = 0;
  readonly errors: EntryError[] = [];
  readonly throttle: Throttle;
  readonly includes: string[] | null;
  readonly owners: boolean;
  /** The absolute target folder: nothing is ever written outside it. */
  readonly target: string;
  /** Slots for blobs read and not yet written (`BLOBS_IN_FLIGHT`), and the reads waiting for one. */
  #free = BLOBS_IN_FLIGHT;
  #waiting: (() => void)[] = [];

  constructor(readonly ns: Namespace, readonly hasher: ChunkIdHasher, readonly options: RestoreOptions) {
    this.target = absolutePath(options.target);
    this.throttle = createThrottle(options.limitBytesPerSecond);
    this.includes = options.include?.length ? options.include.map((p) => absolutePath(p, "/")) : null;
    this.owners = options.owners ?? Deno.uid() === 0;
  }

  /** "all": restore everything below; "some": an ancestor of an include path; "none": skip. */
  #scope(path: string): "all" | "some" | "none" {
    if (!this.includes) return "all";
    let some = false;
    for (const inc of this.includes) {
      if (inc === "/" || path === inc || path.startsWith(inc + "/")) return "all";
      if (inc.startsWith(path === "/" ? "/" : path + "/")) some = true;
    }
    return some ? "some" : "none";
  }

  report(path: string) {
    this.options.progress?.({ files: this.files, bytes: this.bytes, currentPath: path });
  }

  async #setMeta(dest: string, e: TreeEntry) {
    if (this.owners) {
      lchownSync(dest, e.uid, e.gid);
    }
    if (e.type !== "symlink") await Deno.chmod(dest, e.mode & 0o7777);
    const t = new Date(e.mtimeMs);
    if (e.type === "symlink") lutimesSync(dest, t, t);
    else await Deno.utime(dest, t, t);
  }

  async #clear(dest: string) {
    try {
      const info = await Deno.lstat(dest);
      if (!this.options.overwrite) throw new RepoError(`${dest} exists (use overwrite)`);
      await Deno.remove(dest, { recursive: info.isDirectory });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }

  /** Waits for one of the run's `BLOBS_IN_FLIGHT` slots (a blob read and not yet written). */
  #acquire(): Promise<void> {
    if (this.#free > 0) {
      this.#free--;
      return Promise.resolve();
    }
    return new Promise((r) => this.#waiting.push(r));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }

  /**
   * Restores blobs `ids` into the temporary file `tmp` from this thread: each blob is read here and handed to
   * a worker, which verifies it (authenticated, re-hashed) before it writes a single byte of it at its place:
   * the blobs of a file are written in parallel, each at the offset the lengths of the blobs before it give
   * (their headers declare them; a blob is written only if its header is authentic). Holes stay unwritten.
   */
  async #blobsHere(
    path: string,
    tmp: string,
    ids: string[],
  ): Promise<{ written: number; endsInHole: boolean }> {
    const writes: Promise<void>[] = [];
    let failure: unknown = null;
    let written = 0;
    let endsInHole = false;
    try {
      for (let i = 0; i < ids.length && failure === null; i++) {
        await this.#acquire();
        let stored: Uint8Array<ArrayBuffer>;
        try {
          stored = await this.ns.readStored(ids[i]);
        } catch (err) {
          this.#release();
          throw err;
        }
        const length = storedPlainLength(stored);
        const offset = written;
        written += length;
        await this.throttle.take(length);
        const last = i === ids.length - 1;
        const w = this.ns.writeBlob(ids[i], stored, this.hasher, tmp, offset).then((r) => {
          if (last) endsInHole = r.zero;
          this.bytes += r.length;
          this.report(path);
        }).finally(() => this.#release());
        w.catch((err) => failure ??= err);
        writes.push(w);
      }
    } finally {
      // Every write has ended before the temporary file is touched again (or removed).
      await Promise.allSettled(writes);
    }
    if (failure !== null) throw failure;
    return { written, endsInHole };
  }

  async file(path: string, dest: string, e: TreeEntry) {
    this.report(path);
    const dir = dest.slice(0, dest.lastIndexOf("/"));
    const tmp = `${dir}/.cadres-restore-${crypto.randomUUID()}`;
    (await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 })).close();
    try {
      const ids = e.content ?? [];
      let written = 0;
      let endsInHole = false;
      let reported = 0;
      // From a local repository, a worker reads, verifies and writes the whole file (no byte crosses threads);
      // a throttled restore keeps every write here, where the throttle is.
      const onWorker = this.options.limitBytesPerSecond
        ? null
        : this.ns.restoreFile(tmp, ids, this.hasher, (n) => {
          this.bytes += n;
          reported += n;
          this.report(path);
        });
      if (onWorker) {
        ({ written, endsInHole } = await onWorker);
        this.bytes += written - reported;
      } else {
        ({ written, endsInHole } = await this.#blobsHere(path, tmp, ids));
      }
      if (endsInHole) await Deno.truncate(tmp, written); // a hole at the end is not written
      if (written !== e.size) {
        throw new RepoError(`restored ${written} bytes, the snapshot records ${e.size}`);
      }
      await this.#setMeta(tmp, e);
      await this.#clear(dest);
      await Deno.rename(tmp, dest);
      this.files++;
    } catch (err) {
      await Deno.remove(tmp).catch(() => {});
      throw err;
    }
  }

  async entry(path: string, dest: string, e: TreeEntry) {
    if (e.type === "dir") {
      await this.dir(path, dest, e);
    } else if (e.type === "file") {
      await this.file(path, dest, e);
    } else {
      await this.#clear(dest);
      await Deno.symlink(e.target!, dest);
      await this.#setMeta(dest, e);
      this.symlinks++;
    }
  }

  async dir(path: string, dest: string, e: TreeEntry) {
    let tree;
    try {
      tree = await loadTree(this.ns, e.subtree!, this.hasher);
    } catch (err) {
      this.errors.push({ path, error: `folder not restored: ${errorText(err)}` });
      return;
    }
    await this.#dirFromEntries(path, dest, e, tree.entries);
  }

  async #dirFromEntries(path: string, dest: string, e: TreeEntry | null, entries: TreeEntry[]) {
    try {
      const info = await Deno.lstat(dest).catch(() => null);
      if (info && !info.isDirectory) await this.#clear(dest);
      await Deno.mkdir(dest, { recursive: true, mode: 0o700 });
    } catch (err) {
      this.errors.push({ path, error: `cannot create folder: ${errorText(err)}` });
      return;
    }
    // Up to ENTRIES_AT_ONCE entries are restored at once; the next starts as soon as any of them ends.
    const running = new Set<Promise<void>>();
    for (const child of entries) {
      const childPath = joinPath(path, child.name);
      const scope = this.#scope(childPath);
      if (scope === "none") continue;
      if (scope === "some" && child.type !== "dir") continue;
      // Defence in depth (decodeTree already refuses such names): never write outside the target.
      const childDest = `${dest}/${child.name}`;
      const problem = entryNameProblem(child.name) ??
        (isInside(absolutePath(childDest), this.target) ? null : `resolves outside ${this.target}`);
      if (problem !== null) {
        this.errors.push({ path: childPath, error: `not restored: ${problem}` });
        continue;
      }
      const task: Promise<void> = this.entry(childPath, childDest, child).catch((err) => {
        this.errors.push({ path: childPath, error: errorText(err) });
      }).finally(() => running.delete(task));
      running.add(task);
      if (running.size >= ENTRIES_AT_ONCE) await Promise.race(running);
    }
    await Promise.all(running);
    if (e) {
      try {
        await this.#setMeta(dest, e);
      } catch (err) {
        this.errors.push({ path, error: `cannot set metadata: ${errorText(err)}` });
      }
    }
    this.dirs++;
  }

  async root(treeId: string, target: string) {
    let tree;
    try {
      tree = await loadTree(this.ns, treeId, this.hasher);
    } catch (err) {
      this.errors.push({ path: "/", error: `nothing restored: ${errorText(err)}` });
      return;
    }
    await this.#dirFromEntries("/", target, null, tree.entries);
  }
}

/**
 * Restores snapshot `snapshotId` of `ns` below `options.target`. Throws before writing anything if the
 * snapshot cannot be read or the target is a non-empty folder without `overwrite`; entries that cannot
 * be restored (damaged or missing data) are listed in `errors`, never written wrong.
 */
export function restoreSnapshot(
  ns: Namespace,
  snapshotId: string,
  options: RestoreOptions,
): Promise<RestoreResult> {
  // Blobs are decrypted, decompressed and re-hashed on worker threads while this thread reads and writes.
  return ns.withWorkers(() => restoreHere(ns, snapshotId, options));
}

async function restoreHere(
  ns: Namespace,
  snapshotId: string,
  options: RestoreOptions,
): Promise<RestoreResult> {
  const snapshot = await loadSnapshot(ns, snapshotId);
  const target = absolutePath(options.target);
  try {
    const info = await Deno.stat(target);
    if (!info.isDirectory) throw new RepoError(`Restore target ${target} is not a folder`);
    if (!options.overwrite && !options.mergeIntoTarget) {
      for await (const _ of Deno.readDir(target)) {
        throw new RepoError(
          `Restore target ${target} is not empty; restore into an empty folder or overwrite`,
        );
      }
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  const hasher = ns.hasher(snapshot.chainSalt ? fromHex(snapshot.chainSalt) : null);
  const run = new RestoreRun(ns, hasher, options);
  await Deno.mkdir(target, { recursive: true });
  await run.root(snapshot.tree, target);
  return { files: run.files, dirs: run.dirs, symlinks: run.symlinks, bytes: run.bytes, errors: run.errors };
}
