/**
 * `/api/v1/replicas`: replica rules (the guide's "Replication Rules (3-2-1 Strategy)") with their
 * replication status, validated by the same zod schemas as the policy page's and the Replicas page's
 * forms (`ReplicaCreateInput`, `ReplicaFields`).
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  createReplica,
  deleteReplica,
  listRecentReplications,
  listReplicas,
  listReplicasByPolicy,
  ReplicaCreateInput,
  ReplicaFields,
  requireReplicaRow,
  updateReplica,
} from "../domain/replicas.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";
import { page, ReplicaSchema, Total } from "./api_schemas.ts";

/** A rule as lists show it: its policy's and target's names and its replication counts. */
const ReplicaRowSchema = ReplicaSchema.extend({
  policyName: z.string(),
  targetName: z.string().nullable(),
  stats: z.looseObject({}),
}).openapi("ReplicaRuleRow");

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};
const ReplicaId = z.object({ replicaId: z.string().min(1).max(40) });

export const apiV1Replicas = apiRouter();

apiV1Replicas.openapi(
  createRoute({
    method: "get",
    path: "/api/v1/replicas",
    operationId: "listReplicaRules",
    summary:
      "Replica rules in your scope (optionally of one policy), each with its status: points replicated, pending and failed, last success and failure",
    tags: ["Replicas"],
    middleware: [requires("backup.view")] as const,
    request: {
      query: z.object({
        policyId: z.string().max(40).optional(),
        offset: z.coerce.number().int().min(0).default(0),
        limit: z.coerce.number().int().min(1).max(200).default(50),
      }),
    },
    responses: {
      200: ok("Rules by policy name", page(ReplicaRowSchema, Total)),
      ...common,
      404: err("policyId names a policy not found or outside your scope"),
      422: err("Invalid"),
    },
  }),
  async (c) => {
    const { kv } = c.get("deps");
    const actor = c.get("actor")!;
    const { policyId, offset, limit } = c.req.valid("query");
    // One policy: its own rules (404 for a policy out of scope), not every rule of the account filtered.
    const all = policyId ? await listReplicasByPolicy(kv, actor, policyId) : await listReplicas(kv, actor);
    return c.json({
      values: all.slice(offset, offset + limit),
      total: all.length,
      cursor: offset + limit < all.length ? String(offset + limit) : "",
    }, 200);
  },
);

apiV1Replicas.openapi(
  createRoute({
    method: "post",
    path: "/api/v1/replicas",
    operationId: "createReplicaRule",
    summary:
      "Create a replica rule: a secondary target of the policy's account (any BES), KEK source, when to replicate, offsite",
    tags: ["Replicas"],
    middleware: [requires("backup.manage")] as const,
    request: jsonBody(ReplicaCreateInput, {
      policyId: "01JC9Z8X7W6V5T4S3R2Q1P0N9M",
      targetId: "01JC9Z8X7W6V5T4S3R2Q1P0N9K",
      kekSource: "account",
      replicateAfterFull: true,
      replicateAfterIncremental: false,
      isOffsite: true,
    }),
    responses: {
      201: ok("Created", ReplicaSchema),
      422: err("Invalid"),
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
    path: "/api/v1/replicas/{replicaId}",
    operationId: "getReplicaRule",
    summary: "A replica rule with its status and the newest replications (per restore point)",
    tags: ["Replicas"],
    middleware: [requires("backup.view")] as const,
    request: { params: ReplicaId },
    responses: {
      200: ok(
        "The rule, `stats` and `recent`",
        ReplicaRowSchema.extend({
          recent: z.array(z.looseObject({ restorePointId: z.string(), status: z.string() })),
        }).openapi("ReplicaRuleDetail"),
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
    path: "/api/v1/replicas/{replicaId}",
    operationId: "updateReplicaRule",
    summary: "Update a replica rule (its policy never changes)",
    tags: ["Replicas"],
    middleware: [requires("backup.manage")] as const,
    request: { params: ReplicaId, ...jsonBody(ReplicaFields) },
    responses: { 200: ok("Updated", ReplicaSchema), 422: err("Invalid"), ...common },
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
    path: "/api/v1/replicas/{replicaId}",
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
