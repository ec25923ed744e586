/** Process configuration from the environment (DESIGN.md §9), parsed by one zod schema. */
import { z } from "zod";
import { fromBase64 } from "./ids.ts";
import { type Argon2Params, CHEAP_ARGON2 } from "./passwords.ts";

export const LOG_LEVELS = ["debug", "info", "warn", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

/** The environment variables we read, with their documented defaults applied by `parseConfig`. */
export const EnvSchema = z.object({
  PORT: z.string().regex(/^\d+$/, "must be a whole number from 1 to 65535").transform(Number)
    .refine((n) => n >= 1 && n <= 65535, "must be a whole number from 1 to 65535").default(8000),
  CADRES_DATA_DIR: z.string().min(1, "must not be empty").default("./data"),
  CADRES_KV: z.string().min(1, "must not be empty").refine(
    (v) => v === ":memory:" || /^https?:\/\/[^\s]+$/i.test(v) || !/^[a-z][a-z0-9+.-]*:\/\//i.test(v),
    "must be a file path, :memory:, deploy (the platform's database), or an http(s) URL of a remote KV",
  ).optional(),
  CADRES_MASTER_KEY: z.string().refine((v) => {
    try {
      return fromBase64(v.trim()).length === 32;
    } catch {
      return false;
    }
  }, "must be base64 of exactly 32 random bytes (e.g. `openssl rand -base64 32`)").optional(),
  CADRES_BASE_URL: z.url({ protocol: /^https?$/, error: "must be an http:// or https:// URL" })
    .optional(),
  CADRES_LOG_LEVEL: z.enum(LOG_LEVELS, { error: `must be one of ${LOG_LEVELS.join(", ")}` })
    .default("info"),
  CADRES_METRICS: z.enum(["on", "off"], { error: "must be on or off" }).default("on"),
  CADRES_SHUTDOWN_SECONDS: z.string().regex(/^\d+$/, "must be a whole number of seconds from 1 to 3600")
    .transform(Number).refine((n) => n >= 1 && n <= 3600, "must be a whole number of seconds from 1 to 3600")
    .default(25),
  CADRES_SHUTDOWN_DRAIN_SECONDS: z.string().regex(/^\d+$/, "must be a whole number of seconds from 0 to 60")
    .transform(Number).refine((n) => n <= 60, "must be a whole number of seconds from 0 to 60")
    .default(2),
  CADRES_FAULTS: z.string().regex(
    /^(dashboard\.[a-z]+)(,dashboard\.[a-z]+)*$/,
    "must be a comma-separated list of faults such as dashboard.storage",
  ).optional(),
});

/** The parsed configuration handed to `createApp` and the CLI. */
export interface Config {
  port: number;
  dataDir: string;
  /** A file path, `:memory:`, or a remote KV URL. */
  kvLocation: string;
  /** Base64 master key from the environment, or null to use (or create) the key file. */
  masterKey: Uint8Array | null;
  baseUrl: string;
  /** True when the base URL is https, so cookies get `Secure`. */
  secureCookies: boolean;
  logLevel: LogLevel;
  /** `GET /metrics` answers (to a token with the `metrics` scope); false: 404 (CADRES_METRICS=off). */
  metricsEnabled: boolean;
  /** On SIGTERM, how long in-flight requests and a running cron tick get to finish (CADRES_SHUTDOWN_SECONDS). */
  shutdownSeconds: number;
  /**
   * On SIGTERM, how long the server keeps accepting and answering before it closes its listener
   * (CADRES_SHUTDOWN_DRAIN_SECONDS, within shutdownSeconds): connections a client opened just before the
   * signal — still in the listen backlog, or accepted with their request not yet read — are answered
   * instead of reset, and a load balancer has time to see the instance leave.
   */
  shutdownDrainSeconds: number;
  /**
   * Fault injection for outage drills and browser tests: `dashboard.<section>` makes that dashboard
   * section's data source fail. Empty in production.
   */
  faults: string[];
  /**
   * argon2id cost of new password hashes. Absent (always, from `parseConfig`: no variable sets it) means
   * PRODUCTION_ARGON2; `testConfig` sets CHEAP_ARGON2 so that tests creating many users stay fast.
   */
  passwordHashing?: Argon2Params;
}

/** Parses an environment map; returns the config or one line naming the variable and why. */
export function parseConfig(
  env: Record<string, string | undefined>,
): { ok: true; config: Config } | { ok: false; error: string } {
  const cleaned = Object.fromEntries(
    Object.keys(EnvSchema.shape).map((key) => [key, env[key] === "" ? undefined : env[key]]),
  );
  const parsed = EnvSchema.safeParse(cleaned);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const name = String(issue.path[0] ?? "environment");
    const raw = env[name];
    const shown = name === "CADRES_MASTER_KEY" ? '"…"' : JSON.stringify((raw ?? "").slice(0, 80));
    const got = raw === undefined ? "" : ` (got ${shown})`;
    return { ok: false, error: `Invalid configuration: ${name} ${issue.message}${got}` };
  }
  const e = parsed.data;
  const dataDir = e.CADRES_DATA_DIR.replace(/\/+$/, "") || "/";
  const baseUrl = (e.CADRES_BASE_URL ?? `http://localhost:${e.PORT}`).replace(/\/+$/, "");
  return {
    ok: true,
    config: {
      port: e.PORT,
      dataDir,
      kvLocation: e.CADRES_KV ?? `${dataDir}/cadres.kv`,
      masterKey: e.CADRES_MASTER_KEY ? fromBase64(e.CADRES_MASTER_KEY.trim()) : null,
      baseUrl,
      secureCookies: baseUrl.startsWith("https://"),
      logLevel: e.CADRES_LOG_LEVEL,
      metricsEnabled: e.CADRES_METRICS === "on",
      shutdownSeconds: e.CADRES_SHUTDOWN_SECONDS,
      shutdownDrainSeconds: e.CADRES_SHUTDOWN_DRAIN_SECONDS,
      faults: e.CADRES_FAULTS ? e.CADRES_FAULTS.split(",") : [],
    },
  };
}

