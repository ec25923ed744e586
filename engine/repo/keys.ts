/**
 * Keys. Each namespace (one per host) has a data key (blob encryption) and an id key (chunk ids),
 * 32 random bytes each. They are stored in "keys/<namespace>/<wrapper id>" objects, wrapped by a
 * key-encryption key (KEK) with AES-256-GCM (WebCrypto): JSON in clear naming the namespace and the
 * KEK's id, and the sealed key material. The sealed part also carries the SHA-256 of the repository
 * config, so opening detects a swapped config.
 *
 * KEK id = first 16 hex digits of SHA-256("cadres-kek-id-v1" || KEK). Wrapping: nonce (12 random
 * bytes), AAD = UTF-8 "cadres-key-v1" NUL repository id NUL namespace, plaintext = JSON
 * {"dataKey": base64, "idKey": base64, "configSha256": hex, "createdAt": ISO time}.
 */
import { createHash } from "node:crypto";
import { fromBase64, toBase64 } from "./bytes.ts";
import { IntegrityError, RepoConfigError, RepoError, WrongKeyError } from "./errors.ts";
import { parentDir, syncDir } from "./fs.ts";

/** Key object format version. */
export const KEY_OBJECT_VERSION = 1;
/** Length of every key (bytes). */
export const KEY_BYTES = 32;

/** The keys of one namespace. */
export interface NamespaceKeys {
  namespace: string;
  dataKey: Uint8Array;
  idKey: Uint8Array;
}

/** A stored key object (JSON). */
export interface KeyObject {
  version: number;
  namespace: string;
  wrappedBy: { kind: "kek"; id: string };
  algorithm: "aes-256-gcm";
  nonce: string;
  ciphertext: string;
}

/** Throws `RepoConfigError` unless `name` is a valid namespace name (a host id or hostname). */
export function validateNamespace(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name)) {
    throw new RepoConfigError(`Invalid namespace "${name}": use 1-128 letters, digits, ".", "_" or "-"`);
  }
}

/** The id of a KEK (16 hex digits), which names the key objects it wraps. */
export function kekId(kek: Uint8Array): string {
  return createHash("sha256").update("cadres-kek-id-v1").update(kek).digest("hex").slice(0, 16);
}

/** Object name of the key object of `namespace` wrapped by the KEK with id `wrapperId`. */
export function keyObjectName(namespace: string, wrapperId: string): string {
  return `keys/${namespace}/${wrapperId}`;
}

/** Fresh random keys for `namespace`. */
export function generateNamespaceKeys(namespace: string): NamespaceKeys {
  validateNamespace(namespace);
  return {
    namespace,
    dataKey: crypto.getRandomValues(new Uint8Array(KEY_BYTES)),
    idKey: crypto.getRandomValues(new Uint8Array(KEY_BYTES)),
  };
}

function aad(repoId: string, namespace: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`cadres-key-v1\u0000${repoId}\u0000${namespace}`);
}

async function importKek(kek: Uint8Array): Promise<CryptoKey> {
  if (kek.length !== KEY_BYTES) {
    throw new WrongKeyError(`A key-encryption key must be ${KEY_BYTES} bytes, got ${kek.length}`);
  }
  return await crypto.subtle.importKey("raw", new Uint8Array(kek), "AES-GCM", false, ["encrypt", "decrypt"]);
}

/** The key object of `keys` wrapped by `kek`, bound to repository `repoId` and its config hash. */
export async function wrapNamespaceKeys(
  keys: NamespaceKeys,
  kek: Uint8Array,
  binding: { repoId: string; configSha256: string; now: Date },
): Promise<KeyObject> {
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const plain = new TextEncoder().encode(JSON.stringify({
    dataKey: toBase64(keys.dataKey),
    idKey: toBase64(keys.idKey),
    configSha256: binding.configSha256,
    createdAt: binding.now.toISOString(),
  }));
  const ct = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData: aad(binding.repoId, keys.namespace) },
    await importKek(kek),
    plain,
  );
  return {
    version: KEY_OBJECT_VERSION,
    namespace: keys.namespace,
    wrappedBy: { kind: "kek", id: kekId(kek) },
    algorithm: "aes-256-gcm",
    nonce: toBase64(nonce),
    ciphertext: toBase64(new Uint8Array(ct)),
  };
}

