/**
 * Backup > Jobs: the list and its filters (each one), org scope, the run history with its cursor, and the
 * job-level retry — its rules, one run per active host with jobs and audit in one write, racing retries,
 * large retries in batches that survive a crash, and the Retry island's visibility by permission.
 */
import assert from "node:assert/strict";
import { assignHost, setAssignmentState } from "../../domain/assignments.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { applyHostHeartbeat, enrollHost, type Host } from "../../domain/hosts.ts";
import {
  getJob,
  latestRun,
  listJobRuns,
  listJobs,
  parseJobFilter,
  resumeJobRetries,
  retryBlockedReason,
  retryJob,
} from "../../domain/job_views.ts";
import type { RetryFacts } from "../../domain/job_rules.ts";
import { applyResult, claimJobs, getJob as getQueuedJob } from "../../domain/job_queue.ts";
import { createPolicy, type Policy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { userActor } from "../../domain/auth.ts";
import { applyJobResultToRun } from "../../domain/job_outcomes.ts";
import { listRunsByPolicy, newRunInOp, type Run } from "../../domain/runs.ts";
import { retryRun } from "../../domain/run_retry.ts";
import { runKey } from "../../domain/keys/runs.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import {
  addUser,
  auditEntries,
  Browser,
  createTenant,
  engineMetrics,
  registerTestEngine,
  signInAs,
  targetInput,
  testApp,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);
const SUNDAY_2AM = new Date("2026-11-29T02:00:00Z");

// ---------------------------------------------------------------------------------------------------
// A world for the list: two orgs, two engines, five policies with known last runs, another account.

/** Writes a run with the given fields as a policy's newest run (fixtures for the list). */
async function addRun(kv: Deno.Kv, policy: Policy, fields: Partial<Run> & { at: string }): Promise<Run> {
  const at = new Date(fields.at);
  const op = kv.atomic();
  const run = newRunInOp(op, {
    policyId: policy.id,
    accountId: policy.accountId,
    orgId: policy.orgId,
    hostId: fields.hostId ?? null,
    jobId: null,
    kind: fields.kind ?? "full",
    trigger: fields.trigger ?? "schedule",
    status: fields.status ?? "success",
    scheduledFor: fields.at,
    error: fields.error ?? null,
    alertId: null,
  }, at);
  assert.ok((await op.commit()).ok);
  const done: Run = {
    ...run,
    startedAt: fields.status === "pending" ? null : fields.at,
    endedAt: ["success", "warning", "failed"].includes(fields.status ?? "success")
      ? new Date(at.getTime() + 90_000).toISOString()
      : null,
    ...fields,
  };
  await kv.set(runKey(run.id), done);
  return done;
}

async function listWorld(kv: Deno.Kv) {
  const now = new Date("2026-11-29T12:00:00Z");
  const tenant = await createTenant(kv, "Acme", ["Ops", "Labs"], now);
  const [ops, labs] = tenant.orgs;
  const accountId = tenant.account.id;
  const { engine: e1 } = await registerTestEngine(kv, { accountId, orgId: ops.id }, now, "bes-ops");
  const { engine: e2 } = await registerTestEngine(kv, { accountId, orgId: labs.id }, now, "bes-labs");
  const t1 = await createTarget(kv, system, targetInput(e1.id), { now, masterKey });
  const t2 = await createTarget(kv, system, targetInput(e2.id), { now, masterKey });
  const policy = (name: string, besId: string, targetId: string) =>
    createPolicy(kv, system, {
      name,
      besId,
      targetId,
      backupType: name === "gamma-images" ? "image" : "file",
      fullSchedule: "0 2 * * 0",
      incrementalSchedule: "0 2 * * 1-6",
      syntheticFullSchedule: name === "gamma-images" ? "0 4 1 * *" : null,
    }, now);
  const alpha = await policy("alpha-files", e1.id, t1.id);
  const beta = await policy("beta-db", e1.id, t1.id);
  const epsilon = await policy("epsilon-mail", e1.id, t1.id);
  const gamma = await policy("gamma-images", e2.id, t2.id);
  const delta = await policy("delta-new", e2.id, t2.id);
  await addRun(kv, alpha, { at: "2026-11-20T02:00:00Z", status: "success", kind: "full" });
  await addRun(kv, alpha, {
    at: "2026-11-28T02:00:00Z",
    status: "failed",
    kind: "full",
    retryable: true,
    error: { reason: "TARGET_UNREACHABLE", message: "NAS did not answer\nretry later" },
    errorLine: "NAS did not answer",
  });
  await addRun(kv, beta, { at: "2026-11-27T02:00:00Z", status: "success", kind: "incremental" });
  await addRun(kv, gamma, { at: "2026-11-25T04:00:00Z", status: "warning", kind: "synthetic_full" });
  await addRun(kv, epsilon, { at: "2026-11-29T02:00:00Z", status: "running", kind: "incremental" });
  // Another account's job with a look-alike name never shows.
  const other = await createTenant(kv, "Globex", ["Main"], now);
  const { engine: oe } = await registerTestEngine(
    kv,
    { accountId: other.account.id, orgId: other.orgs[0].id },
    now,
    "bes-globex",
  );
  const ot = await createTarget(kv, system, targetInput(oe.id), { now, masterKey });
  const foreign = await createPolicy(kv, system, {
    name: "alpha-foreign",
    besId: oe.id,
    targetId: ot.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, now);
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", now);
  const opsViewer = await addUser(kv, tenant, "viewer@acme.example", "viewer", [ops], now);
  const opsOperator = await addUser(kv, tenant, "operator@acme.example", "operator", [ops], now);
  return {
    now,
    tenant,
    ops,
    labs,
    e1,
    e2,
    alpha,
    beta,
    gamma,
    delta,
    epsilon,
    foreign,
    admin,
    opsViewer,
    opsOperator,
  };
}

async function names(kv: Deno.Kv, actor: ReturnType<typeof userActor>, query: Record<string, string> = {}) {
  const parsed = parseJobFilter(query);
  assert.ok(parsed.success, JSON.stringify(query));
  return (await listJobs(kv, actor, parsed.data)).values.map((j) => j.name);
}

Deno.test("listJobs() lists every native job in the account with its newest run, by name", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await listWorld(kv);
  const admin = userActor(w.admin);
  const { values, total, sources } = await listJobs(kv, admin, parseJobFilter({}).data!);
  assert.equal(total, 5);
  assert.deepEqual(values.map((j) => j.name), [
    "alpha-files",
    "beta-db",
    "delta-new",
    "epsilon-mail",
    "gamma-images",
  ]);
  const alpha = values[0];
  assert.deepEqual(alpha.source, { kind: "bes", besId: w.e1.id });
  assert.equal(alpha.sourceName, "bes-ops");
  assert.equal(alpha.id, w.alpha.id, "a native job's id is its policy's");
  assert.equal(alpha.lastRun?.status, "failed", "the newest run, not the older success");
  assert.equal(alpha.lastRun?.errorReason, "TARGET_UNREACHABLE");
  assert.equal(values[2].lastRun, null, "delta never ran");
  assert.equal(values[4].lastRun?.kind, "synthetic_full");
  assert.equal(values[4].lastRun?.type, "full", "a synthetic full counts as full");
  assert.deepEqual(sources.map((s) => s.label), ["bes-labs", "bes-ops"]);
});

