/**
 * Browser checks on a server seeded through the CLI: form errors keep what was typed, the phone
 * layout has a working nav toggle, and the CSP watcher both catches violations and finds none on
 * the pages visited. Each test stands alone on the file's shared server (scenario.ts), in its own tenant.
 */
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { screenshot, waitFor } from "./harness.ts";
import { scenario } from "./scenario.ts";

const { test } = scenario("Northwind");

/** Fills the new-user form with a bad email and a short password; asserts the field errors and what is kept. */
async function userFormWithErrors(page: Page, admin: { orgName: string }) {
  await page.goto("/admin/users/new");
  // "bob@localhost" passes the browser's type=email check but not the server's (no TLD).
  await page.getByLabel("Email", { exact: true }).fill("bob@localhost");
  await page.getByLabel("Name", { exact: true }).fill("Bad Input Bob");
  await page.getByLabel("Role").selectOption({ label: "Backup operator" });
  await page.getByRole("radio", { name: "Selected organizations" }).check();
  await page.getByRole("checkbox", { name: admin.orgName }).check();
  await page.getByLabel("Initial password").fill("short");
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/admin/users/new")),
    page.getByRole("button", { name: "Create user" }).click(),
  ]);
  assert.equal(res.status(), 422);
  await page.locator(".field--error #f-email").waitFor();

  const email = page.locator("#f-email");
  assert.equal(await email.getAttribute("aria-invalid"), "true");
  assert.equal(await email.inputValue(), "bob@localhost", "the typed email is kept");
  assert.equal(await page.locator("#f-email-error").innerText(), "Must be a valid email address");

  const password = page.locator("#f-password");
  assert.equal(await password.getAttribute("aria-invalid"), "true");
  assert.equal(await password.inputValue(), "", "a password is never echoed back");
  assert.equal(await page.locator("#f-password-error").innerText(), "Must be at least 12 characters");

  const name = page.locator("#f-name");
  assert.equal(await name.inputValue(), "Bad Input Bob", "the typed name is kept");
  assert.equal(await name.getAttribute("aria-invalid"), null);
  assert.equal(await page.getByLabel("Role").inputValue(), "operator", "the chosen role is kept");
  assert.ok(await page.getByRole("radio", { name: "Selected organizations" }).isChecked());
  assert.ok(await page.getByRole("checkbox", { name: admin.orgName }).isChecked(), "the scope is kept");
  await screenshot(page, "ui-02-user-form-errors");
}

test("UI: a seeded server prints no setup link; a wrong password keeps the email and says why", async ({ server, page, tenant }) => {
  assert.equal(server.setupUrl, null);
  assert.ok(!server.output().includes("No administrator yet"), "a seeded server prints no setup link");
  const admin = tenant.admin;
  await page.goto("/login");
  await page.locator("#f-email").fill(admin.email);
  await page.locator("#f-password").fill("not the password");
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === "/login"),
    page.getByRole("button", { name: "Sign in" }).click(),
  ]);
  assert.equal(res.status(), 401);
  await page.getByRole("alert").waitFor();
  assert.equal(await page.locator("#f-email").inputValue(), admin.email);
  assert.equal(await page.locator("#f-password").inputValue(), "");
  await screenshot(page, "ui-01-login-error");
});

test("UI: creating a user with a bad email and short password shows field errors", async ({ page, signIn, tenant }) => {
  await signIn();
  await userFormWithErrors(page, tenant.admin);
});

test("UI: choosing 'Selected organizations' without any is an error on the scope", async ({ page, signIn, tenant }) => {
  await signIn();
  const admin = tenant.admin;
  await userFormWithErrors(page, admin);
  await page.getByLabel("Email", { exact: true }).fill("bob@northwind.example");
  await page.getByLabel("Initial password").fill("a long enough password");
  await page.getByRole("checkbox", { name: admin.orgName }).uncheck();
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/admin/users/new")),
    page.getByRole("button", { name: "Create user" }).click(),
  ]);
  assert.equal(res.status(), 422);
  const scope = page.locator("fieldset.scope-picker");
  await scope.locator(".field-error").filter({ hasText: "Select at least one organization" }).waitFor();
  assert.match((await scope.getAttribute("class")) ?? "", /field--error/);
  assert.equal(await page.locator("#f-email").inputValue(), "bob@northwind.example");
  assert.equal(await page.locator("#f-email-error").count(), 0);
  await screenshot(page, "ui-03-scope-error");

  await page.goto("/admin/users");
  assert.equal(await page.locator("tr", { hasText: "bob@" }).count(), 0, "no user was created");
});

