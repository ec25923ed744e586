import assert from "node:assert/strict";
import { z } from "zod";
import { deleteEngine } from "../../domain/engines.ts";
import { ConflictError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import { checkInvariants } from "../../domain/invariants.ts";
import {
  createPolicy,
  deletePolicy,
  effectiveExcludes,
  EXACT_RPO_FIX_KEY,
  getPolicy,
  type Policy,
  PolicyCreateInput,
  PolicyFields,
  rederiveScheduleRpos,
  updatePolicy,
} from "../../domain/policies.ts";
import { pausePoliciesForStorage, resumePoliciesForStorage } from "../../domain/storage_auto_pause.ts";
import { assignHost } from "../../domain/assignments.ts";
import { enrollHost } from "../../domain/hosts.ts";
import { getProtectedObject, readProtectedFor, writeProtected } from "../../domain/protected.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { systemActor } from "../../domain/rbac.ts";
import {
  compileCron,
  deriveRpoHours,
  describeCron,
  nextRuns,
  RPO_GRACE_HOURS,
} from "../../domain/schedules.ts";
import { openAlertKey } from "../../domain/alerts.ts";
import { applyCapacityReport, createTarget, deleteTarget, getTarget } from "../../domain/storage.ts";
import { userActor } from "../../domain/auth.ts";
import {
  addUser,
  auditEntries,
  createTenant,
  dumpKv,
  registerTestEngine,
  targetInput,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

async function fixture(kv: Deno.Kv, clock = new TestClock()) {
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, clock.now(), "bes-1");
  const { engine: other } = await registerTestEngine(kv, scope, clock.now(), "bes-2");
  const target = await createTarget(kv, system, targetInput(engine.id), { now: clock.now(), masterKey });
  const otherTarget = await createTarget(kv, system, targetInput(other.id), { now: clock.now(), masterKey });
  return { tenant, engine, other, target, otherTarget, clock };
}

function input(besId: string, targetId: string, overrides: Record<string, unknown> = {}): PolicyCreateInput {
  return {
    name: "file-daily",
    besId,
    targetId,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    ...overrides,
  } as PolicyCreateInput;
}

Deno.test("PolicyFields applies every default of the guide", () => {
  const p = PolicyFields.parse({ name: "p", targetId: "t", backupType: "file", fullSchedule: "0 2 * * 0" });
  assert.deepEqual(
    [p.retentionDaily, p.retentionWeekly, p.retentionMonthly, p.encryption, p.deduplication, p.vssEnabled],
    [7, 4, 12, "AES-256-GCM", true, true],
  );
  assert.deepEqual(
    [
      p.catchUpOnReconnect,
      p.verifyAfterBackup,
      p.verifySampleCount,
      p.prePatchBackup,
      p.archiveOnHostDeactivation,
      p.enabled,
    ],
    [true, true, 50, false, true, true],
  );
  assert.equal(p.incrementalSchedule, null);
  assert.equal(p.rpoHours, null);
});

Deno.test("PolicyFields refuses every out-of-range value and unknown enum", () => {
  const base = { name: "p", targetId: "t", backupType: "file", fullSchedule: "0 2 * * 0" };
  const bad: Array<[string, unknown]> = [
    ["retentionDaily", 0],
    ["retentionDaily", 366],
    ["retentionWeekly", -1],
    ["retentionWeekly", 53],
    ["retentionMonthly", 121],
    ["verifySampleCount", 0],
    ["verifySampleCount", 10_001],
    ["backupType", "tape"],
    ["compression", "gzip"],
    ["encryption", "AES-128"],
    ["ioPriority", "urgent"],
    ["maxTransferMbps", 0],
    ["exclusionTemplate", "nope"],
    ["timeZone", "Mars/Olympus"],
    ["rpoHours", 0],
    // 500 entries of 900 characters each are valid one by one, but would not fit in one KV value.
    ["excludePaths", Array.from({ length: 500 }, (_, i) => `/data/${i}/${"x".repeat(900)}`)],
    ["excludePatterns", Array.from({ length: 9 }, () => "y".repeat(1000))],
  ];
  for (const [field, value] of bad) {
    const r = PolicyFields.safeParse({ ...base, [field]: value });
    assert.equal(r.success, false, `${field} = ${value} is refused`);
    assert.equal(r.error!.issues[0].path[0], field);
  }
  assert.equal(
    PolicyFields.safeParse({ ...base, retentionWeekly: 0, retentionMonthly: 120, retentionDaily: 365 })
      .success,
    true,
  );
  assert.equal(
    PolicyFields.safeParse({ ...base, excludePaths: Array.from({ length: 8 }, () => "z".repeat(1000)) })
      .success,
    true,
    "exactly 8,000 characters in all",
  );
});

Deno.test("compileCron() explains what is wrong with an expression", () => {
  assert.match((compileCron("* * * * * *") as { error: string }).error, /seconds are not allowed/);
  assert.match((compileCron("0 2 * *") as { error: string }).error, /5 fields/);
  assert.match((compileCron("61 * * * *") as { error: string }).error, /minute/);
  assert.match((compileCron("0 0 31 2 *") as { error: string }).error, /never fires/);
  assert.equal(compileCron("0 2 * * 1-6").ok, true);
  const r = PolicyFields.safeParse({ name: "p", targetId: "t", backupType: "file", fullSchedule: "" });
  assert.match(r.error!.issues[0].message, /is required/);
});

Deno.test("nextRuns() and describeCron() read schedules as operators do", () => {
  const runs = nextRuns("0 2 * * 0", new Date("2026-11-22T03:00:00Z"), 2);
  assert.deepEqual(runs.map((d) => d.toISOString()), [
    "2026-11-29T02:00:00.000Z",
    "2026-12-06T02:00:00.000Z",
  ]);
  assert.equal(describeCron("0 2 * * 0"), "Every Sunday at 02:00");
  assert.equal(describeCron("30 1 * * 1-6"), "Monday to Saturday at 01:30");
  assert.equal(describeCron("0 */6 * * *"), "Every 6 hours at minute 0");
});

Deno.test("deriveRpoHours() is the longest gap between scheduled runs plus the grace", () => {
  const from = new Date("2026-11-22T00:00:00Z");
  assert.equal(deriveRpoHours(["0 2 * * 0"], from), 7 * 24 + RPO_GRACE_HOURS, "weekly full only");
  assert.equal(
    deriveRpoHours(["0 2 * * 0", "0 2 * * 1-6"], from),
    24 + RPO_GRACE_HOURS,
    "daily with incrementals",
  );
  assert.equal(deriveRpoHours(["0 2 * * 0", "0 2 * * 1-5"], from), 48 + RPO_GRACE_HOURS, "no Saturday run");
  assert.equal(deriveRpoHours(["0 */6 * * *"], from), 6 + RPO_GRACE_HOURS);
});

Deno.test("rederiveScheduleRpos() corrects RPOs stored before the gap was exact, objects too, once", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  const frequent = await createPolicy(
    kv,
    system,
    input(f.engine.id, f.target.id, { name: "frequent", incrementalSchedule: "*/2 * * * *" }),
    now,
  );
  assert.equal(frequent.rpoHours, 1 + RPO_GRACE_HOURS, "a weekly full and an incremental every 2 minutes");
  const manual = await createPolicy(
    kv,
    system,
    input(f.engine.id, f.target.id, { name: "manual", incrementalSchedule: "*/2 * * * *", rpoHours: 200 }),
    now,
  );
  const weekly = await createPolicy(kv, system, input(f.engine.id, f.target.id, { name: "weekly" }), now);
  const { host } = await enrollHost(kv, { accountId: f.tenant.account.id, orgId: f.tenant.orgs[0].id }, {
    hostname: "web-01.example",
    os: "Ubuntu 24.04",
    ipAddress: "10.0.0.5",
    publicKey: generateKeyPair().publicKey,
    version: "1.0.0",
  }, now);
  for (const p of [frequent, manual, weekly]) {
    await assignHost(kv, system, { policyId: p.id, hostId: host.id }, now);
  }
  // What the sampling version stored: it saw only the weekly full (7 × 24 + 6 h), on the policy and its object.
  await kv.set(["policies", frequent.id], { ...frequent, rpoHours: 174 });
  const stale = await readProtectedFor(kv, host.id, frequent.id);
  const op = kv.atomic().check(stale.entry!);
  writeProtected(op, stale.entry!.value, { ...stale.entry!.value!, rpoHours: 174 });
  assert.ok((await op.commit()).ok);
  assert.deepEqual(await checkInvariants(kv), []);

  const later = new Date(now.getTime() + 60_000);
  assert.deepEqual(await rederiveScheduleRpos(kv, later), { policies: 1, objects: 1, skipped: false });
  assert.equal((await getPolicy(kv, frequent.id))!.rpoHours, 1 + RPO_GRACE_HOURS);
  const objectOf = async (p: Policy) =>
    (await getProtectedObject(kv, (await readProtectedFor(kv, host.id, p.id)).pointer.value!))!;
  assert.equal((await objectOf(frequent)).rpoHours, 1 + RPO_GRACE_HOURS);
  assert.equal((await getPolicy(kv, manual.id))!.rpoHours, 200, "an operator's RPO is the operator's");
  assert.equal((await objectOf(manual)).rpoHours, 200);
  assert.deepEqual(await getPolicy(kv, weekly.id), weekly, "a policy already right is not written");
  assert.deepEqual(await checkInvariants(kv), [], "the object's RPO-due index moved with it");
  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) => /re-derived/.test(e.summary));
  assert.equal(audit.length, 1);
  assert.match(audit[0].summary, /frequent.*174 h → 7 h/);

  // A second start: the marker skips it, nothing changes.
  const after = await dumpKv(kv);
  assert.deepEqual(await rederiveScheduleRpos(kv, later), { policies: 0, objects: 0, skipped: true });
  assert.deepEqual(await dumpKv(kv), after);
  // And without the marker (a crash before it was written) a rerun finds nothing left to change.
  await kv.delete(EXACT_RPO_FIX_KEY);
  const rerun = new Date(later.getTime() + 60_000);
  assert.deepEqual(await rederiveScheduleRpos(kv, rerun), { policies: 0, objects: 0, skipped: false });
  assert.deepEqual(
    (await dumpKv(kv)).filter((e) => e.key[0] !== EXACT_RPO_FIX_KEY[0]),
    after.filter((e) => e.key[0] !== EXACT_RPO_FIX_KEY[0]),
  );
});