Deno.test("listJobs() filters by search, source, last status, type, org and date range", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await listWorld(kv);
  const a = userActor(w.admin);
  // Search: policy name substring (any case), or the source job id (the policy id), exactly.
  assert.deepEqual(await names(kv, a, { q: "ALP" }), ["alpha-files"]);
  assert.deepEqual(await names(kv, a, { q: w.beta.id }), ["beta-db"]);
  assert.deepEqual(await names(kv, a, { q: w.beta.id.toLowerCase() }), ["beta-db"]);
  assert.deepEqual(await names(kv, a, { q: w.beta.id.slice(0, 10) }), [], "ids match whole, not in part");
  // Source (BES).
  assert.deepEqual(await names(kv, a, { source: `bes:${w.e2.id}` }), ["delta-new", "gamma-images"]);
  assert.deepEqual(await names(kv, a, { source: `bes:${w.e1.id}`, q: "mail" }), ["epsilon-mail"]);
  // Last status, including never run.
  assert.deepEqual(await names(kv, a, { status: "failed" }), ["alpha-files"]);
  assert.deepEqual(await names(kv, a, { status: "success" }), ["beta-db"]);
  assert.deepEqual(await names(kv, a, { status: "warning" }), ["gamma-images"]);
  assert.deepEqual(await names(kv, a, { status: "running" }), ["epsilon-mail"]);
  assert.deepEqual(await names(kv, a, { status: "pending" }), []);
  assert.deepEqual(await names(kv, a, { status: "never" }), ["delta-new"]);
  // Type of the last run: synthetic full counts as full; native jobs have no differential/snapshot/log.
  assert.deepEqual(await names(kv, a, { type: "full" }), ["alpha-files", "gamma-images"]);
  assert.deepEqual(await names(kv, a, { type: "incremental" }), ["beta-db", "epsilon-mail"]);
  for (const type of ["differential", "snapshot", "log"]) assert.deepEqual(await names(kv, a, { type }), []);
  // Organization.
  assert.deepEqual(await names(kv, a, { orgId: w.labs.id }), ["delta-new", "gamma-images"]);
  assert.deepEqual(await names(kv, a, { orgId: "account" }), [], "no account-scoped engine here");
  // Date range of the last run (inclusive UTC days); jobs that never ran are outside any range.
  assert.deepEqual(await names(kv, a, { from: "2026-11-27" }), ["alpha-files", "beta-db", "epsilon-mail"]);
  assert.deepEqual(await names(kv, a, { to: "2026-11-27" }), ["beta-db", "gamma-images"]);
  assert.deepEqual(await names(kv, a, { from: "2026-11-28", to: "2026-11-28" }), ["alpha-files"]);
  // Filters combine.
  assert.deepEqual(await names(kv, a, { type: "full", status: "warning", orgId: w.labs.id }), [
    "gamma-images",
  ]);
});

