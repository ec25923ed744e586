/**
 * `/api/v1/dashboard…`: the dashboard's figures, queues, heatmap and getting-started checklist, as JSON
 * (the same domain functions as the pages).
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  failedBackupsQueue,
  readEngineStatus,
  readHeatmap,
  readLast24h,
  readSummary,
  rpoBreachQueue,
  storageHealthQueue,
  verificationFailuresQueue,
} from "../domain/dashboard.ts";
import { readSetupProgress } from "../domain/getting_started.ts";
import { toPublicTarget } from "../domain/storage.ts";
import { requires } from "./access.ts";
import { apiRouter, denied, err, ok } from "./api_common.ts";
import { page, QueueRowSchema } from "./api_schemas.ts";
import { suspiciousChangesQueue } from "../domain/anomalies.ts";

export const apiV1DashboardPanels = apiRouter();

const Limit = z.coerce.number().int().min(1, "must be 1–100").max(100, "must be 1–100").default(10);

/** `/api/v1/dashboard` */
export const apiV1Dashboard = apiRouter();

apiV1Dashboard.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "getDashboard",
    summary: "Summary counts, engine status and the last 24 hours of backup runs, in your scope",
    tags: ["Dashboard"],
    middleware: [requires("backup.view")] as const,
    responses: {
      200: {
        description:
          "protected, atRisk, rpoBreach, unprotectedHosts; engines online/offline; last24h success/failed/warning",
        content: {
          "application/json": {
            schema: z.object({
              at: z.string(),
              summary: z.looseObject({
                protected: z.number(),
                atRisk: z.number(),
                rpoBreach: z.number(),
                unprotectedHosts: z.number(),
              }),
              engines: z.looseObject({ online: z.number(), offline: z.number() }),
              last24h: z.looseObject({ success: z.number(), failed: z.number(), warning: z.number() }),
            }).openapi("DashboardSummary"),
          },
        },
      },
      ...denied,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const actor = c.get("actor")!;
    const now = clock();
    const [summary, engines, last24h] = await Promise.all([
      readSummary(kv, actor, now),
      readEngineStatus(kv, actor, now),
      readLast24h(kv, actor, now),
    ]);
    return c.json({ at: now.toISOString(), summary, engines, last24h }, 200);
  },
);

const QUEUES = [
  "failed-backups",
  "rpo-breaches",
  "storage-health",
  "verification-failures",
  "suspicious-changes",
] as const;

apiV1Dashboard.openapi(
  createRoute({
    method: "get",
    path: "/queue",
    operationId: "getDashboardQueue",
    summary: "One of the dashboard's exception queues (top entries, most urgent first), in your scope",
    tags: ["Dashboard"],
    middleware: [requires("backup.view")] as const,
    request: { query: z.object({ name: z.enum(QUEUES), limit: Limit }) },
    responses: {
      200: {
        description: "The queue's rows",
        content: {
          "application/json": {
            schema: z.object({
              name: z.enum(QUEUES),
              values: z.array(QueueRowSchema),
              cursor: z.string().describe(
                "Always empty: the queue's top entries (up to limit) are the answer",
              ),
            }),
          },
        },
      },
      ...denied,
      422: err("Unknown queue or invalid limit"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const actor = c.get("actor")!;
    const now = clock();
    const { name, limit } = c.req.valid("query");
    const values = name === "failed-backups"
      ? await failedBackupsQueue(kv, actor, limit)
      : name === "rpo-breaches"
      ? await rpoBreachQueue(kv, actor, now, limit)
      : name === "storage-health"
      ? (await storageHealthQueue(kv, actor)).slice(0, limit).map(toPublicTarget)
      : name === "suspicious-changes"
      ? await suspiciousChangesQueue(kv, actor, limit)
      : await verificationFailuresQueue(kv, actor, limit);
    return c.json({ name, values, cursor: "" }, 200);
  },
);

const HeatmapCell = z.object({
  day: z.string().describe("UTC day, YYYY-MM-DD"),
  success: z.number().int(),
  warning: z.number().int(),
  failed: z.number().int(),
});

apiV1DashboardPanels.openapi(
  createRoute({
    method: "get",
    path: "/heatmap",
    operationId: "getDashboardHeatmap",
    summary:
      "The dashboard's backup outcomes heatmap: runs per policy per UTC day (success, warning, failed) over the last 30 days, policies in your scope by name",
    tags: ["Dashboard"],
    middleware: [requires("backup.view")] as const,
    request: {
      query: z.strictObject({
        cursor: z.string().regex(/^\d{1,7}$/, "must be a cursor from a previous page").optional(),
        limit: z.coerce.number().int().min(1, "must be 1–100").max(100, "must be 1–100").default(15),
      }),
    },
    responses: {
      200: ok(
        "A page of policies, each with one cell per day (oldest first); `days` lists the days",
        page(
          z.object({ policyId: z.string(), policyName: z.string(), days: z.array(HeatmapCell) })
            .openapi("HeatmapRow"),
          {
            total: z.number().int().describe("Policies in your scope"),
            days: z.array(z.string()).describe("The 30 UTC days, oldest first (today last)"),
          },
        ),
      ),
      ...denied,
      422: err("Invalid cursor or limit, or an unknown query parameter"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const { cursor, limit } = c.req.valid("query");
    const offset = Number(cursor ?? 0);
    const { rows, total, dayLabels } = await readHeatmap(kv, c.get("actor")!, clock(), { offset, limit });
    const next = offset + rows.length;
    return c.json({ values: rows, cursor: next < total ? String(next) : "", total, days: dayLabels }, 200);
  },
);

const Done = z.boolean();

apiV1DashboardPanels.openapi(
  createRoute({
    method: "get",
    path: "/getting-started",
    operationId: "getGettingStarted",
    summary:
      "The getting-started checklist in your scope: engine, storage, policy, host and first backup, each done or not, from real data",
    tags: ["Dashboard"],
    middleware: [requires("backup.view")] as const,
    responses: {
      200: ok(
        "What is set up; `complete` once every step is done",
        z.object({
          at: z.string(),
          engines: z.object({
            registered: z.number().int().describe("Backup engines registered (any state but being deleted)"),
            online: z.number().int().describe("Of those, heard from in the last 3 minutes"),
          }),
          targets: z.number().int(),
          policies: z.number().int(),
          hosts: z.object({
            enrolled: z.boolean().describe("At least one agent is enrolled"),
            unassigned: z.number().int().describe("Enrolled hosts not protected by any policy"),
            assigned: z.boolean().describe("A host is assigned to a policy of an engine in scope"),
          }),
          firstBackup: z.boolean().describe("A policy in scope has a restore point"),
          done: z.object({ engine: Done, storage: Done, policy: Done, host: Done, backup: Done }),
          complete: z.boolean(),
        }).openapi("GettingStarted"),
      ),
      ...denied,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const now = clock();
    c.header("Cache-Control", "no-store");
    return c.json({ at: now.toISOString(), ...(await readSetupProgress(kv, c.get("actor")!, now)) }, 200);
  },
);
