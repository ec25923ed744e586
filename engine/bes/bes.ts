/**
 * The BES service: identity and registration, heartbeats with measured metrics and target capacity, the
 * job loop, and the listener that serves the data API to agents (ENGINE.md §5).
 *
 * The listener serves HTTPS with the BES's own certificate (tls.ts, kept in the data folder, created on
 * first start, checked daily and renewed before it expires — the listener then serves the new one and the
 * next heartbeat reports it), or plain HTTP with `--insecure-http` (loopback only). The BES registers its
 * data URL and certificate; the data API (data_api.ts) verifies tokens with the registration reply's
 * `tokenPublicKey`, resolves their repositories to this BES's targets (data_service.ts), and holds writer
 * locks for write tokens, swept every minute so a silent job's lock is released.
 *
 * `BesSeams` lets tests replace parts: `dataApi` (the request handler), `tls` (a fixed certificate),
 * `registrationExtras` (more registration fields), handlers, the control plane's HTTP client, the logger,
 * and the certificate's names and check interval.
 */
import { EngineClient, type EngineIdentity, type Fetcher } from "../protocol/client.ts";
import { createDataApi, type DataApi } from "./data_api.ts";
import { CertificateKeeper, targetRepositoryResolver, tokenKeyOf } from "./data_service.ts";
import { type CertificateNames, defaultCertificateNames } from "./tls.ts";
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
import { fileHistoryHandler } from "./file_history.ts";
import { browseHandler, sampledVerifyHandler, searchHandler } from "./keyed_jobs.ts";
import { replicateHandler, syntheticFullHandler } from "./data_jobs.ts";
import { BmrService } from "./bmr.ts";
import { CERT_FILE } from "./tls.ts";
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
  /** The names the certificate must carry (default: this machine's and the data URL's), and how often
   * it is checked for renewal (default daily). */
  certificateNames?: () => CertificateNames;
  certificateCheckMs?: number;
  /** How often stale writer locks are swept (default a minute). */
  lockSweepMs?: number;
}

