/**
 * Run now and open runs (review of issue 14): the run-now guard's `writing` mark is judged by its
 * explicit time, not by KV's lazy expiry; the minute sweep brings runs whose job already ended up to
 * their job, so they stop blocking run now and retries.
 */
import assert from "node:assert/strict";
import { assignHost } from "../../domain/assignments.ts";
import { ConflictError } from "../../domain/errors.ts";
import { type Host } from "../../domain/hosts.ts";
import { type Policy } from "../../domain/policies.ts";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { runPolicyNow } from "../../domain/run_now.ts";
import { applyResult, claimJobs, getJob } from "../../domain/job_queue.ts";
import type { Run } from "../../domain/runs.ts";
import { runsOpenKey } from "../../domain/keys/runs.ts";
import { createTarget } from "../../domain/storage.ts";
import { sweepOpenRuns as sweepOpenRunsJob } from "../../jobs/sweep_open_runs.ts";
import { createTenant, enrollTestHost, onlineTestEngine, targetInput, TestClock } from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

/** A tenant with an online BES, a target and a policy with two active hosts. */
async function fixture(kv: Deno.Kv) {
  const clock = new TestClock(new Date("2026-11-29T10:00:00Z"));
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops"], now);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine, keys } = await onlineTestEngine(kv, scope, now);
  const target = await createTarget(kv, system, targetInput(engine.id), { now, masterKey });
  const policy = await createPolicy(kv, system, {
    name: "files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, now) as Policy;
  const hosts: Host[] = [];
  for (const name of ["h1", "h2"]) {
    const host = await enrollTestHost(kv, scope, name, now);
    await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, now);
    hosts.push(host);
  }
  return { clock, tenant, engine, keys, policy, hosts };
}

Deno.test("run now: a `writing` mark older than a minute no longer holds, even while KV has not expired it", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  // A run now that died mid-way 30 s ago: still holds.
  await kv.set(["run_now_guard", f.policy.id], {
    at: new Date(now.getTime() - 30_000).toISOString(),
    writing: true,
  });
  await assert.rejects(
    () => runPolicyNow(kv, system, f.policy.id, { kind: "full" }, now),
    (e) => e instanceof ConflictError && /still starting its runs/.test(e.message),
  );
  // One that died 61 s ago (the key is still there: KV's expiry is lazy): over.
  await kv.set(["run_now_guard", f.policy.id], {
    at: new Date(now.getTime() - 61_000).toISOString(),
    writing: true,
  });
  const created = await runPolicyNow(kv, system, f.policy.id, { kind: "full" }, now);
  assert.equal(created.length, 2);
  assert.ok(created.every((c) => c.run.trigger === "manual" && c.run.status === "pending"));
});

Deno.test("the minute sweep brings runs whose job ended up to their job and drops stale open-run entries", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  const [h1, h2] = f.hosts;
  // A third host, whose run stays in flight.
  const h3 = await enrollTestHost(
    kv,
    { accountId: f.tenant.account.id, orgId: f.tenant.orgs[0].id },
    "h3",
    now,
  );
  await assignHost(kv, system, { policyId: f.policy.id, hostId: h3.id }, now);
  const [done] = await runPolicyNow(kv, system, f.policy.id, { kind: "full", hostIds: [h1.id] }, now);
  const [expired] = await runPolicyNow(kv, system, f.policy.id, { kind: "full", hostIds: [h2.id] }, now);
  const [inFlight] = await runPolicyNow(kv, system, f.policy.id, { kind: "full", hostIds: [h3.id] }, now);
  // h1: the result was recorded, the process stopped before the run was updated.
  await claimJobs(kv, `agent:${h1.id}`, 5, now);
  await applyResult(kv, `agent:${h1.id}`, done.run.jobId!, {
    status: "success",
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 1,
    protectedBytes: 1,
  }, now);
  // h2: the lease sweep failed the job after its last attempt, the process stopped before failing the run.
  const job = (await getJob(kv, expired.run.jobId!))!;
  await kv.set(["jobs", job.id], { ...job, status: "failed", failureReason: "LEASE_EXPIRED" });
  // A stale entry: its run ended, the removal was missed.
  const stale = runsOpenKey(f.policy.id, h1.id, "01J00000000000000000000000");
  await kv.set(["runs", "01J00000000000000000000000"], {
    ...done.run,
    id: "01J00000000000000000000000",
    status: "success",
  });
  await kv.set(stale, "01J00000000000000000000000");

  const later = new Date(now.getTime() + 60_000);
  assert.deepEqual(await sweepOpenRunsJob(kv, later), { caughtUp: 2, dropped: 1 });
  assert.equal((await kv.get<Run>(["runs", done.run.id])).value!.status, "success", "h1's run caught up");
  const failed = (await kv.get<Run>(["runs", expired.run.id])).value!;
  assert.deepEqual([failed.status, failed.error?.reason], ["failed", "LEASE_EXPIRED"], "h2's run caught up");
  assert.equal(
    (await kv.get<Run>(["runs", inFlight.run.id])).value!.status,
    "pending",
    "a job in flight is left alone",
  );
  assert.equal((await kv.get(stale)).versionstamp, null);
  const open = (await Array.fromAsync(kv.list<string>({ prefix: ["runs_open", f.policy.id] }))).map((e) =>
    e.value
  );
  assert.deepEqual(open, [inFlight.run.id]);
  // Idempotent.
  assert.deepEqual(await sweepOpenRunsJob(kv, later), { caughtUp: 0, dropped: 0 });
  // h1 and h2 are free again; h3's run still blocks another (a synthetic full of it too: one per host).
  await assert.rejects(
    () => runPolicyNow(kv, system, f.policy.id, { kind: "synthetic_full" }, later),
    /already pending on h3/,
  );
  const again = await runPolicyNow(
    kv,
    system,
    f.policy.id,
    { kind: "incremental", hostIds: [h1.id, h2.id] },
    later,
  );
  assert.equal(again.length, 2);
});

Deno.test("run now lists the policy's open runs once, whatever the number of hosts", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  let lists = 0;
  const counted = new Proxy(kv, {
    get(target, prop) {
      if (prop === "list") {
        return (selector: Deno.KvListSelector, options?: Deno.KvListOptions) => {
          if ("prefix" in selector && selector.prefix[0] === "runs_open") lists++;
          return target.list(selector, options);
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  await runPolicyNow(counted, system, f.policy.id, { kind: "full" }, now);
  assert.equal(lists, 1, "one list of runs_open for two hosts");
});
