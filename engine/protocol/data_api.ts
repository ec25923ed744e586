/**
 * The data API's contract (ENGINE.md §5, docs/engines.md "Data API"), shared by the BES that serves it
 * (engine/bes/data_api.ts) and the agent's client (remote_backend.ts): paths, limits and error codes.
 * Objects keep the repository's names (docs/repository-format.md), so an agent runs engine/repo's backup
 * and restore unchanged over it.
 */

/** Every data API path starts here. */
export const DATA_API_BASE = "/api/data/v1";
/** `GET ?prefix=&cursor=&limit=` lists, `GET|HEAD|PUT|DELETE /<object name>` reads, writes, releases. */
export const OBJECTS_PATH = `${DATA_API_BASE}/objects`;
/** `POST {"ids": [...]}`: which of these chunk ids the token's namespace holds in a live pack. */
export const CHUNKS_EXIST_PATH = `${DATA_API_BASE}/chunks/exists`;
/**
 * `POST <config bytes>` (write token): creates the repository's `config` with these bytes only if it has
 * none (put-if-absent); answers the stored config's bytes — 201 when created, 200 when one existed.
 */
export const INIT_PATH = `${DATA_API_BASE}/init`;

/** Most objects in one page of a listing (and the default). */
export const LIST_PAGE_MAX = 1000;
/** Most ids in one exists request. */
export const EXISTS_BATCH_MAX = 10_000;

/** Largest bodies the BES accepts, per kind of object (bytes); larger ones are answered 413. */
export const BODY_LIMITS = {
  /** A pack: its target size (16 MiB) plus the largest blob (64 MiB) plus room for its trailer. */
  pack: 96 * 1024 * 1024,
  index: 16 * 1024 * 1024,
  refs: 1024 * 1024,
  snapshot: 16 * 1024 * 1024,
  lock: 64 * 1024,
  json: 1024 * 1024,
  /** A repository config sent to `INIT_PATH`. */
  config: 64 * 1024,
  /** A key object (`keys/<namespace>/<id>`). */
  key: 64 * 1024,
} as const;

/** Error codes of the data API (`{"error": {"code", "message"}}`). */
export type DataApiErrorCode =
  /** 401: no bearer token. */
  | "unauthorized"
  /** 401: the token is malformed, not signed by this BES's control plane, or issued for another BES. */
  | "token_invalid"
  /** 401: the token has expired (the agent fetches a fresh one and retries). */
  | "token_expired"
  /** 403: the object is not in the token's namespace, or does not exist — the same answer for both. */
  | "not_accessible"
  /** 403: a read token asked to write. */
  | "read_only"
  /** 403: the data API never deletes, and never writes this kind of object. */
  | "forbidden"
  /** 403: the token's repository is not one this BES serves. */
  | "repository_unknown"
  /** 404: no such endpoint. */
  | "not_found"
  /** 400: a malformed request (name, range, JSON). */
  | "malformed"
  /** 422: the body is not a valid object of its kind, or not named by its content. */
  | "invalid"
  /** 409: the object exists with other content (never overwritten). */
  | "exists"
  /** 409: the snapshot references blobs that are missing from the namespace or in a condemned pack. */
  | "missing_blobs"
  /** 409: the writer lock the BES holds for this job lapsed or could not be refreshed; nothing committed. */
  | "lock_lapsed"
  /** 413: the body is over the limit of its kind. */
  | "payload_too_large"
  /** 416: the range lies outside the object. */
  | "range_not_satisfiable"
  /** 502: the storage target failed. */
  | "storage_unavailable"
  /** 507: the storage target has no space left (or its quota is used up); nothing was stored. */
  | "storage_full"
  /** 503: the BES is not ready (no control-plane key yet). */
  | "not_ready"
  | "internal";

/** The JSON error body. */
export interface DataApiErrorBody {
  error: { code: DataApiErrorCode; message: string; missing?: string[]; missingCount?: number };
}

/** One listed object. */
export interface ListedObject {
  name: string;
  size: number;
  /** ISO 8601. */
  modified: string;
}

/** A page of a listing: `cursor` is null on the last page. */
export interface ListPage {
  objects: ListedObject[];
  cursor: string | null;
}

/** The URL path of object `name` (each segment percent-encoded). */
export function objectPath(name: string): string {
  return `${OBJECTS_PATH}/${name.split("/").map(encodeURIComponent).join("/")}`;
}
