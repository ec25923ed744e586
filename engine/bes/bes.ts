/**
 * The BES service: identity and registration, heartbeats with measured metrics and target capacity, the
 * job loop, and the listener that serves the data API to agents.
 *
 * The data API (ENGINE.md §5) plugs in through `BesSeams`: `dataApi` builds the request handler from the
 * running BES (its identity, the control plane's token public key from the registration reply, its
 * targets), `tls` gives the listener its certificate, and `registrationExtras` adds fields to the
 * registration (the certificate PEM). Without a `tls` seam the listener serves plain HTTP, which the
 * command line allows only on loopback (`--insecure-http`); without one and without that flag nothing
 * listens.
 */
import { EngineClient, type EngineIdentity, type Fetcher } from "../protocol/client.ts";
import { BES_VERSION, type BesConfig, DEFAULT_PORT } from "./config.ts";
import { CapacityMonitor } from "./capacity.ts";
import {
  ensureDataDir,
  loadOrCreateKey,
  register,
  type RegistrationDetails,
  RegistrationError,
  type StoredIdentity,
} from "./identity.ts";
import { type JobHandler, JobRunner } from "./jobs.ts";
import { KEYED_KINDS, pruneHandler, unsupportedHandler } from "./keyless_jobs.ts";
import { browseHandler, sampledVerifyHandler, searchHandler } from "./keyed_jobs.ts";
import { controlPlaneKeys } from "./job_keys.ts";
import { createLogger, type Logger, messageOf } from "./log.ts";
import { SystemMetrics } from "./metrics.ts";
import type { OpenOptions } from "./storage.ts";
import { TargetRegistry } from "./targets.ts";

/** What a data API handler can use of the running BES. */
export interface BesRuntime {
  readonly config: BesConfig;
  readonly identity: EngineIdentity;
  /** The last registration reply (`tokenPublicKey` once the control plane sends it). */
  readonly registration: Record<string, unknown>;
  readonly targets: TargetRegistry;
  readonly open: OpenOptions;
  readonly log: Logger;
}

/** Where later parts of the BES plug in. */
export interface BesSeams {
  /** The data API's request handler (paths other than `/healthz`). */
  dataApi?: (bes: BesRuntime) => (req: Request) => Response | Promise<Response>;
  /** The listener's certificate and key (PEM); called once before listening (and registering). */
  tls?: (bes: { config: BesConfig; log: Logger }) => Promise<{ cert: string; key: string }>;
  /** Extra registration fields (e.g. the certificate the data API serves). */
  registrationExtras?: () => Record<string, unknown> | Promise<Record<string, unknown>>;
  /** More job handlers by kind (a keyed browse, search…); they replace the built-in ones. */
  handlers?: Record<string, JobHandler>;
  /** The HTTP client to the control plane (tests). */
  fetcher?: Fetcher;
  logger?: Logger;
}

/** A running BES. */
export interface RunningBes extends BesRuntime {
  readonly jobs: JobRunner;
  /** The address the data API listens on, when it does. */
  readonly listening: Deno.NetAddr | null;
  /** One heartbeat now; resolves to the reply body (null if it failed). */
  heartbeat(): Promise<Record<string, unknown> | null>;
  stop(): Promise<void>;
}

/** The IP address to register: the listen address, or the first non-loopback IPv4 for a wildcard. */
export function registeredAddress(hostname: string): string {
  if (hostname !== "0.0.0.0" && hostname !== "::" && /^[0-9a-fA-F.:]+$/.test(hostname)) return hostname;
  try {
    const nic = Deno.networkInterfaces().find((n) => n.family === "IPv4" && !n.address.startsWith("127."));
    if (nic) return nic.address;
  } catch {
    // no permission or no interface: loopback
  }
  return "127.0.0.1";
}

