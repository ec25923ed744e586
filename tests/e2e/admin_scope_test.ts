/**
 * The main browser journey on a fresh server: first-run setup → sign in → create an organization
 * (secret shown once, copied by the island) → create a Viewer restricted to that organization →
 * sign in as the Viewer and check what they can and cannot reach. Setup runs on a fresh install of its own
 * (scenario.ts `install: "fresh"`: no administrator yet); the other tests stand alone on the file's shared
 * server, each in its own tenant, creating what it needs.
 */
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { describeProblems, screenshot, signIn, signOut } from "./harness.ts";
import { scenario, type ScenarioContext } from "./scenario.ts";

const ADMIN = {
  accountName: "Cadres E2E Co",
  orgName: "Head Office",
  name: "Ada Admin",
  email: "ada.admin@example.com",
  password: "correct horse battery staple",
};
const VIEWER = {
  name: "Vera Viewer",
  email: "vera.viewer@example.com",
  password: "viewer password 123",
};
const NEW_ORG = "Warehouse East";

const fresh = scenario("Cadres E2E Setup", { install: "fresh" });

// One journey, one test: the setup link works once, on a server without an administrator, and "who can
// sign in" is the administrator that setup created.
fresh.test("admin journey: (a) setup page creates the first administrator, who can sign in", async ({ server, page, browser }) => {
  const setupUrl = server.setupUrl!;
  assert.match(setupUrl, new RegExp(`^${server.baseUrl}/setup\\?token=\\S+$`));
  // Before setup, /login explains that setup is needed.
  await page.goto("/login");
  await page.getByRole("heading", { name: "Welcome to Cadres Backup" }).waitFor();

  const res = await page.goto(setupUrl);
  assert.equal(res?.status(), 200);
  assert.equal(res?.headers()["cache-control"], "no-store");
  await page.getByRole("heading", { name: "Set up Cadres Backup" }).waitFor();
  await screenshot(page, "admin-01-setup");
  await page.getByLabel("Account (company) name").fill(ADMIN.accountName);
  await page.getByLabel("First organization").fill(ADMIN.orgName);
  await page.getByLabel("Your name").fill(ADMIN.name);
  await page.getByLabel("Your email").fill(ADMIN.email);
  await page.getByLabel("Password", { exact: true }).fill(ADMIN.password);
  // Setup ends signed in, on the first-run page (which shows the organization's secret once, so it is
  // never cached); first_run_test.ts covers that page itself.
  const [done] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === "/setup"),
    page.getByRole("button", { name: "Create administrator" }).click(),
  ]);
  assert.equal(done.status(), 200);
  assert.equal(done.headers()["cache-control"], "no-store");
  await page.getByRole("heading", { name: "Cadres Backup is set up", level: 1 }).waitFor();
  assert.match(await page.locator("header.topbar .who").innerText(), new RegExp(ADMIN.email));
  await screenshot(page, "admin-02-setup-done");

  // The setup link is single-use: once signed out, it redirects to /login.
  await signOut(page);
  await page.goto(setupUrl);
  assert.equal(new URL(page.url()).pathname, "/login");

  // The administrator can sign in with the password chosen at setup.
  await signIn(page, ADMIN.email, ADMIN.password);
  await page.locator("header.topbar .who").filter({ hasText: ADMIN.email }).waitFor();
  assert.match(await page.locator("header.topbar .who").innerText(), /Administrator/);
  await screenshot(page, "admin-03-dashboard");
  assert.deepEqual(browser.cspViolations(), [], describeProblems(browser.cspViolations()));
  const unexpected = browser.unexpectedProblems();
  assert.deepEqual(unexpected, [], describeProblems(unexpected));
});

const { test } = scenario("Cadres E2E Co", { permissions: ["clipboard-read", "clipboard-write"] });

