/** The KV keys of the engine protocol (no imports). */

/** A signed request's nonce under its principal (`kind:id`, or the registration principal and public key). */
export function nonceKey(principal: string, nonce: string): Deno.KvKey {
  return ["nonces", principal, nonce];
}

export function engineKey(id: string) {
  return ["engines", id] as const;
}

export function enginesByAccountKey(accountId: string, id: string) {
  return ["engines_by_account", accountId, id] as const;
}

export function engineByPublicKeyKey(publicKey: string) {
  return ["engines_by_public_key", publicKey] as const;
}

/** Engines whose heartbeat the sweep must watch (online or degraded). */
export function liveEngineKey(id: string) {
  return ["engines_live", id] as const;
}

/** Engines being deleted; the resume job finishes them after a crash. */
export function deletingEngineKey(id: string) {
  return ["engines_deleting", id] as const;
}

export function engineMetricsKey(id: string, minute: number) {
  return ["engine_metrics", id, minute] as const;
}

/** The prefix of an account's engines (`enginesByAccountKey`). */
export function enginesByAccountPrefix(accountId: string): Deno.KvKey {
  return ["engines_by_account", accountId];
}

export function deletingEnginesPrefix() {
  return ["engines_deleting"] as const;
}
