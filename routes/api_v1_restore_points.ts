/**
 * `/api/v1/restore-points`: restore points — list, detail, expire, browse and search — and `/api/v1/searches`,
 * the results of a search in a restore point.
 */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { pendingApproval } from "./api_v1_approvals.ts";
import { createRoute, z } from "@hono/zod-openapi";
import { browse, getBrowse, getSearch, requestSearch, SearchQuery } from "../domain/restore_browse.ts";
import {
  chainOf,
  listRestorePoints,
  requireRestorePoint,
  RESTORE_POINT_STATUSES,
  VERIFICATION_STATUSES,
} from "../domain/restore_points.ts";
import { NotFoundError } from "../domain/errors.ts";
import { listReplicationsOfPoint } from "../domain/replicas.ts";
import { ExpireArchivedInput, expireArchivedPoint } from "../domain/archive.ts";
import { requires } from "./access.ts";
import { apiRouter, err, Id, jsonBody, ok, restoreDenied } from "./api_common.ts";
import { BrowseSchema, page, RestorePointSchema, SearchSchema } from "./api_schemas.ts";

const PointParam = z.object({ restorePointId: Id });

const PathQuery = z.object({
  path: z.string().max(4096, "must be at most 4096 characters").optional().openapi({
    description: 'An absolute folder path (POSIX or Windows); default "/"',
  }),
});

/** A page of a ready listing or search (0-based; past the last page answers the last). */
const PageParam = z.coerce.number({ error: "must be a number" }).int("must be a whole number")
  .min(0, "must be 0 or more").max(100_000, "must be at most 100000").default(0).openapi({
    description: "0-based page of a ready listing (LIST_PAGE_SIZE = 200 entries a page); the state says " +
      "`page`, `pages`, `offset`, `kept` and `total`",
  });

/** `/api/v1/restore-points` */
export const apiV1RestorePoints = apiRouter();

/** `/api/v1/searches` */
export const apiV1Searches = apiRouter();

apiV1RestorePoints.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listRestorePoints",
    summary:
      "Restore points in your scope, newest first; filter by host, policy, BES, chain, status, verification",
    tags: ["Restore"],
    middleware: [requires("backup.restore")] as const,
    request: {
      query: z.object({
        hostId: Id.optional(),
        policyId: Id.optional(),
        besId: Id.optional(),
        chainId: z.string().trim().max(200).optional(),
        status: z.enum(RESTORE_POINT_STATUSES).optional(),
        verification: z.enum(VERIFICATION_STATUSES).optional(),
        cursor: Id.optional(),
        limit: z.coerce.number().int().min(1, "must be 1–200").max(200, "must be 1–200").default(50),
      }),
    },
    responses: {
      200: {
        description: "A page of restore points and the cursor of the next page (empty when there is none)",
        content: {
          "application/json": { schema: page(RestorePointSchema) },
        },
      },
      ...restoreDenied,
      422: err("Invalid filter"),
    },
  }),
  async (c) => {
    const filter = c.req.valid("query");
    return c.json(await listRestorePoints(c.get("deps").kv, c.get("actor")!, filter), 200);
  },
);

