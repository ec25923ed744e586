/**
 * Group commit: checked writes that arrive while a KV commit is in flight are written together in the
 * next one, each with its own checks. On an embedded KV a commit's cost is mostly the commit itself
 * (the journal write and its sync), so a commit of forty small writes costs little more than one; a
 * busy path (job claims, heartbeats) is then no longer limited to one commit per request.
 *
 * A write is plain data — its checks and mutations, recorded with `AtomicRecorder` by the same code
 * that would build a `kv.atomic()` — so the committer can see which keys it touches:
 *  - two writes that touch a common key never share a commit (both would pass their checks against
 *    the same versionstamp, or one would silently overwrite the other); the later one waits for the
 *    next commit. Keys that both only `sum`/`min`/`max` (counters) commute and may share one.
 *  - a commit holds at most `maxWrites` writes, 100 checks and 1,000 mutations (KV's limits).
 *  - when a shared commit fails (a check of some write no longer holds) or is refused (too large),
 *    each of its writes is committed on its own, so exactly the writes whose checks still hold
 *    succeed, as they would have without grouping.
 * A write alone (nothing in flight) is committed at once, so grouping adds no latency without load.
 */

/** KV's limits for one atomic operation. */
const MAX_CHECKS = 100;
const MAX_MUTATIONS = 1000;

/**
 * Records what would be done to a `kv.atomic()` operation (checks and mutations), to be committed
 * later — alone or with other writes. Accepts everything an `AtomicOperation` does except `enqueue`
 * and `commit` (a grouped write is committed by its committer).
 */
export class AtomicRecorder implements Deno.AtomicOperation {
  readonly checks: Deno.AtomicCheck[] = [];
  readonly mutations: Deno.KvMutation[] = [];

  check(...checks: Deno.AtomicCheck[]): this {
    for (const c of checks) this.checks.push({ key: c.key, versionstamp: c.versionstamp });
    return this;
  }
  mutate(...mutations: Deno.KvMutation[]): this {
    this.mutations.push(...mutations);
    return this;
  }
  sum(key: Deno.KvKey, n: bigint): this {
    return this.mutate({ type: "sum", key, value: new Deno.KvU64(n) });
  }
  min(key: Deno.KvKey, n: bigint): this {
    return this.mutate({ type: "min", key, value: new Deno.KvU64(n) });
  }
  max(key: Deno.KvKey, n: bigint): this {
    return this.mutate({ type: "max", key, value: new Deno.KvU64(n) });
  }
  set(key: Deno.KvKey, value: unknown, options?: { expireIn?: number }): this {
    return this.mutate(
      options?.expireIn === undefined
        ? { type: "set", key, value }
        : { type: "set", key, value, expireIn: options.expireIn },
    );
  }
  delete(key: Deno.KvKey): this {
    return this.mutate({ type: "delete", key });
  }
  enqueue(): this {
    throw new Error("A grouped write cannot enqueue");
  }
  commit(): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    throw new Error("A grouped write is committed by its GroupCommitter");
  }
}

/**
 * A KV key as a string, unique per key (strings length-prefixed, so no part can imitate a separator; cheaper
 * than quoting them, on every heartbeat's keys).
 */
export function keyId(key: Deno.KvKey): string {
  let out = "";
  for (const part of key) {
    if (typeof part === "string") out += `s${part.length}:${part}|`;
    else if (part instanceof Uint8Array) out += `u${Array.prototype.join.call(part, ",")}|`;
    else out += `${typeof part}${String(part)}|`;
  }
  return out;
}

/** The keys a write touches: `true` = exclusively (checked, set or deleted), `false` = a commutative counter. */
function touchedKeys(write: AtomicRecorder): Map<string, boolean> {
  const keys = new Map<string, boolean>();
  for (const c of write.checks) keys.set(keyId(c.key), true);
  for (const m of write.mutations) {
    const id = keyId(m.key);
    const exclusive = m.type === "set" || m.type === "delete";
    keys.set(id, exclusive || keys.get(id) === true);
  }
  return keys;
}

