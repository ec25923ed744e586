/**
 * The shared fixture of the backup tests: a tenant with one BES, its storage target, a file policy and one
 * host assigned to it (`backupWorld`), plus the steps the tests build their history with — daily full
 * restore points (`dailyFulls`), a claimed job's result posted as its engine and applied (`finishJob`),
 * and both heartbeats followed by a scheduler tick (`heartbeatsAndTick`).
 */
import { assignHost } from "../../domain/assignments.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { applyHostHeartbeat, enrollHost } from "../../domain/hosts.ts";
import { applyResult, claimJobs, type Job, type ResultInput } from "../../domain/job_queue.ts";
import { createPolicy, type Policy, type PolicyCreateInput } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import { createTenant, engineMetrics, registerTestEngine, targetInput } from "../helpers.ts";

const system = systemActor("test");
export const masterKey = new Uint8Array(32).fill(7);

/** Daily fulls at 02:00 keeping 7 daily points and nothing else. */
export const DAILY_POLICY = {
  name: "daily",
  fullSchedule: "0 2 * * *",
  retentionDaily: 7,
  retentionWeekly: 0,
  retentionMonthly: 0,
  verifyAfterBackup: false,
};

export interface BackupWorldOptions {
  /** The tenant's org names (the host and BES belong to the first). */
  orgs?: string[];
  engineName?: string;
  /** The policy's fields besides its BES, target and (file) type. */
  policy?: Omit<PolicyCreateInput, "besId" | "targetId" | "backupType">;
  hostname?: string;
  ipAddress?: string;
}

/** Enrolls a Debian host in `scope`. */
export async function enrollTestHost(
  kv: Deno.Kv,
  scope: { accountId: string; orgId: string },
  hostname: string,
  ipAddress: string,
  now: Date,
) {
  return (await enrollHost(kv, scope, {
    hostname,
    os: "Debian 12",
    ipAddress,
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, now)).host;
}

/** A tenant "Acme" with one BES, its target, a file policy (default `DAILY_POLICY`) and one host assigned to it. */
export async function backupWorld(kv: Deno.Kv, now: Date, options: BackupWorldOptions = {}) {
  const tenant = await createTenant(kv, "Acme", options.orgs ?? ["Ops"], now);
  const org = tenant.orgs[0];
  const scope = { accountId: tenant.account.id, orgId: org.id };
  const { engine } = await registerTestEngine(kv, scope, now, options.engineName);
  const target = await createTarget(kv, system, targetInput(engine.id), { now, masterKey });
  const policy = await createPolicy(kv, system, {
    ...(options.policy ?? DAILY_POLICY),
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
  }, now) as Policy;
  const host = await enrollTestHost(
    kv,
    scope,
    options.hostname ?? "h.acme.example",
    options.ipAddress ?? "10.0.0.9",
    now,
  );
  await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, now);
  return { tenant, org, scope, engine, target, policy, host };
}

/** Posts a result for a claimed job as its engine (a success moving nothing unless `result` says) and applies it. */
export async function finishJob(kv: Deno.Kv, job: Job, result: Partial<ResultInput>, at: Date): Promise<Job> {
  const { job: done } = await applyResult(kv, job.principal, job.id, {
    status: "success",
    startedAt: at.toISOString(),
    endedAt: at.toISOString(),
    bytesTransferred: 0,
    protectedBytes: 0,
    ...result,
  }, at);
  await applyJobOutcome(kv, done, at);
  return done;
}

/** The BES and the host report healthy at `at`, then the scheduler queues what is due. */
export async function heartbeatsAndTick(kv: Deno.Kv, engineId: string, hostId: string, at: Date) {
  await applyHeartbeat(kv, engineId, { version: "1", metrics: engineMetrics() }, at);
  await applyHostHeartbeat(kv, hostId, { version: "1", metrics: engineMetrics() }, at);
  await runSchedulerTick(kv, at);
}

/**
 * `days` daily full backups of `hostId` from 2026-11-01 02:00 UTC, each a ten-minute success storing the point
 * `rp-<day>` (chain `c-<day>`, 100 bytes, one file).
 */
export async function dailyFulls(kv: Deno.Kv, hostId: string, days: number) {
  for (let d = 0; d < days; d++) {
    const at = new Date(Date.UTC(2026, 10, 1 + d, 2));
    await runSchedulerTick(kv, at);
    const [job] = await claimJobs(kv, `agent:${hostId}`, 1, at);
    const { job: done } = await applyResult(kv, job.principal, job.id, {
      status: "success",
      startedAt: at.toISOString(),
      endedAt: new Date(at.getTime() + 600_000).toISOString(),
      bytesTransferred: 100,
      protectedBytes: 100,
      output: {
        restorePoint: {
          id: `rp-${d}`,
          chainId: `c-${d}`,
          type: "full",
          parentId: null,
          sizeBytes: 100,
          fileCount: 1,
          completedAt: new Date(at.getTime() + 600_000).toISOString(),
        },
      },
    }, at);
    await applyJobOutcome(kv, done, at);
  }
}

/** Every restore point in the KV. */
export async function allPoints(kv: Deno.Kv): Promise<RestorePoint[]> {
  return (await Array.fromAsync(kv.list<RestorePoint>({ prefix: ["restore_points"] }))).map((e) => e.value);
}