/** A running BES. */
export interface RunningBes extends BesRuntime {
  readonly jobs: JobRunner;
  /** The address the data API listens on. */
  readonly listening: Deno.NetAddr | null;
  /** The data URL registered. */
  readonly dataUrl: string;
  /** The certificate served now (PEM); null over plain HTTP. */
  readonly certificate: string | null;
  /** The data API (null when a seam replaced it). */
  readonly dataService: DataApi | null;
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

/** `host` as the host part of a URL (IPv6 addresses in brackets). */
function urlHost(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

/** The names the certificate must carry: this machine's, the listen address, the data URL's host. */
function certificateNames(config: BesConfig): CertificateNames {
  const names = defaultCertificateNames();
  const extra = [config.listen.hostname];
  if (config.dataUrl) extra.push(new URL(config.dataUrl).hostname.replace(/^\[|\]$/g, ""));
  for (const host of extra) {
    if (host === "0.0.0.0" || host === "::" || host === "") continue;
    if (/^[0-9.]+$/.test(host) || host.includes(":")) {
      if (!names.ipAddresses.includes(host)) names.ipAddresses.push(host);
    } else if (!names.dnsNames.includes(host.toLowerCase())) names.dnsNames.push(host.toLowerCase());
  }
  return names;
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
  };
  // The listener first (its port is registered): the data API once registered, and /healthz.
  let identity: EngineIdentity | null = null;
  let api: ((req: Request) => Response | Promise<Response>) | null = null;
  let server: Deno.HttpServer<Deno.NetAddr> | null = null;
  let bmr: BmrService | null = null;
  const handler = async (req: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>): Promise<Response> => {
    const url = new URL(req.url);
    // The recovery agent's endpoints (their own credentials: the one-time token, then its session).
    const recovery = await bmr?.fetch(req, info.remoteAddr.hostname);
    if (recovery) return recovery;
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
      { error: { code: "not_ready", message: "This BES is not registered yet" } },
      { status: 503 },
    );
  };
  // HTTPS with the certificate of the data folder (or the seam's); plain HTTP only when asked, on loopback.
  const keeper = config.insecureHttp || seams.tls ? null : new CertificateKeeper(
    config.dataDir,
    log,
    seams.certificateNames ?? (() => certificateNames(config)),
  );
  let tls: { cert: string; key: string } | null = null;
  if (seams.tls) tls = await seams.tls({ config, log });
  else if (keeper) {
    const cert = await keeper.start();
    tls = { cert: cert.certPem, key: cert.keyPem };
  }
  const listen = (port: number) =>
    Deno.serve({
      hostname: config.listen.hostname,
      port,
      onListen: () => {},
      ...(tls ? { cert: tls.cert, key: tls.key } : {}),
    }, handler);
  server = listen(config.listen.port);
  const port = server.addr.port;
  details.port = port;
  const dataUrl = config.dataUrl ??
    `${tls ? "https" : "http"}://${
      urlHost(config.insecureHttp ? config.listen.hostname : details.ipAddress)
    }:${port}`;
  details.extra = {
    dataUrl,
    ...(tls ? { certificate: tls.cert } : {}),
    ...(seams.registrationExtras ? await seams.registrationExtras() : {}),
  };

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
  const keyless = { targets, open, gcGraceMs: config.gcGraceMs };
  // Jobs that read data get their namespace's keys just in time from the control plane.
  // A 503 `busy` (or a network failure) is asked again with the results' backoff, each retry logged.
  const keyed = {
    ...keyless,
    keys: controlPlaneKeys(client, () => identity!, {
      onRetry: (jobId, { retry, delayMs, status, problem }) =>
        log.log("warn", "job keys not delivered; retrying", {
          jobId,
          retry,
          delayMs,
          status,
          problem: problem.slice(0, 200),
        }),
    }),
  };
  bmr = new BmrService({
    client,
    identity: () => identity!,
    keys: keyed.keys,
    services: keyless,
    dataUrl: () => dataUrl,
    certFile: keeper ? `${config.dataDir}/${CERT_FILE}` : null,
    log,
  });
  const handlers: Record<string, JobHandler> = {
    ...Object.fromEntries(KEYED_KINDS.map((k) => [k, unsupportedHandler])),
    prune: pruneHandler(keyless),
    verify: sampledVerifyHandler(keyed),
    browse: browseHandler(keyed),
    search: searchHandler(keyed),
    file_history: fileHistoryHandler(keyed),
    replicate: replicateHandler(keyed),
    synthetic_full: syntheticFullHandler(keyed),
    bmr: bmr.handler(),
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

  // The data API: tokens checked with the control plane's key, repositories resolved to these targets.
  const dataService = seams.dataApi ? null : createDataApi({
    besId: identity.id,
    tokenPublicKey: tokenKeyOf(() => stored.registration),
    resolveRepository: targetRepositoryResolver(targets, open),
    log: (message) => log.log("error", message),
  });
  if (!seams.dataApi && typeof stored.registration.tokenPublicKey !== "string") {
    log.log("warn", "the control plane sent no token key: the data API refuses every token (503)", {});
  }
  // A job that goes silent leaves its writer lock to go stale; the sweep deletes it.
  const sweeper = dataService
    ? setInterval(() => {
      dataService.locks.sweep().then(
        (n) => n > 0 && log.log("info", "released the writer locks of silent jobs", { count: n }),
        (e) => log.log("warn", "sweeping writer locks failed", { error: messageOf(e) }),
      );
    }, seams.lockSweepMs ?? 60_000)
    : null;

  let forgotten = false;
  /** A renewed certificate not yet acknowledged by a heartbeat. */
  let certificateToReport: string | null = null;
  const heartbeat = async (): Promise<Record<string, unknown> | null> => {
    try {
      const storage = await capacity.reports(targets.all());
      const reporting = certificateToReport;
      const res = await client.post(identity, "/api/bes/v1/heartbeat", {
        version: BES_VERSION,
        metrics: await metrics.sample(jobs.activeJobs),
        storage,
        ...(reporting ? { certificate: reporting } : {}),
      });
      const text = await res.text();
      if (res.status === 200 && reporting) {
        if (certificateToReport === reporting) certificateToReport = null;
        log.log("info", "reported the renewed certificate", {});
      }
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
  api = seams.dataApi?.(runtime) ?? dataService!.fetch;
  log.log("info", "listening", {
    address: `${config.listen.hostname}:${port}`,
    dataUrl,
    tls: Boolean(tls),
    ...(keeper ? { fingerprint: keeper.current.fingerprint } : {}),
  });
  // A renewed certificate: served at once (the listener restarts on the same port), reported next heartbeat.
  keeper?.schedule(async (cert) => {
    tls = { cert: cert.certPem, key: cert.keyPem };
    const old = server!;
    await old.shutdown();
    server = listen(port);
    certificateToReport = cert.certPem;
    beating = beating.then(heartbeat);
    await beating;
  }, seams.certificateCheckMs);

  return {
    ...runtime,
    get identity() {
      return identity!;
    },
    get registration() {
      return stored.registration;
    },
    jobs,
    get listening() {
      return server?.addr ?? null;
    },
    dataUrl,
    get certificate() {
      return tls?.cert ?? null;
    },
    dataService,
    heartbeat,
    async stop() {
      stopped = true;
      clearInterval(timer);
      keeper?.stop();
      if (sweeper !== null) clearInterval(sweeper);
      await jobs.stop();
      await beating;
      await server?.shutdown();
      await dataService?.close();
      log.log("info", "stopped", { id: identity.id });
    },
  };
}
