/**
 * The agent's side of the engine protocol (docs/engine-protocol.md): signed enrollment, heartbeats, job
 * claims, progress (whose replies renew the data token), keys, path-list chunks and results — over
 * engine/protocol/client.ts. Refusals become `ControlPlaneError` with the status and code of the answer;
 * network failures become one with status null.
 */
import { EngineClient, type EngineIdentity, type Fetcher } from "../protocol/client.ts";
import {
  type BackoffOptions,
  isRetryableStatus,
  KEY_RETRY_BUDGET_MS,
  retryAfterMs,
  retryDelayMs,
} from "../protocol/retry.ts";
import type { PrivateKey } from "../protocol/signing.ts";
import { ControlPlaneError } from "./failure.ts";

/** A job as a claim hands it out. */
export interface ClaimedJob {
  id: string;
  kind: string;
  priority: string;
  payload: Record<string, unknown>;
  leaseExpiresAt: string;
  dataToken: string | null;
  dataTokenExpiresAt: string | null;
}

/** A progress reply. */
export interface ProgressReply {
  leaseExpiresAt: string;
  cancel: boolean;
  dataToken: string | null;
  dataTokenExpiresAt: string | null;
}

/** The key endpoint's reply, keys decoded. Keep it in memory for the job only. */
export interface JobKeys {
  namespace: string;
  repository: { target: string; path: string; generation: number };
  dataKey: Uint8Array;
  idKey: Uint8Array;
  /** The account's recovery public key (SPKI PEM), null when the account has none. */
  recoveryPublicKey: string | null;
}

/** A job result as the protocol takes it. */
export interface JobResultBody {
  status: "success" | "warning" | "failed";
  startedAt: string;
  endedAt: string;
  bytesTransferred: number;
  protectedBytes: number;
  error: { reason: string; message: string } | null;
  retryable: boolean;
  output: Record<string, unknown> | null;
  hookOutput?: Array<{ hookId: string; type: string; exitCode: number; output: string }>;
  /** What the engine measured, kept with the run (docs/engine-protocol.md, "Results"). */
  stats?: Record<string, number>;
  /** The first per-file errors; `totals.errors` says how many there were when fewer are sent. */
  errors?: Array<{ path: string; message: string }>;
  /** Parts of the error list uploaded before the result (`POST …/jobs/{id}/parts`, list "errors"). */
  parts?: { errors: number };
  totals?: { errors: number };
}

/** What enrollment reports about the host. */
export interface EnrollmentDetails {
  hostname: string;
  ipAddress: string;
  os: string;
  version: string;
  relay: boolean;
  defaultRoots: string[];
}

/** The backoff of a re-sent result or part, its sleep and its clock (milliseconds; tests pass fakes). */
export type RetryTiming = BackoffOptions & { sleep?: (ms: number) => Promise<void>; now?: () => number };

/** The control plane as one agent sees it. */
export class ControlPlane {
  readonly client: EngineClient;
  #identity: EngineIdentity | null = null;
  readonly #httpClient: Deno.HttpClient | undefined;

  readonly #log: (level: "warn", message: string) => void;
  readonly #retry: RetryTiming;

  /**
   * `log` hears each retry of a result or part (with the job id); `retry` shortens the backoff in tests.
   */
  constructor(
    readonly baseUrl: string,
    options: {
      caCert?: string;
      fetcher?: Fetcher;
      log?: (level: "warn", message: string) => void;
      retry?: RetryTiming;
    } = {},
  ) {
    this.#log = options.log ?? (() => {});
    this.#retry = options.retry ?? {};
    this.#httpClient = options.caCert ? Deno.createHttpClient({ caCerts: [options.caCert] }) : undefined;
    const client = this.#httpClient;
    const fetcher: Fetcher = options.fetcher ??
      ((input, init) => fetch(input, { ...init, client, signal: AbortSignal.timeout(60_000) }));
    this.client = new EngineClient(baseUrl.replace(/\/+$/, ""), fetcher);
  }

  get identity(): EngineIdentity {
    if (!this.#identity) throw new Error("The agent has not enrolled yet");
    return this.#identity;
  }

  /** Signs as an agent enrolled before (its id and key from the data folder), without enrolling. */
  useIdentity(identity: { id: string; privateKey: PrivateKey; publicKey: string }): void {
    this.#identity = { kind: "agent", ...identity };
  }

  /** Enrolls (or enrolls again: same key, same id) with `secret`, signed by the key it enrolls. */
  async enroll(
    secret: string,
    details: EnrollmentDetails,
    keys: { privateKey: PrivateKey; publicKey: string },
  ): Promise<{ id: string; heartbeatIntervalSeconds: number; created: boolean }> {
    let result;
    try {
      result = await this.client.enrollAgent(secret, details, keys);
    } catch (e) {
      throw new ControlPlaneError(
        null,
        null,
        `Cannot reach the control plane at ${this.baseUrl}: ${message(e)}`,
      );
    }
    const { response, body, identity } = result;
    if (response.status !== 200 && response.status !== 201) {
      const error = (body as { error?: { code?: string; message?: string; fields?: unknown } }).error;
      throw new ControlPlaneError(
        response.status,
        error?.code ?? null,
        `The control plane refused the enrollment: ${response.status} ${error?.code ?? ""} ${
          error?.message ?? ""
        }${error?.fields ? ` ${JSON.stringify(error.fields)}` : ""}`.trim(),
      );
    }
    this.#identity = identity;
    return {
      id: identity.id,
      heartbeatIntervalSeconds: Number(body.heartbeatIntervalSeconds) || 60,
      created: response.status === 201,
    };
  }

  /** A signed POST; the parsed reply, or `ControlPlaneError`. */
  async #post<T>(path: string, payload: unknown, what: string): Promise<T> {
    let res: Response;
    try {
      res = await this.client.post(this.identity, path, payload);
    } catch (e) {
      throw new ControlPlaneError(
        null,
        null,
        `Cannot ${what}: the control plane at ${this.baseUrl} is unreachable (${message(e)})`,
      );
    }
    const text = await res.text();
    let body: unknown = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch {
      // not JSON: a proxy's page
    }
    if (!res.ok) {
      const error = (body as { error?: { code?: string; message?: string } } | null)?.error;
      throw new ControlPlaneError(
        res.status,
        error?.code ?? null,
        `Cannot ${what}: ${res.status}${error?.code ? ` ${error.code}` : ""}: ${
          error?.message ?? text.slice(0, 200)
        }`,
        retryAfterMs(res.headers.get("retry-after")),
      );
    }
    return body as T;
  }

