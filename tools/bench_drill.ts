/**
 * Restore drill benchmark (`deno task bench:drill`): the drill's RTO and throughput on the benchmark data set
 * (tools/bench_dataset.ts, as `deno task bench:engine` builds it: default 1 GiB in about 2,000 files).
 *
 *  1. Generates the data set in a temp folder (`--size-mib N` scales it).
 *  2. Serves a BES data API in this process over loopback HTTPS (its certificate, a Local target in the work
 *     folder, a token key of its own standing for the control plane's) and backs the data set up through it
 *     as an agent does (tools/bench_e2e_agent.ts as a subprocess: AES-256-GCM, zstd, dedup on).
 *  3. Runs the agent's own worker (engine/agent/worker.ts, the process `restore_drill` jobs run in) with
 *     a `restore_drill` request and a read token, three times: a sample of 20 files, a sample of 200, and
 *     the whole point. Each restores into a scratch folder through the data API, verifies every chunk as it
 *     is written and every restored file against the backup's chunk ids, and reports its RTO (restore start to
 *     last file verified) and bytes; the benchmark also times the worker process (start-up and repository
 *     open included) and its peak RSS, then deletes the scratch copy as the agent does and times that.
 *  4. Prints one row per drill with the command, the machine and the load average.
 *
 * Throughput is MB/s (10^6 bytes) of the bytes restored over the drill's RTO.
 */
import nodeCrypto from "node:crypto";
import { parseArgs } from "node:util";
import { removeScratch } from "../engine/agent/drill.ts";
import { readLines } from "../engine/agent/lines.ts";
import { workerCommand } from "../engine/agent/worker_client.ts";
import {
  type DrillOutcome,
  WORKER_LINE_PREFIX,
  type WorkerMessage,
} from "../engine/agent/worker_protocol.ts";
import { createDataApi, localTargetResolver, serveDataApi } from "../engine/bes/data_api.ts";
import { createCertificate } from "../engine/bes/tls.ts";
import { MAX_TOKEN_TTL_SECONDS, signDataToken } from "../engine/protocol/token.ts";
import { generate, planDataSet } from "./bench_dataset.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-mib": { type: "string", default: "1024" },
    dir: { type: "string" },
    keep: { type: "boolean", default: false },
  },
});
const SIZE_MIB = Number(values["size-mib"]);
if (!(SIZE_MIB >= 1)) throw new Error(`--size-mib must be a number >= 1, got ${values["size-mib"]}`);
const MIB = 1024 * 1024;
const TOTAL_BYTES = Math.round(SIZE_MIB * MIB);
const FILES = Math.max(20, Math.round(2000 * SIZE_MIB / 1024));
const HOST = "bench";
const loadavg = () => Deno.loadavg().map((x) => x.toFixed(2)).join(" ");

