/**
 * Engine protocol v1 request signatures (DESIGN.md §5), shared by BES and agents: Ed25519 over
 * `CADRES-V1\n<METHOD>\n<path and query>\n<timestamp>\n<nonce>\n<hex sha256 of body>`.
 */
import { fromBase64, sha256Hex, toBase64Url } from "./ids.ts";

/** Requests further than this from the server clock are refused. */
export const MAX_SKEW_SECONDS = 300;

export const SIGNATURE_HEADERS = {
  principal: "x-cadres-principal",
  timestamp: "x-cadres-timestamp",
  nonce: "x-cadres-nonce",
  signature: "x-cadres-signature",
} as const;

/** The exact bytes that are signed. */
export async function canonicalString(
  method: string,
  pathAndQuery: string,
  timestamp: string,
  nonce: string,
  body: Uint8Array,
): Promise<string> {
  return `CADRES-V1\n${method.toUpperCase()}\n${pathAndQuery}\n${timestamp}\n${nonce}\n${await sha256Hex(
    body,
  )}`;
}

/** Imports a raw 32-byte Ed25519 public key given as base64url. Throws if it is not one. */
export async function importPublicKey(publicKey: string): Promise<CryptoKey> {
  const raw = decodePublicKey(publicKey);
  return await crypto.subtle.importKey("raw", raw as BufferSource, { name: "Ed25519" }, false, ["verify"]);
}

/** Decodes and length-checks a base64url public key; throws `Error` with a readable reason. */
export function decodePublicKey(publicKey: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]{43}=?$/.test(publicKey)) {
    throw new Error("publicKey must be base64url of a raw 32-byte Ed25519 key");
  }
  const raw = fromBase64(publicKey);
  if (raw.length !== 32) throw new Error("publicKey must be base64url of a raw 32-byte Ed25519 key");
  return raw;
}

export type SignatureCheck =
  | { ok: true }
  | { ok: false; reason: "malformed" | "skew" | "bad_signature" };

/** Verifies the headers and signature of a request against a key, at `now`. Pure apart from crypto. */
export async function verifySignedRequest(
  key: CryptoKey,
  request: { method: string; pathAndQuery: string; timestamp: string; nonce: string; signature: string },
  body: Uint8Array,
  now: Date,
): Promise<SignatureCheck> {
  if (!/^\d{1,12}$/.test(request.timestamp)) return { ok: false, reason: "malformed" };
  if (!/^[A-Za-z0-9_-]{22,128}$/.test(request.nonce)) return { ok: false, reason: "malformed" };
  if (!/^[A-Za-z0-9_-]{86}={0,2}$/.test(request.signature)) return { ok: false, reason: "malformed" };
  if (Math.abs(now.getTime() / 1000 - Number(request.timestamp)) > MAX_SKEW_SECONDS) {
    return { ok: false, reason: "skew" };
  }
  const data = new TextEncoder().encode(
    await canonicalString(request.method, request.pathAndQuery, request.timestamp, request.nonce, body),
  );
  const ok = await crypto.subtle.verify(
    { name: "Ed25519" },
    key,
    fromBase64(request.signature) as BufferSource,
    data,
  );
  return ok ? { ok: true } : { ok: false, reason: "bad_signature" };
}

/** Client side: signs a request and returns the four headers (used by the simulator and tests). */
export async function signRequest(
  privateKey: CryptoKey,
  principal: string,
  method: string,
  pathAndQuery: string,
  body: Uint8Array,
  now: Date,
): Promise<Record<string, string>> {
  const timestamp = String(Math.floor(now.getTime() / 1000));
  const nonce = toBase64Url(crypto.getRandomValues(new Uint8Array(18)));
  const data = new TextEncoder().encode(await canonicalString(method, pathAndQuery, timestamp, nonce, body));
  const signature = toBase64Url(
    new Uint8Array(await crypto.subtle.sign({ name: "Ed25519" }, privateKey, data)),
  );
  return {
    [SIGNATURE_HEADERS.principal]: principal,
    [SIGNATURE_HEADERS.timestamp]: timestamp,
    [SIGNATURE_HEADERS.nonce]: nonce,
    [SIGNATURE_HEADERS.signature]: signature,
  };
}

/** Generates an Ed25519 key pair; returns the private key and the base64url raw public key. */
export async function generateKeyPair(): Promise<{ privateKey: CryptoKey; publicKey: string }> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  return { privateKey: pair.privateKey, publicKey: toBase64Url(raw) };
}
