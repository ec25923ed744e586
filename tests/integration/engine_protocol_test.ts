/**
 * Engine protocol v1 over HTTP (DESIGN.md §5): BES registration with org/account secrets, rate limits,
 * signed heartbeats (keys, tampering, skew, replay, deleted principals), agent enrollment, OpenAPI.
 */
import assert from "node:assert/strict";
import { MAX_BODY_BYTES } from "../../app.ts";
import { deleteEngine, getEngine, markEngineDeleting } from "../../domain/engines.ts";
import { getHost } from "../../domain/hosts.ts";
import { systemActor } from "../../domain/rbac.ts";
import { generateKeyPair, type PrivateKey, signRequest } from "../../domain/signing.ts";
import { createTarget, getTarget } from "../../domain/storage.ts";
import { rotateAccountSecret } from "../../domain/tenancy.ts";
import { type EngineIdentity } from "../../tools/engine_client.ts";
import {
  auditEntries,
  createTenant,
  dumpKv,
  engineClient,
  engineMetrics,
  targetInput,
  testApp,
  TestClock,
} from "../helpers.ts";

const BASE = "http://localhost:8000";
const HEARTBEAT = "/api/bes/v1/heartbeat";
const ENROLL = "/api/agent/v1/enroll";
const DETAILS = { name: "bes-1", hostname: "bes1.acme.example", ipAddress: "10.0.0.10" };
const AGENT = { hostname: "web01.acme.example", ipAddress: "10.1.0.5" };

async function fixture(kv: Deno.Kv, clock = new TestClock()) {
  const t = testApp(kv, clock);
  const tenant = await createTenant(kv, "Acme", ["Ops", "Dev"], clock.now());
  const client = engineClient(t.app, clock);
  return { ...t, clock, tenant, client };
}

/** Asserts the protocol's error shape and status; returns the error. */
async function expectError(res: Response, status: number, code: string) {
  assert.equal(res.status, status);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = await res.json();
  assert.deepEqual(Object.keys(body), ["error"]);
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.message, "string");
  return body.error as { code: string; message: string; fields?: Record<string, string> };
}

/** The KV without the registration rate-limit counters (which failed attempts are allowed to write). */
async function dumpWithoutRateLimits(kv: Deno.Kv) {
  return (await dumpKv(kv)).filter((e) => e.key[0] !== "registration_failures");
}

async function engineCount(kv: Deno.Kv): Promise<number> {
  let n = 0;
  for await (const _ of kv.list({ prefix: ["engines"] })) n++;
  return n;
}

function registrationBody(publicKey: string, overrides: Record<string, unknown> = {}) {
  return JSON.stringify({
    name: "bes-raw",
    deploymentModel: "cloud_vm",
    publicKey,
    hostname: "bes-raw.acme.example",
    ipAddress: "10.0.0.11",
    port: 8443,
    version: "1.0.0",
    ...overrides,
  });
}

function enrollmentBody(publicKey: string, overrides: Record<string, unknown> = {}) {
  return JSON.stringify({
    hostname: "web-raw.acme.example",
    os: "Ubuntu 24.04",
    ipAddress: "10.1.0.11",
    publicKey,
    version: "1.0.0",
    relay: false,
    ...overrides,
  });
}

/**
 * POSTs a registration body as written: signed by `signer` (as a BES would sign it, over exactly
 * this body, path and the app's clock), or unsigned when `signer` is null.
 */
function rawRegister(
  f: { app: ReturnType<typeof testApp>["app"]; clock: TestClock },
  secret: string,
  body: string,
  signer: PrivateKey | null,
  options: { path?: string; ip?: string; headers?: Record<string, string> } = {},
) {
  const path = options.path ?? "/api/bes/v1/register";
  const signed = signer
    ? signRequest(
      signer,
      path.endsWith("/enroll") ? "agent:enroll" : "bes:register",
      "POST",
      path,
      new TextEncoder().encode(body),
      f.clock.now(),
    )
    : {};
  return f.app.request(`${BASE}${path}`, {
    method: "POST",
    headers: {
      ...signed,
      authorization: `Bearer ${secret}`,
      "content-type": "application/json",
      ...options.headers,
    },
    body,
  }, { remoteAddr: { hostname: options.ip ?? "198.51.100.7" } });
}

function heartbeatBody(overrides: Record<string, unknown> = {}) {
  return JSON.stringify({ version: "1.0.0", metrics: engineMetrics(), ...overrides });
}

/** Sends a request signed for (`signPath`, `signBody`, `signedAt`) but carrying (`path`, `body`). */
async function sendSigned(
  f: Awaited<ReturnType<typeof fixture>>,
  identity: EngineIdentity,
  options: {
    path?: string;
    signPath?: string;
    body?: string;
    signBody?: string;
    signedAt?: Date;
    headers?: Record<string, string>;
  } = {},
) {
  const path = options.path ?? HEARTBEAT;
  const body = options.body ?? heartbeatBody();
  const headers = await f.client.signedHeaders(
    identity,
    "POST",
    options.signPath ?? path,
    options.signBody ?? body,
    options.signedAt ?? f.clock.now(),
  );
  return await f.app.request(`${BASE}${path}`, {
    method: "POST",
    headers: { ...headers, "content-type": "application/json", ...options.headers },
    body,
  });
}

async function registered(f: Awaited<ReturnType<typeof fixture>>, secret = f.tenant.secrets[0]) {
  const { identity, response } = await f.client.registerBes(secret, DETAILS);
  assert.equal(response.status, 201);
  return identity;
}

// ---------------------------------------------------------------------------------------------------
// Registration