Deno.test("listJobs() sorts by name or last run time (never-run last) and pages", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await listWorld(kv);
  const a = userActor(w.admin);
  assert.deepEqual(await names(kv, a, { sort: "-name" }), [
    "gamma-images",
    "epsilon-mail",
    "delta-new",
    "beta-db",
    "alpha-files",
  ]);
  assert.deepEqual(await names(kv, a, { sort: "-lastRunAt" }), [
    "epsilon-mail",
    "alpha-files",
    "beta-db",
    "gamma-images",
    "delta-new",
  ]);
  assert.deepEqual(await names(kv, a, { sort: "lastRunAt" }), [
    "gamma-images",
    "beta-db",
    "alpha-files",
    "epsilon-mail",
    "delta-new",
  ]);
  const page = await listJobs(kv, a, parseJobFilter({ offset: "2", limit: "2" }).data!);
  assert.equal(page.total, 5);
  assert.deepEqual(page.values.map((j) => j.name), ["delta-new", "epsilon-mail"]);
});

Deno.test("parseJobFilter() refuses bad values with a message per field", () => {
  const bad = parseJobFilter({
    status: "bogus",
    type: "weekly",
    from: "2026-13-01",
    limit: "0",
    sort: "size",
    source: "tape:1",
  });
  assert.equal(bad.success, false);
  const fields = Object.fromEntries(bad.error!.issues.map((i) => [String(i.path[0]), i.message]));
  assert.match(fields.status, /must be one of success, warning, failed, running, pending, skipped, never/);
  assert.match(fields.type, /must be one of full, incremental, differential, snapshot, log/);
  assert.match(fields.from, /must be a date \(YYYY-MM-DD\)/);
  assert.match(fields.limit, /1–200/);
  assert.match(fields.sort, /must be one of name/);
  assert.match(fields.source, /bes:<id>/);
  const reversed = parseJobFilter({ from: "2026-11-28", to: "2026-11-01" });
  assert.equal(reversed.success, false);
  assert.deepEqual(reversed.error!.issues.map((i) => [i.path[0], i.message]), [[
    "to",
    "must be on or after the from date",
  ]]);
  assert.ok(parseJobFilter({ q: "", status: "", from: "" }).success, "blank fields are not set");
});

Deno.test("GET /backup/jobs renders the rows, each filter, the empty state and 400 with field errors", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await listWorld(kv);
  const { app } = testApp(kv, new TestClock(w.now));
  const browser = new Browser(app);
  await signInAs(browser, kv, w.admin, w.now);
  const page = async (query: string) => {
    const res = await browser.get(`/backup/jobs${query}`);
    return { status: res.status, type: res.headers.get("content-type"), html: await res.text() };
  };
  const rows = (html: string) =>
    [...html.matchAll(/data-testid="job-row"[^]*?<a href="\/backup\/jobs\/([^"]+)">([^<]+)</g)]
      .map((m) => m[2]);
  const all = await page("");
  assert.equal(all.status, 200);
  assert.match(all.type ?? "", /text\/html/);
  assert.deepEqual(rows(all.html), ["alpha-files", "beta-db", "delta-new", "epsilon-mail", "gamma-images"]);
  assert.ok(!all.html.includes("alpha-foreign"), "another account's job never shows");
  assert.ok(!all.html.includes("Not available yet"), "the placeholder is gone");
  assert.match(all.html, /TARGET_UNREACHABLE/);
  assert.match(all.html, /never run/);
  assert.match(all.html, /full \(and synthetic full\)/, "the type filter says how synthetic fulls count");
  const cases: Array<[string, string[]]> = [
    ["?q=beta", ["beta-db"]],
    [`?q=${w.alpha.id}`, ["alpha-files"]],
    [`?source=bes%3A${w.e2.id}`, ["delta-new", "gamma-images"]],
    ["?status=failed", ["alpha-files"]],
    ["?status=never", ["delta-new"]],
    ["?type=full", ["alpha-files", "gamma-images"]],
    [`?orgId=${w.ops.id}`, ["alpha-files", "beta-db", "epsilon-mail"]],
    ["?from=2026-11-28&to=2026-11-29", ["alpha-files", "epsilon-mail"]],
    ["?sort=-lastRunAt&limit=2", ["epsilon-mail", "alpha-files"]],
  ];
  for (const [query, expected] of cases) {
    const r = await page(query);
    assert.equal(r.status, 200, query);
    assert.deepEqual(rows(r.html), expected, query);
  }
  const paged = await page("?limit=2&offset=2");
  assert.match(paged.html, /Showing 3–4 of 5/);
  const none = await page("?type=log");
  assert.equal(none.status, 200);
  assert.match(none.html, /No jobs match these filters/);
  const bad = await page("?status=bogus&from=2026-02-30&q=keep-me");
  assert.equal(bad.status, 400);
  assert.match(bad.html, /data-testid="filter-errors"/);
  assert.match(bad.html, /Last status<\/strong>: Must be one of success/);
  assert.match(bad.html, /From<\/strong>: Must be a date \(YYYY-MM-DD\)/);
  assert.match(bad.html, /value="keep-me"/, "what was typed is kept");
  assert.deepEqual(rows(bad.html), []);
});

Deno.test("GET /api/v1/jobs filters like the page and answers 422 with fields for bad filters", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await listWorld(kv);
  const { app } = testApp(kv, new TestClock(w.now));
  const browser = new Browser(app);
  await signInAs(browser, kv, w.admin, w.now);
  const res = await browser.get("/api/v1/jobs?type=incremental&sort=-name");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /application\/json/);
  const body = await res.json();
  assert.deepEqual(body.values.map((j: { name: string }) => j.name), ["epsilon-mail", "beta-db"]);
  assert.equal(body.total, 2);
  const bad = await browser.get("/api/v1/jobs?status=nope");
  assert.equal(bad.status, 422);
  assert.match((await bad.json()).error.fields.status, /Must be one of/);
});

