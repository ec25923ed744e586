/**
 * A fake Veeam Backup & Replication REST API v1 for tests, shaped like Veeam's documentation: OAuth2
 * password grant at `/api/oauth2/token` (form body, `x-api-version` required), Bearer tokens that the
 * test can expire, `{ data, pagination: { total, count, skip, limit } }` lists with skip/limit,
 * `jobs/states`, `sessions` (createdAfterFilter, orderColumn=CreationTime, orderAsc), `backups`,
 * `backups/{id}/objects` (the objects of one backup), `backupObjects` (every object once; like Veeam's
 * `BackupObjectModel`, a row does not name its backup), `serverInfo`, and `POST /jobs/{id}/start`, which
 * answers the new session (201) or 400 when the job is already running. Errors are
 * `{ errorCode, message }`.
 */
import { FakeServer, json } from "./fake_http.ts";

export interface VeeamJobState {
  id: string;
  name: string;
  type: string;
  status: "Inactive" | "Running" | "Disabled";
  lastResult: "Success" | "Warning" | "Failed" | "None";
}

export interface VeeamSession {
  id: string;
  name: string;
  jobId: string | null;
  sessionType: string;
  creationTime: string;
  endTime: string | null;
  state: string;
  progressPercent: number;
  result: { result: string; message: string; isCanceled: boolean } | null;
}

export interface VeeamBackupRow {
  id: string;
  jobId: string | null;
  name: string;
  platformName: string;
}

/** An object in a backup; `backupId` is the fake's own bookkeeping and is not served (Veeam has no such field). */
export interface VeeamObjectRow {
  id: string;
  name: string;
  type: string;
  platformName: string;
  backupId: string | null;
  restorePointsCount: number;
}

export const VEEAM_USER = "corp\\svc-cadres";
export const VEEAM_PASSWORD = "Vbr-s3cret-Passw0rd!";

/** A fake VBR server; fill `jobs`, `sessions`, `backups`, `objects` and call `start()`. */
export class FakeVeeam extends FakeServer {
  username = VEEAM_USER;
  password = VEEAM_PASSWORD;
  tokens = new Set<string>();
  jobs: VeeamJobState[] = [];
  sessions: VeeamSession[] = [];
  backups: VeeamBackupRow[] = [];
  objects: VeeamObjectRow[] = [];
  /** The server's clock: new sessions start at this time. */
  now = new Date("2026-11-22T10:00:00Z");
  #seq = 0;

  /** Invalidates every issued token (the next call gets 401, as after Veeam's 15-minute expiry). */
  expireTokens(): void {
    this.tokens.clear();
  }

  /** Adds a finished (or running, with `result: null`) session of a job. */
  addSession(
    jobId: string,
    startedAt: string,
    result: "Success" | "Warning" | "Failed" | null,
    options: { message?: string; canceled?: boolean; minutes?: number; id?: string } = {},
  ): VeeamSession {
    const job = this.jobs.find((j) => j.id === jobId);
    const end = new Date(Date.parse(startedAt) + (options.minutes ?? 20) * 60_000).toISOString();
    const session: VeeamSession = {
      id: options.id ??
        `5e55${String(++this.#seq).padStart(4, "0")}-0000-4000-8000-${crypto.randomUUID().slice(-12)}`,
      name: job?.name ?? "Job",
      jobId,
      sessionType: "BackupJob",
      creationTime: startedAt,
      endTime: result ? end : null,
      state: result ? "Stopped" : "Working",
      progressPercent: result ? 100 : 40,
      result: result
        ? { result, message: options.message ?? "", isCanceled: options.canceled ?? false }
        : { result: "None", message: "", isCanceled: false },
    };
    this.sessions.push(session);
    return session;
  }

  /** Finishes a running session. */
  finishSession(id: string, result: "Success" | "Warning" | "Failed", endTime: string, message = ""): void {
    const s = this.sessions.find((x) => x.id === id);
    if (!s) throw new Error(`no session ${id}`);
    Object.assign(s, {
      state: "Stopped",
      endTime,
      progressPercent: 100,
      result: { result, message, isCanceled: false },
    });
  }

  async startServer(tls?: { cert: string; key: string }): Promise<this> {
    await this.start((req, logged) => this.#handle(req, logged), tls);
    return this;
  }

  #page<T>(items: T[], query: URLSearchParams): Response {
    const skip = Number(query.get("skip") ?? 0);
    const limit = Number(query.get("limit") ?? 200);
    const data = items.slice(skip, skip + limit);
    return json({ data, pagination: { total: items.length, count: data.length, skip, limit } });
  }

