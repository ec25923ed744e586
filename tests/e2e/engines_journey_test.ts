/**
 * The engines' journey in the browser, on real programs: the server (`main.ts`), the BES program
 * (`engine/bes/main.ts`, HTTPS data API, a Local target) and the agent program (`engine/agent/main.ts`)
 * as subprocesses in temporary folders. The administrator creates a file policy in the form (its include
 * path the source folder), assigns the agent's host on the policy page and clicks Run now; the run's page shows its progress bar (the policy caps the transfer at 2 MBps so
 * the run lasts a few seconds), then the run finishes with a restore point; on Restore they browse the point, select a file,
 * restore it to another path and see the restore finish (progress bar at its end); the restored file on
 * disk has the original bytes. The programs are one fixture of the file (scenario.ts), built by whichever test
 * runs first; each test stands alone with a policy of its own, walking the journey as far as it checks.
 */
import assert from "node:assert/strict";
import { deterministicBytes } from "../engine/helpers.ts";
import { screenshot, signIn, waitFor } from "./harness.ts";
import { scenario, type ScenarioContext } from "./scenario.ts";
import {
  assignOnPolicyPage,
  inOrder,
  programsFolder,
  startAgentOnline,
  startBesWithLocalTarget,
  submit,
  submitFileRestore,
} from "./helpers.ts";

const HOSTNAME = "files01.northwind.internal";
const POLICY = "Files nightly";

const { test, fixture } = scenario("Northwind Engines");

/** The source folder, the BES program with a Local target, and the agent program, online. */
const programs = fixture(async ({ server, tenant, api, onCleanup }) => {
  const { orgSecret } = tenant;
  const folder = await programsFolder("cadres-e2e-engines-", server, onCleanup);
  const { tmp, outputs } = folder;
  // The source folder the agent backs up.
  const src = `${tmp}/src`;
  await Deno.mkdir(`${src}/reports`, { recursive: true });
  const original = deterministicBytes("budget", 150_000);
  await Deno.writeFile(`${src}/reports/budget.xlsx`, original);
  await Deno.writeFile(`${src}/reports/minutes.txt`, new TextEncoder().encode("minutes\n".repeat(100)));
  await Deno.writeFile(`${src}/readme.txt`, new TextEncoder().encode("hello"));
  // 8 MB that do not compress in 32 files, read at the policy's 2 MBps cap: a run of a few seconds whose
  // progress (in files done) shows.
  await Deno.mkdir(`${src}/media`);
  for (let i = 0; i < 32; i++) {
    await Deno.writeFile(`${src}/media/clip${i}.bin`, deterministicBytes(`clip${i}`, 256 * 1024));
  }

  // The BES program: registers, goes online; a Local target on it, and a policy (the operator's).
  const { targetId } = await startBesWithLocalTarget(folder, server, api, orgSecret, "bes-north");

  // The agent program: enrolls with the org secret and heartbeats.
  // Its default root is another folder: the policy's include path chooses what is backed up.
  await Deno.mkdir(`${tmp}/elsewhere`);
  const hostId = await startAgentOnline(folder, server, api, orgSecret, HOSTNAME, [`${tmp}/elsewhere`]);

  return { tmp, src, original, targetId, hostId, outputs, api };
});

/** Signs the fixture's administrator in; a policy name of this test's own. */
async function journey(ctx: ScenarioContext) {
  const { value: w, tenant } = await programs();
  await signIn(ctx.page, tenant.admin.email, tenant.admin.password);
  return {
    ...w,
    page: ctx.page,
    policyName: `${POLICY} ${crypto.randomUUID().slice(0, 8)}`,
    policyPath: "",
    restorePointId: "",
    restored: `${w.tmp}/restored-${crypto.randomUUID()}`,
  };
}

type Journey = Awaited<ReturnType<typeof journey>>;

/** 1. The administrator creates a file policy that backs up the source folder. */
async function step1(j: Journey) {
  const { page, targetId, src } = j;
  await page.goto("/backup/policies/new");
  await page.locator("#f-name").fill(j.policyName);
  await page.locator("#f-besId").selectOption({ label: "bes-north" });
  await page.locator("#f-targetId").selectOption(targetId);
  await page.locator("#f-backupType").selectOption("file");
  await page.locator("#f-fullSchedule").fill("0 2 * * 0");
  await page.locator("#f-includePaths").fill(src);
  await page.locator("#f-maxTransferMbps").fill("2");
  await screenshot(page, "engines-01-policy-form");
  const res = await submit(
    page,
    "/backup/policies/new",
    page.getByRole("button", { name: "Create policy" }),
  );
  assert.equal(res.status(), 303);
  await page.waitForURL((url) =>
    /^\/backup\/policies\/\w+$/.test(url.pathname) && !url.pathname.endsWith("/new")
  );
  j.policyPath = new URL(page.url()).pathname;
  await page.getByRole("heading", { name: j.policyName, level: 1 }).waitFor();
}

/** 2. On the policy page the administrator assigns the agent's host. */
async function step2(j: Journey) {
  const { page, policyPath, hostId } = j;
  assert.deepEqual(await assignOnPolicyPage(page, policyPath, [HOSTNAME]), [hostId]);
  assert.equal(await page.locator("[data-testid=assignment-row]").count(), 1);
  await screenshot(page, "engines-02-assigned");
}

