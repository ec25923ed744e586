/** Sessions (cookie attributes, rotation, idle and absolute expiry, logout) and login rate limits. */
import assert from "node:assert/strict";
import { createApp } from "../../app.ts";
import { LOGIN_MAX_PER_EMAIL, LOGIN_MAX_PER_IP, SESSION_IDLE_MS, SESSION_TTL_MS } from "../../domain/auth.ts";
import { sha256Hex } from "../../domain/ids.ts";
import { systemActor } from "../../domain/rbac.ts";
import { resetPassword, updateUser } from "../../domain/users.ts";
import { testConfig } from "../../domain/config.ts";
import { createLogger } from "../../domain/log.ts";
import {
  addUser,
  assertIncludes,
  auditEntries,
  Browser,
  createTenant,
  PASSWORD,
  signInAs,
  testApp,
  TestClock,
} from "../helpers.ts";

const HOUR = 3600_000;
const MINUTE = 60_000;
const EMAIL = "viewer@acme.example";

async function fixture(kv: Deno.Kv) {
  const t = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops"], t.clock.now());
  const user = await addUser(kv, tenant, EMAIL, "viewer", "all", t.clock.now());
  return { ...t, tenant, user };
}

/** The Set-Cookie line for `name` in a response. */
function setCookieLine(res: Response, name: string): string {
  const line = res.headers.getSetCookie().find((l) => l.startsWith(`${name}=`));
  assert.ok(line, `no Set-Cookie for ${name} in ${JSON.stringify(res.headers.getSetCookie())}`);
  return line;
}

function attributes(line: string): string[] {
  return line.split(";").slice(1).map((a) => a.trim().toLowerCase());
}

/** GETs a signed-in page; returns its status and redirect target. */
async function dashboard(browser: Browser): Promise<{ status: number; location: string | null }> {
  const res = await browser.get("/backup/dashboard");
  await res.body?.cancel();
  return { status: res.status, location: res.headers.get("location") };
}

/** A browser that carries only the given session cookie. */
function browserWith(browser: Browser, cookie: string): Browser {
  const other = new Browser(browser.app, browser.ip);
  other.cookies.set("cadres_session", cookie);
  return other;
}

Deno.test("POST /login sets cadres_session HttpOnly, SameSite=Lax and not Secure on an http base URL", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, tenant } = await fixture(kv);
  const browser = new Browser(app);
  const res = await browser.login(EMAIL);
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), "/");
  const attrs = attributes(setCookieLine(res, "cadres_session"));
  assert.ok(attrs.includes("httponly"), attrs.join("; "));
  assert.ok(attrs.includes("samesite=lax"), attrs.join("; "));
  assert.ok(attrs.includes("path=/"), attrs.join("; "));
  assert.ok(!attrs.includes("secure"), attrs.join("; "));
  assert.deepEqual(await dashboard(browser), { status: 200, location: null });
  assert.equal((await auditEntries(kv, tenant.account.id)).at(-1)?.action, "auth.login");
});

Deno.test("POST /login on an https base URL sets a Secure session cookie", async () => {
  await using kv = await Deno.openKv(":memory:");
  const clock = new TestClock();
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  await addUser(kv, tenant, EMAIL, "viewer", "all", clock.now());
  const app = createApp({
    kv,
    config: testConfig({ baseUrl: "https://x", secureCookies: true }),
    clock: clock.now,
    logger: createLogger("error", () => {}),
  });
  const browser = new Browser(app);
  const res = await browser.login(EMAIL);
  assert.equal(res.status, 303);
  const attrs = attributes(setCookieLine(res, "cadres_session"));
  assert.ok(attrs.includes("secure"), attrs.join("; "));
  assert.ok(attrs.includes("httponly"), attrs.join("; "));
  assert.ok(attrs.includes("samesite=lax"), attrs.join("; "));
  assert.match(res.headers.get("strict-transport-security") ?? "", /max-age=\d+/);
});

Deno.test("POST /login with a wrong password answers 401 and sets no session", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, tenant } = await fixture(kv);
  const browser = new Browser(app);
  const res = await browser.login(EMAIL, "not the password");
  assert.equal(res.status, 401);
  assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
  assertIncludes(await res.text(), "Wrong email or password");
  assert.equal(browser.cookies.has("cadres_session"), false);
  assert.equal((await auditEntries(kv, tenant.account.id)).at(-1)?.action, "auth.login_failed");
});

