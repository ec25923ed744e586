/**
 * Blob encoding and decoding on worker threads, so that compression, encryption, decompression and the
 * re-hash of restored blobs use every core while the main thread reads, chunks, packs and writes. The
 * workers run blob.ts's own codec (same format, same checks); buffers go both ways as transferred
 * `ArrayBuffer`s. A pool lives for one operation (a backup, a restore) and must be closed.
 */
import type { Encryption, PartsBlobCodec } from "./blob.ts";
import type { BlobId, ChunkIdHasher } from "./chunk_id.ts";
import type { ChunkerParams } from "./chunker.ts";
import type { Compression } from "./compression.ts";
import { IntegrityError, MissingObjectError, RepoError } from "./errors.ts";
import type { RestoreFileJob } from "./worker_restore.ts";
import { packIdOf } from "./pack.ts";

/**
 * A session's chunk is encoded on another worker when that one encodes at most as many blobs, less this
 * margin, as the session's own worker (which also cuts and hashes): see `ChunkSession.decide`.
 */
const GIVE_MARGIN = 0;

/** Blobs smaller than this are encoded and decoded on the calling thread (a message costs more). */
export const POOL_MIN_BYTES = 64 * 1024;

/** Buffers kept for reuse (chunks are copied into them), and the smallest size worth keeping. */
const FREE_BUFFERS = 8;
const MIN_RECYCLED = 1024 * 1024;
const NEW_BUFFER_BYTES = 8 * 1024 * 1024;

/** The error a worker reported. */
function errorOf(e: Record<string, string>): Error {
  if (e.name === "IntegrityError") return new IntegrityError(e.kind as "blob", e.id, e.detail);
  if (e.name === "MissingObjectError") return new MissingObjectError(e.kind as "blob", e.id, e.detail);
  return new RepoError(e.message);
}

/** The number of workers a pool starts by default: one per core, at least one, at most four. */
export function defaultWorkers(): number {
  return Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1));
}

interface Reply {
  n: number;
  zero?: boolean;
  written?: number;
  endsInHole?: boolean;
  bytes?: Uint8Array<ArrayBuffer>;
  parts?: Uint8Array<ArrayBuffer>[];
  id?: string;
  back?: ArrayBuffer;
  error?: Record<string, string>;
}

interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: unknown) => void;
  /** Progress of a file restore (`restoreFile`): bytes written since the last report. */
  progress?: (bytes: number) => void;
  /** The worker encoding the blob, for an encode. */
  encoding?: Slot;
}

interface Slot {
  worker: Worker;
  /** Work handed to it and not yet answered: requests, and sessions' pieces and chunks to encode. */
  busy: number;
  /** Blobs it is encoding (the costly part of the work): what work is balanced by. */
  encoding: number;
  /** Chunk sessions open on this worker. */
  sessions: number;
}

/** A chunk a worker cut from a session's bytes: its place in the file, id and length. */
export interface CutChunk {
  seq: number;
  id: BlobId;
  length: number;
}

/** What a chunk session reports (see `CodecPool.openChunker`), on the calling thread. */
export interface ChunkSessionEvents {
  /** Chunks cut from the bytes of one `push`, in order; `done` after the last push (`eof`). */
  cut(chunks: CutChunk[], done: boolean): void;
  /** The stored form of chunk `seq`, which `decide` asked for. */
  stored(seq: number, parts: Uint8Array<ArrayBuffer>[]): void;
  /** The buffer of a `push`, given back for the next one. */
  returned(buffer: ArrayBuffer): void;
  /** The worker failed (the session is over: nothing more arrives). */
  failed(e: unknown): void;
}

interface SessionEvent {
  ev: "cut" | "stored" | "chunk" | "error";
  bytes?: Uint8Array<ArrayBuffer>;
  id?: string;
  f: number;
  seqs?: number[];
  ids?: string[];
  lengths?: number[];
  done?: boolean;
  back?: ArrayBuffer;
  seq?: number;
  parts?: Uint8Array<ArrayBuffer>[];
  error?: Record<string, string>;
}

/**
 * One file's bytes chunked, hashed, and (when asked) encoded on one worker thread: the calling thread only
 * reads and decides which chunks are new. Created by `CodecPool.openChunker`.
 */
export class ChunkSession {
  #opened = false;
  constructor(
    readonly slot: Slot,
    readonly f: number,
    readonly params: ChunkerParams,
    readonly hasher: { idKey: Uint8Array | null; salt: Uint8Array | null },
    readonly events: ChunkSessionEvents,
    readonly end: () => void,
    /** Whether another worker is enough less busy than this session's to encode a chunk instead. */
    readonly elsewhere: () => boolean,
  ) {}

