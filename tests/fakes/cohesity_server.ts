/**
 * A fake Cohesity public REST API v1 (`/irisservices/api/v1/public`) for tests, shaped like Cohesity's
 * documentation: `POST /accessTokens` (`{ domain, username, password }` → `{ accessToken, tokenType }`),
 * Bearer tokens the test can expire, `GET /cluster`, `GET /protectionJobs` (an array; `isDeleted`
 * filter), `GET /protectionRuns` (newest first, `jobId`, `numRuns`, `startTimeUsecs`, `endTimeUsecs`,
 * runs with `backupRun.stats` in microseconds and `sourceBackupStatus` per object),
 * `GET /protectionSources/objects?objectIds=…`, and `POST /protectionJobs/run/{id}` (204). Errors are
 * `{ errorCode, message }`.
 */
import { FakeServer, json } from "./fake_http.ts";

const BASE = "/irisservices/api/v1/public";

export interface CohesityJob {
  id: number;
  name: string;
  environment: string;
  policyId: string;
  viewBoxId: number;
  sourceIds: number[];
  isPaused: boolean;
  isActive: boolean;
  isDeleted: boolean;
}

export interface CohesitySource {
  id: number;
  name: string;
  environment: string;
  parentId?: number;
  vmWareProtectionSource?: { type: string; name: string };
  physicalProtectionSource?: { type: string; hostType: string; name: string };
}

export interface CohesityRun {
  jobId: number;
  jobName: string;
  jobUid: { clusterId: number; clusterIncarnationId: number; id: number };
  backupRun: {
    jobRunId: number;
    runType: string;
    status: string;
    stats: {
      startTimeUsecs: number;
      endTimeUsecs?: number;
      totalBytesReadFromSource: number;
      totalLogicalBackupSizeBytes: number;
    };
    error?: string;
    warnings?: string[];
    sourceBackupStatus: Array<{
      source: { id: number; name: string; environment: string };
      status: string;
      stats: { startTimeUsecs: number; endTimeUsecs?: number };
      error?: string;
    }>;
  };
  copyRun: unknown[];
}

export const COHESITY_USER = "svc-cadres";
export const COHESITY_PASSWORD = "Coh3sity-s3cret!";

const us = (iso: string) => Date.parse(iso) * 1000;

/** A fake Cohesity cluster; fill `jobs`, `sources`, `runs` and call `startServer()`. */
export class FakeCohesity extends FakeServer {
  domain = "LOCAL";
  username = COHESITY_USER;
  password = COHESITY_PASSWORD;
  tokens = new Set<string>();
  jobs: CohesityJob[] = [];
  sources: CohesitySource[] = [];
  runs: CohesityRun[] = [];
  now = new Date("2026-11-22T10:00:00Z");
  #runSeq = 1000;

  expireTokens(): void {
    this.tokens.clear();
  }

  addJob(
    id: number,
    name: string,
    environment: string,
    sourceIds: number[],
    options: Partial<CohesityJob> = {},
  ) {
    const job: CohesityJob = {
      id,
      name,
      environment,
      policyId: "5437316133543633:1562000000000:1",
      viewBoxId: 5,
      sourceIds,
      isPaused: false,
      isActive: true,
      isDeleted: false,
      ...options,
    };
    this.jobs.push(job);
    return job;
  }

  /** Adds a run; `status` kSuccess/kWarning/kFailure/kRunning…; per-object statuses default to the run's. */
  addRun(
    jobId: number,
    startedAt: string,
    status: string,
    options: {
      runType?: string;
      minutes?: number;
      error?: string;
      objects?: Array<{ id: number; status?: string; error?: string }>;
    } = {},
  ): CohesityRun {
    const job = this.jobs.find((j) => j.id === jobId)!;
    const start = us(startedAt);
    const final = !["kRunning", "kAccepted", "kOnHold", "kCanceling", "kFinalizing", "kWaitingToRetry"]
      .includes(
        status,
      );
    const end = final ? start + (options.minutes ?? 15) * 60_000_000 : undefined;
    const objects: Array<{ id: number; status?: string; error?: string }> = options.objects ??
      job.sourceIds.map((id) => ({ id }));
    const run: CohesityRun = {
      jobId,
      jobName: job.name,
      jobUid: { clusterId: 5437316133543633, clusterIncarnationId: 1562000000000, id: jobId },
      backupRun: {
        jobRunId: ++this.#runSeq,
        runType: options.runType ?? "kRegular",
        status,
        stats: {
          startTimeUsecs: start,
          ...(end ? { endTimeUsecs: end } : {}),
          totalBytesReadFromSource: 1_073_741_824,
          totalLogicalBackupSizeBytes: 53_687_091_200,
        },
        ...(options.error ? { error: options.error } : {}),
        sourceBackupStatus: objects.map((o) => {
          const s = this.sources.find((x) => x.id === o.id);
          return {
            source: {
              id: o.id,
              name: s?.name ?? `source-${o.id}`,
              environment: s?.environment ?? job.environment,
            },
            status: o.status ?? status,
            stats: { startTimeUsecs: start, ...(end ? { endTimeUsecs: end } : {}) },
            ...(o.error ? { error: o.error } : {}),
          };
        }),
      },
      copyRun: [],
    };
    this.runs.push(run);
    return run;
  }