Deno.test("POST /api/bes/v1/register with an org secret answers 201 pending; the same key again answers 200 with the same id and refreshed details", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const [ops] = f.tenant.orgs;
  const keys = generateKeyPair();
  const first = await f.client.registerBes(f.tenant.secrets[0], DETAILS, keys);
  assert.equal(first.response.status, 201);
  assert.deepEqual(Object.keys(first.body).sort(), [
    "heartbeatIntervalSeconds",
    "id",
    "status",
    "tokenPublicKey",
  ]);
  assert.match(String(first.body.tokenPublicKey), /^[A-Za-z0-9_-]{43}$/, "base64url of a raw 32-byte key");
  assert.equal(first.body.status, "pending");
  assert.equal(first.body.heartbeatIntervalSeconds, 60);
  const engine = (await getEngine(kv, String(first.body.id)))!;
  assert.equal(engine.accountId, f.tenant.account.id);
  assert.equal(engine.orgId, ops.id);
  assert.equal(engine.status, "pending");
  assert.equal(engine.publicKey, keys.publicKey);
  assert.equal(engine.lastHeartbeatAt, null);
  assert.equal(engine.registeredAt, f.clock.now().toISOString());

  f.clock.advance(60_000);
  const again = await f.client.registerBes(f.tenant.secrets[0], {
    name: "bes-1-renamed",
    hostname: "bes1-new.acme.example",
    ipAddress: "10.0.0.99",
    port: 9443,
    version: "1.1.0",
  }, keys);
  assert.equal(again.response.status, 200);
  assert.equal(again.body.id, first.body.id);
  assert.equal(again.body.status, "pending");
  const refreshed = (await getEngine(kv, engine.id))!;
  assert.equal(refreshed.name, "bes-1-renamed");
  assert.equal(refreshed.hostname, "bes1-new.acme.example");
  assert.equal(refreshed.ipAddress, "10.0.0.99");
  assert.equal(refreshed.port, 9443);
  assert.equal(refreshed.version, "1.1.0");
  assert.equal(refreshed.registeredAt, engine.registeredAt);
  assert.equal(refreshed.updatedAt, f.clock.now().toISOString());
  assert.equal(await engineCount(kv), 1, "exactly one engine in KV");
  const actions = (await auditEntries(kv, f.tenant.account.id)).map((e) => e.action);
  assert.deepEqual(actions.filter((a) => a.startsWith("engine.")), ["engine.register", "engine.reregister"]);
});

// ---------------------------------------------------------------------------------------------------
// Proof of possession: registration and enrollment are signed by the key they register

/** Registration signature headers by `signer` over `body`, at `at`, with `principal`. */
function registrationSignature(
  signer: PrivateKey,
  body: string,
  options: { path?: string; at: Date; principal?: string },
): Record<string, string> {
  const path = options.path ?? "/api/bes/v1/register";
  const principal = options.principal ?? (path === ENROLL ? "agent:enroll" : "bes:register");
  return signRequest(signer, principal, "POST", path, new TextEncoder().encode(body), options.at);
}

/**
 * The ways a re-registration of `keys.publicKey` with `body` can fail to prove possession of the key:
 * unsigned, signed by another key, signed over another body, under a wrong principal, stale.
 */
function unprovenAttempts(
  f: Awaited<ReturnType<typeof fixture>>,
  path: string,
  keys: { privateKey: PrivateKey; publicKey: string },
  body: string,
  honestBody: string,
): Array<[string, () => Response | Promise<Response>]> {
  const secret = f.tenant.secrets[0];
  const at = (seconds: number) => new Date(f.clock.now().getTime() + seconds * 1000);
  const send = (signer: PrivateKey | null, headers?: Record<string, string>) => () =>
    rawRegister(f, secret, body, signer, { path, headers });
  return [
    ["unsigned", send(null)],
    ["signed by another key", send(generateKeyPair().privateKey)],
    [
      "signed over another body",
      send(null, registrationSignature(keys.privateKey, honestBody, { path, at: at(0) })),
    ],
    [
      "under an id principal",
      send(
        null,
        registrationSignature(keys.privateKey, body, {
          path,
          at: at(0),
          principal: "bes:01KAAAAAAAAAAAAAAAAAAAAAAA",
        }),
      ),
    ],
    ["signed 301 s ago", send(null, registrationSignature(keys.privateKey, body, { path, at: at(-301) }))],
  ];
}

Deno.test("POST /api/bes/v1/register again moves the endpoint only when signed by the registered key: unsigned, foreign-signed, tampered, mislabelled or stale answer 401 and change nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const keys = generateKeyPair();
  const first = await f.client.registerBes(f.tenant.secrets[0], DETAILS, keys);
  assert.equal(first.response.status, 201);
  const id = String(first.body.id);
  f.clock.advance(60_000);
  // What an org-secret holder who knows the engine's public key (shown to every viewer) would send.
  const hijack = registrationBody(keys.publicKey, {
    hostname: "evil.example",
    ipAddress: "203.0.113.66",
    port: 4444,
  });
  const before = await dumpWithoutRateLimits(kv);
  for (
    const [what, attempt] of unprovenAttempts(
      f,
      "/api/bes/v1/register",
      keys,
      hijack,
      registrationBody(keys.publicKey),
    )
  ) {
    const error = await expectError(await attempt(), 401, "unauthorized");
    if (what === "signed by another key" || what === "signed over another body") {
      assert.match(error.message, /not signed by the key it registers/, what);
    }
    assert.deepEqual(await dumpWithoutRateLimits(kv), before, `${what}: nothing changes`);
  }
  const unchanged = (await getEngine(kv, id))!;
  assert.deepEqual([unchanged.hostname, unchanged.ipAddress, unchanged.port], [
    DETAILS.hostname,
    DETAILS.ipAddress,
    8443,
  ]);
  // Signed by the engine's own key: the endpoint moves (same id).
  const moved = await rawRegister(
    f,
    f.tenant.secrets[0],
    registrationBody(keys.publicKey, {
      hostname: "bes1-moved.acme.example",
      ipAddress: "10.0.0.77",
      port: 9443,
    }),
    keys.privateKey,
  );
  assert.equal(moved.status, 200);
  assert.equal((await moved.json()).id, id);
  const engine = (await getEngine(kv, id))!;
  assert.deepEqual([engine.hostname, engine.ipAddress, engine.port], [
    "bes1-moved.acme.example",
    "10.0.0.77",
    9443,
  ]);
  const actions = (await auditEntries(kv, f.tenant.account.id)).map((e) => e.action);
  assert.deepEqual(actions.filter((a) => a.startsWith("engine.")), ["engine.register", "engine.reregister"]);
  // A new registration is no different: unsigned or foreign-signed creates nothing.
  const fresh = generateKeyPair();
  for (const signer of [null, keys.privateKey]) {
    await expectError(
      await rawRegister(f, f.tenant.secrets[0], registrationBody(fresh.publicKey), signer),
      401,
      "unauthorized",
    );
  }
  assert.equal(await engineCount(kv), 1);
});

