/** `/api/v1/policies`: the policy aggregate as JSON, validated by the same zod schemas as the form. */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { pendingApproval } from "./api_v1_approvals.ts";
import { createRoute, z } from "@hono/zod-openapi";
import { nextRuns } from "../domain/cron_rules.ts";
import {
  createPolicy,
  deletePolicy,
  listPolicies,
  patchPolicy,
  PolicyCreateInput,
  PolicyPatchInput,
  PolicyUpdateInput,
  requirePolicy,
  updatePolicy,
} from "../domain/policies.ts";
import { RetentionCountsQuery } from "../domain/retention.ts";
import { previewPolicyRetention } from "../domain/retention_apply.ts";
import { RUN_NOW_KINDS, RunNowInput, runPolicyNow } from "../domain/run_now.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";
import { page, PolicySchema, QueuedRunSchema, Total } from "./api_schemas.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};
const PolicyId = z.object({ policyId: z.string().min(1).max(40) });

/** The create body's example in the OpenAPI document (ids are placeholders). */
const POLICY_EXAMPLE = {
  name: "Linux servers nightly",
  besId: "01JC9Z8X7W6V5T4S3R2Q1P0N9M",
  targetId: "01JC9Z8X7W6V5T4S3R2Q1P0N9K",
  backupType: "file",
  timeZone: "Europe/Berlin",
  fullSchedule: "0 2 * * 0",
  incrementalSchedule: "0 2 * * 1-6",
  excludePatterns: ["*.tmp"],
  exclusionTemplate: "linux-system",
  retentionDaily: 7,
  retentionWeekly: 4,
  retentionMonthly: 12,
} satisfies z.input<typeof PolicyCreateInput>;

/** The domain's PATCH fields (PolicyPatchInput), named for the document. */
const PolicyPatchBody = z.strictObject(PolicyPatchInput.shape).openapi("PolicyPatch");

/** `/api/v1/policies` */
export const apiV1Policies = apiRouter();

apiV1Policies.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listPolicies",
    summary: "List policies in your scope",
    tags: ["Policies"],
    middleware: [requires("backup.view")] as const,
    request: {
      query: z.object({
        offset: z.coerce.number().int().min(0).default(0),
        limit: z.coerce.number().int().min(1).max(200).default(50),
      }),
    },
    responses: {
      200: ok("Policies by name", page(PolicySchema, Total)),
      401: common[401],
      403: common[403],
      422: err("Invalid offset or limit"),
    },
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
    path: "/",
    operationId: "createPolicy",
    summary: "Create a policy (the storage target must be on the BES)",
    tags: ["Policies"],
    middleware: [requires("backup.manage")] as const,
    request: jsonBody(PolicyCreateInput, POLICY_EXAMPLE),
    responses: {
      201: ok("Created", PolicySchema),
      409: err("The BES is being deleted"),
      422: err("Invalid (fields names each field)"),
      ...common,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    return c.json(await createPolicy(kv, c.get("actor")!, c.req.valid("json"), clock()), 201);
  },
);

