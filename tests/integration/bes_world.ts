/**
 * What the BES end-to-end tests share: the real app on a loopback port (in-memory KV), a BES subprocess
 * (`engine/bes/main.ts`), and waiting for what they do.
 */
import { createApp } from "../../app.ts";
import { testConfig } from "../../domain/config.ts";
import type { Engine } from "../../domain/engines.ts";
import { getJob, type Job } from "../../domain/job_queue.ts";
import { createLogger } from "../../domain/log.ts";
import { systemActor } from "../../domain/rbac.ts";
import { childEnv, createTenant, REPO_ROOT, TestClock } from "../helpers.ts";

export const system = systemActor("test");
export const config = testConfig();
export const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 32 * 1024 };

/** The app on a loopback port with an in-memory KV and the real clock; its log lines in `logs`. */
export async function controlPlane(
  intercept?: (req: Request, kv: Deno.Kv) => Promise<Response | null>,
) {
  const kv = await Deno.openKv(":memory:");
  const logs: string[] = [];
  const app = createApp({ kv, config, logger: createLogger("debug", (l) => logs.push(l)) });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    async (req, info) =>
      (await intercept?.(req, kv)) ??
        app.fetch(req, { remoteAddr: { hostname: (info.remoteAddr as Deno.NetAddr).hostname } }),
  );
  const clock = new TestClock();
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const dir = await Deno.makeTempDir({ prefix: "cadres-bes-test-" });
  return {
    kv,
    logs,
    url: `http://127.0.0.1:${server.addr.port}`,
    tenant,
    scope: { accountId: tenant.account.id, orgId: tenant.orgs[0].id },
    dir,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      kv.close();
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** A BES subprocess; its output is collected in `output`. */
export function spawnBes(
  url: string,
  secret: string,
  dataDir: string,
  name = "bes-e2e",
  options: { tls?: boolean; args?: string[] } = {},
) {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      "engine/bes/main.ts",
      "--control-plane",
      url,
      "--data",
      dataDir,
      "--listen",
      "127.0.0.1:0",
      ...(options.tls ? [] : ["--insecure-http"]),
      "--name",
      name,
      "--heartbeat-seconds",
      "1",
      "--poll-seconds",
      "0.5",
      "--progress-seconds",
      "1",
      ...(options.args ?? []),
    ],
    cwd: REPO_ROOT,
    // The secret through the environment, as the systemd unit passes it (not on the command line).
    env: childEnv({ CADRES_BES_SECRET: secret }),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out: string[] = [];
  const pump = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) out.push(decoder.decode(chunk, { stream: true }));
  };
  const pumps = Promise.all([pump(child.stdout), pump(child.stderr)]);
  let exited = false;
  child.status.then(() => exited = true);
  return {
    child,
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
 * A BES subprocess (`spawnBes` in `options.data`, default `${cp.dir}/bes`) once it is online — with its data
 * URL when `tls` — as `engine`. Disposing it stops it and prints its output when it did not exit cleanly (or
 * DEBUG_BES is set); when it does not come online it is stopped and the wait's error thrown.
 */
export async function onlineBes(
  cp: { kv: Deno.Kv; url: string; dir: string; tenant: { secrets: string[] } },
  options: { data?: string; name?: string; tls?: boolean; args?: string[] } = {},
) {
  const name = options.name ?? "bes-e2e";
  const bes = spawnBes(cp.url, cp.tenant.secrets[0], options.data ?? `${cp.dir}/bes`, name, options);
  const stop = async () => {
    const status = await bes.stop();
    if (status.code !== 0 || Deno.env.get("DEBUG_BES")) console.error(bes.output);
  };
  let engine: Engine;
  try {
    engine = await waitFor(
      options.tls ? "the BES to go online with its data URL" : "the BES to go online",
      async () => {
        const e = await engineNamed(cp.kv, name);
        return e?.status === "online" && (!options.tls || e.dataUrl) ? e : null;
      },
      30_000,
      bes,
    );
  } catch (e) {
    await stop();
    throw e;
  }
  return Object.assign(bes, { engine, [Symbol.asyncDispose]: stop });
}

/** Polls `probe` until it returns a value (not undefined/null/false), or fails after `ms` with `what`. */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | null | undefined | false>,
  ms = 30_000,
  bes?: { exited: boolean; output: string },
) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v) return v;
    if (bes?.exited) throw new Error(`the BES exited while waiting for ${what}:\n${bes.output}`);
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}${bes ? `:\n${bes.output}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function engineNamed(kv: Deno.Kv, name: string): Promise<Engine | null> {
  for await (const e of kv.list<Engine>({ prefix: ["engines"] })) if (e.value.name === name) return e.value;
  return null;
}

export async function finished(kv: Deno.Kv, id: string, ms = 30_000): Promise<Job> {
  return await waitFor(`job ${id} to end`, async () => {
    const job = await getJob(kv, id);
    return job && (job.status === "succeeded" || job.status === "failed") ? job : null;
  }, ms);
}
