/**
 * A run becomes `running` when an engine claims its job, in the same atomic write as the claim (jobs.ts
 * `claimJobs`, group-committed claims too): a claim that loses its race changes neither the job nor the
 * run, a retried attempt keeps the first start, and the run page and jobs list show it running with the
 * engine's progress.
 */
import assert from "node:assert/strict";
import { assignHost } from "../../domain/assignments.ts";
import { userActor } from "../../domain/auth.ts";
import { createTarget } from "../../domain/storage.ts";
import {
  applyResult,
  claimJobs,
  expireLeases,
  getJob,
  LEASE_MS,
  reportProgress,
} from "../../domain/job_queue.ts";
import { createPolicy, type Policy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { runPolicyNow } from "../../domain/run_now.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import { listRunsByPolicy, type Run } from "../../domain/runs.ts";
import {
  addUser,
  Browser,
  createTenant,
  enrollTestHost,
  onlineTestEngine,
  signInAs,
  targetInput,
  testApp,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

/** A tenant with an online BES, a target, a policy and `hostCount` active hosts; run now queued one job per host. */
async function fixture(kv: Deno.Kv, hostCount = 1) {
  const clock = new TestClock(new Date("2026-12-01T10:00:00Z"));
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops"], now);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await onlineTestEngine(kv, scope, now);
  const target = await createTarget(kv, system, targetInput(engine.id), { now, masterKey });
  const policy = await createPolicy(kv, system, {
    name: "files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    incrementalSchedule: "0 2 * * 1-6",
  }, now) as Policy;
  for (let i = 0; i < hostCount; i++) {
    const host = await enrollTestHost(kv, scope, `h${i}`, now);
    await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, now);
  }
  const operator = await addUser(kv, tenant, "operator@acme.example", "operator", "all", now);
  await runPolicyNow(kv, userActor(operator), policy.id, { kind: "full" }, now);
  const runs = await listRunsByPolicy(kv, policy.id);
  assert.equal(runs.length, hostCount);
  assert.ok(runs.every((r) => r.status === "pending" && r.startedAt === null && r.jobId));
  return { clock, policy, runs, operator };
}

async function runOf(kv: Deno.Kv, id: string): Promise<Run> {
  return (await kv.get<Run>(["runs", id])).value!;
}

Deno.test("claiming a job marks its run running (started at the claim); the run page and jobs list show it with progress", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const [run] = f.runs;
  const job = (await getJob(kv, run.jobId!))!;
  f.clock.advance(30_000);
  const claimedAt = f.clock.now();
  const [claimed] = await claimJobs(kv, job.principal, 5, claimedAt);
  assert.equal(claimed.id, job.id);
  const running = await runOf(kv, run.id);
  assert.equal(running.status, "running");
  assert.equal(running.startedAt, claimedAt.toISOString());
  assert.equal(running.updatedAt, claimedAt.toISOString());
  assert.ok((await kv.get(["runs_open", f.policy.id, run.hostId!, run.id])).value, "still an open run");

  f.clock.advance(10_000);
  await reportProgress(kv, job.principal, job.id, {
    percent: 42.4,
    bytesTransferred: 3 * 1024 * 1024,
    message: "reading /srv",
  }, f.clock.now());
  const { app } = testApp(kv, f.clock);
  const browser = new Browser(app);
  await signInAs(browser, kv, f.operator, f.clock.now());
  const page = await (await browser.get(`/backup/runs/${run.id}`)).text();
  assert.match(page, /<span class="badge badge--info">running<\/span>/);
  assert.match(page, /<progress max="100" value="42"/);
  assert.match(page, /data-testid="run-percent">42 %/);
  assert.match(page, /reading \/srv/);
  const list = await (await browser.get("/backup/jobs?status=running")).text();
  assert.match(list, /files/, "the jobs list's running filter finds the policy");
  assert.match(list, /badge--info">running</);
  const api = await (await browser.get(`/api/v1/runs/${run.id}`)).json();
  assert.equal((api.run ?? api).status, "running");

  // The result ends it with the engine's own start time.
  f.clock.advance(60_000);
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "success",
    startedAt: claimedAt.toISOString(),
    endedAt: f.clock.now().toISOString(),
    bytesTransferred: 10,
    protectedBytes: 10,
    output: { restorePoint: { id: "rp-1", chainId: "c", type: "full", sizeBytes: 10, fileCount: 1 } },
  }, f.clock.now());
  await applyJobOutcome(kv, done, f.clock.now());
  const ended = await runOf(kv, run.id);
  assert.equal(ended.status, "success");
  assert.equal(ended.startedAt, claimedAt.toISOString());
});

