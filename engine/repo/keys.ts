/**
 * Keys. Each namespace (one per host) has a data key (blob encryption) and an id key (chunk ids),
 * 32 random bytes each. They are stored in "keys/<namespace>/<wrapper id>" objects, each wrapping them for
 * one holder: a key-encryption key (KEK, AES-256-GCM) or the account's recovery public key (RSA-OAEP-3072
 * + AES-256-GCM, recovery.ts). JSON in clear names the namespace and the wrapper; the sealed part is the
 * key material and the SHA-256 of the repository config, so opening detects a swapped config.
 *
 * KEK id = first 16 hex digits of SHA-256("cadres-kek-id-v1" || KEK); recovery key id: recovery.ts. The
 * sealed plaintext is JSON {"dataKey": base64, "idKey": base64, "configSha256": hex, "createdAt": ISO
 * time}, with AAD = UTF-8 "cadres-key-v1" NUL repository id NUL namespace, for both wrapper kinds.
 *
 * A repository is opened by a `KeyOpener`: a KEK, the recovery private key, or one namespace's keys
 * themselves (what a job receives from the control plane: no key object needed, that namespace alone).
 */
import { createHash } from "node:crypto";
import { fromBase64, toBase64 } from "./bytes.ts";
import { IntegrityError, RepoConfigError, RepoError, WrongKeyError } from "./errors.ts";
import { parentDir, syncDir } from "./fs.ts";
import {
  checkRecoveryPublicKey,
  openWithRecovery,
  RECOVERY_ALGORITHM,
  recoveryKeyId,
  recoveryPublicPemOfPrivate,
  sealForRecovery,
} from "./recovery.ts";

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

/** A stored key object wrapped by a KEK (JSON). */
export interface KekKeyObject {
  version: number;
  namespace: string;
  wrappedBy: { kind: "kek"; id: string };
  algorithm: "aes-256-gcm";
  nonce: string;
  ciphertext: string;
}

/** A stored key object wrapped for a recovery public key (JSON). */
export interface RecoveryKeyObject {
  version: number;
  namespace: string;
  wrappedBy: { kind: "recovery"; id: string };
  algorithm: typeof RECOVERY_ALGORITHM;
  /** RSA-OAEP-SHA-256 of the 32-byte content key, base64 (384 bytes). */
  encryptedKey: string;
  nonce: string;
  ciphertext: string;
}

/** A stored key object (JSON). */
export type KeyObject = KekKeyObject | RecoveryKeyObject;

/** The kinds of wrapper a key object names. */
export type WrapperKind = KeyObject["wrappedBy"]["kind"];

/** What wraps namespace keys into a key object: a KEK, or a recovery public key (SPKI PEM). */
export type KeyWrapper = { kind: "kek"; kek: Uint8Array } | { kind: "recovery"; publicPem: string };

/**
 * What opens a repository: a KEK (the key file of `deno task repo`), the account recovery private key
 * (PKCS#8 PEM), or one namespace's keys directly (a job's; opens that namespace alone).
 */
export type KeyOpener =
  | { kind: "kek"; kek: Uint8Array }
  | { kind: "recovery"; privatePem: string }
  | { kind: "namespace"; keys: NamespaceKeys };

/** An opener for a KEK. */
export function kekOpener(kek: Uint8Array): KeyOpener {
  return { kind: "kek", kek };
}

/** An opener for the recovery private key `privatePem` (PKCS#8 PEM). */
export function recoveryOpener(privatePem: string): KeyOpener {
  return { kind: "recovery", privatePem };
}

/** An opener for one namespace's keys, as the control plane hands them to a job. */
export function namespaceKeysOpener(keys: NamespaceKeys): KeyOpener {
  validateNamespace(keys.namespace);
  if (keys.dataKey.length !== KEY_BYTES || keys.idKey.length !== KEY_BYTES) {
    throw new WrongKeyError(`Namespace keys must be ${KEY_BYTES} bytes each`);
  }
  return { kind: "namespace", keys };
}

