/**
 * The control plane's own backups in the browser, as the administrator of the operator account (the
 * server's first account, whose admin is a platform admin): the read-only Health > Backup page before
 * any backup, Admin > Backups validation (field errors, typed values kept) and a saved schedule change,
 * manual backups of both databases from Admin > Maintenance with the BackupProgress island, the
 * free-disk refusal, the Overview diagram and the Database page, and the 403 an admin of a second,
 * unrelated account (created through the CLI) gets on every self-backup page.
 *
 * These settings and bundles are installation-wide, so every test runs on a server of its own
 * (`install: "per-test"` of scenario.ts) and builds the state it checks — the backups before it, a
 * saved setting — through the same pages; none depends on another having run.
 */
import assert from "node:assert/strict";
import type { APIResponse, Page, Response } from "playwright-core";
import { run, screenshot, signIn, signOut, waitFor } from "./harness.ts";
import { scenario } from "./scenario.ts";
import { assertFieldError, isPost } from "./helpers.ts";

const OTHER = {
  accountName: "Other",
  email: "other.admin@other.example",
  name: "Otto Other",
  password: "other admin password 2026",
};
/** Far above any real disk (≈ 1 PiB), so the free-disk check must refuse the backup. */
const HUGE_MIN_FREE_GIB = "1000000";
/** ≈ 95 PiB: more bytes than the settings accept (2^53 bytes = 8 388 608 GiB). */
const OVER_LIMIT_MIN_FREE_GIB = "100000000";

/** The `<dd>` that follows the `<dt>` with exactly this text, in any `dl.facts` of the page. */
function fact(page: Page, label: string) {
  return page.locator(`dl.facts dt:text-is("${label}") + dd`);
}

async function factText(page: Page, label: string): Promise<string> {
  const dd = fact(page, label);
  assert.equal(await dd.count(), 1, `exactly one fact "${label}"`);
  return (await dd.innerText()).trim();
}

/** The times a fact shows, as the ISO values of its `<time datetime>` elements (components/time.tsx). */
async function factTimes(page: Page, label: string): Promise<string[]> {
  const dd = fact(page, label);
  assert.equal(await dd.count(), 1, `exactly one fact "${label}"`);
  return await dd.locator("time").evaluateAll((els) => els.map((e) => e.getAttribute("datetime") ?? ""));
}

/** The next daily run at `hour`:00 UTC strictly after `now`, as ISO. */
function nextDaily(hour: number, now: Date): string {
  const next = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate(), hour));
  if (next.getTime() <= now.getTime()) next.setUTCDate(next.getUTCDate() + 1);
  return next.toISOString();
}

/** Opens /health/backup (200) and returns the times around the visit for schedule checks. */
async function openHealthBackup(page: Page): Promise<{ before: Date; after: Date }> {
  const before = new Date();
  const res = await page.goto("/health/backup");
  const after = new Date();
  assert.equal(res?.status(), 200);
  await page.getByRole("heading", { name: "Backup", level: 1 }).waitFor();
  return { before, after };
}

/** Asserts the "Next … backup" fact is the next daily run at `hour` (as of either side of the visit). */
async function assertNext(page: Page, label: string, hour: number, at: { before: Date; after: Date }) {
  const [shown] = await factTimes(page, label);
  const expected = [nextDaily(hour, at.before), nextDaily(hour, at.after)];
  assert.ok(expected.includes(shown), `${label}: ${shown}, expected ${expected[0]}`);
}

async function healthBadge(page: Page): Promise<string> {
  return (await page.locator(".page-header .badge").innerText()).trim();
}

/** Submits the Admin > Backups form and returns the POST's response. */
async function saveSettings(page: Page): Promise<Response> {
  const [res] = await Promise.all([
    page.waitForResponse(isPost("/admin/backups")),
    page.getByRole("button", { name: "Save", exact: true }).click(),
  ]);
  await page.waitForLoadState("domcontentloaded");
  return res;
}

/**
 * Admin > Maintenance: picks the database, clicks "Back up now", checks the redirect and returns the
 * notice; then waits until the BackupProgress island (polling while the backup runs) shows it as the
 * last trigger with a final status, and returns that line.
 */