  /**
   * Hands the worker the first `length` bytes of `buffer` (its whole `ArrayBuffer` is transferred and comes
   * back through `events.returned`); `eof` after the last bytes. With `discard`, the bytes not yet cut are
   * dropped instead (a read failed): `cut` still reports the chunks already decided, then `done`.
   */
  push(buffer: Uint8Array<ArrayBuffer> | null, length: number, eof: boolean, discard = false): void {
    const msg: Record<string, unknown> = { op: "cdc", f: this.f, length, eof, discard };
    if (!this.#opened) {
      msg.params = this.params;
      msg.hasher = this.hasher;
      this.#opened = true;
    }
    const transfer = buffer ? [buffer.buffer] : [];
    if (buffer) msg.buf = buffer.buffer;
    this.slot.busy++; // until its "cut" answer
    this.slot.worker.postMessage(msg, transfer);
  }

  /**
   * Which of the chunks reported by `cut` are encoded (then `stored`) and which are dropped. A chunk to store
   * is encoded by the session's worker, or — when that worker is the busier one — handed back and encoded by
   * another (a large file's chunks then use every core).
   */
  decide(store: number[], drop: number[]): void {
    if (store.length === 0 && drop.length === 0) return;
    const here: number[] = [];
    const give: number[] = [];
    for (const seq of store) (this.elsewhere() ? give : here).push(seq);
    this.slot.busy += store.length; // until each is "stored" (or handed back)
    this.slot.encoding += here.length;
    this.slot.worker.postMessage({ op: "cdc-decide", f: this.f, store: here, drop, give });
  }

  /** Stops listening (once every chunk it asked for has arrived, or the run failed). */
  close(): void {
    this.end();
  }
}

/** A `BlobCodec` whose large blobs are handled by worker threads. */
export class CodecPool implements PartsBlobCodec {
  readonly encryption: Encryption;
  readonly compression: Compression;
  #slots: Slot[] = [];
  #pending = new Map<number, Pending>();
  #next = 0;
  #closed = false;
  #free: ArrayBuffer[] = [];
  #sessions = new Map<number, ChunkSession>();
  #nextSession = 0;

  constructor(
    readonly inline: PartsBlobCodec,
    readonly dataKey: Uint8Array | null,
    readonly workers = defaultWorkers(),
    /** How much less busy another worker must be to encode a session's chunk (tests force either way). */
    readonly giveMargin = GIVE_MARGIN,
  ) {
    this.encryption = inline.encryption;
    this.compression = inline.compression;
  }

  /** The least loaded worker (fewest blobs being encoded, then least work), starting them all at first use. */
  #slot(): Slot {
    if (this.#closed) throw new RepoError("The codec pool is closed");
    while (this.#slots.length < this.workers) {
      const worker = new Worker(new URL("./codec_worker.ts", import.meta.url), { type: "module" });
      const slot: Slot = { worker, busy: 0, encoding: 0, sessions: 0 };
      worker.onmessage = (ev: MessageEvent) => this.#answer(slot, ev.data);
      worker.onerror = (ev: ErrorEvent) => {
        ev.preventDefault();
        this.#fail(new RepoError(`A codec worker failed: ${ev.message}`));
      };
      worker.postMessage({
        op: "init",
        encryption: this.encryption,
        compression: this.compression,
        dataKey: this.dataKey,
      });
      this.#slots.push(slot);
    }
    let best = this.#slots[0];
    for (const s of this.#slots) {
      if (s.encoding < best.encoding || (s.encoding === best.encoding && s.busy < best.busy)) best = s;
    }
    return best;
  }

  /**
   * A buffer of at least `n` bytes for a blob's plaintext, reused when one came back from a worker:
   * fresh pages cost page faults and zeroing, reused ones do not.
   */
  buffer(n: number, fresh = NEW_BUFFER_BYTES): Uint8Array<ArrayBuffer> {
    if (n < POOL_MIN_BYTES) return new Uint8Array(n);
    for (let i = this.#free.length - 1; i >= 0; i--) {
      if (this.#free[i].byteLength >= n) {
        const [b] = this.#free.splice(i, 1);
        return new Uint8Array(b);
      }
    }
    return new Uint8Array(Math.max(n, fresh));
  }

  /** Takes back the buffer of `view` (its holder no longer uses it) for `buffer()`. */
  recycle(view: Uint8Array): void {
    const b = view.buffer;
    if (b instanceof ArrayBuffer && b.byteLength >= MIN_RECYCLED && this.#free.length < FREE_BUFFERS) {
      this.#free.push(b);
    }
  }