/** Registers, retrying what may pass later (network, 429, 5xx) with backoff; a refusal throws. */
async function registerWithRetry(
  client: EngineClient,
  config: BesConfig,
  keys: Awaited<ReturnType<typeof loadOrCreateKey>>,
  details: RegistrationDetails,
  log: Logger,
  stopped: () => boolean,
) {
  for (let attempt = 0;; attempt++) {
    try {
      return await register(client, config.dataDir, config.secret, keys, details);
    } catch (e) {
      if (e instanceof RegistrationError && !e.retryable) throw e;
      if (stopped()) throw e;
      const delay = Math.min(60_000, 1000 * 2 ** Math.min(attempt, 6));
      log.log("warn", "registration failed; retrying", { error: messageOf(e), retryInMs: delay });
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** Starts a BES with `config`. Throws (nothing keeps running) when registration is refused. */
export async function startBes(config: BesConfig, seams: BesSeams = {}): Promise<RunningBes> {
  const log = seams.logger ?? createLogger(config.logLevel);
  const startedAt = Date.now();
  let stopped = false;
  await ensureDataDir(config.dataDir);
  const keys = await loadOrCreateKey(config.dataDir);
  if (keys.created) log.log("info", "created the BES key", { file: `${config.dataDir}/bes.key` });
  const client = new EngineClient(config.controlPlane, seams.fetcher);
  const open: OpenOptions = { mounts: config.mounts };
  const details: RegistrationDetails = {
    name: config.name,
    hostname: Deno.hostname(),
    ipAddress: registeredAddress(config.listen.hostname),
    port: config.listen.port || DEFAULT_PORT,
    version: BES_VERSION,
    extra: seams.registrationExtras ? await seams.registrationExtras() : undefined,
  };
  // The listener first (its port is registered): the data API, once plugged in, and /healthz.
  let identity: EngineIdentity | null = null;
  let api: ((req: Request) => Response | Promise<Response>) | null = null;
  let server: Deno.HttpServer<Deno.NetAddr> | null = null;
  const handler = async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    if (req.method === "GET" && url.pathname === "/healthz") {
      return Response.json({
        id: identity?.id ?? null,
        name: config.name,
        version: BES_VERSION,
        status: "ok",
      });
    }
    if (api) return await api(req);
    return Response.json(
      { error: { code: "not_found", message: "This BES serves no data API yet" } },
      { status: 404 },
    );
  };
  if (seams.tls || config.insecureHttp) {
    const tls = seams.tls ? await seams.tls({ config, log }) : null;
    server = Deno.serve({
      hostname: config.listen.hostname,
      port: config.listen.port,
      onListen: () => {},
      ...(tls ? { cert: tls.cert, key: tls.key } : {}),
    }, handler);
  } else {
    log.log("warn", "the data API is not served: this build has no TLS certificate support yet", {
      hint: "--insecure-http serves plain HTTP on a loopback address",
    });
  }
  details.port = server?.addr.port ?? (config.listen.port || DEFAULT_PORT);

  let registered;
  try {
    registered = await registerWithRetry(client, config, keys, details, log, () => stopped);
  } catch (e) {
    await server?.shutdown();
    throw e;
  }
  identity = registered.identity;
  const stored: StoredIdentity = registered.stored;
  if (registered.previousId) {
    log.log("warn", "the control plane gave this key a new id (the old engine was deleted)", {
      previousId: registered.previousId,
      id: identity.id,
    });
  }
  log.log("info", registered.created ? "registered" : "registered again (same key, same id)", {
    id: identity.id,
    name: config.name,
    controlPlane: config.controlPlane,
  });

  const targets = new TargetRegistry(client, () => identity!, log);
  const capacity = new CapacityMonitor(log, open);
  const metrics = new SystemMetrics(config.dataDir, startedAt);
  const keyless = { targets, open };
  // Jobs that read data get their namespace's keys just in time from the control plane.
  const keyed = { ...keyless, keys: controlPlaneKeys(client, () => identity!) };
  const handlers: Record<string, JobHandler> = {
    ...Object.fromEntries(KEYED_KINDS.map((k) => [k, unsupportedHandler])),
    prune: pruneHandler(keyless),
    verify: sampledVerifyHandler(keyed),
    browse: browseHandler(keyed),
    search: searchHandler(keyed),
    ...seams.handlers,
  };
  const jobs = new JobRunner({
    client,
    identity: () => identity!,
    handlers,
    fallback: unsupportedHandler,
    log,
    maxJobs: config.maxJobs,
    pollMs: config.pollSeconds * 1000,
    progressMs: config.progressSeconds * 1000,
  });

  const runtime: BesRuntime = {
    config,
    get identity() {
      return identity!;
    },
    get registration() {
      return stored.registration;
    },
    targets,
    open,
    log,
  };

  try {
    await targets.refresh();
  } catch (e) {
    log.log("warn", "could not fetch the storage targets", { error: messageOf(e) });
  }

  let forgotten = false;
  const heartbeat = async (): Promise<Record<string, unknown> | null> => {
    try {
      const storage = await capacity.reports(targets.all());
      const res = await client.heartbeat(
        identity,
        await metrics.sample(jobs.activeJobs),
        storage,
        BES_VERSION,
      );
      const text = await res.text();
      if (res.status !== 200) {
        if (res.status === 401 && /Unknown or deleted principal/.test(text)) {
          // Deleted by an operator: never resurrected behind their back. A restart registers the key again.
          if (!forgotten) {
            log.log(
              "error",
              "the control plane no longer knows this BES (deleted?); restart it to register again",
              {
                id: identity.id,
              },
            );
          }
          forgotten = true;
        } else log.log("warn", "heartbeat refused", { status: res.status, body: text.slice(0, 300) });
        return null;
      }
      forgotten = false;
      const reply = JSON.parse(text) as Record<string, unknown>;
      await targets.heartbeatSaw(reply.storageTargetIds as string[] | undefined);
      if (typeof reply.pendingJobs === "number" && reply.pendingJobs > 0) jobs.poke();
      return reply;
    } catch (e) {
      log.log("warn", "heartbeat failed", { error: messageOf(e) });
      return null;
    }
  };

  // Heartbeats: the first at once (the BES goes online), then at the interval the control plane says.
  const intervalSeconds = config.heartbeatSeconds ??
    (typeof stored.registration.heartbeatIntervalSeconds === "number"
      ? stored.registration.heartbeatIntervalSeconds
      : 60);
  await heartbeat();
  let beating: Promise<unknown> = Promise.resolve();
  const timer = setInterval(() => {
    beating = beating.then(heartbeat);
  }, intervalSeconds * 1000);
  jobs.start();
  api = seams.dataApi?.(runtime) ?? null;
  if (server) {
    log.log("info", "listening", {
      address: `${config.listen.hostname}:${server.addr.port}`,
      tls: Boolean(seams.tls),
      dataApi: Boolean(api),
    });
  }

  return {
    ...runtime,
    get identity() {
      return identity!;
    },
    get registration() {
      return stored.registration;
    },
    jobs,
    listening: server?.addr ?? null,
    heartbeat,
    async stop() {
      stopped = true;
      clearInterval(timer);
      await jobs.stop();
      await beating;
      await server?.shutdown();
      log.log("info", "stopped", { id: identity.id });
    },
  };
}
