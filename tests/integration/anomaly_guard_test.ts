/**
 * The anomaly guard applied (domain/anomalies.ts) through the real result path: ten ordinary backups of a host
 * build its baseline without a flag; a mass encryption is flagged in the result's own write — a critical alert
 * naming the host and the figures (and its notification event), the point suspect, the previous one last
 * clean, prune frozen (retention expires nothing of the host, its preview says why); then the review: page
 * forms with CSRF and confirmation, the JSON API, permissions, audit, approve (unfreezes, baseline accepts),
 * confirm incident (stays frozen) and release, and two racing reviews (one wins).
 */
import assert from "node:assert/strict";
import { createApiToken } from "../../domain/api_tokens.ts";
import {
  type Anomaly,
  type AnomalyBaseline,
  anomalyOfRun,
  baselineKey,
  pruneFreezeKey,
  reviewAnomaly,
} from "../../domain/anomalies.ts";
import type { Alert, AlertEvent } from "../../domain/alerts.ts";
import { userActor } from "../../domain/auth.ts";
import { ConflictError } from "../../domain/errors.ts";
import { applyResult, claimJobs, type Job } from "../../domain/job_queue.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import { applyRetention } from "../../domain/retention_apply.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { restorePointKey } from "../../domain/keys/restore.ts";
import type { Run } from "../../domain/runs.ts";
import { runKey } from "../../domain/keys/runs.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { addUser, assertIncludes, auditEntries, Browser, signInAs, testApp } from "../helpers.ts";
import { backupWorld, DAILY_POLICY } from "./backup_world.ts";

const MiB = 1024 * 1024;

interface Figures {
  added: number;
  modified: number;
  deleted: number;
  bytesNew: number;
  bytesNewIncompressible: number;
}

/** Ordinary daily churn of a host of 2,000 files: a few dozen files, a few MiB, mostly compressible. */
function ordinary(d: number): Figures {
  return {
    added: 3 + (d % 3),
    modified: 20 + (d * 7) % 11,
    deleted: 1 + (d % 2),
    bytesNew: (6 + (d * 5) % 4) * MiB,
    bytesNewIncompressible: Math.round(0.6 * MiB + (d % 3) * 0.1 * MiB),
  };
}

/** Every file of the host rewritten with random bytes. */
const ENCRYPTED: Figures = {
  added: 0,
  modified: 2_000,
  deleted: 0,
  bytesNew: 400 * MiB,
  bytesNewIncompressible: 399 * MiB,
};