Deno.test("createPolicy() refuses a storage target of another BES and writes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await assert.rejects(
    () => createPolicy(kv, system, input(f.engine.id, f.otherTarget.id), f.clock.now()),
    ValidationError,
  );
  assert.equal((await Array.fromAsync(kv.list({ prefix: ["policies"] }))).length, 0);
  assert.equal((await getTarget(kv, f.otherTarget.id))!.policyCount, 0);
});

Deno.test("createPolicy() derives the RPO, counts the policy on its target, and expands exclusion templates", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const p = await createPolicy(
    kv,
    system,
    input(f.engine.id, f.target.id, {
      incrementalSchedule: "0 2 * * 1-6",
      exclusionTemplate: "developer",
      excludePatterns: ["*.iso"],
    }),
    f.clock.now(),
  );
  assert.equal(p.rpoHours, 24 + RPO_GRACE_HOURS);
  assert.equal(p.rpoDerived, true);
  assert.equal((await getTarget(kv, f.target.id))!.policyCount, 1);
  assert.deepEqual(effectiveExcludes(p).slice(-2), ["*.pyc", "*.iso"]);
  await assert.rejects(() => deleteTarget(kv, system, f.target.id, f.clock.now()), new RegExp(p.name));
});

Deno.test("updatePolicy() keeps the BES, moves targets only within it, and keeps pausedReason", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const p = await createPolicy(kv, system, input(f.engine.id, f.target.id), f.clock.now());
  const fields = { name: p.name, backupType: "file", fullSchedule: p.fullSchedule } as const;
  await assert.rejects(
    () =>
      updatePolicy(kv, system, p.id, { ...fields, targetId: f.target.id, besId: f.other.id }, f.clock.now()),
    ValidationError,
  );
  await assert.rejects(
    () => updatePolicy(kv, system, p.id, { ...fields, targetId: f.otherTarget.id }, f.clock.now()),
    ValidationError,
  );
  const second = await createTarget(kv, system, { ...targetInput(f.engine.id), name: "second" }, {
    now: f.clock.now(),
    masterKey,
  });
  await kv.set(["policies", p.id], { ...(await getPolicy(kv, p.id))!, pausedReason: "storage_critical" });
  const moved = await updatePolicy(
    kv,
    system,
    p.id,
    { ...fields, targetId: second.id, enabled: false },
    f.clock.now(),
  );
  assert.equal(moved.besId, f.engine.id);
  assert.equal(moved.pausedReason, "storage_critical", "an edit never clears the system's pause");
  assert.equal(moved.enabled, false);
  assert.equal((await getTarget(kv, f.target.id))!.policyCount, 0);
  assert.equal((await getTarget(kv, second.id))!.policyCount, 1);
  assert.deepEqual(await checkInvariants(kv), []);
});