Deno.test("org scope: an org-scoped user sees only their org's jobs and gets 404 for others", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await listWorld(kv);
  const viewer = userActor(w.opsViewer);
  assert.deepEqual(await names(kv, viewer), ["alpha-files", "beta-db", "epsilon-mail"]);
  assert.deepEqual(
    await names(kv, viewer, { orgId: w.labs.id }),
    [],
    "filtering to another org shows nothing",
  );
  await assert.rejects(() => getJob(kv, viewer, w.gamma.id), /not found/);
  await assert.rejects(() => listJobRuns(kv, viewer, w.gamma.id, { limit: 10 }), /not found/);
  await assert.rejects(() => getJob(kv, userActor(w.admin), w.foreign.id), /not found/, "another account");
  const { app } = testApp(kv, new TestClock(w.now));
  const browser = new Browser(app);
  await signInAs(browser, kv, w.opsViewer, w.now);
  const list = await (await browser.get("/backup/jobs")).text();
  assert.ok(!list.includes("gamma-images") && !list.includes("delta-new"));
  assert.ok(!list.includes("bes-labs"), "another org's BES is not even a filter option");
  for (
    const path of [
      `/backup/jobs/${w.gamma.id}`,
      `/api/v1/jobs/${w.gamma.id}`,
      `/api/v1/jobs/${w.gamma.id}/runs`,
      `/backup/jobs/${w.foreign.id}`,
      "/backup/jobs/01NOSUCHJOB000000000000000",
    ]
  ) {
    const res = await browser.get(path);
    assert.equal(res.status, 404, path);
    assert.ok(!(await res.text()).includes("gamma-images"), path);
  }
  assert.equal((await browser.get(`/backup/jobs/${w.alpha.id}`)).status, 200);
});

Deno.test("GET /backup/jobs/:id shows every column of the run history, newest first, with a cursor", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await listWorld(kv);
  for (let i = 0; i < 5; i++) {
    await addRun(kv, w.beta, {
      at: `2026-11-0${i + 1}T02:00:00Z`,
      status: "success",
      kind: "incremental",
      bytesTransferred: 5 * 1024 ** 2,
      protectedBytes: 2 * 1024 ** 3,
      restorePointId: `RP-${i + 1}`,
    });
  }
  // The history is by creation (newest first): the newest created is the last addRun above.
  const { app } = testApp(kv, new TestClock(w.now));
  const browser = new Browser(app);
  await signInAs(browser, kv, w.admin, w.now);
  const alpha = await (await browser.get(`/backup/jobs/${w.alpha.id}`)).text();
  for (
    const column of [
      "Status",
      "Host",
      "Kind",
      "Started / ended",
      "Duration",
      "Transferred",
      "Protected",
      "Restore point",
      "Retryable",
    ]
  ) {
    assert.match(alpha, new RegExp(`<th>${column}</th>`), column);
  }
  const alphaRows = [...alpha.matchAll(/data-testid="history-row"[^]*?<\/tr>/g)].map((m) => m[0]);
  assert.equal(alphaRows.length, 2);
  assert.match(alphaRows[0], /failed/);
  assert.match(
    alphaRows[0],
    /class="cell-status"[^]*?failed[^]*?TARGET_UNREACHABLE<\/code> NAS did not answer[^]*?<\/td>/,
    "the first error line, under the status",
  );
  assert.match(alphaRows[0], /title="2026-11-28 02:00:\d\d UTC"/);
  assert.match(alphaRows[0], /title="2026-11-28 02:01:\d\d UTC"/);
  assert.match(alphaRows[0], /1 min 30 s/);
  assert.match(alphaRows[0], /<td data-label="Retryable">yes<\/td>/, "retryable");
  assert.match(alphaRows[1], /success/);

  const first = await (await browser.get(`/backup/jobs/${w.beta.id}?limit=4`)).text();
  const ids = (html: string) => [...html.matchAll(/data-run-id="([^"]+)"/g)].map((m) => m[1]);
  const firstIds = ids(first);
  assert.equal(firstIds.length, 4);
  assert.deepEqual(firstIds, [...firstIds].sort().reverse(), "newest first");
  assert.match(
    first,
    /<code class="id-short" title="RP-5">RP-5<\/code>/,
    "the restore point id (its end shown, in full on hover and when copied)",
  );
  assert.match(first, /5\.0 MB/);
  assert.match(first, /2\.0 GB/);
  const cursor = /href="\/backup\/jobs\/[^"?]+\?cursor=([^"#]+)#runs"/.exec(first)?.[1];
  assert.equal(cursor, firstIds[3]);
  const second = await (await browser.get(`/backup/jobs/${w.beta.id}?limit=4&cursor=${cursor}`)).text();
  assert.equal(ids(second).length, 2, "six runs: four, then two");
  assert.ok(ids(second).every((id) => id < cursor!));
  assert.ok(!second.includes('data-testid="older-runs"'), "no cursor after the last page");
  // A cursor that is not a run id (a stale or edited link): the newest runs, with a notice.
  const badCursor = await browser.get(`/backup/jobs/${w.beta.id}?limit=4&cursor=%3Cscript%3E`);
  assert.equal(badCursor.status, 200);
  const badHtml = await badCursor.text();
  assert.match(badHtml, /data-testid="cursor-notice"/);
  assert.deepEqual(ids(badHtml), firstIds, "the first page");

  const api = await (await browser.get(`/api/v1/jobs/${w.beta.id}/runs?limit=4`)).json();
  assert.deepEqual(api.values.map((r: Run) => r.id), firstIds);
  assert.equal(api.cursor, cursor);
});

