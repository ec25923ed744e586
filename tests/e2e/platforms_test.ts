/**
 * Backup > Platforms in the browser against a fake Veeam Backup & Replication server started by the test
 * on loopback (tests/fakes/veeam_server.ts): register the platform through the form (the password never
 * comes back in a page), Test connectivity, Sync now, then find its jobs on Backup > Jobs and its objects
 * on Backup > Protected Objects, with the platform as their source. Automatic sync is left off so that
 * the minute tick cannot race Sync now. Each test stands alone (scenario.ts): its own tenant and fake
 * server, taking the journey as far as it needs.
 */
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import {
  type FakeVeeam,
  fillSampleVeeam,
  startFakeVeeam,
  VEEAM_PASSWORD,
  VEEAM_USER,
} from "../fakes/veeam_server.ts";
import { describeProblems, screenshot } from "./harness.ts";
import { scenario, type ScenarioContext } from "./scenario.ts";

const PLATFORM = "VBR Paris";

/** Three jobs, four objects and sessions of the last day (the server reads 30 days back on its own clock). */
function fillVeeam(fake: FakeVeeam, now: Date) {
  const ago = (hours: number) => new Date(now.getTime() - hours * 3_600_000).toISOString();
  fillSampleVeeam(fake);
  fake.addSession("j-vm", ago(9), "Success", { id: "s-vm-1" });
  fake.addSession("j-agent", ago(8), "Failed", { id: "s-agent-1", message: "Disk full on repo" });
  fake.addSession("j-log", ago(0.5), null, { id: "s-log-1" });
}

const { test } = scenario("Northwind Platforms");

interface Journey {
  page: Page;
  fake: FakeVeeam;
  /** Every page seen, to check that the password reached none. */
  pages: string[];
  keep(): Promise<void>;
  platformPath: string;
}

/** Signs in, starts a filled fake Veeam server and registers it through the form; asserts what it shows. */
async function register(ctx: ScenarioContext): Promise<Journey> {
  const { page } = ctx;
  const fake = await startFakeVeeam();
  fillVeeam(fake, new Date());
  await ctx.signIn();
  const pages: string[] = [];
  const keep = async () => void pages.push(await page.content());
  await page.goto("/backup/platforms");
  await page.getByText("No platforms yet").waitFor();
  await page.getByRole("link", { name: "Register platform" }).first().click();
  await page.waitForURL((url) => url.pathname === "/backup/platforms/new");
  await page.locator("#f-type").selectOption("veeam");
  await page.locator("#f-orgId").selectOption(ctx.tenant.admin.orgId);
  await page.locator("#f-name").fill(PLATFORM);
  await page.locator("#f-endpointUrl").fill(fake.url);
  await page.locator("#f-username").fill(VEEAM_USER);
  await page.locator("#f-password").fill(VEEAM_PASSWORD);
  await page.locator("input[name=syncEnabled]").uncheck();
  await screenshot(page, "platforms-01-register-form");
  await Promise.all([
    page.waitForURL((url) => /^\/backup\/platforms\/[0-9A-Z]+$/.test(url.pathname)),
    page.getByRole("button", { name: "Register platform" }).click(),
  ]);
  const platformPath = new URL(page.url()).pathname;
  await page.locator(".notice", { hasText: `Registered ${PLATFORM}` }).waitFor();
  const facts = await page.locator("[data-testid=platform-facts]").innerText();
  assert.match(facts, /in the vault/);
  assert.match(facts, /never tested/);
  assert.equal(await page.locator("#f-password").inputValue(), "", "the password is not rendered back");
  await keep();
  return { page, fake, pages, keep, platformPath };
}

