/**
 * Job outcomes and data fixes that lose every commit race throw CommitConflictError instead of returning
 * as if their state change had been written (before `withRetry`, these loops ended quietly after their
 * last try, and the run or restore request stayed "running" for ever).
 */
import assert from "node:assert/strict";
import type { Job } from "../../domain/job_queue.ts";
import {
  applyPolicyRpo,
  protectedByHostKey,
  type ProtectedObject,
  protectedObjectKey,
} from "../../domain/protected.ts";
import type { Replication } from "../../domain/replicas.ts";
import { CommitConflictError } from "../../domain/retry.ts";
import { restoreByJobKey, restoreKey } from "../../domain/keys/restore.ts";
import type { RestoreRequest } from "../../domain/restore_requests.ts";
import { runByJobKey, runKey } from "../../domain/keys/runs.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import type { Run } from "../../domain/runs.ts";
import { contendedKv } from "../fakes/contended_kv.ts";

const now = new Date("2026-11-22T10:00:00Z");

function runningRun(id: string): Run {
  return {
    id,
    policyId: "pol-1",
    accountId: "acct-1",
    orgId: "org-1",
    hostId: "host-1",
    jobId: `job-${id}`,
    kind: "incremental" as Run["kind"],
    trigger: "schedule",
    status: "running",
    scheduledFor: now.toISOString(),
    startedAt: now.toISOString(),
    endedAt: null,
    bytesTransferred: 0,
    protectedBytes: 0,
    restorePointId: null,
    error: null,
    retryable: false,
    alertId: null,
    createdAt: now.toISOString(),
    updatedAt: now.toISOString(),
  };
}

function failedBackupJob(runId: string): Job {
  return {
    id: `job-${runId}`,
    kind: "backup",
    principal: "bes:bes-1",
    accountId: "acct-1",
    orgId: "org-1",
    status: "failed",
    payload: { policyId: "pol-1" },
    result: {
      status: "failed",
      startedAt: now.toISOString(),
      endedAt: now.toISOString(),
      bytesTransferred: 0,
      protectedBytes: 0,
      error: { reason: "IO", message: "disk gone" },
      retryable: false,
      output: null,
      hookOutput: [],
    },
  } as unknown as Job;
}

async function seed(kv: Deno.Kv, id: string) {
  await kv.set(["policies", "pol-1"], { id: "pol-1", accountId: "acct-1", orgId: "org-1", name: "P" });
  await kv.set(runKey(id), runningRun(id));
  await kv.set(runByJobKey(`job-${id}`), id);
}

Deno.test("a run's result survives four lost races", async () => {
  using kv = await Deno.openKv(":memory:");
  await seed(kv, "run-1");
  const world = contendedKv(kv, runKey("run-1"), 4);
  await applyJobOutcome(world.kv, failedBackupJob("run-1"), now);
  assert.equal((await kv.get<Run>(runKey("run-1"))).value!.status, "failed");
});

Deno.test("a run's result that loses five races throws a conflict; posting it again records it", async () => {
  using kv = await Deno.openKv(":memory:");
  await seed(kv, "run-2");
  const world = contendedKv(kv, runKey("run-2"), 5);
  const error = await applyJobOutcome(world.kv, failedBackupJob("run-2"), now).then(() => null, (e) => e);
  assert.ok(error instanceof CommitConflictError, `expected a conflict, got ${error}`);
  assert.equal((await kv.get<Run>(runKey("run-2"))).value!.status, "running", "nothing was written");
  await applyJobOutcome(kv, failedBackupJob("run-2"), now);
  assert.equal((await kv.get<Run>(runKey("run-2"))).value!.status, "failed");
});

function runningRestore(id: string): RestoreRequest {
  return {
    id,
    kind: "file",
    accountId: "acct-1",
    orgId: "org-1",
    hostOrgIds: ["org-1"],
    restorePointId: "rp-1",
    sourceHostId: "host-1",
    targetHostId: "host-1",
    targetPath: null,
    overwrite: false,
    paths: ["/etc"],
    pathCount: 1,
    mode: null,
    jobId: `job-${id}`,
    priority: "high",
    status: "running",
    progress: null,
    result: null,
    error: null,
    tokenExpiresAt: null,
    tokenUsedAt: null,
    createdBy: "user-1",
    createdAt: now.toISOString(),
    updatedAt: now.toISOString(),
  };
}

function finishedRestoreJob(restoreId: string): Job {
  return {
    ...failedBackupJob(restoreId),
    kind: "restore_files",
    status: "succeeded",
    payload: { restorePointId: "rp-1" },
    result: {
      status: "success",
      startedAt: now.toISOString(),
      endedAt: now.toISOString(),
      bytesTransferred: 10,
      protectedBytes: 0,
      error: null,
      retryable: false,
      output: { restored: { files: 1, bytes: 10, errors: [] } },
      hookOutput: [],
    },
  } as unknown as Job;
}

