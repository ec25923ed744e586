/** Engine protocol v1: `/api/agent/v1/pre-patch` — an agent about to patch its OS asks for a pre-patch backup. */
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { requestPrePatch } from "../domain/prepatch.ts";
import type { AppEnv } from "./env.ts";
import {
  claimed,
  errorResponses,
  jsonBody,
  protocolHook,
  reply,
  signedHeaders,
  signedRoute,
} from "./engine_protocol.ts";

/** `/api/agent/v1/pre-patch` */
export const agentPrePatch = new OpenAPIHono<AppEnv>(protocolHook);

const PrePatchBody = z.object({
  reason: z.string().trim().max(200, "must be at most 200 characters").optional(),
}).strict();

agentPrePatch.openapi(
  createRoute({
    ...signedRoute("agent"),
    path: "/",
    summary: "Agent is about to patch the OS: queue a pre-patch incremental for policies that opt in",
    request: { headers: signedHeaders, body: jsonBody(PrePatchBody) },
    responses: {
      202: reply(
        "Runs queued (empty when no active policy of this host has pre-patch backup on)",
        z.object({
          runs: z.array(z.object({ id: z.string(), policyId: z.string(), jobId: z.string().nullable() })),
        }),
      ),
      ...errorResponses,
    },
  }),
  async (c) => {
    const { kv, principal, now } = await claimed(c);
    const runs = await requestPrePatch(kv, principal.id, now);
    return c.json({ runs: runs.map((r) => ({ id: r.id, policyId: r.policyId, jobId: r.jobId })) }, 202);
  },
);