apiV1RestorePoints.openapi(
  createRoute({
    method: "get",
    path: "/{restorePointId}",
    operationId: "getRestorePoint",
    summary:
      "A restore point, its chain (the full first, then its incrementals, with sizes and verification) and its replications (per replica rule: status pending/running/succeeded/failed, times, bytes, error)",
    tags: ["Restore"],
    middleware: [requires("backup.restore")] as const,
    request: { params: PointParam },
    responses: {
      200: {
        description: "restorePoint, chain and replications",
        content: {
          "application/json": {
            schema: z.object({
              restorePoint: RestorePointSchema,
              chain: z.array(RestorePointSchema),
              replications: z.array(
                z.looseObject({ ruleId: z.string(), targetId: z.string(), status: z.string() }),
              ),
            }).openapi("RestorePointDetail"),
          },
        },
      },
      ...restoreDenied,
      404: err("Not found or outside your scope"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const actor = c.get("actor")!;
    const { restorePointId } = c.req.valid("param");
    const restorePoint = await requireRestorePoint(kv, actor, restorePointId);
    const [chain, replications] = await Promise.all([
      chainOf(kv, restorePoint),
      listReplicationsOfPoint(kv, restorePoint.id, clock()),
    ]);
    return c.json({ restorePoint, chain, replications }, 200);
  },
);

apiV1RestorePoints.openapi(
  createRoute({
    method: "post",
    path: "/{restorePointId}/expire",
    operationId: "expireRestorePoint",
    summary:
      'Expire an archived restore point (kept since its host was decommissioned): confirm with {"confirm": true}; the BES prunes its data',
    tags: ["Restore"],
    middleware: [requires("backup.manage")] as const,
    request: { params: PointParam, ...jsonBody(ExpireArchivedInput, { confirm: true }) },
    responses: {
      200: ok("The restore point, now expired", RestorePointSchema),
      202: pendingApproval,
      401: err("Not signed in or bad token"),
      403: err("Missing the backup.manage permission"),
      404: err("Not found or outside your scope"),
      409: err(
        "Not archived (retention manages it), already expired, under a legal hold, or an incremental still depends on it",
      ),
      422: err("Missing confirmation"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const restorePointId = c.req.valid("param").restorePointId;
    const request = await requestIfFourEyes(
      kv,
      c.get("actor")!,
      { kind: "restore_point.expire", input: { restorePointId } },
      clock(),
    );
    if (request) return c.json({ approvalRequest: request }, 202);
    const point = await expireArchivedPoint(
      kv,
      c.get("actor")!,
      c.req.valid("param").restorePointId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(point, 200);
  },
);

apiV1RestorePoints.openapi(
  createRoute({
    method: "get",
    path: "/{restorePointId}/browse",
    operationId: "getBrowse",
    summary:
      "The kept listing of a folder of a restore point (poll after POST until status is ready or failed)",
    tags: ["Restore"],
    middleware: [requires("backup.restore")] as const,
    request: { params: PointParam, query: PathQuery.extend({ page: PageParam }) },
    responses: {
      200: ok(
        "The browse state: status pending, ready (the entries of `page`) or failed (error)",
        BrowseSchema,
      ),
      ...restoreDenied,
      404: err("Restore point not found, or this folder was never browsed"),
      422: err("Invalid path"),
    },
  }),
  async (c) => {
    const { restorePointId } = c.req.valid("param");
    const state = await getBrowse(
      c.get("deps").kv,
      c.get("actor")!,
      restorePointId,
      c.req.valid("query").path,
      c.get("deps").clock(),
      c.req.valid("query").page,
    );
    if (!state) throw new NotFoundError("This folder has not been browsed yet; POST to request it");
    return c.json(state, 200);
  },
);

apiV1RestorePoints.openapi(
  createRoute({
    method: "post",
    path: "/{restorePointId}/browse",
    operationId: "browseRestorePoint",
    summary: "Browse a folder: answers the kept listing at once, or queues a browse job on the BES (202)",
    tags: ["Restore"],
    middleware: [requires("backup.restore")] as const,
    request: { params: PointParam, query: PathQuery },
    responses: {
      200: ok("The kept listing (ready, or already pending)", BrowseSchema),
      202: ok("A browse job was queued; poll GET …/browse?path=…", BrowseSchema),
      ...restoreDenied,
      404: err("Not found or outside your scope"),
      422: err("Invalid path, a restore point that is not complete, or its BES offline"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const now = clock();
    const actor = c.get("actor")!;
    const { restorePointId } = c.req.valid("param");
    const { path } = c.req.valid("query");
    const { state, queued } = await browse(kv, actor, restorePointId, path, now);
    return queued ? c.json(state, 202) : c.json(state, 200);
  },
);

apiV1RestorePoints.openapi(
  createRoute({
    method: "post",
    path: "/{restorePointId}/search",
    operationId: "searchRestorePoint",
    summary: "Search a restore point by name or glob: queues a search job on the BES",
    tags: ["Restore"],
    middleware: [requires("backup.restore")] as const,
    request: {
      params: PointParam,
      body: {
        content: {
          "application/json": {
            schema: z.object({
              query: SearchQuery.describe("A name (substring, case-insensitive) or a glob such as *.pdf"),
            }),
            example: { query: "*.pdf" },
          },
        },
        required: true,
      },
    },
    responses: {
      202: ok("The pending search; poll GET /api/v1/searches/{searchId}", SearchSchema),
      ...restoreDenied,
      404: err("Not found or outside your scope"),
      422: err("Invalid query, a restore point that is not complete, or its BES offline"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const { restorePointId } = c.req.valid("param");
    const state = await requestSearch(
      kv,
      c.get("actor")!,
      restorePointId,
      c.req.valid("json").query,
      clock(),
    );
    return c.json(state, 202);
  },
);

apiV1Searches.openapi(
  createRoute({
    method: "get",
    path: "/{searchId}",
    operationId: "getSearch",
    summary: "A search: status pending, ready (matches with path, size and modification time) or failed",
    tags: ["Restore"],
    middleware: [requires("backup.restore")] as const,
    request: { params: z.object({ searchId: Id }), query: z.object({ page: PageParam }) },
    responses: {
      200: ok("The search state, with the matches of `page` once ready", SearchSchema),
      ...restoreDenied,
      404: err("Not found or outside your scope"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const { searchId } = c.req.valid("param");
    return c.json(await getSearch(kv, c.get("actor")!, searchId, clock(), c.req.valid("query").page), 200);
  },
);
