/**
 * Range reads of packs for one operation (a restore): on a local folder the pack files stay open (a
 * bounded, least-recently-used set) instead of being opened, measured and closed for every blob; other
 * backends read through `Backend.get`. Reads of one open file are serialized (seek, then read).
 * Must be closed.
 */
import { type Backend, kindOf, LocalBackend, validateObjectName } from "./backend.ts";
import { MissingObjectError, RepoError } from "./errors.ts";

interface OpenPack {
  opening: Promise<{ file: Deno.FsFile; size: number }>;
  /** The last read queued on this file: the next one starts after it. */
  tail: Promise<unknown>;
  users: number;
  /** Out of the set: closed when its last read is done. */
  evicted: boolean;
}

/** Reads `length` bytes from `offset` of objects, keeping up to `maxOpen` local pack files open. */
export class PackReader {
  #open = new Map<string, OpenPack>();
  #closing = new Set<Promise<void>>();
  #closed = false;

  constructor(readonly backend: Backend, readonly maxOpen = 16) {}

  /**
   * `length` bytes from `offset` of object `name`; read into `alloc(length)`'s first bytes when given (a
   * reused buffer: fresh pages cost page faults), else into a fresh buffer.
   */
  async read(
    name: string,
    offset: number,
    length: number,
    alloc?: (n: number) => Uint8Array<ArrayBuffer>,
  ): Promise<Uint8Array<ArrayBuffer>> {
    if (!(this.backend instanceof LocalBackend) || this.#closed) {
      return await this.backend.get(name, { offset, length });
    }
    let p = this.#open.get(name);
    if (p) {
      this.#open.delete(name); // set again below: the map's order is least recently used first
    } else {
      p = { opening: this.#openFile(name), tail: Promise.resolve(), users: 0, evicted: false };
      const failed = p;
      p.opening.catch(() => {
        if (this.#open.get(name) === failed) this.#open.delete(name);
      });
    }
    this.#open.set(name, p);
    p.users++;
    this.#evict();
    try {
      const { file, size } = await p.opening;
      if (offset + length > size) {
        throw new RepoError(`Cannot read ${name} bytes ${offset}+${length}: object has ${size} bytes`);
      }
      const run = p.tail.then(async () => {
        const out = alloc ? alloc(length).subarray(0, length) : new Uint8Array(length);
        await file.seek(offset, Deno.SeekMode.Start);
        let got = 0;
        while (got < length) {
          const n = await file.read(out.subarray(got));
          if (n === null) throw new RepoError(`Cannot read ${name}: ended early`);
          got += n;
        }
        return out;
      });
      p.tail = run.catch(() => {});
      return await run;
    } finally {
      if (--p.users === 0 && p.evicted) this.#close(p);
    }
  }

  async #openFile(name: string): Promise<{ file: Deno.FsFile; size: number }> {
    validateObjectName(name);
    let file: Deno.FsFile;
    try {
      file = await Deno.open(`${(this.backend as LocalBackend).root}/${name}`, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) throw new MissingObjectError(kindOf(name), name);
      throw e;
    }
    try {
      return { file, size: (await file.stat()).size };
    } catch (e) {
      file.close();
      throw e;
    }
  }

  #close(p: OpenPack) {
    const done: Promise<void> = p.opening.then(({ file }) => file.close(), () => {})
      .finally(() => this.#closing.delete(done));
    this.#closing.add(done);
  }

  /** Takes the least recently used files past `maxOpen` out of the set. */
  #evict() {
    for (const [name, p] of this.#open) {
      if (this.#open.size <= this.maxOpen) break;
      this.#open.delete(name);
      p.evicted = true;
      if (p.users === 0) this.#close(p);
    }
  }

  /** Closes every open file (a file still being read closes after its read). */
  async close(): Promise<void> {
    this.#closed = true;
    for (const p of this.#open.values()) {
      p.evicted = true;
      if (p.users === 0) this.#close(p);
    }
    this.#open.clear();
    await Promise.all(this.#closing);
  }
}
