/**
 * The CLI's automation verbs against a real server: the app on a loopback port over a temporary KV, engines
 * registered and hosts enrolled through the engine-protocol client, and `deno task cli …` run as a
 * subprocess with CADRES_URL and CADRES_TOKEN — provision a policy, assign two hosts, read them back, run
 * the policy, list the failed run, restore files from the other host's restore point; and the refusals.
 */
import assert from "node:assert/strict";
import { createApp } from "../../app.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import { createLogger } from "../../domain/log.ts";
import { permissionsOf } from "../../domain/rbac.ts";
import { EngineClient, type EngineIdentity } from "../../tools/engine_client.ts";
import { addUser, createTenant, engineMetrics, runDeno } from "../helpers.ts";

interface Cli {
  code: number;
  stdout: string;
  stderr: string;
}

/** A running server with a tenant, an admin's API token, a BES online with a target, two agents online. */
async function startWorld() {
  const dir = await Deno.makeTempDir({ prefix: "cadres-cli-api-" });
  const kv = await Deno.openKv(`${dir}/cadres.kv`);
  const now = new Date();
  const tenant = await createTenant(kv, "Acme", ["Ops", "Lab"], now);
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", now);
  const viewer = await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", now);
  const token = async (user: typeof admin) =>
    (await createApiToken(kv, userActor(user), {
      name: "automation",
      permissions: [...permissionsOf(user.role)],
      expiresInDays: 0,
    }, now)).secret;
  const adminToken = await token(admin);
  const viewerToken = await token(viewer);
  const app = createApp({ kv, config: testConfig({ dataDir: dir }), logger: createLogger("error") });
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen: () => {} },
    (req, info) => app.fetch(req, info),
  );
  const url = `http://127.0.0.1:${server.addr.port}`;
  const engines = new EngineClient(url);
  const secret = tenant.secrets[0];
  const bes = (await engines.registerBes(secret, {
    name: "bes-hq",
    hostname: "bes-hq.acme.example",
    ipAddress: "10.0.0.10",
  }))
    .identity;
  assert.ok(bes.id, "the BES registered");
  assert.equal((await engines.heartbeat(bes, engineMetrics())).status, 200);
  const agents: Record<string, EngineIdentity> = {};
  for (const hostname of ["web-01.acme.example", "db-01.acme.example"]) {
    const { identity, response } = await engines.enrollAgent(secret, { hostname, ipAddress: "10.0.0.20" });
    assert.equal(response.status, 201, `${hostname} enrolled`);
    assert.equal((await engines.heartbeat(identity, engineMetrics())).status, 200);
    agents[hostname] = identity;
  }
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(url + path, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: res.status, body: await res.json() };
  };
  const target = await api("POST", "/api/v1/storage", {
    name: "nas",
    besId: bes.id,
    type: "local",
    config: { path: "/srv/backups" },
  });
  assert.equal(target.status, 201, JSON.stringify(target.body));
  /** `deno task cli <args>` against this server (token from CADRES_TOKEN unless given). */
  const cli = (args: string[], env: Record<string, string> = {}): Promise<Cli> =>
    runDeno(["task", "-q", "cli", ...args], { CADRES_URL: url, CADRES_TOKEN: adminToken, ...env });
  return {
    dir,
    kv,
    app,
    url,
    tenant,
    admin,
    adminToken,
    viewerToken,
    engines,
    bes,
    agents,
    targetId: target.body.id as string,
    api,
    cli,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
      kv.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

/** Asserts exit 0 and exactly one JSON object on stdout; returns it. */
function oneObject(r: Cli, what: string) {
  assert.equal(r.code, 0, `${what} failed: ${r.stderr}${r.stdout}`);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 1, `${what}: stdout should be one JSON line, got: ${r.stdout}`);
  const value = JSON.parse(lines[0]);
  assert.ok(value !== null && typeof value === "object" && !Array.isArray(value), what);
  return value;
}

/** Asserts a refusal: exit 1 and one JSON error object on stdout; returns the error. */
function oneError(r: Cli, what: string) {
  assert.equal(r.code, 1, `${what} should fail: ${r.stdout}${r.stderr}`);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 1, `${what}: stdout should be one JSON line, got: ${r.stdout}`);
  const value = JSON.parse(lines[0]);
  assert.deepEqual(Object.keys(value), ["error"], what);
  return value.error;
}

