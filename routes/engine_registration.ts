/**
 * Engine protocol v1: a BES registers (`/api/bes/v1/register`) and a host agent enrolls (`/api/agent/v1/enroll`)
 * with an org (or, for a BES, account) secret, signed by the key it registers (engine_protocol.ts).
 */
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { BesRegistration, HEARTBEAT_INTERVAL_SECONDS, registerEngine } from "../domain/engines.ts";
import { HttpError } from "../domain/errors.ts";
import { AgentEnrollment, enrollHost } from "../domain/hosts.ts";
import { tokenPublicKey } from "../domain/token_signing.ts";
import type { AppEnv } from "./env.ts";
import {
  errorResponses,
  failure,
  jsonBody,
  protocolHook,
  provenRegistration,
  refuseForeignKey,
  registrationHeaders,
  registrationRoute,
  reply,
} from "./engine_protocol.ts";

const Registered = z.object({
  id: z.string(),
  status: z.string(),
  heartbeatIntervalSeconds: z.number(),
  tokenPublicKey: z.string().openapi({
    description:
      "The control plane's Ed25519 public key (base64url, raw 32 bytes): data tokens are signed by it",
  }),
});

/** `/api/bes/v1/register` */
export const besRegistration = new OpenAPIHono<AppEnv>(protocolHook);

besRegistration.openapi(
  createRoute({
    ...registrationRoute("bes"),
    path: "/",
    summary:
      "Register a BES with an org or account secret, signed by the key it registers (idempotent per public key)",
    request: { headers: registrationHeaders("bes"), body: jsonBody(BesRegistration) },
    responses: {
      200: reply("Already registered: same id, details refreshed", Registered),
      201: reply("Registered (status pending until the first heartbeat)", Registered),
      409: failure("The engine of this key is being deleted"),
      ...errorResponses,
    },
  }),
  async (c) => {
    const input = c.req.valid("json");
    const { tenant, nonce } = provenRegistration(c, input.publicKey);
    const { kv, clock } = c.get("deps");
    const { engine, created } = await registerEngine(kv, tenant, input, clock(), { nonce })
      .catch(refuseForeignKey);
    const body = {
      id: engine.id,
      status: engine.status,
      heartbeatIntervalSeconds: HEARTBEAT_INTERVAL_SECONDS,
      tokenPublicKey: await tokenPublicKey(kv, c.get("deps").masterKey, clock()),
    };
    return created ? c.json(body, 201) : c.json(body, 200);
  },
);

const Enrolled = z.object({ id: z.string(), heartbeatIntervalSeconds: z.number() });

/** `/api/agent/v1/enroll` */
export const agentEnrollment = new OpenAPIHono<AppEnv>(protocolHook);

agentEnrollment.openapi(
  createRoute({
    ...registrationRoute("agent"),
    path: "/",
    summary:
      "Enroll a host agent with an org secret, signed by the key it enrolls (idempotent per public key)",
    request: { headers: registrationHeaders("agent"), body: jsonBody(AgentEnrollment) },
    responses: {
      200: reply("Already enrolled", Enrolled),
      201: reply("Enrolled", Enrolled),
      403: failure("Agents enroll with an org secret only"),
      409: failure("A concurrent enrollment of the same key kept winning; retry"),
      ...errorResponses,
    },
  }),
  async (c) => {
    const input = c.req.valid("json");
    const { tenant, nonce } = provenRegistration(c, input.publicKey);
    if (!tenant.orgId) {
      throw new HttpError(
        403,
        "forbidden",
        "Agents enroll with an organization secret, not the account secret",
      );
    }
    const { kv, clock } = c.get("deps");
    const { host, created } = await enrollHost(
      kv,
      { accountId: tenant.accountId, orgId: tenant.orgId },
      input,
      clock(),
      { nonce },
    ).catch(refuseForeignKey);
    const body = { id: host.id, heartbeatIntervalSeconds: HEARTBEAT_INTERVAL_SECONDS };
    return created ? c.json(body, 201) : c.json(body, 200);
  },
);
