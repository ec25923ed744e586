/** The KV keys of users (no imports). */

export function userKey(id: string) {
  return ["users", id] as const;
}

export function usersByAccountKey(accountId: string, userId: string) {
  return ["users_by_account", accountId, userId] as const;
}
