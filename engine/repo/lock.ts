/**
 * Writer locks (restic's `locks/`): a backup writes "locks/<random id>" when it starts and rewrites it
 * every `refreshMs` while it runs; a lock not refreshed within `staleMs` is stale (its writer died). gc
 * reads the live locks for its cutoff rule (gc.ts): it never condemns a pack written after the oldest
 * live writer started, and never deletes a pack condemned while a writer older than the condemnation is
 * live. A lock object is clear JSON: { version, kind, namespace, hostname, pid, start, refreshed, parent,
 * checksum }, read strictly (`parseLock`); a damaged lock counts as a live writer older than everything.
 */
import type { Backend } from "./backend.ts";
import { sha256Hex } from "./chunk_id.ts";
import { IntegrityError, MissingObjectError, RepoError } from "./errors.ts";

/** Lock object format version (version 1, without `parent` and `checksum`, is still read). */
export const LOCK_VERSION = 2;
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
  /** The snapshot a backup builds on (it cannot be forgotten while the lock is live), or null. */
  parent: string | null;
}

/** A lock as `listLiveLocks` returns it: a damaged one has `damaged` set and `start` at the epoch. */
export type LiveLock = LockInfo & { name: string; damaged: string | null };

const ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

function lockChecksum(info: LockInfo): string {
  const { version, kind, namespace, hostname, pid, start, refreshed, parent } = info;
  const body = JSON.stringify({ version, kind, namespace, hostname, pid, start, refreshed, parent });
  return sha256Hex(new TextEncoder().encode(body));
}

/** The bytes of lock object `info`. */
export function encodeLock(info: LockInfo): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(JSON.stringify({ ...info, checksum: lockChecksum(info) }));
}

/** Lock object `name`, checked field by field. Throws `IntegrityError` naming the lock if damaged. */
export function parseLock(name: string, bytes: Uint8Array): LockInfo {
  const fail = (detail: string): never => {
    throw new IntegrityError("lock", name, detail);
  };
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch (e) {
    return fail(`not JSON: ${(e as Error).message}`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) fail("not a JSON object");
  const version = raw.version;
  if (version !== 1 && version !== LOCK_VERSION) fail(`unknown lock version ${JSON.stringify(version)}`);
  if (raw.kind !== "backup" && raw.kind !== "gc") fail(`unknown kind ${JSON.stringify(raw.kind)}`);
  if (raw.namespace !== null && typeof raw.namespace !== "string") fail("namespace is not a string or null");
  if (typeof raw.hostname !== "string") fail("hostname is not a string");
  if (!Number.isSafeInteger(raw.pid) || (raw.pid as number) < 0) fail("pid is not a whole number");
  for (const k of ["start", "refreshed"] as const) {
    const v = raw[k];
    if (typeof v !== "string" || !ISO_TIME.test(v) || new Date(v).toISOString() !== v) {
      fail(`${k} is not an ISO 8601 time: ${JSON.stringify(v)}`);
    }
  }
  const parent = version === 1 ? null : raw.parent;
  if (parent !== null && (typeof parent !== "string" || parent.length > 256)) {
    fail("parent is not an id or null");
  }
  const info: LockInfo = {
    version: version as number,
    kind: raw.kind as LockInfo["kind"],
    namespace: raw.namespace as string | null,
    hostname: raw.hostname as string,
    pid: raw.pid as number,
    start: raw.start as string,
    refreshed: raw.refreshed as string,
    parent: parent as string | null,
  };
  if (version === LOCK_VERSION && raw.checksum !== lockChecksum(info)) fail("checksum mismatch");
  return info;
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
  /** The snapshot a backup builds on. */
  parent?: string | null;
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
      parent: options.parent ?? null,
    };
    return backend.put(name, encodeLock(info));
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

/**
 * Every lock refreshed within `staleMs` of `now`, with its object name. A lock that fails `parseLock` is
 * live while its object was written within `staleMs` (a live writer rewrites it), and counts as a backup
 * that started at the epoch — older than everything, so gc condemns and deletes nothing while it is live.
 */
export async function listLiveLocks(
  backend: Backend,
  options: { now?: Date; staleMs?: number } = {},
): Promise<LiveLock[]> {
  const now = (options.now ?? new Date()).getTime();
  const staleMs = options.staleMs ?? LOCK_STALE_MS;
  const out: LiveLock[] = [];
  for await (const obj of backend.list("locks/")) {
    let bytes: Uint8Array;
    try {
      bytes = await backend.get(obj.name);
    } catch (e) {
      if (e instanceof MissingObjectError) continue;
      throw e;
    }
    try {
      const info = parseLock(obj.name, bytes);
      if (now - Date.parse(info.refreshed) <= staleMs) out.push({ ...info, name: obj.name, damaged: null });
    } catch (e) {
      if (!(e instanceof IntegrityError)) throw e;
      if (now - obj.modified.getTime() > staleMs) continue;
      const epoch = new Date(0).toISOString();
      out.push({
        version: 0,
        kind: "backup",
        namespace: null,
        hostname: "?",
        pid: 0,
        start: epoch,
        refreshed: obj.modified.toISOString(),
        parent: null,
        name: obj.name,
        damaged: e.detail,
      });
    }
  }
  return out;
}

/**
 * Deletes every stale lock — one not refreshed within `staleMs` (a damaged one: its object not written
 * within `staleMs`) — and returns their names. Live locks are left alone: their writers may be running.
 */
export async function removeStaleLocks(
  backend: Backend,
  options: { now?: Date; staleMs?: number } = {},
): Promise<string[]> {
  const live = new Set((await listLiveLocks(backend, options)).map((l) => l.name));
  const removed: string[] = [];
  for await (const obj of backend.list("locks/")) {
    if (live.has(obj.name)) continue;
    await backend.delete(obj.name);
    removed.push(obj.name);
  }
  return removed;
}
