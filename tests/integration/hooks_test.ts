import assert from "node:assert/strict";
import { z } from "zod";
import { deleteEngine, markEngineDeleting } from "../../domain/engines.ts";
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import {
  createHook,
  deleteHook,
  deleteHooksOfPolicy,
  type HookCreateInput,
  hookPlan,
  listHooksByPolicy,
  requireHook,
  sweepOrphanHooks,
  TEMPLATE_NAMES,
  updateHook,
} from "../../domain/hooks.ts";
import { createPolicy, deletePolicy } from "../../domain/policies.ts";
import { type Actor, permissionsOf, systemActor } from "../../domain/rbac.ts";
import {
  createScript,
  deleteScript,
  listScripts,
  MAX_SCRIPT_CHARS,
  requireScript,
  type ScriptCreateInput,
  updateScript,
} from "../../domain/scripts.ts";
import { createTarget } from "../../domain/storage.ts";
import type { Role } from "../../domain/types.ts";
import { auditEntries, createTenant, registerTestEngine, targetInput, TestClock } from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

function userActor(accountId: string, role: Role, orgScope: "all" | string[], label: string = role): Actor {
  return {
    kind: "user",
    id: `user-${label}`,
    label,
    accountId,
    role,
    permissions: permissionsOf(role),
    orgScope,
  };
}

async function fixture(kv: Deno.Kv, clock = new TestClock()) {
  const tenant = await createTenant(kv, "Acme", ["Ops", "Dev"], clock.now());
  const [ops, dev] = tenant.orgs;
  const { engine } = await registerTestEngine(
    kv,
    { accountId: tenant.account.id, orgId: ops.id },
    clock.now(),
  );
  const target = await createTarget(kv, system, targetInput(engine.id), { now: clock.now(), masterKey });
  const policy = await createPolicy(kv, system, {
    name: "db-servers",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, clock.now());
  const operator = userActor(tenant.account.id, "operator", [ops.id], "ops-operator");
  return { tenant, ops, dev, engine, target, policy, operator, clock };
}

function scriptInput(orgId: string | null, overrides: Partial<ScriptCreateInput> = {}): ScriptCreateInput {
  return {
    orgId,
    name: "quiesce-app",
    interpreter: "bash",
    body: "#!/bin/bash\nsystemctl kill -s USR1 app",
    ...overrides,
  };
}

/** Asserts a ZodError whose first issue is at `field`. */
function zodErrorAt(field: string) {
  return (e: unknown) => {
    assert.ok(e instanceof z.ZodError, `expected a ZodError, got ${e}`);
    assert.equal(e.issues[0].path[0], field);
    return true;
  };
}

async function keysUnder(kv: Deno.Kv, prefix: Deno.KvKey) {
  return (await Array.fromAsync(kv.list({ prefix }))).map((e) => e.key);
}

Deno.test("createHook() adds a hook from each template with the guide's defaults, audited", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  for (const template of TEMPLATE_NAMES) {
    const hook = await createHook(
      kv,
      f.operator,
      { policyId: f.policy.id, type: "pre_backup", template },
      f.clock.now(),
    );
    assert.deepEqual(
      [hook.template, hook.scriptId, hook.timeoutSeconds, hook.sequence, hook.failOnError, hook.orgId],
      [template, null, 300, 100, true, f.ops.id],
    );
  }
  const listed = await listHooksByPolicy(kv, f.operator, f.policy.id);
  assert.deepEqual(listed.map((h) => h.templateLabel), [
    "MySQL / MariaDB",
    "PostgreSQL",
    "MongoDB",
    "Elasticsearch",
  ]);
  const plan = await hookPlan(kv, f.policy.id);
  assert.match(plan[0].body, /mysqldump --single-transaction/);
  assert.match(plan[1].body, /pg_dump /);
  assert.match(plan[2].body, /mongodump .*--oplog|\$OPLOG/);
  assert.match(plan[3].body, /_snapshot/);
  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "hook.create");
  assert.equal(audit.length, 4);
  assert.match(audit[0].summary, /Pre-backup hook \(MySQL \/ MariaDB template\) to policy db-servers/);
});