  /**
   * A session that chunks one file's bytes with `params` and ids them with `hasher` on the least loaded
   * worker (see `ChunkSession`); null if `hasher` cannot be rebuilt on a worker.
   */
  openChunker(params: ChunkerParams, hasher: ChunkIdHasher, events: ChunkSessionEvents): ChunkSession | null {
    if (!hasher.spec) return null;
    if (this.#closed) throw new RepoError("The codec pool is closed");
    // The least busy worker (the one with fewer sessions on a tie).
    let slot = this.#slot();
    for (const s of this.#slots) {
      if (s.busy < slot.busy || (s.busy === slot.busy && s.sessions < slot.sessions)) slot = s;
    }
    const f = this.#nextSession++;
    slot.sessions++;
    const session = new ChunkSession(slot, f, params, hasher.spec, events, () => {
      if (this.#sessions.delete(f)) slot.sessions--;
    }, () => this.#slots.some((s) => s !== slot && s.encoding + this.giveMargin <= slot.encoding));
    this.#sessions.set(f, session);
    return session;
  }

  #event(slot: Slot, m: SessionEvent) {
    const session = this.#sessions.get(m.f);
    if (m.ev !== "error") slot.busy--;
    if (m.ev === "cut") {
      if (m.back && !this.#closed) {
        session ? session.events.returned(m.back) : this.recycle(new Uint8Array(m.back));
      }
      if (!session) return;
      const chunks: CutChunk[] = m.ids!.map((id, i) => ({ seq: m.seqs![i], id, length: m.lengths![i] }));
      session.events.cut(chunks, m.done === true);
    } else if (m.ev === "stored") {
      slot.encoding--;
      session?.events.stored(m.seq!, m.parts!);
    } else if (m.ev === "chunk") {
      // A chunk handed back: encoded on the least busy worker, then stored as any other.
      if (!session) return;
      this.encodeParts(m.id!, m.bytes!, true).then(
        (parts) => session.events.stored(m.seq!, parts),
        (e) => {
          session.events.failed(e);
          session.close();
        },
      );
    } else {
      session?.events.failed(errorOf(m.error!));
      session?.close();
    }
  }

  #answer(slot: Slot, m: Reply) {
    if ("ev" in m) {
      const e = m as unknown as { ev: string; n: number; bytes: number };
      if (e.ev === "progress") return this.#pending.get(e.n)?.progress?.(e.bytes);
      return this.#event(slot, m as unknown as SessionEvent);
    }
    slot.busy--;
    if (m.back && !this.#closed) this.recycle(new Uint8Array(m.back));
    const p = this.#pending.get(m.n);
    if (!p) return;
    this.#pending.delete(m.n);
    if (p.encoding) p.encoding.encoding--;
    if (!m.error) return p.resolve(m);
    p.reject(errorOf(m.error));
  }

  #fail(e: unknown) {
    for (const p of this.#pending.values()) p.reject(e);
    this.#pending.clear();
    for (const session of [...this.#sessions.values()]) {
      session.events.failed(e);
      session.close();
    }
  }

  #call(
    msg: Record<string, unknown>,
    key: string,
    buf: Uint8Array,
    transfer: boolean,
  ): Promise<Uint8Array<ArrayBuffer>> {
    // A handed-over buffer is transferred whole (the worker reads its first `length` bytes and, for an
    // encode, sends it back for reuse); otherwise the bytes are copied.
    const own = transfer && buf.byteOffset === 0 && buf.buffer instanceof ArrayBuffer
      ? buf.buffer
      : buf.slice().buffer;
    return this.#post({ ...msg, [key]: own, length: buf.length }, [own]).then((r) => r.bytes!);
  }

  #post(msg: Record<string, unknown>, transfer: ArrayBuffer[], encode = false): Promise<Reply> {
    const slot = this.#slot();
    const n = this.#next++;
    return new Promise((resolve, reject) => {
      this.#pending.set(n, { resolve, reject, encoding: encode ? slot : undefined });
      slot.busy++;
      if (encode) slot.encoding++;
      slot.worker.postMessage({ ...msg, n }, transfer);
    });
  }

  /**
   * The id of the pack made of `parts` (pack.ts `packIdOf`), hashed by a worker; the parts come back as
   * they went (their buffers are transferred and returned: the caller uses the returned ones).
   */
  async packId(parts: Uint8Array[]): Promise<{ packId: string; parts: Uint8Array[] }> {
    const buffers: ArrayBuffer[] = [];
    const seen = new Set<ArrayBuffer>();
    for (const p of parts) {
      const b = p.buffer;
      if (!(b instanceof ArrayBuffer) || seen.has(b)) return { packId: packIdOf(parts), parts };
      seen.add(b);
      buffers.push(b);
    }
    const offsets = parts.map((p) => p.byteOffset);
    const lengths = parts.map((p) => p.length);
    const r = await this.#post({ op: "pack", parts: buffers, offsets, lengths }, buffers);
    const back = r.parts as unknown as ArrayBuffer[];
    return { packId: r.id!, parts: back.map((b, i) => new Uint8Array(b, offsets[i], lengths[i])) };
  }

  /**
   * The stored form of `plain` under `id` as consecutive parts (`PartsBlobCodec.encodeParts`), none of them
   * a view of `plain`; `transfer` as for `encode`.
   */
  encodeParts(id: BlobId, plain: Uint8Array, transfer = false): Promise<Uint8Array<ArrayBuffer>[]> {
    if (plain.length < POOL_MIN_BYTES) {
      return this.inline.encodeParts(id, plain).then((parts) => {
        const own = parts.map((p) => p.buffer === plain.buffer ? p.slice() : p);
        if (transfer) this.recycle(plain);
        return own;
      });
    }
    const own = transfer && plain.byteOffset === 0 && plain.buffer instanceof ArrayBuffer
      ? plain.buffer
      : plain.slice().buffer;
    return this.#post({ op: "encodeParts", id, plain: own, length: plain.length }, [own], true).then((r) =>
      r.parts!
    );
  }

