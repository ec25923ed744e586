/** The JSON API: error shape and statuses, body limit, OpenAPI document, health probes. */
import assert from "node:assert/strict";
import { MAX_BODY_BYTES } from "../../app.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import type { Permission, Role } from "../../domain/types.ts";
import { addUser, createTenant, dumpKv, testApp } from "../helpers.ts";

async function fixture(
  kv: Deno.Kv,
  role: Role = "admin",
  permissions: Permission[] = ["admin", "backup.view"],
) {
  const t = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops"], t.clock.now());
  const user = await addUser(kv, tenant, `${role}@acme.example`, role, "all", t.clock.now());
  const { secret } = await createApiToken(
    kv,
    userActor(user),
    { name: "ci", permissions, expiresInDays: 90 },
    t.clock.now(),
  );
  const api = (path: string, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    headers.set("authorization", `Bearer ${secret}`);
    return t.app.request(`http://localhost:8000${path}`, { ...init, headers });
  };
  return { ...t, tenant, user, secret, api };
}

/** Asserts status, JSON content type and the `{error:{code,message[,fields]}}` shape; returns the error. */
async function expectError(res: Response, status: number, code: string) {
  assert.equal(res.status, status);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = await res.json();
  assert.deepEqual(Object.keys(body), ["error"]);
  const keys = Object.keys(body.error).sort();
  assert.ok(
    JSON.stringify(keys) === '["code","message"]' || JSON.stringify(keys) === '["code","fields","message"]',
    `unexpected error keys ${keys}`,
  );
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.message, "string");
  assert.ok(body.error.message.length > 0);
  return body.error as { code: string; message: string; fields?: Record<string, string> };
}

const json = (body: string) => ({
  method: "POST",
  headers: { "content-type": "application/json" },
  body,
});

Deno.test("POST /api/v1/orgs with malformed JSON answers 400 in the error shape", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { api, logs } = await fixture(kv);
  const before = await dumpKv(kv);
  const error = await expectError(await api("/api/v1/orgs", json('{"name": "Ops 2",')), 400, "malformed");
  assert.equal(error.fields, undefined);
  assert.equal(
    logs.filter((l) => JSON.parse(l).level === "error").length,
    0,
    "a client error is not logged as ours",
  );
  // Only the token's lastUsedAt may have been written.
  const changed = (await dumpKv(kv)).filter((e) => e.key[0] !== "api_tokens");
  assert.deepEqual(changed, before.filter((e) => e.key[0] !== "api_tokens"));
});

Deno.test("POST /api/v1/orgs with a schema-invalid body answers 422 with fields", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { api } = await fixture(kv);
  const error = await expectError(await api("/api/v1/orgs", json('{"name": ""}')), 422, "invalid");
  assert.deepEqual(Object.keys(error.fields ?? {}), ["name"]);
  assert.match(error.fields!.name, /required/i);

  const wrongType = await expectError(await api("/api/v1/orgs", json('{"name": 42}')), 422, "invalid");
  assert.ok(wrongType.fields?.name);
});

Deno.test("POST /api/v1/users with several bad fields names each of them", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { api } = await fixture(kv);
  const error = await expectError(
    await api(
      "/api/v1/users",
      json(JSON.stringify({ email: "nope", name: "N", role: "king", orgScope: "all", password: "short" })),
    ),
    422,
    "invalid",
  );
  assert.deepEqual(Object.keys(error.fields ?? {}).sort(), ["email", "password", "role"]);
});

Deno.test("POST /api/v1/orgs with a taken name answers 422 with the name field", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { api } = await fixture(kv);
  const error = await expectError(await api("/api/v1/orgs", json('{"name": "ops"}')), 422, "invalid");
  assert.ok(error.fields?.name);
});

Deno.test("POST /api/v1/orgs with a body over 64 KiB answers 413", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { api } = await fixture(kv);
  const big = JSON.stringify({ name: "x".repeat(MAX_BODY_BYTES) });
  const declared = await api("/api/v1/orgs", {
    method: "POST",
    headers: { "content-type": "application/json", "content-length": String(big.length) },
    body: big,
  });
  await expectError(declared, 413, "payload_too_large");

  const streamed = await api("/api/v1/orgs", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: new Blob([big]).stream(),
  });
  await expectError(streamed, 413, "payload_too_large");
});

