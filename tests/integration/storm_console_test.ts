/**
 * A scheduler storm gives way to the console (domain/foreground.ts): the app counts console requests in
 * flight (pages and the API, not the engine protocol), and a tick with a console request in flight still
 * dispatches every job — bounded waits, same result — in both read modes.
 */
import assert from "node:assert/strict";
import { assignHost } from "../../domain/assignments.ts";
import { createSession } from "../../domain/auth.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { consoleBusy, consoleRequest } from "../../domain/foreground.ts";
import { applyHostHeartbeat, enrollHost } from "../../domain/hosts.ts";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { listRunsByPolicy } from "../../domain/runs.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import { gatedKv } from "../fakes/gated_kv.ts";
import {
  addUser,
  createTenant,
  engineClient,
  engineMetrics,
  registerTestEngine,
  targetInput,
  testApp,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const SUNDAY_2AM = new Date("2026-11-29T02:00:00Z");

Deno.test("the app counts console requests in flight, not engine-protocol ones", async () => {
  using real = await Deno.openKv(":memory:");
  const gated = gatedKv(real, { reads: true });
  const clock = new TestClock();
  const { app } = testApp(gated.kv, clock);
  const tenant = await createTenant(real, "Acme", ["Ops"], clock.now());
  const admin = await addUser(real, tenant, "admin@acme.example", "admin", "all", clock.now());
  const { cookie } = await createSession(real, admin, clock.now());
  const { identity } = await engineClient(app, clock).registerBes(tenant.secrets[0], {
    name: "bes-1",
    hostname: "bes1.acme.example",
    ipAddress: "10.0.0.10",
  });
  gated.close();
  const heartbeat = engineClient(app, clock).heartbeat(identity, engineMetrics());
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(consoleBusy(gated.kv), false, "a heartbeat waiting on KV is not console work");
  const page = app.request("http://localhost:8000/backup/dashboard", {
    headers: { cookie: `cadres_session=${cookie}` },
  });
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(consoleBusy(gated.kv), true, "a page waiting on KV is");
  gated.open();
  assert.equal((await page).status, 200);
  assert.equal((await heartbeat).status, 200);
  assert.equal(consoleBusy(gated.kv), false, "answered: no longer counted");
});

for (const [mode, bulkReadMinPolicies] of [["per-policy reads", Infinity], ["bulk reads", 1]] as const) {
  Deno.test(`a storm tick with a console request in flight gives way, bounded, and dispatches every job (${mode})`, async () => {
    const results = [];
    for (const held of [false, true]) {
      using kv = await Deno.openKv(":memory:");
      const at = new Date("2026-11-29T01:50:00Z");
      const tenant = await createTenant(kv, "Acme", ["Ops"], at);
      const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
      const { engine } = await registerTestEngine(kv, scope, at);
      await applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, at);
      const target = await createTarget(kv, system, targetInput(engine.id), {
        now: at,
        masterKey: new Uint8Array(32).fill(7),
      });
      const policies = [];
      for (let p = 0; p < 12; p++) {
        const policy = await createPolicy(kv, system, {
          name: `files-${p}`,
          besId: engine.id,
          targetId: target.id,
          backupType: "file",
          fullSchedule: "0 2 * * 0",
        }, at);
        policies.push(policy);
        for (let h = 0; h < 2; h++) {
          const { host } = await enrollHost(kv, scope, {
            hostname: `h${p}-${h}.acme.example`,
            os: "Debian 12",
            ipAddress: "10.0.0.2",
            publicKey: generateKeyPair().publicKey,
            version: "1",
          }, at);
          await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, at);
          await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, at);
        }
      }
      await runSchedulerTick(kv, new Date("2026-11-29T01:59:00Z"), { bulkReadMinPolicies });
      const done = held ? consoleRequest(kv) : () => {};
      const started = performance.now();
      const result = await runSchedulerTick(kv, SUNDAY_2AM, { bulkReadMinPolicies });
      const ms = performance.now() - started;
      done();
      let runs = 0;
      for (const policy of policies) runs += (await listRunsByPolicy(kv, policy.id)).length;
      results.push({ result, runs, ms });
    }
    const [free, busy] = results;
    assert.deepEqual(busy.result, { dispatched: 24, skipped: 0 });
    assert.deepEqual(busy.result, free.result);
    assert.equal(busy.runs, 24);
    // It waited (at least once, 20 ms) and every wait was bounded: 12 policies and their writes.
    assert.ok(busy.ms >= 20, `a busy console made the tick give way (${busy.ms.toFixed(0)} ms)`);
    assert.ok(busy.ms < 20 * 40 + 5_000, `bounded (${busy.ms.toFixed(0)} ms)`);
  });
}
