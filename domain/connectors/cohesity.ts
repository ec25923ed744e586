/**
 * Cohesity DataPlatform public REST API v1 (`/irisservices/api/v1/public`). Endpoints used:
 *
 * | call | endpoint |
 * |---|---|
 * | log in | `POST /accessTokens` (`{ domain, username, password }` → `{ accessToken, tokenType }`) |
 * | test | `GET /cluster` |
 * | jobs | `GET /protectionJobs?isDeleted=false` (environment, sourceIds, isPaused, isActive) |
 * | runs | `GET /protectionRuns?jobId&numRuns&startTimeUsecs&endTimeUsecs&excludeTasks=false` per job |
 * | objects | `GET /protectionSources/objects?objectIds=…` for the jobs' sourceIds, a page of ids at a time |
 * | start | `POST /protectionJobs/run/{id}` (`{ "runType": "kRegular" }`; 204, no run id) |
 *
 * Protection runs come newest first, `numRuns` at a time: the next page asks for the runs that started
 * before the oldest one of the page (`endTimeUsecs`), down to `startTimeUsecs` (the sync's watermark).
 * A 401 on a call means the token expired: the connector logs in again once and repeats the call.
 */
import { z } from "zod";
import { ConnectorError, logIn, SessionConnector } from "./types.ts";
import type * as types from "./types.ts";

const BASE = "/irisservices/api/v1/public";
const MAX_PAGES = 10_000;

/**
 * Run statuses of the API (`StatusBackupRun`, including the 6.x/7.x additions `kFinalizing` and
 * `kWaitingToRetry`); anything else is a response we do not understand (the sync stops).
 */
export const COHESITY_RUN_STATUSES = [
  "kAccepted",
  "kRunning",
  "kCanceling",
  "kCanceled",
  "kSuccess",
  "kFailure",
  "kWarning",
  "kOnHold",
  "kMissed",
  "kFinalizing",
  "kWaitingToRetry",
] as const;

const Token = z.object({ accessToken: z.string().min(1), tokenType: z.string().nullish() });
const Cluster = z.object({ name: z.string().nullish(), clusterSoftwareVersion: z.string().nullish() });
const Job = z.object({
  id: z.number().int(),
  name: z.string(),
  environment: z.string(),
  isPaused: z.boolean().nullish(),
  isActive: z.boolean().nullish(),
  isDeleted: z.boolean().nullish(),
  sourceIds: z.array(z.number().int()).nullish(),
});
const Stats = z.object({
  startTimeUsecs: z.number().int().nullish(),
  endTimeUsecs: z.number().int().nullish(),
  totalBytesReadFromSource: z.number().nullish(),
  totalLogicalBackupSizeBytes: z.number().nullish(),
}).nullish();
const Status = z.enum(COHESITY_RUN_STATUSES);
const Run = z.object({
  jobId: z.number().int(),
  backupRun: z.object({
    jobRunId: z.number().int(),
    runType: z.string().nullish(),
    status: Status,
    stats: z.object({
      startTimeUsecs: z.number().int(),
      endTimeUsecs: z.number().int().nullish(),
      totalBytesReadFromSource: z.number().nullish(),
      totalLogicalBackupSizeBytes: z.number().nullish(),
    }),
    error: z.string().nullish(),
    warnings: z.array(z.string()).nullish(),
    sourceBackupStatus: z.array(z.object({
      source: z.object({ id: z.number().int(), name: z.string(), environment: z.string() }),
      status: Status,
      stats: Stats,
      error: z.string().nullish(),
    })).nullish(),
  }),
});
const Source = z.object({
  id: z.number().int(),
  name: z.string(),
  environment: z.string(),
  physicalProtectionSource: z.object({ hostType: z.string().nullish(), type: z.string().nullish() })
    .nullish(),
});

/** Cohesity environments → our protected types (README table). */
export function mapCohesityEnvironment(environment: string): types.VendorObjectType {
  const env = environment.replace(/^k/, "").toLowerCase();
  if (/^(vmware|hyperv|hypervvss|acropolis|kvm|rhv|vcd)$/.test(env)) return "vm";
  if (env === "physicalfiles") return "fileset";
  if (/^(genericnas|isilon|netapp|flashblade|gpfs|elastifile|view)$/.test(env)) return "nas";
  if (
    /^(aws|awsnative|awssnapshotmanager|azure|azurenative|gcp|gcpnative|rdssnapshotmanager|sfdc)$/.test(
      env,
    ) ||
    env.startsWith("o365")
  ) return "cloud_resource";
  return "physical"; // kPhysical, kSQL, kOracle, kExchange, kAD, kPure, kNimble and anything newer
}

