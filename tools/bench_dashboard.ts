/**
 * Dashboard benchmark (`deno task bench:dashboard`), in one process against an on-disk KV.
 *
 * Seeds 100,000 protected objects (1,000 policies × 100 hosts; one policy, host and assignment made
 * through the domain functions, the rest cloned with fresh ids) and their run history, then measures
 * the server time (p50/p95 over `--requests` requests, through `app.request`, signed in as an
 * all-scope admin) of every dashboard section, the jobs page and the protected-objects list:
 *  - at 100k runs: each object's newest run (ended in the last 30 h: 90 % success, 5 % warning,
 *    5 % failed), then the minute RPO sweep;
 *  - at 1M runs: 9 older runs per object added, spread over the previous 30 days.
 * Objects, runs, counters and indexes are written by the same functions the live writes use
 * (`writeProtected`, `countRunOutcome`, `countOutcomeBuckets`), batched for speed.
 *
 * Restore drills prove three policies in four, five times each (the "Last proven restore" card).
 *
 * Flags: --objects 100000 --hosts-per-policy 100 --older-runs 9 --requests 40
 */
import { parseArgs } from "node:util";
import { createApp } from "../app.ts";
import { assignHost } from "../domain/assignments.ts";
import { createSession } from "../domain/auth.ts";
import { testConfig } from "../domain/config.ts";
import { countOutcomeBuckets, countRunOutcome, latestOutcomeKey } from "../domain/dashboard.ts";
import { applyHeartbeat } from "../domain/engines.ts";
import { enrollHost, type Host, hostKey, hostsByAccountKey } from "../domain/hosts.ts";
import { newId } from "../domain/ids.ts";
import { createLogger } from "../domain/log.ts";
import { createPolicy, policiesByAccountKey, type Policy, policyKey } from "../domain/policies.ts";
import { policyCountKey, setPolicyName } from "../domain/policy_names.ts";
import { type ProvenRestore, setProvenInOp } from "../domain/proven_restores.ts";
import { provenRestoreKey } from "../domain/keys/drills.ts";
import {
  hostCoverageKey,
  protectedIndexKeys,
  type ProtectedObject,
  sweepRpoBreaches,
  writeProtected,
} from "../domain/protected.ts";
import { systemActor } from "../domain/rbac.ts";
import { indexFirstBackups } from "../domain/restore_points.ts";
import type { Run } from "../domain/runs.ts";
import { runKey, runsByPolicyKey } from "../domain/keys/runs.ts";
import { generateKeyPair } from "../domain/signing.ts";
import { createTarget } from "../domain/storage.ts";
import { SECTIONS } from "../routes/dashboard.tsx";
import { addUser, createTenant, engineMetrics, registerTestEngine, targetInput } from "../tests/helpers.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    objects: { type: "string", default: "100000" },
    "hosts-per-policy": { type: "string", default: "100" },
    "older-runs": { type: "string", default: "9" },
    requests: { type: "string", default: "40" },
  },
});
const OBJECTS = Number(values.objects);
const PER_POLICY = Number(values["hosts-per-policy"]);
const OLDER = Number(values["older-runs"]);
const REQUESTS = Number(values.requests);
const POLICIES = Math.ceil(OBJECTS / PER_POLICY);

const NOW = new Date("2026-11-30T12:00:00Z");
const HOUR = 3_600_000;
const DAY = 24 * HOUR;
const system = systemActor("bench");
const dir = await Deno.makeTempDir({ prefix: "cadres-bench-dashboard-" });
const kv = await Deno.openKv(`${dir}/bench.kv`);
const masterKey = new Uint8Array(32).fill(7);

// A deterministic pseudo-random sequence (the same history on every run of the benchmark).
let seed = 42;
function random(): number {
  seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
  return seed / 2 ** 31;
}

function log(message: string) {
  console.error(`[${new Date().toISOString().slice(11, 19)}] ${message}`);
}

// ---------------------------------------------------------------------------------------------------
// Templates made through the domain

