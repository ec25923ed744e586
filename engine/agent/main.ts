/**
 * The Cadres host agent (docs/engines.md "Agent"):
 *
 *   deno task agent --control-plane URL --secret SECRET --data DIR [--include-root PATH]...
 *
 * Enrolls with a signed enrollment (its Ed25519 key is created once in DIR), reports its default roots,
 * heartbeats with real metrics, and claims and runs its jobs — backups, restores, health checks — posting
 * progress every few seconds and one result per job. `deno task agent pre-patch --data DIR
 * --control-plane URL [--wait]` asks for the pre-patch backups of the host's policies and waits for them.
 * `deno task agent recover --bes URL --bes-cert FILE --token TOKEN --disk PATH` performs a bare-metal
 * restore (engine/agent/recover.ts).
 */
import { parseArgs } from "node:util";
import { ControlPlane } from "./control.ts";
import { loadIdentity, saveIdentity } from "./identity.ts";
import { JobHandle, type Logger } from "./job_handle.ts";
import { type AgentContext, runJob } from "./jobs.ts";
import { MetricsSampler } from "./metrics.ts";
import { AgentState } from "./state.ts";
import { absolutePath } from "../repo/fs.ts";
import { ControlPlaneError } from "./failure.ts";
import { DEFAULT_CACHE_MAX_BYTES } from "./cache.ts";
import { parseRecoverArgs, recover, RECOVER_USAGE, RecoverUsageError } from "./recover.ts";

export const AGENT_VERSION = "1.0.0";

const USAGE = `Usage:
  deno task agent --control-plane URL (--secret SECRET | --secret-file FILE) --data DIR [options]
  deno task agent pre-patch --control-plane URL --data DIR [--reason TEXT] [--wait] [--timeout SECONDS]
  deno task agent recover --bes URL --bes-cert FILE --token TOKEN --disk PATH   (bare-metal restore; recover --help)

Options:
  --include-root PATH     a default root, backed up when a policy names no include paths (repeat; default /)
  --hostname NAME         the host name to enroll with (default: this machine's)
  --ip ADDRESS            the address to report (default: the first non-loopback IPv4 address)
  --relay                 enroll as a relay agent (runs storage health checks)
  --snapshot-hook PATH    the VSS snapshot hook (LVM/btrfs; see engine/agent/snapshot-hook.sh)
  --ca-cert FILE          trust this certificate (PEM) for the control plane's HTTPS
  --max-jobs N            jobs run at once (default 2)
  --poll-seconds N        how often to ask for jobs (default 5)
  --progress-seconds N    how often a running job reports progress (default 3)
  --cache-max-mib N       size of the local cache of trees and index in DIR/cache (default 1024; 0: off)
  --once                  enroll, heartbeat once, run the jobs waiting, and exit (for scripts and tests)`;

interface AgentOptions {
  controlPlane: string;
  secret: string | null;
  dataDir: string;
  defaultRoots: string[];
  hostname: string;
  ipAddress: string;
  relay: boolean;
  snapshotHook: string | null;
  caCert: string | null;
  maxJobs: number;
  pollSeconds: number;
  progressSeconds: number;
  /** Bound of the cache of trees and index, in bytes; 0: no cache. */
  cacheMaxBytes: number;
  once: boolean;
}

const log: Logger = (level, message) => {
  const line = `${new Date().toISOString()} ${level.toUpperCase()} ${message}`;
  if (level === "info") console.log(line);
  else console.error(line);
};

function firstAddress(): string {
  try {
    const ifs = Deno.networkInterfaces().filter((i) => i.family === "IPv4" && !i.address.startsWith("127."));
    return ifs[0]?.address ?? "127.0.0.1";
  } catch {
    return "127.0.0.1";
  }
}

