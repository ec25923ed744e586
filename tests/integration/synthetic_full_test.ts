/**
 * Issue 16: a synthetic full is one job (and run) per active host of the policy, on the policy's BES, naming
 * the host (its namespace) and the repository — the reference BES refuses one without a host, since a
 * repository's data and keys are per host namespace (ENGINE.md §3). Scheduled and run-now alike; the BES
 * holding such a job gets a write token for that host's namespace and that namespace's keys.
 */
import assert from "node:assert/strict";
import { importTokenPublicKey, verifyDataToken } from "../../engine/protocol/token.ts";
import { assignHost } from "../../domain/assignments.ts";
import { getJob } from "../../domain/job_queue.ts";
import { patchPolicy } from "../../domain/policies.ts";
import { runPolicyNow } from "../../domain/run_now.ts";
import { listRunsByPolicy, type Run } from "../../domain/runs.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { retryRun } from "../../domain/run_retry.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { ConflictError } from "../../domain/errors.ts";
import { call, claim, type DataWorld, dataWorld, system } from "./data_access_fixture.ts";

interface KeyReply {
  jobId: string;
  namespace: string;
  keySetId: string;
  dataKey: string;
  repository: { target: string; path: string; generation: number };
}

/** Checks the BES's claim of the synthetic fulls of `runs`: one per host, its token and keys that host's. */
async function assertClaimedPerHost(w: DataWorld, runs: Run[], trigger: string) {
  const hosts = [w.agent.id, w.otherAgent.id].sort();
  assert.deepEqual(runs.map((r) => r.hostId).sort(), hosts, "one run per active host");
  const repository = { target: w.target.id, path: `cadres/${w.policy.id}/g1`, generation: 1 };
  for (const run of runs) {
    assert.deepEqual([run.kind, run.trigger, run.status], ["synthetic_full", trigger, "pending"]);
    const job = (await getJob(w.kv, run.jobId!))!;
    assert.equal(job.kind, "synthetic_full");
    assert.equal(job.principal, `bes:${w.bes.id}`, "the BES runs it, not the agent");
    assert.deepEqual(job.payload, {
      policyId: w.policy.id,
      targetId: w.target.id,
      repository,
      hostId: run.hostId,
    });
  }
  // The agents are handed none of them.
  assert.deepEqual((await claim(w, w.agent)).filter((j) => j.kind === "synthetic_full"), []);
  assert.deepEqual((await claim(w, w.otherAgent)).filter((j) => j.kind === "synthetic_full"), []);

  const claimed = (await claim(w, w.bes)).filter((j) => j.kind === "synthetic_full");
  assert.deepEqual(claimed.map((j) => j.id).sort(), runs.map((r) => r.jobId).sort());
  const now = w.clock.now();
  const keysByHost = new Map<string, KeyReply>();
  for (const job of claimed) {
    const host = String(job.payload.hostId);
    const claims = verifyDataToken(importTokenPublicKey(w.tokenPublicKey), job.dataToken!, now);
    assert.deepEqual(claims, {
      v: 1,
      job: job.id,
      host,
      bes: w.bes.id,
      repository,
      namespace: host,
      access: "write",
      iat: Math.floor(now.getTime() / 1000),
      exp: Math.floor(now.getTime() / 1000) + 300,
    });
    const keys = await call(w, w.bes, `/api/bes/v1/jobs/${job.id}/key`, {});
    assert.equal(keys.status, 200, keys.text);
    const reply = keys.body as KeyReply;
    assert.deepEqual([reply.jobId, reply.namespace, reply.repository], [job.id, host, repository]);
    keysByHost.set(host, reply);
    // The agent of that host does not hold the BES's job: no keys for it.
    const who = host === w.agent.id ? w.agent : w.otherAgent;
    assert.equal((await call(w, who, `/api/agent/v1/jobs/${job.id}/key`, {})).status, 404);
  }
  assert.notEqual(
    keysByHost.get(w.agent.id)!.keySetId,
    keysByHost.get(w.otherAgent.id)!.keySetId,
    "each host's namespace has its own keys",
  );
  return { claimed, keysByHost };
}

