import assert from "node:assert/strict";
import fc from "fast-check";
import { assignHost, removeAssignment, setAssignmentState } from "../../domain/assignments.ts";
import { userActor } from "../../domain/auth.ts";
import {
  failedBackupsQueue,
  readHeatmap,
  readLast24h,
  readSummary,
  rpoBreachQueue,
  verificationFailuresQueue,
} from "../../domain/dashboard.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { checkInvariants } from "../../domain/invariants.ts";
import { applyHostHeartbeat, enrollHost, type Host } from "../../domain/hosts.ts";
import { applyResult, claimJobs, type Job } from "../../domain/job_queue.ts";
import { createPolicy, type Policy, updatePolicy } from "../../domain/policies.ts";
import { listProtectedObjects, type ProtectedObject, sweepRpoBreaches } from "../../domain/protected.ts";
import { type Actor, systemActor } from "../../domain/rbac.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import type { Run } from "../../domain/runs.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import type { Assignment } from "../../domain/assignments.ts";
import { addUser, createTenant, engineMetrics, registerTestEngine, targetInput } from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);
const MIN = 60_000;
const HOUR = 60 * MIN;

/** Two orgs, one engine, target and policy each (RPO 3 h, incrementals every minute), three hosts each. */
async function world(kv: Deno.Kv, start: Date) {
  const tenant = await createTenant(kv, "Acme", ["Ops", "Lab"], start);
  const policies: Policy[] = [];
  const hosts: Host[] = [];
  for (const [i, org] of tenant.orgs.entries()) {
    const scope = { accountId: tenant.account.id, orgId: org.id };
    const { engine } = await registerTestEngine(kv, scope, start);
    await applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, start);
    const target = await createTarget(kv, system, targetInput(engine.id), { now: start, masterKey });
    policies.push(
      await createPolicy(kv, system, {
        name: `policy-${i}`,
        besId: engine.id,
        targetId: target.id,
        backupType: "file",
        fullSchedule: "0 0 1 1 *",
        incrementalSchedule: "* * * * *",
        rpoHours: 3,
      }, start) as Policy,
    );
    for (let h = 0; h < 3; h++) {
      const { host } = await enrollHost(kv, scope, {
        hostname: `h${i}${h}.acme.example`,
        os: "Debian 12",
        ipAddress: "10.0.0.2",
        publicKey: generateKeyPair().publicKey,
        version: "1",
      }, start);
      hosts.push(host);
    }
  }
  const admin = userActor(await addUser(kv, tenant, "admin@acme.example", "admin", "all", start));
  const opsViewer = userActor(
    await addUser(kv, tenant, "ops@acme.example", "viewer", [tenant.orgs[0]], start),
  );
  return { tenant, policies, hosts, admin, opsViewer };
}

type Command =
  | { kind: "assign"; host: number }
  | { kind: "pause"; host: number }
  | { kind: "resume"; host: number }
  | { kind: "remove"; host: number }
  | { kind: "backups"; outcomes: ("success" | "warning" | "failed")[]; lagMinutes: number[] }
  | { kind: "advance"; minutes: number }
  | { kind: "sweep" };

const command: fc.Arbitrary<Command> = fc.oneof(
  fc.record({ kind: fc.constant("assign" as const), host: fc.nat(5) }),
  fc.record({ kind: fc.constant("pause" as const), host: fc.nat(5) }),
  fc.record({ kind: fc.constant("resume" as const), host: fc.nat(5) }),
  fc.record({ kind: fc.constant("remove" as const), host: fc.nat(5) }),
  fc.record({
    kind: fc.constant("backups" as const),
    outcomes: fc.array(fc.constantFrom("success" as const, "warning" as const, "failed" as const), {
      minLength: 6,
      maxLength: 6,
    }),
    lagMinutes: fc.array(fc.nat(90), { minLength: 6, maxLength: 6 }),
  }),
  fc.record({ kind: fc.constant("advance" as const), minutes: fc.integer({ min: 1, max: 26 * 60 }) }),
  fc.record({ kind: fc.constant("sweep" as const) }),
);

async function values<T>(kv: Deno.Kv, prefix: string): Promise<T[]> {
  return (await Array.fromAsync(kv.list<T>({ prefix: [prefix] }))).map((e) => e.value);
}

