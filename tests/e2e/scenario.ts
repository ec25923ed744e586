/**
 * One e2e scenario wrapper (issue 19 items 6 and 7): every test file declares its tests with
 * `scenario(...).test(name, fn)`; each is its own `Deno.test`, independent of the others (runs alone
 * with `--filter`, in any order). The install the tests run against is one of four kinds (`install`):
 *
 * - `"shared"` (the default): one server (`deno run -A main.ts`) for the file, started at its first test
 *   on a fresh data folder; each test gets its own tenant (the server's oldest account, tenant 0, is the
 *   operator account that installation-wide pages need: `operator`, `signInAsOperator`): an account with
 *   one org, an administrator, the org's registration secret and an API token, seeded before the server
 *   starts, in this process, through the same domain functions the CLI uses (one tenant per declared
 *   test) — with the tests' cheap argon2id cost (`CHEAP_ARGON2`), so signing in costs microseconds
 *   instead of a production hash per login;
 * - `"per-test"`: the same seeding, but each test gets a server and data folder of its own (the operator
 *   tenant and the test's tenant), stopped after it: for tests that change installation-wide state (the
 *   control plane's own backups and their settings), which no other test may see;
 * - `"fresh"`: each test gets a server of its own on an empty data folder — no account, no
 *   administrator: the server prints its one-time setup link (`server.setupUrl`) and the test walks the
 *   setup itself (`completeSetup`);
 * - `"demo"`: one server for the file started with `--demo` (its simulated engines, two weeks of runs and
 *   its own accounts, kept in memory: nothing is seeded), for tours of one busy install.
 *
 * Chromium launches once per file; each test gets its own browser context (fresh cookies and storage)
 * with the harness's problem watching, closed after the test, and fails on any unexpected browser
 * problem (CSP violation, page error, console error). What several tests need but is too costly to build
 * per test is built once, by whichever test asks first: `fixture` (in a tenant of its own, shared
 * installs) or `once` (with the asking test's context, any shared install).
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

/** What every test gets, whatever the install. */
export interface BareContext {
  server: Server;
  /** This test's browser context (its own cookies), watched for console errors and CSP violations. */
  browser: Browser;
  page: Page;
  t: Deno.TestContext;
}

/** What a test of a seeded install (`"shared"`, `"per-test"`) gets besides. */
export interface ScenarioContext extends BareContext {
  /** This test's own account, org, administrator, registration secret and API token. */
  tenant: SeededTenant;
  /** The JSON API as this test's administrator. */
  api: ReturnType<typeof apiClient>;
  /** Signs this test's administrator in through the login form. */
  signIn(): Promise<void>;
  /**
   * The operator account's tenant (the server's oldest account; shared by the file's tests in a
   * `"shared"` install, the test's own in a `"per-test"` one): only its administrators see
   * installation-wide pages (Health, the control plane's own backups).
   */
  operator: SeededTenant;
  signInAsOperator(): Promise<void>;
}

interface CommonOptions {
  /** Extra environment of the server (e.g. CADRES_FAULTS). */
  env?: Record<string, string>;
  /** Extra arguments of `main.ts`. */
  args?: string[];
  /** False: browse as a visitor without JavaScript. */
  javaScriptEnabled?: boolean;
  /** Browser permissions of every test's context (e.g. clipboard-read). */
  permissions?: string[];
}

export interface ScenarioOptions extends CommonOptions {
  /** `"shared"` (default): one seeded server for the file; `"per-test"`: one per test (see the notes). */
  install?: "shared" | "per-test";
  /** Runs on each seeded data folder before its server starts (the KV file is free then). */
  beforeStart?: (dataDir: string) => Promise<void>;
}

export interface BareScenarioOptions extends CommonOptions {
  /** `"fresh"`: an un-initialised server per test; `"demo"`: one `--demo` server for the file. */
  install: "fresh" | "demo";
}

/** What a fixture's `build` gets: the server, the fixture's own tenant and its API, a cleanup hook. */
export interface FixtureContext {
  server: Server;
  tenant: SeededTenant;
  api: ReturnType<typeof apiClient>;
  onCleanup(f: () => Promise<void>): void;
}