// ---------------------------------------------------------------------------------------------------
// Retry: the real flow (scheduler → claim → result), three hosts on one policy.

async function retryWorld(kv: Deno.Kv, hostCount = 3) {
  const clock = new TestClock(new Date("2026-11-29T01:50:00Z"));
  const tenant = await createTenant(kv, "Acme", ["Ops", "Labs"], clock.now());
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, clock.now());
  await applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, clock.now());
  const target = await createTarget(kv, system, targetInput(engine.id), { now: clock.now(), masterKey });
  const policy = await createPolicy(kv, system, {
    name: "files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    incrementalSchedule: "0 2 * * 1-6",
    syntheticFullSchedule: "30 3 * * *",
  }, clock.now());
  const hosts: Host[] = [];
  for (let i = 0; i < hostCount; i++) {
    const { host } = await enrollHost(kv, scope, {
      hostname: `h${i + 1}.acme.example`,
      os: "Debian 12",
      ipAddress: `10.0.0.${i + 2}`,
      publicKey: generateKeyPair().publicKey,
      version: "1",
    }, clock.now());
    await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, clock.now());
    await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, clock.now());
    hosts.push(host);
  }
  return { tenant, engine, policy, hosts, clock };
}

/** Finishes a run's job through the engine protocol's domain calls. */
async function finish(
  kv: Deno.Kv,
  run: Run,
  status: "success" | "warning" | "failed",
  retryable: boolean,
  now = SUNDAY_2AM,
) {
  const job = (await getQueuedJob(kv, run.jobId!))!;
  await claimJobs(kv, job.principal, 50, now);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status,
    startedAt: new Date(now.getTime() + 5_000).toISOString(),
    endedAt: new Date(now.getTime() + 60_000).toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    error: status === "success" ? null : { reason: "TARGET_UNREACHABLE", message: "NAS did not answer" },
    retryable,
  }, now);
  await applyJobResultToRun(kv, done, now);
}

/** The Sunday full on every host, all finished with `status` (retryable as given). */
async function allFinished(kv: Deno.Kv, policyId: string, status: "success" | "failed", retryable = true) {
  await runSchedulerTick(kv, SUNDAY_2AM);
  const runs = await listRunsByPolicy(kv, policyId);
  for (const r of runs) await finish(kv, r, status, retryable);
  return runs;
}

Deno.test("retryBlockedReason() names the reason for each refusal and allows a failed retryable job", () => {
  const base: RetryFacts = {
    latest: { status: "failed", retryable: true, trigger: "schedule", kind: "full" },
    inFlight: 0,
    activeHosts: 2,
    pausedReason: null,
  };
  const withLatest = (latest: Partial<NonNullable<RetryFacts["latest"]>>) => ({
    ...base,
    latest: { ...base.latest!, ...latest },
  });
  assert.equal(retryBlockedReason(base), null);
  assert.equal(retryBlockedReason(withLatest({ status: "warning" })), null);
  assert.match(retryBlockedReason({ ...base, latest: null })!, /never run/);
  assert.match(retryBlockedReason(withLatest({ status: "success" }))!, /succeeded/);
  assert.match(retryBlockedReason(withLatest({ status: "running" }))!, /still running/);
  assert.match(retryBlockedReason(withLatest({ status: "skipped" }))!, /skipped/);
  assert.match(retryBlockedReason(withLatest({ retryable: false }))!, /not marked retryable/);
  assert.match(retryBlockedReason(withLatest({ retryable: false, trigger: "retry" }))!, /retry runs are not/);
  assert.match(retryBlockedReason({ ...base, inFlight: 2 })!, /2 other runs .* still pending or running/);
  assert.match(retryBlockedReason({ ...base, pausedReason: "storage_critical" })!, /critical capacity/);
  assert.match(retryBlockedReason({ ...base, activeHosts: 0 })!, /no active hosts/);
  assert.match(
    retryBlockedReason({ ...withLatest({ kind: "synthetic_full" }), activeHosts: 0 })!,
    /no active hosts/,
    "a synthetic full retries per active host too (on the BES)",
  );
});