async function backUpNow(
  page: Page,
  database: "config" | "results",
): Promise<{ notice: string; last: string }> {
  await page.goto("/admin/maintenance");
  await page.getByRole("heading", { name: "Maintenance", level: 1 }).waitFor();
  await page.locator("[data-island=BackupProgress][data-hydrated=true]").waitFor();
  await page.locator(`input[name=database][value=${database}]`).check();
  const [res] = await Promise.all([
    page.waitForResponse(isPost("/admin/maintenance/backup")),
    page.getByRole("button", { name: "Back up now" }).click(),
  ]);
  assert.equal(res.status(), 303);
  assert.equal(new URL(res.headers()["location"] ?? "", page.url()).pathname, "/admin/maintenance");
  await page.waitForURL((url) => url.pathname === "/admin/maintenance");
  const notice = (await page.getByRole("status").filter({ hasText: "Backup of the" }).innerText()).trim();
  await page.locator("[data-island=BackupProgress][data-hydrated=true]").waitFor();
  const progress = page.locator("[data-testid=backup-progress]");
  const last = await waitFor(
    `the BackupProgress island to show the ${database} backup's outcome`,
    async () => {
      const line = progress.locator("[data-testid=last-trigger]");
      if (await line.count() !== 1) return false;
      const text = (await line.innerText()).trim();
      return new RegExp(`^Last: ${database} DB (success|failed)`).test(text) ? text : false;
    },
    60_000,
    250,
  );
  assert.match(await progress.innerText(), /Idle\./, "the worker is idle again");
  return { notice, last };
}

/**
 * The server's minute job runs each enabled database's backup once in its scheduled hour (02:00 and
 * 03:00 UTC by default, 04:00 for the Config DB after the settings step), on the wall clock. So that the
 * counts this test checks do not depend on the time of day it runs, the hourly slots the job claims
 * (`["self_backup_state", "slot", db, "YYYY-MM-DDTHH"]`, see `runScheduledBackups`) are taken for the
 * next two days before the server starts: the scheduler then finds every slot claimed and runs nothing.
 */
async function holdScheduledBackups(dataDir: string): Promise<void> {
  using kv = await Deno.openKv(`${dataDir}/cadres.kv`);
  const hourMs = 3_600_000;
  const first = Math.floor(Date.now() / hourMs) * hourMs - hourMs;
  const op = kv.atomic();
  for (let h = 0; h < 50; h++) {
    const slot = new Date(first + h * hourMs).toISOString().slice(0, 13);
    for (const db of ["config", "results"]) {
      op.set(["self_backup_state", "slot", db, slot], true, { expireIn: 2 * 86_400_000 });
    }
  }
  assert.ok((await op.commit()).ok);
}

const CLI = ["run", "--allow-env", "--allow-read", "--allow-write", "--allow-sys", "cli.ts"];

/** Adds the administrator of a second, unrelated account through the CLI (before the server starts). */
async function seedOtherWithCli(dataDir: string): Promise<void> {
  const other = await run(
    [
      ...CLI,
      "create-admin",
      "--account",
      OTHER.accountName,
      "--email",
      OTHER.email,
      "--name",
      OTHER.name,
      "--json",
    ],
    { env: { CADRES_DATA_DIR: dataDir, CADRES_LOG_LEVEL: "warn" }, stdin: OTHER.password + "\n" },
  );
  assert.equal(other.code, 0, `create-admin --account Other failed: ${other.stdout}${other.stderr}`);
  assert.equal(JSON.parse(other.stdout.trim()).email, OTHER.email);
}

/** Saves the valid schedule change of the settings test: Config DB at 04:00 UTC, kept 10 days. */
async function saveConfigAt4(page: Page): Promise<Response> {
  await page.goto("/admin/backups");
  await page.locator("#f-config_hour").fill("4");
  await page.locator("#f-config_retentionDays").fill("10");
  return await saveSettings(page);
}

