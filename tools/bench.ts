/**
 * Benchmarks over loopback (`deno task bench`). Each scenario starts tools/bench_target.ts as a separate
 * process, drives it with N concurrent connections for a fixed time, and prints requests/s and
 * p50/p99 latency beside the ceiling measured in the same run, with their ratio.
 *
 * Heartbeats are signed before the measured window (a pool per connection, sized from the ceiling), so
 * the driver's Ed25519 signing — which a real fleet does on its own machines — does not take CPU from
 * the server on this shared machine; one row keeps signing during the run, as earlier runs did.
 *
 * Then the fleet run (`--fleet-seconds`, 0 to skip): 10,000 BES and 100,000 agents (`--fleet-engines`,
 * `--fleet-agents`) seeded in their own server, each sending one signed heartbeat a minute at its own
 * offset (open loop: 1,833 requests/s in all), with the minute sweeps run once mid-way. Afterwards both
 * sweeps run at run start + 3 minutes: a principal whose heartbeat was not applied during the run would
 * then be marked offline, so "none offline" means every heartbeat arrived.
 *
 * `--only heartbeats`: the ceiling, the plain heartbeat row and the heartbeats-in-turns comparison, nothing
 * else (no capacity, live-signed, console or fleet rows) — the aim's figures in under a minute.
 */
import { parseArgs } from "node:util";
import { OFFLINE_AFTER_MS } from "../domain/engines.ts";
import { generateKeyPair, type PrivateKey, signRequest } from "../domain/signing.ts";
import { EngineClient } from "./engine_client.ts";
import { profileFor, registerSimulatedEngines, simulatedCapacity, simulatedMetrics } from "./simulator.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "10" },
    concurrency: { type: "string", default: "64" },
    "fleet-seconds": { type: "string", default: "60" },
    "fleet-engines": { type: "string", default: "10000" },
    "fleet-agents": { type: "string", default: "100000" },
    only: { type: "string", default: "" },
  },
});
const SECONDS = Number(values.seconds);
const CONCURRENCY = Number(values.concurrency);
const FLEET_SECONDS = Number(values["fleet-seconds"]);
const FLEET_ENGINES = Number(values["fleet-engines"]);
const FLEET_AGENTS = Number(values["fleet-agents"]);
if (values.only !== "" && values.only !== "heartbeats") {
  console.error(`--only: unknown value "${values.only}" (the one filter is "heartbeats")`);
  Deno.exit(2);
}
/** Only the aim's rows: the ceiling, the plain heartbeat row and the comparison in turns. */
const HEARTBEATS_ONLY = values.only === "heartbeats";
/** The machine's load average (1, 5, 15 min) when the run started: others share this machine. */
const LOAD_AT_START = Deno.loadavg();

interface Result {
  name: string;
  requests: number;
  errors: number;
  rps: number;
  p50: number;
  p99: number;
  latencies: number[];
  /** The server process's CPU time (user + system, all its threads) per request, in ms; NaN when unknown. */
  cpuMsPerRequest: number;
}

/**
 * CPU time a process has used so far (user + system, all threads), in ms, from /proc (Linux, read with
 * `cat`: Deno reads /proc itself only with every permission); NaN elsewhere. On this shared machine
 * throughput follows the load, the server's CPU time per request much less: it is printed beside each row.
 */
async function processCpuMs(pid: number | undefined): Promise<number> {
  if (pid === undefined) return NaN;
  try {
    const out = await new Deno.Command("cat", { args: [`/proc/${pid}/stat`], stderr: "null" }).output();
    const stat = new TextDecoder().decode(out.stdout);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // utime and stime (fields 14 and 15 of stat; here counted from the state field, 3) in 10 ms ticks.
    const ms = (Number(fields[11]) + Number(fields[12])) * 10;
    return out.success ? ms : NaN;
  } catch {
    return NaN;
  }
}

