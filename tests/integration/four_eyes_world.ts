/** A small account for the four-eyes and legal-hold tests: one BES, target, policy, host, users, points. */
import { createApiToken } from "../../domain/api_tokens.ts";
import { assignHost } from "../../domain/assignments.ts";
import { userActor } from "../../domain/auth.ts";
import { enrollHost } from "../../domain/hosts.ts";
import { applyResult, claimJobs } from "../../domain/jobs.ts";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { applyJobOutcome, type RestorePoint, runSchedulerTick } from "../../domain/runs.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import { ROLE_PERMISSIONS, type User } from "../../domain/types.ts";
import { addUser, createTenant, registerTestEngine, targetInput, testApp } from "../helpers.ts";

const system = systemActor("test");
export const masterKey = new Uint8Array(32).fill(7);

/**
 * An account with an org, two all-scope admins, an operator and a viewer of the org, a BES with a
 * target, a daily-full policy (7 daily, nothing else) and a host with `days` daily full restore points.
 */
export async function fourEyesWorld(kv: Deno.Kv, days = 10) {
  const { app, clock } = testApp(kv);
  const tenant = await createTenant(kv, "Acme", ["Ops"], clock.now());
  const org = tenant.orgs[0];
  const scope = { accountId: tenant.account.id, orgId: org.id };
  const { engine } = await registerTestEngine(kv, scope, clock.now());
  const target = await createTarget(kv, system, targetInput(engine.id), { now: clock.now(), masterKey });
  const policy = await createPolicy(kv, system, {
    name: "daily",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * *",
    retentionDaily: 7,
    retentionWeekly: 0,
    retentionMonthly: 0,
    verifyAfterBackup: false,
  }, clock.now());
  const { host } = await enrollHost(kv, scope, {
    hostname: "h.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.9",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, clock.now());
  await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, clock.now());
  for (let d = 0; d < days; d++) {
    const at = new Date(Date.UTC(2026, 10, 1 + d, 2));
    await runSchedulerTick(kv, at);
    const [job] = await claimJobs(kv, `agent:${host.id}`, 1, at);
    const { job: done } = await applyResult(kv, job.principal, job.id, {
      status: "success",
      startedAt: at.toISOString(),
      endedAt: new Date(at.getTime() + 600_000).toISOString(),
      bytesTransferred: 100,
      protectedBytes: 100,
      output: {
        restorePoint: {
          id: `rp-${d}`,
          chainId: `c-${d}`,
          type: "full",
          parentId: null,
          sizeBytes: 100,
          fileCount: 1,
          completedAt: new Date(at.getTime() + 600_000).toISOString(),
        },
      },
    }, at);
    await applyJobOutcome(kv, done, at);
  }
  const now = clock.now();
  const users = {
    admin1: await addUser(kv, tenant, "admin1@acme.example", "admin", "all", now),
    admin2: await addUser(kv, tenant, "admin2@acme.example", "admin", "all", now),
    admin3: await addUser(kv, tenant, "admin3@acme.example", "admin", "all", now),
    operator: await addUser(kv, tenant, "operator@acme.example", "operator", [org], now),
    operator2: await addUser(kv, tenant, "operator2@acme.example", "operator", [org], now),
    viewer: await addUser(kv, tenant, "viewer@acme.example", "viewer", [org], now),
  };
  const actors = Object.fromEntries(Object.entries(users).map(([k, u]) => [k, userActor(u)])) as Record<
    keyof typeof users,
    ReturnType<typeof userActor>
  >;
  return { app, clock, tenant, org, engine, target, policy, host, users, actors };
}

export type World = Awaited<ReturnType<typeof fourEyesWorld>>;

/** Every restore point in the KV. */
export async function allPoints(kv: Deno.Kv): Promise<RestorePoint[]> {
  return (await Array.fromAsync(kv.list<RestorePoint>({ prefix: ["restore_points"] }))).map((e) => e.value);
}

/** A JSON client acting as `user` through an API token holding all of the user's permissions. */
export async function apiAs(world: World, kv: Deno.Kv, user: User) {
  const { secret } = await createApiToken(kv, userActor(user), {
    name: `token of ${user.email}`,
    permissions: [...ROLE_PERMISSIONS[user.role]],
    expiresInDays: 0,
  }, world.clock.now());
  return async (method: string, path: string, body?: unknown) => {
    const res = await world.app.request(`http://localhost:8000${path}`, {
      method,
      headers: {
        authorization: `Bearer ${secret}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : null };
  };
}
