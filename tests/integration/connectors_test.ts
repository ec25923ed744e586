/**
 * The Veeam and Cohesity connectors against fake vendor servers on loopback: login, token expiry and
 * re-login, pagination over several pages, 429 with Retry-After, 5xx, malformed bodies, unreachable
 * endpoints, TLS verification (and a platform CA), status/type mapping and starting a job.
 */
import assert from "node:assert/strict";
import { CohesityConnector, mapCohesityEnvironment } from "../../domain/connectors/cohesity.ts";
import { ConnectorError, retryAfterSeconds } from "../../domain/connectors/types.ts";
import { mapVeeamJobType, mapVeeamObjectType, VeeamConnector } from "../../domain/connectors/veeam.ts";
import { startFakeCohesity } from "../fakes/cohesity_server.ts";
import { makeTestCertificates } from "../fakes/fake_http.ts";
import { startFakeVeeam, VEEAM_PASSWORD, VEEAM_USER } from "../fakes/veeam_server.ts";
import { freePort } from "../helpers.ts";

/** Records waits instead of sleeping. */
function sleeper() {
  const waits: number[] = [];
  return { waits, sleep: (ms: number) => (waits.push(ms), Promise.resolve()) };
}

function veeam(url: string, overrides: Partial<ConstructorParameters<typeof VeeamConnector>[0]> = {}) {
  const s = sleeper();
  const connector = new VeeamConnector({
    endpoint: url,
    username: VEEAM_USER,
    password: VEEAM_PASSWORD,
    sleep: s.sleep,
    pageSize: 2,
    ...overrides,
  });
  return { connector, waits: s.waits };
}

async function rejects(promise: Promise<unknown>, code: string, pattern?: RegExp): Promise<ConnectorError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof ConnectorError, `expected a ConnectorError, got ${error}`);
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    return error;
  }
  throw new Error("expected the call to fail");
}

function veeamJobs(n: number) {
  return Array.from({ length: n }, (_, i) => ({
    id: `0b3a${i}000-1111-4222-8333-44445555666${i}`,
    name: `Job ${i}`,
    type: ["VSphereBackup", "WindowsAgentBackup", "FileBackup", "VSphereReplica", "SqlLogBackup"][i % 5],
    status: (i === 3 ? "Disabled" : "Inactive") as "Disabled" | "Inactive",
    lastResult: "Success" as const,
  }));
}

Deno.test("VeeamConnector.listJobs() logs in with the password grant and reads every page", async () => {
  await using fake = await startFakeVeeam();
  fake.jobs = veeamJobs(5);
  const { connector } = veeam(fake.url);
  const jobs = await connector.listJobs();
  assert.equal(jobs.length, 5);
  assert.deepEqual(fake.calls("/api/v1/jobs/states").map((r) => r.query.get("skip")), ["0", "2", "4"]);
  const token = fake.calls("/api/oauth2/token")[0];
  const form = new URLSearchParams(token.body);
  assert.equal(form.get("grant_type"), "password");
  assert.equal(form.get("username"), VEEAM_USER);
  assert.deepEqual(
    jobs.map((j) => [j.vendorType, j.jobType, j.objectType, j.enabled]),
    [
      ["VSphereBackup", "incremental", "vm", true],
      ["WindowsAgentBackup", "incremental", "physical", true],
      ["FileBackup", "incremental", "nas", true],
      ["VSphereReplica", "snapshot", "vm", false],
      ["SqlLogBackup", "log", null, true],
    ],
  );
  assert.ok(
    fake.requests.every((r) => r.path === "/api/oauth2/token" || r.authorization?.startsWith("Bearer ")),
  );
});

Deno.test("VeeamConnector logs in again once when the token expired (401), then goes on", async () => {
  await using fake = await startFakeVeeam();
  fake.jobs = veeamJobs(3);
  const { connector } = veeam(fake.url);
  await connector.listJobs();
  fake.expireTokens();
  assert.equal((await connector.listJobs()).length, 3);
  assert.equal(fake.calls("/api/oauth2/token").length, 2);
  assert.ok(fake.calls("/api/v1/jobs/states").some((r) => r.query.get("skip") === "0"));
});

