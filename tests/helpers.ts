/** Test helpers: an app on an in-memory KV with a controllable clock, a tenant fixture, a browser-like client. */
import { createApp } from "../app.ts";
import { createSession } from "../domain/auth.ts";
import {
  applyHeartbeat,
  type Engine,
  engineKey,
  type EngineMetrics,
  registerEngine,
} from "../domain/engines.ts";
import { applyHostHeartbeat, enrollHost, type Host, hostKey } from "../domain/hosts.ts";
import { NotFoundError } from "../domain/errors.ts";
import { testConfig } from "../domain/config.ts";
import { createLogger } from "../domain/log.ts";
import { countStatusChange, type FleetKind } from "../domain/ops_counters.ts";
import { systemActor } from "../domain/rbac.ts";
import { countPolicy, deletePolicyName, setPolicyName } from "../domain/policy_names.ts";
import {
  policiesByAccountKey,
  policiesByBesKey,
  policiesByTargetKey,
  type PolicyCore,
  policyKey,
} from "../domain/policies.ts";
import { policyChildPrefixes } from "../domain/policy_cascade.ts";
import { markInitialized } from "../domain/setup.ts";
import { generateKeyPair } from "../domain/signing.ts";
import { type StorageTarget, type TargetCreateInput, targetKey, type TargetType } from "../domain/storage.ts";
import { createAccount, createOrg } from "../domain/tenancy.ts";
import type { Account, Org, Role, User } from "../domain/types.ts";
import { createUser } from "../domain/users.ts";
import { EngineClient } from "../tools/engine_client.ts";

/** A clock tests can move. */
export class TestClock {
  constructor(public time = new Date("2026-11-22T10:00:00Z")) {}
  now = (): Date => new Date(this.time);
  advance(ms: number) {
    this.time = new Date(this.time.getTime() + ms);
  }
}

/** An app on `kv` with a test clock; log lines are captured in `logs`. */
export function testApp(kv: Deno.Kv, clock = new TestClock()) {
  const logs: string[] = [];
  const app = createApp({
    kv,
    config: testConfig(),
    clock: clock.now,
    logger: createLogger("debug", (line) => logs.push(line)),
  });
  return { app, clock, logs };
}

export const PASSWORD = "correct horse battery";

export interface Tenant {
  account: Account;
  orgs: Org[];
  secrets: string[];
}

/** Creates an account with the named orgs. */
export async function createTenant(
  kv: Deno.Kv,
  name: string,
  orgNames: string[],
  now: Date,
): Promise<Tenant> {
  const actor = systemActor("test");
  const account = await createAccount(kv, actor, { name }, now);
  const orgs: Org[] = [];
  const secrets: string[] = [];
  for (const orgName of orgNames) {
    const { org, secret } = await createOrg(kv, actor, { accountId: account.id, name: orgName }, now);
    orgs.push(org);
    secrets.push(secret);
  }
  await markInitialized(kv, now);
  return { account, orgs, secrets };
}

/** The tests' cheap argon2id cost (`testConfig`): users hash in microseconds instead of ~0.1 s. */
const hashing = testConfig().passwordHashing;

/** Creates a user with PASSWORD, hashed at the tests' cheap cost. */
export async function addUser(
  kv: Deno.Kv,
  tenant: Tenant,
  email: string,
  role: Role,
  orgScope: "all" | Org[],
  now: Date,
): Promise<User> {
  return await createUser(
    kv,
    systemActor("test"),
    {
      accountId: tenant.account.id,
      email,
      name: email.split("@")[0],
      role,
      orgScope: orgScope === "all" ? "all" : orgScope.map((o) => o.id),
      password: PASSWORD,
    },
    now,
    hashing,
  );
}

/**
 * A browser-like client over `app.request`: keeps cookies, sends the CSRF token with forms, and
 * sets a same-origin `Origin` header on POSTs.
 */
export class Browser {
  cookies = new Map<string, string>();
  constructor(readonly app: ReturnType<typeof createApp>, readonly ip = "192.0.2.10") {}

