/**
 * GET /metrics: a scripted scenario (engines registered, heartbeating, swept offline; hosts enrolled and
 * assigned; runs finished; jobs queued, claimed, requeued and cancelled; deliveries pending and failed;
 * a self-backup) is scraped, and every series documented in docs/monitoring.md is present and equal to
 * what the scenario made — and to the dashboard's own readers. Scrapes without the scope are refused.
 */
import assert from "node:assert/strict";
import { createApp } from "../../app.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { createSession, userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import { readLast24h, readSummary } from "../../domain/dashboard.ts";
import { applyHeartbeat, sweepEngineHeartbeats } from "../../domain/engines.ts";
import { assignHost } from "../../domain/assignments.ts";
import {
  applyResult,
  cancelJob,
  claimJobs,
  enqueueJob,
  expireLeases,
  LEASE_MS,
} from "../../domain/job_queue.ts";
import { createLogger } from "../../domain/log.ts";
import { runClaimed } from "../../jobs/crons.ts";
import { createMetrics } from "../../routes/metrics.ts";
import { createChannel } from "../../domain/notification_channels.ts";
import { deliverDue, dispatchAlertEvents, sendTestNotification } from "../../domain/notification_delivery.ts";
import { createRule } from "../../domain/notification_rules.ts";
import { checkOpsCounters } from "../../domain/ops_counters.ts";
import { createPolicy } from "../../domain/policies.ts";
import { type Actor, systemActor } from "../../domain/rbac.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import { listRunsByPolicy } from "../../domain/runs.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { runBackup } from "../../domain/self_backup_runs.ts";
import { createTarget } from "../../domain/storage.ts";
import {
  addUser,
  createTenant,
  engineClient,
  engineMetrics,
  enrollTestHost,
  onlineTestEngine,
  registerTestEngine,
  REPO_ROOT,
  TestClock,
} from "../helpers.ts";

const T0 = new Date("2026-11-22T02:00:00Z"); // a Sunday: the policy's weekly full is due
const MASTER_KEY = testConfig().masterKey!;

