/**
 * The storage interface of a repository: a flat space of named objects with atomic writes and range
 * reads — what a local folder and an S3-compatible bucket both offer. Names are relative, "/"-separated
 * ("data/ab/ab12…", "keys/host-a/…"); a backend never interprets them beyond that.
 */
import { concat } from "./bytes.ts";
import { MissingObjectError, type ObjectKind, RepoError } from "./errors.ts";
import { parentDir, syncDir } from "./fs.ts";

/** Part of an object: `length` bytes from `offset`, or the last `suffix` bytes (HTTP Range semantics). */
export type ByteRange = { offset: number; length: number } | { suffix: number };

/** One listed object. */
export interface ObjectInfo {
  name: string;
  size: number;
  /** Last modification time (gc's cutoff rule compares it with writer lock starts). */
  modified: Date;
}

/** Storage of repository objects. Implementations: `LocalBackend`, `S3Backend` (s3_backend.ts). */
export interface Backend {
  /** A human-readable location, for messages. */
  readonly location: string;
  /** Every object whose name starts with `prefix` (a folder such as "data/"), in no particular order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  /** The object's bytes, or the range of them. Throws `MissingObjectError` if it does not exist. */
  get(name: string, range?: ByteRange): Promise<Uint8Array<ArrayBuffer>>;
  /** Stores `data` under `name` atomically: readers see the whole object or none. Replaces an existing one. */
  put(name: string, data: Uint8Array): Promise<void>;
  /**
   * Stores the concatenation of `parts` under `name`, as `put` does, without joining them first (optional:
   * `putParts()` below joins them for a backend without it).
   */
  putParts?(name: string, parts: Uint8Array[]): Promise<void>;
  /**
   * Starts writing object `name` piece by piece into a temporary object no reader sees (optional: a backend
   * without it — S3 — is given whole objects with `put`). The writer checks what it wrote, then `commit`s
   * (atomic and durable, as `put`) or `abort`s (nothing remains).
   */
  stage?(name: string): Promise<StagedObject>;
  /** Deletes the object; no error if it does not exist. */
  delete(name: string): Promise<void>;
  /** Whether the object exists. */
  exists(name: string): Promise<boolean>;
  /**
   * Deletes what writes that never completed left behind (their writer was killed), last modified before
   * `before`; returns how many. Only backends whose writes leave such remains implement it (gc calls it).
   */
  removeTemporaries?(before: Date): Promise<number>;
  /**
   * The names of the folders directly under `prefix` ("cadres/" → ["01K…", …]), sorted; none when
   * nothing is stored under it. Lets a caller find repositories without listing every object.
   */
  listFolders?(prefix: string): Promise<string[]>;
}

/** An object being written (`Backend.stage`): invisible until `commit`. */
export interface StagedObject {
  /** Appends `data` (copied or written before the promise resolves: the caller may reuse it afterwards). */
  write(data: Uint8Array): Promise<void>;
  /** Bytes already written, read back (a check before commit). */
  read(offset: number, length: number): Promise<Uint8Array<ArrayBuffer>>;
  /** Makes the bytes written the object `name`, atomically and durably (replacing one that exists). */
  commit(): Promise<void>;
  /** Removes what was written; the object is untouched. Safe after a failed `commit`, and twice. */
  abort(): Promise<void>;
}

/** Stores the concatenation of `parts` under `name` on `backend`, joining them only if it cannot write parts. */
export function putParts(backend: Backend, name: string, parts: Uint8Array[]): Promise<void> {
  return backend.putParts ? backend.putParts(name, parts) : backend.put(name, concat(...parts));
}

/** Parts smaller than this are written synchronously, consecutive ones at once (an async op costs more). */
const SMALL_PART = 64 * 1024;

/**
 * The most bytes given to one write(2) of a file. The kernel sizes the page-cache folios of a buffered
 * write by its length: a 4 MiB write asks for 2 MiB folios, which on a virtual machine whose free memory is
 * handed back to the host (free page reporting) are mostly fresh pages the host must fault in — measured on
 * this project's 2-core VM, 768 MiB written in 4 MiB writes cost 0.9–2.0 s of system time, in 256 KiB
 * writes 0.25–0.3 s (docs/performance.md, "End to end: the BES's writes").
 */
export const WRITE_PIECE = 256 * 1024;

