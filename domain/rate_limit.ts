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

/**
 * Failures counted after they happen, for limits that must not refuse honest attempts in flight (many
 * agents behind one NAT enrolling at once): check `failuresReached` first, record a failure with
 * `recordFailure` once the answer is known. Each failure is its own entry under the limit's key (no
 * contention between concurrent failures), expiring on its own. Concurrent failures may all pass the
 * check before any is recorded, so one burst can overshoot `max` by the attempts in flight; the next
 * attempt after it is refused.
 */
export async function failuresReached(kv: Deno.Kv, limit: Limit): Promise<boolean> {
  let n = 0;
  for await (const _ of kv.list({ prefix: limit.key }, { limit: limit.max })) n++;
  return n >= limit.max;
}

/** Records one failure against `limit` (see failuresReached). */
export async function recordFailure(kv: Deno.Kv, limit: Limit, expireIn: number): Promise<void> {
  await kv.set([...limit.key, crypto.randomUUID()], true, { expireIn });
}

/** The failed registrations and enrollments of one client address in one fixed window. */
export function registrationFailureLimit(ip: string, window: number, max: number): Limit {
  return { key: ["registration_failures", ip, window], max };
}
