/** The KV keys of the repositories' wrapped namespace keys (namespace_keys.ts; no imports). */

/** The wrapped key set of one namespace of one repository. */
export function namespaceKeysKey(repositoryPath: string, namespace: string) {
  return ["namespace_keys", repositoryPath, namespace] as const;
}
/** The key sets one KEK wraps (what a KEK rotation re-wraps). */
export function namespaceKeysByKekKey(kekRef: string, repositoryPath: string, namespace: string) {
  return ["namespace_keys_by_kek", kekRef, repositoryPath, namespace] as const;
}
export function namespaceKeysByKekPrefix(kekRef: string): Deno.KvKey {
  return ["namespace_keys_by_kek", kekRef];
}
