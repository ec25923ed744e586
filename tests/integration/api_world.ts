/**
 * A small world for the `/api/v1` resource tests: account Acme (orgs Ops and Dev) and account Globex, an
 * online BES in Ops with a local target and a policy, bearer tokens per role, and a JSON client.
 */
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { createTarget, type TargetType } from "../../domain/storage.ts";
import type { Permission, User } from "../../domain/types.ts";
import {
  addUser,
  createTenant,
  dumpKv,
  enrollTestHost,
  onlineTestEngine,
  targetInput,
  testApp,
} from "../helpers.ts";

export const system = systemActor("test");
export const masterKey = testConfig().masterKey!;

/** Who calls: each has a bearer token with the permissions of their role. */
export type Caller = "admin" | "operator" | "viewer" | "devOperator" | "otherAdmin";

const MANAGE: Permission[] = ["backup.view", "backup.manage"];

export async function apiWorld() {
  const kv = await Deno.openKv(":memory:");
  const { app, clock } = testApp(kv);
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops", "Dev"], now);
  const [ops, dev] = tenant.orgs;
  const other = await createTenant(kv, "Globex", ["Main"], now);
  const users: Record<Caller, User> = {
    admin: await addUser(kv, tenant, "admin@acme.example", "admin", "all", now),
    operator: await addUser(kv, tenant, "operator@acme.example", "operator", [ops], now),
    viewer: await addUser(kv, tenant, "viewer@acme.example", "viewer", [ops], now),
    devOperator: await addUser(kv, tenant, "dev@acme.example", "operator", [dev], now),
    otherAdmin: await addUser(kv, other, "admin@globex.example", "admin", "all", now),
  };
  const permissions: Record<Caller, Permission[]> = {
    admin: ["admin", ...MANAGE],
    operator: MANAGE,
    viewer: ["backup.view"],
    devOperator: MANAGE,
    otherAdmin: ["admin", ...MANAGE],
  };
  const tokens = {} as Record<Caller, string>;
  for (const [who, user] of Object.entries(users) as Array<[Caller, User]>) {
    const { secret } = await createApiToken(kv, userActor(user), {
      name: `${who} automation`,
      permissions: permissions[who],
      expiresInDays: 1,
    }, now);
    tokens[who] = secret;
  }
  const opsScope = { accountId: tenant.account.id, orgId: ops.id };
  const devScope = { accountId: tenant.account.id, orgId: dev.id };
  const { engine } = await onlineTestEngine(kv, opsScope, now);
  const target = await createTarget(kv, system, { ...targetInput(engine.id), name: "primary" }, {
    now,
    masterKey,
  });
  const policy = await createPolicy(kv, system, {
    name: "db-servers",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, now);

  /** A JSON request as `who` (or with no token); answers the status and the parsed body. */
  async function api(who: Caller | null, method: string, path: string, body?: unknown) {
    const headers: Record<string, string> = {};
    if (who) headers.authorization = `Bearer ${tokens[who]}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await app.request(path, {
      method,
      headers,
      body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.text();
    // deno-lint-ignore no-explicit-any
    const json: any = text ? JSON.parse(text) : null;
    if (text) {
      const type = res.headers.get("content-type") ?? "";
      if (!type.startsWith("application/json")) throw new Error(`${method} ${path}: answered ${type}`);
    }
    return { status: res.status, body: json };
  }

  /** Another storage target on the BES (for replica rules). */
  async function addTarget(name: string, type: TargetType = "local") {
    return await createTarget(kv, system, { ...targetInput(engine.id, type), name }, {
      now: clock.now(),
      masterKey,
    });
  }

  /** The database without what every authenticated request touches (token use, rate limits). */
  async function state() {
    return (await dumpKv(kv)).filter((e) => !["api_tokens", "rate_limits"].includes(String(e.key[0])));
  }

  return {
    kv,
    app,
    clock,
    tenant,
    ops,
    dev,
    other,
    users,
    opsScope,
    devScope,
    engine,
    target,
    policy,
    api,
    addTarget,
    state,
    enroll: (name: string, scope = opsScope) => enrollTestHost(kv, scope, name, clock.now()),
    [Symbol.dispose]: () => kv.close(),
  };
}
