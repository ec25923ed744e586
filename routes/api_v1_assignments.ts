/**
 * Host assignments as JSON (the guide's "Host Assignment"): a policy's hosts and a host's policies,
 * assigning one or many hosts to a policy in one call (each host reported on its own), changing an
 * assignment's state and removing it — the domain functions of the policy page's Hosts section.
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  assignHosts,
  AssignHostsInput,
  ASSIGNMENT_STATES,
  AssignmentStateInput,
  listAssignmentsByHost,
  listAssignmentsByPolicy,
  removeAssignment,
  requireAssignment,
  setAssignmentState,
} from "../domain/assignments.ts";
import { pageOf, PageQuery } from "../domain/paging.ts";
import { requires } from "./access.ts";
import { apiRouter, err, ErrorBody, jsonBody, ok } from "./api_common.ts";
import { AssignmentSchema, HOST_STATUS, HostAssignmentSchema } from "./api_schemas.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};
const PolicyId = z.object({ policyId: z.string().min(1).max(40) });
const HostId = z.object({ hostId: z.string().min(1).max(40) });
const AssignmentId = z.object({ assignmentId: z.string().min(1).max(40) });
const Paging = PageQuery.strict();

/** An assignment as a policy lists it: with its host's name, address and status. */
const PolicyAssignmentSchema = AssignmentSchema.extend({
  hostname: z.string(),
  ipAddress: z.string(),
  hostStatus: HOST_STATUS,
}).openapi("PolicyAssignment");

const page = <T extends z.ZodType>(item: T) =>
  z.object({ values: z.array(item), cursor: z.string().describe("Empty after the last page") });

const AssignResultSchema = z.object({
  hostId: z.string(),
  ok: z.boolean(),
  status: z.number().int().describe(
    "What this host got: 201 assigned, 200 reassigned (an archived assignment made active), or the error status it would get alone (403, 404, 409, 422)",
  ),
  created: z.boolean().optional(),
  assignment: AssignmentSchema.optional(),
  error: ErrorBody.shape.error.optional(),
}).openapi("AssignHostResult");

/** `/api/v1/policies/:policyId/assignments` */
export const apiV1PolicyAssignments = apiRouter();
/** `/api/v1/hosts/:hostId/assignments` */
export const apiV1HostAssignments = apiRouter();
/** `/api/v1/assignments` */
export const apiV1Assignments = apiRouter();

apiV1PolicyAssignments.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listPolicyAssignments",
    summary: "The hosts assigned to a policy (every state), by hostname",
    tags: ["Assignments"],
    middleware: [requires("backup.view")] as const,
    request: { params: PolicyId, query: Paging },
    responses: {
      200: ok("A page of assignments with their hosts", page(PolicyAssignmentSchema)),
      ...common,
      404: err("Policy not found or outside your scope"),
      422: err("Invalid cursor, limit or unknown query field"),
    },
  }),
  async (c) => {
    const { cursor, limit } = c.req.valid("query");
    const rows = await listAssignmentsByPolicy(
      c.get("deps").kv,
      c.get("actor")!,
      c.req.valid("param").policyId,
    );
    const { values, cursor: next } = pageOf(rows, {
      list: "policy-assignments",
      key: ({ host }) => [host.hostname, host.id],
      cursor,
      limit,
    });
    return c.json({
      values: values.map(({ assignment, host }) => ({
        ...assignment,
        hostname: host.hostname,
        ipAddress: host.ipAddress,
        hostStatus: host.status,
      })),
      cursor: next,
    }, 200);
  },
);