/** `key` as an opener: a bare `Uint8Array` is a KEK (the original form of `Repository.open`). */
export function asOpener(key: Uint8Array | KeyOpener): KeyOpener {
  return key instanceof Uint8Array ? kekOpener(key) : key;
}

/** A resolved opener: its wrapper id (null for namespace keys) and the wrapper it writes new key objects with. */
export interface ResolvedOpener {
  opener: KeyOpener;
  /** The id of the key objects it opens; null for namespace keys (they open none). */
  id: string | null;
  /** How it wraps namespaces it creates; null for namespace keys. */
  wrapper: KeyWrapper | null;
  /** For messages: "the key (id …)", "the recovery key (id …)", "the keys of namespace …". */
  describe: string;
}

/** Checks `opener` and works out its id and wrapper. Throws `WrongKeyError` if the key is unusable. */
export async function resolveOpener(opener: KeyOpener): Promise<ResolvedOpener> {
  switch (opener.kind) {
    case "kek": {
      await importKek(opener.kek);
      const id = kekId(opener.kek);
      return { opener, id, wrapper: { kind: "kek", kek: opener.kek }, describe: `the key (id ${id})` };
    }
    case "recovery": {
      const publicPem = await recoveryPublicPemOfPrivate(opener.privatePem);
      const id = recoveryKeyId(publicPem);
      return {
        opener,
        id,
        wrapper: { kind: "recovery", publicPem },
        describe: `the recovery key (id ${id})`,
      };
    }
    case "namespace":
      namespaceKeysOpener(opener.keys);
      return {
        opener,
        id: null,
        wrapper: null,
        describe: `the keys of namespace "${opener.keys.namespace}"`,
      };
  }
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

/** The id of the key objects `wrapper` writes (KEK id or recovery key id). */
export function wrapperId(wrapper: KeyWrapper): string {
  return wrapper.kind === "kek" ? kekId(wrapper.kek) : recoveryKeyId(wrapper.publicPem);
}

/** What a key object seals, bound to a repository. */
export interface KeyBinding {
  repoId: string;
  configSha256: string;
  now: Date;
}

/**
 * The key object of `keys` wrapped by `wrapper` (a KEK, given bare or as a wrapper, or a recovery public
 * key), bound to repository `repoId` and its config hash. Throws `WrongKeyError` if the wrapper is unusable.
 */
export async function wrapNamespaceKeys(
  keys: NamespaceKeys,
  wrapper: Uint8Array | KeyWrapper,
  binding: KeyBinding,
): Promise<KeyObject> {
  const w: KeyWrapper = wrapper instanceof Uint8Array ? { kind: "kek", kek: wrapper } : wrapper;
  const plain = new TextEncoder().encode(JSON.stringify({
    dataKey: toBase64(keys.dataKey),
    idKey: toBase64(keys.idKey),
    configSha256: binding.configSha256,
    createdAt: binding.now.toISOString(),
  }));
  const additionalData = aad(binding.repoId, keys.namespace);
  if (w.kind === "recovery") {
    const id = await checkRecoveryPublicKey(w.publicPem);
    const sealed = await sealForRecovery(w.publicPem, plain, additionalData);
    return {
      version: KEY_OBJECT_VERSION,
      namespace: keys.namespace,
      wrappedBy: { kind: "recovery", id },
      algorithm: RECOVERY_ALGORITHM,
      encryptedKey: toBase64(sealed.encryptedKey),
      nonce: toBase64(sealed.nonce),
      ciphertext: toBase64(sealed.ciphertext),
    };
  }
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const ct = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: nonce, additionalData },
    await importKek(w.kek),
    plain,
  );
  return {
    version: KEY_OBJECT_VERSION,
    namespace: keys.namespace,
    wrappedBy: { kind: "kek", id: kekId(w.kek) },
    algorithm: "aes-256-gcm",
    nonce: toBase64(nonce),
    ciphertext: toBase64(new Uint8Array(ct)),
  };
}

/** The stored bytes of a key object (indented UTF-8 JSON, as every writer stores it). */
export function encodeKeyObject(ko: KeyObject): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(JSON.stringify(ko, null, 2));
}