Deno.test("VeeamConnector refuses bad credentials with an auth error that names the user, not the password", async () => {
  await using fake = await startFakeVeeam();
  const { connector } = veeam(fake.url, { password: "wrong-password-123" });
  const error = await rejects(connector.listJobs(), "auth", /rejected the credentials of corp\\svc-cadres/);
  assert.ok(!error.message.includes("wrong-password-123"));
  assert.equal(error.retryable, false);
});

Deno.test("VeeamConnector waits Retry-After on 429 and retries; too long a wait fails as rate limited", async () => {
  await using fake = await startFakeVeeam();
  fake.jobs = veeamJobs(1);
  fake.faults.push({ path: "/api/v1/jobs/states", status: 429, headers: { "retry-after": "3" }, times: 2 });
  const { connector, waits } = veeam(fake.url);
  assert.equal((await connector.listJobs()).length, 1);
  assert.deepEqual(waits, [3000, 3000]);

  fake.faults.push({ path: "/api/v1/jobs/states", status: 429, headers: { "retry-after": "600" } });
  const error = await rejects(connector.listJobs(), "rate_limited", /asked to wait 600 s/);
  assert.equal(error.retryable, true);
});

Deno.test("VeeamConnector retries 5xx with backoff, then fails with the status after 4 attempts", async () => {
  await using fake = await startFakeVeeam();
  fake.jobs = veeamJobs(1);
  fake.faults.push({ path: "/api/v1/jobs/states", status: 503, body: { message: "busy" }, times: 2 });
  const { connector, waits } = veeam(fake.url);
  assert.equal((await connector.listJobs()).length, 1);
  assert.deepEqual(waits, [500, 1000]);
  fake.faults.push({
    path: "/api/v1/jobs/states",
    status: 500,
    body: { message: "db down" },
    times: Infinity,
  });
  await rejects(
    connector.listJobs(),
    "server",
    /GET \/api\/v1\/jobs\/states: server error 500 after 4 attempts/,
  );
  // Starting a job is not sent twice: the first 5xx may come after Veeam started it.
  fake.faults = [{ path: /\/start$/, status: 502, body: { message: "Bad gateway" } }];
  const [job] = await connector.listJobs();
  const error = await rejects(
    connector.startJob(job),
    "server",
    /POST .*\/start: server error 502: Bad gateway/,
  );
  assert.equal(error.retryable, true);
  assert.equal(fake.calls(/\/start$/).length, 1);
  // A login is: a 503 on the token request is retried.
  fake.expireTokens();
  fake.faults = [{ path: "/api/oauth2/token", status: 503 }];
  assert.equal((await connector.listJobs()).length, 1);
  assert.equal(fake.calls("/api/oauth2/token").length, 3);
});

Deno.test("VeeamConnector rejects a malformed page with the path of the first mismatch", async () => {
  await using fake = await startFakeVeeam();
  fake.jobs = veeamJobs(4);
  // The second page has an id that is a number.
  fake.faults.push({
    path: "/api/v1/jobs/states",
    status: 200,
    body: {
      data: [{ id: 42, name: "x", type: "VSphereBackup" }],
      pagination: { total: 4, count: 1, skip: 2 },
    },
  });
  const { connector } = veeam(fake.url);
  await rejects(connector.listJobs(), "bad_response", /unexpected response shape at data\.0\.id/);
  fake.faults.push({ path: "/api/v1/jobs/states", status: 200, body: "<html>proxy error</html>" });
  await rejects(connector.listJobs(), "bad_response", /not JSON/);
  fake.faults.push({ path: "/api/v1/jobs/states", status: 200, body: { items: [] } });
  await rejects(connector.listJobs(), "bad_response", /at data/);
  // A page that stops short of the announced total is an incomplete list, not the end of the list.
  fake.faults.push({
    path: "/api/v1/jobs/states",
    status: 200,
    body: { data: [], pagination: { total: 4, count: 0, skip: 0, limit: 2 } },
  });
  await rejects(connector.listJobs(), "bad_response", /empty page at 0 of 4 items/);
});