Deno.test("createHook() runs a library script of the policy's organization", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const script = await createScript(
    kv,
    f.operator,
    scriptInput(f.ops.id, { interpreter: "python" }),
    f.clock.now(),
  );
  const hook = await createHook(kv, f.operator, {
    policyId: f.policy.id,
    type: "post_snapshot",
    scriptId: script.id,
    timeoutSeconds: 30,
    sequence: 5,
    failOnError: false,
  }, f.clock.now());
  assert.deepEqual([hook.template, hook.scriptId, hook.failOnError], [null, script.id, false]);
  assert.deepEqual(await keysUnder(kv, ["hooks_by_script", script.id]), [[
    "hooks_by_script",
    script.id,
    hook.id,
  ]]);
  const [view] = await listHooksByPolicy(kv, f.operator, f.policy.id);
  assert.equal(view.scriptName, "quiesce-app");
  assert.deepEqual((await hookPlan(kv, f.policy.id))[0], {
    id: hook.id,
    type: "post_snapshot",
    timeoutSeconds: 30,
    failOnError: false,
    interpreter: "python",
    body: script.body,
  });
});

Deno.test("a policy's hooks must fit in a job: createHook(), updateHook() and updateScript() refuse what would not", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  // About 19,000 characters each (ASCII): two fit beside each other (40,000 bytes is the most), three do not.
  const body = (c: string) => `#!/bin/bash\n# ${c.repeat(19_000)}`;
  const scripts = [];
  for (const c of ["a", "b", "c"]) {
    scripts.push(
      await createScript(
        kv,
        f.operator,
        scriptInput(f.ops.id, { name: `s-${c}`, body: body(c) }),
        f.clock.now(),
      ),
    );
  }
  const first = await createHook(kv, f.operator, {
    policyId: f.policy.id,
    type: "pre_backup",
    scriptId: scripts[0].id,
  }, f.clock.now());
  const small = await createScript(kv, f.operator, scriptInput(f.ops.id, { name: "small" }), f.clock.now());
  const second = await createHook(kv, f.operator, {
    policyId: f.policy.id,
    type: "post_backup",
    scriptId: small.id,
  }, f.clock.now());
  const tooBig = (field: string) => (e: unknown) => {
    assert.ok(e instanceof ValidationError, String(e));
    assert.match(e.message, /The hooks of policy db-servers would come to \d+ KB, more than the 40 KB/);
    assert.ok(e.fields[field], JSON.stringify(e.fields));
    return true;
  };
  const hook = (type: string, scriptId: string) =>
    createHook(
      kv,
      f.operator,
      { policyId: f.policy.id, type: type as "pre_backup", scriptId },
      f.clock.now(),
    );
  // A second big script fits beside the first; a third does not, whether added or swapped in.
  await hook("pre_snapshot", scripts[1].id);
  const before = await keysUnder(kv, ["hooks"]);
  await assert.rejects(hook("post_snapshot", scripts[2].id), tooBig("scriptId"));
  await assert.rejects(
    updateHook(kv, f.operator, second.id, { type: "post_backup", scriptId: scripts[2].id }, f.clock.now()),
    tooBig("scriptId"),
  );
  assert.deepEqual(await keysUnder(kv, ["hooks"]), before, "nothing was added");
  assert.equal((await requireHook(kv, f.operator, second.id)).scriptId, small.id, "nor changed");
  // Growing the small script that the third hook runs is refused too, and leaves it as it was.
  await assert.rejects(
    updateScript(
      kv,
      f.operator,
      small.id,
      { name: "small", interpreter: "bash", body: body("z") },
      f.clock.now(),
    ),
    tooBig("body"),
  );
  assert.equal((await requireScript(kv, f.operator, small.id)).body, small.body);
  // A small change to it is fine.
  await updateScript(
    kv,
    f.operator,
    small.id,
    { name: "small", interpreter: "bash", body: "echo ok" },
    f.clock.now(),
  );
  assert.equal((await hookPlan(kv, f.policy.id)).length, 3);
  assert.equal(first.scriptId, scripts[0].id);
});

