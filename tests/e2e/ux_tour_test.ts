/**
 * The UX tour of issue 17 in Chromium, at 1280 and 390 px: every navigation page and the detail pages of
 * a busy install (the demo, `main.ts --demo`: simulated engines, two weeks of runs, live restores, plus a
 * BES and agent of this test, seeded the way the other e2e tests seed, whose backups fail with a long
 * two-line error), then every navigation page of an empty install. A page fails the tour on horizontal
 * overflow, on a run table whose status or error cell is outside the viewport or clipped by a scrolling
 * box, on a console error, on an axe-core violation of impact serious or critical, on keyboard focus that
 * does not show, and on a status told by colour alone. The flows of "fewer wrong turns" run on the same
 * install: the policy form narrows the targets to the chosen BES, removing a host asks first, and a file
 * restore to the original location replaces its "queued" line when it finishes.
 *
 * The busy install is one `--demo` server for the file (`install: "demo"` of scenario.ts); each test
 * signs in on its own and stands alone: the failing BES and agent are seeded once, by whichever test
 * needs them first (`once`), and the tour builds the pages it visits (a restore request, the remove
 * confirmation) itself. The empty install is a seeded one whose operator account has nothing yet.
 *
 * axe-core (npm) is evaluated in the page through the DevTools protocol: the pages' CSP refuses inline
 * scripts, and `addScriptTag` would add one. Screenshots go to tests/e2e/screenshots/, or to the folder
 * named by CADRES_UX_SHOTS (docs/ux when refreshing the documentation).
 */
import assert from "node:assert/strict";
import axe from "axe-core";
import type { Page } from "playwright-core";
import { DEMO_PASSWORD } from "../../tools/seed_demo.ts";
import { EngineClient, type EngineIdentity } from "../../tools/engine_client.ts";
import {
  type Browser,
  type BrowserProblem,
  describeProblems,
  enrollOnlineAgent,
  registerOnlineBes,
  ROOT,
  SCREENSHOT_DIR,
  type Server,
  signIn,
  waitFor,
} from "./harness.ts";
import { type BareContext, scenario } from "./scenario.ts";

const WIDTHS = [1280, 390] as const;
const HEIGHT = { 1280: 800, 390: 844 } as const;
const ADMIN = "admin@northwind.example";
const FAILING_POLICY = "Ledger DB (tour)";
const LONG_ERROR = "Storage target nas-ledger.corp.internal did not answer within 60 s after 3 attempts " +
  "(connection reset by peer while writing pack 7f3c9a0e5b21d84f6a7c0e9b3d2f1a6c)\n" +
  "retry scheduled by the agent";

/** What the tour measured on one page at one width. */
interface Measure {
  path: string;
  width: number;
  overflow: number;
  runTables: number;
  hiddenRunCells: string[];
  consoleErrors: string[];
  axe: { critical: string[]; serious: string[]; moderate: number; minor: number; lesser: string[] };
  focus: string[];
  colourOnly: string[];
}

/** Where the documentation screenshots go: CADRES_UX_SHOTS (relative to the repository) or the e2e folder. */
function shotPath(name: string): string {
  const dir = Deno.env.get("CADRES_UX_SHOTS");
  return dir ? `${ROOT}${dir.replace(/\/?$/, "/")}${name}.png` : `${SCREENSHOT_DIR}ux-${name}.png`;
}

async function shot(page: Page, name: string): Promise<void> {
  await Deno.mkdir(shotPath(name).replace(/\/[^/]+$/, ""), { recursive: true });
  await page.screenshot({ path: shotPath(name) });
}

/** Waits until the page's islands are hydrated and no dashboard section is still loading. */
async function settled(page: Page): Promise<void> {
  await page.waitForFunction(() =>
    !document.querySelector("[data-island]:not([data-hydrated])") &&
    !document.querySelector("[data-section-state=loading], .dash-loading")
  );
}

