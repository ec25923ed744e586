/**
 * Backup policies in the browser, on a server seeded through the CLI with one simulated BES and two
 * agents (hosts) talking the real signed engine protocol, and three storage targets created through
 * the JSON API with a CLI-made token (Local as the primary, SMB and S3 as replicas): the live cron
 * island, field errors that keep what was typed, a file policy with its derived RPO and 3-2-1 badge,
 * host assignments (no duplicates, archived ones reactivated), app hooks from a template and from the
 * script library in execution order, replica rules until 3-2-1 is met, and a replica target that
 * cannot be deleted while the rule uses it.
 * Each test stands alone on the file's shared server (scenario.ts), in its own tenant, running the steps
 * it checks and the ones they build on.
 */
import assert from "node:assert/strict";
import type { Locator, Page } from "playwright-core";
import { Cron } from "croner";
import { EngineClient, type EngineIdentity } from "../../tools/engine_client.ts";
import { apiClient, screenshot } from "./harness.ts";
import { scenario, type ScenarioContext } from "./scenario.ts";
import { assertFieldError, submit } from "./helpers.ts";

const ENGINE = { name: "bes-main", hostname: "bes-main.backup.internal", ipAddress: "10.50.1.10" };
const HOSTS = [
  { hostname: "db01.contoso.internal", ipAddress: "10.50.2.21" },
  { hostname: "web01.contoso.internal", ipAddress: "10.50.2.11" },
];
const METRICS = { cpuPercent: 8, memoryPercent: 35, diskPercent: 22, activeJobs: 0, uptimeSeconds: 7_200 };

const TARGETS = {
  local: { name: "Primary Disk", type: "local", config: { path: "/srv/backup/primary" } },
  smb: {
    name: "Branch Share",
    type: "smb",
    config: { server: "fs02.branch.internal", share: "backups", path: "cadres" },
  },
  s3: {
    name: "Offsite Bucket",
    type: "s3",
    config: {
      endpoint: "https://s3.eu-central-1.amazonaws.com",
      bucket: "contoso-offsite-copies",
      region: "eu-central-1",
      prefix: "policies",
    },
  },
} as const;
type TargetKey = keyof typeof TARGETS;

const POLICY = "Nightly Files";
const FULL = "0 2 * * 0";
const INCREMENTAL = "0 2 * * 1-6";
const SCRIPT = {
  name: "flush-app-cache",
  body: "#!/bin/bash\nset -euo pipefail\nsystemctl reload app-cache\n",
};

/** Clicks `button` (which submits a form to `path`) and returns the POST's response once the next page loaded. */

/** Waits for the flash notice (role=status) with exactly `text`. */
async function notice(page: Page, text: string | RegExp): Promise<void> {
  await page.getByRole("status").filter({ hasText: text }).waitFor();
}

/** Waits until every cron island on the page is hydrated (interactive). */
async function cronIslandsHydrated(page: Page): Promise<void> {
  const all = page.locator("[data-island=CronField]");
  await all.first().waitFor();
  const total = await all.count();
  await page.waitForFunction(
    (n) => document.querySelectorAll("[data-island=CronField][data-hydrated=true]").length === n,
    total,
  );
}

/** The island wrapping the cron input `name`. */
function cronField(page: Page, name: string): Locator {
  return page.locator("[data-island=CronField]", { has: page.locator(`#f-${name}`) });
}

/** The text of the 3-2-1 badge and whether it says met. */
async function badge(page: Page): Promise<{ met: string | null; text: string }> {
  const el = page.locator("[data-testid=badge-321]");
  return { met: await el.getAttribute("data-met"), text: (await el.innerText()).replace(/\s+/g, " ").trim() };
}

/** The cells of each row matching `selector`, whitespace-collapsed. */
async function rowsCells(page: Page, selector: string): Promise<string[][]> {
  const out: string[][] = [];
  for (const row of await page.locator(selector).all()) {
    out.push((await row.locator("td").allInnerTexts()).map((s) => s.replace(/\s+/g, " ").trim()));
  }
  return out;
}

const { test } = scenario("Fabrikam Policies");

