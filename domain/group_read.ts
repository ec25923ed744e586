/**
 * Group reads: point reads that arrive while a read is in flight are read together in the next one, a
 * `getMany` of up to 10 keys (KV's limit). An embedded KV serves one handle's operations one at a time,
 * and a point read costs it about as much as a `getMany` of ten, so a busy path (the heartbeats' principal
 * and queue-counter reads) then costs the KV thread a tenth of the operations.
 *
 * A grouped read is as fresh as a read issued when it was asked for: it joins only a `getMany` that has
 * not started yet, so it sees every write committed before it was asked for (a `getMany` is one
 * consistent snapshot). Callers check what they read in their writes (versionstamps) as before.
 * A read alone (nothing in flight) is issued at once, so grouping adds no latency without load.
 */

/** KV's limit of keys per `getMany`. */
const MAX_KEYS = 10;

interface PendingRead {
  key: Deno.KvKey;
  done: (entry: Deno.KvEntryMaybe<unknown>) => void;
  failed: (error: unknown) => void;
}

/** One KV's queue of point reads (one per KV: `groupReader`). */
export class GroupReader {
  #queue: PendingRead[] = [];
  #inFlight = 0;
  /** `getMany` calls made and keys read. For tests and benchmarks. */
  readonly stats = { reads: 0, keys: 0 };

  /**
   * @param maxInFlight how many `getMany` may be outstanding at once: the KV serves them in order, so
   *   more than one only keeps its queue full while this thread builds the next.
   */
  constructor(private kv: Deno.Kv, private maxInFlight = 2) {}

  /** Reads `key` (alone or with concurrent reads). Resolves like `kv.get`. */
  get<T>(key: Deno.KvKey): Promise<Deno.KvEntryMaybe<T>> {
    return new Promise((done, failed) => {
      this.#queue.push({ key, done: done as PendingRead["done"], failed });
      if (this.#inFlight < this.maxInFlight) this.#next();
    });
  }

  async #next() {
    this.#inFlight++;
    try {
      while (this.#queue.length) {
        const batch = this.#queue.splice(0, MAX_KEYS);
        this.stats.reads++;
        this.stats.keys += batch.length;
        try {
          const entries = await this.kv.getMany(batch.map((p) => p.key));
          batch.forEach((p, i) => p.done(entries[i]));
        } catch (error) {
          // One bad key (too large, for instance) must not fail the others: each is read on its own.
          await Promise.all(batch.map(async (p) => {
            try {
              p.done(await this.kv.get(p.key));
            } catch (own) {
              p.failed(own ?? error);
            }
          }));
        }
      }
    } finally {
      this.#inFlight--;
    }
  }
}

const readers = new WeakMap<Deno.Kv, GroupReader>();

/** The group reader of `kv` (one per process and KV: grouping is a local optimisation). */
export function groupReader(kv: Deno.Kv): GroupReader {
  let reader = readers.get(kv);
  if (!reader) readers.set(kv, reader = new GroupReader(kv));
  return reader;
}
