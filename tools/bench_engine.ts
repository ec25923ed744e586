/**
 * Engine repository benchmark (`deno task bench:engine`): the reference engine side by side with
 * restic on the same generated data set, same machine, same run (ENGINE.md §6).
 *
 *  1. Generates a deterministic data set in a temp folder (default 1 GiB in about 2,000 files):
 *     incompressible (seeded PRNG bytes), compressible (text-like) and duplicated content (exact and
 *     near copies of other files). `--size-mib N` scales size and file count for quick runs.
 *  2. Measures the CPU ceiling in this process: WebCrypto AES-256-GCM (several calls in flight, and one
 *     at a time), SHA-256 and HMAC-SHA-256 (node:crypto), zstd level 3 and the FastCDC cut loop.
 *  3. restic (Debian's; skipped with one line if absent; always encrypting; from 0.14 on `restic init`
 *     writes repository v2, which compresses with zstd by default — `--compression auto` — the
 *     benchmark prints the version it got) and the engine (`deno task repo`'s command line as a
 *     subprocess, the guide's defaults: AES-256-GCM, zstd, dedup on), each run under /usr/bin/time -v
 *     (or /proc polling) for its peak RSS: first backup, a change pass (5 % of files modified, 1 %
 *     added, 1 % deleted), the incremental after it, a no-change incremental, a full restore of the
 *     last snapshot. The engine's restore must be byte-identical to the source (tree hash) or the
 *     benchmark fails.
 *  4. End to end: the same first backup as an agent makes it, agent → BES → Local target over loopback
 *     HTTPS: a BES data API served in this process (its certificate, a Local target in the work folder,
 *     a token key of its own standing for the control plane's) and the agent side as a subprocess
 *     (tools/bench_e2e_agent.ts: `RemoteBackend` pinned to the certificate, a write token for the job,
 *     `backupFiles`); compared with the library-only first backup (aim ≥ 0.8×).
 *  5. Prints the table of ENGINE.md §6: figure, engine, restic, ratio, aim, met / not met.
 *
 * Measuring the end-to-end row: `--e2e-only` runs only the engine's library-only first backup and the
 * end-to-end one (no restic, no incrementals, no restore); `--trace` times the agent's storage calls and the
 * BES's requests and target writes by kind and samples the agent's memory (tools/bench_trace.ts);
 * `--profile DIR` runs the agent with `--cpu-prof` into DIR (profile the BES side by running this script
 * itself with `deno run --cpu-prof`); `--plain-http` (a diagnostic, never a figure of record: the row is
 * HTTPS) serves the data API over plain HTTP on loopback, to measure what TLS costs the row. With
 * `--e2e-only` the summary gives each row's user and system CPU and how busy the whole machine was
 * (/proc/stat: busy CPUs over the row; 2.00 of 2 means the row was CPU-bound, its own or others' work).
 *
 * Throughput is MB/s (10^6 bytes) of the data set's size over the process's wall time (start-up,
 * repository open and everything included, for both tools).
 */
import { createHash, createHmac } from "node:crypto";
import { constants as zlibConstants, zstdCompressSync } from "node:zlib";
import { parseArgs } from "node:util";
import { DEFAULT_CHUNKER_PARAMS, findCut } from "../engine/repo/chunker.ts";
import nodeCrypto from "node:crypto";
import { createDataApi, localTargetResolver, serveDataApi } from "../engine/bes/data_api.ts";
import { type FileSpec, fillText, generate, patch, planDataSet, Rng, writeContent } from "./bench_dataset.ts";
import { createCertificate } from "../engine/bes/tls.ts";
import { MAX_TOKEN_TTL_SECONDS, signDataToken } from "../engine/protocol/token.ts";
import type { Backend } from "../engine/repo/backend.ts";
import { cpuNow, cpuSince, objectKind, Spans, TracingBackend } from "./bench_trace.ts";
import process from "node:process";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    "size-mib": { type: "string", default: "1024" },
    files: { type: "string" },
    dir: { type: "string" },
    keep: { type: "boolean", default: false },
    "e2e-only": { type: "boolean", default: false },
    trace: { type: "boolean", default: false },
    profile: { type: "string" },
    "packs-in-flight": { type: "string" },
    "plain-http": { type: "boolean", default: false },
  },
});
const SIZE_MIB = Number(values["size-mib"]);
if (!(SIZE_MIB >= 1)) throw new Error(`--size-mib must be a number >= 1, got ${values["size-mib"]}`);
const TOTAL_BYTES = Math.round(SIZE_MIB * 1024 * 1024);
const FILES = values.files ? Number(values.files) : Math.max(20, Math.round(2000 * SIZE_MIB / 1024));
const MIB = 1024 * 1024;
const MB = 1e6;