Deno.test("createHook() refuses a script of another organization or account and writes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const devScript = await createScript(kv, system, scriptInput(f.dev.id), f.clock.now());
  const accountScript = await createScript(
    kv,
    system,
    scriptInput(null, { accountId: f.tenant.account.id }),
    f.clock.now(),
  );
  const other = await createTenant(kv, "Globex", ["Main"], f.clock.now());
  const foreign = await createScript(kv, system, scriptInput(other.orgs[0].id), f.clock.now());
  for (const script of [devScript, accountScript, foreign]) {
    await assert.rejects(
      () =>
        createHook(
          kv,
          system,
          { policyId: f.policy.id, type: "pre_backup", scriptId: script.id },
          f.clock.now(),
        ),
      (e: unknown) =>
        e instanceof ValidationError && /policy's organization/.test(e.message) && "scriptId" in e.fields,
    );
  }
  // An Ops operator cannot even see the Dev script: it is unknown to them.
  await assert.rejects(
    () =>
      createHook(
        kv,
        f.operator,
        { policyId: f.policy.id, type: "pre_backup", scriptId: devScript.id },
        f.clock.now(),
      ),
    /Unknown script/,
  );
  assert.deepEqual(await keysUnder(kv, ["hooks"]), []);
  assert.deepEqual(await keysUnder(kv, ["hooks_by_policy"]), []);
});

Deno.test("createHook() and updateHook() refuse timeouts outside 1–3600 s and sequences outside 0–1000", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const base: HookCreateInput = { policyId: f.policy.id, type: "pre_snapshot", template: "mysql" };
  for (const bad of [{ timeoutSeconds: 0 }, { timeoutSeconds: 3601 }, { sequence: -1 }, { sequence: 1001 }]) {
    await assert.rejects(
      () => createHook(kv, f.operator, { ...base, ...bad }, f.clock.now()),
      zodErrorAt(Object.keys(bad)[0]),
    );
  }
  const edge = await createHook(
    kv,
    f.operator,
    { ...base, timeoutSeconds: 3600, sequence: 1000 },
    f.clock.now(),
  );
  const low = await createHook(kv, f.operator, { ...base, timeoutSeconds: 1, sequence: 0 }, f.clock.now());
  assert.deepEqual([edge.timeoutSeconds, edge.sequence, low.timeoutSeconds, low.sequence], [
    3600,
    1000,
    1,
    0,
  ]);
  await assert.rejects(
    () =>
      updateHook(
        kv,
        f.operator,
        edge.id,
        { type: "pre_snapshot", template: "mysql", timeoutSeconds: 4000 },
        f.clock.now(),
      ),
    zodErrorAt("timeoutSeconds"),
  );
  assert.deepEqual((await listHooksByPolicy(kv, f.operator, f.policy.id)).map((h) => h.id), [
    low.id,
    edge.id,
  ]);
});

Deno.test("hooks need backup.manage and the policy's organization in scope", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const input: HookCreateInput = { policyId: f.policy.id, type: "pre_backup", template: "postgresql" };
  const viewer = userActor(f.tenant.account.id, "viewer", "all");
  const devOperator = userActor(f.tenant.account.id, "operator", [f.dev.id], "dev-operator");
  await assert.rejects(() => createHook(kv, viewer, input, f.clock.now()), ForbiddenError);
  await assert.rejects(() => createHook(kv, devOperator, input, f.clock.now()), NotFoundError);
  const hook = await createHook(kv, f.operator, input, f.clock.now());
  assert.equal((await listHooksByPolicy(kv, viewer, f.policy.id)).length, 1);
  await assert.rejects(() => listHooksByPolicy(kv, devOperator, f.policy.id), NotFoundError);
  await assert.rejects(() => requireHook(kv, devOperator, hook.id), NotFoundError);
  await assert.rejects(() => deleteHook(kv, viewer, hook.id, f.clock.now()), ForbiddenError);
  await assert.rejects(() => deleteHook(kv, devOperator, hook.id, f.clock.now()), NotFoundError);
  await assert.rejects(
    () => createScript(kv, devOperator, scriptInput(f.ops.id), f.clock.now()),
    ValidationError,
  );
  await assert.rejects(() => createScript(kv, viewer, scriptInput(f.ops.id), f.clock.now()), ForbiddenError);
});

