/**
 * Writer locks the BES holds on behalf of write tokens (ENGINE.md §3: "for agents the BES holds it on
 * behalf of the job's token, so a host cannot pin the repository forever"). A job's lock is written
 * (engine/repo/lock.ts's format) before its first write lands, rewritten while its requests arrive, and
 * deleted when its snapshot is committed. A job that goes quiet stops refreshing its lock, which then goes
 * stale as any dead writer's does; after `idleMs` without a request the BES forgets it and deletes it.
 *
 * Before a commit, `check` refuses a lock that went more than half the stale limit without a rewrite —
 * gc may have taken it for stale and condemned packs the job uses (lock.ts's `Lock.check`).
 */
import type { Backend } from "../repo/backend.ts";
import { encodeLock, LOCK_REFRESH_MS, LOCK_STALE_MS, type LockInfo } from "../repo/lock.ts";

/** The lock of a job lapsed: nothing may be committed under it. */
export class LockLapsedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "LockLapsedError";
  }
}

/** Who a lock is held for (written into the lock object, for operators and `forget`). */
export interface LockHolder {
  namespace: string;
  /** The host the job runs on (its id or name). */
  hostname: string;
  /** The snapshot the job's backup builds on, when the agent said so. */
  parent?: string | null;
}

interface HeldLock {
  backend: Backend;
  name: string;
  start: Date;
  holder: LockHolder;
  /** Time of the last successful rewrite (ms). */
  lastWrite: number;
  /** Longest time between two successful rewrites (ms). */
  longestGap: number;
  /** Time of the job's last request (ms). */
  lastRequest: number;
}

/** Options of `WriterLocks`. */
export interface WriterLocksOptions {
  /** A lock is rewritten by a request arriving this long after its last rewrite (default 30 s). */
  refreshMs?: number;
  /** The stale limit gc applies (default `LOCK_STALE_MS`); `check` refuses a gap of half of it. */
  staleMs?: number;
  /** A job silent this long loses its lock (default: `staleMs`). */
  idleMs?: number;
  now?: () => Date;
}

/** The locks held for jobs, keyed by job and repository. */
export class WriterLocks {
  #held = new Map<string, HeldLock>();
  /** One operation at a time per key (acquire, refresh, check, release). */
  #queues = new Map<string, Promise<unknown>>();
  readonly #refreshMs: number;
  readonly #staleMs: number;
  readonly #idleMs: number;
  readonly #now: () => Date;

  constructor(options: WriterLocksOptions = {}) {
    this.#refreshMs = options.refreshMs ?? LOCK_REFRESH_MS / 2;
    this.#staleMs = options.staleMs ?? LOCK_STALE_MS;
    this.#idleMs = options.idleMs ?? this.#staleMs;
    this.#now = options.now ?? (() => new Date());
  }

  #serial<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#queues.get(key) ?? Promise.resolve();
    const run = prev.catch(() => {}).then(fn);
    const tail = run.catch(() => {});
    this.#queues.set(key, tail);
    tail.then(() => {
      if (this.#queues.get(key) === tail) this.#queues.delete(key);
    });
    return run;
  }