/** Sync now on the platform's page; asserts the counts and the jobs it shows. */
async function syncNow(j: Journey): Promise<void> {
  const { page } = j;
  await Promise.all([
    page.waitForURL((url) => url.pathname === j.platformPath),
    page.getByRole("button", { name: "Sync now" }).click(),
  ]);
  await page.locator(".notice", { hasText: "Synced: jobs +3" }).waitFor();
  const sync = await page.locator("[data-testid=sync-facts]").innerText();
  assert.match(sync, /synced/);
  assert.match(sync, /runs \+3/);
  assert.match(sync, /objects \+4/);
  const jobs = await page.locator("[data-testid=platform-jobs]").innerText();
  for (const name of ["VM nightly", "Linux agents", "SQL logs"]) assert.match(jobs, new RegExp(name));
  await j.keep();
}

/** The password is in no page seen nor in the server's output, and no page had a CSP violation. */
function noPasswordNoViolation(ctx: ScenarioContext, j: Journey) {
  for (const html of j.pages) assert.ok(!html.includes(VEEAM_PASSWORD), "the password reached a page");
  assert.ok(!ctx.server.output().includes(VEEAM_PASSWORD), "the password reached the server's output");
  assert.deepEqual(ctx.browser.cspViolations(), [], describeProblems(ctx.browser.cspViolations()));
  const unexpected = ctx.browser.unexpectedProblems();
  assert.deepEqual(unexpected, [], describeProblems(unexpected));
}

/** Runs `fn` on a registered platform, then checks the pages it saw and closes the fake server. */
function journey(name: string, fn: (ctx: ScenarioContext, j: Journey) => Promise<void>) {
  test(`platforms: ${name}`, async (ctx) => {
    let j: Journey | null = null;
    try {
      j = await register(ctx);
      await fn(ctx, j);
      noPasswordNoViolation(ctx, j);
    } finally {
      await j?.fake.close();
    }
  });
}

journey("register the platform through the form", async () => {});

journey("Test connectivity logs in and reads the server's version", async (_ctx, j) => {
  const { page } = j;
  await Promise.all([
    page.waitForURL((url) => url.pathname === j.platformPath),
    page.getByRole("button", { name: "Test connectivity" }).click(),
  ]);
  await page.locator(".notice", { hasText: "Connected: Veeam Backup & Replication 12.1.2.172" })
    .waitFor();
  assert.match(await page.locator("[data-testid=last-test]").innerText(), /connected/);
  assert.equal(j.fake.calls("/api/oauth2/token").length, 1);
  await screenshot(page, "platforms-02-tested");
  await j.keep();
});

journey("Sync now imports the jobs, runs and objects", async (_ctx, j) => {
  const { page } = j;
  await syncNow(j);
  await screenshot(page, "platforms-03-synced");
  const list = await page.goto("/backup/platforms");
  assert.equal(list?.status(), 200);
  assert.match(await page.locator("[data-testid=platform-row]").innerText(), /synced/);
  await j.keep();
});

journey("the jobs appear on Backup > Jobs with the platform as their source", async (_ctx, j) => {
  const { page } = j;
  await syncNow(j);
  const platformId = j.platformPath.split("/").pop()!;
  await page.goto(`/backup/jobs?source=platform:${platformId}`);
  const body = await page.locator("main").innerText();
  for (const name of ["VM nightly", "Linux agents", "SQL logs"]) assert.match(body, new RegExp(name));
  assert.match(body, /scheduled on the platform/);
  await screenshot(page, "platforms-04-jobs");
  await page.getByRole("link", { name: "Linux agents" }).first().click();
  await page.getByText("Disk full on repo").first().waitFor();
  assert.match(await page.locator("main").innerText(), new RegExp(`Platform job of ${PLATFORM}`));
  await screenshot(page, "platforms-05-job-history");
  await j.keep();
});

journey("the objects appear on Backup > Protected Objects", async (_ctx, j) => {
  const { page } = j;
  await syncNow(j);
  const platformId = j.platformPath.split("/").pop()!;
  await page.goto(`/backup/protected?source=platform:${platformId}`);
  const body = await page.locator("main").innerText();
  for (const name of ["web01", "web02", "db01", "sql01"]) assert.match(body, new RegExp(`\\b${name}\\b`));
  await screenshot(page, "platforms-06-protected-objects");
  await j.keep();
});
