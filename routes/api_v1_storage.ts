/**
 * `/api/v1/storage`: storage targets — CRUD, capacity, health checks and verification — and
 * `/api/v1/storage-capacity`, the capacity overview of every target in scope.
 */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { pendingApproval } from "./api_v1_approvals.ts";
import { createRoute, z } from "@hono/zod-openapi";
import {
  capacityHistory,
  capacityRows,
  createTarget,
  deleteTarget,
  listTargets,
  readStorageChecks,
  requestStorageCheck,
  requireTarget,
  TargetCreateInput,
  TargetFilter,
  TargetQuery,
  TargetUpdateInput,
  toPublicTarget,
  updateTarget,
} from "../domain/storage.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok, scopedErrors } from "./api_common.ts";
import { page, StorageTargetSchema, Total } from "./api_schemas.ts";
import { STORAGE_CHECK_SEGMENTS } from "./storage_checks.ts";

const TargetId = z.object({ targetId: z.string().min(1).max(40) });

/** `/api/v1/storage` */
export const apiV1Storage = apiRouter();

/** `/api/v1/storage-capacity` */
export const apiV1StorageCapacity = apiRouter();

apiV1Storage.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listStorageTargets",
    summary: "List storage targets (filters: q, besId, type, health; sort; offset/limit)",
    tags: ["Storage"],
    middleware: [requires("backup.view")] as const,
    request: { query: TargetQuery },
    responses: {
      200: ok("Targets", page(StorageTargetSchema, Total)),
      401: scopedErrors[401],
      403: scopedErrors[403],
      422: err("Invalid filter"),
    },
  }),
  async (c) => {
    const filter = c.req.valid("query");
    const { values, total } = await listTargets(c.get("deps").kv, c.get("actor")!, filter);
    const next = filter.offset + filter.limit;
    return c.json(
      { values: values.map(toPublicTarget), total, cursor: next < total ? String(next) : "" },
      200,
    );
  },
);

apiV1Storage.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "createStorageTarget",
    summary: "Create a storage target (credentials go to the vault and are never returned)",
    tags: ["Storage"],
    middleware: [requires("backup.manage")] as const,
    request: jsonBody(TargetCreateInput, {
      name: "Primary NAS",
      besId: "01JC9Z8X7W6V5T4S3R2Q1P0N9M",
      type: "nfs",
      config: { server: "10.0.0.20", exportPath: "/export/backups", mountOptions: "vers=4.1,hard" },
      alertThreshold: 85,
      criticalThreshold: 95,
    }),
    responses: {
      201: ok("Created", StorageTargetSchema),
      409: err("The BES is being deleted"),
      422: err("Invalid"),
      ...scopedErrors,
    },
  }),
  async (c) => {
    const { kv, clock, masterKey } = c.get("deps");
    const target = await createTarget(kv, c.get("actor")!, c.req.valid("json"), { now: clock(), masterKey });
    return c.json(toPublicTarget(target), 201);
  },
);

apiV1Storage.openapi(
  createRoute({
    method: "get",
    path: "/{targetId}",
    operationId: "getStorageTarget",
    summary: "Get a storage target",
    tags: ["Storage"],
    middleware: [requires("backup.view")] as const,
    request: { params: TargetId },
    responses: { 200: ok("The target", StorageTargetSchema), ...scopedErrors },
  }),
  async (c) => {
    const target = await requireTarget(c.get("deps").kv, c.get("actor")!, c.req.valid("param").targetId);
    return c.json(toPublicTarget(target), 200);
  },
);

apiV1Storage.openapi(
  createRoute({
    method: "put",
    path: "/{targetId}",
    operationId: "updateStorageTarget",
    summary: "Update name, connection config, thresholds; new credentials rotate the stored ones",
    tags: ["Storage"],
    middleware: [requires("backup.manage")] as const,
    request: {
      params: TargetId,
      ...jsonBody(TargetUpdateInput, {
        name: "Primary NAS",
        type: "nfs",
        config: { server: "10.0.0.20", exportPath: "/export/backups", mountOptions: "vers=4.1,hard" },
        alertThreshold: 80,
        criticalThreshold: 95,
      }),
    },
    responses: { 200: ok("Updated", StorageTargetSchema), 422: err("Invalid"), ...scopedErrors },
  }),
  async (c) => {
    const { kv, clock, masterKey } = c.get("deps");
    const target = await updateTarget(
      kv,
      c.get("actor")!,
      c.req.valid("param").targetId,
      c.req.valid("json"),
      {
        now: clock(),
        masterKey,
      },
    );
    return c.json(toPublicTarget(target), 200);
  },
);

