/**
 * The BES's command line: `deno task bes --control-plane URL --secret SECRET --data DIR
 * [--listen HOST:PORT] [--name NAME] [--insecure-http] …` (docs/engines.md lists every flag).
 * Bad input is one clear error naming the flag; nothing is started then.
 */
import { parseArgs } from "node:util";
import { GC_GRACE_MS } from "../repo/gc.ts";
import type { LogLevel } from "./log.ts";

/** The BES's version, sent with registration and heartbeats. */
export const BES_VERSION = "1.0.0";
/** Port of the data API when `--listen` gives none. */
export const DEFAULT_PORT = 8443;

export interface BesConfig {
  controlPlane: string;
  secret: string;
  dataDir: string;
  listen: { hostname: string; port: number };
  name: string;
  /** Serve the data API over plain HTTP (loopback only: tests and a BES beside its agents). */
  insecureHttp: boolean;
  /** The URL agents reach the data API at; null: the registered address and the listening port. */
  dataUrl: string | null;
  /** Where SMB, NFS and iSCSI targets are mounted: `<mounts>/<targetId>`. */
  mounts: string;
  /** Heartbeat interval; null: the one the registration reply gives. */
  heartbeatSeconds: number | null;
  /** How often to ask for jobs when the heartbeat says none are pending. */
  pollSeconds: number;
  /** How often a running job posts its progress (renewing its lease). */
  progressSeconds: number;
  /** Jobs run at once. */
  maxJobs: number;
  /**
   * How long gc keeps a condemned pack before a later gc deletes it (`--gc-grace`, default
   * `GC_GRACE_MS`: 24 h). Shorter frees space sooner; the margin covers clocks and slow writers.
   */
  gcGraceMs: number;
  logLevel: LogLevel;
}

/** A command line the BES refuses; the message names the flag. */
export class UsageError extends Error {}

export const USAGE = `Usage: deno task bes --control-plane URL --secret SECRET --data DIR [options]

  --control-plane URL    the control plane (https://…; http:// only to a loopback address)
  --secret SECRET        org or account registration secret (or env CADRES_BES_SECRET)
  --data DIR             identity, registration and state of this BES (created 0700)
  --listen HOST:PORT     address of the data API (default 0.0.0.0:${DEFAULT_PORT}; port 0: any free one)
  --name NAME            name shown in the control plane (default: the host name)
  --insecure-http        serve the data API over plain HTTP (only with a loopback --listen)
  --data-url URL         the URL agents reach the data API at, when not https://ADDRESS:PORT of --listen
                         (a DNS name or a NAT address; the certificate names its host)
  --mounts DIR           where SMB/NFS/iSCSI targets are mounted, one folder per target id
                         (default DIR/mounts)
  --heartbeat-seconds N  heartbeat interval (default: the control plane's, 60 s)
  --poll-seconds N       ask for jobs every N seconds (default 5)
  --progress-seconds N   running jobs report progress every N seconds (default 5)
  --jobs N               jobs run at once (default 2)
  --gc-grace DURATION    how long gc keeps a condemned pack before a later gc deletes it,
                         e.g. 24h, 90m, 30s or 0s (default 24h, at most 30d)
  --log-level LEVEL      debug, info, warn or error (default info)`;

function isLoopback(hostname: string): boolean {
  const h = hostname.replace(/^\[|\]$/g, "");
  return h === "localhost" || h === "::1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

function positive(flag: string, value: string | undefined, fallback: number, max: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0 || n > max) {
    throw new UsageError(`--${flag} must be a number of at most ${max} greater than 0, not "${value}"`);
  }
  return n;
}

const DURATION_UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
/** The longest `--gc-grace` accepted. */
export const MAX_GC_GRACE_MS = 30 * 86_400_000;

/** `--gc-grace DURATION`: a whole number and a unit (s, m, h, d), 0 s to 30 d; absent: `GC_GRACE_MS`. */
export function parseGcGrace(value: string | undefined): number {
  if (value === undefined) return GC_GRACE_MS;
  const m = /^(\d{1,9})(s|m|h|d)$/.exec(value.trim());
  const ms = m ? Number(m[1]) * DURATION_UNITS[m[2]] : NaN;
  if (!m || ms > MAX_GC_GRACE_MS) {
    throw new UsageError(
      `--gc-grace must be a duration such as 24h, 90m, 30s or 0s (a whole number and s, m, h or d; ` +
        `at most 30d), not "${value}"`,
    );
  }
  return ms;
}

