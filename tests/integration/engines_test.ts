/**
 * Engines: the 3-minute offline sweep and its alert, degraded health, metrics history, edits, and the
 * crash-safe cascading delete (DESIGN.md invariant 4) including a race against target creation.
 */
import assert from "node:assert/strict";
import { z } from "zod";
import {
  acknowledgeAlert,
  type Alert,
  alertKey,
  openAlertKey,
  openAlertsByAccountKey,
  readOpenAlert,
} from "../../domain/alerts.ts";
import {
  applyHeartbeat,
  deleteEngine,
  deletingEngineKey,
  type Engine,
  getEngine,
  listEngineMetrics,
  liveEngineKey,
  markEngineDeleting,
  purgeEngineMetrics,
  registerEngine,
  resumeEngineDeletions,
  sweepEngineHeartbeats,
  updateEngine,
} from "../../domain/engines.ts";
import { ConflictError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import { systemActor } from "../../domain/rbac.ts";
import {
  applyCapacityReport,
  createTarget,
  type StorageTarget,
  type TargetUpdateInput,
  updateTarget,
} from "../../domain/storage.ts";
import type { VaultRecord } from "../../domain/vault.ts";
import {
  auditEntries,
  createTenant,
  createTestPolicy,
  dumpKv,
  engineMetrics,
  registerTestEngine,
  targetInput,
  VALID_TARGET_CONFIGS,
} from "../helpers.ts";

const T0 = new Date("2026-11-22T10:00:00Z");
const MIN = 60_000;
const at = (ms: number) => new Date(T0.getTime() + ms);
const MASTER_KEY = new Uint8Array(32).fill(7);
const system = systemActor("test");

async function fixture(kv: Deno.Kv) {
  const tenant = await createTenant(kv, "Acme", ["Ops"], T0);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine, keys } = await registerTestEngine(kv, scope, T0);
  return { tenant, scope, engine, keys };
}

function heartbeat(kv: Deno.Kv, id: string, now: Date, metrics = engineMetrics()) {
  return applyHeartbeat(kv, id, { version: "1.0.0", metrics }, now);
}

async function allAlerts(kv: Deno.Kv): Promise<Alert[]> {
  const out: Alert[] = [];
  for await (const e of kv.list<Alert>({ prefix: ["alerts"] })) out.push(e.value);
  return out;
}

async function listValues<T>(kv: Deno.Kv, prefix: Deno.KvKey): Promise<T[]> {
  const out: T[] = [];
  for await (const e of kv.list<T>({ prefix })) out.push(e.value);
  return out;
}

function isZodErrorAt(path: string, message?: RegExp) {
  return (e: unknown) => {
    assert.ok(e instanceof z.ZodError, `expected a ZodError, got ${e}`);
    const issue = e.issues.find((i) => i.path.join(".") === path);
    assert.ok(issue, `expected an issue at ${path}, got ${JSON.stringify(e.issues)}`);
    if (message) assert.match(issue.message, message);
    return true;
  };
}

// ---------------------------------------------------------------------------------------------------
// Offline sweep

Deno.test("sweepEngineHeartbeats() keeps an engine online at exactly 3 minutes of silence", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  await heartbeat(kv, engine.id, T0);
  assert.equal((await getEngine(kv, engine.id))!.status, "online");
  const before = await dumpKv(kv);
  assert.deepEqual(await sweepEngineHeartbeats(kv, at(3 * MIN)), { offline: [] });
  assert.deepEqual(await dumpKv(kv), before);
  assert.equal((await getEngine(kv, engine.id))!.status, "online");
});

