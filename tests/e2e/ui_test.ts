/**
 * Browser checks on a server seeded through the CLI: form errors keep what was typed, the phone
 * layout has a working nav toggle, and the CSP watcher both catches violations and finds none on
 * the pages visited.
 */
import assert from "node:assert/strict";
import {
  type Browser,
  describeProblems,
  launchBrowser,
  screenshot,
  seedWithCli,
  type Server,
  signIn,
  startServer,
  waitFor,
} from "./harness.ts";

Deno.test("UI: form errors, phone layout, CSP", async (t) => {
  const dataDir = await Deno.makeTempDir({ prefix: "cadres-e2e-" });
  let server: Server | null = null;
  let browser: Browser | null = null;
  try {
    const admin = await seedWithCli(dataDir, {
      accountName: "Northwind",
      orgName: "Head Office",
      email: "root@northwind.example",
      name: "Root Admin",
      password: "seeded password 2026",
    });
    server = await startServer({ dataDir });
    assert.equal(server.setupUrl, null);
    assert.ok(!server.output().includes("No administrator yet"), "a seeded server prints no setup link");
    browser = await launchBrowser(server.baseUrl);
    const { page } = browser;

    await t.step("a wrong password keeps the email and says why", async () => {
      await page.goto("/login");
      await page.locator("#f-email").fill(admin.email);
      await page.locator("#f-password").fill("not the password");
      const [res] = await Promise.all([
        page.waitForResponse((r) =>
          r.request().method() === "POST" && new URL(r.url()).pathname === "/login"
        ),
        page.getByRole("button", { name: "Sign in" }).click(),
      ]);
      assert.equal(res.status(), 401);
      await page.getByRole("alert").waitFor();
      assert.equal(await page.locator("#f-email").inputValue(), admin.email);
      assert.equal(await page.locator("#f-password").inputValue(), "");
      await screenshot(page, "ui-01-login-error");
    });

    await signIn(page, admin.email, admin.password);

    await t.step("creating a user with a bad email and short password shows field errors", async () => {
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
    });

    await t.step("choosing 'Selected organizations' without any is an error on the scope", async () => {
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

    await t.step("a duplicate organization name is a field error that keeps the name", async () => {
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

    await t.step("at 390 px (phone) the nav sits behind a working Menu toggle", async () => {
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
        const overflow = await page.evaluate(() =>
          document.documentElement.scrollWidth - globalThis.innerWidth
        );
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

    await t.step("at 390 px nothing in the top bar or page header is cut off", async () => {
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

    await t.step("the CSP watcher catches an inline script (self-check)", async () => {
      const probe = await browser!.context.newPage();
      browser!.ignore(probe);
      try {
        await probe.goto("/backup/dashboard");
        await probe.evaluate(() => {
          const script = document.createElement("script");
          script.textContent = "window.inlineRan = true;";
          document.body.append(script);
        });
        const reports = () => browser!.problems.filter((p) => p.page === probe).map((p) => p.text);
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

    await t.step("no CSP violations or script errors on any page visited", () => {
      assert.deepEqual(browser!.cspViolations(), [], describeProblems(browser!.cspViolations()));
      const unexpected = browser!.unexpectedProblems();
      assert.deepEqual(unexpected, [], describeProblems(unexpected));
    });
  } catch (error) {
    if (server) console.error(server.output());
    throw error;
  } finally {
    await browser?.close();
    if (server) await server.stop();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
});