/**
 * A config for tests and tools: in-memory KV, fixed master key, localhost base URL, cheap password hashing
 * (users created through it must never be kept as production data).
 */
export function testConfig(overrides: Partial<Config> = {}): Config {
  return {
    port: 8000,
    dataDir: "./data",
    kvLocation: ":memory:",
    masterKey: new Uint8Array(32).fill(7),
    baseUrl: "http://localhost:8000",
    secureCookies: false,
    logLevel: "error",
    metricsEnabled: true,
    shutdownSeconds: 25,
    shutdownDrainSeconds: 2,
    faults: [],
    passwordHashing: CHEAP_ARGON2,
    ...overrides,
  };
}

/**
 * Returns the master key: the configured one, or the key file `master.key` in the data folder,
 * created with mode 0600 on first start. Throws if the key file is malformed or readable by others.
 */
export async function loadMasterKey(config: Config): Promise<Uint8Array> {
  if (config.masterKey) return config.masterKey;
  const path = `${config.dataDir}/master.key`;
  try {
    const info = await Deno.stat(path);
    if (info.mode !== null && (info.mode & 0o077) !== 0) {
      throw new Error(`Refusing to use ${path}: it is readable by other users (chmod 600 ${path})`);
    }
    const key = fromBase64((await Deno.readTextFile(path)).trim());
    if (key.length !== 32) throw new Error(`Invalid key file ${path}: expected base64 of 32 bytes`);
    return key;
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  await Deno.mkdir(config.dataDir, { recursive: true });
  const key = crypto.getRandomValues(new Uint8Array(32));
  const text = btoa(String.fromCharCode(...key)) + "\n";
  await Deno.writeTextFile(path, text, { mode: 0o600, createNew: true });
  await Deno.chmod(path, 0o600);
  return key;
}