  /** Finishes a running run. */
  finishRun(run: CohesityRun, status: string, endedAt: string): void {
    run.backupRun.status = status;
    run.backupRun.stats.endTimeUsecs = us(endedAt);
    for (const s of run.backupRun.sourceBackupStatus) {
      s.status = status;
      s.stats.endTimeUsecs = us(endedAt);
    }
  }

  async startServer(tls?: { cert: string; key: string }): Promise<this> {
    await this.start((req, logged) => this.#handle(req, logged), tls);
    return this;
  }

  #handle(req: Request, logged: { path: string; query: URLSearchParams; body: string }): Response {
    const { query } = logged;
    if (!logged.path.startsWith(BASE)) return json({ errorCode: "KNotFound", message: "Not found" }, 404);
    const path = logged.path.slice(BASE.length);
    if (path === "/accessTokens" && req.method === "POST") {
      let body: { domain?: string; username?: string; password?: string } = {};
      try {
        body = JSON.parse(logged.body);
      } catch {
        return json({ errorCode: "KInvalidRequest", message: "Body is not JSON" }, 400);
      }
      if (body.domain !== this.domain || body.username !== this.username || body.password !== this.password) {
        return json({ errorCode: "KStatusUnauthorized", message: "Invalid username or password" }, 401);
      }
      const token = crypto.randomUUID().replaceAll("-", "");
      this.tokens.add(token);
      return json({
        accessToken: token,
        tokenType: "Bearer",
        privileges: ["kClusterView", "kProtectionJobOperate"],
      }, 201);
    }
    const auth = req.headers.get("authorization") ?? "";
    if (!auth.startsWith("Bearer ") || !this.tokens.has(auth.slice(7))) {
      return json(
        { errorCode: "KStatusUnauthorized", message: "Access token is invalid or has expired" },
        401,
      );
    }
    if (req.method === "GET" && path === "/cluster") {
      return json({
        id: 5437316133543633,
        name: "cohesity-01",
        clusterSoftwareVersion: "7.1.2_u1_release-20240709",
      });
    }
    if (req.method === "GET" && path === "/protectionJobs") {
      const deleted = query.get("isDeleted");
      return json(this.jobs.filter((j) => deleted === null || String(j.isDeleted) === deleted));
    }
    if (req.method === "GET" && path === "/protectionRuns") {
      const jobId = query.get("jobId");
      const from = query.get("startTimeUsecs");
      const to = query.get("endTimeUsecs");
      const n = Number(query.get("numRuns") ?? 1000);
      const rows = this.runs
        .filter((r) => !jobId || String(r.jobId) === jobId)
        .filter((r) => !from || r.backupRun.stats.startTimeUsecs >= Number(from))
        .filter((r) => !to || r.backupRun.stats.startTimeUsecs <= Number(to))
        .sort((a, b) => b.backupRun.stats.startTimeUsecs - a.backupRun.stats.startTimeUsecs)
        .slice(0, n);
      return json(rows);
    }
    if (req.method === "GET" && path === "/protectionSources/objects") {
      const ids = query.getAll("objectIds").map(Number);
      return json(this.sources.filter((s) => ids.includes(s.id)));
    }
    const run = /^\/protectionJobs\/run\/(\d+)$/.exec(path);
    if (run && req.method === "POST") {
      const job = this.jobs.find((j) => j.id === Number(run[1]));
      if (!job) return json({ errorCode: "KNotFound", message: "Protection job not found" }, 404);
      if (job.isPaused) {
        return json({ errorCode: "KInvalidRequest", message: "Protection job is paused" }, 400);
      }
      this.addRun(job.id, this.now.toISOString(), "kRunning");
      return new Response(null, { status: 204 });
    }
    return json({ errorCode: "KNotFound", message: `No route ${req.method} ${logged.path}` }, 404);
  }
}

/** Starts a fake Cohesity cluster on loopback. */
export async function startFakeCohesity(tls?: { cert: string; key: string }): Promise<FakeCohesity> {
  return await new FakeCohesity().startServer(tls);
}
