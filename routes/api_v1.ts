/**
 * The operator JSON API `/api/v1` (bearer API tokens, or the session for islands). Every route is
 * declared with zod schemas, so `/api/openapi.json` is generated from what validates requests.
 */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { pendingApproval } from "./api_v1_approvals.ts";
import { createRoute, z } from "@hono/zod-openapi";
import { ApiTokenInput, createApiToken, listApiTokens, revokeApiToken } from "../domain/api_tokens.ts";
import { AuditFilter, listAudit } from "../domain/audit.ts";
import { kekReference } from "../domain/keks.ts";
import { rotateKek } from "../domain/namespace_keys.ts";
import { createOrg, listOrgs, OrgInput, renameOrg, requireOrg, rotateOrgSecret } from "../domain/tenancy.ts";
import type { Org } from "../domain/types.ts";
import { PERMISSIONS, ROLES } from "../domain/types.ts";
import {
  createUser,
  deleteUser,
  listUsers,
  requireUser,
  toPublicUser,
  updateUser,
  UserCreateInput,
  UserUpdateInput,
} from "../domain/users.ts";
import { requires, signedIn } from "./access.ts";
import { apiRouter, ErrorBody, jsonBody } from "./api_common.ts";

const errors = {
  401: { description: "Not signed in or bad token", content: { "application/json": { schema: ErrorBody } } },
  403: {
    description: "Missing permission or CSRF failure",
    content: { "application/json": { schema: ErrorBody } },
  },
  404: {
    description: "Not found or outside your scope",
    content: { "application/json": { schema: ErrorBody } },
  },
  422: { description: "Invalid input", content: { "application/json": { schema: ErrorBody } } },
} as const;

const json = <T extends z.ZodType>(schema: T, description: string) => ({
  description,
  content: { "application/json": { schema } },
});

const UserSchema = z.object({
  id: z.string(),
  accountId: z.string(),
  email: z.string(),
  name: z.string(),
  role: z.enum(ROLES),
  orgScope: z.union([z.literal("all"), z.array(z.string())]),
  disabled: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("User");

const OrgSchema = z.object({
  id: z.string(),
  accountId: z.string(),
  name: z.string(),
  secretRotatedAt: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("Organization");

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

const AuditSchema = z.object({
  id: z.string(),
  orgId: z.string().nullable(),
  actorId: z.string(),
  actorLabel: z.string(),
  action: z.string(),
  objectType: z.string(),
  objectId: z.string(),
  summary: z.string(),
  at: z.string(),
}).openapi("AuditEntry");

const Paging = z.object({
  offset: z.coerce.number().int().min(0).default(0),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});

const page = <T extends z.ZodType>(item: T) =>
  z.object({
    values: z.array(item),
    cursor: z.string().describe("Opaque; empty when there is no next page"),
  });

function publicOrg(org: Org) {
  const { secretHash: _h, ...rest } = org;
  return rest;
}

/** `/api/v1/me` */
export const apiV1Me = apiRouter();
/** `/api/v1/users` */
export const apiV1Users = apiRouter();
/** `/api/v1/orgs` */
export const apiV1Orgs = apiRouter();
/** `/api/v1/tokens` */
export const apiV1Tokens = apiRouter();
/** `/api/v1/audit` */
export const apiV1Audit = apiRouter();

const UserId = z.object({ userId: z.string().min(1).max(40) });
const OrgId = z.object({ orgId: z.string().min(1).max(40) });
const TokenId = z.object({ tokenId: z.string().min(1).max(40) });

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

apiV1Users.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listUsers",
    summary: "List users in your scope",
    tags: ["Users"],
    middleware: [requires("admin")] as const,
    request: { query: Paging },
    responses: {
      200: json(page(UserSchema), "Users by email"),
      401: errors[401],
      403: errors[403],
      422: errors[422],
    },
  }),
  async (c) => {
    const { offset, limit } = c.req.valid("query");
    const actor = c.get("actor")!;
    const users = await listUsers(c.get("deps").kv, actor, actor.accountId!);
    const values = users.slice(offset, offset + limit).map(toPublicUser);
    return c.json({ values, cursor: offset + limit < users.length ? String(offset + limit) : "" }, 200);
  },
);

apiV1Users.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "createUser",
    summary: "Create a user",
    tags: ["Users"],
    middleware: [requires("admin")] as const,
    request: jsonBody(UserCreateInput, {
      email: "ops@acme.example",
      name: "Ops",
      role: "operator",
      orgScope: ["01JC9Z8X7W6V5T4S3R2Q1P0N9M"],
      password: "a long passphrase of yours",
    }),
    responses: { 201: json(UserSchema, "Created"), 401: errors[401], 403: errors[403], 422: errors[422] },
  }),
  async (c) => {
    const { kv, clock, config } = c.get("deps");
    const actor = c.get("actor")!;
    const user = await createUser(
      kv,
      actor,
      { ...c.req.valid("json"), accountId: actor.accountId! },
      clock(),
      config.passwordHashing,
    );
    return c.json(toPublicUser(user), 201);
  },
);