async function startTarget(mode: string, port: number, extra: string[] = []) {
  const dir = await Deno.makeTempDir({ prefix: "cadres-bench-" });
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      // BENCH_APP_FLAGS: extra deno flags for the app target only, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`.
      ...(mode === "app" ? (Deno.env.get("BENCH_APP_FLAGS") ?? "").split(" ").filter(Boolean) : []),
      "tools/bench_target.ts",
      "--mode",
      mode,
      "--port",
      String(port),
      "--kv",
      `${dir}/bench.kv`,
      ...extra,
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
    dir,
    pid: child.pid,
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
  window: { seconds: number; warmupMs: number } = { seconds: SECONDS, warmupMs: 1000 },
  serverPid?: number,
): Promise<Result> {
  const warmupEnd = performance.now() + window.warmupMs;
  const end = warmupEnd + window.seconds * 1000;
  const latencies: number[] = [];
  let errors = 0;
  let cpuStart: Promise<number> = Promise.resolve(NaN);
  const warm = setTimeout(() => cpuStart = processCpuMs(serverPid), window.warmupMs);
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
  clearTimeout(warm);
  const cpuMs = (await processCpuMs(serverPid)) - (await cpuStart);
  latencies.sort((a, b) => a - b);
  return {
    name,
    requests: latencies.length,
    errors,
    rps: latencies.length / window.seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    latencies,
    cpuMsPerRequest: cpuMs / Math.max(1, latencies.length),
  };
}

/**
 * A scenario against the ceiling measured in turns with it: `rounds` × (ceiling for `slice` s, then the
 * scenario for `slice` s), so both see the same machine load (on this shared machine the ceiling moves by
 * 2× within minutes). Returns both totals and each round's ratio.
 */
async function interleaved(
  name: string,
  ceilingRequest: () => Request,
  makeRequest: (worker: number) => Request | Promise<Request>,
  pids: { ceiling?: number; scenario?: number } = {},
  rounds = 5,
  slice = 2,
) {
  const window = { seconds: slice, warmupMs: 300 };
  const ceilings: Result[] = [];
  const scenario: Result[] = [];
  for (let r = 0; r < rounds; r++) {
    ceilings.push(await drive("ceiling", ceilingRequest, window, pids.ceiling));
    scenario.push(await drive(name, makeRequest, window, pids.scenario));
  }
  const merge = (label: string, parts: Result[]): Result => {
    const latencies = parts.flatMap((p) => p.latencies).sort((a, b) => a - b);
    return {
      name: label,
      requests: latencies.length,
      errors: parts.reduce((n, p) => n + p.errors, 0),
      rps: latencies.length / (rounds * slice),
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      latencies: [],
      cpuMsPerRequest: parts.reduce((n, p) => n + p.cpuMsPerRequest * p.requests, 0) /
        Math.max(1, latencies.length),
    };
  };
  return {
    ceiling: merge(`ceiling, in turns with the row below (${rounds} × ${slice} s)`, ceilings),
    scenario: merge(`${name}, in turns with the ceiling above`, scenario),
    ratios: scenario.map((p, i) => p.rps / ceilings[i].rps),
  };
}

const row = (r: Result, ceiling?: Result) =>
  `| ${r.name} | ${r.rps.toFixed(0)} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.errors} | ${
    ceiling ? (r.rps / ceiling.rps).toFixed(2) : "1.00"
  } | ${r.cpuMsPerRequest.toFixed(3)} | ${
    ceiling ? (ceiling.cpuMsPerRequest / r.cpuMsPerRequest).toFixed(2) : "1.00"
  } |`;
const HEADER = "| scenario | req/s | p50 ms | p99 ms | errors | ratio to ceiling | server CPU ms/req | " +
  "CPU ratio (ceiling's ms/req ÷ row's) |\n|---|---|---|---|---|---|---|---|";

const results: Result[] = [];
const ceilingTarget = await startTarget("ceiling", 18601);
results.push(
  await drive(
    "ceiling: bare Deno.serve + 1 KV atomic write",
    () => new Request("http://127.0.0.1:18601/"),
    undefined,
    ceilingTarget.pid,
  ),
);
const readTarget = await startTarget("ceiling_read", 18603);
results.push(
  await drive(
    "reference: bare Deno.serve + 1 KV read + 1 atomic write",
    () => new Request("http://127.0.0.1:18603/"),
    undefined,
    readTarget.pid,
  ),
);
await readTarget.stop();

const appTarget = await startTarget("app", 18602, HEARTBEATS_ONLY ? ["--users", "0"] : []);
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
function heartbeatBody(worker: number, withStorage: boolean): string {
  const engine = engines[worker];
  const now = Date.now();
  return JSON.stringify({
    version: "2.4.1",
    metrics: simulatedMetrics(engine.name, now, engine.bootAt),
    storage: withStorage
      ? engine.targetIds.map((id) => ({
        targetId: id,
        ...simulatedCapacity(profileFor(id, profileStart), id, now),
      }))
      : undefined,
  });
}
async function heartbeatRequest(worker: number, withStorage: boolean): Promise<Request> {
  const body = heartbeatBody(worker, withStorage);
  const headers = await client.signedHeaders(engines[worker].identity, "POST", "/api/bes/v1/heartbeat", body);
  return new Request("http://127.0.0.1:18602/api/bes/v1/heartbeat", {
    method: "POST",
    headers: { ...headers, "content-type": "application/json" },
    body,
  });
}
/**
 * Heartbeats signed ahead, `perWorker` per connection (timestamps stay well inside the 300 s window);
 * a connection that runs out signs the rest during the run (counted in `signedLive`).
 */
