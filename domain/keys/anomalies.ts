/** The KV keys of anomalies (no imports). */

export function anomalyKey(id: string) {
  return ["anomalies", id] as const;
}

export function anomaliesByAccountKey(accountId: string, id: string) {
  return ["anomalies_by_account", accountId, id] as const;
}

/** Anomalies still pending review or confirmed incidents not released yet: the dashboard queue. */
export function openAnomaliesKey(accountId: string, id: string) {
  return ["anomalies_open", accountId, id] as const;
}

export function anomalyByRunKey(runId: string) {
  return ["anomalies_by_run", runId] as const;
}

export function baselineKey(policyId: string, hostId: string) {
  return ["anomaly_baselines", policyId, hostId] as const;
}

export function pruneFreezeKey(hostId: string) {
  return ["prune_freezes", hostId] as const;
}

/** An account's anomalies (`anomaliesByAccountKey`), its open ones (`openAnomaliesKey`). */
export function anomaliesByAccountPrefix(accountId: string): Deno.KvKey {
  return ["anomalies_by_account", accountId];
}
export function openAnomaliesPrefix(accountId: string): Deno.KvKey {
  return ["anomalies_open", accountId];
}
