/**
 * The entry each BES and agent heartbeat last wrote through this instance, kept in memory so the next
 * heartbeat of the same principal need not read it again (issue 20: heartbeats near the KV's ceiling).
 *
 * A remembered entry may be stale (another instance, a deletion, a console edit changed it since): it is
 * used only where the write that follows checks its versionstamp (`applyHeartbeat`, `applyHostHeartbeat`),
 * so a stale one fails that check and the write is retried from a fresh read — nothing is ever written
 * on its strength. Only the heartbeat's direct path (routes/heartbeat_direct.ts) uses it; every other signed
 * route reads its principal fresh. Per process and KV, bounded (the oldest entries are dropped first).
 */
import { engineKey } from "./engines.ts";
import { groupReader } from "./group_read.ts";
import { hostKey } from "./hosts.ts";

/** Entries kept per KV: at ~2 KiB an entry, about 20 MiB at most. */
export const MAX_REMEMBERED = 10_000;

type Kind = "bes" | "agent";

const remembered = new WeakMap<Deno.Kv, Map<string, Deno.KvEntry<unknown>>>();

function cacheOf(kv: Deno.Kv): Map<string, Deno.KvEntry<unknown>> {
  let cache = remembered.get(kv);
  if (!cache) remembered.set(kv, cache = new Map());
  return cache;
}

/** The principal's KV key (engine or host entry). */
export function principalKey(kind: Kind, id: string): Deno.KvKey {
  return kind === "bes" ? engineKey(id) : hostKey(id);
}

/**
 * The principal's entry as this instance last wrote it, or read through the group reader when it has none.
 * `fresh` says which: a remembered entry must only feed a write checked against its versionstamp.
 */
export async function heartbeatEntry<T>(
  kv: Deno.Kv,
  kind: Kind,
  id: string,
): Promise<{ entry: Deno.KvEntryMaybe<T>; fresh: boolean }> {
  const known = cacheOf(kv).get(`${kind}:${id}`);
  if (known) return { entry: known as Deno.KvEntry<T>, fresh: false };
  return { entry: await groupReader(kv).get<T>(principalKey(kind, id)), fresh: true };
}

/** Remembers what a heartbeat wrote: the principal's entry and the versionstamp of its commit. */
export function rememberHeartbeat(kv: Deno.Kv, kind: Kind, id: string, value: unknown, versionstamp: string) {
  const cache = cacheOf(kv);
  const name = `${kind}:${id}`;
  cache.delete(name);
  if (cache.size >= MAX_REMEMBERED) cache.delete(cache.keys().next().value!);
  cache.set(name, { key: principalKey(kind, id), value, versionstamp });
}

/** Forgets a principal's entry (its heartbeat was refused: deleted, unknown, or the entry was stale). */
export function forgetHeartbeat(kv: Deno.Kv, kind: Kind, id: string) {
  cacheOf(kv).delete(`${kind}:${id}`);
}

/** How many entries are remembered for `kv` (tests). */
export function rememberedCount(kv: Deno.Kv): number {
  return cacheOf(kv).size;
}
