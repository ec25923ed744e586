/** Fixed-window attempt counters reserved with a checked write, so concurrent attempts cannot overshoot. */

export interface Limit {
  key: Deno.KvKey;
  max: number;
}

/**
 * Reserves one attempt against every counter in one checked write. Returns false (and changes
 * nothing) when any counter is at its limit, or when contention persists (refusing is the safe answer).
 */
export async function reserveAttempt(kv: Deno.Kv, limits: Limit[], expireIn: number): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    const entries = await kv.getMany<number[]>(limits.map((l) => l.key));
    if (entries.some((e, j) => (e.value ?? 0) >= limits[j].max)) return false;
    const op = kv.atomic();
    entries.forEach((e, j) => op.check(e).set(limits[j].key, (e.value ?? 0) + 1, { expireIn }));
    if ((await op.commit()).ok) return true;
  }
  return false;
}

/** Gives one reserved attempt back on every counter (e.g. after a successful sign-in). */
export async function releaseAttempt(kv: Deno.Kv, limits: Limit[], expireIn: number): Promise<void> {
  for (const { key } of limits) {
    for (let i = 0; i < 20; i++) {
      const entry = await kv.get<number>(key);
      if (!entry.value) break;
      if ((await kv.atomic().check(entry).set(key, entry.value - 1, { expireIn }).commit()).ok) break;
    }
  }
}
