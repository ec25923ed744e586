/**
 * `/api/v1/scripts`: the script library (Backup > Scripts) that custom app hooks run — list, create,
 * read with the policies that use it, update, delete (refused while a hook runs it) — validated by the
 * page's schemas and run through the same domain functions.
 */
import { createRoute, z } from "@hono/zod-openapi";
import {
  createScript,
  deleteScript,
  INTERPRETERS,
  listScriptsPage,
  requireScriptDetail,
  ScriptCreateFields,
  ScriptFields,
  ScriptQuery,
  updateScript,
} from "../domain/scripts.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";

const common = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};
const ScriptId = z.object({ scriptId: z.string().min(1).max(40) });

const ScriptSchema = z.object({
  id: z.string(),
  accountId: z.string(),
  orgId: z.string().nullable().describe("null: an account-level script"),
  name: z.string(),
  interpreter: z.enum(INTERPRETERS),
  body: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
}).openapi("Script");

/** `/api/v1/scripts` */
export const apiV1Scripts = apiRouter();

apiV1Scripts.openapi(
  createRoute({
    method: "get",
    path: "/",
    operationId: "listScripts",
    summary: "Scripts in your scope by name (q: part of the name; orgId: one organization's), by cursor",
    tags: ["Scripts"],
    middleware: [requires("backup.view")] as const,
    request: { query: ScriptQuery },
    responses: {
      200: ok(
        "A page of scripts and the cursor of the next (empty after the last)",
        z.object({ values: z.array(ScriptSchema), cursor: z.string() }),
      ),
      401: common[401],
      403: common[403],
      422: err("Invalid filter, cursor or unknown query field"),
    },
  }),
  async (c) => {
    return c.json(await listScriptsPage(c.get("deps").kv, c.get("actor")!, c.req.valid("query")), 200);
  },
);

apiV1Scripts.openapi(
  createRoute({
    method: "post",
    path: "/",
    operationId: "createScript",
    summary:
      "Add a script to an organization's library (orgId; null for an account-level script, which needs a scope over every organization)",
    tags: ["Scripts"],
    middleware: [requires("backup.manage")] as const,
    request: jsonBody(ScriptCreateFields, {
      name: "Flush Redis",
      orgId: "01JBQ6Z3S8V1N2M4K5P7R9T0WX",
      interpreter: "bash",
      body: "set -euo pipefail\nredis-cli SAVE",
    }),
    responses: {
      201: ok("Created", ScriptSchema),
      401: common[401],
      403: common[403],
      422: err(
        "Invalid fields, an organization you cannot see, a name already used in it, or an unknown field",
      ),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    return c.json(await createScript(kv, c.get("actor")!, c.req.valid("json"), clock()), 201);
  },
);

apiV1Scripts.openapi(
  createRoute({
    method: "get",
    path: "/{scriptId}",
    operationId: "getScript",
    summary: "A script with the names of the policies whose hooks run it",
    tags: ["Scripts"],
    middleware: [requires("backup.view")] as const,
    request: { params: ScriptId },
    responses: {
      200: ok("The script and `usedBy` (policy names)", ScriptSchema.extend({ usedBy: z.array(z.string()) })),
      ...common,
    },
  }),
  async (c) => {
    return c.json(
      await requireScriptDetail(c.get("deps").kv, c.get("actor")!, c.req.valid("param").scriptId),
      200,
    );
  },
);

apiV1Scripts.openapi(
  createRoute({
    method: "put",
    path: "/{scriptId}",
    operationId: "updateScript",
    summary:
      "Replace a script's name, interpreter and body (its organization never changes); the hooks that run it run the new body",
    tags: ["Scripts"],
    middleware: [requires("backup.manage")] as const,
    request: {
      params: ScriptId,
      ...jsonBody(ScriptFields, {
        name: "Flush Redis",
        interpreter: "bash",
        body: "set -euo pipefail\nredis-cli BGSAVE",
      }),
    },
    responses: {
      200: ok("Updated", ScriptSchema),
      ...common,
      422: err(
        "Invalid fields, a name already used in its organization, a body that would make a policy's hooks too large for a backup job, or an unknown field",
      ),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const script = await updateScript(
      kv,
      c.get("actor")!,
      c.req.valid("param").scriptId,
      c.req.valid("json"),
      clock(),
    );
    return c.json(script, 200);
  },
);

apiV1Scripts.openapi(
  createRoute({
    method: "delete",
    path: "/{scriptId}",
    operationId: "deleteScript",
    summary: "Delete a script; refused while a hook runs it",
    tags: ["Scripts"],
    middleware: [requires("backup.manage")] as const,
    request: { params: ScriptId },
    responses: {
      204: { description: "Deleted" },
      ...common,
      409: err("Hooks run the script: the message names their policies; remove those hooks first"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    await deleteScript(kv, c.get("actor")!, c.req.valid("param").scriptId, clock());
    return c.body(null, 204);
  },
);
