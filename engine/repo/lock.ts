/**
 * Writer locks (restic's `locks/`): a backup writes "locks/<random id>" when it starts and rewrites it
 * every `refreshMs` while it runs; a lock not refreshed within `staleMs` is stale (its writer died). gc
 * reads the live locks for its cutoff rule (gc.ts): it never condemns a pack written after the oldest
 * live writer started, and never deletes a pack condemned while a writer older than the condemnation is
 * live. A lock object is clear JSON: { version, kind, namespace, hostname, pid, start, refreshed }.
 */
import type { Backend } from "./backend.ts";
import { MissingObjectError } from "./errors.ts";

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
  /** Stops refreshing and deletes the lock object. */
  release(): Promise<void>;
}

/** Options of `acquireLock`. */
export interface LockOptions {
  kind: LockInfo["kind"];
  namespace?: string | null;
  refreshMs?: number;
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
  await write();
  let released = false;
  const timer = setInterval(() => {
    if (!released) write().catch(() => {});
  }, options.refreshMs ?? LOCK_REFRESH_MS);
  Deno.unrefTimer(timer);
  return {
    name,
    start,
    refresh: write,
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
