/** CSRF defence: synchronizer token, Origin and Sec-Fetch-Site checks, and the bearer-token exemption. */
import assert from "node:assert/strict";
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import {
  addUser,
  assertIncludes,
  auditEntries,
  Browser,
  createTenant,
  dumpKv,
  signInAs,
  testApp,
} from "../helpers.ts";

async function adminBrowser(kv: Deno.Kv) {
  const t = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops"], t.clock.now());
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", t.clock.now());
  const browser = new Browser(t.app);
  await signInAs(browser, kv, admin, t.clock.now());
  return { ...t, tenant, admin, browser };
}

/** A form POST with full control over the headers. */
async function rawForm(
  browser: Browser,
  path: string,
  fields: Record<string, string>,
  headers: Record<string, string>,
): Promise<Response> {
  return await browser.request(path, {
    method: "POST",
    body: new URLSearchParams(fields),
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
  });
}

async function orgNames(kv: Deno.Kv): Promise<string[]> {
  const out: string[] = [];
  for await (const e of kv.list<{ name: string }>({ prefix: ["orgs"] })) out.push(e.value.name);
  return out.sort();
}

async function assertRefusedHtml(res: Response, text: string) {
  assert.equal(res.status, 403);
  assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
  assertIncludes(await res.text(), text);
}

Deno.test("POST /admin/orgs/new without _csrf is refused with 403 and changes nothing", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { browser, tenant } = await adminBrowser(kv);
  const before = await dumpKv(kv);
  const auditBefore = await auditEntries(kv, tenant.account.id);
  const res = await browser.postForm("/admin/orgs/new", { name: "Evil" }, { csrf: null });
  await assertRefusedHtml(res, "did not come from this site");
  assert.deepEqual(await dumpKv(kv), before);
  assert.deepEqual(await orgNames(kv), ["Ops"]);
  assert.deepEqual(await auditEntries(kv, tenant.account.id), auditBefore);
});

Deno.test("POST /admin/orgs/new with a wrong _csrf is refused with 403 and changes nothing", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { browser } = await adminBrowser(kv);
  const real = await browser.csrfFor("/admin/orgs/new");
  assert.ok(real.length > 10, "the page embeds a token");
  const before = await dumpKv(kv);
  const wrong = real.slice(0, -1) + (real.endsWith("A") ? "B" : "A");
  const res = await browser.postForm("/admin/orgs/new", { name: "Evil" }, { csrf: wrong });
  await assertRefusedHtml(res, "did not come from this site");
  assert.deepEqual(await dumpKv(kv), before);
});

Deno.test("POST /admin/orgs/new with the right token from Origin https://evil.example is refused", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { browser } = await adminBrowser(kv);
  const token = await browser.csrfFor("/admin/orgs/new");
  const before = await dumpKv(kv);
  const res = await browser.postForm("/admin/orgs/new", { name: "Evil" }, {
    csrf: token,
    origin: "https://evil.example",
  });
  await assertRefusedHtml(res, "Cross-origin request refused");
  assert.deepEqual(await dumpKv(kv), before);
  assert.deepEqual(await orgNames(kv), ["Ops"]);
});

Deno.test("POST /admin/orgs/new with the right token and Origin: null is refused", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { browser } = await adminBrowser(kv);
  const token = await browser.csrfFor("/admin/orgs/new");
  const before = await dumpKv(kv);
  const res = await browser.postForm("/admin/orgs/new", { name: "Evil" }, { csrf: token, origin: "null" });
  await assertRefusedHtml(res, "Cross-origin request refused");
  assert.deepEqual(await dumpKv(kv), before);
});

Deno.test("POST /admin/orgs/new with the right token and Sec-Fetch-Site: cross-site is refused", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { browser } = await adminBrowser(kv);
  const token = await browser.csrfFor("/admin/orgs/new");
  const before = await dumpKv(kv);
  const res = await rawForm(browser, "/admin/orgs/new", { _csrf: token, name: "Evil" }, {
    "sec-fetch-site": "cross-site",
  });
  await assertRefusedHtml(res, "Cross-site request refused");
  assert.deepEqual(await dumpKv(kv), before);
});

Deno.test("POST /admin/users/new refused for CSRF creates no user and no audit entry", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { browser, tenant } = await adminBrowser(kv);
  const token = await browser.csrfFor("/admin/users/new");
  const fields = {
    email: "mallory@acme.example",
    name: "Mallory",
    role: "admin",
    scopeMode: "all",
    password: "mallory-password-1",
  };
  const before = await dumpKv(kv);
  const auditBefore = await auditEntries(kv, tenant.account.id);
  const attempts = [
    await browser.postForm("/admin/users/new", fields, { csrf: null }),
    await browser.postForm("/admin/users/new", fields, { csrf: "x".repeat(token.length) }),
    await browser.postForm("/admin/users/new", fields, { csrf: token, origin: "https://evil.example" }),
    await rawForm(browser, "/admin/users/new", { ...fields, _csrf: token }, {
      "sec-fetch-site": "cross-site",
    }),
  ];
  for (const res of attempts) {
    assert.equal(res.status, 403);
    await res.body?.cancel();
  }
  assert.deepEqual(await dumpKv(kv), before);
  assert.equal((await kv.get(["users_by_email", "mallory@acme.example"])).value, null);
  assert.deepEqual(await auditEntries(kv, tenant.account.id), auditBefore);
});