  async #write(h: HeldLock): Promise<void> {
    const now = this.#now();
    const info: LockInfo = {
      version: 2,
      kind: "backup",
      namespace: h.holder.namespace,
      hostname: h.holder.hostname,
      pid: 0,
      start: h.start.toISOString(),
      refreshed: now.toISOString(),
      parent: h.holder.parent ?? null,
    };
    await h.backend.put(h.name, encodeLock(info));
    const t = now.getTime();
    h.longestGap = Math.max(h.longestGap, t - h.lastWrite);
    h.lastWrite = t;
  }

  /**
   * Takes the lock of `key` (writing it before returning) or, when held, notes the request and rewrites
   * it when due. `holder.parent`, once given, is kept in the lock object.
   */
  acquire(key: string, backend: Backend, holder: LockHolder): Promise<void> {
    return this.#serial(key, async () => {
      await this.#dropIdle(key);
      const now = this.#now().getTime();
      let h = this.#held.get(key);
      if (!h) {
        const start = this.#now();
        h = {
          backend,
          name: `locks/${crypto.randomUUID()}`,
          start,
          holder: { ...holder },
          lastWrite: start.getTime(),
          longestGap: 0,
          lastRequest: now,
        };
        await this.#write(h);
        this.#held.set(key, h);
        return;
      }
      h.lastRequest = now;
      const parentChanged = holder.parent !== undefined && holder.parent !== h.holder.parent;
      if (parentChanged) h.holder.parent = holder.parent;
      if (parentChanged || now - h.lastWrite >= this.#refreshMs) await this.#write(h);
    });
  }

  /** Notes a request of `key`'s job (read or write): its lock, if held, is rewritten when due. */
  touch(key: string): Promise<void> {
    if (!this.#held.has(key)) return Promise.resolve();
    return this.#serial(key, async () => {
      if (await this.#dropIdle(key)) return;
      const h = this.#held.get(key);
      if (!h) return;
      h.lastRequest = this.#now().getTime();
      if (h.lastRequest - h.lastWrite >= this.#refreshMs) await this.#write(h).catch(() => {});
    });
  }

  /** Whether `key` holds a live lock. */
  isHeld(key: string): boolean {
    const h = this.#held.get(key);
    return h !== undefined && this.#now().getTime() - h.lastRequest <= this.#idleMs;
  }

  /**
   * Proves `key`'s lock never lapsed and rewrites it: throws `LockLapsedError` (and forgets the lock) if
   * none is held, it went longer than half the stale limit without a rewrite, its object was removed, or
   * it cannot be rewritten now. The data API calls it just before it writes a snapshot.
   */
  check(key: string): Promise<void> {
    return this.#serial(key, async () => {
      const h = this.#held.get(key);
      if (!h) throw new LockLapsedError("This job holds no writer lock (it expired after a silence)");
      const fail = async (why: string): Promise<never> => {
        this.#held.delete(key);
        await h.backend.delete(h.name).catch(() => {});
        throw new LockLapsedError(
          `The writer lock ${h.name} held for this job ${why}: gc may have condemned packs it uses; ` +
            `nothing was committed (upload again and commit)`,
        );
      };
      const gap = Math.max(h.longestGap, this.#now().getTime() - h.lastWrite);
      if (gap > this.#staleMs / 2) {
        return await fail(`went ${Math.round(gap / 1000)} s without a refresh`);
      }
      let present: boolean;
      try {
        present = await h.backend.exists(h.name);
        await this.#write(h);
      } catch (e) {
        return await fail(`could not be refreshed (${(e as Error).message})`);
      }
      if (!present) return await fail("was removed");
    });
  }

  /** Releases `key`'s lock (deletes its object); nothing when none is held. */
  release(key: string): Promise<void> {
    return this.#serial(key, async () => {
      const h = this.#held.get(key);
      if (!h) return;
      this.#held.delete(key);
      await h.backend.delete(h.name);
    });
  }

  /** Forgets `key`'s lock if its job was silent longer than `idleMs`, deleting it; true if it did. */
  async #dropIdle(key: string): Promise<boolean> {
    const h = this.#held.get(key);
    if (!h || this.#now().getTime() - h.lastRequest <= this.#idleMs) return false;
    this.#held.delete(key);
    await h.backend.delete(h.name).catch(() => {});
    return true;
  }

  /** Releases the locks of jobs silent longer than `idleMs`; returns how many. Call it periodically. */
  async sweep(): Promise<number> {
    let n = 0;
    for (const key of [...this.#held.keys()]) {
      if (await this.#serial(key, () => this.#dropIdle(key))) n++;
    }
    return n;
  }

  /** Releases every lock (the BES is stopping). */
  async close(): Promise<void> {
    await Promise.all([...this.#held.keys()].map((k) => this.release(k).catch(() => {})));
  }

  /** Number of locks held. */
  get size(): number {
    return this.#held.size;
  }
}
