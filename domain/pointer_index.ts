/**
 * Reading and deleting through a pointer index, and deleting a key range, in one place (issue 19 item 6).
 *
 * A pointer index entry (`["hooks_by_policy", policyId, hookId] → hookId`) names a record kept under its
 * own key. Deleting a parent deletes what its indexes point to: each pointed record through its own
 * module (which also removes the record's other index entries, the pointer among them, and keeps its
 * counters right), and a pointer whose record is gone is dropped. Deleting a key range (a target's
 * capacity samples, a platform's vendor-run index) needs no record: its keys go in atomic writes of up to
 * `DELETE_BATCH` deletes.
 */

import { getManyValues } from "./kv.ts";
import { type OffsetPage, offsetPage } from "./list_filters.ts";
import { type Actor, inScope, type ScopedObject } from "./rbac.ts";

/**
 * The records a pointer index under `prefix` points to, in index order (`key(id)` is a record's key;
 * entries are read ten at a time): a pointer whose record is gone is skipped.
 */
export async function readByPointerIndex<T>(
  kv: Deno.Kv,
  prefix: Deno.KvKey,
  key: (id: string) => Deno.KvKey,
): Promise<T[]> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix })) keys.push(key(e.value));
  return await getManyValues<T>(kv, keys);
}

/**
 * The records of the actor's account that a pointer index points to, those in the actor's scope that
 * `match` keeps (the rows of a filtered list); none for an actor without an account (the system).
 */
export async function readVisibleByPointerIndex<T>(
  kv: Deno.Kv,
  actor: Actor,
  index: ScopedIndex<T>,
  match: (record: T) => boolean,
): Promise<T[]> {
  if (!actor.accountId) return [];
  return (await readByPointerIndex<T>(kv, index.prefix(actor.accountId), index.key))
    .filter((r) => inScope(actor, index.scope(r)) && match(r));
}

/** A pointer index of the records of an account, and how to tell a record's scope. */
export interface ScopedIndex<T> {
  prefix: (accountId: string) => Deno.KvKey;
  key: (id: string) => Deno.KvKey;
  scope: (record: T) => ScopedObject;
}

/**
 * An offset-paged filtered list (the Engines and Storage pages and their API): `readVisibleByPointerIndex`
 * with the filter's `index` and `match`, then `offsetPage` with `compare`.
 */
export function scopedList<T, F extends { sort: string; offset: number; limit: number }>(list: {
  index: (filter: F) => ScopedIndex<T>;
  match: (filter: F) => (record: T) => boolean;
  compare: (a: T, b: T, field: string) => number;
}): (kv: Deno.Kv, actor: Actor, filter: F) => Promise<OffsetPage<T>> {
  return async (kv, actor, filter) => {
    const rows = await readVisibleByPointerIndex(kv, actor, list.index(filter), list.match(filter));
    return offsetPage(rows, filter, list.compare);
  };
}

/** Deletes per atomic write: well below KV's 1,000 mutations per atomic operation. */
export const DELETE_BATCH = 500;

/**
 * Removes what the pointer index under `prefix` points to. Each entry whose value is a string (a record
 * id) is handed to `remove(id, indexKey)`, which deletes the record and its index entries (the pointer
 * among them) and returns true, or returns false when there is no such record; the entry is then dropped,
 * as is an entry whose value is not an id. Returns how many records `remove` removed. Idempotent when
 * `remove` is: a crash in the middle is resumed by calling it again.
 */
export async function deleteByPointerIndex(
  kv: Deno.Kv,
  prefix: Deno.KvKey,
  remove: (id: string, indexKey: Deno.KvKey) => Promise<boolean>,
): Promise<number> {
  let removed = 0;
  for await (const e of kv.list<unknown>({ prefix })) {
    if (typeof e.value === "string" && await remove(e.value, e.key)) removed++;
    else await kv.delete(e.key);
  }
  return removed;
}

/**
 * Deletes every key under `prefix` (those `where` accepts, when given): the keys are listed first, then
 * deleted `batch` at a time, one atomic write each. Returns how many it deleted.
 */
export async function deleteKeysUnder(
  kv: Deno.Kv,
  prefix: Deno.KvKey,
  options: { where?: (key: Deno.KvKey) => boolean; batch?: number } = {},
): Promise<number> {
  const batch = options.batch ?? DELETE_BATCH;
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list({ prefix })) if (!options.where || options.where(e.key)) keys.push(e.key);
  for (let i = 0; i < keys.length; i += batch) {
    const op = kv.atomic();
    for (const key of keys.slice(i, i + batch)) op.delete(key);
    await op.commit(); // unchecked deletes: nothing to conflict with
  }
  return keys.length;
}

/**
 * The ids of an account's index whose entries hold the entry's org (`orgPart`: "-" for account-wide),
 * newest first, keeping those in the actor's scope; at most `max`. `idAt` is the id's place in the key.
 */
export async function idsInScope(
  kv: Deno.Kv,
  actor: Actor,
  prefix: Deno.KvKey,
  idAt: number,
  max: number,
): Promise<string[]> {
  const ids: string[] = [];
  if (!actor.accountId) return ids;
  for await (const e of kv.list<string>({ prefix }, { reverse: true, batchSize: 100 })) {
    if (!inScope(actor, { accountId: actor.accountId, orgId: e.value === "-" ? null : e.value })) continue;
    ids.push(String(e.key[idAt]));
    if (ids.length >= max) break;
  }
  return ids;
}
