/** The script library over `/api/v1/scripts`: create, list by cursor, read, update, delete (refused while used). */
import assert from "node:assert/strict";
import { auditEntries } from "../helpers.ts";
import { apiWorld } from "./api_world.ts";

type World = Awaited<ReturnType<typeof apiWorld>>;

const body = (w: World, name: string, orgId: string | null = w.ops.id) => ({
  name,
  orgId,
  interpreter: "bash",
  body: `echo ${name}`,
});

Deno.test("scripts: create, list by cursor, read with the policies that use it, update, delete once unused", async () => {
  using w = await apiWorld();
  let res = await w.api("operator", "POST", "/api/v1/scripts", body(w, "flush-redis"));
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const script = res.body;
  assert.deepEqual([script.orgId, script.accountId, script.interpreter], [
    w.ops.id,
    w.tenant.account.id,
    "bash",
  ]);
  for (const name of ["backup-etc", "checkpoint-pg"]) {
    assert.equal((await w.api("operator", "POST", "/api/v1/scripts", body(w, name))).status, 201);
  }
  const devScript =
    (await w.api("devOperator", "POST", "/api/v1/scripts", body(w, "dev-only", w.dev.id))).body;

  res = await w.api("viewer", "GET", "/api/v1/scripts?limit=2");
  assert.deepEqual(res.body.values.map((s: { name: string }) => s.name), ["backup-etc", "checkpoint-pg"]);
  const next = await w.api(
    "viewer",
    "GET",
    `/api/v1/scripts?limit=2&cursor=${encodeURIComponent(res.body.cursor)}`,
  );
  assert.deepEqual([next.body.values.map((s: { name: string }) => s.name), next.body.cursor], [[
    "flush-redis",
  ], ""]);
  res = await w.api("viewer", "GET", "/api/v1/scripts?q=REDIS");
  assert.deepEqual(res.body.values.map((s: { id: string }) => s.id), [script.id]);
  res = await w.api("admin", "GET", `/api/v1/scripts?orgId=${w.dev.id}`);
  assert.deepEqual(res.body.values.map((s: { id: string }) => s.id), [devScript.id]);
  assert.deepEqual((await w.api("otherAdmin", "GET", "/api/v1/scripts")).body.values, []);

  // A hook runs the script: it names the policy, and the delete is refused naming it too.
  const hook = await w.api("operator", "POST", `/api/v1/policies/${w.policy.id}/hooks`, {
    type: "pre_backup",
    scriptId: script.id,
  });
  assert.equal(hook.status, 201);
  res = await w.api("viewer", "GET", `/api/v1/scripts/${script.id}`);
  assert.deepEqual([res.status, res.body.usedBy, res.body.body], [200, ["db-servers"], "echo flush-redis"]);
  const before = await w.state();
  res = await w.api("operator", "DELETE", `/api/v1/scripts/${script.id}`);
  assert.equal(res.status, 409);
  assert.equal(res.body.error.code, "conflict");
  assert.match(res.body.error.message, /db-servers/);
  assert.deepEqual(await w.state(), before, "the refused delete changed nothing");

  res = await w.api("operator", "PUT", `/api/v1/scripts/${script.id}`, {
    name: "flush-redis-v2",
    interpreter: "sh",
    body: "redis-cli SAVE",
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual([res.body.name, res.body.interpreter, res.body.orgId], ["flush-redis-v2", "sh", w.ops.id]);
  assert.equal((await w.api("operator", "DELETE", `/api/v1/hooks/${hook.body.id}`)).status, 204);
  res = await w.api("operator", "DELETE", `/api/v1/scripts/${script.id}`);
  assert.equal(res.status, 204);
  assert.equal((await w.api("operator", "GET", `/api/v1/scripts/${script.id}`)).status, 404);
  const actions = (await auditEntries(w.kv, w.tenant.account.id)).map((e) => e.action).filter((a) =>
    a.startsWith("script.")
  );
  assert.deepEqual(actions, [
    "script.create",
    "script.create",
    "script.create",
    "script.create",
    "script.update",
    "script.delete",
  ]);
});

Deno.test("scripts over /api/v1 refuse bad input, duplicates and other scopes, changing nothing", async () => {
  using w = await apiWorld();
  const script = (await w.api("operator", "POST", "/api/v1/scripts", body(w, "flush-redis"))).body;
  const one = `/api/v1/scripts/${script.id}`;
  const fields = { name: "renamed", interpreter: "bash", body: "true" };
  const before = await w.state();
  for (
    const [who, method, path, input, status, field] of [
      ["operator", "POST", "/api/v1/scripts", body(w, "FLUSH-REDIS"), 422, "name"],
      ["operator", "POST", "/api/v1/scripts", { ...body(w, "x"), interpreter: "cmd" }, 422, "interpreter"],
      ["operator", "POST", "/api/v1/scripts", { ...body(w, "x"), body: "  " }, 422, "body"],
      [
        "operator",
        "POST",
        "/api/v1/scripts",
        { ...body(w, "x"), accountId: w.other.account.id },
        422,
        "accountId",
      ],
      ["operator", "POST", "/api/v1/scripts", { ...body(w, "x"), shell: "bash" }, 422, "shell"],
      ["operator", "POST", "/api/v1/scripts", body(w, "x", w.dev.id), 422, "orgId"],
      // An account-level script needs a scope over every organization.
      ["operator", "POST", "/api/v1/scripts", body(w, "x", null), 403, null],
      ["viewer", "POST", "/api/v1/scripts", body(w, "x"), 403, null],
      ["operator", "PUT", one, { ...fields, orgId: w.dev.id }, 422, "orgId"],
      ["operator", "PUT", one, { name: "renamed" }, 422, "interpreter"],
      ["viewer", "PUT", one, fields, 403, null],
      ["viewer", "DELETE", one, undefined, 403, null],
      ["devOperator", "GET", one, undefined, 404, null],
      ["devOperator", "PUT", one, fields, 404, null],
      ["devOperator", "DELETE", one, undefined, 404, null],
      ["otherAdmin", "GET", one, undefined, 404, null],
      ["operator", "GET", "/api/v1/scripts?name=x", undefined, 422, "name"],
      ["operator", "GET", "/api/v1/scripts?cursor=AAAA", undefined, 422, "cursor"],
    ] as const
  ) {
    const res = await w.api(who, method, path, input);
    const where = `${who} ${method} ${path} ${JSON.stringify(input)}: ${JSON.stringify(res.body)}`;
    assert.equal(res.status, status, where);
    if (field) assert.equal(typeof res.body.error.fields[field], "string", where);
  }
  assert.deepEqual(await w.state(), before, "refusals changed nothing");
});
