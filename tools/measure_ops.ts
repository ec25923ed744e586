/**
 * Per-operation costs for the capacity model of docs/scaling.md, on an embedded KV file: each operation
 * run sequentially (latency) and 32 at a time (throughput). Small and quick (about a minute); not a
 * benchmark of the HTTP layer (`deno task bench` is). Prints one JSON object.
 *
 *   deno run -A tools/measure_ops.ts [--n 2000]
 */
import { assignHost } from "../domain/assignments.ts";
import { testConfig } from "../domain/config.ts";
import { applyHeartbeat, type Engine } from "../domain/engines.ts";
import { applyHostHeartbeat, type Host } from "../domain/hosts.ts";
import { applyResult, claimJobs, enqueueJob } from "../domain/job_queue.ts";
import { readOpsGauges } from "../domain/ops_metrics.ts";
import { createPolicy } from "../domain/policies.ts";
import { systemActor } from "../domain/rbac.ts";
import { runSchedulerTick } from "../domain/scheduler.ts";
import { createTarget } from "../domain/storage.ts";
import { createTenant, engineMetrics, enrollTestHost, onlineTestEngine } from "../tests/helpers.ts";

const n = Number(Deno.args[Deno.args.indexOf("--n") + 1] || 2000);
const dir = await Deno.makeTempDir({ prefix: "cadres-measure-" });
const kv = await Deno.openKv(`${dir}/cadres.kv`);
const now = new Date();
const out: Record<string, unknown> = { n, kv: "embedded SQLite file", deno: Deno.version.deno };

/** Runs `op(i)` for i < count, `parallel` at a time; returns ms per op and ops per second. */
async function measure(count: number, parallel: number, op: (i: number) => Promise<unknown>) {
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: parallel }, async () => {
    for (let i = next++; i < count; i = next++) await op(i);
  }));
  const ms = performance.now() - started;
  return { msPerOp: Math.round((ms / count) * 1000) / 1000, opsPerSecond: Math.round(count / (ms / 1000)) };
}

try {
  const tenant = await createTenant(kv, "Acme", ["Ops"], now);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const engines: Engine[] = [];
  for (let i = 0; i < 64; i++) engines.push((await onlineTestEngine(kv, scope, now, `bes-${i}`)).engine);
  const hosts: Host[] = [];
  for (let i = 0; i < 64; i++) hosts.push(await enrollTestHost(kv, scope, `h${i}`, now));
  const metrics = { version: "1", metrics: engineMetrics() };
  // Heartbeats: each a different minute so the first-of-minute metrics sample is written as in production.
  const at = (i: number) => new Date(now.getTime() + Math.floor(i / 64) * 60_000 + (i % 64));
  out.besHeartbeat = {
    sequential: await measure(n / 4, 1, (i) => applyHeartbeat(kv, engines[i % 64].id, metrics, at(i))),
    parallel32: await measure(n, 32, (i) => applyHeartbeat(kv, engines[i % 64].id, metrics, at(i + n))),
  };
  out.agentHeartbeat = {
    sequential: await measure(n / 4, 1, (i) => applyHostHeartbeat(kv, hosts[i % 64].id, metrics, at(i))),
    parallel32: await measure(n, 32, (i) => applyHostHeartbeat(kv, hosts[i % 64].id, metrics, at(i + n))),
  };
  // Jobs: queue, claim (group commits), result.
  const principal = (i: number) => `agent:${hosts[i % 64].id}`;
  out.enqueue = await measure(
    n,
    32,
    (i) => enqueueJob(kv, { ...scope, kind: "backup", principal: principal(i) }, now),
  );
  const claimed: Array<{ id: string; principal: string }> = [];
  out.claim = await measure(n / 4, 32, async (i) => {
    for (const j of await claimJobs(kv, principal(i), 4, now)) {
      claimed.push({ id: j.id, principal: principal(i) });
    }
  });
  out.result = await measure(claimed.length, 32, (i) =>
    applyResult(kv, claimed[i].principal, claimed[i].id, {
      status: "success",
      startedAt: now.toISOString(),
      endedAt: now.toISOString(),
      bytesTransferred: 1,
      protectedBytes: 1,
    }, now));
  // The scheduler: one tick dispatching policies × hosts runs.
  const target = await createTarget(kv, systemActor("measure"), {
    name: "disk",
    besId: engines[0].id,
    type: "local",
    config: { path: "/srv" },
  }, { now, masterKey: testConfig().masterKey! });
  for (let p = 0; p < 20; p++) {
    const policy = await createPolicy(kv, systemActor("measure"), {
      name: `p${p}`,
      besId: engines[0].id,
      targetId: target.id,
      backupType: "file",
      fullSchedule: "* * * * *",
    }, now);
    for (const h of hosts.slice(0, 50)) {
      await assignHost(kv, systemActor("measure"), { policyId: policy.id, hostId: h.id }, now);
    }
  }
  const minute = new Date(Math.ceil(now.getTime() / 60_000) * 60_000 + 60_000);
  const tickStarted = performance.now();
  const tick = await runSchedulerTick(kv, minute);
  const tickMs = performance.now() - tickStarted;
  out.schedulerTick = {
    dispatched: tick.dispatched,
    ms: Math.round(tickMs),
    msPerRun: Math.round((tickMs / Math.max(1, tick.dispatched)) * 1000) / 1000,
  };
  const scrapeStarted = performance.now();
  for (let i = 0; i < 20; i++) await readOpsGauges(kv, now, { dataDir: dir });
  out.metricsScrapeMs = Math.round(((performance.now() - scrapeStarted) / 20) * 100) / 100;
  console.log(JSON.stringify(out, null, 2));
} finally {
  kv.close();
  await Deno.remove(dir, { recursive: true });
}
