/**
 * How the agent names a failure in a job result (`error.reason`, `retryable`): the reasons the control plane
 * knows (docs/engine-protocol.md, Jobs) where one fits, else a short code of the agent's own. Every message
 * names the object, path or request that failed.
 */
import {
  FormatVersionError,
  IntegrityError,
  RepoConfigError,
  RepoError,
  WrongKeyError,
} from "../repo/errors.ts";
import { DataApiRequestError } from "../protocol/remote_backend.ts";

/** A job failure as the result carries it. */
export interface JobFailure {
  reason: string;
  message: string;
  retryable: boolean;
}

/** A failure the agent raises with its reason already chosen. */
export class AgentJobError extends Error {
  constructor(readonly reason: string, message: string, readonly retryable = false) {
    super(message);
    this.name = "AgentJobError";
  }
}

/**
 * A control-plane request that was refused (`status`, `code`; `retryAfterMs` from a 503's or 429's
 * Retry-After) or could not be made (`status` null).
 */
export class ControlPlaneError extends Error {
  constructor(
    readonly status: number | null,
    readonly code: string | null,
    message: string,
    readonly retryAfterMs: number | null = null,
  ) {
    super(message);
    this.name = "ControlPlaneError";
  }
}

const FULL = /no space left|ENOSPC|quota exceeded|disk full|storage full|EDQUOT/i;

/**
 * The reason, message and retryability of an error thrown while a job ran. A library error that wraps a
 * data API failure (`cause`, e.g. "An earlier upload failed") is judged by that failure, with its own message.
 */
export function describeFailure(e: unknown): JobFailure {
  const message = e instanceof Error ? e.message : String(e);
  if (e instanceof RepoError && !(e instanceof DataApiRequestError)) {
    for (let c = e.cause, depth = 0; c && depth < 5; c = (c as Error).cause, depth++) {
      if (c instanceof DataApiRequestError) return { ...describeFailure(c), message };
    }
  }
  if (e instanceof AgentJobError) return { reason: e.reason, message, retryable: e.retryable };
  if (e instanceof DataApiRequestError) {
    if (e.status === null) {
      // Network failures and timeouts after the client's retries: the BES is down or unreachable.
      return { reason: "ENGINE_OFFLINE", message, retryable: true };
    }
    if (e.code === "storage_full" || FULL.test(message)) {
      return { reason: "TARGET_FULL", message, retryable: false };
    }
    if (e.code === "storage_unavailable" || e.code === "repository_unknown") {
      return { reason: "TARGET_UNREACHABLE", message, retryable: true };
    }
    if (e.status === 401 || e.code === "read_only" || e.code === "forbidden") {
      return { reason: "AUTH", message, retryable: e.status === 401 };
    }
    if (e.code === "lock_lapsed" || e.code === "missing_blobs") {
      return { reason: "REPOSITORY_BUSY", message, retryable: true };
    }
    return { reason: "DATA_API_ERROR", message, retryable: e.status >= 500 };
  }
  if (e instanceof ControlPlaneError) {
    if (e.status === null) return { reason: "CONTROL_PLANE_UNREACHABLE", message, retryable: true };
    return {
      reason: e.status === 401 || e.status === 403 ? "AUTH" : "CONTROL_PLANE_REFUSED",
      message,
      retryable: false,
    };
  }
  if (e instanceof WrongKeyError) return { reason: "WRONG_KEY", message, retryable: false };
  if (e instanceof FormatVersionError) return { reason: "REPOSITORY_TOO_NEW", message, retryable: false };
  if (e instanceof RepoConfigError) return { reason: "REPOSITORY_MISMATCH", message, retryable: false };
  if (e instanceof IntegrityError) return { reason: "REPOSITORY_DAMAGED", message, retryable: false };
  if (e instanceof RepoError) {
    if (FULL.test(message)) return { reason: "TARGET_FULL", message, retryable: false };
    return { reason: "BACKUP_ERROR", message, retryable: true };
  }
  if (e instanceof Deno.errors.PermissionDenied || e instanceof Deno.errors.NotCapable) {
    return { reason: "PERMISSION_DENIED", message, retryable: false };
  }
  if (FULL.test(message)) return { reason: "DISK_FULL", message, retryable: false };
  return { reason: "AGENT_ERROR", message, retryable: true };
}
