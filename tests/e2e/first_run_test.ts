/**
 * The operator's first run in the browser: the setup link leads, signed in, to a page that shows the
 * first organization's registration secret once with the exact commands that start a BES and an agent,
 * and ticks "BES registered" and "agent enrolled" live as they connect over the real signed protocol
 * (tools/engine_client.ts); the dashboard's getting-started checklist then ticks its first step. A
 * dashboard section refreshes in place from its fragment. And the dashboard without JavaScript: every
 * section rendered by the server (the storage section failing on its own, CADRES_FAULTS=dashboard.storage),
 * the checklist, and the 24-hour counts as links.
 */
import assert from "node:assert/strict";
import { EngineClient } from "../../tools/engine_client.ts";
import { registerOnlineBes, screenshot, waitFor } from "./harness.ts";
import { completeSetup, scenario } from "./scenario.ts";

const ADMIN = {
  accountName: "First Run Co",
  orgName: "Head Office",
  name: "Fern Admin",
  email: "fern.admin@example.com",
  password: "correct horse battery staple",
};
const METRICS = { cpuPercent: 5, memoryPercent: 20, diskPercent: 30, activeJobs: 0, uptimeSeconds: 60 };

/** A fresh install per test: no administrator yet, the test walks the setup. */
const fresh = scenario("First Run", {
  install: "fresh",
  permissions: ["clipboard-read", "clipboard-write"],
});
/** A seeded install (each test its own tenant), with JavaScript. */
const seeded = scenario("First Run Dash");
/** A seeded install browsed without JavaScript, whose dashboard storage data source fails. */
const noScript = scenario("No Script", {
  env: { CADRES_FAULTS: "dashboard.storage" },
  javaScriptEnabled: false,
});

// One user journey, one test: the registration secret exists only in the setup's answer (shown once), and
// each later check is the same fresh install reacting to what the previous one did (the ticks follow the
// first BES and agent that use that secret, the checklist counts them): split, the parts would have
// nothing to check.
fresh.test("first run: from the setup link to the checklist ticking “BES registered”", async ({ server, page }) => {
  const baseUrl = server.baseUrl;
  const client = new EngineClient(baseUrl);

  // Setup ends signed in on the first-run page with the secret and both commands.
  await completeSetup(page, server, ADMIN);
  assert.match(await page.locator("header.topbar").innerText(), new RegExp(ADMIN.email), "signed in");
  const secretBox = page.getByTestId("first-run-secret");
  assert.match(await secretBox.innerText(), /shown only this\s+once/);
  const secret = (await secretBox.getByTestId("secret").innerText()).trim();
  assert.match(secret, /^cdo_[\w-]{20,}$/);
  assert.equal(
    (await page.getByTestId("command-bes").getByTestId("secret").innerText()).trim(),
    `deno task bes --control-plane ${baseUrl} --secret ${secret} --data ./bes-data`,
  );
  assert.equal(
    (await page.getByTestId("command-agent").getByTestId("secret").innerText()).trim(),
    `deno task agent --control-plane ${baseUrl} --secret ${secret} --data ./agent-data`,
  );
  // The Copy button puts the secret on the clipboard.
  await secretBox.getByRole("button", { name: "Copy" }).click();
  await secretBox.getByText("Copied to the clipboard").waitFor();
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret);
  // The recovery key step is on the way (its download is covered by recovery_key_test.ts).
  await page.getByRole("button", { name: "Create and download the recovery key" }).waitFor();
  const ticks = page.getByTestId("first-run-ticks");
  await ticks.locator("[data-island=SetupTicks][data-hydrated=true]").waitFor();
  assert.match(await ticks.locator("[data-tick=bes]").innerText(), /Waiting for a BES to register/);
  assert.match(
    await ticks.locator("[data-tick=agent]").innerText(),
    /Waiting for an agent to enroll/,
  );
  await screenshot(page, "first-run-01-secret-and-commands");

  // A BES registers with the secret: the page ticks “BES registered”, then online.
  const registered = await client.registerBes(secret, {
    name: "bes-first-run",
    hostname: "bes-first-run.local",
    ipAddress: "127.0.0.1",
    port: 8443,
    version: "1.0.0",
  });
  assert.equal(registered.response.status, 201, JSON.stringify(registered.body));
  const bes = page.locator("[data-tick=bes]");
  await page.locator("[data-tick=bes][data-done=true]").waitFor({ timeout: 15_000 });
  assert.match(await bes.innerText(), /BES registered \(waiting for its first heartbeat\)/);
  assert.equal((await client.heartbeat(registered.identity, METRICS)).status, 200);
  await bes.filter({ hasText: "BES registered and online" }).waitFor({ timeout: 15_000 });
  await screenshot(page, "first-run-02-bes-registered");

  // An agent enrolls: the page ticks “Agent enrolled”.
  const enrolled = await client.enrollAgent(secret, {
    hostname: "first-host.local",
    ipAddress: "127.0.0.2",
  });
  assert.equal(enrolled.response.status, 201, JSON.stringify(enrolled.body));
  await page.locator("[data-tick=agent][data-done=true]").waitFor({ timeout: 15_000 });
  assert.match(await page.locator("[data-tick=agent]").innerText(), /Agent enrolled/);

  // The dashboard's checklist ticks the engine; the secret is never shown again.
  await Promise.all([
    page.waitForURL((url) => url.pathname === "/backup/dashboard"),
    page.getByRole("link", { name: "Continue on the dashboard" }).click(),
  ]);
  const checklist = page.getByTestId("getting-started");
  await checklist.waitFor();
  assert.match(await checklist.innerText(), /4 of 5 steps to go/);
  assert.equal(await checklist.locator("[data-step=engine][data-done=true]").count(), 1);
  assert.match(
    await checklist.locator("[data-step=engine]").innerText(),
    /1 engine registered, 1 online/,
  );
  assert.equal(await checklist.locator("[data-step=storage][data-done=false]").count(), 1);
  assert.match(
    await checklist.locator("[data-step=host]").innerText(),
    /1 host enrolled, not yet assigned to a policy/,
  );
  await page.goto("/backup/getting-started");
  assert.ok(!(await page.content()).includes(secret), "the secret was shown once, at setup");
  assert.equal(
    await page.locator("[data-tick=bes][data-done=true]").count(),
    1,
    "ticked without waiting",
  );
  await page.goto("/backup/dashboard");
  await Promise.all([
    page.waitForURL((url) => url.pathname === "/backup/storage/new"),
    checklist.getByRole("link", { name: "Add a storage target" }).click(),
  ]);
  await page.goto("/backup/dashboard");
  await screenshot(page, "first-run-03-dashboard-checklist");
});