/** Signs in and creates Warehouse East through the form: its secret page is open. */
async function createOrg(ctx: ScenarioContext) {
  const { page } = ctx;
  const ADMIN = ctx.tenant.admin;
  await ctx.signIn();
  let headOfficeId = "";
  let secret = "";
  const nav = page.locator("nav.sidebar");
  await Promise.all([
    page.waitForURL((url) => url.pathname === "/admin/orgs"),
    nav.getByRole("link", { name: "Organizations" }).click(),
  ]);
  await page.getByRole("heading", { name: "Organizations", level: 1 }).waitFor();
  const headOfficeHref = await page.getByRole("link", { name: ADMIN.orgName }).getAttribute("href");
  headOfficeId = /^\/admin\/orgs\/(\w+)$/.exec(headOfficeHref ?? "")?.[1] ?? "";
  assert.ok(headOfficeId, `no link to ${ADMIN.orgName}: ${headOfficeHref}`);
  await screenshot(page, "admin-04-orgs");

  await Promise.all([
    page.waitForURL((url) => url.pathname === "/admin/orgs/new"),
    page.getByRole("link", { name: "Add organization" }).click(),
  ]);
  await page.getByLabel("Name", { exact: true }).fill(NEW_ORG);
  const [created] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/admin/orgs/new")),
    page.getByRole("button", { name: "Save" }).click(),
  ]);
  assert.equal(created.status(), 200);
  assert.equal(
    created.headers()["cache-control"],
    "no-store",
    "a page showing a secret must not be cached",
  );
  await page.getByRole("heading", { name: `Organization ${NEW_ORG} created` }).waitFor();
  secret = (await page.locator("[data-testid=secret]").innerText()).trim();
  assert.match(secret, /^cdo_\S{20,}$/);
  await screenshot(page, "admin-05-org-secret");
  return { page, ADMIN, headOfficeId, secret };
}

/** Leaves the secret page by Done; asserts the secret is not shown again; returns Warehouse East's id. */
async function leaveSecretPage(page: Page, secret: string, headOfficeId: string): Promise<string> {
  let warehouseId = "";
  await Promise.all([
    page.waitForURL((url) => /^\/admin\/orgs\/\w+$/.test(url.pathname)),
    page.getByRole("link", { name: "Done" }).click(),
  ]);
  warehouseId = new URL(page.url()).pathname.split("/").pop()!;
  assert.notEqual(warehouseId, headOfficeId);
  await page.getByRole("heading", { name: NEW_ORG, level: 1 }).waitFor();
  assert.ok(!(await page.content()).includes(secret), "the org page must not show the secret again");

  // A fresh visit (not from history) shows no secret either, nor does the list.
  await page.goto(`/admin/orgs/${warehouseId}`);
  await page.getByRole("heading", { name: NEW_ORG, level: 1 }).waitFor();
  const html = await page.content();
  assert.ok(!html.includes(secret), "the org page must not show the secret again");
  assert.ok(!html.includes("cdo_"), "no registration secret at all on the org page");
  assert.equal(await page.locator("[data-testid=secret]").count(), 0);
  await screenshot(page, "admin-07-org-page-no-secret");
  await page.goto("/admin/orgs");
  await page.getByRole("link", { name: NEW_ORG }).waitFor();
  assert.ok(!(await page.content()).includes(secret));
  return warehouseId;
}

