/** `/api/v1` JSON routes of the backup areas: engines, storage targets, capacity, alerts, account secret. */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { pendingApproval } from "./api_v1_approvals.ts";
import { createRoute, z } from "@hono/zod-openapi";
import { acknowledgeAlert, AlertQuery, listAlerts } from "../domain/alerts.ts";
import {
  deleteEngine,
  EngineQuery,
  EngineUpdate,
  listEngineMetrics,
  listEngines,
  refuseHeldEngineDeletion,
  requireEngine,
  updateEngine,
} from "../domain/engines.ts";
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
import { rotateAccountSecret } from "../domain/tenancy.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";
import { AlertSchema, EngineSchema, page, StorageTargetSchema, Total } from "./api_schemas.ts";
import { STORAGE_CHECK_SEGMENTS } from "./storage_checks.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};

const EngineId = z.object({ engineId: z.string().min(1).max(40) });
const TargetId = z.object({ targetId: z.string().min(1).max(40) });
const AlertId = z.object({ alertId: z.string().min(1).max(40) });

/** `/api/v1/engines` */
export const apiV1Engines = apiRouter();
/** `/api/v1/storage` */
export const apiV1Storage = apiRouter();
/** `/api/v1/storage-capacity` */
export const apiV1StorageCapacity = apiRouter();
/** `/api/v1/alerts` */
export const apiV1Alerts = apiRouter();
/** `/api/v1/account/registration-secret` */
export const apiV1RegistrationSecret = apiRouter();

apiV1Engines.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listEngines",
    summary: "List engines (filters: q, orgId, status; sort; offset/limit)",
    tags: ["Engines"],
    middleware: [requires("backup.view")] as const,
    request: { query: EngineQuery },
    responses: {
      200: ok("Engines", page(EngineSchema, Total)),
      401: common[401],
      403: common[403],
      422: err("Invalid filter"),
    },
  }),
  async (c) => {
    const filter = c.req.valid("query");
    const { values, total } = await listEngines(c.get("deps").kv, c.get("actor")!, filter);
    const next = filter.offset + filter.limit;
    return c.json({ values, total, cursor: next < total ? String(next) : "" }, 200);
  },
);

apiV1Engines.openapi(
  createRoute({
    method: "get",
    path: "/{engineId}",
    operationId: "getEngine",
    summary: "Get an engine with its last 24 h of metrics",
    tags: ["Engines"],
    middleware: [requires("backup.view")] as const,
    request: { params: EngineId },
    responses: {
      200: ok(
        "The engine",
        EngineSchema.extend({ metricsHistory: z.array(z.looseObject({ at: z.string() })) }).openapi(
          "EngineWithMetrics",
        ),
      ),
      ...common,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const engine = await requireEngine(kv, c.get("actor")!, c.req.valid("param").engineId);
    return c.json({ ...engine, metricsHistory: await listEngineMetrics(kv, engine.id, clock()) }, 200);
  },
);

apiV1Engines.openapi(
  createRoute({
    method: "patch",
    path: "/{engineId}",
    operationId: "updateEngine",
    summary: "Edit name, PXE enabled and PXE network (CIDR)",
    tags: ["Engines"],
    middleware: [requires("backup.manage")] as const,
    request: {
      params: EngineId,
      ...jsonBody(EngineUpdate, { name: "bes-london-1", pxeEnabled: true, pxeNetwork: "10.20.0.0/24" }),
    },
    responses: { 200: ok("Updated", EngineSchema), 422: err("Invalid"), ...common },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const engine = await updateEngine(
      kv,
      c.get("actor")!,
      c.req.valid("param").engineId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(engine, 200);
  },
);

apiV1Engines.openapi(
  createRoute({
    method: "delete",
    path: "/{engineId}",
    operationId: "deleteEngine",
    summary: "Delete an engine and cascade to its storage targets and their policies",
    tags: ["Engines"],
    middleware: [requires("backup.manage")] as const,
    request: { params: EngineId },
    responses: {
      204: { description: "Deleted" },
      202: pendingApproval,
      409: err("A restore point on its storage targets is under legal hold (the message names the case)"),
      ...common,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const engineId = c.req.valid("param").engineId;
    // Held points are never pruned or expired: 409 naming the hold's case, before any approval request.
    await refuseHeldEngineDeletion(kv, await requireEngine(kv, c.get("actor")!, engineId));
    const request = await requestIfFourEyes(kv, c.get("actor")!, {
      kind: "engine.delete",
      input: { engineId },
    }, clock());
    if (request) return c.json({ approvalRequest: request }, 202);
    await deleteEngine(kv, c.get("actor")!, engineId, clock());
    return c.body(null, 204);
  },
);

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
      401: common[401],
      403: common[403],
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
      ...common,
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
    responses: { 200: ok("The target", StorageTargetSchema), ...common },
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
    responses: { 200: ok("Updated", StorageTargetSchema), 422: err("Invalid"), ...common },
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
      ...common,
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
      ...common,
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
        ...common,
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
      ...common,
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
      401: common[401],
      403: common[403],
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

apiV1Alerts.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listAlerts",
    summary: "Alerts newest first (filters: status, severity; cursor)",
    tags: ["Alerts"],
    middleware: [requires("backup.view")] as const,
    request: { query: AlertQuery },
    responses: {
      200: ok("Alerts", page(AlertSchema)),
      401: common[401],
      403: common[403],
      422: err("Invalid filter or cursor"),
    },
  }),
  async (c) => {
    return c.json(
      await listAlerts(c.get("deps").kv, c.get("actor")!, c.req.valid("query")),
      200,
    );
  },
);

apiV1Alerts.openapi(
  createRoute({
    method: "post",
    path: "/{alertId}/acknowledge",
    operationId: "acknowledgeAlert",
    summary: "Acknowledge an open alert",
    tags: ["Alerts"],
    middleware: [requires("backup.manage")] as const,
    request: { params: AlertId },
    responses: {
      200: ok("Acknowledged (an alert no longer open is answered as it is)", AlertSchema),
      ...common,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    return c.json(await acknowledgeAlert(kv, c.get("actor")!, c.req.valid("param").alertId, clock()), 200);
  },
);

apiV1RegistrationSecret.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "rotateAccountRegistrationSecret",
    summary: "Issue or rotate the account registration secret (account-scoped engines); shown this once",
    tags: ["Organizations"],
    middleware: [requires("admin")] as const,
    responses: {
      200: ok("The secret", z.object({ secret: z.string() })),
      202: pendingApproval,
      401: common[401],
      403: common[403],
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const actor = c.get("actor")!;
    const request = await requestIfFourEyes(
      kv,
      actor,
      { kind: "account_secret.rotate", input: { accountId: actor.accountId ?? "" } },
      clock(),
    );
    if (request) return c.json({ approvalRequest: request }, 202);
    const { secret } = await rotateAccountSecret(kv, actor, actor.accountId!, clock());
    c.header("Cache-Control", "no-store");
    return c.json({ secret }, 200);
  },
);