/** Writes all of `data` at the file's position, in writes of at most `WRITE_PIECE` bytes. */
export async function writePieces(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  for (let off = 0; off < data.length;) {
    off += await file.write(data.subarray(off, Math.min(data.length, off + WRITE_PIECE)));
  }
}

/** Throws if `name` is not a safe relative object name. */
export function validateObjectName(name: string): void {
  if (
    name.length === 0 || name.startsWith("/") || name.endsWith("/") || name.includes("\\") ||
    name.split("/").some((p) => p === "" || p === "." || p === "..")
  ) {
    throw new RepoError(`Invalid object name "${name}"`);
  }
}

/**
 * A repository in a local folder. Writes go to a temporary file, which is synced (fdatasync), renamed
 * into place, and then its folder is synced (fsync), so an object reported written survives a crash;
 * a folder created for it has its own parent synced too (once per folder and process).
 */
export class LocalBackend implements Backend {
  readonly location: string;
  /** Folders known to exist durably (created and their parent synced) in this process. */
  #durableDirs = new Set<string>();
  constructor(readonly root: string) {
    this.location = root;
  }

  #path(name: string): string {
    validateObjectName(name);
    return `${this.root}/${name}`;
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const base = prefix.replace(/\/+$/, "");
    const dir = base === "" ? this.root : `${this.root}/${base}`;
    yield* this.#walk(dir, base);
  }

  async *#walk(dir: string, rel: string): AsyncIterable<ObjectInfo> {
    for (const e of await readDirIfExists(dir)) {
      if (e.name.startsWith(".tmp-")) continue;
      const name = rel === "" ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory) yield* this.#walk(`${dir}/${e.name}`, name);
      else if (e.isFile) {
        let info: Deno.FileInfo;
        try {
          info = await Deno.stat(`${dir}/${e.name}`);
        } catch (err) {
          if (err instanceof Deno.errors.NotFound) continue; // deleted while listing
          throw err;
        }
        yield { name, size: info.size, modified: info.mtime ?? new Date(0) };
      }
    }
  }

  async get(name: string, range?: ByteRange): Promise<Uint8Array<ArrayBuffer>> {
    const path = this.#path(name);
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new MissingObjectError(kindOf(name), name);
      throw e;
    }
    try {
      const size = (await file.stat()).size;
      let offset = 0;
      let length = size;
      if (range && "suffix" in range) {
        length = Math.min(range.suffix, size);
        offset = size - length;
      } else if (range) {
        offset = range.offset;
        length = range.length;
        if (offset + length > size) {
          throw new RepoError(`Cannot read ${name} bytes ${offset}+${length}: object has ${size} bytes`);
        }
      }
      const out = new Uint8Array(length);
      await file.seek(offset, Deno.SeekMode.Start);
      let got = 0;
      while (got < length) {
        const n = await file.read(out.subarray(got));
        if (n === null) throw new RepoError(`Cannot read ${name}: ended early`);
        got += n;
      }
      return out;
    } finally {
      file.close();
    }
  }

  put(name: string, data: Uint8Array): Promise<void> {
    return this.#write(name, [data]);
  }

  putParts(name: string, parts: Uint8Array[]): Promise<void> {
    return this.#write(name, parts);
  }

  async #write(name: string, parts: Uint8Array[]): Promise<void> {
    const path = this.#path(name);
    const dir = path.slice(0, path.lastIndexOf("/"));
    await this.#ensureDir(dir);
    const tmp = `${dir}/.tmp-${crypto.randomUUID()}`;
    try {
      const file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o600 });
      try {
        for (let i = 0; i < parts.length;) {
          let data = parts[i++];
          let off = 0;
          if (data.length < SMALL_PART) {
            // Small parts (blob headers, trailers) are gathered and written at once, without an async op.
            if (i < parts.length && parts[i].length < SMALL_PART) {
              const run = [data];
              while (i < parts.length && parts[i].length < SMALL_PART) run.push(parts[i++]);
              data = concat(...run);
            }
            while (off < data.length) {
              off += file.writeSync(data.subarray(off, Math.min(data.length, off + WRITE_PIECE)));
            }
          }
          if (off < data.length) await writePieces(file, data.subarray(off));
        }
        await file.syncData();
      } finally {
        file.close();
      }
      await Deno.rename(tmp, path);
    } catch (e) {
      await Deno.remove(tmp).catch(() => {});
      throw e;
    }
    // The rename is durable only once the folder's entry is on disk.
    await syncDir(dir);
  }

  async stage(name: string): Promise<StagedObject> {
    const path = this.#path(name);
    const dir = path.slice(0, path.lastIndexOf("/"));
    await this.#ensureDir(dir);
    const tmp = `${dir}/.tmp-${crypto.randomUUID()}`;
    const file = await Deno.open(tmp, { write: true, read: true, createNew: true, mode: 0o600 });
    let open = true;
    let done = false;
    let size = 0;
    let moved = false;
    const close = () => {
      if (open) file.close();
      open = false;
    };
    return {
      write: async (data) => {
        if (done) throw new RepoError(`Cannot write ${name}: its staged write has ended`);
        // Writes append; only a read in between moves the file's position (one op fewer per write).
        if (moved) await file.seek(size, Deno.SeekMode.Start);
        moved = false;
        await writePieces(file, data);
        size += data.length;
      },
      read: async (offset, length) => {
        if (offset < 0 || offset + length > size) {
          throw new RepoError(`Cannot read ${name} bytes ${offset}+${length}: ${size} bytes written`);
        }
        const out = new Uint8Array(length);
        moved = true;
        await file.seek(offset, Deno.SeekMode.Start);
        let got = 0;
        while (got < length) {
          const n = await file.read(out.subarray(got));
          if (n === null) throw new RepoError(`Cannot read ${name}: ended early`);
          got += n;
        }
        return out;
      },
      commit: async () => {
        if (done) throw new RepoError(`Cannot commit ${name}: its staged write has ended`);
        done = true;
        try {
          await file.syncData();
          close();
          await Deno.rename(tmp, path);
        } catch (e) {
          close();
          await Deno.remove(tmp).catch(() => {});
          throw e;
        }
        await syncDir(dir);
      },
      abort: async () => {
        if (done) return;
        done = true;
        close();
        await Deno.remove(tmp).catch(() => {});
      },
    };
  }

  async #ensureDir(dir: string): Promise<void> {
    if (this.#durableDirs.has(dir)) return;
    await Deno.mkdir(dir, { recursive: true });
    // Folders mkdir may have just created (the root, "data", "data/ab") are entries of their parents.
    for (let d = dir; d.length >= this.root.length && d.startsWith(this.root); d = parentDir(d)) {
      await syncDir(parentDir(d));
    }
    this.#durableDirs.add(dir);
  }

  async removeTemporaries(before: Date): Promise<number> {
    let removed = 0;
    const sweep = async (dir: string) => {
      for (const e of await readDirIfExists(dir)) {
        const path = `${dir}/${e.name}`;
        if (e.isDirectory) await sweep(path);
        else if (e.isFile && e.name.startsWith(".tmp-")) {
          const mtime = await Deno.stat(path).then((i) => i.mtime, () => null);
          if (mtime && mtime < before) {
            await Deno.remove(path).then(() => removed++, () => {});
          }
        }
      }
    };
    await sweep(this.root);
    return removed;
  }

  async listFolders(prefix: string): Promise<string[]> {
    const base = prefix.replace(/\/+$/, "");
    if (base !== "") validateObjectName(base);
    const dir = base === "" ? this.root : `${this.root}/${base}`;
    return (await readDirIfExists(dir)).filter((e) => e.isDirectory).map((e) => e.name).sort();
  }

  async delete(name: string): Promise<void> {
    try {
      await Deno.remove(this.#path(name));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }

  async exists(name: string): Promise<boolean> {
    try {
      await Deno.stat(this.#path(name));
      return true;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return false;
      throw e;
    }
  }
}

/** The kind of repository object a name denotes (for error messages). */
export function kindOf(name: string): ObjectKind {
  const top = name.split("/")[0];
  const kinds = {
    data: "pack",
    index: "index",
    snapshots: "snapshot",
    refs: "refs",
    keys: "key",
    locks: "lock",
    condemned: "condemned",
    config: "config",
  } as const;
  return kinds[top as keyof typeof kinds] ?? "file";
}

/** The entries of a folder; none when it does not exist (a prefix nothing was written under yet). */
async function readDirIfExists(dir: string): Promise<Deno.DirEntry[]> {
  try {
    return await Array.fromAsync(Deno.readDir(dir));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}
