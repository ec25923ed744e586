import assert from "node:assert/strict";
import { applyResult, claimJobs, getJob } from "../../domain/jobs.ts";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import {
  applyJobOutcome,
  applyRetention,
  listRunsByPolicy,
  type RestorePoint,
  runSchedulerTick,
} from "../../domain/runs.ts";
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
import { assignHost } from "../../domain/assignments.ts";
import { enrollHost } from "../../domain/hosts.ts";
import { generateKeyPair } from "../../domain/signing.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

/** A policy with daily fulls and ten days of successful runs for one host. */
async function history(kv: Deno.Kv, days = 10) {
  const { app, clock } = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, clock.now());
  const target = await createTarget(kv, system, targetInput(engine.id), { now: clock.now(), masterKey });
  const policy = await createPolicy(kv, system, {
    name: "daily",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * *",
    retentionDaily: 7,
    retentionWeekly: 0,
    retentionMonthly: 0,
    verifyAfterBackup: false,
  }, clock.now());
  const { host } = await enrollHost(kv, scope, {
    hostname: "h.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.9",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, clock.now());
  await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, clock.now());
  for (let d = 0; d < days; d++) {
    const at = new Date(Date.UTC(2026, 10, 1 + d, 2));
    await runSchedulerTick(kv, at);
    const [job] = await claimJobs(kv, `agent:${host.id}`, 1, at);
    const { job: done } = await applyResult(kv, job.principal, job.id, {
      status: "success",
      startedAt: at.toISOString(),
      endedAt: new Date(at.getTime() + 600_000).toISOString(),
      bytesTransferred: 100,
      protectedBytes: 100,
      output: {
        restorePoint: {
          id: `rp-${d}`,
          chainId: `c-${d}`,
          type: "full",
          parentId: null,
          sizeBytes: 100,
          fileCount: 1,
          completedAt: new Date(at.getTime() + 600_000).toISOString(),
        },
      },
    }, at);
    await applyJobOutcome(kv, done, at);
  }
  return { app, clock, tenant, engine, policy, host };
}

async function points(kv: Deno.Kv) {
  return (await Array.fromAsync(kv.list<RestorePoint>({ prefix: ["restore_points"] }))).map((e) => e.value);
}

Deno.test("applyRetention() expires what GFS does not keep and queues one prune job; running it again does nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await history(kv);
  assert.equal((await listRunsByPolicy(kv, f.policy.id)).length, 10);
  const now = new Date("2026-11-11T05:00:00Z");
  assert.deepEqual(await applyRetention(kv, now), { expired: 3, pruneJobs: 1 });
  const all = await points(kv);
  assert.equal(all.filter((p) => p.status === "expired").length, 3);
  assert.deepEqual(all.filter((p) => p.status === "expired").map((p) => p.engineRestorePointId).sort(), [
    "rp-0",
    "rp-1",
    "rp-2",
  ]);
  const [prune] = await claimJobs(kv, `bes:${f.engine.id}`, 10, now);
  assert.equal(prune.kind, "prune");
  assert.deepEqual([...(prune.payload.restorePointIds as string[])].sort(), ["rp-0", "rp-1", "rp-2"]);
  assert.deepEqual(await applyRetention(kv, now), { expired: 0, pruneJobs: 0 });
  assert.equal((await getJob(kv, prune.id))!.status, "leased");
});

Deno.test("GET /api/v1/policies/:id/retention-preview and the form's confirmation for a drastic change", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await history(kv);
  const admin = await addUser(kv, f.tenant, "admin@acme.example", "admin", "all", f.clock.now());
  const browser = new Browser(f.app);
  await signInAs(browser, kv, admin, f.clock.now());
  const res = await browser.request(
    `/api/v1/policies/${f.policy.id}/retention-preview?daily=1&weekly=0&monthly=0`,
  );
  assert.equal(res.status, 200);
  const { objects } = await res.json();
  const preview = objects[f.host.id];
  assert.equal(preview.keep.length, 1);
  assert.equal(preview.expire.length, 9);
  assert.equal(preview.bytesFreed, 900);
  assert.equal(preview.needsConfirmation, true);

  const form = {
    name: "daily",
    targetId: f.policy.targetId,
    backupType: "file",
    timeZone: "UTC",
    fullSchedule: "0 2 * * *",
    retentionDaily: "1",
    retentionWeekly: "0",
    retentionMonthly: "0",
    enabled: "on",
  };
  const refused = await browser.postForm(`/backup/policies/${f.policy.id}/edit`, form, {
    tokenFrom: `/backup/policies/${f.policy.id}/edit`,
  });
  assert.equal(refused.status, 422);
  const html = await refused.text();
  assert.match(html, /needs confirmation/);
  assert.match(html, /data-testid="confirm-retention"/);
  assert.match(html, /name="retentionDaily" type="number" value="1"/, "the typed count is kept");
  const confirmed = await browser.postForm(`/backup/policies/${f.policy.id}/edit`, {
    ...form,
    confirmRetention: "on",
  }, {
    tokenFrom: `/backup/policies/${f.policy.id}/edit`,
  });
  assert.equal(confirmed.status, 303);
  const bad = await browser.request(
    `/api/v1/policies/${f.policy.id}/retention-preview?daily=0&weekly=0&monthly=0`,
  );
  assert.equal(bad.status, 422);
  // A count not given is the policy's own, as on the policy page (now 1/0/0 after the confirmed edit).
  const previewOf = async (query: string) => {
    const res = await browser.request(`/api/v1/policies/${f.policy.id}/retention-preview${query}`);
    assert.equal(res.status, 200, query);
    return await res.json();
  };
  assert.deepEqual(await previewOf("?weekly=0"), await previewOf("?daily=1&weekly=0&monthly=0"));
  assert.deepEqual(await previewOf(""), await previewOf("?daily=1&weekly=0&monthly=0"));
  assert.notDeepEqual(await previewOf("?daily=5"), await previewOf(""));
});