Deno.test("POST /api/agent/v1/enroll again changes the host only when signed by the enrolled key: unsigned, foreign-signed, tampered, mislabelled or stale answer 401 and change nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const keys = generateKeyPair();
  const first = await f.client.enrollAgent(f.tenant.secrets[0], AGENT, keys);
  assert.equal(first.response.status, 201);
  const id = String(first.body.id);
  f.clock.advance(60_000);
  const hijack = enrollmentBody(keys.publicKey, { hostname: "evil.example", ipAddress: "203.0.113.66" });
  const before = await dumpWithoutRateLimits(kv);
  for (const [what, attempt] of unprovenAttempts(f, ENROLL, keys, hijack, enrollmentBody(keys.publicKey))) {
    await expectError(await attempt(), 401, "unauthorized");
    assert.deepEqual(await dumpWithoutRateLimits(kv), before, `${what}: nothing changes`);
  }
  const unchanged = (await getHost(kv, id))!;
  assert.deepEqual([unchanged.hostname, unchanged.ipAddress], [AGENT.hostname, AGENT.ipAddress]);
  const moved = await rawRegister(
    f,
    f.tenant.secrets[0],
    enrollmentBody(keys.publicKey, { hostname: "web01-moved.acme.example", ipAddress: "10.1.0.77" }),
    keys.privateKey,
    { path: ENROLL },
  );
  assert.equal(moved.status, 200);
  assert.equal((await moved.json()).id, id);
  const host = (await getHost(kv, id))!;
  assert.deepEqual([host.hostname, host.ipAddress], ["web01-moved.acme.example", "10.1.0.77"]);
  const actions = (await auditEntries(kv, f.tenant.account.id)).map((e) => e.action);
  assert.deepEqual(actions.filter((a) => a.startsWith("host.")), ["host.enroll", "host.reenroll"]);
});

Deno.test("POST /api/bes/v1/register replayed with the same nonce answers 401 and changes nothing; an old signed registration cannot be replayed to move the engine back", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const keys = generateKeyPair();
  const body = registrationBody(keys.publicKey);
  const headers = registrationSignature(keys.privateKey, body, { at: f.clock.now() });
  const send = (b = body, h = headers, ip?: string) =>
    rawRegister(f, f.tenant.secrets[0], b, null, { headers: h, ip });
  const created = await send();
  assert.equal(created.status, 201);
  const id = (await created.json()).id;
  const afterFirst = await dumpWithoutRateLimits(kv);
  f.clock.advance(10_000);
  const error = await expectError(await send(), 401, "unauthorized");
  assert.match(error.message, /Replayed nonce/);
  assert.deepEqual(await dumpWithoutRateLimits(kv), afterFirst);
  // A captured re-registration, replayed after the owner moved the engine, does not move it back.
  const old = registrationBody(keys.publicKey, { ipAddress: "10.0.0.50" });
  const oldHeaders = registrationSignature(keys.privateKey, old, { at: f.clock.now() });
  assert.equal((await send(old, oldHeaders)).status, 200);
  assert.equal(
    (await rawRegister(
      f,
      f.tenant.secrets[0],
      registrationBody(keys.publicKey, { ipAddress: "10.0.0.60" }),
      keys.privateKey,
    )).status,
    200,
  );
  f.clock.advance(10_000);
  await expectError(await send(old, oldHeaders), 401, "unauthorized");
  assert.equal((await getEngine(kv, id))!.ipAddress, "10.0.0.60");
  // Concurrent copies of one signed registration (round 0 a new key, then re-registrations): exactly
  // one is accepted. Each round comes from its own address, as replays count against the failure budget.
  const other = generateKeyPair();
  for (let round = 0; round < 10; round++) {
    const b = registrationBody(other.publicKey, { name: `bes-2-${round}` });
    const h = registrationSignature(other.privateKey, b, { at: f.clock.now() });
    const copies = await Promise.all([1, 2, 3, 4].map(() => send(b, h, `203.0.113.${100 + round}`)));
    const statuses = copies.map((r) => r.status).sort();
    assert.deepEqual(statuses, [round === 0 ? 201 : 200, 401, 401, 401], `round ${round}`);
  }
  assert.equal(await engineCount(kv), 2);
});

Deno.test("POST /api/bes/v1/register replayed under another tenant's secret after the original answers 401 and writes nothing: the nonce is single-use across tenants, even after the engine was deleted", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const other = await createTenant(kv, "Globex", ["Prod"], f.clock.now());
  const keys = generateKeyPair();
  const body = registrationBody(keys.publicKey);
  const headers = registrationSignature(keys.privateKey, body, { at: f.clock.now() });
  const send = (secret: string) => rawRegister(f, secret, body, null, { headers });
  const created = await send(f.tenant.secrets[0]);
  assert.equal(created.status, 201);
  const id = (await created.json()).id;
  f.clock.advance(5_000);
  const before = await dumpWithoutRateLimits(kv);
  await expectError(await send(other.secrets[0]), 401, "unauthorized");
  assert.deepEqual(await dumpWithoutRateLimits(kv), before);
  // With the original engine gone, only the nonce stands between the replay and Globex: it is refused.
  await deleteEngine(kv, systemActor("test"), id, f.clock.now());
  f.clock.advance(5_000);
  const error = await expectError(await send(other.secrets[0]), 401, "unauthorized");
  assert.match(error.message, /Replayed nonce/);
  assert.equal(await engineCount(kv), 0);
});

Deno.test("POST /api/agent/v1/enroll replayed with the same nonce answers 401 and changes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const keys = generateKeyPair();
  const body = enrollmentBody(keys.publicKey);
  const headers = registrationSignature(keys.privateKey, body, { path: ENROLL, at: f.clock.now() });
  const send = () => rawRegister(f, f.tenant.secrets[0], body, null, { path: ENROLL, headers });
  assert.equal((await send()).status, 201);
  const afterFirst = await dumpWithoutRateLimits(kv);
  f.clock.advance(10_000);
  const error = await expectError(await send(), 401, "unauthorized");
  assert.match(error.message, /Replayed nonce/);
  assert.deepEqual(await dumpWithoutRateLimits(kv), afterFirst);
});