/** The world of the original single test, its steps as closures over it (each test runs the ones it needs). */
async function world(ctx: ScenarioContext) {
  const { page, server } = ctx;
  const { orgSecret, apiToken } = ctx.tenant;
  const ADMIN = ctx.tenant.admin;
  const browser = ctx.browser;
  const baseUrl = server.baseUrl;
  const engineClient = new EngineClient(baseUrl);
  // --- The BES and the two agents over the signed protocol.
  const registered = await engineClient.registerBes(orgSecret, ENGINE);
  assert.equal(registered.response.status, 201, JSON.stringify(registered.body));
  const bes: EngineIdentity = registered.identity;
  const besBeat = await engineClient.heartbeat(bes, METRICS);
  assert.equal(besBeat.status, 200, await besBeat.clone().text());
  assert.equal((await besBeat.json()).status, "online");
  const hostIds = new Map<string, string>();
  const agents = new Map<string, EngineIdentity>();
  for (const host of HOSTS) {
    const enrolled = await engineClient.enrollAgent(orgSecret, host);
    assert.equal(enrolled.response.status, 201, JSON.stringify(enrolled.body));
    const beat = await engineClient.heartbeat(enrolled.identity, METRICS);
    const body = await beat.json();
    assert.equal(beat.status, 200, JSON.stringify(body));
    assert.equal(body.status, "online");
    hostIds.set(host.hostname, enrolled.identity.id);
    agents.set(host.hostname, enrolled.identity);
  }

  // --- The three storage targets through the JSON API.
  const api = apiClient(baseUrl, apiToken);
  const targetIds = {} as Record<TargetKey, string>;
  for (const [key, spec] of Object.entries(TARGETS) as Array<[TargetKey, (typeof TARGETS)[TargetKey]]>) {
    const res = await api("POST", "/api/v1/storage", { ...spec, besId: bes.id });
    assert.equal(res.status, 201, `creating ${spec.name}: ${res.text}`);
    targetIds[key] = res.json().id;
  }
  await ctx.signIn();
  let policyId = "";
  const policyPath = () => `/backup/policies/${policyId}`;

  let duplicateNotice = "";
  const hostOption = (hostname: string) => ({
    label: `${hostname} (${HOSTS.find((h) => h.hostname === hostname)!.ipAddress})`,
  });
  const assignmentRows = () => page.locator("[data-testid=assignment-row]");
  const assignmentRow = (p: Page, hostname: string) =>
    p.locator("[data-testid=assignment-row]", {
      has: p.getByRole("link", { name: hostname, exact: true }),
    });
  const assignmentId = async (hostname: string) =>
    (await assignmentRow(page, hostname).locator("form[action$='/state']").getAttribute("action"))!
      .split("/")[3];
  const assign = async (p: Page, hostname: string) => {
    await p.locator("select[name=hostId]").selectOption(hostOption(hostname));
    return await submit(
      p,
      `${policyPath()}/assignments`,
      p.getByRole("button", { name: "Assign", exact: true }),
    );
  };
  const hookForm = () => page.locator(`form[action="${policyPath()}/hooks"]`);
  const addHook = async (fields: {
    type: string;
    template: string;
    scriptName?: string;
    timeout?: string;
    sequence?: string;
    failOnError?: boolean;
  }) => {
    const form = hookForm();
    if (!(await form.isVisible())) await page.locator("#hooks summary", { hasText: "Add Hook" }).click();
    await form.locator("select[name=type]").selectOption(fields.type);
    await form.locator("select[name=template]").selectOption(fields.template);
    if (fields.scriptName !== undefined) {
      await form.locator("input[name=scriptName]").fill(fields.scriptName);
    }
    if (fields.timeout) await form.locator("input[name=timeoutSeconds]").fill(fields.timeout);
    if (fields.sequence) await form.locator("input[name=sequence]").fill(fields.sequence);
    if (fields.failOnError === false) await form.locator("input[name=failOnError]").uncheck();
    const res = await submit(page, `${policyPath()}/hooks`, form.getByRole("button", { name: "Add hook" }));
    assert.equal(res.status(), 303);
    await page.waitForURL((url) => url.pathname === `${policyPath()}/edit`);
  };
  const addReplica = async (target: TargetKey, offsite: boolean) => {
    const form = page.locator(`form[action="${policyPath()}/replicas"]`);
    await form.locator("select[name=targetId]").selectOption(targetIds[target]);
    await form.locator("select[name=kekSource]").selectOption("account");
    assert.ok(await form.locator("input[name=replicateAfterFull]").isChecked());
    assert.ok(await form.locator("input[name=replicateAfterIncremental]").isChecked());
    if (offsite) await form.locator("input[name=isOffsite]").check();
    else assert.equal(await form.locator("input[name=isOffsite]").isChecked(), false);
    const res = await submit(
      page,
      `${policyPath()}/replicas`,
      form.getByRole("button", { name: "Add replica rule" }),
    );
    assert.equal(res.status(), 303);
    await notice(page, "Replica rule added.");
  };
  const replicaRefusal = new RegExp(
    `^Storage target ${TARGETS.smb.name} is used by replica rules of ${POLICY}\\. Remove or reassign those first\\.$`,
  );
  return {
    // the seeded hosts are online and the targets sit on the engine
    s0: async () => {
      await page.goto("/backup/hosts");
      for (const host of HOSTS) {
        const row = page.locator("tr", {
          has: page.getByRole("link", { name: host.hostname, exact: true }),
        });
        await row.waitFor();
        assert.equal((await row.locator(".badge").innerText()).trim(), "online", host.hostname);
      }
      await screenshot(page, "policies-01-hosts-online");
      await page.goto("/backup/storage");
      for (const spec of Object.values(TARGETS)) {
        await page.getByRole("link", { name: spec.name, exact: true }).first().waitFor();
      }
    },
    // the cron island reads a schedule in plain words with its next runs
    s1: async () => {
      await page.goto("/backup/policies/new");
      await page.getByRole("heading", { name: "Add Policy", level: 1 }).waitFor();
      await cronIslandsHydrated(page);
      const full = cronField(page, "fullSchedule");
      const preview = page.locator("[data-testid=cron-preview-fullSchedule]");

      // Six fields: a live error, no reading.
      await page.locator("#f-fullSchedule").fill("* * * * * *");
      await full.locator(".field-error").filter({ hasText: /seconds are not allowed/i }).waitFor();
      assert.equal(await page.locator("#f-fullSchedule").getAttribute("aria-invalid"), "true");
      assert.equal(await preview.count(), 0, "no reading for an invalid expression");
      await screenshot(page, "policies-02-cron-live-error");

      await page.locator("#f-fullSchedule").fill("");
      await full.locator(".field-error").filter({ hasText: /Required/ }).waitFor();

      await page.locator("#f-fullSchedule").fill(FULL);
      await preview.filter({ hasText: "Every Sunday at 02:00" }).waitFor();
      assert.equal(await full.locator(".field-error").count(), 0, "the error is gone");
      assert.equal(await page.locator("#f-fullSchedule").getAttribute("aria-invalid"), null);
      const zone = await page.evaluate(() => Intl.DateTimeFormat().resolvedOptions().timeZone);
      assert.match(await preview.innerText(), new RegExp(`\\(UTC\\)\\. Next runs in ${zone}:`));
      const runs = (await preview.locator("li").allInnerTexts()).map((s) => s.trim());
      const fmt = new Intl.DateTimeFormat("en-GB", {
        timeZone: zone,
        weekday: "short",
        year: "numeric",
        month: "short",
        day: "2-digit",
        hour: "2-digit",
        minute: "2-digit",
      });
      const expected = new Cron(FULL, { paused: true, timezone: "UTC" }).nextRuns(5).map((d) =>
        fmt.format(d)
      );
      assert.deepEqual(runs, expected, "the next five Sundays at 02:00");

      await page.locator("#f-incrementalSchedule").fill(INCREMENTAL);
      await page.locator("[data-testid=cron-preview-incrementalSchedule]")
        .filter({ hasText: "Monday to Saturday at 02:00" }).waitFor();
      assert.equal(
        await page.locator("[data-testid=cron-preview-incrementalSchedule] li").count(),
        5,
      );
      await screenshot(page, "policies-03-cron-preview");
    },
    // bad cron, retention and sample count: 422, field errors, typed values kept
    s2: async () => {
      await page.goto("/backup/policies/new");
      await cronIslandsHydrated(page);
      await page.locator("#f-name").fill(POLICY);
      await page.locator("#f-besId").selectOption({ label: ENGINE.name });
      await page.locator("#f-targetId").selectOption(targetIds.local);
      await page.locator("#f-fullSchedule").fill("* * * * * *");
      await page.locator("#f-incrementalSchedule").fill(INCREMENTAL);
      await page.locator("#f-excludePaths").fill("/var/cache\n/home/*/Downloads");
      await page.locator("#f-retentionDaily").fill("400");
      await page.locator("#f-retentionWeekly").fill("6");
      await page.locator("#f-verifySampleCount").fill("0");
      await page.locator("#f-compression").selectOption("zstd");
      await page.locator("input[name=deduplication]").uncheck();
      await page.locator("input[name=prePatchBackup]").check();
      const res = await submit(
        page,
        "/backup/policies/new",
        page.getByRole("button", { name: "Create policy" }),
      );
      assert.equal(res.status(), 422);
      assert.equal(new URL(page.url()).pathname, "/backup/policies/new", "no redirect");
      await page.getByRole("heading", { name: "Add Policy", level: 1 }).waitFor();

      // The cron error sits in its island, on the invalid input.
      const full = cronField(page, "fullSchedule");
      assert.equal(await full.locator(".field.field--error").count(), 1);
      assert.match(
        await full.locator(".field-error").innerText(),
        /^Must have 5 fields \(minute hour day month weekday\): seconds are not allowed$/,
      );
      assert.equal(await page.locator("#f-fullSchedule").getAttribute("aria-invalid"), "true");
      await assertFieldError(page, "retentionDaily", /^Must be 1–365$/);
      await assertFieldError(page, "verifySampleCount", /^Must be 1–10000$/);
      for (
        const fine of ["name", "retentionWeekly", "retentionMonthly", "timeZone", "incrementalSchedule"]
      ) {
        assert.equal(
          await page.locator(`#f-${fine}`).getAttribute("aria-invalid"),
          null,
          `${fine} is fine`,
        );
      }
      assert.equal(await page.locator(".field--error").count(), 3, "exactly three fields are in error");

      const kept: Record<string, string> = {
        name: POLICY,
        besId: bes.id,
        targetId: targetIds.local,
        backupType: "file",
        fullSchedule: "* * * * * *",
        incrementalSchedule: INCREMENTAL,
        excludePaths: "/var/cache\n/home/*/Downloads",
        retentionDaily: "400",
        retentionWeekly: "6",
        retentionMonthly: "12",
        verifySampleCount: "0",
        compression: "zstd",
      };
      for (const [field, value] of Object.entries(kept)) {
        assert.equal(
          await page.locator(`#f-${field}`).inputValue(),
          value,
          `${field} keeps what was typed`,
        );
      }
      assert.equal(await page.locator("input[name=deduplication]").isChecked(), false);
      assert.equal(await page.locator("input[name=prePatchBackup]").isChecked(), true);
      assert.equal(await page.locator("input[name=verifyAfterBackup]").isChecked(), true);
      await screenshot(page, "policies-04-bad-input-422");

      await page.goto("/backup/policies");
      await page.getByText("No policies yet").waitFor();
    },
    // on the re-rendered form, a corrected cron replaces the server's error
    s3: async () => {
      await page.goto("/backup/policies/new");
      await cronIslandsHydrated(page);
      await page.locator("#f-name").fill(POLICY);
      await page.locator("#f-besId").selectOption({ label: ENGINE.name });
      await page.locator("#f-targetId").selectOption(targetIds.local);
      await page.locator("#f-fullSchedule").fill("* * * * * *");
      const res = await submit(
        page,
        "/backup/policies/new",
        page.getByRole("button", { name: "Create policy" }),
      );
      assert.equal(res.status(), 422);
      await cronIslandsHydrated(page);
      const full = cronField(page, "fullSchedule");
      await page.locator("#f-fullSchedule").fill(FULL);
      await page.locator("[data-testid=cron-preview-fullSchedule]")
        .filter({ hasText: "Every Sunday at 02:00" }).waitFor();
      await screenshot(page, "policies-05-corrected-cron");
      assert.equal(
        await full.locator(".field-error").count(),
        0,
        "the stale server error 'seconds are not allowed' must not stay next to a valid reading " +
          "(islands/CronField.tsx: `props.error ?? …` keeps the server's error after the value changed)",
      );
      assert.equal(await page.locator("#f-fullSchedule").getAttribute("aria-invalid"), null);
    },
    // a file policy on the Local target: derived RPO of 30 h, 3-2-1 not met
    s4: async () => {
      await page.goto("/backup/policies/new");
      await cronIslandsHydrated(page);
      await page.locator("#f-name").fill(POLICY);
      await page.locator("#f-besId").selectOption({ label: ENGINE.name });
      await page.locator("#f-targetId").selectOption(targetIds.local);
      await page.locator("#f-backupType").selectOption("file");
      await page.locator("#f-fullSchedule").fill(FULL);
      await page.locator("#f-incrementalSchedule").fill(INCREMENTAL);
      assert.equal(await page.locator("#f-rpoHours").inputValue(), "", "RPO left empty: derived");
      await screenshot(page, "policies-06-form-filled");
      const res = await submit(
        page,
        "/backup/policies/new",
        page.getByRole("button", { name: "Create policy" }),
      );
      assert.equal(res.status(), 303);
      await page.waitForURL((url) => /^\/backup\/policies\/\w+$/.test(url.pathname));
      policyId = new URL(page.url()).pathname.split("/").pop()!;
      assert.notEqual(policyId, "new");
      await page.getByRole("heading", { name: POLICY, level: 1 }).waitFor();
      await notice(page, `Policy ${POLICY} created.`);
      assert.match(await page.locator(".page-header .subtitle").innerText(), /^file policy · created /);

      const facts = (await page.locator("section.panel", {
        has: page.getByRole("heading", { name: "Where and when" }),
      }).innerText()).replace(/[ \t]+/g, " ");
      assert.match(facts, /BES\s+bes-main/);
      assert.match(facts, new RegExp(`Storage target\\s+${TARGETS.local.name}`));
      assert.match(facts, /Full\s+Every Sunday at 02:00 0 2 \* \* 0 \(UTC\)/);
      assert.match(facts, /Incremental\s+Monday to Saturday at 02:00 0 2 \* \* 1-6/);
      assert.match(facts, /RPO\s+30 h \(derived from the schedules\)/);

      const b = await badge(page);
      assert.equal(b.met, "false");
      assert.equal(
        b.text,
        "3-2-1 not met 1 copy, 1 media (Local disk), 0 offsite — needs 2 more copies, a second media type, " +
          "an offsite copy",
      );
      await page.getByText("No host is assigned: this policy backs up nothing yet.").waitFor();
      assert.equal(await page.locator("[data-testid=replica-row]").count(), 0);
      await screenshot(page, "policies-07-created");

      await page.goto("/backup/policies");
      const row = page.locator("table.table tbody tr", {
        has: page.getByRole("link", { name: POLICY, exact: true }),
      });
      const cells = (await row.locator("td").allInnerTexts()).map((s) => s.trim());
      assert.deepEqual(cells, [
        POLICY,
        "file",
        "enabled",
        `${ENGINE.name} → ${TARGETS.local.name}`,
        "Every Sunday at 02:00",
        "Monday to Saturday at 02:00",
        "30 h",
        "7/4/12",
      ]);
      await screenshot(page, "policies-08-list");
    },
    // two hosts are assigned; a second assignment of one is refused
    s5: async () => {
      await page.goto(policyPath());
      // A second tab opened now keeps offering both hosts after they are assigned in the first.
      const stale = await browser!.context.newPage();
      try {
        await stale.goto(policyPath());
        await stale.locator("select[name=hostId]").waitFor();

        for (const [i, host] of HOSTS.entries()) {
          const res = await assign(page, host.hostname);
          assert.equal(res.status(), 303);
          await notice(page, "Host assigned.");
          assert.equal(await assignmentRows().count(), i + 1);
        }
        await page.getByRole("heading", { name: "Hosts (2 assigned)" }).waitFor();
        const rows = await rowsCells(page, "[data-testid=assignment-row]");
        assert.deepEqual(rows.map((r) => [r[0], r[1]]), HOSTS.map((h) => [h.hostname, "active"]));
        assert.deepEqual(
          await page.locator("select[name=hostId] option").allInnerTexts(),
          ["Assign a host…"],
          "no host is left to assign",
        );
        await screenshot(page, "policies-09-two-hosts");

        const res = await assign(stale, HOSTS[0].hostname);
        assert.equal(res.status(), 303);
        const refused = stale.getByRole("status").filter({ hasText: /^Not assigned: / });
        await refused.waitFor();
        duplicateNotice = (await refused.innerText()).trim();
        assert.match(duplicateNotice, /already assigned/);
        await screenshot(stale, "policies-10-duplicate-refused");
        assert.equal(await stale.locator("[data-testid=assignment-row]").count(), 2, "no duplicate row");
      } finally {
        await stale.close();
      }
    },
    // the refusal names the host that is already assigned
    // deno-lint-ignore require-await
    s6: async () => {
      assert.ok(
        duplicateNotice.includes(HOSTS[0].hostname),
        `the notice should say which host is already assigned, got "${duplicateNotice}" ` +
          "(routes/policy_sections.tsx problem() prefers the field message over the error's sentence)",
      );
    },
    // an archived host assigned again is reactivated, not duplicated
    s7: async () => {
      await page.goto(policyPath());
      const host = HOSTS[0].hostname;
      const before = await assignmentId(host);
      const row = assignmentRow(page, host);
      await row.locator("select[name=state]").selectOption("archived");
      const set = await submit(
        page,
        `/backup/assignments/${before}/state`,
        row.getByRole("button", { name: "Set" }),
      );
      assert.equal(set.status(), 303);
      await notice(page, "Assignment set to archived.");
      await page.getByRole("heading", { name: "Hosts (1 assigned)" }).waitFor();
      assert.equal((await assignmentRow(page, host).locator("td").nth(1).innerText()).trim(), "archived");
      assert.deepEqual(
        await page.locator("select[name=hostId] option").allInnerTexts(),
        ["Assign a host…", hostOption(host).label],
        "the archived host is offered again",
      );
      await screenshot(page, "policies-11-archived");

      const res = await assign(page, host);
      assert.equal(res.status(), 303);
      await notice(page, "Host assigned again (its archived assignment was reactivated).");
      await page.getByRole("heading", { name: "Hosts (2 assigned)" }).waitFor();
      assert.equal(await assignmentRows().count(), 2, "still two rows");
      const rows = await rowsCells(page, "[data-testid=assignment-row]");
      assert.deepEqual(rows.map((r) => [r[0], r[1]]), HOSTS.map((h) => [h.hostname, "active"]));
      assert.equal(await assignmentId(host), before, "the same assignment record is active again");
      await screenshot(page, "policies-12-reactivated");

      await page.goto(`/backup/hosts/${hostIds.get(host)}`);
      const policies = page.locator("section.panel", {
        has: page.getByRole("heading", { name: "Policies (1)" }),
      });
      assert.match((await policies.innerText()).replace(/\s+/g, " "), new RegExp(`${POLICY} · active`));
      const objects = page.locator("section.panel", {
        has: page.getByRole("heading", { name: "Protected objects and last backups" }),
      });
      assert.equal(await objects.locator("tbody tr").count(), 1, "one protected object, not two");
      assert.match((await objects.locator("tbody tr").innerText()).replace(/\s+/g, " "), /active\s+30 h/);
      await screenshot(page, "policies-13-host-detail");
    },
    // a library script is added at /backup/scripts
    s8: async () => {
      await page.goto("/backup/scripts");
      await page.getByRole("heading", { name: "Scripts", level: 1 }).waitFor();
      await page.locator("#f-name").fill(SCRIPT.name);
      await page.locator("#f-orgId").selectOption({ label: ADMIN.orgName });
      await page.locator("#f-interpreter").selectOption("bash");
      await page.locator("#f-body").fill(SCRIPT.body);
      const res = await submit(page, "/backup/scripts", page.getByRole("button", { name: "Add script" }));
      assert.equal(res.status(), 303);
      await notice(page, `Script ${SCRIPT.name} added.`);
      const row = page.locator("table.table tbody tr", { hasText: SCRIPT.name });
      const cells = (await row.locator("td").allInnerTexts()).map((s) => s.trim());
      assert.equal(cells[0], SCRIPT.name);
      assert.equal(cells[1], "Bash");
      assert.equal(cells[2], ADMIN.orgName);
      assert.equal(cells[3], String(SCRIPT.body.split("\n").length));
      await screenshot(page, "policies-14-script-added");
    },
    // 7. App Hooks: a MySQL template hook and a library script hook, in execution order
    s9: async () => {
      await page.goto(`${policyPath()}/edit`);
      await page.getByRole("heading", { name: `Edit ${POLICY}`, level: 1 }).waitFor();
      const section = page.locator("details#hooks");
      assert.equal((await section.locator("summary").first().innerText()).trim(), "7. App Hooks (0)");
      await section.getByText("No hooks: backups are crash-consistent only.").waitFor();
      assert.deepEqual(
        await page.locator(`datalist#scripts-${policyId} option`).evaluateAll((os) =>
          os.map((o) => (o as HTMLOptionElement).value)
        ),
        [SCRIPT.name],
        "the script library is offered in the datalist",
      );
      // The hooks live outside the policy form: adding one must not submit the policy.
      assert.equal(await page.locator("form.form details#hooks").count(), 0);

      await addHook({ type: "pre_backup", template: "mysql", timeout: "600" });
      await notice(page, "Hook added.");
      // The custom hook gets a lower sequence: types still run in order (pre_backup before post_backup).
      await addHook({
        type: "post_backup",
        template: "",
        scriptName: SCRIPT.name,
        sequence: "10",
        failOnError: false,
      });
      await notice(page, "Hook added.");
      assert.equal((await section.locator("summary").first().innerText()).trim(), "7. App Hooks (2)");
      const rows = await rowsCells(page, "[data-testid=hook-row]");
      assert.equal(rows.length, 2);
      assert.deepEqual(rows[0].slice(0, 6), [
        "Pre-backup",
        "MySQL / MariaDB",
        "—",
        "600 s",
        "100",
        "yes",
      ]);
      assert.deepEqual(rows[1].slice(0, 6), [
        "Post-backup",
        "Custom script",
        SCRIPT.name,
        "300 s",
        "10",
        "no",
      ]);
      await screenshot(page, "policies-15-hooks");

      await page.goto(policyPath());
      const summary = page.locator("section.panel", {
        has: page.getByRole("heading", { name: "App hooks (2)" }),
      });
      const items = (await summary.locator("ol li").allInnerTexts()).map((s) =>
        s.replace(/\s+/g, " ").trim()
      );
      assert.deepEqual(items, [
        "Pre-backup MySQL / MariaDB · 600 s · fails the backup on error",
        `Post-backup ${SCRIPT.name} · 300 s`,
      ]);
    },
    // a hook is deleted through its confirmation page
    s10: async () => {
      await page.goto(`${policyPath()}/edit`);
      // (Each row's hidden edit form lists every template, so pick the row by its Template cell.)
      const mysqlRow = page.locator("[data-testid=hook-row]", {
        has: page.locator("td:nth-child(2)", { hasText: /^MySQL \/ MariaDB$/ }),
      });
      assert.equal(await mysqlRow.count(), 1);
      const href = (await mysqlRow.getByRole("link", { name: "Delete hook" }).getAttribute("href"))!;
      assert.match(href, /^\/backup\/hooks\/\w+\/delete$/);
      await Promise.all([
        page.waitForURL((url) => url.pathname === href),
        mysqlRow.getByRole("link", { name: "Delete hook" }).click(),
      ]);
      await page.getByRole("heading", { name: "Delete this Pre-backup hook?", level: 1 }).waitFor();
      await screenshot(page, "policies-16-hook-delete-confirm");
      const res = await submit(page, href, page.getByRole("button", { name: "Delete hook" }));
      assert.equal(res.status(), 303);
      await page.waitForURL((url) => url.pathname === `${policyPath()}/edit`);
      await notice(page, "Hook deleted.");
      const rows = await rowsCells(page, "[data-testid=hook-row]");
      assert.equal(rows.length, 1);
      assert.deepEqual(rows[0].slice(0, 3), ["Post-backup", "Custom script", SCRIPT.name]);
      assert.equal(
        (await page.locator("details#hooks summary").first().innerText()).trim(),
        "7. App Hooks (1)",
      );
      await screenshot(page, "policies-17-hook-deleted");
      const gone = await page.goto(href);
      assert.equal(gone?.status(), 404, "the deleted hook's page is gone");
    },
    // a replica on the SMB share (not offsite) still misses 3-2-1
    s11: async () => {
      await page.goto(policyPath());
      const options = await page.locator(
        `form[action="${policyPath()}/replicas"] select[name=targetId] option`,
      )
        .allInnerTexts();
      assert.deepEqual(
        options,
        ["Replicate to…", TARGETS.smb.name, TARGETS.s3.name],
        "the primary target is not offered",
      );
      await addReplica("smb", false);
      const rows = await rowsCells(page, "[data-testid=replica-row]");
      assert.equal(rows.length, 1);
      assert.deepEqual(rows[0].slice(0, 6), [
        `${TARGETS.smb.name} (SMB)`,
        ENGINE.name,
        "Account key",
        "yes",
        "yes",
        "—",
      ]);
      const b = await badge(page);
      assert.equal(b.met, "false");
      assert.equal(
        b.text,
        "3-2-1 not met 2 copies, 2 media (Local disk, Network share), 0 offsite — needs 1 more copy, " +
          "an offsite copy",
      );
      await screenshot(page, "policies-18-replica-smb");
    },
    // an offsite replica on S3 meets 3-2-1; /backup/replicas lists both rules
    s12: async () => {
      await page.goto(policyPath());
      await addReplica("s3", true);
      const rows = await rowsCells(page, "[data-testid=replica-row]");
      assert.equal(rows.length, 2);
      assert.deepEqual(rows[1].slice(0, 6), [
        `${TARGETS.s3.name} (S3)`,
        ENGINE.name,
        "Account key",
        "yes",
        "yes",
        "offsite",
      ]);
      const b = await badge(page);
      assert.equal(b.met, "true");
      assert.equal(
        b.text,
        "3-2-1 met 3 copies, 3 media (Local disk, Network share, Object storage), 1 offsite",
      );
      assert.equal(
        await page.locator(`form[action="${policyPath()}/replicas"]`).count(),
        0,
        "no empty 'Replicate to…' form once every other target has a rule",
      );
      assert.ok(
        await page.getByText("No other storage target of this account is left to replicate to").isVisible(),
      );
      await screenshot(page, "policies-19-321-met");

      await page.goto("/backup/replicas");
      await page.getByRole("heading", { name: "Replicas", level: 1 }).waitFor();
      const listed = await rowsCells(page, "table.table tbody tr");
      assert.equal(listed.length, 2);
      const byTarget = new Map(listed.map((r) => [r[1], r]));
      assert.deepEqual(byTarget.get(`${TARGETS.smb.name} (SMB)`)?.slice(0, 7), [
        POLICY,
        `${TARGETS.smb.name} (SMB)`,
        ENGINE.name,
        "Account key",
        "yes",
        "yes",
        "—",
      ]);
      assert.deepEqual(byTarget.get(`${TARGETS.s3.name} (S3)`)?.slice(0, 7), [
        POLICY,
        `${TARGETS.s3.name} (S3)`,
        ENGINE.name,
        "Account key",
        "yes",
        "yes",
        "offsite",
      ]);
      assert.equal(
        await page.locator("table.table tbody tr").first().getByRole("link", { name: POLICY }).getAttribute(
          "href",
        ),
        `${policyPath()}#replicas`,
      );
      await screenshot(page, "policies-20-replicas-list");
    },
    // deleting the SMB replica target is refused, naming the policy's replica rule
    s13: async () => {
      await page.goto(`/backup/storage/${targetIds.smb}`);
      await Promise.all([
        page.waitForURL((url) => url.pathname === `/backup/storage/${targetIds.smb}/delete`),
        page.getByRole("link", { name: "Delete…" }).click(),
      ]);
      await page.getByRole("heading", { name: `Delete ${TARGETS.smb.name}?`, level: 1 }).waitFor();
      const button = page.getByRole("button", { name: "Delete storage target" });
      if (await button.count()) {
        const res = await submit(page, `/backup/storage/${targetIds.smb}/delete`, button);
        assert.equal(res.status(), 409);
        await page.getByRole("heading", { name: `Cannot delete ${TARGETS.smb.name}`, level: 1 })
          .waitFor();
        assert.match((await page.getByRole("alert").innerText()).trim(), replicaRefusal);
      } else {
        // (Once the confirmation page refuses up front, the refusal is right there.)
        assert.match(await page.locator("main").innerText(), new RegExp(`replica rules? of ${POLICY}`));
      }
      await screenshot(page, "policies-21-smb-delete-refused");

      const viaApi = await api("DELETE", `/api/v1/storage/${targetIds.smb}`);
      assert.equal(viaApi.status, 409, viaApi.text);
      assert.match(viaApi.text, new RegExp(`replica rules of ${POLICY}`));

      const still = await page.goto(`/backup/storage/${targetIds.smb}`);
      assert.equal(still?.status(), 200, "the SMB target is still there");
      await page.goto(policyPath());
      assert.equal(await page.locator("[data-testid=replica-row]").count(), 2);
      assert.equal((await badge(page)).met, "true");
    },
    // the target's page and delete confirmation say up front a replica rule uses it
    s14: async () => {
      const usedBy = new RegExp(`replica rules? of ${POLICY}`);
      await page.goto(`/backup/storage/${targetIds.smb}`);
      const danger = (await page.locator("section.panel--danger").innerText()).replace(/\s+/g, " ");
      await page.goto(`/backup/storage/${targetIds.smb}/delete`);
      await page.getByRole("heading", { name: `Delete ${TARGETS.smb.name}?`, level: 1 }).waitFor();
      const confirm = (await page.locator("main").innerText()).replace(/\s+/g, " ");
      const deleteButtons = await page.getByRole("button", { name: "Delete storage target" }).count();
      assert.ok(
        usedBy.test(confirm) && deleteButtons === 0,
        "the confirmation page should name the policy's replica rule and offer no delete button, as it " +
          "does for policies using the target as their primary (routes/storage.tsx GET /:targetId/delete " +
          `reads only listPoliciesByTarget); got: ${confirm}`,
      );
      assert.ok(
        usedBy.test(danger),
        `the target page's delete panel should name the replica rule; got: ${danger}`,
      );
    },
    // the derived RPO follows the policy's time zone (DST nights are 25 h apart)
    s15: async () => {
      await page.goto(`${policyPath()}/edit`);
      await page.locator("#f-timeZone").fill("Europe/Berlin");
      const res = await submit(
        page,
        `${policyPath()}/edit`,
        page.getByRole("button", { name: "Save policy" }),
      );
      assert.equal(res.status(), 303);
      await notice(page, `Saved ${POLICY}.`);
      const facts = (await page.locator("section.panel", {
        has: page.getByRole("heading", { name: "Where and when" }),
      }).innerText()).replace(/[ \t]+/g, " ");
      assert.match(facts, /Full\s+Every Sunday at 02:00 0 2 \* \* 0 \(Europe\/Berlin\)/);
      await screenshot(page, "policies-22-berlin-rpo");
      // 02:00 Berlin time on consecutive days is 25 h apart across the end of summer time: 25 + 6 = 31.
      assert.match(
        facts,
        /RPO\s+31 h \(derived from the schedules\)/,
        "domain/policies.ts rpoOf() derives the RPO in UTC (deriveRpoHours gets no time zone)",
      );
    },
    // pre-patch: the agent's request queues a run; its result shows on the page with hook output and retention
    s16: async () => {
      await page.goto(`${policyPath()}/edit`);
      await page.locator('input[name="prePatchBackup"]').check();
      const saved = await submit(
        page,
        `${policyPath()}/edit`,
        page.getByRole("button", { name: "Save policy" }),
      );
      assert.equal(saved.status(), 303);
      const db01 = agents.get(HOSTS[0].hostname)!;
      const asked = await engineClient.post(db01, "/api/agent/v1/pre-patch", { reason: "apt upgrade" });
      assert.equal(asked.status, 202, await asked.clone().text());
      const { runs } = await asked.json();
      assert.equal(runs.length, 1, "one active assignment of db01 opts in");
      await page.goto(policyPath()); // not "#runs": a hash-only change would not reload
      const row = page.locator('[data-testid="run-row"]', { hasText: "incremental (pre-patch)" });
      assert.match(await row.innerText(), /pending/);

      const claimed = await engineClient.post(db01, "/api/agent/v1/jobs/claim", { max: 10 });
      assert.equal(claimed.status, 200);
      const job = (await claimed.json()).jobs.find((j: { id: string }) => j.id === runs[0].jobId);
      assert.ok(job, "the pre-patch job is claimable by its agent");
      assert.equal(job.priority, "high");
      const hooks = job.payload.hooks as Array<{ id: string; type: string }>;
      assert.ok(hooks.length > 0, "the policy's hooks travel in the payload");
      const started = new Date();
      const ended = new Date(started.getTime() + 90_000);
      const result = await engineClient.post(db01, `/api/agent/v1/jobs/${job.id}/result`, {
        status: "success",
        startedAt: started.toISOString(),
        endedAt: ended.toISOString(),
        bytesTransferred: 3 * 1024 ** 2,
        protectedBytes: 2 * 1024 ** 3,
        hookOutput: hooks.map((h) => ({
          hookId: h.id,
          type: h.type,
          exitCode: 0,
          output: `${h.type}: ok`,
        })),
        output: {
          restorePoint: {
            id: "agent-rp-1",
            chainId: "agent-chain-1",
            type: "incremental",
            parentId: null,
            sizeBytes: 3 * 1024 ** 2,
            fileCount: 42,
            completedAt: ended.toISOString(),
          },
        },
      });
      assert.equal(result.status, 200, await result.clone().text());

      await page.goto(policyPath()); // not "#runs": a hash-only change would not reload
      const done = (await row.innerText()).replace(/\s+/g, " ");
      assert.match(done, /success/);
      assert.match(done, /3\.0 MB/);
      const hookRow = page.locator('[data-testid="run-hooks"]').first();
      assert.match(await hookRow.innerText(), new RegExp(`Hook output \\(${hooks.length}\\)`));
      await hookRow.getByText(/Hook output/).click();
      assert.match(await hookRow.locator('[data-testid="hook-output"]').innerText(), /: ok/);
      const retention = page.locator("#retention");
      const obj = (await retention.locator('[data-testid="retention-object"]', { hasText: HOSTS[0].hostname })
        .innerText()).replace(/\s+/g, " ");
      assert.match(obj, /keep 1, expire 0/);
      await screenshot(page, "policies-23-pre-patch-run-and-retention");
    },
  };
}