/** Backs up both databases from Admin > Maintenance; each succeeds: two bundles. */
async function backUpBoth(page: Page): Promise<void> {
  assert.equal((await backUpNow(page, "config")).last, "Last: config DB success");
  assert.equal((await backUpNow(page, "results")).last, "Last: results DB success");
}

/** Saves a minimum free disk no real disk has, then asks for a Config DB backup: refused. */
async function refusedBackup(page: Page): Promise<{ saved: Response; notice: string; last: string }> {
  await page.goto("/admin/backups");
  await page.locator("#f-minFreeGiB").fill(HUGE_MIN_FREE_GIB);
  const saved = await saveSettings(page);
  const { notice, last } = await backUpNow(page, "config");
  return { saved, notice, last };
}

/** Every test: a server of its own (the state is installation-wide), its scheduled backups held. */
const { test } = scenario("Cadres Operator", { install: "per-test", beforeStart: holdScheduledBackups });
/** The same, with the administrator of a second account added through the CLI. */
const withOther = scenario("Cadres Operator", {
  install: "per-test",
  beforeStart: async (dataDir) => {
    await holdScheduledBackups(dataDir);
    await seedOtherWithCli(dataDir);
  },
});

test("self-backup: Health > Backup before any backup: unknown, no bundles, default schedules", async ({ page, signInAsOperator }) => {
  await signInAsOperator();
  const nav = page.locator("nav.sidebar");
  await Promise.all([
    page.waitForURL((url) => url.pathname === "/health/backup"),
    nav.getByRole("link", { name: "Backup", exact: true }).click(),
  ]);
  const at = await openHealthBackup(page);
  assert.equal(await healthBadge(page), "unknown");
  assert.equal((await page.locator("[data-testid=bundle-count]").innerText()).trim(), "0");
  assert.equal(await factText(page, "Encryption status"), "Encrypted (AES-256-GCM)");
  assert.equal(await factText(page, "S3 bucket"), "Not configured");
  assert.equal(await factText(page, "S3 reachable"), "—");
  assert.equal(await factText(page, "Config DB schedule"), "Daily at 02:00 UTC");
  assert.equal(await factText(page, "Results DB schedule"), "Daily at 03:00 UTC");
  assert.equal(await factText(page, "Config retention"), "14 days");
  assert.equal(await factText(page, "Results retention"), "7 days");
  await assertNext(page, "Next Config backup", 2, at);
  await assertNext(page, "Next Results backup", 3, at);
  assert.equal(await factText(page, "Last verified restorable"), "Config — · Results —");
  assert.equal(await factText(page, "Oldest bundle"), "—");
  assert.equal(await factText(page, "Newest bundle"), "—");
  assert.equal(await factText(page, "Min free threshold"), "1.0 GB");
  const freeDisk = page.locator("[data-testid=free-disk]");
  assert.ok(!(await freeDisk.getAttribute("class") ?? "").includes("text-bad"), "enough free disk");
  assert.match(await page.locator("main").innerText(), /Total 0 · Successful 0 · Failed 0/);
  await page.getByText("No backup has run yet.").waitFor();
  await screenshot(page, "self-backup-01-health-before");
});

