/** Test helpers: an app on an in-memory KV with a controllable clock, a tenant fixture, a browser-like client. */
import { createApp } from "../app.ts";
import { createSession } from "../domain/auth.ts";
import { testConfig } from "../domain/config.ts";
import { createLogger } from "../domain/log.ts";
import { systemActor } from "../domain/rbac.ts";
import { markInitialized } from "../domain/setup.ts";
import { createAccount, createOrg } from "../domain/tenancy.ts";
import type { Account, Org, Role, User } from "../domain/types.ts";
import { createUser } from "../domain/users.ts";

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

/** Creates a user with PASSWORD. */
export async function addUser(
  kv: Deno.Kv,
  tenant: Tenant,
  email: string,
  role: Role,
  orgScope: "all" | Org[],
  now: Date,
): Promise<User> {
  return await createUser(kv, systemActor("test"), {
    accountId: tenant.account.id,
    email,
    name: email.split("@")[0],
    role,
    orgScope: orgScope === "all" ? "all" : orgScope.map((o) => o.id),
    password: PASSWORD,
  }, now);
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