Deno.test("sweepEngineHeartbeats() marks an engine offline after 3 minutes and raises one critical alert", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine, tenant } = await fixture(kv);
  await heartbeat(kv, engine.id, T0);
  const now = at(3 * MIN + 1000);
  assert.deepEqual(await sweepEngineHeartbeats(kv, now), { offline: [engine.id] });
  const offline = (await getEngine(kv, engine.id))!;
  assert.equal(offline.status, "offline");
  assert.match(offline.statusReason, /No heartbeat for 3 minutes/);
  assert.equal(offline.lastHeartbeatAt, T0.toISOString());
  assert.equal((await kv.get(liveEngineKey(engine.id))).versionstamp, null);

  const alerts = await allAlerts(kv);
  assert.equal(alerts.length, 1);
  const [alert] = alerts;
  assert.equal(alert.reason, "engine_offline");
  assert.equal(alert.severity, "critical");
  assert.equal(alert.status, "open");
  assert.equal(alert.subjectType, "engine");
  assert.equal(alert.subjectId, engine.id);
  assert.equal(alert.accountId, tenant.account.id);
  assert.equal(alert.orgId, tenant.orgs[0].id);
  assert.equal(alert.openedAt, now.toISOString());
  assert.equal(alert.count, 1);
  assert.equal((await kv.get(openAlertKey("engine", engine.id, "engine_offline"))).value, alert.id);

  // Running the sweep again — same minute or later — changes nothing and raises nothing more.
  const after = await dumpKv(kv);
  assert.deepEqual(await sweepEngineHeartbeats(kv, now), { offline: [] });
  assert.deepEqual(await sweepEngineHeartbeats(kv, at(30 * MIN)), { offline: [] });
  assert.deepEqual(await sweepEngineHeartbeats(kv, at(24 * 60 * MIN)), { offline: [] });
  assert.deepEqual(await dumpKv(kv), after);
});

Deno.test("sweepEngineHeartbeats() ignores engines that never sent a heartbeat (pending)", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  assert.deepEqual(await sweepEngineHeartbeats(kv, at(60 * MIN)), { offline: [] });
  assert.equal((await getEngine(kv, engine.id))!.status, "pending");
  assert.equal((await allAlerts(kv)).length, 0);
});

Deno.test("sweepEngineHeartbeats() run concurrently by two instances raises exactly one alert", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  await heartbeat(kv, engine.id, T0);
  const now = at(4 * MIN);
  const results = await Promise.all([sweepEngineHeartbeats(kv, now), sweepEngineHeartbeats(kv, now)]);
  assert.equal(results.flatMap((r) => r.offline).length, 1);
  assert.equal((await allAlerts(kv)).length, 1);
});

Deno.test("applyHeartbeat() brings an offline engine back online and resolves its offline alert", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine, tenant } = await fixture(kv);
  await heartbeat(kv, engine.id, T0);
  await sweepEngineHeartbeats(kv, at(5 * MIN));
  const { alert: open } = await readOpenAlert(kv, "engine", engine.id, "engine_offline");
  const alertId = open!.value!.id;

  const back = at(6 * MIN);
  const { engine: online } = await heartbeat(kv, engine.id, back);
  assert.equal(online.status, "online");
  assert.equal((await getEngine(kv, engine.id))!.status, "online");
  assert.equal((await kv.get(liveEngineKey(engine.id))).value, true, "watched by the sweep again");
  const resolved = (await kv.get<Alert>(alertKey(alertId))).value!;
  assert.equal(resolved.status, "resolved");
  assert.equal(resolved.resolvedAt, back.toISOString());
  assert.equal((await kv.get(openAlertKey("engine", engine.id, "engine_offline"))).versionstamp, null);
  assert.equal((await kv.get(openAlertsByAccountKey(tenant.account.id, alertId))).versionstamp, null);
  assert.equal((await allAlerts(kv)).length, 1);

  // Going offline again opens a new alert (the resolved one stays resolved).
  await sweepEngineHeartbeats(kv, at(10 * MIN));
  const alerts = await allAlerts(kv);
  assert.equal(alerts.length, 2);
  assert.deepEqual(alerts.map((a) => a.status).sort(), ["open", "resolved"]);
});

// ---------------------------------------------------------------------------------------------------
// Degraded

