/**
 * Veeam Backup & Replication REST API v1 (the VBR server's own API, port 9419 by default). Endpoints used:
 *
 * | call | endpoint |
 * |---|---|
 * | log in | `POST /api/oauth2/token` (form: `grant_type=password`, `username`, `password`) |
 * | test | `GET /api/v1/serverInfo` |
 * | jobs | `GET /api/v1/jobs/states?skip&limit` (type, status, last result; `Disabled` status = disabled) |
 * | runs | `GET /api/v1/sessions?createdAfterFilter&orderColumn=CreationTime&orderAsc=true&skip&limit` |
 * | objects | `GET /api/v1/backups?skip&limit` (backup → jobId), then `GET /api/v1/backups/{id}/objects?skip&limit` per backup |
 * | start | `POST /api/v1/jobs/{id}/start` (`{"performActiveFull": false}`; answers the new session) |
 *
 * Every request carries `x-api-version` (default `1.1-rev2`) and, after login, `Authorization: Bearer`.
 * Lists are `{ data, pagination: { total, count, skip, limit } }`, read page by page until `total`. A 401
 * on a call means the access token expired (15 minutes by default): the connector logs in again once
 * and repeats the call. A 401 or 400 on the login itself means bad credentials.
 */
import { z } from "zod";
import { ConnectorError, logIn, SessionConnector } from "./types.ts";
import type * as types from "./types.ts";

export const VEEAM_DEFAULT_API_VERSION = "1.1-rev2";
const MAX_PAGES = 10_000;

const Token = z.object({ access_token: z.string().min(1), token_type: z.string().optional() });
const Pagination = z.object({
  total: z.number().int().min(0),
  count: z.number().int().min(0),
  skip: z.number().int().min(0).optional(),
  limit: z.number().int().min(0).optional(),
});
function page<T extends z.ZodType>(item: T) {
  return z.object({ data: z.array(item), pagination: Pagination });
}
const Nullable = <T extends z.ZodType>(t: T) => t.nullish();
const ServerInfo = z.object({ name: z.string().nullish(), buildVersion: z.string().nullish() });
const JobState = z.object({
  id: z.string().min(1),
  name: z.string(),
  type: z.string(),
  status: Nullable(z.string()),
  lastResult: Nullable(z.string()),
});
const Session = z.object({
  id: z.string().min(1),
  jobId: Nullable(z.string()),
  sessionType: Nullable(z.string()),
  creationTime: z.iso.datetime({ offset: true }),
  endTime: Nullable(z.iso.datetime({ offset: true })),
  state: z.string(),
  result: Nullable(z.object({
    result: z.string(),
    message: Nullable(z.string()),
    isCanceled: Nullable(z.boolean()),
  })),
});
const Backup = z.object({ id: z.string().min(1), jobId: Nullable(z.string()) });
/** `BackupObjectModel`: it does not name its backup, so objects are read per backup to know their job. */
const BackupObject = z.object({
  id: z.string().min(1),
  name: z.string(),
  type: z.string(),
  platformName: Nullable(z.string()),
});
const StartedSession = z.object({ id: z.string().min(1) }).nullish();

/** Veeam job types → the guide's run type and the protected type of their objects (README table). */
export function mapVeeamJobType(
  type: string,
): { jobType: types.VendorJobType; objectType: types.VendorObjectType | null } {
  const t = type.toLowerCase();
  const jobType: types.VendorJobType = t.includes("log")
    ? "log"
    : t.includes("replica")
    ? "snapshot"
    : "incremental";
  let objectType: types.VendorObjectType | null = null;
  if (t.includes("copy")) objectType = null;
  else if (t.includes("agent") || t.includes("computer")) objectType = "physical";
  else if (
    t.includes("objectstorage") || t.includes("entra") || t.includes("cloud") && !t.includes("director")
  ) {
    objectType = "cloud_resource";
  } else if (t.includes("file") || t.includes("nas") || t.includes("unstructured")) objectType = "nas";
  else if (
    /vsphere|hyperv|director|proxmox|nutanix|ahv|ovirt|replica/.test(t) || t === "backup"
  ) objectType = "vm";
  return { jobType, objectType };
}

