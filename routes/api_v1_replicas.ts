/**
 * `/api/v1/replicas`: replica rules (the guide's "Replication Rules (3-2-1 Strategy)") with their
 * replication status, validated by the same zod schemas as the policy page's and the Replicas page's
 * forms (`ReplicaCreateInput`, `ReplicaFields`); and a policy's 3-2-1 status, as its page's badge.
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  createReplica,
  deleteReplica,
  evaluatePolicy321,
  KEK_SOURCES,
  listRecentReplications,
  listReplicasPage,
  ReplicaCreateInput,
  ReplicaFields,
  ReplicaQuery,
  REPLICATION_STATUSES,
  requireReplicaRow,
  updateReplica,
} from "../domain/replicas.ts";
import { TARGET_TYPES } from "../domain/storage.ts";
import { MEDIA_TYPES, REQUIRED } from "../domain/three_two_one.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";
import { page, ReplicaRuleSchema } from "./api_schemas.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};
const ReplicaId = z.object({ replicaId: z.string().min(1).max(40) });
const PolicyId = z.object({ policyId: z.string().min(1).max(40) });

const ReplicaRowSchema = ReplicaRuleSchema.extend({
  policyName: z.string(),
  targetName: z.string().nullable().describe("null when the target is outside your scope"),
  targetType: z.enum(TARGET_TYPES).nullable(),
  targetTypeLabel: z.string().nullable(),
  targetBesId: z.string().nullable(),
  targetBesName: z.string().nullable(),
  stats: z.object({
    replicated: z.number().int(),
    pending: z.number().int(),
    failed: z.number().int(),
    lastReplicatedPointId: z.string().nullable(),
    lastSuccessAt: z.string().nullable(),
    lastFailedPointId: z.string().nullable(),
    lastFailureAt: z.string().nullable(),
    lastError: z.string().nullable(),
  }),
}).openapi("ReplicaRuleWithStatus");

const ReplicationSchema = z.object({
  restorePointId: z.string(),
  ruleId: z.string(),
  ruleExists: z.boolean(),
  targetId: z.string(),
  targetName: z.string().nullable(),
  kekSource: z.enum(KEK_SOURCES).nullable(),
  status: z.enum(REPLICATION_STATUSES),
  queuedAt: z.string().nullable(),
  startedAt: z.string().nullable(),
  endedAt: z.string().nullable(),
  bytes: z.number(),
  error: z.string().nullable(),
  jobId: z.string(),
  updatedAt: z.string(),
}).openapi("Replication");

const ThreeTwoOneSchema = z.object({
  copies: z.number().int().describe("The primary plus one per replica rule"),
  mediaTypes: z.array(z.enum(MEDIA_TYPES)),
  offsite: z.number().int().describe("Replica rules marked offsite"),
  met: z.boolean(),
  missing: z.array(z.string()).describe('What is still needed, e.g. "1 more copy", "an offsite copy"'),
  required: z.object({ copies: z.number(), mediaTypes: z.number(), offsite: z.number() }),
}).openapi("ThreeTwoOne");

/** `/api/v1/replicas` */
export const apiV1Replicas = apiRouter();
/** `/api/v1/policies/:policyId/three-two-one` */
export const apiV1ThreeTwoOne = apiRouter();

apiV1Replicas.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listReplicaRules",
    summary:
      "Replica rules in your scope (optionally of one policy), each with its status: points replicated, pending and failed, last success and failure",
    tags: ["Replicas"],
    middleware: [requires("backup.view")] as const,
    request: { query: ReplicaQuery },
    responses: {
      200: ok(
        "A page of rules by policy name, then age, and the cursor of the next (empty after the last)",
        page(ReplicaRowSchema),
      ),
      ...common,
      404: err("policyId names a policy not found or outside your scope"),
      422: err("Invalid cursor, limit or unknown query field"),
    },
  }),
  async (c) => {
    // One policy: its own rules (404 for a policy out of scope), not every rule of the account filtered.
    return c.json(await listReplicasPage(c.get("deps").kv, c.get("actor")!, c.req.valid("query")), 200);
  },
);