function positiveInt(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} must be a positive number`);
  return n;
}

class UsageError extends Error {}

function cacheBytes(value: string | undefined): number {
  if (value === undefined) return DEFAULT_CACHE_MAX_BYTES;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) throw new UsageError("--cache-max-mib must be 0 (no cache) or more");
  return Math.floor(n * 1024 * 1024);
}

async function parseOptions(args: string[]): Promise<AgentOptions> {
  const { values } = parseArgs({
    args,
    options: {
      "control-plane": { type: "string" },
      secret: { type: "string" },
      "secret-file": { type: "string" },
      data: { type: "string" },
      "include-root": { type: "string", multiple: true },
      hostname: { type: "string" },
      ip: { type: "string" },
      relay: { type: "boolean" },
      "snapshot-hook": { type: "string" },
      "ca-cert": { type: "string" },
      "max-jobs": { type: "string" },
      "poll-seconds": { type: "string" },
      "progress-seconds": { type: "string" },
      "cache-max-mib": { type: "string" },
      once: { type: "boolean" },
    },
    strict: true,
  });
  const controlPlane = values["control-plane"];
  if (!controlPlane || !/^https?:\/\/[^/]+/.test(controlPlane)) {
    throw new UsageError("--control-plane URL is required (https://cadres.example.com)");
  }
  if (!values.data) throw new UsageError("--data DIR is required (where the agent keeps its key and state)");
  let secret = values.secret ?? Deno.env.get("CADRES_AGENT_SECRET") ?? null;
  if (values["secret-file"]) secret = (await Deno.readTextFile(values["secret-file"])).trim();
  const roots = (values["include-root"] ?? []).map((r) => {
    if (!r.startsWith("/")) throw new UsageError(`--include-root ${r}: give an absolute path`);
    return absolutePath(r, "/");
  });
  if (roots.length > 64) throw new UsageError("At most 64 --include-root paths");
  const hook = values["snapshot-hook"] ?? null;
  return {
    controlPlane: controlPlane.replace(/\/+$/, ""),
    secret,
    dataDir: absolutePath(values.data),
    defaultRoots: roots.length > 0 ? [...new Set(roots)] : ["/"],
    hostname: values.hostname ?? Deno.hostname(),
    ipAddress: values.ip ?? firstAddress(),
    relay: values.relay ?? false,
    snapshotHook: hook ? absolutePath(hook) : null,
    caCert: values["ca-cert"] ? await Deno.readTextFile(values["ca-cert"]) : null,
    maxJobs: Math.floor(positiveInt(values["max-jobs"], 2, "max-jobs")),
    pollSeconds: positiveInt(values["poll-seconds"], 5, "poll-seconds"),
    progressSeconds: positiveInt(values["progress-seconds"], 3, "progress-seconds"),
    cacheMaxBytes: cacheBytes(values["cache-max-mib"]),
    once: values.once ?? false,
  };
}

function osName(): string {
  try {
    const release = Deno.readTextFileSync("/etc/os-release");
    const pretty = /^PRETTY_NAME="?([^"\n]+)"?/m.exec(release)?.[1];
    if (pretty) return pretty.slice(0, 100);
  } catch {
    // not Linux, or no os-release
  }
  return `${Deno.build.os} ${Deno.osRelease()}`.slice(0, 100);
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });

/** Enrolls (again) until the control plane answers; a refusal is final. */
async function enroll(options: AgentOptions, control: ControlPlane, stop: AbortSignal) {
  const identity = await loadIdentity(options.dataDir);
  for (const w of identity.warnings) log("warn", w);
  if (!options.secret) {
    throw new UsageError(
      "--secret, --secret-file or CADRES_AGENT_SECRET is required (the organization secret)",
    );
  }
  for (let delay = 1000;; delay = Math.min(delay * 2, 60_000)) {
    try {
      const enrolled = await control.enroll(options.secret, {
        hostname: options.hostname,
        ipAddress: options.ipAddress,
        os: osName(),
        version: AGENT_VERSION,
        relay: options.relay,
        defaultRoots: options.defaultRoots,
      }, identity);
      if (identity.file.id !== enrolled.id) {
        await saveIdentity(options.dataDir, {
          ...identity.file,
          id: enrolled.id,
          controlPlane: options.controlPlane,
          enrolledAt: new Date().toISOString(),
        });
      }
      log(
        "info",
        `${enrolled.created ? "enrolled" : "enrolled again"} as host ${enrolled.id} (${options.hostname})`,
      );
      return enrolled;
    } catch (e) {
      if (e instanceof ControlPlaneError && e.status !== null && e.status < 500 && e.status !== 429) throw e;
      log("warn", `${(e as Error).message}; retrying in ${Math.round(delay / 1000)} s`);
      await sleep(delay, stop);
      if (stop.aborted) throw new Error("stopped");
    }
  }
}

/** Runs the agent until `stop` aborts (or, with `once`, until the waiting jobs are done). */
export async function runAgent(options: AgentOptions, stop: AbortSignal): Promise<void> {
  const control = new ControlPlane(options.controlPlane, { caCert: options.caCert ?? undefined, log });
  const { heartbeatIntervalSeconds } = await enroll(options, control, stop);
  const state = await AgentState.load(options.dataDir);
  await Deno.mkdir(`${options.dataDir}/tmp`, { recursive: true, mode: 0o700 });
  const metrics = new MetricsSampler(options.defaultRoots[0] ?? "/");
  const running = new Map<string, { handle: JobHandle; done: Promise<void> }>();
  const ctx: AgentContext = {
    control,
    dataDir: options.dataDir,
    hostname: options.hostname,
    defaultRoots: options.defaultRoots,
    state,
    snapshotHook: options.snapshotHook,
    progressIntervalMs: options.progressSeconds * 1000,
    cache: options.cacheMaxBytes > 0
      ? { dir: `${options.dataDir}/cache`, maxBytes: options.cacheMaxBytes }
      : null,
    log,
  };
  let wake: (() => void) | null = null;
  const heartbeat = async () => {
    try {
      const reply = await control.heartbeat({ ...metrics.sample(running.size) }, AGENT_VERSION);
      if (reply.status === "decommissioned") {
        log("warn", "this host is decommissioned: no backups are sent to it");
      }
      if (reply.pendingJobs > 0) wake?.();
    } catch (e) {
      log("warn", (e as Error).message);
    }
  };
  await heartbeat();
  const heartbeatTimer = setInterval(heartbeat, heartbeatIntervalSeconds * 1000);
  const start = (job: Awaited<ReturnType<ControlPlane["claim"]>>[number]) => {
    const handle = new JobHandle(control, job, log, ctx.progressIntervalMs);
    log("info", `job ${job.id}: ${job.kind} started`);
    handle.start();
    const done = (async () => {
      const result = await runJob(ctx, job, handle);
      handle.stop();
      log(
        result.status === "failed" ? "warn" : "info",
        `job ${job.id}: ${job.kind} ${result.status}${
          result.error ? ` (${result.error.reason}: ${result.error.message.split("\n")[0]})` : ""
        }`,
      );
      try {
        await control.result(job.id, result);
      } catch (e) {
        log("error", `job ${job.id}: ${(e as Error).message}`);
      }
      await state.recordJob({ jobId: job.id, kind: job.kind, status: result.status, endedAt: result.endedAt })
        .catch((e) => log("error", `cannot record job ${job.id} in the state file: ${(e as Error).message}`));
    })().finally(() => {
      running.delete(job.id);
      wake?.();
    });
    running.set(job.id, { handle, done });
  };
  const onStop = () => {
    for (const { handle } of running.values()) handle.abort("stopping");
  };
  stop.addEventListener("abort", onStop, { once: true });
  try {
    while (!stop.aborted) {
      const free = options.maxJobs - running.size;
      let claimed = 0;
      if (free > 0) {
        try {
          const jobs = await control.claim(free);
          claimed = jobs.length;
          for (const job of jobs) start(job);
        } catch (e) {
          log("warn", (e as Error).message);
        }
      }
      if (options.once && claimed === 0 && running.size === 0) break;
      if (claimed > 0 && running.size < options.maxJobs) continue;
      await new Promise<void>((resolve) => {
        wake = resolve;
        sleep(options.pollSeconds * 1000, stop).then(resolve);
      });
      wake = null;
    }
  } finally {
    stop.removeEventListener("abort", onStop);
    clearInterval(heartbeatTimer);
    await Promise.allSettled([...running.values()].map((r) => r.done));
    control.close();
  }
}

/** `agent pre-patch`: asks for the pre-patch backups and, with --wait, waits until the agent ran them. */
async function prePatch(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      "control-plane": { type: "string" },
      data: { type: "string" },
      reason: { type: "string" },
      wait: { type: "boolean" },
      timeout: { type: "string" },
      "ca-cert": { type: "string" },
    },
    strict: true,
  });
  if (!values["control-plane"] || !values.data) {
    throw new UsageError("--control-plane URL and --data DIR are required");
  }
  const dataDir = absolutePath(values.data);
  const identity = await loadIdentity(dataDir);
  if (!identity.file.id) throw new UsageError(`The agent in ${dataDir} has not enrolled yet: start it first`);
  const control = new ControlPlane(values["control-plane"], {
    caCert: values["ca-cert"] ? await Deno.readTextFile(values["ca-cert"]) : undefined,
  });
  try {
    // Signed as the enrolled agent (its key in the data folder): no secret is needed.
    control.useIdentity({
      id: identity.file.id,
      privateKey: identity.privateKey,
      publicKey: identity.publicKey,
    });
    const { runs } = await control.prePatch(values.reason);
    if (runs.length === 0) {
      console.log("No policy of this host asks for a pre-patch backup: patch at will.");
      return 0;
    }
    console.log(
      `Pre-patch backups queued: ${runs.map((r) => `policy ${r.policyId} (job ${r.jobId})`).join(", ")}`,
    );
    if (!values.wait) return 0;
    const deadline = Date.now() + positiveInt(values.timeout, 6 * 3600, "timeout") * 1000;
    const pending = new Set(runs.map((r) => r.jobId).filter((j): j is string => !!j));
    let failed = 0;
    while (pending.size > 0) {
      if (Date.now() > deadline) {
        console.error(`Timed out waiting for ${pending.size} pre-patch backup(s)`);
        return 2;
      }
      const state = await AgentState.load(dataDir);
      for (const jobId of [...pending]) {
        const done = state.job(jobId);
        if (!done) continue;
        pending.delete(jobId);
        console.log(`job ${jobId}: ${done.status}`);
        if (done.status === "failed") failed++;
      }
      if (pending.size > 0) await sleep(2000);
    }
    return failed > 0 ? 1 : 0;
  } finally {
    control.close();
  }
}

if (import.meta.main) {
  const args = [...Deno.args];
  try {
    if (args[0] === "pre-patch") Deno.exit(await prePatch(args.slice(1)));
    if (args[0] === "recover") {
      if (args.includes("--help") || args.includes("-h")) {
        console.log(RECOVER_USAGE);
        Deno.exit(0);
      }
      let recoverOptions;
      try {
        recoverOptions = await parseRecoverArgs(args.slice(1), { token: Deno.env.get("CADRES_BMR_TOKEN") });
      } catch (e) {
        if (!(e instanceof RecoverUsageError)) throw e;
        console.error(`${e.message}\n\n${RECOVER_USAGE}`);
        Deno.exit(64);
      }
      const outcome = await recover(recoverOptions, log);
      Deno.exit(outcome.status === "success" ? 0 : 1);
    }
    if (args[0] === "--help" || args[0] === "-h") {
      console.log(USAGE);
      Deno.exit(0);
    }
    const options = await parseOptions(args);
    const stop = new AbortController();
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      Deno.addSignalListener(signal, () => {
        log("info", `${signal}: stopping (running jobs are stopped and reported as failed, retryable)`);
        stop.abort();
      });
    }
    await runAgent(options, stop.signal);
    Deno.exit(0);
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`${e.message}\n\n${USAGE}`);
      Deno.exit(64);
    }
    log("error", (e as Error).message);
    Deno.exit(1);
  }
}