/** The change pass: 5 % of files modified, 1 % added, 1 % deleted (deterministic). */
async function changePass(root: string, specs: FileSpec[]) {
  const r = new Rng(4242);
  const order = specs.map((_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    const j = r.int(i + 1);
    [order[i], order[j]] = [order[j], order[i]];
  }
  const nMod = Math.max(1, Math.round(specs.length * 0.05));
  const nDel = Math.max(1, Math.round(specs.length * 0.01));
  const nAdd = Math.max(1, Math.round(specs.length * 0.01));
  let modifiedBytes = 0;
  for (const i of order.slice(0, nMod)) {
    const s = specs[i];
    const path = `${root}/${s.path}`;
    if (s.size < 256 * 1024) {
      // A small file is rewritten as a whole (an edited document).
      await writeContent(path, s.kind === "text" ? "text" : "random", 900000 + i, s.size);
      modifiedBytes += s.size;
    } else {
      // A large one gets 64 KiB changed in the middle and 64 KiB appended (a database, a log).
      const len = 64 * 1024;
      await patch(path, r.int(s.size - len), len, 800000 + i);
      const f = await Deno.open(path, { append: true });
      const add = new Uint8Array(len);
      new Rng(700000 + i).fill(add);
      await f.write(add);
      f.close();
      modifiedBytes += 2 * len;
    }
  }
  for (const i of order.slice(nMod, nMod + nDel)) await Deno.remove(`${root}/${specs[i].path}`);
  let addedBytes = 0;
  for (let k = 0; k < nAdd; k++) {
    const base = specs[order[nMod + nDel + k]];
    const size = Math.max(1, base.size);
    await writeContent(`${root}/${base.path}.new`, k % 2 ? "text" : "random", 600000 + k, size);
    addedBytes += size;
  }
  return { modified: nMod, deleted: nDel, added: nAdd, modifiedBytes, addedBytes };
}

// ---------------------------------------------------------------------------------------------------
// Trees: sizes and hashes

async function* walkFiles(dir: string, rel = ""): AsyncGenerator<{ rel: string; path: string }> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  names.sort();
  for (const n of names) {
    const path = `${dir}/${n}`;
    const r = rel ? `${rel}/${n}` : n;
    const info = await Deno.lstat(path);
    if (info.isDirectory) yield* walkFiles(path, r);
    else yield { rel: r, path };
  }
}

async function treeBytes(dir: string): Promise<{ files: number; bytes: number }> {
  let files = 0, bytes = 0;
  for await (const f of walkFiles(dir)) {
    files++;
    bytes += (await Deno.lstat(f.path)).size;
  }
  return { files, bytes };
}

/** SHA-256 over every file's relative path, type, size and content hash, in sorted order. */
async function treeHash(dir: string): Promise<string> {
  const all = createHash("sha256");
  const buf = new Uint8Array(MIB);
  for await (const f of walkFiles(dir)) {
    const info = await Deno.lstat(f.path);
    if (info.isSymlink) {
      all.update(`L ${f.rel} ${await Deno.readLink(f.path)}\n`);
      continue;
    }
    const h = createHash("sha256");
    const file = await Deno.open(f.path);
    try {
      while (true) {
        const n = await file.read(buf);
        if (n === null) break;
        h.update(buf.subarray(0, n));
      }
    } finally {
      file.close();
    }
    all.update(`F ${f.rel} ${info.size} ${h.digest("hex")}\n`);
  }
  return all.digest("hex");
}

// ---------------------------------------------------------------------------------------------------
// The CPU ceiling

function rate(bytes: number, ms: number): number {
  return bytes / MB / (ms / 1000);
}