/**
 * The key object that wraps `keys` for the account recovery public key `publicPem` (SPKI PEM), bound to
 * repository `repoId` and the SHA-256 of its config bytes: its object name and bytes, ready to store. No
 * private key is needed — the control plane prepares these for a BES, which stores them as they are.
 * Throws `WrongKeyError` if `publicPem` is not a 3072-bit RSA public key.
 */
export async function recoveryKeyObject(
  keys: NamespaceKeys,
  publicPem: string,
  binding: { repoId: string; configSha256: string; now?: Date },
): Promise<{ name: string; bytes: Uint8Array<ArrayBuffer> }> {
  validateNamespace(keys.namespace);
  const ko = await wrapNamespaceKeys(keys, { kind: "recovery", publicPem }, {
    repoId: binding.repoId,
    configSha256: binding.configSha256,
    now: binding.now ?? new Date(),
  });
  return { name: keyObjectName(keys.namespace, ko.wrappedBy.id), bytes: encodeKeyObject(ko) };
}

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

/**
 * Parses stored key object `name`. Throws `IntegrityError` naming it if it is not one, or if it is stored
 * under another name than `keys/<its namespace>/<its wrapper id>`.
 */
export function parseKeyObject(name: string, bytes: Uint8Array): KeyObject {
  try {
    const o = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes)) as KeyObject;
    if (typeof o !== "object" || o === null || o.version !== KEY_OBJECT_VERSION) {
      throw new Error("unknown version");
    }
    const kind = o.wrappedBy?.kind;
    if (kind === "kek") {
      if (o.algorithm !== "aes-256-gcm") throw new Error("unknown algorithm");
    } else if (kind === "recovery") {
      if (o.algorithm !== RECOVERY_ALGORITHM) throw new Error("unknown algorithm");
      if (typeof o.encryptedKey !== "string" || !B64.test(o.encryptedKey)) throw new Error("fields missing");
    } else {
      throw new Error("unknown wrapper kind");
    }
    validateNamespace(o.namespace);
    if (typeof o.wrappedBy.id !== "string" || !/^[0-9a-f]{16}$/.test(o.wrappedBy.id)) {
      throw new Error("invalid wrapper id");
    }
    if (typeof o.nonce !== "string" || typeof o.ciphertext !== "string") throw new Error("fields missing");
    if (!B64.test(o.nonce) || !B64.test(o.ciphertext)) throw new Error("fields are not base64");
    if (name !== keyObjectName(o.namespace, o.wrappedBy.id)) {
      throw new Error(`stored under another name than ${keyObjectName(o.namespace, o.wrappedBy.id)}`);
    }
    return o;
  } catch (e) {
    throw new IntegrityError("key", name, `not a readable key object (${(e as Error).message})`);
  }
}

/** The namespace keys and creation time a key object seals. */
export interface UnwrappedKeys extends NamespaceKeys {
  createdAt: string;
}

/**
 * The namespace keys sealed in `obj` (object `name`), unwrapped by `key` (a KEK, bare or as an opener, or
 * the recovery private key). Throws `WrongKeyError` if `key` is not the wrapper `obj` names, and
 * `IntegrityError` naming the key object if it does not authenticate under it, or naming the config if
 * the sealed config hash differs from `configSha256`.
 */
