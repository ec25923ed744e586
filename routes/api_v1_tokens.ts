/** `/api/v1/tokens`: API tokens (your own; admins: those of users in scope). */
import { createRoute, z } from "@hono/zod-openapi";
import { ApiTokenInput, createApiToken, listApiTokens, revokeApiToken } from "../domain/api_tokens.ts";
import { PERMISSIONS } from "../domain/types.ts";
import { requires } from "./access.ts";
import { apiRouter, identityErrors, json, jsonBody, offsetPage, Paging } from "./api_common.ts";

const TokenSchema = z.object({
  id: z.string(),
  userId: z.string(),
  ownerEmail: z.string().optional(),
  name: z.string(),
  permissions: z.array(z.enum(PERMISSIONS)),
  createdAt: z.string(),
  expiresAt: z.string().nullable(),
  revokedAt: z.string().nullable(),
  lastUsedAt: z.string().nullable(),
}).openapi("ApiToken");

/** `/api/v1/tokens` */
export const apiV1Tokens = apiRouter();

const TokenId = z.object({ tokenId: z.string().min(1).max(40) });

apiV1Tokens.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listApiTokens",
    summary: "List API tokens (your own; admins: those of users in scope)",
    tags: ["API tokens"],
    middleware: [requires("backup.view")] as const,
    request: { query: Paging },
    responses: {
      200: json(offsetPage(TokenSchema), "Newest first"),
      ...identityErrors.input,
    },
  }),
  async (c) => {
    const { offset, limit } = c.req.valid("query");
    const tokens = await listApiTokens(c.get("deps").kv, c.get("actor")!);
    return c.json({
      values: tokens.slice(offset, offset + limit),
      cursor: offset + limit < tokens.length ? String(offset + limit) : "",
    }, 200);
  },
);

apiV1Tokens.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "createApiToken",
    summary: "Create an API token for yourself; the reply carries the token, shown this once",
    tags: ["API tokens"],
    middleware: [requires("backup.view")] as const,
    request: jsonBody(ApiTokenInput, {
      name: "ansible",
      permissions: ["backup.view", "backup.manage"],
      expiresInDays: 90,
    }),
    responses: {
      201: json(z.object({ token: TokenSchema, secret: z.string() }), "Created"),
      ...identityErrors.input,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const { token, secret } = await createApiToken(kv, c.get("actor")!, c.req.valid("json"), clock());
    const { secretHash: _h, accountId: _a, ...rest } = token;
    c.header("Cache-Control", "no-store");
    return c.json({ token: rest, secret }, 201);
  },
);

apiV1Tokens.openapi(
  createRoute({
    method: "delete",
    path: "/{tokenId}",
    operationId: "revokeApiToken",
    summary: "Revoke an API token",
    tags: ["API tokens"],
    middleware: [requires("backup.view")] as const,
    request: { params: TokenId },
    responses: { 204: { description: "Revoked" }, ...identityErrors.object },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await revokeApiToken(kv, c.get("actor")!, c.req.valid("param").tokenId, clock());
    return c.body(null, 204);
  },
);