Deno.test("applyHeartbeat() marks an engine degraded at memory or disk ≥ 95% with a warning alert, and resolves it when back to normal", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const almost = await heartbeat(
    kv,
    engine.id,
    T0,
    engineMetrics({ memoryPercent: 94.99, diskPercent: 94.99 }),
  );
  assert.equal(almost.engine.status, "online");
  assert.equal((await allAlerts(kv)).length, 0);

  const memory = await heartbeat(kv, engine.id, at(MIN), engineMetrics({ memoryPercent: 95 }));
  assert.equal(memory.engine.status, "degraded");
  assert.match(memory.engine.statusReason, /memory 95%/);
  let alerts = await allAlerts(kv);
  assert.equal(alerts.length, 1);
  assert.equal(alerts[0].reason, "engine_degraded");
  assert.equal(alerts[0].severity, "warning");
  assert.equal(alerts[0].status, "open");

  // Still degraded (now disk): no second alert.
  await heartbeat(kv, engine.id, at(2 * MIN), engineMetrics({ diskPercent: 99 }));
  assert.equal((await getEngine(kv, engine.id))!.status, "degraded");
  assert.equal((await allAlerts(kv)).length, 1);

  const normal = await heartbeat(kv, engine.id, at(3 * MIN));
  assert.equal(normal.engine.status, "online");
  alerts = await allAlerts(kv);
  assert.equal(alerts.length, 1);
  assert.equal(alerts[0].status, "resolved");
  assert.equal(alerts[0].resolvedAt, at(3 * MIN).toISOString());
  assert.equal((await kv.get(openAlertKey("engine", engine.id, "engine_degraded"))).versionstamp, null);

  // Disk alone triggers it too.
  const disk = await heartbeat(kv, engine.id, at(4 * MIN), engineMetrics({ diskPercent: 95 }));
  assert.equal(disk.engine.status, "degraded");
  assert.match(disk.engine.statusReason, /disk 95%/);
  assert.equal((await allAlerts(kv)).filter((a) => a.status === "open").length, 1);
});

Deno.test("sweepEngineHeartbeats() takes a silent degraded engine offline and resolves its degraded alert", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  await heartbeat(kv, engine.id, T0, engineMetrics({ memoryPercent: 99 }));
  await sweepEngineHeartbeats(kv, at(3 * MIN + 1));
  assert.equal((await getEngine(kv, engine.id))!.status, "offline");
  const byReason = Object.fromEntries((await allAlerts(kv)).map((a) => [a.reason, a.status]));
  assert.deepEqual(byReason, { engine_degraded: "resolved", engine_offline: "open" });
  // Back with healthy metrics: everything resolved.
  await heartbeat(kv, engine.id, at(10 * MIN));
  assert.deepEqual((await allAlerts(kv)).map((a) => a.status), ["resolved", "resolved"]);
});

// ---------------------------------------------------------------------------------------------------
// Metrics history

Deno.test("listEngineMetrics() lists one sample a minute for the last 24 h; purgeEngineMetrics() drops older ones", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const minutes = 26 * 60;
  for (let i = 0; i <= minutes; i++) {
    await heartbeat(kv, engine.id, at(i * MIN), engineMetrics({ cpuPercent: i % 100 }));
  }
  const now = at(minutes * MIN);
  const dayAgo = now.getTime() - 24 * 60 * MIN;
  const listed = await listEngineMetrics(kv, engine.id, now);
  assert.equal(listed.length, 24 * 60 + 1, "every minute of the last 24 h, both ends included");
  assert.equal(listed[0].at, new Date(dayAgo).toISOString());
  assert.equal(listed.at(-1)!.at, now.toISOString());
  assert.ok(listed.every((m) => Date.parse(m.at) >= dayAgo));
  for (let i = 1; i < listed.length; i++) assert.ok(listed[i - 1].at < listed[i].at, "oldest first");
  assert.equal(listed.at(-1)!.cpuPercent, minutes % 100);

  const stored = async () => (await listValues(kv, ["engine_metrics", engine.id])).length;
  assert.equal(await stored(), minutes + 1);
  assert.equal(await purgeEngineMetrics(kv, now), 2 * 60);
  assert.equal(await stored(), 24 * 60 + 1);
  assert.deepEqual(await listEngineMetrics(kv, engine.id, now), listed);
  assert.equal(await purgeEngineMetrics(kv, now), 0, "idempotent");
});

