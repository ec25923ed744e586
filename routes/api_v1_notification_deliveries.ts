/** `/api/v1/notification-deliveries`: the delivery log. */
import { createRoute, z } from "@hono/zod-openapi";
import { DELIVERY_STATUSES, DeliveryFilter, listDeliveries } from "../domain/notification_delivery.ts";
import { requires } from "./access.ts";
import { apiRouter, denied, err, ok } from "./api_common.ts";
import { DeliverySchema, page } from "./api_schemas.ts";

/** `/api/v1/notification-deliveries` */
export const apiV1NotificationDeliveries = apiRouter();

// --- The delivery log

apiV1NotificationDeliveries.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listNotificationDeliveries",
    summary: "Deliveries newest first, by channel and status, with a cursor",
    tags: ["Notifications"],
    middleware: [requires("backup.view")] as const,
    request: {
      query: z.object({
        channelId: z.string().max(40).optional(),
        status: z.enum(DELIVERY_STATUSES, { error: `must be one of ${DELIVERY_STATUSES.join(", ")}` })
          .optional(),
        cursor: z.string().max(500).optional(),
        limit: z.coerce.number({ error: "must be a number" }).int().min(1, "must be 1–200").max(
          200,
          "must be 1–200",
        )
          .optional(),
      }),
    },
    responses: {
      200: ok("`values` and `cursor`", page(DeliverySchema)),
      ...denied,
      422: err("Invalid filter"),
    },
  }),
  async (c) => {
    const filter = DeliveryFilter.parse(c.req.valid("query"));
    return c.json(await listDeliveries(c.get("deps").kv, c.get("actor")!, filter), 200);
  },
);