Deno.test("POST /login rotates the session id and ends the previous session", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, clock, user } = await fixture(kv);
  const browser = new Browser(app);
  await signInAs(browser, kv, user, clock.now());
  const before = browser.cookies.get("cadres_session")!;
  const res = await browser.postForm("/login", { email: EMAIL, password: PASSWORD }, {
    tokenFrom: "/backup/dashboard",
  });
  assert.equal(res.status, 303);
  const after = browser.cookies.get("cadres_session")!;
  assert.ok(after);
  assert.notEqual(after, before);
  assert.deepEqual(await dashboard(browser), { status: 200, location: null });
  assert.deepEqual(await dashboard(browserWith(browser, before)), {
    status: 302,
    location: "/login?next=%2Fbackup%2Fdashboard",
  });
  assert.equal((await kv.get(["sessions", sha256Hex(before)])).value, null);
});

Deno.test("POST /login ignores a session id planted before sign-in", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app } = await fixture(kv);
  const browser = new Browser(app);
  const planted = "attacker-chosen-session-value-0123456789";
  browser.cookies.set("cadres_session", planted);
  const res = await browser.login(EMAIL);
  assert.equal(res.status, 303);
  const issued = browser.cookies.get("cadres_session")!;
  assert.notEqual(issued, planted);
  assert.equal((await kv.get(["sessions", sha256Hex(planted)])).value, null);
  assert.ok((await kv.get(["sessions", sha256Hex(issued)])).value);
});

Deno.test("a session idle for 2 hours is expired and redirects to /login", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, clock, user } = await fixture(kv);
  const browser = new Browser(app);
  await signInAs(browser, kv, user, clock.now());
  const cookie = browser.cookies.get("cadres_session")!;
  clock.advance(SESSION_IDLE_MS - MINUTE);
  assert.deepEqual(await dashboard(browser), { status: 200, location: null }, "still alive at 1h59");
  clock.advance(SESSION_IDLE_MS);
  assert.deepEqual(await dashboard(browser), {
    status: 302,
    location: "/login?next=%2Fbackup%2Fdashboard",
  });
  assert.equal((await kv.get(["sessions", sha256Hex(cookie)])).value, null, "removed server-side");
});

Deno.test("a session expires 12 hours after sign-in even with activity every hour", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, clock } = await fixture(kv);
  const browser = new Browser(app);
  assert.equal((await browser.login(EMAIL)).status, 303);
  for (let hour = 1; hour < SESSION_TTL_MS / HOUR; hour++) {
    clock.advance(HOUR);
    assert.deepEqual(await dashboard(browser), { status: 200, location: null }, `hour ${hour}`);
  }
  clock.advance(HOUR);
  assert.deepEqual(await dashboard(browser), {
    status: 302,
    location: "/login?next=%2Fbackup%2Fdashboard",
  });
});

Deno.test("an expired session gets 401 JSON on the API", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, clock, user } = await fixture(kv);
  const browser = new Browser(app);
  await signInAs(browser, kv, user, clock.now());
  assert.equal((await browser.get("/api/v1/me")).status, 200);
  clock.advance(SESSION_IDLE_MS);
  const res = await browser.get("/api/v1/me");
  assert.equal(res.status, 401);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/);
  assert.equal((await res.json()).error.code, "unauthorized");
});

Deno.test("POST /logout ends the session server-side", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app } = await fixture(kv);
  const browser = new Browser(app);
  assert.equal((await browser.login(EMAIL)).status, 303);
  const cookie = browser.cookies.get("cadres_session")!;
  const res = await browser.postForm("/logout", {}, { tokenFrom: "/backup/dashboard" });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), "/login");
  assert.equal(browser.cookies.has("cadres_session"), false, "the cookie is cleared");
  assert.deepEqual(await dashboard(browserWith(browser, cookie)), {
    status: 302,
    location: "/login?next=%2Fbackup%2Fdashboard",
  });
  assert.equal((await kv.get(["sessions", sha256Hex(cookie)])).value, null);
});

Deno.test("POST /login follows only same-site relative next paths", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app } = await fixture(kv);
  const cases: Array<[string, string]> = [
    ["/admin/tokens?offset=0", "/admin/tokens?offset=0"],
    ["//evil.example/", "/"],
    ["https://evil.example/", "/"],
    ["/\\evil.example", "/"],
    ["javascript:alert(1)", "/"],
  ];
  for (const [next, expected] of cases) {
    const browser = new Browser(app);
    const res = await browser.postForm("/login", { email: EMAIL, password: PASSWORD, next });
    assert.equal(res.status, 303, next);
    assert.equal(res.headers.get("location"), expected, next);
  }
});