const base = values.dir ?? await Deno.makeTempDir({ prefix: "cadres-bench-drill-" });
await Deno.mkdir(base, { recursive: true });
const src = `${base}/src`;
/** A /proc file's text (they read as empty through Deno's file API: their size is 0). */
async function readProc(path: string): Promise<string> {
  const out = await new Deno.Command("cat", { args: [path], stdout: "piped", stderr: "null" }).output()
    .catch(() => null);
  return out?.success ? new TextDecoder().decode(out.stdout) : "";
}
const cpu = (await readProc("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown";
console.log(`bench:drill — ${new Date().toISOString()}`);
console.log(
  `machine: ${navigator.hardwareConcurrency} CPUs (${cpu}), ${
    (Deno.systemMemoryInfo().total / 1024 / MIB).toFixed(1)
  } GiB RAM; Deno ${Deno.version.deno}`,
);
console.log(`load average at start: ${loadavg()}`);

const t0 = performance.now();
const specs = planDataSet(TOTAL_BYTES, FILES);
await generate(src, specs);
const dataBytes = specs.reduce((a, s) => a + s.size, 0);
console.log(
  `data set: ${specs.length} files, ${(dataBytes / MIB).toFixed(0)} MiB, generated in ${
    ((performance.now() - t0) / 1000).toFixed(1)
  } s`,
);

/** Runs the agent's worker with `request`; returns its outcome, wall time and peak RSS (KiB). */
async function runWorker(request: unknown, token: string) {
  const [cmd, ...args] = workerCommand();
  const started = performance.now();
  const child = new Deno.Command(cmd, { args, stdin: "piped", stdout: "piped", stderr: "piped" }).spawn();
  let peak = 0;
  let polling = true;
  const poller = (async () => {
    while (polling) {
      const st = await readProc(`/proc/${child.pid}/status`);
      peak = Math.max(peak, Number(/VmHWM:\s+(\d+)/.exec(st)?.[1] ?? 0));
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(JSON.stringify({ type: "start", request, token }) + "\n"));
  let outcome: DrillOutcome | null = null;
  let failure = "";
  const stderr = new Response(child.stderr).text();
  for await (const line of readLines(child.stdout)) {
    if (!line.startsWith(WORKER_LINE_PREFIX)) continue;
    const m = JSON.parse(line.slice(WORKER_LINE_PREFIX.length)) as WorkerMessage;
    if (m.type === "result") outcome = m.outcome as DrillOutcome;
    if (m.type === "error") failure = `${m.failure.reason}: ${m.failure.message}`;
    if (m.type !== "progress") break;
  }
  await writer.close().catch(() => {});
  await child.status;
  const ms = performance.now() - started;
  polling = false;
  await poller;
  if (!outcome) throw new Error(`the worker failed: ${failure}\n${(await stderr).slice(-2000)}`);
  return { outcome, ms, rssKiB: peak };
}

const tokenKeys = nodeCrypto.generateKeyPairSync("ed25519");
const besId = "bench-bes";
const targetId = "bench-target";
const repository = { target: targetId, path: "cadres/bench/g1", generation: 1 };
const api = createDataApi({
  besId,
  tokenPublicKey: tokenKeys.publicKey,
  resolveRepository: localTargetResolver({ [targetId]: `${base}/target` }),
});
const cert = await createCertificate({ dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
const certFile = `${base}/cert.pem`;
await Deno.writeTextFile(certFile, cert.certPem);
const stop = new AbortController();
const server = serveDataApi(api, { hostname: "127.0.0.1", port: 0, certificate: cert, signal: stop.signal });
const dataUrl = `https://127.0.0.1:${server.addr.port}`;
const token = (access: "read" | "write") => {
  const iat = Math.floor(Date.now() / 1000);
  return signDataToken(tokenKeys.privateKey, {
    v: 1,
    job: `bench-${access}`,
    host: HOST,
    bes: besId,
    repository,
    namespace: HOST,
    access,
    iat,
    exp: iat + MAX_TOKEN_TTL_SECONDS,
  });
};
const keys = {
  namespace: HOST,
  dataKey: crypto.getRandomValues(new Uint8Array(32)).toBase64(),
  idKey: crypto.getRandomValues(new Uint8Array(32)).toBase64(),
};
const rows: string[][] = [];
try {
  // The backup, as an agent makes it.
  const b0 = performance.now();
  const agent = new URL("./bench_e2e_agent.ts", import.meta.url).pathname;
  const backup = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-env",
      "--allow-sys",
      agent,
      "--url",
      dataUrl,
      "--cert",
      certFile,
      src,
    ],
    env: { BENCH_DATA_TOKEN: token("write"), BENCH_KEYS: JSON.stringify(keys) },
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!backup.success) throw new Error(`the backup failed:\n${new TextDecoder().decode(backup.stderr)}`);
  const snapshotId = JSON.parse(new TextDecoder().decode(backup.stdout)).snapshotId as string;
  console.log(
    `backup     : ${((performance.now() - b0) / 1000).toFixed(1)} s through the data API (snapshot ${
      snapshotId.slice(0, 12)
    }…)`,
  );

  for (const [mode, sampleCount] of [["sample", 20], ["sample", 200], ["whole", 0]] as const) {
    const scratch = `${base}/scratch/cadres-drill-${mode}-${sampleCount}`;
    const load = loadavg();
    const ran = await runWorker({
      op: "restore_drill",
      data: { dataUrl, certificate: cert.certPem, ...keys, cache: null },
      snapshotId,
      mode,
      sampleCount,
      seed: "bench",
      targetPath: scratch,
    }, token("read"));
    const c0 = performance.now();
    const cleanup = await removeScratch(scratch);
    const cleanupMs = performance.now() - c0;
    if (cleanup) throw new Error(`the scratch copy was not removed: ${cleanup}`);
    const o = ran.outcome;
    if (o.failures.length) throw new Error(`the drill failed: ${JSON.stringify(o.failures.slice(0, 3))}`);
    const label = mode === "whole" ? "whole point" : `sample of ${sampleCount} files`;
    console.log(
      `drill      : ${label}: ${o.verified}/${o.selected} files verified, ${
        (o.bytes / MIB).toFixed(1)
      } MiB, ` +
        `RTO ${(o.restoreMs / 1000).toFixed(2)} s, ${
          (o.bytes / 1e6 / (o.restoreMs / 1000)).toFixed(0)
        } MB/s; ` +
        `worker ${(ran.ms / 1000).toFixed(2)} s, peak RSS ${(ran.rssKiB / 1024).toFixed(0)} MiB; ` +
        `scratch removed in ${(cleanupMs / 1000).toFixed(2)} s; load ${load}`,
    );
    rows.push([
      label,
      `${o.verified}/${o.selected}`,
      `${(o.bytes / MIB).toFixed(1)} MiB`,
      `${(o.restoreMs / 1000).toFixed(2)} s`,
      `${(o.bytes / 1e6 / (o.restoreMs / 1000)).toFixed(0)} MB/s`,
      `${(ran.ms / 1000).toFixed(2)} s`,
      `${(ran.rssKiB / 1024).toFixed(0)} MiB`,
      `${(cleanupMs / 1000).toFixed(2)} s`,
    ]);
  }
} finally {
  stop.abort();
  await server.finished;
  await api.close();
  if (!values.keep) await Deno.remove(base, { recursive: true });
}

const table = [
  ["drill", "verified", "restored", "RTO", "throughput", "worker wall", "peak RSS", "scratch removal"],
  ...rows,
];
const widths = table[0].map((_, c) => Math.max(...table.map((row) => row[c].length)));
console.log("");
for (const [i, row] of table.entries()) {
  console.log(`| ${row.map((c, k) => c.padEnd(widths[k])).join(" | ")} |`);
  if (i === 0) console.log(`| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`);
}
console.log(`load average at end: ${loadavg()}; total ${((performance.now() - t0) / 1000).toFixed(0)} s`);
