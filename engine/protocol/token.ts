/**
 * Job-scoped data tokens (ENGINE.md §5). The control plane issues them, signed with its own Ed25519
 * key; the BES verifies them locally with the public key it received in its registration reply and
 * never calls the control plane per request.
 *
 * Wire form: `cdt1.<base64url(JSON claims)>.<base64url(Ed25519 signature)>`, the signature over the
 * ASCII bytes `cadres-data-token-v1.` followed by the base64url claims exactly as sent.
 *
 * Shared by the control plane (issuer) and the engines (verifier, holder): nothing here imports from
 * the control plane.
 */
import nodeCrypto from "node:crypto";
import { z } from "zod";

/** Prefix of every token of this version. */
export const TOKEN_PREFIX = "cdt1";
const SIGNED_PREFIX = "cadres-data-token-v1.";
/** Longest lifetime a verifier accepts, whatever the token says (seconds). */
export const MAX_TOKEN_TTL_SECONDS = 15 * 60;
/** Tokens are accepted up to this many seconds before their `iat` (clock skew). */
export const TOKEN_SKEW_SECONDS = 60;

/** The repository a token opens: one (storage target, policy, generation). */
export const tokenRepositorySchema = z.object({
  target: z.string().min(1).max(128),
  path: z.string().min(1).max(512),
  generation: z.number().int().min(1),
});

/** The claims a data token carries. */
export const dataTokenClaimsSchema = z.object({
  v: z.literal(1),
  /** Job (run) id the token belongs to. */
  job: z.string().min(1).max(128),
  /** Host (namespace owner) id; the namespace is named by it. */
  host: z.string().min(1).max(128),
  /** BES id that must accept it. */
  bes: z.string().min(1).max(128),
  repository: tokenRepositorySchema,
  /** Namespace inside the repository the token may touch. */
  namespace: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/),
  access: z.enum(["read", "write"]),
  /** Issued at / expires at, Unix seconds. */
  iat: z.number().int().nonnegative(),
  exp: z.number().int().positive(),
});
export type DataTokenClaims = z.infer<typeof dataTokenClaimsSchema>;

/** Why a token was refused (stable codes for the BES's 401 answers). */
export type TokenRefusal = "malformed" | "bad_signature" | "expired" | "not_yet_valid" | "too_long";

/** A refused token. */
export class DataTokenError extends Error {
  constructor(readonly reason: TokenRefusal, message: string) {
    super(message);
    this.name = "DataTokenError";
  }
}

function b64url(data: Uint8Array): string {
  return data.toBase64({ alphabet: "base64url", omitPadding: true });
}

function fromB64url(text: string): Uint8Array {
  return Uint8Array.fromBase64(text, { alphabet: "base64url" });
}

/** Signs `claims` with the control plane's Ed25519 private key. */
export function signDataToken(privateKey: nodeCrypto.KeyObject, claims: DataTokenClaims): string {
  const parsed = dataTokenClaimsSchema.parse(claims);
  const payload = b64url(new TextEncoder().encode(JSON.stringify(parsed)));
  const sig = nodeCrypto.sign(null, new TextEncoder().encode(SIGNED_PREFIX + payload), privateKey);
  return `${TOKEN_PREFIX}.${payload}.${b64url(new Uint8Array(sig))}`;
}

/**
 * The claims of `token` if it is signed by `publicKey` and valid at `now`. Throws `DataTokenError`
 * otherwise. Checks signature, shape, expiry, and that the lifetime does not exceed
 * `MAX_TOKEN_TTL_SECONDS`; the caller checks scope (BES, repository, namespace, access).
 */
export function verifyDataToken(publicKey: nodeCrypto.KeyObject, token: string, now: Date): DataTokenClaims {
  const parts = token.split(".");
  if (parts.length !== 3 || parts[0] !== TOKEN_PREFIX || parts[1].length > 4096) {
    throw new DataTokenError("malformed", "Not a Cadres data token");
  }
  let sig: Uint8Array;
  try {
    sig = fromB64url(parts[2]);
  } catch {
    throw new DataTokenError("malformed", "Not a Cadres data token");
  }
  if (sig.length !== 64) throw new DataTokenError("malformed", "Not a Cadres data token");
  const ok = nodeCrypto.verify(null, new TextEncoder().encode(SIGNED_PREFIX + parts[1]), publicKey, sig);
  if (!ok) {
    throw new DataTokenError("bad_signature", "The data token is not signed by this BES's control plane");
  }
  let claims: DataTokenClaims;
  try {
    claims = dataTokenClaimsSchema.parse(JSON.parse(new TextDecoder().decode(fromB64url(parts[1]))));
  } catch {
    throw new DataTokenError("malformed", "The data token's claims are not readable");
  }
  const t = Math.floor(now.getTime() / 1000);
  if (claims.exp - claims.iat > MAX_TOKEN_TTL_SECONDS) {
    throw new DataTokenError("too_long", "The data token's lifetime exceeds the limit");
  }
  if (t >= claims.exp) throw new DataTokenError("expired", "The data token has expired");
  if (t + TOKEN_SKEW_SECONDS < claims.iat) {
    throw new DataTokenError("not_yet_valid", "The data token is not yet valid");
  }
  return claims;
}

/** Imports a raw 32-byte Ed25519 public key given as base64url (the registration reply's form). */
export function importTokenPublicKey(raw: string): nodeCrypto.KeyObject {
  const key = fromB64url(raw);
  if (key.length !== 32) throw new Error("A data-token public key is 32 bytes of base64url");
  const spki = new Uint8Array([
    0x30,
    0x2a,
    0x30,
    0x05,
    0x06,
    0x03,
    0x2b,
    0x65,
    0x70,
    0x03,
    0x21,
    0x00,
    ...key,
  ]);
  return nodeCrypto.createPublicKey({ key: spki as unknown as Buffer, format: "der", type: "spki" });
}

/** The raw base64url form of an Ed25519 public key (what the registration reply carries). */
export function exportTokenPublicKey(key: nodeCrypto.KeyObject): string {
  const spki = new Uint8Array(key.export({ format: "der", type: "spki" }));
  return b64url(spki.slice(12));
}