apiV1Replicas.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "createReplicaRule",
    summary:
      "Create a replica rule: a secondary target of the policy's account (any BES), KEK source, when to replicate, offsite",
    tags: ["Replicas"],
    middleware: [requires("backup.manage")] as const,
    request: jsonBody(ReplicaCreateInput, {
      policyId: "01JBQ6Z3S8V1N2M4K5P7R9T0WX",
      targetId: "01JBQ6Z3S8V1N2M4K5P7R9T0WY",
      kekSource: "account",
      replicateAfterFull: true,
      replicateAfterIncremental: true,
      isOffsite: true,
    }),
    responses: {
      201: ok("Created", ReplicaRuleSchema),
      422: err(
        "Invalid, the policy's own target, a target of another account or already replicated to, or an unknown field",
      ),
      409: err("The BES is being deleted"),
      ...common,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    return c.json(await createReplica(kv, c.get("actor")!, c.req.valid("json"), clock()), 201);
  },
);

apiV1Replicas.openapi(
  createRoute({
    method: "get",
    path: "/{replicaId}",
    operationId: "getReplicaRule",
    summary: "A replica rule with its status and the newest replications (per restore point)",
    tags: ["Replicas"],
    middleware: [requires("backup.view")] as const,
    request: { params: ReplicaId },
    responses: {
      200: ok(
        "The rule, `stats` and `recent`",
        ReplicaRowSchema.extend({ recent: z.array(ReplicationSchema) }).openapi("ReplicaRuleDetail"),
      ),
      ...common,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const actor = c.get("actor")!;
    const rule = await requireReplicaRow(kv, actor, c.req.valid("param").replicaId);
    const recent = await listRecentReplications(kv, actor, [rule], clock(), { limit: 50 });
    return c.json({ ...rule, recent }, 200);
  },
);

apiV1Replicas.openapi(
  createRoute({
    method: "put",
    path: "/{replicaId}",
    operationId: "updateReplicaRule",
    summary: "Replace a replica rule's fields (its policy never changes; omitted fields take their defaults)",
    tags: ["Replicas"],
    middleware: [requires("backup.manage")] as const,
    request: {
      params: ReplicaId,
      ...jsonBody(ReplicaFields, {
        targetId: "01JBQ6Z3S8V1N2M4K5P7R9T0WY",
        kekSource: "account",
        replicateAfterFull: true,
        replicateAfterIncremental: false,
        isOffsite: true,
      }),
    },
    responses: {
      200: ok("Updated", ReplicaRuleSchema),
      422: err("Invalid (as on create) or an unknown field"),
      409: err("The new target's BES is being deleted"),
      ...common,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const rule = await updateReplica(
      kv,
      c.get("actor")!,
      c.req.valid("param").replicaId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(rule, 200);
  },
);

apiV1Replicas.openapi(
  createRoute({
    method: "delete",
    path: "/{replicaId}",
    operationId: "deleteReplicaRule",
    summary: "Delete a replica rule (its restore points keep their replication history)",
    tags: ["Replicas"],
    middleware: [requires("backup.manage")] as const,
    request: { params: ReplicaId },
    responses: { 204: { description: "Deleted" }, ...common },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await deleteReplica(kv, c.get("actor")!, c.req.valid("param").replicaId, clock());
    return c.body(null, 204);
  },
);

apiV1ThreeTwoOne.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "getPolicyThreeTwoOne",
    summary:
      "A policy's 3-2-1 status (the badge of its page): copies, media types, offsite copies, met, and what is missing",
    tags: ["Replicas"],
    middleware: [requires("backup.view")] as const,
    request: { params: PolicyId },
    responses: { 200: ok("The verdict", ThreeTwoOneSchema), ...common },
  }),
  async (c) => {
    const verdict = await evaluatePolicy321(c.get("deps").kv, c.get("actor")!, c.req.valid("param").policyId);
    return c.json({ ...verdict, required: { ...REQUIRED } }, 200);
  },
);
