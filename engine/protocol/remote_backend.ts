/**
 * A repository backend over a BES's data API (ENGINE.md §5, docs/engines.md "Data API"): what an agent
 * uses so that engine/repo's backup and restore run unchanged against a BES, holding no storage
 * credentials — only a job-scoped data token, which a callback supplies for every request (so the token
 * renewed by each progress reply is used at once). The BES's certificate is pinned (`caCert`); network
 * failures, timeouts and 5xx/429 answers are retried with backoff; every error names the object.
 *
 * Transport (measured, docs/performance.md "End-to-end path"): requests go over HTTP/1.1 on a pool of
 * kept-alive connections, not HTTP/2 — Deno's HTTP/2 flow control held one 16 MiB upload over loopback TLS
 * to about 40 MB/s (mostly idle waiting for window updates) where HTTP/1.1 carried 105–180 MB/s with less
 * CPU; a pack is sent as a stream of its parts (`putParts`), never joined into one buffer first.
 *
 * Objects of other namespaces are answered by the BES exactly as missing ones, so `get` throws
 * `MissingObjectError` and `exists` says false for both. Lock objects (`locks/…`) stand for the writer lock
 * the BES holds for the job: writing one takes or refreshes it, deleting one releases it.
 */
import {
  type Backend,
  type ByteRange,
  kindOf,
  type ObjectInfo,
  validateObjectName,
} from "../repo/backend.ts";
import { concat } from "../repo/bytes.ts";
import { MissingObjectError, RepoError } from "../repo/errors.ts";
import {
  CHUNKS_EXIST_PATH,
  type DataApiErrorBody,
  EXISTS_BATCH_MAX,
  INIT_PATH,
  type ListPage,
  objectPath,
  OBJECTS_PATH,
} from "./data_api.ts";

/** Options of `RemoteBackend`. */
export interface RemoteBackendOptions {
  /** The BES's data API origin, e.g. "https://10.0.0.5:8443". */
  url: string;
  /** The current data token; called for every request. */
  token: () => string | Promise<string>;
  /** The BES's certificate (PEM): the only one trusted for this BES. */
  caCert?: string;
  /** An HTTP client to use instead of one built from `caCert` (closed by its owner). */
  client?: Deno.HttpClient;
  /** Attempts per request, including the first (default 5). */
  maxAttempts?: number;
  /** First backoff delay, in ms; doubled each retry, with jitter (default 250). */
  backoffMs?: number;
  /** Timeout of one attempt, in ms (default 300 000: a pack on a slow link). */
  timeoutMs?: number;
  /** Objects per listing page (default: the BES's maximum). */
  pageSize?: number;
}

/** A data API request that failed for good: its status and code (null after network failures). */
export class DataApiRequestError extends RepoError {
  constructor(
    readonly objectName: string,
    readonly status: number | null,
    readonly code: string | null,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

/**
 * The HTTP client of the data API for a BES whose certificate is `caCert` (PEM): that certificate only,
 * HTTP/1.1 with kept-alive connections (see the module's note on HTTP/2).
 */
export function dataApiHttpClient(caCert: string): Deno.HttpClient {
  return Deno.createHttpClient({ caCerts: [caCert], http2: false, http1: true });
}

/** Parts of a request body smaller than this are sent together (one write instead of many). */
const SMALL_BODY_PART = 64 * 1024;

/**
 * A request body streaming `parts` in order without copying them into one buffer (a plain stream, not a
 * byte stream: the parts' buffers are never transferred, so the caller may read them afterwards).
 */
function partsBody(parts: Uint8Array[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i >= parts.length) return controller.close();
      let chunk = parts[i++];
      if (chunk.length < SMALL_BODY_PART && i < parts.length && parts[i].length < SMALL_BODY_PART) {
        const run = [chunk];
        while (i < parts.length && parts[i].length < SMALL_BODY_PART) run.push(parts[i++]);
        chunk = concat(...run);
      }
      controller.enqueue(chunk);
    },
  }, { highWaterMark: 0 });
}

/** A full target (507) is not retried: space does not come back by itself within seconds. */
const RETRYABLE = (status: number) => (status >= 500 && status !== 507) || status === 429;

/** The repository behind a BES's data API, as one job's token sees it. */
export class RemoteBackend implements Backend {
  readonly location: string;
  readonly #base: string;
  readonly #client: Deno.HttpClient | undefined;
  readonly #ownsClient: boolean;
  readonly #maxAttempts: number;
  readonly #backoffMs: number;
  readonly #timeoutMs: number;
  readonly #pageSize: number | null;

  constructor(readonly options: RemoteBackendOptions) {
    this.#base = options.url.replace(/\/+$/, "");
    this.location = `the BES at ${this.#base}`;
    this.#client = options.client ??
      (options.caCert ? dataApiHttpClient(options.caCert) : undefined);
    this.#ownsClient = !options.client && this.#client !== undefined;
    this.#maxAttempts = Math.max(1, options.maxAttempts ?? 5);
    this.#backoffMs = options.backoffMs ?? 250;
    this.#timeoutMs = options.timeoutMs ?? 300_000;
    this.#pageSize = options.pageSize ?? null;
  }

