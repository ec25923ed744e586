import assert from "node:assert/strict";
import { assignHost, assignmentKey } from "../../domain/assignments.ts";
import { enrollHost } from "../../domain/hosts.ts";
import { createPolicy, getPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { generateKeyPair } from "../../domain/signing.ts";
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
  return { browser, policy, scope, clock };
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

/** The API body of an unchanged policy: every editable field as stored. */
function policyBody(p: Awaited<ReturnType<typeof createPolicy>>) {
  return {
    name: p.name,
    targetId: p.targetId,
    backupType: p.backupType,
    timeZone: p.timeZone,
    fullSchedule: p.fullSchedule,
    retentionDaily: p.retentionDaily,
    retentionWeekly: p.retentionWeekly,
    retentionMonthly: p.retentionMonthly,
  };
}

Deno.test("PUT /api/v1/policies/:id with another besId answers 422 naming besId and changes nothing; the same besId is accepted", async () => {
  using kv = await Deno.openKv(":memory:");
  const { browser, policy, scope, clock } = await setup(kv);
  const { engine: other } = await registerTestEngine(kv, scope, clock.now(), "bes-2");
  const page = `/backup/policies/${policy.id}/edit`;
  const put = async (body: Record<string, unknown>) =>
    await browser.request(`/api/v1/policies/${policy.id}`, {
      method: "PUT",
      headers: { "content-type": "application/json", "x-csrf-token": await browser.csrfFor(page) },
      body: JSON.stringify(body),
    });
  const before = await getPolicy(kv, policy.id);
  const auditBefore = (await Array.fromAsync(kv.list({ prefix: ["audit"] }))).length;

  for (const besId of [other.id, "01ZZZZZZZZZZZZZZZZZZZZZZZZ", ""]) {
    const res = await put({ ...policyBody(policy), name: "renamed", besId });
    assert.equal(res.status, 422, `besId ${JSON.stringify(besId)}`);
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
    const body = await res.json();
    assert.equal(body.error.code, "invalid");
    assert.equal(typeof body.error.message, "string");
    assert.ok(body.error.fields?.besId, `the besId field is named: ${JSON.stringify(body)}`);
  }
  assert.deepEqual(await getPolicy(kv, policy.id), before, "the policy is unchanged");
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["audit"] }))).length, auditBefore, "no audit entry");

  const same = await put({ ...policyBody(policy), name: "renamed", besId: policy.besId });
  assert.equal(same.status, 200);
  assert.equal((await same.json()).besId, policy.besId);
  const without = await put({ ...policyBody(policy), name: "renamed again" });
  assert.equal(without.status, 200);
  const after = await getPolicy(kv, policy.id);
  assert.equal(after!.name, "renamed again");
  assert.equal(after!.besId, policy.besId);
});

Deno.test("POST /backup/policies/:id/edit with a tampered besId is refused with 422 and changes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const { browser, policy, scope, clock } = await setup(kv);
  const { engine: other } = await registerTestEngine(kv, scope, clock.now(), "bes-2");
  const page = `/backup/policies/${policy.id}/edit`;
  const form = {
    name: "renamed",
    targetId: policy.targetId,
    backupType: "file",
    timeZone: "UTC",
    fullSchedule: policy.fullSchedule,
    retentionDaily: String(policy.retentionDaily),
    retentionWeekly: String(policy.retentionWeekly),
    retentionMonthly: String(policy.retentionMonthly),
    enabled: "on",
  };
  const html = await (await browser.get(page)).text();
  assert.doesNotMatch(html, /name="besId"/, "the edit form offers no BES field");

  const before = await getPolicy(kv, policy.id);
  const refused = await browser.postForm(page, { ...form, besId: other.id }, { tokenFrom: page });
  assert.equal(refused.status, 422);
  assert.match(await refused.text(), /BES of a policy cannot change/);
  assert.deepEqual(await getPolicy(kv, policy.id), before, "the policy is unchanged");

  const same = await browser.postForm(page, { ...form, besId: policy.besId }, { tokenFrom: page });
  assert.equal(same.status, 303);
  const saved = await browser.postForm(page, { ...form, name: "renamed again" }, { tokenFrom: page });
  assert.equal(saved.status, 303);
  assert.equal((await getPolicy(kv, policy.id))!.name, "renamed again");
});

