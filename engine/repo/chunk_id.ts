/**
 * Chunk ids: a keyed hash of a blob's plaintext, so a reader of the store cannot confirm known content.
 * HMAC-SHA-256 with the namespace's id key; SHA-256 when the repository has no encryption. With
 * deduplication off, a per-chain salt is prefixed to the data, so chains share nothing.
 */
import { createHash, createHmac } from "node:crypto";

/** A blob id: 64 lower-case hex digits (32 bytes). */
export type BlobId = string;

/** Length in bytes of every id in format v1. */
export const ID_BYTES = 32;

/** Computes the ids of one namespace (and, with dedup off, one chain). */
export interface ChunkIdHasher {
  /** The id of `data`. */
  id(data: Uint8Array): BlobId;
  /** Whether ids are keyed (HMAC) rather than plain SHA-256. */
  readonly keyed: boolean;
  /** What `createChunkIdHasher` was given: lets a worker thread build the same hasher. */
  readonly spec?: { idKey: Uint8Array | null; salt: Uint8Array | null };
}

/**
 * A hasher: HMAC-SHA-256(idKey, salt || data) with a key, SHA-256(salt || data) without; `salt` is
 * empty unless deduplication is off.
 */
export function createChunkIdHasher(
  options: { idKey?: Uint8Array | null; salt?: Uint8Array | null },
): ChunkIdHasher {
  const key = options.idKey ?? null;
  const salt = options.salt && options.salt.length > 0 ? options.salt : null;
  return {
    keyed: key !== null,
    spec: { idKey: key, salt },
    id(data: Uint8Array): BlobId {
      const h = key ? createHmac("sha256", key) : createHash("sha256");
      if (salt) h.update(salt);
      h.update(data);
      return h.digest("hex");
    },
  };
}

/** SHA-256 of `data` as hex (names of content-addressed objects: packs, index segments, snapshots). */
export function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** SHA-256 of `parts` concatenated, as bytes. */
export function sha256(...parts: Uint8Array[]): Uint8Array {
  const h = createHash("sha256");
  for (const p of parts) h.update(p);
  return new Uint8Array(h.digest());
}
