/**
 * `/api/v1/notification-channels`, `/api/v1/notification-rules` and `/api/v1/notification-deliveries`:
 * alert notifications as JSON — channels (webhook, email) with a test send, the rules that route alerts
 * to them, and the delivery log. Secrets go to the vault: a generated webhook signing secret is returned
 * once, by the create (or the `rotateSecret` update) that made it; a webhook URL comes back as its origin.
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  ChannelCreateInput,
  ChannelUpdateInput,
  createChannel,
  createRule,
  deleteChannel,
  deleteRule,
  DELIVERY_STATUSES,
  DeliveryFilter,
  listChannels,
  listDeliveries,
  listRules,
  requireChannel,
  requireRule,
  RuleInput,
  sendTestNotification,
  toPublicChannel,
  updateChannel,
  updateRule,
} from "../domain/notifications.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";
import { ChannelSchema, DeliverySchema, page, RuleSchema } from "./api_schemas.ts";

/** A channel as create and update answer it: the signing secret they generated is shown this once. */
const ChannelWithSecret = z.object({
  channel: ChannelSchema,
  generatedSecret: z.string().nullable().describe(
    "A generated webhook signing secret, shown once; else null",
  ),
}).openapi("NotificationChannelWithSecret");

const denied = { 401: err("Not signed in or bad token"), 403: err("Missing permission") };
const ChannelId = z.object({ channelId: z.string().min(1).max(64) });
const RuleId = z.object({ ruleId: z.string().min(1).max(64) });

/** `/api/v1/notification-channels` */
export const apiV1NotificationChannels = apiRouter();
/** `/api/v1/notification-rules` */
export const apiV1NotificationRules = apiRouter();
/** `/api/v1/notification-deliveries` */
export const apiV1NotificationDeliveries = apiRouter();

// --- Channels

apiV1NotificationChannels.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listNotificationChannels",
    summary: "Notification channels in your scope (webhook URLs as their origin; no secrets)",
    tags: ["Notifications"],
    middleware: [requires("backup.view")] as const,
    responses: { 200: ok("The channels", page(ChannelSchema)), ...denied },
  }),
  async (c) => {
    const values = await listChannels(c.get("deps").kv, c.get("actor")!);
    return c.json({ values: values.map(toPublicChannel), cursor: "" }, 200);
  },
);

apiV1NotificationChannels.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "createNotificationChannel",
    summary: "Create a webhook or email channel; a generated signing secret is returned once",
    tags: ["Notifications"],
    middleware: [requires("backup.manage")] as const,
    request: jsonBody(ChannelCreateInput, {
      type: "webhook",
      name: "Ops webhook",
      url: "https://hooks.acme.example/cadres",
      orgId: null,
    }),
    responses: {
      201: ok("`channel`, and `generatedSecret` (or null)", ChannelWithSecret),
      422: err("Invalid input"),
      ...denied,
    },
  }),
  async (c) => {
    const { kv, clock, masterKey } = c.get("deps");
    const { channel, generatedSecret } = await createChannel(kv, c.get("actor")!, c.req.valid("json"), {
      now: clock(),
      masterKey,
    });
    c.header("cache-control", "no-store");
    return c.json({ channel: toPublicChannel(channel), generatedSecret }, 201);
  },
);

apiV1NotificationChannels.openapi(
  createRoute({
    method: "get",
    path: "/{channelId}",
    operationId: "getNotificationChannel",
    summary: "A channel",
    tags: ["Notifications"],
    middleware: [requires("backup.view")] as const,
    request: { params: ChannelId },
    responses: {
      200: ok("The channel", ChannelSchema),
      ...denied,
      404: err("Not found or outside your scope"),
    },
  }),
  async (c) => {
    const channel = await requireChannel(c.get("deps").kv, c.get("actor")!, c.req.valid("param").channelId);
    return c.json(toPublicChannel(channel), 200);
  },
);

apiV1NotificationChannels.openapi(
  createRoute({
    method: "put",
    path: "/{channelId}",
    operationId: "updateNotificationChannel",
    summary:
      "Update a channel (type and owner are fixed; an empty or missing webhook URL keeps the stored one)",
    tags: ["Notifications"],
    middleware: [requires("backup.manage")] as const,
    request: {
      params: ChannelId,
      ...jsonBody(ChannelUpdateInput, { type: "webhook", name: "Ops webhook (on-call)", rotateSecret: true }),
    },
    responses: {
      200: ok("`channel`, and `generatedSecret` when `rotateSecret` was set", ChannelWithSecret),
      422: err("Invalid input"),
      ...denied,
      404: err("Not found or outside your scope"),
    },
  }),
  async (c) => {
    const { kv, clock, masterKey } = c.get("deps");
    const { channel, generatedSecret } = await updateChannel(
      kv,
      c.get("actor")!,
      c.req.valid("param").channelId,
      c.req.valid("json"),
      { now: clock(), masterKey },
    );
    c.header("cache-control", "no-store");
    return c.json({ channel: toPublicChannel(channel), generatedSecret }, 200);
  },
);

apiV1NotificationChannels.openapi(
  createRoute({
    method: "delete",
    path: "/{channelId}",
    operationId: "deleteNotificationChannel",
    summary: "Delete a channel with its vault secret; rules that used it keep their other channels",
    tags: ["Notifications"],
    middleware: [requires("backup.manage")] as const,
    request: { params: ChannelId },
    responses: { 204: { description: "Deleted" }, ...denied, 404: err("Not found or outside your scope") },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await deleteChannel(kv, c.get("actor")!, c.req.valid("param").channelId, clock());
    return c.body(null, 204);
  },
);

apiV1NotificationChannels.openapi(
  createRoute({
    method: "post",
    path: "/{channelId}/test",
    operationId: "testNotificationChannel",
    summary: "Send a test notification now; answers the delivery with its attempt (also in the log)",
    tags: ["Notifications"],
    middleware: [requires("backup.manage")] as const,
    request: { params: ChannelId },
    responses: {
      200: ok("The delivery", DeliverySchema),
      ...denied,
      404: err("Not found or outside your scope"),
    },
  }),
  async (c) => {
    const { kv, clock, masterKey, config } = c.get("deps");
    const delivery = await sendTestNotification(kv, c.get("actor")!, c.req.valid("param").channelId, {
      now: clock(),
      masterKey,
      baseUrl: config.baseUrl,
    });
    return c.json(delivery, 200);
  },
);

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

// --- The delivery log

apiV1NotificationDeliveries.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listNotificationDeliveries",
    summary: "Deliveries newest first, by channel and status, with a cursor",
    tags: ["Notifications"],
    middleware: [requires("backup.view")] as const,
    request: {
      query: z.object({
        channelId: z.string().max(40).optional(),
        status: z.enum(DELIVERY_STATUSES, { error: `must be one of ${DELIVERY_STATUSES.join(", ")}` })
          .optional(),
        cursor: z.string().max(500).optional(),
        limit: z.coerce.number({ error: "must be a number" }).int().min(1, "must be 1–200").max(
          200,
          "must be 1–200",
        )
          .optional(),
      }),
    },
    responses: {
      200: ok("`values` and `cursor`", page(DeliverySchema)),
      ...denied,
      422: err("Invalid filter"),
    },
  }),
  async (c) => {
    const filter = DeliveryFilter.parse(c.req.valid("query"));
    return c.json(await listDeliveries(c.get("deps").kv, c.get("actor")!, filter), 200);
  },
);
