/**
 * CPU per heartbeat through the app, in process (no HTTP): 64 simulated BES, heartbeats signed ahead, then
 * sent through `app.fetch` 64 at a time; prints the process's CPU (all threads) and the main thread's per
 * heartbeat, from /proc (Linux). Steadier than `deno task bench` on a loaded machine (no loopback, no
 * driver process, CPU time instead of throughput), but it leaves out Deno.serve's HTTP work.
 *
 * `--capacity`: each heartbeat also reports the capacity of its engine's one storage target (the bench's
 * "+ 1 capacity report" row).
 *
 *   deno run -A tools/measure_heartbeat_cpu.ts [--heartbeats 20000] [--rounds 3] [--capacity]
 */
import { parseArgs } from "node:util";
import { createApp } from "../app.ts";
import { testConfig } from "../domain/config.ts";
import { createLogger } from "../domain/log.ts";
import { systemActor } from "../domain/rbac.ts";
import { createAccount, createOrg } from "../domain/tenancy.ts";
import { EngineClient } from "./engine_client.ts";
import { profileFor, registerSimulatedEngines, simulatedCapacity, simulatedMetrics } from "./simulator.ts";
import { createTarget } from "../domain/storage.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    heartbeats: { type: "string", default: "20000" },
    rounds: { type: "string", default: "3" },
    capacity: { type: "boolean", default: false },
  },
});
const TOTAL = Number(values.heartbeats);
const CONCURRENCY = 64;

/** utime + stime in ms of /proc/self/stat or /proc/self/task/<tid>/stat. */
function cpuMs(path: string): number {
  const stat = Deno.readTextFileSync(path);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

const dir = await Deno.makeTempDir({ prefix: "cadres-hbcpu-" });
const kv = await Deno.openKv(`${dir}/kv`);
const now = new Date();
const system = systemActor("bench");
const account = await createAccount(kv, system, { name: "Bench" }, now);
const { secret } = await createOrg(kv, system, { accountId: account.id, name: "Org" }, now);
const app = createApp({ kv, config: testConfig({ port: 1 }), logger: createLogger("error") });
const fetcher = (input: string | URL | Request, init?: RequestInit) =>
  Promise.resolve(app.fetch(new Request(input, init), { remoteAddr: { hostname: "127.0.0.1" } }));
const client = new EngineClient("http://127.0.0.1:1", fetcher);
const engines = await registerSimulatedEngines(client, secret, CONCURRENCY, "cpu-bes");
const main = `/proc/self/task/${Deno.pid}/stat`;
if (values.capacity) {
  for (const engine of engines) {
    const target = await createTarget(kv, system, {
      name: `t-${engine.name}`,
      besId: engine.identity.id,
      type: "local",
      config: { path: "/srv/b" },
    }, { now, masterKey: testConfig({ port: 1 }).masterKey! });
    engine.targetIds.push(target.id);
  }
}
const profileStart = Date.now() - 30 * 86_400_000;

for (let round = 0; round < Number(values.rounds); round++) {
  const pools = await Promise.all(engines.map(async (engine) => {
    const pool: Array<{ headers: Record<string, string>; body: string }> = [];
    for (let i = 0; i < TOTAL / CONCURRENCY; i++) {
      const at = Date.now();
      const body = JSON.stringify({
        version: "2.4.1",
        metrics: simulatedMetrics(engine.name, at, engine.bootAt),
        storage: values.capacity
          ? engine.targetIds.map((id) => ({
            targetId: id,
            ...simulatedCapacity(profileFor(id, profileStart), id, at),
          }))
          : undefined,
      });
      pool.push({
        headers: await client.signedHeaders(engine.identity, "POST", "/api/bes/v1/heartbeat", body),
        body,
      });
    }
    return pool;
  }));
  const processBefore = cpuMs("/proc/self/stat");
  const mainBefore = cpuMs(main);
  const started = performance.now();
  let sent = 0;
  await Promise.all(pools.map(async (pool) => {
    for (const { headers, body } of pool) {
      const res = await app.fetch(
        new Request("http://127.0.0.1:1/api/bes/v1/heartbeat", {
          method: "POST",
          headers: { ...headers, "content-type": "application/json", "content-length": String(body.length) },
          body,
        }),
        { remoteAddr: { hostname: "127.0.0.1" } },
      );
      if (res.status !== 200) throw new Error(`heartbeat answered ${res.status}: ${await res.text()}`);
      await res.arrayBuffer();
      sent++;
    }
  }));
  const ms = performance.now() - started;
  console.log(
    `round ${round + 1}: ${sent} heartbeats in ${(ms / 1000).toFixed(1)} s; CPU per heartbeat: process ${
      ((cpuMs("/proc/self/stat") - processBefore) / sent * 1000).toFixed(0)
    } µs, main thread ${((cpuMs(main) - mainBefore) / sent * 1000).toFixed(0)} µs; load ${
      Deno.loadavg().map((n) => n.toFixed(1)).join(" ")
    }`,
  );
}
kv.close();
await Deno.remove(dir, { recursive: true });
