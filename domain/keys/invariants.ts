/** The KV keys of the invariant checks (no imports). */

/** The record of the latest invariant check run. */
export function lastInvariantCheckKey() {
  return ["invariant_checks", "last"] as const;
}
