/** Ids, random secrets and hashing helpers shared by the domain. */
import { createHash } from "node:crypto";
import { monotonicFactory, ulid } from "ulid";

const nextUlid = monotonicFactory();

/** A time-ordered id (ULID) for `now`, so a prefix list of keys is chronological. */
export function newId(now: Date): string {
  return nextUlid(now.getTime());
}

/**
 * A ULID dated `at` rather than when it is written, for records listed in the order of a time of their
 * own (restore points by completion). Not monotonic: two ids of one millisecond sort at random.
 */
export function idAt(at: Date): string {
  return ulid(Math.max(0, at.getTime()));
}

/** `bytes` random bytes as base64url without padding. */
export function randomToken(bytes = 32): string {
  return toBase64Url(crypto.getRandomValues(new Uint8Array(bytes)));
}

/** base64url (no padding) of a byte array. */
export function toBase64Url(data: Uint8Array): string {
  let binary = "";
  for (const byte of data) binary += String.fromCharCode(byte);
  return btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** Decodes base64 or base64url (padding optional). Throws if the input is not base64. */
export function fromBase64(text: string): Uint8Array {
  const normal = text.replaceAll("-", "+").replaceAll("_", "/");
  const padded = normal + "=".repeat((4 - (normal.length % 4)) % 4);
  const binary = atob(padded);
  return Uint8Array.from(binary, (ch) => ch.charCodeAt(0));
}

/** Hex SHA-256 of a string or bytes (synchronous node:crypto: 2 µs here vs 43 µs through WebCrypto). */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Constant-time comparison of two strings of equal length (false when lengths differ). */
export function timingSafeEqual(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
