/** The KV keys of alerts (no imports). */

export function alertKey(id: string) {
  return ["alerts", id] as const;
}

/** The one open (or acknowledged) alert of a subject and reason. */
export function openAlertKey(subjectType: string, subjectId: string, reason: string) {
  return ["alerts_open", subjectType, subjectId, reason] as const;
}

export function alertsByAccountKey(accountId: string, id: string) {
  return ["alerts_by_account", accountId, id] as const;
}

export function openAlertsByAccountKey(accountId: string, id: string) {
  return ["alerts_open_by_account", accountId, id] as const;
}

/** How many alerts of an org ("-" for account-level ones) are open or acknowledged: the nav badge. */
export function openAlertCountKey(accountId: string, orgId: string | null) {
  return ["alert_counts", accountId, orgId ?? "-", "open"] as const;
}

export function alertEventKey(id: string) {
  return ["alert_events", id] as const;
}

/** Every event of the notification outbox (`alertEventKey`), oldest first. */
export function alertEventsPrefix(): Deno.KvKey {
  return ["alert_events"];
}
/** Every alert; an account's alerts (`alertsByAccountKey`); an account's open-alert counters (`openAlertCountKey`). */
export function alertsPrefix(): Deno.KvKey {
  return ["alerts"];
}
export function alertsByAccountPrefix(accountId: string): Deno.KvKey {
  return ["alerts_by_account", accountId];
}
export function alertCountsPrefix(accountId: string): Deno.KvKey {
  return ["alert_counts", accountId];
}
/** The open alerts of one subject type (`openAlertKey`). */
export function openAlertsOfTypePrefix(subjectType: string): Deno.KvKey {
  return ["alerts_open", subjectType];
}
/**
 * The range of the open alerts of one subject type whose subject id starts with `subjectIdStart` and a
 * separator (`~`, an id never holds one): `[start, end)` (`"\u007f"` sorts after `~`).
 */
export function openAlertsSubjectRange(
  subjectType: string,
  subjectIdStart: string,
): { start: Deno.KvKey; end: Deno.KvKey } {
  return {
    start: ["alerts_open", subjectType, `${subjectIdStart}~`],
    end: ["alerts_open", subjectType, `${subjectIdStart}\u007f`],
  };
}
