/**
 * The world of the file history tests: a tenant with one BES, one host assigned to a file policy and three
 * restore points of it (a full at 00:00, incrementals at 01:00 and 02:00; engine ids `H("a")`…`H("c")`), a
 * viewer and a restore operator with browser sessions, and `finish` to post a claimed job's result as its
 * engine and apply it.
 */
import assert from "node:assert/strict";
import { claimJobs, type Job, type ResultInput } from "../../domain/job_queue.ts";
import { addUser, Browser, signInAs, testApp, TestClock } from "../helpers.ts";
import { backupWorld, finishJob, heartbeatsAndTick } from "./backup_world.ts";

export const FILE = "/srv/data/budget.xlsx";
export const H = (c: string) => c.repeat(64);

export async function setup(kv: Deno.Kv) {
  const clock = new TestClock(new Date("2026-11-02T00:00:00Z"));
  const now = clock.now();
  const { tenant, engine, host } = await backupWorld(kv, now, {
    engineName: "bes-history",
    policy: { name: "Files nightly", fullSchedule: "0 0 * * *", incrementalSchedule: "0 1-23 * * *" },
    hostname: "files-01.acme.example",
    ipAddress: "10.0.0.2",
  });
  const finish = (job: Job, result: Partial<ResultInput>, at = clock.now()) => finishJob(kv, job, result, at);
  // Three backups: a full at 00:00, incrementals at 01:00 and 02:00.
  const engineIds = [H("a"), H("b"), H("c")];
  for (const [i, id] of engineIds.entries()) {
    const at = new Date(Date.UTC(2026, 10, 2, i));
    clock.time = at;
    await heartbeatsAndTick(kv, engine.id, host.id, at);
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
