/**
 * The living part of the demo: simulated engines registered over the real protocol (in-process),
 * storage targets of every type, 120 days of capacity history and 24 h of engine metrics backfilled
 * with explicit past timestamps, then live heartbeats every minute and job processing (backups every 20 s,
 * browse, search and restores within about a second). One engine goes silent (offline alert), one runs
 * hot (degraded), one target is nearly full (warning, estimated full date).
 */
import { applyHeartbeat } from "../domain/engines.ts";
import { assignHost } from "../domain/assignments.ts";
import { nextRuns } from "../domain/cron_rules.ts";
import { applyResult, claimJobs, hasQueuedAtLeast } from "../domain/job_queue.ts";
import { applyJobOutcome } from "../domain/job_outcomes.ts";
import { runSchedulerTick } from "../domain/scheduler.ts";
import { createPolicy, getPolicy, type PolicyCreateInput } from "../domain/policies.ts";
import { systemActor } from "../domain/rbac.ts";
import { applyCapacityReport, createTarget, type TargetCreateInput } from "../domain/storage.ts";
import { findAccountByName, listOrgs, rotateAccountSecret, rotateOrgSecret } from "../domain/tenancy.ts";
import { EngineClient, type EngineIdentity, type Fetcher } from "./engine_client.ts";
import {
  type CapacityProfile,
  processJobs,
  profileFor,
  registerSimulatedEngines,
  runHeartbeats,
  SIMULATED_VERSION,
  simulatedCapacity,
  type SimulatedEngine,
  simulatedMetrics,
  simulatedResult,
} from "./simulator.ts";

const DAY = 86_400_000;
const TB = 1024 ** 4;

interface TargetSpec {
  name: string;
  type: TargetCreateInput["type"];
  config: Record<string, string | number>;
}

const TARGETS: TargetSpec[] = [
  {
    name: "s3-primary",
    type: "s3",
    config: {
      endpoint: "https://s3.eu-west-1.amazonaws.com",
      bucket: "northwind-backup-primary",
      region: "eu-west-1",
      prefix: "prod",
    },
  },
  { name: "nas-smb", type: "smb", config: { server: "nas01.corp.internal", share: "backup", path: "bes" } },
  {
    name: "nfs-archive",
    type: "nfs",
    config: { server: "10.20.0.40", exportPath: "/exports/archive", mountOptions: "vers=4.1,hard" },
  },
  {
    name: "san-lun7",
    type: "iscsi",
    config: { portal: "10.20.0.50:3260", iqn: "iqn.2004-05.com.northwind:san.lun7", lun: 7 },
  },
  {
    name: "minio-offsite",
    type: "s3_compatible",
    config: {
      endpoint: "https://minio.offsite.example",
      bucket: "offsite-copies",
      region: "auto",
      prefix: "",
    },
  },
  { name: "local-staging", type: "local", config: { path: "/srv/backup/staging" } },
];

/**
 * Seeds the demo's engines and storage (idempotent: does nothing when engines already exist) and
 * starts live heartbeats. Returns a stop function.
 */