Deno.test("VeeamConnector.listRuns() reads sessions created after `since`, maps states and results", async () => {
  await using fake = await startFakeVeeam();
  fake.jobs = veeamJobs(2);
  const [a, b] = fake.jobs;
  fake.addSession(a.id, "2026-11-20T01:00:00Z", "Success");
  fake.addSession(a.id, "2026-11-21T01:00:00Z", "Failed", { message: "Error: disk full\nat line 2" });
  fake.addSession(b.id, "2026-11-21T02:00:00Z", "Warning", { message: "1 VM skipped" });
  fake.addSession(b.id, "2026-11-21T03:00:00Z", "Failed", { canceled: true });
  fake.addSession(b.id, "2026-11-22T09:00:00Z", null);
  fake.sessions.push({ ...fake.sessions[0], id: "restore-1", jobId: null, sessionType: "RestoreVm" });
  const { connector } = veeam(fake.url);
  const runs = await connector.listRuns(await connector.listJobs(), new Date("2026-11-21T00:00:00Z"));
  assert.deepEqual(
    runs.map((r) => [r.status, r.cancelled, r.message]),
    [
      ["failed", false, "Error: disk full at line 2"],
      ["warning", false, "1 VM skipped"],
      ["failed", true, null],
      ["running", false, null],
    ],
  );
  assert.equal(runs[3].endedAt, null);
  const call = fake.calls("/api/v1/sessions")[0];
  assert.equal(call.query.get("createdAfterFilter"), "2026-11-21T00:00:00.000Z");
  assert.equal(call.query.get("orderColumn"), "CreationTime");
});

Deno.test("VeeamConnector.listObjects() folds an object listed per backup and links it to its jobs", async () => {
  await using fake = await startFakeVeeam();
  fake.jobs = veeamJobs(3);
  const [vmJob, agentJob] = fake.jobs;
  fake.backups = [
    { id: "b-1", jobId: vmJob.id, name: "VM backup", platformName: "VMware" },
    { id: "b-2", jobId: agentJob.id, name: "Agent backup", platformName: "WindowsPhysical" },
    { id: "b-3", jobId: null, name: "Imported", platformName: "VMware" },
  ];
  const row = { restorePointsCount: 3 };
  fake.objects = [
    { ...row, id: "o-1", name: "web01", type: "VM", platformName: "VMware", backupId: "b-1" },
    { ...row, id: "o-1", name: "web01", type: "VM", platformName: "VMware", backupId: "b-2" },
    { ...row, id: "o-2", name: "db01", type: "Computer", platformName: "WindowsPhysical", backupId: "b-2" },
    { ...row, id: "o-3", name: "old", type: "VM", platformName: "VMware", backupId: "b-3" },
  ];
  const { connector } = veeam(fake.url);
  const objects = await connector.listObjects(await connector.listJobs());
  assert.deepEqual(objects.map((o) => [o.id, o.type, o.jobIds]), [
    ["o-1", "vm", [vmJob.id, agentJob.id]],
    ["o-2", "physical", [agentJob.id]],
    ["o-3", "vm", []],
  ]);
  // Veeam's BackupObjectModel does not name its backup: the job comes from reading each backup's objects.
  assert.deepEqual(fake.calls(/^\/api\/v1\/backups\/[^/]+\/objects$/).map((r) => r.path), [
    "/api/v1/backups/b-1/objects",
    "/api/v1/backups/b-2/objects",
    "/api/v1/backups/b-3/objects",
  ]);
  const served = await (await fetch(`${fake.url}/api/v1/backupObjects`, {
    headers: { "x-api-version": "1.1-rev2", authorization: fake.calls("/api/v1/backups")[0].authorization! },
  })).json();
  assert.ok(served.data.every((o: Record<string, unknown>) => !("backupId" in o)), "served as documented");
});

