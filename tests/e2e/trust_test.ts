/**
 * Issue 14's pages in the browser, as an operator drives them, on a server seeded through the CLI with
 * one simulated BES and two agents (web01 relay-capable) talking the real signed engine protocol, a
 * policy and two storage targets made through the JSON API: Run now (started, then refused while a run
 * is pending), storage checks on a healthy target, a replica rule from Backup > Replicas with its
 * replication status on the policy and restore point pages, a host decommission with its typed
 * confirmation, a garbage page cursor, and the consistency check on Health > Database.
 * Each test stands alone on the file's shared server (scenario.ts), in its own tenant, running the steps
 * it checks and the ones they build on.
 */
import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { EngineClient, type EngineIdentity } from "../../tools/engine_client.ts";
import { enrollOnlineAgent, registerOnlineBes, screenshot, signOut, waitFor } from "./harness.ts";
import { scenario, type ScenarioContext } from "./scenario.ts";
import { assignOnPolicyPage, reportFullBackup, submit } from "./helpers.ts";

const ENGINE = { name: "bes-trust", hostname: "bes-trust.backup.internal", ipAddress: "10.60.1.10" };
const DB01 = { hostname: "db01.contoso.internal", ipAddress: "10.60.2.21", relay: false };
const WEB01 = { hostname: "web01.contoso.internal", ipAddress: "10.60.2.11", relay: true };
const METRICS = { cpuPercent: 8, memoryPercent: 35, diskPercent: 22, activeJobs: 0, uptimeSeconds: 7_200 };
const TIB = 1024 ** 4;
const POLICY = "Nightly Trust Files";
const PRIMARY = "Primary Disk";
const OFFSITE = "Offsite Bucket";

/** Clicks `button` (which submits a form to `path`) and returns the POST's response once the next page loaded. */

/** The flash notice's text (the layout's `p.notice[role=status]`). */
async function flash(page: Page): Promise<string> {
  const el = page.locator("main p.notice[role=status]").first();
  await el.waitFor();
  return (await el.innerText()).replace(/\s+/g, " ").trim();
}

/** The Run now panel's refusal (the page rendered again with the reason). */
async function refusal(page: Page): Promise<string> {
  const el = page.locator("section#run-now [data-testid=run-now-refused]");
  await el.waitFor();
  return (await el.innerText()).replace(/\s+/g, " ").trim();
}

/** The cells of each row matching `selector`, whitespace-collapsed. */
async function rowsCells(page: Page, selector: string): Promise<string[][]> {
  const out: string[][] = [];
  for (const row of await page.locator(selector).all()) {
    out.push((await row.locator("td").allInnerTexts()).map((s) => s.replace(/\s+/g, " ").trim()));
  }
  return out;
}

const { test } = scenario("Contoso Trust");