Deno.test("applyHeartbeat() keeps one metrics sample per minute: the minute's first heartbeat", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  await heartbeat(kv, engine.id, at(0), engineMetrics({ cpuPercent: 1 }));
  await heartbeat(kv, engine.id, at(30_000), engineMetrics({ cpuPercent: 2 }));
  await heartbeat(kv, engine.id, at(MIN), engineMetrics({ cpuPercent: 3 }));
  const listed = await listEngineMetrics(kv, engine.id, at(2 * MIN));
  assert.deepEqual(listed.map((m) => m.cpuPercent), [1, 3]);
  // The engine record itself always carries the latest metrics.
  assert.equal((await getEngine(kv, engine.id))!.metrics!.cpuPercent, 3);
});

// ---------------------------------------------------------------------------------------------------
// Edits

Deno.test("updateEngine() validates the PXE network CIDR and writes an audit entry", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine, tenant } = await fixture(kv);
  const edit = (input: Record<string, unknown>) =>
    updateEngine(
      kv,
      system,
      engine.id,
      { name: "bes-1", pxeEnabled: true, pxeNetwork: "", ...input },
      at(MIN),
    );

  await assert.rejects(() => edit({ pxeNetwork: "10.20.0.5/24" }), isZodErrorAt("pxeNetwork", /host bits/));
  await assert.rejects(() => edit({ pxeNetwork: "300.1.1.1/24" }), isZodErrorAt("pxeNetwork", /valid CIDR/));
  await assert.rejects(() => edit({ pxeNetwork: "10.20.0.0/33" }), isZodErrorAt("pxeNetwork"));
  await assert.rejects(() => edit({ pxeNetwork: "10.20.0.0" }), isZodErrorAt("pxeNetwork"));
  await assert.rejects(
    () => edit({ pxeNetwork: "" }),
    isZodErrorAt("pxeNetwork", /required when PXE is enabled/),
  );
  await assert.rejects(() => edit({ name: "" }), isZodErrorAt("name"));
  assert.equal((await getEngine(kv, engine.id))!.pxeEnabled, false, "refused edits change nothing");
  assert.equal(
    (await auditEntries(kv, tenant.account.id)).filter((e) => e.action === "engine.update").length,
    0,
  );

  const updated = await edit({ name: "bes-one", pxeNetwork: "10.20.0.0/24" });
  assert.equal(updated.name, "bes-one");
  assert.equal(updated.pxeEnabled, true);
  assert.equal(updated.pxeNetwork, "10.20.0.0/24");
  assert.equal(updated.updatedAt, at(MIN).toISOString());
  assert.deepEqual(await getEngine(kv, engine.id), updated);
  const audit = (await auditEntries(kv, tenant.account.id)).filter((e) => e.action === "engine.update");
  assert.equal(audit.length, 1);
  assert.match(audit[0].summary, /PXE on \(10\.20\.0\.0\/24\)/);

  // Other valid networks; PXE off clears the network.
  assert.equal((await edit({ pxeNetwork: "192.168.4.0/22" })).pxeNetwork, "192.168.4.0/22");
  assert.equal((await edit({ pxeNetwork: "fd00:10::/64" })).pxeNetwork, "fd00:10::/64");
  const off = await edit({ pxeEnabled: false, pxeNetwork: "" });
  assert.equal(off.pxeEnabled, false);
  assert.equal(off.pxeNetwork, null);
});