/**
 * The dashboard's figures recomputed from raw records only (runs, assignments, hosts) and the test's
 * own record of when each assignment last became active — none of the counters or indexes.
 */
async function recompute(
  kv: Deno.Kv,
  orgs: Set<string> | "all",
  activeSince: Map<string, number>,
  now: Date,
) {
  const visible = (orgId: string | null) => orgs === "all" || orgId === null || orgs.has(orgId);
  const runs = (await values<Run>(kv, "runs")).filter((r) => visible(r.orgId));
  const assignments = (await values<Assignment>(kv, "assignments")).filter((a) => visible(a.orgId));
  const hosts = (await values<Host>(kv, "hosts")).filter((h) => visible(h.orgId));
  const policies = await values<Policy>(kv, "policies");
  const active = assignments.filter((a) => a.state === "active");
  let atRisk = 0;
  let breach = 0;
  for (const a of active) {
    const finished = runs.filter((r) =>
      r.policyId === a.policyId && r.hostId === a.hostId &&
      ["success", "warning", "failed"].includes(r.status)
    ).sort((x, y) => Date.parse(x.endedAt!) - Date.parse(y.endedAt!));
    if (finished.at(-1)?.status === "failed") atRisk++;
    const lastGood = finished.filter((r) => r.status !== "failed").at(-1);
    const since = lastGood ? Date.parse(lastGood.endedAt!) : activeSince.get(`${a.hostId}/${a.policyId}`)!;
    const rpo = policies.find((p) => p.id === a.policyId)!.rpoHours * HOUR;
    if (now.getTime() - since > rpo) breach++;
  }
  const windowStart = Math.floor(now.getTime() / MIN) * MIN - 1439 * MIN;
  const last24h = { success: 0, warning: 0, failed: 0 };
  for (const r of runs) {
    if (!["success", "warning", "failed"].includes(r.status)) continue;
    const t = Date.parse(r.endedAt!);
    if (t >= windowStart && t <= now.getTime()) last24h[r.status as keyof typeof last24h]++;
  }
  const heat = new Map<string, number>();
  for (const r of runs) {
    if (!["success", "warning", "failed"].includes(r.status)) continue;
    const key = `${r.policyId}/${r.endedAt!.slice(0, 10)}/${r.status}`;
    heat.set(key, (heat.get(key) ?? 0) + 1);
  }
  // The failed-backups queue: every (policy, host) whose newest outcome (by end time) failed.
  const newest = new Map<string, Run>();
  for (const r of runs) {
    if (!["success", "warning", "failed"].includes(r.status)) continue;
    const key = `${r.policyId}/${r.hostId}`;
    const seen = newest.get(key);
    if (!seen || Date.parse(r.endedAt!) >= Date.parse(seen.endedAt!)) newest.set(key, r);
  }
  const failing = [...newest.values()].filter((r) => r.status === "failed").map((r) => r.id).sort();
  return {
    failing,
    summary: {
      protected: active.length,
      atRisk,
      rpoBreach: breach,
      unprotectedHosts: hosts.filter((h) => !active.some((a) => a.hostId === h.id)).length,
    },
    last24h,
    heat,
  };
}

async function assertDashboardMatches(
  kv: Deno.Kv,
  w: Awaited<ReturnType<typeof world>>,
  activeSince: Map<string, number>,
  now: Date,
  context: string,
) {
  for (const [actor, orgs] of [[w.admin, "all"], [w.opsViewer, new Set([w.tenant.orgs[0].id])]] as const) {
    const expected = await recompute(kv, orgs, activeSince, now);
    assert.deepEqual(
      await readSummary(kv, actor, now),
      expected.summary,
      `summary, ${actor.label}, ${context}`,
    );
    assert.deepEqual(
      await readLast24h(kv, actor, now),
      expected.last24h,
      `last 24 h, ${actor.label}, ${context}`,
    );
    const heatmap = await readHeatmap(kv, actor, now, { days: 30 });
    for (const row of heatmap.rows) {
      for (const d of row.days) {
        for (const status of ["success", "warning", "failed"] as const) {
          assert.equal(
            d[status],
            expected.heat.get(`${row.policyId}/${d.day}/${status}`) ?? 0,
            `heatmap ${row.policyName} ${d.day} ${status}, ${context}`,
          );
        }
      }
    }
    assert.deepEqual(
      (await failedBackupsQueue(kv, actor, 1000)).map((row) => row.run.id).sort(),
      expected.failing,
      `failed backups queue, ${actor.label}, ${context}`,
    );
    // The RPO-breach list agrees with the count.
    const listed = await listProtectedObjects(kv, actor, { rpoBreach: "true", limit: 200 }, now);
    assert.equal(listed.values.length, expected.summary.rpoBreach, `breach list, ${actor.label}, ${context}`);
  }
}

