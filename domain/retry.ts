/**
 * Commit retry: `withRetry` re-runs a KV read-check-commit when a concurrent writer won (optimistic
 * concurrency). It is invisible to users, bounded, and never drops a write: it returns the attempt's
 * result or throws CommitConflictError. It is none of the six user-visible meanings of "retry" (run retry,
 * job retry, auto-retry, platform retry, delivery backoff, HTTP retry; README › Architecture › "Retry:
 * six meanings"), nor an engine job's attempts (a lease that expires returns the job to the queue).
 */
import { ConflictError } from "./errors.ts";

/** The message of the CommitConflictError thrown when every try lost its race. */
export const COMMIT_CONFLICT_MESSAGE = "The object was changed by someone else at the same time; try again";

/**
 * Every try of a `withRetry` lost its race against concurrent writers: nothing was written. A
 * ConflictError (409 `conflict` over HTTP), so callers that handle conflicts handle this one too.
 */
export class CommitConflictError extends ConflictError {
  override name = "CommitConflictError";
  constructor(message: string, readonly tries: number) {
    super(message);
  }
}

/**
 * Runs `attempt` until it returns a result (null means its atomic check lost a race), at most `tries`
 * times, and returns that result's value. Throws CommitConflictError (with `message`) when every try
 * lost. Errors `attempt` throws (not found, forbidden…) end the loop at once and propagate unchanged.
 * An attempt that has nothing to do returns `{ value }` (e.g. `{ value: undefined }`) — never null.
 */
export async function withRetry<T>(
  attempt: () => Promise<{ value: T } | null>,
  tries = 5,
  message = COMMIT_CONFLICT_MESSAGE,
): Promise<T> {
  if (!Number.isInteger(tries) || tries < 1) {
    throw new RangeError(`withRetry: tries must be ≥ 1, got ${tries}`);
  }
  for (let i = 0; i < tries; i++) {
    const result = await attempt();
    if (result) return result.value;
  }
  throw new CommitConflictError(message, tries);
}

/**
 * Commits `op`; when one of its checks fails (something changed at the same time) throws
 * ConflictError(`message`), the caller's words for what to try again. Nothing is written then.
 */
export async function commitOrConflict(op: Deno.AtomicOperation, message: string): Promise<void> {
  if (!(await op.commit()).ok) throw new ConflictError(message);
}
