/** A small account for the four-eyes and legal-hold tests: one BES, target, policy, host, users, points. */
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { ROLE_PERMISSIONS, type User } from "../../domain/types.ts";
import { addUser, testApp } from "../helpers.ts";
import { backupWorld, dailyFulls } from "./backup_world.ts";

export { allPoints, masterKey } from "./backup_world.ts";

/**
 * An account with an org, two all-scope admins, an operator and a viewer of the org, a BES with a
 * target, a daily-full policy (7 daily, nothing else) and a host with `days` daily full restore points.
 */
export async function fourEyesWorld(kv: Deno.Kv, days = 10) {
  const { app, clock } = testApp(kv);
  const { tenant, org, engine, target, policy, host } = await backupWorld(kv, clock.now());
  await dailyFulls(kv, host.id, days);
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
