/** The KV keys of notifications (no imports). */

export function channelKey(id: string) {
  return ["notification_channels", id] as const;
}

export function channelsByAccountKey(accountId: string, id: string) {
  return ["notification_channels_by_account", accountId, id] as const;
}

export function ruleKey(id: string) {
  return ["notification_rules", id] as const;
}

export function rulesByAccountKey(accountId: string, id: string) {
  return ["notification_rules_by_account", accountId, id] as const;
}

export function deliveryKey(id: string) {
  return ["notification_deliveries", id] as const;
}
/** Every delivery (`deliveryKey`). */
export function deliveriesPrefix(): Deno.KvKey {
  return ["notification_deliveries"];
}

export function deliveriesByAccountKey(accountId: string, id: string) {
  return ["notification_deliveries_by_account", accountId, id] as const;
}

export function deliveriesByChannelKey(channelId: string, id: string) {
  return ["notification_deliveries_by_channel", channelId, id] as const;
}

/** The job table's due index: pending deliveries by the time their next attempt (or lease end) is due. */
export function deliveryDueKey(dueMs: number, id: string) {
  return ["notification_due", dueMs, id] as const;
}

/** Prefixes of an account's channels, an account's rules, a channel's and an account's deliveries. */
export function channelsByAccountPrefix(accountId: string): Deno.KvKey {
  return ["notification_channels_by_account", accountId];
}
export function rulesByAccountPrefix(accountId: string): Deno.KvKey {
  return ["notification_rules_by_account", accountId];
}
export function deliveriesByChannelPrefix(channelId: string): Deno.KvKey {
  return ["notification_deliveries_by_channel", channelId];
}
export function deliveriesByAccountPrefix(accountId: string): Deno.KvKey {
  return ["notification_deliveries_by_account", accountId];
}
/** The start of every delivery record (the purge scans from it up to `deliveryKey(cutoff)`). */
export function deliveriesStart(): Deno.KvKey {
  return ["notification_deliveries"];
}
/** The due index from its start, and the bound after every entry due at or before `atMs`. */
export function deliveryDueStart(): Deno.KvKey {
  return ["notification_due"];
}
export function deliveryDueEnd(atMs: number): Deno.KvKey {
  return ["notification_due", atMs + 1];
}