apiV1PolicyAssignments.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "assignHosts",
    summary:
      "Assign one or many hosts to a policy; each host is its own write with its own audit entry and is reported on its own",
    description:
      "Each result carries the status that host got: 201 assigned, 200 reassigned (its archived assignment is active again; a decommissioned host is back in service), or the error it would get alone — 404 unknown or out of scope, 422 already assigned or of another account, 409 the BES is being deleted. The call answers 201 when at least one host was assigned, 200 when none was.",
    tags: ["Assignments"],
    middleware: [requires("backup.manage")] as const,
    request: {
      params: PolicyId,
      ...jsonBody(AssignHostsInput, {
        hostIds: ["01JBQ6Z3S8V1N2M4K5P7R9T0WX", "01JBQ6Z3S8V1N2M4K5P7R9T0WY"],
      }),
    },
    responses: {
      201: ok(
        "At least one host was assigned; `results` in the order of `hostIds`",
        z.object({
          results: z.array(AssignResultSchema),
          assigned: z.number().int(),
          failed: z.number().int(),
        }),
      ),
      200: ok(
        "No host was assigned (every result says why)",
        z.object({
          results: z.array(AssignResultSchema),
          assigned: z.number().int(),
          failed: z.number().int(),
        }),
      ),
      ...common,
      404: err("Policy not found or outside your scope"),
      422: err("Invalid hostIds (none, more than 500, a host twice) or an unknown field"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const results = await assignHosts(
      kv,
      c.get("actor")!,
      c.req.valid("param").policyId,
      c.req.valid("json"),
      clock(),
    );
    const assigned = results.filter((r) => r.ok).length;
    const body = { results, assigned, failed: results.length - assigned };
    return assigned > 0 ? c.json(body, 201) : c.json(body, 200);
  },
);

apiV1HostAssignments.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listHostAssignments",
    summary: "A host's assignments (the policies it is assigned to that you can see), by policy name",
    tags: ["Assignments"],
    middleware: [requires("backup.view")] as const,
    request: { params: HostId, query: Paging },
    responses: {
      200: ok("A page of assignments with their policies", page(HostAssignmentSchema)),
      ...common,
      404: err("Host not found or outside your scope"),
      422: err("Invalid cursor, limit or unknown query field"),
    },
  }),
  async (c) => {
    const { cursor, limit } = c.req.valid("query");
    const rows = await listAssignmentsByHost(c.get("deps").kv, c.get("actor")!, c.req.valid("param").hostId);
    const { values, cursor: next } = pageOf(rows, {
      list: "host-assignments",
      key: ({ policy }) => [policy.name, policy.id],
      cursor,
      limit,
    });
    return c.json({
      values: values.map(({ assignment, policy }) => ({
        ...assignment,
        policyName: policy.name,
        archiveOnHostDeactivation: policy.archiveOnHostDeactivation,
      })),
      cursor: next,
    }, 200);
  },
);

apiV1Assignments.openapi(
  createRoute({
    method: "get",
    path: "/{assignmentId}",
    operationId: "getAssignment",
    summary: "An assignment with its policy's and host's names",
    tags: ["Assignments"],
    middleware: [requires("backup.view")] as const,
    request: { params: AssignmentId },
    responses: {
      200: ok(
        "The assignment",
        AssignmentSchema.extend({ policyName: z.string(), hostname: z.string(), hostStatus: HOST_STATUS }),
      ),
      ...common,
    },
  }),
  async (c) => {
    const { assignment, policy, host } = await requireAssignment(
      c.get("deps").kv,
      c.get("actor")!,
      c.req.valid("param").assignmentId,
    );
    return c.json({
      ...assignment,
      policyName: policy.name,
      hostname: host.hostname,
      hostStatus: host.status,
    }, 200);
  },
);

apiV1Assignments.openapi(
  createRoute({
    method: "patch",
    path: "/{assignmentId}",
    operationId: "setAssignmentState",
    summary: `Change an assignment's state (${ASSIGNMENT_STATES.join(", ")})`,
    description:
      "The host's protected object follows in the same write. Making an assignment of a decommissioned host active or paused puts the host back in service. The same state again changes nothing.",
    tags: ["Assignments"],
    middleware: [requires("backup.manage")] as const,
    request: { params: AssignmentId, ...jsonBody(AssignmentStateInput, { state: "paused" }) },
    responses: {
      200: ok("The assignment as it is now", AssignmentSchema),
      ...common,
      422: err("Invalid state or an unknown field"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const assignment = await setAssignmentState(
      kv,
      c.get("actor")!,
      c.req.valid("param").assignmentId,
      c.req.valid("json").state,
      clock(),
    );
    return c.json(assignment, 200);
  },
);

apiV1Assignments.openapi(
  createRoute({
    method: "delete",
    path: "/{assignmentId}",
    operationId: "removeAssignment",
    summary:
      "Remove a host from a policy; its restore points are kept (its protected object becomes unprotected)",
    tags: ["Assignments"],
    middleware: [requires("backup.manage")] as const,
    request: { params: AssignmentId },
    responses: { 204: { description: "Removed" }, ...common },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await removeAssignment(kv, c.get("actor")!, c.req.valid("param").assignmentId, clock());
    return c.body(null, 204);
  },
);
