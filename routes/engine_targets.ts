/**
 * Engine protocol v1: a BES asks for its own storage targets — type, connection config and credential
 * secret — to open the repositories its jobs need (docs/engine-protocol.md §Storage targets). Signed by the
 * BES; only the targets it owns are answered; every credential delivered is audited, never logged.
 */
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { deliverTargetsToEngine } from "../domain/engine_targets.ts";
import { CREDENTIAL_TYPES, TARGET_TYPES } from "../domain/storage.ts";
import {
  errorResponses,
  jsonBody,
  NONCE_TTL_MS,
  protocolHook,
  reply,
  signedHeaders,
  signedRoute,
} from "./engine_protocol.ts";
import { HttpError } from "../domain/errors.ts";
import type { AppEnv } from "./env.ts";

const TargetsRequest = z.object({
  targetIds: z.array(z.string().regex(/^[0-9A-Z]{26}$/, "must be a storage target id")).max(
    200,
    "at most 200 ids",
  ).optional().openapi({ description: "Only these of the BES's targets (default: all of them)" }),
}).strict();

const DeliveredTarget = z.object({
  id: z.string(),
  name: z.string(),
  type: z.enum(TARGET_TYPES),
  config: z.record(z.string(), z.union([z.string(), z.number()])),
  credentials: z.object({
    username: z.string(),
    credentialType: z.enum(CREDENTIAL_TYPES).nullable(),
    secret: z.string().openapi({ description: "The credential secret, from the vault (never logged)" }),
  }).nullable(),
  updatedAt: z.string(),
}).openapi("DeliveredTarget");

export const engineTargets = new OpenAPIHono<AppEnv>(protocolHook);

engineTargets.openapi(
  createRoute({
    ...signedRoute("bes"),
    path: "/",
    summary: "The calling BES's own storage targets with their connection config and credential secret",
    request: { headers: signedHeaders, body: jsonBody(TargetsRequest) },
    responses: {
      200: reply(
        "The BES's targets (each credential delivery is audited)",
        z.object({ targets: z.array(DeliveredTarget) }),
      ),
      ...errorResponses,
    },
  }),
  async (c) => {
    const { kv, clock, masterKey } = c.get("deps");
    const principal = c.get("principal")!;
    const { targets, replayed } = await deliverTargetsToEngine(kv, principal.id, masterKey, {
      targetIds: c.req.valid("json").targetIds,
      nonce: { key: principal.nonceKey, expireIn: NONCE_TTL_MS },
    }, clock());
    if (replayed) throw new HttpError(401, "unauthorized", "Replayed nonce");
    c.header("Cache-Control", "no-store");
    return c.json({ targets }, 200);
  },
);