Deno.test("updateEngine() is not found outside the actor's scope", async () => {
  using kv = await Deno.openKv(":memory:");
  const { engine } = await fixture(kv);
  const other = await createTenant(kv, "Globex", ["Prod"], T0);
  const outsider = {
    ...system,
    kind: "user" as const,
    id: "u1",
    accountId: other.account.id,
    role: "admin" as const,
  };
  await assert.rejects(
    () => updateEngine(kv, outsider, engine.id, { name: "x", pxeEnabled: false, pxeNetwork: "" }, T0),
    NotFoundError,
  );
});

// ---------------------------------------------------------------------------------------------------
// Cascading delete (invariant 4)

/** An engine with 3 targets (one with credentials), 2 policies with children, capacity history, alerts. */
async function populatedEngine(
  kv: Deno.Kv,
  scope: { accountId: string; orgId: string | null },
  name: string,
) {
  const { engine, keys } = await registerTestEngine(kv, scope, T0, name);
  await heartbeat(kv, engine.id, T0);
  const opts = { now: T0, masterKey: MASTER_KEY };
  const targets: StorageTarget[] = [
    await createTarget(kv, system, targetInput(engine.id, "nfs", { name: `${name} nfs` }), opts),
    await createTarget(kv, system, {
      ...targetInput(engine.id, "s3", { name: `${name} s3` }),
      credentials: { username: "AKIAEXAMPLE", secret: `secret-of-${name}`, credentialType: "access_key" },
    }, opts),
    await createTarget(kv, system, targetInput(engine.id, "local", { name: `${name} local` }), opts),
  ];
  assert.ok(targets[1].credentialId);
  for (const [i, t] of targets.entries()) {
    await applyCapacityReport(kv, engine.id, {
      targetId: t.id,
      totalBytes: 1000,
      usedBytes: 500,
      freeBytes: 500,
    }, T0);
    // The last target ends critical: it has an open storage_critical alert.
    const used = i === 2 ? 990 : 510;
    await applyCapacityReport(kv, engine.id, {
      targetId: t.id,
      totalBytes: 1000,
      usedBytes: used,
      freeBytes: 1000 - used,
    }, at(MIN));
  }
  const policies = [
    await createTestPolicy(kv, targets[0].id, `${name} nightly`, T0),
    await createTestPolicy(kv, targets[1].id, `${name} hourly`, T0),
  ];
  const children: string[] = [];
  for (const p of policies) {
    for (const prefix of ["assignments_by_policy", "hooks_by_policy", "replicas_by_policy"]) {
      for (let i = 0; i < 3; i++) {
        const childId = `${prefix}-${p.id}-${i}`;
        await kv.set([prefix, p.id, childId], { id: childId });
        children.push(childId);
      }
    }
  }
  return { engine, keys, targets, policies, children, vaultIds: [targets[1].credentialId!] };
}

/** Yields to the event loop `ms` milliseconds (0: a macrotask turn). */
function pause(ms: number) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function keyMentions(key: Deno.KvKey, ids: string[]): boolean {
  return key.some((part) => typeof part === "string" && ids.some((id) => part.includes(id)));
}

