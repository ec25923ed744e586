/** The KV keys of api_tokens (no imports). */

export function apiTokenKey(id: string) {
  return ["api_tokens", id] as const;
}

export function apiTokensByUserKey(userId: string, id: string) {
  return ["api_tokens_by_user", userId, id] as const;
}

export function apiTokensByAccountKey(accountId: string, id: string) {
  return ["api_tokens_by_account", accountId, id] as const;
}

/** A user's tokens, an account's tokens (`apiTokensByUserKey`, `apiTokensByAccountKey`). */
export function apiTokensByUserPrefix(userId: string): Deno.KvKey {
  return ["api_tokens_by_user", userId];
}
export function apiTokensByAccountPrefix(accountId: string): Deno.KvKey {
  return ["api_tokens_by_account", accountId];
}
