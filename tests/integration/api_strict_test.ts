/**
 * Bad input (issue 18): every `/api/v1` body and query is strict — a field it does not declare is a 422 naming
 * that field, and nothing changes — so a typo in automation is an error, not a silent no-op.
 *
 * The operations are walked from the app (its OpenAPI document, which the completeness test keeps equal to
 * `app.routes`), not from a hand list, and none is exempt: each declared body is sent as its documented example
 * (which must itself be valid) plus one unknown field; a route without a body (other than GET) is sent a body
 * with one field; every operation gets its required query parameters plus one unknown parameter. Path
 * parameters are real objects of the world where one exists, so a route that ignored the unknown field would
 * act on it — and the database is compared before and after each refusal.
 */
import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import type { z } from "@hono/zod-openapi";
import { openApiDocument } from "../../app.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { assignHost } from "../../domain/assignments.ts";
import { userActor } from "../../domain/auth.ts";
import { createHook } from "../../domain/hooks.ts";
import { createChannel } from "../../domain/notification_channels.ts";
import { createRule } from "../../domain/notification_rules.ts";
import { createPlatform } from "../../domain/platforms.ts";
import { createReplica } from "../../domain/replicas.ts";
import { createScript } from "../../domain/scripts.ts";
import { PERMISSIONS } from "../../domain/types.ts";
import { strictInput } from "../../routes/api_strict.ts";
import { Browser, signInAs } from "../helpers.ts";
import { apiWorld, masterKey, system } from "./api_world.ts";

const UNKNOWN = "zzTypoField";
/** A well-formed id of nothing, for path parameters no object of the world fills. */
const NOBODY = "01JC9Z8X7W6V5T4S3R2Q1P0N9M";

// deno-lint-ignore no-explicit-any
type Json = any;

interface Operation {
  method: string;
  /** The OpenAPI path (`/api/v1/policies/{policyId}`). */
  path: string;
  operationId: string;
  parameters: Json[];
  /** The JSON body's schema in the document and its example, when the operation takes a body. */
  body?: { schema: Json; example: unknown };
}

/** Every `/api/v1` operation of the document. */
function apiOperations(doc: Json): Operation[] {
  const out: Operation[] = [];
  for (const [path, item] of Object.entries<Json>(doc.paths)) {
    if (!path.startsWith("/api/v1/")) continue;
    for (const [method, op] of Object.entries<Json>(item)) {
      const media = op.requestBody?.content?.["application/json"];
      out.push({
        method: method.toUpperCase(),
        path,
        operationId: op.operationId,
        parameters: op.parameters ?? [],
        body: media ? { schema: media.schema, example: media.example } : undefined,
      });
    }
  }
  return out;
}

/** A value a required query parameter accepts, read from its schema. */
function queryValue(schema: Json): string {
  if (schema.enum) return String(schema.enum[0]);
  if (schema.default !== undefined) return String(schema.default);
  if (schema.type === "integer" || schema.type === "number") return String(schema.minimum ?? 1);
  return "x";
}