seeded.test("first run: a dashboard section refreshes in place from its fragment", async ({ page, server, tenant, signIn }) => {
  const client = new EngineClient(server.baseUrl);
  await registerOnlineBes(client, tenant.orgSecret, {
    name: "bes-first",
    hostname: "bes-first.local",
    ipAddress: "127.0.0.1",
  }, METRICS);
  await signIn();
  const engines = page.locator("#section-engines [data-section-state]");
  await page.locator("#section-engines [data-island=DashboardSection][data-hydrated=true]").waitFor();
  assert.match(await engines.innerText(), /1\s+BES online/);
  const second = await client.registerBes(tenant.orgSecret, {
    name: "bes-second",
    hostname: "bes-second.local",
    ipAddress: "127.0.0.3",
  });
  assert.equal(second.response.status, 201);
  assert.equal((await client.heartbeat(second.identity, METRICS)).status, 200);
  await page.evaluate(() => (document.body.dataset.marker = "same page"));
  await page.getByRole("link", { name: "Refresh Backup engines" }).click();
  await waitFor(
    "the engines section to show 2 BES online",
    async () => /2\s+BES online/.test(await engines.innerText()),
    15_000,
  );
  assert.equal(await page.evaluate(() => document.body.dataset.marker), "same page", "no reload");
});

noScript.test("the dashboard without JavaScript renders every section, the checklist and the 24-hour links", async ({ page, server, tenant, signIn }) => {
  await registerOnlineBes(new EngineClient(server.baseUrl), tenant.orgSecret, {
    name: "bes-noscript",
    hostname: "bes-noscript.local",
    ipAddress: "127.0.0.1",
  }, METRICS);
  await signIn();
  assert.equal(await page.locator("[data-hydrated]").count(), 0, "no island ran: JavaScript is off");
  const body = await page.locator("main").innerText();
  assert.ok(!body.includes("Loading…"), "no section waits for JavaScript");
  const section = (name: string) => page.locator(`#section-${name} [data-section-state]`);
  for (const name of ["summary", "engines", "activity", "failed", "rpo", "verification", "heatmap"]) {
    assert.equal(await section(name).getAttribute("data-section-state"), "ready", name);
  }
  assert.match(await section("engines").innerText(), /1\s+BES online/);
  assert.match(await section("summary").innerText(), /0\s+Protected/);
  assert.match(await section("rpo").innerText(), /No protected objects yet/);
  assert.match(await section("heatmap").innerText(), /No backup policies yet/);
  // The storage data source fails on its own; the page says so without script.
  assert.equal(await section("storage").getAttribute("data-section-state"), "error");
  assert.match(
    await section("storage").innerText(),
    /This section could not load: The storage data source failed/,
  );
  // The checklist, ticked from real data.
  const checklist = page.getByTestId("getting-started");
  assert.match(await checklist.innerText(), /4 of 5 steps to go/);
  assert.equal(await checklist.locator("[data-step=engine][data-done=true]").count(), 1);
  // The 24-hour counts are links to the runs behind them, which also render without script.
  const failed = section("activity").locator("[data-metric=Failed] a");
  const href = await failed.getAttribute("href");
  assert.match(href ?? "", /^\/backup\/runs\?status=failed&endedAfter=/);
  await Promise.all([page.waitForURL((url) => url.pathname === "/backup/runs"), failed.click()]);
  await page.getByRole("heading", { name: "Failed runs", level: 1 }).waitFor();
  assert.match(await page.locator("main").innerText(), /No runs match/);
  await page.goto("/backup/dashboard");
  await screenshot(page, "dashboard-no-js");
});
