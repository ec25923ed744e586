import assert from "node:assert/strict";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { createTarget } from "../../domain/storage.ts";
import {
  addUser,
  Browser,
  createTenant,
  registerTestEngine,
  signInAs,
  targetInput,
  testApp,
} from "../helpers.ts";

const masterKey = new Uint8Array(32).fill(7);

async function setup(kv: Deno.Kv) {
  const { app, clock } = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, clock.now());
  const target = await createTarget(kv, systemActor("t"), targetInput(engine.id), {
    now: clock.now(),
    masterKey,
  });
  const policy = await createPolicy(kv, systemActor("t"), {
    name: "files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, clock.now());
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", clock.now());
  const browser = new Browser(app);
  await signInAs(browser, kv, admin, clock.now());
  return { browser, policy };
}

Deno.test("POST /backup/policies/:id/hooks with a bad timeout re-renders the 7th section with the error and what was typed", async () => {
  using kv = await Deno.openKv(":memory:");
  const { browser, policy } = await setup(kv);
  const res = await browser.postForm(`/backup/policies/${policy.id}/hooks`, {
    type: "post_backup",
    template: "mysql",
    scriptName: "",
    timeoutSeconds: "0",
    sequence: "42",
  }, { tokenFrom: `/backup/policies/${policy.id}/edit` });
  assert.equal(res.status, 422);
  const html = await res.text();
  assert.match(html, /data-testid="hook-errors"/);
  assert.match(html, /must be 1–3600/i);
  assert.match(html, /name="sequence" type="number" value="42"/, "the typed sequence is kept");
  assert.match(html, /<option\s+value="post_backup"\s+selected/, "the chosen type is kept");
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["hooks"] }))).length, 0, "nothing was written");
});

Deno.test("POST /backup/policies/:id/hooks naming an unknown script says so and writes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const { browser, policy } = await setup(kv);
  const res = await browser.postForm(`/backup/policies/${policy.id}/hooks`, {
    type: "pre_backup",
    template: "",
    scriptName: "does-not-exist",
    timeoutSeconds: "300",
    sequence: "100",
  }, { tokenFrom: `/backup/policies/${policy.id}/edit` });
  assert.equal(res.status, 422);
  assert.match(await res.text(), /No script of this organization has that name/);
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["hooks"] }))).length, 0);
});

Deno.test("POST /backup/policies/new with a six-field cron keeps the form and names the field", async () => {
  using kv = await Deno.openKv(":memory:");
  const { browser } = await setup(kv);
  const res = await browser.postForm("/backup/policies/new", {
    name: "typed name",
    fullSchedule: "* * * * * *",
    backupType: "file",
  }, { tokenFrom: "/backup/policies/new" });
  assert.equal(res.status, 422);
  const html = await res.text();
  assert.match(html, /seconds are not allowed/);
  assert.match(html, /value="typed name"/);
});
