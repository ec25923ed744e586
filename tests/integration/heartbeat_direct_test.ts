/**
 * The heartbeats' direct path (routes/heartbeat_direct.ts): a signed heartbeat with a declared length is
 * answered before hono's chain, with the declared route's checks and answers; a refusal found before the
 * write is handed to the declared route; the principal's entry it remembers (domain/heartbeat_entries.ts)
 * never lets a stale one be written over a newer one, nor a deleted principal back.
 */
import assert from "node:assert/strict";
import {
  applyHeartbeat,
  deleteEngine,
  getEngine,
  liveEngineKey,
  markEngineDeleting,
  updateEngine,
} from "../../domain/engines.ts";
import {
  forgetHeartbeat,
  heartbeatEntry,
  MAX_REMEMBERED,
  rememberedCount,
  rememberHeartbeat,
} from "../../domain/heartbeat_entries.ts";
import { applyHostHeartbeat, getHost } from "../../domain/hosts.ts";
import { NotFoundError } from "../../domain/errors.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { systemActor } from "../../domain/rbac.ts";
import type { EngineIdentity } from "../../tools/engine_client.ts";
import { createApp } from "../../app.ts";
import { testConfig } from "../../domain/config.ts";
import { createLogger } from "../../domain/log.ts";
import { createMetrics } from "../../routes/metrics.ts";
import { createTenant, dumpKv, engineClient, engineMetrics, TestClock } from "../helpers.ts";

const BASE = "http://localhost:8000";

async function fixture(kv: Deno.Kv) {
  const clock = new TestClock();
  const logs: string[] = [];
  const metrics = createMetrics();
  const app = createApp({
    kv,
    config: testConfig(),
    clock: clock.now,
    logger: createLogger("debug", (line) => logs.push(line)),
    metrics,
  });
  const t = { app, logs, metrics };
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const client = engineClient(t.app, clock);
  const bes = await client.registerBes(tenant.secrets[0], {
    name: "bes-1",
    hostname: "bes1.acme.example",
    ipAddress: "10.0.0.10",
  });
  assert.equal(bes.response.status, 201);
  const agent = await client.enrollAgent(tenant.secrets[0], {
    hostname: "web1.acme.example",
    ipAddress: "10.1.0.5",
  });
  assert.equal(agent.response.status, 201);
  return { ...t, clock, client, tenant, bes: bes.identity, agent: agent.identity };
}
type Fixture = Awaited<ReturnType<typeof fixture>>;

/**
 * A signed heartbeat of `identity`. `direct` (default): with a Content-Length, as over HTTP, so it takes the
 * direct path; otherwise without one (or with another content type), so it goes through the declared route.
 */
async function heartbeat(
  f: Fixture,
  identity: EngineIdentity,
  options: { body?: string; direct?: boolean; headers?: Record<string, string>; signedBody?: string } = {},
) {
  const path = `/api/${identity.kind}/v1/heartbeat`;
  const body = options.body ?? JSON.stringify({ version: "1.0.0", metrics: engineMetrics() });
  const signature = await f.client.signedHeaders(
    identity,
    "POST",
    path,
    options.signedBody ?? body,
    f.clock.now(),
  );
  const length: Record<string, string> = options.direct === false
    ? {}
    : { "content-length": String(new TextEncoder().encode(body).length) };
  const headers = { ...signature, "content-type": "application/json", ...length, ...options.headers };
  return {
    nonce: signature["x-cadres-nonce"],
    send: async (): Promise<Response> =>
      await f.app.request(`${BASE}${path}`, { method: "POST", headers, body }),
  };
}

const nonceUsed = async (kv: Deno.Kv, identity: EngineIdentity, nonce: string) =>
  (await kv.get(["nonces", `${identity.kind}:${identity.id}`, nonce])).versionstamp !== null;