/** Posts the BES's result of a synthetic full: a restore point of kind synthetic_full. */
async function finishSynthetic(w: DataWorld, jobId: string, engineId: string) {
  const now = w.clock.now().toISOString();
  const res = await call(w, w.bes, `/api/bes/v1/jobs/${jobId}/result`, {
    status: "success",
    startedAt: now,
    endedAt: now,
    bytesTransferred: 0,
    protectedBytes: 10,
    output: {
      restorePoint: { id: engineId, chainId: engineId, type: "synthetic_full", sizeBytes: 10, fileCount: 1 },
    },
  });
  assert.equal(res.status, 200, res.text);
}

Deno.test("a scheduled and a run-now synthetic full: one BES job per active host with its hostId; the BES gets each host's token and keys", async () => {
  await using w = await dataWorld();
  await assignHost(w.kv, system, { policyId: w.policy.id, hostId: w.otherAgent.id }, w.clock.now());
  // The dataWorld clock is Sunday 10:00 UTC; the full schedule (Sunday 02:00) does not fire now.
  await patchPolicy(w.kv, system, w.policy.id, { syntheticFullSchedule: "0 10 * * *" }, w.clock.now());

  // Scheduled.
  await runSchedulerTick(w.kv, w.clock.now());
  const scheduled = await listRunsByPolicy(w.kv, w.policy.id);
  const { claimed, keysByHost } = await assertClaimedPerHost(w, scheduled, "schedule");

  // While they run, another synthetic full of those hosts is refused, naming the BES and the host.
  const busy = await runPolicyNow(w.kv, system, w.policy.id, { kind: "synthetic_full" }, w.clock.now())
    .catch((e) => e);
  assert.ok(busy instanceof ConflictError, String(busy));
  assert.match(
    busy.message,
    /already pending or running on web0[12]\.acme\.example, web0[12]\.acme\.example/,
  );

  // The results become restore points of each host.
  for (const [i, job] of claimed.entries()) await finishSynthetic(w, job.id, `synthetic-${i}`);
  const points = (await Array.fromAsync(w.kv.list<RestorePoint>({ prefix: ["restore_points"] })))
    .map((e) => e.value).filter((p) => p.type === "synthetic_full");
  assert.deepEqual(points.map((p) => p.hostId).sort(), [w.agent.id, w.otherAgent.id].sort());

  // Run now: the same shape, trigger manual; the keys of a namespace are the same ones as before.
  w.clock.advance(60_000);
  const created = await runPolicyNow(w.kv, system, w.policy.id, { kind: "synthetic_full" }, w.clock.now());
  assert.deepEqual(
    created.map((c) => c.hostname).sort(),
    ["web01.acme.example", "web02.acme.example"],
  );
  const again = await assertClaimedPerHost(w, created.map((c) => c.run), "manual");
  for (const [host, reply] of again.keysByHost) {
    assert.equal(reply.dataKey, keysByHost.get(host)!.dataKey, "one key set per namespace");
  }
});

Deno.test("a synthetic full needs the BES only: an offline agent's host still gets its job; a retry goes to the same host", async () => {
  await using w = await dataWorld();
  await assignHost(w.kv, system, { policyId: w.policy.id, hostId: w.otherAgent.id }, w.clock.now());
  // The second agent goes offline (as the offline sweep marks it).
  const hostEntry = await w.kv.get<{ status: string }>(["hosts", w.otherAgent.id]);
  await w.kv.set(hostEntry.key, { ...hostEntry.value!, status: "offline" });

  const created = await runPolicyNow(w.kv, system, w.policy.id, { kind: "synthetic_full" }, w.clock.now());
  assert.equal(created.length, 2);
  assert.ok(created.every((c) => c.run.status === "pending" && c.run.jobId), "no run waits for an agent");
  const offline = created.find((c) => c.run.hostId === w.otherAgent.id)!.run;

  // It fails on the BES (retryable); its retry is one synthetic full of that host on the BES.
  const [job] = (await claim(w, w.bes)).filter((j) => j.id === offline.jobId);
  const now = w.clock.now().toISOString();
  const failed = await call(w, w.bes, `/api/bes/v1/jobs/${job.id}/result`, {
    status: "failed",
    startedAt: now,
    endedAt: now,
    bytesTransferred: 0,
    protectedBytes: 0,
    error: { reason: "TARGET_UNREACHABLE", message: "the target did not answer" },
    retryable: true,
  });
  assert.equal(failed.status, 200, failed.text);
  const retry = await retryRun(w.kv, system, offline.id, w.clock.now());
  assert.deepEqual([retry.kind, retry.hostId, retry.trigger], ["synthetic_full", w.otherAgent.id, "retry"]);
  const retried = (await getJob(w.kv, retry.jobId!))!;
  assert.equal(retried.principal, `bes:${w.bes.id}`);
  assert.equal(retried.payload.hostId, w.otherAgent.id);
});

