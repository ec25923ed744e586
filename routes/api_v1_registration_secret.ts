/** `/api/v1/account/registration-secret`: rotate the account's BES registration secret. */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { pendingApproval } from "./api_v1_approvals.ts";
import { createRoute, z } from "@hono/zod-openapi";
import { rotateAccountSecret } from "../domain/tenancy.ts";
import { requires } from "./access.ts";
import { apiRouter, ok, scopedErrors } from "./api_common.ts";

/** `/api/v1/account/registration-secret` */
export const apiV1RegistrationSecret = apiRouter();

apiV1RegistrationSecret.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "rotateAccountRegistrationSecret",
    summary: "Issue or rotate the account registration secret (account-scoped engines); shown this once",
    tags: ["Organizations"],
    middleware: [requires("admin")] as const,
    responses: {
      200: ok("The secret", z.object({ secret: z.string() })),
      202: pendingApproval,
      401: scopedErrors[401],
      403: scopedErrors[403],
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const actor = c.get("actor")!;
    const request = await requestIfFourEyes(
      kv,
      actor,
      { kind: "account_secret.rotate", input: { accountId: actor.accountId ?? "" } },
      clock(),
    );
    if (request) return c.json({ approvalRequest: request }, 202);
    const { secret } = await rotateAccountSecret(kv, actor, actor.accountId!, clock());
    c.header("Cache-Control", "no-store");
    return c.json({ secret }, 200);
  },
);
