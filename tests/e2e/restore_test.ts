/**
 * Restore in the browser, from a dashboard RPO-breach row to a finished file restore. The test plays
 * the BES and the agent over the real signed protocol: the agent's last successful backup ended 3 h
 * ago (the policy's RPO is 1 h, so the host is in breach) and left a restore point; the BES answers the
 * browse jobs with folder listings; the agent claims the restore, reports progress (the bar moves) and
 * a result with one per-file error. A backup operator without backup.restore gets the fail-closed page
 * for the same deep link. A screenshot of each step; no CSP violations. Each test stands alone on the
 * file's shared server (scenario.ts), in its own tenant, walking the journey as far as it checks.
 */
import assert from "node:assert/strict";
import { EngineClient, type EngineIdentity } from "../../tools/engine_client.ts";
import { enrollOnlineAgent, registerOnlineBes, screenshot, signIn, signOut, waitFor } from "./harness.ts";
import { scenario, type ScenarioContext } from "./scenario.ts";
import {
  addLocalTarget,
  assignOnPolicyPage,
  inOrder,
  reportFullBackup,
  submitFileRestore,
} from "./helpers.ts";

const RESTORER_BASE = { name: "Rory Restore", password: "restore operator pw 2026" };
const OPERATOR_BASE = { name: "Bo Backup", password: "backup operator pw 2026" };
const ENGINE = { name: "bes-north", hostname: "bes-north.backup.internal", ipAddress: "10.80.1.10" };
const HOST = { hostname: "fs01.northwind.internal", ipAddress: "10.80.2.31" };
const METRICS = { cpuPercent: 9, memoryPercent: 30, diskPercent: 25, activeJobs: 0, uptimeSeconds: 9_000 };
const POLICY = "File Server Hourly";

const ROOT_ENTRIES = [
  { path: "/etc", name: "etc", type: "dir", size: 0, modifiedAt: "2026-10-30T07:00:00Z" },
  { path: "/srv", name: "srv", type: "dir", size: 0, modifiedAt: "2026-11-01T12:00:00Z" },
  { path: "/README.txt", name: "README.txt", type: "file", size: 812, modifiedAt: "2026-09-12T10:15:00Z" },
];
const SRV_ENTRIES = [
  { path: "/srv/share", name: "share", type: "dir", size: 0, modifiedAt: "2026-11-01T12:00:00Z" },
  {
    path: "/srv/budget-2026.xlsx",
    name: "budget-2026.xlsx",
    type: "file",
    size: 284_672,
    modifiedAt: "2026-10-28T16:42:00Z",
  },
  {
    path: "/srv/minutes.docx",
    name: "minutes.docx",
    type: "file",
    size: 48_128,
    modifiedAt: "2026-10-29T09:05:00Z",
  },
];

const { test } = scenario("Northwind Restore");

/**
 * The simulated BES and agent, target, policy (RPO 1 h), a restore operator and a backup operator; then
 * the seed: the host assigned, its last backup 3 h ago with a verified restore point.
 */
async function seeded(ctx: ScenarioContext) {
  const { api, page } = ctx;
  const { orgSecret, admin } = ctx.tenant;
  const engineClient = new EngineClient(ctx.server.baseUrl);
  const domain = admin.email.split("@")[1];
  const RESTORER = { ...RESTORER_BASE, email: `restore.operator@${domain}` };
  const OPERATOR = { ...OPERATOR_BASE, email: `backup.operator@${domain}` };
  const bes = await registerOnlineBes(engineClient, orgSecret, ENGINE, METRICS);
  const agent = await enrollOnlineAgent(engineClient, orgSecret, HOST, METRICS);
  const targetId = await addLocalTarget(api, bes.id, "/srv/backup/north");
  const policy = await api("POST", "/api/v1/policies", {
    name: POLICY,
    besId: bes.id,
    targetId,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    rpoHours: 1,
    prePatchBackup: true,
  });
  assert.equal(policy.status, 201, policy.text);
  const policyId: string = policy.json().id;
  for (const user of [{ ...RESTORER, role: "restore_operator" }, { ...OPERATOR, role: "operator" }]) {
    const created = await api("POST", "/api/v1/users", { ...user, orgScope: "all" });
    assert.equal(created.status, 201, created.text);
  }

  /** Claims the engine's queued jobs until one of `kind` shows up (other kinds stay leased). */
  const claimKind = async (who: EngineIdentity, kind: string) =>
    await waitFor(
      `a ${kind} job for ${who.kind} ${who.id}`,
      async () => {
        const res = await engineClient.post(who, `/api/${who.kind}/v1/jobs/claim`, { max: 10 });
        assert.equal(res.status, 200, await res.clone().text());
        const jobs = (await res.json()).jobs as Array<
          { id: string; kind: string; priority: string; payload: Record<string, unknown> }
        >;
        return jobs.find((j) => j.kind === kind);
      },
      20_000,
      200,
    );
  const postResult = async (who: EngineIdentity, jobId: string, result: Record<string, unknown>) => {
    const now = new Date();
    const res = await engineClient.post(who, `/api/${who.kind}/v1/jobs/${jobId}/result`, {
      status: "success",
      startedAt: new Date(now.getTime() - 2_000).toISOString(),
      endedAt: now.toISOString(),
      bytesTransferred: 0,
      protectedBytes: 0,
      ...result,
    });
    assert.equal(res.status, 200, await res.clone().text());
  };

  const j = {
    page,
    engineClient,
    bes,
    agent,
    RESTORER,
    OPERATOR,
    claimKind,
    postResult,
    deepLink: "",
    requestPath: "",
  };
  await signIn(page, admin.email, admin.password);
  const policyPath = `/backup/policies/${policyId}`;
  await assignOnPolicyPage(page, policyPath, [HOST.hostname]);
  const asked = await engineClient.post(agent, "/api/agent/v1/pre-patch", {
    reason: "kernel update",
  });
  assert.equal(asked.status, 202, await asked.clone().text());
  const backup = await claimKind(agent, "backup");
  const ended = new Date(Date.now() - 3 * 3_600_000);
  const res = await reportFullBackup(
    engineClient,
    agent,
    backup.id,
    { id: "fs01-rp-0001", chainId: "fs01-chain-1" },
    ended,
  );
  assert.equal(res.status, 200, await res.clone().text());
  // The BES verifies the new point.
  const verify = await claimKind(bes, "verify");
  await postResult(bes, verify.id, { output: { verification: { status: "passed" } } });
  await signOut(page);
  return j;
}

