/**
 * Scale-out (docs/scaling.md): two app instances on one KV, each with its own `Deno.Kv` handle (as two
 * processes on a remote KV would have) and its own metrics and tick gate. Every cron tick runs once
 * across them, a session or token made on one is valid on the other, rate limits are shared, and the
 * only in-process caches (the token-signing key, the claim committer) agree between them.
 */
import assert from "node:assert/strict";
import { createApp } from "../../app.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import { claimJobs, enqueueJob } from "../../domain/job_queue.ts";
import { createLogger } from "../../domain/log.ts";
import { tokenPublicKey } from "../../domain/token_signing.ts";
import { runClaimed, TickGate } from "../../jobs/crons.ts";
import { createMetrics } from "../../routes/metrics.ts";
import { addUser, Browser, createTenant, PASSWORD, TestClock } from "../helpers.ts";

/**
 * One KV as another instance sees it: a separate object (so per-handle caches — the WeakMaps keyed by
 * `Deno.Kv` — are separate, as in another process) over the same database. Two real handles on one SQLite
 * file would instead fight over its lock ("database is locked"), which is why several processes need a
 * remote KV (docs/scaling.md).
 */
function separateHandle(kv: Deno.Kv): Deno.Kv {
  return new Proxy(kv, {
    get(target, prop) {
      const v = Reflect.get(target, prop, target);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/** Two instances on one KV, each with its own handle, metrics registry and tick gate. */
async function twoInstances() {
  const path = await Deno.makeTempFile({ prefix: "cadres-scale-", suffix: ".kv" });
  const shared = await Deno.openKv(path);
  const clock = new TestClock();
  const instances = [separateHandle(shared), separateHandle(shared)].map((kv) => {
    const metrics = createMetrics();
    return {
      kv,
      metrics,
      gate: new TickGate(),
      app: createApp({ kv, config: testConfig(), clock: clock.now, logger: createLogger("error"), metrics }),
    };
  });
  assert.notEqual(instances[0].kv, instances[1].kv);
  return {
    instances,
    clock,
    async [Symbol.asyncDispose]() {
      shared.close();
      await Deno.remove(path).catch(() => {});
    },
  };
}

const JOBS = [
  "self_backup",
  "sweep_heartbeats",
  "sweep_hosts",
  "resume_job_retries",
  "sweep_open_runs",
  "sweep_rpo",
  "auto_retry",
  "dispatch_schedules",
  "sync_platforms",
  "expire_leases",
  "resume_deletions",
  "deliver_notifications",
];

Deno.test("two instances on one KV: every cron tick runs exactly once across them", async () => {
  await using world = await twoInstances();
  const [a, b] = world.instances;
  const runs = new Map<string, string[]>();
  const logger = createLogger("error", () => {});
  const start = Date.parse("2026-11-22T10:00:00Z");
  // 30 minutes × 12 jobs, both instances ticking each at once (as Deno.cron fires in every process).
  for (let minute = 0; minute < 30; minute++) {
    const now = new Date(start + minute * 60_000);
    await Promise.all(
      JOBS.flatMap((job) =>
        // Either may fire first (a random start delay), as two processes' timers would.
        [a, b].map(async (instance, n) => {
          await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 4) * 2));
          await runClaimed(instance.kv, logger, job, now, async () => {
            const key = `${job}@${now.toISOString()}`;
            runs.set(key, [...runs.get(key) ?? [], n === 0 ? "a" : "b"]);
            await new Promise((r) => setTimeout(r, Math.random() * 3));
            return { ok: true };
          }, { gate: instance.gate, onTick: instance.metrics.observeTick });
        })
      ),
    );
  }
  assert.equal(runs.size, 30 * JOBS.length, "every tick ran");
  for (const [tick, by] of runs) assert.equal(by.length, 1, `${tick} ran on ${by.join(" and ")}`);
  const ran = [...runs.values()].flat();
  assert.ok(
    ran.includes("a") && ran.includes("b"),
    `both instances won some ticks: ${ran.filter((r) => r === "a").length} a, ${
      ran.filter((r) => r === "b").length
    } b`,
  );

  // Each instance's metrics count only its own ticks; together they count each once.
  const ticksOf = async (i: typeof a) => {
    const text = await i.metrics.registry.getSingleMetricAsString("cadres_cron_ticks_total");
    return [...text.matchAll(/ (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
  };
  assert.equal((await ticksOf(a)) + (await ticksOf(b)), 30 * JOBS.length);

  // A stopped instance claims nothing: the other one takes every tick.
  await a.gate.stop(1000);
  const now = new Date(start + 31 * 60_000);
  const took: string[] = [];
  await Promise.all([a, b].map((instance, n) =>
    runClaimed(instance.kv, logger, "sweep_rpo", now, () => {
      took.push(n === 0 ? "a" : "b");
      return Promise.resolve(null);
    }, { gate: instance.gate })
  ));
  assert.deepEqual(took, ["b"]);
});

Deno.test("two instances on one KV: a session or API token made on one is valid on the other", async () => {
  await using world = await twoInstances();
  const [a, b] = world.instances;
  const now = world.clock.now();
  const tenant = await createTenant(a.kv, "Acme", ["Ops"], now);
  const user = await addUser(a.kv, tenant, "ops@acme.example", "admin", "all", now);

  const onA = new Browser(a.app);
  const login = await onA.login(user.email, PASSWORD);
  assert.equal(login.status, 303);
  const onB = new Browser(b.app);
  onB.cookies = new Map(onA.cookies);
  const page = await onB.get("/backup/dashboard");
  assert.equal(page.status, 200);
  assert.match(await page.text(), /ops@acme\.example/);
  // A form posted to B with the CSRF token of the session made on A.
  const created = await onB.postForm("/admin/tokens", { name: "from-b", permissions: "backup.view" }, {
    tokenFrom: "/admin/tokens",
  });
  assert.ok(created.status === 200 || created.status === 303, `token form on B: ${created.status}`);

  const { secret } = await createApiToken(b.kv, userActor(user), {
    name: "api",
    permissions: ["backup.view"],
    expiresInDays: 0,
  }, now);
  const res = await a.app.request("/api/v1/me", { headers: { authorization: `Bearer ${secret}` } });
  assert.equal(res.status, 200);

  // Signing out on B ends the session on A too (sessions live in KV, not in memory).
  const out = await onB.postForm("/logout", {}, { tokenFrom: "/backup/dashboard" });
  assert.equal(out.status, 303);
  const after = await onA.get("/backup/dashboard");
  assert.equal(after.status, 302, "the session is gone on A as well");
});

Deno.test("two instances on one KV: login rate limits count across instances", async () => {
  await using world = await twoInstances();
  const [a, b] = world.instances;
  const now = world.clock.now();
  const tenant = await createTenant(a.kv, "Acme", ["Ops"], now);
  const user = await addUser(a.kv, tenant, "ops@acme.example", "viewer", "all", now);
  // Five failures alternating between the instances use up the per-email limit on both.
  for (let i = 0; i < 5; i++) {
    const browser = new Browser(i % 2 ? b.app : a.app, `192.0.2.${i + 1}`);
    const res = await browser.login(user.email, "wrong password");
    assert.notEqual(res.status, 429, `attempt ${i + 1} is not limited yet`);
  }
  for (const instance of [a, b]) {
    const res = await new Browser(instance.app, "192.0.2.99").login(user.email, PASSWORD);
    assert.equal(res.status, 429, "the sixth attempt is refused on either instance");
  }
});

Deno.test("two instances on one KV: the token-signing key and job claims agree between them", async () => {
  await using world = await twoInstances();
  const [a, b] = world.instances;
  const now = world.clock.now();
  const masterKey = testConfig().masterKey!;
  // First use on both at once: one key is created, both instances cache the same one.
  const [keyA, keyB] = await Promise.all([
    tokenPublicKey(a.kv, masterKey, now),
    tokenPublicKey(b.kv, masterKey, now),
  ]);
  assert.equal(keyA, keyB);

  // Claims through each instance's own group committer never lease one job twice.
  const principal = "agent:01JAAAAAAAAAAAAAAAAAAAAAAA";
  for (let i = 0; i < 40; i++) {
    await enqueueJob(a.kv, { accountId: "acc", orgId: null, kind: "backup", principal }, now);
  }
  const claims = await Promise.all(
    Array.from({ length: 8 }, (_, n) => claimJobs((n % 2 ? b : a).kv, principal, 10, now)),
  );
  const ids = claims.flat().map((j) => j.id);
  assert.equal(new Set(ids).size, ids.length, "no job leased twice");
  assert.equal(ids.length, 40, "every job leased once");
});