const CLOUD_PLATFORMS = /amazon|aws|ec2|azure|google|gcp|cloud(?!director)/i;

/** Veeam backup object type and platform → our protected type; `hint` is the job's (README table). */
export function mapVeeamObjectType(
  type: string,
  platformName: string | null | undefined,
  hint: types.VendorObjectType | null,
): types.VendorObjectType {
  const t = type.toLowerCase();
  const p = (platformName ?? "").toLowerCase();
  if (CLOUD_PLATFORMS.test(p) || /ec2|rds|azure|bucket|objectstorage/.test(t)) return "cloud_resource";
  if (/fileshare|nasshare|smbshare|nfsshare|fileserver|nasfiler/.test(t) || /unstructured|nas/.test(p)) {
    return "nas";
  }
  if (/^(vm|virtualmachine|vcloudvm|vcloud|vapp)$/.test(t)) return "vm";
  if (/computer|server|workstation|agent|cluster/.test(t) || p.includes("physical")) return "physical";
  if (/directory|fileset|files|volume/.test(t)) return "fileset";
  if (/vmware|hyperv|proxmox|nutanix|clouddirector|ovirt/.test(p)) return "vm";
  return hint ?? "physical";
}

/** A Veeam session's state and result → our status (README table). */
export function mapVeeamStatus(
  state: string,
  result: { result: string; isCanceled?: boolean | null } | null | undefined,
): { status: types.VendorRunStatus; cancelled: boolean } {
  if (state !== "Stopped") {
    return { status: /^(Idle|Waiting)/.test(state) ? "pending" : "running", cancelled: false };
  }
  if (result?.isCanceled) return { status: "failed", cancelled: true };
  switch (result?.result) {
    case "Success":
      return { status: "success", cancelled: false };
    case "Warning":
      return { status: "warning", cancelled: false };
    default:
      return { status: "failed", cancelled: false };
  }
}

/** The Veeam B&R connector. */
export class VeeamConnector extends SessionConnector implements types.PlatformConnector {
  readonly type = "veeam" as const;

  constructor(options: types.ConnectorOptions) {
    super("Veeam", options, 200);
  }

  protected override sessionHeaders(): Record<string, string> {
    return { "x-api-version": this.options.apiVersion || VEEAM_DEFAULT_API_VERSION };
  }

  protected override async login(): Promise<string> {
    const req: types.HttpRequest = {
      method: "POST",
      path: "/api/oauth2/token",
      form: { grant_type: "password", username: this.options.username, password: this.options.password },
      idempotent: true,
    };
    const token = await logIn(this.http, req, this.sessionHeaders(), Token, {
      statuses: [400, 401],
      message: (status) =>
        `Veeam rejected the credentials of ${this.options.username} (${status}); check the user name and password`,
    });
    this.http.addSecret(token.access_token); // sent back on every call: an echoed Authorization header is scrubbed
    return `Bearer ${token.access_token}`;
  }