  /**
   * The stored form of `plain` under `id`. With `transfer`, `plain`'s buffer (when it holds exactly
   * `plain`) is handed to the worker and the caller must not use it afterwards; otherwise it is copied.
   */
  encode(id: BlobId, plain: Uint8Array, transfer = false): Promise<Uint8Array<ArrayBuffer>> {
    if (plain.length < POOL_MIN_BYTES) {
      return this.inline.encode(id, plain).finally(() => transfer && this.recycle(plain));
    }
    return this.#call({ op: "encode", id }, "plain", plain, transfer);
  }

  /**
   * Decodes `stored` (the blob `id`) on a worker exactly as `decode` does, re-hashing it with `hasher`, and
   * only then writes its plaintext at `offset` of the existing file at `path` — or nothing when it is all
   * zeros (a hole; `zero` says so). `stored`'s buffer is transferred and comes back for `buffer()`. Rejects
   * with `IntegrityError` naming the blob when it is damaged (nothing written).
   */
  restoreBlob(
    id: BlobId,
    stored: Uint8Array<ArrayBuffer>,
    hasher: ChunkIdHasher,
    path: string,
    offset: number,
  ): Promise<{ zero: boolean }> {
    if (!hasher.spec) throw new RepoError("restoreBlob needs a hasher a worker can rebuild");
    const own = stored.byteOffset === 0 ? stored.buffer : stored.slice().buffer;
    return this.#post(
      { op: "restore", id, stored: own, length: stored.length, hasher: hasher.spec, path, offset },
      [own],
    ).then((r) => ({ zero: r.zero === true }));
  }

  /**
   * Restores one file from a local repository on a worker (worker_restore.ts `restoreFile`): the worker
   * reads each blob from its pack, verifies it and writes it into `job.path`. `progress` gets the bytes
   * written as it goes (in steps; the answer's `written` is the total). Rejects with `IntegrityError` or
   * `MissingObjectError` naming the blob that could not be restored.
   */
  restoreFile(
    job: RestoreFileJob,
    progress: (bytes: number) => void,
  ): Promise<{ written: number; endsInHole: boolean }> {
    const slot = this.#slot();
    const n = this.#next++;
    return new Promise<Reply>((resolve, reject) => {
      this.#pending.set(n, { resolve, reject, progress });
      slot.busy++;
      slot.worker.postMessage({ op: "restore-file", n, job });
    }).then((r) => ({ written: r.written!, endsInHole: r.endsInHole === true }));
  }

  /** The verified plaintext of `stored` (see `BlobCodec.decode`); `transfer` as for `encode`. */
  decode(id: BlobId, stored: Uint8Array, hasher?: ChunkIdHasher, transfer = false): Promise<Uint8Array> {
    if (stored.length < POOL_MIN_BYTES || (hasher && !hasher.spec)) {
      return this.inline.decode(id, stored, hasher);
    }
    return this.#call({ op: "decode", id, hasher: hasher?.spec ?? null }, "stored", stored, transfer);
  }

  /** Stops the workers; calls still waiting fail. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const s of this.#slots) s.worker.terminate();
    this.#slots = [];
    this.#free = [];
    this.#fail(new RepoError("The codec pool was closed"));
  }
}