export async function startDemoBackup(
  kv: Deno.Kv,
  fetcher: Fetcher,
  options: { masterKey: Uint8Array; now: Date; live?: boolean },
): Promise<() => void> {
  const now = options.now;
  const system = systemActor("demo");
  const account = await findAccountByName(kv, "Northwind Logistics");
  if (!account) return () => {};
  for await (const _ of kv.list({ prefix: ["engines_by_account", account.id] }, { limit: 1 })) {
    return () => {};
  }
  const orgs = await listOrgs(kv, system, account.id);
  const hq = orgs.find((o) => o.name === "Headquarters")!;
  const east = orgs.find((o) => o.name === "Warehouse East")!;
  // Fresh secrets for the simulated engines (the seeded ones were never shown to anyone).
  const hqSecret = (await rotateOrgSecret(kv, system, hq.id, now)).secret;
  const eastSecret = (await rotateOrgSecret(kv, system, east.id, now)).secret;
  const accountSecret = (await rotateAccountSecret(kv, system, account.id, now)).secret;

  // The engines sign on the server's time line: `now`, advancing with the wall clock from here.
  const startedAt = Date.now();
  const client = new EngineClient(
    "http://demo.internal",
    fetcher,
    () => new Date(now.getTime() + Date.now() - startedAt),
  );
  const engines: SimulatedEngine[] = [
    ...(await registerSimulatedEngines(client, hqSecret, 2, "hq-bes")),
    ...(await registerSimulatedEngines(client, eastSecret, 2, "east-bes")),
    ...(await registerSimulatedEngines(client, accountSecret, 1, "shared-bes")),
  ];
  const profileStart = now.getTime() - 120 * DAY;
  const profiles = new Map<string, CapacityProfile>();
  const targetSpecs: Array<[number, TargetSpec]> = [[0, TARGETS[0]], [0, TARGETS[1]], [1, TARGETS[2]], [
    2,
    TARGETS[3],
  ], [
    3,
    TARGETS[4],
  ], [4, TARGETS[5]]];
  const targetIds = new Map<string, { besId: string; targetId: string }>();
  for (const [i, spec] of targetSpecs) {
    const engine = engines[i];
    const input = {
      ...spec,
      besId: engine.identity.id,
      alertThreshold: 85,
      criticalThreshold: 95,
    } as TargetCreateInput;
    const target = await createTarget(kv, system, input, {
      now,
      masterKey: options.masterKey,
    });
    engine.targetIds.push(target.id);
    targetIds.set(spec.name, { besId: engine.identity.id, targetId: target.id });
    // The SAN LUN took a new workload 40 days ago and fills fast: about 83 % now, full within two weeks.
    profiles.set(
      target.id,
      spec.name === "san-lun7"
        ? { totalBytes: 4 * TB, startUsage: 0.23, dailyGrowth: 0.0176, startAt: now.getTime() - 40 * DAY }
        : profileFor(target.id, profileStart),
    );
  }
  // A few policies on those targets.
  const policySpecs: Array<[string, string, Record<string, unknown>]> = [
    ["file-servers-daily", "s3-primary", {
      backupType: "file",
      incrementalSchedule: "0 1 * * 1-6",
      exclusionTemplate: "windows-system",
    }],
    ["db-servers-image", "nas-smb", { backupType: "image", fullSchedule: "30 3 * * 6", compression: "zstd" }],
    ["warehouse-scanners", "san-lun7", {
      backupType: "file",
      fullSchedule: "0 22 * * 0",
      incrementalSchedule: "0 */6 * * *",
    }],
  ];
  const policyIds: string[] = [];
  for (const [name, target, extra] of policySpecs) {
    const where = targetIds.get(target);
    if (!where) continue;
    const input = { name, ...where, fullSchedule: "0 2 * * 0", ...extra } as PolicyCreateInput;
    policyIds.push((await createPolicy(kv, system, input, now)).id);
  }
  // Agents on managed hosts, enrolled over the real protocol and assigned to the policies.
  const agents: EngineIdentity[] = [];
  const hosts: Array<[string, string, string]> = [
    ["fs01.corp.internal", "Windows Server 2022", hqSecret],
    ["fs02.corp.internal", "Windows Server 2022", hqSecret],
    ["db01.corp.internal", "Ubuntu 24.04 (VMware guest)", hqSecret],
    ["scan01.east.internal", "Debian 12", eastSecret],
  ];
  for (const [i, [hostname, os, secret]] of hosts.entries()) {
    const { identity } = await client.enrollAgent(secret, {
      hostname,
      os,
      ipAddress: `10.30.${i}.21`,
      relay: i === 0,
    });
    agents.push(identity);
    const metrics = simulatedMetrics(hostname, now.getTime(), now.getTime() - DAY);
    await client.post(identity, "/api/agent/v1/heartbeat", { version: "1.4.0", metrics });
    const policyId = policyIds[i === 2 ? 1 : i === 3 ? 2 : 0];
    if (policyId) await assignHost(kv, system, { policyId, hostId: identity.id }, now);
  }

  // Backfill: daily capacity for 120 days, then hourly for the last two days; metrics every 10 min for 24 h.
  for (const engine of engines) {
    for (let t = profileStart; t < now.getTime() - 2 * DAY; t += DAY) {
      for (const id of engine.targetIds) {
        await applyCapacityReport(kv, engine.identity.id, {
          targetId: id,
          ...simulatedCapacity(profiles.get(id)!, id, t),
        }, new Date(t));
      }
    }
    for (let t = now.getTime() - 2 * DAY; t < now.getTime(); t += 3_600_000) {
      for (const id of engine.targetIds) {
        await applyCapacityReport(kv, engine.identity.id, {
          targetId: id,
          ...simulatedCapacity(profiles.get(id)!, id, t),
        }, new Date(t));
      }
    }
    const silent = engine.name === "east-bes-02";
    const end = silent ? now.getTime() - 25 * 60_000 : now.getTime();
    for (let t = now.getTime() - DAY; t < end; t += 10 * 60_000) {
      await applyHeartbeat(kv, engine.identity.id, {
        version: SIMULATED_VERSION,
        metrics: simulatedMetrics(engine.name, t, engine.bootAt),
      }, new Date(t));
    }
  }
  await backfillRuns(kv, policyIds, [...engines.map((e) => e.identity), ...agents], now);
  engines.find((e) => e.name === "hq-bes-02")!.stress = 52; // memory and disk ≥ 95 %: degraded
  const live = engines.filter((e) => e.name !== "east-bes-02"); // stays silent: offline after the sweep
  const controller = new AbortController();
  if (options.live === false) return () => {};
  runHeartbeats(client, live, { intervalMs: 60_000, profileStart, profiles, signal: controller.signal })
    .catch(() => {});
  // Backups are picked up every 20 s. Jobs an operator is waiting for (browse, search, restores: priority
  // high or critical) within about a second: a cheap in-process peek at the queue, no request until there
  // is one. Restores then report progress in steps 1.5 s apart, so the Restore page's bar moves.
  const identities = [...live.map((e) => e.identity), ...agents];
  const busy = new Set<string>();
  const work = (identity: EngineIdentity) => {
    if (busy.has(identity.id)) return;
    busy.add(identity.id);
    processJobs(client, identity, { stepMs: 1_500 }).catch(() => {}).finally(() => busy.delete(identity.id));
  };
  const jobTimer = setInterval(() => identities.forEach(work), 20_000);
  const urgentTimer = setInterval(() => {
    for (const identity of identities) {
      if (busy.has(identity.id)) continue;
      hasQueuedAtLeast(kv, `${identity.kind}:${identity.id}`, "high")
        .then((urgent) => urgent && work(identity))
        .catch(() => {});
    }
  }, 1_000);
  controller.signal.addEventListener("abort", () => {
    clearInterval(jobTimer);
    clearInterval(urgentTimer);
  });
  const agentTimer = setInterval(() => {
    for (const a of agents) {
      const metrics = simulatedMetrics(a.id, Date.now(), 0);
      client.post(a, "/api/agent/v1/heartbeat", { version: "1.4.0", metrics }).then((r) => r.body?.cancel())
        .catch(() => {});
    }
  }, 60_000);
  controller.signal.addEventListener("abort", () => clearInterval(agentTimer));
  return () => controller.abort();
}