/** Claims the agent's next job and posts its result through the engine protocol. */
async function finishJob(
  engines: EngineClient,
  agent: EngineIdentity,
  result: (job: { id: string; kind: string }) => Record<string, unknown>,
) {
  const claim = await engines.post(agent, "/api/agent/v1/jobs/claim", { max: 1 });
  assert.equal(claim.status, 200);
  const { jobs } = await claim.json();
  assert.equal(jobs.length, 1, "the agent has a job");
  const at = new Date().toISOString();
  const res = await engines.post(agent, `/api/agent/v1/jobs/${jobs[0].id}/result`, {
    startedAt: at,
    endedAt: at,
    bytesTransferred: 0,
    protectedBytes: 0,
    ...result(jobs[0]),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return jobs[0];
}

Deno.test("cli: provision a policy from a file, assign two hosts, read them back, run it, list the failed run, restore files", async () => {
  await using w = await startWorld();
  const policyFile = `${w.dir}/policy.json`;
  await Deno.writeTextFile(
    policyFile,
    JSON.stringify({
      name: "web nightly",
      besId: w.bes.id,
      targetId: w.targetId,
      backupType: "file",
      fullSchedule: "0 2 * * 0",
      incrementalSchedule: "0 2 * * 1-6",
      excludePatterns: ["*.tmp"],
    }),
  );

  // Provision.
  const created = oneObject(
    await w.cli(["policies", "create", "--file", policyFile, "--json"]),
    "policies create",
  );
  assert.equal(created.name, "web nightly");
  assert.match(created.id, /^[0-9A-Z]{26}$/);
  const listed = oneObject(await w.cli(["policies", "list", "--json"]), "policies list");
  assert.deepEqual(listed.values.map((p: { id: string }) => p.id), [created.id]);
  const got = oneObject(await w.cli(["policies", "get", "web nightly", "--json"]), "policies get by name");
  assert.equal(got.id, created.id);
  assert.equal(got.nextFullRuns.length, 5);
  const hosts = oneObject(await w.cli(["hosts", "list", "--json"]), "hosts list");
  assert.deepEqual(hosts.values.map((h: { hostname: string }) => h.hostname).sort(), [
    "db-01.acme.example",
    "web-01.acme.example",
  ]);
  const dbId = w.agents["db-01.acme.example"].id;
  const webId = w.agents["web-01.acme.example"].id;

  // Assign two hosts: one by hostname, one by id.
  const assignArgs = [
    "assign",
    "--policy",
    "web nightly",
    "--host",
    "web-01.acme.example",
    "--host",
    dbId,
    "--json",
  ];
  const assigned = oneObject(await w.cli(assignArgs), "assign");
  assert.equal(assigned.policyId, created.id);
  assert.deepEqual([assigned.assigned, assigned.failed], [2, 0]);
  assert.deepEqual(
    assigned.results.map((r: { hostId: string; ok: boolean; status: number }) => [r.hostId, r.ok, r.status]),
    [[webId, true, 201], [dbId, true, 201]],
    "one result per host, in the order given",
  );
  for (const r of assigned.results) {
    assert.deepEqual([r.assignment.policyId, r.assignment.hostId, r.assignment.state], [
      created.id,
      r.hostId,
      "active",
    ]);
  }

  // Read them back through the API verbs.
  for (const [hostname, id] of [["web-01.acme.example", webId], ["db-01.acme.example", dbId]]) {
    const host = oneObject(await w.cli(["hosts", "get", hostname, "--json"]), `hosts get ${hostname}`);
    assert.equal(host.id, id);
    assert.deepEqual(
      host.assignments.map((a: { policyId: string; state: string }) => [a.policyId, a.state]),
      [[created.id, "active"]],
    );
  }
  const humanHost = await w.cli(["hosts", "get", "db-01.acme.example"]);
  assert.equal(humanHost.code, 0, humanHost.stderr);
  assert.match(humanHost.stdout, /POLICY\s+POLICY ID\s+STATE/);
  assert.match(humanHost.stdout, new RegExp(`web nightly\\s+${created.id}\\s+active`));

  // Run it now: one full run per host.
  const started = oneObject(
    await w.cli(["policies", "run", "web nightly", "--kind", "full", "--json"]),
    "run",
  );
  assert.equal(started.runs.length, 2);
  assert.deepEqual(started.runs.map((r: { hostId: string }) => r.hostId).sort(), [webId, dbId].sort());

  // web-01 fails (retryable), db-01 succeeds with a restore point.
  await finishJob(w.engines, w.agents["web-01.acme.example"], () => ({
    status: "failed",
    error: { reason: "TARGET_UNREACHABLE", message: "NFS server not responding" },
    retryable: true,
  }));
  await finishJob(w.engines, w.agents["db-01.acme.example"], () => ({
    status: "success",
    bytesTransferred: 4096,
    protectedBytes: 4096,
    output: {
      restorePoint: { id: "rp-db-1", chainId: "chain-db", type: "full", sizeBytes: 4096, fileCount: 3 },
    },
  }));
  const failed = oneObject(await w.cli(["runs", "list", "--status", "failed", "--json"]), "runs list");
  assert.equal(failed.values.length, 1);
  assert.deepEqual([failed.values[0].hostId, failed.values[0].status, failed.values[0].retryable], [
    webId,
    "failed",
    true,
  ]);
  const humanRuns = await w.cli(["runs", "list", "--status", "failed", "--policy", "web nightly"]);
  assert.equal(humanRuns.code, 0, humanRuns.stderr);
  assert.match(humanRuns.stdout, /^RUN\s+POLICY\s+HOST/);
  assert.match(humanRuns.stdout, /NFS server not responding/);

  // Restore files from db-01's restore point, following it to the end while the agent does the job.
  const points = await w.api("GET", `/api/v1/restore-points?hostId=${dbId}`);
  assert.equal(points.body.values.length, 1);
  const pointId = points.body.values[0].id;
  const restoring = w.cli([
    "restore",
    "files",
    "--point",
    pointId,
    "--path",
    "/etc/hosts",
    "--path",
    "/srv/app",
    "--target-path",
    "/restore",
    "--wait",
    "--json",
  ]);
  let restoreJob: { id: string; kind: string } | null = null;
  for (let i = 0; i < 100 && !restoreJob; i++) {
    const list = await w.api("GET", "/api/v1/restores");
    if (list.body.values.length) {
      restoreJob = await finishJob(w.engines, w.agents["db-01.acme.example"], (job) => {
        assert.equal(job.kind, "restore_files");
        return { status: "success", bytesTransferred: 900, output: { files: 2, bytes: 900, errors: [] } };
      });
    } else await new Promise((r) => setTimeout(r, 100));
  }
  const restored = oneObject(await restoring, "restore files --wait");
  assert.deepEqual([restored.status, restored.result.files, restored.pathCount], ["success", 2, 2]);
  assert.equal(restored.jobId, restoreJob?.id);
});

Deno.test("cli: refusals print the API's message (one JSON error object with --json) and exit 1", async () => {
  await using w = await startWorld();
  const bad = `${w.dir}/bad.json`;
  await Deno.writeTextFile(bad, JSON.stringify({ name: "", besId: w.bes.id, backupType: "tape" }));
  const invalid = oneError(await w.cli(["policies", "create", "--file", bad, "--json"]), "invalid policy");
  assert.deepEqual([invalid.status, invalid.code], [422, "invalid"]);
  assert.ok(
    invalid.fields.name && invalid.fields.backupType && invalid.fields.targetId,
    JSON.stringify(invalid),
  );
  const human = await w.cli(["policies", "create", "--file", bad]);
  assert.equal(human.code, 1);
  assert.equal(human.stdout, "");
  assert.match(human.stderr, /^Error: The request is invalid \(HTTP 422 invalid\)\n {2}name: /);

  // Nothing was created.
  assert.deepEqual(oneObject(await w.cli(["policies", "list", "--json"]), "list").values, []);

  const unknown = oneError(await w.cli(["policies", "get", "no such policy", "--json"]), "unknown policy");
  assert.equal(unknown.message, 'No policy named "no such policy" in your scope');
  const noHost = oneError(
    await w.cli(["runs", "list", "--host", "ghost.acme.example", "--json"]),
    "unknown host",
  );
  assert.equal(noHost.message, 'no host named "ghost.acme.example" in your scope');
  const badToken = oneError(
    await w.cli(["hosts", "list", "--json"], { CADRES_TOKEN: "cdt_nope" }),
    "bad token",
  );
  assert.deepEqual([badToken.status, badToken.code], [401, "unauthorized"]);
  const viewer = oneError(
    await w.cli(["policies", "create", "--file", bad, "--json"], { CADRES_TOKEN: w.viewerToken }),
    "viewer creates",
  );
  assert.equal(viewer.status, 403);
  const noUrl = oneError(await w.cli(["hosts", "list", "--json"], { CADRES_URL: "" }), "no url");
  assert.match(noUrl.message, /CADRES_URL/);
  const unreachable = await w.cli(["hosts", "list"], { CADRES_URL: "http://127.0.0.1:9" });
  assert.equal(unreachable.code, 1);
  assert.match(unreachable.stderr, /^Error: Cannot reach http:\/\/127\.0\.0\.1:9: /);
  const missing = oneError(await w.cli(["restore", "files", "--point", "x", "--json"]), "no path");
  assert.equal(missing.message, "Missing --path (repeat it for several paths)");
});

Deno.test("cli assign: each host's result reported (assigned, reassigned, refused), one refused host means exit 1", async () => {
  await using w = await startWorld();
  const policy = await w.api("POST", "/api/v1/policies", {
    name: "web nightly",
    besId: w.bes.id,
    targetId: w.targetId,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  });
  assert.equal(policy.status, 201, JSON.stringify(policy.body));
  const webId = w.agents["web-01.acme.example"].id;
  const dbId = w.agents["db-01.acme.example"].id;
  // web-01 was assigned once and archived: assigning it again makes that assignment active (200).
  const first = await w.api("POST", `/api/v1/policies/${policy.body.id}/assignments`, { hostIds: [webId] });
  assert.equal(first.status, 201, JSON.stringify(first.body));
  const archived = await w.api("PATCH", `/api/v1/assignments/${first.body.results[0].assignment.id}`, {
    state: "archived",
  });
  assert.equal(archived.status, 200, JSON.stringify(archived.body));

  const args = [
    "assign",
    "--policy",
    "web nightly",
    "--host",
    "web-01.acme.example",
    "--host",
    "DB-01.acme.example",
  ];
  const both = oneObject(await w.cli([...args, "--json"]), "assign an archived and a new host");
  assert.deepEqual([both.policyId, both.assigned, both.failed], [policy.body.id, 2, 0]);
  assert.deepEqual(
    both.results.map((
      r: { hostId: string; status: number; created: boolean },
    ) => [r.hostId, r.status, r.created]),
    [[webId, 200, false], [dbId, 201, true]],
  );

  // Again: both are assigned already, so both are refused (422) and nothing changes; exit 1.
  const ghost = "01JC9Z8X7W6V5T4S3R2Q1P0N9A";
  const again = await w.cli([...args, "--host", ghost, "--json"]);
  assert.equal(again.code, 1, "a refused host makes the exit code 1");
  const refused = JSON.parse(again.stdout);
  assert.deepEqual([refused.assigned, refused.failed], [0, 3]);
  assert.deepEqual(
    refused.results.map((r: { hostId: string; ok: boolean; status: number; error: { code: string } }) => [
      r.hostId,
      r.ok,
      r.status,
      r.error.code,
    ]),
    [[webId, false, 422, "invalid"], [dbId, false, 422, "invalid"], [ghost, false, 404, "not_found"]],
  );
  const listed = await w.api("GET", `/api/v1/policies/${policy.body.id}/assignments`);
  assert.deepEqual(
    listed.body.values.map((a: { hostId: string; state: string }) => [a.hostId, a.state]).sort(),
    [[dbId, "active"], [webId, "active"]].sort(),
    "the refusals changed nothing",
  );

  const human = await w.cli(args);
  assert.equal(human.code, 1);
  assert.match(human.stdout, /^HOST\s+HOST ID\s+RESULT\s+ERROR/);
  assert.match(
    human.stdout,
    new RegExp(`web-01\\.acme\\.example\\s+${webId}\\s+refused \\(HTTP 422 invalid\\)`),
  );
  assert.match(human.stdout, /0 of 2 assigned to web nightly\./);
});
