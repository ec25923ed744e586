/** The KV keys of vault (no imports). */

export function vaultKey(id: string) {
  return ["vault", id] as const;
}