/** Two engines of one org, each with a target: the new-policy form's choices. */
async function twoEngines(kv: Deno.Kv) {
  const base = await setup(kv);
  const { engine: second } = await registerTestEngine(kv, base.scope, base.clock.now(), "bes-2");
  const secondTarget = await createTarget(
    kv,
    systemActor("t"),
    targetInput(second.id, "local", { name: "nas-2" }),
    {
      now: base.clock.now(),
      masterKey,
    },
  );
  return { ...base, second, secondTarget };
}

Deno.test("GET /backup/policies/new groups the storage targets by BES in optgroups (no JavaScript needed)", async () => {
  using kv = await Deno.openKv(":memory:");
  const { browser, policy, second } = await twoEngines(kv);
  const res = await browser.get("/backup/policies/new");
  assert.equal(res.status, 200);
  const html = await res.text();
  const select = /<select id="f-targetId"[^]*?<\/select>/.exec(html)?.[0] ?? "";
  const groups = [...select.matchAll(/<optgroup\s+label="([^"]+)">([^]*?)<\/optgroup>/g)].map((m) => [
    m[1],
    [...m[2].matchAll(/<option[^>]*>([^<]*)<\/option>/g)].map((o) => o[1]),
  ]);
  assert.deepEqual(groups, [["On bes-1", ["local target"]], ["On bes-2", ["nas-2"]]]);
  assert.match(html, /data-island="BesTargetFields"/, "the island narrows the list to the chosen BES");
  assert.ok((await getPolicy(kv, policy.id))!.targetId, "the fixture's policy is untouched");
  assert.ok(second.id);
});

Deno.test("POST /backup/policies/new with a target of another BES answers 422 naming the BES, creates nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const { browser, policy, secondTarget } = await twoEngines(kv);
  const engineId = (await getPolicy(kv, policy.id))!.besId;
  const before = (await Array.fromAsync(kv.list({ prefix: ["policies"] }))).length;
  const res = await browser.postForm("/backup/policies/new", {
    name: "crossed",
    besId: engineId,
    targetId: secondTarget.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    retentionDaily: "7",
    retentionWeekly: "4",
    retentionMonthly: "12",
  }, { tokenFrom: "/backup/policies/new" });
  assert.equal(res.status, 422);
  const html = await res.text();
  assert.match(
    html,
    /id="f-targetId-error">That storage target is not on bes-1: choose one of bes-1(&#39;|')s targets</,
  );
  assert.match(html, /<select id="f-targetId"[^>]*aria-invalid="true"/);
  assert.match(html, /value="crossed"/, "the typed name is kept");
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["policies"] }))).length, before, "nothing created");
});

Deno.test("removing a host from a policy asks first: GET shows the confirmation, only its POST removes", async () => {
  using kv = await Deno.openKv(":memory:");
  const { browser, policy, scope, clock } = await setup(kv);
  const { host } = await enrollHost(kv, scope, {
    hostname: "db01.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.21",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, clock.now());
  const { assignment } = await assignHost(
    kv,
    systemActor("t"),
    { policyId: policy.id, hostId: host.id },
    clock.now(),
  );
  const page = await (await browser.get(`/backup/policies/${policy.id}`)).text();
  assert.match(
    page,
    new RegExp(`<a class="btn btn--small btn--danger" href="/backup/assignments/${assignment.id}/remove"`),
    "the policy page links to the confirmation instead of removing at once",
  );
  assert.ok(
    !page.includes(`action="/backup/assignments/${assignment.id}/remove"`),
    "no one-click remove form",
  );
  const confirm = await browser.get(`/backup/assignments/${assignment.id}/remove`);
  assert.equal(confirm.status, 200);
  const html = await confirm.text();
  assert.match(html, /<h1>Remove db01\.acme\.example from files\?<\/h1>/);
  assert.match(html, /restore points are kept/);
  assert.match(html, new RegExp(`<form method="post" action="/backup/assignments/${assignment.id}/remove"`));
  assert.match(html, /name="_csrf"/);
  assert.ok(await kv.get(assignmentKey(assignment.id)).then((e) => e.value), "still assigned after the GET");
  const res = await browser.postForm(`/backup/assignments/${assignment.id}/remove`, {}, {
    tokenFrom: `/backup/assignments/${assignment.id}/remove`,
  });
  assert.equal(res.status, 303);
  assert.equal((await kv.get(assignmentKey(assignment.id))).value, null, "removed by the confirmed POST");
});