  heartbeat(
    metrics: Record<string, number>,
    version: string,
  ): Promise<{ status: string; pendingJobs: number }> {
    return this.#post("/api/agent/v1/heartbeat", { version, metrics }, "send a heartbeat");
  }

  async claim(max: number): Promise<ClaimedJob[]> {
    const reply = await this.#post<{ jobs: ClaimedJob[] }>("/api/agent/v1/jobs/claim", { max }, "claim jobs");
    return reply.jobs ?? [];
  }

  progress(
    jobId: string,
    body: { percent: number; bytesTransferred: number; message: string },
  ): Promise<ProgressReply> {
    return this.#post(`/api/agent/v1/jobs/${jobId}/progress`, body, `report progress of job ${jobId}`);
  }

  /**
   * The keys of the job's namespace (never logged, never written to disk). A 503 `busy` (the delivery's
   * commit lost its races), another 5xx, a 429 or a network failure is asked again, newly signed, with the
   * results' backoff for up to `patienceMs` (each retry logged with the job id) before the job fails.
   */
  async keys(jobId: string, patienceMs = KEY_RETRY_BUDGET_MS): Promise<JobKeys> {
    const reply = await this.#postPatiently<{
      namespace: string;
      repository: JobKeys["repository"];
      dataKey: string;
      idKey: string;
      recoveryPublicKey?: string | null;
    }>(`/api/agent/v1/jobs/${jobId}/key`, {}, `fetch the keys of job ${jobId}`, patienceMs);
    return {
      namespace: reply.namespace,
      repository: reply.repository,
      dataKey: Uint8Array.fromBase64(reply.dataKey),
      idKey: Uint8Array.fromBase64(reply.idKey),
      recoveryPublicKey: reply.recoveryPublicKey ?? null,
    };
  }

  /** Chunk `chunk` of a file restore's path list. */
  paths(jobId: string, chunk: number): Promise<{ chunk: number; chunks: number; paths: string[] }> {
    return this.#post(
      `/api/agent/v1/jobs/${jobId}/paths`,
      { chunk },
      `fetch chunk ${chunk} of job ${jobId}'s paths`,
    );
  }

  /**
   * `#post`, sent again (newly signed: fresh timestamp and nonce) on network failures, 5xx — 503 `busy`: a
   * commit on the control plane lost its races — and 429, for up to `patienceMs` (the control plane may be
   * restarting), after a jittered exponential backoff that honours Retry-After; each retry logged.
   */
  async #postPatiently<T>(path: string, payload: unknown, what: string, patienceMs: number): Promise<T> {
    const now = this.#retry.now ?? Date.now;
    const deadline = now() + patienceMs;
    const sleep = this.#retry.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    for (let retry = 1;; retry++) {
      try {
        return await this.#post<T>(path, payload, what);
      } catch (e) {
        if (!(e instanceof ControlPlaneError) || !isRetryableStatus(e.status)) throw e;
        const delay = retryDelayMs(retry, e.retryAfterMs, this.#retry);
        if (now() + delay > deadline) throw e;
        this.#log("warn", `${e.message}; retry ${retry} in ${delay} ms`);
        await sleep(delay);
      }
    }
  }

  /**
   * Posts a job's result, retrying network failures, 5xx (503 `busy`) and 429 for up to `patienceMs` (the
   * control plane may be restarting; the lease is 5 minutes). Returns whether it was applied (false: the same
   * result was already recorded — an earlier send arrived though its answer was lost).
   */
  async result(jobId: string, body: JobResultBody, patienceMs = 240_000): Promise<boolean> {
    const reply = await this.#postPatiently<{ applied: boolean }>(
      `/api/agent/v1/jobs/${jobId}/result`,
      body,
      `post the result of job ${jobId}`,
      patienceMs,
    );
    return reply.applied;
  }

  /**
   * Uploads part `part` of a long list of the job's result (docs/engine-protocol.md, "Long lists in
   * parts"), before the result; retried like a result. Sending a part again replaces it.
   */
  async part(
    jobId: string,
    list: "errors",
    part: number,
    items: unknown[],
    patienceMs = 120_000,
  ): Promise<{ items: number }> {
    return await this.#postPatiently(
      `/api/agent/v1/jobs/${jobId}/parts`,
      { list, part, items },
      `upload part ${part} of the ${list} of job ${jobId}`,
      patienceMs,
    );
  }

  /** Asks for a pre-patch backup of every policy of this host that opts in. */
  prePatch(
    reason?: string,
  ): Promise<{ runs: Array<{ id: string; policyId: string; jobId: string | null }> }> {
    return this.#post("/api/agent/v1/pre-patch", reason ? { reason } : {}, "ask for a pre-patch backup");
  }

  close(): void {
    this.#httpClient?.close();
  }
}

function message(e: unknown): string {
  const err = e as Error & { cause?: { message?: string } };
  return err?.cause?.message ? `${err.message} (${err.cause.message})` : String(err?.message ?? e);
}
