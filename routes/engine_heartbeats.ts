/**
 * Engine protocol v1: BES and agent heartbeats (`/api/bes/v1/heartbeat`, `/api/agent/v1/heartbeat`) — health,
 * capacity reports, pending job count. The signature is checked by `signedBy` (engine_protocol.ts); the
 * heartbeat's write claims the nonce.
 */
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { applyHeartbeat, BesHeartbeat } from "../domain/engines.ts";
import { AgentHeartbeat, applyHostHeartbeat } from "../domain/hosts.ts";
import { NONCE_TTL_MS } from "../domain/engine_nonces.ts";
import { applyCapacityReports } from "../domain/storage.ts";
import { queuedCount } from "../domain/job_queue.ts";
import type { AppEnv } from "./env.ts";
import {
  errorResponses,
  jsonBody,
  openapiSigned,
  protocolHook,
  refuseDeleted,
  reply,
  signedHeaders,
  signedRoute,
  unauthorized,
} from "./engine_protocol.ts";

const HeartbeatReply = z.object({
  status: z.string(),
  serverTime: z.string(),
  pendingJobs: z.number().int(),
  storageTargetIds: z.array(z.string()).optional().openapi({
    description: "BES only: the storage targets configured on this engine, to report capacity for",
  }),
}).openapi("HeartbeatReply");

/** `/api/bes/v1/heartbeat` */
export const besHeartbeat = new OpenAPIHono<AppEnv>(protocolHook);
/** `/api/agent/v1/heartbeat` */
export const agentHeartbeat = new OpenAPIHono<AppEnv>(protocolHook);

openapiSigned(
  besHeartbeat,
  createRoute({
    ...signedRoute("bes"),
    path: "/",
    summary: "BES heartbeat: health metrics and storage capacity",
    request: { headers: signedHeaders, body: jsonBody(BesHeartbeat) },
    responses: { 200: reply("Accepted", HeartbeatReply), ...errorResponses },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const principal = c.get("principal")!;
    const now = clock();
    const input = c.req.valid("json");
    const { engine, replayed } = await applyHeartbeat(kv, principal.id, input, now, {
      nonce: { key: principal.nonceKey, expireIn: NONCE_TTL_MS },
      entry: c.get("engineEntry"),
      parsed: true,
    }).catch(refuseDeleted);
    if (replayed) unauthorized("Replayed nonce");
    // Capacity goes in its own bounded writes after the heartbeat claimed the nonce (up to 200 reports).
    if (input.storage?.length) await applyCapacityReports(kv, engine.id, input.storage, now);
    return c.json({
      status: engine.status,
      serverTime: now.toISOString(),
      pendingJobs: await queuedCount(kv, `bes:${engine.id}`),
      storageTargetIds: engine.storageTargetIds,
    }, 200);
  },
);

openapiSigned(
  agentHeartbeat,
  createRoute({
    ...signedRoute("agent"),
    path: "/",
    summary: "Agent heartbeat",
    request: { headers: signedHeaders, body: jsonBody(AgentHeartbeat) },
    responses: { 200: reply("Accepted", HeartbeatReply), ...errorResponses },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const principal = c.get("principal")!;
    const now = clock();
    const { host, replayed } = await applyHostHeartbeat(kv, principal.id, c.req.valid("json"), now, {
      key: principal.nonceKey,
      expireIn: NONCE_TTL_MS,
    }, { entry: c.get("hostEntry"), parsed: true }).catch(refuseDeleted);
    if (replayed) unauthorized("Replayed nonce");
    return c.json({
      status: host.status,
      serverTime: now.toISOString(),
      pendingJobs: await queuedCount(kv, `agent:${host.id}`),
    }, 200);
  },
);