/** Cohesity run types → the guide's types (README table). */
export function mapCohesityRunType(
  runType: string | null | undefined,
  environment = "",
): types.VendorJobType {
  switch (runType) {
    case "kFull":
    case "kSystem":
      return "full";
    case "kLog":
      return "log";
    case "kStorageArraySnapshot":
      return "snapshot";
    default:
      return /^k(Pure|Nimble)$/.test(environment) ? "snapshot" : "incremental";
  }
}

/** Cohesity run statuses → ours (README table). */
export function mapCohesityStatus(status: (typeof COHESITY_RUN_STATUSES)[number]): {
  status: types.VendorRunStatus;
  cancelled: boolean;
} {
  switch (status) {
    case "kSuccess":
      return { status: "success", cancelled: false };
    case "kWarning":
      return { status: "warning", cancelled: false };
    case "kFailure":
      return { status: "failed", cancelled: false };
    case "kCanceled":
      return { status: "failed", cancelled: true };
    case "kMissed":
      return { status: "skipped", cancelled: false };
    case "kAccepted":
    case "kOnHold":
      return { status: "pending", cancelled: false };
    default: // kRunning, kCanceling, kFinalizing, kWaitingToRetry (between attempts of the same run)
      return { status: "running", cancelled: false };
  }
}

const usecsToIso = (us: number) => new Date(Math.floor(us / 1000)).toISOString();

/** The Cohesity connector. */
export class CohesityConnector extends SessionConnector implements types.PlatformConnector {
  readonly type = "cohesity" as const;

  constructor(options: types.ConnectorOptions) {
    super("Cohesity", options, 100);
  }

  protected override async login(): Promise<string> {
    const req: types.HttpRequest = {
      method: "POST",
      path: `${BASE}/accessTokens`,
      json: {
        domain: this.options.domain || "LOCAL",
        username: this.options.username,
        password: this.options.password,
      },
      idempotent: true,
    };
    const token = await logIn(this.http, req, {}, Token, {
      statuses: [401, 403],
      message: (status) =>
        `Cohesity rejected the credentials of ${this.options.username} (${status}); check the domain, user name and password`,
    });
    this.http.addSecret(token.accessToken); // sent on every call: an echoed Authorization header is scrubbed
    return `${token.tokenType || "Bearer"} ${token.accessToken}`;
  }