Deno.test("VeeamConnector.startJob() answers the new session; a running job is refused, not retried", async () => {
  await using fake = await startFakeVeeam();
  fake.jobs = veeamJobs(1);
  const { connector } = veeam(fake.url);
  const [job] = await connector.listJobs();
  const { runId } = await connector.startJob(job);
  assert.equal(runId, fake.sessions[0].id);
  assert.deepEqual(JSON.parse(fake.calls(/\/start$/)[0].body), { performActiveFull: false });
  const error = await rejects(connector.startJob(job), "refused", /already running/);
  assert.equal(error.retryable, false);
  assert.equal(fake.calls(/\/start$/).length, 2);
});

Deno.test("VeeamConnector reports an unreachable endpoint as retryable", async () => {
  const { connector } = veeam(`http://127.0.0.1:${freePort()}`);
  const error = await rejects(
    connector.testConnection(),
    "unreachable",
    /cannot reach http:\/\/127\.0\.0\.1/,
  );
  assert.equal(error.retryable, true);
});

Deno.test("VeeamConnector verifies TLS: an unknown CA fails, the platform's CA certificate is trusted", async (t) => {
  const certs = await makeTestCertificates();
  if (!certs) {
    await t.step({ name: "openssl is not installed", ignore: true, fn: () => {} });
    return;
  }
  await using fake = await startFakeVeeam({ cert: certs.cert, key: certs.key });
  const plain = veeam(fake.url);
  await rejects(plain.connector.testConnection(), "tls", /TLS verification failed/);
  plain.connector.close();
  const trusted = veeam(fake.url, { caCertificate: certs.ca });
  assert.match(
    (await trusted.connector.testConnection()).detail,
    /Veeam Backup & Replication 12\.1\.2\.172 \(vbr01\)/,
  );
  trusted.connector.close();
});

Deno.test("mapVeeamJobType() and mapVeeamObjectType() follow the README tables", () => {
  assert.deepEqual(mapVeeamJobType("HyperVBackup"), { jobType: "incremental", objectType: "vm" });
  assert.deepEqual(mapVeeamJobType("LinuxAgentBackup"), { jobType: "incremental", objectType: "physical" });
  assert.deepEqual(mapVeeamJobType("ObjectStorageBackup"), {
    jobType: "incremental",
    objectType: "cloud_resource",
  });
  assert.deepEqual(mapVeeamJobType("BackupCopy"), { jobType: "incremental", objectType: null });
  assert.equal(mapVeeamObjectType("VM", "HyperV", null), "vm");
  assert.equal(mapVeeamObjectType("Computer", "LinuxPhysical", null), "physical");
  assert.equal(mapVeeamObjectType("FileShare", "UnstructuredData", null), "nas");
  assert.equal(mapVeeamObjectType("Instance", "AmazonEC2", null), "cloud_resource");
  assert.equal(mapVeeamObjectType("Directory", "Windows", null), "fileset");
  assert.equal(mapVeeamObjectType("Something", "Else", "nas"), "nas");
});

// ---------------------------------------------------------------------------------------------------
// Cohesity

function cohesity(url: string, overrides: Partial<ConstructorParameters<typeof CohesityConnector>[0]> = {}) {
  const s = sleeper();
  const connector = new CohesityConnector({
    endpoint: url,
    username: "svc-cadres",
    password: "Coh3sity-s3cret!",
    domain: "LOCAL",
    sleep: s.sleep,
    pageSize: 2,
    ...overrides,
  });
  return { connector, waits: s.waits };
}