/** Overflow, run-table cells out of view, and statuses shown by colour alone, measured in the page. */
function measureInPage() {
  const doc = document.documentElement;
  const overflow = Math.max(0, doc.scrollWidth - doc.clientWidth);
  const hidden: string[] = [];
  const cells = document.querySelectorAll<HTMLElement>(
    "[data-run-table] .cell-status, [data-run-table] [data-testid=run-error]",
  );
  for (const cell of cells) {
    const r = cell.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    let clippedBy = r.left < -0.5 || r.right > doc.clientWidth + 0.5 ? "the viewport" : "";
    for (let box = cell.parentElement; box && !clippedBy; box = box.parentElement) {
      if (getComputedStyle(box).overflowX === "visible") continue;
      const b = box.getBoundingClientRect();
      if (r.left < b.left - 0.5 || r.right > b.right + 0.5) clippedBy = `${box.tagName}.${box.className}`;
    }
    if (clippedBy) {
      hidden.push(`${cell.className || cell.dataset.testid} "${cell.innerText.slice(0, 40)}" (${clippedBy})`);
    }
  }
  const colourOnly: string[] = [];
  for (const badge of document.querySelectorAll<HTMLElement>(".badge")) {
    if (!badge.textContent?.trim()) colourOnly.push(`an empty badge (${badge.className})`);
  }
  for (
    const cell of document.querySelectorAll("svg rect.hm-warning, svg rect.hm-mixed, svg rect.hm-failed")
  ) {
    if (!cell.parentElement?.querySelector("text")) colourOnly.push(`a heatmap cell without its mark`);
  }
  return { overflow, runTables: document.querySelectorAll("[data-run-table]").length, hidden, colourOnly };
}

/** Tabs `times` from the top: each focused element must be in view and drawn with an outline. */
async function focusProblems(page: Page, times = 2): Promise<string[]> {
  const problems: string[] = [];
  await page.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
  for (let i = 0; i < times; i++) {
    await page.keyboard.press("Tab");
    const seen = await page.evaluate(() => {
      let el = document.activeElement as HTMLElement | null;
      if (!el || el === document.body) return { ok: false, what: "nothing" };
      // The phone menu's checkbox is hidden from sight: its label shows the focus.
      if (el.matches(".nav-toggle-input")) el = document.querySelector<HTMLElement>(".nav-toggle-label")!;
      const style = getComputedStyle(el);
      const r = el.getBoundingClientRect();
      const outlined = style.outlineStyle !== "none" && parseFloat(style.outlineWidth) >= 1;
      const inView = r.width > 0 && r.bottom > 0 && r.top < innerHeight && r.right > 0 && r.left < innerWidth;
      return { ok: outlined && inView, what: `${el.tagName} "${el.innerText?.slice(0, 30) ?? ""}"` };
    });
    if (!seen.ok) problems.push(`focus ${i + 1} not visible on ${seen.what}`);
  }
  return problems;
}

/** Visits `path` at the page's current width and measures it (console errors from `problems`). */
async function tourPage(page: Page, path: string, problems: BrowserProblem[]): Promise<Measure> {
  const before = problems.length;
  await page.goto(path);
  await settled(page);
  const m = await page.evaluate(measureInPage);
  await page.evaluate(axe.source);
  const found = await page.evaluate(async () => {
    // deno-lint-ignore no-explicit-any
    const result = await (globalThis as any).axe.run(document, { resultTypes: ["violations"] });
    return (result.violations as Array<{ id: string; impact: string; nodes: Array<{ target: string[] }> }>)
      .map((v) => ({
        id: v.id,
        impact: v.impact,
        where: v.nodes.slice(0, 3).map((n) => n.target.join(" ")),
      }));
  });
  const axeOf = (impact: string) =>
    found.filter((v) => v.impact === impact).map((v) => `${v.id} at ${v.where.join(", ")}`);
  const focus = await focusProblems(page);
  const consoleErrors = problems.slice(before).filter((p) => p.type === "error").map((p) => p.text);
  return {
    path,
    width: page.viewportSize()!.width,
    overflow: m.overflow,
    runTables: m.runTables,
    hiddenRunCells: m.hidden,
    consoleErrors,
    axe: {
      critical: axeOf("critical"),
      serious: axeOf("serious"),
      moderate: axeOf("moderate").length,
      minor: axeOf("minor").length,
      lesser: found.filter((v) => v.impact === "moderate" || v.impact === "minor").map((v) => v.id),
    },
    focus,
    colourOnly: m.colourOnly,
  };
}

