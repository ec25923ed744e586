/** `/api/v1/jobs`: the jobs view as JSON (list with the page's filters, one job, its runs) and job retry. */
import { createRoute, z } from "@hono/zod-openapi";
import { ValidationError } from "../domain/errors.ts";
import {
  getJob,
  listJobRuns,
  listJobs,
  parseJobFilter,
  retryBlockedReason,
  retryJob,
} from "../domain/job_views.ts";
import { requires } from "./access.ts";
import { apiRouter, err, ok } from "./api_common.ts";
import { JobSchema, page, QueuedRunSchema, RunSchema, Total } from "./api_schemas.ts";
import { fieldErrors } from "./forms.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission (or CSRF failure for a browser session)"),
  404: err("Job not found or outside your scope"),
  422: err("Invalid input, or the retry is not allowed (the message says why)"),
};
const JobId = z.object({ jobId: z.string().min(1).max(64) });

/** Query strings arrive as text; `parseJobFilter` (the page's schema) gives the field messages. */
const JobQuery = z.object({
  q: z.string().max(200).optional(),
  source: z.string().max(80).optional(),
  status: z.string().max(20).optional(),
  type: z.string().max(20).optional(),
  orgId: z.string().max(64).optional(),
  from: z.string().max(10).optional().openapi({ description: "Last run on or after this UTC day" }),
  to: z.string().max(10).optional().openapi({ description: "Last run on or before this UTC day" }),
  sort: z.string().max(20).optional().openapi({ description: "name, -name, lastRunAt or -lastRunAt" }),
  offset: z.string().max(10).optional(),
  limit: z.string().max(5).optional(),
});

/** `/api/v1/jobs` */
export const apiV1Jobs = apiRouter();

apiV1Jobs.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listJobs",
    summary:
      "Jobs in your scope with their last run (filters: q, source, status, type, orgId, from, to; sort; offset/limit)",
    tags: ["Jobs"],
    middleware: [requires("backup.view")] as const,
    request: { query: JobQuery },
    responses: {
      200: ok("A page of jobs, the total and the next offset", page(JobSchema, Total)),
      401: common[401],
      403: common[403],
      422: common[422],
    },
  }),
  async (c) => {
    const parsed = parseJobFilter(c.req.valid("query"));
    if (!parsed.success) throw new ValidationError("The filters are invalid", fieldErrors(parsed.error));
    const filter = parsed.data;
    const { values, total } = await listJobs(c.get("deps").kv, c.get("actor")!, filter);
    const next = filter.offset + filter.limit;
    return c.json({ values, total, cursor: next < total ? String(next) : "" }, 200);
  },
);

apiV1Jobs.openapi(
  createRoute({
    method: "get",
    path: "/{jobId}",
    operationId: "getJob",
    summary: "One job with its last run, active hosts and whether a retry is allowed (and why not)",
    tags: ["Jobs"],
    middleware: [requires("backup.view")] as const,
    request: { params: JobId },
    responses: {
      200: ok(
        "The job",
        JobSchema.extend({
          activeHosts: z.array(z.looseObject({ id: z.string(), hostname: z.string() })),
          retry: z.object({ allowed: z.boolean(), reason: z.string().nullable() }),
        }).openapi("JobDetail"),
      ),
      ...common,
    },
  }),
  async (c) => {
    const { job, retry } = await getJob(c.get("deps").kv, c.get("actor")!, c.req.valid("param").jobId);
    const reason = retryBlockedReason(retry.facts);
    return c.json({ ...job, activeHosts: retry.hosts, retry: { allowed: reason === null, reason } }, 200);
  },
);

apiV1Jobs.openapi(
  createRoute({
    method: "get",
    path: "/{jobId}/runs",
    operationId: "listJobRuns",
    summary: "A job's runs, newest first; `cursor` is the last run id of the previous page",
    tags: ["Jobs"],
    middleware: [requires("backup.view")] as const,
    request: {
      params: JobId,
      query: z.object({
        cursor: z.string().regex(/^[0-9A-Za-z-]{1,64}$/, "must be a run id").optional(),
        limit: z.coerce.number().int().min(1, "must be 1–200").max(200, "must be 1–200").default(50),
      }),
    },
    responses: {
      200: ok("A page of runs and the cursor of the next one (empty when none)", page(RunSchema)),
      ...common,
    },
  }),
  async (c) => {
    const { cursor, limit } = c.req.valid("query");
    return c.json(
      await listJobRuns(c.get("deps").kv, c.get("actor")!, c.req.valid("param").jobId, { cursor, limit }),
      200,
    );
  },
);

apiV1Jobs.openapi(
  createRoute({
    method: "post",
    path: "/{jobId}/retry",
    operationId: "retryJob",
    summary:
      "Retry a job: its latest run must be failed or warning and retryable; a native job dispatches to every active host, a platform job gets one pending run that the platform's next sync starts",
    tags: ["Jobs"],
    middleware: [requires("backup.manage")] as const,
    request: { params: JobId },
    responses: {
      201: ok(
        "The runs queued, with their hosts",
        z.object({
          runs: z.array(QueuedRunSchema),
          pending: z.boolean().describe("True when part of a large retry is still being dispatched"),
        }).openapi("JobRetried"),
      ),
      ...common,
      409: err("Another retry of this job won the race, or its BES or storage target is gone"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const { runs, hosts, pending } = await retryJob(kv, c.get("actor")!, c.req.valid("param").jobId, clock());
    const names = new Map(hosts.map((h) => [h.id, h.hostname]));
    return c.json({
      runs: runs.map((r) => ({
        id: r.id,
        jobId: r.jobId,
        kind: r.kind,
        status: r.status,
        trigger: r.trigger,
        hostId: r.hostId,
        hostname: r.hostId ? names.get(r.hostId) ?? r.hostId : "platform" in r ? "platform" : "BES",
      })),
      pending,
    }, 201);
  },
);
