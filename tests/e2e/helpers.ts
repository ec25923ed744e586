/**
 * Steps several e2e files repeat, in one place (issue 19 item 6): the real engine programs of a fixture
 * (a BES with a Local target, an agent) started and awaited online, a successful full backup reported
 * over the signed protocol, and hosts assigned on a policy's page. Each asserts what the copies it
 * replaces asserted.
 */
import assert from "node:assert/strict";
import type { Locator, Page, Response } from "playwright-core";
import type { EngineClient, EngineIdentity } from "../../tools/engine_client.ts";
import { spawnBes } from "../integration/bes_world.ts";
import { type Program, spawnAgent } from "../integration/engines_world.ts";
import { apiClient, type Server, waitFor } from "./harness.ts";

type Api = ReturnType<typeof apiClient>;

/** Runs a journey's steps on `j` in order: a test names the steps its check builds on, its own last. */
export async function inOrder<J>(j: J, ...steps: Array<(j: J) => Promise<void>>): Promise<void> {
  for (const step of steps) await step(j);
}

/** Matches the browser's POST to `path` (for `page.waitForResponse`). */
export const isPost = (path: string) => (r: Response) =>
  r.request().method() === "POST" && new URL(r.url()).pathname === path;

/** Clicks `button` and returns the response of the POST to `path` it sends, once the next page loaded. */
export async function submit(page: Page, path: string, button: Locator): Promise<Response> {
  const [res] = await Promise.all([page.waitForResponse(isPost(path)), button.click()]);
  await page.waitForLoadState("domcontentloaded");
  return res;
}

/** A temporary folder for real engine programs, and the programs started in it. */
export interface ProgramsFolder {
  tmp: string;
  programs: Program[];
  /** The server's output and every program's, for failure messages. */
  outputs(): string;
}

/** Makes the folder; `onCleanup` (a fixture's) stops its programs and removes it after the file. */
export async function programsFolder(
  prefix: string,
  server: Server,
  onCleanup: (f: () => Promise<void>) => void,
): Promise<ProgramsFolder> {
  const tmp = await Deno.makeTempDir({ prefix });
  const programs: Program[] = [];
  onCleanup(async () => {
    for (const p of programs) await p.stop();
    await Deno.remove(tmp, { recursive: true }).catch(() => {});
  });
  return {
    tmp,
    programs,
    outputs: () => [server.output(), ...programs.map((p) => p.output)].join("\n----\n"),
  };
}

/** Asserts the field error of a plain Field (`#f-<field>-error`) and that its input is marked invalid. */
export async function assertFieldError(page: Page, field: string, message: RegExp): Promise<void> {
  const input = page.locator(`#f-${field}`);
  assert.equal(await input.getAttribute("aria-invalid"), "true", `${field} should be marked invalid`);
  assert.equal(await input.getAttribute("aria-describedby"), `f-${field}-error`);
  const error = page.locator(`.field.field--error #f-${field}-error`);
  assert.equal(await error.count(), 1, `${field} should have its error next to it`);
  assert.match(await error.innerText(), message);
}

/** Adds the Local target "Primary Disk" at `path` on BES `besId` through the API; returns its id. */
export async function addLocalTarget(api: Api, besId: string, path: string): Promise<string> {
  const target = await api("POST", "/api/v1/storage", {
    name: "Primary Disk",
    type: "local",
    config: { path },
    besId,
  });
  assert.equal(target.status, 201, target.text);
  return target.json().id;
}

/**
 * On a restore point's page, submits "Restore files" (303) and waits for the restore request's page;
 * returns its path.
 */
export async function submitFileRestore(page: Page): Promise<string> {
  const pointPath = new URL(page.url()).pathname;
  const res = await submit(
    page,
    `${pointPath}/files`,
    page.getByRole("button", { name: "Restore files", exact: true }),
  );
  assert.equal(res.status(), 303);
  await page.waitForURL((url) => url.pathname.startsWith("/backup/restore/requests/"));
  return new URL(page.url()).pathname;
}

