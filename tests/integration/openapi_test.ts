/**
 * The OpenAPI document is complete enough to generate a client: every route under `/api/v1` — found by
 * walking the Hono app's routes, not a hand-kept list — is in the document with a unique operationId, a
 * summary, a tag, typed JSON answers (a list's with its cursor), the error shape on every error answer, and an
 * example on every create body; `/api/docs` renders every operation.
 */
import assert from "node:assert/strict";
import { createRoute, z } from "@hono/zod-openapi";
import { createApp, openApiDocument } from "../../app.ts";
import { testConfig } from "../../domain/config.ts";
import { createLogger } from "../../domain/log.ts";
import { publicAccess } from "../../routes/access.ts";

type App = ReturnType<typeof createApp>;
// deno-lint-ignore no-explicit-any
type Operation = Record<string, any>;

const ERROR_REF = "#/components/schemas/Error";

type Doc = {
  paths: Record<string, Record<string, Operation>>;
  components?: { schemas?: Record<string, Operation> };
};

/** The app's OpenAPI document, as plain JSON objects. */
function documentOf(app: App): Doc {
  return openApiDocument(app) as unknown as Doc;
}

/** The app on an in-memory KV (closed when the test's `using` ends). */
async function newApp(): Promise<App & Disposable> {
  const kv = await Deno.openKv(":memory:");
  const app = createApp({ kv, config: testConfig(), logger: createLogger("error") });
  return Object.assign(app, { [Symbol.dispose]: () => kv.close() });
}

/** `/api/v1/policies/:policyId` → `/api/v1/policies/{policyId}` (a regex constraint is dropped). */
function openApiPath(honoPath: string): string {
  return honoPath.replace(/:(\w+)(\{[^}]*\})?/g, "{$1}");
}

/** The endpoints under /api/v1 registered on the app, as `METHOD /path` (Hono syntax). */
function apiV1Routes(app: App): Array<{ method: string; path: string }> {
  const seen = new Map<string, { method: string; path: string }>();
  for (const r of app.routes) {
    if (r.method === "ALL" || !r.path.startsWith("/api/v1/")) continue;
    seen.set(`${r.method} ${r.path}`, { method: r.method, path: r.path });
  }
  return [...seen.values()];
}

/** Every way the document falls short, one message per problem, each naming its route. */
function openApiProblems(app: App): string[] {
  const doc = documentOf(app);
  const problems: string[] = [];
  const operationIds = new Map<string, string>();
  for (const { method, path } of apiV1Routes(app)) {
    const route = `${method} ${path}`;
    const op = doc.paths?.[openApiPath(path)]?.[method.toLowerCase()];
    if (!op) {
      problems.push(
        `${route} is not in the OpenAPI document: declare it with createRoute() on an apiRouter() (routes/api_common.ts)`,
      );
      continue;
    }
    if (typeof op.operationId !== "string" || !/^[a-z][A-Za-z0-9]+$/.test(op.operationId)) {
      problems.push(`${route} has no operationId (a camelCase name such as listPolicies)`);
    } else if (operationIds.has(op.operationId)) {
      problems.push(
        `${route} reuses operationId ${op.operationId} of ${
          operationIds.get(op.operationId)
        }: make it unique`,
      );
    } else operationIds.set(op.operationId, route);
    if (typeof op.summary !== "string" || op.summary.trim().length < 5) {
      problems.push(`${route} has no summary`);
    }
    if (!Array.isArray(op.tags) || op.tags.length === 0) problems.push(`${route} has no tag`);
    const params = [...path.matchAll(/:(\w+)/g)].map((m) => m[1]);
    for (const name of params) {
      if (!op.parameters?.some((p: Operation) => p.in === "path" && p.name === name)) {
        problems.push(`${route} does not declare its path parameter ${name}`);
      }
    }
    const responses = Object.entries(op.responses ?? {}) as Array<[string, Operation]>;
    const success = responses.filter(([status]) => /^2\d\d$/.test(status));
    if (success.length === 0) problems.push(`${route} declares no success answer`);
    for (const [status, response] of success) {
      if (status === "204") continue;
      const schema = response.content?.["application/json"]?.schema;
      if (!schema || Object.keys(schema).length === 0) {
        problems.push(
          `${route} answers ${status} without a response schema (pass one to ok(description, schema))`,
        );
      }
      // A list answers `{values, cursor}` (cursor "" when there is no next page, or no paging at all).
      const answer = schema?.$ref ? doc.components?.schemas?.[schema.$ref.split("/").pop()] : schema;
      if (answer?.properties?.values && !answer.required?.includes("cursor")) {
        problems.push(`${route} answers a list without its cursor: lists answer {values, cursor}`);
      }
    }
    const failures = responses.filter(([status]) => /^[45]\d\d$/.test(status));
    if (!failures.some(([status]) => status === "401")) {
      problems.push(`${route} does not declare its 401 answer (not signed in or bad token)`);
    }
    for (const [status, response] of failures) {
      if (response.content?.["application/json"]?.schema?.$ref !== ERROR_REF) {
        problems.push(
          `${route} answers ${status} without the error shape (err(description) in api_common.ts)`,
        );
      }
    }
    if (op.requestBody) {
      const media = op.requestBody.content?.["application/json"];
      if (!media?.schema) problems.push(`${route} has a request body without a JSON schema`);
      if (
        method === "POST" && responses.some(([status]) => status === "201") && media?.example === undefined
      ) {
        problems.push(
          `${route} creates something but its request body has no example (jsonBody(schema, example))`,
        );
      }
    }
  }
  return problems;
}