async function cohesityWorld() {
  const fake = await startFakeCohesity();
  fake.sources = [
    {
      id: 11,
      name: "web01",
      environment: "kVMware",
      vmWareProtectionSource: { type: "kVirtualMachine", name: "web01" },
    },
    {
      id: 12,
      name: "web02",
      environment: "kVMware",
      vmWareProtectionSource: { type: "kVirtualMachine", name: "web02" },
    },
    {
      id: 13,
      name: "db01",
      environment: "kPhysical",
      physicalProtectionSource: { type: "kHost", hostType: "kLinux", name: "db01" },
    },
    { id: 14, name: "share", environment: "kGenericNas" },
    { id: 15, name: "sql01", environment: "kSQL" },
  ];
  fake.addJob(101, "VMs", "kVMware", [11, 12]);
  fake.addJob(102, "Linux", "kPhysical", [13], { isPaused: true });
  fake.addJob(103, "NAS", "kGenericNas", [14]);
  fake.addJob(104, "SQL logs", "kSQL", [15]);
  fake.addJob(105, "Gone", "kVMware", [11], { isDeleted: true });
  return fake;
}

Deno.test("CohesityConnector logs in with domain, user and password and maps jobs and environments", async () => {
  await using fake = await cohesityWorld();
  const { connector } = cohesity(fake.url);
  const jobs = await connector.listJobs();
  assert.deepEqual(JSON.parse(fake.calls(/accessTokens$/)[0].body), {
    domain: "LOCAL",
    username: "svc-cadres",
    password: "Coh3sity-s3cret!",
  });
  assert.deepEqual(jobs.map((j) => [j.id, j.objectType, j.enabled]), [
    ["101", "vm", true],
    ["102", "physical", false],
    ["103", "nas", true],
    ["104", "physical", true],
  ]);
  assert.equal(fake.calls(/protectionJobs$/)[0].query.get("isDeleted"), "false");
  assert.equal(mapCohesityEnvironment("kAWSNative"), "cloud_resource");
  assert.equal(mapCohesityEnvironment("kPhysicalFiles"), "fileset");
  assert.equal(mapCohesityEnvironment("kHyperV"), "vm");
});

Deno.test("CohesityConnector.listRuns() pages back in time with numRuns/endTimeUsecs down to `since`", async () => {
  await using fake = await cohesityWorld();
  for (let day = 15; day <= 21; day++) {
    fake.addRun(101, `2026-11-${day}T01:00:00Z`, day === 18 ? "kFailure" : "kSuccess", {
      runType: day === 15 ? "kFull" : "kRegular",
      error: day === 18 ? "Snapshot of web02 failed" : undefined,
      objects: day === 18 ? [{ id: 11, status: "kSuccess" }, { id: 12, status: "kFailure" }] : undefined,
    });
  }
  fake.addRun(104, "2026-11-21T05:00:00Z", "kSuccess", { runType: "kLog" });
  fake.addRun(103, "2026-11-21T06:00:00Z", "kRunning");
  const { connector } = cohesity(fake.url);
  const jobs = await connector.listJobs();
  const runs = await connector.listRuns(jobs, new Date("2026-11-16T00:00:00Z"));
  const vmRuns = runs.filter((r) => r.jobId === "101");
  assert.equal(vmRuns.length, 6, "runs of the 16th to the 21st");
  const pages = fake.calls(/protectionRuns$/).filter((r) => r.query.get("jobId") === "101");
  assert.deepEqual(pages.length, 4, "three full pages of two runs, then an empty one");
  assert.equal(pages[0].query.get("endTimeUsecs"), null);
  assert.ok(Number(pages[1].query.get("endTimeUsecs")) < Date.parse("2026-11-20T01:00:00Z") * 1000);
  assert.equal(pages[0].query.get("startTimeUsecs"), String(Date.parse("2026-11-16T00:00:00Z") * 1000));
  const failed = vmRuns.find((r) => r.status === "failed")!;
  assert.equal(failed.message, "Snapshot of web02 failed");
  assert.deepEqual(failed.objects?.map((o) => [o.objectId, o.status]), [["11", "success"], ["12", "failed"]]);
  assert.equal(runs.find((r) => r.jobId === "104")!.jobType, "log");
  const running = runs.find((r) => r.jobId === "103")!;
  assert.equal(running.status, "running");
  assert.equal(running.endedAt, null);
  assert.deepEqual(runs.map((r) => r.startedAt), [...runs.map((r) => r.startedAt)].sort(), "oldest first");
});