Deno.test("a scheduled synthetic full with its BES offline: one skipped run per active host, ENGINE_OFFLINE, no job", async () => {
  await using w = await dataWorld();
  await assignHost(w.kv, system, { policyId: w.policy.id, hostId: w.otherAgent.id }, w.clock.now());
  await patchPolicy(w.kv, system, w.policy.id, { syntheticFullSchedule: "0 10 * * *" }, w.clock.now());
  const engineEntry = await w.kv.get<{ status: string }>(["engines", w.bes.id]);
  await w.kv.set(engineEntry.key, { ...engineEntry.value!, status: "offline" });
  const jobsBefore = (await Array.fromAsync(w.kv.list({ prefix: ["jobs"] }))).length;
  await runSchedulerTick(w.kv, w.clock.now());
  const runs = await listRunsByPolicy(w.kv, w.policy.id);
  assert.deepEqual(runs.map((r) => r.hostId).sort(), [w.agent.id, w.otherAgent.id].sort());
  for (const run of runs) {
    assert.deepEqual(
      [run.kind, run.status, run.jobId, run.error?.reason],
      ["synthetic_full", "skipped", null, "ENGINE_OFFLINE"],
    );
  }
  assert.equal((await Array.fromAsync(w.kv.list({ prefix: ["jobs"] }))).length, jobsBefore, "no job queued");
});

Deno.test("a synthetic full of a host with no backup yet: the BES skips it (NO_BACKUP) and its run is skipped, not failed; the other host's succeeds", async () => {
  await using w = await dataWorld();
  await assignHost(w.kv, system, { policyId: w.policy.id, hostId: w.otherAgent.id }, w.clock.now());
  const created = await runPolicyNow(w.kv, system, w.policy.id, { kind: "synthetic_full" }, w.clock.now());
  const claimed = (await claim(w, w.bes)).filter((j) => j.kind === "synthetic_full");
  assert.equal(claimed.length, 2);
  const fresh = claimed.find((j) => j.payload.hostId === w.otherAgent.id)!;
  const backedUp = claimed.find((j) => j.payload.hostId === w.agent.id)!;
  const now = w.clock.now().toISOString();
  // What the reference BES answers for a host with no snapshot in the repository (engine/bes/data_jobs.ts).
  const message =
    `Skipped: host ${w.otherAgent.id} has no backup in cadres/${w.policy.id}/g1 on t — nothing ` +
    "to make a synthetic full of";
  const res = await call(w, w.bes, `/api/bes/v1/jobs/${fresh.id}/result`, {
    status: "warning",
    startedAt: now,
    endedAt: now,
    bytesTransferred: 0,
    protectedBytes: 0,
    error: { reason: "NO_BACKUP", message },
    retryable: false,
    output: { skipped: { hostId: w.otherAgent.id, reason: "NO_BACKUP", message } },
  });
  assert.equal(res.status, 200, res.text);
  await finishSynthetic(w, backedUp.id, "synthetic-ok");

  const runs = new Map((await listRunsByPolicy(w.kv, w.policy.id)).map((r) => [r.hostId, r]));
  const skipped = runs.get(w.otherAgent.id)!;
  assert.deepEqual(
    [skipped.status, skipped.error?.reason, skipped.restorePointId, skipped.retryable],
    ["skipped", "NO_BACKUP", null, false],
  );
  assert.equal(skipped.errorLine, message);
  assert.equal(runs.get(w.agent.id)!.status, "success", "the host with a backup gets its synthetic full");
  assert.equal(created.length, 2);
  // Not a failure: nothing to retry, no retryable index entry, and the run counts as no failed backup.
  assert.equal((await w.kv.get(["runs_retryable", skipped.id])).value, null);
  await assert.rejects(() => retryRun(w.kv, system, skipped.id, w.clock.now()));
  const points = (await Array.fromAsync(w.kv.list<RestorePoint>({ prefix: ["restore_points"] })))
    .map((e) => e.value).filter((p) => p.hostId === w.otherAgent.id);
  assert.deepEqual(points, [], "no restore point for the skipped host");
});
