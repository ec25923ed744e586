/** The KV keys of audit (no imports). */

/** Key of one audit entry; ULID ids make the account prefix chronological. */
export function auditKey(accountId: string, id: string) {
  return ["audit", accountId, id] as const;
}