Deno.test("updateHook() switches between a template and a script and moves the script pointer", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const a = await createScript(kv, f.operator, scriptInput(f.ops.id, { name: "a" }), f.clock.now());
  const b = await createScript(kv, f.operator, scriptInput(f.ops.id, { name: "b" }), f.clock.now());
  const hook = await createHook(
    kv,
    f.operator,
    { policyId: f.policy.id, type: "pre_backup", scriptId: a.id },
    f.clock.now(),
  );
  await updateHook(kv, f.operator, hook.id, { type: "post_backup", scriptId: b.id }, f.clock.now());
  assert.deepEqual(await keysUnder(kv, ["hooks_by_script", a.id]), []);
  assert.equal((await keysUnder(kv, ["hooks_by_script", b.id])).length, 1);
  const templated = await updateHook(
    kv,
    f.operator,
    hook.id,
    { type: "post_backup", template: "mongodb" },
    f.clock.now(),
  );
  assert.deepEqual([templated.template, templated.scriptId], ["mongodb", null]);
  assert.deepEqual(await keysUnder(kv, ["hooks_by_script"]), []);
  await deleteScript(kv, f.operator, b.id, f.clock.now());
  await deleteHook(kv, f.operator, hook.id, f.clock.now());
  assert.deepEqual(await keysUnder(kv, ["hooks"]), []);
  assert.deepEqual(await keysUnder(kv, ["hooks_by_policy"]), []);
  const actions = (await auditEntries(kv, f.tenant.account.id)).map((e) => e.action);
  assert.deepEqual(actions.filter((a) => a.startsWith("hook.")), [
    "hook.create",
    "hook.update",
    "hook.update",
    "hook.delete",
  ]);
});

Deno.test("deleteScript() is refused while a hook runs the script, naming the policy; allowed after", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const script = await createScript(kv, f.operator, scriptInput(f.ops.id), f.clock.now());
  const hook = await createHook(kv, f.operator, {
    policyId: f.policy.id,
    type: "pre_backup",
    scriptId: script.id,
  }, f.clock.now());
  await assert.rejects(
    () => deleteScript(kv, f.operator, script.id, f.clock.now()),
    (e: unknown) => e instanceof ConflictError && /used by hooks of db-servers/.test(e.message),
  );
  assert.ok(await requireScript(kv, f.operator, script.id));
  await deleteHook(kv, f.operator, hook.id, f.clock.now());
  await deleteScript(kv, f.operator, script.id, f.clock.now());
  await assert.rejects(() => requireScript(kv, f.operator, script.id), NotFoundError);
  for (const prefix of ["scripts", "scripts_by_account", "scripts_by_name", "hooks_by_script"]) {
    assert.deepEqual(await keysUnder(kv, [prefix]), [], prefix);
  }
});

Deno.test("deletePolicy() removes the policy's hooks through its cascade; the script is free again", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const script = await createScript(kv, f.operator, scriptInput(f.ops.id), f.clock.now());
  const custom = await createHook(kv, f.operator, {
    policyId: f.policy.id,
    type: "pre_backup",
    scriptId: script.id,
  }, f.clock.now());
  const templated = await createHook(kv, f.operator, {
    policyId: f.policy.id,
    type: "post_backup",
    template: "mysql",
  }, f.clock.now());
  await deletePolicy(kv, f.operator, f.policy.id, f.clock.now());
  assert.deepEqual(await keysUnder(kv, ["hooks_by_policy", f.policy.id]), []);
  for (const id of [custom.id, templated.id]) {
    await assert.rejects(
      () => requireHook(kv, system, id),
      NotFoundError,
      "a hook of a deleted policy is gone",
    );
  }
  assert.deepEqual(await hookPlan(kv, f.policy.id), []);
  // The script no longer counts as used: its deletion also removes what the cascade left behind.
  await deleteScript(kv, f.operator, script.id, f.clock.now());
  await sweepOrphanHooks(kv, f.clock.now());
  assert.deepEqual(await keysUnder(kv, ["hooks"]), []);
  assert.deepEqual(await keysUnder(kv, ["hooks_by_script"]), []);
});

