/** API tokens: never above their owner, narrowed with the owner, revocable, expiring. */
import assert from "node:assert/strict";
import { createApiToken, resolveApiToken, revokeApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { UnauthorizedError, ValidationError } from "../../domain/errors.ts";
import { systemActor } from "../../domain/rbac.ts";
import type { Permission, Role, User } from "../../domain/types.ts";
import { deleteUser, updateUser } from "../../domain/users.ts";
import { addUser, Browser, createTenant, dumpKv, signInAs, testApp } from "../helpers.ts";

const DAY = 86_400_000;

async function fixture(kv: Deno.Kv) {
  const t = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops", "Finance"], t.clock.now());
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", t.clock.now());
  const get = (path: string, secret: string) =>
    t.app.request(`http://localhost:8000${path}`, { headers: { authorization: `Bearer ${secret}` } });
  const postJson = (path: string, secret: string, body: unknown) =>
    t.app.request(`http://localhost:8000${path}`, {
      method: "POST",
      headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  return { ...t, tenant, admin, get, postJson };
}

async function tokenFor(kv: Deno.Kv, user: User, permissions: Permission[], now: Date, expiresInDays = 90) {
  return await createApiToken(kv, userActor(user), { name: "ci", permissions, expiresInDays }, now);
}

async function expectError(res: Response, status: number, code: string): Promise<string> {
  assert.equal(res.status, status);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = await res.json();
  assert.equal(body.error.code, code);
  return body.error.message;
}

function changeRole(kv: Deno.Kv, user: User, role: Role, now: Date) {
  return updateUser(kv, systemActor("test"), user.id, {
    name: user.name,
    role,
    orgScope: user.orgScope,
    disabled: false,
  }, now);
}

Deno.test("createApiToken() refuses admin for a viewer with ValidationError", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { tenant, clock, admin } = await fixture(kv);
  const viewer = await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", clock.now());
  const before = await dumpKv(kv);
  await assert.rejects(
    () => tokenFor(kv, viewer, ["backup.view", "admin"], clock.now()),
    (e: unknown) => e instanceof ValidationError && /admin/.test(e.fields.permissions ?? ""),
  );
  // Not even an admin can mint, for the viewer, a token above the viewer's role.
  await assert.rejects(
    () =>
      createApiToken(kv, userActor(admin), {
        name: "for viewer",
        permissions: ["backup.manage"],
        expiresInDays: 1,
        userId: viewer.id,
      }, clock.now()),
    ValidationError,
  );
  assert.deepEqual(await dumpKv(kv), before);
});

Deno.test("POST /api/v1/tokens asking for more than the signed-in viewer has answers 422", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, tenant, clock } = await fixture(kv);
  const viewer = await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", clock.now());
  const browser = new Browser(app);
  await signInAs(browser, kv, viewer, clock.now());
  const csrf = await browser.csrfFor("/backup/dashboard");
  const before = await dumpKv(kv);
  const res = await browser.request("/api/v1/tokens", {
    method: "POST",
    headers: { "content-type": "application/json", "x-csrf-token": csrf },
    body: JSON.stringify({ name: "sneaky", permissions: ["backup.view", "admin"] }),
  });
  assert.equal(res.status, 422);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = await res.json();
  assert.equal(body.error.code, "invalid");
  assert.match(body.error.fields.permissions, /admin/);
  assert.deepEqual(await dumpKv(kv), before);
});

Deno.test("demoting a token's owner narrows the token (resolveApiToken)", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { tenant, clock } = await fixture(kv);
  const operator = await addUser(kv, tenant, "op@acme.example", "operator", "all", clock.now());
  const { secret } = await tokenFor(kv, operator, ["backup.view", "backup.manage"], clock.now());
  const before = await resolveApiToken(kv, secret, clock.now());
  assert.deepEqual([...before.permissions].sort(), ["backup.manage", "backup.view"]);

  await changeRole(kv, operator, "viewer", clock.now());
  const after = await resolveApiToken(kv, secret, clock.now());
  assert.deepEqual([...after.permissions], ["backup.view"]);
  assert.equal(after.role, "viewer");

  // Promoting back restores only what the token itself was given.
  await changeRole(kv, operator, "admin", clock.now());
  const promoted = await resolveApiToken(kv, secret, clock.now());
  assert.deepEqual([...promoted.permissions].sort(), ["backup.manage", "backup.view"]);
});

