/**
 * A minimal engine-protocol client: registers a BES (or enrolls an agent), signed by the key it
 * registers, and sends signed requests.
 * Used by the BES and agent programs, the simulator, the benchmark and the tests. `fetcher` defaults to `fetch`; tests pass
 * `app.request`.
 */
import { type BackoffOptions, isRetryableStatus, retryAfterMs, retryDelayMs } from "./retry.ts";
import { generateKeyPair, type PrivateKey, REGISTRATION_PRINCIPAL, signRequest } from "./signing.ts";

export type Fetcher = (input: string, init: RequestInit) => Response | Promise<Response>;

/** One retry of `postRetrying`: the send that failed (`status` null: a network failure) and the wait. */
export interface RetryInfo {
  retry: number;
  delayMs: number;
  status: number | null;
  /** The error code of the answer (`busy`…) or the network failure's message. */
  problem: string;
}

export interface PostRetryOptions extends BackoffOptions {
  /** Total time to keep sending, from the first send. */
  budgetMs: number;
  /** Whether an answer is worth another send (default: 5xx and 429); network failures always are. */
  retryable?: (status: number) => boolean;
  /** Called before each wait (log it with the job id; never the headers). */
  onRetry?: (info: RetryInfo) => void;
  sleep?: (ms: number) => Promise<void>;
  /** Milliseconds, for the budget (default `Date.now`). */
  now?: () => number;
}

export interface EngineIdentity {
  kind: "bes" | "agent";
  id: string;
  privateKey: PrivateKey;
  publicKey: string;
}

export class EngineClient {
  constructor(
    readonly baseUrl: string,
    readonly fetcher: Fetcher = (input, init) => fetch(input, init),
    readonly clock: () => Date = () => new Date(),
  ) {}

  /**
   * Registers a BES with `secret`, the request signed by the key it registers (proof of possession);
   * returns the identity (and the raw response for tests). Pass `keys` to register the same key again.
   */
  async registerBes(
    secret: string,
    details: { name: string; hostname: string; ipAddress: string; port?: number; version?: string },
    keys?: { privateKey: PrivateKey; publicKey: string },
  ): Promise<{ identity: EngineIdentity; response: Response; body: Record<string, unknown> }> {
    const pair = keys ?? generateKeyPair();
    const response = await this.sendRegistration("bes", secret, pair.privateKey, {
      name: details.name,
      deploymentModel: "on_premise",
      publicKey: pair.publicKey,
      hostname: details.hostname,
      ipAddress: details.ipAddress,
      port: details.port ?? 8443,
      version: details.version ?? "1.0.0",
    });
    const body = await response.json();
    return { identity: { kind: "bes", id: body.id, ...pair }, response, body };
  }

  /** Enrolls an agent with an org secret, signed by the key it enrolls. Pass `keys` to enroll again. */
  async enrollAgent(
    secret: string,
    details: {
      hostname: string;
      ipAddress: string;
      os?: string;
      relay?: boolean;
      version?: string;
      /** What the agent backs up when a policy names no include paths (sent only when given). */
      defaultRoots?: string[];
    },
    keys?: { privateKey: PrivateKey; publicKey: string },
  ): Promise<{ identity: EngineIdentity; response: Response; body: Record<string, unknown> }> {
    const pair = keys ?? generateKeyPair();
    const response = await this.sendRegistration("agent", secret, pair.privateKey, {
      hostname: details.hostname,
      os: details.os ?? "Ubuntu 24.04",
      ipAddress: details.ipAddress,
      publicKey: pair.publicKey,
      version: details.version ?? "1.0.0",
      relay: details.relay ?? false,
      ...(details.defaultRoots ? { defaultRoots: details.defaultRoots } : {}),
    });
    const body = await response.json();
    return { identity: { kind: "agent", id: body.id, ...pair }, response, body };
  }

