/** `/api/v1/policies`: the policy aggregate as JSON, validated by the same zod schemas as the form. */
import { createRoute, z } from "@hono/zod-openapi";
import { nextRuns } from "../domain/cron_rules.ts";
import {
  createPolicy,
  deletePolicy,
  listPolicies,
  PolicyCreateInput,
  PolicyUpdateInput,
  requirePolicy,
  updatePolicy,
} from "../domain/policies.ts";
import { RetentionCountsQuery } from "../domain/retention.ts";
import { previewPolicyRetention } from "../domain/runs.ts";
import { RUN_NOW_KINDS, RunNowInput, runPolicyNow } from "../domain/run_now.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};
const PolicyId = z.object({ policyId: z.string().min(1).max(40) });

export const apiV1Policies = apiRouter();

apiV1Policies.openapi(
  createRoute({
    method: "get",
    path: "/api/v1/policies",
    summary: "List policies in your scope",
    tags: ["Policies"],
    middleware: [requires("backup.view")] as const,
    request: {
      query: z.object({
        offset: z.coerce.number().int().min(0).default(0),
        limit: z.coerce.number().int().min(1).max(200).default(50),
      }),
    },
    responses: { 200: ok("Policies by name"), 401: common[401], 403: common[403] },
  }),
  async (c) => {
    const { offset, limit } = c.req.valid("query");
    const all = await listPolicies(c.get("deps").kv, c.get("actor")!);
    return c.json({
      values: all.slice(offset, offset + limit),
      total: all.length,
      cursor: offset + limit < all.length ? String(offset + limit) : "",
    }, 200);
  },
);

apiV1Policies.openapi(
  createRoute({
    method: "post",
    path: "/api/v1/policies",
    summary: "Create a policy (the storage target must be on the BES)",
    tags: ["Policies"],
    middleware: [requires("backup.manage")] as const,
    request: { body: { content: { "application/json": { schema: PolicyCreateInput } }, required: true } },
    responses: { 201: ok("Created"), 422: err("Invalid"), ...common },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    return c.json(await createPolicy(kv, c.get("actor")!, c.req.valid("json"), clock()), 201);
  },
);

apiV1Policies.openapi(
  createRoute({
    method: "get",
    path: "/api/v1/policies/{policyId}",
    summary: "Get a policy with its next five full runs",
    tags: ["Policies"],
    middleware: [requires("backup.view")] as const,
    request: { params: PolicyId },
    responses: { 200: ok("The policy"), ...common },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const p = await requirePolicy(kv, c.get("actor")!, c.req.valid("param").policyId);
    return c.json({
      ...p,
      nextFullRuns: nextRuns(p.fullSchedule, clock(), 5, p.timeZone).map((d) => d.toISOString()),
    }, 200);
  },
);

apiV1Policies.openapi(
  createRoute({
    method: "put",
    path: "/api/v1/policies/{policyId}",
    summary: "Replace a policy's fields (the BES never changes: a besId other than the policy's is 422)",
    tags: ["Policies"],
    middleware: [requires("backup.manage")] as const,
    request: {
      params: PolicyId,
      body: { content: { "application/json": { schema: PolicyUpdateInput } }, required: true },
    },
    responses: {
      200: ok("Updated"),
      422: err("Invalid (fields names each field, besId included)"),
      ...common,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    return c.json(
      await updatePolicy(kv, c.get("actor")!, c.req.valid("param").policyId, c.req.valid("json"), clock()),
      200,
    );
  },
);

apiV1Policies.openapi(
  createRoute({
    method: "delete",
    path: "/api/v1/policies/{policyId}",
    summary: "Delete a policy with its assignments, replica rules and hooks",
    tags: ["Policies"],
    middleware: [requires("backup.manage")] as const,
    request: { params: PolicyId },
    responses: { 204: { description: "Deleted" }, ...common },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await deletePolicy(kv, c.get("actor")!, c.req.valid("param").policyId, clock());
    return c.body(null, 204);
  },
);

apiV1Policies.openapi(
  createRoute({
    method: "get",
    path: "/api/v1/policies/{policyId}/retention-preview",
    summary:
      "Which restore points retention counts would keep and expire per protected object, and the bytes freed",
    tags: ["Policies"],
    middleware: [requires("backup.view")] as const,
    request: {
      params: PolicyId,
      query: RetentionCountsQuery,
    },
    responses: {
      200: ok("Per protected object: keep, expire, bytesFreed, needsConfirmation, warning"),
      ...common,
      422: err("Invalid counts"),
    },
  }),
  async (c) => {
    const { kv } = c.get("deps");
    const p = await requirePolicy(kv, c.get("actor")!, c.req.valid("param").policyId);
    return c.json({ objects: await previewPolicyRetention(kv, p, c.req.valid("query")) }, 200);
  },
);

const RunNowCreated = z.object({
  runs: z.array(z.object({
    id: z.string(),
    hostId: z.string().nullable(),
    hostname: z.string().nullable(),
    jobId: z.string().nullable(),
    kind: z.enum(RUN_NOW_KINDS),
    status: z.string(),
    trigger: z.literal("manual"),
  })),
}).openapi("RunNowCreated");

apiV1Policies.openapi(
  createRoute({
    method: "post",
    path: "/api/v1/policies/{policyId}/run",
    summary:
      "Run a policy now: a full or incremental on every active host (or the hostIds given), a synthetic full on the BES; trigger manual",
    tags: ["Policies"],
    middleware: [requires("backup.manage")] as const,
    request: { params: PolicyId, ...jsonBody(RunNowInput) },
    responses: {
      201: ok(
        "The runs created, each with its job (an offline agent's run waits or is skipped, as scheduled)",
        RunNowCreated,
      ),
      ...common,
      409: err(
        "Refused (the message says why): the policy is disabled or paused, its BES is offline, it has no active host, or a run of it is already pending or running on one of the hosts",
      ),
      422: err(
        "Invalid kind or hostIds, a host that is not active on the policy, or too many hosts for one run",
      ),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const created = await runPolicyNow(
      kv,
      c.get("actor")!,
      c.req.valid("param").policyId,
      c.req.valid("json"),
      clock(),
    );
    return c.json({
      runs: created.map(({ run, hostname }) => ({
        id: run.id,
        hostId: run.hostId,
        hostname,
        jobId: run.jobId,
        kind: run.kind,
        status: run.status,
        trigger: "manual" as const,
      })),
    }, 201);
  },
);
