/**
 * BES simulator: N simulated engines register with an org (or account) secret, sign every request,
 * heartbeat on an interval with plausible health metrics, and report the capacity of the storage
 * targets the control plane lists for them. Capacity follows `simulatedCapacity()`, a deterministic
 * curve (steady growth, a weekly prune sawtooth, small noise), so history can be backfilled with past
 * timestamps and the live reports continue it.
 *
 *   deno run -A tools/simulator.ts --url http://localhost:8000 --secret cdo_… [--count 5] [--interval 60]
 */
import { parseArgs } from "node:util";
import { EngineClient, type EngineIdentity, type Fetcher } from "./engine_client.ts";

const TB = 1024 ** 4;
/** The engine version simulated engines report. */
export const SIMULATED_VERSION = "2.4.1";

/** A stable pseudo-random number in [0, 1) from a string and an integer. */
function hash01(seed: string, n: number): number {
  let h = 2166136261 ^ n;
  for (let i = 0; i < seed.length; i++) h = Math.imul(h ^ seed.charCodeAt(i), 16777619);
  h = Math.imul(h ^ (h >>> 15), 2246822507);
  h = Math.imul(h ^ (h >>> 13), 3266489909);
  return ((h ^ (h >>> 16)) >>> 0) / 4294967296;
}

/** Options that shape one target's curve; `fillDays` is roughly when it would be full. */
export interface CapacityProfile {
  totalBytes: number;
  /** Usage at `startAt`, 0–1. */
  startUsage: number;
  /** Net growth per day as a share of total (before pruning). */
  dailyGrowth: number;
  startAt: number;
}

/** A profile derived from the target id, unless one is given. */
export function profileFor(targetId: string, startAt: number): CapacityProfile {
  const r = hash01(targetId, 1);
  return {
    totalBytes: [2, 4, 8, 16, 32][Math.floor(hash01(targetId, 2) * 5)] * TB,
    startUsage: 0.25 + r * 0.35,
    dailyGrowth: 0.0015 + hash01(targetId, 3) * 0.003,
    startAt,
  };
}

/** Capacity of a simulated target at time `at` (ms). Used bytes never exceed total. */
export function simulatedCapacity(profile: CapacityProfile, seed: string, at: number) {
  const days = Math.max(0, (at - profile.startAt) / 86_400_000);
  const weekPhase = (days % 7) / 7; // grows during the week, retention prunes part of it back
  const prune = 0.004 * weekPhase;
  const noise = (hash01(seed, Math.floor(at / 60_000)) - 0.5) * 0.0008;
  const usage = Math.min(
    0.999,
    Math.max(0.01, profile.startUsage + profile.dailyGrowth * days * 0.85 + prune + noise),
  );
  const usedBytes = Math.round(profile.totalBytes * usage);
  return { totalBytes: profile.totalBytes, usedBytes, freeBytes: profile.totalBytes - usedBytes };
}

/** Health metrics that wander plausibly; `stress` pushes memory and disk up (to show `degraded`). */
export function simulatedMetrics(seed: string, at: number, bootAt: number, stress = 0) {
  const m = Math.floor(at / 60_000);
  return {
    cpuPercent: Math.min(
      100,
      Math.max(0, Math.round((20 + 40 * hash01(seed, m) + 15 * Math.sin(m / 30)) * 10) / 10),
    ),
    memoryPercent: Math.min(100, Math.round((45 + 15 * hash01(seed, m + 7) + stress) * 10) / 10),
    diskPercent: Math.min(100, Math.round((35 + 5 * hash01(seed, 11) + stress) * 10) / 10),
    activeJobs: Math.floor(hash01(seed, m + 3) * 6),
    uptimeSeconds: Math.max(0, Math.floor((at - bootAt) / 1000)),
  };
}

export interface SimulatedEngine {
  identity: EngineIdentity;
  name: string;
  stress: number;
  bootAt: number;
  targetIds: string[];
}

/** Registers `count` engines with `secret`; names are `<prefix>-01`… */
export async function registerSimulatedEngines(
  client: EngineClient,
  secret: string,
  count: number,
  prefix = "sim-bes",
): Promise<SimulatedEngine[]> {
  const engines: SimulatedEngine[] = [];
  for (let i = 1; i <= count; i++) {
    const name = `${prefix}-${String(i).padStart(2, "0")}`;
    const { identity, response, body } = await client.registerBes(secret, {
      name,
      hostname: `${name}.backup.internal`,
      ipAddress: `10.${40 + (i >> 8)}.${i & 255}.${10 + (hash01(prefix, i) * 200) | 0}`,
      version: SIMULATED_VERSION,
    });
    if (response.status >= 300) throw new Error(`Registration of ${name} failed: ${JSON.stringify(body)}`);
    engines.push({
      identity,
      name,
      stress: 0,
      bootAt: client.clock().getTime() - 3 * 86_400_000,
      targetIds: [],
    });
  }
  return engines;
}

