/**
 * CPU per heartbeat through the app, in process (no HTTP): 64 simulated BES, heartbeats signed ahead, then
 * sent through `app.fetch` 64 at a time; prints the process's CPU (all threads) and the main thread's per
 * heartbeat, from /proc (Linux). Steadier than `deno task bench` on a loaded machine (no loopback, no
 * driver process, CPU time instead of throughput), but it leaves out Deno.serve's HTTP work.
 *
 *   deno run -A tools/measure_heartbeat_cpu.ts [--heartbeats 20000] [--rounds 3]
 */
import { parseArgs } from "node:util";
import { createApp } from "../app.ts";
import { testConfig } from "../domain/config.ts";
import { createLogger } from "../domain/log.ts";
import { systemActor } from "../domain/rbac.ts";
import { createAccount, createOrg } from "../domain/tenancy.ts";
import { EngineClient } from "./engine_client.ts";
import { registerSimulatedEngines, simulatedMetrics } from "./simulator.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { heartbeats: { type: "string", default: "20000" }, rounds: { type: "string", default: "3" } },
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

for (let round = 0; round < Number(values.rounds); round++) {
  const pools = await Promise.all(engines.map(async (engine) => {
    const pool: Array<{ headers: Record<string, string>; body: string }> = [];
    for (let i = 0; i < TOTAL / CONCURRENCY; i++) {
      const body = JSON.stringify({
        version: "2.4.1",
        metrics: simulatedMetrics(engine.name, Date.now(), engine.bootAt),
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