type World = Awaited<ReturnType<typeof world>>;
type StepOf<K> = K extends `s${infer N extends number}` ? N : never;
/** The numbers of the world's steps (`s0` … `s16`). */
type Step = StepOf<keyof World>;

/** Builds this test's world and runs its steps `s<n>` in order: the check, after the steps it builds on. */
async function walk(ctx: ScenarioContext, ...steps: Step[]): Promise<void> {
  const w = await world(ctx);
  for (const n of steps) await w[`s${n}`]();
}

/** The steps `from` to `to`, both included. */
function through(from: Step, to: Step): Step[] {
  return Array.from({ length: to - from + 1 }, (_, i) => (from + i) as Step);
}

test("policies: the seeded hosts are online and the targets sit on the engine", (ctx) => walk(ctx, 0));

test("policies: the cron island reads a schedule in plain words with its next runs", (ctx) => walk(ctx, 1));

test("policies: bad cron, retention and sample count: 422, field errors, typed values kept; on the re-rendered form, a corrected cron replaces the server's error", (ctx) =>
  walk(ctx, 2, 3));

test("policies: a file policy on the Local target: derived RPO of 30 h, 3-2-1 not met; two hosts are assigned; a second assignment of one is refused; the refusal names the host that is already assigned; an archived host assigned again is reactivated, not duplicated", (ctx) =>
  walk(ctx, 4, 5, 6, 7));

test("policies: a library script is added at /backup/scripts; 7. App Hooks: a MySQL template hook and a library script hook, in execution order; a hook is deleted through its confirmation page", (ctx) =>
  walk(ctx, 4, 8, 9, 10));

test("policies: a replica on the SMB share (not offsite) still misses 3-2-1; an offsite replica on S3 meets 3-2-1; /backup/replicas lists both rules; deleting the SMB replica target is refused, naming the policy's replica rule; the target's page and delete confirmation say up front a replica rule uses it", (ctx) =>
  walk(ctx, 4, 11, 12, 13, 14));

test("policies: a file policy on the Local target: derived RPO of 30 h, 3-2-1 not met; the derived RPO follows the policy's time zone (DST nights are 25 h apart)", (ctx) =>
  walk(ctx, 4, 15));

test("policies: pre-patch: the agent's request queues a run; its result shows on the page with hook output and retention (after the policy, hosts, hooks, replicas and time zone steps)", (ctx) =>
  walk(ctx, ...through(4, 16)));