Deno.test("updatePolicy() judges another besId only for an actor who may edit the policy: outsiders get NotFoundError", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const p = await createPolicy(kv, system, input(f.engine.id, f.target.id), f.clock.now());
  const stranger = await createTenant(kv, "Other", ["Ops"], f.clock.now());
  const outsider = userActor(
    await addUser(kv, stranger, "admin@other.example", "admin", "all", f.clock.now()),
  );
  const change = {
    name: "x",
    backupType: "file",
    fullSchedule: p.fullSchedule,
    targetId: p.targetId,
  } as const;
  await assert.rejects(
    () => updatePolicy(kv, outsider, p.id, { ...change, besId: f.other.id }, f.clock.now()),
    NotFoundError,
  );
  await assert.rejects(
    () => updatePolicy(kv, system, p.id, { ...change, besId: f.other.id }, f.clock.now()),
    (e) => e instanceof ValidationError && Boolean(e.fields.besId),
  );
  assert.deepEqual(await getPolicy(kv, p.id), p, "nothing changed");
});

Deno.test("a policy created on a critical target starts paused and resumes with the target", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await applyCapacityReport(kv, f.engine.id, {
    targetId: f.target.id,
    totalBytes: 100,
    usedBytes: 99,
    freeBytes: 1,
  }, f.clock.now());
  const p = await createPolicy(kv, system, input(f.engine.id, f.target.id), f.clock.now());
  assert.equal(p.pausedReason, "storage_critical");
  f.clock.advance(60_000);
  await applyCapacityReport(kv, f.engine.id, {
    targetId: f.target.id,
    totalBytes: 100,
    usedBytes: 10,
    freeBytes: 90,
  }, f.clock.now());
  assert.equal((await getPolicy(kv, p.id))!.pausedReason, null);
});

