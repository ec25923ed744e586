/** Legal holds as JSON: list, place (backup.hold), release (backup.hold; four-eyes when on). */
import { createRoute, z } from "@hono/zod-openapi";
import { requestIfFourEyes } from "../domain/approvals.ts";
import { HOLD_SCOPES, HoldFilter, HoldInput, listHolds, placeHold, releaseHold } from "../domain/holds.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";
import { pendingApproval } from "./api_v1_approvals.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};
const HoldId = z.object({ holdId: z.string().min(1).max(40) });

const LegalHoldSchema = z.object({
  id: z.string(),
  accountId: z.string(),
  orgId: z.string().nullable(),
  scope: z.enum(HOLD_SCOPES),
  subjectId: z.string(),
  subjectLabel: z.string(),
  reason: z.string(),
  caseReference: z.string(),
  status: z.enum(["active", "released"]),
  placedById: z.string(),
  placedByLabel: z.string(),
  placedAt: z.string(),
  releasedById: z.string().nullable(),
  releasedByLabel: z.string().nullable(),
  releasedAt: z.string().nullable(),
}).openapi("LegalHold");

/** `/api/v1/legal-holds` */
export const apiV1LegalHolds = apiRouter();

apiV1LegalHolds.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listLegalHolds",
    summary: "Legal holds in your scope, newest first (`status`: active, released or all)",
    tags: ["Legal holds"],
    middleware: [requires("backup.view")] as const,
    request: { query: HoldFilter },
    responses: {
      200: ok("The holds", z.object({ values: z.array(LegalHoldSchema), cursor: z.string() })),
      401: common[401],
      403: common[403],
      422: err("Invalid filter"),
    },
  }),
  async (c) => {
    const values = await listHolds(c.get("deps").kv, c.get("actor")!, c.req.valid("query"));
    return c.json({ values, cursor: "" }, 200);
  },
);

apiV1LegalHolds.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "placeLegalHold",
    summary:
      "Place a legal hold on a host's, a policy's or one restore point's restore points: retention keeps them and nothing prunes or expires them until it is released",
    tags: ["Legal holds"],
    middleware: [requires("backup.hold")] as const,
    request: jsonBody(HoldInput, {
      scope: "host",
      subjectId: "01JD0000000000000000000000",
      reason: "Litigation: Smith v. Acme",
      caseReference: "CASE-2026-114",
    }),
    responses: {
      201: ok("Placed", LegalHoldSchema),
      ...common,
      404: err("The host, policy or restore point is not found or outside your scope"),
      409: err("The single restore point is already expired or failed: nothing to keep"),
      422: err("Invalid fields"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    return c.json(await placeHold(kv, c.get("actor")!, c.req.valid("json"), clock()), 201);
  },
);

apiV1LegalHolds.openapi(
  createRoute({
    method: "post",
    path: "/{holdId}/release",
    operationId: "releaseLegalHold",
    summary: "Release a legal hold (with four-eyes on, this creates an approval request instead)",
    tags: ["Legal holds"],
    middleware: [requires("backup.hold")] as const,
    request: { params: HoldId },
    responses: {
      200: ok("Released", LegalHoldSchema),
      202: pendingApproval,
      ...common,
      409: err("Already released"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const actor = c.get("actor")!;
    const holdId = c.req.valid("param").holdId;
    const request = await requestIfFourEyes(
      kv,
      actor,
      { kind: "legal_hold.release", input: { holdId } },
      clock(),
    );
    if (request) return c.json({ approvalRequest: request }, 202);
    return c.json(await releaseHold(kv, actor, holdId, clock()), 200);
  },
);