/** The tests' registration, as `scenario` returns it. */
export interface Scenario<C extends BareContext> {
  /** Registers one independent Deno.test. */
  test(name: string, fn: (ctx: C) => Promise<void>, testOptions?: { ignore?: boolean }): void;
  /**
   * A fixture shared by the tests that ask for it (a world too costly to build per test: real engine
   * programs, backups), built on first use — whichever test comes first, so each still runs alone —
   * in a tenant of its own; `onCleanup` registers what afterAll stops. `"shared"` installs only.
   */
  fixture<T>(
    build: (ctx: FixtureContext) => Promise<T>,
  ): () => Promise<{ value: T; tenant: SeededTenant }>;
  /**
   * Something several tests of a `"shared"` or `"demo"` install need, built once by whichever of them
   * asks first, with that test's context (e.g. through its signed-in page); the others get the same value.
   */
  once<T>(build: (ctx: C) => Promise<T>): (ctx: C) => Promise<T>;
}

/** A server a test runs against, and what it gives back when the test is done. */
interface Lease {
  server: Server;
  /** Tenant 0 is the operator's; the rest as `tenantOf` says. Empty for fresh and demo installs. */
  tenants: SeededTenant[];
  /** The test's own tenant, if seeded. */
  tenant?: SeededTenant;
  release(): Promise<void>;
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
 * Chromium, launched at the first test that needs it and shared by all the scenarios of the test file
 * (`deno test` runs each file in a worker of its own); closed by the hook the file's first `scenario`
 * call registers (hooks are registered as the file loads, not while its tests run).
 */
let browserOnce: Promise<PwBrowser> | null = null;
let browserHook = false;
const launch = (): Promise<PwBrowser> =>
  browserOnce ??= chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
function closeBrowserAfterAll(): void {
  if (browserHook) return;
  browserHook = true;
  Deno.test.afterAll(async () => {
    const browser = await browserOnce?.catch(() => null);
    browserOnce = null;
    await browser?.close();
  });
}

/**
 * Declares a file's scenario: `slug` names its accounts and e-mail domain. Returns `test(name, fn)`,
 * which registers one independent Deno.test, and `fixture`/`once` for what the tests share.
 */
export function scenario(slug: string, options?: ScenarioOptions): Scenario<ScenarioContext>;
export function scenario(slug: string, options: BareScenarioOptions): Scenario<BareContext>;
export function scenario(
  slug: string,
  options: ScenarioOptions | BareScenarioOptions = {},
): Scenario<BareContext> | Scenario<ScenarioContext> {
  closeBrowserAfterAll();
  const install = options.install ?? "shared";
  const seeded = install === "shared" || install === "per-test";
  const beforeStart = "beforeStart" in options ? options.beforeStart : undefined;
  const names: string[] = [];
  /** Tenants of the file's shared fixtures (`fixture`), seeded after the tests' own. */
  let fixtures = 0;
  const cleanups: Array<() => Promise<void>> = [];
  let sharedServer: Promise<{ server: Server; tenants: SeededTenant[]; dataDir: string }> | null = null;

  /** Starts a server on a new data folder, seeded with `tenantCount` tenants (0: none, not initialised). */
  const startOn = async (tenantCount: number) => {
    const dataDir = await Deno.makeTempDir({ prefix: "cadres-e2e-" });
    try {
      const tenants = tenantCount > 0 ? await seedTenants(dataDir, slug, tenantCount) : [];
      if (tenantCount > 0) await beforeStart?.(dataDir);
      const server = await startServer({
        dataDir,
        env: options.env,
        args: install === "demo" ? ["--demo", ...(options.args ?? [])] : options.args,
        expectSetup: install === "fresh",
      });
      return { server, tenants, dataDir };
    } catch (error) {
      await Deno.remove(dataDir, { recursive: true }).catch(() => {});
      throw error;
    }
  };
  const stopOn = async (s: { server: Server; dataDir: string }) => {
    try {
      await s.server.stop();
    } finally {
      await Deno.remove(s.dataDir, { recursive: true }).catch(() => {});
    }
  };

  /** The file's one server (shared and demo installs), started at the first test that needs it. */
  const sharedStart = () => sharedServer ??= startOn(install === "demo" ? 0 : 1 + names.length + fixtures);

  /** The server test `index` runs against. */
  const lease = async (index: number): Promise<Lease> => {
    if (install === "shared" || install === "demo") {
      const s = await sharedStart();
      return { ...s, tenant: s.tenants[1 + index], release: async () => {} };
    }
    // A server of the test's own: the operator's tenant and the test's (per-test), or none (fresh).
    const s = await startOn(install === "per-test" ? 2 : 0);
    return { ...s, tenant: s.tenants[1], release: () => stopOn(s) };
  };

  Deno.test.afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {});
    const s = sharedServer ? await sharedServer.catch(() => null) : null;
    if (s) await stopOn(s);
  });

  return {
    fixture<T>(
      build: (ctx: FixtureContext) => Promise<T>,
    ): () => Promise<{ value: T; tenant: SeededTenant }> {
      if (install !== "shared") throw new Error(`fixture() needs a "shared" install, not "${install}"`);
      const index = fixtures++;
      let built: Promise<{ value: T; tenant: SeededTenant }> | null = null;
      return () => {
        built ??= (async () => {
          const s = await sharedStart();
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

    once<T, C>(build: (ctx: C) => Promise<T>): (ctx: C) => Promise<T> {
      if (install !== "shared" && install !== "demo") {
        throw new Error(`once() needs a "shared" or "demo" install, not "${install}"`);
      }
      let built: Promise<T> | null = null;
      return (ctx) => built ??= build(ctx);
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
          // Chromium and the server start side by side; a server of the test's own is stopped if chromium fails.
          const [launched, leasing] = await Promise.allSettled([launch(), lease(index)]);
          if (launched.status === "rejected") {
            if (leasing.status === "fulfilled") await leasing.value.release();
            throw launched.reason;
          }
          if (leasing.status === "rejected") throw leasing.reason;
          const chromiumBrowser = launched.value;
          const leased = leasing.value;
          const { server } = leased;
          let browser: Browser | null = null;
          try {
            if (seeded) assert.ok(leased.tenant, `no tenant seeded for test ${index}`);
            const context = await chromiumBrowser.newContext({
              baseURL: server.baseUrl,
              viewport: { width: 1280, height: 800 },
              javaScriptEnabled: options.javaScriptEnabled ?? true,
              permissions: options.permissions,
            });
            browser = await watchContext(context, async () => await context.close());
            const bare: BareContext = { server, browser, page: browser.page, t };
            const page = browser.page;
            const ctx: BareContext | ScenarioContext = seeded
              ? {
                ...bare,
                tenant: leased.tenant!,
                api: apiClient(server.baseUrl, leased.tenant!.apiToken),
                signIn: () => signIn(page, leased.tenant!.admin.email, leased.tenant!.admin.password),
                operator: leased.tenants[0],
                signInAsOperator: () =>
                  signIn(page, leased.tenants[0].admin.email, leased.tenants[0].admin.password),
              }
              : bare;
            await fn(ctx as ScenarioContext);
            assert.deepEqual(
              browser.unexpectedProblems(),
              [],
              describeProblems(browser.unexpectedProblems()),
            );
          } catch (error) {
            if (error instanceof Error) error.message += `\n${server.output().slice(-4000)}`;
            throw error;
          } finally {
            try {
              await browser?.close();
            } finally {
              await leased.release();
            }
          }
        },
      });
    },
  } as Scenario<ScenarioContext>;
}

/** Who walks a fresh install's setup (`completeSetup`). */
export interface SetupAdmin {
  accountName: string;
  orgName: string;
  name: string;
  email: string;
  password: string;
}

/**
 * Walks a `"fresh"` install's setup page from its one-time link as `admin` and waits until it ends,
 * signed in, on the first-run page ("Cadres Backup is set up").
 */
export async function completeSetup(page: Page, server: Server, admin: SetupAdmin): Promise<void> {
  assert.ok(server.setupUrl, "a fresh install prints its setup link");
  await page.goto(server.setupUrl);
  await page.getByLabel("Account (company) name").fill(admin.accountName);
  await page.getByLabel("First organization").fill(admin.orgName);
  await page.getByLabel("Your name").fill(admin.name);
  await page.getByLabel("Your email").fill(admin.email);
  await page.getByLabel("Password", { exact: true }).fill(admin.password);
  await page.getByRole("button", { name: "Create administrator" }).click();
  await page.getByRole("heading", { name: "Cadres Backup is set up", level: 1 }).waitFor();
}
