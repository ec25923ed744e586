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
import { jobKey } from "../../domain/jobs.ts";
import { createRecoveryKey } from "../../domain/recovery_keys.ts";
import { restoreKey } from "../../domain/restore.ts";
import { type Run, runKey } from "../../domain/runs.ts";
import { createDataApi, localTargetResolver, serveDataApi } from "../../engine/bes/data_api.ts";
import { createCertificate } from "../../engine/bes/tls.ts";
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
  stop(): Promise<void>;
}

export async function agentWorld(options: { recoveryKey?: boolean } = {}) {
  const tmp = await Deno.makeTempDir({ prefix: "cadres-agent-e2e-" });
  const kv = await Deno.openKv(":memory:");
  const logs: string[] = [];
  const app = createApp({
    kv,
    config: testConfig(),
    clock: () => new Date(),
    logger: createLogger("info", (line) => logs.push(line)),
  });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req, info) => app.fetch(req, info),
  );
  const baseUrl = `http://127.0.0.1:${server.addr.port}`;
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
  const dataApi = createDataApi({
    besId: bes.id,
    tokenPublicKey: importTokenPublicKey(regBody.tokenPublicKey),
    resolveRepository: (r) => localTargetResolver(roots)(r),
    log: (m) => logs.push(m),
  });
  let dataServer = serveDataApi(dataApi, {
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

  const agents: AgentProcess[] = [];
  /** Starts the agent as a subprocess. */
  const startAgent = (dataDir: string, args: string[] = []): AgentProcess => {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
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
        "web01.acme.example",
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
      async stop() {
        try {
          child.kill("SIGTERM");
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
    kv,
    app,
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
    dataApi,
    targetRoot,
    targetId: target.body.id as string,
    startAgent,
    enrolledHost,
    finishedRun,
    finishedRestore,
    hostByPublicKey: async (publicKey: string) => (await kv.get<string>(hostByPublicKeyKey(publicKey))).value,
    /** Stops the data API (a BES that went down) and starts it again. */
    async stopDataApi() {
      await dataServer.shutdown();
    },
    startDataApi() {
      dataServer = serveDataApi(dataApi, { hostname: "127.0.0.1", port: dataPort, certificate: cert });
    },
    async [Symbol.asyncDispose]() {
      for (const a of agents) await a.stop();
      await dataApi.close();
      await dataServer.shutdown().catch(() => {});
      await server.shutdown();
      kv.close();
      await Deno.remove(tmp, { recursive: true }).catch(() => {});
    },
  };
}
export type AgentWorld = Awaited<ReturnType<typeof agentWorld>>;
