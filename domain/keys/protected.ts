/** The KV keys of protected (no imports). */

/** Primary key of a protected object. */
export function protectedObjectKey(id: string) {
  return ["protected_objects", id] as const;
}

/** Unique: one native protected object per (host, policy). */
export function protectedByHostKey(hostId: string, policyId: string) {
  return ["protected_by_host", hostId, policyId] as const;
}

/** The account's protected objects (for the list page). */
export function protectedByAccountKey(accountId: string, id: string) {
  return ["protected_by_account", accountId, id] as const;
}

export function objectCountKey(
  accountId: string,
  orgId: string,
  metric: "protected" | "at_risk" | "breached",
) {
  return ["po_counts", accountId, orgId, metric] as const;
}

/**
 * An account's protected objects by one filter dimension's value (`["po_by", account, dim, value, name,
 * id]`, written by protected.ts), e.g. dimension `src`, value `bes:<engine id>`.
 */
export function objectsByDimensionPrefix(accountId: string, dim: string, value: string): Deno.KvKey {
  return ["po_by", accountId, dim, value];
}

/** Managed hosts of an org without an active protected object (a decommissioned host is not counted). */
export function unprotectedHostsKey(accountId: string, orgId: string) {
  return ["host_counts", accountId, orgId, "unprotected"] as const;
}

/** How many active protected objects a host has (checked, so two assignments cannot both see 0). */
export function hostCoverageKey(hostId: string) {
  return ["host_coverage", hostId] as const;
}

/** Prefixes of the dashboard counters of an account: protected objects per org and metric, unprotected hosts. */
export function objectCountsPrefix(accountId: string): Deno.KvKey {
  return ["po_counts", accountId];
}
export function unprotectedHostsPrefix(accountId: string): Deno.KvKey {
  return ["host_counts", accountId];
}
/**
 * The range of an account's protected objects due for a backup (`["po_due", account, dueAt, id]`): the
 * start of its entries, or the bound before those due after `until` (an ISO time).
 */
export function objectsDueBound(accountId: string, until?: string): Deno.KvKey {
  return until === undefined ? ["po_due", accountId] : ["po_due", accountId, until];
}
/** A host's native protected objects, one per policy (`protectedByHostKey`). */
export function protectedByHostPrefix(hostId: string): Deno.KvKey {
  return ["protected_by_host", hostId];
}
/** The list indexes of an account's objects: by lower-cased name, and by one dimension's value then name. */
export function objectByNameKey(accountId: string, name: string, id: string) {
  return ["po_name", accountId, name, id] as const;
}
export function objectsByNamePrefix(accountId: string): Deno.KvKey {
  return ["po_name", accountId];
}
export function objectByDimensionKey(
  accountId: string,
  dimension: string,
  value: string,
  name: string,
  id: string,
) {
  return ["po_by", accountId, dimension, value, name, id] as const;
}
/** An object in the RPO index at the time its RPO runs out: due (not yet breached) or breached. */
export function objectRpoKey(breached: boolean, accountId: string, dueAt: string, id: string) {
  return [breached ? "po_breached" : "po_due", accountId, dueAt, id] as const;
}
export function objectsBreachedPrefix(accountId: string): Deno.KvKey {
  return ["po_breached", accountId];
}