  /**
   * POSTs a registration (`bes`) or enrollment (`agent`) body with the secret, signed by `signer`
   * (normally the private key of the body's publicKey; tests pass another to see it refused).
   */
  async sendRegistration(
    kind: "bes" | "agent",
    secret: string,
    signer: PrivateKey,
    payload: Record<string, unknown>,
  ): Promise<Response> {
    const path = kind === "bes" ? "/api/bes/v1/register" : "/api/agent/v1/enroll";
    const body = JSON.stringify(payload);
    const headers = signRequest(
      signer,
      REGISTRATION_PRINCIPAL[kind],
      "POST",
      path,
      new TextEncoder().encode(body),
      this.clock(),
    );
    return await this.fetcher(`${this.baseUrl}${path}`, {
      method: "POST",
      headers: { ...headers, authorization: `Bearer ${secret}`, "content-type": "application/json" },
      body,
    });
  }

  /** The signed headers for a request (exposed so tests can tamper with them). */
  async signedHeaders(
    identity: EngineIdentity,
    method: string,
    path: string,
    body: string,
    now = this.clock(),
  ) {
    return await signRequest(
      identity.privateKey,
      `${identity.kind}:${identity.id}`,
      method,
      path,
      new TextEncoder().encode(body),
      now,
    );
  }

  /** Sends a signed JSON POST. */
  async post(identity: EngineIdentity, path: string, payload: unknown): Promise<Response> {
    const body = JSON.stringify(payload);
    const headers = await this.signedHeaders(identity, "POST", path, body);
    return await this.fetcher(`${this.baseUrl}${path}`, {
      method: "POST",
      headers: { ...headers, "content-type": "application/json" },
      body,
    });
  }

  /**
   * A signed JSON POST sent again, newly signed each time (fresh timestamp and nonce), while it fails with
   * a network error or a retryable answer (5xx — 503 `busy` — and 429 by default), after a jittered
   * exponential backoff that honours `Retry-After`, for at most `budgetMs` in total (engine/protocol/retry.ts).
   * Returns the first answer that is not retryable, or the last one when the budget ran out; throws the
   * last network failure when the budget ran out on one.
   */
  async postRetrying(
    identity: EngineIdentity | (() => EngineIdentity),
    path: string,
    payload: unknown,
    options: PostRetryOptions,
  ): Promise<Response> {
    const now = options.now ?? Date.now;
    const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
    const retryable = options.retryable ?? ((status: number) => isRetryableStatus(status));
    const deadline = now() + options.budgetMs;
    for (let retry = 1;; retry++) {
      let res: Response | null = null;
      let failure: unknown = null;
      try {
        res = await this.post(typeof identity === "function" ? identity() : identity, path, payload);
      } catch (e) {
        failure = e;
      }
      if (res && !retryable(res.status)) return res;
      const delayMs = retryDelayMs(retry, res ? retryAfterMs(res.headers.get("retry-after")) : null, options);
      if (now() + delayMs > deadline) {
        if (res) return res;
        throw failure;
      }
      let problem = failure instanceof Error ? failure.message : String(failure);
      if (res) {
        const text = await res.text().catch(() => "");
        try {
          problem = String(JSON.parse(text)?.error?.code ?? text.slice(0, 100));
        } catch {
          problem = text.slice(0, 100); // not JSON: a proxy's page
        }
      }
      options.onRetry?.({ retry, delayMs, status: res?.status ?? null, problem });
      await sleep(delayMs);
    }
  }

  /** A BES heartbeat. */
  async heartbeat(
    identity: EngineIdentity,
    metrics: {
      cpuPercent: number;
      memoryPercent: number;
      diskPercent: number;
      activeJobs: number;
      uptimeSeconds: number;
    },
    storage?: Array<{ targetId: string; totalBytes: number; usedBytes: number; freeBytes: number }>,
    version = "1.0.0",
  ): Promise<Response> {
    return await this.post(identity, `/api/${identity.kind}/v1/heartbeat`, {
      version,
      metrics,
      storage,
    });
  }
}
