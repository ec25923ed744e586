import assert from "node:assert/strict";
import { claimJobs, getJob } from "../../domain/job_queue.ts";
import { applyRetention } from "../../domain/retention_apply.ts";
import { listRunsByPolicy } from "../../domain/runs.ts";
import { addUser, Browser, signInAs, testApp } from "../helpers.ts";
import { allPoints, backupWorld, dailyFulls } from "./backup_world.ts";

/** A policy with daily fulls and ten days of successful runs for one host. */
async function history(kv: Deno.Kv, days = 10) {
  const { app, clock } = testApp(kv);
  const { tenant, engine, policy, host } = await backupWorld(kv, clock.now());
  await dailyFulls(kv, host.id, days);
  return { app, clock, tenant, engine, policy, host };
}

Deno.test("applyRetention() expires what GFS does not keep and queues one prune job; running it again does nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await history(kv);
  assert.equal((await listRunsByPolicy(kv, f.policy.id)).length, 10);
  const now = new Date("2026-11-11T05:00:00Z");
  assert.deepEqual(await applyRetention(kv, now), { expired: 3, pruneJobs: 1 });
  const all = await allPoints(kv);
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