type Journey = Awaited<ReturnType<typeof seeded>>;

/** 1. The dashboard shows the host in RPO breach for a restore operator. */
async function step1(j: Journey) {
  const { page, RESTORER } = j;
  await signIn(page, RESTORER.email, RESTORER.password);
  const rpo = page.locator("#section-rpo [data-section-state=ready]");
  await rpo.waitFor();
  assert.match((await rpo.innerText()).replace(/\s+/g, " "), new RegExp(`${HOST.hostname}.* 1 h`));
  await screenshot(page, "restore-01-dashboard-rpo-breach");
}

/** 2. The row opens Restore with the host filtered and its restore point selected. */
async function step2(j: Journey) {
  const { page, agent } = j;
  const link = page.locator("#section-rpo tbody tr").first().locator("a").first();
  j.deepLink = (await link.getAttribute("href")) ?? "";
  // The link names the host and the protected object's latest restore point.
  assert.match(
    j.deepLink,
    new RegExp(`^/backup/restore\\?hostId=${agent.id}&restorePointId=[\\w-]+$`),
  );
  await Promise.all([page.waitForURL((url) => url.pathname === "/backup/restore"), link.click()]);
  const selected = page.locator("[data-testid=selected-point]");
  await selected.waitFor();
  const text = (await selected.innerText()).replace(/\s+/g, " ");
  assert.match(text, new RegExp(`Selected: ${HOST.hostname} · full`));
  assert.match(text, /verification passed/);
  assert.match(text, /3\.0 GB/);
  assert.equal(await page.locator("select[name=hostId] option:checked").innerText(), HOST.hostname);
  assert.equal(await page.locator("[data-testid=restore-points] tbody tr").count(), 1);
  await screenshot(page, "restore-02-point-selected");
}

/** 3. Browse / asks the BES; its listing appears. */
async function step3(j: Journey) {
  const { page, bes, claimKind, postResult } = j;
  await Promise.all([
    page.waitForURL((url) => url.pathname.startsWith("/backup/restore/points/")),
    page.getByRole("link", { name: "Browse and restore files" }).click(),
  ]);
  await page.locator("[data-island=BrowseTree][data-hydrated=true]").waitFor();
  assert.equal(await page.locator("#browse-path").inputValue(), "/");
  await page.getByRole("button", { name: "Browse", exact: true }).click();
  await page.locator("[data-testid=browse-pending]").waitFor();
  const job = await claimKind(bes, "browse");
  assert.equal(job.priority, "high");
  assert.equal(job.payload.path, "/");
  assert.equal(job.payload.engineRestorePointId, "fs01-rp-0001");
  await postResult(bes, job.id, { output: { entries: ROOT_ENTRIES } });
  await page.locator("[data-testid=browse-entries] tr[data-path='/srv']").waitFor();
  assert.equal(await page.locator("[data-testid=browse-entries] tbody tr").count(), 3);
  await screenshot(page, "restore-03-browse-root");
}

/** 4. Opening a folder lists it; going back to / is instant (cached). */
async function step4(j: Journey) {
  const { page, bes, claimKind, postResult } = j;
  await page.locator("[data-testid=browse-entries]").getByRole("link", { name: "srv/" }).click();
  const job = await claimKind(bes, "browse");
  assert.equal(job.payload.path, "/srv");
  await postResult(bes, job.id, { output: { entries: SRV_ENTRIES } });
  await page.locator("tr[data-path='/srv/minutes.docx']").waitFor();
  await page.locator(".crumbs").getByRole("link", { name: "/", exact: true }).click();
  await page.locator("tr[data-path='/README.txt']").waitFor({ timeout: 2_000 });
  await page.locator("[data-testid=browse-entries]").getByRole("link", { name: "srv/" }).click();
  await page.locator("tr[data-path='/srv/budget-2026.xlsx']").waitFor({ timeout: 2_000 });
  await screenshot(page, "restore-04-browse-folder");
}

