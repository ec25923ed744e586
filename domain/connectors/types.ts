/**
 * The connector interface between platform sync and a third-party backup product, the normalised
 * shapes connectors return, and the HTTP helper both vendor connectors share (timeouts, 429 with
 * Retry-After, bounded retries of 5xx, TLS and network failures turned into clear errors, JSON parsing
 * and shape checks with zod). A connector never writes anything: it reads the vendor and starts jobs.
 */
import type { z } from "zod";
import { SecretScrubber } from "../scrub.ts";

export const PLATFORM_TYPES = ["veeam", "cohesity"] as const;
export type PlatformType = (typeof PLATFORM_TYPES)[number];
export const PLATFORM_TYPE_LABELS: Record<PlatformType, string> = {
  veeam: "Veeam Backup & Replication",
  cohesity: "Cohesity",
};

/** The guide's job types (domain/job_views.ts `JOB_TYPES`), repeated here to keep connectors dependency-free. */
export type VendorJobType = "full" | "incremental" | "differential" | "snapshot" | "log";
/** The guide's protected object types (domain/protected.ts `PROTECTED_TYPES`). */
export type VendorObjectType = "vm" | "physical" | "fileset" | "cloud_resource" | "nas";
/** A vendor run's state mapped onto ours. */
export type VendorRunStatus = "pending" | "running" | "success" | "warning" | "failed" | "skipped";

/** A backup job as the vendor lists it. */
export interface VendorJob {
  /** The vendor's id of the job (the "source job id" of the Jobs view). */
  id: string;
  name: string;
  /** The vendor's own job type, shown to operators (e.g. `VSphereBackup`, `kVMware`). */
  vendorType: string;
  /** What the job's runs usually are, before a run says otherwise. */
  jobType: VendorJobType;
  /** The protected type of what the job backs up, when the job type says it. */
  objectType: VendorObjectType | null;
  enabled: boolean;
  /** The vendor ids of the sources the job protects, when the job lists them (Cohesity). */
  sourceIds?: string[];
}

/** One object's outcome in a run, when the vendor reports per-object results. */
export interface VendorObjectOutcome {
  objectId: string;
  name: string;
  /** The vendor's type of the object (used when the object is not otherwise listed). */
  vendorType: string;
  type: VendorObjectType;
  status: "success" | "warning" | "failed";
  endedAt: string;
}

/** A run of a job (a Veeam session, a Cohesity protection run). */
export interface VendorRun {
  /** Unique within the platform. */
  id: string;
  jobId: string;
  status: VendorRunStatus;
  /** True when the vendor says the run was cancelled (status is then `failed`). */
  cancelled: boolean;
  jobType: VendorJobType;
  startedAt: string | null;
  endedAt: string | null;
  bytesTransferred: number;
  protectedBytes: number;
  /** The vendor's message for a failed or warning run (null when it gives none). */
  message: string | null;
  /** Per-object outcomes, when the vendor reports them (Cohesity); null when it does not (Veeam). */
  objects: VendorObjectOutcome[] | null;
}

/** A protected object as the vendor lists it. */
export interface VendorObject {
  id: string;
  name: string;
  vendorType: string;
  type: VendorObjectType;
  /** The vendor ids of the jobs that protect it (may be empty for an orphaned backup). */
  jobIds: string[];
}

/** What the connectivity test found. */
export interface ConnectivityResult {
  /** A short description of the server, e.g. "Veeam Backup & Replication 12.1.2.172 (vbr01)". */
  detail: string;
}

