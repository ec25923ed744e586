/**
 * Bad input is a 4xx, never a 500: every route that takes a cursor (read from the OpenAPI document for
 * the API, and every list page) answers a garbage cursor with 422 naming `cursor` (API) or the first
 * page with a notice (pages); no GET route fails on a garbage cursor or offset; and a form body that
 * cannot be read (`multipart/form-data` without a boundary, a broken multipart body) is a 400 on every
 * cookie-authenticated route, with no stack in the log.
 */
import assert from "node:assert/strict";
import { createApp } from "../../app.ts";
import { userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import { applyHeartbeat, sweepEngineHeartbeats } from "../../domain/engines.ts";
import { createChannel } from "../../domain/notification_channels.ts";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { createTarget } from "../../domain/storage.ts";
import { isEngineProtocol } from "../../routes/access.ts";
import {
  addUser,
  assertIncludes,
  Browser,
  createTenant,
  enrollTestHost,
  registerTestEngine,
  signInAs,
  TestClock,
} from "../helpers.ts";
import { createLogger } from "../../domain/log.ts";

const GARBAGE = [
  "xx",
  "AAAA",
  "-1",
  "%FF%FE",
  "x".repeat(3000),
  encodeURIComponent(btoa("junk that looks like a cursor")),
  "anVuaw.0123abcd",
];
const NOTICE = 'data-testid="cursor-notice"';

/** A tenant with an admin, a few users (audit entries), 12 offline BES (12 alerts), a policy and a channel. */
async function world() {
  const kv = await Deno.openKv(":memory:");
  const clock = new TestClock();
  const logs: string[] = [];
  const app = createApp({
    kv,
    config: testConfig(),
    clock: clock.now,
    logger: createLogger("debug", (line) => logs.push(line)),
  });
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops"], now);
  const org = tenant.orgs[0];
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", now);
  for (let i = 0; i < 4; i++) await addUser(kv, tenant, `user${i}@acme.example`, "viewer", [org], now);
  const scope = { accountId: tenant.account.id, orgId: org.id };
  const engines = [];
  for (let i = 0; i < 12; i++) {
    const { engine } = await registerTestEngine(kv, scope, now, `bes-${String(i).padStart(2, "0")}`);
    await applyHeartbeat(kv, engine.id, {
      version: "1.0.0",
      metrics: { cpuPercent: 1, memoryPercent: 1, diskPercent: 1, activeJobs: 0, uptimeSeconds: 1 },
    }, new Date(now.getTime() - 10 * 60_000));
    engines.push(engine);
  }
  await sweepEngineHeartbeats(kv, now); // an engine_offline alert each
  const masterKey = testConfig().masterKey!;
  const target = await createTarget(kv, systemActor("test"), {
    name: "target",
    besId: engines[0].id,
    type: "local",
    config: { path: "/srv/backup" },
  }, { now, masterKey });
  const policy = await createPolicy(kv, systemActor("test"), {
    name: "nightly",
    besId: engines[0].id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, now);
  const { channel } = await createChannel(kv, userActor(admin), {
    type: "webhook",
    name: "hook",
    url: "http://127.0.0.1:9/hook",
    orgId: org.id,
  }, { now, masterKey });
  const host = await enrollTestHost(kv, scope, "web01", now);
  const browser = new Browser(app);
  await signInAs(browser, kv, admin, now);
  const ids: Record<string, string> = {
    hostId: host.id,
    jobId: policy.id,
    policyId: policy.id,
    channelId: channel.id,
    engineId: engines[0].id,
    targetId: target.id,
    userId: admin.id,
    orgId: org.id,
  };
  return { kv, app, logs, browser, ids, [Symbol.dispose]: () => kv.close() };
}

/** Log lines that betray an unhandled error: a 500, the "unhandled error" line, or a stack. */
function failures(logs: string[]): string[] {
  return logs.filter((l) => /"status":5\d\d|unhandled error|\\n\s+at /.test(l));
}

async function getJson(browser: Browser, path: string) {
  const res = await browser.request(path, { headers: { accept: "application/json" } });
  return { status: res.status, body: await res.json() };
}

/** Every API route that takes a cursor, from the OpenAPI document (path with `{param}`s). */
async function cursorRoutesOfApi(browser: Browser): Promise<string[]> {
  const doc = (await getJson(browser, "/api/openapi.json")).body;
  const out: string[] = [];
  for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
    const get = item.get as { parameters?: Array<{ in: string; name: string }> } | undefined;
    if (get?.parameters?.some((p) => p.in === "query" && p.name === "cursor")) out.push(path);
  }
  return out.sort();
}

/** The list pages that take a cursor (each shows the notice for a refused one). */
const CURSOR_PAGES = [
  "/backup/alerts",
  "/backup/notifications",
  "/backup/notifications/channels/:channelId",
  "/admin/audit",
  "/backup/protected",
  "/backup/restore",
  "/backup/jobs/:jobId",
];

const fill = (path: string, ids: Record<string, string>) =>
  path.replace(/[:{](\w+)\}?/g, (_, name: string) => {
    assert.ok(ids[name], `no fixture id for ${name} in ${path}`);
    return ids[name];
  });

Deno.test("every route that takes a cursor: garbage is 422 naming `cursor` on the API, the first page with a notice on pages", async () => {
  using w = await world();
  const apiRoutes = await cursorRoutesOfApi(w.browser);
  assert.deepEqual(apiRoutes, [
    "/api/v1/alerts",
    "/api/v1/audit",
    "/api/v1/dashboard/heatmap",
    "/api/v1/hosts",
    "/api/v1/hosts/{hostId}/assignments",
    "/api/v1/jobs/{jobId}/runs",
    "/api/v1/notification-deliveries",
    "/api/v1/policies/{policyId}/assignments",
    "/api/v1/protected-objects",
    "/api/v1/replicas",
    "/api/v1/restore-points",
    "/api/v1/restores",
    "/api/v1/runs",
    "/api/v1/scripts",
  ], "a new route with a cursor: add it here (and to CURSOR_PAGES if it has a page)");
  for (const route of apiRoutes) {
    const path = fill(route, w.ids);
    const first = await getJson(w.browser, path);
    assert.equal(first.status, 200, `${path}: ${JSON.stringify(first.body)}`);
    for (const junk of GARBAGE) {
      const { status, body } = await getJson(w.browser, `${path}?cursor=${junk}`);
      const where = `${route}?cursor=${junk.slice(0, 20)}: ${JSON.stringify(body).slice(0, 200)}`;
      assert.equal(status, 422, where);
      assert.equal(body.error.code, "invalid", where);
      assert.equal(typeof body.error.message, "string", where);
      assert.equal(typeof body.error.fields?.cursor, "string", `${where}: the field is named`);
    }
  }
  for (const route of CURSOR_PAGES) {
    const path = fill(route, w.ids);
    const plain = await w.browser.get(path);
    const plainHtml = await plain.text();
    assert.equal(plain.status, 200, path);
    assert.ok(!plainHtml.includes(NOTICE), `${path}: no notice without a cursor`);
    for (const junk of GARBAGE) {
      const res = await w.browser.get(`${path}?cursor=${junk}`);
      const html = await res.text();
      assert.equal(res.status, 200, `${path}?cursor=${junk.slice(0, 20)}`);
      assertIncludes(html, NOTICE, `${path}?cursor=${junk.slice(0, 20)} shows the notice`);
      assertIncludes(html, "That page link is no longer valid; showing the first page.");
    }
  }
  assert.deepEqual(failures(w.logs), []);
});

Deno.test("valid cursors still page through every alert and audit entry once (API and pages show no notice)", async () => {
  using w = await world();
  for (const list of ["/api/v1/alerts?status=open", "/api/v1/audit?"]) {
    const seen: string[] = [];
    let cursor = "";
    for (let n = 0; n < 20; n++) {
      const { status, body } = await getJson(
        w.browser,
        `${list}&limit=5${cursor ? `&cursor=${cursor}` : ""}`,
      );
      assert.equal(status, 200, JSON.stringify(body));
      assert.ok(body.values.length <= 5, `${list}: a page holds at most its limit`);
      seen.push(...body.values.map((v: { id: string }) => v.id));
      if (!body.cursor) break;
      cursor = encodeURIComponent(body.cursor);
    }
    assert.equal(new Set(seen).size, seen.length, `${list}: no row twice`);
    if (list.includes("alerts")) assert.equal(seen.length, 12, "all 12 alerts, none skipped between pages");
    else assert.ok(seen.length >= 8, `${list}: ${seen.length} audit entries`);
  }
  const first = await (await w.browser.get("/backup/alerts?limit=5")).text();
  const older = /href="\?([^"]*cursor=[^"]*)">Older alerts/.exec(first)?.[1];
  assert.ok(older, "the first page links to the next");
  const second = await (await w.browser.get(`/backup/alerts?${older.replaceAll("&amp;", "&")}`)).text();
  assert.ok(!second.includes(NOTICE), "a cursor the page handed out is valid");
  assert.deepEqual(failures(w.logs), []);
});

Deno.test("no GET route answers 500 to a garbage cursor or offset", async () => {
  using w = await world();
  const paths = new Set<string>();
  for (const r of w.app.routes) {
    if (r.method !== "GET" || r.path.includes("*") || isEngineProtocol(r.path)) continue;
    const params = [...r.path.matchAll(/:(\w+)/g)].map((m) => m[1]);
    if (params.every((p) => w.ids[p])) paths.add(fill(r.path, w.ids));
  }
  assert.ok(paths.size > 40, `the GET routes are enumerated (${paths.size})`);
  for (const path of paths) {
    for (const junk of GARBAGE) {
      for (
        const query of [`cursor=${junk}`, `offset=${junk}`, `cursor=${junk}&offset=${junk}&limit=${junk}`]
      ) {
        const res = await w.browser.request(`${path}?${query}`);
        await res.body?.cancel();
        assert.ok(res.status < 500, `${path}?${query.slice(0, 40)}: ${res.status}`);
      }
    }
  }
  assert.deepEqual(failures(w.logs), []);
});

Deno.test("an unreadable form body is a 400 on every cookie-authenticated route, with no stack in the log", async () => {
  using w = await world();
  const routes = new Set<string>();
  for (const r of w.app.routes) {
    if (r.method === "GET" || r.method === "ALL" || isEngineProtocol(r.path)) continue;
    routes.add(`${r.method} ${r.path.replace(/:\w+/g, (m) => w.ids[m.slice(1)] ?? "0".repeat(26))}`);
  }
  assert.ok(routes.size > 60, `the state-changing routes are enumerated (${routes.size})`);
  const csrf = await w.browser.csrfFor("/backup/dashboard");
  const anonymous = new Browser(w.app);
  const anonymousCsrf = await anonymous.csrfFor("/login");
  const bodies: Array<[string, string]> = [
    ["multipart/form-data", `_csrf=${csrf}`],
    ["multipart/form-data; boundary=----cadres", `not a multipart body _csrf=${csrf}`],
  ];
  for (const route of routes) {
    const [method, path] = route.split(" ");
    for (const [type, body] of bodies) {
      // The token in the (unreadable) body: the CSRF check is what reads it.
      const res = await w.browser.request(path, {
        method,
        headers: { "content-type": type, origin: "http://localhost:8000" },
        body,
      });
      const text = await res.text();
      assert.equal(res.status, 400, `${route} (${type}): ${res.status} ${text.slice(0, 120)}`);
      if (path.startsWith("/api/")) assert.equal(JSON.parse(text).error.code, "malformed", route);
      else assertIncludes(text, "The form could not be read");
      // The token in the header: the route itself reads (or ignores) the body.
      const withHeader = await w.browser.request(path, {
        method,
        headers: { "content-type": type, origin: "http://localhost:8000", "x-csrf-token": csrf },
        body,
      });
      await withHeader.body?.cancel();
      assert.ok(withHeader.status < 500, `${route} (${type}, token in the header): ${withHeader.status}`);
    }
  }
  // Before sign-in (the pre-session CSRF cookie): the same.
  for (const path of ["/login", "/setup"]) {
    const res = await anonymous.request(path, {
      method: "POST",
      headers: { "content-type": "multipart/form-data", origin: "http://localhost:8000" },
      body: `_csrf=${anonymousCsrf}`,
    });
    await res.body?.cancel();
    assert.equal(res.status, 400, path);
  }
  assert.deepEqual(failures(w.logs), [], "no 500 and no stack in the log");
});