Deno.test("retryJob() refuses when the latest run succeeded, is not retryable, or another run is in flight", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await retryWorld(kv);
  await assert.rejects(() => retryJob(kv, system, f.policy.id, SUNDAY_2AM), /never run/);
  await runSchedulerTick(kv, SUNDAY_2AM);
  const runs = await listRunsByPolicy(kv, f.policy.id); // newest first
  await assert.rejects(() => retryJob(kv, system, f.policy.id, SUNDAY_2AM), /still pending/);
  await finish(kv, runs[0], "failed", true);
  await assert.rejects(
    () => retryJob(kv, system, f.policy.id, SUNDAY_2AM),
    /2 other runs of this job are still pending or running/,
  );
  await finish(kv, runs[1], "success", false);
  await finish(kv, runs[2], "success", false);
  assert.equal(retryBlockedReason((await getJob(kv, system, f.policy.id)).retry.facts), null, "now allowed");
  // Now allowed; but a second world shows the other refusals on the latest run.
  using kv2 = await Deno.openKv(":memory:");
  const g = await retryWorld(kv2);
  await allFinished(kv2, g.policy.id, "success");
  await assert.rejects(
    () => retryJob(kv2, system, g.policy.id, SUNDAY_2AM),
    (e: Error) => e.name === "ValidationError" && /The latest run succeeded/.test(e.message),
  );
  using kv3 = await Deno.openKv(":memory:");
  const h = await retryWorld(kv3);
  await allFinished(kv3, h.policy.id, "failed", false);
  await assert.rejects(() => retryJob(kv3, system, h.policy.id, SUNDAY_2AM), /not marked retryable/);
  assert.equal((await listRunsByPolicy(kv3, h.policy.id)).length, 3, "nothing was dispatched");
});

Deno.test("retryJob() dispatches one run and agent job per active host, with the audit entry, once", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await retryWorld(kv);
  const third = (await Array.fromAsync(kv.list<string>({ prefix: ["assignments_by_policy", f.policy.id] })))
    .find((e) => e.key[2] === f.hosts[2].id)!.value;
  await setAssignmentState(kv, system, third, "paused", f.clock.now());
  await allFinished(kv, f.policy.id, "failed");
  const latestBefore = (await latestRun(kv, f.policy.id))!;
  const { runs, hosts, pending } = await retryJob(kv, system, f.policy.id, SUNDAY_2AM);
  assert.equal(pending, false);
  assert.deepEqual(hosts.map((h) => h.hostname).sort(), ["h1.acme.example", "h2.acme.example"]);
  assert.equal(runs.length, 2, "one run per active host (the paused one gets none)");
  for (const run of runs) {
    assert.equal(run.trigger, "retry");
    assert.equal(run.status, "pending");
    assert.equal(run.kind, "full", "the latest run's kind");
    assert.equal(run.retryable, false, "retry runs are not retryable");
    const job = (await getQueuedJob(kv, run.jobId!))!;
    assert.equal(job.kind, "backup");
    assert.equal(job.principal, `agent:${run.hostId}`);
    assert.equal(job.payload.hostId, run.hostId);
    assert.equal(job.payload.runKind, "full");
    assert.equal(job.status, "queued");
  }
  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "job.retry");
  assert.equal(audit.length, 1);
  assert.match(audit[0].summary, /Retried job files: 2 full runs on its active hosts after failed run/);
  assert.equal((await kv.get(["run_retries", latestBefore.id])).value, runs[0].id, "the guard key");
  await assert.rejects(() => retryJob(kv, system, f.policy.id, SUNDAY_2AM), /still pending/);
  await assert.rejects(() => retryRun(kv, system, latestBefore.id, SUNDAY_2AM), /latest/);
  // Those retries end up failed: a retry is not retryable, so the job cannot be retried again.
  for (const run of runs) await finish(kv, run, "failed", true, new Date("2026-11-29T03:00:00Z"));
  const facts = (await getJob(kv, system, f.policy.id)).retry.facts;
  assert.match(retryBlockedReason(facts)!, /itself a retry/);
});

Deno.test("retryJob() of a failed synthetic full queues one synthetic full per active host on the BES", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await retryWorld(kv, 2);
  const at = new Date("2026-11-29T03:30:00Z");
  await runSchedulerTick(kv, at);
  const scheduled = await listRunsByPolicy(kv, f.policy.id);
  assert.deepEqual(scheduled.map((r) => r.kind), ["synthetic_full", "synthetic_full"], "one per host");
  for (const run of scheduled) await finish(kv, run, "failed", true, at);
  const { runs } = await retryJob(kv, system, f.policy.id, at);
  assert.deepEqual(runs.map((r) => r.hostId).sort(), f.hosts.map((h) => h.id).sort());
  for (const run of runs) {
    assert.deepEqual([run.kind, run.trigger], ["synthetic_full", "retry"]);
    const job = (await getQueuedJob(kv, run.jobId!))!;
    assert.equal(job.kind, "synthetic_full");
    assert.equal(job.principal, `bes:${f.engine.id}`);
    assert.equal(job.payload.hostId, run.hostId);
  }
  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "job.retry");
  assert.match(audit[0].summary, /2 synthetic fulls on the BES for its active hosts after failed run/);
});

