/**
 * One e2e scenario wrapper (issue 19 items 6 and 7): a test file declares its tests with
 * `scenario(...).test(name, fn)`; each is its own `Deno.test`, independent of the others (runs alone
 * with `--filter`, in any order), while the expensive parts are shared by the file:
 *
 * - the server (`deno run -A main.ts`) starts once, at the file's first test, on a fresh data folder;
 * - chromium launches once; each test gets its own browser context (fresh cookies and storage) with the
 *   harness's problem watching, closed after the test;
 * - each test gets its own tenant (the server's oldest account, tenant 0, is the operator account that
 *   installation-wide pages need: `operator`, `signInAsOperator`): an account with one org, an administrator, the org's registration
 *   secret and an API token, seeded before the server starts, in this process, through the same domain
 *   functions the CLI uses (one tenant per declared test) — with the tests' cheap argon2id cost
 *   (`CHEAP_ARGON2`), so signing in costs microseconds instead of a production hash per login.
 *
 * Everything is stopped by `Deno.test.afterAll`, whatever ran. The tests opt out of the op and resource
 * sanitizers: the server's output pumps and the shared browser outlive any one test by design.
 */
import assert from "node:assert/strict";
import type { Browser as PwBrowser, Page } from "playwright-core";
import { chromium } from "playwright-core";
import { parseConfig } from "../../domain/config.ts";
import { CHEAP_ARGON2 } from "../../domain/passwords.ts";
import { systemActor } from "../../domain/rbac.ts";
import { userActor } from "../../domain/auth.ts";
import { openStore } from "../../domain/store.ts";
import { createAccount, createOrg } from "../../domain/tenancy.ts";
import { createUser } from "../../domain/users.ts";
import { markInitialized } from "../../domain/setup.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { PERMISSIONS, ROLE_PERMISSIONS } from "../../domain/types.ts";
import {
  apiClient,
  type Browser,
  CHROMIUM,
  CHROMIUM_ARGS,
  describeProblems,
  type SeededTenant,
  type Server,
  signIn,
  startServer,
  watchContext,
} from "./harness.ts";

export interface ScenarioContext {
  server: Server;
  /** This test's browser context (its own cookies), watched for console errors and CSP violations. */
  browser: Browser;
  page: Page;
  /** This test's own account, org, administrator, registration secret and API token. */
  tenant: SeededTenant;
  /** The JSON API as this test's administrator. */
  api: ReturnType<typeof apiClient>;
  /** Signs this test's administrator in through the login form. */
  signIn(): Promise<void>;
  /**
   * The operator account's tenant (the server's oldest account, shared by the file's tests): only its
   * administrators see installation-wide pages (Health, the control plane's own backups).
   */
  operator: SeededTenant;
  signInAsOperator(): Promise<void>;
  t: Deno.TestContext;
}

export interface ScenarioOptions {
  /** Extra environment of the server (e.g. CADRES_FAULTS). */
  env?: Record<string, string>;
  /** Extra arguments of `main.ts`. */
  args?: string[];
  /** False: browse as a visitor without JavaScript. */
  javaScriptEnabled?: boolean;
  /** Browser permissions of every test's context (e.g. clipboard-read). */
  permissions?: string[];
}

interface Shared {
  server: Server;
  chromium: PwBrowser;
  tenants: SeededTenant[];
}

/** Seeds `count` tenants into a fresh data folder, in this process, as the CLI would (see the notes). */
async function seedTenants(dataDir: string, slug: string, count: number): Promise<SeededTenant[]> {
  const parsed = parseConfig({ CADRES_DATA_DIR: dataDir });
  if (!parsed.ok) throw new Error(parsed.error);
  const store = await openStore(parsed.config);
  const { kv } = store;
  const now = new Date();
  const system = systemActor("e2e-seed");
  const tenants: SeededTenant[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const accountName = `${slug} ${i + 1}`;
      const orgName = "Operations";
      // Each tenant has its own e-mail domain (e-mails are unique on the server): its tests add users there.
      const email = `admin@t${i + 1}.${slug.toLowerCase().replace(/[^a-z0-9]+/g, "-")}.example`;
      const password = `e2e password ${slug} ${i + 1}`;
      const account = await createAccount(kv, system, { name: accountName }, now);
      const { org, secret } = await createOrg(kv, system, { accountId: account.id, name: orgName }, now);
      const user = await createUser(
        kv,
        system,
        {
          accountId: account.id,
          email,
          name: `Admin ${i + 1}`,
          role: "admin",
          orgScope: "all",
          password,
        },
        now,
        CHEAP_ARGON2,
      );
      const { secret: apiToken } = await createApiToken(kv, userActor(user), {
        name: "e2e",
        permissions: ROLE_PERMISSIONS[user.role].filter((p) => PERMISSIONS.includes(p)),
        expiresInDays: 0,
      }, now);
      tenants.push({
        admin: { accountName, orgName, orgId: org.id, email, name: user.name, password },
        orgSecret: secret,
        apiToken,
      });
    }
    await markInitialized(kv, now);
  } finally {
    store.close();
  }
  return tenants;
}

