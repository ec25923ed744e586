/**
 * Backup > Dashboard in the browser, on a server started with the storage section's data source
 * failing (CADRES_FAULTS=dashboard.storage). One simulated BES and agent talk the real signed protocol;
 * the agent's pre-patch backup fails retryably. The dashboard shows every other section (summary,
 * engines, last 24 hours, failed backups, RPO, verification, heatmap) while the storage section shows
 * its own error with "Try again"; the Retry button in Failed backups creates a run; a viewer gets no
 * action buttons; a deep link into Restore fails closed for an operator without backup.restore.
 * Each test stands alone (scenario.ts): its own tenant, BES, agent, policy and users.
 */
import assert from "node:assert/strict";
import { EngineClient } from "../../tools/engine_client.ts";
import { enrollOnlineAgent, registerOnlineBes, screenshot, signIn, signOut } from "./harness.ts";
import { scenario, type ScenarioContext } from "./scenario.ts";
import { addLocalTarget, assignOnPolicyPage } from "./helpers.ts";

const VIEWER = { name: "Vic Viewer", password: "dash viewer password 2026" };
const OPERATOR = { name: "Opal Op", password: "dash operator pw 2026" };
const ENGINE = { name: "bes-dash", hostname: "bes-dash.backup.internal", ipAddress: "10.70.1.10" };
const HOST = { hostname: "erp01.fabrikam.internal", ipAddress: "10.70.2.21" };
const METRICS = { cpuPercent: 8, memoryPercent: 35, diskPercent: 22, activeJobs: 0, uptimeSeconds: 7_200 };
const POLICY = "ERP Nightly";

const { test } = scenario("Fabrikam Dash", { env: { CADRES_FAULTS: "dashboard.storage" } });

/**
 * The tenant's BES and agent (real signed protocol), a storage target, the policy (pre-patch backups on),
 * a viewer and an operator; signs the administrator in.
 */
async function world(ctx: ScenarioContext) {
  const { api, page } = ctx;
  const engineClient = new EngineClient(ctx.server.baseUrl);
  const bes = await registerOnlineBes(engineClient, ctx.tenant.orgSecret, ENGINE, METRICS);
  const agent = await enrollOnlineAgent(engineClient, ctx.tenant.orgSecret, HOST, METRICS);
  const targetId = await addLocalTarget(api, bes.id, "/srv/backup/dash");
  const policy = await api("POST", "/api/v1/policies", {
    name: POLICY,
    besId: bes.id,
    targetId,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    incrementalSchedule: "0 2 * * 1-6",
    prePatchBackup: true,
  });
  assert.equal(policy.status, 201, policy.text);
  const policyId: string = policy.json().id;
  // E-mails are unique on the server: each test's users live in its tenant's domain.
  const domain = ctx.tenant.admin.email.split("@")[1];
  const viewer = { ...VIEWER, email: `viewer@${domain}` };
  const operator = { ...OPERATOR, email: `operator@${domain}` };
  for (const user of [{ ...viewer, role: "viewer" }, { ...operator, role: "operator" }]) {
    const created = await api("POST", "/api/v1/users", { ...user, orgScope: "all" });
    assert.equal(created.status, 201, created.text);
  }
  await ctx.signIn();
  const section = (name: string) => page.locator(`#section-${name} [data-section-state]`);
  const ready = async (name: string) => {
    await page.locator(`#section-${name} [data-section-state=ready]`).waitFor();
    return (await section(name).innerText()).replace(/\s+/g, " ");
  };
  return { page, api, engineClient, bes, agent, policyId, viewer, operator, section, ready };
}

type World = Awaited<ReturnType<typeof world>>;

/** The host is assigned on the policy page; its pre-patch backup fails, retryable. */
async function seedFailure(w: World) {
  const { page, engineClient, agent, policyId } = w;
  const policyPath = `/backup/policies/${policyId}`;
  await assignOnPolicyPage(page, policyPath, [HOST.hostname]);
  const asked = await engineClient.post(agent, "/api/agent/v1/pre-patch", {
    reason: "kernel update",
  });
  assert.equal(asked.status, 202, await asked.clone().text());
  const claimed = await engineClient.post(agent, "/api/agent/v1/jobs/claim", { max: 10 });
  const [job] = (await claimed.json()).jobs;
  const started = new Date();
  const result = await engineClient.post(agent, `/api/agent/v1/jobs/${job.id}/result`, {
    status: "failed",
    startedAt: started.toISOString(),
    endedAt: new Date(started.getTime() + 5_000).toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    error: { reason: "TARGET_UNREACHABLE", message: "Storage target did not answer" },
    retryable: true,
  });
  assert.equal(result.status, 200, await result.clone().text());
}