async function ceiling() {
  const size = MIB;
  const data = new Uint8Array(size);
  new Rng(1).fill(data);
  const text = new Uint8Array(size);
  fillText(new Rng(2), text);
  const key = await crypto.subtle.importKey("raw", new Uint8Array(32).fill(3), "AES-GCM", false, ["encrypt"]);
  const iv = new Uint8Array(12);
  const seal = () => crypto.subtle.encrypt({ name: "AES-GCM", iv }, key, data);
  const BUDGET = 1500;
  const loop = async (fn: () => Promise<unknown> | unknown, inflight = 1) => {
    for (let i = 0; i < 3; i++) await fn(); // warm-up
    let bytes = 0;
    const t0 = performance.now();
    const lanes = Array.from({ length: inflight }, async () => {
      while (performance.now() - t0 < BUDGET) {
        await fn();
        bytes += size;
      }
    });
    await Promise.all(lanes);
    return rate(bytes, performance.now() - t0);
  };
  const idKey = new Uint8Array(32).fill(4);
  return {
    gcmInflight: await loop(seal, 8),
    gcmSingle: await loop(seal, 1),
    sha256: await loop(() => createHash("sha256").update(data).digest()),
    hmac: await loop(() => createHmac("sha256", idKey).update(data).digest()),
    zstdText: await loop(() =>
      zstdCompressSync(text, { params: { [zlibConstants.ZSTD_c_compressionLevel]: 3 } })
    ),
    zstdRandom: await loop(() =>
      zstdCompressSync(data, { params: { [zlibConstants.ZSTD_c_compressionLevel]: 3 } })
    ),
    fastcdc: await loop(() => {
      const p = { ...DEFAULT_CHUNKER_PARAMS, min: 16 * 1024, avg: 64 * 1024, max: 512 * 1024 };
      for (let s = 0; s < size;) s += findCut(data, s, size, p);
    }),
  };
}

// ---------------------------------------------------------------------------------------------------
// Processes

/** Reads a /proc file through `cat`: Deno asks for --allow-all to read /proc itself. */
async function readProc(path: string): Promise<string> {
  const out = await new Deno.Command("cat", { args: [path], stdout: "piped", stderr: "null" }).output();
  if (!out.success) throw new Error(`cannot read ${path}`);
  return new TextDecoder().decode(out.stdout);
}

const TIME_BIN = await Deno.stat("/usr/bin/time").then(() => "/usr/bin/time", () => null);

interface Ran {
  ms: number;
  rssKiB: number;
  /** User + system CPU seconds (from /usr/bin/time; NaN without it). */
  cpuS: number;
  /** User and system CPU seconds apart (NaN without /usr/bin/time). */
  userS: number;
  sysS: number;
  /** The whole machine's busy CPU seconds over the run (every process, kernel threads included; /proc/stat). */
  machineBusyS: number;
  stdout: string;
  stderr: string;
}

