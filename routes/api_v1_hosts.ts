/**
 * `/api/v1/hosts`: managed hosts (agents) in your scope with the Hosts page's filters, one with its
 * assignments, decommissioning a host (Archive On Host Deactivation, domain/archive.ts) with the same
 * typed confirmation as the page, and reactivating one by assigning it to a policy again (as the policy
 * page's assign form does). Assignment lists live in api_v1_assignments.ts.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { decommissionHost, DecommissionInput } from "../domain/archive.ts";
import { listAssignmentsByHost, reactivateHost, ReactivateHostInput } from "../domain/assignments.ts";
import { HostQuery, listHostsPage, requireHost } from "../domain/hosts.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";
import { AssignmentSchema, HostAssignmentSchema, HostSchema, page, Total } from "./api_schemas.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};
const HostId = z.object({ hostId: z.string().min(1).max(40) });

/** `/api/v1/hosts` */
export const apiV1Hosts = apiRouter();

apiV1Hosts.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listHosts",
    summary: "Managed hosts in your scope, with the Hosts page's filters (q, orgId, status, sort), by cursor",
    tags: ["Hosts"],
    middleware: [requires("backup.view")] as const,
    request: { query: HostQuery },
    responses: {
      200: ok(
        "A page of hosts, the cursor of the next page (empty after the last) and the number of matches",
        page(HostSchema, Total),
      ),
      401: common[401],
      403: common[403],
      422: err("Invalid filter, unknown query field or cursor (fields names it)"),
    },
  }),
  async (c) => {
    return c.json(await listHostsPage(c.get("deps").kv, c.get("actor")!, c.req.valid("query")), 200);
  },
);

apiV1Hosts.openapi(
  createRoute({
    method: "get",
    path: "/{hostId}",
    operationId: "getHost",
    summary: "A host with its assignments (policy and state: active, paused or archived)",
    tags: ["Hosts"],
    middleware: [requires("backup.view")] as const,
    request: { params: HostId },
    responses: {
      200: ok(
        "The host and `assignments`",
        HostSchema.extend({ assignments: z.array(HostAssignmentSchema) }).openapi("HostWithAssignments"),
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
    path: "/{hostId}/decommission",
    operationId: "decommissionHost",
    summary:
      "Decommission a host: confirm with its name; no more backups, assignments archived, restore points kept (archived) under policies with Archive On Host Deactivation, following retention under the others",
    tags: ["Hosts"],
    middleware: [requires("backup.manage")] as const,
    request: { params: HostId, ...jsonBody(DecommissionInput, { confirmHostname: "db01.acme.example" }) },
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
      422: err("Invalid or wrong confirmation, or an unknown field"),
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

apiV1Hosts.openapi(
  createRoute({
    method: "post",
    path: "/{hostId}/reactivate",
    operationId: "reactivateHost",
    summary:
      "Put a decommissioned host back in service by assigning it to a policy again (its archived assignment there becomes active, or a new one is made); archived restore points stay archived",
    tags: ["Hosts"],
    middleware: [requires("backup.manage")] as const,
    request: { params: HostId, ...jsonBody(ReactivateHostInput, { policyId: "01JBQ6Z3S8V1N2M4K5P7R9T0WX" }) },
    responses: {
      200: ok(
        "The host as it is now (`pending` until its next heartbeat, or `online`), the assignment, and `created` (false when an archived assignment was reactivated)",
        z.object({ host: HostSchema, assignment: AssignmentSchema, created: z.boolean() }).openapi(
          "HostReactivated",
        ),
      ),
      ...common,
      404: err("Host or policy not found or outside your scope"),
      409: err("The host is not decommissioned, or the policy's BES is being deleted"),
      422: err("Invalid policyId, a host of another account, or an unknown field"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const result = await reactivateHost(
      kv,
      c.get("actor")!,
      c.req.valid("param").hostId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(result, 200);
  },
);
