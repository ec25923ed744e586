/** The KV keys of hosts (no imports). */

export function hostKey(id: string) {
  return ["hosts", id] as const;
}

export function hostsByAccountKey(accountId: string, id: string) {
  return ["hosts_by_account", accountId, id] as const;
}

export function hostByPublicKeyKey(publicKey: string) {
  return ["hosts_by_public_key", publicKey] as const;
}

/** A decommission still archiving the host's assignments and restore points (archive.ts resumes it). */
export function hostDecommissionKey(id: string) {
  return ["host_decommissions", id] as const;
}

/** Hosts whose heartbeat the sweep must watch (set by every heartbeat, removed when they go offline). */
export function liveHostKey(id: string) {
  return ["hosts_live", id] as const;
}

/** The prefix of an account's hosts (`hostsByAccountKey`). */
export function hostsByAccountPrefix(accountId: string): Deno.KvKey {
  return ["hosts_by_account", accountId];
}
/** Every host, every host being decommissioned. */
export function hostsPrefix(): Deno.KvKey {
  return ["hosts"];
}
export function hostDecommissionsPrefix(): Deno.KvKey {
  return ["host_decommissions"];
}

/** Every live host (`liveHostKey`). */
export function liveHostsPrefix(): Deno.KvKey {
  return ["hosts_live"];
}