Deno.test("every /api/v1 operation refuses an unknown body or query field: 422 naming it, nothing changed", async () => {
  using world = await apiWorld();
  const { kv, app, clock, opsScope, policy, engine, target } = world;
  const now = clock.now();
  const admin = world.users.admin;
  const { secret } = await createApiToken(kv, userActor(admin), {
    name: "every permission",
    permissions: [...PERMISSIONS],
    expiresInDays: 1,
  }, now);

  // The objects the operations act on, by path parameter name.
  const host = await world.enroll("strict-01");
  const { assignment } = await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, now);
  const script = await createScript(kv, system, {
    name: "strict script",
    interpreter: "bash",
    body: "echo ok",
    orgId: opsScope.orgId,
    accountId: opsScope.accountId,
  }, now);
  const hook = await createHook(kv, system, {
    policyId: policy.id,
    type: "pre_backup",
    scriptId: script.id,
  }, now);
  const second = await world.addTarget("strict second");
  const replica = await createReplica(kv, system, { policyId: policy.id, targetId: second.id }, now);
  const { channel } = await createChannel(kv, system, {
    type: "webhook",
    name: "strict hook",
    url: "http://127.0.0.1:9/hook",
    orgId: opsScope.orgId,
    accountId: opsScope.accountId,
  }, { now, masterKey });
  const rule = await createRule(kv, system, {
    accountId: opsScope.accountId,
    name: "strict rule",
    minSeverity: "warning",
    orgIds: [opsScope.orgId],
    events: ["opened"],
    channelIds: [channel.id],
  }, now);
  const platform = await createPlatform(kv, system, {
    type: "veeam",
    name: "strict veeam",
    orgId: opsScope.orgId,
    endpointUrl: "http://127.0.0.1:9",
    username: "svc",
    password: "a platform password",
  }, { now, masterKey });
  const ids: Record<string, string> = {
    policyId: policy.id,
    engineId: engine.id,
    targetId: target.id,
    hostId: host.id,
    assignmentId: assignment.id,
    hookId: hook.id,
    scriptId: script.id,
    replicaId: replica.id,
    channelId: channel.id,
    ruleId: rule.id,
    platformId: platform.id,
    userId: world.users.operator.id,
    orgId: world.ops.id,
    jobId: policy.id,
  };

  const doc = openApiDocument(app) as Json;
  const operations = apiOperations(doc);
  assert.ok(operations.length > 80, `expected the whole API, found ${operations.length} operations`);
  // The zod schema each route validates its body with (the route declarations the document came from).
  const bodySchemas = new Map<string, z.ZodType>();
  for (const definition of app.openAPIRegistry.definitions) {
    if (definition.type !== "route") continue;
    const { route } = definition;
    const schema = (route.request?.body?.content?.["application/json"] as { schema?: z.ZodType } | undefined)
      ?.schema;
    if (schema) bodySchemas.set(`${route.method.toUpperCase()} ${route.path}`, schema);
  }

  const problems: string[] = [];
  let declaredBodies = 0, declaredQueries = 0;
  for (const op of operations) {
    const name = `${op.method} ${op.path} (${op.operationId})`;
    const path = op.path.replace(/\{(\w+)\}/g, (_, param: string) => ids[param] ?? NOBODY);
    const required = new URLSearchParams();
    for (const p of op.parameters) {
      if (p.in === "query" && p.required) required.set(p.name, queryValue(p.schema));
    }

    const attempts: Array<{ what: string; url: string; body?: unknown }> = [];
    const query = required.size ? `?${required}` : "";
    if (op.body) {
      if (op.body.example === undefined) {
        problems.push(
          `${name}: its body has no example (jsonBody(schema, example)), so it cannot be checked`,
        );
        continue;
      }
      const schema = bodySchemas.get(`${op.method} ${op.path}`);
      const parsed = schema?.safeParse(op.body.example);
      if (!parsed?.success) {
        problems.push(`${name}: its example is not a valid body: ${JSON.stringify(parsed?.error?.issues)}`);
        continue;
      }
      attempts.push({
        what: "body",
        url: path + query,
        body: { ...(op.body.example as object), [UNKNOWN]: 1 },
      });
      declaredBodies++;
    } else if (op.method !== "GET") {
      // A route that takes no body: a body with a field is a mistake, not something to ignore.
      attempts.push({ what: "body", url: path + query, body: { [UNKNOWN]: 1 } });
    }
    // Every operation, with or without query parameters of its own: a body it needs goes along unchanged
    // (its example), so only the query is wrong.
    const withUnknown = new URLSearchParams(required);
    withUnknown.set(UNKNOWN, "1");
    attempts.push({ what: "query", url: `${path}?${withUnknown}`, body: op.body?.example });
    if (op.parameters.some((p) => p.in === "query")) declaredQueries++;

    for (const attempt of attempts) {
      const before = await world.state();
      const res = await app.request(attempt.url, {
        method: op.method,
        headers: {
          authorization: `Bearer ${secret}`,
          ...(attempt.body === undefined ? {} : { "content-type": "application/json" }),
        },
        body: attempt.body === undefined ? undefined : JSON.stringify(attempt.body),
      });
      const answer = await res.json().catch(() => null);
      const fields = answer?.error?.fields ?? {};
      if (res.status !== 422 || fields[UNKNOWN] !== "Unknown field") {
        problems.push(
          `${name}: an unknown ${attempt.what} field answered ${res.status} ${
            JSON.stringify(answer).slice(0, 200)
          }`,
        );
      } else if (Object.keys(fields).length !== 1) {
        problems.push(
          `${name}: the ${attempt.what} was valid but for the unknown field, yet ${JSON.stringify(fields)}`,
        );
      }
      if (!isDeepStrictEqual(await world.state(), before)) {
        problems.push(`${name}: a refused ${attempt.what} changed the database`);
      }
    }
  }
  assert.deepEqual(problems, []);
  assert.ok(
    declaredBodies >= 35 && declaredQueries >= 20,
    `${declaredBodies} declared bodies and ${declaredQueries} declared queries checked`,
  );
});

