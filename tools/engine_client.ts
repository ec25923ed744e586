/**
 * A minimal engine-protocol client: registers a BES (or enrolls an agent) and sends signed requests.
 * Used by the simulator, the benchmark and the tests. `fetcher` defaults to `fetch`; tests pass
 * `app.request`.
 */
import { generateKeyPair, type PrivateKey, signRequest } from "../domain/signing.ts";

export type Fetcher = (input: string, init: RequestInit) => Response | Promise<Response>;

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

  /** Registers a BES with `secret`; returns the identity (and the raw response for tests). */
  async registerBes(
    secret: string,
    details: { name: string; hostname: string; ipAddress: string; port?: number; version?: string },
    keys?: { privateKey: PrivateKey; publicKey: string },
  ): Promise<{ identity: EngineIdentity; response: Response; body: Record<string, unknown> }> {
    const pair = keys ?? generateKeyPair();
    const response = await this.fetcher(`${this.baseUrl}/api/bes/v1/register`, {
      method: "POST",
      headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
      body: JSON.stringify({
        name: details.name,
        deploymentModel: "on_premise",
        publicKey: pair.publicKey,
        hostname: details.hostname,
        ipAddress: details.ipAddress,
        port: details.port ?? 8443,
        version: details.version ?? "1.0.0",
      }),
    });
    const body = await response.json();
    return { identity: { kind: "bes", id: body.id, ...pair }, response, body };
  }

  /** Enrolls an agent with an org secret. */
  async enrollAgent(
    secret: string,
    details: { hostname: string; ipAddress: string; os?: string; relay?: boolean },
  ): Promise<{ identity: EngineIdentity; response: Response; body: Record<string, unknown> }> {
    const pair = generateKeyPair();
    const response = await this.fetcher(`${this.baseUrl}/api/agent/v1/enroll`, {
      method: "POST",
      headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
      body: JSON.stringify({
        hostname: details.hostname,
        os: details.os ?? "Ubuntu 24.04",
        ipAddress: details.ipAddress,
        publicKey: pair.publicKey,
        version: "1.0.0",
        relay: details.relay ?? false,
      }),
    });
    const body = await response.json();
    return { identity: { kind: "agent", id: body.id, ...pair }, response, body };
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
