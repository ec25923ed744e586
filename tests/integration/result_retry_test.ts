/**
 * A job report whose commit loses every race against concurrent writers (CommitConflictError) is answered
 * 503 `busy` with Retry-After — retryable — and changes nothing; a real 409 (a different result, a lost
 * lease) stays final. The BES job runner and the agent re-send such a result, newly signed, until it is
 * recorded exactly once; a result re-sent after it was recorded is answered `applied: false` and not applied
 * again; a verify result recorded whose outcome lost its races is applied by the re-send (never dropped).
 */
import assert from "node:assert/strict";
import { claimJobs, enqueueJob, getJob, type Job, jobKey } from "../../domain/job_queue.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { restorePointKey } from "../../domain/keys/restore.ts";
import { ControlPlane } from "../../engine/agent/control.ts";
import { JobRunner } from "../../engine/bes/jobs.ts";
import { createLogger } from "../../engine/log.ts";
import { EngineClient, type EngineIdentity } from "../../engine/protocol/client.ts";
import { createTenant, engineClient, engineMetrics, testApp, TestClock } from "../helpers.ts";

/**
 * `kv` whose armed commits lose their race: while `armed` > 0, an atomic operation that checks `key` finds
 * it changed by another writer just before it commits (the same value written again: a new versionstamp).
 */