export async function unwrapNamespaceKeys(
  name: string,
  obj: KeyObject,
  key: Uint8Array | KeyOpener,
  binding: { repoId: string; configSha256: string },
): Promise<UnwrappedKeys> {
  const opener = asOpener(key);
  const additionalData = aad(binding.repoId, obj.namespace);
  const damaged = () =>
    new IntegrityError(
      "key",
      name,
      "does not authenticate under this key (the key object is damaged or wrapped by another key, or the " +
        "config's repository id is damaged)",
    );
  let plain: Uint8Array;
  if (obj.wrappedBy.kind === "kek" && opener.kind === "kek") {
    try {
      plain = new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-GCM", iv: fromBase64(obj.nonce), additionalData },
          await importKek(opener.kek),
          fromBase64(obj.ciphertext),
        ),
      );
    } catch (e) {
      if (e instanceof RepoError) throw e;
      // The repository id (from the config) is authenticated too: a damaged config id fails here.
      throw damaged();
    }
  } else if (obj.wrappedBy.kind === "recovery" && opener.kind === "recovery") {
    const sealed = {
      encryptedKey: fromBase64((obj as RecoveryKeyObject).encryptedKey),
      nonce: fromBase64(obj.nonce),
      ciphertext: fromBase64(obj.ciphertext),
    };
    try {
      plain = await openWithRecovery(opener.privatePem, sealed, additionalData);
    } catch (e) {
      if (!(e instanceof WrongKeyError)) throw e;
      throw damaged();
    }
  } else {
    throw new WrongKeyError(
      `Key object ${name} is wrapped by a ${obj.wrappedBy.kind}, not by this ${opener.kind}`,
    );
  }
  let p: Record<string, unknown>;
  try {
    p = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(plain));
  } catch {
    throw new IntegrityError("key", name, "sealed key material is not JSON");
  }
  if (p.configSha256 !== binding.configSha256) {
    throw new IntegrityError("config", "config", `does not match the config hash sealed in key ${name}`);
  }
  let dataKey: Uint8Array, idKey: Uint8Array;
  try {
    dataKey = fromBase64(p.dataKey as string);
    idKey = fromBase64(p.idKey as string);
  } catch {
    throw new IntegrityError("key", name, "key material is not base64");
  }
  if (dataKey.length !== KEY_BYTES || idKey.length !== KEY_BYTES) {
    throw new IntegrityError("key", name, "key material has the wrong length");
  }
  return { namespace: obj.namespace, dataKey, idKey, createdAt: String(p.createdAt ?? "") };
}

/** Whether two sets of namespace keys are the same keys of the same namespace. */
export function sameNamespaceKeys(a: NamespaceKeys, b: NamespaceKeys): boolean {
  const eq = (x: Uint8Array, y: Uint8Array) => x.length === y.length && x.every((v, i) => v === y[i]);
  return a.namespace === b.namespace && eq(a.dataKey, b.dataKey) && eq(a.idKey, b.idKey);
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

/**
 * The recovery private key (PKCS#8 PEM, "BEGIN PRIVATE KEY") in file `path`. Throws `WrongKeyError` if it
 * is missing, is a public key, or is not a 3072-bit RSA-OAEP private key.
 */
export async function readRecoveryKeyFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new WrongKeyError(`Cannot read recovery key file ${path}: ${(e as Error).message}`);
  }
  if (text.includes("-----BEGIN PUBLIC KEY-----")) {
    throw new WrongKeyError(
      `Recovery key file ${path} holds a public key; --recovery-key needs the private key (PKCS#8 PEM)`,
    );
  }
  if (!text.includes("-----BEGIN PRIVATE KEY-----")) {
    throw new WrongKeyError(
      `Recovery key file ${path} is not a PKCS#8 PEM private key ("BEGIN PRIVATE KEY")`,
    );
  }
  try {
    await recoveryPublicPemOfPrivate(text);
  } catch (e) {
    throw new WrongKeyError(`Recovery key file ${path}: ${(e as Error).message}`);
  }
  return text;
}

/** The recovery public key (SPKI PEM) in file `path`. Throws `WrongKeyError` if it is not one. */
export async function readRecoveryPublicKeyFile(path: string): Promise<string> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new WrongKeyError(`Cannot read recovery public key file ${path}: ${(e as Error).message}`);
  }
  if (text.includes("PRIVATE KEY-----")) {
    throw new WrongKeyError(
      `Recovery public key file ${path} holds a private key; pass the public half (SPKI PEM, "BEGIN PUBLIC KEY")`,
    );
  }
  try {
    await checkRecoveryPublicKey(text);
  } catch (e) {
    throw new WrongKeyError(`Recovery public key file ${path}: ${(e as Error).message}`);
  }
  return text;
}