Deno.test("the policy page's retention preview lists keep and expire per point, previews other counts, and refuses bad ones", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await history(kv);
  const viewer = await addUser(kv, f.tenant, "viewer@acme.example", "viewer", "all", f.clock.now());
  const browser = new Browser(f.app);
  await signInAs(browser, kv, viewer, f.clock.now());
  const count = (html: string, re: RegExp) => (html.match(re) ?? []).length;

  // Saved counts: 7 daily of 10 daily fulls → 7 kept, 3 expired.
  const saved = await (await browser.request(`/backup/policies/${f.policy.id}`)).text();
  assert.match(saved, /Retention preview/);
  assert.match(saved, /Saved: 7 daily · 0 weekly · 0 monthly/);
  assert.equal(count(saved, /data-testid="retention-point"/g), 10);
  assert.equal(count(saved, /badge--ok">keep</g), 7);
  assert.equal(count(saved, /badge--bad">expire</g), 3);
  assert.match(saved, /h\.acme\.example<\/strong> — keep 7, expire 3, frees 300 B/);
  assert.doesNotMatch(saved, /needs confirmation/);

  // Proposed counts (not saved): 1 daily → 9 expire, needs confirmation; the policy is unchanged.
  const proposed = await (await browser.request(`/backup/policies/${f.policy.id}?daily=1&weekly=0&monthly=0`))
    .text();
  assert.match(proposed, /Proposed: 1 daily · 0 weekly · 0 monthly \(not saved/);
  assert.equal(count(proposed, /badge--bad">expire</g), 9);
  assert.match(proposed, /needs confirmation/);
  assert.match(proposed, /expires 9 of 10 restore points/);
  assert.equal(
    (await kv.get<{ retentionDaily: number }>(["policies", f.policy.id])).value!.retentionDaily,
    7,
  );

  // Bad counts: a clear error, and the preview falls back to the saved counts.
  const bad = await (await browser.request(`/backup/policies/${f.policy.id}?daily=0&weekly=99&monthly=0`))
    .text();
  assert.match(bad, /data-testid="retention-error"[^>]*>daily must be 1–365; weekly must be 0–52</);
  assert.equal(count(bad, /badge--bad">expire</g), 3);
});

Deno.test("GET /api/v1/runs filters by reason and refuses a bad filter with field errors", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await history(kv, 3);
  const viewer = await addUser(kv, f.tenant, "viewer@acme.example", "viewer", "all", f.clock.now());
  const browser = new Browser(f.app);
  await signInAs(browser, kv, viewer, f.clock.now());
  const ok = await browser.request(`/api/v1/runs?policyId=${f.policy.id}&status=success&limit=2`);
  assert.equal(ok.status, 200);
  const page = await ok.json();
  assert.equal(page.values.length, 2);
  assert.ok(page.cursor, "a third run follows");
  const rest = await (await browser.request(`/api/v1/runs?policyId=${f.policy.id}&cursor=${page.cursor}`))
    .json();
  assert.equal(rest.values.length, 1);
  assert.equal(rest.cursor, "");
  const none = await (await browser.request(`/api/v1/runs?reason=HOOK_FAILED`)).json();
  assert.deepEqual(none, { values: [], cursor: "" });
  const bad = await browser.request(`/api/v1/runs?reason=hook%20failed&limit=0`);
  assert.equal(bad.status, 422);
  const body = await bad.json();
  assert.match(body.error.fields.reason, /reason code/);
  assert.match(body.error.fields.limit, /1–200/);
});