Deno.test("dashboard counts equal an independent recomputation from raw records after a random history", async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(command, { minLength: 5, maxLength: 30 }), async (commands) => {
      using kv = await Deno.openKv(":memory:");
      let now = new Date("2026-11-01T00:00:00Z");
      const w = await world(kv, now);
      const activeSince = new Map<string, number>();
      const assignmentOf = new Map<number, string>();
      const policyOf = (host: number) => w.policies[host < 3 ? 0 : 1];
      for (const [step, c] of commands.entries()) {
        const context = `step ${step} ${JSON.stringify(c)}`;
        if (c.kind === "assign" || c.kind === "resume" || c.kind === "pause" || c.kind === "remove") {
          const host = w.hosts[c.host];
          const policy = policyOf(c.host);
          const key = `${host.id}/${policy.id}`;
          const id = assignmentOf.get(c.host);
          if (c.kind === "assign" && !id) {
            const { assignment } = await assignHost(
              kv,
              system,
              { policyId: policy.id, hostId: host.id },
              now,
            );
            assignmentOf.set(c.host, assignment.id);
            activeSince.set(key, now.getTime());
          } else if (id && c.kind === "remove") {
            await removeAssignment(kv, system, id, now);
            assignmentOf.delete(c.host);
          } else if (id && (c.kind === "pause" || c.kind === "resume")) {
            const state = (await kv.get<Assignment>(["assignments", id])).value!.state;
            const next = c.kind === "pause" ? "paused" : "active";
            if (state !== next) {
              await setAssignmentState(kv, system, id, next, now);
              if (next === "active") activeSince.set(key, now.getTime());
            }
          }
        } else if (c.kind === "advance") {
          now = new Date(now.getTime() + c.minutes * MIN);
        } else if (c.kind === "sweep") {
          await sweepRpoBreaches(kv, now);
        } else {
          // Every host checks in, the minute tick dispatches, each agent reports an outcome that ended
          // a random while ago (results arrive out of order).
          for (const h of w.hosts) {
            await applyHostHeartbeat(kv, h.id, { version: "1", metrics: engineMetrics() }, now);
          }
          await runSchedulerTick(kv, now);
          for (const [i, h] of w.hosts.entries()) {
            const jobs: Job[] = await claimJobs(kv, `agent:${h.id}`, 10, now);
            for (const job of jobs) {
              const status = c.outcomes[i];
              const ended = new Date(now.getTime() - c.lagMinutes[i] * MIN);
              const { job: done } = await applyResult(kv, job.principal, job.id, {
                status,
                startedAt: new Date(ended.getTime() - MIN).toISOString(),
                endedAt: ended.toISOString(),
                bytesTransferred: 10,
                protectedBytes: 100,
                error: status === "success" ? null : { reason: "TARGET_UNREACHABLE", message: "boom" },
                retryable: true,
              }, now);
              await applyJobOutcome(kv, done, now);
            }
          }
          now = new Date(now.getTime() + MIN);
        }
        await assertDashboardMatches(kv, w, activeSince, now, context);
      }
      assert.deepEqual(await checkInvariants(kv), [], "counters equal what they count");
    }),
    { numRuns: 12 },
  );
});

