/**
 * The heartbeat's lighter request path (docs/performance.md, issue 20): the request id set before the
 * response is built, the body limit checked from a declared length, the body text handed to the validator
 * by the signature check, the signature headers validated by the signature check only.
 */
import assert from "node:assert/strict";
import { MAX_BODY_BYTES } from "../../app.ts";
import { getEngine } from "../../domain/engines.ts";
import { createTenant, dumpKv, engineClient, engineMetrics, testApp, TestClock } from "../helpers.ts";

const BASE = "http://localhost:8000";
const HEARTBEAT = "/api/bes/v1/heartbeat";

async function fixture(kv: Deno.Kv) {
  const clock = new TestClock();
  const t = testApp(kv, clock);
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const client = engineClient(t.app, clock);
  const { identity, response } = await client.registerBes(tenant.secrets[0], {
    name: "bes-1",
    hostname: "bes1.acme.example",
    ipAddress: "10.0.0.10",
  });
  assert.equal(response.status, 201);
  return { ...t, clock, client, identity };
}

/** A heartbeat request carrying `body`, signed over `body`. */
async function signed(
  f: Awaited<ReturnType<typeof fixture>>,
  body: string,
  headers: Record<string, string> = {},
) {
  const signature = await f.client.signedHeaders(f.identity, "POST", HEARTBEAT, body, f.clock.now());
  return await f.app.request(`${BASE}${HEARTBEAT}`, {
    method: "POST",
    headers: { ...signature, "content-type": "application/json", ...headers },
    body,
  });
}

Deno.test("heartbeat answers carry X-Request-Id: the client's when it sends one, a fresh one otherwise, on 200 and on 401", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const body = JSON.stringify({ version: "1.0.0", metrics: engineMetrics() });
  const ok = await signed(f, body, { "x-request-id": "hb-42" });
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get("x-request-id"), "hb-42");
  assert.equal((await ok.json()).status, "online");
  const fresh = await signed(f, JSON.stringify({ version: "1.0.0", metrics: engineMetrics() }));
  assert.equal(fresh.status, 200);
  assert.match(fresh.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
  await fresh.body?.cancel();
  // Replayed (same nonce): 401, still with the request id, error shape intact.
  const headers = await f.client.signedHeaders(f.identity, "POST", HEARTBEAT, body, f.clock.now());
  const first = await f.app.request(`${BASE}${HEARTBEAT}`, {
    method: "POST",
    headers: { ...headers, "content-type": "application/json" },
    body,
  });
  assert.equal(first.status, 200);
  await first.body?.cancel();
  const replay = await f.app.request(`${BASE}${HEARTBEAT}`, {
    method: "POST",
    headers: { ...headers, "content-type": "application/json", "x-request-id": "replay-1" },
    body,
  });
  assert.equal(replay.status, 401);
  assert.equal(replay.headers.get("x-request-id"), "replay-1");
  assert.equal((await replay.json()).error.code, "unauthorized");
});

Deno.test("a signed heartbeat whose body is not JSON answers 400, one with an invalid field 422 naming it; nothing is written", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const before = await dumpKv(kv);
  const malformed = await signed(f, "{not json");
  assert.equal(malformed.status, 400);
  await malformed.body?.cancel();
  const invalid = await signed(f, JSON.stringify({ version: 7, metrics: engineMetrics() }));
  assert.equal(invalid.status, 422);
  const error = (await invalid.json()).error;
  assert.equal(error.code, "invalid");
  assert.ok(error.fields.version, "the field is named");
  assert.deepEqual(await dumpKv(kv), before);
  assert.equal((await getEngine(kv, f.identity.id))!.status, "pending");
});

Deno.test("a heartbeat body over 64 KiB answers 413, with a declared length and streamed without one; nothing is written", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const before = await dumpKv(kv);
  const big = JSON.stringify({ version: "1.0.0", metrics: engineMetrics(), pad: "x".repeat(MAX_BODY_BYTES) });
  const declared = await signed(f, big, { "content-length": String(new TextEncoder().encode(big).length) });
  assert.equal(declared.status, 413);
  assert.equal((await declared.json()).error.code, "payload_too_large");
  // No Content-Length (a stream): hono's bodyLimit counts the bytes as they come.
  const headers = await f.client.signedHeaders(f.identity, "POST", HEARTBEAT, big, f.clock.now());
  const bytes = new TextEncoder().encode(big);
  const streamed = await f.app.request(`${BASE}${HEARTBEAT}`, {
    method: "POST",
    headers: { ...headers, "content-type": "application/json" },
    body: new ReadableStream({
      start(controller) {
        for (let i = 0; i < bytes.length; i += 8192) controller.enqueue(bytes.slice(i, i + 8192));
        controller.close();
      },
    }),
    // @ts-ignore: Deno's RequestInit takes duplex for a streamed body.
    duplex: "half",
  });
  assert.equal(streamed.status, 413);
  assert.equal((await streamed.json()).error.code, "payload_too_large");
  assert.deepEqual(await dumpKv(kv), before);
  // At the limit's right side a declared length is accepted.
  const small = JSON.stringify({ version: "1.0.0", metrics: engineMetrics() });
  const ok = await signed(f, small, { "content-length": String(new TextEncoder().encode(small).length) });
  assert.equal(ok.status, 200);
  await ok.body?.cancel();
});
