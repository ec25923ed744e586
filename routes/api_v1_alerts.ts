/** `/api/v1/alerts`: open alerts and their acknowledgement. */
import { createRoute, z } from "@hono/zod-openapi";
import { acknowledgeAlert, AlertQuery, listAlerts } from "../domain/alerts.ts";
import { requires } from "./access.ts";
import { apiRouter, err, ok, scopedErrors } from "./api_common.ts";
import { AlertSchema, page } from "./api_schemas.ts";

const AlertId = z.object({ alertId: z.string().min(1).max(40) });

/** `/api/v1/alerts` */
export const apiV1Alerts = apiRouter();

apiV1Alerts.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listAlerts",
    summary: "Alerts newest first (filters: status, severity; cursor)",
    tags: ["Alerts"],
    middleware: [requires("backup.view")] as const,
    request: { query: AlertQuery },
    responses: {
      200: ok("Alerts", page(AlertSchema)),
      401: scopedErrors[401],
      403: scopedErrors[403],
      422: err("Invalid filter or cursor"),
    },
  }),
  async (c) => {
    return c.json(
      await listAlerts(c.get("deps").kv, c.get("actor")!, c.req.valid("query")),
      200,
    );
  },
);

apiV1Alerts.openapi(
  createRoute({
    method: "post",
    path: "/{alertId}/acknowledge",
    operationId: "acknowledgeAlert",
    summary: "Acknowledge an open alert",
    tags: ["Alerts"],
    middleware: [requires("backup.manage")] as const,
    request: { params: AlertId },
    responses: {
      200: ok("Acknowledged (an alert no longer open is answered as it is)", AlertSchema),
      ...scopedErrors,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    return c.json(await acknowledgeAlert(kv, c.get("actor")!, c.req.valid("param").alertId, clock()), 200);
  },
);