  async #get<T>(path: string, schema: z.ZodType<T>, query?: types.HttpRequest["query"]): Promise<T> {
    return await this.session.get({ method: "GET", path: `${BASE}${path}`, query }, schema);
  }

  async testConnection(): Promise<types.ConnectivityResult> {
    const info = await this.#get("/cluster", Cluster);
    return {
      detail: `Cohesity ${info.clusterSoftwareVersion ?? "(unknown version)"}${
        info.name ? ` (${this.http.clean(info.name)})` : ""
      }`,
    };
  }

  async listJobs(): Promise<types.VendorJob[]> {
    const jobs = (await this.#get("/protectionJobs", z.array(Job), { isDeleted: false }))
      .filter((j) => !j.isDeleted);
    return jobs.map((j) => ({
      id: String(j.id),
      name: j.name,
      vendorType: j.environment,
      jobType: mapCohesityRunType(null, j.environment),
      objectType: mapCohesityEnvironment(j.environment),
      enabled: !j.isPaused && j.isActive !== false,
      sourceIds: (j.sourceIds ?? []).map(String),
    }));
  }

  async listRuns(jobs: types.VendorJob[], since: Date | null): Promise<types.VendorRun[]> {
    const out: types.VendorRun[] = [];
    const sinceUsecs = since ? since.getTime() * 1000 : undefined;
    for (const job of jobs) {
      let before: number | undefined;
      for (let n = 0;; n++) {
        if (n >= MAX_PAGES) {
          throw new ConnectorError("bad_response", `Cohesity protection runs: too many pages`);
        }
        const runs = await this.#get("/protectionRuns", z.array(Run), {
          jobId: job.id,
          numRuns: this.pageSize,
          startTimeUsecs: sinceUsecs,
          endTimeUsecs: before,
          excludeTasks: false,
        });
        for (const r of runs) {
          if (String(r.jobId) !== job.id) {
            throw new ConnectorError(
              "bad_response",
              `Cohesity protection runs of job ${job.id} include job ${r.jobId}`,
            );
          }
          out.push(this.#toRun(job, r));
        }
        if (runs.length < this.pageSize) break;
        const oldest = Math.min(...runs.map((r) => r.backupRun.stats.startTimeUsecs));
        if (before !== undefined && oldest >= before) {
          throw new ConnectorError(
            "bad_response",
            "Cohesity protection runs: a page did not move back in time",
          );
        }
        before = oldest - 1;
        if (sinceUsecs !== undefined && before < sinceUsecs) break;
      }
    }
    const unique = new Map(out.map((r) => [r.id, r]));
    return [...unique.values()].sort((a, b) => (a.startedAt ?? "").localeCompare(b.startedAt ?? ""));
  }

  #toRun(job: types.VendorJob, r: z.infer<typeof Run>): types.VendorRun {
    const b = r.backupRun;
    const { status, cancelled } = mapCohesityStatus(b.status);
    const final = status === "success" || status === "warning" || status === "failed" || status === "skipped";
    const endedAt = final && b.stats.endTimeUsecs ? usecsToIso(b.stats.endTimeUsecs) : null;
    const objects: types.VendorObjectOutcome[] = [];
    for (const s of b.sourceBackupStatus ?? []) {
      const o = mapCohesityStatus(s.status).status;
      if (o !== "success" && o !== "warning" && o !== "failed") continue;
      objects.push({
        objectId: String(s.source.id),
        name: s.source.name,
        vendorType: s.source.environment,
        type: mapCohesityEnvironment(s.source.environment),
        status: o,
        endedAt: s.stats?.endTimeUsecs
          ? usecsToIso(s.stats.endTimeUsecs)
          : endedAt ?? usecsToIso(b.stats.startTimeUsecs),
      });
    }
    const message = b.error ?? (b.warnings?.length ? b.warnings.join("; ") : null);
    return {
      id: `${job.id}:${b.jobRunId}`,
      jobId: job.id,
      status,
      cancelled,
      jobType: mapCohesityRunType(b.runType, job.vendorType),
      startedAt: usecsToIso(b.stats.startTimeUsecs),
      endedAt,
      bytesTransferred: Math.max(0, Math.round(b.stats.totalBytesReadFromSource ?? 0)),
      protectedBytes: Math.max(0, Math.round(b.stats.totalLogicalBackupSizeBytes ?? 0)),
      message: message ? this.http.clean(message) : null,
      objects,
    };
  }

  async listObjects(jobs: types.VendorJob[]): Promise<types.VendorObject[]> {
    const jobsOf = new Map<number, string[]>();
    for (const job of jobs) {
      for (const sourceId of job.sourceIds ?? []) {
        const id = Number(sourceId);
        if (!jobsOf.get(id)?.includes(job.id)) jobsOf.set(id, [...(jobsOf.get(id) ?? []), job.id]);
      }
    }
    const ids = [...jobsOf.keys()].sort((a, b) => a - b);
    const out: types.VendorObject[] = [];
    for (let i = 0; i < ids.length; i += this.pageSize) {
      const batch = ids.slice(i, i + this.pageSize);
      const sources = await this.#get("/protectionSources/objects", z.array(Source), {
        objectIds: batch.map(String),
      });
      for (const s of sources) {
        if (!jobsOf.has(s.id)) continue; // not asked for
        const hostType = s.physicalProtectionSource?.hostType;
        out.push({
          id: String(s.id),
          name: s.name,
          vendorType: hostType ? `${s.environment} (${hostType})` : s.environment,
          type: mapCohesityEnvironment(s.environment),
          jobIds: jobsOf.get(s.id)!,
        });
      }
    }
    return out;
  }

  async startJob(job: types.VendorJob): Promise<{ runId: string | null }> {
    const req: types.HttpRequest = {
      method: "POST",
      path: `${BASE}/protectionJobs/run/${encodeURIComponent(job.id)}`,
      json: { runType: "kRegular" },
    };
    const res = await this.session.call(req);
    if (!res.ok) throw await this.http.failure(res, req);
    await res.body?.cancel();
    return { runId: null };
  }
}