Deno.test("invariant 5 for jobs: racing retries create exactly one set of runs (many iterations)", async () => {
  for (let i = 0; i < 25; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await retryWorld(kv);
    const latest = (await allFinished(kv, f.policy.id, "failed"))[0];
    const outcomes = await Promise.allSettled([
      retryJob(kv, system, f.policy.id, SUNDAY_2AM),
      retryJob(kv, system, f.policy.id, SUNDAY_2AM),
      retryJob(kv, system, f.policy.id, SUNDAY_2AM),
      retryJob(kv, system, f.policy.id, SUNDAY_2AM),
    ]);
    assert.equal(outcomes.filter((o) => o.status === "fulfilled").length, 1, `iteration ${i}`);
    for (const o of outcomes) {
      if (o.status === "rejected") assert.match(String(o.reason), /already been retried|still pending/);
    }
    const retries = (await listRunsByPolicy(kv, f.policy.id)).filter((r) => r.trigger === "retry");
    assert.equal(retries.length, 3, `iteration ${i}: one run per host`);
    assert.equal(new Set(retries.map((r) => r.hostId)).size, 3);
    let queued = 0;
    for await (const _ of kv.list({ prefix: ["job_queue"] })) queued++;
    assert.equal(queued, 3, `iteration ${i}: exactly the retry jobs are queued`);
    const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "job.retry");
    assert.equal(audit.length, 1, `iteration ${i}: one audit entry`);
    assert.equal((await kv.get(["run_retries", latest.id])).versionstamp !== null, true);
  }
});

Deno.test("a job retry and a run retry of the same latest run exclude each other", async () => {
  for (let i = 0; i < 10; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await retryWorld(kv);
    const latest = (await allFinished(kv, f.policy.id, "failed"))[0];
    const [job, run] = await Promise.allSettled([
      retryJob(kv, system, f.policy.id, SUNDAY_2AM),
      retryRun(kv, system, latest.id, SUNDAY_2AM),
    ]);
    assert.equal([job, run].filter((o) => o.status === "fulfilled").length, 1, `iteration ${i}`);
    const retries = (await listRunsByPolicy(kv, f.policy.id)).filter((r) => r.trigger === "retry");
    assert.equal(retries.length, job.status === "fulfilled" ? 3 : 1);
  }
});

/** A KV whose atomic commits fail (as a crash would) after `ok` of them went through. */
function crashingKv(kv: Deno.Kv, ok: number): Deno.Kv {
  let commits = 0;
  return new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = () => {
            if (++commits > ok) return Promise.reject(new Error("simulated crash"));
            return commit();
          };
          return op;
        };
      }
      const value = Reflect.get(target, prop);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

Deno.test("a retry larger than one write goes in batches; a crash mid-way is finished once by resumeJobRetries()", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await retryWorld(kv, 7);
  await allFinished(kv, f.policy.id, "failed");
  // The first write (guard, audit, two hosts, the cursor) lands; the next one "crashes".
  await assert.rejects(
    () => retryJob(crashingKv(kv, 1), system, f.policy.id, SUNDAY_2AM, { perWrite: 2 }),
    /simulated crash/,
  );
  const retries = async () => (await listRunsByPolicy(kv, f.policy.id)).filter((r) => r.trigger === "retry");
  assert.equal((await retries()).length, 2);
  assert.equal(
    (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "job.retry").length,
    1,
  );
  await assert.rejects(() => retryJob(kv, system, f.policy.id, SUNDAY_2AM), /still pending/);
  // Resumers racing each other finish it: every host exactly once.
  const created = await Promise.all([resumeJobRetries(kv, SUNDAY_2AM), resumeJobRetries(kv, SUNDAY_2AM)]);
  assert.equal(created[0] + created[1], 5);
  const done = await retries();
  assert.equal(done.length, 7);
  assert.deepEqual(new Set(done.map((r) => r.hostId)), new Set(f.hosts.map((h) => h.id)));
  assert.equal(await resumeJobRetries(kv, SUNDAY_2AM), 0, "nothing left");
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["job_retry_dispatch"] }))).length, 0);
});