  async request(path: string, init: RequestInit = {}): Promise<Response> {
    const headers = new Headers(init.headers);
    if (this.cookies.size) {
      headers.set("cookie", [...this.cookies].map(([k, v]) => `${k}=${v}`).join("; "));
    }
    const res = await this.app.request(`http://localhost:8000${path}`, { ...init, headers }, {
      remoteAddr: { hostname: this.ip },
    });
    for (const line of res.headers.getSetCookie()) {
      const [pair, ...attrs] = line.split(";");
      const [name, ...rest] = pair.split("=");
      const value = rest.join("=");
      const expired = attrs.some((a) => /max-age=0/i.test(a) || /expires=Thu, 01 Jan 1970/i.test(a));
      if (expired || value === "") this.cookies.delete(name.trim());
      else this.cookies.set(name.trim(), value);
    }
    return res;
  }

  /** GETs a page and returns its HTML (also fills the CSRF token). */
  async get(path: string): Promise<Response> {
    return await this.request(path);
  }

  /** The CSRF token embedded in the last page fetched from `path` (GET). */
  async csrfFor(path = "/login"): Promise<string> {
    const html = await (await this.get(path)).text();
    return /name="csrf-token" content="([^"]*)"/.exec(html)?.[1] ?? "";
  }

  /** POSTs a form like a browser would, with a fresh CSRF token read from `tokenFrom`. */
  async postForm(
    path: string,
    fields: Record<string, string | string[]>,
    options: { tokenFrom?: string; csrf?: string | null; origin?: string | null } = {},
  ): Promise<Response> {
    const body = new URLSearchParams();
    const token = options.csrf === undefined
      ? await this.csrfFor(options.tokenFrom ?? "/login")
      : options.csrf;
    if (token !== null) body.set("_csrf", token);
    for (const [k, v] of Object.entries(fields)) {
      for (const item of Array.isArray(v) ? v : [v]) body.append(k, item);
    }
    const headers: Record<string, string> = { "content-type": "application/x-www-form-urlencoded" };
    const origin = options.origin === undefined ? "http://localhost:8000" : options.origin;
    if (origin !== null) headers.origin = origin;
    return await this.request(path, { method: "POST", body, headers });
  }

  /** Signs in through the login form. */
  async login(email: string, password = PASSWORD): Promise<Response> {
    return await this.postForm("/login", { email, password });
  }
}

/** Gives a Browser a session for `user` directly (fast: no argon2 verification). */
export async function signInAs(browser: Browser, kv: Deno.Kv, user: User, now: Date): Promise<void> {
  const { cookie } = await createSession(kv, user, now);
  browser.cookies.set("cadres_session", cookie);
}

/** Every entry of the KV (for before/after comparisons). */
export async function dumpKv(kv: Deno.Kv): Promise<Array<{ key: Deno.KvKey; value: unknown }>> {
  const out = [];
  for await (const e of kv.list({ prefix: [] })) out.push({ key: e.key, value: e.value });
  return out;
}

/** The audit entries of an account, oldest first. */
export async function auditEntries(kv: Deno.Kv, accountId: string) {
  const out = [];
  for await (const e of kv.list<{ action: string; summary: string }>({ prefix: ["audit", accountId] })) {
    out.push(e.value);
  }
  return out;
}

/** The repository root (where deno.json, main.ts and cli.ts live). */
export const REPO_ROOT = new URL("../", import.meta.url).pathname;

/** Fails unless `haystack` contains `needle`. */
export function assertIncludes(haystack: string, needle: string, message?: string): void {
  if (!haystack.includes(needle)) {
    throw new Error(message ?? `expected to find ${JSON.stringify(needle)} in ${JSON.stringify(haystack)}`);
  }
}

/** Fails if `haystack` contains `needle` (the needle is not echoed: it may be a secret). */
export function assertExcludes(haystack: string, needle: string, what = "a secret"): void {
  if (needle && haystack.includes(needle)) throw new Error(`found ${what} where it must not appear`);
}

/** A TCP port that was free a moment ago. */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/** The parent environment without the variables Cadres reads, plus `env`. */
export function childEnv(env: Record<string, string> = {}): Record<string, string> {
  const base = Object.fromEntries(
    Object.entries(Deno.env.toObject()).filter(([k]) => !k.startsWith("CADRES_") && k !== "PORT"),
  );
  return { ...base, NO_COLOR: "1", ...env };
}

