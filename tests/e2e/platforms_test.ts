/**
 * Backup > Platforms in the browser against a fake Veeam Backup & Replication server started by the test
 * on loopback (tests/fakes/veeam_server.ts): register the platform through the form (the password never
 * comes back in a page), Test connectivity, Sync now, then find its jobs on Backup > Jobs and its objects
 * on Backup > Protected Objects, with the platform as their source. Automatic sync is left off so that
 * the minute tick cannot race Sync now.
 */
import assert from "node:assert/strict";
import {
  type FakeVeeam,
  fillSampleVeeam,
  startFakeVeeam,
  VEEAM_PASSWORD,
  VEEAM_USER,
} from "../fakes/veeam_server.ts";
import {
  type Browser,
  describeProblems,
  launchBrowser,
  screenshot,
  seedWithCli,
  type Server,
  signIn,
  startServer,
} from "./harness.ts";

const ADMIN = {
  accountName: "Northwind Platforms",
  orgName: "Paris",
  email: "platforms.admin@northwind.example",
  name: "Pia Platform",
  password: "platforms admin password 2026",
};
const PLATFORM = "VBR Paris";

/** Three jobs, four objects and sessions of the last day (the server reads 30 days back on its own clock). */
function fillVeeam(fake: FakeVeeam, now: Date) {
  const ago = (hours: number) => new Date(now.getTime() - hours * 3_600_000).toISOString();
  fillSampleVeeam(fake);
  fake.addSession("j-vm", ago(9), "Success", { id: "s-vm-1" });
  fake.addSession("j-agent", ago(8), "Failed", { id: "s-agent-1", message: "Disk full on repo" });
  fake.addSession("j-log", ago(0.5), null, { id: "s-log-1" });
}

Deno.test("platforms: register a Veeam server, test it, sync it, and find its jobs and objects", async (t) => {
  const dataDir = await Deno.makeTempDir({ prefix: "cadres-e2e-" });
  let server: Server | null = null;
  let browser: Browser | null = null;
  let fake: FakeVeeam | null = null;
  try {
    const admin = await seedWithCli(dataDir, ADMIN);
    fake = await startFakeVeeam();
    fillVeeam(fake, new Date());
    server = await startServer({ dataDir });
    browser = await launchBrowser(server.baseUrl);
    const { page } = browser;
    await signIn(page, admin.email, admin.password);
    const pages: string[] = [];
    const keep = async () => pages.push(await page.content());
    const ok = (passed: boolean) => {
      if (!passed) throw new Error("a previous step failed; later steps depend on it");
    };
    let platformPath = "";

    ok(
      await t.step("register the platform through the form", async () => {
        await page.goto("/backup/platforms");
        await page.getByText("No platforms yet").waitFor();
        await page.getByRole("link", { name: "Register platform" }).first().click();
        await page.waitForURL((url) => url.pathname === "/backup/platforms/new");
        await page.locator("#f-type").selectOption("veeam");
        await page.locator("#f-orgId").selectOption(admin.orgId);
        await page.locator("#f-name").fill(PLATFORM);
        await page.locator("#f-endpointUrl").fill(fake!.url);
        await page.locator("#f-username").fill(VEEAM_USER);
        await page.locator("#f-password").fill(VEEAM_PASSWORD);
        await page.locator("input[name=syncEnabled]").uncheck();
        await screenshot(page, "platforms-01-register-form");
        await Promise.all([
          page.waitForURL((url) => /^\/backup\/platforms\/[0-9A-Z]+$/.test(url.pathname)),
          page.getByRole("button", { name: "Register platform" }).click(),
        ]);
        platformPath = new URL(page.url()).pathname;
        await page.locator(".notice", { hasText: `Registered ${PLATFORM}` }).waitFor();
        const facts = await page.locator("[data-testid=platform-facts]").innerText();
        assert.match(facts, /in the vault/);
        assert.match(facts, /never tested/);
        assert.equal(await page.locator("#f-password").inputValue(), "", "the password is not rendered back");
        await keep();
      }),
    );

    ok(
      await t.step("Test connectivity logs in and reads the server's version", async () => {
        await Promise.all([
          page.waitForURL((url) => url.pathname === platformPath),
          page.getByRole("button", { name: "Test connectivity" }).click(),
        ]);
        await page.locator(".notice", { hasText: "Connected: Veeam Backup & Replication 12.1.2.172" })
          .waitFor();
        assert.match(await page.locator("[data-testid=last-test]").innerText(), /connected/);
        assert.equal(fake!.calls("/api/oauth2/token").length, 1);
        await screenshot(page, "platforms-02-tested");
        await keep();
      }),
    );

    ok(
      await t.step("Sync now imports the jobs, runs and objects", async () => {
        await Promise.all([
          page.waitForURL((url) => url.pathname === platformPath),
          page.getByRole("button", { name: "Sync now" }).click(),
        ]);
        await page.locator(".notice", { hasText: "Synced: jobs +3" }).waitFor();
        const sync = await page.locator("[data-testid=sync-facts]").innerText();
        assert.match(sync, /synced/);
        assert.match(sync, /runs \+3/);
        assert.match(sync, /objects \+4/);
        const jobs = await page.locator("[data-testid=platform-jobs]").innerText();
        for (const name of ["VM nightly", "Linux agents", "SQL logs"]) assert.match(jobs, new RegExp(name));
        await screenshot(page, "platforms-03-synced");
        await keep();
        const list = await page.goto("/backup/platforms");
        assert.equal(list?.status(), 200);
        assert.match(await page.locator("[data-testid=platform-row]").innerText(), /synced/);
        await keep();
      }),
    );

    const platformId = platformPath.split("/").pop()!;
    await t.step("the jobs appear on Backup > Jobs with the platform as their source", async () => {
      await page.goto(`/backup/jobs?source=platform:${platformId}`);
      const body = await page.locator("main").innerText();
      for (const name of ["VM nightly", "Linux agents", "SQL logs"]) assert.match(body, new RegExp(name));
      assert.match(body, /scheduled on the platform/);
      await screenshot(page, "platforms-04-jobs");
      await page.getByRole("link", { name: "Linux agents" }).first().click();
      await page.getByText("Disk full on repo").first().waitFor();
      assert.match(await page.locator("main").innerText(), new RegExp(`Platform job of ${PLATFORM}`));
      await screenshot(page, "platforms-05-job-history");
      await keep();
    });

    await t.step("the objects appear on Backup > Protected Objects", async () => {
      await page.goto(`/backup/protected?source=platform:${platformId}`);
      const body = await page.locator("main").innerText();
      for (const name of ["web01", "web02", "db01", "sql01"]) assert.match(body, new RegExp(`\\b${name}\\b`));
      await screenshot(page, "platforms-06-protected-objects");
      await keep();
    });

    await t.step("the password is in no page, and no page had a CSP violation or script error", () => {
      for (const html of pages) assert.ok(!html.includes(VEEAM_PASSWORD), "the password reached a page");
      assert.ok(!server!.output().includes(VEEAM_PASSWORD), "the password reached the server's output");
      assert.deepEqual(browser!.cspViolations(), [], describeProblems(browser!.cspViolations()));
      const unexpected = browser!.unexpectedProblems();
      assert.deepEqual(unexpected, [], describeProblems(unexpected));
    });
  } finally {
    await browser?.close();
    await server?.stop();
    await fake?.close();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});
