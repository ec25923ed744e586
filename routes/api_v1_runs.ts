/**
 * `/api/v1/runs`: backup runs in your scope, filterable by failure reason, status, policy and host, and
 * the per-run retry of the dashboard and the policy page (the same domain function, `retrySingleRun`).
 */
import { createRoute, z } from "@hono/zod-openapi";
import { retrySingleRun } from "../domain/run_retry.ts";
import { listRuns } from "../domain/runs.ts";
import { requireRun, runErrorsPage } from "../domain/run_results.ts";
import { requires } from "./access.ts";
import { apiRouter, err, Id, ok } from "./api_common.ts";
import { page, RunSchema } from "./api_schemas.ts";

/** `/api/v1/runs` */
export const apiV1Runs = apiRouter();

apiV1Runs.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listRuns",
    summary:
      "Runs in your scope, newest first; filter by failure reason, status, kind, trigger, policy, host, end time",
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
        endedAfter: z.iso.datetime({ offset: true, error: "must be an ISO 8601 time" }).optional().openapi({
          description: "Only runs that ended at or after this time, e.g. the dashboard's last 24 hours",
        }),
        cursor: Id.optional(),
        limit: z.coerce.number().int().min(1, "must be 1–200").max(200, "must be 1–200").default(50),
      }),
    },
    responses: {
      200: ok("A page of runs and the cursor of the next page (empty when there is none)", page(RunSchema)),
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
    path: "/{runId}",
    operationId: "getRun",
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
          "application/json": { schema: z.object({ run: RunSchema, errors: z.any() }).openapi("RunDetail") },
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

const RunRetried = z.object({
  runs: z.array(RunSchema).describe("The retry run (trigger retry, status pending) with its job"),
  platform: z.boolean().describe("A platform run: the platform's next sync starts the retry"),
}).openapi("RunRetried");

apiV1Runs.openapi(
  createRoute({
    method: "post",
    path: "/{runId}/retry",
    operationId: "retryRun",
    summary:
      "Retry one run (the dashboard's and the policy page's Retry): only the latest run of its policy and host, failed or warning, retryable, once",
    description:
      "A native run gets one retry run and job on the same host (a synthetic full: on the BES, for that host's namespace); retry runs " +
      "are not retryable themselves. A platform run is job-level: the platform job gets one pending run that " +
      "the platform's next sync starts. Two retries racing create one run.",
    tags: ["Runs"],
    middleware: [requires("backup.manage")] as const,
    request: { params: z.object({ runId: z.string().min(1).max(64) }) },
    responses: {
      201: ok("The retry queued", RunRetried),
      401: err("Not signed in or bad token"),
      403: err("Missing the backup.manage permission"),
      404: err("Run not found or outside your scope"),
      409: err("This run was already retried, or its policy's BES or storage target is gone"),
      422: err(
        "The rule refuses (the message says why): not the latest run, not failed or warning, not retryable, or its host is decommissioned",
      ),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const outcome = await retrySingleRun(kv, c.get("actor")!, c.req.valid("param").runId, clock());
    return c.json(outcome, 201);
  },
);