/** Runs `deno <args>` in the repository root with only `env` as Cadres configuration; stdin is closed. */
export async function runDeno(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: REPO_ROOT,
    env: childEnv(env),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

// ---------------------------------------------------------------------------------------------------
// Engines, storage targets and policies

/** Healthy heartbeat metrics, with overrides. */
export function engineMetrics(overrides: Partial<EngineMetrics> = {}): EngineMetrics {
  return {
    cpuPercent: 12,
    memoryPercent: 40,
    diskPercent: 30,
    activeJobs: 0,
    uptimeSeconds: 3600,
    ...overrides,
  };
}

/** An EngineClient talking to `app` in-process from client address `ip`, on the app's clock. */
export function engineClient(
  app: ReturnType<typeof createApp>,
  clock: TestClock,
  ip = "198.51.100.7",
): EngineClient {
  return new EngineClient(
    "http://localhost:8000",
    (url, init) => app.request(url, init, { remoteAddr: { hostname: ip } }),
    clock.now,
  );
}

/** Registers a BES directly in the domain (no HTTP) for `tenant`; returns it with its key pair. */
export async function registerTestEngine(
  kv: Deno.Kv,
  tenant: { accountId: string; orgId: string | null },
  now: Date,
  name = "bes-1",
) {
  const keys = generateKeyPair();
  const { engine } = await registerEngine(kv, tenant, {
    name,
    deploymentModel: "on_premise",
    publicKey: keys.publicKey,
    hostname: `${name}.acme.example`,
    ipAddress: "10.0.0.10",
    port: 8443,
    version: "1.0.0",
  }, now);
  return { engine, keys };
}

/** Registers a BES directly in the domain and sends its first heartbeat, so it is online at `now`. */
export async function onlineTestEngine(
  kv: Deno.Kv,
  tenant: { accountId: string; orgId: string | null },
  now: Date,
  name = "bes-1",
) {
  const registered = await registerTestEngine(kv, tenant, now, name);
  await applyHeartbeat(kv, registered.engine.id, { version: "1", metrics: engineMetrics() }, now);
  return registered;
}

/**
 * Enrolls an agent directly in the domain (`<name>.acme.example`, Debian 12) and, unless `online` is false,
 * sends its first heartbeat at `now`. Returns the host as enrolled (before the heartbeat).
 */
export async function enrollTestHost(
  kv: Deno.Kv,
  scope: { accountId: string; orgId: string },
  name: string,
  now: Date,
  options: { relay?: boolean; online?: boolean } = {},
): Promise<Host> {
  const { host } = await enrollHost(kv, scope, {
    hostname: `${name}.acme.example`,
    os: "Debian 12",
    ipAddress: "10.0.0.2",
    publicKey: generateKeyPair().publicKey,
    version: "1",
    ...(options.relay ? { relay: true } : {}),
  }, now);
  if (options.online !== false) {
    await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, now);
  }
  return host;
}

/**
 * Puts an engine or host in `status` directly (with further `changes`), as a sweep or a crash leaves
 * it where no domain call gets there in a test, moving its operational counter (ops_counters.ts) in the
 * same write so the invariants still hold. A deletion in progress is `markEngineDeleting` instead.
 */
export async function setFleetStatus(
  kv: Deno.Kv,
  kind: FleetKind,
  id: string,
  status: Engine["status"] | Host["status"],
  changes: Partial<Engine> | Partial<Host> = {},
): Promise<void> {
  const key = kind === "engine" ? engineKey(id) : hostKey(id);
  const entry = await kv.get<Engine | Host>(key);
  if (!entry.value) throw new NotFoundError(`${kind} ${id} not found`);
  const op = kv.atomic().check(entry).set(key, { ...entry.value, ...changes, status });
  countStatusChange(op, kind, entry.value.accountId, entry.value.status, status);
  if (!(await op.commit()).ok) throw new Error(`${kind} ${id} changed meanwhile`);
}

/** The whole database as one string, for "a refusal changes nothing". */
export async function kvSnapshot(kv: Deno.Kv): Promise<string> {
  return JSON.stringify(await dumpKv(kv), (_k, v) => typeof v === "bigint" ? v.toString() : v);
}