Deno.test("a restore's outcome survives four lost races", async () => {
  using kv = await Deno.openKv(":memory:");
  await kv.set(restoreKey("rs-1"), runningRestore("rs-1"));
  await kv.set(restoreByJobKey("job-rs-1"), "rs-1");
  const world = contendedKv(kv, restoreKey("rs-1"), 4);
  await applyJobOutcome(world.kv, finishedRestoreJob("rs-1"), now);
  assert.equal((await kv.get<RestoreRequest>(restoreKey("rs-1"))).value!.status, "success");
});

Deno.test("a restore's outcome that loses five races throws a conflict; posting it again records it", async () => {
  using kv = await Deno.openKv(":memory:");
  await kv.set(restoreKey("rs-2"), runningRestore("rs-2"));
  await kv.set(restoreByJobKey("job-rs-2"), "rs-2");
  const world = contendedKv(kv, restoreKey("rs-2"), 5);
  const error = await applyJobOutcome(world.kv, finishedRestoreJob("rs-2"), now).then(() => null, (e) => e);
  assert.ok(error instanceof CommitConflictError, `expected a conflict, got ${error}`);
  assert.equal(
    (await kv.get<RestoreRequest>(restoreKey("rs-2"))).value!.status,
    "running",
    "nothing written",
  );
  await applyJobOutcome(kv, finishedRestoreJob("rs-2"), now);
  assert.equal((await kv.get<RestoreRequest>(restoreKey("rs-2"))).value!.status, "success");
});

/** The record of a replication (replicas.ts `replicationKey`, not exported). */
const replicationRecord = (pointId: string, ruleId: string) => ["replications", pointId, ruleId] as const;

async function pendingReplication(kv: Deno.Kv, pointId: string): Promise<Job> {
  const record: Replication = {
    restorePointId: pointId,
    ruleId: "rule-1",
    targetId: "target-2",
    jobId: `job-${pointId}`,
    status: "pending",
    bytes: 0,
    error: null,
    updatedAt: now.toISOString(),
  };
  await kv.set(replicationRecord(pointId, "rule-1"), record);
  return {
    ...failedBackupJob(pointId),
    kind: "replicate",
    payload: { restorePointId: pointId, ruleId: "rule-1" },
  } as unknown as Job;
}

Deno.test("a replication's outcome survives nine lost races", async () => {
  using kv = await Deno.openKv(":memory:");
  const job = await pendingReplication(kv, "rp-1");
  const world = contendedKv(kv, replicationRecord("rp-1", "rule-1"), 9);
  await applyJobOutcome(world.kv, job, now);
  assert.equal((await kv.get<Replication>(replicationRecord("rp-1", "rule-1"))).value!.status, "failed");
});

Deno.test("a replication's outcome that loses ten races throws a conflict; posting it again records it", async () => {
  using kv = await Deno.openKv(":memory:");
  const job = await pendingReplication(kv, "rp-2");
  const world = contendedKv(kv, replicationRecord("rp-2", "rule-1"), 10);
  const error = await applyJobOutcome(world.kv, job, now).then(() => null, (e) => e);
  assert.ok(error instanceof CommitConflictError, `expected a conflict, got ${error}`);
  const key = replicationRecord("rp-2", "rule-1");
  assert.equal((await kv.get<Replication>(key)).value!.status, "pending", "nothing written");
  await applyJobOutcome(kv, job, now);
  assert.equal((await kv.get<Replication>(key)).value!.status, "failed");
});

function protectedObject(id: string, hostId: string): ProtectedObject {
  return {
    id,
    accountId: "acct-1",
    orgId: "org-1",
    hostId,
    policyId: "pol-1",
    name: `${hostId}.example`,
    type: "fileset",
    source: { kind: "bes", besId: "bes-1" },
    rpoHours: 3,
    lastBackupAt: null,
    lastBackupStatus: "never",
    lastSuccessAt: null,
    lastRestorePointId: null,
    activeSince: now.toISOString(),
    breached: false,
    protection: "active",
    createdAt: now.toISOString(),
    updatedAt: now.toISOString(),
  };
}

Deno.test("a policy's new RPO: an object that loses five races throws after the others are updated", async () => {
  using kv = await Deno.openKv(":memory:");
  for (const [id, hostId] of [["po-1", "host-1"], ["po-2", "host-2"]]) {
    await kv.set(["assignments_by_policy", "pol-1", hostId], true);
    await kv.set(protectedByHostKey(hostId, "pol-1"), id);
    await kv.set(protectedObjectKey(id), protectedObject(id, hostId));
  }
  const rpoOf = async (id: string) => (await kv.get<ProtectedObject>(protectedObjectKey(id))).value!.rpoHours;
  const world = contendedKv(kv, protectedObjectKey("po-1"), 5);
  const error = await applyPolicyRpo(world.kv, { id: "pol-1", rpoHours: 10 }, now).then(() => null, (e) => e);
  assert.ok(error instanceof CommitConflictError, `expected a conflict, got ${error}`);
  assert.equal(await rpoOf("po-1"), 3, "the contended object is unchanged");
  assert.equal(await rpoOf("po-2"), 10, "the other object got the new RPO");
  assert.equal(await applyPolicyRpo(kv, { id: "pol-1", rpoHours: 10 }, now), 1, "applying again finishes it");
  assert.equal(await rpoOf("po-1"), 10);
});