function contended(kv: Deno.Kv) {
  const state = { key: [] as Deno.KvKey, armed: 0, lost: 0 };
  const same = (a: Deno.KvKey, b: Deno.KvKey) => JSON.stringify(a) === JSON.stringify(b);
  const proxy = new Proxy(kv, {
    get(target, prop) {
      if (prop === "atomic") {
        return () => {
          const op = target.atomic();
          const checked: Deno.KvKey[] = [];
          const check = op.check.bind(op);
          op.check = (...checks: Deno.AtomicCheck[]) => {
            checked.push(...checks.map((c) => c.key));
            return check(...checks);
          };
          const commit = op.commit.bind(op);
          op.commit = async () => {
            if (state.armed > 0 && checked.some((k) => same(k, state.key))) {
              state.armed--;
              state.lost++;
              const current = await target.get(state.key);
              await target.set(state.key, current.value);
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
  return {
    kv: proxy,
    arm: (key: Deno.KvKey, commits: number) => Object.assign(state, { key, armed: commits }),
    state,
  };
}

async function world() {
  const real = await Deno.openKv(":memory:");
  const c = contended(real);
  const clock = new TestClock(new Date()); // the agent's client signs with the real clock
  const { app, logs } = testApp(c.kv, clock);
  const tenant = await createTenant(real, "Acme", ["Ops"], clock.now());
  const client = engineClient(app, clock);
  const { identity: bes } = await client.registerBes(tenant.secrets[0], {
    name: "bes-1",
    hostname: "bes-1.example",
    ipAddress: "10.0.0.1",
  });
  assert.equal((await client.heartbeat(bes, engineMetrics())).status, 200);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  /** A job of `kind` for `who`, claimed over the protocol. */
  const claimedJob = async (
    who: EngineIdentity,
    kind: Job["kind"],
    payload: Record<string, unknown> = {},
  ) => {
    const job = await enqueueJob(
      real,
      { kind, principal: `${who.kind}:${who.id}`, payload, ...scope },
      clock.now(),
    );
    const res = await client.post(who, `/api/${who.kind}/v1/jobs/claim`, { max: 5 });
    assert.equal(res.status, 200, await res.clone().text());
    assert.ok((await res.json()).jobs.some((j: { id: string }) => j.id === job.id));
    return job;
  };
  return { kv: real, c, app, logs, clock, tenant, client, bes, scope, claimedJob };
}

const result = (over: Record<string, unknown> = {}) => ({
  status: "success",
  startedAt: "2026-12-06T10:00:00.000Z",
  endedAt: "2026-12-06T10:05:00.000Z",
  bytesTransferred: 10,
  protectedBytes: 10,
  ...over,
});

Deno.test("result route: a commit conflict answers 503 busy with Retry-After and changes nothing; the re-send records it once", async () => {
  const w = await world();
  try {
    const job = await w.claimedJob(w.bes, "verify");
    const before = (await w.kv.get<Job>(jobKey(job.id))).value;
    w.c.arm(jobKey(job.id), 5);
    const busy = await w.client.post(w.bes, `/api/bes/v1/jobs/${job.id}/result`, result());
    assert.equal(busy.status, 503, "retryable, not a final 409");
    assert.equal(busy.headers.get("retry-after"), "1");
    const body = await busy.json();
    assert.equal(body.error.code, "busy");
    assert.match(body.error.message, /conflicted repeatedly.*send the request again/);
    assert.equal(w.c.state.lost, 5);
    assert.deepEqual((await w.kv.get<Job>(jobKey(job.id))).value, before, "nothing changed");
    assert.ok(
      w.logs.some((l) => l.includes("commit conflict; answered busy") && l.includes(`bes:${w.bes.id}`)),
    );

    const ok = await w.client.post(w.bes, `/api/bes/v1/jobs/${job.id}/result`, result());
    assert.deepEqual([ok.status, await ok.json()], [200, { applied: true }]);
    const recorded = (await getJob(w.kv, job.id))!;
    assert.equal(recorded.status, "succeeded");
    const dup = await w.client.post(w.bes, `/api/bes/v1/jobs/${job.id}/result`, result());
    assert.deepEqual([dup.status, await dup.json()], [200, { applied: false }], "already applied");
    assert.deepEqual(await getJob(w.kv, job.id), recorded, "not applied again");
    // A different result is a real conflict: final 409, not busy.
    const other = await w.client.post(
      w.bes,
      `/api/bes/v1/jobs/${job.id}/result`,
      result({ bytesTransferred: 7 }),
    );
    assert.equal(other.status, 409);
    assert.equal((await other.json()).error.code, "conflict");
  } finally {
    w.kv.close();
  }
});

Deno.test("progress and parts: a commit conflict answers 503 busy (the engine keeps the job), a lost lease stays 409", async () => {
  const w = await world();
  try {
    const job = await w.claimedJob(w.bes, "verify");
    const before = (await w.kv.get<Job>(jobKey(job.id))).value;
    w.c.arm(jobKey(job.id), 5);
    const progress = { percent: 10, bytesTransferred: 5, message: "x" };
    const busy = await w.client.post(w.bes, `/api/bes/v1/jobs/${job.id}/progress`, progress);
    assert.deepEqual([busy.status, (await busy.json()).error.code], [503, "busy"]);
    assert.deepEqual((await w.kv.get<Job>(jobKey(job.id))).value, before, "lease and progress unchanged");
    w.c.arm(jobKey(job.id), 1);
    const part = { list: "errors", part: 0, items: [{ path: "/a", message: "locked" }] };
    const partBusy = await w.client.post(w.bes, `/api/bes/v1/jobs/${job.id}/parts`, part);
    assert.deepEqual([partBusy.status, (await partBusy.json()).error.code], [503, "busy"]);
    assert.equal((await Array.fromAsync(w.kv.list({ prefix: ["job_parts"] }))).length, 0, "no part stored");
    assert.equal((await w.client.post(w.bes, `/api/bes/v1/jobs/${job.id}/parts`, part)).status, 200);
    assert.equal((await w.client.post(w.bes, `/api/bes/v1/jobs/${job.id}/progress`, progress)).status, 200);
    // The lease lost: 409, final.
    w.clock.advance(6 * 60_000);
    const lost = await w.client.post(w.bes, `/api/bes/v1/jobs/${job.id}/progress`, progress);
    assert.equal(lost.status, 409);
  } finally {
    w.kv.close();
  }
});

Deno.test("a verify result recorded whose outcome lost every race: 503, then the re-send applies the verification once", async () => {
  const w = await world();
  try {
    const point = {
      id: "rp-1",
      engineId: w.bes.id,
      policyId: "pol-1",
      hostId: "host-1",
      runId: "run-1",
      chainId: "chain-1",
      type: "full",
      parentId: null,
      sizeBytes: 0,
      fileCount: 1,
      completedAt: w.clock.now().toISOString(),
      status: "complete",
      verification: "pending",
    } as RestorePoint;
    await w.kv.set(restorePointKey("rp-1"), point);
    await w.kv.set(["policies", "pol-1"], { id: "pol-1", ...w.scope });
    // Claimed in the domain: the protocol's claim would hand out data access to a repository this test lacks.
    const job = await enqueueJob(w.kv, {
      kind: "verify",
      principal: `bes:${w.bes.id}`,
      payload: { restorePointId: "rp-1", policyId: "pol-1" },
      ...w.scope,
    }, w.clock.now());
    assert.deepEqual((await claimJobs(w.kv, `bes:${w.bes.id}`, 5, w.clock.now())).map((j) => j.id), [job.id]);
    const body = result({ output: { verification: { status: "passed" } } });
    w.c.arm(restorePointKey("rp-1"), 5);
    const busy = await w.client.post(w.bes, `/api/bes/v1/jobs/${job.id}/result`, body);
    assert.deepEqual([busy.status, (await busy.json()).error.code], [503, "busy"]);
    assert.equal((await w.kv.get<RestorePoint>(restorePointKey("rp-1"))).value!.verification, "pending");
    assert.equal((await getJob(w.kv, job.id))!.status, "succeeded", "the result itself was recorded");
    const again = await w.client.post(w.bes, `/api/bes/v1/jobs/${job.id}/result`, body);
    assert.deepEqual([again.status, await again.json()], [200, { applied: false }]);
    assert.equal((await w.kv.get<RestorePoint>(restorePointKey("rp-1"))).value!.verification, "passed");
  } finally {
    w.kv.close();
  }
});

Deno.test("the BES job runner against the real route: busy twice, then the result is recorded once, retries logged", async () => {
  const w = await world();
  try {
    const job = await w.claimedJob(w.bes, "verify");
    const lines: string[] = [];
    const runner = new JobRunner({
      client: w.client,
      identity: () => w.bes,
      handlers: {},
      fallback: () => Promise.resolve({ status: "success" }),
      log: createLogger("info", (line) => lines.push(line)),
      maxJobs: 1,
      pollMs: 1000,
      progressMs: 60_000,
      resultRetry: { sleep: () => Promise.resolve() },
    });
    w.c.arm(jobKey(job.id), 10); // two sends, each losing its five commit tries
    const claimed = {
      id: job.id,
      kind: "verify",
      priority: "normal" as const,
      payload: {},
      leaseExpiresAt: "",
    };
    assert.equal(await runner.postResult(claimed, w.clock.now(), { status: "success" }), true);
    assert.equal(w.c.state.lost, 10);
    const retries = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === "result not delivered; retrying");
    assert.deepEqual(retries.map((r) => [r.jobId, r.status, r.problem]), [[job.id, 503, "busy"], [
      job.id,
      503,
      "busy",
    ]]);
    assert.equal((await getJob(w.kv, job.id))!.status, "succeeded");
  } finally {
    w.kv.close();
  }
});

Deno.test("the BES job runner: a result recorded whose answer was lost is re-sent and answered already applied, not applied twice", async () => {
  const w = await world();
  try {
    const job = await w.claimedJob(w.bes, "verify");
    let dropped = 0;
    // The network loses the answer to the first result send (the control plane recorded it).
    const lossy = new EngineClient("http://localhost:8000", async (url, init) => {
      const res = await w.app.request(url, init, { remoteAddr: { hostname: "198.51.100.7" } });
      if (url.endsWith("/result") && dropped++ === 0) {
        assert.equal(res.status, 200);
        throw new TypeError("error reading a body from connection: connection reset");
      }
      return res;
    }, w.clock.now);
    const lines: string[] = [];
    const runner = new JobRunner({
      client: lossy,
      identity: () => w.bes,
      handlers: {},
      fallback: () => Promise.resolve({ status: "success" }),
      log: createLogger("info", (line) => lines.push(line)),
      maxJobs: 1,
      pollMs: 1000,
      progressMs: 60_000,
      resultRetry: { sleep: () => Promise.resolve() },
    });
    const claimed = {
      id: job.id,
      kind: "verify",
      priority: "normal" as const,
      payload: {},
      leaseExpiresAt: "",
    };
    assert.equal(await runner.postResult(claimed, w.clock.now(), { status: "success" }), true);
    const recorded = await getJob(w.kv, job.id);
    assert.equal(recorded!.status, "succeeded");
    const logged = lines.map((l) => JSON.parse(l));
    assert.equal(logged.filter((l) => l.msg === "result not delivered; retrying").length, 1);
    const finished = logged.filter((l) => l.msg === "job finished");
    assert.equal(finished.length, 1);
    assert.equal(finished[0].alreadyApplied, true);
    assert.equal(dropped, 2, "sent twice");
  } finally {
    w.kv.close();
  }
});

Deno.test("the agent against the real route: busy twice, then the result is recorded once; a re-send is already applied", async () => {
  const w = await world();
  try {
    const { identity: agent } = await w.client.enrollAgent(w.tenant.secrets[0], {
      hostname: "files-01.example",
      ipAddress: "10.0.0.2",
    });
    const job = await w.claimedJob(agent, "backup");
    const lines: string[] = [];
    const control = new ControlPlane("http://localhost:8000", {
      fetcher: (url, init) => w.app.request(url, init, { remoteAddr: { hostname: "198.51.100.7" } }),
      log: (level, message) => lines.push(`${level} ${message}`),
      retry: { sleep: () => Promise.resolve() },
    });
    control.useIdentity(agent);
    w.c.arm(jobKey(job.id), 10);
    assert.equal(await control.result(job.id, result() as never), true);
    assert.equal(lines.length, 2);
    assert.ok(lines.every((l) => l.includes(`result of job ${job.id}: 503 busy`)), lines.join("\n"));
    assert.equal((await getJob(w.kv, job.id))!.status, "succeeded");
    assert.equal(await control.result(job.id, result() as never), false, "already applied");
  } finally {
    w.kv.close();
  }
});
