/** Secrets never leak: not into the request log, not into pages or JSON after the one-time reveal. */
import assert from "node:assert/strict";
import { sha256Hex } from "../../domain/ids.ts";
import { issueSetupToken } from "../../domain/setup.ts";
import {
  addUser,
  assertExcludes,
  assertIncludes,
  Browser,
  createTenant,
  dumpKv,
  PASSWORD,
  testApp,
} from "../helpers.ts";

/** The one-time secret shown on a "created" page (the CopySecret island's props). */
function secretIn(html: string, prefix: "cdo_" | "cdt_"): string {
  const m = new RegExp(`${prefix}[A-Za-z0-9_-]+`).exec(html);
  assert.ok(m, `no ${prefix} secret on the page`);
  return m[0];
}

Deno.test("secrets, passwords and session cookies never reach the request log or later responses", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, clock, logs } = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  await addUser(kv, tenant, "admin@acme.example", "admin", "all", clock.now());
  const browser = new Browser(app);

  // Sign in with the password (through a `next` that carries a query string).
  const signedIn = await browser.postForm("/login", {
    email: "admin@acme.example",
    password: PASSWORD,
    next: "/admin/orgs?q=Ops",
  });
  assert.equal(signedIn.status, 303);
  const cookie = browser.cookies.get("cadres_session")!;
  assert.ok(cookie);

  // An org through the admin page: its secret is on that page, once.
  const created = await browser.postForm("/admin/orgs/new", { name: "Finance" }, {
    tokenFrom: "/admin/orgs/new",
  });
  assert.equal(created.status, 200);
  assert.match(created.headers.get("cache-control") ?? "", /no-store/);
  const orgSecret = secretIn(await created.text(), "cdo_");

  // An API token through the JSON API with the session.
  const csrf = await browser.csrfFor("/backup/dashboard");
  const tokenRes = await browser.request("/api/v1/tokens", {
    method: "POST",
    headers: { "content-type": "application/json", "x-csrf-token": csrf, origin: "http://localhost:8000" },
    body: JSON.stringify({ name: "ci", permissions: ["backup.view", "admin"], expiresInDays: 30 }),
  });
  assert.equal(tokenRes.status, 201);
  const tokenBody = await tokenRes.json();
  const tokenSecret: string = tokenBody.secret;
  assert.match(tokenSecret, /^cdt_/);
  assert.equal(tokenBody.token.secretHash, undefined);
  const bearer = { authorization: `Bearer ${tokenSecret}` };

  // Use the token; rotate a secret through the API.
  const orgs = await (await app.request("http://localhost:8000/api/v1/orgs", { headers: bearer })).json();
  const finance = orgs.values.find((o: { name: string }) => o.name === "Finance");
  assert.ok(finance);
  const rotated = await app.request(`http://localhost:8000/api/v1/orgs/${finance.id}/rotate-secret`, {
    method: "POST",
    headers: bearer,
  });
  assert.equal(rotated.status, 200);
  const rotatedSecret: string = (await rotated.json()).secret;
  assert.match(rotatedSecret, /^cdo_/);
  assert.notEqual(rotatedSecret, orgSecret);

  // A one-time token in a query string.
  const setupToken = "setup-token-in-the-query-string-0123456789";
  await (await browser.get(`/setup?token=${setupToken}`)).body?.cancel();

  // A failed request whose error is logged.
  await (await app.request("http://localhost:8000/api/v1/orgs", {
    method: "POST",
    headers: { ...bearer, "content-type": "application/json" },
    body: `{"name": "${orgSecret}"`,
  })).body?.cancel();

  const orgHashes = [sha256Hex(orgSecret), sha256Hex(rotatedSecret)];
  const secrets = [orgSecret, rotatedSecret, tokenSecret, PASSWORD, cookie, setupToken, csrf, ...orgHashes];

  const logText = logs.join("\n");
  assert.ok(logs.length >= 8, `the requests were logged (${logs.length} lines)`);
  assertIncludes(logText, '"route":"/api/v1/orgs/:orgId/rotate-secret"');
  for (const s of secrets) assertExcludes(logText, s, "a secret in the request log");
  assert.equal(/\$argon2/.test(logText), false);

  // After the reveal, the org is shown without its secret or hash, in JSON and HTML.
  const apiOrg = await app.request(`http://localhost:8000/api/v1/orgs/${finance.id}`, { headers: bearer });
  assert.equal(apiOrg.status, 200);
  assert.match(apiOrg.headers.get("content-type") ?? "", /^application\/json/);
  const apiOrgText = await apiOrg.text();
  assertIncludes(apiOrgText, '"name":"Finance"');
  const htmlOrg = await browser.get(`/admin/orgs/${finance.id}`);
  assert.equal(htmlOrg.status, 200);
  assert.match(htmlOrg.headers.get("content-type") ?? "", /^text\/html/);
  const htmlOrgText = await htmlOrg.text();
  assertIncludes(htmlOrgText, "Finance");
  for (const text of [apiOrgText, htmlOrgText]) {
    for (const s of [orgSecret, rotatedSecret, ...orgHashes]) {
      assertExcludes(text, s, "an org secret or its hash");
    }
    assert.equal(text.includes("secretHash"), false);
  }

  // Users without password hashes.
  const users = await app.request("http://localhost:8000/api/v1/users", { headers: bearer });
  assert.equal(users.status, 200);
  assert.match(users.headers.get("content-type") ?? "", /^application\/json/);
  const usersText = await users.text();
  assertIncludes(usersText, "admin@acme.example");
  assert.equal(usersText.includes("passwordHash"), false);
  assert.equal(usersText.includes("$argon2"), false);

  // Token lists without secrets or hashes.
  const tokens = await app.request("http://localhost:8000/api/v1/tokens", { headers: bearer });
  assert.equal(tokens.status, 200);
  const tokensText = await tokens.text();
  assertIncludes(tokensText, '"name":"ci"');
  const tokenHash = sha256Hex(tokenSecret);
  const tokensPage = await (await browser.get("/admin/tokens")).text();
  for (const text of [tokensText, tokensPage]) {
    assertExcludes(text, tokenSecret, "the API token");
    assertExcludes(text, tokenHash, "the API token's hash");
    assert.equal(text.includes("secretHash"), false);
  }

  // The audit trail names what happened, never the secrets.
  const auditText = await (await app.request("http://localhost:8000/api/v1/audit", { headers: bearer }))
    .text();
  assertIncludes(auditText, "org.rotate_secret");
  for (const s of secrets) assertExcludes(auditText, s, "a secret in the audit trail");

  // And the database holds no secret in clear.
  const stored = JSON.stringify(await dumpKv(kv), (_k, v) => typeof v === "bigint" ? String(v) : v);
  for (const s of [orgSecret, rotatedSecret, tokenSecret, PASSWORD, cookie]) {
    assertExcludes(stored, s, "a secret stored in clear");
  }
});

Deno.test("the setup token printed at start is stored only as a hash", async () => {
  await using kv = await Deno.openKv(":memory:");
  const token = await issueSetupToken(kv, new Date());
  assert.ok(token);
  const stored = JSON.stringify(await dumpKv(kv));
  assertExcludes(stored, token, "the setup token");
  assertIncludes(stored, sha256Hex(token));
});
