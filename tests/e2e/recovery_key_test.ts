/**
 * The account recovery key in the browser: setup ends signed in on the first-run page, whose first step
 * downloads the private half in one click (a PKCS#8 PEM whose public half is the one the recovery key
 * page then names) while the page stays; neither page offers it again.
 */
import assert from "node:assert/strict";
import { recoveryKeyIdOfPrivate } from "../../engine/repo/recovery.ts";
import { screenshot } from "./harness.ts";
import { completeSetup, scenario } from "./scenario.ts";

const ADMIN = {
  accountName: "Recovery Key Co",
  orgName: "Head Office",
  name: "Rae Admin",
  email: "rae.admin@example.com",
  password: "correct horse battery staple",
};

const { test } = scenario("Recovery Key", { install: "fresh" });

// One journey, one test: the recovery key is offered on the first-run page that only a fresh install's
// setup leads to, and "not offered again" is about the key that same download created.
test("the first-run page offers the account recovery key; its private half downloads once", async ({ server, page }) => {
  await completeSetup(page, server, ADMIN);
  // Signed in, on the first-run page: its first step is the recovery key.
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
});