test("self-backup: Admin > Backups: bad hour, retention and S3 bucket → 422, typed values kept", async ({ page, server, signInAsOperator }) => {
  await signInAsOperator();
  const dataDir = server.dataDir;
  await page.goto("/admin/backups");
  await page.getByRole("heading", { name: "Backups", level: 1 }).waitFor();
  assert.equal(await page.locator("#f-config_hour").inputValue(), "2");
  assert.equal(await page.locator("#f-config_retentionDays").inputValue(), "14");
  assert.equal(await page.locator("#f-results_hour").inputValue(), "3");
  assert.equal(await page.locator("#f-results_retentionDays").inputValue(), "7");
  assert.equal(await page.locator("#f-minFreeGiB").inputValue(), "1");
  assert.equal(await page.locator("#f-directory").inputValue(), `${dataDir}/backups`);
  assert.ok(await page.locator("input[name=config_enabled]").isChecked());
  assert.ok(!(await page.locator("input[name=s3_enabled]").isChecked()));
  await screenshot(page, "self-backup-02-settings");

  await page.locator("#f-config_hour").fill("24");
  await page.locator("#f-config_retentionDays").fill("0");
  await page.locator("input[name=s3_enabled]").check();
  await page.locator("#f-s3_endpoint").fill("https://s3.eu-west-1.amazonaws.com");
  await page.locator("#f-s3_bucket").fill("");
  await page.locator("#f-s3_region").fill("eu-west-1");
  await page.locator("#f-s3_accessKeyId").fill("AKIAOPERATOREXAMPLE");
  await page.locator("#f-s3_secretAccessKey").fill("operator-s3-secret-never-echoed-7f3a");
  const res = await saveSettings(page);
  assert.equal(res.status(), 422);
  assert.equal(new URL(page.url()).pathname, "/admin/backups");
  await page.getByRole("heading", { name: "Backups", level: 1 }).waitFor();
  await assertFieldError(page, "config_hour", /^Must be an hour 0–23$/);
  await assertFieldError(page, "config_retentionDays", /^Must be 1–3650 days$/);
  await assertFieldError(page, "s3_bucket", /^Must be a valid bucket name$/);
  for (
    const field of ["results_hour", "results_retentionDays", "minFreeGiB", "s3_endpoint", "s3_region"]
  ) {
    assert.equal(await page.locator(`#f-${field}`).getAttribute("aria-invalid"), null, field);
  }
  const kept: Record<string, string> = {
    config_hour: "24",
    config_retentionDays: "0",
    results_hour: "3",
    results_retentionDays: "7",
    minFreeGiB: "1",
    s3_endpoint: "https://s3.eu-west-1.amazonaws.com",
    s3_bucket: "",
    s3_region: "eu-west-1",
    s3_accessKeyId: "AKIAOPERATOREXAMPLE",
  };
  for (const [field, value] of Object.entries(kept)) {
    assert.equal(
      await page.locator(`#f-${field}`).inputValue(),
      value,
      `${field} keeps what was typed`,
    );
  }
  assert.ok(await page.locator("input[name=s3_enabled]").isChecked(), "the S3 checkbox is kept");
  assert.ok(await page.locator("input[name=config_enabled]").isChecked());
  assert.equal(
    await page.locator("#f-s3_secretAccessKey").inputValue(),
    "",
    "the secret is never echoed",
  );
  assert.ok(
    !(await page.content()).includes("operator-s3-secret-never-echoed-7f3a"),
    "the secret must not be in the re-rendered page",
  );
  await screenshot(page, "self-backup-03-settings-invalid");

  // Nothing was saved.
  await openHealthBackup(page);
  assert.equal(await factText(page, "Config DB schedule"), "Daily at 02:00 UTC");
  assert.equal(await factText(page, "Config retention"), "14 days");
  assert.equal(await factText(page, "S3 bucket"), "Not configured");
});

test("self-backup: Admin > Backups: a valid change saves and Health > Backup reflects it", async ({ page, signInAsOperator }) => {
  await signInAsOperator();
  await page.goto("/admin/backups");
  await page.locator("#f-config_hour").fill("4");
  await page.locator("#f-config_retentionDays").fill("10");
  const res = await saveSettings(page);
  assert.equal(res.status(), 303);
  await page.waitForURL((url) => url.pathname === "/admin/backups");
  await page.getByRole("status").filter({ hasText: "Backup settings saved." }).waitFor();
  assert.equal(await page.locator("#f-config_hour").inputValue(), "4");
  assert.equal(await page.locator("#f-config_retentionDays").inputValue(), "10");
  assert.equal(await page.locator("#f-results_hour").inputValue(), "3");
  assert.equal(await page.locator("#f-results_retentionDays").inputValue(), "7");
  assert.ok(!(await page.locator("input[name=s3_enabled]").isChecked()));
  await screenshot(page, "self-backup-04-settings-saved");

  const at = await openHealthBackup(page);
  assert.equal(await factText(page, "Config DB schedule"), "Daily at 04:00 UTC");
  assert.equal(await factText(page, "Config retention"), "10 days");
  assert.equal(await factText(page, "Results DB schedule"), "Daily at 03:00 UTC");
  assert.equal(await factText(page, "Results retention"), "7 days");
  await assertNext(page, "Next Config backup", 4, at);
  await assertNext(page, "Next Results backup", 3, at);
  assert.equal(await healthBadge(page), "unknown");
  await screenshot(page, "self-backup-05-health-after-settings");
});

