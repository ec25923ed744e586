/** App hooks over `/api/v1` (a policy's hooks, one hook) and the template catalogues the policy form offers. */
import assert from "node:assert/strict";
import { HOOK_TEMPLATES, hookPlan, TEMPLATE_NAMES } from "../../domain/hooks.ts";
import { EXCLUSION_TEMPLATES } from "../../domain/policies.ts";
import { createScript } from "../../domain/scripts.ts";
import { auditEntries } from "../helpers.ts";
import { apiWorld, system } from "./api_world.ts";

type World = Awaited<ReturnType<typeof apiWorld>>;

async function scriptIn(w: World, orgId: string, name = "quiesce") {
  return await createScript(w.kv, system, {
    name,
    interpreter: "bash",
    body: "sync",
    orgId,
    accountId: w.tenant.account.id,
  }, w.clock.now());
}

Deno.test("GET /api/v1/hook-templates and /api/v1/exclusion-templates list the catalogues the policy form offers", async () => {
  using w = await apiWorld();
  const hooks = await w.api("viewer", "GET", "/api/v1/hook-templates");
  assert.equal(hooks.status, 200);
  assert.deepEqual(hooks.body.values.map((t: { name: string }) => t.name), [...TEMPLATE_NAMES]);
  for (const t of hooks.body.values) {
    const expected = HOOK_TEMPLATES[t.name as keyof typeof HOOK_TEMPLATES];
    assert.deepEqual([t.label, t.pre, t.post, t.interpreter], [
      expected.label,
      expected.pre,
      expected.post,
      expected.interpreter,
    ]);
  }
  assert.equal(hooks.body.cursor, "");
  const exclusions = await w.api("viewer", "GET", "/api/v1/exclusion-templates");
  assert.equal(exclusions.status, 200);
  assert.deepEqual(
    Object.fromEntries(
      exclusions.body.values.map((t: { name: string; patterns: string[] }) => [t.name, t.patterns]),
    ),
    Object.fromEntries(Object.entries(EXCLUSION_TEMPLATES).map(([name, t]) => [name, t.patterns])),
  );
  assert.equal((await w.api(null, "GET", "/api/v1/hook-templates")).status, 401);
});