interface Pending {
  write: AtomicRecorder;
  keys: Map<string, boolean>;
  done: (result: Deno.KvCommitResult | Deno.KvCommitError) => void;
  failed: (error: unknown) => void;
}

/** One writer's queue (one per KV and kind of write: `groupCommitter`). */
export class GroupCommitter {
  #queue: Pending[] = [];
  #running = false;
  /** Shared commits attempted, and those that failed (then committed write by write). For tests and benchmarks. */
  readonly stats = { commits: 0, writes: 0, sharedFailures: 0 };

  constructor(private kv: Deno.Kv, private maxWrites: number) {}

  /** Writes waiting for a commit (not counting those in the commit in flight). */
  get queued(): number {
    return this.#queue.length;
  }

  /**
   * Commits `write` (alone or with concurrent writes). Resolves like `commit()`: `{ ok: true,
   * versionstamp }` when it was written, `{ ok: false }` when one of its own checks failed. Rejects
   * when the write itself cannot be committed (e.g. over KV's limits).
   */
  submit(write: AtomicRecorder): Promise<Deno.KvCommitResult | Deno.KvCommitError> {
    return new Promise((done, failed) => {
      this.#queue.push({ write, keys: touchedKeys(write), done, failed });
      if (!this.#running) this.#drain();
    });
  }

  async #drain() {
    this.#running = true;
    try {
      while (this.#queue.length) await this.#commit(this.#nextBatch());
    } finally {
      this.#running = false;
    }
  }

  /** Takes from the queue, in order, the writes that fit in one commit and touch no key another one does. */
  #nextBatch(): Pending[] {
    const batch: Pending[] = [];
    const later: Pending[] = [];
    const taken = new Map<string, boolean>();
    let checks = 0;
    let mutations = 0;
    for (const p of this.#queue) {
      const fits = batch.length === 0 ||
        (batch.length < this.maxWrites && checks + p.write.checks.length <= MAX_CHECKS &&
          mutations + p.write.mutations.length <= MAX_MUTATIONS);
      let clash = false;
      if (fits) {
        for (const [key, exclusive] of p.keys) {
          const other = taken.get(key);
          if (other !== undefined && (other || exclusive)) {
            clash = true;
            break;
          }
        }
      }
      if (!fits || clash) {
        later.push(p);
        continue;
      }
      batch.push(p);
      checks += p.write.checks.length;
      mutations += p.write.mutations.length;
      for (const [key, exclusive] of p.keys) taken.set(key, exclusive || taken.get(key) === true);
    }
    this.#queue = later;
    return batch;
  }

  async #commit(batch: Pending[]) {
    this.stats.commits++;
    this.stats.writes += batch.length;
    if (batch.length > 1) {
      try {
        const op = this.kv.atomic();
        for (const { write } of batch) op.check(...write.checks).mutate(...write.mutations);
        const result = await op.commit();
        if (result.ok) {
          for (const p of batch) p.done(result);
          return;
        }
      } catch {
        // Refused as a whole (too large, for instance): each is committed on its own below.
      }
      this.stats.sharedFailures++;
    }
    await Promise.all(batch.map(async (p) => {
      try {
        p.done(await this.kv.atomic().check(...p.write.checks).mutate(...p.write.mutations).commit());
      } catch (error) {
        p.failed(error);
      }
    }));
  }
}

const committers = new WeakMap<Deno.Kv, Map<string, GroupCommitter>>();

/** The committer of `kind` writes on `kv` (one per process and KV: grouping is a local optimisation). */
export function groupCommitter(kv: Deno.Kv, kind: string, maxWrites: number): GroupCommitter {
  let byKind = committers.get(kv);
  if (!byKind) committers.set(kv, byKind = new Map());
  let committer = byKind.get(kind);
  if (!committer) byKind.set(kind, committer = new GroupCommitter(kv, maxWrites));
  return committer;
}