/** Creates the Viewer restricted to Warehouse East through the form. */
async function createViewer(
  page: Page,
  ADMIN: { orgName: string },
  VIEWER: { email: string; name: string; password: string },
) {
  await page.goto("/admin/users/new");
  await page.getByLabel("Email", { exact: true }).fill(VIEWER.email);
  await page.getByLabel("Name", { exact: true }).fill(VIEWER.name);
  await page.getByLabel("Role").selectOption({ label: "Viewer" });
  await page.getByLabel("Initial password").fill(VIEWER.password);
  await page.getByRole("radio", { name: "Selected organizations" }).check();
  await page.getByRole("checkbox", { name: NEW_ORG }).check();
  assert.ok(!(await page.getByRole("checkbox", { name: ADMIN.orgName }).isChecked()));
  await screenshot(page, "admin-09-new-viewer-form");

  await Promise.all([
    page.waitForURL((url) => /^\/admin\/users\/\w+$/.test(url.pathname) && !url.pathname.endsWith("/new")),
    page.getByRole("button", { name: "Create user" }).click(),
  ]);
  await page.getByRole("status").filter({ hasText: `User ${VIEWER.email} created.` }).waitFor();
  // The edit page reflects what was saved.
  assert.equal(await page.getByLabel("Role").inputValue(), "viewer");
  assert.ok(await page.getByRole("radio", { name: "Selected organizations" }).isChecked());
  assert.ok(await page.getByRole("checkbox", { name: NEW_ORG }).isChecked());
  assert.ok(!(await page.getByRole("checkbox", { name: ADMIN.orgName }).isChecked()));
  await screenshot(page, "admin-10-viewer-created");

  await page.goto("/admin/users");
  const row = page.locator("tr", { hasText: VIEWER.email });
  await row.waitFor();
  assert.match(await row.innerText(), new RegExp(`Viewer\\s+${NEW_ORG}`));
}

const viewerOf = (ctx: ScenarioContext) => ({
  ...VIEWER,
  email: `vera.viewer@${ctx.tenant.admin.email.split("@")[1]}`,
});

test("admin journey: (b) creating an organization shows its registration secret once", async (ctx) => {
  await createOrg(ctx);
});

test("admin journey: (b) the CopySecret island hydrates and its Copy button copies the secret", async (ctx) => {
  const { page, secret } = await createOrg(ctx);
  await page.locator("[data-island=CopySecret][data-hydrated=true]").waitFor();
  await page.getByRole("button", { name: "Copy" }).click();
  await page.getByRole("status").filter({ hasText: "Copied to the clipboard" }).waitFor({
    timeout: 5_000,
  });
  const clipboard = await page.evaluate(() => navigator.clipboard.readText());
  assert.equal(clipboard, secret, "the Copy button should put the secret on the clipboard");
  await screenshot(page, "admin-06-org-secret-copied");
});

test("admin journey: (b) the secret is not shown again on the organization's pages", async (ctx) => {
  const { page, secret, headOfficeId } = await createOrg(ctx);
  await leaveSecretPage(page, secret, headOfficeId);
});

test("admin journey: (c) the OrgScopePicker island reveals the org list and keeps a live summary", async (ctx) => {
  const { page, ADMIN } = await createOrg(ctx);
  await Promise.all([
    page.waitForURL((url) => url.pathname === "/admin/users"),
    page.locator("nav.sidebar").getByRole("link", { name: "Users" }).click(),
  ]);
  await Promise.all([
    page.waitForURL((url) => url.pathname === "/admin/users/new"),
    page.getByRole("link", { name: "Add user" }).click(),
  ]);
  await page.locator("[data-island=OrgScopePicker][data-hydrated=true]").waitFor();
  const summary = page.locator("[data-testid=scope-summary]");
  const orgBoxes = page.locator("input[name=orgIds]");

  // Hydrated with "All organizations": no org checkboxes, the summary says so.
  assert.ok(await page.getByRole("radio", { name: "All organizations" }).isChecked());
  await summary.filter({ hasText: "Sees every organization" }).waitFor({ timeout: 5_000 });
  assert.equal(await orgBoxes.count(), 0, "the org list is hidden while 'All organizations' is chosen");

  await page.getByRole("radio", { name: "Selected organizations" }).check();
  await orgBoxes.first().waitFor();
  assert.equal(await orgBoxes.count(), 2);
  await summary.filter({ hasText: "Select at least one organization." }).waitFor();

  await page.getByRole("checkbox", { name: NEW_ORG }).check();
  await summary.filter({ hasText: "Sees 1 organization only." }).waitFor();
  assert.equal((await summary.innerText()).trim(), "Sees 1 organization only.");
  assert.ok(!(await page.getByRole("checkbox", { name: ADMIN.orgName }).isChecked()));
  await screenshot(page, "admin-08-scope-picker");

  await page.getByRole("radio", { name: "All organizations" }).check();
  await summary.filter({ hasText: "Sees every organization" }).waitFor();
  assert.equal(await orgBoxes.count(), 0);
});

