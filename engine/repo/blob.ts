/**
 * Blob encoding (format v1): an 8-byte header (version, compression, encryption, flags, plaintext
 * length) and a body sealed by the encryption mode, every mode binding the blob to its id:
 *
 * - aes-256-gcm: nonce(12) || AES-256-GCM(dataKey, nonce, aad = header || id, payload) (ciphertext || tag(16))
 * - aes-256-cbc: iv(16) || AES-256-CBC-PKCS7(encKey, iv, payload) || HMAC-SHA-256(macKey, header || id || iv || ct)
 *   with encKey / macKey = HKDF-SHA-256(dataKey, salt = "", info = "cadres-blob-cbc-enc-v1" / "-mac-v1")
 * - none: payload || SHA-256(header || id || payload)
 *
 * The payload is the plaintext compressed as the header says (a blob that does not shrink is stored
 * raw, code 0). Decoding checks everything before it returns a byte, then (given a hasher) recomputes
 * the id from the plaintext. docs/repository-format.md §Blobs has a test vector.
 */
import { createHmac, hkdfSync, timingSafeEqual } from "node:crypto";
import { ByteReader, concat, fromHex } from "./bytes.ts";
import type { BlobId, ChunkIdHasher } from "./chunk_id.ts";
import { sha256 } from "./chunk_id.ts";
import {
  compress,
  type Compression,
  COMPRESSION_CODES,
  compressionOfCode,
  decompress,
  loadCompression,
} from "./compression.ts";
import { IntegrityError, RepoConfigError } from "./errors.ts";

/** Encryption names as the repository config and the CLI spell them. */
export type Encryption = "aes-256-gcm" | "aes-256-cbc" | "none";

/** Encryption codes in a blob header (format v1). */
export const ENCRYPTION_CODES: Readonly<Record<Encryption, number>> = Object.freeze({
  "none": 0,
  "aes-256-gcm": 1,
  "aes-256-cbc": 2,
});

/** The blob format version this program writes and reads. */
export const BLOB_VERSION = 1;
/** Length of the blob header. */
export const BLOB_HEADER_BYTES = 8;
/** The largest plaintext a blob may hold (64 MiB): a bound on what a decoder allocates. */
export const MAX_BLOB_PLAINTEXT = 64 * 1024 * 1024;

const GCM_NONCE = 12;
const GCM_TAG = 16;
const CBC_IV = 16;
const MAC_BYTES = 32;

/** Encodes and decodes the blobs of one namespace. */
export interface BlobCodec {
  readonly encryption: Encryption;
  readonly compression: Compression;
  /** The stored form of `plain` under `id`. */
  encode(id: BlobId, plain: Uint8Array): Promise<Uint8Array<ArrayBuffer>>;
  /**
   * The plaintext of `stored`. Throws `IntegrityError` naming `id` on any mismatch (header, length,
   * authentication, checksum, decompression, and — with `hasher` — the id recomputed from the plaintext).
   */
  decode(id: BlobId, stored: Uint8Array, hasher?: ChunkIdHasher): Promise<Uint8Array>;
}

/**
 * A codec that can also hand out a blob's stored form as consecutive parts (same bytes as `encode`, without
 * the copy into one buffer): what a worker sends to be packed.
 */
export interface PartsBlobCodec extends BlobCodec {
  /**
   * The stored form of `plain` under `id` as consecutive parts. A part may be a view of `plain` itself
   * (encryption and compression "none"): copy it before reusing `plain`'s buffer.
   */
  encodeParts(id: BlobId, plain: Uint8Array): Promise<Uint8Array<ArrayBuffer>[]>;
}

/** The HKDF-derived AES-CBC and HMAC keys of `dataKey`. */
export function deriveCbcKeys(dataKey: Uint8Array): { encKey: Uint8Array; macKey: Uint8Array } {
  const d = (info: string) => new Uint8Array(hkdfSync("sha256", dataKey, new Uint8Array(0), info, 32));
  return { encKey: d("cadres-blob-cbc-enc-v1"), macKey: d("cadres-blob-cbc-mac-v1") };
}

