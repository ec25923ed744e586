/** Deno KV helpers: opening with a process lock, chunked reads, pagination. */

/** One page of a list: the values and an opaque cursor for the next page ("" when done). */
export interface Page<T> {
  values: T[];
  cursor: string;
}

/**
 * An upper bound of the bytes `value` takes in KV (V8 serialization): a string takes one byte per
 * character, or two when any character is beyond Latin-1 (V8 then stores the whole string two bytes
 * wide), plus a few bytes of framing per value and key. KV refuses values over 64 KiB.
 */
export function kvValueBytes(value: unknown): number {
  if (typeof value === "string") {
    let wide = false;
    for (let i = 0; i < value.length && !wide; i++) wide = value.charCodeAt(i) > 0xff;
    return value.length * (wide ? 2 : 1) + 5;
  }
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + kvValueBytes(v), 5);
  if (value !== null && typeof value === "object") {
    let n = 5;
    for (const [k, v] of Object.entries(value)) n += kvValueBytes(k) + kvValueBytes(v);
    return n;
  }
  return 9; // numbers (a double at most), booleans, null, undefined
}

/**
 * Reads many keys in chunks of 10 (the `getMany` limit), issued concurrently, keeping order; missing
 * keys are skipped.
 */
export async function getManyValues<T>(kv: Deno.Kv, keys: Deno.KvKey[]): Promise<T[]> {
  const chunks: Deno.KvKey[][] = [];
  for (let i = 0; i < keys.length; i += 10) chunks.push(keys.slice(i, i + 10));
  const results = await Promise.all(chunks.map((chunk) => kv.getMany<unknown[]>(chunk)));
  const out: T[] = [];
  for (const entries of results) {
    for (const entry of entries) if (entry.value !== null) out.push(entry.value as T);
  }
  return out;
}

/** Lists one page of values under a prefix; `reverse` gives newest first for ULID keys. */
export async function listPage<T>(
  kv: Deno.Kv,
  selector: Deno.KvListSelector,
  options: { limit: number; cursor?: string; reverse?: boolean },
): Promise<Page<T>> {
  const iter = kv.list<T>(selector, {
    limit: options.limit,
    cursor: options.cursor || undefined,
    reverse: options.reverse,
  });
  const values: T[] = [];
  for await (const entry of iter) values.push(entry.value);
  return { values, cursor: values.length < options.limit ? "" : iter.cursor };
}

/** The commit retry lives in retry.ts; re-exported here for the modules that import it from kv.ts. */
export { withRetry } from "./retry.ts";

/** `CADRES_KV=deploy`: the platform's default database (`Deno.openKv()` without a path, on Deno Deploy). */
export const DEPLOY_KV = "deploy";

/** True for a KV file path (not `:memory:`, a remote URL or the platform's default database). */
export function isLocalKvPath(location: string): boolean {
  return location !== ":memory:" && location !== DEPLOY_KV && !/^https?:\/\//i.test(location);
}

/**
 * Takes an exclusive advisory lock beside a local KV file so that a second process refuses to start
 * instead of crashing later with "database is locked". The lock dies with the process.
 * Throws if another process holds it.
 */
export async function lockKvFile(path: string, waitMs = 300): Promise<Deno.FsFile> {
  const file = await Deno.open(`${path}.lock`, { create: true, write: true, read: true });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), waitMs);
  });
  const result = await Promise.race([file.lock(true).then(() => "locked" as const), timedOut]);
  clearTimeout(timer);
  if (result === "timeout") {
    file.close();
    throw new Error(
      `Cannot open the database ${path}: another Cadres process is using it. ` +
        `Stop that process first, or point CADRES_KV at a remote KV to run several instances.`,
    );
  }
  return file;
}

/**
 * Counters are KvU64 values changed with `op.sum(key, COUNT_UP | COUNT_DOWN)`: no read, no conflict between
 * writers. Sums wrap modulo 2^64, so adding 2^64 − 1 subtracts one.
 */
export const COUNT_UP = 1n;
export const COUNT_DOWN = (1n << 64n) - 1n;

/** A counter's value (0 for a missing or non-counter value; read as signed, so a bug shows as negative). */
export function counterValue(v: unknown): number {
  return v instanceof Deno.KvU64 ? Number(BigInt.asIntN(64, v.value)) : 0;
}
