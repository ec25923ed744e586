/** `/api/v1/runs`: backup runs in your scope, filterable by failure reason, status, policy and host. */
import { createRoute, z } from "@hono/zod-openapi";
import { listRuns } from "../domain/runs.ts";
import { requireRun, runErrorsPage } from "../domain/run_results.ts";
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

apiV1Runs.openapi(
  createRoute({
    method: "get",
    path: "/api/v1/runs/{runId}",
    summary: "One run with what its engine measured (`run.stats`) and a page of its per-file errors",
    tags: ["Runs"],
    middleware: [requires("backup.view")] as const,
    request: {
      params: z.object({ runId: Id }),
      query: z.object({
        errorsPage: z.coerce.number({ error: "must be a number" }).int("must be a whole number")
          .min(0, "must be 0 or more").max(100_000, "must be at most 100000").default(0).openapi({
            description: "0-based page of the errors (one uploaded part a page)",
          }),
      }),
    },
    responses: {
      200: {
        description: "The run, and `errors`: {errors: [{path, message}], page, pages, offset, kept, total}",
        content: {
          "application/json": { schema: z.object({ run: z.any(), errors: z.any() }) },
        },
      },
      401: err("Not signed in or bad token"),
      403: err("Missing permission"),
      404: err("Run not found or outside your scope"),
      422: err("Invalid page"),
    },
  }),
  async (c) => {
    const { kv } = c.get("deps");
    const run = await requireRun(kv, c.get("actor")!, c.req.valid("param").runId);
    return c.json({ run, errors: await runErrorsPage(kv, run, c.req.valid("query").errorsPage) }, 200);
  },
);
