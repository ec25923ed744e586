/**
 * Assignments over `/api/v1`: assigning many hosts in one call (each reported), listing per policy and
 * per host, changing the state, removing — and the policy page's form going through the same function.
 */
import assert from "node:assert/strict";
import { getProtectedObject, listProtectedByHost } from "../../domain/protected.ts";
import { createPolicy } from "../../domain/policies.ts";
import { auditEntries, Browser, signInAs } from "../helpers.ts";
import { apiWorld, system } from "./api_world.ts";

type World = Awaited<ReturnType<typeof apiWorld>>;

const assign = (w: World, who: Parameters<World["api"]>[0], body: unknown, policyId = w.policy.id) =>
  w.api(who, "POST", `/api/v1/policies/${policyId}/assignments`, body);

Deno.test("POST /api/v1/policies/{id}/assignments assigns many hosts in one call and reports each one", async () => {
  using w = await apiWorld();
  const [web01, web02, web03] = [await w.enroll("web01"), await w.enroll("web02"), await w.enroll("web03")];
  const devHost = await w.enroll("dev01", w.devScope);
  assert.equal((await assign(w, "operator", { hostIds: [web03.id] })).status, 201);
  const auditBefore = (await auditEntries(w.kv, w.tenant.account.id)).length;

  const res = await assign(w, "operator", {
    hostIds: [web01.id, web02.id, web03.id, devHost.id, "01J0000000000000000000NONE"],
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  assert.deepEqual([res.body.assigned, res.body.failed], [2, 3]);
  assert.deepEqual(
    res.body.results.map((r: { hostId: string; ok: boolean; status: number }) => [r.hostId, r.ok, r.status]),
    [
      [web01.id, true, 201],
      [web02.id, true, 201],
      [web03.id, false, 422],
      [devHost.id, false, 404],
      ["01J0000000000000000000NONE", false, 404],
    ],
  );
  const [first, , already, hidden] = res.body.results;
  assert.deepEqual([first.created, first.assignment.state, first.assignment.policyId], [
    true,
    "active",
    w.policy.id,
  ]);
  assert.equal(already.error.code, "invalid");
  assert.match(already.error.message, /already assigned/);
  assert.equal(typeof already.error.fields.hostId, "string");
  assert.equal(hidden.error.code, "not_found");
  // One audit entry per assigned host, each written with its assignment; the refused ones wrote none.
  const audit = (await auditEntries(w.kv, w.tenant.account.id)).slice(auditBefore);
  assert.deepEqual(audit.map((e) => e.action), ["assignment.create", "assignment.create"]);
  // Each assigned host got its protected object for the policy, as the page's assign does.
  for (const host of [web01, web02]) {
    const [object] = await listProtectedByHost(w.kv, system, host.id);
    assert.equal(object.protection, "active");
  }
  // The Dev host is untouched although an admin could have assigned it.
  assert.deepEqual(await listProtectedByHost(w.kv, system, devHost.id), []);

  // Nothing assigned: 200, each result says why.
  const again = await assign(w, "operator", { hostIds: [web01.id] });
  assert.equal(again.status, 200);
  assert.deepEqual([again.body.assigned, again.body.results[0].status], [0, 422]);
});

Deno.test("POST /api/v1/policies/{id}/assignments refuses bad input and other scopes, changing nothing", async () => {
  using w = await apiWorld();
  const host = await w.enroll("web01");
  const before = await w.state();
  for (
    const [who, body, status, field] of [
      ["operator", {}, 422, "hostIds"],
      ["operator", { hostIds: [] }, 422, "hostIds"],
      ["operator", { hostIds: [host.id, host.id] }, 422, "hostIds"],
      ["operator", { hostIds: host.id }, 422, "hostIds"],
      ["operator", { hostIds: Array.from({ length: 501 }, (_, i) => `h${i}`) }, 422, "hostIds"],
      ["operator", { hostIds: [host.id], hostId: host.id }, 422, "hostId"],
      ["operator", "{not json", 400, null],
      ["viewer", { hostIds: [host.id] }, 403, null],
      ["devOperator", { hostIds: [host.id] }, 404, null],
      ["otherAdmin", { hostIds: [host.id] }, 404, null],
    ] as const
  ) {
    const res = await assign(w, who, body);
    const where = `${who} ${JSON.stringify(body).slice(0, 60)}: ${JSON.stringify(res.body).slice(0, 200)}`;
    assert.equal(res.status, status, where);
    if (field) assert.equal(typeof res.body.error.fields[field], "string", where);
  }
  assert.deepEqual(await w.state(), before, "refusals changed nothing");
});

Deno.test("GET assignments of a policy and of a host page by cursor, by hostname and by policy name", async () => {
  using w = await apiWorld();
  const hosts = [await w.enroll("web02"), await w.enroll("web03"), await w.enroll("web01")];
  await assign(w, "operator", { hostIds: hosts.map((h) => h.id) });
  const second = await createPolicy(w.kv, system, {
    name: "app-servers",
    besId: w.engine.id,
    targetId: w.target.id,
    backupType: "file",
    fullSchedule: "0 3 * * 0",
  }, w.clock.now());
  await assign(w, "operator", { hostIds: [hosts[0].id] }, second.id);

  const path = `/api/v1/policies/${w.policy.id}/assignments`;
  const page1 = await w.api("viewer", "GET", `${path}?limit=2`);
  assert.equal(page1.status, 200);
  assert.deepEqual(page1.body.values.map((a: { hostname: string }) => a.hostname), [
    "web01.acme.example",
    "web02.acme.example",
  ]);
  assert.equal(page1.body.values[0].hostStatus, "online");
  const page2 = await w.api(
    "viewer",
    "GET",
    `${path}?limit=2&cursor=${encodeURIComponent(page1.body.cursor)}`,
  );
  assert.deepEqual(
    [page2.body.values.map((a: { hostname: string }) => a.hostname), page2.body.cursor],
    [["web03.acme.example"], ""],
  );
  const ofHost = await w.api("viewer", "GET", `/api/v1/hosts/${hosts[0].id}/assignments`);
  assert.deepEqual(ofHost.body.values.map((a: { policyName: string }) => a.policyName), [
    "app-servers",
    "db-servers",
  ]);
  // A cursor of one list is not one of another.
  const foreign = await w.api(
    "viewer",
    "GET",
    `/api/v1/hosts/${hosts[0].id}/assignments?cursor=${encodeURIComponent(page1.body.cursor)}`,
  );
  assert.equal(foreign.status, 422);
  assert.ok(foreign.body.error.fields.cursor);
  assert.ok((await w.api("viewer", "GET", `${path}?sort=hostname`)).body.error.fields.sort);
  for (const who of ["devOperator", "otherAdmin"] as const) {
    assert.equal((await w.api(who, "GET", path)).status, 404, who);
    assert.equal((await w.api(who, "GET", `/api/v1/hosts/${hosts[0].id}/assignments`)).status, 404, who);
  }
});

Deno.test("PATCH and DELETE /api/v1/assignments/{id} change the state and remove, with the page's rules", async () => {
  using w = await apiWorld();
  const host = await w.enroll("web01");
  const { assignment } = (await assign(w, "operator", { hostIds: [host.id] })).body.results[0];
  const path = `/api/v1/assignments/${assignment.id}`;

  const before = await w.state();
  for (
    const [who, method, body, status, field] of [
      ["operator", "PATCH", { state: "sleeping" }, 422, "state"],
      ["operator", "PATCH", { state: "paused", note: "x" }, 422, "note"],
      ["operator", "PATCH", {}, 422, "state"],
      ["viewer", "PATCH", { state: "paused" }, 403, null],
      ["viewer", "DELETE", undefined, 403, null],
      ["devOperator", "PATCH", { state: "paused" }, 404, null],
      ["devOperator", "DELETE", undefined, 404, null],
      ["otherAdmin", "GET", undefined, 404, null],
    ] as const
  ) {
    const res = await w.api(who, method, path, body);
    const where = `${who} ${method} ${JSON.stringify(body)}: ${JSON.stringify(res.body)}`;
    assert.equal(res.status, status, where);
    if (field) assert.equal(typeof res.body.error.fields[field], "string", where);
  }
  assert.deepEqual(await w.state(), before, "refusals changed nothing");

  let res = await w.api("operator", "PATCH", path, { state: "paused" });
  assert.equal(res.status, 200);
  assert.equal(res.body.state, "paused");
  const [object] = await listProtectedByHost(w.kv, system, host.id);
  assert.equal(object.protection, "paused", "the protected object follows in the same write");
  res = await w.api("viewer", "GET", path);
  assert.deepEqual([res.body.state, res.body.policyName, res.body.hostname], [
    "paused",
    "db-servers",
    "web01.acme.example",
  ]);
  assert.equal((await auditEntries(w.kv, w.tenant.account.id)).at(-1)!.action, "assignment.state");

  res = await w.api("operator", "DELETE", path);
  assert.equal(res.status, 204);
  assert.equal((await w.api("operator", "GET", path)).status, 404);
  assert.equal((await w.api("operator", "DELETE", path)).status, 404);
  assert.equal((await auditEntries(w.kv, w.tenant.account.id)).at(-1)!.action, "assignment.remove");
  // Removing keeps the protected object (and its restore points), marked unprotected.
  assert.equal((await getProtectedObject(w.kv, object.id))?.protection, "unprotected");
});

Deno.test("the policy page's assign and state forms go through the API's domain functions and schemas", async () => {
  using w = await apiWorld();
  const host = await w.enroll("web01");
  const browser = new Browser(w.app);
  await signInAs(browser, w.kv, w.users.operator, w.clock.now());
  let res = await browser.postForm(`/backup/policies/${w.policy.id}/assignments`, { hostId: host.id }, {
    tokenFrom: `/backup/policies/${w.policy.id}`,
  });
  assert.equal(res.status, 303);
  const api = await w.api("operator", "GET", `/api/v1/policies/${w.policy.id}/assignments`);
  assert.deepEqual(api.body.values.map((a: { hostId: string }) => a.hostId), [host.id]);
  // The API's refusal of the same host is the page's: already assigned.
  const twice = await assign(w, "operator", { hostIds: [host.id] });
  res = await browser.postForm(`/backup/policies/${w.policy.id}/assignments`, { hostId: host.id }, {
    tokenFrom: `/backup/policies/${w.policy.id}`,
  });
  const page = await (await browser.get(res.headers.get("location")!)).text();
  assert.match(twice.body.results[0].error.message, /already assigned/);
  assert.ok(
    page.includes(`Not assigned: ${twice.body.results[0].error.message}`),
    "the page shows the same refusal",
  );
  res = await browser.postForm(`/backup/assignments/${api.body.values[0].id}/state`, { state: "bogus" }, {
    tokenFrom: `/backup/policies/${w.policy.id}`,
  });
  assert.equal(res.status, 303);
  assert.equal(
    (await w.api("operator", "GET", `/api/v1/assignments/${api.body.values[0].id}`)).body.state,
    "active",
  );
});
