/**
 * The worker side of a file restore from a local repository (codec_pool.ts `CodecPool.restoreFile`): a
 * codec worker reads each blob of one file from its pack, verifies it (authenticated, decompressed,
 * re-hashed) with blob.ts's own codec, and only then writes its plaintext at its place in the file's
 * temporary file — no byte of a file crosses threads. Reads and writes are synchronous (this is a worker
 * thread; pages come from the cache or the disk either way), pack files stay open (a few, least recently
 * used closed first), read buffers are reused.
 */
import type { BlobCodec } from "./blob.ts";
import { isAllZero } from "./bytes.ts";
import { createChunkIdHasher } from "./chunk_id.ts";
import { IntegrityError, MissingObjectError } from "./errors.ts";

/** One blob of the file: its id, and where its stored form lies. */
export interface RestoreBlobRef {
  id: string;
  /** The pack file's path, and its id (for messages). */
  pack: string;
  packId: string;
  offset: number;
  length: number;
}

/** A file to restore: its (existing, empty) temporary file and its blobs in order. */
export interface RestoreFileJob {
  path: string;
  blobs: RestoreBlobRef[];
  hasher: { idKey: Uint8Array | null; salt: Uint8Array | null };
}

/** Blobs being verified and written at once by one worker, in all its files (a bound on memory). */
const BLOBS_AT_ONCE = 3;
const OPEN_PACKS = 16;
const SPARE_BUFFERS = 6;
const BUFFER_STEP = 1024 * 1024;

const packs = new Map<string, Deno.FsFile>();
const spare: ArrayBuffer[] = [];
let free = BLOBS_AT_ONCE;
const waiting: (() => void)[] = [];

function acquire(): Promise<void> {
  if (free > 0) {
    free--;
    return Promise.resolve();
  }
  return new Promise((r) => waiting.push(r));
}

function release() {
  const next = waiting.shift();
  if (next) next();
  else free++;
}

function buffer(n: number): Uint8Array<ArrayBuffer> {
  for (let i = 0; i < spare.length; i++) {
    if (spare[i].byteLength >= n) return new Uint8Array(spare.splice(i, 1)[0], 0, n);
  }
  return new Uint8Array(new ArrayBuffer(Math.ceil(n / BUFFER_STEP) * BUFFER_STEP), 0, n);
}

function recycle(b: Uint8Array<ArrayBuffer>) {
  if (spare.length < SPARE_BUFFERS) spare.push(b.buffer);
}

function packFile(ref: RestoreBlobRef): Deno.FsFile {
  let f = packs.get(ref.pack);
  if (f) {
    packs.delete(ref.pack); // set again below: the map's order is least recently used first
  } else {
    try {
      f = Deno.openSync(ref.pack, { read: true });
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new MissingObjectError("blob", ref.id, `its pack ${ref.packId} is missing`);
      }
      throw new IntegrityError(
        "blob",
        ref.id,
        `cannot read from pack ${ref.packId}: ${(e as Error).message}`,
      );
    }
    for (const [name, old] of packs) {
      if (packs.size < OPEN_PACKS) break;
      packs.delete(name);
      old.close();
    }
  }
  packs.set(ref.pack, f);
  return f;
}

/** The stored form of `ref`, read from its pack into a reused buffer. */
function readStored(ref: RestoreBlobRef): Uint8Array<ArrayBuffer> {
  const f = packFile(ref);
  const out = buffer(ref.length);
  try {
    f.seekSync(ref.offset, Deno.SeekMode.Start);
    for (let got = 0; got < ref.length;) {
      const n = f.readSync(out.subarray(got));
      if (n === null) throw new Error("ended early");
      got += n;
    }
  } catch (e) {
    recycle(out);
    throw new IntegrityError("blob", ref.id, `cannot read from pack ${ref.packId}: ${(e as Error).message}`);
  }
  return out;
}

function writeAt(f: Deno.FsFile, offset: number, data: Uint8Array) {
  f.seekSync(offset, Deno.SeekMode.Start);
  for (let off = 0; off < data.length;) off += f.writeSync(data.subarray(off));
}

/**
 * Restores `job`'s blobs into its temporary file: each is verified before a byte of it is written, at the
 * offset that the lengths of the blobs before it give (their headers declare them, and a blob is written
 * only if its header is authentic); all-zero blobs are left as holes. The first failure stops the file:
 * the blobs already being written end, then it is thrown (the caller removes the temporary file).
 * Returns the bytes restored and whether the file ends in a hole (the caller sets its length).
 */
export async function restoreFile(
  codec: BlobCodec,
  job: RestoreFileJob,
  progress: (bytes: number) => void,
): Promise<{ written: number; endsInHole: boolean }> {
  const hasher = createChunkIdHasher(job.hasher);
  const out = Deno.openSync(job.path, { write: true });
  const pending: Promise<void>[] = [];
  let failure: unknown = null;
  let offset = 0;
  let endsInHole = false;
  try {
    for (let i = 0; i < job.blobs.length && failure === null; i++) {
      await acquire();
      if (failure !== null) {
        release();
        break;
      }
      const ref = job.blobs[i];
      let stored: Uint8Array<ArrayBuffer>;
      try {
        stored = readStored(ref);
      } catch (e) {
        release();
        failure ??= e;
        break;
      }
      const at = offset;
      offset += stored.length >= 8 ? new DataView(stored.buffer, 0, 8).getUint32(4, true) : 0;
      const last = i === job.blobs.length - 1;
      const p = codec.decode(ref.id, stored, hasher).then((plain) => {
        const zero = isAllZero(plain);
        if (!zero) writeAt(out, at, plain);
        if (last) endsInHole = zero;
        progress(plain.length);
      }).finally(() => {
        recycle(stored);
        release();
      });
      p.catch((e) => failure ??= e);
      pending.push(p);
    }
  } finally {
    await Promise.allSettled(pending);
    out.close();
  }
  if (failure !== null) throw failure;
  return { written: offset, endsInHole };
}
