/**
 * Backup > Jobs in the browser, on a server seeded through the CLI with one simulated BES and two agents
 * talking the real signed engine protocol: a policy (through the JSON API) with both hosts assigned
 * (through the policy page), whose pre-patch incremental the agent reports as failed and retryable. The
 * jobs page lists it, the filters narrow the list, the detail page shows the run history, and Retry
 * queues one run per active host; a viewer sees the same page without any Retry button. Each test stands
 * alone (scenario.ts): its own tenant, BES, agents, policies and viewer.
 */
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { EngineClient, type EngineIdentity } from "../../tools/engine_client.ts";
import { enrollOnlineAgent, registerOnlineBes, screenshot, signIn, signOut } from "./harness.ts";
import { scenario, type ScenarioContext } from "./scenario.ts";
import { assignOnPolicyPage, isPost } from "./helpers.ts";

const VIEWER_BASE = { name: "Vi Viewer", password: "jobs viewer password 2026" };
const ENGINE = { name: "bes-jobs", hostname: "bes-jobs.backup.internal", ipAddress: "10.60.1.10" };
const HOSTS = [
  { hostname: "db01.contoso.internal", ipAddress: "10.60.2.21" },
  { hostname: "web01.contoso.internal", ipAddress: "10.60.2.11" },
];
const METRICS = { cpuPercent: 8, memoryPercent: 35, diskPercent: 22, activeJobs: 0, uptimeSeconds: 7_200 };
const FAILING = "Nightly Databases";
const QUIET = "Archive Shares";

/** Clicks `button` (which submits a form to `path`) and returns the POST's response once the next page loaded. */

/** The job names listed on the jobs page. */
async function jobNames(page: Page): Promise<string[]> {
  return (await page.locator("[data-testid=job-row] td:first-child a").allInnerTexts()).map((s) => s.trim());
}

const { test } = scenario("Contoso Jobs");

/** The BES and two agents over the signed protocol; a target, two policies and a viewer by API; signed in. */
async function world(ctx: ScenarioContext) {
  const { api, page } = ctx;
  const { orgSecret } = ctx.tenant;
  const engineClient = new EngineClient(ctx.server.baseUrl);
  const VIEWER = { ...VIEWER_BASE, email: `viewer@${ctx.tenant.admin.email.split("@")[1]}` };
  const bes = await registerOnlineBes(engineClient, orgSecret, ENGINE, METRICS);
  const agents = new Map<string, EngineIdentity>();
  for (const host of HOSTS) {
    agents.set(host.hostname, await enrollOnlineAgent(engineClient, orgSecret, host, METRICS));
  }
  const target = await api("POST", "/api/v1/storage", {
    name: "Primary Disk",
    type: "local",
    config: { path: "/srv/backup/jobs" },
    besId: bes.id,
  });
  assert.equal(target.status, 201, target.text);
  const policyIds: Record<string, string> = {};
  for (const name of [FAILING, QUIET]) {
    const created = await api("POST", "/api/v1/policies", {
      name,
      besId: bes.id,
      targetId: target.json().id,
      backupType: "file",
      fullSchedule: "0 2 * * 0",
      incrementalSchedule: "0 2 * * 1-6",
      prePatchBackup: name === FAILING,
    });
    assert.equal(created.status, 201, created.text);
    policyIds[name] = created.json().id;
  }
  const viewer = await api("POST", "/api/v1/users", { ...VIEWER, role: "viewer", orgScope: "all" });
  assert.equal(viewer.status, 201, viewer.text);

  await ctx.signIn();
  const jobPath = `/backup/jobs/${policyIds[FAILING]}`;
  return { page, api, engineClient, agents, policyIds, jobPath, VIEWER };
}

type World = Awaited<ReturnType<typeof world>>;