apiV1Storage.openapi(
  createRoute({
    method: "delete",
    path: "/{targetId}",
    operationId: "deleteStorageTarget",
    summary: "Delete a storage target (409 while policies reference it)",
    tags: ["Storage"],
    middleware: [requires("backup.manage")] as const,
    request: { params: TargetId },
    responses: {
      204: { description: "Deleted" },
      202: pendingApproval,
      409: err("Referenced by policies"),
      ...scopedErrors,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const targetId = c.req.valid("param").targetId;
    const request = await requestIfFourEyes(kv, c.get("actor")!, {
      kind: "target.delete",
      input: { targetId },
    }, clock());
    if (request) return c.json({ approvalRequest: request }, 202);
    await deleteTarget(kv, c.get("actor")!, targetId, clock());
    return c.body(null, 204);
  },
);

apiV1Storage.openapi(
  createRoute({
    method: "get",
    path: "/{targetId}/capacity",
    operationId: "getStorageCapacity",
    summary: "Capacity now and history: daily roll-ups (365 days) and the last 48 h of reports",
    tags: ["Storage"],
    middleware: [requires("backup.view")] as const,
    request: { params: TargetId },
    responses: {
      200: ok(
        "Capacity",
        z.object({
          current: z.looseObject({ at: z.string() }).nullable().describe("The latest report"),
          days: z.array(z.looseObject({ day: z.string() })).describe("Daily roll-ups, oldest first"),
          recent: z.array(z.looseObject({ at: z.string() })).describe("Reports of the last 48 hours"),
        }).openapi("StorageCapacity"),
      ),
      ...scopedErrors,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const target = await requireTarget(kv, c.get("actor")!, c.req.valid("param").targetId);
    return c.json({ current: target.capacity, ...(await capacityHistory(kv, target.id, clock())) }, 200);
  },
);

const StorageCheckView = z.object({
  check: z.enum(["health_check", "verify"]),
  jobId: z.string(),
  runsOn: z.string(),
  requestedAt: z.string(),
  requestedBy: z.string(),
  state: z.enum(["queued", "running", "succeeded", "failed", "cancelled", "unknown"]),
  result: z.enum(["success", "warning", "failed"]).nullable(),
  finishedAt: z.string().nullable(),
  message: z.string().nullable(),
  output: z.record(z.string(), z.unknown()).nullable(),
}).openapi("StorageCheck");

const StorageCheckQueued = z.object({
  check: z.enum(["health_check", "verify"]),
  jobId: z.string(),
  principal: z.string().describe("Who runs it: agent:<host id> or bes:<engine id>"),
  runsOn: z.string().describe("The host's or the BES's name"),
}).openapi("StorageCheckQueued");

for (
  const [check, summary] of [
    [
      "health_check",
      "Queue a health check of a storage target (any health): a reachability probe on an online host eligible for the target — for a target of an org only a host of that org, a relay host first, then any of its hosts (never another org's host); for an account-level target any host of the account, a relay first",
    ],
    [
      "verify",
      "Queue an integrity verification of a storage target (catalog, chains, a restore rehearsal) on its BES, which must be online",
    ],
  ] as const
) {
  apiV1Storage.openapi(
    createRoute({
      method: "post",
      path: `/{targetId}/${STORAGE_CHECK_SEGMENTS[check]}`,
      operationId: check === "health_check" ? "checkStorageHealth" : "verifyStorage",
      summary,
      tags: ["Storage"],
      middleware: [requires("backup.manage")] as const,
      request: { params: TargetId },
      responses: {
        202: ok("Queued; the result arrives with the job (GET …/checks)", StorageCheckQueued),
        ...scopedErrors,
        409: err(
          check === "health_check"
            ? "No eligible host is online: none of the target's org (or, for an account-level target, of the account)"
            : "The target's BES is offline (the message names it and its last heartbeat)",
        ),
      },
    }),
    async (c) => {
      const { kv, clock } = c.get("deps");
      const queued = await requestStorageCheck(
        kv,
        c.get("actor")!,
        c.req.valid("param").targetId,
        check,
        clock(),
      );
      return c.json(queued, 202);
    },
  );
}

apiV1Storage.openapi(
  createRoute({
    method: "get",
    path: "/{targetId}/checks",
    operationId: "getStorageChecks",
    summary:
      "The latest health check and integrity verification of a storage target: where it ran, the job's state and the engine's result (null when never requested)",
    tags: ["Storage"],
    middleware: [requires("backup.view")] as const,
    request: { params: TargetId },
    responses: {
      200: ok(
        "{ health_check, verify }",
        z.object({ health_check: StorageCheckView.nullable(), verify: StorageCheckView.nullable() }),
      ),
      ...scopedErrors,
    },
  }),
  async (c) => {
    const { kv } = c.get("deps");
    const actor = c.get("actor")!;
    const target = await requireTarget(kv, actor, c.req.valid("param").targetId);
    return c.json(await readStorageChecks(kv, actor, target), 200);
  },
);

apiV1StorageCapacity.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listStorageCapacity",
    summary: "Live capacity of the fullest targets in scope (the storage page widget polls this)",
    tags: ["Storage"],
    middleware: [requires("backup.view")] as const,
    responses: {
      200: ok(
        "Rows",
        z.object({
          values: z.array(z.object({
            id: z.string(),
            name: z.string(),
            health: z.string(),
            usagePercent: z.number().nullable(),
            freeBytes: z.number().nullable(),
            growthBytesPerDay: z.number().nullable(),
            estimatedFullAt: z.string().nullable(),
            fullSoon: z.boolean(),
            lastReportAt: z.string().nullable(),
          })),
          cursor: z.string().describe("Always empty: the ten fullest targets are the whole answer"),
        }),
      ),
      401: scopedErrors[401],
      403: scopedErrors[403],
    },
  }),
  async (c) => {
    const { values } = await listTargets(
      c.get("deps").kv,
      c.get("actor")!,
      TargetFilter.parse({ sort: "-usage", limit: 10 }),
    );
    return c.json({ values: capacityRows(values), cursor: "" }, 200);
  },
);
