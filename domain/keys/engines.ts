/** The KV keys of the engine protocol (no imports). */

/** A signed request's nonce under its principal (`kind:id`, or the registration principal and public key). */
export function nonceKey(principal: string, nonce: string): Deno.KvKey {
  return ["nonces", principal, nonce];
}