/** Runs `cmd`, timing its wall clock and measuring its peak RSS; throws on a non-zero exit. */
async function run(cmd: string[], env: Record<string, string> = {}): Promise<Ran> {
  const argv = TIME_BIN ? [TIME_BIN, "-v", ...cmd] : cmd;
  const busy0 = await machineBusy();
  const t0 = performance.now();
  const child = new Deno.Command(argv[0], { args: argv.slice(1), env, stdout: "piped", stderr: "piped" })
    .spawn();
  let polled = 0;
  let polling = !TIME_BIN;
  const poller = (async () => {
    while (polling) {
      try {
        const st = await readProc(`/proc/${child.pid}/status`);
        polled = Math.max(polled, Number(/VmHWM:\s+(\d+)/.exec(st)?.[1] ?? 0));
      } catch { /* exited */ }
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const out = await child.output();
  const ms = performance.now() - t0;
  const machineBusyS = (await machineBusy()) - busy0;
  polling = false;
  await poller;
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  if (!out.success) {
    throw new Error(`${cmd.join(" ")} exited ${out.code}:\n${stderr.slice(-2000)}`);
  }
  const rss = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(stderr)?.[1] ?? polled);
  const userS = Number(/User time \(seconds\): ([\d.]+)/.exec(stderr)?.[1] ?? NaN);
  const sysS = Number(/System time \(seconds\): ([\d.]+)/.exec(stderr)?.[1] ?? NaN);
  return { ms, rssKiB: rss, cpuS: userS + sysS, userS, sysS, machineBusyS, stdout, stderr };
}

/** Busy CPU seconds of the whole machine since boot (all CPUs: /proc/stat less idle and iowait; NaN elsewhere). */
async function machineBusy(): Promise<number> {
  try {
    const f = (await readProc("/proc/stat")).split("\n")[0].trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return (total - f[3] - f[4]) / 100; // USER_HZ is 100 on Linux
  } catch {
    return NaN;
  }
}

/** `deno task repo`'s command, taken from deno.json, run with this Deno directly (no task runner). */
async function repoCommand(): Promise<string[]> {
  const cfg = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  const parts = (cfg.tasks.repo as string).split(/\s+/);
  if (parts[0] !== "deno") throw new Error(`unexpected repo task: ${cfg.tasks.repo}`);
  const cli = new URL("../engine/cli.ts", import.meta.url).pathname;
  return [Deno.execPath(), ...parts.slice(1).map((p) => p === "engine/cli.ts" ? cli : p)];
}

async function resticVersion(): Promise<string | null> {
  try {
    const out = await new Deno.Command("restic", { args: ["version"], stdout: "piped", stderr: "null" })
      .output();
    return out.success ? new TextDecoder().decode(out.stdout).trim() : null;
  } catch {
    return null;
  }
}

function loadavg(): string {
  return Deno.loadavg().map((x) => x.toFixed(2)).join(" ");
}

// ---------------------------------------------------------------------------------------------------
// The run

interface ToolFigures {
  first: Ran;
  incremental: Ran;
  noChange: Ran;
  restore: Ran;
  repoBytes: number;
  repoBytesAfterFirst: number;
  peakRssKiB: number;
  restoreIdentical: boolean;
}

const base = values.dir ?? await Deno.makeTempDir({ prefix: "cadres-bench-engine-" });
await Deno.mkdir(base, { recursive: true });
const src = `${base}/src`;
const cpu = (await readProc("/proc/cpuinfo")).match(/model name\s*:\s*(.*)/)?.[1] ?? "unknown";
const memGiB = Deno.systemMemoryInfo().total / 1024 / MIB;
const E2E_ONLY = values["e2e-only"];
const restic = E2E_ONLY ? null : await resticVersion();
console.log(`bench:engine — ${new Date().toISOString()}`);
console.log(
  `machine: ${navigator.hardwareConcurrency} CPUs (${cpu}), ${
    memGiB.toFixed(1)
  } GiB RAM; Deno ${Deno.version.deno}; ` +
    `${restic ?? (E2E_ONLY ? "restic: skipped (--e2e-only)" : "restic: not installed")}`,
);
console.log(`load average at start: ${loadavg()}`);
console.log(`peak RSS via ${TIME_BIN ? "/usr/bin/time -v" : "polling /proc/<pid>/status VmHWM every 50 ms"}`);
console.log(`work folder: ${base}${values.keep ? " (kept)" : " (removed at the end)"}`);

const t0 = performance.now();
const specs = planDataSet(TOTAL_BYTES, FILES);
await generate(src, specs);
const gen = await treeBytes(src);
const kinds: Record<string, number> = {};
for (const s of specs) kinds[s.kind] = (kinds[s.kind] ?? 0) + s.size;
console.log(
  `data set: ${gen.files} files, ${(gen.bytes / MIB).toFixed(0)} MiB (` +
    Object.entries(kinds).map(([k, b]) => `${k} ${(100 * b / gen.bytes).toFixed(0)} %`).join(", ") +
    `), generated in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
);

const ceil = await ceiling();
console.log(
  `CPU ceiling (1 MiB buffers, one core unless said): AES-256-GCM WebCrypto ${
    ceil.gcmInflight.toFixed(0)
  } MB/s ` +
    `with 8 calls in flight, ${ceil.gcmSingle.toFixed(0)} MB/s one at a time; SHA-256 (node:crypto) ` +
    `${ceil.sha256.toFixed(0)} MB/s; HMAC-SHA-256 ${ceil.hmac.toFixed(0)} MB/s; zstd -3 text ` +
    `${ceil.zstdText.toFixed(0)} MB/s, random ${ceil.zstdRandom.toFixed(0)} MB/s; FastCDC cut loop ` +
    `${ceil.fastcdc.toFixed(0)} MB/s`,
);
// The racy-file rule (files changed within 2 s of a parent's start are read again) must not blur the
// incrementals: let the clock move past the last write.
await new Promise((r) => setTimeout(r, 2100));

const repoCmd = await repoCommand();
await run([...repoCmd, "help"]); // warms Deno's module cache outside the measurements
const engineRepo = `${base}/engine-repo`;
const keyFile = `${base}/engine.key`;
const HOST = "bench";
const engine = (args: string[]) => run([...repoCmd, ...args, "--repo", engineRepo, "--key-file", keyFile]);

const resticRepo = `${base}/restic-repo`;
const resticEnv = { RESTIC_PASSWORD: "bench-engine-password" };
const resticCmd = (args: string[]) =>
  run(["restic", "--repo", resticRepo, "--cache-dir", `${base}/restic-cache`, ...args], resticEnv);

await engine(["init", "--host", HOST, "--json"]);
let resticRepoDesc = "";
if (restic) {
  await resticCmd(["init"]);
  const v = JSON.parse((await resticCmd(["cat", "config"])).stdout).version;
  resticRepoDesc = `restic repository v${v} (${
    v >= 2 ? "zstd compression, mode auto: the default" : "no compression: v1 has none"
  }), encrypted`;
  console.log(resticRepoDesc);
}

const figures: { engine: Partial<ToolFigures>; restic: Partial<ToolFigures> } = { engine: {}, restic: {} };
const eJson: Record<string, Record<string, unknown>> = {};

async function phase(name: "first" | "incremental" | "noChange") {
  if (restic) {
    figures.restic[name] = await resticCmd(["backup", "--host", HOST, "-q", src]);
    if (name === "first") figures.restic.repoBytesAfterFirst = (await treeBytes(resticRepo)).bytes;
  }
  const parent = name === "first"
    ? []
    : ["--parent", String(eJson[name === "incremental" ? "first" : "incremental"].snapshotId)];
  const r = await engine(["backup", "--host", HOST, "--json", ...parent, src]);
  figures.engine[name] = r;
  eJson[name] = JSON.parse(r.stdout);
  if (name === "first") figures.engine.repoBytesAfterFirst = (await treeBytes(engineRepo)).bytes;
  const e = eJson[name];
  console.log(
    `${name.padEnd(11)}: engine ${
      (r.ms / 1000).toFixed(2)
    } s (${e.files} files, ${e.reusedFiles} unchanged, ` +
      `${((e.bytesRead as number) / MIB).toFixed(0)} MiB read, ${
        ((e.bytesNew as number) / MIB).toFixed(0)
      } MiB new, ` +
      `${((e.bytesStored as number) / MIB).toFixed(0)} MiB stored, peak RSS ${
        (r.rssKiB / 1024).toFixed(0)
      } MiB)` +
      (restic
        ? `; restic ${(figures.restic[name]!.ms / 1000).toFixed(2)} s (peak RSS ${
          (figures.restic[name]!.rssKiB / 1024).toFixed(0)
        } MiB)`
        : ""),
  );
}

await phase("first");

// End to end: agent → BES (data API, HTTPS on loopback) → Local target, the same first backup.
const e2e = await (async () => {
  const tokenKeys = nodeCrypto.generateKeyPairSync("ed25519");
  const besId = "bench-bes";
  const targetId = "bench-target";
  const repository = { target: targetId, path: "cadres/bench/g1", generation: 1 };
  const spans = values.trace ? new Spans() : null;
  const resolve = localTargetResolver({ [targetId]: `${base}/e2e-target` });
  const traced = new Map<Backend, Backend>();
  const api = createDataApi({
    besId,
    tokenPublicKey: tokenKeys.publicKey,
    resolveRepository: spans
      ? async (repo) => {
        const b = await resolve(repo);
        if (!b) return b;
        let t = traced.get(b);
        if (!t) traced.set(b, t = new TracingBackend(b, spans));
        return t;
      }
      : resolve,
  });
  const fetchApi = spans
    ? async (req: Request) => {
      const path = new URL(req.url).pathname.replace(/^\/api\/data\/v1\//, "");
      const kind = `${req.method} ${
        path.startsWith("objects/") ? objectKind(decodeURIComponent(path.slice(8))) : path
      }`;
      return await spans.time(`BES ${kind}`, Number(req.headers.get("content-length") ?? 0), () =>
        api.fetch(req));
    }
    : api.fetch;
  const cert = await createCertificate({ dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
  const certFile = `${base}/e2e-cert.pem`;
  await Deno.writeTextFile(certFile, cert.certPem);
  const stop = new AbortController();
  const plain = values["plain-http"];
  const server = serveDataApi({ fetch: fetchApi }, {
    hostname: "127.0.0.1",
    port: 0,
    ...(plain ? { insecureHttp: true } : { certificate: cert }),
    signal: stop.signal,
  });
  try {
    const iat = Math.floor(Date.now() / 1000);
    const token = signDataToken(tokenKeys.privateKey, {
      v: 1,
      job: "bench-job",
      host: HOST,
      bes: besId,
      repository,
      namespace: HOST,
      access: "write",
      iat,
      exp: iat + MAX_TOKEN_TTL_SECONDS,
    });
    const keys = JSON.stringify({
      namespace: HOST,
      dataKey: crypto.getRandomValues(new Uint8Array(32)).toBase64(),
      idKey: crypto.getRandomValues(new Uint8Array(32)).toBase64(),
    });
    const agent = new URL("./bench_e2e_agent.ts", import.meta.url).pathname;
    const besCpu = cpuNow();
    const ran = await run([
      Deno.execPath(),
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-env",
      "--allow-sys",
      ...(values.profile ? ["--cpu-prof", `--cpu-prof-dir=${values.profile}`] : []),
      agent,
      ...(values.trace ? ["--trace"] : []),
      ...(values["packs-in-flight"] ? ["--packs-in-flight", values["packs-in-flight"]] : []),
      "--url",
      `${plain ? "http" : "https"}://127.0.0.1:${server.addr.port}`,
      "--cert",
      certFile,
      src,
    ], { BENCH_DATA_TOKEN: token, BENCH_KEYS: keys });
    const out = JSON.parse(ran.stdout);
    const repoBytes = (await treeBytes(`${base}/e2e-target/${repository.path}`)).bytes;
    console.log(
      `end to end : agent → BES → Local over loopback ${plain ? "plain HTTP (diagnostic)" : "HTTPS"} ${
        (ran.ms / 1000).toFixed(2)
      } s (${out.files} ` +
        `files, ${(out.bytesStored / MIB).toFixed(0)} MiB stored, repository ${
          (repoBytes / MIB).toFixed(0)
        } MiB, ` +
        `agent peak RSS ${(ran.rssKiB / 1024).toFixed(0)} MiB)`,
    );
    if (spans) {
      for (const l of ran.stderr.split("\n")) if (l.startsWith("TRACE ")) console.log(l.slice(6));
      console.log(spans.report("BES requests and target writes").join("\n"));
    }
    console.log(`BES (this process) CPU during the row: ${cpuSince(besCpu)}`);
    const bes = process.cpuUsage(besCpu);
    return { ...ran, besCpuS: (bes.user + bes.system) / 1e6 };
  } finally {
    stop.abort();
    await server.finished;
    await api.close();
    await Deno.remove(`${base}/e2e-target`, { recursive: true });
  }
})();

