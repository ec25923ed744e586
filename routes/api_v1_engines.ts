/** `/api/v1/engines`: backup engine servers (BES) — list, detail with metrics, rename, delete. */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { pendingApproval } from "./api_v1_approvals.ts";
import { createRoute, z } from "@hono/zod-openapi";
import {
  deleteEngine,
  EngineQuery,
  EngineUpdate,
  listEngineMetrics,
  listEngines,
  refuseHeldEngineDeletion,
  requireEngine,
  updateEngine,
} from "../domain/engines.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok, scopedErrors } from "./api_common.ts";
import { EngineSchema, page, Total } from "./api_schemas.ts";

const EngineId = z.object({ engineId: z.string().min(1).max(40) });

/** `/api/v1/engines` */
export const apiV1Engines = apiRouter();

apiV1Engines.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listEngines",
    summary: "List engines (filters: q, orgId, status; sort; offset/limit)",
    tags: ["Engines"],
    middleware: [requires("backup.view")] as const,
    request: { query: EngineQuery },
    responses: {
      200: ok("Engines", page(EngineSchema, Total)),
      401: scopedErrors[401],
      403: scopedErrors[403],
      422: err("Invalid filter"),
    },
  }),
  async (c) => {
    const filter = c.req.valid("query");
    const { values, total } = await listEngines(c.get("deps").kv, c.get("actor")!, filter);
    const next = filter.offset + filter.limit;
    return c.json({ values, total, cursor: next < total ? String(next) : "" }, 200);
  },
);

apiV1Engines.openapi(
  createRoute({
    method: "get",
    path: "/{engineId}",
    operationId: "getEngine",
    summary: "Get an engine with its last 24 h of metrics",
    tags: ["Engines"],
    middleware: [requires("backup.view")] as const,
    request: { params: EngineId },
    responses: {
      200: ok(
        "The engine",
        EngineSchema.extend({ metricsHistory: z.array(z.looseObject({ at: z.string() })) }).openapi(
          "EngineWithMetrics",
        ),
      ),
      ...scopedErrors,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const engine = await requireEngine(kv, c.get("actor")!, c.req.valid("param").engineId);
    return c.json({ ...engine, metricsHistory: await listEngineMetrics(kv, engine.id, clock()) }, 200);
  },
);

apiV1Engines.openapi(
  createRoute({
    method: "patch",
    path: "/{engineId}",
    operationId: "updateEngine",
    summary: "Edit name, PXE enabled and PXE network (CIDR)",
    tags: ["Engines"],
    middleware: [requires("backup.manage")] as const,
    request: {
      params: EngineId,
      ...jsonBody(EngineUpdate, { name: "bes-london-1", pxeEnabled: true, pxeNetwork: "10.20.0.0/24" }),
    },
    responses: { 200: ok("Updated", EngineSchema), 422: err("Invalid"), ...scopedErrors },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const engine = await updateEngine(
      kv,
      c.get("actor")!,
      c.req.valid("param").engineId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(engine, 200);
  },
);

apiV1Engines.openapi(
  createRoute({
    method: "delete",
    path: "/{engineId}",
    operationId: "deleteEngine",
    summary: "Delete an engine and cascade to its storage targets and their policies",
    tags: ["Engines"],
    middleware: [requires("backup.manage")] as const,
    request: { params: EngineId },
    responses: {
      204: { description: "Deleted" },
      202: pendingApproval,
      409: err("A restore point on its storage targets is under legal hold (the message names the case)"),
      ...scopedErrors,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const engineId = c.req.valid("param").engineId;
    // Held points are never pruned or expired: 409 naming the hold's case, before any approval request.
    await refuseHeldEngineDeletion(kv, await requireEngine(kv, c.get("actor")!, engineId));
    const request = await requestIfFourEyes(kv, c.get("actor")!, {
      kind: "engine.delete",
      input: { engineId },
    }, clock());
    if (request) return c.json({ approvalRequest: request }, 202);
    await deleteEngine(kv, c.get("actor")!, engineId, clock());
    return c.body(null, 204);
  },
);