Deno.test("POST /admin/orgs/new same-origin with the page's token creates the org", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { browser, tenant } = await adminBrowser(kv);
  const res = await browser.postForm("/admin/orgs/new", { name: "Finance" }, {
    tokenFrom: "/admin/orgs/new",
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
  assertIncludes(await res.text(), "Organization Finance created");
  assert.deepEqual(await orgNames(kv), ["Finance", "Ops"]);
  const audit = await auditEntries(kv, tenant.account.id);
  assert.equal(audit.at(-1)?.action, "org.create");
});

Deno.test("POST with the right token, Sec-Fetch-Site: same-origin and no Origin header is accepted", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { browser } = await adminBrowser(kv);
  const token = await browser.csrfFor("/admin/orgs/new");
  const res = await rawForm(browser, "/admin/orgs/new", { _csrf: token, name: "Legal" }, {
    "sec-fetch-site": "same-origin",
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
  assertIncludes(await res.text(), "Organization Legal created");
});

Deno.test("POST /login without the pre-session CSRF cookie's token is refused", async () => {
  await using kv = await Deno.openKv(":memory:");
  const t = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops"], t.clock.now());
  await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", t.clock.now());
  const browser = new Browser(t.app);
  const before = await dumpKv(kv);
  const res = await browser.postForm("/login", { email: "viewer@acme.example", password: "whatever-it-is" }, {
    csrf: "forged-token-forged-token",
  });
  await assertRefusedHtml(res, "did not come from this site");
  assert.equal(browser.cookies.has("cadres_session"), false);
  assert.deepEqual(await dumpKv(kv), before, "not even a failed-login counter is written");
});

Deno.test("POST /api/v1/orgs with a bearer token needs no CSRF token", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, clock, tenant, admin } = await adminBrowser(kv);
  const { secret } = await createApiToken(kv, userActor(admin), {
    name: "ci",
    permissions: ["admin", "backup.view"],
    expiresInDays: 90,
  }, clock.now());
  const res = await app.request("http://localhost:8000/api/v1/orgs", {
    method: "POST",
    headers: { authorization: `Bearer ${secret}`, "content-type": "application/json" },
    body: JSON.stringify({ name: "Automation" }),
  });
  assert.equal(res.status, 201);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  const body = await res.json();
  assert.equal(body.org.name, "Automation");
  assert.match(body.secret, /^cdo_/);
  assert.equal((await auditEntries(kv, tenant.account.id)).at(-1)?.action, "org.create");
});

Deno.test("POST /api/v1/orgs with a session cookie needs X-CSRF-Token: 403 without, 201 with", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { browser, tenant } = await adminBrowser(kv);
  const post = (headers: Record<string, string>) =>
    browser.request("/api/v1/orgs", {
      method: "POST",
      headers: { "content-type": "application/json", origin: "http://localhost:8000", ...headers },
      body: JSON.stringify({ name: "Island" }),
    });
  const before = await dumpKv(kv);

  const refused = await post({});
  assert.equal(refused.status, 403);
  assert.match(refused.headers.get("content-type") ?? "", /^application\/json/);
  assert.equal((await refused.json()).error.code, "csrf");
  assert.deepEqual(await dumpKv(kv), before);

  const wrong = await post({ "x-csrf-token": "not-the-session-token" });
  assert.equal(wrong.status, 403);
  assert.equal((await wrong.json()).error.code, "csrf");

  const token = await browser.csrfFor("/backup/dashboard");
  const ok = await post({ "x-csrf-token": token });
  assert.equal(ok.status, 201);
  assert.match(ok.headers.get("content-type") ?? "", /^application\/json/);
  assert.equal((await ok.json()).org.name, "Island");
  assert.equal((await auditEntries(kv, tenant.account.id)).at(-1)?.action, "org.create");
});

Deno.test("POST /api/v1/orgs with a session, the right X-CSRF-Token and a foreign Origin is refused", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { browser } = await adminBrowser(kv);
  const token = await browser.csrfFor("/backup/dashboard");
  const before = await dumpKv(kv);
  const res = await browser.request("/api/v1/orgs", {
    method: "POST",
    headers: { "content-type": "application/json", origin: "https://evil.example", "x-csrf-token": token },
    body: JSON.stringify({ name: "Island" }),
  });
  assert.equal(res.status, 403);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  assert.equal((await res.json()).error.code, "csrf");
  assert.deepEqual(await dumpKv(kv), before);
});

Deno.test("an over-long id in any GET route is a 404, never a 500 (a KV key would overflow)", async () => {
  using kv = await Deno.openKv(":memory:");
  const { app, clock } = testApp(kv);
  const tenant = await createTenant(kv, "Long", ["Ops"], clock.now());
  const admin = await addUser(kv, tenant, "long@long.example", "admin", "all", clock.now());
  const browser = new Browser(app);
  await signInAs(browser, kv, admin, clock.now());
  const paths = [
    ...new Set(app.routes.filter((r) => r.method === "GET" && r.path.includes("/:")).map((r) => r.path)),
  ];
  assert.ok(paths.length > 20, "the routes with ids are enumerated");
  for (const path of paths) {
    const res = await browser.get(path.replace(/:\w+/g, "X".repeat(3000)));
    await res.body?.cancel();
    assert.equal(res.status, 404, path);
  }
  const ok = await browser.get(`/backup/jobs/${"X".repeat(26)}`);
  await ok.body?.cancel();
  assert.equal(ok.status, 404, "a short unknown id is still an ordinary 404");
});
