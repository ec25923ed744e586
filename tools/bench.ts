/**
 * Benchmarks over loopback (`deno task bench`). Each scenario starts tools/bench_target.ts as a separate
 * process, drives it with N concurrent connections for a fixed time, and prints requests/s and
 * p50/p99 latency beside the ceiling measured in the same run, with their ratio.
 */
import { parseArgs } from "node:util";
import { EngineClient } from "./engine_client.ts";
import { profileFor, registerSimulatedEngines, simulatedCapacity, simulatedMetrics } from "./simulator.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "10" },
    concurrency: { type: "string", default: "64" },
  },
});
const SECONDS = Number(values.seconds);
const CONCURRENCY = Number(values.concurrency);

interface Result {
  name: string;
  requests: number;
  errors: number;
  rps: number;
  p50: number;
  p99: number;
}

async function startTarget(mode: string, port: number) {
  const dir = await Deno.makeTempDir({ prefix: "cadres-bench-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "tools/bench_target.ts",
      "--mode",
      mode,
      "--port",
      String(port),
      "--kv",
      `${dir}/bench.kv`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  while (!buffer.includes("READY")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`bench target ${mode} exited before it was ready`);
    buffer += value;
  }
  const info = JSON.parse(buffer.slice(buffer.indexOf("READY") + 6).split("\n")[0]);
  reader.releaseLock();
  child.stdout.cancel().catch(() => {});
  return {
    info,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : NaN;
}

/** Runs `CONCURRENCY` loops of requests for `SECONDS` seconds (after a 1 s warm-up); worker `i` builds its own. */
async function drive(
  name: string,
  makeRequest: (worker: number) => Request | Promise<Request>,
): Promise<Result> {
  const warmupEnd = performance.now() + 1000;
  const end = warmupEnd + SECONDS * 1000;
  const latencies: number[] = [];
  let errors = 0;
  await Promise.all(Array.from({ length: CONCURRENCY }, async (_, worker) => {
    while (performance.now() < end) {
      const request = await makeRequest(worker);
      const started = performance.now();
      const res = await fetch(request).catch(() => null);
      if (res) await res.arrayBuffer();
      const t = performance.now();
      if (started < warmupEnd) continue;
      if (!res || res.status >= 400) errors++;
      latencies.push(t - started);
    }
  }));
  latencies.sort((a, b) => a - b);
  return {
    name,
    requests: latencies.length,
    errors,
    rps: latencies.length / SECONDS,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
  };
}

const row = (r: Result, ceiling?: Result) =>
  `| ${r.name} | ${r.rps.toFixed(0)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.errors} | ${
    ceiling ? (r.rps / ceiling.rps).toFixed(2) : "1.00"
  } |`;

const results: Result[] = [];
const ceilingTarget = await startTarget("ceiling", 18601);
results.push(
  await drive("ceiling: bare Deno.serve + 1 KV atomic write", () => new Request("http://127.0.0.1:18601/")),
);
await ceilingTarget.stop();
const readTarget = await startTarget("ceiling_read", 18603);
results.push(
  await drive(
    "reference: bare Deno.serve + 1 KV read + 1 atomic write",
    () => new Request("http://127.0.0.1:18603/"),
  ),
);
await readTarget.stop();

const appTarget = await startTarget("app", 18602);
const { token, cookie, orgSecret } = appTarget.info as { token: string; cookie: string; orgSecret: string };

// One simulated BES per connection, each with one storage target, registered over the real protocol.
const client = new EngineClient("http://127.0.0.1:18602");
const engines = await registerSimulatedEngines(client, orgSecret, CONCURRENCY, "bench-bes");
for (const engine of engines) {
  const res = await fetch("http://127.0.0.1:18602/api/v1/storage", {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({
      name: `t-${engine.name}`,
      besId: engine.identity.id,
      type: "local",
      config: { path: "/srv/b" },
    }),
  });
  engine.targetIds.push((await res.json()).id);
}
const profileStart = Date.now() - 30 * 86_400_000;
async function heartbeatRequest(worker: number, withStorage: boolean): Promise<Request> {
  const engine = engines[worker];
  const now = Date.now();
  const body = JSON.stringify({
    version: "2.4.1",
    metrics: simulatedMetrics(engine.name, now, engine.bootAt),
    storage: withStorage
      ? engine.targetIds.map((id) => ({
        targetId: id,
        ...simulatedCapacity(profileFor(id, profileStart), id, now),
      }))
      : undefined,
  });
  const headers = await client.signedHeaders(engine.identity, "POST", "/api/bes/v1/heartbeat", body);
  return new Request("http://127.0.0.1:18602/api/bes/v1/heartbeat", {
    method: "POST",
    headers: { ...headers, "content-type": "application/json" },
    body,
  });
}
results.push(await drive("POST /api/bes/v1/heartbeat (signed, metrics)", (w) => heartbeatRequest(w, false)));
results.push(
  await drive(
    "POST /api/bes/v1/heartbeat (signed, metrics + 1 capacity report)",
    (w) => heartbeatRequest(w, true),
  ),
);
results.push(
  await drive(
    "GET /api/v1/me (bearer token)",
    () => new Request("http://127.0.0.1:18602/api/v1/me", { headers: { authorization: `Bearer ${token}` } }),
  ),
);
results.push(
  await drive(
    "GET /admin/users (session, 201 users, SSR)",
    () =>
      new Request("http://127.0.0.1:18602/admin/users", { headers: { cookie: `cadres_session=${cookie}` } }),
  ),
);
results.push(await drive("GET /healthz", () => new Request("http://127.0.0.1:18602/healthz")));
await appTarget.stop();

console.log(
  `\n${CONCURRENCY} concurrent connections, ${SECONDS} s per scenario, loopback, ${Deno.build.target}`,
);
console.log("| scenario | req/s | p50 ms | p99 ms | errors | ratio to ceiling |");
console.log("|---|---|---|---|---|---|");
for (const r of results) console.log(row(r, results[0] === r ? undefined : results[0]));
