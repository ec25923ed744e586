/**
 * `/api/v1/drills`: restore drill policies (domain/drills.ts) — list, create, read, replace, delete, run
 * now — their runs (the trend: RTO, bytes/s, pass/fail, failing files) and the last proven restore of
 * every policy. Reading needs backup.view; changing or running one needs backup.restore (a drill writes
 * backed-up data onto a host, as a restore does); everything is scoped by organization.
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  createDrill,
  deleteDrill,
  DRILL_MODES,
  DRILL_SCOPES,
  DrillInput,
  listDrillRuns,
  listDrills,
  provenRestores,
  requireDrill,
  requireDrillRun,
  runDrillNow,
  updateDrill,
} from "../domain/drills.ts";
import { listPolicies } from "../domain/policies.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};
const DrillId = z.object({ drillId: z.string().min(1).max(40) });
const DrillRunId = z.object({ drillRunId: z.string().min(1).max(40) });

const DrillSchema = z.object({
  id: z.string(),
  accountId: z.string(),
  orgId: z.string().nullable().describe("The organization of the agent host that runs the drill"),
  name: z.string(),
  schedule: z.string().describe("5-field cron, UTC"),
  scopeType: z.enum(DRILL_SCOPES),
  policyIds: z.array(z.string()),
  hostIds: z.array(z.string()),
  mode: z.enum(DRILL_MODES),
  sampleCount: z.number().int(),
  agentHostId: z.string(),
  scratchPath: z.string(),
  rtoObjectiveSeconds: z.number().int(),
  policyRtoObjectives: z.array(z.object({ policyId: z.string(), rtoObjectiveSeconds: z.number().int() }))
    .describe("Objectives of single backup policies, overriding rtoObjectiveSeconds for their points"),
  enabled: z.boolean(),
  actsForOrgs: z.union([z.literal("all"), z.array(z.string())]).describe(
    "The org scope of whoever last saved the drill: it restores only policies and hosts inside it",
  ),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("Drill");

const DrillRunSchema = z.object({
  id: z.string(),
  drillId: z.string(),
  drillName: z.string(),
  accountId: z.string(),
  orgId: z.string().nullable(),
  policyId: z.string(),
  policyName: z.string(),
  hostId: z.string(),
  hostName: z.string(),
  restorePointId: z.string(),
  restorePointCompletedAt: z.string(),
  agentHostId: z.string(),
  jobId: z.string().nullable(),
  mode: z.enum(DRILL_MODES),
  trigger: z.enum(["cron", "manual"]),
  status: z.enum(["pending", "running", "passed", "failed"]),
  rtoSeconds: z.number().nullable().describe("Time to restore and verify, seconds"),
  rtoObjectiveSeconds: z.number(),
  rtoBreached: z.boolean(),
  files: z.number(),
  bytes: z.number(),
  bytesPerSecond: z.number().nullable(),
  verified: z.number(),
  failures: z.array(z.object({ path: z.string(), message: z.string() })),
  failureCount: z.number(),
  scratchRemoved: z.boolean().nullable(),
  error: z.string().nullable(),
  createdAt: z.string(),
  endedAt: z.string().nullable(),
}).openapi("DrillRun");

const ProvenSchema = z.object({
  policyId: z.string(),
  policyName: z.string(),
  proven: z.object({
    hostId: z.string(),
    hostName: z.string(),
    drillId: z.string(),
    drillName: z.string(),
    drillRunId: z.string(),
    at: z.string(),
    rtoSeconds: z.number(),
    rtoObjectiveSeconds: z.number(),
    bytesPerSecond: z.number().nullable(),
  }).nullable().describe("The last passing drill; null when no drill has proven a restore yet"),
}).openapi("ProvenRestore");

const EXAMPLE = {
  name: "Weekly file sample",
  schedule: "0 3 * * 6",
  scopeType: "policies" as const,
  policyIds: ["01JBQ6Z3S8V1N2M4K5P7R9T0WX"],
  mode: "sample" as const,
  sampleCount: 20,
  agentHostId: "01JBQ6Z3S8V1N2M4K5P7R9T0WY",
  scratchPath: "/var/tmp/cadres-drills",
  rtoObjectiveSeconds: 900,
  policyRtoObjectives: [{ policyId: "01JBQ6Z3S8V1N2M4K5P7R9T0WX", rtoObjectiveSeconds: 300 }],
};

/** `/api/v1/drills` */
export const apiV1Drills = apiRouter();
/** `/api/v1/drill-runs` */
export const apiV1DrillRuns = apiRouter();
/** `/api/v1/proven-restores` */
export const apiV1ProvenRestores = apiRouter();

apiV1Drills.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listDrills",
    summary: "Restore drill policies in your scope, by name (one page: cursor is always empty)",
    tags: ["Drills"],
    middleware: [requires("backup.view")] as const,
    responses: {
      200: ok("The drills", z.object({ values: z.array(DrillSchema), cursor: z.string() })),
      401: common[401],
      403: common[403],
    },
  }),
  async (c) => c.json({ values: await listDrills(c.get("deps").kv, c.get("actor")!), cursor: "" }, 200),
);

