/**
 * Scheduler and queue benchmark (`deno task bench:scheduler`), in one process against an on-disk KV.
 *
 * Seeds 10,000 policies with 10 hosts each (one policy, host and assignment made through the domain
 * functions, the rest cloned from them with fresh ids), then measures:
 *  - an idle tick (nothing due: the cost of scanning every policy), one minute before the next,
 *  - a spread tick (each policy's daily incremental at minute `i % 60` of 02:00: 1/60 of them due),
 *  - a storm tick (every policy due in the same minute: 100,000 jobs), beside its write floor: the same
 *    jobs and runs written in the same batches with no reads and no scheduling logic,
 *  - the console during a storm: a second storm tick (every policy due again an hour later: 100,000 more
 *    jobs) while one user loads the dashboard (the frame and its eight sections, one request at a time)
 *    and the jobs page back to back, through `app.request` signed in as an all-scope admin; the same
 *    page loads measured with nothing else running, just before, are the baseline,
 *  - claims/s of 50 concurrent claimers (one job per claim, each claimer working through its own hosts;
 *    claims that arrive together share a group commit) with their latency, beside the ceiling of the
 *    same machine: 50 concurrent loops of one KV atomic op (check + set) each.
 */
import { parseArgs } from "node:util";
import { createApp } from "../app.ts";
import { assignHost } from "../domain/assignments.ts";
import { createSession } from "../domain/auth.ts";
import { testConfig } from "../domain/config.ts";
import { applyHeartbeat } from "../domain/engines.ts";
import { applyHostHeartbeat, enrollHost } from "../domain/hosts.ts";
import { newId } from "../domain/ids.ts";
import { claimJobs } from "../domain/job_queue.ts";
import { createLogger } from "../domain/log.ts";
import { createPolicy } from "../domain/policies.ts";
import { policiesByNameKey, policyCountKey } from "../domain/policy_names.ts";
import { systemActor } from "../domain/rbac.ts";
import { runSchedulerTick } from "../domain/scheduler.ts";
import { indexFirstBackups } from "../domain/restore_points.ts";
import { generateKeyPair } from "../domain/signing.ts";
import { createTarget } from "../domain/storage.ts";
import { SECTIONS } from "../routes/dashboard.tsx";
import { addUser, createTenant, engineMetrics, registerTestEngine, targetInput } from "../tests/helpers.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    policies: { type: "string", default: "10000" },
    hosts: { type: "string", default: "10" },
    claimers: { type: "string", default: "50" },
    seconds: { type: "string", default: "10" },
  },
});
const POLICIES = Number(values.policies);
const HOSTS_PER_POLICY = Number(values.hosts);
const CLAIMERS = Number(values.claimers);
const SECONDS = Number(values.seconds);

const system = systemActor("bench");
// Monday 2026-11-30: the weekly full ("0 3 * * 0") never fires in the measured minutes.
const SEED_AT = new Date("2026-11-30T01:00:00Z");
const dir = await Deno.makeTempDir({ prefix: "cadres-bench-scheduler-" });
const kv = await Deno.openKv(`${dir}/bench.kv`);

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const t0 = performance.now();
  const value = await fn();
  return { ms: performance.now() - t0, value };
}

/** Writes entries in atomic batches (well under the 1000-mutation and 800 KB limits). */
async function writeAll(entries: Array<[Deno.KvKey, unknown]>, batch = 200) {
  for (let i = 0; i < entries.length; i += batch) {
    const op = kv.atomic();
    for (const [k, v] of entries.slice(i, i + batch)) op.set(k, v);
    const res = await op.commit();
    if (!res.ok) throw new Error("seed batch failed");
  }
}

