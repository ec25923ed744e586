/** The KV keys of keks (no imports). */

export function kekStateKey(ref: string) {
  return ["keks", ref] as const;
}
