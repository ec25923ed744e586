/**
 * The nonces of the engine protocol's signed requests (DESIGN.md §5): each signed request carries a random
 * nonce, remembered under its principal well past the 300 s skew window, so the same signed request sent
 * again is refused (a replay). A request whose effect is one write claims its nonce in that write (the
 * `nonce: { key, expireIn }` option of the heartbeat, registration and result writes); the others claim it
 * on its own with `claimNonce`.
 */
import { nonceKey } from "./keys/engines.ts";
import { MAX_SKEW_SECONDS, REGISTRATION_PRINCIPAL } from "./signing.ts";

/** Nonces are remembered well past the skew window, so a replay inside the window is always caught. */
export const NONCE_TTL_MS = 3 * MAX_SKEW_SECONDS * 1000;

/** The nonce of a request signed by a registered BES or agent (`kind:id`). */
export function principalNonceKey(kind: "bes" | "agent", id: string, nonce: string): Deno.KvKey {
  return nonceKey(`${kind}:${id}`, nonce);
}

/** The nonce of a registration or enrollment, signed by the key it registers. */
export function registrationNonceKey(kind: "bes" | "agent", publicKey: string, nonce: string): Deno.KvKey {
  return nonceKey(`${REGISTRATION_PRINCIPAL[kind]}:${publicKey}`, nonce);
}

/**
 * Claims a nonce on its own, at `now`, for requests whose effect is not a single write. Returns false
 * (and changes nothing) when the nonce was already claimed: the request is a replay.
 */
export async function claimNonce(kv: Deno.Kv, key: Deno.KvKey, now: Date): Promise<boolean> {
  const res = await kv.atomic().check({ key, versionstamp: null }).set(key, now.getTime(), {
    expireIn: NONCE_TTL_MS,
  })
    .commit();
  return res.ok;
}
