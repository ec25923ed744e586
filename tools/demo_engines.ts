/**
 * The real part of `deno task demo`: a real BES (`engine/bes/main.ts`) and two real agents
 * (`engine/agent/main.ts`) started as subprocesses against the demo server, all their data under
 * `<data dir>/demo/` (created fresh on every start: the demo's database is in memory). The BES gets a Local
 * target in `demo/target`, a file policy on it ("demo-laptops-hourly", hourly incrementals, no include
 * paths: each agent backs up its `--include-root`), and each agent a generated sample folder of a few hundred
 * small files in `demo/samples/<host>`; both hosts are assigned and a first full runs at once, so the demo
 * shows real restore points that browse and restore. They live in the org "Retail Stores" of Northwind
 * Logistics (the simulated fleet is in the other orgs). `stop()` sends SIGTERM to the three and waits for
 * them (SIGKILL after the grace period).
 */
import { assignHost } from "../domain/assignments.ts";
import { type Engine, getEngine } from "../domain/engines.ts";
import { getHost, type Host } from "../domain/hosts.ts";
import { createPolicy, type PolicyCreateInput } from "../domain/policies.ts";
import { systemActor } from "../domain/rbac.ts";
import { runPolicyNow } from "../domain/run_now.ts";
import { createTarget, type TargetCreateInput } from "../domain/storage.ts";
import { findAccountByName, listOrgs, rotateOrgSecret } from "../domain/tenancy.ts";

const REPO_ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** The demo's real hosts: enrolled names and the sample folder each backs up. */
export const DEMO_AGENTS = ["demo-laptop-01", "demo-laptop-02"] as const;

export interface DemoEngines {
  besId: string;
  targetId: string;
  policyId: string;
  hostIds: string[];
  /** The folder that holds the BES's, the agents', the target's and the samples' data. */
  dir: string;
  /** SIGTERM to every subprocess, waits for them (SIGKILL after `graceMs`). */
  stop(graceMs?: number): Promise<void>;
}

interface Child {
  name: string;
  process: Deno.ChildProcess;
  status: Promise<Deno.CommandStatus>;
}

/** Writes `count` small text and binary files in a few nested folders under `root` (deterministic per seed). */
export async function writeSampleFolder(root: string, seed: number, count = 300): Promise<number> {
  const folders = ["Documents/reports", "Documents/letters", "Pictures/2026", "Projects/cadres/src", "Music"];
  let bytes = 0;
  let state = seed * 2654435761 >>> 0;
  const random = () => (state = (state * 1103515245 + 12345) >>> 0) / 2 ** 32;
  for (const f of folders) await Deno.mkdir(`${root}/${f}`, { recursive: true });
  for (let i = 0; i < count; i++) {
    const folder = folders[i % folders.length];
    const binary = folder.startsWith("Pictures") || folder === "Music";
    const size = 200 + Math.floor(random() * 8000);
    const data = new Uint8Array(size);
    if (binary) { for (let j = 0; j < size; j++) data[j] = Math.floor(random() * 256); }
    else {
      const line = new TextEncoder().encode(
        `${folder} file ${i} of host ${seed}: lorem ipsum dolor sit amet\n`,
      );
      for (let j = 0; j < size; j++) data[j] = line[j % line.length];
    }
    await Deno.writeFile(
      `${root}/${folder}/${binary ? "item" : "note"}-${String(i).padStart(4, "0")}.${binary ? "bin" : "txt"}`,
      data,
    );
    bytes += size;
  }
  return bytes;
}

