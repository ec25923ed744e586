/**
 * Backup > Dashboard in the browser, on a server started with the storage section's data source
 * failing (CADRES_FAULTS=dashboard.storage). One simulated BES and agent talk the real signed protocol;
 * the agent's pre-patch backup fails retryably. The dashboard shows every other section (summary,
 * engines, last 24 hours, failed backups, RPO, verification, heatmap) while the storage section shows
 * its own error with "Try again"; the Retry button in Failed backups creates a run; a viewer gets no
 * action buttons; a deep link into Restore fails closed for an operator without backup.restore.
 */
import assert from "node:assert/strict";
import { EngineClient } from "../../tools/engine_client.ts";
import {
  apiClient,
  type Browser,
  describeProblems,
  enrollOnlineAgent,
  launchBrowser,
  registerOnlineBes,
  screenshot,
  seedTenant,
  type Server,
  signIn,
  signOut,
  startServer,
} from "./harness.ts";

const ADMIN = {
  accountName: "Fabrikam Dash",
  orgName: "Plant",
  email: "dash.admin@fabrikam.example",
  name: "Dee Dash",
  password: "dash admin password 2026",
};
const VIEWER = {
  email: "dash.viewer@fabrikam.example",
  name: "Vic Viewer",
  password: "dash viewer password 2026",
};
const OPERATOR = {
  email: "dash.operator@fabrikam.example",
  name: "Opal Op",
  password: "dash operator pw 2026",
};
const ENGINE = { name: "bes-dash", hostname: "bes-dash.backup.internal", ipAddress: "10.70.1.10" };
const HOST = { hostname: "erp01.fabrikam.internal", ipAddress: "10.70.2.21" };
const METRICS = { cpuPercent: 8, memoryPercent: 35, diskPercent: 22, activeJobs: 0, uptimeSeconds: 7_200 };
const POLICY = "ERP Nightly";

Deno.test("dashboard: a failing section never blanks the others; Retry creates a run; actions are gated", async (t) => {
  const dataDir = await Deno.makeTempDir({ prefix: "cadres-e2e-" });
  let server: Server | null = null;
  let browser: Browser | null = null;
  try {
    const { admin, orgSecret, apiToken } = await seedTenant(dataDir, ADMIN);

    server = await startServer({ dataDir, env: { CADRES_FAULTS: "dashboard.storage" } });
    const baseUrl = server.baseUrl;
    const engineClient = new EngineClient(baseUrl);
    const api = apiClient(baseUrl, apiToken);

    const bes = await registerOnlineBes(engineClient, orgSecret, ENGINE, METRICS);
    const agent = await enrollOnlineAgent(engineClient, orgSecret, HOST, METRICS);
    const target = await api("POST", "/api/v1/storage", {
      name: "Primary Disk",
      type: "local",
      config: { path: "/srv/backup/dash" },
      besId: bes.id,
    });
    assert.equal(target.status, 201, target.text);
    const policy = await api("POST", "/api/v1/policies", {
      name: POLICY,
      besId: bes.id,
      targetId: target.json().id,
      backupType: "file",
      fullSchedule: "0 2 * * 0",
      incrementalSchedule: "0 2 * * 1-6",
      prePatchBackup: true,
    });
    assert.equal(policy.status, 201, policy.text);
    const policyId: string = policy.json().id;
    for (const user of [{ ...VIEWER, role: "viewer" }, { ...OPERATOR, role: "operator" }]) {
      const created = await api("POST", "/api/v1/users", { ...user, orgScope: "all" });
      assert.equal(created.status, 201, created.text);
    }

    browser = await launchBrowser(baseUrl);
    const { page } = browser;
    await signIn(page, admin.email, admin.password);
    const ok = (passed: boolean) => {
      if (!passed) throw new Error("a previous step failed; later steps depend on it");
    };
    const section = (name: string) => page.locator(`#section-${name} [data-section-state]`);
    const ready = async (name: string) => {
      await page.locator(`#section-${name} [data-section-state=ready]`).waitFor();
      return (await section(name).innerText()).replace(/\s+/g, " ");
    };

    ok(
      await t.step(
        "seed: the host is assigned on the policy page; its pre-patch backup fails, retryable",
        async () => {
          const policyPath = `/backup/policies/${policyId}`;
          await page.goto(policyPath);
          const option = await page.locator("select[name=hostId] option", { hasText: HOST.hostname })
            .getAttribute("value");
          await page.locator("select[name=hostId]").selectOption(option!);
          await Promise.all([
            page.waitForResponse((r) =>
              r.request().method() === "POST" && new URL(r.url()).pathname === `${policyPath}/assignments`
            ),
            page.getByRole("button", { name: "Assign", exact: true }).click(),
          ]);
          await page.waitForLoadState("domcontentloaded");
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
        },
      ),
    );

    ok(
      await t.step(
        "every section but storage renders; storage shows its own error and Try again",
        async () => {
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
        },
      ),
    );

    ok(
      await t.step("Retry in Failed backups creates a retry run", async () => {
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
      }),
    );

    await t.step("a viewer sees the sections without any action button", async () => {
      await signOut(page);
      await signIn(page, VIEWER.email, VIEWER.password);
      await page.goto("/backup/dashboard");
      await ready("failed");
      await ready("summary");
      assert.equal(await page.getByRole("button", { name: "Retry" }).count(), 0);
      assert.equal(await page.locator("form[action*='/retry']").count(), 0);
      await screenshot(page, "dashboard-03-viewer");
    });

    await t.step("a deep link into Restore fails closed for an operator, naming backup.restore", async () => {
      await signOut(page);
      await signIn(page, OPERATOR.email, OPERATOR.password);
      const res = await page.goto("/backup/restore?hostId=" + agent.id);
      assert.equal(res?.status(), 403);
      await page.getByText(/backup\.restore/).first().waitFor();
      await screenshot(page, "dashboard-04-restore-forbidden");
    });

    await t.step("no CSP violations or script errors on any page visited", () => {
      assert.deepEqual(browser!.cspViolations(), [], describeProblems(browser!.cspViolations()));
      const unexpected = browser!.unexpectedProblems();
      assert.deepEqual(unexpected, [], describeProblems(unexpected));
    });
  } finally {
    await browser?.close();
    await server?.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});