test("self-backup: Maintenance: back up the Config DB now → success, verified, healthy", async ({ page, operator, signInAsOperator }) => {
  await signInAsOperator();
  await page.goto("/admin/maintenance");
  await page.locator("[data-island=BackupProgress][data-hydrated=true]").waitFor();
  assert.match(await page.locator("[data-testid=backup-progress]").innerText(), /Idle\./);
  assert.equal(await page.locator("[data-testid=last-trigger]").count(), 0, "no backup has run yet");
  assert.ok(
    await page.locator("input[name=database][value=config]").isChecked(),
    "Config DB preselected",
  );
  await screenshot(page, "self-backup-06-maintenance-before");

  const started = Date.now();
  const { notice, last } = await backUpNow(page, "config");
  assert.match(notice, /^Backup of the Config DB (finished|started)\.$/);
  assert.equal(last, "Last: config DB success");
  await screenshot(page, "self-backup-07-maintenance-config-done");

  await openHealthBackup(page);
  assert.equal((await page.locator("[data-testid=bundle-count]").innerText()).trim(), "1");
  assert.equal(await healthBadge(page), "healthy");
  assert.match(await page.locator("main").innerText(), /Total 1 · Successful 1 · Failed 0/);
  const verified = await factText(page, "Last verified restorable");
  assert.match(
    verified,
    /^Config (just now|\d+ min ago) · (\d{4}-\d{2}-\d{2} )?\d{2}:\d{2} UTC · Results —$/,
  );
  const [verifiedIso] = await factTimes(page, "Last verified restorable");
  const verifiedAt = Date.parse(verifiedIso);
  assert.ok(
    verifiedAt >= started - 60_000 && verifiedAt <= Date.now(),
    `verified just now: ${verified}`,
  );
  assert.notEqual(await factText(page, "Newest bundle"), "—");
  assert.notEqual(await factText(page, "Total size"), "0 B");
  const rows = page.locator("section.panel table.table tbody tr");
  assert.equal(await rows.count(), 1);
  const cells = (await rows.first().locator("td").allInnerTexts()).map((s) => s.trim());
  assert.equal(cells[1], operator.admin.email, "requested by the admin");
  assert.equal(cells[2], "Config DB");
  assert.equal(cells[3], "manual");
  assert.equal(cells[4], "success");
  assert.match(cells[5], /^\d+(\.\d)? (B|KB|MB), \d+ entries$/);
  assert.equal(cells[6], "verified passed, S3 skipped");
  await screenshot(page, "self-backup-08-health-after-config-backup");
});

test("self-backup: Maintenance: back up the Results DB too → two bundles", async ({ page, operator, signInAsOperator }) => {
  await signInAsOperator();
  // Before: the Config DB backup of the test above.
  assert.equal((await backUpNow(page, "config")).last, "Last: config DB success");
  const { notice, last } = await backUpNow(page, "results");
  assert.match(notice, /^Backup of the Results DB (finished|started)\.$/);
  assert.equal(last, "Last: results DB success");
  await screenshot(page, "self-backup-09-maintenance-results-done");

  await openHealthBackup(page);
  assert.equal((await page.locator("[data-testid=bundle-count]").innerText()).trim(), "2");
  assert.equal(await healthBadge(page), "healthy");
  assert.match(await page.locator("main").innerText(), /Total 2 · Successful 2 · Failed 0/);
  assert.match(
    await factText(page, "Last verified restorable"),
    /^Config .+ UTC · Results (just now|\d+ min ago) · (\d{4}-\d{2}-\d{2} )?\d{2}:\d{2} UTC$/,
  );
  assert.equal((await factTimes(page, "Last verified restorable")).length, 2);
  const rows = page.locator("section.panel table.table tbody tr");
  assert.equal(await rows.count(), 2);
  const newest = (await rows.first().locator("td").allInnerTexts()).map((s) => s.trim());
  assert.deepEqual(newest.slice(1, 5), [operator.admin.email, "Results DB", "manual", "success"]);
  await screenshot(page, "self-backup-10-health-two-bundles");
});