Deno.test("a form body over 64 KiB is refused with 413 before CSRF parsing", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app } = await fixture(kv);
  const body = "name=" + "x".repeat(MAX_BODY_BYTES);
  const res = await app.request("http://localhost:8000/admin/orgs/new", {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded", "content-length": String(body.length) },
    body,
  });
  assert.equal(res.status, 413);
  await res.body?.cancel();
});

Deno.test("an unknown /api/v1 route answers 404 JSON", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, api } = await fixture(kv);
  await expectError(await app.request("http://localhost:8000/api/v1/nope"), 404, "not_found");
  await expectError(await api("/api/v1/orgs/x/y/z", { method: "DELETE" }), 404, "not_found");
});

Deno.test("GET /api/v1/orgs/:id for an unknown id answers 404 JSON", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { api } = await fixture(kv);
  await expectError(await api("/api/v1/orgs/01ZZZZZZZZZZZZZZZZZZZZZZZZ"), 404, "not_found");
});

Deno.test("the API answers 401 JSON without credentials and for a malformed bearer token", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app } = await fixture(kv);
  await expectError(await app.request("http://localhost:8000/api/v1/orgs"), 401, "unauthorized");
  await expectError(
    await app.request("http://localhost:8000/api/v1/orgs", { headers: { authorization: "Bearer cdt_nope" } }),
    401,
    "unauthorized",
  );
});

Deno.test("a viewer's token answers 403 JSON on an admin route", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { api } = await fixture(kv, "viewer", ["backup.view"]);
  await expectError(await api("/api/v1/users"), 403, "forbidden");
  await expectError(await api("/api/v1/orgs", json('{"name":"New"}')), 403, "forbidden");
});

Deno.test("GET /api/openapi.json lists /api/v1/users and /api/v1/orgs", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app } = testApp(kv);
  const res = await app.request("http://localhost:8000/api/openapi.json");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const doc = await res.json();
  assert.equal(doc.openapi, "3.1.0");
  assert.ok(doc.paths["/api/v1/users"]?.get, "GET /api/v1/users");
  assert.ok(doc.paths["/api/v1/users"]?.post, "POST /api/v1/users");
  assert.ok(doc.paths["/api/v1/orgs"]?.get, "GET /api/v1/orgs");
  assert.ok(doc.paths["/api/v1/orgs"]?.post, "POST /api/v1/orgs");
  assert.ok(doc.paths["/api/v1/orgs/{orgId}"]?.patch, "PATCH /api/v1/orgs/{orgId}");
  assert.deepEqual(doc.components.securitySchemes.bearer, { type: "http", scheme: "bearer" });
});

Deno.test("GET /healthz answers 200 ok", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app } = testApp(kv);
  const res = await app.request("http://localhost:8000/healthz");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  assert.deepEqual(await res.json(), { status: "ok" });
});

Deno.test("GET /readyz answers 200 ready with the KV latency", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app } = testApp(kv);
  const res = await app.request("http://localhost:8000/readyz");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = await res.json();
  assert.equal(body.status, "ready");
  assert.equal(typeof body.kvLatencyMs, "number");
});

Deno.test("GET /readyz answers 503 when KV is unreachable", async () => {
  const kv = await Deno.openKv(":memory:");
  const { app } = testApp(kv);
  kv.close();
  const res = await app.request("http://localhost:8000/readyz");
  assert.equal(res.status, 503);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = await res.json();
  assert.equal(body.status, "unavailable");
  assert.equal(body.error.code, "kv_unreachable");
});

Deno.test("GET /api/v1/users pages with a cursor", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { api, tenant, clock } = await fixture(kv);
  await addUser(kv, tenant, "b@acme.example", "viewer", "all", clock.now());
  await addUser(kv, tenant, "c@acme.example", "viewer", "all", clock.now());
  const first = await api("/api/v1/users?limit=2");
  assert.equal(first.status, 200);
  assert.match(first.headers.get("content-type") ?? "", /^application\/json/);
  const page1 = await first.json();
  assert.deepEqual(page1.values.map((u: { email: string }) => u.email), [
    "admin@acme.example",
    "b@acme.example",
  ]);
  assert.equal(page1.cursor, "2");
  const page2 = await (await api(`/api/v1/users?limit=2&offset=${page1.cursor}`)).json();
  assert.deepEqual(page2.values.map((u: { email: string }) => u.email), ["c@acme.example"]);
  assert.equal(page2.cursor, "");
  await expectError(await api("/api/v1/users?limit=0"), 422, "invalid");
});
