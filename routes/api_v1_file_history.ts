/**
 * `/api/v1/hosts/{hostId}/file-history`: the version history of one file on a host (domain/file_history.ts) —
 * ask for it (POST: queues BES `file_history` jobs for the points not yet examined, 202; 200 when the kept
 * history is up to date), read it (GET, a page of versions), and restore one version (POST …/restore: a
 * file restore request of that point and path). All need backup.restore and the host in scope.
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  getFileHistory,
  HistoryPath,
  requestFileHistory,
  restoreFileVersion,
  VersionRestoreInput,
} from "../domain/file_history.ts";
import { requires } from "./access.ts";
import { apiRouter, err, Id, jsonBody, ok } from "./api_common.ts";
import { RestoreSchema } from "./api_schemas.ts";

const denied = { 401: err("Not signed in or bad token"), 403: err("Missing the backup.restore permission") };
const HostParam = z.object({ hostId: Id });

const PointSchema = z.looseObject({
  id: z.string(),
  policyId: z.string(),
  policyName: z.string(),
  completedAt: z.string(),
});

const VersionSchema = z.looseObject({
  state: z.enum(["present", "absent", "unreadable"]),
  type: z.enum(["file", "dir", "symlink"]).nullable(),
  size: z.number().nullable(),
  mtime: z.string().nullable(),
  mode: z.number().nullable(),
  contentId: z.string().nullable().describe("SHA-256 of the file's bytes (null when not hashed)"),
  chunksId: z.string().nullable().describe("SHA-256 of the file's chunk id list"),
  error: z.string().nullable(),
  points: z.array(PointSchema).describe("The restore points holding this version, newest first"),
  firstSeen: z.string(),
  lastSeen: z.string(),
}).openapi("FileVersion");

export const FileHistorySchema = z.looseObject({
  hostId: z.string(),
  hostname: z.string(),
  path: z.string(),
  status: z.enum(["none", "pending", "ready"]),
  pointsTotal: z.number().int(),
  pointsExamined: z.number().int(),
  pointsNew: z.number().int(),
  pointsCapped: z.boolean(),
  errors: z.array(z.string()),
  versionsTotal: z.number().int(),
  page: z.number().int(),
  pages: z.number().int(),
  versions: z.array(VersionSchema).describe("The versions of `page`, newest first"),
  requestedAt: z.string().nullable(),
  updatedAt: z.string().nullable(),
}).openapi("FileHistory");

const PathInput = z.object({ path: HistoryPath.describe("An absolute POSIX path of a file on the host") });

/** `/api/v1/hosts/:hostId/file-history` */
export const apiV1FileHistory = apiRouter();

apiV1FileHistory.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "getFileHistory",
    summary:
      "The kept version history of a file on a host (status none, pending or ready), a page of versions",
    tags: ["Restore"],
    middleware: [requires("backup.restore")] as const,
    request: {
      params: HostParam,
      query: z.object({
        path: z.string().max(4096).describe("An absolute POSIX path of a file on the host"),
        page: z.coerce.number({ error: "must be a number" }).int().min(0).max(100_000).default(0)
          .describe("0-based page of versions (25 a page)"),
      }),
    },
    responses: {
      200: ok(
        "The history: pointsNew > 0 means newer restore points are not in it yet (POST to add)",
        FileHistorySchema,
      ),
      ...denied,
      404: err("Host not found or outside your scope"),
      422: err("Invalid path"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const { path, page } = c.req.valid("query");
    return c.json(
      await getFileHistory(kv, c.get("actor")!, c.req.valid("param").hostId, path, clock(), page),
      200,
    );
  },
);

apiV1FileHistory.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "requestFileHistory",
    summary:
      "Ask for a file's version history: queues BES jobs for the host's restore points not yet examined (202), or answers the kept, up-to-date history (200)",
    tags: ["Restore"],
    middleware: [requires("backup.restore")] as const,
    request: { params: HostParam, ...jsonBody(PathInput, { path: "/srv/data/report.xlsx" }) },
    responses: {
      200: ok("The history, up to date (or already being computed)", FileHistorySchema),
      202: ok("Jobs were queued; poll GET …/file-history?path=… until status is ready", FileHistorySchema),
      ...denied,
      404: err("Host not found or outside your scope"),
      409: err("The request conflicted repeatedly; try again"),
      422: err("Invalid path"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const { view, queued } = await requestFileHistory(
      kv,
      c.get("actor")!,
      c.req.valid("param").hostId,
      c.req.valid("json").path,
      clock(),
    );
    return queued ? c.json(view, 202) : c.json(view, 200);
  },
);

apiV1FileHistory.openapi(
  createRoute({
    method: "post",
    path: "/restore",
    operationId: "restoreFileVersion",
    summary:
      "Restore one version of the file: a file restore (high priority) of `path` from `restorePointId`, to its original location or another host and folder",
    description:
      "The restore point must be the host's and the history must show the file in it. Overwriting " +
      'an existing file needs {"overwrite": true, "confirm": true}.',
    tags: ["Restore"],
    middleware: [requires("backup.restore")] as const,
    request: {
      params: HostParam,
      ...jsonBody(VersionRestoreInput, {
        path: "/srv/data/report.xlsx",
        restorePointId: "01JC9Z8X7W6V5T4S3R2Q1P0N9M",
        location: "other",
        targetPath: "/restore",
        overwrite: false,
      }),
    },
    responses: {
      201: ok("The restore request (status pending); poll GET /api/v1/restores/{restoreId}", RestoreSchema),
      ...denied,
      404: err("Host, restore point or target host not found or outside your scope"),
      409: err("The restore could not be queued; try again"),
      422: err("Invalid input, a point that is not the host's or does not hold the file, or no confirmation"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const restore = await restoreFileVersion(
      kv,
      c.get("actor")!,
      c.req.valid("param").hostId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(restore, 201);
  },
);