const seedAt = new Date(NOW.getTime() - 31 * DAY);
const tenant = await createTenant(kv, "Bench", ["Ops"], seedAt);
const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
const { engine } = await registerTestEngine(kv, scope, seedAt);
await applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, NOW);
const target = await createTarget(kv, system, targetInput(engine.id), { now: seedAt, masterKey });
const templatePolicy = await createPolicy(kv, system, {
  name: "policy-00000",
  besId: engine.id,
  targetId: target.id,
  backupType: "file",
  fullSchedule: "0 2 * * 0",
  incrementalSchedule: "0 2 * * *",
  rpoHours: 24,
}, seedAt) as Policy;
const { host: templateHost } = await enrollHost(kv, scope, {
  hostname: "host-0000000.bench.example",
  os: "Debian 12",
  ipAddress: "10.0.0.2",
  publicKey: generateKeyPair().publicKey,
  version: "1",
}, seedAt);
await assignHost(kv, system, { policyId: templatePolicy.id, hostId: templateHost.id }, seedAt);
const templateObject = (await Array.fromAsync(kv.list<ProtectedObject>({ prefix: ["protected_objects"] })))[0]
  .value;

// ---------------------------------------------------------------------------------------------------
// Clones

async function commit(op: Deno.AtomicOperation) {
  const res = await op.commit();
  if (!res.ok) throw new Error("seed batch failed");
}

/** The newest run of each object, decided up front so the objects can carry their final state. */
interface Plan {
  object: ProtectedObject;
  run: Run;
}

const policies: Policy[] = [templatePolicy];
const t0 = performance.now();
{
  let op = kv.atomic();
  let n = 0;
  for (let p = 1; p < POLICIES; p++) {
    const policy: Policy = {
      ...templatePolicy,
      id: newId(seedAt),
      name: `policy-${String(p).padStart(5, "0")}`,
    };
    policies.push(policy);
    op.set(policyKey(policy.id), policy).set(policiesByAccountKey(policy.accountId, policy.id), policy.id);
    setPolicyName(op, policy);
    if (++n === 200) {
      await commit(op);
      op = kv.atomic();
      n = 0;
    }
  }
  await commit(op);
  // The template was counted by createPolicy; the counter now counts the clones too.
  await kv.set(
    policyCountKey(templatePolicy.accountId, templatePolicy.orgId),
    new Deno.KvU64(BigInt(policies.length)),
  );
}
log(`${policies.length} policies`);

// Restore drills: three policies in four proven, each proof replaced PROOFS_PER_POLICY times (a drill a
// day), through the write the drills use (`setProvenInOp`, index and counter included): the "Last proven
// restore" card reads its newest rows and the counters, never every policy or proof.
const PROOFS_PER_POLICY = 5;
{
  let proofs = 0;
  for (let round = 0; round < PROOFS_PER_POLICY; round++) {
    let op = kv.atomic();
    let n = 0;
    for (let p = 0; p < policies.length; p++) {
      if (p % 4 === 3) continue;
      const policy = policies[p];
      const before = await kv.get<ProvenRestore>(provenRestoreKey(policy.accountId, policy.id));
      setProvenInOp(op, before, {
        accountId: policy.accountId,
        orgId: policy.orgId,
        policyId: policy.id,
        policyOrgId: policy.orgId,
        policyName: policy.name,
        hostId: templateHost.id,
        hostName: templateHost.hostname,
        drillId: newId(seedAt),
        drillName: "nightly drill",
        drillRunId: newId(seedAt),
        at: new Date(NOW.getTime() - (PROOFS_PER_POLICY - round) * DAY + p * 1000).toISOString(),
        rtoSeconds: 30 + (p % 90),
        rtoObjectiveSeconds: 3600,
        bytesPerSecond: 50_000_000,
      });
      proofs++;
      if (++n === 100) {
        await commit(op);
        op = kv.atomic();
        n = 0;
      }
    }
    await commit(op);
  }
  log(`${proofs} drill proofs`);
}