Deno.test("every /api/v1 route of the app is in the OpenAPI document, complete", async () => {
  using app = await newApp();
  const routes = apiV1Routes(app);
  assert.ok(routes.length > 80, `expected the app's whole API, found ${routes.length} routes`);
  for (
    const expected of [
      "POST /api/v1/runs/:runId/retry",
      "PATCH /api/v1/policies/:policyId",
      "GET /api/v1/self-backup/settings",
      "PUT /api/v1/self-backup/settings",
      "POST /api/v1/self-backup/backups",
      "POST /api/v1/self-backup/restart-worker",
      "GET /api/v1/dashboard/heatmap",
    ]
  ) assert.ok(routes.some((r) => `${r.method} ${r.path}` === expected), `${expected} is found`);
  assert.deepEqual(openApiProblems(app), []);
});

Deno.test("the check names a route missing from the document and one without an operationId", async () => {
  using app = await newApp();
  app.get("/api/v1/undocumented-thing", publicAccess(), (c) => c.json({ ok: true }));
  app.openapi(
    createRoute({
      method: "get",
      path: "/api/v1/anonymous-operation/{thingId}",
      summary: "A route declared without an operationId",
      tags: ["Test"],
      middleware: [publicAccess()] as const,
      request: { params: z.object({ thingId: z.string() }) },
      responses: { 200: { description: "ok", content: { "application/json": { schema: z.object({}) } } } },
    }),
    (c) => c.json({}, 200),
  );
  const problems = openApiProblems(app);
  assert.ok(
    problems.some((p) => p.startsWith("GET /api/v1/undocumented-thing is not in the OpenAPI document")),
    problems.join("\n"),
  );
  assert.ok(
    problems.includes(
      "GET /api/v1/anonymous-operation/:thingId has no operationId (a camelCase name such as listPolicies)",
    ),
    problems.join("\n"),
  );
  assert.ok(
    problems.includes(
      "GET /api/v1/anonymous-operation/:thingId does not declare its 401 answer (not signed in or bad token)",
    ),
  );
  // The real routes are still complete: only the two added ones are named.
  assert.ok(problems.every((p) => p.includes("undocumented-thing") || p.includes("anonymous-operation")));
});

Deno.test("operationIds are unique across the whole document (engine protocol included)", async () => {
  using app = await newApp();
  const doc = documentOf(app);
  const ids = Object.values(doc.paths).flatMap((item) =>
    Object.values(item).map((op) => op.operationId).filter((id) => id !== undefined)
  );
  assert.equal(new Set(ids).size, ids.length, "duplicate operationIds");
});

Deno.test("/api/docs renders every /api/v1 operation with its operationId, and the create examples", async () => {
  using app = await newApp();
  const res = await app.request("http://localhost:8000/api/docs");
  assert.equal(res.status, 200);
  const html = await res.text();
  const doc = documentOf(app);
  for (const [path, item] of Object.entries(doc.paths)) {
    if (!path.startsWith("/api/v1/")) continue;
    for (const op of Object.values(item)) {
      assert.ok(html.includes(`id="op-${op.operationId}"`), `${op.operationId} is rendered`);
    }
  }
  // The example of a create body is shown (JSON-escaped in the HTML).
  assert.ok(html.includes("Linux servers nightly"), "the policy create example is shown");
  // And /api/openapi.json serves the same document.
  const json = await (await app.request("http://localhost:8000/api/openapi.json")).json();
  assert.equal(json.paths["/api/v1/policies/{policyId}"].patch.operationId, "updatePolicy");
  assert.deepEqual(
    json.paths["/api/v1/policies"].post.requestBody.content["application/json"].example.name,
    "Linux servers nightly",
  );
});
