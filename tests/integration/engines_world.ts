/**
 * The world of the engines' end-to-end tests: the real app on a loopback port (a temporary KV file, the real
 * clock), an admin API token, the account recovery key, the BES program (`engine/bes/main.ts`, HTTPS data
 * API) and the agent program (`engine/agent/main.ts`) as subprocesses, each with its own temporary folder.
 * Nothing is served in-process but the control plane.
 */
import assert from "node:assert/strict";
import { createApp } from "../../app.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import type { Engine } from "../../domain/engines.ts";
import { type Host, hostKey } from "../../domain/hosts.ts";
import { jobKey } from "../../domain/job_queue.ts";
import { createLogger } from "../../domain/log.ts";
import { createRecoveryKey } from "../../domain/recovery_keys.ts";
import { restoreKey } from "../../domain/keys/restore.ts";
import type { Run } from "../../domain/runs.ts";
import { runKey } from "../../domain/keys/runs.ts";
import { addUser, createTenant, REPO_ROOT } from "../helpers.ts";
import { engineNamed, spawnBes, waitFor } from "./bes_world.ts";

export { waitFor };

/** A subprocess and its output so far. */
export interface Program {
  readonly exited: boolean;
  readonly output: string;
  stop(): Promise<Deno.CommandStatus>;
}

function collect(child: Deno.ChildProcess): Program {
  const out: string[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) out.push(decoder.decode(chunk, { stream: true }));
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exited = false;
  child.status.then(() => exited = true);
  return {
    get exited() {
      return exited;
    },
    get output() {
      return out.join("");
    },
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
      const status = await child.status;
      await pumps;
      return status;
    },
  };
}

/**
 * The agent program as a subprocess (`engine/agent/main.ts`), enrolled as `hostname` with `roots` as its
 * default roots; short poll and progress intervals.
 */
export function spawnAgent(
  controlPlane: string,
  secret: string,
  dataDir: string,
  hostname: string,
  roots: string[],
): Program {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "--no-prompt",
      `--config=${REPO_ROOT}deno.json`,
      `${REPO_ROOT}engine/agent/main.ts`,
      "--control-plane",
      controlPlane,
      "--secret",
      secret,
      "--data",
      dataDir,
      "--hostname",
      hostname,
      "--ip",
      "127.0.0.1",
      "--poll-seconds",
      "0.5",
      "--progress-seconds",
      "1",
      ...roots.flatMap((r) => ["--include-root", r]),
    ],
    cwd: REPO_ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return collect(child);
}

export async function enginesWorld() {
  const tmp = await Deno.makeTempDir({ prefix: "cadres-engines-e2e-" });
  const kv = await Deno.openKv(`${tmp}/control-plane.kv`);
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
  const tenant = await createTenant(kv, "Acme", ["Ops"], new Date());
  const secret = tenant.secrets[0];
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", new Date());
  const { secret: apiToken } = await createApiToken(kv, userActor(admin), {
    name: "e2e",
    permissions: ["backup.view", "backup.manage", "backup.restore", "admin"],
    expiresInDays: 1,
  }, new Date());
  const recovery = await createRecoveryKey(kv, userActor(admin), tenant.account.id, new Date());

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

  const programs: Program[] = [];

  /** Starts the BES program (HTTPS data API on a loopback port) and waits until it is online. */
  const startBes = async (name = "bes-e2e", args: string[] = []) => {
    const bes = spawnBes(baseUrl, secret, `${tmp}/${name}`, name, { tls: true, args });
    programs.push(bes);
    const engine = await waitFor(
      "the BES to go online",
      async () => {
        const e = await engineNamed(kv, name);
        return e?.status === "online" ? e : null;
      },
      60_000,
      bes,
    );
    return { bes, engine: engine as Engine };
  };

  /** Starts the agent program with `roots` as its default roots; waits until its host is online. */
  const startAgent = async (name: string, roots: string[]) => {
    const dataDir = `${tmp}/${name}`;
    const agent = spawnAgent(baseUrl, secret, dataDir, `${name}.acme.example`, roots);
    programs.push(agent);
    const host = await waitFor("the agent to enroll and heartbeat", async () => {
      if (agent.exited) throw new Error(`the agent exited:\n${agent.output}`);
      const identity = await Deno.readTextFile(`${dataDir}/identity.json`).then(JSON.parse).catch(() => null);
      if (!identity?.id) return null;
      const h = (await kv.get<Host>(hostKey(identity.id))).value;
      return h?.status === "online" ? h : null;
    }, 60_000);
    return { agent, host };
  };

  /** Waits for a run to end; returns it with its job's output. */
  const finishedRun = async (runId: string, timeoutMs = 90_000) => {
    const run = await waitFor(`run ${runId} to end`, async () => {
      const r = (await kv.get<Run>(runKey(runId))).value;
      return r && ["success", "warning", "failed", "skipped"].includes(r.status) ? r : null;
    }, timeoutMs);
    const job = (await kv.get<{ result?: { output?: Record<string, unknown> } }>(jobKey(run.jobId!))).value;
    return { run, output: (job?.result?.output ?? {}) as Record<string, unknown> };
  };

  /** Waits for a restore to end. */
  const finishedRestore = async (restoreId: string, timeoutMs = 90_000) =>
    await waitFor(`restore ${restoreId} to end`, async () => {
      const r = (await kv.get<{ status: string }>(restoreKey(restoreId))).value;
      return r && ["success", "warning", "failed"].includes(r.status) ? r : null;
    }, timeoutMs);

  /** Creates a Local target of `besId` at a new folder `name` under the world's folder. */
  const addLocalTarget = async (besId: string, name: string) => {
    const root = `${tmp}/${name}`;
    await Deno.mkdir(root, { recursive: true });
    const res = await api("POST", "/api/v1/storage", { name, besId, type: "local", config: { path: root } });
    assert.equal(res.status, 201, res.text);
    return { id: res.body.id as string, root };
  };

  return {
    tmp,
    kv,
    logs,
    baseUrl,
    secret,
    tenant,
    admin,
    recovery,
    api,
    startBes,
    startAgent,
    finishedRun,
    finishedRestore,
    addLocalTarget,
    /** Everything the programs printed (for failure messages). */
    output: () => programs.map((p) => p.output).join("\n----\n"),
    async [Symbol.asyncDispose]() {
      for (const p of programs) await p.stop();
      await server.shutdown().catch(() => {});
      kv.close();
      if (!Deno.env.get("KEEP_E2E")) await Deno.remove(tmp, { recursive: true }).catch(() => {});
    },
  };
}
export type EnginesWorld = Awaited<ReturnType<typeof enginesWorld>>;