Deno.test("POST /api/bes/v1/register: bad signatures and keys of another tenant count as failures for the rate limit; invalid fields do not", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const other = await createTenant(kv, "Globex", ["Prod"], f.clock.now());
  const theirs = generateKeyPair();
  assert.equal((await f.client.registerBes(other.secrets[0], DETAILS, theirs)).response.status, 201);
  const ip = "203.0.113.80";
  const mine = generateKeyPair();
  // Correctly signed but invalid: answered 422, the budget untouched.
  for (let i = 0; i < 25; i++) {
    const res = await rawRegister(
      f,
      f.tenant.secrets[0],
      registrationBody(mine.publicKey, { port: 0 }),
      mine.privateKey,
      { ip },
    );
    assert.equal(res.status, 422, `invalid ${i}`);
  }
  for (let i = 1; i <= 20; i++) {
    const res = i % 2
      ? await rawRegister(
        f,
        f.tenant.secrets[0],
        registrationBody(mine.publicKey),
        generateKeyPair().privateKey,
        { ip },
      )
      : await rawRegister(f, f.tenant.secrets[0], registrationBody(theirs.publicKey), theirs.privateKey, {
        ip,
      });
    assert.equal(res.status, 401, `attempt ${i}`);
  }
  const limited = await rawRegister(
    f,
    f.tenant.secrets[0],
    registrationBody(mine.publicKey),
    mine.privateKey,
    { ip },
  );
  await expectError(limited, 429, "rate_limited");
  assert.equal(await engineCount(kv), 1);
});

Deno.test("POST /api/bes/v1/register: docs/engine-protocol.md's registration example is accepted at its time, once", async () => {
  using kv = await Deno.openKv(":memory:");
  const doc = await Deno.readTextFile(new URL("../../docs/engine-protocol.md", import.meta.url));
  const example = doc.slice(doc.indexOf("#### Registration example"), doc.indexOf("#### Heartbeat example"));
  const body = /```\n(\{"name":"bes-hq-01".*\})\n```/.exec(example)![1];
  const headers = Object.fromEntries(
    [...example.matchAll(/^ {3}(X-Cadres-[A-Za-z]+): (\S+)$/gm)].map((m) => [m[1].toLowerCase(), m[2]]),
  );
  assert.equal(Object.keys(headers).length, 4);
  const f = await fixture(kv, new TestClock(new Date(Number(headers["x-cadres-timestamp"]) * 1000)));
  const send = () => rawRegister(f, f.tenant.secrets[0], body, null, { headers });
  const res = await send();
  assert.equal(res.status, 201, await res.clone().text());
  const engine = (await getEngine(kv, (await res.json()).id))!;
  assert.equal(engine.publicKey, JSON.parse(body).publicKey);
  assert.equal(engine.hostname, "bes-hq-01.corp.internal");
  await expectError(await send(), 401, "unauthorized");
});

Deno.test("POST /api/bes/v1/register with the account secret creates an account-scoped engine (orgId null)", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const { secret } = await rotateAccountSecret(kv, systemActor("test"), f.tenant.account.id, f.clock.now());
  const { response, body } = await f.client.registerBes(secret, DETAILS);
  assert.equal(response.status, 201);
  assert.equal(body.status, "pending");
  const engine = (await getEngine(kv, String(body.id)))!;
  assert.equal(engine.accountId, f.tenant.account.id);
  assert.equal(engine.orgId, null);
});

Deno.test("POST /api/bes/v1/register of a key registered in another tenant is refused exactly like a bad signature (401, same code and message) and writes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const other = await createTenant(kv, "Globex", ["Prod"], f.clock.now());
  const keys = generateKeyPair();
  const first = await f.client.registerBes(f.tenant.secrets[0], DETAILS, keys);
  assert.equal(first.response.status, 201);
  const { secret: accountSecret } = await rotateAccountSecret(
    kv,
    systemActor("test"),
    f.tenant.account.id,
    f.clock.now(),
  );
  // The reference: a key registered nowhere, signed by some other key.
  const fresh = generateKeyPair();
  const badSignature = await rawRegister(
    f,
    other.secrets[0],
    registrationBody(fresh.publicKey),
    generateKeyPair().privateKey,
  );
  const reference = await expectError(badSignature, 401, "unauthorized");
  const before = await dumpWithoutRateLimits(kv);
  for (const secret of [f.tenant.secrets[1], other.secrets[0], accountSecret]) {
    // Signed by the key itself (only its holder can) and by an attacker's own key: the same answer as
    // for a key registered nowhere, so a secret holder learns nothing about other tenants' keys.
    for (const signer of [keys.privateKey, generateKeyPair().privateKey]) {
      const res = await rawRegister(f, secret, registrationBody(keys.publicKey), signer);
      assert.deepEqual(await expectError(res, 401, "unauthorized"), reference);
    }
  }
  assert.deepEqual(await dumpWithoutRateLimits(kv), before);
  const engine = (await getEngine(kv, String(first.body.id)))!;
  assert.equal(engine.orgId, f.tenant.orgs[0].id);
  assert.equal(engine.hostname, DETAILS.hostname);
});

Deno.test("POST /api/agent/v1/enroll of a key enrolled in another org is refused exactly like a bad signature and writes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const other = await createTenant(kv, "Globex", ["Prod"], f.clock.now());
  const keys = generateKeyPair();
  const first = await f.client.enrollAgent(f.tenant.secrets[0], AGENT, keys);
  assert.equal(first.response.status, 201);
  const reference = await expectError(
    await rawRegister(f, other.secrets[0], enrollmentBody(generateKeyPair().publicKey), keys.privateKey, {
      path: ENROLL,
    }),
    401,
    "unauthorized",
  );
  const before = await dumpWithoutRateLimits(kv);
  for (const secret of [f.tenant.secrets[1], other.secrets[0]]) {
    for (const signer of [keys.privateKey, generateKeyPair().privateKey]) {
      const res = await rawRegister(f, secret, enrollmentBody(keys.publicKey), signer, { path: ENROLL });
      assert.deepEqual(await expectError(res, 401, "unauthorized"), reference);
    }
  }
  assert.deepEqual(await dumpWithoutRateLimits(kv), before);
  const host = (await getHost(kv, String(first.body.id)))!;
  assert.equal(host.orgId, f.tenant.orgs[0].id);
  assert.equal(host.ipAddress, AGENT.ipAddress);
});