Deno.test("RPO breach boundaries: exactly RPO is within, one millisecond more is a breach", async () => {
  using kv = await Deno.openKv(":memory:");
  const start = new Date("2026-11-01T00:00:00Z");
  const w = await world(kv, start);
  const [host] = w.hosts;
  await assignHost(kv, system, { policyId: w.policies[0].id, hostId: host.id }, start);
  const due = start.getTime() + 3 * HOUR;
  const breaches = async (t: number) => (await readSummary(kv, w.admin, new Date(t))).rpoBreach;
  assert.equal(await breaches(due), 0, "never backed up, at exactly RPO: within");
  assert.equal(await breaches(due + 1), 1, "one millisecond past RPO: breach (before any sweep)");
  assert.deepEqual(
    await sweepRpoBreaches(kv, new Date(due)),
    { breached: 0 },
    "the sweep agrees at the boundary",
  );
  assert.deepEqual(await sweepRpoBreaches(kv, new Date(due + 1)), { breached: 1 });
  assert.deepEqual(await sweepRpoBreaches(kv, new Date(due + 2)), { breached: 0 }, "idempotent");
  assert.equal(await breaches(due + 1), 1, "swept: counted once, not twice");
  const queue = await rpoBreachQueue(kv, w.admin, new Date(due + 30 * MIN));
  assert.equal(queue.length, 1);
  assert.equal(queue[0].breachMs, 30 * MIN);
  const alerts = (await values<{ reason: string; severity: string; status: string }>(kv, "alerts"))
    .filter((a) => a.reason === "rpo_breach");
  assert.deepEqual(alerts.map((a) => [a.severity, a.status]), [["critical", "open"]]);

  // A successful backup that ended at t restarts the clock: breach again only after t + RPO.
  const t = due + HOUR;
  await runSchedulerTick(kv, new Date(t));
  const [job] = await claimJobs(kv, `agent:${host.id}`, 1, new Date(t));
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "success",
    startedAt: new Date(t - MIN).toISOString(),
    endedAt: new Date(t).toISOString(),
    bytesTransferred: 1,
    protectedBytes: 1,
  }, new Date(t));
  await applyJobOutcome(kv, done, new Date(t));
  assert.equal(await breaches(t), 0, "the success ends the breach");
  assert.equal(await breaches(t + 3 * HOUR), 0);
  assert.equal(await breaches(t + 3 * HOUR + 1), 1);
  const resolved = (await values<{ reason: string; status: string }>(kv, "alerts"))
    .filter((a) => a.reason === "rpo_breach");
  assert.deepEqual(resolved.map((a) => a.status), ["resolved"], "the breach alert resolves on recovery");
  const events = await values<{ event: string; reason: string }>(kv, "alert_events");
  assert.deepEqual(
    events.filter((e) => e.reason === "rpo_breach").map((e) => e.event).sort(),
    ["opened", "resolved"],
    "one opened and one resolved notification event",
  );

  // Paused objects never breach.
  const [assignment] = await values<Assignment>(kv, "assignments");
  await setAssignmentState(kv, system, assignment.id, "paused", new Date(t + HOUR));
  assert.equal(await breaches(t + 10 * HOUR), 0, "paused: no breach");
});

Deno.test("five consecutive failures of one object are one alert with a repeat counter; a success resolves it", async () => {
  using kv = await Deno.openKv(":memory:");
  let now = new Date("2026-11-01T00:00:00Z");
  const w = await world(kv, now);
  const host = w.hosts[0];
  await assignHost(kv, system, { policyId: w.policies[0].id, hostId: host.id }, now);
  const backup = async (status: "success" | "failed") => {
    await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, now);
    await runSchedulerTick(kv, now);
    const [job] = await claimJobs(kv, `agent:${host.id}`, 1, now);
    const { job: done } = await applyResult(kv, job.principal, job.id, {
      status,
      startedAt: now.toISOString(),
      endedAt: now.toISOString(),
      bytesTransferred: 0,
      protectedBytes: 0,
      error: status === "failed"
        ? { reason: "TARGET_UNREACHABLE", message: "NFS server not responding\nmore" }
        : null,
      retryable: true,
    }, now);
    await applyJobOutcome(kv, done, now);
    now = new Date(now.getTime() + MIN);
  };
  for (let i = 0; i < 5; i++) await backup("failed");
  const failed =
    (await values<{ reason: string; status: string; count: number; message: string }>(kv, "alerts"))
      .filter((a) => a.reason === "backup_failed");
  assert.equal(failed.length, 1, "one alert, not five");
  assert.equal(failed[0].count, 5);
  assert.equal(failed[0].status, "open");
  assert.match(failed[0].message, /NFS server not responding$/);
  assert.equal((await readSummary(kv, w.admin, now)).atRisk, 1);
  const queue = await failedBackupsQueue(kv, w.admin);
  assert.equal(queue.length, 1, "one row per (policy, host): the latest failure");
  assert.equal(queue[0].hostName, host.hostname);
  await backup("success");
  const after = (await values<{ reason: string; status: string }>(kv, "alerts")).filter((a) =>
    a.reason === "backup_failed"
  );
  assert.deepEqual(after.map((a) => a.status), ["resolved"]);
  assert.equal((await readSummary(kv, w.admin, now)).atRisk, 0);
  assert.deepEqual(await failedBackupsQueue(kv, w.admin), []);
  const events = (await values<{ event: string; reason: string }>(kv, "alert_events"))
    .filter((e) => e.reason === "backup_failed").map((e) => e.event).sort();
  assert.deepEqual(events, ["opened", "resolved"], "repeats write no notification events");
});