Deno.test("deletePolicy() removes the policy, its children and its count on the target", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const p = await createPolicy(kv, system, input(f.engine.id, f.target.id), f.clock.now());
  await kv.set(["assignments_by_policy", p.id, "h1"], { hostId: "h1" });
  await kv.set(["hooks_by_policy", p.id, "k1"], { id: "k1" });
  await deletePolicy(kv, system, p.id, f.clock.now());
  const left = (await Array.fromAsync(kv.list({ prefix: [] }))).filter((e) =>
    JSON.stringify(e.key).includes(p.id) && e.key[0] !== "audit"
  );
  assert.deepEqual(left.map((e) => e.key), []);
  assert.equal((await getTarget(kv, f.target.id))!.policyCount, 0);
  await assert.rejects(() => deletePolicy(kv, system, p.id, f.clock.now()), NotFoundError);
});

Deno.test("invariant 1 under races: createPolicy vs deleteTarget never leaves a policy on a missing target", async () => {
  for (let i = 0; i < 30; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const results = await Promise.allSettled(
      i % 2
        ? [
          createPolicy(kv, system, input(f.engine.id, f.target.id), f.clock.now()),
          deleteTarget(kv, system, f.target.id, f.clock.now()),
        ]
        : [
          deleteTarget(kv, system, f.target.id, f.clock.now()),
          createPolicy(kv, system, input(f.engine.id, f.target.id), f.clock.now()),
        ],
    );
    for (const r of results) {
      if (r.status === "rejected") {
        assert.ok(r.reason instanceof ConflictError || r.reason instanceof ValidationError, String(r.reason));
      }
    }
    assert.deepEqual(await checkInvariants(kv), [], `iteration ${i}`);
  }
});

