/** The Hono environment shared by every route: dependencies, the actor, the session. */
import type { Session } from "../domain/auth.ts";
import type { Config } from "../domain/config.ts";
import type { Engine } from "../domain/engines.ts";
import type { Host } from "../domain/hosts.ts";
import type { Logger } from "../domain/log.ts";
import type { AppMetrics } from "./metrics.ts";
import type { Actor } from "../domain/rbac.ts";
import type { User } from "../domain/types.ts";

/** What the app needs from outside; tests pass an in-memory KV and a fixed clock. */
export interface Deps {
  kv: Deno.Kv;
  config: Config;
  /** The vault's master key (from CADRES_MASTER_KEY or the key file). */
  masterKey: Uint8Array;
  clock: () => Date;
  logger: Logger;
  /** This instance's Prometheus registry (routes/metrics.ts). */
  metrics: AppMetrics;
}

export interface AppEnv {
  Bindings: { remoteAddr?: { hostname?: string } };
  Variables: {
    deps: Deps;
    requestId: string;
    actor: Actor | null;
    user: User | null;
    session: Session | null;
    /** The CSRF token to embed in forms (the session's, or the pre-session cookie's). */
    csrfToken: string;
    /** On engine-protocol routes: the verified principal and the nonce to claim with the write. */
    principal?: { kind: "bes" | "agent"; id: string; nonceKey: Deno.KvKey };
    /** On BES routes: the engine entry read while verifying the signature (reused by the write). */
    engineEntry?: Deno.KvEntryMaybe<Engine>;
    /** On agent routes: the host entry read while verifying the signature (reused by the heartbeat). */
    hostEntry?: Deno.KvEntryMaybe<Host>;
    /** On registration routes: the tenant the bearer secret resolved to. */
    tenant?: { accountId: string; orgId: string | null };
    /** On registration routes: the key the request's signature proved possession of, and its nonce. */
    registration?: { publicKey: string; nonce: { key: Deno.KvKey; expireIn: number } };
  };
}
