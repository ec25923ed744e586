/**
 * `/api/v1/notification-channels`: where alert notifications go (webhook, email), with a test send. Secrets go
 * to the vault: a generated webhook signing secret is returned once, by the create (or the `rotateSecret`
 * update) that made it; a webhook URL comes back as its origin.
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  ChannelCreateInput,
  ChannelUpdateInput,
  createChannel,
  deleteChannel,
  listChannels,
  requireChannel,
  toPublicChannel,
  updateChannel,
} from "../domain/notification_channels.ts";
import { sendTestNotification } from "../domain/notification_delivery.ts";
import { requires } from "./access.ts";
import { apiRouter, denied, err, jsonBody, ok } from "./api_common.ts";
import { ChannelSchema, DeliverySchema, page } from "./api_schemas.ts";

/** A channel as create and update answer it: the signing secret they generated is shown this once. */
const ChannelWithSecret = z.object({
  channel: ChannelSchema,
  generatedSecret: z.string().nullable().describe(
    "A generated webhook signing secret, shown once; else null",
  ),
}).openapi("NotificationChannelWithSecret");

const ChannelId = z.object({ channelId: z.string().min(1).max(64) });

/** `/api/v1/notification-channels` */
export const apiV1NotificationChannels = apiRouter();

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