Deno.test("CohesityConnector maps the newer in-flight statuses (kFinalizing, kWaitingToRetry) as running", async () => {
  await using fake = await cohesityWorld();
  fake.addRun(101, "2026-11-21T01:00:00Z", "kFinalizing");
  fake.addRun(103, "2026-11-21T02:00:00Z", "kWaitingToRetry");
  const { connector } = cohesity(fake.url);
  const runs = await connector.listRuns(await connector.listJobs(), null);
  assert.deepEqual(runs.map((r) => [r.jobId, r.status, r.endedAt]), [["101", "running", null], [
    "103",
    "running",
    null,
  ]]);
  assert.equal(mapCohesityEnvironment("kO365Exchange"), "cloud_resource");
  assert.equal(mapCohesityEnvironment("kO365OneDrive"), "cloud_resource");
});

Deno.test("CohesityConnector refuses an unknown run status instead of guessing", async () => {
  await using fake = await cohesityWorld();
  fake.addRun(101, "2026-11-21T01:00:00Z", "kExploded");
  const { connector } = cohesity(fake.url);
  await rejects(connector.listRuns(await connector.listJobs(), null), "bad_response", /backupRun\.status/);
});

Deno.test("CohesityConnector.listObjects() resolves the jobs' sources a page of ids at a time", async () => {
  await using fake = await cohesityWorld();
  const { connector } = cohesity(fake.url);
  const objects = await connector.listObjects(await connector.listJobs());
  assert.deepEqual(objects.map((o) => [o.id, o.name, o.type, o.jobIds]), [
    ["11", "web01", "vm", ["101"]],
    ["12", "web02", "vm", ["101"]],
    ["13", "db01", "physical", ["102"]],
    ["14", "share", "nas", ["103"]],
    ["15", "sql01", "physical", ["104"]],
  ]);
  assert.deepEqual(fake.calls(/protectionSources\/objects$/).map((r) => r.query.getAll("objectIds")), [
    ["11", "12"],
    ["13", "14"],
    ["15"],
  ]);
});

Deno.test("CohesityConnector re-logs in after an expired token, handles 429 and bad credentials", async () => {
  await using fake = await cohesityWorld();
  const { connector, waits } = cohesity(fake.url);
  await connector.listJobs();
  fake.expireTokens();
  fake.faults.push({ path: /protectionJobs$/, status: 429, headers: { "retry-after": "2" } });
  assert.equal((await connector.listJobs()).length, 4);
  assert.equal(fake.calls(/accessTokens$/).length, 2);
  assert.deepEqual(waits, [2000]);
  const bad = cohesity(fake.url, { password: "nope-nope" });
  await rejects(bad.connector.testConnection(), "auth", /Cohesity rejected the credentials of svc-cadres/);
});

Deno.test("CohesityConnector.startJob() posts a regular run and answers no run id (204)", async () => {
  await using fake = await cohesityWorld();
  const { connector } = cohesity(fake.url);
  const jobs = await connector.listJobs();
  assert.deepEqual(await connector.startJob(jobs[0]), { runId: null });
  assert.deepEqual(JSON.parse(fake.calls(/protectionJobs\/run\/101$/)[0].body), { runType: "kRegular" });
  assert.equal(fake.runs.length, 1);
  await rejects(connector.startJob({ ...jobs[0], id: "999" }), "not_found");
});

Deno.test("retryAfterSeconds() reads seconds and HTTP dates", () => {
  assert.equal(retryAfterSeconds("7"), 7);
  assert.equal(retryAfterSeconds(null), 1);
  assert.equal(retryAfterSeconds("Sun, 22 Nov 2026 10:00:30 GMT", Date.parse("2026-11-22T10:00:00Z")), 30);
});
