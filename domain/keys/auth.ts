/** The KV keys of auth (no imports). */

export function sessionKey(idHash: string) {
  return ["sessions", idHash] as const;
}

export function sessionsByUserKey(userId: string, idHash: string) {
  return ["sessions_by_user", userId, idHash] as const;
}
