/** `/api/v1/runs`: backup runs in your scope, filterable by failure reason, status, policy and host. */
import { createRoute, z } from "@hono/zod-openapi";
import { listRuns } from "../domain/runs.ts";
import { requires } from "./access.ts";
import { apiRouter, err, Id } from "./api_common.ts";

export const apiV1Runs = apiRouter();

apiV1Runs.openapi(
  createRoute({
    method: "get",
    path: "/api/v1/runs",
    summary:
      "Runs in your scope, newest first; filter by failure reason, status, kind, trigger, policy, host",
    tags: ["Runs"],
    middleware: [requires("backup.view")] as const,
    request: {
      query: z.object({
        policyId: Id.optional(),
        hostId: Id.optional(),
        status: z.enum(["pending", "running", "success", "warning", "failed", "skipped"]).optional(),
        reason: z.string().regex(/^[A-Z][A-Z0-9_]{1,63}$/, "must be a reason code like TARGET_FULL")
          .optional(),
        kind: z.enum(["full", "incremental", "synthetic_full"]).optional(),
        trigger: z.enum(["schedule", "manual", "retry", "pre_patch", "catch_up"]).optional(),
        cursor: Id.optional(),
        limit: z.coerce.number().int().min(1, "must be 1–200").max(200, "must be 1–200").default(50),
      }),
    },
    responses: {
      200: {
        description: "A page of runs and the cursor of the next page (empty when there is none)",
        content: {
          "application/json": { schema: z.object({ values: z.array(z.any()), cursor: z.string() }) },
        },
      },
      401: err("Not signed in or bad token"),
      403: err("Missing permission"),
      404: err("Policy not found or outside your scope"),
      422: err("Invalid filter"),
    },
  }),
  async (c) => {
    const { cursor, limit, ...filter } = c.req.valid("query");
    return c.json(await listRuns(c.get("deps").kv, c.get("actor")!, filter, { cursor, limit }), 200);
  },
);
