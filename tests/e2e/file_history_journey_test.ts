/**
 * File version history in the browser (issue 21 item 3), on real programs: the server, the BES program and the
 * agent program as subprocesses. Three backups of a folder in which one file changes once (set up through the
 * API); then the operator browses the newest point, presses History on the file's row, sees "Computing…" turn
 * into a timeline of two versions, and restores the older one to another folder in one click: the restore
 * finishes and the file on disk has the older version's bytes. The programs and the three backups are one
 * fixture of the file (scenario.ts), built by whichever test runs first; each test stands alone.
 */
import assert from "node:assert/strict";
import type { Page, Response } from "playwright-core";
import { deterministicBytes } from "../engine/helpers.ts";
import { screenshot, signIn, waitFor } from "./harness.ts";
import { scenario } from "./scenario.ts";
import { programsFolder, startAgentOnline, startBesWithLocalTarget } from "./helpers.ts";

const HOSTNAME = "files02.northwind.internal";

function isPost(path: string) {
  return (r: Response) => r.request().method() === "POST" && new URL(r.url()).pathname === path;
}

async function clickPost(page: Page, path: string, click: () => Promise<void>): Promise<Response> {
  const [res] = await Promise.all([page.waitForResponse(isPost(path)), click()]);
  await page.waitForLoadState("domcontentloaded");
  return res;
}

const { test, fixture } = scenario("Northwind History");

/** The BES and agent programs, a folder backed up three times with budget.xlsx changed once. */
const world = fixture(async ({ server, tenant, api, onCleanup }) => {
  const { orgSecret } = tenant;
  const folder = await programsFolder("cadres-e2e-history-", server, onCleanup);
  const { tmp, outputs } = folder;
  const src = `${tmp}/src`;
  await Deno.mkdir(`${src}/reports`, { recursive: true });
  const file = `${src}/reports/budget.xlsx`;
  const v1 = deterministicBytes("budget v1", 40_000);
  const v2 = deterministicBytes("budget v2", 52_000);
  await Deno.writeFile(file, v1);
  await Deno.writeFile(`${src}/reports/minutes.txt`, new TextEncoder().encode("minutes\n"));

  const { besId, targetId } = await startBesWithLocalTarget(folder, server, api, orgSecret, "bes-history");
  const policy = await api("POST", "/api/v1/policies", {
    name: "Files hourly",
    besId,
    targetId,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    includePaths: [src],
  });
  assert.equal(policy.status, 201, policy.text);
  const policyId: string = policy.json().id;
  const hostId = await startAgentOnline(folder, server, api, orgSecret, HOSTNAME, [src]);
  const assigned = await api("POST", `/api/v1/policies/${policyId}/assignments`, { hostIds: [hostId] });
  assert.equal(assigned.status, 201, assigned.text);
  await new Promise((r) => setTimeout(r, 2100));
  const backup = async (kind: "full" | "incremental") => {
    const res = await api("POST", `/api/v1/policies/${policyId}/run`, { kind });
    assert.equal(res.status, 201, res.text);
    const runId: string = res.json().runs[0].id;
    const run = await waitFor(
      `run ${runId}`,
      async () => {
        const r = (await api("GET", `/api/v1/runs/${runId}`)).json().run;
        return ["success", "warning", "failed"].includes(r.status) ? r : undefined;
      },
      90_000,
      300,
    );
    assert.equal(run.status, "success", `${JSON.stringify(run)}\n${outputs()}`);
    return run.restorePointId as string;
  };
  await backup("full");
  await Deno.writeFile(file, v2);
  await backup("incremental");
  const newest = await backup("incremental");

  return { tmp, src, file, v1, v2, hostId, newest, outputs };
});

/** Signs in, browses the newest point and presses History on the file's row. */
async function openHistory(page: Page) {
  const { value: w, tenant } = await world();
  const { file, src, newest } = w;
  const historyPath = `/backup/restore/hosts/${w.hostId}/history`;
  await signIn(page, tenant.admin.email, tenant.admin.password);
  await page.goto(`/backup/restore/points/${newest}`);
  await page.locator("[data-island=BrowseTree][data-hydrated=true]").waitFor();
  await page.locator("#browse-path").fill(`${src}/reports`);
  await page.getByRole("button", { name: "Browse", exact: true }).click();
  const history = page.getByRole("button", { name: `Version history of ${file}` });
  await history.waitFor({ timeout: 60_000 });
  const res = await clickPost(page, historyPath, () => history.click());
  assert.equal(res.status(), 303);
  await page.waitForURL((url) => url.pathname === historyPath);
  return { ...w, historyPath };
}

/** Waits until Computing… turns into the timeline; asserts its two versions, newest first. */
async function timeline(page: Page, w: Awaited<ReturnType<typeof openHistory>>) {
  const { file, outputs } = w;
  await page.getByRole("heading", { name: `File history: ${file}` }).waitFor();
  await waitFor(
    "the timeline",
    async () => {
      if (await page.locator("[data-testid=history-ready]").count()) return true;
      await page.waitForTimeout(1000);
      if (!(await page.locator("[data-testid=history-ready]").count())) await page.reload();
      return false;
    },
    60_000,
    100,
  );
  const rows = page.locator("[data-testid=versions] tbody tr");
  assert.equal(await rows.count(), 2, outputs());
  const sizes = await page.locator("[data-testid=versions] td[data-label=Size]").allInnerTexts();
  assert.deepEqual(sizes.map((s) => s.trim()), ["50.8 KB", "39.1 KB"]);
  assert.match(await rows.nth(0).innerText(), /2 restore points/);
  assert.match(await rows.nth(1).innerText(), /1 restore point/);
  await screenshot(page, "history-01-timeline");
}

test("file history: 1. Browse the newest point and press History on the file's row", async ({ page }) => {
  await openHistory(page);
});

test("file history: 2. Computing… turns into two versions, newest first", async ({ page }) => {
  await timeline(page, await openHistory(page));
});

test("file history: 3. Restore this version (the older) to another folder: its bytes are back", async ({ page }) => {
  const w = await openHistory(page);
  await timeline(page, w);
  const { historyPath, file, v1, v2 } = w;
  const tmp = `${w.tmp}/${crypto.randomUUID()}`;
  await page.locator("input[name=location][value=other]").check();
  await page.locator("#v-target-path").fill(`${tmp}/restored`);
  const res = await clickPost(
    page,
    `${historyPath}/restore`,
    () => page.getByRole("button", { name: /^Restore version 1 / }).click(),
  );
  assert.equal(res.status(), 303);
  await page.waitForURL((url) => url.pathname.startsWith("/backup/restore/requests/"));
  await page.locator("[data-testid=restore-progress][data-status=success]").waitFor({
    timeout: 90_000,
  });
  assert.deepEqual(await Deno.readFile(`${tmp}/restored${file}`), v1, "the older version's bytes");
  assert.deepEqual(await Deno.readFile(file), v2, "the current file is left alone");
});