Deno.test("an unknown field nested in a body is named with its path; an intersection refuses it too", async () => {
  using world = await apiWorld();
  const before = await world.state();
  // Storage bodies are an intersection (fields, type+config, thresholds): unknown keys of the whole are refused.
  const create = await world.api("admin", "POST", "/api/v1/storage", {
    name: "typo target",
    besId: world.engine.id,
    type: "local",
    config: { path: "/srv/typo", pathh: "/srv/other" },
    alertThreshold: 80,
    criticalThreshold: 95,
  });
  assert.equal(create.status, 422);
  assert.deepEqual(create.body.error.fields, { "config.pathh": "Unknown field" });
  const top = await world.api("admin", "POST", "/api/v1/storage", {
    name: "typo target",
    besId: world.engine.id,
    type: "local",
    config: { path: "/srv/typo" },
    alertTreshold: 80,
  });
  assert.equal(top.status, 422);
  assert.equal(top.body.error.fields.alertTreshold, "Unknown field");
  // A user's org scope is an array of ids; an object inside a discriminated union (a webhook channel).
  const channel = await world.api("admin", "POST", "/api/v1/notification-channels", {
    type: "webhook",
    name: "typo",
    url: "https://hooks.acme.example/x",
    orgId: null,
    enable: false,
  });
  assert.equal(channel.status, 422);
  assert.deepEqual(channel.body.error.fields, { enable: "Unknown field" });
  assert.deepEqual(await world.state(), before);
  // The same bodies without the typo are accepted (the strict schema is the form's schema, not a stricter one).
  const ok = await world.api("admin", "POST", "/api/v1/storage", {
    name: "typo target",
    besId: world.engine.id,
    type: "local",
    config: { path: "/srv/typo" },
    alertThreshold: 80,
    criticalThreshold: 95,
  });
  assert.equal(ok.status, 201, JSON.stringify(ok.body));
});

Deno.test("strictInput keeps the schema's rules and messages and leaves forms' schemas as they are", async () => {
  const { z } = await import("@hono/zod-openapi");
  const Inner = z.object({ a: z.string().min(2, "too short") });
  const Form = z.object({ name: z.string(), inner: Inner.optional(), list: z.array(Inner).default([]) })
    .refine((v) => v.name !== "bad", { path: ["name"], message: "is bad" });
  const Strict = strictInput(Form);
  assert.equal(strictInput(Form), Strict, "derived once per schema");
  // The form's schema still drops unknown fields (a form carries _csrf and buttons).
  assert.deepEqual(Form.parse({ name: "x", extra: 1 }), { name: "x", list: [] });
  // The strict one refuses them at any depth, naming each, and keeps the rules (and refinements).
  const issues =
    Strict.safeParse({ name: "x", extra: 1, inner: { a: "ok", b: 2 }, list: [{ a: "yz", c: 3 }] })
      .error!.issues;
  const unknown = issues.filter((i) => i.code === "unrecognized_keys").map((i) => [i.path.join("."), i.keys]);
  assert.deepEqual(unknown.sort(), [["", ["extra"]], ["inner", ["b"]], ["list.0", ["c"]]]);
  assert.equal(Strict.safeParse({ name: "x", inner: { a: "y" } }).error!.issues[0].message, "too short");
  assert.equal(Strict.safeParse({ name: "bad" }).error!.issues[0].message, "is bad");
  assert.deepEqual(Strict.parse({ name: "x" }), { name: "x", list: [] });
  // A schema that asked for extra keys keeps them; leaves come back as they are.
  const Loose = z.looseObject({ a: z.string() });
  assert.deepEqual(strictInput(Loose).parse({ a: "x", b: 1 }), { a: "x", b: 1 });
  const Leaf = z.string().max(3);
  assert.equal(strictInput(Leaf), Leaf);
});

Deno.test("list filters of engines, storage and alerts refuse a bad value (422 naming it); their pages stay lenient", async () => {
  using world = await apiWorld();
  for (
    const [path, field] of [
      ["/api/v1/engines?status=onlnie", "status"],
      ["/api/v1/engines?sort=fullest", "sort"],
      ["/api/v1/engines?limit=0", "limit"],
      ["/api/v1/storage?type=nfs4", "type"],
      ["/api/v1/storage?health=ok", "health"],
      ["/api/v1/storage?offset=-1", "offset"],
      ["/api/v1/alerts?severity=high", "severity"],
      ["/api/v1/alerts?status=closed", "status"],
    ]
  ) {
    const res = await world.api("admin", "GET", path);
    assert.equal(res.status, 422, path);
    assert.deepEqual(Object.keys(res.body.error.fields), [field], path);
  }
  // Good values filter (and a blank one means "any"), as on the pages.
  const online = await world.api("admin", "GET", "/api/v1/engines?status=online&sort=-name&limit=5");
  assert.equal(online.status, 200);
  assert.deepEqual(online.body.values.map((e: { id: string }) => e.id), [world.engine.id]);
  const none = await world.api("admin", "GET", "/api/v1/engines?status=offline");
  assert.deepEqual(none.body.values, []);
  const local = await world.api("admin", "GET", "/api/v1/storage?type=local&health=");
  assert.deepEqual(local.body.values.map((t: { id: string }) => t.id), [world.target.id]);
  const alerts = await world.api("admin", "GET", "/api/v1/alerts?status=open&severity=critical");
  assert.equal(alerts.status, 200);
  assert.deepEqual(Object.keys(alerts.body).sort(), ["cursor", "values"]);
  // The pages read the same fields leniently: a bad value in a link falls back to its default.
  const browser = new Browser(world.app);
  await signInAs(browser, world.kv, world.users.admin, world.clock.now());
  for (
    const path of [
      "/backup/engines?status=onlnie",
      "/backup/storage?type=nfs4",
      "/backup/alerts?severity=high",
    ]
  ) {
    assert.equal((await browser.request(path)).status, 200, path);
  }
});