/** 5. Two files and a folder are selected; the target path is set. */
async function step5(j: Journey) {
  const { page } = j;
  await page.getByRole("checkbox", { name: "Select /srv/budget-2026.xlsx" }).check();
  await page.getByRole("checkbox", { name: "Select /srv/minutes.docx" }).check();
  await page.getByRole("checkbox", { name: "Select /srv/share" }).check();
  const selected = "/srv/budget-2026.xlsx\n/srv/minutes.docx\n/srv/share";
  await waitFor(
    "the selection in the paths field",
    async () => (await page.locator("[data-testid=selected-paths]").inputValue()) === selected,
    5_000,
  );
  assert.equal(await page.locator("#f-location-original").isChecked(), true, "the default target");
  await page.locator("#f-location-other").check();
  await page.locator("#restore-files input[name=targetPath]").fill("/restore/2026-11");
  assert.equal(
    await page.locator("#restore-files select[name=targetHostId] option:checked").innerText(),
    `${HOST.hostname} (original)`,
  );
  assert.equal(await page.locator("#restore-files input[name=overwrite]").isChecked(), false);
  await page.evaluate(() => globalThis.scrollTo(0, 0));
  await screenshot(page, "restore-05-files-selected");
}

/** 6. Restore Files queues a high-priority job; the progress bar follows the agent. */
async function step6(j: Journey) {
  const { page, agent, engineClient, claimKind, postResult } = j;
  j.requestPath = await submitFileRestore(page);
  await page.getByText(/File restore queued: 3 paths to \/restore\/2026-11/).waitFor();
  await page.locator("[data-testid=restore-progress][data-status=pending]").waitFor();
  const job = await claimKind(agent, "restore_files");
  assert.equal(job.priority, "high");
  const progress = await engineClient.post(agent, `/api/agent/v1/jobs/${job.id}/progress`, {
    percent: 35,
    bytesTransferred: 120_000,
  });
  assert.equal(progress.status, 200, await progress.clone().text());
  await page.locator("[data-testid=restore-percent]", { hasText: "35 %" }).waitFor();
  assert.equal(await page.locator("progress").getAttribute("value"), "35");
  await screenshot(page, "restore-06-progress");
  const more = await engineClient.post(agent, `/api/agent/v1/jobs/${job.id}/progress`, {
    percent: 80,
    bytesTransferred: 290_000,
  });
  assert.equal(more.status, 200);
  await page.locator("[data-testid=restore-percent]", { hasText: "80 %" }).waitFor();
  await postResult(agent, job.id, {
    status: "warning",
    bytesTransferred: 332_800,
    error: { reason: "PARTIAL_RESTORE", message: "1 of 14 files could not be restored" },
    output: {
      files: 13,
      errors: [{ path: "/srv/share/locked.pst", message: "The file is locked by another process" }],
    },
  });
}

/** 7. The request page shows the finished restore with its per-file error. */
async function step7(j: Journey) {
  const { page } = j;
  await page.locator("[data-testid=restore-progress][data-status=warning]").waitFor();
  const result = (await page.locator("[data-testid=restore-result]").innerText()).replace(/\s+/g, " ");
  assert.match(result, /Files restored 13/);
  assert.match(result, /Bytes restored 325\.0 KB/);
  const errors = await page.locator("[data-testid=restore-errors] tbody tr").allInnerTexts();
  assert.equal(errors.length, 1);
  assert.match(errors[0], /\/srv\/share\/locked\.pst\s+The file is locked by another process/);
  await page.reload();
  await page.locator("[data-testid=restore-progress][data-status=warning]").waitFor();
  assert.equal(new URL(page.url()).pathname, j.requestPath);
  await screenshot(page, "restore-07-finished");
}

/** 8. The same deep link fails closed for a backup operator, naming backup.restore. */
async function step8(j: Journey) {
  const { page, OPERATOR } = j;
  await signOut(page);
  await signIn(page, OPERATOR.email, OPERATOR.password);
  const res = await page.goto(j.deepLink);
  assert.equal(res?.status(), 403);
  await page.getByText(/backup\.restore/).first().waitFor();
  assert.equal(await page.locator("[data-testid=selected-point]").count(), 0);
  const request = await page.goto(j.requestPath);
  assert.equal(request?.status(), 403);
  await screenshot(page, "restore-08-operator-forbidden");
}

test("restore: seed, 1. the dashboard shows the host in RPO breach, 2. the row opens Restore with its point selected", async (ctx) =>
  await inOrder(await seeded(ctx), step1, step2));

test("restore: 3. Browse / asks the BES; 4. opening a folder lists it; going back to / is instant (cached)", async (ctx) =>
  await inOrder(await seeded(ctx), step1, step2, step3, step4));

test("restore: 5. files selected, 6. restore queued with progress, 7. finished with its per-file error, 8. fail-closed for an operator", async (ctx) =>
  await inOrder(await seeded(ctx), step1, step2, step3, step4, step5, step6, step7, step8));