Deno.test("POST /api/bes/v1/register with a wrong or missing secret answers 401 and writes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const { publicKey, privateKey } = generateKeyPair();
  const auditBefore = await auditEntries(kv, f.tenant.account.id);
  const before = await dumpWithoutRateLimits(kv);
  const wellFormedButUnknown = "cdo_" + "A".repeat(43);
  for (const secret of [wellFormedButUnknown, "cda_" + "B".repeat(43), "nonsense", ""]) {
    await expectError(
      await rawRegister(f, secret, registrationBody(publicKey), privateKey),
      401,
      "unauthorized",
    );
  }
  const noHeader = await f.app.request(`${BASE}/api/bes/v1/register`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: registrationBody(publicKey),
  }, { remoteAddr: { hostname: "198.51.100.7" } });
  await expectError(noHeader, 401, "unauthorized");
  // Only the per-IP failure counter (registration_failures) may change.
  assert.deepEqual(await dumpWithoutRateLimits(kv), before);
  assert.deepEqual(await auditEntries(kv, f.tenant.account.id), auditBefore);
  assert.equal(await engineCount(kv), 0);
});

Deno.test("POST /api/bes/v1/register with a malformed publicKey answers 422 with fields.publicKey and writes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const before = await dumpKv(kv);
  const { publicKey, privateKey } = generateKeyPair();
  for (const bad of ["", "not-a-key", publicKey.slice(2), publicKey + "AAAA", "+" + publicKey.slice(1)]) {
    const error = await expectError(
      await rawRegister(f, f.tenant.secrets[0], registrationBody(bad), privateKey),
      422,
      "invalid",
    );
    assert.ok(error.fields?.publicKey, `fields.publicKey for ${JSON.stringify(bad)}`);
    assert.match(error.fields!.publicKey, /32-byte Ed25519/);
  }
  // Other invalid fields are named too.
  const error = await expectError(
    await rawRegister(
      f,
      f.tenant.secrets[0],
      registrationBody(publicKey, { deploymentModel: "mainframe", port: 70000 }),
      privateKey,
    ),
    422,
    "invalid",
  );
  assert.ok(error.fields?.deploymentModel);
  assert.ok(error.fields?.port);
  // Nothing was written (a 422 is not a failure for the rate limit).
  assert.deepEqual(await dumpKv(kv), before);
  assert.equal(await engineCount(kv), 0);
});

Deno.test("POST /api/bes/v1/register with garbage JSON answers 400 and writes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const before = await dumpWithoutRateLimits(kv);
  const auditBefore = await auditEntries(kv, f.tenant.account.id);
  const { privateKey } = generateKeyPair();
  await expectError(
    await rawRegister(f, f.tenant.secrets[0], '{"name": "bes",', privateKey),
    400,
    "malformed",
  );
  await expectError(
    await rawRegister(f, f.tenant.secrets[0], "\u0000\u0001garbage", privateKey),
    400,
    "malformed",
  );
  // The registration_failures counter is allowed to change; nothing else is.
  assert.deepEqual(await dumpWithoutRateLimits(kv), before);
  assert.deepEqual(await auditEntries(kv, f.tenant.account.id), auditBefore);
});