apiV1Users.openapi(
  createRoute({
    method: "get",
    path: "/{userId}",
    operationId: "getUser",
    summary: "Get a user",
    tags: ["Users"],
    middleware: [requires("admin")] as const,
    request: { params: UserId },
    responses: { 200: json(UserSchema, "The user"), 401: errors[401], 403: errors[403], 404: errors[404] },
  }),
  async (c) => {
    const user = await requireUser(c.get("deps").kv, c.get("actor")!, c.req.valid("param").userId);
    return c.json(toPublicUser(user), 200);
  },
);

apiV1Users.openapi(
  createRoute({
    method: "patch",
    path: "/{userId}",
    operationId: "updateUser",
    summary: "Update a user's name, role, scope or disabled flag",
    tags: ["Users"],
    middleware: [requires("admin")] as const,
    request: {
      params: UserId,
      ...jsonBody(UserUpdateInput, {
        name: "Ops (night shift)",
        role: "viewer",
        orgScope: ["01JC9Z8X7W6V5T4S3R2Q1P0N9M"],
        disabled: false,
      }),
    },
    responses: {
      200: json(UserSchema, "Updated"),
      401: errors[401],
      403: errors[403],
      404: errors[404],
      422: errors[422],
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const user = await updateUser(
      kv,
      c.get("actor")!,
      c.req.valid("param").userId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(toPublicUser(user), 200);
  },
);

apiV1Users.openapi(
  createRoute({
    method: "delete",
    path: "/{userId}",
    operationId: "deleteUser",
    summary: "Delete a user (their sessions and tokens go too)",
    tags: ["Users"],
    middleware: [requires("admin")] as const,
    request: { params: UserId },
    responses: { 204: { description: "Deleted" }, 401: errors[401], 403: errors[403], 404: errors[404] },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await deleteUser(kv, c.get("actor")!, c.req.valid("param").userId, clock());
    return c.body(null, 204);
  },
);

apiV1Orgs.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listOrgs",
    summary: "List organizations in your scope",
    tags: ["Organizations"],
    middleware: [requires("backup.view")] as const,
    request: { query: Paging },
    responses: {
      200: json(page(OrgSchema), "Organizations by name"),
      401: errors[401],
      403: errors[403],
      422: errors[422],
    },
  }),
  async (c) => {
    const { offset, limit } = c.req.valid("query");
    const actor = c.get("actor")!;
    const orgs = await listOrgs(c.get("deps").kv, actor, actor.accountId!);
    return c.json({
      values: orgs.slice(offset, offset + limit).map(publicOrg),
      cursor: offset + limit < orgs.length ? String(offset + limit) : "",
    }, 200);
  },
);

apiV1Orgs.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "createOrg",
    summary: "Create an organization; the reply carries its registration secret, shown this once",
    tags: ["Organizations"],
    middleware: [requires("admin")] as const,
    request: jsonBody(OrgInput, { name: "Branch offices" }),
    responses: {
      201: json(z.object({ org: OrgSchema, secret: z.string() }), "Created"),
      401: errors[401],
      403: errors[403],
      422: errors[422],
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const actor = c.get("actor")!;
    const { org, secret } = await createOrg(kv, actor, {
      ...c.req.valid("json"),
      accountId: actor.accountId!,
    }, clock());
    c.header("Cache-Control", "no-store");
    return c.json({ org: publicOrg(org), secret }, 201);
  },
);

apiV1Orgs.openapi(
  createRoute({
    method: "get",
    path: "/{orgId}",
    operationId: "getOrg",
    summary: "Get an organization",
    tags: ["Organizations"],
    middleware: [requires("backup.view")] as const,
    request: { params: OrgId },
    responses: {
      200: json(OrgSchema, "The organization"),
      401: errors[401],
      403: errors[403],
      404: errors[404],
    },
  }),
  async (c) => {
    const org = await requireOrg(c.get("deps").kv, c.get("actor")!, c.req.valid("param").orgId);
    return c.json(publicOrg(org), 200);
  },
);