async function seed() {
  const tenant = await createTenant(kv, "Bench", ["Ops"], SEED_AT);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, SEED_AT);
  await applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, SEED_AT);
  const target = await createTarget(kv, system, targetInput(engine.id), {
    now: SEED_AT,
    masterKey: new Uint8Array(32).fill(1),
  });
  const template = await createPolicy(kv, system, {
    name: "bench-0",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 3 * * 0",
    incrementalSchedule: "0 2 * * *",
    exclusionTemplate: "caches",
  }, SEED_AT);
  const { host } = await enrollHost(kv, scope, {
    hostname: "h-0.bench.example",
    os: "Debian 12",
    ipAddress: "10.0.0.2",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, SEED_AT);
  await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, SEED_AT);
  const { assignment } = await assignHost(kv, system, { policyId: template.id, hostId: host.id }, SEED_AT);
  const policyRecord = (await kv.get<Record<string, unknown>>(["policies", template.id])).value!;
  const hostRecord = (await kv.get<Record<string, unknown>>(["hosts", host.id])).value!;
  const assignmentRecord = (await kv.get<Record<string, unknown>>(["assignments", assignment.id])).value!;
  // The template policy is rewritten below like the others (schedule i % 60).
  await kv.delete(["assignments_by_policy", template.id, host.id]);
  await kv.delete(["assignments_by_host", host.id, template.id]);
  await kv.delete(["assignments", assignment.id]);

  const hostIds: string[] = [];
  let entries: Array<[Deno.KvKey, unknown]> = [];
  for (let i = 0; i < POLICIES; i++) {
    const policyId = i === 0 ? template.id : newId(SEED_AT);
    entries.push([["policies", policyId], {
      ...policyRecord,
      id: policyId,
      name: `bench-${i}`,
      incrementalSchedule: `${i % 60} 2 * * *`,
    }]);
    // The indexes createPolicy writes, so the console's pages list every clone.
    if (i > 0) {
      const { accountId, orgId, besId } = policyRecord as { accountId: string; orgId: string; besId: string };
      entries.push(
        [policiesByNameKey(accountId, `bench-${i}`, policyId), { name: `bench-${i}`, orgId, besId }],
        [["policies_by_account", String(policyRecord.accountId), policyId], policyId],
        [["policies_by_bes", String(policyRecord.besId), policyId], policyId],
        [["policies_by_target", String(policyRecord.targetId), policyId], policyId],
      );
    }
    for (let h = 0; h < HOSTS_PER_POLICY; h++) {
      const hostId = i === 0 && h === 0 ? host.id : newId(SEED_AT);
      const assignmentId = newId(SEED_AT);
      hostIds.push(hostId);
      if (i > 0 || h > 0) entries.push([["hosts_by_account", String(hostRecord.accountId), hostId], hostId]);
      entries.push(
        [["hosts", hostId], { ...hostRecord, id: hostId, hostname: `h-${i}-${h}.bench.example` }],
        [["assignments", assignmentId], { ...assignmentRecord, id: assignmentId, policyId, hostId }],
        [["assignments_by_policy", policyId, hostId], assignmentId],
        [["assignments_by_host", hostId, policyId], assignmentId],
      );
    }
    if (entries.length >= 4000) {
      await writeAll(entries);
      entries = [];
    }
  }
  await writeAll(entries);
  // The template was counted by createPolicy; the counter now counts the clones too.
  const { accountId, orgId } = policyRecord as { accountId: string; orgId: string };
  await kv.set(policyCountKey(accountId, orgId), new Deno.KvU64(BigInt(POLICIES)));
  return { hostIds, policyRecord, tenant };
}

async function setAllSchedules(schedule: string) {
  const entries: Array<[Deno.KvKey, unknown]> = [];
  for await (const e of kv.list<Record<string, unknown>>({ prefix: ["policies"] })) {
    entries.push([e.key, { ...e.value, incrementalSchedule: schedule }]);
  }
  await writeAll(entries);
}

async function claimThroughput(hostIds: string[], now: Date) {
  let claims = 0;
  let empty = 0;
  const end = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  const latencies: number[] = [];
  await Promise.all(Array.from({ length: CLAIMERS }, async (_, w) => {
    for (let i = w; i < hostIds.length && performance.now() < end; i += CLAIMERS) {
      const started = performance.now();
      const jobs = await claimJobs(kv, `agent:${hostIds[i]}`, 1, now);
      latencies.push(performance.now() - started);
      if (jobs.length) claims++;
      else empty++;
    }
  }));
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? 0;
  return {
    claims,
    empty,
    perSecond: claims / ((performance.now() - t0) / 1000),
    p50: at(0.5),
    p95: at(0.95),
  };
}