/**
 * Starts the BES program (`<tmp>/bes`, HTTPS data API) named `name`, waits until it is online, and adds
 * the Local target "Primary Disk" (`<tmp>/target`) on it through the API.
 */
export async function startBesWithLocalTarget(
  folder: ProgramsFolder,
  server: Server,
  api: Api,
  orgSecret: string,
  name: string,
): Promise<{ besId: string; targetId: string }> {
  const bes = spawnBes(server.baseUrl, orgSecret, `${folder.tmp}/bes`, name, { tls: true });
  folder.programs.push(bes);
  const besId = await waitFor(
    "the BES to go online",
    async () => {
      if (bes.exited) throw new Error(`the BES exited:\n${bes.output}`);
      const res = await api("GET", "/api/v1/engines");
      const e = (res.json().values as { id: string; name: string; status: string }[])
        .find((x) => x.name === name);
      return e?.status === "online" ? e.id : undefined;
    },
    60_000,
    200,
  );
  await Deno.mkdir(`${folder.tmp}/target`);
  return { besId, targetId: await addLocalTarget(api, besId, `${folder.tmp}/target`) };
}

/** Starts the agent program (`<tmp>/agent`) for `hostname` over `roots`; waits until its host is online. */
export async function startAgentOnline(
  folder: ProgramsFolder,
  server: Server,
  api: Api,
  orgSecret: string,
  hostname: string,
  roots: string[],
): Promise<string> {
  const agent = spawnAgent(server.baseUrl, orgSecret, `${folder.tmp}/agent`, hostname, roots);
  folder.programs.push(agent);
  return await waitFor(
    "the agent's host to be online",
    async () => {
      if (agent.exited) throw new Error(`the agent exited:\n${agent.output}`);
      const res = await api("GET", "/api/v1/hosts");
      const h = (res.json().values as { id: string; hostname: string; status: string }[])
        .find((x) => x.hostname === hostname);
      return h?.status === "online" ? h.id : undefined;
    },
    60_000,
    200,
  );
}

/**
 * Reports the agent's backup job `jobId` as a successful full that took ten minutes up to `ended`: 3 GiB
 * transferred of 12 GiB protected, restore point `point` (3 GiB, 48 211 files). Returns the response.
 */
export async function reportFullBackup(
  engineClient: EngineClient,
  agent: EngineIdentity,
  jobId: string,
  point: { id: string; chainId: string },
  ended: Date,
): Promise<globalThis.Response> {
  return await engineClient.post(agent, `/api/agent/v1/jobs/${jobId}/result`, {
    status: "success",
    startedAt: new Date(ended.getTime() - 600_000).toISOString(),
    endedAt: ended.toISOString(),
    bytesTransferred: 3 * 1024 ** 3,
    protectedBytes: 12 * 1024 ** 3,
    output: {
      restorePoint: {
        ...point,
        type: "full",
        sizeBytes: 3 * 1024 ** 3,
        fileCount: 48_211,
        completedAt: ended.toISOString(),
      },
    },
  });
}

/**
 * Assigns each of `hostnames` on the policy page `policyPath` through its Assign form (303 each); returns the
 * host ids the form offered for them, in order.
 */
export async function assignOnPolicyPage(
  page: Page,
  policyPath: string,
  hostnames: string[],
): Promise<string[]> {
  const ids: string[] = [];
  for (const hostname of hostnames) {
    await page.goto(policyPath);
    const option = await page.locator("select[name=hostId] option", { hasText: hostname })
      .getAttribute("value");
    await page.locator("select[name=hostId]").selectOption(option!);
    const res = await submit(
      page,
      `${policyPath}/assignments`,
      page.getByRole("button", { name: "Assign", exact: true }),
    );
    assert.equal(res.status(), 303);
    ids.push(option!);
  }
  return ids;
}