/** The operations platform sync needs from a vendor. */
export interface PlatformConnector {
  readonly type: PlatformType;
  /** Authenticates and reads one cheap resource. Throws ConnectorError. */
  testConnection(): Promise<ConnectivityResult>;
  /** Every backup job. All pages are read and checked before it returns. Throws ConnectorError. */
  listJobs(): Promise<VendorJob[]>;
  /**
   * The runs of `jobs` that started at or after `since` (all of them when null), oldest first. All
   * pages are read and checked before it returns. Throws ConnectorError.
   */
  listRuns(jobs: VendorJob[], since: Date | null): Promise<VendorRun[]>;
  /** The objects the jobs protect. All pages are read and checked before it returns. Throws ConnectorError. */
  listObjects(jobs: VendorJob[]): Promise<VendorObject[]>;
  /**
   * Starts a job now; the vendor's run id when the vendor returns it. Throws ConnectorError; after a
   * `timeout`, `server` or `bad_response` error the vendor may have started the job all the same.
   */
  startJob(job: VendorJob): Promise<{ runId: string | null }>;
  /** Releases the HTTP client (custom CA). */
  close(): void;
}

export type ConnectorErrorCode =
  | "unreachable"
  | "tls"
  | "auth"
  | "forbidden"
  | "not_found"
  | "rate_limited"
  | "server"
  | "refused"
  | "bad_response"
  | "timeout";

/**
 * A vendor call failed. `retryable` is true for failures another attempt may cure (network, timeouts,
 * 5xx, rate limits); false for bad credentials, refusals and responses we cannot trust.
 */
export class ConnectorError extends Error {
  override name = "ConnectorError";
  constructor(readonly code: ConnectorErrorCode, message: string, readonly retryable = false) {
    super(message);
  }
}

/** What a connector needs: where, who, and (for tests) the transport. */
export interface ConnectorOptions {
  /** Base URL of the vendor's REST API, e.g. `https://vbr01.example.com:9419`. */
  endpoint: string;
  username: string;
  /** From the vault; kept only in memory for the connector's life. */
  password: string;
  /** Cohesity: the login domain (LOCAL or an AD domain). */
  domain?: string;
  /** Veeam: the `x-api-version` header. */
  apiVersion?: string;
  /** An extra CA certificate (PEM) to trust for this endpoint; verification itself is never off. */
  caCertificate?: string | null;
  /** The transport; tests pass one for loopback fake servers. Defaults to `fetch`. */
  fetch?: FetchLike;
  /** How to wait before a retry; tests pass a recorder. Defaults to setTimeout. */
  sleep?: (ms: number) => Promise<void>;
  /** Items per page (vendor pagination). */
  pageSize?: number;
  /** Per-request timeout in ms (default 30 s). */
  timeoutMs?: number;
  /** Longest Retry-After honoured, in seconds (default 60); a longer one fails the call as rate limited. */
  maxRetryAfterSeconds?: number;
}

export type FetchLike = (
  input: string,
  init: RequestInit & { client?: Deno.HttpClient },
) => Promise<Response>;

/** Attempts per request for 429 and 5xx answers (the first try included). */
export const MAX_ATTEMPTS = 4;
/** Largest response body read from a vendor; a bigger one is refused rather than buffered. */
export const MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

/** One HTTP request as a connector describes it. */
export interface HttpRequest {
  method: "GET" | "POST";
  path: string;
  query?: Record<string, string | number | boolean | string[] | undefined>;
  headers?: Record<string, string>;
  /** JSON body. */
  json?: unknown;
  /** Form-encoded body (OAuth2 token requests). */
  form?: Record<string, string>;
  /**
   * May be sent again after a 5xx. GETs always may; a POST only when marked (logins): starting a job
   * twice because a proxy lost the first answer would run the vendor's job twice.
   */
  idempotent?: boolean;
}

/** What a response was, for messages: `Veeam GET /api/v1/jobs/states`. */
function describe(vendor: string, req: HttpRequest): string {
  return `${vendor} ${req.method} ${req.path}`;
}

/** The transport of a connector: fetch with the platform's CA (if any), waits, timeouts. */
export class HttpTransport {
  readonly #fetch: FetchLike;
  readonly #client: Deno.HttpClient | undefined;
  readonly #sleep: (ms: number) => Promise<void>;
  readonly #timeoutMs: number;
  readonly #maxRetryAfter: number;
  readonly #secrets = new SecretScrubber();

