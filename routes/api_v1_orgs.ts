/** `/api/v1/orgs`: organizations, their registration secrets and PAM vault keys. */
import { requestIfFourEyes } from "../domain/approvals.ts";
import { pendingApproval } from "./api_v1_approvals.ts";
import { createRoute, z } from "@hono/zod-openapi";
import { kekReference } from "../domain/keks.ts";
import { rotateKek } from "../domain/namespace_keys.ts";
import { createOrg, listOrgs, OrgInput, renameOrg, requireOrg, rotateOrgSecret } from "../domain/tenancy.ts";
import type { Org } from "../domain/types.ts";
import { requires } from "./access.ts";
import { apiRouter, ErrorBody, identityErrors, json, jsonBody, offsetPage, Paging } from "./api_common.ts";

const OrgSchema = z.object({
  id: z.string(),
  accountId: z.string(),
  name: z.string(),
  secretRotatedAt: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("Organization");

function publicOrg(org: Org) {
  const { secretHash: _h, ...rest } = org;
  return rest;
}

/** `/api/v1/orgs` */
export const apiV1Orgs = apiRouter();

const OrgId = z.object({ orgId: z.string().min(1).max(40) });

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
      200: json(offsetPage(OrgSchema), "Organizations by name"),
      ...identityErrors.input,
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
      ...identityErrors.input,
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
      ...identityErrors.object,
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
      ...identityErrors.change,
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
      ...identityErrors.object,
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
      ...identityErrors.object,
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
