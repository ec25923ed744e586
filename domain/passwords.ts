/** argon2id password hashing (WASM, runs on Deno Deploy too). */
import { argon2id, argon2Verify } from "hash-wasm";

/** OWASP's argon2id minimum: 19 MiB, 2 iterations, 1 lane. */
const PARAMS = { parallelism: 1, iterations: 2, memorySize: 19456, hashLength: 32 } as const;

/** Hashes a password into an encoded `$argon2id$…` string with a fresh salt. */
export async function hashPassword(password: string): Promise<string> {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  return await argon2id({ ...PARAMS, password, salt, outputType: "encoded" });
}

/** True when the password matches the encoded hash. Never throws on a malformed hash. */
export async function verifyPassword(password: string, encoded: string): Promise<boolean> {
  try {
    return await argon2Verify({ password, hash: encoded });
  } catch {
    return false;
  }
}

/** A hash that never matches, verified against when the email is unknown so timing does not tell. */
export const DUMMY_HASH = "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$" +
  "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
