/** The KV keys of audit (no imports). */

/** Key of one audit entry; ULID ids make the account prefix chronological. */
export function auditKey(accountId: string, id: string) {
  return ["audit", accountId, id] as const;
}

/** An account's audit entries (`auditKey`), or every account's. */
export function auditPrefix(accountId?: string): Deno.KvKey {
  return accountId === undefined ? ["audit"] : ["audit", accountId];
}
