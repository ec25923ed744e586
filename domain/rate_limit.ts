/** Fixed-window attempt counters reserved with a checked write, so concurrent attempts cannot overshoot. */
import { CommitConflictError, withRetry } from "./retry.ts";
import { registrationFailuresKey } from "./keys/auth.ts";

export interface Limit {
  key: Deno.KvKey;
  max: number;
}

/**
 * Reserves one attempt against every counter in one checked write. Returns false (and changes
 * nothing) when any counter is at its limit, or when contention persists (refusing is the safe answer:
 * 50 lost commit races — `withRetry` — end as a refusal, not an error).
 */
export async function reserveAttempt(kv: Deno.Kv, limits: Limit[], expireIn: number): Promise<boolean> {
  const attempt = async (): Promise<{ value: boolean } | null> => {
    const entries = await kv.getMany<number[]>(limits.map((l) => l.key));
    if (entries.some((e, j) => (e.value ?? 0) >= limits[j].max)) return { value: false };
    const op = kv.atomic();
    entries.forEach((e, j) => op.check(e).set(limits[j].key, (e.value ?? 0) + 1, { expireIn }));
    return (await op.commit()).ok ? { value: true } : null;
  };
  return await withRetry(attempt, 50).catch(refuseOnConflict);
}

/**
 * Gives one reserved attempt back on every counter (e.g. after a successful sign-in). A counter that keeps
 * changing (20 lost races) keeps the attempt counted: the safe side, the window's expiry clears it.
 */
export async function releaseAttempt(kv: Deno.Kv, limits: Limit[], expireIn: number): Promise<void> {
  for (const { key } of limits) {
    const attempt = async (): Promise<{ value: boolean } | null> => {
      const entry = await kv.get<number>(key);
      if (!entry.value) return { value: false };
      const op = kv.atomic().check(entry).set(key, entry.value - 1, { expireIn });
      return (await op.commit()).ok ? { value: true } : null;
    };
    await withRetry(attempt, 20).catch(refuseOnConflict);
  }
}

/** A commit retry that ran out ends as `false` (refused / not released); any other error propagates. */
function refuseOnConflict(error: unknown): false {
  if (error instanceof CommitConflictError) return false;
  throw error;
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
  return { key: registrationFailuresKey(ip, window), max };
}

/** Failed registrations and enrollments (every 401 answer) allowed per client address per window. */
export const REGISTRATION_MAX_FAILURES = 20;
/** The fixed window of the registration failure limit. */
export const REGISTRATION_WINDOW_MS = 15 * 60_000;

function registrationWindow(ip: string, now: Date) {
  const window = Math.floor(now.getTime() / REGISTRATION_WINDOW_MS) * REGISTRATION_WINDOW_MS;
  return {
    limit: registrationFailureLimit(ip, window, REGISTRATION_MAX_FAILURES),
    retryAfterSeconds: Math.ceil((window + REGISTRATION_WINDOW_MS - now.getTime()) / 1000),
  };
}

/**
 * Whether `ip` has had REGISTRATION_MAX_FAILURES failed registrations in the window that holds `now`: the
 * seconds until that window ends (the answer's Retry-After), or null when it may try. Attempts in flight
 * count nothing (see failuresReached), so many agents behind one NAT can enroll at once.
 */
export async function registrationRetryAfter(kv: Deno.Kv, ip: string, now: Date): Promise<number | null> {
  const { limit, retryAfterSeconds } = registrationWindow(ip, now);
  return await failuresReached(kv, limit) ? retryAfterSeconds : null;
}

/** Records one failed registration of `ip` in the window that holds `now` (the attempt's start). */
export async function recordRegistrationFailure(kv: Deno.Kv, ip: string, now: Date): Promise<void> {
  await recordFailure(kv, registrationWindow(ip, now).limit, REGISTRATION_WINDOW_MS * 2);
}