if (E2E_ONLY) {
  const lib = rate(gen.bytes, figures.engine.first!.ms);
  const e = rate(gen.bytes, e2e.ms);
  console.log(
    `\nlibrary-only first backup ${lib.toFixed(0)} MB/s (peak RSS ${
      (figures.engine.first!.rssKiB / 1024).toFixed(0)
    } MiB, CPU ${figures.engine.first!.cpuS.toFixed(2)} s); end to end ${e.toFixed(0)} MB/s (agent peak RSS ${
      (e2e.rssKiB / 1024).toFixed(0)
    } MiB, agent CPU ${e2e.cpuS.toFixed(2)} s): ${(e / lib).toFixed(2)}× (aim ≥ 0.8×)`,
  );
  const busy = (r: Ran) =>
    `user ${r.userS.toFixed(2)} s, system ${r.sysS.toFixed(2)} s; machine busy ${
      (r.machineBusyS / (r.ms / 1000)).toFixed(2)
    } of ${navigator.hardwareConcurrency} CPUs`;
  console.log(`library-only CPU ${busy(figures.engine.first!)}; end to end: agent CPU ${busy(e2e)}`);
  // On a machine whose CPUs are all busy, wall-clock throughput follows CPU time: this ratio is the row's
  // bound there, and it moves far less with other work on the machine than the wall-clock ratio does.
  console.log(
    `CPU ratio: library-only CPU / (agent + BES CPU) = ${figures.engine.first!.cpuS.toFixed(2)} / (${
      e2e.cpuS.toFixed(2)
    } + ${e2e.besCpuS.toFixed(2)}) = ${(figures.engine.first!.cpuS / (e2e.cpuS + e2e.besCpuS)).toFixed(2)}×`,
  );
  console.log(`load average at end: ${loadavg()}; total ${((performance.now() - t0) / 1000).toFixed(0)} s`);
  if (!values.keep) await Deno.remove(base, { recursive: true });
  Deno.exit(0);
}