test("self-backup: blank schedule and free-disk fields are field errors, not silently 0", async ({ page, signInAsOperator }) => {
  await signInAsOperator();
  await page.goto("/admin/backups");
  await page.locator("#f-results_hour").fill("");
  await page.locator("#f-minFreeGiB").fill("");
  const res = await saveSettings(page);
  await screenshot(page, "self-backup-11-settings-blank");
  // Whatever happened, put the saved settings back as the later steps expect them.
  if (res.status() === 303) {
    await page.locator("#f-results_hour").fill("3");
    await page.locator("#f-minFreeGiB").fill("1");
    assert.equal((await saveSettings(page)).status(), 303);
  }
  assert.equal(
    res.status(),
    422,
    "a blank hour must not be saved as 00:00 UTC, nor a blank minimum as 0 GiB (which turns the " +
      `free-disk check off); got ${res.status()}`,
  );
  await assertFieldError(page, "results_hour", /^Must be an hour 0–23$/);
  await assertFieldError(page, "minFreeGiB", /GiB/);
});

test("self-backup: a minimum free disk beyond the limit is explained in GiB", async ({ page, signInAsOperator }) => {
  await signInAsOperator();
  await page.goto("/admin/backups");
  await page.locator("#f-minFreeGiB").fill(OVER_LIMIT_MIN_FREE_GIB);
  const res = await saveSettings(page);
  await screenshot(page, "self-backup-12-settings-over-limit");
  if (res.status() === 303) {
    // Accepted: put the normal minimum back for the steps after this one.
    await page.locator("#f-minFreeGiB").fill("1");
    assert.equal((await saveSettings(page)).status(), 303);
    return;
  }
  assert.equal(res.status(), 422);
  const error = page.locator("#f-minFreeGiB-error");
  assert.equal(await error.count(), 1, "the error is next to the minimum free disk field");
  const message = await error.innerText();
  assert.doesNotMatch(message, /bytes/i, "the field is in GiB: the message must not talk about bytes");
  assert.match(message, /GiB/, `the message should give the limit in GiB: "${message}"`);
});

test("self-backup: low disk: a huge minimum free disk refuses the backup; health is unhealthy", async ({ page, operator, signInAsOperator }) => {
  await signInAsOperator();
  // Before: both databases backed up (two bundles).
  await backUpBoth(page);
  await page.goto("/admin/backups");
  await page.locator("#f-minFreeGiB").fill(HUGE_MIN_FREE_GIB);
  const res = await saveSettings(page);
  assert.equal(
    res.status(),
    303,
    `a minimum of ${HUGE_MIN_FREE_GIB} GiB should save: ` +
      (await page.locator(".field-error, .form-error").allInnerTexts()).join("; "),
  );
  await page.getByRole("status").filter({ hasText: "Backup settings saved." }).waitFor();
  assert.equal(await page.locator("#f-minFreeGiB").inputValue(), HUGE_MIN_FREE_GIB);
  await screenshot(page, "self-backup-13-settings-huge-min-free");

  const { last } = await backUpNow(page, "config");
  assert.match(last, /^Last: config DB failed — Refused: free disk .+ GiB .*below the minimum .+ GiB$/);
  await screenshot(page, "self-backup-14-maintenance-low-disk");

  await openHealthBackup(page);
  const freeDisk = page.locator("[data-testid=free-disk]");
  assert.match(await freeDisk.getAttribute("class") ?? "", /\btext-bad\b/);
  assert.match(await freeDisk.innerText(), / — below the minimum$/);
  const colors = await freeDisk.evaluate((el) => {
    const probe = document.createElement("span");
    probe.style.color = "var(--bad)";
    el.parentElement!.append(probe);
    const bad = getComputedStyle(probe).color;
    probe.remove();
    const plain = getComputedStyle(el.parentElement!.querySelector("dd:not(.text-bad)")!).color;
    return { shown: getComputedStyle(el).color, bad, plain };
  });
  assert.equal(colors.shown, colors.bad, "the free disk value is shown in the 'bad' colour");
  assert.notEqual(colors.shown, colors.plain, "and not in the normal text colour");
  assert.equal(await healthBadge(page), "unhealthy");
  assert.equal(
    (await page.locator("[data-testid=bundle-count]").innerText()).trim(),
    "2",
    "no new bundle",
  );
  assert.match(await page.locator("main").innerText(), /Total 3 · Successful 2 · Failed 1/);
  const newest = (await page.locator("section.panel table.table tbody tr").first().locator("td")
    .allInnerTexts()).map((s) => s.trim());
  assert.deepEqual(newest.slice(1, 5), [operator.admin.email, "Config DB", "manual", "failed"]);
  assert.equal(newest[5], "—", "no bundle");
  assert.match(newest[6], /^Refused: free disk .+ below the minimum .+$/);
  await screenshot(page, "self-backup-15-health-low-disk");
});