  constructor(readonly vendor: string, readonly base: string, options: ConnectorOptions) {
    this.#fetch = options.fetch ?? ((input, init) => fetch(input, init));
    this.#client = options.caCertificate
      ? Deno.createHttpClient({ caCerts: [options.caCertificate] })
      : undefined;
    this.#sleep = options.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms)));
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#maxRetryAfter = options.maxRetryAfterSeconds ?? 60;
    this.#secrets.add(options.password, { username: options.username });
  }

  close(): void {
    this.#client?.close();
  }

  /** Adds a secret the connector sends (an access token) to those `clean` removes. */
  addSecret(secret: string): void {
    this.#secrets.add(secret);
  }

  /**
   * Removes every form of the connector's secrets (the password and the tokens it sends, raw, URL- or
   * JSON-encoded, in base64; see domain/scrub.ts) from a vendor-provided text, collapses whitespace and bounds
   * its length. Scrubbed again after the collapse, so a secret with a run of spaces cannot reappear.
   */
  clean(text: string): string {
    const collapsed = this.#secrets.scrub(text).replace(/\s+/g, " ").trim();
    return this.#secrets.scrub(collapsed).slice(0, 300);
  }

  /**
   * Sends a request; retries 429 (after Retry-After) and, for idempotent requests, 5xx (after a short
   * backoff) up to MAX_ATTEMPTS times. Returns the response for any other status (a 5xx of a POST that
   * is not idempotent included: the caller cannot know whether the vendor acted on it). Throws
   * ConnectorError for network and TLS failures, timeouts, and when the retries run out.
   * Retry glossary: the **HTTP retry** (README › Architecture › "Retry: six meanings").
   */
  async send(req: HttpRequest, headers: Record<string, string>): Promise<Response> {
    const url = new URL(this.base.replace(/\/+$/, "") + req.path);
    for (const [k, v] of Object.entries(req.query ?? {})) {
      if (v === undefined) continue;
      for (const item of Array.isArray(v) ? v : [v]) url.searchParams.append(k, String(item));
    }
    const what = describe(this.vendor, req);
    for (let attempt = 1;; attempt++) {
      const init: RequestInit & { client?: Deno.HttpClient } = {
        method: req.method,
        headers: { accept: "application/json", ...headers, ...req.headers },
        signal: AbortSignal.timeout(this.#timeoutMs),
        redirect: "manual",
      };
      if (this.#client) init.client = this.#client;
      if (req.json !== undefined) {
        init.body = JSON.stringify(req.json);
        (init.headers as Record<string, string>)["content-type"] = "application/json";
      } else if (req.form) {
        init.body = new URLSearchParams(req.form).toString();
        (init.headers as Record<string, string>)["content-type"] = "application/x-www-form-urlencoded";
      }
      let res: Response;
      try {
        res = await this.#fetch(url.toString(), init);
      } catch (error) {
        throw this.#networkError(error, what);
      }
      if (res.status === 429) {
        const wait = retryAfterSeconds(res.headers.get("retry-after"));
        await res.body?.cancel();
        if (attempt >= MAX_ATTEMPTS || wait > this.#maxRetryAfter) {
          throw new ConnectorError(
            "rate_limited",
            `${what}: rate limited by the server (429)${
              wait > this.#maxRetryAfter ? `; it asked to wait ${wait} s` : ` after ${attempt} attempts`
            }`,
            true,
          );
        }
        await this.#sleep(wait * 1000);
        continue;
      }
      if (res.status >= 500 && (req.method === "GET" || req.idempotent)) {
        const text = this.clean(await vendorMessage(res));
        if (attempt >= MAX_ATTEMPTS) {
          throw new ConnectorError(
            "server",
            `${what}: server error ${res.status} after ${attempt} attempts${text ? ` (${text})` : ""}`,
            true,
          );
        }
        await this.#sleep(500 * 2 ** (attempt - 1));
        continue;
      }
      return res;
    }
  }

  #networkError(error: unknown, what: string): ConnectorError {
    // Deno's fetch says "fetch failed"; the reason (refused, certificate…) is in the cause chain.
    const parts: string[] = [];
    for (let e: unknown = error, depth = 0; e && depth < 4; e = (e as Error).cause, depth++) {
      parts.push(String((e as Error)?.message ?? e));
    }
    const text = parts.join(": ").replace(/^fetch failed: /, "");
    if ((error as Error)?.name === "TimeoutError") {
      return new ConnectorError("timeout", `${what}: no answer within ${this.#timeoutMs / 1000} s`, true);
    }
    if (/certificate|tls|ssl|handshake|UnknownIssuer|NotValidForName|CertExpired/i.test(text)) {
      return new ConnectorError(
        "tls",
        `${what}: TLS verification failed (${this.clean(text)}). Install a certificate signed by a trusted ` +
          "CA on the server, or add its CA certificate to this platform.",
      );
    }
    return new ConnectorError(
      "unreachable",
      `${what}: cannot reach ${this.base} (${this.clean(text)})`,
      true,
    );
  }

  /**
   * Reads a JSON body and checks its shape. Throws ConnectorError `bad_response` naming the first
   * mismatch, so a sync never writes data it could not read.
   */
  async parse<T>(res: Response, schema: z.ZodType<T>, req: HttpRequest): Promise<T> {
    const what = describe(this.vendor, req);
    const text = await readLimited(res, MAX_RESPONSE_BYTES);
    if (text === null) {
      throw new ConnectorError(
        "bad_response",
        `${what}: the response is larger than ${MAX_RESPONSE_BYTES} bytes`,
      );
    }
    let body: unknown;
    try {
      body = text === "" ? null : JSON.parse(text);
    } catch {
      throw new ConnectorError("bad_response", `${what}: the response is not JSON`);
    }
    const parsed = schema.safeParse(body);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue?.path.length ? issue.path.join(".") : "body";
      throw new ConnectorError(
        "bad_response",
        `${what}: unexpected response shape at ${where}: ${this.clean(issue?.message ?? "invalid")}`,
      );
    }
    return parsed.data;
  }

