/** The KV keys of users (no imports). */

export function userKey(id: string) {
  return ["users", id] as const;
}

export function usersByAccountKey(accountId: string, userId: string) {
  return ["users_by_account", accountId, userId] as const;
}

/** Unique: one user per (lower-cased) email. */
export function userByEmailKey(email: string) {
  return ["users_by_email", email.toLowerCase()] as const;
}
/** Every user (first-run detection), an account's users (`usersByAccountKey`). */
export function usersPrefix(): Deno.KvKey {
  return ["users"];
}
export function usersByAccountPrefix(accountId: string): Deno.KvKey {
  return ["users_by_account", accountId];
}