const plans: Plan[] = [];
{
  let op = kv.atomic();
  let n = 0;
  for (let i = 0; i < OBJECTS; i++) {
    const policy = policies[Math.floor(i / PER_POLICY)];
    const first = i === 0;
    const host: Host = first
      ? templateHost
      : { ...templateHost, id: newId(seedAt), hostname: `host-${String(i).padStart(7, "0")}.bench.example` };
    const ended = new Date(NOW.getTime() - Math.floor(random() * 30 * HOUR));
    const roll = random();
    const status: Run["status"] = roll < 0.9 ? "success" : roll < 0.95 ? "warning" : "failed";
    const lastSuccess = status === "failed"
      ? new Date(ended.getTime() - Math.floor(random() * 48 * HOUR))
      : ended;
    const before = first ? templateObject : null;
    const object: ProtectedObject = {
      ...templateObject,
      id: first ? templateObject.id : newId(seedAt),
      hostId: host.id,
      policyId: policy.id,
      name: host.hostname,
      lastBackupAt: ended.toISOString(),
      lastBackupStatus: status as ProtectedObject["lastBackupStatus"],
      lastSuccessAt: lastSuccess.toISOString(),
      breached: false,
    };
    const run: Run = {
      id: newId(ended),
      policyId: policy.id,
      accountId: scope.accountId,
      orgId: scope.orgId,
      hostId: host.id,
      jobId: null,
      kind: "incremental",
      trigger: "schedule",
      status,
      scheduledFor: new Date(ended.getTime() - HOUR).toISOString(),
      startedAt: new Date(ended.getTime() - HOUR).toISOString(),
      endedAt: ended.toISOString(),
      bytesTransferred: 1_000_000,
      protectedBytes: 50_000_000,
      restorePointId: null,
      error: status === "success"
        ? null
        : { reason: "TARGET_UNREACHABLE", message: "NFS server not responding" },
      errorLine: status === "success" ? null : "NFS server not responding",
      hookOutput: [],
      retryable: status !== "success",
      alertId: null,
      createdAt: ended.toISOString(),
      updatedAt: ended.toISOString(),
    };
    plans.push({ object, run });
    if (!first) {
      op.set(hostKey(host.id), host).set(hostsByAccountKey(host.accountId, host.id), host.id);
      for (const key of protectedIndexKeys(object)) op.set(key, object.id);
    }
    writeProtected(
      op,
      before,
      object,
      first ? await kv.get(hostCoverageKey(host.id)) : {
        key: hostCoverageKey(host.id),
        value: null,
        versionstamp: null,
      },
    );
    if (++n === 40) {
      await commit(op);
      op = kv.atomic();
      n = 0;
    }
  }
  await commit(op);
}
log(`${OBJECTS} hosts and protected objects (${((performance.now() - t0) / 1000).toFixed(0)} s)`);

/** Writes runs with their indexes and counters; `newest` runs also update the failed-backups queue. */
async function writeRuns(runs: Run[], newest: boolean) {
  let op = kv.atomic();
  let n = 0;
  for (const run of runs) {
    op.set(runKey(run.id), run).set(runsByPolicyKey(run.policyId, run.id), run.id);
    if (newest) {
      countRunOutcome(op, run, {
        key: latestOutcomeKey(run.policyId, run.hostId),
        value: null,
        versionstamp: null,
      }, NOW);
    } else {
      countOutcomeBuckets(op, run, NOW);
    }
    if (++n === 80) {
      await commit(op);
      op = kv.atomic();
      n = 0;
    }
  }
  await commit(op);
}

await writeRuns(plans.map((p) => p.run), true);
const swept = await sweepRpoBreaches(kv, NOW);
log(`${plans.length} runs; RPO sweep marked ${swept.breached} objects breached`);

// ---------------------------------------------------------------------------------------------------
// Measuring

const app = createApp({
  kv,
  config: testConfig(),
  clock: () => NOW,
  logger: createLogger("error", () => {}),
});
const admin = await addUser(
  kv,
  { account: tenant.account, orgs: tenant.orgs, secrets: [] },
  "admin@bench.example",
  "admin",
  "all",
  NOW,
);
const { cookie } = await createSession(kv, admin, NOW);