const change = await changePass(src, specs);
console.log(
  `change pass: ${change.modified} files modified (${
    (change.modifiedBytes / MIB).toFixed(1)
  } MiB written), ` +
    `${change.added} added (${(change.addedBytes / MIB).toFixed(1)} MiB), ${change.deleted} deleted`,
);
await new Promise((r) => setTimeout(r, 2100));
await phase("incremental");
await phase("noChange");

const after = await treeBytes(src);
const srcHash = await treeHash(src);
async function restoreCheck(tool: "engine" | "restic", ran: Ran, target: string) {
  const restored = `${target}${src}`;
  const hash = await treeHash(restored);
  figures[tool].restore = ran;
  figures[tool].restoreIdentical = hash === srcHash;
  console.log(
    `restore    : ${tool} ${(ran.ms / 1000).toFixed(2)} s, ${rate(after.bytes, ran.ms).toFixed(0)} MB/s, ` +
      `peak RSS ${(ran.rssKiB / 1024).toFixed(0)} MiB, tree ${
        hash === srcHash ? "byte-identical" : "DIFFERS"
      }`,
  );
  await Deno.remove(target, { recursive: true });
}
if (restic) {
  const target = `${base}/restic-restore`;
  await restoreCheck(
    "restic",
    await resticCmd(["restore", "latest", "--host", HOST, "--target", target]),
    target,
  );
}
{
  const target = `${base}/engine-restore`;
  const r = await engine(["restore", String(eJson.noChange.snapshotId), "--target", target, "--json"]);
  await restoreCheck("engine", r, target);
}
for (const tool of ["engine", "restic"] as const) {
  const f = figures[tool];
  if (!f.first) continue;
  f.repoBytes = (await treeBytes(tool === "engine" ? engineRepo : resticRepo)).bytes;
  f.peakRssKiB = Math.max(f.first.rssKiB, f.incremental!.rssKiB, f.noChange!.rssKiB, f.restore!.rssKiB);
}