Deno.test("disabling a user or resetting their password ends their sessions", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, clock, tenant, user } = await fixture(kv);
  const other = await addUser(kv, tenant, "other@acme.example", "viewer", "all", clock.now());
  const system = systemActor("test");
  const first = new Browser(app);
  await signInAs(first, kv, user, clock.now());
  const second = new Browser(app);
  await signInAs(second, kv, other, clock.now());
  assert.equal((await dashboard(first)).status, 200);
  assert.equal((await dashboard(second)).status, 200);

  await updateUser(
    kv,
    system,
    user.id,
    { name: user.name, role: user.role, orgScope: "all", disabled: true },
    clock.now(),
  );
  assert.equal((await dashboard(first)).status, 302);
  assert.equal((await kv.get(["users", user.id])).value !== null, true);

  await resetPassword(kv, system, other.id, {}, clock.now());
  assert.equal((await dashboard(second)).status, 302);
});

Deno.test("POST /login refuses the 6th attempt for one email with 429 and Retry-After, even with the right password", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, clock } = await fixture(kv);
  const browser = new Browser(app);
  clock.advance(5 * MINUTE); // 10:05, inside the window 10:00–10:15
  for (let i = 0; i < LOGIN_MAX_PER_EMAIL; i++) {
    // Case and surrounding spaces do not make a new email.
    const email = i % 2 ? EMAIL.toUpperCase() : ` ${EMAIL}`;
    const res = await browser.login(email, `wrong password ${i}`);
    assert.equal(res.status, 401, `attempt ${i + 1}`);
    await res.body?.cancel();
  }
  const res = await browser.login(EMAIL, PASSWORD);
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("retry-after"), "600");
  assert.match(res.headers.get("content-type") ?? "", /^text\/html/);
  assertIncludes(await res.text(), "Too many failed sign-in attempts");
  assert.equal(browser.cookies.has("cadres_session"), false);
});

Deno.test("POST /login works again once Retry-After has passed", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app, clock } = await fixture(kv);
  const browser = new Browser(app);
  for (let i = 0; i < LOGIN_MAX_PER_EMAIL; i++) {
    await (await browser.login(EMAIL, "wrong password")).body?.cancel();
  }
  const limited = await browser.login(EMAIL);
  assert.equal(limited.status, 429);
  await limited.body?.cancel();
  const retryAfter = Number(limited.headers.get("retry-after"));
  assert.ok(retryAfter > 0 && retryAfter <= 15 * 60, `Retry-After ${retryAfter}`);
  clock.advance(retryAfter * 1000 - 1000);
  const stillLimited = await browser.login(EMAIL);
  assert.equal(stillLimited.status, 429);
  await stillLimited.body?.cancel();
  clock.advance(1000);
  const res = await browser.login(EMAIL);
  assert.equal(res.status, 303);
  assert.ok(browser.cookies.get("cadres_session"));
});

Deno.test("POST /login limits one IP to 30 failures across emails; another IP still signs in", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app } = await fixture(kv);
  const attacker = new Browser(app, "198.51.100.7");
  for (let i = 0; i < LOGIN_MAX_PER_IP; i++) {
    const res = await attacker.login(`nobody${i}@acme.example`, "guess");
    assert.equal(res.status, 401, `attempt ${i + 1}`);
    await res.body?.cancel();
  }
  const blocked = await attacker.login(EMAIL, PASSWORD);
  assert.equal(blocked.status, 429);
  assert.ok(Number(blocked.headers.get("retry-after")) > 0);
  await blocked.body?.cancel();
  assert.equal(attacker.cookies.has("cadres_session"), false);

  const other = new Browser(app, "203.0.113.9");
  const res = await other.login(EMAIL, PASSWORD);
  assert.equal(res.status, 303);
  assert.ok(other.cookies.get("cadres_session"));
});

Deno.test("POST /login limit holds against concurrent guesses for one email", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { app } = await fixture(kv);
  const browser = new Browser(app);
  const token = await browser.csrfFor("/login");
  const guesses = await Promise.all(
    Array.from(
      { length: 12 },
      (_, i) => browser.postForm("/login", { email: EMAIL, password: `guess number ${i}` }, { csrf: token }),
    ),
  );
  const statuses = guesses.map((r) => r.status);
  await Promise.all(guesses.map((r) => r.body?.cancel()));
  const verified = statuses.filter((s) => s === 401).length;
  assert.ok(
    verified <= LOGIN_MAX_PER_EMAIL,
    `${verified} passwords were checked for one email in one window (limit ${LOGIN_MAX_PER_EMAIL}): ${statuses}`,
  );
  assert.equal(statuses.filter((s) => s === 429).length, 12 - verified);
});
