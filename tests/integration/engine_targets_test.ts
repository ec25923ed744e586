/**
 * `POST /api/bes/v1/targets`: a BES gets its own storage targets with their credential secret, and only
 * its own; every delivery of a credential is audited without the secret; the secret never reaches a log or
 * a KV value in clear; a replayed request delivers nothing; the route is in the OpenAPI document.
 */
import assert from "node:assert/strict";
import { systemActor } from "../../domain/rbac.ts";
import { createTarget } from "../../domain/storage.ts";
import {
  assertExcludes,
  auditEntries,
  createTenant,
  engineClient,
  kvSnapshot,
  targetInput,
  testApp,
  TestClock,
} from "../helpers.ts";

const TARGETS = "/api/bes/v1/targets";
const SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY-unique-4711";
const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

async function fixture(kv: Deno.Kv) {
  const clock = new TestClock();
  const t = testApp(kv, clock);
  const acme = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const other = await createTenant(kv, "Other", ["Ops"], clock.now());
  const client = engineClient(t.app, clock);
  const details = (name: string) => ({ name, hostname: `${name}.example`, ipAddress: "10.0.0.10" });
  const bes1 = (await client.registerBes(acme.secrets[0], details("bes-1"))).identity;
  const bes2 = (await client.registerBes(acme.secrets[0], details("bes-2"))).identity;
  const foreign = (await client.registerBes(other.secrets[0], details("bes-x"))).identity;
  const s3 = await createTarget(kv, system, {
    ...targetInput(bes1.id, "s3"),
    name: "offsite",
    credentials: { username: "AKIAEXAMPLE", secret: SECRET, credentialType: "access_key" },
  }, { now: clock.now(), masterKey });
  const local = await createTarget(kv, system, targetInput(bes1.id, "local"), {
    now: clock.now(),
    masterKey,
  });
  const onBes2 = await createTarget(kv, system, targetInput(bes2.id, "nfs"), { now: clock.now(), masterKey });
  return { ...t, clock, acme, client, bes1, bes2, foreign, s3, local, onBes2 };
}

Deno.test("a BES gets its own targets with their credentials; each credential delivery is audited without the secret", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const res = await f.client.post(f.bes1, TARGETS, {});
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "no-store");
  const { targets } = await res.json();
  assert.deepEqual(targets.map((t: { id: string }) => t.id), [f.s3.id, f.local.id].sort());
  const s3 = targets.find((t: { id: string }) => t.id === f.s3.id);
  assert.equal(s3.type, "s3");
  assert.deepEqual(s3.config, f.s3.config);
  assert.deepEqual(s3.credentials, { username: "AKIAEXAMPLE", credentialType: "access_key", secret: SECRET });
  const local = targets.find((t: { id: string }) => t.id === f.local.id);
  assert.equal(local.credentials, null);

  const audit = (await auditEntries(kv, f.acme.account.id)).filter((a) =>
    a.action === "storage_target.credentials_delivered"
  );
  assert.equal(audit.length, 1, "one delivery of one credential");
  assert.match(audit[0].summary, /offsite .*to its BES bes-1/);
  // Nothing at rest or in the log holds the secret in clear.
  assertExcludes(await kvSnapshot(kv), SECRET, "the credential secret in KV");
  assertExcludes(f.logs.join("\n"), SECRET, "the credential secret in the log");

  // A subset by id.
  const one = await (await f.client.post(f.bes1, TARGETS, { targetIds: [f.local.id] })).json();
  assert.deepEqual(one.targets.map((t: { id: string }) => t.id), [f.local.id]);
});

Deno.test("another BES — of the same org or another tenant — never gets a target that is not its own", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const mine = await (await f.client.post(f.bes2, TARGETS, {})).json();
  assert.deepEqual(mine.targets.map((t: { id: string }) => t.id), [f.onBes2.id]);
  const asked = await (await f.client.post(f.bes2, TARGETS, { targetIds: [f.s3.id, f.local.id] })).json();
  assert.deepEqual(asked.targets, []);
  const foreign = await f.client.post(f.foreign, TARGETS, { targetIds: [f.s3.id] });
  assert.equal(foreign.status, 200);
  const text = await foreign.text();
  assert.deepEqual(JSON.parse(text).targets, []);
  assertExcludes(text, SECRET);
  const audit = (await auditEntries(kv, f.acme.account.id)).filter((a) =>
    a.action === "storage_target.credentials_delivered"
  );
  assert.equal(audit.length, 0, "nothing was delivered");
});

Deno.test("POST /api/bes/v1/targets: unsigned, wrongly signed and replayed requests deliver nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const unsigned = await f.app.request(`http://localhost:8000${TARGETS}`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: "{}",
  });
  assert.equal(unsigned.status, 401);
  // Signed by bes-2's key but claiming to be bes-1.
  const forged = await f.client.signedHeaders({ ...f.bes2, id: f.bes1.id }, "POST", TARGETS, "{}");
  const res = await f.app.request(`http://localhost:8000${TARGETS}`, {
    method: "POST",
    headers: { ...forged, "content-type": "application/json" },
    body: "{}",
  });
  assert.equal(res.status, 401);
  assertExcludes(await res.text(), SECRET);
  // A replay of a valid request.
  const headers = await f.client.signedHeaders(f.bes1, "POST", TARGETS, "{}");
  const send = () =>
    f.app.request(`http://localhost:8000${TARGETS}`, {
      method: "POST",
      headers: { ...headers, "content-type": "application/json" },
      body: "{}",
    });
  assert.equal((await send()).status, 200);
  const replay = await send();
  assert.equal(replay.status, 401);
  assertExcludes(await replay.text(), SECRET);
  const audit = (await auditEntries(kv, f.acme.account.id)).filter((a) =>
    a.action === "storage_target.credentials_delivered"
  );
  assert.equal(audit.length, 1, "the replay delivered nothing");
  // Bad input: 422 naming the field.
  const bad = await f.client.post(f.bes1, TARGETS, { targetIds: ["../etc"] });
  assert.equal(bad.status, 422);
  assert.ok((await bad.json()).error.fields["targetIds.0"]);
});

Deno.test("POST /api/bes/v1/targets is declared in the OpenAPI document", async () => {
  using kv = await Deno.openKv(":memory:");
  const { app } = testApp(kv);
  const doc = await (await app.request("http://localhost:8000/api/openapi.json")).json();
  const op = doc.paths["/api/bes/v1/targets"]?.post;
  assert.ok(op, "the route is documented");
  assert.deepEqual(op.security, [{ engineSignature: [] }]);
  assert.ok(doc.components.schemas.DeliveredTarget);
});
