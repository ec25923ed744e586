/**
 * Four-eyes approval as JSON: the account's setting (admins), the requests in the actor's scope, and
 * approving or refusing one (approvals.ts). A gated action's own route answers 202 with the request
 * it created (`PendingApproval`).
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  APPROVAL_KINDS,
  APPROVAL_STATUSES,
  ApprovalFilter,
  approveRequest,
  FourEyesSettingsInput,
  getFourEyesSettings,
  listApprovals,
  RefuseInput,
  refuseRequest,
  requestIfFourEyes,
  requireApproval,
  setFourEyesSettings,
} from "../domain/approvals.ts";
import { ForbiddenError } from "../domain/errors.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};
const RequestId = z.object({ requestId: z.string().min(1).max(40) });

export const ApprovalRequestSchema = z.object({
  id: z.string(),
  accountId: z.string(),
  orgId: z.string().nullable(),
  kind: z.enum(APPROVAL_KINDS),
  input: z.record(z.string(), z.unknown()).describe("The action's validated input, run as is on approval"),
  permission: z.string().describe("What the approver needs on the object"),
  objectType: z.string(),
  objectId: z.string(),
  summary: z.string(),
  status: z.enum(APPROVAL_STATUSES),
  requestedById: z.string(),
  requestedByLabel: z.string(),
  requestedAt: z.string(),
  expiresAt: z.string(),
  decidedById: z.string().nullable(),
  decidedByLabel: z.string().nullable(),
  decidedAt: z.string().nullable(),
  outcome: z.string().nullable(),
}).openapi("ApprovalRequest");

/** The answer of a gated action while four-eyes is on: the request that now waits for a second person. */
export const PendingApprovalSchema = z.object({ approvalRequest: ApprovalRequestSchema }).openapi(
  "PendingApproval",
);

/** The 202 response a gated route declares. */
export const pendingApproval = ok(
  "Four-eyes approval is on: nothing ran yet; a second user must approve the request (see /api/v1/approvals)",
  PendingApprovalSchema,
);

const SettingsSchema = z.object({
  accountId: z.string(),
  enabled: z.boolean(),
  ttlHours: z.number().int(),
  updatedAt: z.string().nullable(),
  updatedBy: z.string().nullable(),
}).openapi("FourEyesSettings");

/** `/api/v1/account/four-eyes` */
export const apiV1FourEyes = apiRouter();
/** `/api/v1/approvals` */
export const apiV1Approvals = apiRouter();

apiV1FourEyes.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "getFourEyesSettings",
    summary: "The account's four-eyes setting (off by default) and its request time limit",
    tags: ["Approvals"],
    middleware: [requires("admin")] as const,
    responses: { 200: ok("The setting", SettingsSchema), 401: common[401], 403: common[403] },
  }),
  async (c) => {
    const actor = c.get("actor")!;
    if (!actor.accountId) throw new ForbiddenError("This actor has no account");
    return c.json(await getFourEyesSettings(c.get("deps").kv, actor.accountId), 200);
  },
);

apiV1FourEyes.openapi(
  createRoute({
    method: "put",
    path: "/",
    operationId: "setFourEyesSettings",
    summary:
      "Turn four-eyes approval of destructive actions on or off, with the request time limit (hours); turning it off while on is itself a request (202) a second admin approves",
    tags: ["Approvals"],
    middleware: [requires("admin")] as const,
    request: jsonBody(FourEyesSettingsInput, { enabled: true, ttlHours: 24 }),
    responses: {
      200: ok("Saved", SettingsSchema),
      202: ok(
        "Four-eyes is on: turning it off waits for a second admin's approval (see /api/v1/approvals)",
        z.object({ approvalRequest: ApprovalRequestSchema }),
      ),
      401: common[401],
      403: err("Not an administrator over the whole account"),
      422: err("Invalid fields"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const actor = c.get("actor")!;
    const input = c.req.valid("json");
    if (!input.enabled && actor.accountId) {
      const request = await requestIfFourEyes(kv, actor, {
        kind: "four_eyes.disable",
        input: { accountId: actor.accountId },
      }, clock());
      if (request) return c.json({ approvalRequest: request }, 202);
    }
    return c.json(await setFourEyesSettings(kv, actor, input, clock()), 200);
  },
);

apiV1Approvals.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listApprovals",
    summary: "Four-eyes requests in your scope, newest first: `pending` ones, or the last 200 `decided` ones",
    tags: ["Approvals"],
    middleware: [requires("backup.view")] as const,
    request: { query: ApprovalFilter },
    responses: {
      200: ok(
        "The requests",
        z.object({ values: z.array(ApprovalRequestSchema), cursor: z.string().describe("Always empty") }),
      ),
      401: common[401],
      403: common[403],
      422: err("Invalid filter"),
    },
  }),
  async (c) => {
    const values = await listApprovals(c.get("deps").kv, c.get("actor")!, c.req.valid("query"));
    return c.json({ values, cursor: "" }, 200);
  },
);

apiV1Approvals.openapi(
  createRoute({
    method: "get",
    path: "/{requestId}",
    operationId: "getApproval",
    summary: "One four-eyes request",
    tags: ["Approvals"],
    middleware: [requires("backup.view")] as const,
    request: { params: RequestId },
    responses: { 200: ok("The request", ApprovalRequestSchema), ...common },
  }),
  async (c) => {
    return c.json(
      await requireApproval(c.get("deps").kv, c.get("actor")!, c.req.valid("param").requestId),
      200,
    );
  },
);

apiV1Approvals.openapi(
  createRoute({
    method: "post",
    path: "/{requestId}/approve",
    operationId: "approveApproval",
    summary:
      "Approve a pending request: its action runs once, as you. You must not be its requester and need the action's permission",
    tags: ["Approvals"],
    middleware: [requires("backup.manage")] as const,
    request: { params: RequestId },
    responses: {
      200: ok(
        "Decided: `status` is `executed` or `failed` (with `outcome`); a rotation's new secret is shown this once",
        z.object({ approvalRequest: ApprovalRequestSchema, secret: z.string().optional() }),
      ),
      ...common,
      403: err("Missing the action's permission, or you are the requester"),
      409: err("Not pending any more, expired, or another decision won the race"),
    },
  }),
  async (c) => {
    const { kv, clock, masterKey } = c.get("deps");
    const { request, outcome } = await approveRequest(kv, c.get("actor")!, c.req.valid("param").requestId, {
      now: clock(),
      masterKey,
    });
    c.header("Cache-Control", "no-store");
    return c.json({ approvalRequest: request, ...(outcome?.secret ? { secret: outcome.secret } : {}) }, 200);
  },
);

apiV1Approvals.openapi(
  createRoute({
    method: "post",
    path: "/{requestId}/refuse",
    operationId: "refuseApproval",
    summary: "Refuse a pending request (its requester may withdraw it): nothing of the action runs",
    tags: ["Approvals"],
    middleware: [requires("backup.manage")] as const,
    request: { params: RequestId, ...jsonBody(RefuseInput, { note: "Not during the audit" }) },
    responses: {
      200: ok("Refused", ApprovalRequestSchema),
      ...common,
      409: err("Not pending any more, expired, or another decision won the race"),
      422: err("Invalid note"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const refused = await refuseRequest(
      kv,
      c.get("actor")!,
      c.req.valid("param").requestId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(refused, 200);
  },
);