/** Parses the BES's arguments. `env` supplies CADRES_BES_SECRET. Throws `UsageError`. */
export function parseBesArgs(args: string[], env: Record<string, string | undefined> = {}): BesConfig {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        "control-plane": { type: "string" },
        secret: { type: "string" },
        data: { type: "string" },
        listen: { type: "string" },
        name: { type: "string" },
        "insecure-http": { type: "boolean" },
        "data-url": { type: "string" },
        mounts: { type: "string" },
        "heartbeat-seconds": { type: "string" },
        "poll-seconds": { type: "string" },
        "progress-seconds": { type: "string" },
        jobs: { type: "string" },
        "gc-grace": { type: "string" },
        "log-level": { type: "string" },
      },
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const str = (k: string) => values[k] as string | undefined;

  const cp = str("control-plane");
  if (!cp) throw new UsageError("--control-plane URL is required");
  let url: URL;
  try {
    url = new URL(cp);
  } catch {
    throw new UsageError(`--control-plane must be a URL such as https://cadres.example.com, not "${cp}"`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new UsageError("--control-plane must be an https:// URL");
  }
  if (url.protocol === "http:" && !isLoopback(url.hostname)) {
    throw new UsageError(
      "--control-plane must be https:// (the registration secret and credentials travel on it); " +
        "http:// is accepted only for a loopback address",
    );
  }
  const secret = str("secret") ?? env.CADRES_BES_SECRET;
  if (!secret) throw new UsageError("--secret SECRET (or CADRES_BES_SECRET) is required");
  const dataDir = str("data");
  if (!dataDir) throw new UsageError("--data DIR is required");

  const listenText = str("listen") ?? `0.0.0.0:${DEFAULT_PORT}`;
  const m = /^(\[[0-9a-fA-F:]+\]|[^:\s]+):(\d{1,5})$/.exec(listenText);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) {
    throw new UsageError(`--listen must be HOST:PORT, e.g. 0.0.0.0:${DEFAULT_PORT}, not "${listenText}"`);
  }
  const hostname = m[1].replace(/^\[|\]$/g, "");
  const insecureHttp = values["insecure-http"] === true;
  if (insecureHttp && !isLoopback(hostname)) {
    throw new UsageError("--insecure-http needs a loopback --listen address (127.0.0.1 or ::1)");
  }
  const dataUrlText = str("data-url");
  let dataUrl: string | null = null;
  if (dataUrlText !== undefined) {
    let u: URL;
    try {
      u = new URL(dataUrlText);
    } catch {
      throw new UsageError(
        `--data-url must be a URL such as https://bes.example.com:8443, not "${dataUrlText}"`,
      );
    }
    const scheme = insecureHttp ? "http:" : "https:";
    if (u.protocol !== scheme || u.username || u.password || u.search || u.hash) {
      throw new UsageError(
        `--data-url must be a plain ${scheme}// URL${
          insecureHttp ? " (the data API is served over plain HTTP)" : ""
        }`,
      );
    }
    if (insecureHttp && !isLoopback(u.hostname)) {
      throw new UsageError("--data-url must be a loopback address with --insecure-http");
    }
    dataUrl = u.href.replace(/\/+$/, "");
  }
  const name = (str("name") ?? Deno.hostname()).trim();
  if (!name || name.length > 100) throw new UsageError("--name must be 1–100 characters");
  const level = str("log-level") ?? "info";
  if (!["debug", "info", "warn", "error"].includes(level)) {
    throw new UsageError(`--log-level must be debug, info, warn or error, not "${level}"`);
  }
  const dir = dataDir.replace(/\/+$/, "") || "/";
  const hb = str("heartbeat-seconds");
  return {
    controlPlane: url.href.replace(/\/+$/, ""),
    secret,
    dataDir: dir,
    listen: { hostname, port },
    name,
    insecureHttp,
    dataUrl,
    mounts: (str("mounts") ?? `${dir}/mounts`).replace(/\/+$/, ""),
    heartbeatSeconds: hb === undefined ? null : positive("heartbeat-seconds", hb, 60, 3600),
    pollSeconds: positive("poll-seconds", str("poll-seconds"), 5, 3600),
    progressSeconds: positive("progress-seconds", str("progress-seconds"), 5, 120),
    maxJobs: Math.floor(positive("jobs", str("jobs"), 2, 50)),
    gcGraceMs: parseGcGrace(str("gc-grace")),
    logLevel: level as LogLevel,
  };
}