async function presigned(withStorage: boolean, perWorker: number) {
  const pools = await Promise.all(engines.map(async (engine, worker) => {
    const pool: Array<{ headers: Record<string, string>; body: string }> = [];
    for (let i = 0; i < perWorker; i++) {
      const body = heartbeatBody(worker, withStorage);
      pool.push({
        headers: await client.signedHeaders(engine.identity, "POST", "/api/bes/v1/heartbeat", body),
        body,
      });
    }
    return pool;
  }));
  const counter = { signedLive: 0 };
  const next = async (worker: number): Promise<Request> => {
    const ready = pools[worker].pop();
    if (!ready) {
      counter.signedLive++;
      return await heartbeatRequest(worker, withStorage);
    }
    return new Request("http://127.0.0.1:18602/api/bes/v1/heartbeat", {
      method: "POST",
      headers: { ...ready.headers, "content-type": "application/json" },
      body: ready.body,
    });
  };
  return { next, counter };
}
async function commitStats(
  port: number,
): Promise<
  { commits: number; writes: number; sharedFailures: number; reader: { reads: number; keys: number } }
> {
  return await (await fetch(`http://127.0.0.1:${port}/__bench/stats`)).json();
}
/** Runs a heartbeat scenario; its name says how many heartbeats shared a commit on average. */
async function heartbeatScenario(name: string, makeRequest: (worker: number) => Promise<Request>) {
  const before = await commitStats(18602);
  const result = await drive(name, makeRequest, undefined, appTarget.pid);
  const after = await commitStats(18602);
  const perCommit = (after.writes - before.writes) / Math.max(1, after.commits - before.commits);
  result.name += ` [${perCommit.toFixed(1)} writes/commit]`;
  return result;
}
// Enough signed requests for each connection to run at 1.5× the ceiling for the whole window.
const perWorker = Math.min(
  3000,
  Math.max(300, Math.ceil((results[0].rps * (SECONDS + 1) * 1.5) / CONCURRENCY)),
);
const plain = await presigned(false, perWorker);
results.push(await heartbeatScenario("POST /api/bes/v1/heartbeat (signed ahead, metrics)", plain.next));
// The aim's comparison: heartbeats and the ceiling in turns (the ceiling's server is still up).
const turnsPool = await presigned(false, perWorker);
const turnsBefore = await commitStats(18602);
const turns = await interleaved(
  "POST /api/bes/v1/heartbeat (signed ahead, metrics)",
  () => new Request("http://127.0.0.1:18601/"),
  turnsPool.next,
  { ceiling: ceilingTarget.pid, scenario: appTarget.pid },
);
const turnsAfter = await commitStats(18602);
await ceilingTarget.stop();
let signedLive = plain.counter.signedLive;
if (!HEARTBEATS_ONLY) {
  const withCapacity = await presigned(true, perWorker);
  results.push(
    await heartbeatScenario(
      "POST /api/bes/v1/heartbeat (signed ahead, metrics + 1 capacity report)",
      withCapacity.next,
    ),
  );
  results.push(
    await heartbeatScenario(
      "POST /api/bes/v1/heartbeat (signed by the driver during the run, metrics)",
      (w) => heartbeatRequest(w, false),
    ),
  );
  signedLive += withCapacity.counter.signedLive;
  results.push(
    await drive(
      "GET /api/v1/me (bearer token)",
      () =>
        new Request("http://127.0.0.1:18602/api/v1/me", { headers: { authorization: `Bearer ${token}` } }),
      undefined,
      appTarget.pid,
    ),
  );
  results.push(
    await drive(
      "GET /admin/users (session, 201 users, SSR)",
      () =>
        new Request("http://127.0.0.1:18602/admin/users", {
          headers: { cookie: `cadres_session=${cookie}` },
        }),
      undefined,
      appTarget.pid,
    ),
  );
  results.push(
    await drive(
      "GET /healthz",
      () => new Request("http://127.0.0.1:18602/healthz"),
      undefined,
      appTarget.pid,
    ),
  );
}
await appTarget.stop();

