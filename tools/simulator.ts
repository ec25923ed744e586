/**
 * BES simulator: N simulated engines register with an org (or account) secret, signed by their own
 * key (proof of possession, see EngineClient.registerBes), sign every later request, heartbeat on an
 * interval with plausible health metrics, and report the capacity of the storage targets the control
 * plane lists for them. Capacity follows `simulatedCapacity()`, a deterministic
 * curve (steady growth, a weekly prune sawtooth, small noise), so history can be backfilled with past
 * timestamps and the live reports continue it.
 *
 *   deno run -A tools/simulator.ts --url http://localhost:8000 --secret cdo_… [--count 5] [--interval 60]
 */
import { parseArgs } from "node:util";
import { EngineClient, type EngineIdentity, type Fetcher } from "./engine_client.ts";
import { globRegExp } from "../engine/repo/glob.ts";

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
    const files = Math.round(size / 250_000) * (fresh ? 1 : 20);
    const changed = fresh ? files : Math.round(size / 250_000);
    const locked = ["/var/lib/mysql/ibdata1", "/var/log/journal/system.journal", "/home/ann/.cache/lock"];
    return {
      ...base,
      status: warning ? "warning" as const : "success" as const,
      bytesTransferred: size,
      protectedBytes: size * (fresh ? 1 : 20),
      error: warning ? { reason: "PARTIAL_FILES", message: "3 files were locked and skipped" } : null,
      hookOutput,
      // What the engine measured (the protocol's `stats`) and the files it could not read.
      stats: {
        files,
        dirs: Math.max(1, Math.round(files / 40)),
        bytesRead: fresh ? size : Math.round(size * 1.2),
        bytesNew: Math.round(size * 0.9),
        bytesStored: Math.round(size * 0.55),
        durationMs: minutes * 60_000,
        added: fresh ? files : Math.round(changed * 0.2),
        modified: fresh ? 0 : Math.round(changed * 0.75),
        deleted: fresh ? 0 : Math.round(changed * 0.05),
      },
      errors: warning ? locked.map((path) => ({ path, message: "locked by another process; skipped" })) : [],
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
  if (job.kind === "browse" || job.kind === "search") return restoreBrowseResult(job, base);
  if (job.kind === "file_history") return simulatedFileHistory(job, base);
  if (job.kind === "restore_files" || job.kind === "restore_image" || job.kind === "bmr") {
    return simulatedRestoreResult(job, base);
  }
  return { ...base, status: "success" as const, bytesTransferred: 0, protectedBytes: 0 };
}

// ---------------------------------------------------------------------------------------------------
// Restore: a synthetic but consistent file tree per restore point. Every folder's children derive from
// a hash of (restore point, folder path), so the same point always shows the same tree, browse and
// search agree with each other, and a file restore counts exactly the files the tree holds.

/** One entry of a simulated tree (the protocol's TreeEntry). */
export interface SimulatedEntry {
  path: string;
  name: string;
  type: "dir" | "file";
  size: number;
  modifiedAt: string;
}

const TREE_DEPTH = 4;
const DIR_NAMES = [
  "etc",
  "home",
  "srv",
  "opt",
  "data",
  "projects",
  "reports",
  "finance",
  "shared",
  "archive",
  "logs",
  "config",
  "media",
  "scripts",
  "exports",
  "invoices",
  "contracts",
  "customers",
  "warehouse",
  "payroll",
];
const FILE_STEMS = [
  "report",
  "notes",
  "invoice",
  "budget",
  "settings",
  "readme",
  "photo",
  "contract",
  "summary",
  "export",
  "inventory",
  "schedule",
  "backup",
  "orders",
  "manifest",
];
const EXTENSIONS = [
  ".pdf",
  ".txt",
  ".xlsx",
  ".docx",
  ".yaml",
  ".json",
  ".log",
  ".csv",
  ".jpg",
  ".db",
  ".md",
  ".conf",
];