async function waitFor<T>(what: string, probe: () => Promise<T | null>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`demo: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * Starts the BES and the two agents against the server at `baseUrl` (already listening), creates the Local
 * target and the policy, assigns both hosts and runs a first full. Output of the subprocesses goes to
 * `<dir>/<name>.log`.
 */
export async function startDemoEngines(
  kv: Deno.Kv,
  options: { baseUrl: string; dataDir: string; masterKey: Uint8Array; log?: (line: string) => void },
): Promise<DemoEngines> {
  const log = options.log ?? ((line: string) => console.error(line));
  const system = systemActor("demo");
  const account = await findAccountByName(kv, "Northwind Logistics");
  if (!account) throw new Error("demo: the demo account is not seeded");
  const org = (await listOrgs(kv, system, account.id)).find((o) => o.name === "Retail Stores");
  if (!org) throw new Error('demo: the org "Retail Stores" is not seeded');
  const secret = (await rotateOrgSecret(kv, system, org.id, new Date())).secret;

  const dir = `${await Deno.realPath(options.dataDir).catch(async () => {
    await Deno.mkdir(options.dataDir, { recursive: true });
    return Deno.realPath(options.dataDir);
  })}/demo`;
  await Deno.remove(dir, { recursive: true }).catch((e) => {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  });
  await Deno.mkdir(`${dir}/target`, { recursive: true });
  for (const [i, host] of DEMO_AGENTS.entries()) await writeSampleFolder(`${dir}/samples/${host}`, i + 1);

  const children: Child[] = [];
  const spawn = async (name: string, args: string[], env: Record<string, string>) => {
    const file = await Deno.open(`${dir}/${name}.log`, { write: true, create: true, truncate: true });
    const process = new Deno.Command(Deno.execPath(), {
      args,
      cwd: REPO_ROOT,
      env,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    // Both streams into the log file, in order of arrival (one write at a time).
    let queue = Promise.resolve();
    const append = (chunk: Uint8Array) => {
      queue = queue.then(async () => {
        for (let at = 0; at < chunk.length;) at += await file.write(chunk.subarray(at));
      });
      return queue;
    };
    const pump = async (stream: ReadableStream<Uint8Array>) => {
      for await (const chunk of stream) await append(chunk);
    };
    const status = Promise.all([pump(process.stdout), pump(process.stderr)])
      .then(() => queue)
      .then(() => process.status)
      .finally(() => file.close());
    children.push({ name, process, status });
  };
  const stop = async (graceMs = 10_000) => {
    for (const c of children) {
      try {
        c.process.kill("SIGTERM");
      } catch { /* already exited */ }
    }
    const timer = setTimeout(() => {
      for (const c of children) {
        try {
          c.process.kill("SIGKILL");
        } catch { /* exited */ }
      }
    }, graceMs);
    await Promise.allSettled(children.map((c) => c.status));
    clearTimeout(timer);
  };

  try {
    const besPort = freePort();
    await spawn("bes", [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      "engine/bes/main.ts",
      "--control-plane",
      options.baseUrl,
      "--data",
      `${dir}/bes`,
      "--listen",
      `127.0.0.1:${besPort}`,
      "--name",
      "demo-bes",
    ], { CADRES_BES_SECRET: secret });
    const bes = await waitFor<Engine>(
      "the demo BES to register",
      () =>
        findByName<Engine>(kv, ["engines_by_account", account.id], getEngine, (e) => e.name === "demo-bes"),
      60_000,
    );
    const target = await createTarget(kv, system, {
      name: "demo-local",
      besId: bes.id,
      type: "local",
      config: { path: `${dir}/target` },
      alertThreshold: 85,
      criticalThreshold: 95,
    } as TargetCreateInput, { now: new Date(), masterKey: options.masterKey });
    const policy = await createPolicy(kv, system, {
      name: "demo-laptops-hourly",
      besId: bes.id,
      targetId: target.id,
      backupType: "file",
      timeZone: "UTC",
      fullSchedule: "0 2 * * 0",
      incrementalSchedule: "0 * * * *",
    } as PolicyCreateInput, new Date());

    for (const host of DEMO_AGENTS) {
      await spawn(host, [
        "run",
        "--allow-all",
        "engine/agent/main.ts",
        "--control-plane",
        options.baseUrl,
        "--data",
        `${dir}/${host}`,
        "--hostname",
        host,
        "--ip",
        "127.0.0.1",
        "--include-root",
        `${dir}/samples/${host}`,
        "--poll-seconds",
        "2",
      ], { CADRES_AGENT_SECRET: secret });
    }
    const hostIds: string[] = [];
    for (const name of DEMO_AGENTS) {
      const host = await waitFor<Host>(
        `agent ${name} to enroll`,
        () => findByName<Host>(kv, ["hosts_by_account", account.id], getHost, (h) => h.hostname === name),
        60_000,
      );
      await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, new Date());
      hostIds.push(host.id);
    }
    await runPolicyNow(kv, system, policy.id, { kind: "full" }, new Date());
    log(
      `Demo engines: a real BES (demo-bes) and agents ${DEMO_AGENTS.join(", ")} back up ${dir}/samples ` +
        `to ${dir}/target (policy demo-laptops-hourly, org Retail Stores; logs in ${dir}/*.log).`,
    );
    return { besId: bes.id, targetId: target.id, policyId: policy.id, hostIds, dir, stop };
  } catch (e) {
    await stop(2_000);
    throw e;
  }
}

async function findByName<T>(
  kv: Deno.Kv,
  prefix: Deno.KvKey,
  get: (kv: Deno.Kv, id: string) => Promise<T | null>,
  match: (value: T) => boolean,
): Promise<T | null> {
  for await (const e of kv.list<string>({ prefix })) {
    const id = typeof e.value === "string" ? e.value : String(e.key[e.key.length - 1]);
    const value = await get(kv, id);
    if (value && match(value)) return value;
  }
  return null;
}

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