/** Parses a stored key object. Throws `IntegrityError` naming `name` if it is not one. */
export function parseKeyObject(name: string, bytes: Uint8Array): KeyObject {
  try {
    const o = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as KeyObject;
    if (o.version !== KEY_OBJECT_VERSION || o.algorithm !== "aes-256-gcm" || o.wrappedBy?.kind !== "kek") {
      throw new Error("unknown version or algorithm");
    }
    validateNamespace(o.namespace);
    if (typeof o.nonce !== "string" || typeof o.ciphertext !== "string") throw new Error("fields missing");
    return o;
  } catch (e) {
    throw new IntegrityError("key", name, `not a readable key object (${(e as Error).message})`);
  }
}

/**
 * The namespace keys sealed in `obj` (object `name`). Throws `IntegrityError` naming the key object if
 * it does not authenticate under `kek` or its config hash differs from `configSha256`.
 */
export async function unwrapNamespaceKeys(
  name: string,
  obj: KeyObject,
  kek: Uint8Array,
  binding: { repoId: string; configSha256: string },
): Promise<NamespaceKeys> {
  let plain: Uint8Array;
  try {
    plain = new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: fromBase64(obj.nonce), additionalData: aad(binding.repoId, obj.namespace) },
        await importKek(kek),
        fromBase64(obj.ciphertext),
      ),
    );
  } catch (e) {
    if (e instanceof RepoError) throw e;
    // The repository id (from the config) is authenticated too: a damaged config id fails here.
    throw new IntegrityError(
      "key",
      name,
      "does not authenticate under this key (the key object is damaged or wrapped by another key, or the " +
        "config's repository id is damaged)",
    );
  }
  const p = JSON.parse(new TextDecoder().decode(plain));
  if (p.configSha256 !== binding.configSha256) {
    throw new IntegrityError("config", "config", `does not match the config hash sealed in key ${name}`);
  }
  const dataKey = fromBase64(p.dataKey);
  const idKey = fromBase64(p.idKey);
  if (dataKey.length !== KEY_BYTES || idKey.length !== KEY_BYTES) {
    throw new IntegrityError("key", name, "key material has the wrong length");
  }
  return { namespace: obj.namespace, dataKey, idKey };
}

/**
 * Creates a key file: 32 random bytes, base64, mode 0600. Throws if `path` already exists. The file and
 * its folder are synced before this returns, so no repository key object wrapped by this key can reach
 * the disk while the key itself could still be lost to a crash.
 */
export async function createKeyFile(path: string): Promise<Uint8Array> {
  const kek = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
  const data = new TextEncoder().encode(toBase64(kek) + "\n");
  const file = await Deno.open(path, { write: true, createNew: true, mode: 0o600 });
  try {
    let off = 0;
    while (off < data.length) off += await file.write(data.subarray(off));
    await Deno.chmod(path, 0o600); // the mode given to open is narrowed by the umask only
    await file.sync();
  } finally {
    file.close();
  }
  await syncDir(parentDir(path.includes("/") ? path : `./${path}`));
  return kek;
}

/** The KEK in key file `path`. Throws `WrongKeyError` if it is missing or not 32 bytes of base64. */
export async function readKeyFile(path: string): Promise<Uint8Array> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new WrongKeyError(`Cannot read key file ${path}: ${(e as Error).message}`);
  }
  let kek: Uint8Array;
  try {
    kek = fromBase64(text.trim());
  } catch {
    throw new WrongKeyError(`Key file ${path} is not base64`);
  }
  if (kek.length !== KEY_BYTES) {
    throw new WrongKeyError(`Key file ${path} holds ${kek.length} bytes, not ${KEY_BYTES}`);
  }
  return kek;
}