Deno.test("a failed verification lands in the verification queue, scoped by org", async () => {
  using kv = await Deno.openKv(":memory:");
  const now = new Date("2026-11-01T00:00:00Z");
  const w = await world(kv, now);
  const host = w.hosts[3]; // org Lab
  await assignHost(kv, system, { policyId: w.policies[1].id, hostId: host.id }, now);
  await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, now);
  await runSchedulerTick(kv, now);
  const [job] = await claimJobs(kv, `agent:${host.id}`, 1, now);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "success",
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 1,
    protectedBytes: 1,
    output: { restorePoint: { id: "rp-1", type: "incremental", completedAt: now.toISOString() } },
  }, now);
  await applyJobOutcome(kv, done, now);
  const point = (await values<{ id: string }>(kv, "restore_points"))[0];
  const [object] = await values<ProtectedObject>(kv, "protected_objects");
  assert.equal(object.lastRestorePointId, point.id, "the object keeps its newest restore point (deep link)");
  const verifyJobs = (await values<Job>(kv, "jobs")).filter((j) => j.kind === "verify");
  assert.equal(verifyJobs.length, 1, "a verify job follows the backup");
  const [claimed] = await claimJobs(kv, verifyJobs[0].principal, 1, now);
  const { job: verified } = await applyResult(kv, claimed.principal, claimed.id, {
    status: "failed",
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    error: { reason: "CHECKSUM", message: "chunk 12 mismatch" },
    output: { verification: { status: "failed" } },
  }, now);
  await applyJobOutcome(kv, verified, now);
  const rows = await verificationFailuresQueue(kv, w.admin);
  assert.equal(rows.length, 1);
  assert.equal(rows[0].hostName, host.hostname);
  assert.equal(rows[0].policyName, "policy-1");
  assert.deepEqual(await verificationFailuresQueue(kv, w.opsViewer), [], "another org's point is not shown");
});

/** Used by the list test below. */
function names(objects: ProtectedObject[]) {
  return objects.map((o) => o.name);
}

