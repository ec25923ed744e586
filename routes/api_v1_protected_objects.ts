/** `/api/v1/protected-objects`: every protected object in scope with its protection state and RPO. */
import { createRoute, z } from "@hono/zod-openapi";
import {
  isRpoBreached,
  LAST_BACKUP_STATUSES,
  listProtectedObjects,
  PROTECTED_TYPES,
  PROTECTION_STATES,
} from "../domain/protected.ts";
import { requires } from "./access.ts";
import { apiRouter, denied, err, Id } from "./api_common.ts";
import { page, ProtectedObjectSchema } from "./api_schemas.ts";

/** `/api/v1/protected-objects` */
export const apiV1ProtectedObjects = apiRouter();

apiV1ProtectedObjects.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listProtectedObjects",
    summary: "Protected objects in your scope with the guide's filters; rpo_breach evaluated now",
    tags: ["Protected objects"],
    middleware: [requires("backup.view")] as const,
    request: {
      query: z.object({
        q: z.string().trim().max(200).optional(),
        orgId: Id.optional(),
        type: z.enum(PROTECTED_TYPES).optional(),
        hostId: Id.optional(),
        source: z.string().regex(/^(bes|platform):[\w-]+$/, "must be bes:<id> or platform:<id>").optional(),
        lastBackupStatus: z.enum(LAST_BACKUP_STATUSES).optional(),
        protection: z.enum(PROTECTION_STATES).optional(),
        rpo_breach: z.enum(["true", "false"]).optional(),
        cursor: z.string().max(1000).optional(),
        limit: z.coerce.number().int().min(1, "must be 1–200").max(200, "must be 1–200").default(50),
      }),
    },
    responses: {
      200: {
        description: "A page of objects (each with rpoBreach) and the cursor of the next page",
        content: {
          "application/json": {
            schema: page(ProtectedObjectSchema, {
              partial: z.boolean().describe("True when the scan stopped early; follow the cursor"),
            }),
          },
        },
      },
      ...denied,
      422: err("Invalid filter"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const now = clock();
    const { rpo_breach, ...filter } = c.req.valid("query");
    const page = await listProtectedObjects(
      kv,
      c.get("actor")!,
      { ...filter, rpoBreach: rpo_breach ?? "" },
      now,
    );
    return c.json({
      values: page.values.map((o) => ({ ...o, rpoBreach: isRpoBreached(o, now) })),
      cursor: page.cursor,
      partial: page.partial,
    }, 200);
  },
);
