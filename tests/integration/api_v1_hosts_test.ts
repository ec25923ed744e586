/** `/api/v1/hosts`: the Hosts page's list by cursor, a host's detail, decommission and reactivation. */
import assert from "node:assert/strict";
import { userActor } from "../../domain/auth.ts";
import { listHosts } from "../../domain/hosts.ts";
import { auditEntries } from "../helpers.ts";
import { apiWorld } from "./api_world.ts";

/** Every page of `path` (limit 2), following cursors; the ids of each page. */
async function pages(w: Awaited<ReturnType<typeof apiWorld>>, path: string) {
  const out: string[][] = [];
  let cursor = "";
  for (let i = 0; i < 20; i++) {
    const sep = path.includes("?") ? "&" : "?";
    const res = await w.api("operator", "GET", `${path}${sep}limit=2${cursor ? `&cursor=${cursor}` : ""}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    out.push(res.body.values.map((h: { hostname: string }) => h.hostname.split(".")[0]));
    if (!res.body.cursor) return out;
    cursor = encodeURIComponent(res.body.cursor);
  }
  throw new Error("the cursor never ran out");
}

Deno.test("GET /api/v1/hosts pages the Hosts page's filters and order by cursor, within the caller's scope", async () => {
  using w = await apiWorld();
  for (const name of ["web03", "web01", "web05", "web02", "web04"]) await w.enroll(name);
  await w.enroll("dev01", w.devScope);

  assert.deepEqual(await pages(w, "/api/v1/hosts"), [["web01", "web02"], ["web03", "web04"], ["web05"]]);
  assert.deepEqual(await pages(w, "/api/v1/hosts?sort=-hostname"), [["web05", "web04"], [
    "web03",
    "web02",
  ], ["web01"]]);
  assert.deepEqual(await pages(w, "/api/v1/hosts?q=WEB0&status=online"), [["web01", "web02"], [
    "web03",
    "web04",
  ], ["web05"]]);
  assert.deepEqual(await pages(w, "/api/v1/hosts?status=pending"), [[]]);

  // The same filter through the page's domain function gives the same hosts in the same order.
  const operator = userActor(w.users.operator);
  const viaPage = await listHosts(w.kv, operator, { sort: "-hostname", limit: 200 });
  const viaApi = await w.api("operator", "GET", "/api/v1/hosts?sort=-hostname&limit=200");
  assert.deepEqual(viaApi.body.values.map((h: { id: string }) => h.id), viaPage.values.map((h) => h.id));
  assert.equal(viaApi.body.total, 5);

  // Keyset paging: a host enrolled before the cursor's position neither shifts nor repeats a row.
  const first = await w.api("operator", "GET", "/api/v1/hosts?limit=2");
  await w.enroll("web00");
  const second = await w.api(
    "operator",
    "GET",
    `/api/v1/hosts?limit=2&cursor=${encodeURIComponent(first.body.cursor)}`,
  );
  assert.deepEqual(second.body.values.map((h: { hostname: string }) => h.hostname.split(".")[0]), [
    "web03",
    "web04",
  ]);
  // A cursor is bound to its sort order.
  const wrongSort = await w.api(
    "operator",
    "GET",
    `/api/v1/hosts?sort=-hostname&cursor=${encodeURIComponent(first.body.cursor)}`,
  );
  assert.equal(wrongSort.status, 422);
  assert.ok(wrongSort.body.error.fields.cursor);

  // Scope: an admin of every org sees Dev's host too; another account sees none; orgId narrows.
  const all = await w.api("admin", "GET", "/api/v1/hosts?limit=200");
  assert.equal(all.body.total, 7);
  const devOnly = await w.api("admin", "GET", `/api/v1/hosts?orgId=${w.dev.id}`);
  assert.deepEqual(devOnly.body.values.map((h: { hostname: string }) => h.hostname), ["dev01.acme.example"]);
  assert.deepEqual((await w.api("otherAdmin", "GET", "/api/v1/hosts")).body, {
    values: [],
    cursor: "",
    total: 0,
  });
  assert.equal((await w.api("viewer", "GET", "/api/v1/hosts")).status, 200);
  assert.equal((await w.api(null, "GET", "/api/v1/hosts")).status, 401);
});

Deno.test("GET /api/v1/hosts refuses a bad filter or an unknown query field with 422 naming it", async () => {
  using w = await apiWorld();
  await w.enroll("web01");
  for (
    const [query, field] of [
      ["stauts=online", "stauts"],
      ["status=sleeping", "status"],
      ["sort=os", "sort"],
      ["limit=0", "limit"],
      ["offset=2", "offset"],
      ["cursor=junk", "cursor"],
    ]
  ) {
    const res = await w.api("operator", "GET", `/api/v1/hosts?${query}`);
    assert.equal(res.status, 422, query);
    assert.equal(res.body.error.code, "invalid", query);
    assert.equal(typeof res.body.error.fields[field], "string", `${query}: ${JSON.stringify(res.body)}`);
  }
});

Deno.test("GET /api/v1/hosts/{id} answers the host with its assignments; outside the scope it is 404", async () => {
  using w = await apiWorld();
  const host = await w.enroll("db01");
  const assigned = await w.api("operator", "POST", `/api/v1/policies/${w.policy.id}/assignments`, {
    hostIds: [host.id],
  });
  assert.equal(assigned.status, 201);
  const res = await w.api("viewer", "GET", `/api/v1/hosts/${host.id}`);
  assert.equal(res.status, 200);
  assert.equal(res.body.hostname, "db01.acme.example");
  assert.deepEqual(
    res.body.assignments.map((a: { policyName: string; state: string }) => [a.policyName, a.state]),
    [["db-servers", "active"]],
  );
  for (const who of ["devOperator", "otherAdmin"] as const) {
    const hidden = await w.api(who, "GET", `/api/v1/hosts/${host.id}`);
    assert.equal(hidden.status, 404, who);
    assert.equal(hidden.body.error.code, "not_found");
  }
});

Deno.test("POST /api/v1/hosts/{id}/reactivate puts a decommissioned host back in service; refusals change nothing", async () => {
  using w = await apiWorld();
  const host = await w.enroll("db01");
  const [{ assignment }] = (await w.api("operator", "POST", `/api/v1/policies/${w.policy.id}/assignments`, {
    hostIds: [host.id],
  })).body.results;
  const reactivate = (who: Parameters<typeof w.api>[0], body: unknown) =>
    w.api(who, "POST", `/api/v1/hosts/${host.id}/reactivate`, body);

  // In service: nothing to reactivate.
  let before = await w.state();
  let res = await reactivate("operator", { policyId: w.policy.id });
  assert.equal(res.status, 409);
  assert.match(res.body.error.message, /not decommissioned/);
  assert.deepEqual(await w.state(), before);

  res = await w.api("operator", "POST", `/api/v1/hosts/${host.id}/decommission`, {
    confirmHostname: "db01.acme.example",
  });
  assert.equal(res.status, 200);
  assert.equal(res.body.host.status, "decommissioned");

  before = await w.state();
  for (
    const [who, body, status, field] of [
      ["viewer", { policyId: w.policy.id }, 403, null],
      ["devOperator", { policyId: w.policy.id }, 404, null],
      ["otherAdmin", { policyId: w.policy.id }, 404, null],
      ["operator", {}, 422, "policyId"],
      ["operator", { policyId: w.policy.id, force: true }, 422, "force"],
      ["operator", { policyId: "01J0000000000000000000NONE" }, 404, null],
    ] as const
  ) {
    res = await reactivate(who, body);
    assert.equal(res.status, status, `${who} ${JSON.stringify(body)}: ${JSON.stringify(res.body)}`);
    if (field) assert.equal(typeof res.body.error.fields[field], "string", JSON.stringify(res.body));
  }
  assert.deepEqual(await w.state(), before, "refusals changed nothing");

  res = await reactivate("operator", { policyId: w.policy.id });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual(
    [res.body.host.status, res.body.assignment.id, res.body.assignment.state, res.body.created],
    ["online", assignment.id, "active", false],
  );
  const audit = (await auditEntries(w.kv, w.tenant.account.id)).at(-1)!;
  assert.equal(audit.action, "assignment.reactivate");
  assert.match(audit.summary, /back in service/);
  const detail = await w.api("operator", "GET", `/api/v1/hosts/${host.id}`);
  assert.deepEqual([detail.body.status, detail.body.decommissionedAt], ["online", null]);
});
