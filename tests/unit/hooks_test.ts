import assert from "node:assert/strict";
import { HOOK_TEMPLATES, HookFields, hookScript, TEMPLATE_NAMES } from "../../domain/hooks.ts";
import { MAX_SCRIPT_CHARS, ScriptFields } from "../../domain/scripts.ts";

Deno.test("HookFields applies the defaults: timeout 300 s, sequence 100, fail on error", () => {
  const h = HookFields.parse({ type: "pre_backup", template: "mysql" });
  assert.deepEqual(h, {
    type: "pre_backup",
    template: "mysql",
    scriptId: null,
    timeoutSeconds: 300,
    sequence: 100,
    failOnError: true,
  });
});

Deno.test("HookFields refuses a timeout outside 1–3600 and a sequence outside 0–1000", () => {
  const base = { type: "pre_backup", template: "postgresql" };
  for (
    const [field, value] of [["timeoutSeconds", 0], ["timeoutSeconds", 3601], ["timeoutSeconds", 1.5], [
      "sequence",
      -1,
    ], ["sequence", 1001]] as const
  ) {
    const r = HookFields.safeParse({ ...base, [field]: value });
    assert.equal(r.success, false, `${field} = ${value}`);
    assert.equal(r.error!.issues[0].path[0], field);
  }
  for (
    const [field, value] of [["timeoutSeconds", 1], ["timeoutSeconds", 3600], ["sequence", 0], [
      "sequence",
      1000,
    ]] as const
  ) {
    assert.equal(HookFields.safeParse({ ...base, [field]: value }).success, true, `${field} = ${value}`);
  }
});

Deno.test("HookFields needs exactly one of a template and a script", () => {
  const neither = HookFields.safeParse({ type: "post_backup", template: "", scriptId: "" });
  assert.equal(neither.success, false);
  assert.match(neither.error!.issues[0].message, /is required for a custom script hook/);
  const both = HookFields.safeParse({ type: "post_backup", template: "mysql", scriptId: "s1" });
  assert.equal(both.success, false);
  assert.equal(both.error!.issues[0].path[0], "scriptId");
  assert.equal(HookFields.safeParse({ type: "nope", template: "mysql" }).success, false);
  assert.equal(HookFields.safeParse({ type: "pre_backup", template: "oracle" }).success, false);
  assert.equal(HookFields.parse({ type: "pre_snapshot", template: "", scriptId: "s1" }).template, null);
});

Deno.test("hookScript() runs the template's pre snippet for pre hooks and post snippet for post hooks", () => {
  const mysqlPre = hookScript({ type: "pre_backup", template: "mysql", scriptId: null });
  assert.equal(mysqlPre.interpreter, "bash");
  assert.match(mysqlPre.body, /mysqldump --single-transaction/);
  assert.match(hookScript({ type: "pre_snapshot", template: "postgresql", scriptId: null }).body, /pg_dump /);
  const mongo = hookScript({ type: "pre_backup", template: "mongodb", scriptId: null }).body;
  assert.match(mongo, /mongodump/);
  assert.match(mongo, /--oplog/);
  assert.match(
    hookScript({ type: "pre_backup", template: "elasticsearch", scriptId: null }).body,
    /_snapshot\/\$REPOSITORY\/\$SNAPSHOT\?wait_for_completion=true/,
  );
  for (const name of TEMPLATE_NAMES) {
    for (const type of ["post_backup", "post_snapshot"] as const) {
      assert.equal(hookScript({ type, template: name, scriptId: null }).body, HOOK_TEMPLATES[name].post);
    }
  }
});

Deno.test("hookScript() runs a custom hook's library script, and throws without the right script", () => {
  const script = { id: "s1", interpreter: "python" as const, body: "print('quiesce')" };
  assert.deepEqual(hookScript({ type: "pre_backup", template: null, scriptId: "s1" }, script), {
    interpreter: "python",
    body: "print('quiesce')",
  });
  assert.throws(
    () => hookScript({ type: "pre_backup", template: null, scriptId: "s1" }),
    /script s1 is missing/,
  );
  assert.throws(
    () => hookScript({ type: "pre_backup", template: null, scriptId: "s2" }, script),
    /script s2 is missing/,
  );
});

Deno.test("ScriptFields limits the body to 32000 characters and refuses empty bodies and NUL", () => {
  const base = { name: "quiesce", interpreter: "bash" };
  assert.equal(ScriptFields.safeParse({ ...base, body: "x".repeat(MAX_SCRIPT_CHARS) }).success, true);
  const long = ScriptFields.safeParse({ ...base, body: "x".repeat(MAX_SCRIPT_CHARS + 1) });
  assert.match(long.error!.issues[0].message, /at most 32000 characters/);
  assert.match(ScriptFields.safeParse({ ...base, body: "  \n" }).error!.issues[0].message, /is required/);
  assert.equal(ScriptFields.safeParse({ ...base, body: "echo\0" }).success, false);
  assert.equal(ScriptFields.safeParse({ ...base, body: "echo", interpreter: "zsh" }).success, false);
});