Deno.test("hooks: create, list in execution order, read, update and delete through /api/v1, audited", async () => {
  using w = await apiWorld();
  const script = await scriptIn(w, w.ops.id);
  const path = `/api/v1/policies/${w.policy.id}/hooks`;

  let res = await w.api("operator", "POST", path, { type: "post_backup", template: "postgresql" });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const post = res.body;
  assert.deepEqual([post.template, post.scriptId, post.timeoutSeconds, post.sequence, post.failOnError], [
    "postgresql",
    null,
    300,
    100,
    true,
  ]);
  res = await w.api("operator", "POST", path, {
    type: "pre_backup",
    scriptId: script.id,
    timeoutSeconds: 60,
    sequence: 5,
    failOnError: false,
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const pre = res.body;

  res = await w.api("viewer", "GET", path);
  assert.equal(res.status, 200);
  assert.deepEqual(
    res.body.values.map((h: { id: string; scriptName: string | null; templateLabel: string | null }) => [
      h.id,
      h.scriptName,
      h.templateLabel,
    ]),
    [[pre.id, "quiesce", null], [post.id, null, "PostgreSQL"]],
  );
  assert.deepEqual((await hookPlan(w.kv, w.policy.id)).map((h) => [h.id, h.body]), [
    [pre.id, "sync"],
    [post.id, HOOK_TEMPLATES.postgresql.post],
  ]);
  res = await w.api("viewer", "GET", `/api/v1/hooks/${pre.id}`);
  assert.deepEqual([res.status, res.body.scriptName, res.body.failOnError], [200, "quiesce", false]);

  res = await w.api("operator", "PUT", `/api/v1/hooks/${pre.id}`, {
    type: "pre_snapshot",
    template: "mysql",
    timeoutSeconds: 30,
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.deepEqual([res.body.type, res.body.template, res.body.scriptId, res.body.timeoutSeconds], [
    "pre_snapshot",
    "mysql",
    null,
    30,
  ]);
  res = await w.api("operator", "DELETE", `/api/v1/hooks/${post.id}`);
  assert.equal(res.status, 204);
  assert.equal((await w.api("operator", "GET", `/api/v1/hooks/${post.id}`)).status, 404);
  assert.equal((await w.api("operator", "DELETE", `/api/v1/hooks/${post.id}`)).status, 404);
  assert.deepEqual((await w.api("viewer", "GET", path)).body.values.map((h: { id: string }) => h.id), [
    pre.id,
  ]);
  const actions = (await auditEntries(w.kv, w.tenant.account.id)).map((e) => e.action).filter((a) =>
    a.startsWith("hook.")
  );
  assert.deepEqual(actions, ["hook.create", "hook.create", "hook.update", "hook.delete"]);
});

Deno.test("hooks over /api/v1 refuse bad input, another organization's script and other scopes, changing nothing", async () => {
  using w = await apiWorld();
  const own = await scriptIn(w, w.ops.id);
  const devScript = await scriptIn(w, w.dev.id, "dev-only");
  const hook = (await w.api("operator", "POST", `/api/v1/policies/${w.policy.id}/hooks`, {
    type: "pre_backup",
    template: "mysql",
  })).body;
  const before = await w.state();
  const create = `/api/v1/policies/${w.policy.id}/hooks`;
  const one = `/api/v1/hooks/${hook.id}`;
  for (
    const [who, method, path, body, status, field] of [
      ["operator", "POST", create, { type: "pre_backup" }, 422, "scriptId"],
      [
        "operator",
        "POST",
        create,
        { type: "pre_backup", template: "mysql", scriptId: own.id },
        422,
        "scriptId",
      ],
      ["operator", "POST", create, { type: "mid_backup", template: "mysql" }, 422, "type"],
      ["operator", "POST", create, { type: "pre_backup", template: "oracle" }, 422, "template"],
      ["operator", "POST", create, { type: "pre_backup", template: "mysql", timeout: 60 }, 422, "timeout"],
      ["operator", "POST", create, { type: "pre_backup", template: "mysql", policyId: "x" }, 422, "policyId"],
      [
        "operator",
        "POST",
        create,
        { type: "pre_backup", template: "mysql", timeoutSeconds: 0 },
        422,
        "timeoutSeconds",
      ],
      // A script the operator cannot see, and one an admin sees but of another organization.
      ["operator", "POST", create, { type: "pre_backup", scriptId: devScript.id }, 422, "scriptId"],
      ["admin", "POST", create, { type: "pre_backup", scriptId: devScript.id }, 422, "scriptId"],
      ["operator", "PUT", one, { type: "pre_backup", template: "mysql", sequence: 2000 }, 422, "sequence"],
      ["operator", "PUT", one, { type: "pre_backup", template: "mysql", enabled: true }, 422, "enabled"],
      ["viewer", "POST", create, { type: "pre_backup", template: "mysql" }, 403, null],
      ["viewer", "PUT", one, { type: "pre_backup", template: "mysql" }, 403, null],
      ["viewer", "DELETE", one, undefined, 403, null],
      ["devOperator", "POST", create, { type: "pre_backup", template: "mysql" }, 404, null],
      ["devOperator", "GET", create, undefined, 404, null],
      ["devOperator", "GET", one, undefined, 404, null],
      ["devOperator", "PUT", one, { type: "pre_backup", template: "mysql" }, 404, null],
      ["devOperator", "DELETE", one, undefined, 404, null],
      ["otherAdmin", "GET", one, undefined, 404, null],
      ["otherAdmin", "DELETE", one, undefined, 404, null],
    ] as const
  ) {
    const res = await w.api(who, method, path, body);
    const where = `${who} ${method} ${path} ${JSON.stringify(body)}: ${JSON.stringify(res.body)}`;
    assert.equal(res.status, status, where);
    if (field) assert.equal(typeof res.body.error.fields[field], "string", where);
  }
  assert.deepEqual(await w.state(), before, "refusals changed nothing");
});
