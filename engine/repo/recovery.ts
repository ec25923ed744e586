/**
 * The account recovery key pair (ENGINE.md §3 "Keys"): RSA-OAEP, 3072-bit modulus, SHA-256, through
 * WebCrypto. An administrator creates it once; the private half (PKCS#8 PEM) is downloaded and kept
 * offline, the public half (SPKI PEM) wraps every namespace's keys in every repository, so
 * `deno task repo --recovery-key FILE` opens them without the control plane.
 *
 * Sealing (hybrid): a random 32-byte content key is encrypted with RSA-OAEP-SHA-256 under the public
 * key; the payload is AES-256-GCM under that content key with a random 12-byte nonce and the caller's
 * additional data. Recovery key id = first 16 hex digits of SHA-256("cadres-recovery-key-id-v1" ||
 * SPKI DER).
 */
import { createHash } from "node:crypto";
import { WrongKeyError } from "./errors.ts";

/** The algorithm name recorded in key objects wrapped for a recovery key. */
export const RECOVERY_ALGORITHM = "rsa-oaep-3072-sha256+aes-256-gcm";
const RSA = { name: "RSA-OAEP", hash: "SHA-256" } as const;

/** A recovery key pair in PEM form. */
export interface RecoveryKeyPair {
  /** PKCS#8 PEM ("PRIVATE KEY"): shown or downloaded once, never stored by Cadres. */
  privatePem: string;
  /** SPKI PEM ("PUBLIC KEY"). */
  publicPem: string;
  /** 16 hex digits naming the pair in key objects. */
  id: string;
}

/** What a recovery key seals: the RSA-encrypted content key, the nonce and the AES-GCM ciphertext. */
export interface RecoverySealed {
  encryptedKey: Uint8Array;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
}

function toPem(label: string, der: Uint8Array): string {
  const b64 = der.toBase64();
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

function fromPem(label: string, pem: string): Uint8Array<ArrayBuffer> {
  const m = pem.match(new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]+)-----END ${label}-----`));
  if (!m) throw new WrongKeyError(`Not a PEM ${label.toLowerCase()}`);
  try {
    return Uint8Array.fromBase64(m[1].replace(/\s+/g, ""));
  } catch {
    throw new WrongKeyError(`Not a PEM ${label.toLowerCase()}`);
  }
}

/** The id of a recovery public key (SPKI PEM). Throws `WrongKeyError` if it is not one. */
export function recoveryKeyId(publicPem: string): string {
  const der = fromPem("PUBLIC KEY", publicPem);
  return createHash("sha256").update("cadres-recovery-key-id-v1").update(der).digest("hex").slice(0, 16);
}

/** A fresh recovery key pair. */
export async function generateRecoveryKeyPair(): Promise<RecoveryKeyPair> {
  const pair = await crypto.subtle.generateKey(
    { ...RSA, modulusLength: 3072, publicExponent: new Uint8Array([1, 0, 1]) },
    true,
    ["encrypt", "decrypt"],
  );
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey));
  const pkcs8 = new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey));
  const publicPem = toPem("PUBLIC KEY", spki);
  return { privatePem: toPem("PRIVATE KEY", pkcs8), publicPem, id: recoveryKeyId(publicPem) };
}

/** The public key's id computed from a private key (PKCS#8 PEM); throws `WrongKeyError` if unreadable. */
export async function recoveryKeyIdOfPrivate(privatePem: string): Promise<string> {
  return recoveryKeyId(await recoveryPublicPemOfPrivate(privatePem));
}

/**
 * The public half (SPKI PEM) of a recovery private key (PKCS#8 PEM), so a holder of the private key can
 * wrap new namespaces for it. Throws `WrongKeyError` if it is not a 3072-bit RSA-OAEP private key.
 */
export async function recoveryPublicPemOfPrivate(privatePem: string): Promise<string> {
  const key = await importPrivate(privatePem, true);
  checkModulus(key);
  const jwk = await crypto.subtle.exportKey("jwk", key);
  const pub = await crypto.subtle.importKey(
    "jwk",
    { kty: "RSA", n: jwk.n, e: jwk.e, alg: "RSA-OAEP-256" },
    RSA,
    true,
    [
      "encrypt",
    ],
  );
  return toPem("PUBLIC KEY", new Uint8Array(await crypto.subtle.exportKey("spki", pub)));
}

function checkModulus(key: CryptoKey): void {
  const bits = (key.algorithm as RsaHashedKeyAlgorithm).modulusLength;
  if (bits !== 3072) {
    throw new WrongKeyError(`The recovery key has a ${bits}-bit modulus, not 3072 (${RECOVERY_ALGORITHM})`);
  }
}

/**
 * Checks that `publicPem` is a 3072-bit RSA public key in SPKI PEM, as recovery wrapping needs; returns its
 * id. Throws `WrongKeyError` otherwise.
 */
export async function checkRecoveryPublicKey(publicPem: string): Promise<string> {
  checkModulus(await importPublic(publicPem));
  return recoveryKeyId(publicPem);
}

async function importPublic(publicPem: string): Promise<CryptoKey> {
  try {
    return await crypto.subtle.importKey("spki", fromPem("PUBLIC KEY", publicPem), RSA, true, ["encrypt"]);
  } catch (e) {
    if (e instanceof WrongKeyError) throw e;
    throw new WrongKeyError("The recovery public key is not an RSA-OAEP public key");
  }
}

async function importPrivate(privatePem: string, extractable = false): Promise<CryptoKey> {
  try {
    return await crypto.subtle.importKey("pkcs8", fromPem("PRIVATE KEY", privatePem), RSA, extractable, [
      "decrypt",
    ]);
  } catch (e) {
    if (e instanceof WrongKeyError) throw e;
    throw new WrongKeyError("The recovery key is not an RSA-OAEP private key");
  }
}

/** Seals `plaintext` for the holder of the private half of `publicPem`, binding `additionalData`. */
export async function sealForRecovery(
  publicPem: string,
  plaintext: Uint8Array,
  additionalData: Uint8Array,
): Promise<RecoverySealed> {
  const pub = await importPublic(publicPem);
  const contentKey = crypto.getRandomValues(new Uint8Array(32));
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const aes = await crypto.subtle.importKey("raw", contentKey, "AES-GCM", false, ["encrypt"]);
  const ciphertext = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce, additionalData: new Uint8Array(additionalData) },
      aes,
      new Uint8Array(plaintext),
    ),
  );
  const encryptedKey = new Uint8Array(await crypto.subtle.encrypt(RSA, pub, contentKey));
  contentKey.fill(0);
  return { encryptedKey, nonce, ciphertext };
}

/** Opens what `sealForRecovery` sealed. Throws `WrongKeyError` if this private key cannot open it. */
export async function openWithRecovery(
  privatePem: string,
  sealed: RecoverySealed,
  additionalData: Uint8Array,
): Promise<Uint8Array> {
  const priv = await importPrivate(privatePem);
  try {
    const contentKey = new Uint8Array(
      await crypto.subtle.decrypt(RSA, priv, new Uint8Array(sealed.encryptedKey)),
    );
    const aes = await crypto.subtle.importKey("raw", contentKey, "AES-GCM", false, ["decrypt"]);
    contentKey.fill(0);
    return new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: new Uint8Array(sealed.nonce), additionalData: new Uint8Array(additionalData) },
        aes,
        new Uint8Array(sealed.ciphertext),
      ),
    );
  } catch {
    throw new WrongKeyError("The recovery key does not open this key object (another key, or it is damaged)");
  }
}