  /** An error for a non-2xx answer that is not retried (401 is handled by the caller first). */
  async failure(res: Response, req: HttpRequest, message?: string): Promise<ConnectorError> {
    const what = describe(this.vendor, req);
    const vendorText = this.clean(message ?? await vendorMessage(res));
    const suffix = vendorText ? `: ${vendorText}` : "";
    if (res.status === 401) return new ConnectorError("auth", `${what}: not authorized (401)${suffix}`);
    if (res.status === 403) return new ConnectorError("forbidden", `${what}: forbidden (403)${suffix}`);
    if (res.status === 404) return new ConnectorError("not_found", `${what}: not found (404)${suffix}`);
    if (res.status >= 300 && res.status < 400) {
      return new ConnectorError("bad_response", `${what}: unexpected redirect (${res.status})`);
    }
    if (res.status >= 500) {
      return new ConnectorError("server", `${what}: server error ${res.status}${suffix}`, true);
    }
    return new ConnectorError("refused", `${what}: refused (${res.status})${suffix}`);
  }
}

/** The body as text, or null when it is longer than `max` bytes (reading stops there). */
async function readLimited(res: Response, max: number): Promise<string | null> {
  if (!res.body) return "";
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.byteLength;
  }
  return new TextDecoder().decode(all);
}

/** The vendor's error message from a JSON error body (`message`, `errorMessage` or `error`), or the text. */
async function vendorMessage(res: Response): Promise<string> {
  const text = (await readLimited(res, 64 * 1024).catch(() => "")) ?? "";
  try {
    const body = JSON.parse(text);
    const m = body?.message ?? body?.errorMessage ?? body?.error_description ?? body?.error;
    if (typeof m === "string") return m;
  } catch {
    // not JSON: use the text
  }
  return text;
}

