/**
 * A verification result is recorded on its restore point despite concurrent writers, or the caller gets
 * an error: never dropped silently. (Before the commit retry was folded into `withRetry`, five lost races
 * returned as if the result had been applied and left the point "pending" for ever.)
 */
import assert from "node:assert/strict";
import { verifyFailedKey } from "../../domain/dashboard.ts";
import { ConflictError } from "../../domain/errors.ts";
import type { Job } from "../../domain/job_queue.ts";
import { CommitConflictError } from "../../domain/retry.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { restorePointKey } from "../../domain/keys/restore.ts";

const now = new Date("2026-11-22T10:00:00Z");
const ACCOUNT = "acct-1";
const ORG = "org-1";

/** A restore point awaiting its verification, and its policy (read for the failures index). */
async function pendingPoint(kv: Deno.Kv, id: string): Promise<RestorePoint> {
  const point: RestorePoint = {
    id,
    engineId: "bes-1",
    policyId: "pol-1",
    hostId: "host-1",
    runId: `run-${id}`,
    chainId: "chain-1",
    type: "full",
    parentId: null,
    sizeBytes: 0,
    fileCount: 10,
    completedAt: now.toISOString(),
    status: "complete",
    verification: "pending",
  };
  await kv.set(["policies", "pol-1"], { id: "pol-1", accountId: ACCOUNT, orgId: ORG });
  await kv.set(restorePointKey(id), point);
  return point;
}

/** A finished BES verify job of `pointId` that reported `status`. */
function verifyJob(pointId: string, status: "passed" | "failed"): Job {
  return {
    id: `job-${pointId}`,
    kind: "verify",
    principal: "bes:bes-1",
    accountId: ACCOUNT,
    orgId: ORG,
    status: status === "passed" ? "succeeded" : "failed",
    payload: { restorePointId: pointId, policyId: "pol-1" },
    result: {
      status: status === "passed" ? "success" : "failed",
      startedAt: now.toISOString(),
      endedAt: now.toISOString(),
      bytesTransferred: 0,
      protectedBytes: 0,
      error: status === "passed" ? null : { reason: "CHECKSUM", message: "chunk 12 mismatch" },
      output: { verification: { status } },
    },
  } as unknown as Job;
}

/**
 * `kv` whose next `conflicts` atomic commits each lose a race: just before the commit, another writer
 * changes the restore point `id` (a field other than its verification), so the commit's check fails.
 */
function contended(kv: Deno.Kv, id: string, conflicts: number): { kv: Deno.Kv; commits: () => number } {
  let left = conflicts;
  let commits = 0;
  const proxy = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const commit = op.commit.bind(op);
          op.commit = async () => {
            commits++;
            if (left > 0) {
              left--;
              const current = await target.get<RestorePoint>(restorePointKey(id));
              await target.set(restorePointKey(id), {
                ...current.value!,
                sizeBytes: current.value!.sizeBytes + 1,
              });
            }
            return await commit();
          };
          return op;
        };
      }
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { kv: proxy, commits: () => commits };
}

async function pointOf(kv: Deno.Kv, id: string): Promise<RestorePoint> {
  return (await kv.get<RestorePoint>(restorePointKey(id))).value!;
}

Deno.test("a failed verification survives four lost races: recorded with its failures-queue entry", async () => {
  using kv = await Deno.openKv(":memory:");
  await pendingPoint(kv, "rp-1");
  const world = contended(kv, "rp-1", 4);
  await applyJobOutcome(world.kv, verifyJob("rp-1", "failed"), now);
  const point = await pointOf(kv, "rp-1");
  assert.equal(point.verification, "failed");
  assert.equal(point.sizeBytes, 4, "the concurrent writers' changes are kept too");
  assert.equal(world.commits(), 5);
  assert.equal((await kv.get(verifyFailedKey(ACCOUNT, point.completedAt, "rp-1"))).value, ORG);
});

Deno.test("five lost races throw a conflict and change nothing; posting the result again records it", async () => {
  for (const status of ["passed", "failed"] as const) {
    using kv = await Deno.openKv(":memory:");
    await pendingPoint(kv, "rp-2");
    const world = contended(kv, "rp-2", 5);
    const error = await applyJobOutcome(world.kv, verifyJob("rp-2", status), now).then(() => null, (e) => e);
    assert.ok(error instanceof CommitConflictError, `${status}: expected a conflict, got ${error}`);
    assert.ok(
      error instanceof ConflictError,
      "a ConflictError (a CommitConflictError: the result route answers 503 busy)",
    );
    assert.match(error.message, /verification result of restore point rp-2/);
    const point = await pointOf(kv, "rp-2");
    assert.equal(point.verification, "pending", "nothing half-written");
    assert.equal((await kv.get(verifyFailedKey(ACCOUNT, point.completedAt, "rp-2"))).value, null);
    // The engine's re-post of the same result re-applies the outcome (idempotent).
    await applyJobOutcome(kv, verifyJob("rp-2", status), now);
    assert.equal((await pointOf(kv, "rp-2")).verification, status);
    // And once recorded, applying it again changes nothing.
    await applyJobOutcome(contended(kv, "rp-2", 5).kv, verifyJob("rp-2", status), now);
    assert.equal((await pointOf(kv, "rp-2")).verification, status);
  }
});

Deno.test("racing real writers: every run either records the verification or throws, never drops it", async () => {
  let recorded = 0;
  let refused = 0;
  for (let i = 0; i < 60; i++) {
    using kv = await Deno.openKv(":memory:");
    const id = `rp-${i}`;
    await pendingPoint(kv, id);
    const status = i % 2 ? "failed" : "passed";
    // Writers that bump the point's size with their own checked retries (another module's update).
    const writer = async () => {
      for (let n = 0; n < 8; n++) {
        for (;;) {
          const entry = await kv.get<RestorePoint>(restorePointKey(id));
          const next = { ...entry.value!, sizeBytes: entry.value!.sizeBytes + 1 };
          if ((await kv.atomic().check(entry).set(restorePointKey(id), next).commit()).ok) break;
        }
      }
    };
    const [outcome] = await Promise.allSettled([
      applyJobOutcome(kv, verifyJob(id, status), now),
      writer(),
      writer(),
      writer(),
    ]);
    const point = await pointOf(kv, id);
    assert.equal(point.sizeBytes, 24, "no writer's update lost");
    const indexed = (await kv.get(verifyFailedKey(ACCOUNT, point.completedAt, id))).value !== null;
    if (outcome.status === "fulfilled") {
      recorded++;
      assert.equal(point.verification, status, `iteration ${i}: resolved, so the result must be recorded`);
      assert.equal(indexed, status === "failed");
    } else {
      refused++;
      assert.ok(outcome.reason instanceof CommitConflictError, String(outcome.reason));
      assert.equal(point.verification, "pending");
      assert.equal(indexed, false);
    }
  }
  assert.equal(recorded + refused, 60);
});