/** Both hosts assigned on the policy page; the agent reports a failed, retryable pre-patch run. */
async function seedFailure(w: World) {
  const { page, agents, engineClient, policyIds } = w;
  const policyPath = `/backup/policies/${policyIds[FAILING]}`;
  await assignOnPolicyPage(page, policyPath, HOSTS.map((h) => h.hostname));
  assert.equal(await page.locator("[data-testid=assignment-row]").count(), 2);
  const db01 = agents.get(HOSTS[0].hostname)!;
  const asked = await engineClient.post(db01, "/api/agent/v1/pre-patch", { reason: "apt upgrade" });
  assert.equal(asked.status, 202, await asked.clone().text());
  const { runs } = await asked.json();
  assert.equal(runs.length, 1);
  const claimed = await engineClient.post(db01, "/api/agent/v1/jobs/claim", { max: 10 });
  const job = (await claimed.json()).jobs.find((j: { id: string }) => j.id === runs[0].jobId);
  assert.ok(job, "the pre-patch job is claimable by its agent");
  const started = new Date();
  const result = await engineClient.post(db01, `/api/agent/v1/jobs/${job.id}/result`, {
    status: "failed",
    startedAt: started.toISOString(),
    endedAt: new Date(started.getTime() + 42_000).toISOString(),
    bytesTransferred: 1024 ** 2,
    protectedBytes: 0,
    error: {
      reason: "TARGET_UNREACHABLE",
      message: "Storage target did not answer\nafter 3 attempts",
    },
    retryable: true,
  });
  assert.equal(result.status, 200, await result.clone().text());
}

test("jobs: seed: both hosts assigned on the policy page; the agent reports a failed, retryable run", async (ctx) => {
  await seedFailure(await world(ctx));
});

test("jobs: the jobs page lists both jobs; the status and search filters narrow it", async (ctx) => {
  const w = await world(ctx);
  await seedFailure(w);
  const { page, policyIds } = w;
  await page.goto("/backup/jobs");
  await page.getByRole("heading", { name: "Jobs", level: 1 }).waitFor();
  assert.deepEqual(await jobNames(page), [QUIET, FAILING]);
  const failingRow = page.locator("[data-testid=job-row]", { hasText: FAILING });
  const cells = (await failingRow.locator("td").allInnerTexts()).map((s) => s.replace(/\s+/g, " ").trim());
  assert.equal(cells[1], `${ENGINE.name} BES`);
  assert.equal(cells[2], ctx.tenant.admin.orgName);
  assert.match(cells[4], /failed TARGET_UNREACHABLE/);
  assert.equal(cells[5], "incremental (pre-patch)");
  assert.match(
    await page.locator("[data-testid=job-row]", { hasText: QUIET }).locator("td").nth(4).innerText(),
    /never run/,
  );
  await screenshot(page, "jobs-01-list");

  await page.getByLabel("Last status").selectOption("failed");
  await Promise.all([
    page.waitForURL((url) => url.searchParams.get("status") === "failed"),
    page.getByRole("button", { name: "Filter" }).click(),
  ]);
  assert.deepEqual(await jobNames(page), [FAILING]);
  await screenshot(page, "jobs-02-filtered-failed");

  await page.getByLabel("Last status").selectOption("never");
  await Promise.all([
    page.waitForURL((url) => url.searchParams.get("status") === "never"),
    page.getByRole("button", { name: "Filter" }).click(),
  ]);
  assert.deepEqual(await jobNames(page), [QUIET]);

  await page.goto("/backup/jobs");
  await page.getByLabel("Search by policy name or source job id").fill(policyIds[FAILING]);
  await Promise.all([
    page.waitForURL((url) => url.searchParams.get("q") === policyIds[FAILING]),
    page.getByRole("button", { name: "Filter" }).click(),
  ]);
  assert.deepEqual(await jobNames(page), [FAILING], "the source job id finds the job");

  await page.goto("/backup/jobs?type=differential");
  await page.getByText("No jobs match these filters").waitFor();
  await page.goto("/backup/jobs?from=2026-02-31");
  await page.locator("[data-testid=filter-errors]").filter({
    hasText: "From: Must be a date (YYYY-MM-DD)",
  })
    .waitFor();
});

