/** The KV keys of the health probes (no imports). */

/** A probe's scratch key, written then read back to measure (or confirm) KV's round trip. */
export function probeKey(name: "readyz" | "health_database"): Deno.KvKey {
  return ["probe", name];
}