/**
 * Two weeks of history through the real scheduler, queue and result path, with explicit past times:
 * every minute a demo policy was due, tick the scheduler, then let the simulated agents and BES claim
 * their jobs and post results (and the verify/replicate jobs those queue).
 */
async function backfillRuns(
  kv: Deno.Kv,
  policyIds: string[],
  identities: EngineIdentity[],
  now: Date,
): Promise<void> {
  const from = new Date(now.getTime() - 14 * DAY);
  const minutes = new Set<number>();
  for (const id of policyIds) {
    const policy = await getPolicy(kv, id);
    if (!policy) continue;
    for (const expr of [policy.fullSchedule, policy.incrementalSchedule, policy.syntheticFullSchedule]) {
      if (!expr) continue;
      for (const d of nextRuns(expr, from, 200, policy.timeZone)) {
        if (d.getTime() < now.getTime()) minutes.add(d.getTime());
      }
    }
  }
  for (const minute of [...minutes].sort((a, b) => a - b)) {
    const at = new Date(minute);
    await runSchedulerTick(kv, at);
    for (let round = 0; round < 3; round++) {
      for (const identity of identities) {
        const principal = `${identity.kind}:${identity.id}`;
        for (const job of await claimJobs(kv, principal, 50, at)) {
          const { job: done } = await applyResult(kv, principal, job.id, simulatedResult(job, at), at);
          await applyJobOutcome(kv, done, at);
        }
      }
    }
  }
}