  #handle(
    req: Request,
    logged: { path: string; query: URLSearchParams; body: string },
  ): Response {
    const { path, query } = logged;
    if (!req.headers.get("x-api-version")) {
      return json({ errorCode: "BadRequest", message: "The x-api-version header is required" }, 400);
    }
    if (path === "/api/oauth2/token" && req.method === "POST") {
      const form = new URLSearchParams(logged.body);
      if (form.get("grant_type") !== "password") {
        return json({ errorCode: "BadRequest", message: "Unsupported grant type" }, 400);
      }
      if (form.get("username") !== this.username || form.get("password") !== this.password) {
        return json({ errorCode: "Unauthorized", message: "Invalid user name or password" }, 401);
      }
      const token = `eyJfake.${crypto.randomUUID()}`;
      this.tokens.add(token);
      return json({
        access_token: token,
        token_type: "bearer",
        refresh_token: `refresh.${crypto.randomUUID()}`,
        expires_in: 900,
        ".issued": this.now.toISOString(),
        ".expires": new Date(this.now.getTime() + 900_000).toISOString(),
      });
    }
    const auth = req.headers.get("authorization") ?? "";
    if (!auth.startsWith("Bearer ") || !this.tokens.has(auth.slice(7))) {
      return json({ errorCode: "Unauthorized", message: "Authorization token is invalid or expired" }, 401);
    }
    if (req.method === "GET" && path === "/api/v1/serverInfo") {
      return json({
        vbrId: "6745a759-2205-4cd2-b172-8ec8f7e60ef8",
        name: "vbr01",
        buildVersion: "12.1.2.172",
        patches: [],
      });
    }
    if (req.method === "GET" && path === "/api/v1/jobs/states") {
      return this.#page(
        this.jobs.map((j) => ({
          ...j,
          description: "",
          lastRun: null,
          nextRun: null,
          workload: "Vm",
          repositoryId: "88788f9e-d8f5-4eb4-bc4f-9b3f5403bcec",
          repositoryName: "Default Backup Repository",
          objectsCount: this.objects.filter((o) =>
            this.backups.some((b) => b.id === o.backupId && b.jobId === j.id)
          ).length,
          sessionId: null,
        })),
        query,
      );
    }
    if (req.method === "GET" && path === "/api/v1/sessions") {
      const after = query.get("createdAfterFilter");
      let rows = this.sessions.filter((s) => !after || Date.parse(s.creationTime) >= Date.parse(after));
      if (query.get("orderColumn") === "CreationTime") {
        const dir = query.get("orderAsc") === "false" ? -1 : 1;
        rows = [...rows].sort((a, b) => dir * a.creationTime.localeCompare(b.creationTime));
      }
      return this.#page(rows, query);
    }
    if (req.method === "GET" && path === "/api/v1/backups") {
      return this.#page(
        this.backups.map((b) => ({
          ...b,
          platformId: "00000000-0000-0000-0000-000000000000",
          creationTime: null,
        })),
        query,
      );
    }
    const served = (o: VeeamObjectRow) => {
      const { backupId: _backupId, ...row } = o;
      return { ...row, platformId: "00000000-0000-0000-0000-000000000000" };
    };
    const backupObjects = /^\/api\/v1\/backups\/([^/]+)\/objects$/.exec(path);
    if (req.method === "GET" && backupObjects) {
      const id = decodeURIComponent(backupObjects[1]);
      if (!this.backups.some((b) => b.id === id)) {
        return json({ errorCode: "NotFound", message: "Backup was not found" }, 404);
      }
      return this.#page(this.objects.filter((o) => o.backupId === id).map(served), query);
    }
    if (req.method === "GET" && path === "/api/v1/backupObjects") {
      const once = [...new Map(this.objects.map((o) => [o.id, served(o)])).values()];
      return this.#page(once, query);
    }
    const start = /^\/api\/v1\/jobs\/([^/]+)\/start$/.exec(path);
    if (start && req.method === "POST") {
      const job = this.jobs.find((j) => j.id === decodeURIComponent(start[1]));
      if (!job) return json({ errorCode: "NotFound", message: "Job was not found" }, 404);
      if (this.sessions.some((s) => s.jobId === job.id && s.state !== "Stopped")) {
        return json({ errorCode: "InvalidOperation", message: `Job ${job.name} is already running` }, 400);
      }
      const session = this.addSession(job.id, this.now.toISOString(), null);
      return json(session, 201);
    }
    return json({ errorCode: "NotFound", message: `No route ${req.method} ${path}` }, 404);
  }
}

/** Starts a fake VBR server (HTTP on loopback, or HTTPS with `tls`). */
export async function startFakeVeeam(tls?: { cert: string; key: string }): Promise<FakeVeeam> {
  return await new FakeVeeam().startServer(tls);
}

/** The sample VBR server of the tests: three jobs (VM, Linux agent, SQL log), their backups and four objects. */
export function fillSampleVeeam(fake: FakeVeeam): void {
  fake.jobs = [
    { id: "j-vm", name: "VM nightly", type: "VSphereBackup", status: "Inactive", lastResult: "Success" },
    {
      id: "j-agent",
      name: "Linux agents",
      type: "LinuxAgentBackup",
      status: "Inactive",
      lastResult: "Failed",
    },
    { id: "j-log", name: "SQL logs", type: "SqlLogBackup", status: "Running", lastResult: "Success" },
  ];
  fake.backups = [
    { id: "b-vm", jobId: "j-vm", name: "VM nightly", platformName: "VMware" },
    { id: "b-agent", jobId: "j-agent", name: "Linux agents", platformName: "LinuxPhysical" },
    { id: "b-log", jobId: "j-log", name: "SQL logs", platformName: "WindowsPhysical" },
  ];
  const row = { restorePointsCount: 7 };
  fake.objects = [
    { ...row, id: "vm-web01", name: "web01", type: "VM", platformName: "VMware", backupId: "b-vm" },
    { ...row, id: "vm-web02", name: "web02", type: "VM", platformName: "VMware", backupId: "b-vm" },
    {
      ...row,
      id: "pc-db01",
      name: "db01",
      type: "Computer",
      platformName: "LinuxPhysical",
      backupId: "b-agent",
    },
    {
      ...row,
      id: "pc-sql01",
      name: "sql01",
      type: "Computer",
      platformName: "WindowsPhysical",
      backupId: "b-log",
    },
  ];
}
