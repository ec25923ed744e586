/**
 * Writer locks (restic's `locks/`): a backup writes "locks/<random id>" when it starts and rewrites it
 * every `refreshMs` while it runs; a lock not refreshed within `staleMs` is stale (its writer died). gc
 * reads the live locks for its cutoff rule (gc.ts): it never condemns a pack written after the oldest
 * live writer started, and never deletes a pack condemned while a writer older than the condemnation is
 * live. A lock object is clear JSON: { version, kind, namespace, hostname, pid, start, refreshed }.
 */
import type { Backend } from "./backend.ts";
import { MissingObjectError, RepoError } from "./errors.ts";

/** Lock object format version. */
export const LOCK_VERSION = 1;
/** A running writer rewrites its lock this often. */
export const LOCK_REFRESH_MS = 60_000;
/** A lock not refreshed for this long is stale: its writer is taken to be dead. */
export const LOCK_STALE_MS = 5 * 60_000;

/** What a lock object holds. */
export interface LockInfo {
  version: number;
  kind: "backup" | "gc";
  namespace: string | null;
  hostname: string;
  pid: number;
  /** When the writer started (ISO 8601): the cutoff of gc's rules. */
  start: string;
  refreshed: string;
}

/** A held lock. */
export interface Lock {
  readonly name: string;
  readonly start: Date;
  /** Rewrites the lock with a fresh `refreshed` time. */
  refresh(): Promise<void>;
  /**
   * Proves the lock never lapsed: throws `RepoError` naming it if it was removed, cannot be rewritten now,
   * or ever went longer than half the stale limit without a successful rewrite (failed refreshes, a
   * suspended process) — gc may then have taken it for stale. A writer calls it just before it commits.
   */
  check(): Promise<void>;
  /** Stops refreshing and deletes the lock object. */
  release(): Promise<void>;
}

/** Options of `acquireLock`. */
export interface LockOptions {
  kind: LockInfo["kind"];
  namespace?: string | null;
  refreshMs?: number;
  /** The stale limit gc applies (default `LOCK_STALE_MS`); `check()` refuses a gap of half of it. */
  staleMs?: number;
  now?: () => Date;
}

/** Writes a new lock and keeps it refreshed until `release()`. */
export async function acquireLock(backend: Backend, options: LockOptions): Promise<Lock> {
  const now = options.now ?? (() => new Date());
  const start = now();
  const name = `locks/${crypto.randomUUID()}`;
  const write = () => {
    const info: LockInfo = {
      version: LOCK_VERSION,
      kind: options.kind,
      namespace: options.namespace ?? null,
      hostname: Deno.hostname(),
      pid: Deno.pid,
      start: start.toISOString(),
      refreshed: now().toISOString(),
    };
    return backend.put(name, new TextEncoder().encode(JSON.stringify(info)));
  };
  const staleMs = options.staleMs ?? LOCK_STALE_MS;
  await write();
  let lastOk = now().getTime();
  let longestGap = 0;
  let lastError: unknown = null;
  const refresh = async () => {
    try {
      await write();
    } catch (e) {
      lastError = e;
      throw e;
    }
    const t = now().getTime();
    longestGap = Math.max(longestGap, t - lastOk);
    lastOk = t;
  };
  let released = false;
  const timer = setInterval(() => {
    // A failure is not lost: it shows as a gap that `check()` refuses.
    if (!released) refresh().catch(() => {});
  }, options.refreshMs ?? LOCK_REFRESH_MS);
  Deno.unrefTimer(timer);
  const lapsed = (gap: number) =>
    new RepoError(
      `Lock ${name} went ${Math.round(gap / 1000)} s without a refresh (gc takes it for stale after ${
        Math.round(staleMs / 1000)
      } s)${
        lastError ? `; last refresh failed: ${(lastError as Error).message}` : ""
      }: gc may have condemned packs this writer uses; nothing was committed`,
    );
  return {
    name,
    start,
    refresh,
    async check() {
      if (released) throw new RepoError(`Lock ${name} was released`);
      if (Math.max(longestGap, now().getTime() - lastOk) > staleMs / 2) {
        throw lapsed(Math.max(longestGap, now().getTime() - lastOk));
      }
      let present: boolean;
      try {
        present = await backend.exists(name);
        await refresh();
      } catch (e) {
        throw new RepoError(
          `Lock ${name} could not be refreshed: ${(e as Error).message}; nothing was committed`,
          { cause: e },
        );
      }
      if (!present) {
        throw new RepoError(`Lock ${name} was removed while its writer ran; nothing was committed`);
      }
      if (longestGap > staleMs / 2) throw lapsed(longestGap);
    },
    async release() {
      released = true;
      clearInterval(timer);
      await backend.delete(name);
    },
  };
}

/** Every lock refreshed within `staleMs` of `now`, with its object name. Unreadable locks count as live. */
export async function listLiveLocks(
  backend: Backend,
  options: { now?: Date; staleMs?: number } = {},
): Promise<(LockInfo & { name: string })[]> {
  const now = (options.now ?? new Date()).getTime();
  const staleMs = options.staleMs ?? LOCK_STALE_MS;
  const out: (LockInfo & { name: string })[] = [];
  for await (const obj of backend.list("locks/")) {
    let info: LockInfo;
    try {
      info = JSON.parse(new TextDecoder().decode(await backend.get(obj.name)));
    } catch (e) {
      if (e instanceof MissingObjectError) continue;
      // A lock that cannot be read is treated as a writer that started when the object was written.
      const t = obj.modified.toISOString();
      info = { version: 0, kind: "backup", namespace: null, hostname: "?", pid: 0, start: t, refreshed: t };
    }
    if (now - Date.parse(info.refreshed) <= staleMs) out.push({ ...info, name: obj.name });
  }
  return out;
}