test("UI: a duplicate organization name is a field error that keeps the name", async ({ page, signIn, tenant }) => {
  await signIn();
  const admin = tenant.admin;
  await page.goto("/admin/orgs/new");
  await page.getByLabel("Name", { exact: true }).fill(admin.orgName);
  const [res] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/admin/orgs/new")),
    page.getByRole("button", { name: "Save" }).click(),
  ]);
  assert.equal(res.status(), 422);
  await page.locator("#f-name-error").waitFor();
  assert.match(await page.locator("#f-name-error").innerText(), /already exists/);
  assert.equal(await page.locator("#f-name").inputValue(), admin.orgName);
  assert.equal(await page.locator("[data-testid=secret]").count(), 0);
  await screenshot(page, "ui-04-duplicate-org");
});

test("UI: at 390 px (phone) the nav sits behind a working Menu toggle", async ({ page, signIn }) => {
  await signIn();
  try {
    const nav = page.locator("nav.sidebar");
    const toggle = nav.getByText("Menu", { exact: true });
    const usersLink = nav.getByRole("link", { name: "Users", exact: true });

    // Desktop first: no toggle, links visible.
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.goto("/admin/users");
    await usersLink.waitFor();
    assert.ok(!(await toggle.isVisible()), "no Menu toggle on a wide screen");

    await page.setViewportSize({ width: 390, height: 844 });
    await page.goto("/admin/users");
    await toggle.waitFor();
    assert.ok(await toggle.isVisible(), "the Menu toggle shows on a phone");
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - globalThis.innerWidth);
    assert.ok(overflow <= 0, `the page scrolls sideways by ${overflow} px at 390 px`);
    await page.getByRole("heading", { name: "Users", level: 1 }).waitFor();
    await screenshot(page, "ui-05-phone");

    const before = await usersLink.isVisible();
    await toggle.click();
    await waitFor(
      "the Menu toggle to change the nav",
      async () => (await usersLink.isVisible()) !== before,
      5_000,
    );
    await screenshot(page, "ui-06-phone-menu-toggled");
    await toggle.click();
    await waitFor(
      "the Menu toggle to restore the nav",
      async () => (await usersLink.isVisible()) === before,
      5_000,
    );
    // Whatever the initial state, the menu can be opened and its links followed.
    if (!(await usersLink.isVisible())) await toggle.click();
    await Promise.all([
      page.waitForURL((url) => url.pathname === "/admin/orgs"),
      nav.getByRole("link", { name: "Organizations", exact: true }).click(),
    ]);
  } finally {
    await page.setViewportSize({ width: 1280, height: 800 });
  }
});

test("UI: at 390 px nothing in the top bar or page header is cut off", async ({ page, signIn }) => {
  await signIn();
  await page.setViewportSize({ width: 390, height: 844 });
  try {
    await page.goto("/admin/users");
    await page.getByRole("heading", { name: "Users", level: 1 }).waitFor();
    const outside = await page.evaluate(() => {
      const selectors = [
        "header.topbar .who",
        "header.topbar button",
        "main h1",
        "main .page-header .btn",
      ];
      const out: string[] = [];
      for (const selector of selectors) {
        for (const el of document.querySelectorAll(selector)) {
          const r = el.getBoundingClientRect();
          if (r.left < -0.5 || r.right > globalThis.innerWidth + 0.5) {
            out.push(`${selector} "${(el.textContent ?? "").trim()}" spans x=${r.left}..${r.right}`);
          }
        }
      }
      return out;
    });
    assert.deepEqual(outside, [], `cut off at 390 px wide:\n${outside.join("\n")}`);
  } finally {
    await page.setViewportSize({ width: 1280, height: 800 });
  }
});

test("UI: the CSP watcher catches an inline script (self-check)", async ({ browser, signIn }) => {
  await signIn();
  const probe = await browser.context.newPage();
  browser.ignore(probe);
  try {
    await probe.goto("/backup/dashboard");
    await probe.evaluate(() => {
      const script = document.createElement("script");
      script.textContent = "window.inlineRan = true;";
      document.body.append(script);
    });
    const reports = () => browser.problems.filter((p) => p.page === probe).map((p) => p.text);
    // Both detectors fire: Chromium's own console message and the securitypolicyviolation event.
    await waitFor(
      "Chromium's CSP console message",
      () => reports().some((r) => /inline script.*Content Security Policy directive 'script-src/.test(r)),
      5_000,
    );
    await waitFor(
      "the securitypolicyviolation event",
      () => reports().some((r) => r.startsWith("securitypolicyviolation: script-src")),
      5_000,
    );
    assert.equal(
      await probe.evaluate(() => "inlineRan" in globalThis),
      false,
      "the CSP blocked the script",
    );
  } finally {
    await probe.close();
  }
});