test("admin journey: (c) a Viewer restricted to Warehouse East is created", async (ctx) => {
  const { page, ADMIN } = await createOrg(ctx);
  await createViewer(page, ADMIN, viewerOf(ctx));
});

test("admin journey: (d) the Viewer sees only their organization and no admin pages", async (ctx) => {
  const { page, ADMIN, secret, headOfficeId } = await createOrg(ctx);
  const warehouseId = await leaveSecretPage(page, secret, headOfficeId);
  const VIEWER = viewerOf(ctx);
  await createViewer(page, ADMIN, VIEWER);
  await signOut(page);
  await screenshot(page, "admin-11-signed-out");
  await signIn(page, VIEWER.email, VIEWER.password);
  await page.locator("header.topbar .who").filter({ hasText: VIEWER.email }).waitFor();
  assert.match(await page.locator("header.topbar .who").innerText(), /Viewer/);

  const nav = page.locator("nav.sidebar");
  await nav.getByRole("link", { name: "Dashboard" }).waitFor();
  for (
    const href of ["/admin/users", "/admin/orgs", "/admin/audit", "/admin/backups", "/health/backup"]
  ) {
    assert.equal(await nav.locator(`a[href="${href}"]`).count(), 0, `nav must not link to ${href}`);
  }
  for (const label of ["Users", "Organizations", "Audit"]) {
    assert.equal(await nav.getByRole("link", { name: label, exact: true }).count(), 0);
  }
  // Restore needs backup.restore, which a Viewer lacks; API tokens only need backup.view.
  assert.equal(await nav.locator('a[href="/backup/restore"]').count(), 0);
  assert.equal(await nav.locator('a[href="/admin/tokens"]').count(), 1);
  await screenshot(page, "admin-12-viewer-dashboard");

  const forbidden = await page.goto("/admin/users");
  assert.equal(forbidden?.status(), 403);
  await page.getByRole("heading", { name: "Not allowed" }).waitFor();
  const message = await page.locator("[data-testid=error-message]").innerText();
  assert.match(message, /\badmin permission\b/);
  await screenshot(page, "admin-13-viewer-403");

  const orgPage = await page.goto(`/admin/orgs/${warehouseId}`);
  assert.equal(orgPage?.status(), 403, "admin org pages need the admin permission");

  await page.goto("/backup/dashboard");
  const api = await page.evaluate(async (ids) => {
    const get = async (path: string) => {
      const res = await fetch(path, { headers: { accept: "application/json" } });
      return { status: res.status, body: await res.json() };
    };
    return {
      list: await get("/api/v1/orgs"),
      own: await get(`/api/v1/orgs/${ids.warehouseId}`),
      other: await get(`/api/v1/orgs/${ids.headOfficeId}`),
      me: await get("/api/v1/me"),
    };
  }, { warehouseId, headOfficeId });
  assert.equal(api.list.status, 200);
  assert.deepEqual(api.list.body.values.map((o: { name: string }) => o.name), [NEW_ORG]);
  assert.deepEqual(api.list.body.values.map((o: { id: string }) => o.id), [warehouseId]);
  assert.ok(
    !JSON.stringify(api.list.body).includes("secretHash"),
    "orgs are listed without their hash",
  );
  assert.equal(api.own.status, 200);
  assert.equal(api.own.body.name, NEW_ORG);
  assert.equal(api.other.status, 404, "an org outside the scope is reported as missing");
  assert.equal(api.other.body.error.code, "not_found");
  assert.deepEqual(api.me.body.orgScope, [warehouseId]);
  assert.deepEqual(api.me.body.permissions, ["backup.view"]);

  // Visiting the other org's API URL directly gives 404 as well.
  const direct = await page.goto(`/api/v1/orgs/${headOfficeId}`);
  assert.equal(direct?.status(), 404);
  assert.equal(JSON.parse(await direct!.text()).error.code, "not_found");
  await screenshot(page, "admin-14-viewer-api-404");
});
