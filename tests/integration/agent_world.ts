/**
 * The world of the agent's end-to-end tests: the real app served on a loopback port (in-memory KV, real
 * clock), an admin API token, the account recovery key, a BES data API served in-process over pinned HTTPS
 * and registered through the engine client (data URL + certificate; the token key from the registration
 * reply), a Local target and a file policy created through the API, and the agent started as a subprocess
 * (`deno run engine/agent/main.ts`).
 */
import assert from "node:assert/strict";
import { createApp } from "../../app.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import { createLogger } from "../../domain/log.ts";
import { type Host, hostByPublicKeyKey, hostKey } from "../../domain/hosts.ts";
import { jobKey } from "../../domain/job_queue.ts";
import { createRecoveryKey } from "../../domain/recovery_keys.ts";
import { restoreKey } from "../../domain/keys/restore.ts";
import type { Run } from "../../domain/runs.ts";
import { runKey } from "../../domain/keys/runs.ts";
import { createDataApi, localTargetResolver, serveDataApi } from "../../engine/bes/data_api.ts";
import { createCertificate } from "../../engine/bes/tls.ts";
import type { Backend } from "../../engine/repo/backend.ts";
import { EngineClient, type EngineIdentity } from "../../engine/protocol/client.ts";
import { generateKeyPair } from "../../engine/protocol/signing.ts";
import { importTokenPublicKey } from "../../engine/protocol/token.ts";
import { addUser, createTenant, engineMetrics, freePort, REPO_ROOT } from "../helpers.ts";

/** Polls `probe` until it returns a value (not undefined/null/false) or `timeoutMs` passes. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined | null | false> | T | undefined | null | false,
  timeoutMs = 60_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== null && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A running agent subprocess and its output so far. */
export interface AgentProcess {
  child: Deno.ChildProcess;
  output: string[];
  /** Stops it (SIGTERM unless another signal is given) and waits until it exited. */
  stop(signal?: Deno.Signal): Promise<void>;
}

/** One request the data API received: method, path (object names percent-encoded) and Range header. */
export interface DataRequest {
  method: string;
  path: string;
  range: string | null;
}