apiV1Policies.openapi(
  createRoute({
    method: "get",
    path: "/{policyId}",
    operationId: "getPolicy",
    summary: "Get a policy with its next five full runs",
    tags: ["Policies"],
    middleware: [requires("backup.view")] as const,
    request: { params: PolicyId },
    responses: {
      200: ok(
        "The policy",
        PolicySchema.extend({ nextFullRuns: z.array(z.string()) }).openapi("PolicyWithNextRuns"),
      ),
      ...common,
    },
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
    path: "/{policyId}",
    operationId: "replacePolicy",
    summary: "Replace a policy's fields (the BES never changes: a besId other than the policy's is 422)",
    tags: ["Policies"],
    middleware: [requires("backup.manage")] as const,
    request: {
      params: PolicyId,
      ...jsonBody(PolicyUpdateInput, { ...POLICY_EXAMPLE, besId: undefined, retentionDaily: 14 }),
    },
    responses: {
      200: ok("Updated", PolicySchema),
      202: pendingApproval,
      422: err("Invalid (fields names each field, besId included)"),
      ...common,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    // Turning encryption off or lowering retention waits for a second person when four-eyes is on.
    const request = await requestIfFourEyes(kv, c.get("actor")!, {
      kind: "policy.update",
      input: { policyId: c.req.valid("param").policyId, mode: "update", fields: c.req.valid("json") },
    }, clock());
    if (request) return c.json({ approvalRequest: request }, 202);
    return c.json(
      await updatePolicy(kv, c.get("actor")!, c.req.valid("param").policyId, c.req.valid("json"), clock()),
      200,
    );
  },
);

apiV1Policies.openapi(
  createRoute({
    method: "patch",
    path: "/{policyId}",
    operationId: "updatePolicy",
    summary:
      'Change some of a policy\'s fields (e.g. {"enabled": false} to disable it): merged onto the stored policy, then validated and saved as a PUT',
    description:
      "Fields left out keep their stored value. The merged policy goes through the same validation and update " +
      "as PUT (a besId other than the policy's is 422; a new storage target must be on the same BES). A field " +
      "the policy does not have is 422 naming it. `rpoHours: null` derives the RPO from the schedules again.",
    tags: ["Policies"],
    middleware: [requires("backup.manage")] as const,
    request: { params: PolicyId, ...jsonBody(PolicyPatchBody, { enabled: false }) },
    responses: {
      200: ok("Updated", PolicySchema),
      202: pendingApproval,
      422: err("Invalid or unknown field (fields names each)"),
      409: err("A concurrent change won; read the policy again and retry"),
      ...common,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    // The body as sent (validated above): patchPolicy merges only the fields it names, onto the policy as
    // read inside its atomic read-check-commit loop, so racing PATCHes of different fields both land.
    const sent = await c.req.json<PolicyPatchInput>();
    const request = await requestIfFourEyes(kv, c.get("actor")!, {
      kind: "policy.update",
      input: { policyId: c.req.valid("param").policyId, mode: "patch", fields: sent },
    }, clock());
    if (request) return c.json({ approvalRequest: request }, 202);
    return c.json(await patchPolicy(kv, c.get("actor")!, c.req.valid("param").policyId, sent, clock()), 200);
  },
);

apiV1Policies.openapi(
  createRoute({
    method: "delete",
    path: "/{policyId}",
    operationId: "deletePolicy",
    summary: "Delete a policy with its assignments, replica rules and hooks",
    tags: ["Policies"],
    middleware: [requires("backup.manage")] as const,
    request: { params: PolicyId },
    responses: { 204: { description: "Deleted" }, 202: pendingApproval, ...common },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const policyId = c.req.valid("param").policyId;
    const request = await requestIfFourEyes(kv, c.get("actor")!, {
      kind: "policy.delete",
      input: { policyId },
    }, clock());
    if (request) return c.json({ approvalRequest: request }, 202);
    await deletePolicy(kv, c.get("actor")!, policyId, clock());
    return c.body(null, 204);
  },
);

apiV1Policies.openapi(
  createRoute({
    method: "get",
    path: "/{policyId}/retention-preview",
    operationId: "previewPolicyRetention",
    summary:
      "Which restore points retention counts would keep and expire per protected object, and the bytes freed (a count not given is the policy's)",
    tags: ["Policies"],
    middleware: [requires("backup.view")] as const,
    request: {
      params: PolicyId,
      // As on the policy page: a count not given is the policy's own.
      query: RetentionCountsQuery.partial(),
    },
    responses: {
      200: ok(
        "Per protected object: keep, expire, bytesFreed, needsConfirmation, warning",
        z.object({
          objects: z.record(
            z.string(),
            z.looseObject({
              keep: z.array(z.string()).describe("Restore point ids kept"),
              expire: z.array(z.string()).describe("Restore point ids that would expire"),
              reasons: z.record(z.string(), z.array(z.string())).describe("Why each point is kept"),
              bytesFreed: z.number(),
              needsConfirmation: z.boolean(),
              warning: z.string().nullable(),
              frozen: z.string().nullable().optional().describe(
                "Set when the host's prune is frozen by a suspicious change under review: why every point is kept",
              ),
            }),
          ).describe("Keyed by protected object (host) id"),
        }).openapi("RetentionPreview"),
      ),
      ...common,
      422: err("Invalid counts"),
    },
  }),
  async (c) => {
    const { kv } = c.get("deps");
    const p = await requirePolicy(kv, c.get("actor")!, c.req.valid("param").policyId);
    const current = { daily: p.retentionDaily, weekly: p.retentionWeekly, monthly: p.retentionMonthly };
    const asked = Object.fromEntries(Object.entries(c.req.valid("query")).filter(([, v]) => v !== undefined));
    const counts = RetentionCountsQuery.parse({ ...current, ...asked });
    return c.json({ objects: await previewPolicyRetention(kv, p, counts) }, 200);
  },
);

const RunNowCreated = z.object({
  runs: z.array(QueuedRunSchema.extend({ kind: z.enum(RUN_NOW_KINDS), trigger: z.literal("manual") })),
}).openapi("RunNowCreated");

apiV1Policies.openapi(
  createRoute({
    method: "post",
    path: "/{policyId}/run",
    operationId: "runPolicy",
    summary:
      "Run a policy now: a full or incremental on every active host (or the hostIds given), a synthetic full on the BES for every active host; trigger manual",
    tags: ["Policies"],
    middleware: [requires("backup.manage")] as const,
    request: { params: PolicyId, ...jsonBody(RunNowInput, { kind: "incremental" }) },
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