Deno.test("deleteEngine() cascades to its targets, their policies, the policies' children, vault records and capacity history", async () => {
  using kv = await Deno.openKv(":memory:");
  const tenant = await createTenant(kv, "Acme", ["Ops"], T0);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const doomed = await populatedEngine(kv, scope, "doomed");
  const kept = await populatedEngine(kv, scope, "kept");
  const ids = [
    doomed.engine.id,
    ...doomed.targets.map((t) => t.id),
    ...doomed.policies.map((p) => p.id),
    ...doomed.children,
    ...doomed.vaultIds,
  ];
  const before = await dumpKv(kv);
  assert.ok(before.some((e) => e.key[0] === "capacity_samples" && e.key[1] === doomed.targets[0].id));
  assert.ok(before.some((e) => e.key[0] === "capacity_daily" && e.key[1] === doomed.targets[0].id));
  assert.ok(before.some((e) => e.key[0] === "engine_metrics" && e.key[1] === doomed.engine.id));
  assert.ok(before.some((e) => e.key[0] === "vault" && e.key[1] === doomed.vaultIds[0]));
  assert.ok(before.some((e) => e.key[0] === "alerts_open" && e.key[2] === doomed.targets[2].id));

  await deleteEngine(kv, system, doomed.engine.id, at(2 * MIN));

  const after = await dumpKv(kv);
  const leftovers = after.filter((e) => keyMentions(e.key, ids));
  assert.deepEqual(leftovers.map((e) => e.key), [], "no key mentions the engine or its children");
  assert.equal(await getEngine(kv, doomed.engine.id), null);
  // Its open alerts are resolved, not left open.
  const targetAlerts = (await allAlerts(kv)).filter((a) => doomed.targets.some((t) => t.id === a.subjectId));
  assert.ok(targetAlerts.length > 0);
  assert.ok(targetAlerts.every((a) => a.status === "resolved"));
  // The other engine is untouched: every key it had is still there with the same value.
  const keptIds = [kept.engine.id, ...kept.targets.map((t) => t.id), ...kept.policies.map((p) => p.id)];
  const keptBefore = before.filter((e) =>
    keyMentions(e.key, keptIds) || e.key[0] === "vault" && e.key[1] === kept.vaultIds[0]
  );
  const keptAfter = after.filter((e) =>
    keyMentions(e.key, keptIds) || e.key[0] === "vault" && e.key[1] === kept.vaultIds[0]
  );
  assert.ok(keptBefore.length > 10);
  assert.deepEqual(keptAfter, keptBefore);
  assert.ok(await getEngine(kv, kept.engine.id));
  // One audit entry for the delete.
  const audit = (await auditEntries(kv, tenant.account.id)).filter((e) => e.action === "engine.delete");
  assert.equal(audit.length, 1);
  assert.match(audit[0].summary, /doomed/);
  // The key can register again as a new engine.
  const again = await registerEngine(kv, scope, {
    name: "reborn",
    deploymentModel: "on_premise",
    publicKey: doomed.keys.publicKey,
    hostname: "reborn.acme.example",
    ipAddress: "10.0.0.12",
    port: 8443,
    version: "1.0.0",
  }, at(3 * MIN));
  assert.equal(again.created, true);
  assert.notEqual(again.engine.id, doomed.engine.id);
});

Deno.test("resumeEngineDeletions() finishes an engine left in deleting after a crash; meanwhile nothing attaches to it", async () => {
  using kv = await Deno.openKv(":memory:");
  const tenant = await createTenant(kv, "Acme", ["Ops"], T0);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const doomed = await populatedEngine(kv, scope, "doomed");
  // The crash: the engine was marked deleting (deleteEngine's first step), children remain.
  await markEngineDeleting(kv, system, doomed.engine.id, T0);

  // While deleting: no new target, no heartbeat, no edit, no re-registration.
  await assert.rejects(
    () =>
      createTarget(kv, system, targetInput(doomed.engine.id, "local"), {
        now: at(MIN),
        masterKey: MASTER_KEY,
      }),
    ConflictError,
  );
  await assert.rejects(() => heartbeat(kv, doomed.engine.id, at(MIN)), NotFoundError);
  await assert.rejects(
    () =>
      updateEngine(kv, system, doomed.engine.id, { name: "x", pxeEnabled: false, pxeNetwork: "" }, at(MIN)),
    ConflictError,
  );
  await assert.rejects(() =>
    registerEngine(kv, scope, {
      name: "again",
      deploymentModel: "on_premise",
      publicKey: doomed.keys.publicKey,
      hostname: "again.acme.example",
      ipAddress: "10.0.0.12",
      port: 8443,
      version: "1.0.0",
    }, at(MIN)), ConflictError);
  assert.equal((await getEngine(kv, doomed.engine.id))!.status, "deleting");
  assert.equal((await listValues(kv, ["storage_targets_by_bes", doomed.engine.id])).length, 3);
  assert.deepEqual(await sweepEngineHeartbeats(kv, at(60 * MIN)), { offline: [] });

  assert.equal(await resumeEngineDeletions(kv, at(2 * MIN)), 1);
  const ids = [
    doomed.engine.id,
    ...doomed.targets.map((t) => t.id),
    ...doomed.policies.map((p) => p.id),
    ...doomed.children,
    ...doomed.vaultIds,
  ];
  const leftovers = (await dumpKv(kv)).filter((e) => keyMentions(e.key, ids));
  assert.deepEqual(leftovers.map((e) => e.key), []);
  assert.equal(await resumeEngineDeletions(kv, at(3 * MIN)), 0, "nothing left to resume");
});