Deno.test("demoting a token's owner makes the token get 403 on an admin route", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { tenant, clock, get, postJson } = await fixture(kv);
  const second = await addUser(kv, tenant, "second@acme.example", "admin", "all", clock.now());
  const { secret } = await tokenFor(kv, second, ["backup.view", "admin"], clock.now());
  const ok = await postJson("/api/v1/orgs", secret, { name: "Before demotion" });
  assert.equal(ok.status, 201);
  await ok.body?.cancel();

  await changeRole(kv, second, "backup_admin", clock.now());
  await expectError(await postJson("/api/v1/orgs", secret, { name: "After demotion" }), 403, "forbidden");
  await expectError(await get("/api/v1/users", secret), 403, "forbidden");
  const me = await get("/api/v1/me", secret);
  assert.equal(me.status, 200);
  assert.deepEqual((await me.json()).permissions, ["backup.view"]);
});

Deno.test("a revoked token gets 401", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, admin, get } = await fixture(kv);
  const { token, secret } = await tokenFor(kv, admin, ["backup.view"], clock.now());
  assert.equal((await get("/api/v1/me", secret)).status, 200);
  await revokeApiToken(kv, userActor(admin), token.id, clock.now());
  const message = await expectError(await get("/api/v1/me", secret), 401, "unauthorized");
  assert.match(message, /revoked/);
});

Deno.test("DELETE /api/v1/tokens/:id by the token itself revokes it", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, clock, admin, get } = await fixture(kv);
  const { token, secret } = await tokenFor(kv, admin, ["backup.view"], clock.now());
  const res = await app.request(`http://localhost:8000/api/v1/tokens/${token.id}`, {
    method: "DELETE",
    headers: { authorization: `Bearer ${secret}` },
  });
  assert.equal(res.status, 204);
  await expectError(await get("/api/v1/me", secret), 401, "unauthorized");
});

Deno.test("an expired token gets 401", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, admin, get } = await fixture(kv);
  const { secret } = await tokenFor(kv, admin, ["backup.view"], clock.now(), 1);
  clock.advance(DAY - 1000);
  assert.equal((await get("/api/v1/me", secret)).status, 200);
  clock.advance(1000);
  const message = await expectError(await get("/api/v1/me", secret), 401, "unauthorized");
  assert.match(message, /expired/);
});

Deno.test("a token that never expires still works years later", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, admin, get } = await fixture(kv);
  const { token, secret } = await tokenFor(kv, admin, ["backup.view"], clock.now(), 0);
  assert.equal(token.expiresAt, null);
  clock.advance(5 * 365 * DAY);
  assert.equal((await get("/api/v1/me", secret)).status, 200);
});

Deno.test("a token of a disabled or deleted owner gets 401", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { tenant, clock, get } = await fixture(kv);
  const op = await addUser(kv, tenant, "op@acme.example", "operator", "all", clock.now());
  const { secret } = await tokenFor(kv, op, ["backup.view"], clock.now());
  await updateUser(kv, systemActor("test"), op.id, {
    name: op.name,
    role: op.role,
    orgScope: op.orgScope,
    disabled: true,
  }, clock.now());
  await expectError(await get("/api/v1/me", secret), 401, "unauthorized");
  await deleteUser(kv, systemActor("test"), op.id, clock.now());
  await expectError(await get("/api/v1/me", secret), 401, "unauthorized");
});

Deno.test("resolveApiToken() refuses a token whose secret part was altered", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, admin } = await fixture(kv);
  const { secret } = await tokenFor(kv, admin, ["backup.view"], clock.now());
  const altered = secret.slice(0, -1) + (secret.endsWith("A") ? "B" : "A");
  await assert.rejects(() => resolveApiToken(kv, altered, clock.now()), UnauthorizedError);
  await assert.rejects(() => resolveApiToken(kv, "cdt_short", clock.now()), UnauthorizedError);
});

Deno.test("a token sees only its owner's organization scope", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { tenant, clock, get } = await fixture(kv);
  const scoped = await addUser(kv, tenant, "scoped@acme.example", "viewer", [tenant.orgs[1]], clock.now());
  const { secret } = await tokenFor(kv, scoped, ["backup.view"], clock.now());
  const res = await get("/api/v1/orgs", secret);
  assert.equal(res.status, 200);
  assert.deepEqual((await res.json()).values.map((o: { name: string }) => o.name), ["Finance"]);
  await expectError(await get(`/api/v1/orgs/${tenant.orgs[0].id}`, secret), 404, "not_found");
});

Deno.test("a narrow token cannot mint a token with more permissions than itself", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, admin, postJson } = await fixture(kv);
  const { secret } = await tokenFor(kv, admin, ["backup.view"], clock.now());
  const res = await postJson("/api/v1/tokens", secret, {
    name: "escalated",
    permissions: ["backup.view", "admin"],
    expiresInDays: 1,
  });
  const status = res.status;
  const body = await res.json();
  assert.ok(
    status === 422 || status === 403,
    `a backup.view token minted a token with admin (status ${status}, ${
      body.secret ? "secret returned" : ""
    })`,
  );
  assert.equal(body.secret, undefined);
});