/** 3. Run now: the agent backs up through the BES; the run succeeds. */
async function step3(j: Journey) {
  const { page, policyPath, outputs, api } = j;
  await page.goto(policyPath);
  const panel = page.locator("section#run-now");
  await panel.getByRole("heading", { name: "Run now" }).waitFor();
  await panel.getByLabel("Kind").selectOption({ label: "Full" });
  const res = await submit(page, `${policyPath}/run`, panel.getByRole("button", { name: "Run now" }));
  assert.equal(res.status(), 303);
  // The run's page: while the agent backs up, the progress bar shows what it reported.
  await page.locator("[data-testid=run-row] a").first().click();
  await page.waitForURL((url) => url.pathname.startsWith("/backup/runs/"));
  const runPath = new URL(page.url()).pathname;
  const percent = await waitFor(
    "the run's progress bar",
    async () => {
      await page.goto(runPath);
      const bar = page.locator("[data-testid=run-progress] progress");
      const value = (await bar.count()) ? Number(await bar.getAttribute("value")) : 0;
      return value > 0 ? value : undefined;
    },
    60_000,
    300,
  );
  assert.ok(percent > 0 && percent < 100, `${percent}`);
  await screenshot(page, "engines-03-run-progress");
  const status = await waitFor(
    "the run to finish",
    async () => {
      await page.goto(runPath);
      const facts = await page.locator("[data-testid=run-facts]").innerText();
      const m = /Status\s+(\w+)/.exec(facts);
      return m && ["success", "warning", "failed"].includes(m[1]) ? m[1] : undefined;
    },
    90_000,
    500,
  );
  assert.equal(status, "success", outputs());
  assert.equal(await page.locator("[data-testid=run-progress]").count(), 0, "no bar once it ended");
  await page.goto(policyPath);
  const row = await page.locator("[data-testid=run-row]").first().locator("td").allInnerTexts();
  assert.equal(row[3].trim(), "success");
  await screenshot(page, "engines-04-run-finished");
  const policyId = policyPath.split("/").pop()!;
  const points = await api("GET", `/api/v1/restore-points?policyId=${policyId}`);
  assert.equal(points.status, 200, points.text);
  const values = points.json().values as { id: string; hostId: string; fileCount: number }[];
  assert.equal(values.length, 1, points.text);
  assert.equal(values[0].fileCount, 35);
  j.restorePointId = values[0].id;
}

/** 4. Restore: the point is browsed through the BES; a file is selected. */
async function step4(j: Journey) {
  const { page, hostId, src } = j;
  await page.goto(`/backup/restore?hostId=${hostId}&restorePointId=${j.restorePointId}`);
  await page.locator("[data-testid=selected-point]").waitFor();
  await Promise.all([
    page.waitForURL((url) => url.pathname.startsWith("/backup/restore/points/")),
    page.getByRole("link", { name: "Browse and restore files" }).click(),
  ]);
  await page.locator("[data-island=BrowseTree][data-hydrated=true]").waitFor();
  await page.locator("#browse-path").fill(`${src}/reports`);
  await page.getByRole("button", { name: "Browse", exact: true }).click();
  const row = page.locator(`[data-testid=browse-entries] tr[data-path='${src}/reports/budget.xlsx']`);
  await row.waitFor({ timeout: 60_000 });
  assert.equal(await page.locator("[data-testid=browse-entries] tbody tr").count(), 2);
  await page.getByRole("checkbox", { name: `Select ${src}/reports/budget.xlsx` }).check();
  await waitFor(
    "the selection in the paths field",
    async () =>
      (await page.locator("[data-testid=selected-paths]").inputValue()) ===
        `${src}/reports/budget.xlsx`,
    5_000,
  );
  // The original location is the default target; this journey restores to another folder.
  assert.equal(await page.locator("#f-location-original").isChecked(), true, "the default target");
  await page.locator("#f-location-other").check();
  await page.locator("#restore-files input[name=targetPath]").fill(`${j.restored}`);
  await screenshot(page, "engines-05-file-selected");
}

/** 5. Restore files: the agent restores it; the restore finishes; the bytes match. */
async function step5(j: Journey) {
  const { page, src, original } = j;
  await submitFileRestore(page);
  await page.locator("[data-testid=restore-progress][data-status=success]").waitFor({
    timeout: 90_000,
  });
  assert.equal(
    await page.locator("[data-testid=restore-progress] progress").getAttribute("value"),
    "100",
  );
  const result = (await page.locator("[data-testid=restore-result]").innerText()).replace(
    /\s+/g,
    " ",
  );
  assert.match(result, /Files restored 1/);
  await screenshot(page, "engines-06-restored");
  const restored = await Deno.readFile(`${j.restored}${src}/reports/budget.xlsx`);
  assert.deepEqual(restored, original);
  const others = await Array.fromAsync(Deno.readDir(`${j.restored}${src}/reports`));
  assert.deepEqual(others.map((e) => e.name), ["budget.xlsx"], "only the selected file");
}

test("engines journey: 1. the administrator creates a file policy; 2. assigns the agent's host on its page", async (ctx) =>
  await inOrder(await journey(ctx), step1, step2));

test("engines journey: 3. Run now: the agent backs up through the BES; the run succeeds", async (ctx) =>
  await inOrder(await journey(ctx), step1, step2, step3));

test("engines journey: 4. the point is browsed through the BES; 5. a file restored to another folder has its bytes", async (ctx) =>
  await inOrder(await journey(ctx), step1, step2, step3, step4, step5));