/** The seed of a restore point's tree: the engine's id of the point when known, else ours. */
export function treeSeed(payload: Record<string, unknown>): string {
  return String(payload.engineRestorePointId ?? payload.restorePointId ?? "");
}

function childPath(folder: string, name: string): string {
  return folder === "/" ? `/${name}` : `${folder}/${name}`;
}

/**
 * The children of `folder` in the tree of `seed`, folders first, sorted by name; `[]` for a path that is
 * not a folder of the tree. Times lie before `pointTime` (the point's completion).
 */
export function simulatedChildren(
  seed: string,
  folder: string,
  pointTime = Date.parse("2026-11-20T00:00:00Z"),
) {
  if (folder !== "/" && simulatedEntry(seed, folder, pointTime)?.type !== "dir") return [];
  return childrenOf(seed, folder, pointTime);
}

function childrenOf(seed: string, folder: string, pointTime: number): SimulatedEntry[] {
  const depth = folder === "/" ? 0 : folder.split("/").length - 1;
  const h = (n: number) => hash01(`${seed}|${folder}`, n);
  const dirCount = depth >= TREE_DEPTH - 1
    ? 0
    : depth === 0
    ? 4 + Math.floor(h(1) * 3)
    : 2 + Math.floor(h(1) * 3);
  const fileCount = depth === 0 ? 1 + Math.floor(h(2) * 2) : 3 + Math.floor(h(2) * (depth + 4));
  const out = new Map<string, SimulatedEntry>();
  const time = (n: number) =>
    new Date(pointTime - Math.floor(h(n) * 400 * 86_400_000 / 1000) * 1000).toISOString();
  for (let i = 0; out.size < dirCount && i < dirCount * 4; i++) {
    const name = DIR_NAMES[Math.floor(h(10 + i) * DIR_NAMES.length)];
    if (!out.has(name)) {
      out.set(name, { path: childPath(folder, name), name, type: "dir", size: 0, modifiedAt: time(40 + i) });
    }
  }
  for (let i = 0; out.size < dirCount + fileCount && i < fileCount * 4; i++) {
    const stem = FILE_STEMS[Math.floor(h(100 + i) * FILE_STEMS.length)];
    const ext = EXTENSIONS[Math.floor(h(200 + i) * EXTENSIONS.length)];
    const name = h(300 + i) < 0.5 ? `${stem}${ext}` : `${stem}-${1 + Math.floor(h(400 + i) * 999)}${ext}`;
    if (out.has(name)) continue;
    // 1 KiB to about 180 MiB, most files small.
    const size = Math.floor(1024 * 2 ** (h(500 + i) ** 2 * 17.5));
    out.set(name, { path: childPath(folder, name), name, type: "file", size, modifiedAt: time(600 + i) });
  }
  return [...out.values()].sort((a, b) =>
    Number(b.type === "dir") - Number(a.type === "dir") || a.name.localeCompare(b.name)
  );
}

/** The entry at `path` in the tree of `seed` (the root is a folder), or null when the tree has none. */
export function simulatedEntry(seed: string, path: string, pointTime = Date.parse("2026-11-20T00:00:00Z")) {
  if (path === "/") {
    return {
      path: "/",
      name: "/",
      type: "dir" as const,
      size: 0,
      modifiedAt: new Date(pointTime).toISOString(),
    };
  }
  const parts = path.split("/").filter(Boolean);
  let folder = "/";
  let entry: SimulatedEntry | null = null;
  for (const part of parts) {
    if (entry && entry.type !== "dir") return null;
    entry = childrenOf(seed, folder, pointTime).find((e) => e.name === part) ?? null;
    if (!entry) return null;
    folder = entry.path;
  }
  return entry;
}