Deno.test("POST /api/bes/v1/register with a body over 64 KiB answers 413 and writes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const { publicKey, privateKey } = generateKeyPair();
  const before = await dumpWithoutRateLimits(kv);
  const big = registrationBody(publicKey, { name: "x".repeat(MAX_BODY_BYTES + 1) });
  assert.ok(big.length > 64 * 1024);
  await expectError(await rawRegister(f, f.tenant.secrets[0], big, privateKey), 413, "payload_too_large");
  // With an explicit Content-Length the limit applies before the body is read.
  const res = await f.app.request(`${BASE}/api/bes/v1/register`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${f.tenant.secrets[0]}`,
      "content-type": "application/json",
      "content-length": String(new TextEncoder().encode(big).length),
    },
    body: big,
  }, { remoteAddr: { hostname: "198.51.100.7" } });
  await expectError(res, 413, "payload_too_large");
  // The registration_failures counter is allowed to change; nothing else is.
  assert.deepEqual(await dumpWithoutRateLimits(kv), before);
  assert.equal(await engineCount(kv), 0);
});

Deno.test("POST /api/bes/v1/register answers 429 after 20 bad secrets from one address; other addresses still register", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const attacker = engineClient(f.app, f.clock, "203.0.113.66");
  const wrong = "cdo_" + "Z".repeat(43);
  for (let i = 1; i <= 20; i++) {
    const { response } = await attacker.registerBes(wrong, DETAILS);
    assert.equal(response.status, 401, `attempt ${i}`);
  }
  const { response: limited } = await attacker.registerBes(wrong, DETAILS);
  assert.equal(limited.status, 429);
  const retryAfter = Number(limited.headers.get("retry-after"));
  assert.ok(retryAfter > 0 && retryAfter <= 15 * 60, `Retry-After ${retryAfter}`);
  // Even the right secret is refused from that address until the window passes.
  const { response: rightButLimited, body } = await attacker.registerBes(f.tenant.secrets[0], DETAILS);
  assert.equal(rightButLimited.status, 429);
  assert.equal((body.error as { code: string }).code, "rate_limited");
  assert.equal(await engineCount(kv), 0);
  // Another address is not affected.
  const { response: fine } = await engineClient(f.app, f.clock, "203.0.113.67").registerBes(
    f.tenant.secrets[0],
    DETAILS,
  );
  assert.equal(fine.status, 201);
  // The next window lets the address try again.
  f.clock.advance(15 * 60_000);
  const { response: later } = await attacker.registerBes(f.tenant.secrets[0], {
    ...DETAILS,
    name: "bes-2",
  });
  assert.equal(later.status, 201);
});

Deno.test("30 agents and 30 BES behind one address enrolling at the same moment all succeed: only failures count, after they happen", async () => {
  for (let round = 0; round < 5; round++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const nat = engineClient(f.app, f.clock, "203.0.113.90");
    const answers = await Promise.all([
      ...Array.from(
        { length: 30 },
        (_, i) =>
          nat.enrollAgent(f.tenant.secrets[0], { hostname: `web-${i}.acme.example`, ipAddress: "10.1.0.5" }),
      ),
      ...Array.from(
        { length: 30 },
        (_, i) => nat.registerBes(f.tenant.secrets[0], { ...DETAILS, name: `bes-${i}` }),
      ),
    ]);
    assert.deepEqual(
      answers.map((a) => a.response.status),
      Array(60).fill(201),
      `round ${round}`,
    );
    assert.equal(await engineCount(kv), 30);
  }
});

Deno.test("POST /api/agent/v1/enroll: after 20 bad secrets from one address the next attempt is 429 with Retry-After, even concurrently", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const attacker = engineClient(f.app, f.clock, "203.0.113.91");
  const wrong = "cdo_" + "Y".repeat(43);
  const agent = { hostname: "web.acme.example", ipAddress: "10.1.0.5" };
  // 20 failures at once: none is refused for the others in flight.
  const burst = await Promise.all(Array.from({ length: 20 }, () => attacker.enrollAgent(wrong, agent)));
  assert.deepEqual(burst.map((b) => b.response.status), Array(20).fill(401));
  for (const secret of [wrong, f.tenant.secrets[0]]) {
    const { response, body } = await attacker.enrollAgent(secret, agent);
    assert.equal(response.status, 429);
    assert.equal((body.error as { code: string }).code, "rate_limited");
    const retryAfter = Number(response.headers.get("retry-after"));
    assert.ok(retryAfter > 0 && retryAfter <= 15 * 60, `Retry-After ${retryAfter}`);
  }
  // A refusal is not a failure: the next window starts with a clean budget.
  f.clock.advance(15 * 60_000);
  assert.equal((await attacker.enrollAgent(f.tenant.secrets[0], agent)).response.status, 201);
});

Deno.test("POST /api/bes/v1/register with correct secrets does not use up the failure budget", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  for (let i = 0; i < 25; i++) {
    const { response } = await f.client.registerBes(f.tenant.secrets[0], { ...DETAILS, name: `bes-${i}` });
    assert.equal(response.status, 201, `registration ${i}`);
  }
});

// ---------------------------------------------------------------------------------------------------
// Signed heartbeats

Deno.test("POST /api/bes/v1/heartbeat: the first signed heartbeat makes a pending engine online", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const identity = await registered(f);
  assert.equal((await getEngine(kv, identity.id))!.status, "pending");
  f.clock.advance(5_000);
  const res = await f.client.heartbeat(identity, engineMetrics({ cpuPercent: 33 }));
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.status, "online");
  assert.equal(body.serverTime, f.clock.now().toISOString());
  assert.equal(body.pendingJobs, 0);
  assert.deepEqual(body.storageTargetIds, []);
  const engine = (await getEngine(kv, identity.id))!;
  assert.equal(engine.status, "online");
  assert.equal(engine.lastHeartbeatAt, f.clock.now().toISOString());
  assert.equal(engine.metrics?.cpuPercent, 33);
});

Deno.test("POST /api/bes/v1/heartbeat signed with another key answers 401 and changes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const identity = await registered(f);
  const intruder = generateKeyPair();
  const before = await dumpKv(kv);
  const res = await f.client.heartbeat({ ...identity, ...intruder }, engineMetrics());
  const error = await expectError(res, 401, "unauthorized");
  assert.match(error.message, /Bad signature/);
  assert.deepEqual(await dumpKv(kv), before);
  assert.equal((await getEngine(kv, identity.id))!.status, "pending");
});

Deno.test("POST /api/bes/v1/heartbeat with a tampered body, path, query or timestamp answers 401", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const identity = await registered(f);
  const before = await dumpKv(kv);
  const cases: Array<[string, Parameters<typeof sendSigned>[2]]> = [
    ["body", { signBody: heartbeatBody(), body: heartbeatBody({ version: "9.9.9" }) }],
    ["path", { signPath: "/api/bes/v1/register", path: HEARTBEAT }],
    ["query added", { signPath: HEARTBEAT, path: `${HEARTBEAT}?x=1` }],
    ["query changed", { signPath: `${HEARTBEAT}?x=1`, path: `${HEARTBEAT}?x=2` }],
  ];
  for (const [what, options] of cases) {
    const error = await expectError(await sendSigned(f, identity, options), 401, "unauthorized");
    assert.match(error.message, /Bad signature/, what);
  }
  // Timestamp moved by one second after signing.
  const body = heartbeatBody();
  const headers = await f.client.signedHeaders(identity, "POST", HEARTBEAT, body, f.clock.now());
  headers["x-cadres-timestamp"] = String(Number(headers["x-cadres-timestamp"]) + 1);
  const res = await f.app.request(`${BASE}${HEARTBEAT}`, {
    method: "POST",
    headers: { ...headers, "content-type": "application/json" },
    body,
  });
  await expectError(res, 401, "unauthorized");
  assert.deepEqual(await dumpKv(kv), before);
  // The untampered request with the same query is accepted: the query is part of what is signed.
  assert.equal((await sendSigned(f, identity, { path: `${HEARTBEAT}?x=1` })).status, 200);
});

Deno.test("POST /api/bes/v1/heartbeat more than 300 s off the server clock answers 401; 299 s is accepted", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const identity = await registered(f);
  const before = await dumpKv(kv);
  const at = (seconds: number) => new Date(f.clock.now().getTime() + seconds * 1000);
  for (const offset of [-301, 301]) {
    const error = await expectError(
      await sendSigned(f, identity, { signedAt: at(offset) }),
      401,
      "unauthorized",
    );
    assert.match(error.message, /300 s/);
  }
  assert.deepEqual(await dumpKv(kv), before);
  assert.equal((await sendSigned(f, identity, { signedAt: at(-299) })).status, 200);
  assert.equal((await sendSigned(f, identity, { signedAt: at(299) })).status, 200);
});

Deno.test("POST /api/bes/v1/heartbeat replayed with the same nonce answers 401 and changes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const identity = await registered(f);
  const body = heartbeatBody();
  const headers = await f.client.signedHeaders(identity, "POST", HEARTBEAT, body, f.clock.now());
  const send = () =>
    f.app.request(`${BASE}${HEARTBEAT}`, {
      method: "POST",
      headers: { ...headers, "content-type": "application/json" },
      body,
    });
  assert.equal((await send()).status, 200);
  const afterFirst = (await getEngine(kv, identity.id))!;
  const dumpAfterFirst = await dumpKv(kv);
  // A replay 10 s later is still inside the skew window; a wrongly accepted one would move lastHeartbeatAt.
  f.clock.advance(10_000);
  const error = await expectError(await send(), 401, "unauthorized");
  assert.match(error.message, /Replayed nonce/);
  assert.equal((await getEngine(kv, identity.id))!.lastHeartbeatAt, afterFirst.lastHeartbeatAt);
  assert.deepEqual(await dumpKv(kv), dumpAfterFirst);
  // Two concurrent copies of a fresh request: exactly one is accepted.
  const body2 = heartbeatBody();
  const headers2 = await f.client.signedHeaders(identity, "POST", HEARTBEAT, body2, f.clock.now());
  const copies = await Promise.all([1, 2, 3].map(() =>
    f.app.request(`${BASE}${HEARTBEAT}`, {
      method: "POST",
      headers: { ...headers2, "content-type": "application/json" },
      body: body2,
    })
  ));
  assert.deepEqual(copies.map((r) => r.status).sort(), [200, 401, 401]);
});

Deno.test("POST /api/bes/v1/heartbeat from an unknown or malformed principal answers 401", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const identity = await registered(f);
  const before = await dumpKv(kv);
  const unknown = { ...identity, id: "01KAAAAAAAAAAAAAAAAAAAAAAA" };
  const error = await expectError(await f.client.heartbeat(unknown, engineMetrics()), 401, "unauthorized");
  assert.match(error.message, /Unknown or deleted principal/);
  for (
    const principal of ["", `agent:${identity.id}`, "bes:../../x", `bes:`, `bes:${identity.id.toLowerCase()}`]
  ) {
    await expectError(
      await sendSigned(f, identity, { headers: { "x-cadres-principal": principal } }),
      401,
      "unauthorized",
    );
  }
  // No signature headers at all.
  const bare = await f.app.request(`${BASE}${HEARTBEAT}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: heartbeatBody(),
  });
  await expectError(bare, 401, "unauthorized");
  assert.deepEqual(await dumpKv(kv), before);
});