Deno.test("invariants 2 and 4 under races: createPolicy vs deleteEngine never leaves an orphan policy", async () => {
  for (let i = 0; i < 30; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    await Promise.allSettled([
      createPolicy(kv, system, input(f.engine.id, f.target.id), f.clock.now()),
      deleteEngine(kv, system, f.engine.id, f.clock.now()),
      createPolicy(kv, system, input(f.engine.id, f.target.id, { name: "second" }), f.clock.now()),
    ]);
    const problems = await checkInvariants(kv);
    assert.deepEqual(problems, [], `iteration ${i}`);
    for await (const e of kv.list<{ besId: string }>({ prefix: ["policies"] })) {
      assert.ok(
        (await kv.get(["engines", e.value.besId])).value,
        `policy ${String(e.key[1])} has its engine`,
      );
    }
  }
});

Deno.test("the policy input schema is the one the API validates with", () => {
  const r = PolicyCreateInput.safeParse({
    name: "",
    besId: "",
    targetId: "",
    backupType: "x",
    fullSchedule: "* * * * * *",
  });
  assert.equal(r.success, false);
  const fields = new Set(r.error!.issues.map((i) => i.path[0]));
  for (const f of ["name", "besId", "targetId", "backupType", "fullSchedule"]) assert.ok(fields.has(f), f);
  assert.ok(z.ZodError);
});

Deno.test("invariant 8 under races: operator toggles and capacity flips never confuse enabled with paused", async () => {
  for (let i = 0; i < 30; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const p = await createPolicy(kv, system, input(f.engine.id, f.target.id), f.clock.now());
    const report = (used: number, at: number) =>
      applyCapacityReport(kv, f.engine.id, {
        targetId: f.target.id,
        totalBytes: 100,
        usedBytes: used,
        freeBytes: 100 - used,
      }, new Date(f.clock.now().getTime() + at));
    const toggle = async (enabled: boolean) => {
      const current = (await getPolicy(kv, p.id))!;
      await updatePolicy(kv, system, p.id, { ...current, enabled }, f.clock.now()).catch((e) => {
        if (!(e instanceof ConflictError)) throw e;
      });
    };
    // Critical, then (concurrently) the operator disables while the target recovers.
    await report(99, 60_000);
    assert.equal((await getPolicy(kv, p.id))!.pausedReason, "storage_critical");
    await Promise.all([toggle(false), report(10, 120_000), toggle(false)]);
    const after = (await getPolicy(kv, p.id))!;
    assert.equal(after.enabled, false, `iteration ${i}: the operator's disable stands`);
    assert.equal(after.pausedReason, null, `iteration ${i}: the system's pause was lifted with the recovery`);
    // Critical again while the operator enables: enabled, but paused by the system.
    await Promise.all([report(99, 180_000), toggle(true)]);
    const last = (await getPolicy(kv, p.id))!;
    assert.equal(last.enabled, true, `iteration ${i}`);
    assert.equal(
      last.pausedReason,
      "storage_critical",
      `iteration ${i}: critical storage pauses an enabled policy`,
    );
  }
});

Deno.test("a pause or resume acts on the target as it is now: a late follow-up of an overtaken report changes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const p = await createPolicy(kv, system, input(f.engine.id, f.target.id), f.clock.now());
  const report = (used: number, minute: number) =>
    applyCapacityReport(kv, f.engine.id, {
      targetId: f.target.id,
      totalBytes: 100,
      usedBytes: used,
      freeBytes: 100 - used,
    }, new Date(f.clock.now().getTime() + minute * 60_000));
  assert.deepEqual((await report(99, 1))!.paused, [p.id]);
  assert.deepEqual((await report(10, 2))!.resumed, [p.id]);
  // The critical report's pause, running late (after the healthy report and its resume):
  assert.deepEqual(await pausePoliciesForStorage(kv, f.target.id, f.clock.now()), []);
  assert.equal((await getPolicy(kv, p.id))!.pausedReason, null);
  assert.deepEqual((await report(99, 3))!.paused, [p.id]);
  // And a healthy report's resume running after the target turned critical again:
  assert.deepEqual(await resumePoliciesForStorage(kv, f.target.id, f.clock.now()), []);
  assert.equal((await getPolicy(kv, p.id))!.pausedReason, "storage_critical");
});