Deno.test("a job's second attempt (lease expired) keeps its run running with the first start", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const [run] = f.runs;
  const job = (await getJob(kv, run.jobId!))!;
  const first = f.clock.now();
  await claimJobs(kv, job.principal, 1, first);
  f.clock.advance(LEASE_MS + 1000);
  await expireLeases(kv, f.clock.now());
  assert.equal((await getJob(kv, job.id))!.status, "queued");
  assert.equal((await runOf(kv, run.id)).status, "running", "the lease sweep does not reset the run");
  const [again] = await claimJobs(kv, job.principal, 1, f.clock.now());
  assert.equal(again.attempts, 2);
  const r = await runOf(kv, run.id);
  assert.equal(r.status, "running");
  assert.equal(r.startedAt, first.toISOString());
});

Deno.test("under claim races the run starts exactly once, with the winning claim; losers change nothing", async () => {
  for (let iteration = 0; iteration < 15; iteration++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv, 6);
    const base = f.clock.now().getTime();
    const jobs = await Promise.all(f.runs.map((r) => getJob(kv, r.jobId!)));
    // Three claimers per host's principal at once, each with its own clock reading: every claim but one
    // per job loses its race (in a group commit or on its own).
    const attempts = jobs.flatMap((job, j) =>
      [0, 1, 2].map(async (k) => {
        const at = new Date(base + 1000 * (j * 3 + k + 1));
        return { at, claimed: await claimJobs(kv, job!.principal, 1, at) };
      })
    );
    const outcomes = await Promise.all(attempts);
    const winners = outcomes.filter((o) => o.claimed.length === 1);
    assert.equal(winners.length, jobs.length, `iteration ${iteration}: one winner per job`);
    assert.equal(outcomes.filter((o) => o.claimed.length === 0).length, jobs.length * 2);
    for (const run of f.runs) {
      const win = winners.find((w) => w.claimed[0].id === run.jobId)!;
      assert.ok(win, `iteration ${iteration}: job ${run.jobId} was claimed`);
      const stored = await runOf(kv, run.id);
      assert.equal(stored.status, "running");
      assert.equal(stored.startedAt, win.at.toISOString(), "started by the winning claim, in its write");
      const job = (await getJob(kv, run.jobId!))!;
      assert.equal(job.attempts, 1);
      assert.equal(job.updatedAt, win.at.toISOString());
    }
  }
});

Deno.test("a claim whose run changed meanwhile does not go through; the next poll claims it", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const [run] = f.runs;
  const job = (await getJob(kv, run.jobId!))!;
  // Write the run between the claim's read and its commit: an atomic commit racing the claim.
  const realAtomic = kv.atomic.bind(kv);
  let touched = false;
  (kv as { atomic: () => Deno.AtomicOperation }).atomic = () => {
    const op = realAtomic();
    const commit = op.commit.bind(op);
    op.commit = async () => {
      if (!touched) {
        touched = true;
        const current = await runOf(kv, run.id);
        await kv.set(["runs", run.id], { ...current, updatedAt: "2026-12-01T10:00:01.000Z" });
      }
      return await commit();
    };
    return op;
  };
  const lost = await claimJobs(kv, job.principal, 1, f.clock.now());
  (kv as { atomic: () => Deno.AtomicOperation }).atomic = realAtomic;
  assert.deepEqual(lost, [], "the claim lost to the run's write");
  assert.equal((await getJob(kv, job.id))!.status, "queued", "the job is still queued");
  assert.equal((await runOf(kv, run.id)).status, "pending", "and the run still pending");
  f.clock.advance(5000);
  const [claimed] = await claimJobs(kv, job.principal, 1, f.clock.now());
  assert.equal(claimed.id, job.id);
  assert.equal((await runOf(kv, run.id)).startedAt, f.clock.now().toISOString());
});