Deno.test("POST /api/bes/v1/heartbeat replayed under a decorated principal header (bes:<id>:x) answers 401", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const identity = await registered(f);
  const body = heartbeatBody();
  const headers = await f.client.signedHeaders(identity, "POST", HEARTBEAT, body, f.clock.now());
  const send = (principal: string) =>
    f.app.request(`${BASE}${HEARTBEAT}`, {
      method: "POST",
      headers: { ...headers, "x-cadres-principal": principal, "content-type": "application/json" },
      body,
    });
  assert.equal((await send(`bes:${identity.id}`)).status, 200);
  const afterFirst = await dumpKv(kv);
  // The principal header is not signed, so it must be exactly `bes:<id>`: anything else would key the
  // nonce differently and let a captured request be replayed (once per decoration).
  f.clock.advance(10_000);
  for (const decorated of [`bes:${identity.id}:x`, `bes:${identity.id}:y`, `bes:${identity.id}:`]) {
    await expectError(await send(decorated), 401, "unauthorized");
  }
  assert.deepEqual(await dumpKv(kv), afterFirst, "a replay changes nothing");
});

Deno.test("POST /api/bes/v1/heartbeat from a deleted engine answers 401", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const identity = await registered(f);
  assert.equal((await f.client.heartbeat(identity, engineMetrics())).status, 200);
  await deleteEngine(kv, systemActor("test"), identity.id, f.clock.now());
  assert.equal(await getEngine(kv, identity.id), null);
  f.clock.advance(60_000);
  const error = await expectError(await f.client.heartbeat(identity, engineMetrics()), 401, "unauthorized");
  assert.match(error.message, /Unknown or deleted principal/);
  assert.equal(await getEngine(kv, identity.id), null, "a heartbeat does not resurrect the engine");
});

Deno.test("POST /api/bes/v1/heartbeat from an engine being deleted answers 401 and changes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const identity = await registered(f);
  assert.equal((await f.client.heartbeat(identity, engineMetrics())).status, 200);
  const engine = (await getEngine(kv, identity.id))!;
  await markEngineDeleting(kv, systemActor("test"), engine.id, f.clock.now());
  const before = await dumpKv(kv);
  f.clock.advance(60_000);
  await expectError(await f.client.heartbeat(identity, engineMetrics()), 401, "unauthorized");
  assert.deepEqual(await dumpKv(kv), before);
  // Re-registering the key while it is being deleted is a conflict, not a resurrection.
  const again = await f.client.registerBes(f.tenant.secrets[0], DETAILS, identity);
  assert.equal(again.response.status, 409);
});

Deno.test("POST /api/bes/v1/heartbeat with storage reports applies them to the engine's own targets only", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const a = await registered(f);
  const { identity: b } = await f.client.registerBes(f.tenant.secrets[0], { ...DETAILS, name: "bes-2" });
  const opts = { now: f.clock.now(), masterKey: new Uint8Array(32).fill(7) };
  const own = await createTarget(kv, systemActor("test"), targetInput(a.id, "local"), opts);
  const foreign = await createTarget(kv, systemActor("test"), targetInput(b.id, "local"), opts);
  const res = await f.client.heartbeat(a, engineMetrics(), [
    { targetId: own.id, totalBytes: 1000, usedBytes: 400, freeBytes: 600 },
    { targetId: foreign.id, totalBytes: 1000, usedBytes: 990, freeBytes: 10 },
  ]);
  assert.equal(res.status, 200);
  assert.deepEqual((await res.json()).storageTargetIds, [own.id]);
  assert.equal((await getTarget(kv, own.id))!.capacity?.usedBytes, 400);
  assert.equal((await getTarget(kv, own.id))!.health, "healthy");
  assert.equal((await getTarget(kv, foreign.id))!.capacity, null, "another engine's target is ignored");
  assert.equal((await getEngine(kv, a.id))!.managedBytes, 400);
  // A report with usedBytes > totalBytes is invalid.
  const bad = await f.client.heartbeat(a, engineMetrics(), [
    { targetId: own.id, totalBytes: 10, usedBytes: 400, freeBytes: 0 },
  ]);
  await expectError(bad, 422, "invalid");
});