Deno.test("deleteHooksOfPolicy() and sweepOrphanHooks() remove every key of a policy's hooks", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const script = await createScript(kv, f.operator, scriptInput(f.ops.id), f.clock.now());
  await createHook(
    kv,
    f.operator,
    { policyId: f.policy.id, type: "pre_backup", scriptId: script.id },
    f.clock.now(),
  );
  await createHook(
    kv,
    f.operator,
    { policyId: f.policy.id, type: "post_backup", template: "mysql" },
    f.clock.now(),
  );
  assert.equal(await sweepOrphanHooks(kv, f.clock.now()), 0, "nothing to sweep while the policy lives");
  assert.equal(await deleteHooksOfPolicy(kv, f.policy.id), 2);
  for (const prefix of ["hooks", "hooks_by_policy", "hooks_by_script"]) {
    assert.deepEqual(await keysUnder(kv, [prefix]), [], prefix);
  }
  assert.equal(await deleteHooksOfPolicy(kv, f.policy.id), 0, "idempotent");

  // A policy deleted by a cascade that only clears ["hooks_by_policy", …]: the sweep finishes the job.
  await createHook(
    kv,
    f.operator,
    { policyId: f.policy.id, type: "pre_backup", scriptId: script.id },
    f.clock.now(),
  );
  await deletePolicy(kv, system, f.policy.id, f.clock.now());
  await sweepOrphanHooks(kv, f.clock.now());
  for (const prefix of ["hooks", "hooks_by_policy", "hooks_by_script"]) {
    assert.deepEqual(await keysUnder(kv, [prefix]), [], prefix);
  }
});

Deno.test("deleteEngine() cascades to the hooks of its policies", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const script = await createScript(kv, f.operator, scriptInput(f.ops.id), f.clock.now());
  await createHook(
    kv,
    f.operator,
    { policyId: f.policy.id, type: "pre_backup", scriptId: script.id },
    f.clock.now(),
  );
  await createHook(
    kv,
    f.operator,
    { policyId: f.policy.id, type: "pre_snapshot", template: "elasticsearch" },
    f.clock.now(),
  );
  await deleteEngine(kv, system, f.engine.id, f.clock.now());
  for (const prefix of ["hooks", "hooks_by_policy", "hooks_by_script"]) {
    assert.deepEqual(await keysUnder(kv, [prefix]), [], prefix);
  }
  await deleteScript(kv, f.operator, script.id, f.clock.now());
});

Deno.test("createHook() refuses a policy whose BES is being deleted", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await markEngineDeleting(kv, systemActor("test"), f.engine.id, f.clock.now());
  await assert.rejects(
    () =>
      createHook(
        kv,
        f.operator,
        { policyId: f.policy.id, type: "pre_backup", template: "mysql" },
        f.clock.now(),
      ),
    /being deleted/,
  );
});

