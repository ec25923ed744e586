/**
 * Run now and open runs (review of issue 14): the run-now guard's `writing` mark is judged by its
 * explicit time, not by KV's lazy expiry; the minute sweep brings runs whose job already ended up to
 * their job, so they stop blocking run now and retries.
 */
import assert from "node:assert/strict";
import { assignHost } from "../../domain/assignments.ts";
import { ConflictError } from "../../domain/errors.ts";
import { type Host } from "../../domain/hosts.ts";
import { type Policy } from "../../domain/policies.ts";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { runPolicyNow } from "../../domain/run_now.ts";
import { createTarget } from "../../domain/storage.ts";
import { createTenant, enrollTestHost, onlineTestEngine, targetInput, TestClock } from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

/** A tenant with an online BES, a target and a policy with two active hosts. */
async function fixture(kv: Deno.Kv) {
  const clock = new TestClock(new Date("2026-11-29T10:00:00Z"));
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops"], now);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine, keys } = await onlineTestEngine(kv, scope, now);
  const target = await createTarget(kv, system, targetInput(engine.id), { now, masterKey });
  const policy = await createPolicy(kv, system, {
    name: "files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, now) as Policy;
  const hosts: Host[] = [];
  for (const name of ["h1", "h2"]) {
    const host = await enrollTestHost(kv, scope, name, now);
    await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, now);
    hosts.push(host);
  }
  return { clock, tenant, engine, keys, policy, hosts };
}

Deno.test("run now: a `writing` mark older than a minute no longer holds, even while KV has not expired it", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const now = f.clock.now();
  // A run now that died mid-way 30 s ago: still holds.
  await kv.set(["run_now_guard", f.policy.id], {
    at: new Date(now.getTime() - 30_000).toISOString(),
    writing: true,
  });
  await assert.rejects(
    () => runPolicyNow(kv, system, f.policy.id, { kind: "full" }, now),
    (e) => e instanceof ConflictError && /still starting its runs/.test(e.message),
  );
  // One that died 61 s ago (the key is still there: KV's expiry is lazy): over.
  await kv.set(["run_now_guard", f.policy.id], {
    at: new Date(now.getTime() - 61_000).toISOString(),
    writing: true,
  });
  const created = await runPolicyNow(kv, system, f.policy.id, { kind: "full" }, now);
  assert.equal(created.length, 2);
  assert.ok(created.every((c) => c.run.trigger === "manual" && c.run.status === "pending"));
});