/**
 * The floor under a storm tick: writing `count` copies of one of its jobs and runs, with each copy's
 * queue, policy and job indexes (the five keys the tick writes per job), in the tick's batch size
 * (100 jobs per write, 4 writes in flight), with no reads and no scheduling logic.
 */
async function writeFloor(count: number) {
  const [job] = await Array.fromAsync(kv.list<Record<string, unknown>>({ prefix: ["jobs"] }, { limit: 1 }));
  const [run] = await Array.fromAsync(kv.list<Record<string, unknown>>({ prefix: ["runs"] }, { limit: 1 }));
  const inFlight: Promise<Deno.KvCommitResult | Deno.KvCommitError>[] = [];
  for (let i = 0; i < count; i += 100) {
    const op = kv.atomic();
    for (let j = i; j < Math.min(count, i + 100); j++) {
      const jobId = newId(STORM);
      const runId = newId(STORM);
      op.set(["bench_floor_jobs", jobId], { ...job.value, id: jobId })
        .set(["bench_floor_queue", `agent:${jobId}`, 2, jobId], jobId)
        .set(["bench_floor_runs", runId], { ...run.value, id: runId, jobId })
        .set(["bench_floor_runs_by_policy", String(run.value.policyId), runId], runId)
        .set(["bench_floor_runs_by_job", jobId], runId);
    }
    inFlight.push(op.commit());
    while (inFlight.length >= 4) await inFlight.shift();
  }
  await Promise.all(inFlight);
}

async function atomicCeiling() {
  let ops = 0;
  const end = performance.now() + SECONDS * 1000;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CLAIMERS }, async (_, w) => {
    for (let i = 0; performance.now() < end; i++) {
      const key = ["bench_ceiling", w, i];
      const res = await kv.atomic().check({ key, versionstamp: null }).set(key, { w, i, at: Date.now() })
        .commit();
      if (res.ok) ops++;
    }
  }));
  return ops / ((performance.now() - t0) / 1000);
}

const DASHBOARD_PATHS = ["/backup/dashboard", ...SECTIONS.map((s) => `/backup/dashboard/sections/${s.name}`)];
const JOBS_PATH = "/backup/jobs";

interface PageTimes {
  dashboard: number[];
  jobs: number[];
  /** Each path's times (which section is slow). */
  byPath: Map<string, number[]>;
  errors: number;
}

/**
 * One user loading the dashboard (frame, then each section) and the jobs page, one request at a time, back
 * to back, until `stop()` says so (and at least `minCycles` times). Server time per request, in ms.
 */
async function loadPages(
  app: ReturnType<typeof createApp>,
  cookie: string,
  stop: () => boolean,
  minCycles: number,
): Promise<PageTimes> {
  const out: PageTimes = { dashboard: [], jobs: [], byPath: new Map(), errors: 0 };
  for (let cycle = 0; cycle < minCycles || !stop(); cycle++) {
    for (const path of [...DASHBOARD_PATHS, JOBS_PATH]) {
      const started = performance.now();
      const res = await app.request(`http://localhost:8000${path}`, {
        headers: { cookie: `cadres_session=${cookie}` },
      });
      await res.arrayBuffer();
      const ms = performance.now() - started;
      (path === JOBS_PATH ? out.jobs : out.dashboard).push(ms);
      out.byPath.set(path, [...(out.byPath.get(path) ?? []), ms]);
      if (res.status !== 200) out.errors++;
    }
  }
  return out;
}

function summary(times: number[]): string {
  const sorted = [...times].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return `p50 ${at(0.5).toFixed(1)} ms, p95 ${at(0.95).toFixed(1)} ms, max ${
    (sorted[sorted.length - 1] ?? NaN).toFixed(1)
  } ms (${sorted.length} requests)`;
}

const seeded = await timed(seed);
console.log(
  `Seeded ${POLICIES} policies × ${HOSTS_PER_POLICY} hosts (${seeded.value.hostIds.length} hosts and assignments) in ${
    (seeded.ms / 1000).toFixed(1)
  } s`,
);
const { hostIds } = seeded.value;
// The start-up data fixes main.ts runs (the checklist's first-backup markers among them).
await indexFirstBackups(kv, new Date());