/** One heartbeat of one engine, with capacity for the targets it learned from the previous reply. */
export async function heartbeatOnce(
  client: EngineClient,
  engine: SimulatedEngine,
  profileStart: number,
  profiles: Map<string, CapacityProfile> = new Map(),
) {
  const now = client.clock().getTime();
  const storage = engine.targetIds.map((targetId) => ({
    targetId,
    ...simulatedCapacity(profiles.get(targetId) ?? profileFor(targetId, profileStart), targetId, now),
  }));
  const res = await client.heartbeat(
    engine.identity,
    simulatedMetrics(engine.name, now, engine.bootAt, engine.stress),
    storage.length ? storage : undefined,
    SIMULATED_VERSION,
  );
  const body = await res.json();
  if (res.ok && Array.isArray(body.storageTargetIds)) engine.targetIds = body.storageTargetIds;
  return { status: res.status, body };
}

/** Heartbeats every engine every `intervalMs` until `signal` aborts. */
export async function runHeartbeats(
  client: EngineClient,
  engines: SimulatedEngine[],
  options: {
    intervalMs: number;
    profileStart: number;
    signal: AbortSignal;
    profiles?: Map<string, CapacityProfile>;
    onError?: (e: unknown) => void;
  },
): Promise<void> {
  while (!options.signal.aborted) {
    await Promise.all(
      engines.map((e) =>
        heartbeatOnce(client, e, options.profileStart, options.profiles).catch(options.onError)
      ),
    );
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, options.intervalMs);
      options.signal.addEventListener("abort", () => {
        clearTimeout(t);
        resolve();
      }, { once: true });
    });
  }
}

export type { Fetcher };

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      url: { type: "string", default: "http://localhost:8000" },
      secret: { type: "string" },
      count: { type: "string", default: "5" },
      interval: { type: "string", default: "60" },
      prefix: { type: "string", default: "sim-bes" },
    },
  });
  if (!values.secret) {
    console.error(
      "Usage: deno run -A tools/simulator.ts --url URL --secret ORG_OR_ACCOUNT_SECRET [--count N] [--interval S]",
    );
    Deno.exit(2);
  }
  const client = new EngineClient(values.url!);
  const engines = await registerSimulatedEngines(client, values.secret, Number(values.count), values.prefix);
  console.error(
    `Registered ${engines.length} simulated engines; heartbeating every ${values.interval} s (Ctrl-C stops).`,
  );
  const controller = new AbortController();
  Deno.addSignalListener("SIGINT", () => controller.abort());
  await runHeartbeats(client, engines, {
    intervalMs: Number(values.interval) * 1000,
    profileStart: Date.now() - 120 * 86_400_000,
    signal: controller.signal,
    onError: (e) => console.error(String(e)),
  });
}

// ---------------------------------------------------------------------------------------------------
// Job handling: simulated agents and BES claim jobs and post realistic results.

/** Chain state per (policy, host): the last restore point, so incrementals have a parent. */
const chains = new Map<string, { chainId: string; lastId: string }>();

/**
 * A plausible result for a claimed job at `now`: durations of minutes, sizes from the payload's target,
 * about 6 % failures (target unreachable, retryable), 5 % warnings (some files unreadable), and
 * verifications that now and then come back partial or failed.
 */