/** Every file under `path` (itself when it is a file). */
export function simulatedFilesUnder(
  seed: string,
  path: string,
  pointTime = Date.parse("2026-11-20T00:00:00Z"),
) {
  const start = simulatedEntry(seed, path, pointTime);
  if (!start) return null;
  if (start.type === "file") return [start];
  const files: SimulatedEntry[] = [];
  const stack = [start.path];
  while (stack.length) {
    for (const e of childrenOf(seed, stack.pop()!, pointTime)) {
      if (e.type === "dir") stack.push(e.path);
      else files.push(e);
    }
  }
  return files;
}

/** A glob (`*`, `?`, `[…]`) or a plain name (substring), case-insensitive, matched against names. */
export function nameMatcher(query: string): (name: string) => boolean {
  if (!/[*?[]/.test(query)) {
    const needle = query.toLowerCase();
    return (name) => name.toLowerCase().includes(needle);
  }
  // Names hold no "/", so the engine's glob ("*" within a component) matches them as a plain glob would.
  let re: RegExp;
  try {
    re = globRegExp(query, { caseInsensitive: true });
  } catch {
    return () => false;
  }
  return (name) => re.test(name);
}

/** Matches of a search over the whole tree, at most `max` (then `truncated`). */
export function simulatedSearch(seed: string, query: string, max = 200, pointTime?: number) {
  const match = nameMatcher(query);
  const matches: SimulatedEntry[] = [];
  const stack = ["/"];
  let truncated = false;
  while (stack.length) {
    for (const e of childrenOf(seed, stack.pop()!, pointTime ?? Date.parse("2026-11-20T00:00:00Z"))) {
      if (e.type === "dir") stack.push(e.path);
      if (!match(e.name)) continue;
      if (matches.length >= max) truncated = true;
      else matches.push(e);
    }
  }
  matches.sort((a, b) => a.path.localeCompare(b.path));
  return { matches, truncated };
}

function pointTimeOf(payload: Record<string, unknown>): number {
  const t = Date.parse(String(payload.completedAt ?? ""));
  return Number.isFinite(t) ? t : Date.parse("2026-11-20T00:00:00Z");
}

function restoreBrowseResult(
  job: { id: string; kind: string; payload: Record<string, unknown> },
  base: { startedAt: string; endedAt: string; retryable: boolean },
) {
  const seed = treeSeed(job.payload);
  const at = pointTimeOf(job.payload);
  // Browse and search take seconds, not minutes.
  const ended = new Date(Date.parse(base.startedAt) + 2_000).toISOString();
  const output = job.kind === "browse"
    ? { entries: simulatedChildren(seed, String(job.payload.path ?? "/"), at), truncated: false }
    : simulatedSearch(seed, String(job.payload.query ?? ""), 200, at);
  return {
    ...base,
    endedAt: ended,
    status: "success" as const,
    bytesTransferred: 0,
    protectedBytes: 0,
    output,
  };
}

/**
 * A `file_history` answer from the simulated trees: each point of the payload is looked up in its own tree
 * (`treeSeed` of the point); the content ids derive from the entry, so equal entries give equal ids.
 */
function simulatedFileHistory(
  job: { id: string; kind: string; payload: Record<string, unknown> },
  base: { startedAt: string; endedAt: string; retryable: boolean },
) {
  const path = String(job.payload.path ?? "/");
  const points = Array.isArray(job.payload.points) ? job.payload.points as Record<string, unknown>[] : [];
  const hex = (text: string) =>
    Array.from(
      { length: 8 },
      (_, i) => Math.floor(hash01(text, i) * 0xffffffff).toString(16).padStart(8, "0"),
    )
      .join("");
  const observations = points.map((p) => {
    const e = simulatedEntry(treeSeed(p), path);
    const restorePointId = String(p.restorePointId ?? "");
    if (!e) return { restorePointId, exists: false };
    const id = `${e.type}|${e.size}|${e.modifiedAt}`;
    return {
      restorePointId,
      exists: true,
      type: e.type,
      size: e.size,
      mtime: e.modifiedAt,
      mode: e.type === "dir" ? 0o755 : 0o644,
      ...(e.type === "file" ? { chunksId: hex(`chunks|${id}`), contentId: hex(`content|${id}`) } : {}),
    };
  });
  return {
    ...base,
    endedAt: new Date(Date.parse(base.startedAt) + 2_000).toISOString(),
    status: "success" as const,
    bytesTransferred: 0,
    protectedBytes: 0,
    output: { path, observations },
  };
}

function simulatedRestoreResult(
  job: { id: string; kind: string; payload: Record<string, unknown> },
  base: { startedAt: string; endedAt: string; retryable: boolean },
) {
  const seed = treeSeed(job.payload);
  const at = pointTimeOf(job.payload);
  if (job.kind !== "restore_files") {
    const bytes = Number(job.payload.sizeBytes ?? 0) || Math.round(40 * 1024 ** 3 * (0.5 + hash01(seed, 1)));
    const mode = String(job.payload.mode ?? "");
    return {
      ...base,
      status: "success" as const,
      bytesTransferred: bytes,
      protectedBytes: 0,
      output: {
        files: Number(job.payload.fileCount ?? 0),
        bytes,
        errors: [],
        ...(job.kind === "bmr"
          ? {
            bmr: {
              method: mode,
              [mode === "pxe" ? "bootUrl" : "isoUrl"]: `https://bes.invalid/bmr/${job.payload.restoreId}`,
              expiresAt: job.payload.tokenExpiresAt ?? null,
            },
          }
          : {}),
      },
    };
  }
  const overwrite = job.payload.overwrite === true;
  let files = 0;
  let bytes = 0;
  const errors: Array<{ path: string; message: string }> = [];
  for (const path of (job.payload.paths ?? []) as string[]) {
    const found = simulatedFilesUnder(seed, path, at);
    if (!found) {
      errors.push({ path, message: "No such file or folder in this restore point" });
      continue;
    }
    for (const f of found) {
      // A few files already exist at the target: without overwrite they are left alone.
      if (!overwrite && hash01(`${seed}|${f.path}`, 99) < 0.02) {
        errors.push({ path: f.path, message: "Exists at the target and overwrite is off" });
      } else {
        files++;
        bytes += f.size;
      }
    }
  }
  const status = errors.length === 0
    ? "success" as const
    : files > 0
    ? "warning" as const
    : "failed" as const;
  return {
    ...base,
    status,
    bytesTransferred: bytes,
    protectedBytes: 0,
    error: status === "success" ? null : {
      reason: status === "warning" ? "PARTIAL_FILES" : "NOTHING_RESTORED",
      message: `${errors.length} path(s) could not be restored`,
    },
    // Every error: `inParts` sends the first 100 inline and the rest in parts.
    output: { files, bytes, errors, errorCount: errors.length },
  };
}

const RESTORE_KINDS = ["restore_files", "restore_image", "bmr"];

/** Items per uploaded part of a long list (the protocol allows up to what fits in 64 KiB). */
export const SIMULATED_PART_ITEMS = 100;

/** One part of a long result list, as `POST …/jobs/{id}/parts` takes it. */
export interface ResultPart {
  list: "entries" | "matches" | "errors";
  part: number;
  items: unknown[];
}

/**
 * A simulated result as the protocol sends it: browse entries and search matches go in parts
 * (SIMULATED_PART_ITEMS each) instead of inline, and errors beyond the first 100 as well; the result
 * then names how many parts each list has and how many items there were in all.
 */
export function inParts(
  kind: string,
  result: Record<string, unknown>,
): { result: Record<string, unknown>; parts: ResultPart[] } {
  const parts: ResultPart[] = [];
  const split = (list: ResultPart["list"], items: unknown[]) => {
    for (let i = 0; i < items.length; i += SIMULATED_PART_ITEMS) {
      parts.push({
        list,
        part: parts.filter((p) => p.list === list).length,
        items: items.slice(i, i + SIMULATED_PART_ITEMS),
      });
    }
    return parts.filter((p) => p.list === list).length;
  };
  const output = { ...(result.output as Record<string, unknown> ?? {}) };
  const counts: Record<string, number> = {};
  const totals: Record<string, number> = {};
  if (kind === "browse" && Array.isArray(output.entries)) {
    const entries = output.entries as SimulatedEntry[];
    counts.entries = split(
      "entries",
      entries.map((e) => ({ name: e.name, type: e.type, size: e.size, mtime: e.modifiedAt })),
    );
    totals.entries = entries.length;
    delete output.entries;
  }
  if (kind === "search" && Array.isArray(output.matches)) {
    const matches = output.matches as SimulatedEntry[];
    counts.matches = split(
      "matches",
      matches.map((e) => ({ path: e.path, type: e.type, size: e.size, mtime: e.modifiedAt })),
    );
    delete output.matches;
  }
  let errors = (result.errors ?? []) as Array<{ path: string; message: string }>;
  if (kind === "restore_files" && Array.isArray(output.errors)) {
    errors = output.errors as typeof errors;
    totals.errors = Number(output.errorCount ?? errors.length);
    delete output.errors;
    delete output.errorCount;
  }
  if (errors.length > 100) counts.errors = split("errors", errors.slice(100));
  return {
    result: { ...result, output, errors: errors.slice(0, 100), parts: counts, totals },
    parts,
  };
}

/** Claims and finishes the queued jobs of an engine over the signed protocol (live simulation). */
export async function processJobs(
  client: EngineClient,
  identity: EngineIdentity,
  options: { stepMs?: number } = {},
): Promise<number> {
  const res = await client.post(identity, `/api/${identity.kind}/v1/jobs/claim`, { max: 10 });
  if (!res.ok) return 0;
  const { jobs } = await res.json() as {
    jobs: Array<{ id: string; kind: string; payload: Record<string, unknown> }>;
  };
  for (const job of jobs) {
    if (job.kind === "restore_files" && !Array.isArray(job.payload.paths)) {
      job.payload.paths = await fetchPaths(client, identity, job.id, Number(job.payload.pathChunks ?? 0));
    }
    const { result, parts } = inParts(job.kind, simulatedResult(job, new Date(Date.now() - 30 * 60_000)));
    // Restores report progress in steps (the Restore page draws a live bar from it); others once.
    const steps = RESTORE_KINDS.includes(job.kind) ? [5, 35, 70, 95] : [50];
    for (const percent of steps) {
      await (await client.post(identity, `/api/${identity.kind}/v1/jobs/${job.id}/progress`, {
        percent,
        bytesTransferred: Math.round(Number(result.bytesTransferred) * percent / 100),
        message: "running",
      })).body?.cancel();
      if (steps.length > 1 && options.stepMs) await new Promise((r) => setTimeout(r, options.stepMs));
    }
    for (const part of parts) {
      const res = await client.post(identity, `/api/${identity.kind}/v1/jobs/${job.id}/parts`, part);
      if (!res.ok) {
        throw new Error(
          `Part ${part.part} of ${part.list} of job ${job.id}: ${res.status} ${await res.text()}`,
        );
      }
      await res.body?.cancel();
    }
    await (await client.post(identity, `/api/${identity.kind}/v1/jobs/${job.id}/result`, result)).body
      ?.cancel();
  }
  return jobs.length;
}

/** The whole path list of a file restore whose payload carries it in chunks. */
async function fetchPaths(client: EngineClient, identity: EngineIdentity, jobId: string, chunks: number) {
  const paths: string[] = [];
  for (let chunk = 0; chunk < chunks; chunk++) {
    const res = await client.post(identity, `/api/agent/v1/jobs/${jobId}/paths`, { chunk });
    if (!res.ok) throw new Error(`Could not fetch chunk ${chunk} of job ${jobId}: ${res.status}`);
    paths.push(...(await res.json() as { paths: string[] }).paths);
  }
  return paths;
}
