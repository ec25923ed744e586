/**
 * End-to-end harness: runs the real server (`deno run -A main.ts`) on a free port with a fresh data
 * folder, watches a chromium browser context (playwright-core) for console errors, page errors and CSP
 * violations, and holds the small steps every file uses (signing in and out, the JSON API with a token,
 * engines over the signed protocol). Every helper that starts something returns a way to stop it; the
 * scenario wrapper (scenario.ts), through which every e2e file runs, calls those whatever happens.
 */
import assert from "node:assert/strict";
import type { BrowserContext, ConsoleMessage, Page } from "playwright-core";
import type { EngineClient, EngineIdentity } from "../../tools/engine_client.ts";

/** The repository root (the server resolves `./static` from its working directory). */
export const ROOT = new URL("../../", import.meta.url).pathname;
export const SCREENSHOT_DIR = new URL("./screenshots/", import.meta.url).pathname;
export const CHROMIUM = Deno.env.get("CHROMIUM_PATH") ?? "/usr/bin/chromium";
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

/** Polls `probe` every `intervalMs` until it returns a value other than undefined/false, or times out. */
export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs = 30_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await probe();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** A TCP port that was free a moment ago (the OS picks it). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** Collects a child's output stream as text until the child closes it. */
function drain(stream: ReadableStream<Uint8Array>, sink: string[]): Promise<void> {
  return (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) sink.push(decoder.decode(chunk, { stream: true }));
    sink.push(decoder.decode());
  })();
}

/** Runs a command to completion with optional stdin; returns its exit code and output. */
export async function run(
  args: string[],
  options: { env?: Record<string, string>; stdin?: string } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args,
    cwd: ROOT,
    env: options.env,
    stdin: options.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (options.stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(options.stdin));
    await writer.close();
  }
  const { code, stdout, stderr } = await child.output();
  return { code, stdout: new TextDecoder().decode(stdout), stderr: new TextDecoder().decode(stderr) };
}

export interface SeededAdmin {
  accountName: string;
  orgName: string;
  orgId: string;
  email: string;
  name: string;
  password: string;
}

export interface SeededTenant {
  admin: SeededAdmin;
  /** The org's enrollment secret (for registering a BES or enrolling agents). */
  orgSecret: string;
  /** A JSON API token of the administrator. */
  apiToken: string;
}

