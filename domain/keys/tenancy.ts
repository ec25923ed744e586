/** The KV keys of tenancy (no imports). */

export function accountKey(id: string) {
  return ["accounts", id] as const;
}

export function orgKey(id: string) {
  return ["orgs", id] as const;
}

export function orgsByAccountKey(accountId: string, orgId: string) {
  return ["orgs_by_account", accountId, orgId] as const;
}

/** Registration lookup: hash of an org secret → org id. */
export function orgBySecretKey(secretHash: string) {
  return ["orgs_by_secret", secretHash] as const;
}

/** Registration lookup: hash of an account secret → account id (account-scoped engines). */
export function accountBySecretKey(secretHash: string) {
  return ["accounts_by_secret", secretHash] as const;
}

/** Every account (`accountKey`). */
export function accountsPrefix(): Deno.KvKey {
  return ["accounts"];
}
