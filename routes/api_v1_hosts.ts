/**
 * `/api/v1/hosts`: managed hosts (agents) in your scope, one with its assignments, and decommissioning a
 * host (Archive On Host Deactivation, domain/archive.ts) with the same typed confirmation as the page.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { decommissionHost, DecommissionInput } from "../domain/archive.ts";
import { listAssignmentsByHost } from "../domain/assignments.ts";
import { HOST_STATUSES, HostFilter, listHosts, requireHost } from "../domain/hosts.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";
import { AssignmentSchema, HostSchema, page, Total } from "./api_schemas.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};
const HostId = z.object({ hostId: z.string().min(1).max(40) });

export const apiV1Hosts = apiRouter();

apiV1Hosts.openapi(
  createRoute({
    method: "get",
    path: "/api/v1/hosts",
    operationId: "listHosts",
    summary: "Managed hosts in your scope (filters: q, orgId, status; sort; offset/limit)",
    tags: ["Hosts"],
    middleware: [requires("backup.view")] as const,
    request: {
      query: z.object({
        q: z.string().max(200).optional(),
        orgId: z.string().max(40).optional(),
        status: z.enum(HOST_STATUSES).optional(),
        sort: z.string().max(30).optional(),
        offset: z.coerce.number().int().min(0).default(0),
        limit: z.coerce.number().int().min(1).max(200).default(50),
      }),
    },
    responses: {
      200: ok("Hosts", page(HostSchema, Total)),
      401: common[401],
      403: common[403],
      422: err("Invalid filter"),
    },
  }),
  async (c) => {
    const filter = HostFilter.parse(c.req.valid("query"));
    const { values, total } = await listHosts(c.get("deps").kv, c.get("actor")!, filter);
    const next = filter.offset + filter.limit;
    return c.json({ values, total, cursor: next < total ? String(next) : "" }, 200);
  },
);

apiV1Hosts.openapi(
  createRoute({
    method: "get",
    path: "/api/v1/hosts/{hostId}",
    operationId: "getHost",
    summary: "A host with its assignments (policy and state: active, paused or archived)",
    tags: ["Hosts"],
    middleware: [requires("backup.view")] as const,
    request: { params: HostId },
    responses: {
      200: ok(
        "The host and `assignments`",
        HostSchema.extend({
          assignments: z.array(
            AssignmentSchema.extend({ policyName: z.string(), archiveOnHostDeactivation: z.boolean() }),
          ),
        }).openapi("HostWithAssignments"),
      ),
      ...common,
    },
  }),
  async (c) => {
    const { kv } = c.get("deps");
    const actor = c.get("actor")!;
    const host = await requireHost(kv, actor, c.req.valid("param").hostId);
    const assignments = (await listAssignmentsByHost(kv, actor, host.id)).map(({ assignment, policy }) => ({
      ...assignment,
      policyName: policy.name,
      archiveOnHostDeactivation: policy.archiveOnHostDeactivation,
    }));
    return c.json({ ...host, assignments }, 200);
  },
);

apiV1Hosts.openapi(
  createRoute({
    method: "post",
    path: "/api/v1/hosts/{hostId}/decommission",
    operationId: "decommissionHost",
    summary:
      "Decommission a host: confirm with its name; no more backups, assignments archived, restore points kept (archived) under policies with Archive On Host Deactivation, following retention under the others",
    tags: ["Hosts"],
    middleware: [requires("backup.manage")] as const,
    request: { params: HostId, ...jsonBody(DecommissionInput) },
    responses: {
      200: ok(
        "The host, `archivedAssignments`, `archivedPoints`, `keptUnder` and `retainedUnder` (policy names)",
        z.object({
          host: HostSchema,
          archivedAssignments: z.number().int(),
          archivedPoints: z.number().int(),
          keptUnder: z.array(z.string()),
          retainedUnder: z.array(z.string()),
        }).openapi("HostDecommissioned"),
      ),
      409: err("Already decommissioned"),
      422: err("Invalid or wrong confirmation"),
      ...common,
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const result = await decommissionHost(
      kv,
      c.get("actor")!,
      c.req.valid("param").hostId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(result, 200);
  },
);