Deno.test("invariant 8 under races with the early warning: paused policies resume when the target is healthy, though projected full within 14 days", async () => {
  const TOTAL = 1_000_000;
  const DAY = 86_400_000;
  for (let i = 0; i < 25; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const t0 = f.clock.now().getTime();
    const running = await createPolicy(
      kv,
      system,
      input(f.engine.id, f.target.id, { name: "running" }),
      f.clock.now(),
    );
    const off = await createPolicy(
      kv,
      system,
      input(f.engine.id, f.target.id, { name: "off", enabled: false }),
      f.clock.now(),
    );
    const report = (used: number, ms: number) =>
      applyCapacityReport(kv, f.engine.id, {
        targetId: f.target.id,
        totalBytes: TOTAL,
        usedBytes: used,
        freeBytes: TOTAL - used,
      }, new Date(t0 + ms));
    const edit = async (id: string, change: { enabled?: boolean; name?: string }) => {
      for (;;) {
        const current = (await getPolicy(kv, id))!;
        try {
          return await updatePolicy(kv, system, id, { ...current, ...change }, f.clock.now());
        } catch (e) {
          if (!(e instanceof ConflictError)) throw e;
        }
      }
    };
    const policiesNow = async () => [(await getPolicy(kv, running.id))!, (await getPolicy(kv, off.id))!];
    /** Invariant 8 in both directions: paused by the system exactly while the target is critical. */
    const assertInvariant8 = async (when: string) => {
      const target = (await getTarget(kv, f.target.id))!;
      for (const p of await policiesNow()) {
        assert.equal(
          p.pausedReason,
          target.health === "critical" ? "storage_critical" : null,
          `iteration ${i}, ${when}: ${p.name} with the target ${target.health}`,
        );
      }
    };

    // A fast-growing target: 10 % → 96 % in a day is critical, while operators edit both policies.
    await report(100_000, 0);
    await Promise.all([
      report(960_000, DAY),
      edit(running.id, { name: "running-renamed" }),
      edit(off.id, { enabled: false }),
    ]);
    let target = (await getTarget(kv, f.target.id))!;
    assert.equal(target.health, "critical");
    await assertInvariant8("critical");

    // Space freed to 80 %: below the alert threshold, so healthy — yet still growing fast enough to be
    // full within 14 days (the early warning). Two such reports race each other and the edits.
    await Promise.all([
      report(800_000, 2 * DAY),
      edit(running.id, { enabled: true }),
      report(801_000, 2 * DAY + 60_000),
      edit(off.id, { name: "off-renamed" }),
    ]);
    target = (await getTarget(kv, f.target.id))!;
    assert.equal(target.health, "healthy", `iteration ${i}: ${target.capacity!.statusReason}`);
    assert.equal(target.capacity!.fullSoon, true, `iteration ${i}: the early warning is present`);
    assert.ok((await kv.get(openAlertKey("storage_target", f.target.id, "storage_full_soon"))).value);
    assert.equal((await kv.get(openAlertKey("storage_target", f.target.id, "storage_critical"))).value, null);
    await assertInvariant8("healthy with the early warning");
    const [r, o] = await policiesNow();
    assert.deepEqual([r.enabled, o.enabled], [true, false], `iteration ${i}: the operators' switches stand`);

    // Critical and healthy-with-early-warning reports racing: whichever lands last decides, and the
    // policies follow it (a pause or resume acts on the target as it is, never on a stale report).
    await Promise.all([
      report(970_000, 3 * DAY),
      report(790_000, 3 * DAY + 30_000),
      edit(running.id, { enabled: false }),
      edit(off.id, { enabled: true }),
    ]);
    await assertInvariant8("after racing reports");
    // The next report settles it healthy: everything paused resumes.
    await report(780_000, 3 * DAY + 90_000);
    target = (await getTarget(kv, f.target.id))!;
    assert.equal(target.health, "healthy");
    await assertInvariant8("settled healthy");
    assert.deepEqual((await policiesNow()).map((p) => p.enabled), [false, true], `iteration ${i}`);
  }
});