function header(compression: number, encryption: number, plainLength: number): Uint8Array<ArrayBuffer> {
  const h = new Uint8Array(BLOB_HEADER_BYTES);
  h[0] = BLOB_VERSION;
  h[1] = compression;
  h[2] = encryption;
  h[3] = 0;
  new DataView(h.buffer).setUint32(4, plainLength, true);
  return h;
}

/** `data` as WebCrypto takes it: the same bytes without a copy, unless they lie in a shared buffer. */
function asBufferSource(data: Uint8Array): Uint8Array<ArrayBuffer> {
  return data.buffer instanceof ArrayBuffer ? data as Uint8Array<ArrayBuffer> : new Uint8Array(data);
}

function macEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/**
 * Whether a blob encoded as `parts` (its header first) stores its payload compressed: false for a blob that
 * did not shrink and was stored raw — random, encrypted or already compressed content. Backups count the
 * new bytes stored raw (`BackupResult.bytesNewIncompressible`): encrypted data does not compress.
 */
export function partsCompressed(parts: readonly Uint8Array[]): boolean {
  const h = parts[0];
  return h !== undefined && h.length > 1 && h[1] !== COMPRESSION_CODES.none;
}

/**
 * A codec for `encryption` with the namespace's 32-byte `dataKey` (ignored for "none"), compressing new
 * blobs with `compression`. Throws `RepoConfigError` if the key is missing or not 32 bytes.
 */
