/** The KV keys of recovery_keys (no imports). */

export function recoveryKeyKey(accountId: string) {
  return ["account_recovery_keys", accountId] as const;
}
