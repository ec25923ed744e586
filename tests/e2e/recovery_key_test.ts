/**
 * The account recovery key in the browser: first-run setup leads the new administrator, once signed in,
 * to the recovery key page; one click downloads the private half (a PKCS#8 PEM whose public half is the
 * one the page then names), and the page never offers it again.
 */
import assert from "node:assert/strict";
import { recoveryKeyIdOfPrivate } from "../../engine/repo/recovery.ts";
import {
  type Browser,
  describeProblems,
  launchBrowser,
  screenshot,
  type Server,
  startServer,
} from "./harness.ts";

const ADMIN = {
  accountName: "Recovery Key Co",
  orgName: "Head Office",
  name: "Rae Admin",
  email: "rae.admin@example.com",
  password: "correct horse battery staple",
};

Deno.test("setup asks for the account recovery key; its private half downloads once", async () => {
  let server: Server | null = null;
  let browser: Browser | null = null;
  try {
    server = await startServer({ expectSetup: true });
    browser = await launchBrowser(server.baseUrl);
    const { page } = browser;

    await page.goto(server.setupUrl!);
    await page.getByLabel("Account (company) name").fill(ADMIN.accountName);
    await page.getByLabel("First organization").fill(ADMIN.orgName);
    await page.getByLabel("Your name").fill(ADMIN.name);
    await page.getByLabel("Your email").fill(ADMIN.email);
    await page.getByLabel("Password", { exact: true }).fill(ADMIN.password);
    await Promise.all([
      page.waitForURL((url) => url.pathname === "/login"),
      page.getByRole("button", { name: "Create administrator" }).click(),
    ]);
    await page.getByRole("status").filter({ hasText: "create the account recovery key" }).waitFor();

    // Signing in from there lands on the recovery key page.
    await page.locator("#f-email").fill(ADMIN.email);
    await page.locator("#f-password").fill(ADMIN.password);
    await Promise.all([
      page.waitForURL((url) => url.pathname === "/admin/recovery-key"),
      page.getByRole("button", { name: "Sign in" }).click(),
    ]);
    await page.getByRole("heading", { name: "Account recovery key", level: 1 }).waitFor();
    await screenshot(page, "recovery-key-01-ask");

    const [download] = await Promise.all([
      page.waitForEvent("download"),
      page.getByRole("button", { name: "Create and download the recovery key" }).click(),
    ]);
    assert.match(download.suggestedFilename(), /^cadres-recovery-key-[0-9a-f]{16}\.pem$/);
    const pem = await Deno.readTextFile(await download.path());
    assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n[\s\S]+\n-----END PRIVATE KEY-----\n$/);
    const id = await recoveryKeyIdOfPrivate(pem);
    assert.equal(download.suggestedFilename(), `cadres-recovery-key-${id}.pem`);

    // The page now names the key (the download's public half) and offers no second download.
    await page.reload();
    assert.equal((await page.getByTestId("recovery-key-id").innerText()).trim(), id);
    assert.equal(await page.getByRole("button", { name: "Create and download the recovery key" }).count(), 0);
    assert.ok(!(await page.content()).includes("PRIVATE KEY"), "the private half is never shown");
    await screenshot(page, "recovery-key-02-created");

    const problems = browser.unexpectedProblems();
    assert.equal(problems.length, 0, describeProblems(problems));
  } finally {
    await browser?.close();
    await server?.stop();
  }
});