Deno.test("the direct path answers a BES and an agent heartbeat as the declared route does, and remembers the entries it wrote", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  assert.equal(rememberedCount(kv), 0);
  const written: Record<string, string> = {};
  for (const identity of [f.bes, f.agent]) {
    const declared = await (await heartbeat(f, identity, { direct: false })).send();
    assert.equal(rememberedCount(kv), identity === f.bes ? 0 : 1, "the declared route remembers nothing");
    f.clock.advance(1000);
    const direct = await (await heartbeat(f, identity, { headers: { "x-request-id": "hb-direct" } })).send();
    assert.equal(declared.status, 200);
    assert.equal(direct.status, 200);
    assert.equal(direct.headers.get("x-request-id"), "hb-direct");
    assert.equal(direct.headers.get("content-type"), declared.headers.get("content-type"));
    const [a, b] = [await declared.json(), await direct.json()];
    assert.deepEqual(Object.keys(b), Object.keys(a));
    assert.equal(b.status, "online");
    assert.equal(b.pendingJobs, a.pendingJobs);
    assert.equal(b.serverTime, f.clock.now().toISOString());
    written[identity.kind] = b.serverTime;
    if (identity === f.bes) assert.deepEqual(b.storageTargetIds, a.storageTargetIds);
  }
  assert.equal(rememberedCount(kv), 2, "the direct path remembered the engine's and the host's entries");
  assert.equal((await getEngine(kv, f.bes.id))!.lastHeartbeatAt, written.bes);
  assert.equal((await getHost(kv, f.agent.id))!.lastHeartbeatAt, written.agent);
  // Counted like any request, under the route pattern, with the request log line.
  const scrape = await f.metrics.registry.metrics();
  for (const kind of ["bes", "agent"]) {
    const line = scrape.split("\n").find((l) =>
      l.startsWith("cadres_http_requests_total{") && l.includes(`route="/api/${kind}/v1/heartbeat"`) &&
      l.includes('status="200"')
    );
    assert.ok(line, `${kind} heartbeats counted`);
    assert.equal(Number(line.split(" ").at(-1)), 2, "the declared and the direct answer are both counted");
  }
  assert.ok(
    f.logs.some((line) => line.includes('"requestId":"hb-direct"') && line.includes("/api/bes/v1/heartbeat")),
    "the direct path writes the request log line",
  );
});

Deno.test("refusals on the direct path get the declared route's answers and write nothing: unknown principal, bad signature, skew, malformed JSON, invalid field, replay", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  // Remembered first, so the refusals below meet a remembered entry.
  assert.equal((await (await heartbeat(f, f.bes)).send()).status, 200);
  f.clock.advance(1000);
  const before = await dumpKv(kv);
  const stranger = { ...f.bes, id: "01ARZ3NDEKTSV4RRFFQ69G5FAV" };
  const cases: Array<[string, Promise<Response>, number, RegExp]> = [
    ["unknown principal", (await heartbeat(f, stranger)).send(), 401, /Unknown or deleted principal/],
    [
      "bad signature",
      (await heartbeat(f, f.bes, { signedBody: JSON.stringify({ version: "2" }) })).send(),
      401,
      /Bad signature/,
    ],
    ["malformed JSON", (await heartbeat(f, f.bes, { body: "{not json" })).send(), 400, /not valid JSON/],
    [
      "invalid field",
      (await heartbeat(f, f.bes, { body: JSON.stringify({ version: 7, metrics: engineMetrics() }) })).send(),
      422,
      /invalid/,
    ],
    [
      "principal of the other kind",
      (await heartbeat(f, f.bes, { headers: { "x-cadres-principal": `agent:${f.bes.id}` } })).send(),
      401,
      /x-cadres-principal/,
    ],
  ];
  for (const [what, response, status, message] of cases) {
    const res = await response;
    assert.equal(res.status, status, what);
    const error = (await res.json()).error;
    assert.match(`${error.code} ${error.message}`, message, what);
  }
  assert.deepEqual(await dumpKv(kv), before, "nothing written by a refused heartbeat");
  // Skew: signed 301 s before the server's clock.
  const late = await heartbeat(f, f.bes);
  f.clock.advance(301_000);
  const skewed = await late.send();
  assert.equal(skewed.status, 401);
  assert.match((await skewed.json()).error.message, /300 s/);
  assert.equal(await nonceUsed(kv, f.bes, late.nonce), false);
  // Replay: the first copy accepted, the second refused with the declared route's words.
  const once = await heartbeat(f, f.bes, { headers: { "x-request-id": "replay-me" } });
  assert.equal((await once.send()).status, 200);
  const snapshot = await dumpKv(kv);
  const replay = await once.send();
  assert.equal(replay.status, 401);
  assert.equal(replay.headers.get("x-request-id"), "replay-me");
  assert.deepEqual(await replay.json(), { error: { code: "unauthorized", message: "Replayed nonce" } });
  assert.deepEqual(await dumpKv(kv), snapshot);
});