Deno.test("the protected-objects list pages with a cursor through every filter and never repeats a row", async () => {
  using kv = await Deno.openKv(":memory:");
  const now = new Date("2026-11-01T00:00:00Z");
  const w = await world(kv, now);
  for (const [i, host] of w.hosts.entries()) {
    await assignHost(kv, system, { policyId: w.policies[i < 3 ? 0 : 1].id, hostId: host.id }, now);
  }
  const all = async (actor: Actor, filter: Record<string, string | number>) => {
    const out: ProtectedObject[] = [];
    let cursor = "";
    do {
      const page = await listProtectedObjects(kv, actor, { ...filter, cursor, limit: 2 }, now);
      out.push(...page.values);
      cursor = page.cursor;
    } while (cursor);
    return out;
  };
  assert.deepEqual(names(await all(w.admin, {})), w.hosts.map((h) => h.hostname).sort());
  assert.deepEqual(names(await all(w.opsViewer, {})), w.hosts.slice(0, 3).map((h) => h.hostname).sort());
  assert.deepEqual(names(await all(w.admin, { q: "H1" })), [
    "h10.acme.example",
    "h11.acme.example",
    "h12.acme.example",
  ]);
  assert.deepEqual(names(await all(w.admin, { orgId: w.tenant.orgs[1].id, q: "h11" })), ["h11.acme.example"]);
  assert.deepEqual(names(await all(w.admin, { hostId: w.hosts[4].id })), ["h11.acme.example"]);
  assert.deepEqual(names(await all(w.admin, { lastBackupStatus: "never", type: "fileset" })).length, 6);
  assert.deepEqual(names(await all(w.admin, { lastBackupStatus: "failed" })), []);
  assert.deepEqual(names(await all(w.admin, { rpoBreach: "false" })).length, 6);
  const later = new Date(now.getTime() + 4 * HOUR);
  const breached = await listProtectedObjects(kv, w.opsViewer, { rpoBreach: "true" }, later);
  assert.deepEqual(names(breached.values).sort(), w.hosts.slice(0, 3).map((h) => h.hostname).sort());
  const bad = await listProtectedObjects(kv, w.admin, { type: "toaster", limit: 9999 } as never, now);
  assert.equal(bad.values.length, 6, "an unknown filter value falls back to no filter, never an error page");
});

Deno.test("a policy's new RPO reaches its objects: breaches start and end with it, the alert resolves", async () => {
  using kv = await Deno.openKv(":memory:");
  const start = new Date("2026-11-01T00:00:00Z");
  const w = await world(kv, start);
  await assignHost(kv, system, { policyId: w.policies[0].id, hostId: w.hosts[0].id }, start);
  const at2h = new Date(start.getTime() + 2 * HOUR);
  assert.equal((await readSummary(kv, w.admin, at2h)).rpoBreach, 0, "RPO 3 h: within after 2 h");
  await updatePolicy(kv, system, w.policies[0].id, { ...policyInput(w.policies[0]), rpoHours: 1 }, at2h);
  assert.equal((await readSummary(kv, w.admin, at2h)).rpoBreach, 1, "RPO 1 h: in breach at once");
  await sweepRpoBreaches(kv, at2h);
  assert.equal((await readSummary(kv, w.admin, at2h)).rpoBreach, 1, "swept: still one");
  await updatePolicy(kv, system, w.policies[0].id, { ...policyInput(w.policies[0]), rpoHours: 24 }, at2h);
  assert.equal((await readSummary(kv, w.admin, at2h)).rpoBreach, 0, "RPO 24 h: the breach ends");
  const alerts = (await values<{ reason: string; status: string }>(kv, "alerts")).filter((a) =>
    a.reason === "rpo_breach"
  );
  assert.deepEqual(alerts.map((a) => a.status), ["resolved"]);
  assert.deepEqual(await checkInvariants(kv), []);
});

function policyInput(p: Policy) {
  return {
    name: p.name,
    targetId: p.targetId,
    backupType: p.backupType,
    fullSchedule: p.fullSchedule,
    incrementalSchedule: p.incrementalSchedule ?? "",
  };
}

Deno.test("a result whose engine clock runs ahead counts now, in the last 24 hours and on the RPO clock", async () => {
  using kv = await Deno.openKv(":memory:");
  const now = new Date("2026-11-01T10:00:59Z");
  const w = await world(kv, now);
  const host = w.hosts[0];
  await assignHost(kv, system, { policyId: w.policies[0].id, hostId: host.id }, now);
  await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, now);
  await runSchedulerTick(kv, now);
  const [job] = await claimJobs(kv, `agent:${host.id}`, 1, now);
  const ahead = new Date(now.getTime() + 42_000); // the next minute by the engine's clock
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "failed",
    startedAt: now.toISOString(),
    endedAt: ahead.toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    error: { reason: "TARGET_UNREACHABLE", message: "boom" },
  }, now);
  await applyJobOutcome(kv, done, now);
  assert.deepEqual(await readLast24h(kv, w.admin, now), { success: 0, warning: 0, failed: 1 });
  const [object] = await values<ProtectedObject>(kv, "protected_objects");
  assert.equal(object.lastBackupAt, now.toISOString());
});
