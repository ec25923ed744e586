/** `/api/v1/me`: the signed-in principal (a user, an API token or the system). */
import { createRoute, z } from "@hono/zod-openapi";
import { PERMISSIONS } from "../domain/types.ts";
import { signedIn } from "./access.ts";
import { apiRouter, errors, json } from "./api_common.ts";

/** `/api/v1/me` */
export const apiV1Me = apiRouter();

apiV1Me.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "getMe",
    summary: "The signed-in principal",
    tags: ["Identity"],
    middleware: [signedIn()] as const,
    responses: {
      200: json(
        z.object({
          id: z.string(),
          kind: z.enum(["user", "token", "system"]),
          label: z.string(),
          accountId: z.string().nullable(),
          permissions: z.array(z.enum(PERMISSIONS)),
          orgScope: z.union([z.literal("all"), z.array(z.string())]),
        }),
        "The principal",
      ),
      401: errors[401],
    },
  }),
  (c) => {
    const a = c.get("actor")!;
    return c.json({
      id: a.id,
      kind: a.kind,
      label: a.label,
      accountId: a.accountId,
      permissions: [...a.permissions],
      orgScope: a.orgScope,
    }, 200);
  },
);
