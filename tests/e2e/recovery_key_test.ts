/**
 * The account recovery key in the browser: setup ends signed in on the first-run page, whose first step
 * downloads the private half in one click (a PKCS#8 PEM whose public half is the one the recovery key
 * page then names) while the page stays; neither page offers it again.
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

Deno.test("the first-run page offers the account recovery key; its private half downloads once", async () => {
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
    await page.getByRole("button", { name: "Create administrator" }).click();
    // Signed in, on the first-run page: its first step is the recovery key.
    await page.getByRole("heading", { name: "Cadres Backup is set up", level: 1 }).waitFor();
    await page.getByTestId("first-run-recovery-key").waitFor();
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

    // The first-run page stayed (the secret on it is still there to copy).
    await page.getByTestId("first-run-secret").getByTestId("secret").waitFor();
    // The recovery key page now names the key (the download's public half) and offers no second download.
    await page.goto("/admin/recovery-key");
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