export async function agentWorld(
  options: {
    recoveryKey?: boolean;
    /** Keep the control plane's KV in a file (so `restartControlPlane` can start it again on the same data). */
    kvFile?: boolean;
    /** Route the BES's storage writes through `setStorageFault` (a storage fault hook). */
    storageFaults?: boolean;
  } = {},
) {
  const tmp = await Deno.makeTempDir({ prefix: "cadres-agent-e2e-" });
  const kvPath = options.kvFile ? `${tmp}/control-plane.kv` : ":memory:";
  let kv = await Deno.openKv(kvPath);
  const logs: string[] = [];
  const newApp = () =>
    createApp({
      kv,
      config: testConfig(),
      clock: () => new Date(),
      logger: createLogger("info", (line) => logs.push(line)),
    });
  let app = newApp();
  const serveApp = (port: number) =>
    Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, (req, info) => app.fetch(req, info));
  let server = serveApp(0);
  const appPort = server.addr.port;
  const baseUrl = `http://127.0.0.1:${appPort}`;
  const now = () => new Date();
  const tenant = await createTenant(kv, "Acme", ["Ops"], now());
  const secret = tenant.secrets[0];
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", now());
  const { secret: apiToken } = await createApiToken(kv, userActor(admin), {
    name: "e2e",
    permissions: ["backup.view", "backup.manage", "backup.restore", "admin"],
    expiresInDays: 1,
  }, now());
  const recovery = options.recoveryKey === false
    ? null
    : await createRecoveryKey(kv, userActor(admin), tenant.account.id, now());

  /** A JSON API call with the admin token; returns status and body. */
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiToken}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null, text };
  };

  // The BES: its data API on a port chosen first, registered with that URL and its certificate.
  const dataPort = freePort();
  const dataUrl = `https://127.0.0.1:${dataPort}`;
  const cert = await createCertificate({ dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
  const client = new EngineClient(baseUrl);
  const besKeys = generateKeyPair();
  const reg = await client.sendRegistration("bes", secret, besKeys.privateKey, {
    name: "bes-1",
    deploymentModel: "on_premise",
    publicKey: besKeys.publicKey,
    hostname: "localhost",
    ipAddress: "127.0.0.1",
    port: dataPort,
    version: "1.0.0",
    dataUrl,
    certificate: cert.certPem,
  });
  const regBody = await reg.json();
  assert.equal(reg.status, 201, JSON.stringify(regBody));
  const bes: EngineIdentity = { kind: "bes", id: regBody.id, ...besKeys };
  const hb = await client.heartbeat(bes, engineMetrics());
  assert.equal(hb.status, 200, await hb.text());
  const targetRoot = `${tmp}/target`;
  await Deno.mkdir(targetRoot, { recursive: true });
  const roots: Record<string, string> = {};
  const resolveLocal = localTargetResolver(roots);
  let storageFault: ((name: string) => Error | null) | null = null;
  let dataClockSkewMs = 0;
  const newDataApi = () =>
    createDataApi({
      besId: bes.id,
      now: () => new Date(Date.now() + dataClockSkewMs),
      tokenPublicKey: importTokenPublicKey(regBody.tokenPublicKey),
      resolveRepository: async (r) => {
        const backend = await resolveLocal(r);
        if (!backend || !options.storageFaults) return backend;
        // The storage as the BES sees it, whose writes fail with the error `storageFault` gives.
        const faulty: Backend = {
          location: backend.location,
          list: (prefix) => backend.list(prefix),
          get: (name, range) => backend.get(name, range),
          put: async (name, data) => {
            const error = storageFault?.(name);
            if (error) throw error;
            await backend.put(name, data);
          },
          delete: (name) => backend.delete(name),
          exists: (name) => backend.exists(name),
        };
        return faulty;
      },
      log: (m) => logs.push(m),
    });
  let dataApi = newDataApi();
  // Every request the data API answers is recorded; `dataFault` may answer one instead (a fault hook).
  const dataRequests: DataRequest[] = [];
  let dataFault: ((req: Request) => Response | null | Promise<Response | null>) | null = null;
  const dataFetch = async (req: Request) => {
    dataRequests.push({
      method: req.method,
      path: new URL(req.url).pathname,
      range: req.headers.get("range"),
    });
    return (await dataFault?.(req)) ?? await dataApi.fetch(req);
  };
  let dataServer = serveDataApi({ fetch: dataFetch }, {
    hostname: "127.0.0.1",
    port: dataPort,
    certificate: cert,
  });

  const target = await api("POST", "/api/v1/storage", {
    name: "local",
    besId: bes.id,
    type: "local",
    config: { path: targetRoot },
  });
  assert.equal(target.status, 201, target.text);
  roots[target.body.id] = targetRoot;

  /** Adds a Local target of the BES at `root` (a folder the test made). */
  const addTarget = async (name: string, root: string) => {
    const res = await api("POST", "/api/v1/storage", {
      name,
      besId: bes.id,
      type: "local",
      config: { path: root },
    });
    assert.equal(res.status, 201, res.text);
    roots[res.body.id] = root;
    return res.body.id as string;
  };

  const agents: AgentProcess[] = [];
  /**
   * Starts the agent as a subprocess; `wrapper` is a command it runs under (e.g. `setpriv` dropping
   * capabilities), `hostname` the host name it enrolls with.
   */
  const startAgent = (
    dataDir: string,
    args: string[] = [],
    opts: { wrapper?: string[]; hostname?: string } = {},
  ): AgentProcess => {
    const [cmd, ...prefix] = [...(opts.wrapper ?? []), Deno.execPath()];
    const child = new Deno.Command(cmd, {
      args: [
        ...prefix,
        "run",
        "--allow-all",
        "--no-prompt",
        `--config=${REPO_ROOT}deno.json`,
        `${REPO_ROOT}engine/agent/main.ts`,
        "--control-plane",
        baseUrl,
        "--secret",
        secret,
        "--data",
        dataDir,
        "--hostname",
        opts.hostname ?? "web01.acme.example",
        "--ip",
        "127.0.0.1",
        "--poll-seconds",
        "0.5",
        "--progress-seconds",
        "1",
        ...args,
      ],
      cwd: tmp,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const output: string[] = [];
    const drain = async (s: ReadableStream<Uint8Array>) => {
      const d = new TextDecoder();
      for await (const c of s) output.push(d.decode(c, { stream: true }));
    };
    const drained = Promise.all([drain(child.stdout), drain(child.stderr)]);
    const proc: AgentProcess = {
      child,
      output,
      async stop(signal: Deno.Signal = "SIGTERM") {
        try {
          child.kill(signal);
        } catch {
          // ended
        }
        await child.status;
        await drained;
      },
    };
    agents.push(proc);
    return proc;
  };

  /** The host the agent of `publicKey`'s data dir enrolled as. */
  const enrolledHost = async (dataDir: string) =>
    await waitFor("the agent to enroll and heartbeat", async () => {
      const identity = await Deno.readTextFile(`${dataDir}/identity.json`).then(JSON.parse).catch(() => null);
      if (!identity?.id) return null;
      const host = (await kv.get<Host>(hostKey(identity.id))).value;
      return host?.status === "online" ? host : null;
    });

  /** Waits for a run to end; returns it with its job (result included). */
  const finishedRun = async (runId: string, timeoutMs = 90_000) => {
    const run = await waitFor(`run ${runId} to end`, async () => {
      const r = (await kv.get<Run>(runKey(runId))).value;
      return r && ["success", "warning", "failed", "skipped"].includes(r.status) ? r : null;
    }, timeoutMs);
    const job = (await kv.get<{ result?: { output?: Record<string, unknown> } }>(jobKey(run.jobId!))).value;
    return { run, job, output: (job?.result?.output ?? {}) as Record<string, unknown> };
  };

  /** Waits for a restore to end. */
  const finishedRestore = async (restoreId: string, timeoutMs = 90_000) =>
    await waitFor(`restore ${restoreId} to end`, async () => {
      const r = (await kv.get<{ status: string }>(restoreKey(restoreId))).value;
      return r && ["success", "warning", "failed"].includes(r.status) ? r : null;
    }, timeoutMs);

  return {
    tmp,
    get kv() {
      return kv;
    },
    get app() {
      return app;
    },
    kvPath,
    logs,
    baseUrl,
    secret,
    tenant,
    recovery,
    api,
    bes,
    besClient: client,
    dataUrl,
    cert,
    get dataApi() {
      return dataApi;
    },
    targetRoot,
    targetId: target.body.id as string,
    addTarget,
    /** The requests the data API received so far (clear it to count from a point on). */
    dataRequests,
    /** Sets the data API's clock ahead (or back) of the real one by `ms` (token expiry, lock staleness). */
    setDataClockSkew(ms: number) {
      dataClockSkewMs = ms;
    },
    /** Makes the BES's storage writes fail with the error returned for an object (needs `storageFaults`). */
    setStorageFault(fault: typeof storageFault) {
      storageFault = fault;
    },
    /** Answers data API requests before the BES does when it returns a response (null: the BES answers). */
    setDataFault(fault: typeof dataFault) {
      dataFault = fault;
    },
    startAgent,
    enrolledHost,
    finishedRun,
    finishedRestore,
    hostByPublicKey: async (publicKey: string) => (await kv.get<string>(hostByPublicKeyKey(publicKey))).value,
    /** Stops the data API (a BES that went down) and starts it again. */
    async stopDataApi() {
      await dataServer.shutdown();
    },
    /** Starts the data API again; `fresh`: as a new BES process (no writer locks held in memory). */
    startDataApi(opts: { fresh?: boolean } = {}) {
      if (opts.fresh) dataApi = newDataApi();
      dataServer = serveDataApi({ fetch: dataFetch }, {
        hostname: "127.0.0.1",
        port: dataPort,
        certificate: cert,
      });
    },
    /**
     * Restarts the control plane: stops its server, closes its KV, then opens the same KV file and serves a
     * new app on the same port after `downMs` (needs `kvFile`).
     */
    async restartControlPlane(downMs = 0) {
      if (kvPath === ":memory:") throw new Error("restartControlPlane needs agentWorld({ kvFile: true })");
      await server.shutdown();
      kv.close();
      await new Promise((r) => setTimeout(r, downMs));
      kv = await Deno.openKv(kvPath);
      app = newApp();
      server = serveApp(appPort);
    },
    async [Symbol.asyncDispose]() {
      for (const a of agents) await a.stop();
      await dataApi.close();
      await dataServer.shutdown().catch(() => {});
      await server.shutdown().catch(() => {});
      kv.close();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    },
  };
}
export type AgentWorld = Awaited<ReturnType<typeof agentWorld>>;

/**
 * Creates a policy through the API on the world's BES and target: a file backup, weekly full, zstd,
 * AES-256-GCM, no verify after backup; `extra` adds or overrides fields. Asserts it was created.
 */
export async function createPolicy(w: AgentWorld, name: string, extra: Record<string, unknown> = {}) {
  const res = await w.api("POST", "/api/v1/policies", {
    name,
    besId: w.bes.id,
    targetId: w.targetId,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    compression: "zstd",
    encryption: "AES-256-GCM",
    verifyAfterBackup: false,
    ...extra,
  });
  assert.equal(res.status, 201, res.text);
  return res.body as { id: string };
}

/** Assigns `hostIds` to policy `policyId` through the API; asserts it worked. */
export async function assignHosts(w: AgentWorld, policyId: string, hostIds: string[]) {
  const res = await w.api("POST", `/api/v1/policies/${policyId}/assignments`, { hostIds });
  assert.equal(res.status, 201, res.text);
}

/** Runs policy `policyId` now (on `hostIds`, default all its hosts) through the API; the runs it started. */
export async function runNow(
  w: AgentWorld,
  policyId: string,
  kind: "full" | "incremental" = "full",
  hostIds?: string[],
) {
  const res = await w.api("POST", `/api/v1/policies/${policyId}/run`, { kind, hostIds });
  assert.equal(res.status, 201, res.text);
  return res.body.runs as Array<{ id: string; hostId: string; jobId: string }>;
}