/** The world of the original single test, its steps as closures over it (each test runs the ones it needs). */
async function world(ctx: ScenarioContext) {
  const { page, api, server } = ctx;
  const { orgSecret } = ctx.tenant;
  const ADMIN = ctx.tenant.admin;
  const engineClient = new EngineClient(server.baseUrl);
  const bes = await registerOnlineBes(engineClient, orgSecret, ENGINE, METRICS);
  const agents = new Map<string, EngineIdentity>();
  for (const host of [DB01, WEB01]) {
    agents.set(host.hostname, await enrollOnlineAgent(engineClient, orgSecret, host, METRICS));
  }
  const targetIds: Record<string, string> = {};
  for (
    const spec of [
      { name: PRIMARY, type: "local", config: { path: "/srv/backup/trust" } },
      {
        name: OFFSITE,
        type: "s3",
        config: {
          endpoint: "https://s3.eu-central-1.amazonaws.com",
          bucket: "contoso-trust-copies",
          region: "eu-central-1",
          prefix: "trust",
        },
      },
    ]
  ) {
    const res = await api("POST", "/api/v1/storage", { ...spec, besId: bes.id });
    assert.equal(res.status, 201, `creating ${spec.name}: ${res.text}`);
    targetIds[spec.name] = res.json().id;
  }
  const created = await api("POST", "/api/v1/policies", {
    name: POLICY,
    besId: bes.id,
    targetId: targetIds[PRIMARY],
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    incrementalSchedule: "0 2 * * 1-6",
  });
  assert.equal(created.status, 201, created.text);
  const policyId: string = created.json().id;
  assert.equal(created.json().archiveOnHostDeactivation, true, "the guide's default");
  const policyPath = `/backup/policies/${policyId}`;

  /** Keeps every engine online (the page refuses Run now with an offline BES); the primary at 30 %. */
  let decommissioned = new Set<string>();
  const beat = async () => {
    const used = Math.round(4 * TIB * 0.3);
    const res = await engineClient.heartbeat(bes, METRICS, [
      { targetId: targetIds[PRIMARY], totalBytes: 4 * TIB, usedBytes: used, freeBytes: 4 * TIB - used },
    ]);
    assert.equal(res.status, 200, await res.text());
    for (const [hostname, agent] of agents) {
      if (decommissioned.has(hostname)) continue;
      const r = await engineClient.heartbeat(agent, METRICS);
      assert.equal(r.status, 200, await r.text());
    }
  };
  const claimKind = (who: EngineIdentity, kind: string) =>
    waitFor(
      `a ${kind} job for ${who.kind} ${who.id}`,
      async () => {
        const res = await engineClient.post(who, `/api/${who.kind}/v1/jobs/claim`, { max: 10 });
        assert.equal(res.status, 200, await res.clone().text());
        const jobs = (await res.json()).jobs as Array<
          { id: string; kind: string; payload: Record<string, unknown> }
        >;
        return jobs.find((j) => j.kind === kind);
      },
      20_000,
      200,
    );
  await beat();
  await ctx.signIn();

  let pointPath = "";
  return {
    // seed: both hosts assigned on the policy page
    s0: async () => {
      await assignOnPolicyPage(page, policyPath, [DB01.hostname, WEB01.hostname]);
      assert.equal(await page.locator("[data-testid=assignment-row]").count(), 2);
      await page.getByRole("heading", { name: "Hosts (2 assigned)" }).waitFor();
    },
    // 1. Run now: a full on every active host, then refused while one is pending
    s1: async () => {
      await beat();
      await page.goto(policyPath);
      const panel = page.locator("section#run-now");
      await panel.getByRole("heading", { name: "Run now" }).waitFor();
      assert.equal(await panel.locator("[data-testid=run-now-blocked]").count(), 0, "nothing blocks it");
      assert.deepEqual(
        (await panel.locator("label.choice").allInnerTexts()).map((s) => s.trim()).sort(),
        [DB01.hostname, WEB01.hostname],
        "the active hosts are offered",
      );
      await page.getByText("No runs yet").waitFor();
      await panel.getByLabel("Kind").selectOption({ label: "Full" });
      await screenshot(page, "trust-01-run-now-panel");

      const res = await submit(
        page,
        `${policyPath}/run`,
        panel.getByRole("button", { name: "Run now" }),
      );
      assert.equal(res.status(), 303);
      assert.match(
        await flash(page),
        /^Started 2 full runs on (db01|web01)\.contoso\.internal, (db01|web01)\.contoso\.internal: 2 queued\.$/,
      );
      const runs = await rowsCells(page, "[data-testid=run-row]");
      assert.equal(runs.length, 2, JSON.stringify(runs));
      assert.deepEqual(runs.map((r) => r[1]).sort(), [DB01.hostname, WEB01.hostname]);
      for (const r of runs) {
        assert.equal(r[2], "full (manual)");
        assert.equal(r[3], "pending");
      }
      await screenshot(page, "trust-02-run-now-started");

      // Again on db01 alone: refused with the reason, nothing new.
      await page.locator("section#run-now label.choice", { hasText: DB01.hostname }).locator("input")
        .check();
      await page.locator("section#run-now").getByLabel("Kind").selectOption({ label: "Full" });
      const again = await submit(
        page,
        `${policyPath}/run`,
        page.locator("section#run-now").getByRole("button", { name: "Run now" }),
      );
      // Refused: the page again (409) with the reason, db01 still ticked and Full still chosen.
      assert.equal(again.status(), 409);
      assert.match(
        await refusal(page),
        new RegExp(
          `^Not run: A full run of policy ${POLICY} is already pending on ${
            DB01.hostname.replaceAll(".", "\\.")
          } \\(run \\w+\\): wait for it to finish\\.$`,
        ),
      );
      assert.equal(await page.locator("[data-testid=run-row]").count(), 2, "no run was created");
      assert.ok(
        await page.locator("section#run-now label.choice", { hasText: DB01.hostname }).locator("input")
          .isChecked(),
        "db01 is still ticked",
      );
      assert.equal(await page.locator("section#run-now").getByLabel("Kind").inputValue(), "full");
      await screenshot(page, "trust-03-run-now-refused-one-host");

      // And on every host: the reason names both.
      await page.locator("section#run-now label.choice", { hasText: DB01.hostname }).locator("input")
        .uncheck();
      await page.locator("section#run-now").getByLabel("Kind").selectOption({ label: "Incremental" });
      await submit(
        page,
        `${policyPath}/run`,
        page.locator("section#run-now").getByRole("button", { name: "Run now" }),
      );
      assert.match(
        await refusal(page),
        /^Not run: Runs of policy .* are already pending or running on .*(db01.*web01|web01.*db01).*: wait for them to finish, or choose other hosts\.$/,
      );
      assert.equal(await page.locator("[data-testid=run-row]").count(), 2, "still no new run");
      const listed = await api("GET", `/api/v1/runs?policyId=${policyId}`);
      assert.equal(listed.status, 200, listed.text);
      assert.equal(listed.json().values.length, 2, "the API agrees: two runs");
    },
    // 2. storage checks on a healthy target: both queued, latest result shown
    s2: async () => {
      await beat();
      const path = `/backup/storage/${targetIds[PRIMARY]}`;
      await page.goto(path);
      await page.getByRole("heading", { name: PRIMARY, level: 1 }).waitFor();
      assert.equal((await page.locator(".page-header .badge").first().innerText()).trim(), "healthy");
      const checks = page.locator("section#checks");
      await checks.getByRole("heading", { name: "Storage checks" }).waitFor();
      for (const check of ["health_check", "verify"]) {
        const cells = (await checks.locator(`tr[data-check=${check}] td`).allInnerTexts()).map((s) =>
          s.trim()
        );
        assert.equal(cells[1], "never", `${check} never requested yet`);
        assert.equal(cells[3], "—");
      }
      await screenshot(page, "trust-04-storage-checks-never");

      const health = await submit(
        page,
        `${path}/health-check`,
        checks.getByRole("button", { name: "Health check" }),
      );
      assert.equal(health.status(), 303);
      // The relay-capable host of the account is preferred.
      assert.match(
        await flash(page),
        new RegExp(
          `^Queued the health check on ${WEB01.hostname.replaceAll(".", "\\.")} \\(job \\w+\\)\\.$`,
        ),
      );
      const verify = await submit(
        page,
        `${path}/verify`,
        page.locator("section#checks").getByRole("button", { name: "Integrity verify" }),
      );
      assert.equal(verify.status(), 303);
      assert.match(
        await flash(page),
        new RegExp(`^Queued the integrity verification on ${ENGINE.name} \\(job \\w+\\)\\.$`),
      );
      const rows = page.locator("section#checks");
      const healthCells = (await rows.locator("tr[data-check=health_check] td").allInnerTexts()).map((s) =>
        s.replace(/\s+/g, " ").trim()
      );
      assert.match(healthCells[1], new RegExp(`by ${ADMIN.name}|by ${ADMIN.email}`));
      assert.equal(healthCells[2], WEB01.hostname);
      assert.equal(healthCells[3], "queued");
      assert.equal(healthCells[4], "—", "no result yet");
      const verifyCells = (await rows.locator("tr[data-check=verify] td").allInnerTexts()).map((s) =>
        s.replace(/\s+/g, " ").trim()
      );
      assert.equal(verifyCells[2], ENGINE.name);
      assert.equal(verifyCells[3], "queued");
      assert.equal(verifyCells[4], "—");
      await screenshot(page, "trust-05-storage-checks-queued");
    },
    // 3. a replica rule from Backup > Replicas; its status on the policy page
    s3: async () => {
      await beat();
      await page.goto("/backup/replicas");
      await page.getByRole("heading", { name: "Replicas", level: 1 }).waitFor();
      await page.getByText("No replication rules yet").waitFor();
      const form = page.locator("section#new-replica");
      await form.getByLabel("Policy").selectOption({ label: POLICY });
      await form.getByLabel("Secondary storage target").selectOption(targetIds[OFFSITE]);
      await form.getByLabel("KEK source").selectOption("pam_vault");
      await form.locator("input[name=isOffsite]").check();
      await screenshot(page, "trust-06-replicas-form");
      const res = await submit(
        page,
        "/backup/replicas",
        form.getByRole("button", { name: "Add replica rule" }),
      );
      assert.equal(res.status(), 303);
      assert.match(await flash(page), /^Replica rule added \(rule \w+\)\.$/);
      const rows = await rowsCells(page, "[data-testid=replica-row]");
      assert.equal(rows.length, 1);
      const [policyCell, targetCell, besCell, kek, afterFull, afterIncr, offsite, counts, last] = rows[0];
      assert.equal(policyCell, POLICY);
      assert.equal(targetCell, `${OFFSITE} (S3)`);
      assert.equal(besCell, ENGINE.name);
      assert.equal(kek, "PAM vault (external key management)");
      assert.deepEqual([afterFull, afterIncr, offsite], ["yes", "yes", "offsite"]);
      assert.equal(counts, "0 replicated · 0 pending · 0 failed");
      assert.equal(last, "no copy yet");
      await screenshot(page, "trust-07-replicas-listed");

      // db01 finishes its full: the point is queued for replication with the rule's KEK source.
      const db01 = agents.get(DB01.hostname)!;
      const backup = await claimKind(db01, "backup");
      const ended = new Date();
      const result = await reportFullBackup(
        engineClient,
        db01,
        backup.id,
        { id: "db01-rp-0001", chainId: "db01-chain-1" },
        ended,
      );
      assert.equal(result.status, 200, await result.clone().text());

      await page.goto(policyPath);
      const section = page.locator("section#replicas");
      await section.getByRole("heading", { name: "Replication (3-2-1)" }).waitFor();
      const ruleRow = section.locator("[data-testid=replica-row]");
      assert.equal(await ruleRow.count(), 1);
      const ruleCells = (await ruleRow.locator("td").allInnerTexts()).map((s) =>
        s.replace(/\s+/g, " ").trim()
      );
      assert.equal(ruleCells[0], `${OFFSITE} (S3)`);
      assert.equal(ruleCells[2], "PAM vault (external key management)");
      assert.equal(ruleCells[5], "offsite");
      assert.equal(ruleCells[6], "0 replicated · 1 pending · 0 failed");
      assert.equal(ruleCells[7], "no copy yet");
      const pending = section.locator("[data-testid=replication-row]");
      assert.equal(await pending.count(), 1);
      assert.equal(await pending.getAttribute("data-status"), "pending");
      assert.match(await pending.innerText(), /PAM vault/);
      await screenshot(page, "trust-08-policy-replication-pending");

      // The BES copies it (the payload names the KEK source, no key material).
      const replicate = await claimKind(bes, "replicate");
      const kekRef = replicate.payload.kek as { source: string };
      assert.equal(kekRef.source, "pam_vault");
      assert.equal(replicate.payload.isOffsite, true);
      const copied = await engineClient.post(bes, `/api/bes/v1/jobs/${replicate.id}/result`, {
        status: "success",
        startedAt: new Date(Date.now() - 60_000).toISOString(),
        endedAt: new Date().toISOString(),
        bytesTransferred: 3 * 1024 ** 3,
        protectedBytes: 0,
        output: { replication: { bytes: 3 * 1024 ** 3 } },
      });
      assert.equal(copied.status, 200, await copied.clone().text());

      await page.goto(policyPath);
      const after = page.locator("section#replicas [data-testid=replica-row]");
      const afterCells = (await after.locator("td").allInnerTexts()).map((s) =>
        s.replace(/\s+/g, " ").trim()
      );
      assert.equal(afterCells[6], "1 replicated · 0 pending · 0 failed");
      assert.match(
        afterCells[7],
        /^last copy (just now|\d+ min ago) · (\d{4}-\d{2}-\d{2} )?\d{2}:\d{2} UTC/,
      );
      const done = page.locator("section#replicas [data-testid=replication-row]");
      assert.equal(await done.getAttribute("data-status"), "succeeded");
      assert.match(await done.innerText(), /3\.\d GB/);
      await screenshot(page, "trust-09-policy-replication-succeeded");

      // The "last copy" link opens the restore point with its replication status.
      await Promise.all([
        page.waitForURL((url) => url.pathname.startsWith("/backup/restore/points/")),
        after.locator("[data-testid=replica-last] a").click(),
      ]);
      pointPath = new URL(page.url()).pathname;
      const onPoint = page.locator("[data-testid=replication-row]");
      await onPoint.waitFor();
      assert.equal(await onPoint.getAttribute("data-status"), "succeeded");
      assert.match(await onPoint.innerText(), new RegExp(OFFSITE));
      await screenshot(page, "trust-10-restore-point-replication");

      await page.goto("/backup/replicas");
      assert.equal(
        (await page.locator("[data-testid=replica-counts]").innerText()).trim(),
        "1 replicated · 0 pending · 0 failed",
      );
    },
    // 4. decommission: a wrong hostname is refused; the right one archives
    s4: async () => {
      await beat();
      const db01Id = agents.get(DB01.hostname)!.id;
      const hostPath = `/backup/hosts/${db01Id}`;
      await page.goto(hostPath);
      await page.getByRole("heading", { name: DB01.hostname, level: 1 }).waitFor();
      assert.equal((await page.locator(".page-header .badge").first().innerText()).trim(), "online");
      const panel = page.locator("section#decommission");
      await panel.getByRole("heading", { name: "Decommission" }).waitFor();
      assert.match(await panel.innerText(), /and its 1 assignment becomes archived\./);

      const wrong = "db01.contoso.interna";
      await panel.getByLabel(`Type ${DB01.hostname} to confirm`).fill(wrong);
      const refused = await submit(
        page,
        `${hostPath}/decommission`,
        panel.getByRole("button", { name: "Decommission host" }),
      );
      assert.equal(refused.status(), 422);
      assert.equal(new URL(page.url()).pathname, `${hostPath}/decommission`, "re-rendered, no redirect");
      const again = page.locator("section#decommission");
      assert.equal(
        (await again.locator(".field-error").innerText()).trim(),
        `Type the host's name, ${DB01.hostname}, to confirm`,
      );
      assert.equal(await again.locator(".field--error #f-confirmHostname").count(), 1);
      assert.equal(await page.locator("#f-confirmHostname").inputValue(), wrong, "what was typed is kept");
      assert.equal((await page.locator(".page-header .badge").first().innerText()).trim(), "online");
      await screenshot(page, "trust-11-decommission-wrong-name");
      // Nothing changed.
      const unchanged = await api("GET", `/api/v1/hosts/${db01Id}`);
      assert.equal(unchanged.status, 200, unchanged.text);
      assert.equal(unchanged.json().status, "online");
      await page.goto(policyPath);
      await page.getByRole("heading", { name: "Hosts (2 assigned)" }).waitFor();

      await page.goto(hostPath);
      await page.locator("#f-confirmHostname").fill(DB01.hostname);
      const done = await submit(
        page,
        `${hostPath}/decommission`,
        page.getByRole("button", { name: "Decommission host" }),
      );
      assert.equal(done.status(), 303);
      decommissioned = new Set([DB01.hostname]);
      assert.equal(
        await flash(page),
        `Decommissioned ${DB01.hostname}: 1 assignment archived, 1 restore point kept.`,
      );
      assert.equal(
        (await page.locator(".page-header .badge").first().innerText()).trim(),
        "decommissioned",
      );
      // The time reads relative and absolute (issue 17's one Time component); the exact instant is in
      // its <time datetime>.
      const decommissionedText = page.locator("[data-testid=decommissioned]");
      assert.match(
        await decommissionedText.innerText(),
        /^Decommissioned (just now|\d+ min ago) · (\d{4}-\d{2}-\d{2} )?\d{2}:\d{2} UTC: /,
      );
      const decommissionedAt = await decommissionedText.locator("time").getAttribute("datetime");
      assert.match(decommissionedAt ?? "", /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/);
      assert.ok(
        Math.abs(Date.parse(decommissionedAt!) - Date.now()) < 10 * 60_000,
        `decommissioned at ${decommissionedAt}, not now`,
      );
      assert.equal(await page.getByRole("button", { name: "Decommission host" }).count(), 0);
      await screenshot(page, "trust-12-host-decommissioned");

      await page.goto(policyPath);
      await page.getByRole("heading", { name: "Hosts (1 assigned)" }).waitFor();
      const assignments = await rowsCells(page, "[data-testid=assignment-row]");
      const db01Row = assignments.find((r) => r[0].startsWith(DB01.hostname));
      const web01Row = assignments.find((r) => r[0].startsWith(WEB01.hostname));
      assert.ok(db01Row && web01Row, JSON.stringify(assignments));
      assert.equal(db01Row[0], `${DB01.hostname} (decommissioned)`);
      assert.equal(db01Row[1], "archived");
      assert.equal(web01Row[1], "active");
      // Run now now offers web01 only.
      assert.deepEqual(
        (await page.locator("section#run-now label.choice").allInnerTexts()).map((s) => s.trim()),
        [WEB01.hostname],
      );
      await screenshot(page, "trust-13-policy-assignment-archived");

      // The restore point is kept, archived.
      await page.goto(pointPath);
      const archived = page.locator("section.panel", {
        has: page.getByRole("heading", { name: "Archived" }),
      });
      assert.match(
        (await archived.innerText()).replace(/\s+/g, " "),
        new RegExp(
          `Kept since its host was decommissioned \\(.*\\): policy ${POLICY} archives backups on host deactivation, so retention does not expire this point`,
        ),
      );
      assert.equal(await archived.getByRole("button", { name: "Expire restore point" }).count(), 1);
      await screenshot(page, "trust-14-restore-point-archived");
    },
    // 5. a garbage cursor on Alerts shows the first page with a notice
    s5: async () => {
      for (const cursor of ["xx", "AAAA", "-1", "%FF%FE"]) {
        const res = await page.goto(`/backup/alerts?cursor=${cursor}`);
        assert.equal(res?.status(), 200, `cursor ${cursor}`);
        await page.getByRole("heading", { name: "Alerts", level: 1 }).waitFor();
        const notice = page.locator("[data-testid=cursor-notice]");
        assert.equal(
          (await notice.innerText()).trim(),
          "That page link is no longer valid; showing the first page.",
        );
        if (cursor === "xx") await screenshot(page, "trust-15-alerts-stale-cursor");
      }
      await page.goto("/backup/alerts");
      assert.equal(
        await page.locator("[data-testid=cursor-notice]").count(),
        0,
        "no notice without a cursor",
      );
    },
    // 6. Health > Database shows the start-up consistency check
    s6: async () => {
      const panel = page.locator("[data-testid=invariant-check]");
      await waitFor(
        "the start-up consistency check's result",
        async () => {
          await page.goto("/health/database");
          await panel.getByRole("heading", { name: "Consistency check" }).waitFor();
          return (await panel.getByText("Never run").count()) === 0;
        },
        60_000,
        500,
      );
      const facts = (await panel.locator("dl.facts").innerText()).replace(/\s+/g, " ");
      assert.match(
        facts,
        /Last run (just now|\d+ min ago) · (\d{4}-\d{2}-\d{2} )?\d{2}:\d{2} UTC \(on start\), took \d/,
      );
      assert.match(
        (await panel.locator("[data-testid=invariant-coverage]").innerText()).trim(),
        /^(complete|partial) [\d,]+ entries read/,
      );
      assert.match(
        (await panel.locator("[data-testid=invariant-violation-count]").innerText()).trim(),
        /^none/,
        "a fresh server is consistent",
      );
      assert.ok(await panel.locator("tr[data-testid^=invariant-section-]").count() > 0, "areas are listed");
      assert.equal(await panel.locator("[data-testid=invariant-violation]").count(), 0);
      await screenshot(page, "trust-16-health-database-consistency");
    },
  };
}

test("trust: seed: both hosts assigned on the policy page; 1. Run now: a full on every active host, then refused while one is pending; 2. storage checks on a healthy target: both queued, latest result shown", async (ctx) => {
  const w = await world(ctx);
  await w.s0();
  await w.s1();
  await w.s2();
});

test("trust: 3. a replica rule from Backup > Replicas; its status on the policy page; 4. decommission: a wrong hostname is refused; the right one archives (after the seed, 1 and 2)", async (ctx) => {
  const w = await world(ctx);
  for (const step of [w.s0, w.s1, w.s2, w.s3, w.s4]) await step();
});

test("trust: 5. a garbage cursor on Alerts shows the first page with a notice", async (ctx) => {
  const w = await world(ctx);
  await w.s5();
});

test("trust: 6. Health > Database shows the start-up consistency check", async (ctx) => {
  const w = await world(ctx);
  // Health is installation-wide: the operator account's administrator reads it.
  await signOut(ctx.page);
  await ctx.signInAsOperator();
  await w.s6();
});