// ---------------------------------------------------------------------------------------------------
// The table of ENGINE.md §6

const E = figures.engine as ToolFigures;
const R = restic ? figures.restic as ToolFigures : null;
const firstRate = (f: ToolFigures) => rate(gen.bytes, f.first.ms);
const restoreRate = (f: ToolFigures) => rate(after.bytes, f.restore.ms);
const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const mib = (b: number) => `${(b / MIB).toFixed(0)} MiB`;
type Row = [string, string, string, number | null, string, boolean];
const ratio = (a: number, b: number | undefined) => (b ? a / b : null);
const rows: Row[] = [
  [
    "first backup throughput",
    `${firstRate(E).toFixed(0)} MB/s`,
    R ? `${firstRate(R).toFixed(0)} MB/s` : "—",
    R ? firstRate(E) / firstRate(R) : null,
    "≥ 1.0× restic",
    R ? firstRate(E) >= firstRate(R) : false,
  ],
  [
    "first backup, agent → BES → Local over loopback HTTPS (ratio: to the engine's library-only)",
    `${rate(gen.bytes, e2e.ms).toFixed(0)} MB/s`,
    "—",
    rate(gen.bytes, e2e.ms) / firstRate(E),
    "≥ 0.8× library-only",
    rate(gen.bytes, e2e.ms) >= 0.8 * firstRate(E),
  ],
  [
    "incremental after the change pass",
    s(E.incremental.ms),
    R ? s(R.incremental.ms) : "—",
    ratio(E.incremental.ms, R?.incremental.ms),
    "≤ 1.0× restic's time",
    R ? E.incremental.ms <= R.incremental.ms : false,
  ],
  [
    "no-change incremental",
    s(E.noChange.ms),
    R ? s(R.noChange.ms) : "—",
    ratio(E.noChange.ms, R?.noChange.ms),
    "≤ 1.0× restic's time",
    R ? E.noChange.ms <= R.noChange.ms : false,
  ],
  [
    "full restore throughput",
    `${restoreRate(E).toFixed(0)} MB/s`,
    R ? `${restoreRate(R).toFixed(0)} MB/s` : "—",
    R ? restoreRate(E) / restoreRate(R) : null,
    "≥ 1.0× restic",
    R ? restoreRate(E) >= restoreRate(R) : false,
  ],
  [
    "repository size",
    mib(E.repoBytes),
    R ? mib(R.repoBytes) : "—",
    ratio(E.repoBytes, R?.repoBytes),
    "≤ 1.05× restic's",
    R ? E.repoBytes <= 1.05 * R.repoBytes : false,
  ],
  [
    "peak RSS of the engine",
    mib(E.peakRssKiB * 1024),
    R ? mib(R.peakRssKiB * 1024) : "—",
    ratio(E.peakRssKiB, R?.peakRssKiB),
    "≤ 512 MiB",
    E.peakRssKiB <= 512 * 1024,
  ],
];
const table = [
  ["figure", "engine", "restic", "ratio", "aim", "verdict"],
  ...rows.map(([f, e, r, q, a, met]) => [
    f,
    e,
    r,
    q === null ? "—" : `${q.toFixed(2)}×`,
    a,
    q === null && a.includes("restic") ? "no reference" : met ? "met" : "NOT MET",
  ]),
];
const widths = table[0].map((_, c) => Math.max(...table.map((row) => row[c].length)));
console.log("");
console.log(
  `Data set ${gen.files} files / ${mib(gen.bytes)} (after the change pass ${after.files} files / ${
    mib(after.bytes)
  }); ${R ? resticRepoDesc : "restic not installed: skipped"}; ` +
    "engine AES-256-GCM, zstd, dedup on.",
);
for (const [i, row] of table.entries()) {
  console.log(`| ${row.map((c, k) => c.padEnd(widths[k])).join(" | ")} |`);
  if (i === 0) console.log(`| ${widths.map((w) => "-".repeat(w)).join(" | ")} |`);
}
console.log(
  `Repository size after the first backup: engine ${mib(E.repoBytesAfterFirst)}` +
    (R ? `, restic ${mib(R.repoBytesAfterFirst)}` : "") + ".",
);
if (!R) console.log("restic: not installed (apt install restic) — skipped; the ratios need it.");
console.log(
  `Crypto ceiling: AES-256-GCM (WebCrypto) ${ceil.gcmInflight.toFixed(0)} MB/s with 8 in flight, ` +
    `${ceil.gcmSingle.toFixed(0)} MB/s single; SHA-256 (node:crypto) ${ceil.sha256.toFixed(0)} MB/s.`,
);
console.log(`load average at end: ${loadavg()}; total ${((performance.now() - t0) / 1000).toFixed(0)} s`);

if (!values.keep) await Deno.remove(base, { recursive: true });
if (!E.restoreIdentical) {
  console.error("FAIL: the engine's restore is not byte-identical to the source tree");
  Deno.exit(1);
}
if (R && !R.restoreIdentical) console.error("warning: restic's restore differs from the source tree");
