/** `/api/v1/audit`: the audit log (admin). */
import { createRoute, z } from "@hono/zod-openapi";
import { AuditFilter, listAudit } from "../domain/audit.ts";
import { requires } from "./access.ts";
import { apiRouter, identityErrors, json, offsetPage } from "./api_common.ts";

/** `/api/v1/audit` */
export const apiV1Audit = apiRouter();

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
      200: json(offsetPage(AuditSchema), "Entries"),
      ...identityErrors.input,
    },
  }),
  async (c) => {
    const result = await listAudit(c.get("deps").kv, c.get("actor")!, c.req.valid("query"));
    return c.json({ values: result.values.map(({ accountId: _a, ...e }) => e), cursor: result.cursor }, 200);
  },
);