/** Tours `paths` at both widths; returns every measure. */
async function tour(browser: Browser, paths: string[]): Promise<Measure[]> {
  const { page } = browser;
  const out: Measure[] = [];
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: HEIGHT[width] });
    for (const path of paths) out.push(await tourPage(page, path, browser.problems));
  }
  return out;
}

/** The failures among `measures`, one line each (empty when the tour passed). */
function failures(measures: Measure[]): string[] {
  return measures.flatMap((m) => {
    const at = `${m.path} at ${m.width} px`;
    return [
      ...(m.overflow ? [`${at}: the page scrolls sideways by ${m.overflow} px`] : []),
      ...m.hiddenRunCells.map((c) => `${at}: run-table cell out of view: ${c}`),
      ...m.consoleErrors.map((e) => `${at}: console error: ${e}`),
      ...m.axe.critical.map((v) => `${at}: axe critical: ${v}`),
      ...m.axe.serious.map((v) => `${at}: axe serious: ${v}`),
      ...m.focus.map((f) => `${at}: ${f}`),
      ...m.colourOnly.map((c) => `${at}: colour alone: ${c}`),
    ];
  });
}

/** The tour's totals as the Markdown table docs/ux.md records. */
function summary(title: string, measures: Measure[]): string {
  const rows = WIDTHS.map((w) => {
    const at = measures.filter((m) => m.width === w);
    const sum = (f: (m: Measure) => number) => at.reduce((n, m) => n + f(m), 0);
    return `| ${w} px | ${at.length} | ${at.filter((m) => m.overflow > 0).length} | ${
      sum((m) => m.runTables)
    } | ${sum((m) => m.hiddenRunCells.length)} | ${sum((m) => m.consoleErrors.length)} | ${
      sum((m) => m.axe.critical.length + m.axe.serious.length)
    } | ${sum((m) => m.axe.moderate + m.axe.minor)} | ${sum((m) => m.focus.length)} |`;
  });
  const lesser = [...new Set(measures.flatMap((m) => m.axe.lesser))].sort();
  return [
    `${title}${lesser.length ? ` (axe moderate/minor rules seen: ${lesser.join(", ")})` : ""}`,
    "| width | pages | pages overflowing | run tables | status/error cells out of view | console errors | axe serious+critical | axe moderate+minor | focus not visible |",
    "|---|---|---|---|---|---|---|---|---|",
    ...rows,
  ].join("\n");
}

/** The navigation links of the signed-in page (the brand link to / left out). */
async function navPaths(page: Page): Promise<string[]> {
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto("/backup/dashboard");
  const hrefs = await page.locator("nav.sidebar .nav-sections a[href^='/']").evaluateAll((links) =>
    links.map((a) => a.getAttribute("href")!)
  );
  return [...new Set(hrefs)];
}