Deno.test("POST /api/bes/v1/heartbeat with capacity reports for 200 targets (the protocol maximum) applies every report", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const identity = await registered(f);
  const opts = { now: f.clock.now(), masterKey: new Uint8Array(32).fill(7) };
  const ids: string[] = [];
  for (let i = 0; i < 200; i++) {
    ids.push(
      (await createTarget(
        kv,
        systemActor("test"),
        targetInput(identity.id, "local", { name: `t${i}` }),
        opts,
      )).id,
    );
  }
  // KV refuses an atomic operation with more than 100 checks or 1000 mutations: however the server
  // batches the reports, a heartbeat with the allowed 200 reports must be applied, not answered 500.
  const send = (usedBytes: number) =>
    f.client.heartbeat(
      identity,
      engineMetrics(),
      ids.map((targetId) => ({ targetId, totalBytes: 1000, usedBytes, freeBytes: 1000 - usedBytes })),
    );
  const first = await send(100);
  assert.equal(first.status, 200, await first.clone().text());
  for (const id of ids) assert.equal((await getTarget(kv, id))!.health, "healthy", `target ${id}`);
  assert.equal((await getEngine(kv, identity.id))!.status, "online");
  assert.equal((await getEngine(kv, identity.id))!.managedBytes, 200 * 100);
  // All of them turn critical at once (an alert each).
  f.clock.advance(60_000);
  const second = await send(990);
  assert.equal(second.status, 200, await second.clone().text());
  for (const id of ids) assert.equal((await getTarget(kv, id))!.health, "critical", `target ${id}`);
});

// ---------------------------------------------------------------------------------------------------
// Agents

Deno.test("POST /api/agent/v1/enroll with an org secret answers 201; with the account secret 403", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const { response, body } = await f.client.enrollAgent(f.tenant.secrets[1], {
    hostname: "web01.acme.example",
    ipAddress: "10.1.0.5",
  });
  assert.equal(response.status, 201);
  assert.equal(body.heartbeatIntervalSeconds, 60);
  const host = (await getHost(kv, String(body.id)))!;
  assert.equal(host.orgId, f.tenant.orgs[1].id);
  assert.equal(host.status, "pending");

  const { secret } = await rotateAccountSecret(kv, systemActor("test"), f.tenant.account.id, f.clock.now());
  const before = await dumpWithoutRateLimits(kv);
  const refused = await f.client.enrollAgent(secret, {
    hostname: "web02.acme.example",
    ipAddress: "10.1.0.6",
  });
  assert.equal(refused.response.status, 403);
  assert.equal((refused.body.error as { code: string }).code, "forbidden");
  assert.deepEqual(await dumpWithoutRateLimits(kv), before);

  const wrong = await f.client.enrollAgent("cdo_" + "Q".repeat(43), {
    hostname: "web03.acme.example",
    ipAddress: "10.1.0.7",
  });
  assert.equal(wrong.response.status, 401);
});

Deno.test("POST /api/agent/v1/heartbeat: a signed agent heartbeat makes the host online; a BES route refuses it", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const { identity } = await f.client.enrollAgent(f.tenant.secrets[0], {
    hostname: "db01.acme.example",
    ipAddress: "10.1.0.8",
  });
  f.clock.advance(1000);
  const res = await f.client.heartbeat(identity, engineMetrics());
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.status, "online");
  assert.equal(body.serverTime, f.clock.now().toISOString());
  assert.equal(body.pendingJobs, 0);
  const host = (await getHost(kv, identity.id))!;
  assert.equal(host.status, "online");
  assert.equal(host.lastHeartbeatAt, f.clock.now().toISOString());
  // An agent's identity cannot call the BES heartbeat, and a replay is refused.
  await expectError(
    await f.client.post(identity, HEARTBEAT, JSON.parse(heartbeatBody())),
    401,
    "unauthorized",
  );
  const agentBody = heartbeatBody();
  const headers = await f.client.signedHeaders(identity, "POST", "/api/agent/v1/heartbeat", agentBody);
  const send = () =>
    f.app.request(`${BASE}/api/agent/v1/heartbeat`, {
      method: "POST",
      headers: { ...headers, "content-type": "application/json" },
      body: agentBody,
    });
  assert.equal((await send()).status, 200);
  await expectError(await send(), 401, "unauthorized");
  // Signed with another key: refused.
  const other = generateKeyPair();
  await expectError(
    await f.client.heartbeat({ ...identity, ...other }, engineMetrics()),
    401,
    "unauthorized",
  );
});

Deno.test("POST /api/agent/v1/pre-patch: signed by the agent, validated, and answers with the runs it queued", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const { identity } = await f.client.enrollAgent(f.tenant.secrets[0], {
    hostname: "app01.acme.example",
    ipAddress: "10.1.0.9",
  });
  f.clock.advance(1000);
  const res = await f.client.post(identity, "/api/agent/v1/pre-patch", { reason: "apt upgrade" });
  assert.equal(res.status, 202);
  assert.deepEqual(await res.json(), { runs: [] }, "no assignment opts in, so nothing is queued");
  const before = await dumpWithoutRateLimits(kv);
  await expectError(
    await f.client.post(identity, "/api/agent/v1/pre-patch", { reason: "x".repeat(201) }),
    422,
    "invalid",
  );
  await expectError(
    await f.client.post(identity, "/api/agent/v1/pre-patch", { unexpected: true }),
    422,
    "invalid",
  );
  assert.deepEqual(await dumpWithoutRateLimits(kv), before, "bad input changes nothing");
});

// ---------------------------------------------------------------------------------------------------
// OpenAPI

Deno.test("GET /api/openapi.json documents the engine protocol routes", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const res = await f.app.request(`${BASE}/api/openapi.json`);
  assert.equal(res.status, 200);
  const doc = await res.json();
  for (
    const path of [
      "/api/bes/v1/register",
      "/api/bes/v1/heartbeat",
      "/api/agent/v1/enroll",
      "/api/agent/v1/heartbeat",
      "/api/agent/v1/pre-patch",
    ]
  ) {
    assert.ok(doc.paths[path]?.post, `${path} is documented`);
  }
  const register = doc.paths["/api/bes/v1/register"].post;
  assert.ok(register.responses["201"] && register.responses["200"] && register.responses["409"]);
  assert.ok(register.responses["401"] && register.responses["413"] && register.responses["422"]);
  const heartbeat = doc.paths["/api/bes/v1/heartbeat"].post;
  const headerNames = (heartbeat.parameters ?? []).map((p: { name: string }) => p.name);
  for (const h of ["x-cadres-principal", "x-cadres-timestamp", "x-cadres-nonce", "x-cadres-signature"]) {
    assert.ok(headerNames.includes(h), `${h} is documented`);
  }
});