// Ticks a minute apart, as in production (a tick also evaluates minutes no tick did, up to 10 back).
const idle = await timed(() => runSchedulerTick(kv, new Date("2026-11-30T01:59:00Z")));
console.log(`Idle tick (0 policies due):            ${idle.ms.toFixed(0)} ms`, idle.value);
const spread = await timed(() => runSchedulerTick(kv, new Date("2026-11-30T02:00:00Z")));
console.log(`Spread tick (1/60 of policies due):    ${spread.ms.toFixed(0)} ms`, spread.value);

await setAllSchedules("0 5 * * *");
await runSchedulerTick(kv, new Date("2026-11-30T04:59:00Z")); // not measured: the minute before
const STORM = new Date("2026-11-30T05:00:00Z");
const storm = await timed(() => runSchedulerTick(kv, STORM));
console.log(`Storm tick (all ${POLICIES} policies due): ${storm.ms.toFixed(0)} ms`, storm.value);
console.log(
  `  = ${(storm.value.dispatched / (storm.ms / 1000)).toFixed(0)} jobs dispatched/s`,
);

const floor = await timed(() => writeFloor(storm.value.dispatched));
console.log(
  `  write floor: ${
    floor.ms.toFixed(0)
  } ms to write the same ${storm.value.dispatched} jobs and runs (5 keys each) with nothing else (tick = ${
    (storm.ms / floor.ms).toFixed(1)
  }× floor)`,
);

// The console during a storm: the same page loads with nothing else running, then during a second storm.
const app = createApp({
  kv,
  config: testConfig(),
  clock: () => new Date("2026-11-30T06:00:30Z"),
  logger: createLogger("error", () => {}),
});
const admin = await addUser(
  kv,
  { ...seeded.value.tenant, secrets: [] },
  "admin@bench.example",
  "admin",
  "all",
  SEED_AT,
);
const { cookie } = await createSession(kv, admin, new Date("2026-11-30T06:00:00Z"));
await setAllSchedules("0 6 * * *");
await runSchedulerTick(kv, new Date("2026-11-30T05:59:00Z")); // not measured: the minute before
await loadPages(app, cookie, () => true, 2); // warm-up
const quiet = await loadPages(app, cookie, () => true, 10);
let stormDone = false;
const during = loadPages(app, cookie, () => stormDone, 1);
const storm2 = await timed(() => runSchedulerTick(kv, new Date("2026-11-30T06:00:00Z")));
stormDone = true;
const loaded = await during;
console.log(
  `Storm tick with the console in use: ${storm2.ms.toFixed(0)} ms`,
  storm2.value,
  `(${(storm.ms / 1000).toFixed(1)} s without)`,
);
console.log(`  dashboard (frame + ${SECTIONS.length} sections), quiet:       ${summary(quiet.dashboard)}`);
console.log(`  dashboard (frame + ${SECTIONS.length} sections), during storm: ${summary(loaded.dashboard)}`);
for (const [path, times] of loaded.byPath) {
  if (path !== JOBS_PATH) {
    console.log(`    ${path}: quiet ${summary(quiet.byPath.get(path) ?? [])}; storm ${summary(times)}`);
  }
}
console.log(`  jobs page (${POLICIES} jobs, first page), quiet:        ${summary(quiet.jobs)}`);
console.log(`  jobs page (${POLICIES} jobs, first page), during storm: ${summary(loaded.jobs)}`);
console.log(`  errors: ${quiet.errors + loaded.errors}; aim: p95 < 150 ms during the storm`);

const claim = await claimThroughput(hostIds, new Date("2026-11-30T06:00:30Z"));
const ceiling = await atomicCeiling();
console.log(
  `Claims: ${
    claim.perSecond.toFixed(0)
  }/s with ${CLAIMERS} concurrent claimers (${claim.claims} claimed, ${claim.empty} empty; latency p50 ${
    claim.p50.toFixed(1)
  } ms, p95 ${claim.p95.toFixed(1)} ms)`,
);
console.log(`Ceiling: ${ceiling.toFixed(0)} atomic ops/s (${CLAIMERS} concurrent loops of check + set)`);
console.log(
  `Ratio: ${(claim.perSecond / ceiling).toFixed(2)} of ceiling (aim ≥ 0.5); storm tick aim < 2000 ms`,
);

kv.close();
await Deno.remove(dir, { recursive: true });