Deno.test("deleteEngine() called again on an engine already being deleted resumes the cascade", async () => {
  using kv = await Deno.openKv(":memory:");
  const tenant = await createTenant(kv, "Acme", ["Ops"], T0);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const doomed = await populatedEngine(kv, scope, "doomed");
  await markEngineDeleting(kv, system, doomed.engine.id, T0);
  await deleteEngine(kv, system, doomed.engine.id, at(MIN));
  assert.equal(await getEngine(kv, doomed.engine.id), null);
  assert.equal((await listValues(kv, ["storage_targets_by_bes", doomed.engine.id])).length, 0);
  assert.equal((await kv.get(deletingEngineKey(doomed.engine.id))).versionstamp, null);
});

Deno.test("deleteEngine() racing createTarget on the same engine never leaves an orphan target (30 rounds)", async () => {
  using kv = await Deno.openKv(":memory:");
  const tenant = await createTenant(kv, "Acme", ["Ops"], T0);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const outcomes = { created: 0, refused: 0 };
  for (let round = 0; round < 30; round++) {
    const { engine } = await registerTestEngine(kv, scope, T0, `race-${round}`);
    await createTarget(kv, system, targetInput(engine.id, "local", { name: "existing" }), {
      now: T0,
      masterKey: MASTER_KEY,
    });
    // Vary who starts first so that both orders (and true interleavings) happen.
    const [deleted, created] = await Promise.allSettled([
      pause(round % 3 === 1 ? round % 5 : 0).then(() => deleteEngine(kv, system, engine.id, at(MIN))),
      pause(round % 3 === 2 ? round % 4 : 0).then(() =>
        createTarget(kv, system, {
          ...targetInput(engine.id, round % 2 ? "nfs" : "local", { name: `racer ${round}` }),
          credentials: { username: "u", secret: `race-secret-${round}`, credentialType: "password" },
        }, { now: at(MIN), masterKey: MASTER_KEY })
      ),
    ]);
    assert.equal(deleted.status, "fulfilled", `round ${round}: ${(deleted as PromiseRejectedResult).reason}`);
    if (created.status === "fulfilled") outcomes.created++;
    else {
      outcomes.refused++;
      assert.ok(
        created.reason instanceof ConflictError || created.reason instanceof ValidationError,
        `round ${round}: unexpected ${created.reason}`,
      );
    }
    assert.equal(await getEngine(kv, engine.id), null, `round ${round}: engine gone`);
  }
  // No orphans anywhere.
  const engines = new Set((await listValues<Engine>(kv, ["engines"])).map((e) => e.id));
  const targets = await listValues<StorageTarget>(kv, ["storage_targets"]);
  assert.deepEqual(targets.filter((t) => !engines.has(t.besId)).map((t) => t.name), []);
  const targetIds = new Set(targets.map((t) => t.id));
  const byBes = [];
  for await (const e of kv.list<string>({ prefix: ["storage_targets_by_bes"] })) byBes.push(e);
  assert.deepEqual(byBes.filter((e) => !targetIds.has(e.value)).map((e) => e.key), []);
  const byAccount = await listValues<string>(kv, ["storage_targets_by_account"]);
  assert.deepEqual(byAccount.filter((id) => !targetIds.has(id)), []);
  const vault = await listValues<VaultRecord>(kv, ["vault"]);
  assert.deepEqual(
    vault.filter((v) => !targetIds.has(v.purpose.replace("storage_target:", ""))).map((v) => v.id),
    [],
  );
  assert.equal(outcomes.created + outcomes.refused, 30);
});