/** A JSON API call with the signed-in session (the CSRF token from the page's meta tag). */
async function sessionApi(page: Page, method: string, path: string, body?: unknown) {
  const res = await page.evaluate(async ({ method, path, body }) => {
    const token = document.querySelector<HTMLMetaElement>("meta[name=csrf-token]")!.content;
    const r = await fetch(path, {
      method,
      headers: { "x-csrf-token": token, "content-type": "application/json", accept: "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: r.status, text: await r.text() };
  }, { method, path, body });
  return { ...res, json: () => JSON.parse(res.text) };
}

/** Claims jobs for `who` until one of `kind` is there. */
async function claimKind(engines: EngineClient, who: EngineIdentity, kind: string) {
  return await waitFor(
    `a ${kind} job for ${who.kind} ${who.id}`,
    async () => {
      const res = await engines.post(who, `/api/${who.kind}/v1/jobs/claim`, { max: 10 });
      assert.equal(res.status, 200, await res.clone().text());
      const { jobs } = await res.json() as { jobs: Array<{ id: string; kind: string }> };
      return jobs.find((j) => j.kind === kind);
    },
    15_000,
    200,
  );
}

/**
 * Adds this test's BES and agent to the demo's Headquarters: a policy whose backup ended with a warning,
 * then failed with a long two-line error. Returns the policy id and the failed run's id.
 */
async function seedFailingJob(
  page: Page,
  server: Server,
): Promise<{ policyId: string; failedRunId: string; agentId: string }> {
  await page.goto("/admin/orgs");
  const orgPath = await page.getByRole("link", { name: "Headquarters", exact: true }).getAttribute("href");
  await page.goto(`${orgPath}/rotate`);
  await page.getByRole("button", { name: "Issue a new secret" }).click();
  const secret = (await page.locator("[data-testid=secret]").innerText()).trim();
  const engines = new EngineClient(server.baseUrl);
  const metrics = {
    cpuPercent: 12,
    memoryPercent: 40,
    diskPercent: 31,
    activeJobs: 0,
    uptimeSeconds: 86_400,
  };
  const bes = await registerOnlineBes(engines, secret, {
    name: "bes-ledger",
    hostname: "bes-ledger.corp.internal",
    ipAddress: "10.30.9.10",
  }, metrics);
  const agent = await enrollOnlineAgent(engines, secret, {
    hostname: "ledger-db01.corp.internal",
    ipAddress: "10.30.9.21",
  }, metrics);
  const target = await sessionApi(page, "POST", "/api/v1/storage", {
    name: "nas-ledger",
    type: "local",
    config: { path: "/srv/backup/ledger" },
    besId: bes.id,
  });
  assert.equal(target.status, 201, target.text);
  const policy = await sessionApi(page, "POST", "/api/v1/policies", {
    name: FAILING_POLICY,
    besId: bes.id,
    targetId: target.json().id,
    backupType: "file",
    fullSchedule: "0 1 * * 0",
    incrementalSchedule: "0 1 * * 1-6",
    prePatchBackup: true,
  });
  assert.equal(policy.status, 201, policy.text);
  const policyId: string = policy.json().id;
  const assigned = await sessionApi(page, "POST", `/api/v1/policies/${policyId}/assignments`, {
    hostIds: [agent.id],
  });
  assert.ok(assigned.status === 200 || assigned.status === 201, assigned.text);
  const runOnce = async (result: Record<string, unknown>) => {
    const asked = await engines.post(agent, "/api/agent/v1/pre-patch", { reason: "kernel update" });
    assert.equal(asked.status, 202, await asked.clone().text());
    const job = await claimKind(engines, agent, "backup");
    const started = new Date(Date.now() - 60_000);
    const res = await engines.post(agent, `/api/agent/v1/jobs/${job.id}/result`, {
      startedAt: started.toISOString(),
      endedAt: new Date(started.getTime() + 47_000).toISOString(),
      bytesTransferred: 0,
      protectedBytes: 0,
      ...result,
    });
    assert.equal(res.status, 200, await res.clone().text());
  };
  await runOnce({
    status: "warning",
    bytesTransferred: 3 * 1024 ** 3,
    protectedBytes: 48 * 1024 ** 3,
    error: { reason: "FILES_LOCKED", message: "2 files were locked and skipped: /var/lib/ledger/wal.lock …" },
    retryable: true,
  });
  // The latest outcome fails: the dashboard's Failed backups and the jobs filter list it too.
  await runOnce({
    status: "failed",
    error: { reason: "TARGET_UNREACHABLE", message: LONG_ERROR },
    retryable: true,
  });
  const history = await sessionApi(page, "GET", `/api/v1/jobs/${policyId}/runs`);
  assert.equal(history.status, 200, history.text);
  const runs = history.json().values as Array<{ id: string; status: string }>;
  const failed = runs.find((r) => r.status === "failed");
  assert.ok(failed, `a failed run in ${history.text}`);
  return { policyId, failedRunId: failed.id, agentId: agent.id };
}

/** Adds a webhook channel whose test delivery fails (the delivery log is a run table too). */
async function seedFailingWebhook(page: Page): Promise<void> {
  await page.goto("/backup/notifications/channels/new?type=webhook");
  await page.locator("#f-name").fill("Ops webhook (tour)");
  await page.locator("#f-url").fill("http://127.0.0.1:9/hooks/backup");
  await page.getByRole("button", { name: "Create channel" }).click();
  await page.locator("[data-testid=secret]").waitFor();
  await page.goto("/backup/notifications");
  await page.locator("[data-testid=channels] tr", { hasText: "Ops webhook (tour)" })
    .getByRole("button", { name: "Send test" }).click();
  await page.waitForLoadState("domcontentloaded");
  await page.locator("[data-testid=delivery-log] [data-testid=run-error]").first().waitFor();
}

/**
 * Restores the first entry of scan01's newest restore point to its original location in the form, and
 * waits until the request's page replaces "queued" with "finished"; returns the request's page path.
 */
async function restoreToOriginalLocation(page: Page): Promise<string> {
  await page.goto("/backup/restore?policyId=");
  const point = page.locator("[data-testid=restore-points] tbody tr", {
    hasText: "scan01.east.internal",
  })
    .first();
  await point.locator("a[href^='/backup/restore/points/']").click();
  await page.locator("[data-island=BrowseTree][data-hydrated=true]").waitFor();
  assert.equal(await page.locator("#f-location-original").isChecked(), true, "original location first");
  assert.equal(await page.locator("#restore-files input[name=targetPath]").isVisible(), false);
  // The demo's agent lists the point's root; the first entry is restored.
  await page.getByRole("button", { name: "Browse", exact: true }).click();
  const first = page.locator("[data-testid=browse-entries] tbody tr").first();
  await first.waitFor({ timeout: 15_000 });
  const path = (await first.getAttribute("data-path"))!;
  await first.getByRole("checkbox").check();
  await waitFor(
    "the selection in the paths field",
    async () => (await page.locator("[data-testid=selected-paths]").inputValue()) === path,
    5_000,
  );
  await Promise.all([
    page.waitForURL((u) => u.pathname.startsWith("/backup/restore/requests/")),
    page.getByRole("button", { name: "Restore files", exact: true }).click(),
  ]);
  const requestPath = new URL(page.url()).pathname;
  const headline = page.locator("[data-testid=restore-headline]");
  assert.match(
    await headline.innerText(),
    /^File restore (queued|running): 1 path to their original location on scan01\.east\.internal\.$/,
  );
  await page.locator(
    "[data-testid=restore-progress][data-status=success], [data-testid=restore-progress][data-status=warning]",
  ).waitFor({ timeout: 30_000 });
  assert.match(
    await headline.innerText(),
    /^File restore finished( with errors)?: 1 path to their original location on scan01\.east\.internal/,
  );
  assert.ok(!(await page.locator("main").innerText()).includes("queued"), "no queued banner is left");
  return requestPath;
}

const busy = scenario("UX Tour", { install: "demo" });
const empty = scenario("Fresh Install");

/** Signs in as the demo's administrator. */
const signInToDemo = (page: Page) => signIn(page, ADMIN, DEMO_PASSWORD);

/** The test's BES and agent whose backups fail with a long error, seeded once for the file's tests. */
const failingJob = busy.once(({ page, server }: BareContext) => seedFailingJob(page, server));

/** A finished file restore request, for the tour (built once by the first test that needs one). */
const restoreRequest = busy.once(({ page }: BareContext) => restoreToOriginalLocation(page));

busy.test("UX tour (busy): the policy form offers only the chosen BES's targets once JavaScript runs", async (ctx) => {
  const { page } = ctx;
  await signInToDemo(page);
  await failingJob(ctx);
  await page.goto("/backup/policies/new");
  await page.locator("[data-island=BesTargetFields][data-hydrated=true]").waitFor();
  const options = () =>
    page.locator("#f-targetId option:not([value=''])").evaluateAll((o) => o.map((x) => x.textContent));
  const groups = await page.locator("#f-targetId optgroup").evaluateAll((g) =>
    g.map((x) => x.getAttribute("label"))
  );
  assert.ok(groups.length >= 3, `targets grouped by BES before a choice: ${groups}`);
  await page.locator("#f-besId").selectOption({ label: "bes-ledger" });
  assert.deepEqual(await options(), ["nas-ledger"]);
  assert.deepEqual(
    await page.locator("#f-targetId optgroup").evaluateAll((g) => g.map((x) => x.getAttribute("label"))),
    ["On bes-ledger"],
  );
  await page.locator("#f-targetId").selectOption({ label: "nas-ledger" });
  await page.locator("#f-besId").selectOption({ label: "hq-bes-01" });
  assert.equal(await page.locator("#f-targetId").inputValue(), "", "a target of the old BES is dropped");
  assert.ok(!(await options()).includes("nas-ledger"));
});

busy.test("UX tour (busy): removing a host from a policy asks first; Cancel keeps it", async (ctx) => {
  const { page } = ctx;
  await signInToDemo(page);
  const seeded = await failingJob(ctx);
  await page.goto(`/backup/policies/${seeded.policyId}`);
  const row = page.locator("[data-testid=assignment-row]", { hasText: "ledger-db01.corp.internal" });
  const remove = row.getByRole("link", { name: /Remove ledger-db01/ });
  const href = await remove.getAttribute("href");
  await remove.click();
  await page.getByRole("heading", { name: `Remove ledger-db01.corp.internal from ${FAILING_POLICY}?` })
    .waitFor();
  // The confirmation is the Remove link's own page (the tour visits it by that link).
  assert.equal(new URL(page.url()).pathname, new URL(href!, page.url()).pathname);
  await page.getByRole("link", { name: "Cancel" }).click();
  await page.waitForURL((u) => u.pathname === `/backup/policies/${seeded.policyId}`);
  assert.equal(await page.locator("[data-testid=assignment-row]").count(), 1, "still assigned");
});

busy.test("UX tour (busy): a file restore goes to the original location by default; finished replaces queued", async ({ page }) => {
  await signInToDemo(page);
  await restoreToOriginalLocation(page);
  await shot(page, "restore-1280");
  await page.setViewportSize({ width: 390, height: 844 });
  await shot(page, "restore-390");
});

busy.test("UX tour (busy): every page at 1280 and 390 px, run tables in view, axe, focus", async (ctx) => {
  const { page, browser } = ctx;
  await signInToDemo(page);
  const seeded = await failingJob(ctx);
  await seedFailingWebhook(page);
  const requestPath = await restoreRequest(ctx);
  // The remove confirmation of the failing policy's host (the page the Remove link leads to).
  await page.goto(`/backup/policies/${seeded.policyId}`);
  const removePath = new URL(
    (await page.locator("[data-testid=assignment-row]", { hasText: "ledger-db01.corp.internal" })
      .getByRole("link", { name: /Remove ledger-db01/ }).getAttribute("href"))!,
    page.url(),
  ).pathname;
  await page.goto(`/backup/jobs/${seeded.policyId}`);
  const nav = await navPaths(page);
  await page.goto("/backup/restore");
  const pointPath = await page.locator(
    "[data-testid=restore-points] a[href^='/backup/restore/points/']",
  )
    .first().getAttribute("href");
  await page.goto("/backup/hosts");
  const hostPath = await page.locator("main a[href^='/backup/hosts/0']").first().getAttribute("href");
  await page.goto("/backup/engines");
  const enginePath = await page.locator("main a[href^='/backup/engines/0']").first().getAttribute(
    "href",
  );
  await page.goto("/backup/storage");
  const targetPath = await page.locator("main a[href^='/backup/storage/0']").first().getAttribute(
    "href",
  );
  const details = [
    `/backup/jobs/${seeded.policyId}`,
    `/backup/policies/${seeded.policyId}`,
    `/backup/runs/${seeded.failedRunId}`,
    pointPath!,
    requestPath,
    hostPath!,
    enginePath!,
    targetPath!,
    "/backup/policies/new",
    removePath,
    "/backup/jobs?status=failed",
  ];
  const measures = await tour(browser, [...nav, ...details]);
  // Deeper on one busy page: the first 30 stops of the keyboard all show where the focus is.
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: HEIGHT[width] });
    await page.goto(`/backup/policies/${seeded.policyId}`);
    await settled(page);
    const walk = await focusProblems(page, 30);
    assert.deepEqual(walk, [], `keyboard walk at ${width} px`);
  }
  // On a phone the menu opens from the keyboard: Space on its (visually hidden) toggle.
  const jobsLink = page.locator("nav.sidebar").getByRole("link", { name: "Jobs", exact: true });
  assert.equal(await jobsLink.isVisible(), false, "the phone menu starts closed");
  await page.locator("#nav-toggle").focus();
  await page.keyboard.press("Space");
  await jobsLink.waitFor({ timeout: 5_000 });
  console.log(`\n${summary("Busy install (demo + a failing BES of the test)", measures)}\n`);
  assert.ok(measures.some((m) => m.runTables > 0 && m.width === 390), "run tables were toured");
  assert.deepEqual(failures(measures), []);
});