/** A JSON API caller with a bearer token: `api(method, path, payload?)` → status, text and `json()`. */
export function apiClient(baseUrl: string, token: string) {
  return async (method: string, path: string, payload?: unknown) => {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${token}`,
        accept: "application/json",
        ...(payload === undefined ? {} : { "content-type": "application/json" }),
      },
      body: payload === undefined ? undefined : JSON.stringify(payload),
    });
    const text = await res.text();
    return { status: res.status, text, json: () => JSON.parse(text) };
  };
}

type EngineMetrics = Parameters<EngineClient["heartbeat"]>[1];

/** Registers a BES over the signed protocol and sends one heartbeat; asserts 201 then 200. */
export async function registerOnlineBes(
  engineClient: EngineClient,
  orgSecret: string,
  details: Parameters<EngineClient["registerBes"]>[1],
  metrics: EngineMetrics,
): Promise<EngineIdentity> {
  const registered = await engineClient.registerBes(orgSecret, details);
  assert.equal(registered.response.status, 201, JSON.stringify(registered.body));
  assert.equal((await engineClient.heartbeat(registered.identity, metrics)).status, 200);
  return registered.identity;
}

/** Enrolls an agent over the signed protocol and sends one heartbeat; asserts 201 then 200. */
export async function enrollOnlineAgent(
  engineClient: EngineClient,
  orgSecret: string,
  host: Parameters<EngineClient["enrollAgent"]>[1],
  metrics: EngineMetrics,
): Promise<EngineIdentity> {
  const enrolled = await engineClient.enrollAgent(orgSecret, host);
  assert.equal(enrolled.response.status, 201, JSON.stringify(enrolled.body));
  assert.equal((await engineClient.heartbeat(enrolled.identity, metrics)).status, 200);
  return enrolled.identity;
}

export interface Server {
  port: number;
  baseUrl: string;
  dataDir: string;
  /** Everything the server wrote so far (stdout and stderr), for failure messages. */
  output(): string;
  /** The one-time setup URL the server printed, or null when it printed none. */
  setupUrl: string | null;
  stop(): Promise<void>;
}

/**
 * Starts `deno run -A main.ts` (plus `args`, e.g. `--demo`) on a free port with CADRES_DATA_DIR =
 * `dataDir` (a fresh temp folder when omitted) and waits until `/healthz` answers. With `expectSetup`, also waits for the setup line
 * on stderr and returns its URL. If another process grabbed the port in the meantime, retries on a
 * new one.
 */
export async function startServer(
  options: { dataDir?: string; expectSetup?: boolean; env?: Record<string, string>; args?: string[] } = {},
): Promise<Server> {
  const ownDataDir = options.dataDir === undefined;
  const dataDir = options.dataDir ?? await Deno.makeTempDir({ prefix: "cadres-e2e-" });
  try {
    for (let attempt = 1;; attempt++) {
      try {
        const server = await launchServer(
          dataDir,
          options.expectSetup ?? false,
          options.env ?? {},
          options.args ?? [],
        );
        return {
          ...server,
          async stop() {
            await server.stop();
            if (ownDataDir) await Deno.remove(dataDir, { recursive: true }).catch(() => {});
          },
        };
      } catch (error) {
        const portTaken = error instanceof Error && /AddrInUse|address already in use/i.test(error.message);
        if (!portTaken || attempt >= 3) throw error;
      }
    }
  } catch (error) {
    if (ownDataDir) await Deno.remove(dataDir, { recursive: true }).catch(() => {});
    throw error;
  }
}

async function launchServer(
  dataDir: string,
  expectSetup: boolean,
  extraEnv: Record<string, string>,
  extraArgs: string[],
): Promise<Server> {
  const port = freePort();
  const baseUrl = `http://localhost:${port}`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts", ...extraArgs],
    cwd: ROOT,
    env: {
      PORT: String(port),
      CADRES_DATA_DIR: dataDir,
      CADRES_LOG_LEVEL: "warn",
      CADRES_BASE_URL: baseUrl,
      ...extraEnv,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out: string[] = [];
  const err: string[] = [];
  const pumps = Promise.all([drain(child.stdout, out), drain(child.stderr, err)]);
  let exited: Deno.CommandStatus | null = null;
  const status = child.status.then((s) => (exited = s));
  const output = () => `--- server stdout ---\n${out.join("")}\n--- server stderr ---\n${err.join("")}`;

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    if (!exited) {
      try {
        child.kill("SIGTERM");
      } catch {
        // already gone
      }
    }
    await status;
    await pumps;
  };

  try {
    await waitFor(
      "the server to answer /healthz",
      async () => {
        if (exited) {
          throw new Error(`The server exited with code ${exited.code} before answering\n${output()}`);
        }
        try {
          const res = await fetch(`http://127.0.0.1:${port}/healthz`);
          const body = await res.text();
          return res.ok && body.includes("ok");
        } catch {
          return false;
        }
      },
      60_000,
      100,
    );
    let setupUrl: string | null = null;
    if (expectSetup) {
      setupUrl = await waitFor("the setup line on stderr", () => {
        const match = /No administrator yet\. Finish setup at (\S+) \(valid 24 h\)\./.exec(err.join(""));
        return match?.[1];
      }, 10_000);
    }
    return { port, baseUrl, dataDir, output, setupUrl, stop };
  } catch (error) {
    await stop();
    if (error instanceof Error && !error.message.includes("--- server")) {
      error.message += `\n${output()}`;
    }
    throw error;
  }
}

/** A problem the browser reported: console error/warning or an uncaught page error. */
export interface BrowserProblem {
  kind: "console" | "pageerror";
  type: string;
  text: string;
  url: string;
  page: Page;
}

export interface Browser {
  context: BrowserContext;
  page: Page;
  /** Everything reported by any page of the context so far. */
  problems: BrowserProblem[];
  /** Problems that are CSP violations (pages passed to `ignore` left out). */
  cspViolations(): BrowserProblem[];
  /** Leaves a page's problems out of `cspViolations` and `unexpectedProblems` (for self-checks). */
  ignore(page: Page): void;
  /**
   * Problems that should fail a test: CSP violations, uncaught page errors, and console errors other
   * than Chromium's "Failed to load resource" line (which every expected 403/404 produces).
   */
  unexpectedProblems(): BrowserProblem[];
  close(): Promise<void>;
}

const CSP_PATTERN = /Content Security Policy|Content-Security-Policy|securitypolicyviolation|Refused to/i;

/**
 * Watches every page of `context` (console errors and warnings, page errors, CSP violations through a
 * `securitypolicyviolation` listener) and returns it as a `Browser` whose `close` runs `close`. Used by
 * the scenario wrapper (a context per test of a shared chromium).
 */
export async function watchContext(context: BrowserContext, close: () => Promise<void>): Promise<Browser> {
  context.setDefaultTimeout(20_000);
  context.setDefaultNavigationTimeout(30_000);
  const problems: BrowserProblem[] = [];
  await context.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => {
      console.error(
        `securitypolicyviolation: ${e.violatedDirective} blocked ${
          e.blockedURI || "inline"
        } at ${e.sourceFile}:${e.lineNumber}`,
      );
    });
  });
  const watch = (page: Page) => {
    page.on("console", (msg: ConsoleMessage) => {
      if (msg.type() === "error" || msg.type() === "warning") {
        problems.push({ kind: "console", type: msg.type(), text: msg.text(), url: page.url(), page });
      }
    });
    page.on("pageerror", (error: Error) => {
      problems.push({
        kind: "pageerror",
        type: "error",
        text: String(error?.stack ?? error),
        url: page.url(),
        page,
      });
    });
  };
  context.on("page", watch);
  for (const existing of context.pages()) watch(existing);
  const page = context.pages()[0] ?? await context.newPage();
  const ignored = new Set<Page>();
  const counted = () => problems.filter((p) => !ignored.has(p.page));
  const cspViolations = () => counted().filter((p) => CSP_PATTERN.test(p.text));
  return {
    context,
    page,
    problems,
    cspViolations,
    ignore: (page) => void ignored.add(page),
    unexpectedProblems: () =>
      counted().filter((p) =>
        p.kind === "pageerror" || CSP_PATTERN.test(p.text) ||
        (p.type === "error" &&
          !/^Failed to load resource: the server responded with a status of/.test(p.text))
      ),
    close,
  };
}

/** Saves a full-page screenshot as `tests/e2e/screenshots/<name>.png`. */
export async function screenshot(page: Page, name: string): Promise<void> {
  await Deno.mkdir(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: `${SCREENSHOT_DIR}${name}.png`, fullPage: true });
}

/** Signs in through the /login form and waits for the dashboard. */
export async function signIn(page: Page, email: string, password: string): Promise<void> {
  await page.goto("/login");
  await page.locator("#f-email").fill(email);
  await page.locator("#f-password").fill(password);
  await Promise.all([
    page.waitForURL((url) => url.pathname === "/backup/dashboard"),
    page.getByRole("button", { name: "Sign in" }).click(),
  ]);
}

/** Clicks "Sign out" in the top bar and waits for the login page. */
export async function signOut(page: Page): Promise<void> {
  await Promise.all([
    page.waitForURL((url) => url.pathname === "/login"),
    page.locator("header.topbar").getByRole("button", { name: "Sign out" }).click(),
  ]);
}

/** Formats recorded problems for an assertion message. */
export function describeProblems(problems: BrowserProblem[]): string {
  return problems.map((p) => `[${p.kind}/${p.type}] ${p.text} (on ${p.url})`).join("\n");
}