/** A valid connection config for each storage target type. */
export const VALID_TARGET_CONFIGS: Record<TargetType, Record<string, string | number>> = {
  s3: {
    endpoint: "https://s3.eu-west-1.amazonaws.com",
    bucket: "acme-backups",
    region: "eu-west-1",
    prefix: "cadres/",
  },
  s3_compatible: { endpoint: "https://minio.acme.example:9000", bucket: "backups", region: "auto" },
  smb: { server: "fs01.acme.example", share: "backups", path: "cadres/daily" },
  nfs: { server: "10.0.0.20", exportPath: "/export/backups", mountOptions: "vers=4.1,hard,timeo=600" },
  iscsi: { portal: "10.0.0.5:3260", iqn: "iqn.2004-05.com.example:storage.disk1", lun: 0 },
  local: { path: "/var/lib/cadres/backups" },
};

/** A valid create input for a target of `type` on `besId`, with overrides. */
export function targetInput(
  besId: string,
  type: TargetType = "local",
  overrides: Partial<Record<string, unknown>> = {},
): TargetCreateInput {
  return {
    name: `${type} target`,
    besId,
    type,
    config: { ...VALID_TARGET_CONFIGS[type] },
    ...overrides,
  } as TargetCreateInput;
}

/**
 * Creates a policy on a target the way the policies aggregate will: in ONE atomic operation that
 * checks the target entry, bumps its `policyCount` and writes the policy with its indexes. Throws
 * NotFoundError when the target is gone.
 */
export async function createTestPolicy(
  kv: Deno.Kv,
  targetId: string,
  name: string,
  now: Date,
  options: { enabled?: boolean; pausedReason?: PolicyCore["pausedReason"] } = {},
): Promise<PolicyCore> {
  for (let i = 0; i < 20; i++) {
    const entry = await kv.get<StorageTarget>(targetKey(targetId));
    const target = entry.value;
    if (!target) throw new NotFoundError(`Storage target ${targetId} not found`);
    const policy: PolicyCore = {
      id: crypto.randomUUID(),
      accountId: target.accountId,
      orgId: target.orgId,
      besId: target.besId,
      targetId,
      name,
      enabled: options.enabled ?? true,
      pausedReason: options.pausedReason ?? null,
      updatedAt: now.toISOString(),
    };
    const op = kv.atomic()
      .check(entry)
      .set(targetKey(targetId), { ...target, policyCount: target.policyCount + 1 })
      .set(policyKey(policy.id), policy)
      .set(policiesByTargetKey(targetId, policy.id), policy.id)
      .set(policiesByBesKey(policy.besId, policy.id), policy.id)
      .set(policiesByAccountKey(policy.accountId, policy.id), policy.id);
    setPolicyName(op, policy);
    countPolicy(op, policy, "up");
    if ((await op.commit()).ok) return policy;
  }
  throw new Error("createTestPolicy: too much contention");
}

/** Deletes a policy (children, indexes) and decrements its target's `policyCount`, atomically. */
export async function deleteTestPolicy(kv: Deno.Kv, policyId: string): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const entry = await kv.get<PolicyCore>(policyKey(policyId));
    const policy = entry.value;
    if (!policy) return;
    const targetEntry = await kv.get<StorageTarget>(targetKey(policy.targetId));
    const op = kv.atomic().check(entry, targetEntry)
      .delete(policyKey(policyId))
      .delete(policiesByTargetKey(policy.targetId, policyId))
      .delete(policiesByBesKey(policy.besId, policyId))
      .delete(policiesByAccountKey(policy.accountId, policyId));
    deletePolicyName(op, policy);
    countPolicy(op, policy, "down");
    for (const prefix of policyChildPrefixes(policyId)) {
      for await (const e of kv.list({ prefix })) op.delete(e.key);
    }
    if (targetEntry.value) {
      op.set(targetKey(policy.targetId), {
        ...targetEntry.value,
        policyCount: Math.max(0, targetEntry.value.policyCount - 1),
      });
    }
    if ((await op.commit()).ok) return;
  }
  throw new Error("deleteTestPolicy: too much contention");
}

/** The policy record, or null. */
export async function getPolicy(kv: Deno.Kv, id: string): Promise<PolicyCore | null> {
  return (await kv.get<PolicyCore>(policyKey(id))).value;
}