Deno.test("a remembered entry that has gone stale never overwrites the newer one: an engine renamed and a host changed between two heartbeats keep the change", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  assert.equal((await (await heartbeat(f, f.bes)).send()).status, 200);
  assert.equal((await (await heartbeat(f, f.agent)).send()).status, 200);
  const remembered = await heartbeatEntry(kv, "bes", f.bes.id);
  assert.equal(remembered.fresh, false, "the engine's entry is remembered");
  // Changed behind the direct path's back (the console's rename; another instance's heartbeat of the host).
  await updateEngine(kv, systemActor("test"), f.bes.id, {
    name: "renamed",
    pxeEnabled: false,
    pxeNetwork: "",
  }, f.clock.now());
  f.clock.advance(10_000);
  await applyHostHeartbeat(kv, f.agent.id, { version: "9.9.9", metrics: engineMetrics() }, f.clock.now());
  f.clock.advance(10_000);
  const res = await (await heartbeat(f, f.bes)).send();
  assert.equal(res.status, 200);
  const engine = (await getEngine(kv, f.bes.id))!;
  assert.equal(engine.name, "renamed", "the rename survived the heartbeat");
  assert.equal(engine.lastHeartbeatAt, f.clock.now().toISOString());
  const agentRes = await (await heartbeat(f, f.agent)).send();
  assert.equal(agentRes.status, 200);
  const host = (await getHost(kv, f.agent.id))!;
  assert.equal(host.version, "1.0.0");
  assert.equal(host.lastHeartbeatAt, f.clock.now().toISOString());
  // What is remembered now is the current entry.
  const now = await heartbeatEntry(kv, "bes", f.bes.id);
  assert.equal(now.entry.versionstamp, (await kv.get(["engines", f.bes.id])).versionstamp);
});

Deno.test("an engine deleted, or being deleted, after its entry was remembered: its heartbeat answers 401, writes nothing, and the entry is forgotten", async () => {
  for (const how of ["deleted", "deleting"] as const) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    assert.equal((await (await heartbeat(f, f.bes)).send()).status, 200);
    assert.equal((await heartbeatEntry(kv, "bes", f.bes.id)).fresh, false);
    f.clock.advance(60_000);
    if (how === "deleted") await deleteEngine(kv, systemActor("test"), f.bes.id, f.clock.now());
    else await markEngineDeleting(kv, systemActor("test"), f.bes.id, f.clock.now());
    const before = await dumpKv(kv);
    const doomed = await heartbeat(f, f.bes);
    const res = await doomed.send();
    assert.equal(res.status, 401, how);
    assert.match((await res.json()).error.message, /Unknown or deleted principal/);
    assert.deepEqual(await dumpKv(kv), before, `${how}: nothing written`);
    assert.equal(await nonceUsed(kv, f.bes, doomed.nonce), false);
    assert.equal((await heartbeatEntry(kv, "bes", f.bes.id)).fresh, true, `${how}: forgotten`);
    if (how === "deleted") {
      assert.equal(await getEngine(kv, f.bes.id), null);
      assert.equal((await kv.get(liveEngineKey(f.bes.id))).versionstamp, null);
    } else assert.equal((await getEngine(kv, f.bes.id))!.status, "deleting");
  }
});

Deno.test("requests the direct path does not take go through the declared route: no length, another content type, a body over the limit", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const noLength = await (await heartbeat(f, f.bes, { direct: false })).send();
  assert.equal(noLength.status, 200);
  const charset = await (await heartbeat(f, f.bes, {
    headers: { "content-type": "application/json; charset=utf-8" },
  })).send();
  assert.equal(charset.status, 200);
  assert.equal(rememberedCount(kv), 0, "neither took the direct path");
  const over = await (await heartbeat(f, f.bes, { headers: { "content-length": String(64 * 1024 + 1) } }))
    .send();
  assert.equal(over.status, 413);
  assert.equal((await over.json()).error.code, "payload_too_large");
});

Deno.test("a heartbeat's write refuses an entry that does not carry the key its request was verified with (nothing written)", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const before = await dumpKv(kv);
  const other = generateKeyPair().publicKey;
  await assert.rejects(
    applyHeartbeat(kv, f.bes.id, { version: "1", metrics: engineMetrics() }, f.clock.now(), {
      signedWith: other,
    }),
    NotFoundError,
  );
  await assert.rejects(
    applyHostHeartbeat(kv, f.agent.id, { version: "1", metrics: engineMetrics() }, f.clock.now(), undefined, {
      signedWith: other,
    }),
    NotFoundError,
  );
  assert.deepEqual(await dumpKv(kv), before);
});

Deno.test("remembered entries are bounded: the oldest is dropped first, a forgotten one is read again", async () => {
  using kv = await Deno.openKv(":memory:");
  for (let i = 0; i < MAX_REMEMBERED + 5; i++) rememberHeartbeat(kv, "agent", `h${i}`, { i }, "00");
  assert.equal(rememberedCount(kv), MAX_REMEMBERED);
  assert.equal((await heartbeatEntry(kv, "agent", "h0")).fresh, true, "the oldest was dropped");
  assert.deepEqual((await heartbeatEntry(kv, "agent", `h${MAX_REMEMBERED + 4}`)).entry.value, {
    i: MAX_REMEMBERED + 4,
  });
  forgetHeartbeat(kv, "agent", `h${MAX_REMEMBERED + 4}`);
  const read = await heartbeatEntry(kv, "agent", `h${MAX_REMEMBERED + 4}`);
  assert.equal(read.fresh, true);
  assert.equal(read.entry.value, null);
});