test("jobs: the detail page shows the run history; Retry queues one run per active host", async (ctx) => {
  const w = await world(ctx);
  await seedFailure(w);
  const { page, policyIds, jobPath, engineClient, agents } = w;
  await page.goto("/backup/jobs?status=failed");
  await Promise.all([
    page.waitForURL((url) => url.pathname === jobPath),
    page.getByRole("link", { name: FAILING, exact: true }).click(),
  ]);
  const rows = page.locator("[data-testid=history-row]");
  assert.equal(await rows.count(), 1);
  const first = (await rows.first().innerText()).replace(/\s+/g, " ");
  assert.match(first, /failed/);
  assert.match(first, /db01\.contoso\.internal/);
  assert.match(first, /incremental \(pre-patch\)/);
  assert.match(first, /42 s/);
  assert.match(first, /1\.0 MB/);
  assert.match(first, /TARGET_UNREACHABLE Storage target did not answer/);
  assert.match(first, /yes$/);
  await page.locator("[data-island=RetryJob][data-hydrated=true]").waitFor();
  const retry = page.getByRole("button", { name: "Retry", exact: true });
  assert.equal(await retry.isEnabled(), true);
  assert.equal(await page.locator("[data-testid=retry-reason]").count(), 0);
  await screenshot(page, "jobs-03-detail-before-retry");

  const [res] = await Promise.all([
    page.waitForResponse(isPost(`/api/v1/jobs/${policyIds[FAILING]}/retry`)),
    retry.click(),
  ]);
  assert.equal(res.status(), 201);
  const queued = page.locator("[data-testid=retry-run]");
  await page.locator("[data-testid=retry-result]").waitFor();
  assert.deepEqual(
    (await queued.allInnerTexts()).map((s) => s.trim()).sort(),
    HOSTS.map((h) => `${h.hostname} — incremental, pending`).sort(),
  );
  await page.locator("[data-testid=retry-reason]").filter({
    hasText: "The latest run is still pending.",
  })
    .waitFor();
  assert.equal(await retry.isDisabled(), true);
  await screenshot(page, "jobs-04-retry-queued");

  await page.getByRole("link", { name: "Reload the history" }).click();
  await page.waitForLoadState("domcontentloaded");
  const retried = page.locator("[data-testid=history-row]", { hasText: "incremental (retry)" });
  await retried.first().waitFor();
  assert.equal(await retried.count(), 2, "one new run per active host");
  for (const text of await retried.allInnerTexts()) assert.match(text, /pending/);
  await page.locator("[data-testid=retry-reason]").filter({
    hasText: "The latest run is still pending.",
  })
    .waitFor();
  assert.equal(await page.getByRole("button", { name: "Retry", exact: true }).isDisabled(), true);

  // The agents can claim the retry jobs.
  for (const host of HOSTS) {
    const claimed = await engineClient.post(agents.get(host.hostname)!, "/api/agent/v1/jobs/claim", {
      max: 10,
    });
    const jobs = (await claimed.json()).jobs as Array<{ kind: string; payload: { runKind: string } }>;
    assert.equal(jobs.length, 1, host.hostname);
    assert.equal(jobs[0].kind, "backup");
    assert.equal(jobs[0].payload.runKind, "incremental");
  }
  await page.goto(`/backup/jobs/${policyIds[QUIET]}`);
  await page.locator("[data-testid=retry-reason]")
    .filter({ hasText: "This job has never run, so there is nothing to retry." }).waitFor();
});

test("jobs: a viewer sees the job and its history but no Retry button", async (ctx) => {
  const w = await world(ctx);
  await seedFailure(w);
  const { page, policyIds, jobPath, VIEWER } = w;
  // The retry of the test above, through the API: one new run per active host (three runs in all).
  const retried = await w.api("POST", `/api/v1/jobs/${policyIds[FAILING]}/retry`);
  assert.equal(retried.status, 201, retried.text);
  await signOut(page);
  await signIn(page, VIEWER.email, VIEWER.password);
  await page.goto(jobPath);
  await page.locator("[data-testid=history-row]").first().waitFor();
  assert.equal(await page.locator("[data-testid=history-row]").count(), 3);
  assert.equal(await page.locator("[data-island=RetryJob]").count(), 0);
  assert.equal(await page.getByRole("button", { name: "Retry" }).count(), 0);
  assert.equal(await page.locator(`form[action="${jobPath}/retry"]`).count(), 0);
  await screenshot(page, "jobs-05-viewer-no-retry");
  const refused = await page.evaluate(async (path) => {
    const token = document.querySelector<HTMLMetaElement>("meta[name=csrf-token]")!.content;
    const res = await fetch(path, { method: "POST", headers: { "x-csrf-token": token } });
    return res.status;
  }, `/api/v1/jobs/${policyIds[FAILING]}/retry`);
  assert.equal(refused, 403, "the API refuses a viewer's retry too");
});