test("self-backup: the notice after a refused backup says it failed and why", async ({ page, signInAsOperator }) => {
  await signInAsOperator();
  const { saved, notice: refusedNotice, last } = await refusedBackup(page);
  assert.equal(saved.status(), 303);
  assert.match(last, /^Last: config DB failed — Refused: free disk/);
  assert.doesNotMatch(
    refusedNotice,
    /finished\.$/,
    `a refused backup is reported as "${refusedNotice}" (it did not finish: nothing was backed up)`,
  );
  assert.match(refusedNotice, /fail|refused/i);
  assert.match(refusedNotice, /free disk/);
});

test("self-backup: Health > Overview shows every part of the diagram; S3 is off", async ({ page, signInAsOperator }) => {
  await signInAsOperator();
  // Before: both databases backed up, then a backup refused for lack of free disk.
  await backUpBoth(page);
  const refused = await refusedBackup(page);
  assert.equal(refused.saved.status(), 303);
  assert.match(refused.last, /^Last: config DB failed — Refused: free disk/);
  const res = await page.goto("/health/overview");
  assert.equal(res?.status(), 200);
  await page.getByRole("heading", { name: "Overview", level: 1 }).waitFor();
  const diagram = page.getByRole("group", { name: "Architecture of the control plane and its backups" });
  await diagram.waitFor();
  const expected: Record<string, RegExp> = {
    cp: /Control plane/,
    configdb: /Config DB/,
    resultsdb: /Results DB/,
    worker: /Backup worker/,
    volume: /Local backups/,
    s3: /S3 bucket/,
    engines: /Engines/,
  };
  for (const [id, label] of Object.entries(expected)) {
    const node = page.locator(`svg.diagram [data-testid=node-${id}]`);
    assert.equal(await node.count(), 1, `node ${id}`);
    assert.match(await node.textContent() ?? "", label, `node ${id}'s label`);
    assert.match(
      await node.getAttribute("data-state") ?? "",
      /^(ok|warn|bad|off)$/,
      `node ${id}'s state`,
    );
  }
  const state = (id: string) => page.locator(`[data-testid=node-${id}]`).getAttribute("data-state");
  assert.equal(await state("s3"), "off", "S3 is not configured");
  assert.match(await page.locator("[data-testid=node-s3]").textContent() ?? "", /not configured/);
  assert.equal(await state("cp"), "ok");
  assert.equal(await state("engines"), "off", "no engine registered");
  assert.equal(await state("configdb"), "ok", "a fresh Config DB bundle exists");
  assert.equal(await state("resultsdb"), "ok", "a fresh Results DB bundle exists");
  assert.equal(await state("worker"), "bad", "the last backup was refused");
  assert.equal(await state("volume"), "bad", "free disk is below the minimum");
  assert.match(await page.locator("[data-testid=node-volume]").textContent() ?? "", /2 bundles/);
  await screenshot(page, "self-backup-16-overview");
});