  /**
   * One request with its retries: network errors, timeouts, 5xx and 429 are retried with backoff, and an
   * expired token once more with a fresh one from the callback. Returns the first other response.
   */
  async #request(
    method: string,
    path: string,
    name: string,
    what: string,
    init: { body?: Uint8Array | (() => BodyInit); headers?: Record<string, string> } = {},
  ): Promise<Response> {
    let last = "";
    let cause: unknown;
    for (let attempt = 1; attempt <= this.#maxAttempts; attempt++) {
      if (attempt > 1) {
        const delay = this.#backoffMs * 2 ** (attempt - 2);
        await new Promise((r) => setTimeout(r, delay * (0.5 + Math.random() / 2)));
      }
      let token: string;
      try {
        token = await this.options.token();
      } catch (e) {
        throw new DataApiRequestError(
          what,
          null,
          null,
          `Cannot ${what}: no data token (${(e as Error).message})`,
          {
            cause: e,
          },
        );
      }
      try {
        const res = await fetch(`${this.#base}${path}`, {
          method,
          headers: { ...init.headers, authorization: `Bearer ${token}` },
          // A body given as a function is made anew for each attempt (a stream is read once).
          body: typeof init.body === "function"
            ? init.body()
            : init.body as Uint8Array<ArrayBuffer> | undefined,
          client: this.#client,
          signal: AbortSignal.timeout(this.#timeoutMs),
        });
        if (RETRYABLE(res.status)) {
          last = `answered ${res.status}${await errorText(res)}`;
          cause = undefined;
          continue;
        }
        if (res.status === 401 && attempt < this.#maxAttempts) {
          const body = await res.clone().json().catch(() => null) as DataApiErrorBody | null;
          // An expired token: the callback may have a renewed one by now.
          if (body?.error?.code === "token_expired") {
            await res.body?.cancel();
            last = "answered 401 token_expired";
            continue;
          }
        }
        return res;
      } catch (e) {
        cause = e;
        last = (e as Error).name === "TimeoutError"
          ? `timed out after ${this.#timeoutMs} ms`
          : `failed: ${describeError(e)}`;
      }
    }
    throw new DataApiRequestError(
      name,
      null,
      null,
      `Cannot ${what} at ${this.location}: ${last} (after ${this.#maxAttempts} attempts)`,
      cause ? { cause } : undefined,
    );
  }

  async #fail(what: string, name: string, res: Response, error?: ErrorFields): Promise<never> {
    const { code, message } = error ?? await readError(res);
    throw new DataApiRequestError(
      name,
      res.status,
      code,
      `Cannot ${what} at ${this.location}: ${res.status}${code ? ` ${code}` : ""}${
        message ? `: ${message}` : ""
      }`,
    );
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    let cursor: string | null = null;
    do {
      const q = new URLSearchParams({ prefix });
      if (cursor) q.set("cursor", cursor);
      if (this.#pageSize) q.set("limit", String(this.#pageSize));
      const what = `list ${prefix || "/"}`;
      const res = await this.#request("GET", `${OBJECTS_PATH}?${q}`, prefix, what);
      if (!res.ok) await this.#fail(what, prefix, res);
      const page = await res.json() as ListPage;
      if (!Array.isArray(page?.objects)) {
        throw new DataApiRequestError(
          prefix,
          res.status,
          null,
          `Cannot ${what} at ${this.location}: not a listing`,
        );
      }
      for (const o of page.objects) yield { name: o.name, size: o.size, modified: new Date(o.modified) };
      cursor = page.cursor;
    } while (cursor);
  }

  async get(name: string, range?: ByteRange): Promise<Uint8Array<ArrayBuffer>> {
    validateObjectName(name);
    const headers: Record<string, string> = {};
    if (range && "suffix" in range) {
      if (range.suffix <= 0) return (await this.exists(name)) ? new Uint8Array(0) : this.#missing(name);
      headers.range = `bytes=-${range.suffix}`;
    } else if (range) {
      if (range.length <= 0) return (await this.exists(name)) ? new Uint8Array(0) : this.#missing(name);
      headers.range = `bytes=${range.offset}-${range.offset + range.length - 1}`;
    }
    const what = `read ${name}${headers.range ? ` (${headers.range})` : ""}`;
    const res = await this.#request("GET", objectPath(name), name, what, { headers });
    if (res.status === 403) {
      const error = await readError(res);
      if (error.code === "not_accessible") this.#missing(name);
      await this.#fail(what, name, res, error);
    }
    if (!res.ok) await this.#fail(what, name, res);
    let data = new Uint8Array(await res.arrayBuffer());
    if (range && "offset" in range) {
      if (res.status === 200) data = data.slice(range.offset, range.offset + range.length);
      if (data.length !== range.length) {
        throw new DataApiRequestError(
          name,
          res.status,
          null,
          `Cannot ${what} at ${this.location}: got ${data.length} bytes`,
        );
      }
    } else if (range && "suffix" in range && data.length > range.suffix) {
      data = data.slice(data.length - range.suffix);
    }
    return data;
  }

  #missing(name: string): never {
    throw new MissingObjectError(kindOf(name), name, `not found in this job's namespace at ${this.location}`);
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    validateObjectName(name);
    const what = `upload ${name}`;
    const res = await this.#request("PUT", objectPath(name), name, what, {
      body: data,
      headers: { "content-type": "application/octet-stream" },
    });
    if (!res.ok) await this.#fail(what, name, res);
    await res.body?.cancel();
  }

  /**
   * Stores the concatenation of `parts` under `name` as `put` does, streaming the parts as the request body
   * (no joined copy; the parts are left intact). Retries send them again from the first.
   */
  async putParts(name: string, parts: Uint8Array[]): Promise<void> {
    validateObjectName(name);
    const what = `upload ${name}`;
    // Sent chunked: Deno's fetch drops a content-length given with a stream body (measured); the BES
    // enforces its limits while it reads.
    const res = await this.#request("PUT", objectPath(name), name, what, {
      body: () => partsBody(parts),
      headers: { "content-type": "application/octet-stream" },
    });
    if (!res.ok) await this.#fail(what, name, res);
    await res.body?.cancel();
  }

  async delete(name: string): Promise<void> {
    validateObjectName(name);
    const what = `delete ${name}`;
    const res = await this.#request("DELETE", objectPath(name), name, what);
    if (!res.ok) await this.#fail(what, name, res);
    await res.body?.cancel();
  }

  async exists(name: string): Promise<boolean> {
    validateObjectName(name);
    const what = `look up ${name}`;
    const res = await this.#request("HEAD", objectPath(name), name, what);
    await res.body?.cancel();
    if (res.status === 403) return false; // missing, or not this namespace's: the same answer
    if (!res.ok) await this.#fail(what, name, res);
    return true;
  }

  /**
   * The ids among `ids` that the job's namespace holds in a live pack (indexed, not condemned), asked in
   * batches of `EXISTS_BATCH_MAX`.
   */
  async existingChunks(ids: Iterable<string>): Promise<Set<string>> {
    const all = [...ids];
    const out = new Set<string>();
    for (let i = 0; i < all.length; i += EXISTS_BATCH_MAX) {
      const batch = all.slice(i, i + EXISTS_BATCH_MAX);
      const what = `ask which of ${batch.length} chunks exist`;
      const res = await this.#request("POST", CHUNKS_EXIST_PATH, "chunks", what, {
        body: new TextEncoder().encode(JSON.stringify({ ids: batch })),
        headers: { "content-type": "application/json" },
      });
      if (!res.ok) await this.#fail(what, "chunks", res);
      const body = await res.json() as { existing?: string[] };
      for (const id of body.existing ?? []) out.add(id);
    }
    return out;
  }

  /**
   * Creates the repository with `config` (its bytes, `encodeConfig`) unless it has a config already: the
   * BES stores it only if none exists. Returns the config the repository has now — `created` false when
   * another was there (open the repository with the settings expected, so a mismatch is refused).
   */
  async initRepository(config: Uint8Array): Promise<{ created: boolean; config: Uint8Array }> {
    const what = "create the repository config";
    const res = await this.#request("POST", INIT_PATH, "config", what, {
      body: config,
      headers: { "content-type": "application/json" },
    });
    if (!res.ok) await this.#fail(what, "config", res);
    return { created: res.status === 201, config: new Uint8Array(await res.arrayBuffer()) };
  }

  /**
   * Adds key object `name` (`keys/<the token's namespace>/<id>`), add-only: an object already stored under
   * that name is kept as it is (`existed` true) and these bytes are not written.
   */
  async addKeyObject(name: string, bytes: Uint8Array): Promise<{ existed: boolean }> {
    validateObjectName(name);
    const what = `add key object ${name}`;
    const res = await this.#request("PUT", objectPath(name), name, what, {
      body: bytes,
      headers: { "content-type": "application/json" },
    });
    if (!res.ok) await this.#fail(what, name, res);
    await res.body?.cancel();
    return { existed: res.status === 200 };
  }

  /** Closes the HTTP client built from `caCert` (not one given in the options). */
  close(): void {
    if (this.#ownsClient) this.#client?.close();
  }
}

interface ErrorFields {
  code: string | null;
  message: string;
}

/** The code and message of an error response (its text, short, when it is not the API's JSON). */
async function readError(res: Response): Promise<ErrorFields> {
  const text = await res.text().catch(() => "");
  try {
    const body = JSON.parse(text) as DataApiErrorBody;
    if (typeof body.error.code === "string") {
      return { code: body.error.code, message: String(body.error.message) };
    }
  } catch {
    // not JSON: a proxy's page
  }
  return { code: null, message: text.slice(0, 200) };
}

/** ": <code>: <message>" of an error response, or "". */
async function errorText(res: Response): Promise<string> {
  const { code, message } = await readError(res);
  return code ? `: ${code}: ${message}` : message ? `: ${message}` : "";
}

/** An error's message with its cause (fetch puts the network reason there). */
function describeError(e: unknown): string {
  const err = e as Error & { cause?: { message?: string } };
  return err.cause?.message ? `${err.message} (${err.cause.message})` : String(err.message ?? e);
}