/**
 * Declares a file's scenario: `slug` names its accounts and e-mail domain. Returns `test(name, fn)`,
 * which registers one independent Deno.test.
 */
export function scenario(slug: string, options: ScenarioOptions = {}) {
  const names: string[] = [];
  /** Tenants of the file's shared fixtures (`fixture`), seeded after the tests' own. */
  let fixtures = 0;
  const cleanups: Array<() => Promise<void>> = [];
  let shared: Promise<Shared> | null = null;
  let dataDir: string | null = null;

  const start = (): Promise<Shared> => {
    shared ??= (async () => {
      dataDir = await Deno.makeTempDir({ prefix: "cadres-e2e-" });
      // Tenant 0 is the operator account (the oldest: installation-wide pages such as Health and the
      // control plane's own backups are its administrators'); then one per test, then the fixtures'.
      const tenants = await seedTenants(dataDir, slug, 1 + names.length + fixtures);
      const server = await startServer({ dataDir, env: options.env, args: options.args });
      try {
        const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
        return { server, chromium: browser, tenants };
      } catch (error) {
        await server.stop();
        throw error;
      }
    })();
    return shared;
  };

  Deno.test.afterAll(async () => {
    if (!shared) return;
    const s = await shared.catch(() => null);
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
    try {
      await s?.chromium.close();
    } finally {
      await s?.server.stop();
      if (dataDir) await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    }
  });

  return {
    /**
     * A fixture shared by the tests that ask for it (a world too costly to build per test: real engine
     * programs, backups), built on first use — whichever test comes first, so each still runs alone —
     * in a tenant of its own; `onCleanup` registers what afterAll stops.
     */
    fixture<T>(
      build: (
        ctx: {
          server: Server;
          tenant: SeededTenant;
          api: ReturnType<typeof apiClient>;
          onCleanup(f: () => Promise<void>): void;
        },
      ) => Promise<T>,
    ): () => Promise<{ value: T; tenant: SeededTenant }> {
      const index = fixtures++;
      let built: Promise<{ value: T; tenant: SeededTenant }> | null = null;
      return () => {
        built ??= (async () => {
          const s = await start();
          const tenant = s.tenants[1 + names.length + index];
          const value = await build({
            server: s.server,
            tenant,
            api: apiClient(s.server.baseUrl, tenant.apiToken),
            onCleanup: (f) => void cleanups.push(f),
          });
          return { value, tenant };
        })();
        return built;
      };
    },

    test(name: string, fn: (ctx: ScenarioContext) => Promise<void>, testOptions: { ignore?: boolean } = {}) {
      const index = names.length;
      names.push(name);
      Deno.test({
        name,
        ignore: testOptions.ignore,
        sanitizeOps: false,
        sanitizeResources: false,
        async fn(t) {
          const s = await start();
          const tenant = s.tenants[1 + index];
          assert.ok(tenant, `no tenant seeded for test ${index}`);
          const context = await s.chromium.newContext({
            baseURL: s.server.baseUrl,
            viewport: { width: 1280, height: 800 },
            javaScriptEnabled: options.javaScriptEnabled ?? true,
            permissions: options.permissions,
          });
          context.setDefaultTimeout(20_000);
          context.setDefaultNavigationTimeout(30_000);
          const browser = await watchContext(context, async () => await context.close());
          try {
            await fn({
              server: s.server,
              browser,
              page: browser.page,
              tenant,
              api: apiClient(s.server.baseUrl, tenant.apiToken),
              signIn: () => signIn(browser.page, tenant.admin.email, tenant.admin.password),
              operator: s.tenants[0],
              signInAsOperator: () =>
                signIn(browser.page, s.tenants[0].admin.email, s.tenants[0].admin.password),
              t,
            });
            assert.deepEqual(
              browser.unexpectedProblems(),
              [],
              describeProblems(browser.unexpectedProblems()),
            );
          } catch (error) {
            if (error instanceof Error) error.message += `\n${s.server.output().slice(-4000)}`;
            throw error;
          } finally {
            await browser.close();
          }
        },
      });
    },
  };
}
