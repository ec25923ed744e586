/**
 * Backup > Notifications in the browser: a webhook channel is created through the form (its generated
 * signing secret shown once), and its page — the edit form included — never shows the URL's path,
 * which may carry a token. Saving with the URL left empty keeps it; typing a new one replaces it, and
 * the audit log says so without showing either URL.
 */
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { screenshot } from "./harness.ts";
import { scenario } from "./scenario.ts";

const URL_1 = "https://hooks.example.com/services/T0/B0/PATH-TOKEN-ONE";
const URL_2 = "https://hooks.example.com/services/T1/B1/PATH-TOKEN-TWO";

const { test } = scenario("Fabrikam Alerts");

/** Creates the webhook channel "Ops webhook" through the form; returns its secret and its page's path. */
async function createWebhook(page: Page): Promise<{ secret: string; channelUrl: string }> {
  await page.goto("/backup/notifications/channels/new?type=webhook");
  await page.locator("#f-name").fill("Ops webhook");
  await page.locator("#f-url").fill(URL_1);
  await page.getByRole("button", { name: "Create channel" }).click();
  const secret = (await page.locator("[data-testid=secret]").innerText()).trim();
  await page.goto("/backup/notifications");
  await page.getByRole("link", { name: "Ops webhook" }).first().click();
  await page.waitForURL((u) => /\/backup\/notifications\/channels\/[0-9A-Z]{26}$/.test(u.pathname));
  return { secret, channelUrl: new URL(page.url()).pathname };
}

test("notifications: creating a webhook shows its generated secret once", async ({ page, signIn }) => {
  await signIn();
  await page.goto("/backup/notifications/channels/new?type=webhook");
  await page.locator("#f-name").fill("Ops webhook");
  await page.locator("#f-url").fill(URL_1);
  await page.getByRole("button", { name: "Create channel" }).click();
  const secret = await page.locator("[data-testid=secret]").innerText();
  assert.match(secret.trim(), /^whsec_[A-Za-z0-9_-]{43}$/);
  await screenshot(page, "notifications-01-secret-once");
  await page.goto("/backup/notifications");
  await page.getByRole("link", { name: "Ops webhook" }).first().click();
  await page.waitForURL((u) => /\/backup\/notifications\/channels\/[0-9A-Z]{26}$/.test(u.pathname));
  assert.ok(!(await page.content()).includes(secret.trim()), "the secret is not shown again");
});

test("notifications: the channel page and its edit form show only the URL's origin", async ({ page, signIn }) => {
  await signIn();
  await createWebhook(page);
  const html = await page.content();
  assert.ok(!html.includes("PATH-TOKEN"), "the URL's path token is not in the page");
  const url = page.locator("#f-url");
  assert.equal(await url.inputValue(), "", "the URL field starts empty");
  assert.equal(await url.getAttribute("placeholder"), "https://hooks.example.com/…");
  assert.equal(await url.getAttribute("required"), null, "an edit may leave it empty");
  await page.getByText("leave empty to keep it").first().waitFor();
  await screenshot(page, "notifications-02-edit-form");
});

test(
  "notifications: saving with the URL left empty keeps it; a typed URL replaces it; the audit log says which",
  async ({ page, signIn }) => {
    await signIn();
    const { channelUrl } = await createWebhook(page);
    await page.locator("#f-name").fill("Ops webhook (renamed)");
    await page.getByRole("button", { name: "Save changes" }).click();
    await page.waitForURL((u) => u.pathname === channelUrl);
    await page.getByText("Ops webhook (renamed)").first().waitFor();
    await page.locator("#f-url").fill(URL_2);
    await page.getByRole("button", { name: "Save changes" }).click();
    await page.waitForURL((u) => u.pathname === channelUrl);
    assert.ok(!(await page.content()).includes("PATH-TOKEN"), "neither URL's token after saving");

    await page.goto("/admin/audit");
    const rows = page.locator("tbody tr", { hasText: "notification_channel.update" });
    await rows.first().waitFor();
    const texts = await rows.allInnerTexts();
    assert.equal(texts.length, 2, texts.join("\n"));
    assert.equal(
      texts.filter((r) => r.includes("changed the URL")).length,
      1,
      "only the second save changed it",
    );
    const audit = await page.content();
    assert.ok(!audit.includes("PATH-TOKEN"), "no URL token in the audit log");
    await screenshot(page, "notifications-03-audit");
  },
);
