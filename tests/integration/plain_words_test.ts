/**
 * Plain words, not internals: pages show times as "6 min ago · 05:05 UTC" and never raw ISO, a system
 * pause as "Paused: storage critical (auto)" with a link to the target, engine metrics marked stale once
 * the engine is offline, sparklines with time labels, no "see the README", no stray "0 days".
 */
import assert from "node:assert/strict";
import { assignHost } from "../../domain/assignments.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { createPolicy, type Policy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { applyCapacityReport, createTarget } from "../../domain/storage.ts";
import {
  addUser,
  assertIncludes,
  Browser,
  createTenant,
  engineMetrics,
  enrollTestHost,
  onlineTestEngine,
  signInAs,
  targetInput,
  testApp,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

/** The text a reader sees: tags and their attributes (where `datetime` keeps the ISO) removed. */
function visibleText(html: string): string {
  return html.replace(/<script[^]*?<\/script>/g, "").replace(/<[^>]*>/g, " ").replace(/\s+/g, " ");
}

async function world() {
  const kv = await Deno.openKv(":memory:");
  const { app, clock } = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await onlineTestEngine(kv, scope, clock.now());
  // A minute later, a second heartbeat: two samples, so the sparklines have a time axis.
  clock.advance(60_000);
  await applyHeartbeat(
    kv,
    engine.id,
    { version: "1", metrics: engineMetrics({ cpuPercent: 40 }) },
    clock.now(),
  );
  const target = await createTarget(kv, system, targetInput(engine.id), { now: clock.now(), masterKey });
  await applyCapacityReport(kv, engine.id, {
    targetId: target.id,
    totalBytes: 1000,
    usedBytes: 990,
    freeBytes: 10,
  }, clock.now());
  // A second target that never reported capacity (its chart has no day yet).
  const fresh = await createTarget(kv, system, { ...targetInput(engine.id), name: "fresh target" }, {
    now: clock.now(),
    masterKey,
  });
  const policy = await createPolicy(kv, system, {
    name: "nightly files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    incrementalSchedule: "*/30 8-18 * * 1-5",
  }, clock.now()) as Policy;
  const host = await enrollTestHost(kv, scope, "db-01", clock.now());
  await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, clock.now());
  const browser = new Browser(app);
  await signInAs(
    browser,
    kv,
    await addUser(kv, tenant, "v@acme.example", "viewer", "all", clock.now()),
    clock.now(),
  );
  const page = async (path: string) => {
    const res = await browser.get(path);
    assert.equal(res.status, 200, path);
    return await res.text();
  };
  return { kv, clock, engine, target, fresh, policy, host, page };
}

Deno.test("a system pause reads “Paused: storage critical (auto)” and links to the target", async () => {
  const w = await world();
  try {
    assert.equal(
      w.policy.pausedReason,
      "storage_critical",
      "the target was critical when the policy was made",
    );
    for (const path of [`/backup/policies/${w.policy.id}`, `/backup/jobs/${w.policy.id}`]) {
      const html = await w.page(path);
      assertIncludes(html, "Paused: storage critical (auto)", path);
      assertIncludes(html, `href="/backup/storage/${w.target.id}"`, path);
      assert.doesNotMatch(visibleText(html), /storage_critical/, `${path}: no internal reason code`);
    }
    assertIncludes(await w.page("/backup/jobs"), "Paused: storage critical (auto)");
    assertIncludes(await w.page("/backup/policies"), "Paused: storage critical (auto)");
  } finally {
    w.kv.close();
  }
});

Deno.test("pages show times relative and absolute, never raw ISO; cron readings never twice", async () => {
  const w = await world();
  try {
    for (
      const path of [
        "/backup/dashboard",
        `/backup/engines/${w.engine.id}`,
        `/backup/storage/${w.target.id}`,
        `/backup/storage/${w.fresh.id}`,
        `/backup/policies/${w.policy.id}`,
        `/backup/jobs/${w.policy.id}`,
        "/backup/jobs",
        `/backup/hosts/${w.host.id}`,
        "/backup/hosts",
        "/backup/engines",
        "/backup/getting-started",
      ]
    ) {
      const text = visibleText(await w.page(path));
      assert.doesNotMatch(text, /\d{4}-\d\d-\d\dT\d\d:\d\d/, `${path}: a raw ISO time`);
      assert.doesNotMatch(text, /see the README/i, `${path}: the UI sends nobody to the README`);
      assert.doesNotMatch(text, /\b0 days\b/, `${path}: a stray "0 days"`);
    }
    const engine = await w.page(`/backup/engines/${w.engine.id}`);
    assert.match(
      engine,
      /<time datetime="[^"]+" title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC">just now · \d\d:\d\d UTC<\/time>/,
    );
    const policy = visibleText(await w.page(`/backup/policies/${w.policy.id}`));
    assertIncludes(policy, "Every Sunday at 02:00 0 2 * * 0");
    assertIncludes(policy, "Every 30 minutes from 08:00 to 18:59, Monday to Friday */30 8-18 * * 1-5");
    assert.equal(policy.split("*/30 8-18 * * 1-5").length, 2, "the expression once");
  } finally {
    w.kv.close();
  }
});

Deno.test("engine metrics: sparklines with time labels, marked stale once the engine is offline", async () => {
  const w = await world();
  try {
    const live = await w.page(`/backup/engines/${w.engine.id}`);
    assert.equal((live.match(/class="spark-axis"/g) ?? []).length, 4, "every sparkline has a time axis");
    assert.match(live, /class="spark-axis"[^>]*><span>\d\d:\d\d UTC<\/span><span>\d\d:\d\d UTC<\/span>/);
    assert.match(live, /aria-label="CPU % from \d\d:\d\d UTC to \d\d:\d\d UTC"/);
    assert.ok(!live.includes('data-testid="metrics-stale"'), "an online engine's metrics are current");
    assertIncludes(visibleText(live), "CPU % now 40");
    // Ten minutes without a heartbeat: offline by the 3-minute rule, even before the sweep runs.
    w.clock.advance(10 * 60_000);
    const silent = await w.page(`/backup/engines/${w.engine.id}`);
    assertIncludes(silent, 'data-testid="metrics-stale"');
    const text = visibleText(silent);
    assertIncludes(text, "Stale: the engine is offline");
    assertIncludes(text, "the latest 10 min ago");
    assertIncludes(text, "CPU % last reported 40");
    assertIncludes(text, "Uptime at the last report");
  } finally {
    w.kv.close();
  }
});