Deno.test("race: deleteScript vs createHook never leaves a hook on a missing script", async () => {
  for (let i = 0; i < 30; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const script = await createScript(kv, f.operator, scriptInput(f.ops.id), f.clock.now());
    const create = () =>
      createHook(
        kv,
        f.operator,
        { policyId: f.policy.id, type: "pre_backup", scriptId: script.id },
        f.clock.now(),
      );
    const remove = () => deleteScript(kv, f.operator, script.id, f.clock.now());
    const results = await Promise.allSettled(i % 2 ? [create(), remove()] : [remove(), create()]);
    for (const r of results) {
      if (r.status === "rejected") {
        assert.ok(
          r.reason instanceof ConflictError || r.reason instanceof ValidationError,
          `iteration ${i}: ${r.reason}`,
        );
      }
    }
    const hooks = await Array.fromAsync(kv.list<{ scriptId: string }>({ prefix: ["hooks"] }));
    const scriptAlive = (await kv.get(["scripts", script.id])).value !== null;
    for (const h of hooks) {
      assert.ok(scriptAlive, `iteration ${i}: hook ${String(h.key[1])} runs a deleted script`);
    }
    assert.equal(
      results.filter((r) => r.status === "fulfilled").length,
      1,
      `iteration ${i}: exactly one wins`,
    );
  }
});

Deno.test("scripts: unique names per organization (any case), searchable, renamable", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const admin = userActor(f.tenant.account.id, "backup_admin", "all");
  const flush = await createScript(kv, admin, scriptInput(f.ops.id, { name: "Flush caches" }), f.clock.now());
  await assert.rejects(
    () => createScript(kv, admin, scriptInput(f.ops.id, { name: "flush CACHES" }), f.clock.now()),
    (e: unknown) => e instanceof ValidationError && "name" in e.fields,
  );
  await createScript(kv, admin, scriptInput(f.dev.id, { name: "Flush caches" }), f.clock.now());
  await createScript(kv, admin, scriptInput(null, { name: "Flush caches" }), f.clock.now());
  const stop = await createScript(
    kv,
    admin,
    scriptInput(f.ops.id, { name: "Stop app", interpreter: "powershell" }),
    f.clock.now(),
  );
  assert.deepEqual((await listScripts(kv, admin, { q: "FLUSH" })).length, 3);
  assert.deepEqual((await listScripts(kv, admin, { q: "flush", orgId: f.ops.id })).map((s) => s.id), [
    flush.id,
  ]);
  assert.deepEqual((await listScripts(kv, f.operator)).map((s) => s.name), [
    "Flush caches",
    "Flush caches",
    "Stop app",
  ]);
  await assert.rejects(
    () =>
      updateScript(kv, admin, stop.id, { name: "FLUSH caches", interpreter: "sh", body: "x" }, f.clock.now()),
    ValidationError,
  );
  const renamed = await updateScript(kv, admin, flush.id, {
    name: "Flush all caches",
    interpreter: "sh",
    body: "sync",
  }, f.clock.now());
  assert.equal(renamed.name, "Flush all caches");
  await createScript(kv, admin, scriptInput(f.ops.id, { name: "flush caches" }), f.clock.now());
  const ops = await listScripts(kv, admin, { orgId: f.ops.id });
  assert.deepEqual(ops.map((s) => s.name), ["Flush all caches", "flush caches", "Stop app"]);
  // The operator scoped to Ops cannot change an account-level script (it needs the whole account).
  const accountLevel = (await listScripts(kv, f.operator)).find((s) => s.orgId === null)!;
  await assert.rejects(
    () =>
      updateScript(
        kv,
        f.operator,
        accountLevel.id,
        { name: "x", interpreter: "sh", body: "x" },
        f.clock.now(),
      ),
    ForbiddenError,
  );
});

Deno.test("createScript() stores a 32000-character body of non-Latin-1 text within the KV value limit", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const body = "# 日本語のコメント\n".repeat(3000).slice(0, MAX_SCRIPT_CHARS);
  assert.equal(body.length, MAX_SCRIPT_CHARS);
  const script = await createScript(
    kv,
    f.operator,
    scriptInput(f.ops.id, { name: "x".repeat(100), body }),
    f.clock.now(),
  );
  assert.equal((await requireScript(kv, f.operator, script.id)).body, body);
  await updateScript(
    kv,
    f.operator,
    script.id,
    { name: "y".repeat(100), interpreter: "bash", body },
    f.clock.now(),
  );
});
