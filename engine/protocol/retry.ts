/**
 * HTTP retry of an engine's job reports (README › Architecture › "Retry: six meanings": HTTP retry): a
 * result, part or progress report the control plane could not take now — a network failure, a 5xx (503
 * `busy`: a commit lost every race against concurrent writers; nothing, or only the idempotent part, was
 * written), a 429 — is sent again after a jittered exponential backoff, bounded in total time. Every send
 * is signed afresh (new timestamp and nonce; a replayed nonce is refused), and the control plane applies a
 * result once: a result re-sent after it was recorded is answered `{ applied: false }`.
 */

/** How long, in total, an engine keeps sending one result (the lease is 5 minutes). */
export const RESULT_RETRY_BUDGET_MS = 120_000;
/**
 * How long an engine keeps asking for a job's keys (`…/jobs/{id}/key`) while the answer is retryable (a
 * 503 `busy`: the delivery's commit lost its races; a network failure, another 5xx, a 429), with the same
 * backoff as a result, before the job fails. Delivering a job's keys again is harmless (the same keys).
 */
export const KEY_RETRY_BUDGET_MS = 60_000;
/** The first backoff, doubled at each retry up to `MAX_RETRY_DELAY_MS`. */
export const FIRST_RETRY_DELAY_MS = 1000;
export const MAX_RETRY_DELAY_MS = 30_000;

/** Network failures (no status), 5xx and 429 are worth another send; anything else is the answer. */
export function isRetryableStatus(status: number | null): boolean {
  return status === null || status >= 500 || status === 429;
}

/** A `Retry-After` header in milliseconds (seconds or an HTTP date), null when absent or unreadable. */
export function retryAfterMs(header: string | null | undefined, now = Date.now()): number | null {
  if (!header) return null;
  if (/^\d+$/.test(header.trim())) return Number(header.trim()) * 1000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

export interface BackoffOptions {
  firstDelayMs?: number;
  maxDelayMs?: number;
  /** Uniform in [0, 1) (tests pass a fixed one). */
  random?: () => number;
}

/**
 * The wait before retry number `retry` (1 for the first): `first·2^(retry−1)`, capped at `maxDelayMs`,
 * jittered to between half and all of it (engines that lost the same race do not come back together),
 * and never less than the server's `Retry-After` (capped too).
 */
export function retryDelayMs(retry: number, retryAfter: number | null, options: BackoffOptions = {}): number {
  const first = options.firstDelayMs ?? FIRST_RETRY_DELAY_MS;
  const max = options.maxDelayMs ?? MAX_RETRY_DELAY_MS;
  const exp = Math.min(max, first * 2 ** Math.max(0, retry - 1));
  const jittered = exp / 2 + (options.random ?? Math.random)() * (exp / 2);
  return Math.round(Math.max(jittered, Math.min(max, retryAfter ?? 0)));
}