/** Parses the exposition format into `name{labels}` → value (labels as written, sorted by name). */
function parseExposition(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not an exposition line: ${line}`);
    const labels = m[3] ? m[3].split(",").sort().join(",") : "";
    out.set(labels ? `${m[1]}{${labels}}` : m[1], Number(m[4]));
  }
  return out;
}

function value(series: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  const text = Object.entries(labels).map(([k, v]) => `${k}="${v}"`).sort().join(",");
  const key = text ? `${name}{${text}}` : name;
  const v = series.get(key);
  assert.ok(v !== undefined, `series ${key} is missing`);
  return v;
}

/** The series names docs/monitoring.md documents (its "Series" table). */
async function documentedSeries(): Promise<string[]> {
  const doc = await Deno.readTextFile(`${REPO_ROOT}docs/monitoring.md`);
  const table = doc.slice(doc.indexOf("## Series"), doc.indexOf("\n## ", doc.indexOf("## Series") + 5));
  return [...new Set([...table.matchAll(/^\| `(cadres_\w+)`/gm)].map((m) => m[1]))];
}

async function scenario(kv: Deno.Kv, dataDir: string, metrics = createMetrics()) {
  const a = await createTenant(kv, "Operator", ["A1"], T0); // the oldest account: the platform operator
  const b = await createTenant(kv, "Customer", ["B1"], T0);
  const [a1] = a.orgs;
  const admin = await addUser(kv, a, "admin@a.example", "admin", "all", T0);
  const scoped = await addUser(kv, a, "scoped@a.example", "admin", [a1], T0);
  const adminB = await addUser(kv, b, "admin@b.example", "admin", "all", T0);
  const token = async (user: typeof admin, permissions: Array<"metrics" | "backup.view">) =>
    (await createApiToken(kv, userActor(user), { name: "t", permissions, expiresInDays: 0 }, T0)).secret;

  // One successful self-backup of the config database (before the webhook channel: its bundle check
  // does not know the channel's signing-secret vault record).
  const backup = await runBackup(kv, { database: "config", kind: "manual", requestedBy: "test" }, {
    clock: () => T0,
    masterKey: MASTER_KEY,
    dataDir,
  });
  assert.equal(backup.status, "success", backup.error ?? "");

  // Engines: online, pending, offline (silent 10 min, swept), and a degraded one in account B.
  const scopeA = { accountId: a.account.id, orgId: a1.id };
  const { engine: e1, keys: k1 } = await onlineTestEngine(kv, scopeA, T0, "bes-online");
  await registerTestEngine(kv, scopeA, T0, "bes-pending");
  const { engine: e3 } = await registerTestEngine(kv, scopeA, T0, "bes-offline");
  await applyHeartbeat(
    kv,
    e3.id,
    { version: "1", metrics: engineMetrics() },
    new Date(T0.getTime() - 10 * 60_000),
  );
  const { engine: e4 } = await registerTestEngine(
    kv,
    { accountId: b.account.id, orgId: b.orgs[0].id },
    T0,
    "bes-b",
  );
  await applyHeartbeat(kv, e4.id, { version: "1", metrics: engineMetrics({ memoryPercent: 97 }) }, T0);

  // A webhook channel to a closed port and a rule, so the offline alert makes a delivery that fails.
  const { channel } = await createChannel(kv, systemActor("test"), {
    type: "webhook",
    name: "pager",
    url: "http://127.0.0.1:9/hook",
    orgId: a1.id,
  }, { now: T0, masterKey: MASTER_KEY });
  await createRule(kv, systemActor("test"), {
    accountId: a.account.id,
    name: "all",
    minSeverity: "warning",
    orgIds: "all",
    events: ["opened"],
    channelIds: [channel.id],
  }, T0);
  assert.deepEqual((await sweepEngineHeartbeats(kv, T0)).offline, [e3.id]);
  assert.equal((await dispatchAlertEvents(kv, T0)).deliveries, 1);
  const sent = await deliverDue(kv, T0, { masterKey: MASTER_KEY, webhookTimeoutMs: 2000 });
  assert.equal(sent.retrying, 1, "the failed first attempt is retried later: still pending");
  await sendTestNotification(kv, systemActor("test"), channel.id, {
    now: T0,
    masterKey: MASTER_KEY,
    webhookTimeoutMs: 2000,
  });

  // A policy on the online BES with two online hosts; a third host stays pending and unassigned.
  const target = await createTarget(kv, systemActor("test"), {
    name: "disk",
    besId: e1.id,
    type: "local",
    config: { path: "/srv/backup" },
  }, { now: T0, masterKey: MASTER_KEY });
  const policy = await createPolicy(kv, systemActor("test"), {
    name: "weekly",
    besId: e1.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, T0);
  const h1 = await enrollTestHost(kv, scopeA, "h1", T0);
  const h2 = await enrollTestHost(kv, scopeA, "h2", T0);
  const h3 = await enrollTestHost(kv, scopeA, "h3", T0, { online: false });
  for (const host of [h1, h2]) {
    await assignHost(kv, systemActor("test"), { policyId: policy.id, hostId: host.id }, T0);
  }
  // The scheduler's tick, run as the cron runs it (claimed slot, observed); then a tick that fails.
  const logger = createLogger("error", () => {});
  const tick = { onTick: metrics.observeTick };
  await runClaimed(kv, logger, "dispatch_schedules", T0, (now) => runSchedulerTick(kv, now), tick);
  await runClaimed(kv, logger, "dispatch_schedules", T0, () => Promise.reject(new Error("ran twice")), tick);
  await runClaimed(kv, logger, "sweep_rpo", T0, () => Promise.reject(new Error("KV timeout")), tick);
  for (const [host, status] of [[h1, "success"], [h2, "failed"]] as const) {
    const [job] = await claimJobs(kv, `agent:${host.id}`, 1, T0);
    const { job: done } = await applyResult(kv, `agent:${host.id}`, job.id, {
      status,
      startedAt: T0.toISOString(),
      endedAt: T0.toISOString(),
      bytesTransferred: 10,
      protectedBytes: 10,
      ...(status === "failed" ? { error: { reason: "IO", message: "disk error" } } : {}),
      output: status === "success"
        ? { restorePoint: { id: `rp-${host.id}`, chainId: "c", type: "full", sizeBytes: 10, fileCount: 1 } }
        : null,
    }, T0);
    await applyJobOutcome(kv, done, T0);
  }
  assert.equal((await listRunsByPolicy(kv, policy.id)).length, 2);

  // The queue: a file restore queued 5 min ago; an image restore claimed 10 min ago whose lease expired
  // (requeued); a search queued then cancelled (not counted). The policy's BES also has one job queued
  // by the scenario (claimed over HTTP in the test).
  const tenantJob = { accountId: a.account.id, orgId: a1.id };
  const minutesAgo = (m: number) => new Date(T0.getTime() - m * 60_000);
  await enqueueJob(
    kv,
    { ...tenantJob, kind: "restore_files", principal: `agent:${h1.id}`, priority: "high" },
    minutesAgo(5),
  );
  const image = await enqueueJob(
    kv,
    { ...tenantJob, kind: "restore_image", principal: `agent:${h3.id}`, priority: "critical" },
    minutesAgo(10),
  );
  assert.equal((await claimJobs(kv, `agent:${h3.id}`, 1, minutesAgo(10)))[0].id, image.id);
  assert.equal((await expireLeases(kv, new Date(minutesAgo(10).getTime() + LEASE_MS + 1))).requeued, 1);
  const search = await enqueueJob(kv, { ...tenantJob, kind: "search", principal: `bes:${e1.id}` }, T0);
  await cancelJob(kv, search.id, T0);

  return {
    a,
    b,
    admin,
    e1,
    k1,
    metricsToken: await token(admin, ["metrics"]),
    viewToken: await token(admin, ["backup.view"]),
    scopedToken: await token(scoped, ["metrics"]),
    otherAccountToken: await token(adminB, ["metrics"]),
  };
}

Deno.test("GET /metrics: every documented series is present and equals the counters after a scenario", async () => {
  using kv = await Deno.openKv(":memory:");
  const dataDir = await Deno.makeTempDir({ prefix: "cadres-metrics-" });
  try {
    const metrics = createMetrics();
    const fx = await scenario(kv, dataDir, metrics);
    const clock = new TestClock(T0);
    const app = createApp({
      kv,
      config: testConfig({ dataDir }),
      clock: clock.now,
      logger: createLogger("error"),
      metrics,
    });

    // Traffic the HTTP series count: a page by route pattern, and a signed claim of the online BES.
    const { cookie } = await createSession(kv, fx.admin, T0);
    const page = await app.request(`/backup/engines/${fx.e1.id}`, {
      headers: { cookie: `cadres_session=${cookie}` },
    });
    assert.equal(page.status, 200);
    const client = engineClient(app, clock);
    const claim = await client.post(
      { kind: "bes", id: fx.e1.id, ...fx.k1 },
      "/api/bes/v1/jobs/claim",
      { max: 1 },
    );
    assert.equal(claim.status, 200, await claim.clone().text());
    assert.equal((await claim.json()).jobs.length, 1, "the BES's queued job is leased");

    const res = await app.request("/metrics", { headers: { authorization: `Bearer ${fx.metricsToken}` } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    const s = parseExposition(text);

    // Every documented series is there.
    const documented = await documentedSeries();
    assert.ok(documented.length >= 20, `docs/monitoring.md documents ${documented.length} series`);
    const names = new Set(
      [...s.keys()].map((k) => k.replace(/\{.*$/, "").replace(/_(bucket|sum|count)$/, "")),
    );
    for (const name of documented) assert.ok(names.has(name), `documented series ${name} is missing`);

    // Engines and hosts by status.
    const engines = { pending: 1, online: 1, offline: 1, degraded: 1, deleting: 0 };
    for (const [status, n] of Object.entries(engines)) {
      assert.equal(value(s, "cadres_engines", { status }), n, status);
    }
    const hosts = { pending: 1, online: 2, offline: 0, decommissioned: 0 };
    for (const [status, n] of Object.entries(hosts)) {
      assert.equal(value(s, "cadres_hosts", { status }), n, status);
    }

    // The dashboard's figures, read by the dashboard's own functions for each account.
    const all = {
      protected: 0,
      atRisk: 0,
      rpoBreach: 0,
      unprotectedHosts: 0,
      success: 0,
      warning: 0,
      failed: 0,
    };
    for (const account of [fx.a.account, fx.b.account]) {
      const actor: Actor = { ...systemActor("check"), accountId: account.id };
      const summary = await readSummary(kv, actor, T0);
      const day = await readLast24h(kv, actor, T0);
      all.protected += summary.protected;
      all.atRisk += summary.atRisk;
      all.rpoBreach += summary.rpoBreach;
      all.unprotectedHosts += summary.unprotectedHosts;
      all.success += day.success;
      all.warning += day.warning;
      all.failed += day.failed;
    }
    assert.deepEqual(all, {
      protected: 2,
      atRisk: 1,
      rpoBreach: 0,
      unprotectedHosts: 1,
      success: 1,
      warning: 0,
      failed: 1,
    });
    assert.equal(value(s, "cadres_protected_objects"), all.protected);
    assert.equal(value(s, "cadres_protected_objects_at_risk"), all.atRisk);
    assert.equal(value(s, "cadres_rpo_breaches"), all.rpoBreach);
    assert.equal(value(s, "cadres_unprotected_hosts"), all.unprotectedHosts);
    for (const outcome of ["success", "warning", "failed"] as const) {
      assert.equal(value(s, "cadres_runs_last_24h", { outcome }), all[outcome], outcome);
    }

    // The queue: the two restores remain; the BES's job was claimed over HTTP just now.
    const queued = new Map([["restore_files/high", 1], ["restore_image/critical", 1]]);
    for (const [key, n] of s) {
      const m = /^cadres_jobs_queued\{kind="(\w+)",priority="(\w+)"\}$/.exec(key);
      if (m) assert.equal(n, queued.get(`${m[1]}/${m[2]}`) ?? 0, key);
    }
    assert.equal(value(s, "cadres_jobs_queued", { kind: "backup", priority: "critical" }), 0);
    assert.equal(
      value(s, "cadres_jobs_queued_oldest_age_seconds"),
      600,
      "the image restore, created at 01:50",
    );

    // Deliveries, self-backups, accounts.
    assert.equal(value(s, "cadres_notification_deliveries", { status: "pending" }), 1);
    assert.equal(value(s, "cadres_notification_deliveries", { status: "failed" }), 1);
    assert.equal(value(s, "cadres_notification_deliveries", { status: "delivered" }), 0);
    assert.equal(
      value(s, "cadres_self_backup_last_success_timestamp_seconds", { database: "config" }),
      T0.getTime() / 1000,
    );
    assert.equal(value(s, "cadres_self_backup_last_success_timestamp_seconds", { database: "results" }), 0);
    assert.equal(value(s, "cadres_self_backup_enabled", { database: "config" }), 1);
    assert.equal(value(s, "cadres_accounts"), 2);

    // This instance's own series: the page by its route pattern (never the raw id), the claim.
    assert.equal(
      value(s, "cadres_http_requests_total", {
        method: "GET",
        route: "/backup/engines/:engineId",
        status: "200",
      }),
      1,
    );
    assert.ok(!text.includes(fx.e1.id), "no raw path (engine id) in a label");
    assert.equal(value(s, "cadres_job_claim_duration_seconds_count", { principal: "bes" }), 1);
    assert.equal(value(s, "cadres_jobs_claimed_total", { principal: "bes" }), 1);
    // The ticks: the scheduler's ran once (its second start lost the slot: not run, not counted).
    assert.equal(value(s, "cadres_cron_ticks_total", { job: "dispatch_schedules", outcome: "ok" }), 1);
    assert.equal(s.get('cadres_cron_ticks_total{job="dispatch_schedules",outcome="failed"}'), undefined);
    assert.equal(value(s, "cadres_cron_ticks_total", { job: "sweep_rpo", outcome: "failed" }), 1);
    assert.equal(value(s, "cadres_cron_tick_duration_seconds_count", { job: "dispatch_schedules" }), 1);
    assert.equal(value(s, "cadres_scheduler_jobs_dispatched_total"), 2);

    // The counters agree with the records they count.
    assert.deepEqual(await checkOpsCounters(kv), []);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("GET /metrics refuses scrapes without the metrics scope of the operator account", async () => {
  using kv = await Deno.openKv(":memory:");
  const dataDir = await Deno.makeTempDir({ prefix: "cadres-metrics-" });
  try {
    const fx = await scenario(kv, dataDir);
    const app = createApp({
      kv,
      config: testConfig({ dataDir }),
      clock: () => T0,
      logger: createLogger("error"),
    });
    const scrape = (headers: Record<string, string> = {}) => app.request("/metrics", { headers });
    const cases: Array<[string, Record<string, string>, number, string]> = [
      ["no credentials", {}, 401, "unauthorized"],
      ["a malformed token", { authorization: "Bearer nope" }, 401, "unauthorized"],
      ["a token without the metrics scope", { authorization: `Bearer ${fx.viewToken}` }, 403, "forbidden"],
      [
        "an admin token limited to some orgs",
        { authorization: `Bearer ${fx.scopedToken}` },
        403,
        "forbidden",
      ],
      [
        "another account's admin token",
        { authorization: `Bearer ${fx.otherAccountToken}` },
        403,
        "forbidden",
      ],
    ];
    for (const [what, headers, status, code] of cases) {
      const res = await scrape(headers);
      assert.equal(res.status, status, what);
      assert.match(res.headers.get("content-type") ?? "", /application\/json/, what);
      const body = await res.json();
      assert.equal(body.error.code, code, what);
      assert.ok(!JSON.stringify(body).includes("cadres_engines"), `${what}: no series leaked`);
    }
    assert.equal((await scrape({ authorization: `Bearer ${fx.metricsToken}` })).status, 200);

    const off = createApp({
      kv,
      config: testConfig({ dataDir, metricsEnabled: false }),
      clock: () => T0,
      logger: createLogger("error"),
    });
    const res = await off.request("/metrics", { headers: { authorization: `Bearer ${fx.metricsToken}` } });
    assert.equal(res.status, 404, "CADRES_METRICS=off");
    assert.equal((await res.json()).error.code, "not_found");
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("the Grafana dashboard and the alert rules use only documented series", async () => {
  const documented = new Set(await documentedSeries());
  const used = (text: string) =>
    [...text.matchAll(/\b(cadres_\w+?)(_bucket|_sum|_count)?\b/g)].map((m) => m[1]);
  const dashboard = JSON.parse(await Deno.readTextFile(`${REPO_ROOT}docs/grafana-dashboard.json`));
  assert.equal(dashboard.uid, "cadres-backup");
  const exprs: string[] = dashboard.panels.flatMap((p: { targets: Array<{ expr: string }> }) =>
    p.targets.map((t) => t.expr)
  );
  assert.ok(exprs.length >= 15);
  for (const name of used(exprs.join("\n"))) assert.ok(documented.has(name), `dashboard uses ${name}`);
  const rules = await Deno.readTextFile(`${REPO_ROOT}docs/prometheus-alerts.yml`);
  for (const name of used(rules)) assert.ok(documented.has(name), `alert rules use ${name}`);
  for (
    const alert of [
      "CadresBesOffline",
      "CadresRpoBreachesRising",
      "CadresQueueStalled",
      "CadresSelfBackupStale",
    ]
  ) {
    assert.match(rules, new RegExp(`- alert: ${alert}\\n`), `${alert} is defined`);
  }
});

Deno.test("the metrics scope: offered to administrators on the token form, refused to others", async () => {
  using kv = await Deno.openKv(":memory:");
  const tenant = await createTenant(kv, "Operator", ["A1"], T0);
  const admin = await addUser(kv, tenant, "admin@a.example", "admin", "all", T0);
  const viewer = await addUser(kv, tenant, "viewer@a.example", "viewer", "all", T0);
  await assert.rejects(
    () =>
      createApiToken(kv, userActor(viewer), { name: "m", permissions: ["metrics"], expiresInDays: 0 }, T0),
    /cannot have metrics/,
  );
  const app = createApp({ kv, config: testConfig(), clock: () => T0, logger: createLogger("error") });
  for (const [user, offered] of [[admin, true], [viewer, false]] as const) {
    const { cookie } = await createSession(kv, user, T0);
    const page = await app.request("/admin/tokens", { headers: { cookie: `cadres_session=${cookie}` } });
    assert.equal(page.status, 200);
    assert.equal((await page.text()).includes('value="metrics"'), offered, user.email);
  }
});
