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

/** Unique: one account per (lower-cased) name. */
export function accountByNameKey(name: string) {
  return ["accounts_by_name", name.toLowerCase()] as const;
}
/** Unique: one org per account and (lower-cased) name. */
export function orgByNameKey(accountId: string, name: string) {
  return ["orgs_by_name", accountId, name.toLowerCase()] as const;
}
/** Every account, an account's orgs (`orgsByAccountKey`). */
export function accountsPrefix(): Deno.KvKey {
  return ["accounts"];
}
export function orgsByAccountPrefix(accountId: string): Deno.KvKey {
  return ["orgs_by_account", accountId];
}