test("self-backup: Health > Database shows the Config DB's entries", async ({ page, signInAsOperator }) => {
  await signInAsOperator();
  const res = await page.goto("/health/database");
  assert.equal(res?.status(), 200);
  await page.getByRole("heading", { name: "Database", level: 1 }).waitFor();
  const config = Number((await page.locator("[data-testid=config-entries]").innerText()).trim());
  assert.ok(Number.isInteger(config) && config > 0, `Config DB entries: ${config}`);
  const results = Number((await page.locator("[data-testid=results-entries]").innerText()).trim());
  assert.ok(Number.isInteger(results) && results >= 0, `Results DB entries: ${results}`);
  const configPanel = page.locator("section.panel", {
    has: page.getByRole("heading", { name: "Config DB" }),
  });
  assert.ok(await configPanel.locator("tbody tr").count() > 0, "the Config DB lists its areas");
  await screenshot(page, "self-backup-17-database");
});

// One journey, one test: "nothing reached the operator's backups" is about what this other admin just
// tried, checked against the operator's state from before the attempt.
withOther.test("self-backup: an admin of another account gets 403 on every self-backup page; nothing they tried reached the operator's backups", async ({ page, server, operator, signInAsOperator }) => {
  const dataDir = server.dataDir;
  // Before: the operator's saved schedule (Config DB at 04:00 UTC) and one backup of theirs.
  await signInAsOperator();
  assert.equal((await saveConfigAt4(page)).status(), 303);
  assert.equal((await backUpNow(page, "config")).last, "Last: config DB success");

  await signOut(page);
  await signIn(page, OTHER.email, OTHER.password);
  await page.locator("header.topbar .who").filter({ hasText: OTHER.email }).waitFor();
  for (
    const path of [
      "/health/backup",
      "/admin/backups",
      "/admin/maintenance",
      "/health/overview",
      "/health/database",
    ]
  ) {
    const res = await page.goto(path);
    assert.equal(res?.status(), 403, `${path} for an admin of another account`);
    await page.getByRole("heading", { name: "Not allowed", level: 1 }).waitFor();
    assert.match(
      await page.locator("[data-testid=error-message]").innerText(),
      /only administrators of the operator account/,
    );
    const html = await page.content();
    assert.ok(!html.includes(operator.admin.email), `${path} must not show who ran the operator's backups`);
    assert.ok(!html.includes(dataDir), `${path} must not show the backups folder`);
    if (path === "/health/backup") await screenshot(page, "self-backup-18-other-account-health-403");
    if (path === "/admin/backups") await screenshot(page, "self-backup-19-other-account-settings-403");
  }
  const api = await page.request.get("/api/health/infra/backup", {
    headers: { accept: "application/json" },
  });
  assert.equal(api.status(), 403);
  assert.equal((await api.json()).error.code, "forbidden");

  // Nor can they change the settings or start a backup with a valid CSRF token of their own.
  await page.goto("/backup/dashboard");
  const csrf = await page.locator("meta[name=csrf-token]").getAttribute("content");
  assert.ok(csrf);
  for (
    const path of ["/admin/backups", "/admin/maintenance/backup", "/admin/maintenance/restart-worker"]
  ) {
    const post: APIResponse = await page.request.post(path, {
      form: { _csrf: csrf, database: "config", config_enabled: "on", config_hour: "5" },
      maxRedirects: 0,
    });
    assert.equal(post.status(), 403, `POST ${path} for an admin of another account`);
    assert.match(
      await post.text(),
      /only administrators of the operator account/,
      `POST ${path}: not a CSRF 403`,
    );
  }

  // Nothing the other admin tried reached the operator's backups.
  await signOut(page);
  await signInAsOperator();
  await openHealthBackup(page);
  assert.equal(await factText(page, "Config DB schedule"), "Daily at 04:00 UTC");
  assert.match(await page.locator("main").innerText(), /Total 1 · Successful 1 · Failed 0/);
  await screenshot(page, "self-backup-20-health-final");
});