async function world(kv: Deno.Kv) {
  const { app, clock } = testApp(kv);
  const { tenant, engine, policy, host } = await backupWorld(kv, clock.now(), {
    orgs: ["Ops", "Other"],
    policy: { ...DAILY_POLICY, retentionDaily: 3 },
    hostname: "files.acme.example",
  });
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", clock.now());
  const viewer = await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", clock.now());
  const otherOrg = await addUser(kv, tenant, "admin2@acme.example", "admin", [tenant.orgs[1]], clock.now());
  const token = async (user: typeof admin) =>
    (await createApiToken(kv, userActor(user), {
      name: "t",
      permissions: [...userActor(user).permissions] as never,
      expiresInDays: 1,
    }, clock.now())).secret;
  const tokens = { admin: await token(admin), viewer: await token(viewer), otherOrg: await token(otherOrg) };
  const api = async (who: keyof typeof tokens, method: string, path: string, body?: unknown) => {
    const res = await app.request(`http://localhost:8000${path}`, {
      method,
      headers: { authorization: `Bearer ${tokens[who]}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
  let day = 0;
  /**
   * The next daily backup of the host reporting `figures` (the first one has nothing to compare with); a full
   * every third day.
   */
  const backup = async (figures: Figures): Promise<Run> => {
    const d = day++;
    const at = new Date(Date.UTC(2026, 10, 1 + d, 2));
    await runSchedulerTick(kv, at);
    const [job] = await claimJobs(kv, `agent:${host.id}`, 1, at);
    const ended = new Date(at.getTime() + 600_000).toISOString();
    const { job: done } = await applyResult(kv, job.principal, job.id, {
      status: "success",
      startedAt: at.toISOString(),
      endedAt: ended,
      bytesTransferred: figures.bytesNew,
      protectedBytes: 2_000 * MiB,
      stats: { files: 2_000, dirs: 40, ...figures },
      output: {
        restorePoint: {
          id: `snap-${d}`,
          // A full every third day, so that retention has whole chains to expire.
          chainId: `chain-${Math.floor(d / 3)}`,
          type: d % 3 === 0 ? "full" : "incremental",
          parentId: d % 3 === 0 ? null : `snap-${d - 1}`,
          sizeBytes: figures.bytesNew,
          fileCount: 2_000,
          completedAt: ended,
        },
        changesSince: d === 0 ? null : `snap-${d - 1}`,
      },
    }, at);
    await applyJobOutcome(kv, done as Job, at);
    const run = (await kv.get<string>(["runs_by_job", job.id])).value!;
    return (await kv.get<Run>(runKey(run))).value!;
  };
  return { app, clock, tenant, engine, policy, host, admin, viewer, otherOrg, api, backup, day: () => day };
}

const point = async (kv: Deno.Kv, id: string) => (await kv.get<RestorePoint>(restorePointKey(id))).value!;
const openAlert = async (kv: Deno.Kv, hostId: string) => {
  const id = (await kv.get<string>(["alerts_open", "host", hostId, "suspicious_change"])).value;
  return id ? (await kv.get<Alert>(["alerts", id])).value : null;
};

/** Ten ordinary days, then the encrypted one: returns the flagged run and its anomaly. */
async function flagged(kv: Deno.Kv) {
  const w = await world(kv);
  const runs: Run[] = [];
  for (let d = 0; d < 10; d++) runs.push(await w.backup(ordinary(d)));
  for (const r of runs) assert.equal(await anomalyOfRun(kv, r.id), null, `ordinary run ${r.id} not flagged`);
  const baseline = (await kv.get<AnomalyBaseline>(baselineKey(w.policy.id, w.host.id))).value!;
  assert.equal(baseline.samples.length, 9, "every compared ordinary backup joined the baseline");
  assert.equal(baseline.lastCleanPointId, runs[9].restorePointId);
  const run = await w.backup(ENCRYPTED);
  const anomaly = await anomalyOfRun(kv, run.id);
  assert.ok(anomaly, "the mass encryption is flagged");
  return { ...w, runs, run, anomaly, lastClean: runs[9] };
}

Deno.test("anomaly guard: ordinary churn builds the baseline; mass encryption raises the alert, marks the points and freezes prune", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await flagged(kv);
  const { anomaly, run } = w;
  assert.equal(anomaly.status, "pending");
  assert.equal(anomaly.hostName, "files.acme.example");
  assert.equal(anomaly.restorePointId, run.restorePointId);
  assert.equal(anomaly.lastCleanPointId, w.lastClean.restorePointId);
  assert.deepEqual(
    anomaly.verdict.checks.filter((c) => c.fired).map((c) => c.signal).sort(),
    ["bytes_new", "changed_files", "incompressible_share"],
  );
  // The points: suspect, and the last clean one.
  assert.deepEqual((await point(kv, run.restorePointId!)).anomaly, {
    mark: "suspect",
    anomalyId: anomaly.id,
  });
  assert.deepEqual((await point(kv, w.lastClean.restorePointId!)).anomaly, {
    mark: "last_clean",
    anomalyId: anomaly.id,
  });
  // The critical alert names the host and the figures; its "opened" event feeds the notifications.
  const alert = (await openAlert(kv, w.host.id))!;
  assert.equal(alert.severity, "critical");
  assert.equal(alert.subjectName, "files.acme.example");
  assert.match(alert.message, /files\.acme\.example/);
  assert.match(alert.message, /2,000 files changed \(0 added, 2,000 modified, 0 deleted\)/);
  assert.match(alert.message, /did not compress/);
  const events = (await Array.fromAsync(kv.list<AlertEvent>({ prefix: ["alert_events"] }))).map((e) =>
    e.value
  );
  assert.ok(events.some((e) => e.alertId === alert.id && e.event === "opened" && e.severity === "critical"));
  // Audited, with the figures.
  const audit = await auditEntries(kv, w.tenant.account.id);
  assert.ok(audit.some((a) => a.action === "anomaly.flagged" && a.summary.includes("2,000 files changed")));
  // The flagged figures stay out of the baseline.
  const baseline = (await kv.get<AnomalyBaseline>(baselineKey(w.policy.id, w.host.id))).value!;
  assert.equal(baseline.samples.length, 9);

  // Prune frozen: retention (3 daily) would expire eight points, but expires nothing of this host.
  const later = new Date(Date.UTC(2026, 10, 13, 5));
  assert.deepEqual(await applyRetention(kv, later), { expired: 0, pruneJobs: 0 });
  assert.equal(
    (await claimJobs(kv, `bes:${w.engine.id}`, 10, later)).filter((j) => j.kind === "prune").length,
    0,
  );
  const preview = await w.api("admin", "GET", `/api/v1/policies/${w.policy.id}/retention-preview`);
  assert.equal(preview.status, 200);
  const p = preview.body.objects[w.host.id];
  assert.deepEqual(p.expire, []);
  assert.match(p.frozen, /Prune frozen .* suspicious change of files\.acme\.example awaits review/);
  assert.ok(
    Object.values(p.reasons as Record<string, string[]>).some((r) =>
      r.includes("prune frozen (suspicious change)")
    ),
  );

  // A later ordinary backup is not flagged, joins the baseline, but is not vouched for as clean while frozen.
  const quiet = await w.backup(ordinary(11));
  assert.equal(await anomalyOfRun(kv, quiet.id), null);
  const after = (await kv.get<AnomalyBaseline>(baselineKey(w.policy.id, w.host.id))).value!;
  assert.equal(after.samples.length, 10);
  assert.equal(after.lastCleanPointId, w.lastClean.restorePointId);

  // Pages: the dashboard queue, the run and the restore point show the mark and the figures.
  const browser = new Browser(w.app);
  await signInAs(browser, kv, w.viewer, w.clock.now());
  const section = await (await browser.get("/backup/dashboard/sections/suspicious")).text();
  assertIncludes(section, `data-anomaly="${anomaly.id}"`);
  assertIncludes(section, "files.acme.example");
  assertIncludes(section, "2,000 files changed");
  assert.ok(!section.includes("#review"), "a viewer gets no review link");
  const runPage = await (await browser.get(`/backup/runs/${run.id}`)).text();
  assertIncludes(runPage, 'data-mark="suspect"');
  assertIncludes(runPage, 'data-signal="changed_files"');
  assertIncludes(runPage, 'data-stat="bytesNewIncompressible"');
  const queue = await w.api("viewer", "GET", "/api/v1/dashboard/queue?name=suspicious-changes");
  assert.equal(queue.status, 200);
  assert.deepEqual(queue.body.values.map((a: Anomaly) => a.id), [anomaly.id]);
  const adminBrowser = new Browser(w.app);
  await signInAs(adminBrowser, kv, w.admin, w.clock.now());
  const pointPage = await (await adminBrowser.get(`/backup/restore/points/${run.restorePointId}`)).text();
  assertIncludes(pointPage, 'data-mark="suspect"');
  const cleanPage = await (await adminBrowser.get(`/backup/restore/points/${w.lastClean.restorePointId}`))
    .text();
  assertIncludes(cleanPage, 'data-mark="last_clean"');
  const list = await (await adminBrowser.get(`/backup/restore?hostId=${w.host.id}`)).text();
  assert.match(list, /data-testid="point-anomaly"[^]*?suspect/);
  assert.match(list, /last clean/);
  const reviewPage = await (await adminBrowser.get(`/backup/anomalies/${anomaly.id}`)).text();
  assertIncludes(reviewPage, 'data-testid="review-approve"');
  assertIncludes(reviewPage, 'data-testid="review-incident"');
  assertIncludes(reviewPage, 'name="_csrf"');
  assertIncludes(reviewPage, 'name="confirm"');
  // The anomaly is out of another org's scope.
  assert.equal((await w.api("otherOrg", "GET", `/api/v1/anomalies/${anomaly.id}`)).status, 404);
  assert.equal((await w.api("otherOrg", "GET", "/api/v1/anomalies")).body.values.length, 0);
});

Deno.test("anomaly review: approve through the page form unfreezes prune, resolves the alert and the baseline accepts the change", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await flagged(kv);
  const browser = new Browser(w.app);
  await signInAs(browser, kv, w.viewer, w.clock.now());
  const path = `/backup/anomalies/${w.anomaly.id}`;
  // A viewer may read, not review; without the tick nothing changes; without CSRF the form is refused.
  assert.equal(
    (await browser.postForm(`${path}/approve`, { confirm: "on" }, { tokenFrom: path })).status,
    403,
  );
  const admin = new Browser(w.app);
  await signInAs(admin, kv, w.admin, w.clock.now());
  assert.equal((await admin.postForm(`${path}/approve`, { confirm: "on" }, { csrf: null })).status, 403);
  const untick = await admin.postForm(`${path}/approve`, {}, { tokenFrom: path });
  assert.equal(untick.status, 303);
  assert.equal((await anomalyOfRun(kv, w.run.id))!.status, "pending");
  const res = await admin.postForm(`${path}/approve`, { confirm: "on", note: "quarterly re-index" }, {
    tokenFrom: path,
  });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), path);
  const a = (await anomalyOfRun(kv, w.run.id))!;
  assert.equal(a.status, "approved");
  assert.equal(a.reviewedBy, w.admin.email);
  assert.equal(a.reviewNote, "quarterly re-index");
  assert.equal((await kv.get(pruneFreezeKey(w.host.id))).value, null, "the freeze is lifted");
  assert.equal(await openAlert(kv, w.host.id), null, "the alert is resolved");
  const baseline = (await kv.get<AnomalyBaseline>(baselineKey(w.policy.id, w.host.id))).value!;
  assert.equal(baseline.samples.length, 10, "the baseline accepted the change");
  assert.deepEqual(baseline.samples.at(-1), a.figures);
  assert.equal(baseline.lastCleanPointId, w.run.restorePointId);
  const audit = await auditEntries(kv, w.tenant.account.id);
  assert.ok(audit.some((e) => e.action === "anomaly.approve" && e.summary.includes("quarterly re-index")));
  // The queue is empty, and retention works again: points expire and one prune job is queued.
  const queue = await w.api("admin", "GET", "/api/v1/dashboard/queue?name=suspicious-changes");
  assert.deepEqual(queue.body.values, []);
  const later = new Date(Date.UTC(2026, 10, 13, 5));
  const applied = await applyRetention(kv, later);
  assert.ok(applied.expired > 0 && applied.pruneJobs === 1, JSON.stringify(applied));
  // Approving again is a conflict that changes nothing.
  const again = await w.api("admin", "POST", `/api/v1/anomalies/${a.id}/approve`, { confirm: true });
  assert.equal(again.status, 409);
});

Deno.test("anomaly review: a confirmed incident stays frozen until released (JSON API, permissions, audit)", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await flagged(kv);
  const base = `/api/v1/anomalies/${w.anomaly.id}`;
  assert.equal((await w.api("viewer", "POST", `${base}/confirm-incident`, { confirm: true })).status, 403);
  assert.equal((await w.api("otherOrg", "POST", `${base}/confirm-incident`, { confirm: true })).status, 404);
  const missing = await w.api("admin", "POST", `${base}/confirm-incident`, {});
  assert.equal(missing.status, 422);
  assert.ok(missing.body.error.fields.confirm);
  assert.equal(
    (await w.api("admin", "POST", `${base}/release`, { confirm: true })).status,
    409,
    "not an incident yet",
  );
  const confirmed = await w.api("admin", "POST", `${base}/confirm-incident`, {
    confirm: true,
    note: "case 42",
  });
  assert.equal(confirmed.status, 200);
  assert.equal(confirmed.body.status, "incident");
  // Still frozen, still alerting, still in the queue; approve is no longer possible.
  const later = new Date(Date.UTC(2026, 10, 13, 5));
  assert.deepEqual(await applyRetention(kv, later), { expired: 0, pruneJobs: 0 });
  assert.ok(await openAlert(kv, w.host.id));
  const queue = await w.api("admin", "GET", "/api/v1/dashboard/queue?name=suspicious-changes");
  assert.deepEqual(queue.body.values.map((a: Anomaly) => a.status), ["incident"]);
  assert.equal((await w.api("admin", "POST", `${base}/approve`, { confirm: true })).status, 409);
  const listed = await w.api("viewer", "GET", "/api/v1/anomalies?status=open");
  assert.deepEqual(listed.body.values.map((a: Anomaly) => a.id), [w.anomaly.id]);
  // Released: unfrozen, the alert resolves, audited; the baseline did not take the figures.
  const released = await w.api("admin", "POST", `${base}/release`, {
    confirm: true,
    note: "restored from clean",
  });
  assert.equal(released.status, 200);
  assert.equal(released.body.status, "released");
  assert.equal((await kv.get(pruneFreezeKey(w.host.id))).value, null);
  assert.equal(await openAlert(kv, w.host.id), null);
  const baseline = (await kv.get<AnomalyBaseline>(baselineKey(w.policy.id, w.host.id))).value!;
  assert.equal(baseline.samples.length, 9);
  const actions = (await auditEntries(kv, w.tenant.account.id)).map((e) => e.action);
  assert.ok(actions.includes("anomaly.incident") && actions.includes("anomaly.release"));
  assert.ok((await applyRetention(kv, later)).pruneJobs === 1);
});

Deno.test("anomaly review: two reviews racing — exactly one applies, the other is a conflict that changes nothing", async () => {
  for (let i = 0; i < 10; i++) {
    using kv = await Deno.openKv(":memory:");
    const w = await flagged(kv);
    const actor = userActor(w.admin);
    const now = w.clock.now();
    const results = await Promise.allSettled([
      reviewAnomaly(kv, actor, w.anomaly.id, "approve", { confirm: true }, now),
      reviewAnomaly(kv, actor, w.anomaly.id, "incident", { confirm: true }, now),
    ]);
    const ok = results.filter((r) => r.status === "fulfilled");
    assert.equal(ok.length, 1, `iteration ${i}`);
    const failed = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    assert.ok(failed.reason instanceof ConflictError, String(failed.reason));
    const a = (await anomalyOfRun(kv, w.run.id))!;
    const frozen = Boolean((await kv.get(pruneFreezeKey(w.host.id))).value);
    assert.equal(frozen, a.status === "incident", `iteration ${i}: freeze follows the winner (${a.status})`);
    const reviews = (await auditEntries(kv, w.tenant.account.id)).filter((e) =>
      e.action === "anomaly.approve" || e.action === "anomaly.incident"
    );
    assert.equal(reviews.length, 1);
  }
});

Deno.test("anomaly guard: a first backup and runs without change counts are never judged", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await world(kv);
  // The first backup counts every file as added: no comparison, no verdict, no sample.
  const first = await w.backup({ ...ENCRYPTED, added: 2_000, modified: 0 });
  assert.equal(await anomalyOfRun(kv, first.id), null);
  const baseline = (await kv.get<AnomalyBaseline>(baselineKey(w.policy.id, w.host.id))).value!;
  assert.equal(baseline.samples.length, 0);
  assert.equal(baseline.lastCleanPointId, first.restorePointId);
  // Learning: four compared backups are not enough to judge even an encryption.
  for (let d = 1; d < 5; d++) await w.backup(ordinary(d));
  const early = await w.backup(ENCRYPTED);
  assert.equal(await anomalyOfRun(kv, early.id), null, "still learning (minHistory 5)");
});
