/**
 * The world of the file history tests: a tenant with one BES, one host assigned to a file policy and three
 * restore points of it (a full at 00:00, incrementals at 01:00 and 02:00; engine ids `H("a")`…`H("c")`), a
 * viewer and a restore operator with browser sessions, and `finish` to post a claimed job's result as its
 * engine and apply it.
 */
import assert from "node:assert/strict";
import { assignHost } from "../../domain/assignments.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { applyHostHeartbeat, enrollHost } from "../../domain/hosts.ts";
import { applyResult, claimJobs, type Job, type ResultInput } from "../../domain/jobs.ts";
import { createPolicy, type Policy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { applyJobOutcome, runSchedulerTick } from "../../domain/runs.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import {
  addUser,
  Browser,
  createTenant,
  engineMetrics,
  registerTestEngine,
  signInAs,
  targetInput,
  testApp,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);
export const FILE = "/srv/data/budget.xlsx";
export const H = (c: string) => c.repeat(64);

export async function setup(kv: Deno.Kv) {
  const clock = new TestClock(new Date("2026-11-02T00:00:00Z"));
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops"], now);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine } = await registerTestEngine(kv, scope, now, "bes-history");
  const target = await createTarget(kv, system, targetInput(engine.id), { now, masterKey });
  const policy = await createPolicy(kv, system, {
    name: "Files nightly",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 0 * * *",
    incrementalSchedule: "0 1-23 * * *",
  }, now) as Policy;
  const host = (await enrollHost(kv, scope, {
    hostname: "files-01.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.2",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, now)).host;
  await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, now);
  const finish = async (job: Job, result: Partial<ResultInput>, at = clock.now()) => {
    const { job: done } = await applyResult(kv, job.principal, job.id, {
      status: "success",
      startedAt: at.toISOString(),
      endedAt: at.toISOString(),
      bytesTransferred: 0,
      protectedBytes: 0,
      ...result,
    }, at);
    await applyJobOutcome(kv, done, at);
  };
  // Three backups: a full at 00:00, incrementals at 01:00 and 02:00.
  const engineIds = [H("a"), H("b"), H("c")];
  for (const [i, id] of engineIds.entries()) {
    const at = new Date(Date.UTC(2026, 10, 2, i));
    clock.time = at;
    await applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, at);
    await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, at);
    await runSchedulerTick(kv, at);
    const [job] = (await claimJobs(kv, `agent:${host.id}`, 10, at)).filter((j) => j.kind === "backup");
    assert.ok(job, `a backup is due at ${at.toISOString()}`);
    await finish(job, {
      output: {
        restorePoint: {
          id,
          chainId: "chain-A",
          type: i === 0 ? "full" : "incremental",
          parentId: i === 0 ? null : engineIds[i - 1],
          sizeBytes: 100,
          fileCount: 2,
          completedAt: at.toISOString(),
        },
      },
    }, at);
  }
  clock.time = new Date("2026-11-02T03:00:00Z");
  const points = new Map<string, string>();
  for await (
    const e of kv.list<{ id: string; engineRestorePointId?: string }>({ prefix: ["restore_points"] })
  ) {
    if (e.value.engineRestorePointId) points.set(e.value.engineRestorePointId, e.value.id);
  }
  const { app } = testApp(kv, clock);
  const users = {
    viewer: await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", now),
    restorer: await addUser(kv, tenant, "restorer@acme.example", "restore_operator", "all", now),
  };
  const as = async (who: keyof typeof users) => {
    const b = new Browser(app);
    await signInAs(b, kv, users[who], clock.now());
    return b;
  };
  return { clock, engine, host, finish, as, users, pointIds: engineIds.map((id) => points.get(id)!) };
}