busy.test("UX tour (busy): issue 21 pages at both widths: drills (list, new, detail, run), approvals, four-eyes, legal holds, file history", async (ctx) => {
  const { page, browser } = ctx;
  await signInToDemo(page);
  const seeded = await failingJob(ctx);
  await page.setViewportSize({ width: 1280, height: 800 });
  await page.goto("/backup/dashboard");
  await page.goto("/backup/restore");
  const pointPath = (await page.locator(
    "[data-testid=restore-points] a[href^='/backup/restore/points/']",
  ).first().getAttribute("href"))!;
  const point = await sessionApi(
    page,
    "GET",
    `/api/v1${pointPath.replace("/backup/restore/points/", "/restore-points/")}`,
  );
  assert.equal(point.status, 200, point.text);
  const hostId: string = point.json().restorePoint.hostId;
  const pointPolicyId: string = point.json().restorePoint.policyId;
  const hold = await sessionApi(page, "POST", "/api/v1/legal-holds", {
    scope: "host",
    subjectId: hostId,
    reason: "Litigation hold for the scan archive audit",
    caseReference: "CASE-2026-114",
  });
  assert.equal(hold.status, 201, hold.text);
  const drill = await sessionApi(page, "POST", "/api/v1/drills", {
    name: "Weekly scan drill",
    schedule: "0 3 * * 6",
    scopeType: "policies",
    policyIds: [pointPolicyId],
    mode: "sample",
    sampleCount: 5,
    agentHostId: hostId,
    scratchPath: "/var/tmp/drills",
    rtoObjectiveSeconds: 600,
  });
  assert.equal(drill.status, 201, drill.text);
  const drillId: string = drill.json().id;
  await sessionApi(page, "POST", `/api/v1/drills/${drillId}/run`);
  const runs = await sessionApi(page, "GET", `/api/v1/drills/${drillId}/runs`);
  assert.equal(runs.status, 200, runs.text);
  const runId: string | undefined = runs.json().values?.[0]?.id;
  assert.ok(runId, `a drill run in ${runs.text}`);
  const history = `/backup/restore/hosts/${hostId}/history?path=${encodeURIComponent("/etc/hosts")}`;
  const historyAsked = await sessionApi(page, "POST", `/api/v1/hosts/${hostId}/file-history`, {
    path: "/etc/hosts",
  });
  assert.ok(historyAsked.status === 202 || historyAsked.status === 200, historyAsked.text);
  // Four-eyes on: deleting a policy becomes a request waiting for a second person.
  const on = await sessionApi(page, "PUT", "/api/v1/account/four-eyes", {
    enabled: true,
    ttlHours: 24,
  });
  assert.equal(on.status, 200, on.text);
  const asked = await sessionApi(page, "DELETE", `/api/v1/policies/${seeded.policyId}`);
  assert.equal(asked.status, 202, asked.text);
  const approvalId: string = asked.json().approvalRequest.id;
  const paths = [
    "/backup/drills",
    "/backup/drills/new",
    `/backup/drills/${drillId}`,
    ...(runId ? [`/backup/drills/${drillId}/runs/${runId}`] : []),
    `/backup/drills/${drillId}/delete`,
    "/backup/approvals",
    `/backup/approvals/${approvalId}`,
    "/admin/four-eyes",
    "/backup/holds",
    "/backup/holds?status=all",
    pointPath,
    history,
    `/backup/hosts/${hostId}`,
  ];
  const measures = await tour(browser, paths);
  // The hold shows where it applies: a badge naming the case, linking to the hold.
  for (const path of [pointPath, `/backup/hosts/${hostId}`]) {
    await page.goto(path);
    const badge = page.locator("[data-testid=hold-badge]").first();
    assert.match(await badge.innerText(), /Legal hold CASE-2026-114/, path);
    assert.match((await badge.locator("a").getAttribute("href"))!, /^\/backup\/holds#hold-/, path);
  }
  // Turning four-eyes off is itself a request for a second administrator (one admin alone cannot
  // switch it off, act and switch it on again); the requester withdraws it. Four-eyes stays on, and
  // the steps that follow change nothing.
  await page.goto("/backup/dashboard");
  const off = await sessionApi(page, "PUT", "/api/v1/account/four-eyes", {
    enabled: false,
    ttlHours: 24,
  });
  assert.equal(off.status, 202, off.text);
  const offId: string = off.json().approvalRequest.id;
  const withdrawn = await sessionApi(page, "POST", `/api/v1/approvals/${offId}/refuse`, { note: "" });
  assert.equal(withdrawn.status, 200, withdrawn.text);
  assert.equal(withdrawn.json().status, "refused", withdrawn.text);
  console.log(`\n${summary("Issue 21 pages (drills, approvals, holds, file history)", measures)}\n`);
  assert.deepEqual(failures(measures), []);
});

busy.test("UX tour (busy): screenshots: the busy dashboard and a job's runs at both widths", async (ctx) => {
  const { page } = ctx;
  await signInToDemo(page);
  const seeded = await failingJob(ctx);
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: HEIGHT[width] });
    await page.goto("/backup/dashboard");
    await settled(page);
    await shot(page, `dashboard-busy-${width}`);
    await page.goto(`/backup/jobs/${seeded.policyId}#runs`);
    await settled(page);
    await page.locator("#runs").scrollIntoViewIfNeeded();
    await shot(page, `job-runs-${width}`);
  }
});