const PATHS = [
  ...SECTIONS.map((s) => `/backup/dashboard/sections/${s.name}`),
  "/backup/dashboard",
  "/backup/jobs",
  "/backup/protected",
  "/backup/protected?rpoBreach=true",
  "/backup/protected?lastBackupStatus=failed",
  "/backup/protected?q=host-00420",
];

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function measure(): Promise<Map<string, { p50: number; p95: number; status: number }>> {
  const out = new Map<string, { p50: number; p95: number; status: number }>();
  for (const path of PATHS) {
    const times: number[] = [];
    let status = 0;
    for (let i = 0; i < REQUESTS + 3; i++) {
      const started = performance.now();
      const res = await app.request(`http://localhost:8000${path}`, {
        headers: { cookie: `cadres_session=${cookie}` },
      });
      await res.arrayBuffer();
      status = res.status;
      if (i >= 3) times.push(performance.now() - started);
    }
    times.sort((a, b) => a - b);
    out.set(path, { p50: percentile(times, 50), p95: percentile(times, 95), status });
  }
  return out;
}

// The start-up data fixes main.ts runs (the checklist's first-backup markers among them).
await indexFirstBackups(kv, new Date());
const small = await measure();
log(`measured at ${plans.length} runs`);

{
  const older: Run[] = [];
  let written = 0;
  for (const { run } of plans) {
    for (let k = 0; k < OLDER; k++) {
      const ended = new Date(NOW.getTime() - 30 * HOUR - Math.floor(random() * 29 * DAY));
      const roll = random();
      const status: Run["status"] = roll < 0.92 ? "success" : roll < 0.97 ? "warning" : "failed";
      older.push({
        ...run,
        id: newId(ended),
        status,
        endedAt: ended.toISOString(),
        startedAt: new Date(ended.getTime() - HOUR).toISOString(),
        createdAt: ended.toISOString(),
        updatedAt: ended.toISOString(),
      });
    }
    if (older.length >= 20_000) {
      await writeRuns(older.splice(0), false);
      written += 20_000;
      if (written % 200_000 === 0) log(`${written} older runs`);
    }
  }
  await writeRuns(older, false);
}
const totalRuns = plans.length * (1 + OLDER);
log(`${totalRuns} runs in total`);
const large = await measure();

const fmt = (n: number) => n.toFixed(1).padStart(8);
console.log(
  `\nDashboard benchmark: ${OBJECTS.toLocaleString("en")} protected objects, ${POLICIES} policies; ` +
    `server time over ${REQUESTS} requests each (ms)\n`,
);
console.log(
  `${"path".padEnd(44)} ${`p50 @${plans.length / 1000}k`.padStart(12)} ${
    `p95 @${plans.length / 1000}k`.padStart(12)
  } ${`p50 @${totalRuns / 1000}k`.padStart(12)} ${`p95 @${totalRuns / 1000}k`.padStart(12)}  ratio(p95)`,
);
for (const path of PATHS) {
  const a = small.get(path)!;
  const b = large.get(path)!;
  const flag = a.status !== 200 || b.status !== 200 ? `  (HTTP ${a.status}/${b.status})` : "";
  console.log(
    `${path.padEnd(44)} ${fmt(a.p50).padStart(12)} ${fmt(a.p95).padStart(12)} ${fmt(b.p50).padStart(12)} ${
      fmt(b.p95).padStart(12)
    }  ${(b.p95 / a.p95).toFixed(2)}×${flag}`,
  );
}
const dashboardP95 = (m: typeof small) =>
  Math.max(...SECTIONS.map((s) => m.get(`/backup/dashboard/sections/${s.name}`)!.p95));
console.log(
  `\nslowest dashboard section p95: ${dashboardP95(small).toFixed(1)} ms at ${plans.length / 1000}k runs, ` +
    `${dashboardP95(large).toFixed(1)} ms at ${totalRuns / 1000}k runs (aim: < 150 ms, ratio ≤ 1.5×)`,
);
kv.close();
await Deno.remove(dir, { recursive: true });
