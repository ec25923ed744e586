/** The KV keys of the one-off data fixes' markers (no imports). */

/** Set once the data fix `name` (e.g. `ops_counters_v2`) has run: a start-up skips it then. */
export function dataFixKey(name: string) {
  return ["data_fixes", name] as const;
}