  async #get<T>(req: types.HttpRequest, schema: z.ZodType<T>): Promise<T> {
    return await this.session.get(req, schema);
  }

  /** Every item of a paged list (skip/limit until pagination.total). */
  async #all<T>(path: string, item: z.ZodType<T>, query: types.HttpRequest["query"] = {}): Promise<T[]> {
    const out: T[] = [];
    const schema = page(item);
    for (let skip = 0, n = 0; n < MAX_PAGES; n++) {
      const body = await this.#get(
        { method: "GET", path, query: { ...query, skip, limit: this.pageSize } },
        schema,
      ) as {
        data: T[];
        pagination: z.infer<typeof Pagination>;
      };
      out.push(...body.data);
      skip += body.data.length;
      if (skip >= body.pagination.total) return out;
      // A page that stops short of the announced total is not a complete list: trusting it would mark
      // every job or object after it as gone.
      if (body.data.length === 0) {
        throw new ConnectorError(
          "bad_response",
          `Veeam GET ${path}: an empty page at ${skip} of ${body.pagination.total} items; the list is incomplete`,
        );
      }
    }
    throw new ConnectorError("bad_response", `Veeam GET ${path}: more than ${MAX_PAGES} pages`);
  }

  async testConnection(): Promise<types.ConnectivityResult> {
    const info = await this.#get({ method: "GET", path: "/api/v1/serverInfo" }, ServerInfo);
    return {
      detail: `Veeam Backup & Replication ${info.buildVersion ?? "(unknown build)"}${
        info.name ? ` (${this.http.clean(info.name)})` : ""
      }`,
    };
  }

  async listJobs(): Promise<types.VendorJob[]> {
    const states = await this.#all("/api/v1/jobs/states", JobState);
    return states.map((s) => ({
      id: s.id,
      name: s.name,
      vendorType: s.type,
      ...mapVeeamJobType(s.type),
      // EJobStatus: `Disabled`, `Inactive`, `Running`… (older revisions spell it in lower case).
      enabled: s.status?.toLowerCase() !== "disabled",
    }));
  }

  async listRuns(jobs: types.VendorJob[], since: Date | null): Promise<types.VendorRun[]> {
    const byId = new Map(jobs.map((j) => [j.id, j]));
    const sessions = await this.#all("/api/v1/sessions", Session, {
      orderColumn: "CreationTime",
      orderAsc: true,
      createdAfterFilter: since?.toISOString(),
    });
    const out: types.VendorRun[] = [];
    for (const s of sessions) {
      const job = s.jobId ? byId.get(s.jobId) : undefined;
      if (!job) continue; // restores, rescans, configuration backups: not runs of a backup job
      const { status, cancelled } = mapVeeamStatus(s.state, s.result);
      out.push({
        id: s.id,
        jobId: job.id,
        status,
        cancelled,
        jobType: job.jobType,
        startedAt: new Date(s.creationTime).toISOString(),
        endedAt: s.endTime && s.state === "Stopped" ? new Date(s.endTime).toISOString() : null,
        bytesTransferred: 0,
        protectedBytes: 0,
        message: s.result?.message ? this.http.clean(s.result.message) : null,
        objects: null,
      });
    }
    return out.sort((a, b) => (a.startedAt ?? "").localeCompare(b.startedAt ?? ""));
  }

  async listObjects(jobs: types.VendorJob[]): Promise<types.VendorObject[]> {
    const known = new Map(jobs.map((j) => [j.id, j]));
    const backups = await this.#all("/api/v1/backups", Backup);
    // An object in two jobs' backups is listed in each with the same id: folded into one, with both jobs.
    const objects = new Map<string, types.VendorObject>();
    for (const backup of backups) {
      const job = backup.jobId ? known.get(backup.jobId) : undefined;
      const rows = await this.#all(`/api/v1/backups/${encodeURIComponent(backup.id)}/objects`, BackupObject);
      for (const row of rows) {
        const existing = objects.get(row.id);
        if (existing) {
          if (job && !existing.jobIds.length) {
            existing.type = mapVeeamObjectType(row.type, row.platformName, job.objectType);
          }
          if (job && !existing.jobIds.includes(job.id)) existing.jobIds.push(job.id);
          continue;
        }
        objects.set(row.id, {
          id: row.id,
          name: row.name,
          vendorType: row.platformName ? `${row.type} (${row.platformName})` : row.type,
          type: mapVeeamObjectType(row.type, row.platformName, job?.objectType ?? null),
          jobIds: job ? [job.id] : [],
        });
      }
    }
    return [...objects.values()];
  }

  async startJob(job: types.VendorJob): Promise<{ runId: string | null }> {
    const req: types.HttpRequest = {
      method: "POST",
      path: `/api/v1/jobs/${encodeURIComponent(job.id)}/start`,
      json: { performActiveFull: false },
    };
    const res = await this.session.call(req);
    if (!res.ok) throw await this.http.failure(res, req);
    const session = await this.http.parse(res, StartedSession, req);
    return { runId: session?.id ?? null };
  }
}
