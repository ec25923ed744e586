/** Domain errors and their mapping to HTTP statuses (one place: `toErrorStatus`). */

/** Field-level messages keyed by field path (e.g. `email`, `orgIds`). */
export type FieldErrors = Record<string, string>;

/** A domain error class: its `name` and its machine `code` (the HTTP status is `toErrorStatus`'s). */
function domainError<Code extends string>(name: string, code: Code) {
  return class extends Error {
    override name = name;
    readonly code: Code = code;
  };
}

/** The object does not exist or the actor may not know that it exists. */
export class NotFoundError extends domainError("NotFoundError", "not_found") {}

/** A concurrent writer won, or a uniqueness rule was violated. */
export class ConflictError extends domainError("ConflictError", "conflict") {}

/** The actor is known but lacks the permission for this action. */
export class ForbiddenError extends domainError("ForbiddenError", "forbidden") {}

/** The request is not authenticated (missing/expired session, bad token). */
export class UnauthorizedError extends domainError("UnauthorizedError", "unauthorized") {}

/** Too many attempts; `retryAfterSeconds` tells when to try again. */
export class RateLimitError extends domainError("RateLimitError", "rate_limited") {
  constructor(message: string, readonly retryAfterSeconds: number) {
    super(message);
  }
}

/** Input was well-formed but breaks a rule; `fields` says which field and why. */
export class ValidationError extends domainError("ValidationError", "invalid") {
  constructor(message: string, readonly fields: FieldErrors = {}) {
    super(message);
  }
}

/** An HTTP-level error with an explicit status and machine code (e.g. 413 payload_too_large). */
export class HttpError extends Error {
  override name = "HttpError";
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

/** Maps an error to `{ status, code }`; anything unknown is a 500 `internal`. */
export function toErrorStatus(error: unknown): { status: number; code: string } {
  if (error instanceof HttpError) return { status: error.status, code: error.code };
  if (error instanceof ValidationError) return { status: 422, code: error.code };
  if (error instanceof NotFoundError) return { status: 404, code: error.code };
  if (error instanceof ConflictError) return { status: 409, code: error.code };
  if (error instanceof ForbiddenError) return { status: 403, code: error.code };
  if (error instanceof UnauthorizedError) return { status: 401, code: error.code };
  if (error instanceof RateLimitError) return { status: 429, code: error.code };
  return { status: 500, code: "internal" };
}