busy.test("UX tour (busy): the tour's own checks catch what they look for", async (ctx) => {
  const { page, browser } = ctx;
  await signInToDemo(page);
  const seeded = await failingJob(ctx);
  const probe = await browser.context.newPage();
  browser.ignore(probe);
  try {
    await probe.setViewportSize({ width: 1280, height: 800 });
    await probe.goto(`/backup/jobs/${seeded.policyId}`);
    await settled(probe);
    const clean = await probe.evaluate(measureInPage);
    assert.equal(clean.overflow, 0);
    assert.deepEqual(clean.hidden, []);
    // The run history pushed out of its box, and a block wider than the window (CSSOM: the CSP
    // refuses style attributes).
    await probe.evaluate(() => {
      document.querySelector<HTMLElement>("[data-run-table]")!.style.marginLeft = "1400px";
      const wide = document.body.appendChild(document.createElement("div"));
      wide.style.width = "2000px";
      wide.style.height = "1px";
    });
    const m = await probe.evaluate(measureInPage);
    assert.ok(m.overflow > 0, "page overflow is seen");
    assert.ok(m.hidden.length > 0, "a status cell out of view is seen");
    await probe.evaluate(() => document.querySelector(".badge")!.replaceChildren());
    assert.ok(
      (await probe.evaluate(measureInPage)).colourOnly.length > 0,
      "a badge without words is seen",
    );
  } finally {
    await probe.close();
  }
  // Compared as text: a failing deepEqual would try to diff the Page objects inside the problems.
  assert.equal(describeProblems(browser.unexpectedProblems()), "");
});

empty.test("UX tour of an empty install: every navigation page at 1280 and 390 px", async ({ page, browser, signInAsOperator }) => {
  await signInAsOperator();
  const measures = await tour(browser, await navPaths(page));
  console.log(`\n${summary("Empty install (one administrator, one organization)", measures)}\n`);
  assert.deepEqual(failures(measures), []);
});

empty.test("UX tour of an empty install: screenshots of the empty dashboard at both widths", async ({ page, browser, signInAsOperator }) => {
  await signInAsOperator();
  for (const width of WIDTHS) {
    await page.setViewportSize({ width, height: HEIGHT[width] });
    await page.goto("/backup/dashboard");
    await settled(page);
    await shot(page, `dashboard-empty-${width}`);
  }
  assert.equal(describeProblems(browser.unexpectedProblems()), "");
});
