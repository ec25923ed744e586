/**
 * App hooks as JSON (the policy form's "7. App Hooks"): a policy's hooks in execution order, adding,
 * changing and deleting one — validated by the form's schema (`HookFields`) and run through the same
 * domain functions — and the catalogues the form offers: hook templates and exclusion templates.
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  createHook,
  deleteHook,
  HOOK_TYPES,
  HookFields,
  hookTemplateCatalogue,
  listHooksByPolicy,
  requireHookView,
  TEMPLATE_NAMES,
  updateHook,
} from "../domain/hooks.ts";
import { EXCLUSION_TEMPLATES } from "../domain/policies.ts";
import { INTERPRETERS } from "../domain/scripts.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};
const PolicyId = z.object({ policyId: z.string().min(1).max(40) });
const HookId = z.object({ hookId: z.string().min(1).max(40) });

const HookSchema = z.object({
  id: z.string(),
  accountId: z.string(),
  orgId: z.string().nullable(),
  policyId: z.string(),
  type: z.enum(HOOK_TYPES),
  template: z.enum(TEMPLATE_NAMES).nullable(),
  scriptId: z.string().nullable(),
  timeoutSeconds: z.number().int(),
  sequence: z.number().int(),
  failOnError: z.boolean(),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("Hook");

const HookViewSchema = HookSchema.extend({
  scriptName: z.string().nullable(),
  templateLabel: z.string().nullable(),
}).openapi("HookView");

const HookTemplateSchema = z.object({
  name: z.enum(TEMPLATE_NAMES),
  label: z.string(),
  description: z.string(),
  interpreter: z.enum(INTERPRETERS),
  pre: z.string().describe("What a pre_backup or pre_snapshot hook runs"),
  post: z.string().describe("What a post_snapshot or post_backup hook runs"),
}).openapi("HookTemplate");

const ExclusionTemplateSchema = z.object({
  name: z.string(),
  label: z.string(),
  patterns: z.array(z.string()),
}).openapi("ExclusionTemplate");

const list = <T extends z.ZodType>(item: T) =>
  z.object({ values: z.array(item), cursor: z.string().describe("Always empty: the whole list") });

/** The create body's example: a PostgreSQL dump before the backup. */
const EXAMPLE = {
  type: "pre_backup",
  template: "postgresql",
  timeoutSeconds: 600,
  sequence: 10,
  failOnError: true,
} as const;

/** `/api/v1/policies/:policyId/hooks` */
export const apiV1PolicyHooks = apiRouter();
/** `/api/v1/hooks` */
export const apiV1Hooks = apiRouter();
/** `/api/v1/hook-templates` */
export const apiV1HookTemplates = apiRouter();
/** `/api/v1/exclusion-templates` */
export const apiV1ExclusionTemplates = apiRouter();

apiV1PolicyHooks.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listPolicyHooks",
    summary:
      "A policy's app hooks in execution order (pre_backup, pre_snapshot, post_snapshot, post_backup; then sequence, then id)",
    tags: ["Hooks"],
    middleware: [requires("backup.view")] as const,
    request: { params: PolicyId },
    responses: {
      200: ok("Every hook of the policy (a policy carries few: no further page)", list(HookViewSchema)),
      ...common,
      404: err("Policy not found or outside your scope"),
    },
  }),
  async (c) => {
    const values = await listHooksByPolicy(c.get("deps").kv, c.get("actor")!, c.req.valid("param").policyId);
    return c.json({ values, cursor: "" }, 200);
  },
);

apiV1PolicyHooks.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "createPolicyHook",
    summary:
      "Add a hook to a policy: a template (`template`) or a custom script of the policy's organization (`scriptId`), exactly one",
    tags: ["Hooks"],
    middleware: [requires("backup.manage")] as const,
    request: { params: PolicyId, ...jsonBody(HookFields, EXAMPLE) },
    responses: {
      201: ok("Created", HookSchema),
      ...common,
      404: err("Policy not found or outside your scope"),
      409: err("The policy's BES is being deleted"),
      422: err(
        "Invalid fields, both or neither of template and scriptId, a script of another organization, hooks too large for a backup job, or an unknown field",
      ),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const hook = await createHook(
      kv,
      c.get("actor")!,
      { policyId: c.req.valid("param").policyId, ...c.req.valid("json") },
      clock(),
    );
    return c.json(hook, 201);
  },
);

apiV1Hooks.openapi(
  createRoute({
    method: "get",
    path: "/{hookId}",
    operationId: "getHook",
    summary: "A hook with its script's name and its template's label",
    tags: ["Hooks"],
    middleware: [requires("backup.view")] as const,
    request: { params: HookId },
    responses: { 200: ok("The hook", HookViewSchema), ...common },
  }),
  async (c) => {
    return c.json(await requireHookView(c.get("deps").kv, c.get("actor")!, c.req.valid("param").hookId), 200);
  },
);

apiV1Hooks.openapi(
  createRoute({
    method: "put",
    path: "/{hookId}",
    operationId: "updateHook",
    summary: "Replace a hook's fields (its policy never changes; omitted fields take their defaults)",
    tags: ["Hooks"],
    middleware: [requires("backup.manage")] as const,
    request: { params: HookId, ...jsonBody(HookFields, { ...EXAMPLE, timeoutSeconds: 900 }) },
    responses: {
      200: ok("Updated", HookSchema),
      ...common,
      422: err("Invalid fields (as on create) or an unknown field"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const hook = await updateHook(
      kv,
      c.get("actor")!,
      c.req.valid("param").hookId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(hook, 200);
  },
);

apiV1Hooks.openapi(
  createRoute({
    method: "delete",
    path: "/{hookId}",
    operationId: "deleteHook",
    summary: "Delete a hook",
    tags: ["Hooks"],
    middleware: [requires("backup.manage")] as const,
    request: { params: HookId },
    responses: { 204: { description: "Deleted" }, ...common },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await deleteHook(kv, c.get("actor")!, c.req.valid("param").hookId, clock());
    return c.body(null, 204);
  },
);

apiV1HookTemplates.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listHookTemplates",
    summary:
      "The hook template catalogue (MySQL / MariaDB, PostgreSQL, MongoDB, Elasticsearch) with what each runs",
    tags: ["Hooks"],
    middleware: [requires("backup.view")] as const,
    responses: { 200: ok("Every template", list(HookTemplateSchema)), 401: common[401], 403: common[403] },
  }),
  (c) => c.json({ values: hookTemplateCatalogue(), cursor: "" }, 200),
);

apiV1ExclusionTemplates.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listExclusionTemplates",
    summary:
      "The exclusion templates a policy's `exclusionTemplate` names, with the patterns each expands to",
    tags: ["Policies"],
    middleware: [requires("backup.view")] as const,
    responses: {
      200: ok("Every template", list(ExclusionTemplateSchema)),
      401: common[401],
      403: common[403],
    },
  }),
  (c) => {
    const values = Object.entries(EXCLUSION_TEMPLATES).map(([name, t]) => ({ name, ...t }));
    return c.json({ values, cursor: "" }, 200);
  },
);
