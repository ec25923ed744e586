/** The KV keys of holds (no imports). */

export function holdKey(id: string) {
  return ["legal_holds", id] as const;
}

/** Every hold of an account (active and released), oldest first. */
export function holdsByAccountKey(accountId: string, id: string) {
  return ["legal_holds_by_account", accountId, id] as const;
}

/** The active holds of an account: what retention and expiry read. */
export function activeHoldKey(accountId: string, id: string) {
  return ["legal_holds_active", accountId, id] as const;
}

/** Bumped with every placement; expiring writers `check()` it (see the module notes). */
export function holdEpochKey(accountId: string) {
  return ["legal_holds_epoch", accountId] as const;
}

/** An account's active holds (`activeHoldKey`). */
export function activeHoldsPrefix(accountId: string): Deno.KvKey {
  return ["legal_holds_active", accountId];
}
/**
 * Set with every BES marked for deletion (engines.ts `markEngineDeleting`); a hold placement reads it
 * before looking for BESes being deleted and `check()`s it, so a deletion started meanwhile makes the
 * placement retry and see it (holds.ts `placeHold`).
 */
export function besDeletionEpochKey(accountId: string) {
  return ["legal_holds_bes_deletions", accountId] as const;
}