apiV1Orgs.openapi(
  createRoute({
    method: "patch",
    path: "/{orgId}",
    operationId: "renameOrg",
    summary: "Rename an organization",
    tags: ["Organizations"],
    middleware: [requires("admin")] as const,
    request: { params: OrgId, ...jsonBody(OrgInput, { name: "Branch offices (EMEA)" }) },
    responses: {
      200: json(OrgSchema, "Renamed"),
      401: errors[401],
      403: errors[403],
      404: errors[404],
      422: errors[422],
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const org = await renameOrg(
      kv,
      c.get("actor")!,
      c.req.valid("param").orgId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(publicOrg(org), 200);
  },
);

apiV1Orgs.openapi(
  createRoute({
    method: "post",
    path: "/{orgId}/rotate-secret",
    operationId: "rotateOrgSecret",
    summary: "Replace the registration secret; the old one stops working",
    tags: ["Organizations"],
    middleware: [requires("admin")] as const,
    request: { params: OrgId },
    responses: {
      200: json(z.object({ org: OrgSchema, secret: z.string() }), "The new secret, shown this once"),
      202: pendingApproval,
      401: errors[401],
      403: errors[403],
      404: errors[404],
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const orgId = c.req.valid("param").orgId;
    const request = await requestIfFourEyes(kv, c.get("actor")!, {
      kind: "org_secret.rotate",
      input: { orgId },
    }, clock());
    if (request) return c.json({ approvalRequest: request }, 202);
    const { org, secret } = await rotateOrgSecret(kv, c.get("actor")!, c.req.valid("param").orgId, clock());
    c.header("Cache-Control", "no-store");
    return c.json({ org: publicOrg(org), secret }, 200);
  },
);

apiV1Orgs.openapi(
  createRoute({
    method: "post",
    path: "/{orgId}/pam-vault-key/rotate",
    operationId: "rotatePamVaultKey",
    summary:
      "Rotate the organization's PAM vault key-encryption key: a new version, every key set it wraps re-wrapped, the old version retired",
    tags: ["Organizations"],
    middleware: [requires("admin")] as const,
    request: { params: OrgId },
    responses: {
      200: json(
        z.object({ keyId: z.string(), version: z.number().int(), rewrapped: z.number().int() }),
        "Rotated (the key itself never leaves the vault)",
      ),
      202: pendingApproval,
      401: errors[401],
      403: errors[403],
      404: errors[404],
      409: {
        description: "A key set kept changing; run it again",
        content: { "application/json": { schema: ErrorBody } },
      },
    },
  }),
  async (c) => {
    const { kv, clock, masterKey } = c.get("deps");
    const actor = c.get("actor")!;
    const org = await requireOrg(kv, actor, c.req.valid("param").orgId);
    const request = await requestIfFourEyes(kv, actor, {
      kind: "pam_vault_key.rotate",
      input: { orgId: org.id },
    }, clock());
    if (request) return c.json({ approvalRequest: request }, 202);
    const scope = { source: "pam_vault" as const, accountId: org.accountId, orgId: org.id };
    const { version, rewrapped } = await rotateKek(kv, masterKey, actor, scope, clock());
    return c.json({ keyId: kekReference("pam_vault", org.accountId, org.id).keyId, version, rewrapped }, 200);
  },
);

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
      200: json(page(TokenSchema), "Newest first"),
      401: errors[401],
      403: errors[403],
      422: errors[422],
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
      401: errors[401],
      403: errors[403],
      422: errors[422],
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
    responses: { 204: { description: "Revoked" }, 401: errors[401], 403: errors[403], 404: errors[404] },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await revokeApiToken(kv, c.get("actor")!, c.req.valid("param").tokenId, clock());
    return c.body(null, 204);
  },
);

apiV1Audit.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listAudit",
    summary: "Audit entries, newest first",
    tags: ["Audit"],
    middleware: [requires("admin")] as const,
    request: { query: AuditFilter },
    responses: {
      200: json(page(AuditSchema), "Entries"),
      401: errors[401],
      403: errors[403],
      422: errors[422],
    },
  }),
  async (c) => {
    const result = await listAudit(c.get("deps").kv, c.get("actor")!, c.req.valid("query"));
    return c.json({ values: result.values.map(({ accountId: _a, ...e }) => e), cursor: result.cursor }, 200);
  },
);