Deno.test("deleteEngine() racing a credential rotation on one of its targets leaves no orphan vault record (30 rounds)", async () => {
  using kv = await Deno.openKv(":memory:");
  const tenant = await createTenant(kv, "Acme", ["Ops"], T0);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  for (let round = 0; round < 30; round++) {
    const { engine } = await registerTestEngine(kv, scope, T0, `rot-${round}`);
    const target = await createTarget(kv, system, {
      ...targetInput(engine.id, "smb", { name: `smb ${round}` }),
      credentials: { username: "u", secret: `old-${round}`, credentialType: "password" },
    }, { now: T0, masterKey: MASTER_KEY });
    await Promise.allSettled([
      pause(round % 3 === 1 ? round % 5 : 0).then(() => deleteEngine(kv, system, engine.id, at(MIN))),
      pause(round % 3 === 2 ? round % 5 : 0).then(() =>
        updateTarget(kv, system, target.id, {
          name: target.name,
          type: "smb",
          config: VALID_TARGET_CONFIGS.smb,
          credentials: { username: "u", secret: `new-${round}`, credentialType: "password" },
        } as TargetUpdateInput, { now: at(MIN), masterKey: MASTER_KEY })
      ),
    ]);
    assert.equal(await getEngine(kv, engine.id), null, `round ${round}: engine gone`);
  }
  const targets = await listValues<StorageTarget>(kv, ["storage_targets"]);
  assert.deepEqual(targets.map((t) => t.name), [], "no orphan target");
  const vault = await listValues<VaultRecord>(kv, ["vault"]);
  assert.deepEqual(
    vault.map((v) => v.purpose),
    [],
    "no orphan vault record (a secret nobody can reach or delete)",
  );
});

Deno.test("deleteEngine() racing an operator acknowledging its targets' alerts leaves no orphan target (30 rounds)", async () => {
  using kv = await Deno.openKv(":memory:");
  const tenant = await createTenant(kv, "Acme", ["Ops"], T0);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  for (let round = 0; round < 30; round++) {
    const { engine } = await registerTestEngine(kv, scope, T0, `ack-${round}`);
    const alertIds: string[] = [];
    for (let i = 0; i < 3; i++) {
      const t = await createTarget(kv, system, targetInput(engine.id, "local", { name: `t${round}-${i}` }), {
        now: T0,
        masterKey: MASTER_KEY,
      });
      await applyCapacityReport(kv, engine.id, {
        targetId: t.id,
        totalBytes: 100,
        usedBytes: 99,
        freeBytes: 1,
      }, T0);
      alertIds.push((await kv.get<string>(openAlertKey("storage_target", t.id, "storage_critical"))).value!);
    }
    await Promise.allSettled([
      pause(round % 3 === 1 ? round % 4 : 0).then(() => deleteEngine(kv, system, engine.id, at(MIN))),
      ...alertIds.map((id, i) =>
        pause(round % 3 === 2 ? (round + i) % 4 : 0).then(() => acknowledgeAlert(kv, system, id, at(MIN)))
      ),
    ]);
    assert.equal(await getEngine(kv, engine.id), null, `round ${round}: engine gone`);
  }
  const targets = await listValues<StorageTarget>(kv, ["storage_targets"]);
  assert.deepEqual(targets.map((t) => t.name), [], "every target went with its engine");
  const byBes: Deno.KvKey[] = [];
  for await (const e of kv.list({ prefix: ["storage_targets_by_bes"] })) byBes.push(e.key);
  assert.deepEqual(byBes, []);
});