console.log(
  `\n${CONCURRENCY} concurrent connections, ${SECONDS} s per scenario, loopback, ${Deno.build.target}; ` +
    `load average ${LOAD_AT_START.map((n) => n.toFixed(2)).join(" ")} at start, ${
      Deno.loadavg().map((n) => n.toFixed(2)).join(" ")
    } at the end of these rows`,
);
console.log(HEADER);
for (const r of results) console.log(row(r, results[0] === r ? undefined : results[0]));
console.log(
  `(${perWorker} heartbeats signed ahead per connection; ${signedLive} had to be signed during the run)`,
);
console.log(`\nHeartbeats against the ceiling in turns (the aim: ≥ 0.8 of the ceiling, p99 < 50 ms):`);
console.log(HEADER);
console.log(row(turns.ceiling));
console.log(row(turns.scenario, turns.ceiling));
console.log(
  `per-round ratios: ${turns.ratios.map((r) => r.toFixed(2)).join(", ")}; ${
    ((turnsAfter.writes - turnsBefore.writes) / Math.max(1, turnsAfter.commits - turnsBefore.commits))
      .toFixed(1)
  } heartbeats per commit; ${
    ((turnsAfter.reader.keys - turnsBefore.reader.keys) /
      Math.max(1, turnsAfter.reader.reads - turnsBefore.reader.reads))
      .toFixed(1)
  } keys per grouped read (${
    ((turnsAfter.reader.reads - turnsBefore.reader.reads) /
      Math.max(1, turnsAfter.writes - turnsBefore.writes)).toFixed(2)
  } getMany per heartbeat); ${turnsPool.counter.signedLive} signed during the run`,
);

if (FLEET_SECONDS > 0 && !HEARTBEATS_ONLY) await fleetRun();

/**
 * The fleet: every principal heartbeats once per minute at its own offset (open loop). Latency is from
 * the moment a heartbeat was due, so a server that falls behind shows it even though the driver waits.
 */