test("dashboard: seed: the host is assigned on the policy page; its pre-patch backup fails, retryable", async (ctx) => {
  await seedFailure(await world(ctx));
});

test("dashboard: every section but storage renders; storage shows its own error and Try again", async (ctx) => {
  const w = await world(ctx);
  await seedFailure(w);
  const { page, section, ready } = w;
  await page.goto("/backup/dashboard");
  await page.getByRole("heading", { name: "Dashboard", level: 1 }).waitFor();
  const summary = await ready("summary");
  assert.match(summary, /1 Protected/);
  assert.match(summary, /1 At risk/);
  assert.match(summary, /0 RPO breach/);
  assert.match(summary, /0 Unprotected hosts/);
  assert.match(await ready("engines"), /1 BES online/);
  assert.match(await ready("activity"), /0 Success 1 Failed 0 Warning/);
  const failed = await ready("failed");
  assert.match(
    failed,
    new RegExp(`${POLICY} ${HOST.hostname} failed .* Storage target did not answer`),
  );
  assert.match(await ready("rpo"), /All objects within RPO/);
  assert.match(await ready("verification"), /All verifications passing/);
  assert.match(await ready("heatmap"), new RegExp(POLICY));
  await page.locator("#section-storage [data-section-state=error]").waitFor();
  const storage = await section("storage").innerText();
  assert.match(storage, /This section could not load: The storage data source failed/);
  assert.equal(
    await page.locator("#section-storage").getByRole("button", { name: "Try again" }).count(),
    1,
  );
  await screenshot(page, "dashboard-01-storage-section-failing");
});

test("dashboard: Retry in Failed backups creates a retry run", async (ctx) => {
  const w = await world(ctx);
  await seedFailure(w);
  const { page, api, policyId, ready } = w;
  await page.goto("/backup/dashboard");
  const before = await api("GET", `/api/v1/runs?policyId=${policyId}`);
  assert.equal(before.status, 200, before.text);
  assert.equal(before.json().values.length, 1);
  await Promise.all([
    page.waitForURL((url) => url.pathname === "/backup/dashboard"),
    page.locator("#section-failed").getByRole("button", { name: "Retry" }).click(),
  ]);
  await page.getByText(/Retry queued: run \w+/).waitFor();
  const after = await api("GET", `/api/v1/runs?policyId=${policyId}`);
  const runs = after.json().values as Array<{ trigger: string; status: string }>;
  assert.equal(runs.length, 2, "one new run");
  assert.deepEqual(runs.map((r) => [r.trigger, r.status]).find(([t]) => t === "retry"), [
    "retry",
    "pending",
  ]);
  await ready("failed");
  await screenshot(page, "dashboard-02-after-retry");
});

test("dashboard: a viewer sees the sections without any action button", async (ctx) => {
  const w = await world(ctx);
  await seedFailure(w);
  const { page, ready } = w;
  const VIEWER = w.viewer;
  await signOut(page);
  await signIn(page, VIEWER.email, VIEWER.password);
  await page.goto("/backup/dashboard");
  await ready("failed");
  await ready("summary");
  assert.equal(await page.getByRole("button", { name: "Retry" }).count(), 0);
  assert.equal(await page.locator("form[action*='/retry']").count(), 0);
  await screenshot(page, "dashboard-03-viewer");
});

test("dashboard: a deep link into Restore fails closed for an operator, naming backup.restore", async (ctx) => {
  const w = await world(ctx);
  const { page, agent } = w;
  const OPERATOR = w.operator;
  await signOut(page);
  await signIn(page, OPERATOR.email, OPERATOR.password);
  const res = await page.goto("/backup/restore?hostId=" + agent.id);
  assert.equal(res?.status(), 403);
  await page.getByText(/backup\.restore/).first().waitFor();
  await screenshot(page, "dashboard-04-restore-forbidden");
});