export async function createBlobCodec(
  options: {
    encryption: Encryption;
    compression: Compression;
    dataKey?: Uint8Array | null;
    /** Source of nonces and IVs; only test vectors replace it. */
    randomBytes?: (n: number) => Uint8Array<ArrayBuffer>;
  },
): Promise<PartsBlobCodec> {
  const randomBytes = options.randomBytes ?? ((n: number) => crypto.getRandomValues(new Uint8Array(n)));
  const { encryption, compression } = options;
  const dataKey = options.dataKey ?? null;
  if (encryption !== "none" && (dataKey === null || dataKey.length !== 32)) {
    throw new RepoConfigError(`Encryption ${encryption} needs a 32-byte data key`);
  }
  let gcmKey: CryptoKey | null = null;
  let cbcKey: CryptoKey | null = null;
  let macKey: Uint8Array | null = null;
  if (encryption === "aes-256-gcm") {
    gcmKey = await crypto.subtle.importKey("raw", new Uint8Array(dataKey!), "AES-GCM", false, [
      "encrypt",
      "decrypt",
    ]);
  } else if (encryption === "aes-256-cbc") {
    const keys = deriveCbcKeys(dataKey!);
    cbcKey = await crypto.subtle.importKey("raw", new Uint8Array(keys.encKey), "AES-CBC", false, [
      "encrypt",
      "decrypt",
    ]);
    macKey = keys.macKey;
  }
  const encCode = ENCRYPTION_CODES[encryption];
  await loadCompression(compression);

  async function encodeParts(id: BlobId, plain: Uint8Array): Promise<Uint8Array<ArrayBuffer>[]> {
    if (plain.length > MAX_BLOB_PLAINTEXT) {
      throw new RepoConfigError(`Blob ${id} too large: ${plain.length} bytes`);
    }
    const packed = compress(compression, plain);
    const payload = packed ?? plain;
    const h = header(packed ? COMPRESSION_CODES[compression] : 0, encCode, plain.length);
    const idBytes = fromHex(id);
    if (encryption === "aes-256-gcm") {
      const nonce = randomBytes(GCM_NONCE);
      const ct = await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: nonce, additionalData: concat(h, idBytes), tagLength: 128 },
        gcmKey!,
        asBufferSource(payload),
      );
      return [concat(h, nonce), new Uint8Array(ct)];
    }
    if (encryption === "aes-256-cbc") {
      const iv = randomBytes(CBC_IV);
      const ct = new Uint8Array(
        await crypto.subtle.encrypt({ name: "AES-CBC", iv }, cbcKey!, new Uint8Array(payload)),
      );
      const mac = createHmac("sha256", macKey!).update(h).update(idBytes).update(iv).update(ct).digest();
      return [concat(h, iv), ct, new Uint8Array(mac)];
    }
    // zstd's output lies in node's shared Buffer pool, whose memory cannot be transferred to a worker (the pack
    // is hashed on one): a compressed payload gets a buffer of its own.
    return [
      h,
      packed ? packed.slice() : asBufferSource(payload),
      new Uint8Array(sha256(h, idBytes, payload)),
    ];
  }

  async function encode(id: BlobId, plain: Uint8Array): Promise<Uint8Array<ArrayBuffer>> {
    return concat(...await encodeParts(id, plain));
  }

  async function decode(id: BlobId, stored: Uint8Array, hasher?: ChunkIdHasher): Promise<Uint8Array> {
    const fail = (detail: string, cause?: unknown): never => {
      throw new IntegrityError("blob", id, detail, cause ? { cause } : undefined);
    };
    if (stored.length < BLOB_HEADER_BYTES) fail("shorter than its header");
    const r = new ByteReader(stored);
    const version = r.u8();
    // The repository config carries the format version; an unknown blob version here is damage.
    if (version !== BLOB_VERSION) fail(`unknown blob version ${version}`);
    const compression = compressionOfCode(r.u8()) ?? fail("unknown compression code");
    const enc = r.u8();
    if (enc !== encCode) fail(`encryption code ${enc} does not match the namespace's ${encCode}`);
    if (r.u8() !== 0) fail("reserved flags set");
    const plainLength = r.u32();
    if (plainLength > MAX_BLOB_PLAINTEXT) fail(`declared length ${plainLength} too large`);
    const h = stored.subarray(0, BLOB_HEADER_BYTES);
    const body = stored.subarray(BLOB_HEADER_BYTES);
    let idBytes: Uint8Array;
    try {
      idBytes = fromHex(id);
    } catch (e) {
      return fail("invalid id", e);
    }
    let payload: Uint8Array;
    if (encryption === "aes-256-gcm") {
      if (body.length < GCM_NONCE + GCM_TAG) fail("body too short");
      try {
        payload = new Uint8Array(
          await crypto.subtle.decrypt(
            {
              name: "AES-GCM",
              iv: body.slice(0, GCM_NONCE),
              additionalData: concat(h, idBytes),
              tagLength: 128,
            },
            gcmKey!,
            asBufferSource(body.subarray(GCM_NONCE)),
          ),
        );
      } catch (e) {
        return fail("authentication failed (damaged, or not written with this key)", e);
      }
    } else if (encryption === "aes-256-cbc") {
      if (body.length < CBC_IV + 16 + MAC_BYTES) fail("body too short");
      const iv = body.subarray(0, CBC_IV);
      const ct = body.subarray(CBC_IV, body.length - MAC_BYTES);
      const mac = body.subarray(body.length - MAC_BYTES);
      const want = createHmac("sha256", macKey!).update(h).update(idBytes).update(iv).update(ct).digest();
      if (!macEqual(mac, want)) fail("authentication failed (damaged, or not written with this key)");
      try {
        payload = new Uint8Array(
          await crypto.subtle.decrypt({ name: "AES-CBC", iv: iv.slice() }, cbcKey!, ct.slice()),
        );
      } catch (e) {
        return fail("decryption failed", e);
      }
    } else {
      if (body.length < MAC_BYTES) fail("body too short");
      payload = body.subarray(0, body.length - MAC_BYTES);
      const sum = body.subarray(body.length - MAC_BYTES);
      if (!macEqual(sum, sha256(h, idBytes, payload))) fail("checksum mismatch");
    }
    let plain: Uint8Array;
    try {
      await loadCompression(compression);
      plain = decompress(compression, payload, plainLength);
    } catch (e) {
      return fail(`cannot decompress: ${(e as Error).message}`, e);
    }
    if (hasher && hasher.id(plain) !== id) fail("content does not hash to its id");
    return plain;
  }

  return { encryption, compression, encode, encodeParts, decode };
}