async function fleetRun() {
  const t0 = performance.now();
  const total = FLEET_ENGINES + FLEET_AGENTS;
  const engineKeys = Array.from({ length: FLEET_ENGINES }, () => generateKeyPair());
  const agentKeys = Array.from({ length: FLEET_AGENTS }, () => generateKeyPair());
  const keysDir = await Deno.makeTempDir({ prefix: "cadres-fleet-" });
  const keysFile = `${keysDir}/keys.json`;
  await Deno.writeTextFile(
    keysFile,
    JSON.stringify({
      engines: engineKeys.map((k) => k.publicKey),
      agents: agentKeys.map((k) => k.publicKey),
    }),
  );
  const target = await startTarget("fleet", 18604, ["--keys", keysFile]);
  const ids = JSON.parse(await Deno.readTextFile(`${keysFile}.ids.json`)) as {
    engines: string[];
    agents: string[];
  };
  console.log(
    `\nFleet: ${FLEET_ENGINES} BES + ${FLEET_AGENTS} agents seeded in ${
      ((performance.now() - t0) / 1000).toFixed(0)
    } s; each heartbeats once a minute (${(total / 60).toFixed(0)}/s) for ${FLEET_SECONDS} s`,
  );
  // Engines and agents interleaved evenly over the minute.
  const principals: Array<{ kind: "bes" | "agent"; id: string; key: PrivateKey }> = [];
  for (let i = 0, e = 0, a = 0; i < total; i++) {
    const takeEngine = e < FLEET_ENGINES && (a >= FLEET_AGENTS || e * FLEET_AGENTS <= a * FLEET_ENGINES);
    if (takeEngine) principals.push({ kind: "bes", id: ids.engines[e], key: engineKeys[e++].privateKey });
    else principals.push({ kind: "agent", id: ids.agents[a], key: agentKeys[a++].privateKey });
  }
  const before = await commitStats(18604);
  const interval = 60_000 / total;
  const count = Math.floor((FLEET_SECONDS * 1000) / interval);
  const startedAt = Date.now();
  const start = performance.now();
  const fromDue: number[] = [];
  const service: number[] = [];
  let errors = 0;
  let accepted = 0;
  let inFlight = 0;
  let maxInFlight = 0;
  let sweep: Promise<Record<string, number>> | null = null;
  const pending: Promise<void>[] = [];
  // At most FLEET_IN_FLIGHT requests open at once (each is a connection); the rest wait in the driver,
  // and their latency from due time shows it.
  const FLEET_IN_FLIGHT = 256;
  const slots: Array<() => void> = [];
  const send = async (i: number, due: number) => {
    while (inFlight >= FLEET_IN_FLIGHT) await new Promise<void>((resolve) => slots.push(resolve));
    const p = principals[i % total];
    const path = `/api/${p.kind}/v1/heartbeat`;
    const body = JSON.stringify({ version: "2.4.1", metrics: simulatedMetrics(p.id, Date.now(), 0) });
    const headers = signRequest(
      p.key,
      `${p.kind}:${p.id}`,
      "POST",
      path,
      new TextEncoder().encode(body),
      new Date(),
    );
    const sent = performance.now();
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    try {
      const res = await fetch(`http://127.0.0.1:18604${path}`, {
        method: "POST",
        headers: { ...headers, "content-type": "application/json" },
        body,
      });
      await res.arrayBuffer();
      if (res.status === 200) accepted++;
      else errors++;
    } catch {
      errors++;
    } finally {
      inFlight--;
      slots.shift()?.();
    }
    const done = performance.now();
    fromDue.push(done - due);
    service.push(done - sent);
  };
  for (let i = 0; i < count;) {
    const now = performance.now();
    while (i < count && start + i * interval <= now) {
      pending.push(send(i, start + i * interval));
      i++;
    }
    if (!sweep && now - start >= (FLEET_SECONDS * 1000) / 2) {
      sweep = fetch(`http://127.0.0.1:18604/__bench/sweep?at=${new Date().toISOString()}`, { method: "POST" })
        .then((r) => r.json());
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  await Promise.all(pending);
  const elapsed = (performance.now() - start) / 1000;
  const midSweep = sweep ? await sweep : null;
  const after = await commitStats(18604);
  // Every principal sent during the run was applied iff the sweep at run start + 3 min marks none offline.
  const strict = await (await fetch(
    `http://127.0.0.1:18604/__bench/sweep?at=${new Date(startedAt + OFFLINE_AFTER_MS).toISOString()}`,
    { method: "POST" },
  )).json();
  await target.stop();
  await Deno.remove(keysDir, { recursive: true });
  fromDue.sort((a, b) => a - b);
  service.sort((a, b) => a - b);
  const covered = Math.min(total, count);
  console.log(
    `  sent ${count} heartbeats in ${elapsed.toFixed(1)} s (${
      (count / elapsed).toFixed(0)
    }/s), ${accepted} accepted, ${errors} errors; at most ${maxInFlight} in flight`,
  );
  console.log(
    `  latency from due time p50 ${percentile(fromDue, 50).toFixed(1)} ms, p99 ${
      percentile(fromDue, 99).toFixed(1)
    } ms, max ${fromDue[fromDue.length - 1].toFixed(0)} ms; server time p50 ${
      percentile(service, 50).toFixed(1)
    } ms, p99 ${percentile(service, 99).toFixed(1)} ms`,
  );
  console.log(
    `  ${
      ((after.writes - before.writes) / Math.max(1, after.commits - before.commits)).toFixed(1)
    } heartbeats per commit (${after.commits - before.commits} commits, ${
      after.sharedFailures - before.sharedFailures
    } shared commits fell back)`,
  );
  if (midSweep) {
    console.log(
      `  minute sweeps mid-run (${FLEET_ENGINES} engines, ${FLEET_AGENTS} hosts): ${
        midSweep.ms.toFixed(0)
      } ms, ${midSweep.enginesOffline} engines and ${midSweep.hostsOffline} hosts marked offline`,
    );
  }
  console.log(
    `  every heartbeat applied: the sweeps at run start + 3 min mark ${strict.enginesOffline} engines and ` +
      `${strict.hostsOffline} hosts offline (${total - covered} expected: principals not due during the run)`,
  );
  const worst = fromDue[fromDue.length - 1] / 1000;
  console.log(
    `  timeliness: the latest heartbeat was applied ${
      worst.toFixed(1)
    } s after it was due; a principal goes ` +
      `offline after ${OFFLINE_AFTER_MS / 1000} s without one (its previous came a minute before): ${
        worst + 60 < OFFLINE_AFTER_MS / 1000
          ? "no sweep could have marked one offline"
          : "a sweep at the wrong moment could have marked some offline"
      }`,
  );
}