/** Seconds to wait from a Retry-After header (seconds or an HTTP date); 1 when absent or unreadable. */
export function retryAfterSeconds(value: string | null, now = Date.now()): number {
  if (!value) return 1;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const at = Date.parse(value);
  return Number.isFinite(at) ? Math.max(0, Math.ceil((at - now) / 1000)) : 1;
}

/**
 * A connector's logged-in session over its transport. `call` sends a request with the session's
 * Authorization header, logging in first when it has none and once more after a 401 (an expired token);
 * `get` also refuses a status other than 2xx and reads the body against a schema.
 */
export class TokenSession {
  #authorization: string | null = null;

  constructor(
    readonly http: HttpTransport,
    /** Logs in (`logIn`); returns the Authorization header's value. */
    readonly login: () => Promise<string>,
    /** Headers every request carries besides Authorization (an API version). */
    readonly headers: () => Record<string, string> = () => ({}),
  ) {}

  async call(req: HttpRequest): Promise<Response> {
    for (let attempt = 0;; attempt++) {
      const authorization = this.#authorization ?? (this.#authorization = await this.login());
      const res = await this.http.send(req, { ...this.headers(), authorization });
      if (res.status === 401 && attempt === 0) {
        await res.body?.cancel();
        this.#authorization = null;
        continue;
      }
      return res;
    }
  }

  async get<T>(req: HttpRequest, schema: z.ZodType<T>): Promise<T> {
    const res = await this.call(req);
    if (!res.ok) throw await this.http.failure(res, req);
    return await this.http.parse(res, schema, req);
  }
}

/**
 * Sends a login request and reads its token: a status of `rejected.statuses` is ConnectorError `auth` with
 * `rejected.message(status)` (the credentials are wrong), another failure the transport's error. The caller adds
 * the token it sends to the transport's secrets.
 */
export async function logIn<T>(
  http: HttpTransport,
  req: HttpRequest,
  headers: Record<string, string>,
  schema: z.ZodType<T>,
  rejected: { statuses: number[]; message: (status: number) => string },
): Promise<T> {
  const res = await http.send(req, headers);
  if (rejected.statuses.includes(res.status)) {
    await res.body?.cancel();
    throw new ConnectorError("auth", rejected.message(res.status));
  }
  if (!res.ok) throw await http.failure(res, req);
  return await http.parse(res, schema, req);
}

/**
 * What both vendor connectors are built on: their options, one HTTP transport to the vendor, a token
 * session that logs in (`login`) and logs in again once on a 401, and the page size of list calls.
 */
export abstract class SessionConnector {
  // ES-private, read through getters: the options hold the password, and nothing that prints or
  // serialises a connector may see them.
  readonly #http: HttpTransport;
  readonly #options: ConnectorOptions;
  readonly #pageSize: number;
  readonly #session: TokenSession;

  constructor(vendor: string, options: ConnectorOptions, defaultPageSize: number) {
    this.#options = options;
    this.#http = new HttpTransport(vendor, options.endpoint, options);
    this.#session = new TokenSession(this.#http, () => this.login(), () => this.sessionHeaders());
    this.#pageSize = options.pageSize ?? defaultPageSize;
  }

  protected get http(): HttpTransport {
    return this.#http;
  }

  protected get options(): ConnectorOptions {
    return this.#options;
  }

  protected get pageSize(): number {
    return this.#pageSize;
  }

  protected get session(): TokenSession {
    return this.#session;
  }

  close(): void {
    this.#http.close();
  }

  /** Logs in (`logIn`); returns the Authorization header's value. */
  protected abstract login(): Promise<string>;

  /** Headers every request carries besides Authorization: none unless the vendor wants an API version. */
  protected sessionHeaders(): Record<string, string> {
    return {};
  }
}
