/** Engine protocol v1: `/api/bes/v1/bmr/redeem` — a BES redeems a bare-metal restore token once. */
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import { BmrTokenInput, redeemBmrToken } from "../domain/bmr.ts";
import type { AppEnv } from "./env.ts";
import {
  claimed,
  errorResponses,
  failure,
  jsonBody,
  protocolHook,
  reply,
  signedHeaders,
  signedRoute,
} from "./engine_protocol.ts";

/** `/api/bes/v1/bmr` */
export const besBmr = new OpenAPIHono<AppEnv>(protocolHook);

besBmr.openapi(
  createRoute({
    ...signedRoute("bes"),
    path: "/redeem",
    summary: "Redeem a bare-metal restore token once (a machine booted through this BES presented it)",
    request: { headers: signedHeaders, body: jsonBody(z.object({ token: BmrTokenInput })) },
    responses: {
      200: reply(
        "Redeemed: the restore it belongs to (restore the point's image onto the machine)",
        z.object({ restoreId: z.string(), restorePointId: z.string(), mode: z.enum(["pxe", "iso"]) }),
      ),
      404: failure("Unknown token, or a token of another BES"),
      409: failure("The token was already used, or has expired (4 hours after it was issued)"),
      ...errorResponses,
    },
  }),
  async (c) => {
    const { kv, principal, now } = await claimed(c);
    return c.json(await redeemBmrToken(kv, principal.id, c.req.valid("json").token, now), 200);
  },
);