apiV1Drills.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "createDrill",
    summary:
      "Create a restore drill policy (cron, scope, sample or whole point, agent and scratch path, RTO objective)",
    tags: ["Drills"],
    middleware: [requires("backup.restore")] as const,
    request: jsonBody(DrillInput, EXAMPLE),
    responses: {
      201: ok("Created", DrillSchema),
      401: common[401],
      403: common[403],
      422: err("Invalid fields (named), an unknown policy, host or agent, or a name already used"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    return c.json(await createDrill(kv, c.get("actor")!, c.req.valid("json"), clock()), 201);
  },
);

apiV1Drills.openapi(
  createRoute({
    method: "get",
    path: "/{drillId}",
    operationId: "getDrill",
    summary: "A restore drill policy",
    tags: ["Drills"],
    middleware: [requires("backup.view")] as const,
    request: { params: DrillId },
    responses: { 200: ok("The drill", DrillSchema), ...common },
  }),
  async (c) =>
    c.json(await requireDrill(c.get("deps").kv, c.get("actor")!, c.req.valid("param").drillId), 200),
);

apiV1Drills.openapi(
  createRoute({
    method: "put",
    path: "/{drillId}",
    operationId: "updateDrill",
    summary: "Replace a restore drill policy's settings",
    tags: ["Drills"],
    middleware: [requires("backup.restore")] as const,
    request: { params: DrillId, ...jsonBody(DrillInput, EXAMPLE) },
    responses: {
      200: ok("Updated", DrillSchema),
      ...common,
      409: err("The drill changed concurrently"),
      422: err("Invalid fields (named), an unknown policy, host or agent, or a name already used"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const drill = await updateDrill(
      kv,
      c.get("actor")!,
      c.req.valid("param").drillId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(drill, 200);
  },
);

apiV1Drills.openapi(
  createRoute({
    method: "delete",
    path: "/{drillId}",
    operationId: "deleteDrill",
    summary: "Delete a restore drill policy (its past runs stay readable by id)",
    tags: ["Drills"],
    middleware: [requires("backup.restore")] as const,
    request: { params: DrillId },
    responses: { 204: { description: "Deleted" }, ...common, 409: err("The drill changed concurrently") },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await deleteDrill(kv, c.get("actor")!, c.req.valid("param").drillId, clock());
    return c.body(null, 204);
  },
);

apiV1Drills.openapi(
  createRoute({
    method: "post",
    path: "/{drillId}/run",
    operationId: "runDrillNow",
    summary: "Run a restore drill now: one run per (policy, host) of its scope with a complete restore point",
    tags: ["Drills"],
    middleware: [requires("backup.restore")] as const,
    request: { params: DrillId },
    responses: {
      202: ok("The runs started", z.object({ values: z.array(DrillRunSchema), cursor: z.string() })),
      ...common,
      422: err("Nothing to restore: no complete restore point in the drill's scope"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const runs = await runDrillNow(kv, c.get("actor")!, c.req.valid("param").drillId, clock());
    return c.json({ values: runs, cursor: "" }, 202);
  },
);

apiV1Drills.openapi(
  createRoute({
    method: "get",
    path: "/{drillId}/runs",
    operationId: "listDrillRuns",
    summary: "A drill's last 30 runs, newest first: the trend of RTO, bytes/s and pass/fail",
    tags: ["Drills"],
    middleware: [requires("backup.view")] as const,
    request: { params: DrillId },
    responses: {
      200: ok(
        "The runs (cursor always empty)",
        z.object({ values: z.array(DrillRunSchema), cursor: z.string() }),
      ),
      ...common,
    },
  }),
  async (c) => {
    const runs = await listDrillRuns(c.get("deps").kv, c.get("actor")!, c.req.valid("param").drillId);
    return c.json({ values: runs, cursor: "" }, 200);
  },
);

apiV1DrillRuns.openapi(
  createRoute({
    method: "get",
    path: "/{drillRunId}",
    operationId: "getDrillRun",
    summary: "One drill run with its figures and every failing file (the first 100; failureCount counts all)",
    tags: ["Drills"],
    middleware: [requires("backup.view")] as const,
    request: { params: DrillRunId },
    responses: { 200: ok("The run", DrillRunSchema), ...common },
  }),
  async (c) =>
    c.json(await requireDrillRun(c.get("deps").kv, c.get("actor")!, c.req.valid("param").drillRunId), 200),
);

apiV1ProvenRestores.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listProvenRestores",
    summary: "Last proven restore per backup policy in your scope: the last passing drill, its time and RTO",
    tags: ["Drills"],
    middleware: [requires("backup.view")] as const,
    responses: {
      200: ok(
        "One row per policy, by name (cursor always empty)",
        z.object({ values: z.array(ProvenSchema), cursor: z.string() }),
      ),
      401: common[401],
      403: common[403],
    },
  }),
  async (c) => {
    const { kv } = c.get("deps");
    const actor = c.get("actor")!;
    const rows = await provenRestores(kv, actor, await listPolicies(kv, actor));
    return c.json({
      values: rows.map((r) => ({
        policyId: r.policy.id,
        policyName: r.policy.name,
        proven: r.proven
          ? {
            hostId: r.proven.hostId,
            hostName: r.proven.hostName,
            drillId: r.proven.drillId,
            drillName: r.proven.drillName,
            drillRunId: r.proven.drillRunId,
            at: r.proven.at,
            rtoSeconds: r.proven.rtoSeconds,
            rtoObjectiveSeconds: r.proven.rtoObjectiveSeconds,
            bytesPerSecond: r.proven.bytesPerSecond,
          }
          : null,
      })),
      cursor: "",
    }, 200);
  },
);
