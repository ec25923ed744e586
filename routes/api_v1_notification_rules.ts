/** `/api/v1/notification-rules`: which events notify which channels. */
import { createRoute, z } from "@hono/zod-openapi";
import {
  createRule,
  deleteRule,
  listRules,
  requireRule,
  RuleInput,
  updateRule,
} from "../domain/notification_rules.ts";
import { requires } from "./access.ts";
import { apiRouter, denied, err, jsonBody, ok } from "./api_common.ts";
import { page, RuleSchema } from "./api_schemas.ts";

const RuleId = z.object({ ruleId: z.string().min(1).max(64) });

/** `/api/v1/notification-rules` */
export const apiV1NotificationRules = apiRouter();

// --- Rules

apiV1NotificationRules.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listNotificationRules",
    summary: "Notification rules in your scope",
    tags: ["Notifications"],
    middleware: [requires("backup.view")] as const,
    responses: { 200: ok("The rules", page(RuleSchema)), ...denied },
  }),
  async (c) => c.json({ values: await listRules(c.get("deps").kv, c.get("actor")!), cursor: "" }, 200),
);

apiV1NotificationRules.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "createNotificationRule",
    summary: "Create a rule: which orgs' alerts, from which severity, which events, to which channels",
    tags: ["Notifications"],
    middleware: [requires("backup.manage")] as const,
    request: jsonBody(RuleInput, {
      name: "Critical to on-call",
      minSeverity: "critical",
      orgIds: "all",
      events: ["opened", "resolved"],
      channelIds: ["01JC9Z8X7W6V5T4S3R2Q1P0N9M"],
    }),
    responses: { 201: ok("The rule", RuleSchema), 422: err("Invalid input"), ...denied },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    return c.json(await createRule(kv, c.get("actor")!, c.req.valid("json"), clock()), 201);
  },
);

apiV1NotificationRules.openapi(
  createRoute({
    method: "get",
    path: "/{ruleId}",
    operationId: "getNotificationRule",
    summary: "A rule",
    tags: ["Notifications"],
    middleware: [requires("backup.view")] as const,
    request: { params: RuleId },
    responses: { 200: ok("The rule", RuleSchema), ...denied, 404: err("Not found or outside your scope") },
  }),
  async (c) => c.json(await requireRule(c.get("deps").kv, c.get("actor")!, c.req.valid("param").ruleId), 200),
);

apiV1NotificationRules.openapi(
  createRoute({
    method: "put",
    path: "/{ruleId}",
    operationId: "updateNotificationRule",
    summary: "Update a rule",
    tags: ["Notifications"],
    middleware: [requires("backup.manage")] as const,
    request: {
      params: RuleId,
      ...jsonBody(RuleInput, {
        name: "Warnings to on-call",
        minSeverity: "warning",
        orgIds: ["01JC9Z8X7W6V5T4S3R2Q1P0N9M"],
        events: ["opened"],
        channelIds: ["01JC9Z8X7W6V5T4S3R2Q1P0N9M"],
      }),
    },
    responses: {
      200: ok("The rule", RuleSchema),
      422: err("Invalid input"),
      ...denied,
      404: err("Not found or outside your scope"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const rule = await updateRule(
      kv,
      c.get("actor")!,
      c.req.valid("param").ruleId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(rule, 200);
  },
);

apiV1NotificationRules.openapi(
  createRoute({
    method: "delete",
    path: "/{ruleId}",
    operationId: "deleteNotificationRule",
    summary: "Delete a rule",
    tags: ["Notifications"],
    middleware: [requires("backup.manage")] as const,
    request: { params: RuleId },
    responses: { 204: { description: "Deleted" }, ...denied, 404: err("Not found or outside your scope") },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await deleteRule(kv, c.get("actor")!, c.req.valid("param").ruleId, clock());
    return c.body(null, 204);
  },
);