Deno.test("a batched retry racing resumers still gives every host exactly one run", async () => {
  for (let i = 0; i < 10; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await retryWorld(kv, 5);
    await allFinished(kv, f.policy.id, "failed");
    let finished = false;
    // Resumers keep polling while the retry writes its batches, so they compete for the same cursor.
    const resumer = async () => {
      let created = 0;
      while (!finished) {
        created += await resumeJobRetries(kv, SUNDAY_2AM);
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
      return created;
    };
    const retry = retryJob(kv, system, f.policy.id, SUNDAY_2AM, { perWrite: 2 })
      .finally(() => finished = true);
    const [outcome, r1, r2] = await Promise.all([retry, resumer(), resumer()]);
    const retries = (await listRunsByPolicy(kv, f.policy.id)).filter((r) => r.trigger === "retry");
    assert.equal(retries.length, 5, `iteration ${i}`);
    assert.equal(new Set(retries.map((r) => r.hostId)).size, 5, `iteration ${i}`);
    assert.equal(outcome.runs.length + r1 + r2, 5, `iteration ${i}: each run counted by its writer once`);
  }
});

/** Follows a 303 and returns the flash notice the next page shows. */
async function notice(browser: Browser, res: Response): Promise<string> {
  assert.equal(res.status, 303);
  const html = await (await browser.get(res.headers.get("location")!)).text();
  return /<p class="notice" role="status">([^<]*)<\/p>/.exec(html)?.[1] ?? "";
}

Deno.test("retry over HTTP: viewers get 403 and no Retry button; operators see the reason, then retry", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await retryWorld(kv);
  const [ops] = f.tenant.orgs;
  const viewer = await addUser(kv, f.tenant, "viewer@acme.example", "viewer", [ops], SUNDAY_2AM);
  const operator = await addUser(kv, f.tenant, "operator@acme.example", "operator", [ops], SUNDAY_2AM);
  const { app } = testApp(kv, new TestClock(SUNDAY_2AM));
  await allFinished(kv, f.policy.id, "success");
  const path = `/backup/jobs/${f.policy.id}`;

  const asViewer = new Browser(app);
  await signInAs(asViewer, kv, viewer, SUNDAY_2AM);
  const viewerPage = await (await asViewer.get(path)).text();
  assert.ok(!viewerPage.includes('data-island="RetryJob"'), "no Retry island for a viewer");
  assert.ok(!viewerPage.includes(`${path}/retry`), "no retry form either");
  assert.ok(!/>Retry</.test(viewerPage));
  assert.equal((await asViewer.postForm(`${path}/retry`, {}, { tokenFrom: path })).status, 403);
  const csrf = await asViewer.csrfFor(path);
  const apiAsViewer = await asViewer.request(`/api/v1/jobs/${f.policy.id}/retry`, {
    method: "POST",
    headers: { origin: "http://localhost:8000", "x-csrf-token": csrf },
  });
  assert.equal(apiAsViewer.status, 403);

  const asOperator = new Browser(app);
  await signInAs(asOperator, kv, operator, SUNDAY_2AM);
  const blocked = await (await asOperator.get(path)).text();
  assert.match(blocked, /data-island="RetryJob"/);
  assert.match(blocked, /<button type="submit" class="btn muted" disabled/);
  assert.match(blocked, /data-testid="retry-reason">The latest run succeeded: only a failed or warning run/);
  const refused = await asOperator.postForm(`${path}/retry`, {}, { tokenFrom: path });
  assert.equal(refused.status, 303);
  assert.match(await notice(asOperator, refused), /^Not retried: The latest run succeeded/);
  const token = await asOperator.csrfFor(path);
  const apiRefused = await asOperator.request(`/api/v1/jobs/${f.policy.id}/retry`, {
    method: "POST",
    headers: { origin: "http://localhost:8000", "x-csrf-token": token },
  });
  assert.equal(apiRefused.status, 422);
  assert.match((await apiRefused.json()).error.message, /The latest run succeeded/);

  // The next day's incrementals fail, retryably: the button is enabled and the retry goes through.
  const monday = new Date("2026-11-30T02:00:00Z");
  await runSchedulerTick(kv, monday);
  const monRuns = (await listRunsByPolicy(kv, f.policy.id)).filter((r) =>
    r.scheduledFor === monday.toISOString()
  );
  for (const r of monRuns) await finish(kv, r, "failed", true, monday);
  const allowed = await (await asOperator.get(path)).text();
  assert.doesNotMatch(allowed, /data-testid="retry-reason"/);
  assert.match(allowed, /<button type="submit" class="btn btn--primary"\s*>Retry<\/button>/, "enabled");
  const viaApi = await asOperator.request(`/api/v1/jobs/${f.policy.id}/retry`, {
    method: "POST",
    headers: { origin: "http://localhost:8000", "x-csrf-token": await asOperator.csrfFor(path) },
  });
  assert.equal(viaApi.status, 201);
  const body = await viaApi.json();
  assert.deepEqual(body.runs.map((r: { hostname: string }) => r.hostname).sort(), [
    "h1.acme.example",
    "h2.acme.example",
    "h3.acme.example",
  ]);
  assert.ok(
    body.runs.every((r: { kind: string; status: string }) =>
      r.kind === "incremental" && r.status === "pending"
    ),
  );
  const again = await asOperator.postForm(`${path}/retry`, {}, { tokenFrom: path });
  assert.equal(again.status, 303);
  assert.match(await notice(asOperator, again), /^Not retried: The latest run is still pending/);
  const after = await (await asOperator.get(path)).text();
  assert.match(after, /incremental \(retry\)/);
  assert.match(after, /data-testid="retry-reason">The latest run is still pending/);
});

Deno.test("POST /backup/jobs/:id/retry (the form, without JavaScript) retries and redirects with a notice", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await retryWorld(kv, 2);
  const operator = await addUser(
    kv,
    f.tenant,
    "operator@acme.example",
    "operator",
    [f.tenant.orgs[0]],
    SUNDAY_2AM,
  );
  const { app } = testApp(kv, new TestClock(SUNDAY_2AM));
  await allFinished(kv, f.policy.id, "failed");
  const browser = new Browser(app);
  await signInAs(browser, kv, operator, SUNDAY_2AM);
  const path = `/backup/jobs/${f.policy.id}`;
  const res = await browser.postForm(`${path}/retry`, {}, { tokenFrom: path });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), `${path}#runs`);
  const page = await (await browser.get(path)).text();
  assert.match(page, /Retry queued: 2 new runs\./);
  assert.equal([...page.matchAll(/full \(retry\)/g)].length, 2);
  // Outside the actor's org: 404, nothing dispatched.
  const other = await addUser(kv, f.tenant, "labs@acme.example", "operator", [f.tenant.orgs[1]], SUNDAY_2AM);
  const stranger = new Browser(app);
  await signInAs(stranger, kv, other, SUNDAY_2AM);
  assert.equal((await stranger.postForm(`${path}/retry`, {}, { tokenFrom: "/backup/jobs" })).status, 404);
});
