/**
 * argon2id password hashing (WASM, runs on Deno Deploy too). The cost parameters are injected: production
 * always uses PRODUCTION_ARGON2 (the default; no environment variable changes it), tests pass CHEAP_ARGON2
 * through `testConfig()` so that creating and signing in hundreds of users does not cost a second each.
 * Verification reads the parameters from the stored hash, so a hash made with either verifies anywhere.
 */
import { argon2id, argon2Verify } from "hash-wasm";

/** The argon2id cost parameters (memory in KiB, output length in bytes). */
export interface Argon2Params {
  readonly parallelism: number;
  readonly iterations: number;
  readonly memorySize: number;
  readonly hashLength: number;
}

/** OWASP's argon2id minimum: 19 MiB, 2 iterations, 1 lane. The only parameters production uses. */
export const PRODUCTION_ARGON2: Argon2Params = Object.freeze({
  parallelism: 1,
  iterations: 2,
  memorySize: 19456,
  hashLength: 32,
});

/** argon2's smallest legal cost (8 KiB, 1 iteration): for tests only, never for stored production users. */
export const CHEAP_ARGON2: Argon2Params = Object.freeze({
  parallelism: 1,
  iterations: 1,
  memorySize: 8,
  hashLength: 32,
});

/** Hashes a password into an encoded `$argon2id$…` string with a fresh salt. */
export async function hashPassword(
  password: string,
  params: Argon2Params = PRODUCTION_ARGON2,
): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const { parallelism, iterations, memorySize, hashLength } = params;
  return await argon2id({
    parallelism,
    iterations,
    memorySize,
    hashLength,
    password,
    salt,
    outputType: "encoded",
  });
}

/** True when the password matches the encoded hash. Never throws on a malformed hash. */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  try {
    return await argon2Verify({ password, hash: encoded });
  } catch {
    return false;
  }
}

/**
 * A hash with `params` that never matches (an all-zero salt and digest), verified against when the email
 * is unknown so that timing does not tell: it costs what a real user's verification costs.
 */
export function dummyHashFor(params: Argon2Params): string {
  const digest = "A".repeat(Math.ceil((params.hashLength * 4) / 3));
  return `$argon2id$v=19$m=${params.memorySize},t=${params.iterations},p=${params.parallelism}` +
    `$AAAAAAAAAAAAAAAAAAAAAA$${digest}`;
}

/** The dummy hash of PRODUCTION_ARGON2. */
export const DUMMY_HASH = dummyHashFor(PRODUCTION_ARGON2);