export function simulatedResult(
  job: { id: string; kind: string; payload: Record<string, unknown> },
  now: Date,
) {
  const roll = hash01(job.id, 7);
  const started = new Date(now.getTime() + 5_000);
  const minutes = 2 + Math.floor(hash01(job.id, 8) * 25);
  const ended = new Date(started.getTime() + minutes * 60_000);
  const base = { startedAt: started.toISOString(), endedAt: ended.toISOString(), retryable: false };
  if (job.kind === "backup" || job.kind === "synthetic_full") {
    const hooks = (job.payload.hooks ?? []) as Array<{ id: string; type: string; failOnError: boolean }>;
    const hookOutput = hooks.map((h) => ({
      hookId: h.id,
      type: h.type,
      exitCode: 0,
      output: `[${h.type}] started\n[${h.type}] done in ${1 + Math.floor(hash01(job.id + h.id, 3) * 9)} s`,
    }));
    const failing = hooks.find((h) => h.failOnError);
    if (failing && roll >= 0.97) {
      const i = hooks.indexOf(failing);
      hookOutput[i] = {
        ...hookOutput[i],
        exitCode: 2,
        output: `[${failing.type}] started\nerror: could not quiesce the database (lock timeout)`,
      };
      return {
        ...base,
        status: "failed" as const,
        bytesTransferred: 0,
        protectedBytes: 0,
        error: {
          reason: "HOOK_FAILED",
          message: `${failing.type} hook exited with 2\nerror: could not quiesce the database (lock timeout)`,
        },
        retryable: true,
        hookOutput: hookOutput.slice(0, i + 1),
      };
    }
    if (roll < 0.06) {
      return {
        ...base,
        status: "failed" as const,
        bytesTransferred: 0,
        protectedBytes: 0,
        error: { reason: "TARGET_UNREACHABLE", message: "Storage target did not answer within 60 s" },
        retryable: true,
        hookOutput,
      };
    }
    const kind = String(job.payload.runKind ?? (job.kind === "synthetic_full" ? "synthetic_full" : "full"));
    const chainKey = `${job.payload.policyId}:${job.payload.hostId ?? "bes"}`;
    const id = crypto.randomUUID();
    const previous = chains.get(chainKey);
    const fresh = kind !== "incremental" || !previous;
    const chainId = fresh ? crypto.randomUUID() : previous.chainId;
    chains.set(chainKey, { chainId, lastId: id });
    const size = Math.round((fresh ? 40 : 2) * 1024 ** 3 * (0.5 + hash01(job.id, 9)));
    const warning = roll < 0.11;
    return {
      ...base,
      status: warning ? "warning" as const : "success" as const,
      bytesTransferred: size,
      protectedBytes: size * (fresh ? 1 : 20),
      error: warning ? { reason: "PARTIAL_FILES", message: "3 files were locked and skipped" } : null,
      hookOutput,
      output: {
        restorePoint: {
          id,
          chainId,
          type: fresh && kind === "incremental" ? "full" : kind,
          parentId: fresh ? null : previous.lastId,
          sizeBytes: size,
          fileCount: Math.round(size / 250_000),
          completedAt: ended.toISOString(),
        },
      },
    };
  }
  if (job.kind === "verify") {
    const status = roll < 0.03 ? "failed" : roll < 0.1 ? "partial" : "passed";
    const sampled = Number(job.payload.sampleCount ?? 50);
    return {
      ...base,
      status: status === "passed"
        ? "success" as const
        : status === "partial"
        ? "warning" as const
        : "failed" as const,
      bytesTransferred: 0,
      protectedBytes: 0,
      error: status === "passed" ? null : {
        reason: "VERIFY_MISMATCH",
        message: `${status === "partial" ? 2 : sampled} sampled files differ`,
      },
      output: {
        verification: {
          status,
          sampled,
          failedCount: status === "passed" ? 0 : status === "partial" ? 2 : sampled,
          details: "",
        },
      },
    };
  }
  if (job.kind === "replicate") {
    const bytes = Math.round(8 * 1024 ** 3 * hash01(job.id, 10));
    return {
      ...base,
      status: "success" as const,
      bytesTransferred: bytes,
      protectedBytes: bytes,
      output: {
        replication: { restorePointId: job.payload.restorePointId, targetId: job.payload.targetId, bytes },
      },
    };
  }
  return { ...base, status: "success" as const, bytesTransferred: 0, protectedBytes: 0 };
}

/** Claims and finishes the queued jobs of an engine over the signed protocol (live simulation). */
export async function processJobs(client: EngineClient, identity: EngineIdentity): Promise<number> {
  const res = await client.post(identity, `/api/${identity.kind}/v1/jobs/claim`, { max: 10 });
  if (!res.ok) return 0;
  const { jobs } = await res.json() as {
    jobs: Array<{ id: string; kind: string; payload: Record<string, unknown> }>;
  };
  for (const job of jobs) {
    await (await client.post(identity, `/api/${identity.kind}/v1/jobs/${job.id}/progress`, {
      percent: 50,
      bytesTransferred: 0,
      message: "running",
    })).body?.cancel();
    const result = simulatedResult(job, new Date(Date.now() - 30 * 60_000));
    await (await client.post(identity, `/api/${identity.kind}/v1/jobs/${job.id}/result`, result)).body
      ?.cancel();
  }
  return jobs.length;
}
