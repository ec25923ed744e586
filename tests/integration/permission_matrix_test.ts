/**
 * The permission matrix: every route registered on the app (read from `app.routes`, not a hand list)
 * is requested as anonymous, view-only, manage, restore, admin, an admin of another org, and an admin
 * of another account. Expected statuses follow from each route's declared access and the object's
 * tenancy, so a new route without an `access(...)` declaration, or one that leaks across orgs, fails.
 */
import assert from "node:assert/strict";
import { z } from "@hono/zod-openapi";
import { createApp } from "../../app.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { createSession, userActor } from "../../domain/auth.ts";
import { applyHeartbeat, registerEngine, sweepEngineHeartbeats } from "../../domain/engines.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { assignHost } from "../../domain/assignments.ts";
import { createHook } from "../../domain/hooks.ts";
import { requestIfFourEyes, setFourEyesSettings } from "../../domain/approvals.ts";
import { placeHold } from "../../domain/holds.ts";
import { enrollHost } from "../../domain/hosts.ts";
import { createChannel } from "../../domain/notification_channels.ts";
import { createRule } from "../../domain/notification_rules.ts";
import { createPlatform } from "../../domain/platforms.ts";
import { createPolicy } from "../../domain/policies.ts";
import { createReplica } from "../../domain/replicas.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import { listRunsByPolicy } from "../../domain/runs.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { applyResult, claimJobs } from "../../domain/job_queue.ts";
import { anomalyByRunKey, baselineKey } from "../../domain/anomalies.ts";
import { requestBrowse, requestSearch } from "../../domain/restore_browse.ts";
import { requestFileRestore } from "../../domain/restore_requests.ts";
import { createScript } from "../../domain/scripts.ts";
import { createDrill, runDrillNow } from "../../domain/drills.ts";
import { createTarget } from "../../domain/storage.ts";
import { testConfig } from "../../domain/config.ts";
import { createLogger } from "../../domain/log.ts";
import { type Actor, inScope, systemActor } from "../../domain/rbac.ts";
import type { User } from "../../domain/types.ts";
import { accessOf, type AccessSpec } from "../../routes/access.ts";
import { addUser, createTenant, TestClock } from "../helpers.ts";

interface Fixture {
  entries: Array<{ key: Deno.KvKey; value: unknown }>;
  engineId: string;
  targetId: string;
  alertId: string;
  policyId: string;
  hostId: string;
  assignmentId: string;
  hookId: string;
  scriptId: string;
  replicaId: string;
  runId: string;
  restorePointId: string;
  searchId: string;
  restoreId: string;
  channelId: string;
  ruleId: string;
  platformId: string;
  drillId: string;
  drillRunId: string;
  requestId: string;
  holdId: string;
  anomalyId: string;
  principals: Record<string, User | null>;
  target: User;
  viewer: User;
  orgA1: string;
  tokenId: string;
  secretOfA1: string;
}

const clock = new TestClock();
/** The fixture platform's password: no page or reply may ever show it. */
const PLATFORM_PASSWORD = "matrix-Platform-Passw0rd";
/** Routes may write files (a manual self-backup): keep them in a temp folder. */
const dataDir = await Deno.makeTempDir({ prefix: "cadres-matrix-" });
const matrixConfig = testConfig({ dataDir });

async function buildFixture(): Promise<Fixture> {
  using kv = await Deno.openKv(":memory:");
  const now = clock.now();
  const a = await createTenant(kv, "Account A", ["A1", "A2"], now);
  const b = await createTenant(kv, "Account B", ["B1"], now);
  const [a1, a2] = a.orgs;
  const viewer = await addUser(kv, a, "viewer@a.example", "viewer", [a1], now);
  const principals: Record<string, User | null> = {
    anonymous: null,
    viewer,
    manage: await addUser(kv, a, "manage@a.example", "operator", [a1], now),
    restore: await addUser(kv, a, "restore@a.example", "restore_operator", [a1], now),
    admin: await addUser(kv, a, "admin@a.example", "admin", "all", now),
    otherOrgAdmin: await addUser(kv, a, "admin-a2@a.example", "admin", [a2], now),
    otherAccountAdmin: await addUser(kv, b, "admin@b.example", "admin", "all", now),
  };
  const target = await addUser(kv, a, "target@a.example", "viewer", [a1], now);
  const { token } = await createApiToken(kv, userActor(viewer), {
    name: "viewer's token",
    permissions: ["backup.view"],
    expiresInDays: 0,
  }, now);
  // An engine in A1 with a storage target, heartbeating once then silent (so it has an offline alert).
  const { publicKey } = generateKeyPair();
  const { engine } = await registerEngine(kv, { accountId: a.account.id, orgId: a1.id }, {
    name: "bes-a1",
    deploymentModel: "on_premise",
    publicKey,
    hostname: "bes-a1.example",
    ipAddress: "10.0.0.10",
    port: 8443,
    version: "1.0.0",
  }, now);
  const storage = await createTarget(kv, systemActor("test"), {
    name: "target-a1",
    besId: engine.id,
    type: "local",
    config: { path: "/srv/backup" },
  }, { now, masterKey: testConfig().masterKey! });
  await applyHeartbeat(kv, engine.id, {
    version: "1.0.0",
    metrics: { cpuPercent: 1, memoryPercent: 1, diskPercent: 1, activeJobs: 0, uptimeSeconds: 1 },
  }, new Date(now.getTime() - 10 * 60_000));
  const policy = await createPolicy(kv, systemActor("test"), {
    name: "policy-a1",
    besId: engine.id,
    targetId: storage.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, now);
  // A host in A1 assigned to the policy, a hook, a script and a replica rule to a second target.
  const { host } = await enrollHost(kv, { accountId: a.account.id, orgId: a1.id }, {
    hostname: "host-a1.example",
    os: "Ubuntu 24.04",
    ipAddress: "10.0.0.30",
    publicKey: generateKeyPair().publicKey,
    version: "1.0.0",
  }, now);
  const { assignment } = await assignHost(
    kv,
    systemActor("test"),
    { policyId: policy.id, hostId: host.id },
    now,
  );
  const script = await createScript(kv, systemActor("test"), {
    name: "script-a1",
    interpreter: "bash",
    body: "echo ok",
    orgId: a1.id,
    accountId: a.account.id,
  }, now);
  const hook = await createHook(kv, systemActor("test"), {
    policyId: policy.id,
    type: "pre_backup",
    scriptId: script.id,
  }, now);
  const second = await createTarget(kv, systemActor("test"), {
    name: "target-a1-b",
    besId: engine.id,
    type: "local",
    config: { path: "/srv/b" },
  }, { now, masterKey: testConfig().masterKey! });
  const replica = await createReplica(
    kv,
    systemActor("test"),
    { policyId: policy.id, targetId: second.id },
    now,
  );
  await runSchedulerTick(kv, new Date("2026-11-22T02:00:00Z")); // the policy's Sunday full: one run
  const [run] = await listRunsByPolicy(kv, policy.id);
  // The run's agent posts a result with a restore point; a browse, a search and a file restore of it. The
  // host's baseline is seeded so that the anomaly guard flags this backup (an anomaly to review).
  const ordinary = {
    at: now.toISOString(),
    kind: "incremental" as const,
    files: 3,
    added: 0,
    modified: 1,
    deleted: 0,
    bytesNew: 1024,
    bytesNewIncompressible: 0,
    protectedBytes: 1024,
  };
  await kv.set(baselineKey(policy.id, host.id), {
    policyId: policy.id,
    hostId: host.id,
    samples: Array(5).fill(ordinary),
    lastCleanPointId: null,
    newestPointId: null,
    updatedAt: now.toISOString(),
  });
  const [job] = await claimJobs(kv, `agent:${host.id}`, 1, now);
  const { job: done } = await applyResult(kv, `agent:${host.id}`, job.id, {
    status: "success",
    startedAt: now.toISOString(),
    endedAt: now.toISOString(),
    bytesTransferred: 1024,
    protectedBytes: 1024,
    stats: { files: 300, added: 0, modified: 300, deleted: 0, bytesNew: 1024, bytesNewIncompressible: 1024 },
    output: {
      restorePoint: { id: "rp-a1", chainId: "chain-a1", type: "full", sizeBytes: 1024, fileCount: 3 },
      changesSince: "rp-a0",
    },
  }, now);
  await applyJobOutcome(kv, done, now);
  const anomalyId = (await kv.get<string>(anomalyByRunKey(run.id))).value!;
  assert.ok(anomalyId, "the fixture's backup is flagged");
  const restorePointId = (await kv.get<{ restorePointId: string }>(["runs", run.id])).value!.restorePointId;
  // Browse and search need the BES online; afterwards it goes silent and gets its offline alert.
  const metrics = { cpuPercent: 1, memoryPercent: 1, diskPercent: 1, activeJobs: 0, uptimeSeconds: 1 };
  await applyHeartbeat(kv, engine.id, { version: "1.0.0", metrics }, now);
  await requestBrowse(kv, systemActor("test"), restorePointId, "/", now);
  const search = await requestSearch(kv, systemActor("test"), restorePointId, "*.txt", now);
  const restore = await requestFileRestore(kv, systemActor("test"), {
    restorePointId,
    paths: ["/etc/hosts"],
    targetPath: "/restore",
  }, now);
  await sweepEngineHeartbeats(kv, new Date(now.getTime() + 10 * 60_000));
  const alertId = (await kv.get<string>(["alerts_open", "engine", engine.id, "engine_offline"])).value!;
  assert.ok(alertId, "the engine's offline alert is open");
  // A notification channel and rule in A1 (the channel's test sends to a closed loopback port).
  const { channel } = await createChannel(kv, systemActor("test"), {
    type: "webhook",
    name: "hook-a1",
    url: "http://127.0.0.1:9/hook",
    orgId: a1.id,
  }, { now, masterKey: testConfig().masterKey! });
  const rule = await createRule(kv, systemActor("test"), {
    accountId: a.account.id,
    name: "rule-a1",
    minSeverity: "warning",
    orgIds: [a1.id],
    events: ["opened", "resolved"],
    channelIds: [channel.id],
  }, now);
  // A Veeam platform in A1 whose endpoint is a closed loopback port (test and sync fail fast).
  const platform = await createPlatform(kv, systemActor("test"), {
    type: "veeam",
    name: "veeam-a1",
    orgId: a1.id,
    endpointUrl: "http://127.0.0.1:9",
    username: "svc-veeam",
    password: PLATFORM_PASSWORD,
  }, { now, masterKey: testConfig().masterKey! });
  // A restore drill of the policy run by the A1 host's agent, started once (one run).
  const drill = await createDrill(kv, systemActor("test"), {
    name: "drill-a1",
    schedule: "0 3 * * 6",
    scopeType: "policies",
    policyIds: [policy.id],
    agentHostId: host.id,
    scratchPath: "/var/tmp/drills",
    rtoObjectiveSeconds: 600,
  }, now);
  const [drillRun] = await runDrillNow(kv, systemActor("test"), drill.id, now);
  // A four-eyes request (deleting the A1 policy) by an A1 operator who is none of the principals, made
  // while four-eyes was on; then it is turned off again, so the other routes run their actions directly.
  const requester = await addUser(kv, a, "requester@a.example", "operator", [a1], now);
  const accountAdmin = userActor(principals.admin!);
  await setFourEyesSettings(kv, accountAdmin, { enabled: true, ttlHours: 24 }, now);
  const approval = (await requestIfFourEyes(kv, userActor(requester), {
    kind: "policy.delete",
    input: { policyId: policy.id },
  }, now))!;
  await setFourEyesSettings(kv, accountAdmin, { enabled: false, ttlHours: 24 }, now);
  // A legal hold on the A1 host.
  const hold = await placeHold(kv, accountAdmin, {
    scope: "host",
    subjectId: host.id,
    reason: "matrix",
    caseReference: "CASE-M",
  }, now);
  const entries = [];
  for await (const e of kv.list({ prefix: [] })) entries.push({ key: e.key, value: e.value });
  return {
    entries,
    engineId: engine.id,
    targetId: storage.id,
    alertId,
    policyId: policy.id,
    hostId: host.id,
    assignmentId: assignment.id,
    hookId: hook.id,
    scriptId: script.id,
    replicaId: replica.id,
    runId: run.id,
    restorePointId,
    searchId: search.id,
    restoreId: restore.id,
    channelId: channel.id,
    ruleId: rule.id,
    platformId: platform.id,
    drillId: drill.id,
    drillRunId: drillRun.id,
    requestId: approval.id,
    holdId: hold.id,
    anomalyId,
    principals,
    target,
    viewer,
    orgA1: a1.id,
    tokenId: token.id,
    secretOfA1: a.secrets[0],
  };
}

async function copyInto(kv: Deno.Kv, entries: Fixture["entries"]) {
  for (let i = 0; i < entries.length; i += 500) {
    const op = kv.atomic();
    for (const e of entries.slice(i, i + 500)) op.set(e.key, e.value);
    assert.ok((await op.commit()).ok);
  }
}

interface RouteInfo {
  method: string;
  path: string;
  access: AccessSpec;
}

/** Endpoints of the app with their access declarations; throws on an endpoint without one. */
function enumerateRoutes(app: ReturnType<typeof createApp>): RouteInfo[] {
  const groups = new Map<string, { method: string; path: string; handlers: unknown[] }>();
  for (const r of app.routes) {
    if (r.method === "ALL") {
      assert.ok(r.path.endsWith("*"), `ALL-method route ${r.path} must be middleware, not an endpoint`);
      continue;
    }
    const key = `${r.method} ${r.path}`;
    const group = groups.get(key) ?? { method: r.method, path: r.path, handlers: [] };
    group.handlers.push(r.handler);
    groups.set(key, group);
  }
  return [...groups.values()].map((g) => {
    const specs = g.handlers.map(accessOf).filter((s): s is AccessSpec => s !== undefined);
    assert.equal(
      specs.length,
      1,
      `${g.method} ${g.path} must declare exactly one access rule (found ${specs.length})`,
    );
    return { method: g.method, path: g.path, access: specs[0] };
  });
}

type Visibility = "ok" | "forbidden" | "hidden";

/** What the object behind each path parameter allows an actor to do. */
function objectVisibility(fx: Fixture, param: string, actor: Actor): Visibility {
  switch (param) {
    case "userId": {
      const scope = { accountId: fx.target.accountId, orgIds: fx.target.orgScope };
      return inScope(actor, scope) ? "ok" : "hidden";
    }
    case "orgId":
    case "engineId":
    case "targetId":
    case "alertId":
    case "policyId":
    case "hostId":
    case "assignmentId":
    case "hookId":
    case "scriptId":
    case "replicaId":
    case "runId":
    case "restorePointId":
    case "searchId":
    case "restoreId":
    case "jobId":
    case "channelId":
    case "ruleId":
    case "platformId":
    case "drillId":
    case "drillRunId":
    case "requestId":
    case "holdId":
    case "anomalyId":
      // The fixture's org, engine, storage target and alert all live in org A1.
      return inScope(actor, { accountId: fx.target.accountId, orgId: fx.orgA1 }) ? "ok" : "hidden";
    case "tokenId": {
      const owner = { accountId: fx.viewer.accountId, orgIds: fx.viewer.orgScope };
      if (!inScope(actor, owner)) return "hidden";
      return actor.id === fx.viewer.id || actor.permissions.has("admin") ? "ok" : "forbidden";
    }
    default:
      throw new Error(`The matrix does not know path parameter :${param}; teach objectVisibility about it`);
  }
}

function concretePath(fx: Fixture, path: string): string {
  return path
    .replace(":userId", fx.target.id)
    .replace(":orgId", fx.orgA1)
    .replace(":tokenId", fx.tokenId)
    .replace(":engineId", fx.engineId)
    .replace(":targetId", fx.targetId)
    .replace(":alertId", fx.alertId)
    .replace(":policyId", fx.policyId)
    .replace(":hostId", fx.hostId)
    .replace(":assignmentId", fx.assignmentId)
    .replace(":hookId", fx.hookId)
    .replace(":scriptId", fx.scriptId)
    .replace(":replicaId", fx.replicaId)
    .replace(":runId", fx.runId)
    .replace(":restorePointId", fx.restorePointId)
    .replace(":searchId", fx.searchId)
    .replace(":restoreId", fx.restoreId)
    .replace(":jobId", fx.policyId)
    .replace(":channelId", fx.channelId)
    .replace(":ruleId", fx.ruleId)
    .replace(":platformId", fx.platformId)
    .replace(":drillRunId", fx.drillRunId)
    .replace(":drillId", fx.drillId)
    .replace(":requestId", fx.requestId)
    .replace(":holdId", fx.holdId)
    .replace(":anomalyId", fx.anomalyId)
    .replace("/static/*", "/static/app.css");
}

/**
 * Valid bodies, so that the scope check (not validation) decides for routes on hidden objects; a
 * function builds one from the fixture's ids.
 */
const SAMPLE_BODIES: Record<string, unknown | ((fx: Fixture) => unknown)> = {
  "PATCH /api/v1/users/:userId": { name: "Renamed", role: "viewer", orgScope: "all" },
  "PATCH /api/v1/orgs/:orgId": { name: "Renamed org" },
  "PATCH /api/v1/engines/:engineId": { name: "Renamed engine", pxeEnabled: false, pxeNetwork: "" },
  "PUT /api/v1/policies/:policyId": {
    name: "Renamed policy",
    targetId: "none",
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  },
  "POST /api/v1/restore-points/:restorePointId/search": { query: "*.txt" },
  "POST /api/v1/policies/:policyId/run": { kind: "full" },
  "PUT /api/v1/replicas/:replicaId": { targetId: "none" },
  "PATCH /api/v1/policies/:policyId": { enabled: false },
  "PUT /api/v1/self-backup/settings": {
    config: { enabled: true, hour: 2, retentionDays: 14 },
    results: { enabled: true, hour: 3, retentionDays: 7 },
    directory: `${dataDir}/backups`,
    minFreeBytes: 0,
    s3: { enabled: false, endpoint: "", bucket: "", region: "us-east-1", prefix: "", accessKeyId: "" },
  },
  "POST /api/v1/self-backup/backups": { database: "config" },
  "POST /api/v1/hosts/:hostId/decommission": { confirmHostname: "host-a1.example" },
  "POST /api/v1/hosts/:hostId/reactivate": (fx: Fixture) => ({ policyId: fx.policyId }),
  "POST /api/v1/policies/:policyId/assignments": (fx: Fixture) => ({ hostIds: [fx.hostId] }),
  "PATCH /api/v1/assignments/:assignmentId": { state: "paused" },
  "PUT /api/v1/drills/:drillId": (fx: Fixture) => ({
    name: "Renamed drill",
    schedule: "0 4 * * 6",
    scopeType: "policies",
    policyIds: [fx.policyId],
    agentHostId: fx.hostId,
    scratchPath: "/var/tmp/drills",
    rtoObjectiveSeconds: 900,
  }),
  "POST /api/v1/policies/:policyId/hooks": { type: "pre_backup", template: "mysql" },
  "PUT /api/v1/hooks/:hookId": { type: "post_backup", template: "mysql" },
  "PUT /api/v1/scripts/:scriptId": { name: "Renamed script", interpreter: "bash", body: "echo renamed" },
  "POST /api/v1/restore-points/:restorePointId/expire": { confirm: true },
  "POST /api/v1/hosts/:hostId/file-history": { path: "/etc/hosts" },
  "POST /api/v1/hosts/:hostId/file-history/restore": (fx: Fixture) => ({
    path: "/etc/hosts",
    restorePointId: fx.restorePointId,
  }),
  "PUT /api/v1/account/four-eyes": { enabled: false, ttlHours: 24 },
  "POST /api/v1/approvals/:requestId/refuse": { note: "" },
  "POST /api/v1/anomalies/:anomalyId/approve": { confirm: true },
  "POST /api/v1/anomalies/:anomalyId/confirm-incident": { confirm: true },
  "POST /api/v1/anomalies/:anomalyId/release": { confirm: true },
  "PUT /api/v1/storage/:targetId": { name: "Renamed target", type: "local", config: { path: "/srv/x" } },
  "PUT /api/v1/platforms/:platformId": {
    name: "Renamed platform",
    endpointUrl: "http://127.0.0.1:9",
    username: "svc-veeam",
  },
  "PUT /api/v1/notification-channels/:channelId": { type: "webhook", name: "Renamed channel" },
  "PUT /api/v1/notification-rules/:ruleId": {
    name: "Renamed rule",
    minSeverity: "warning",
    orgIds: "all",
    events: ["opened"],
    channelIds: ["none"],
  },
};

/**
 * The product's access policy by path, written independently of the routes (first match wins). A
 * route whose declaration differs, or that no rule covers, fails: adding a route means deciding here.
 */
const POLICY: Array<[RegExp, string]> = [
  [/^(GET|POST) \/(login|logout|setup)$/, "public"],
  [/^GET \/(healthz|readyz|static\/\*|api\/openapi\.json|api\/docs)?$/, "public"],
  // Prometheus: a token (or an administrator) with the metrics scope, of the platform operator.
  [/^GET \/metrics$/, "metrics"],
  // Expiring an archived restore point is retention's business (backup.manage), not a restore.
  [/^POST \/backup\/restore\/points\/:\w+\/expire$/, "backup.manage"],
  [/^\w+ \/backup\/restore/, "backup.restore"],
  // A restore drill writes backed-up data onto a host, as a restore does: changing or running one is restoring.
  [/^(GET \/backup\/drills\/(new|:\w+\/(edit|delete))|POST \/backup\/drills(\/|$))/, "backup.restore"],
  [/^(POST|PUT|DELETE) \/api\/v1\/drills(\/|$)/, "backup.restore"],
  [
    /^GET \/backup\/(storage\/new|policies\/new|platforms\/new|\w+\/:\w+\/(delete|edit|remove))$/,
    "backup.manage",
  ],
  [/^GET \/backup\/notifications\/(channels|rules)\/(new|:\w+\/delete)$/, "backup.manage"],
  // Placing and releasing legal holds: the backup.hold permission (administrators).
  [/^POST \/backup\/holds/, "backup.hold"],
  [/^POST \/backup\//, "backup.manage"],
  [/^GET \/backup\//, "backup.view"],
  [/^GET \/health\//, "admin"],
  [/^\w+ \/admin\/(users|orgs|audit|backups|maintenance|recovery-key|four-eyes)/, "admin"],
  [/^GET \/api\/health\//, "admin"],
  [/^\w+ \/admin\/tokens/, "backup.view"],
  [/^GET \/api\/v1\/me$/, "signed_in"],
  [/^\w+ \/api\/v1\/(users|audit)/, "admin"],
  [/^GET \/api\/v1\/orgs/, "backup.view"],
  [/^\w+ \/api\/v1\/orgs/, "admin"],
  [/^\w+ \/api\/v1\/tokens/, "backup.view"],
  [/^POST \/api\/v1\/restore-points\/:\w+\/expire$/, "backup.manage"],
  // Four-eyes: everyone sees requests; deciding needs backup.manage here and the action's permission in
  // the domain; the setting is the account admin's. Legal holds: listed by all, placed with backup.hold.
  [/^GET \/api\/v1\/(approvals|legal-holds)(\/|$)/, "backup.view"],
  [/^POST \/api\/v1\/approvals\//, "backup.manage"],
  [/^POST \/api\/v1\/legal-holds/, "backup.hold"],
  [/^\w+ \/api\/v1\/account\/four-eyes$/, "admin"],
  [/^\w+ \/api\/v1\/self-backup\//, "admin"],
  [/^\w+ \/api\/v1\/(restore-points|searches|restores)(\/|$)/, "backup.restore"],
  // A file's version history on a host, and restoring a version of it, are restores.
  [/^\w+ \/api\/v1\/hosts\/:\w+\/file-history(\/restore)?$/, "backup.restore"],
  [
    /^GET \/api\/v1\/(engines|storage|storage-capacity|alerts|policies|replicas|hosts|assignments|hooks|hook-templates|exclusion-templates|scripts|runs|jobs|dashboard|protected-objects|platforms|anomalies|notification-(channels|rules|deliveries)|drills|drill-runs|proven-restores)(\/|$)/,
    "backup.view",
  ],
  [
    /^\w+ \/api\/v1\/(engines|storage|alerts|policies|replicas|hosts|assignments|hooks|scripts|runs|jobs|platforms|anomalies|notification-(channels|rules))(\/|$)/,
    "backup.manage",
  ],
  [/^POST \/api\/v1\/account\//, "admin"],
  [/^POST \/api\/(bes\/v1\/register|agent\/v1\/enroll)$/, "registration"],
  [/^POST \/api\/bes\/v1\//, "signed:bes"],
  [/^POST \/api\/agent\/v1\//, "signed:agent"],
];

/** Routes that change the account itself rather than an object of one org. */
const ACCOUNT_LEVEL_CHANGES =
  /^(POST \/(admin\/orgs\/account-secret|admin\/recovery-key|admin\/four-eyes|api\/v1\/account\/)|PUT \/api\/v1\/account\/four-eyes)/;
/** The control plane's own backups: only all-scope admins of the operator account (the oldest, A). */
const PLATFORM_ROUTES =
  /^\w+ \/(health\/|admin\/(backups|maintenance)|api\/health\/|api\/v1\/self-backup\/|metrics$)/;

function expectedAccess(route: RouteInfo): string {
  const rule = POLICY.find(([pattern]) => pattern.test(`${route.method} ${route.path}`));
  assert.ok(rule, `${route.method} ${route.path} is not covered by the access POLICY of this test`);
  return rule[1];
}

/** Valid query strings, for routes whose query is required (validation must not decide). */
const SAMPLE_QUERIES: Record<string, string> = {
  "GET /api/v1/policies/:policyId/retention-preview": "?daily=7&weekly=4&monthly=12",
  "GET /api/v1/hosts/:hostId/file-history": "?path=/etc/hosts",
  "GET /backup/restore/hosts/:hostId/history": "?path=/etc/hosts",
};

const fixture = await buildFixture();
const routesApp = createApp({
  kv: await Deno.openKv(":memory:"),
  config: testConfig(),
  logger: createLogger("error"),
});
const routes = enumerateRoutes(routesApp);

/**
 * The zod schema each JSON route declares for each answer (`GET /api/v1/policies/:policyId` → status →
 * schema), read from the OpenAPI registry: every successful answer below is parsed with it, so the
 * document never promises a field the API does not send.
 */
const declaredAnswers = new Map<string, Record<string, z.ZodType | undefined>>();
for (const d of routesApp.openAPIRegistry.definitions) {
  if (d.type !== "route") continue;
  const key = `${d.route.method.toUpperCase()} ${d.route.path.replace(/\{(\w+)\}/g, ":$1")}`;
  const byStatus: Record<string, z.ZodType | undefined> = {};
  for (const [status, response] of Object.entries(d.route.responses)) {
    const schema = (response as { content?: Record<string, { schema?: unknown }> }).content
      ?.["application/json"]
      ?.schema;
    byStatus[status] = schema instanceof z.ZodType ? schema : undefined;
  }
  declaredAnswers.set(key, byStatus);
}

Deno.test("every route declares exactly one access rule", () => {
  assert.ok(routes.length > 30, `expected the whole app's routes, got ${routes.length}`);
  const paths = routes.map((r) => `${r.method} ${r.path}`);
  for (
    const expected of [
      "GET /admin/users",
      "POST /admin/orgs/new",
      "GET /api/v1/users/:userId",
      "GET /healthz",
      "POST /api/v1/policies/:policyId/run",
      "POST /backup/policies/:policyId/run",
      "POST /api/v1/storage/:targetId/health-check",
      "POST /api/v1/storage/:targetId/verify",
      "POST /backup/storage/:targetId/health-check",
      "POST /backup/storage/:targetId/verify",
      "POST /api/v1/policies/:policyId/assignments",
      "PATCH /api/v1/assignments/:assignmentId",
      "POST /api/v1/hosts/:hostId/reactivate",
      "DELETE /api/v1/hooks/:hookId",
      "DELETE /api/v1/scripts/:scriptId",
      "GET /api/v1/policies/:policyId/three-two-one",
      "GET /backup/runs/:runId",
      "GET /api/v1/runs/:runId",
      "POST /api/bes/v1/jobs/:id/parts",
      "POST /api/agent/v1/jobs/:id/parts",
      "POST /api/bes/v1/targets",
      "GET /backup/anomalies/:anomalyId",
      "POST /backup/anomalies/:anomalyId/approve",
      "POST /api/v1/anomalies/:anomalyId/confirm-incident",
    ]
  ) {
    assert.ok(paths.includes(expected), `${expected} is enumerated`);
  }
});

for (const route of routes) {
  Deno.test(`permission matrix: ${route.method} ${route.path}`, async () => {
    const declared = route.access.kind === "permission"
      ? route.access.permission
      : route.access.kind === "signed"
      ? `signed:${route.access.principal}`
      : route.access.kind;
    assert.equal(declared, expectedAccess(route), `${route.method} ${route.path} declares the wrong access`);
    const isApi = /^\/api\/(v1|bes|agent|health)\//.test(route.path) || route.path === "/metrics";
    const params = [...route.path.matchAll(/:(\w+)/g)].map((m) => m[1]);
    for (const [name, user] of Object.entries(fixture.principals)) {
      using kv = await Deno.openKv(":memory:");
      await copyInto(kv, fixture.entries);
      const app = createApp({ kv, config: matrixConfig, clock: clock.now, logger: createLogger("error") });
      const headers = new Headers({ origin: "http://localhost:8000" });
      let actor: Actor | null = null;
      if (user) {
        const { cookie, session } = await createSession(kv, user, clock.now());
        headers.set("cookie", `cadres_session=${cookie}`);
        headers.set("x-csrf-token", session.csrfToken);
        actor = userActor(user);
      } else {
        // A real browser has the pre-session CSRF cookie, so auth (not CSRF) decides.
        headers.set("cookie", "cadres_csrf=anonymous-csrf-token");
        headers.set("x-csrf-token", "anonymous-csrf-token");
      }
      let body: BodyInit | undefined;
      if (route.method !== "GET") {
        if (isApi) {
          headers.set("content-type", "application/json");
          const sample = SAMPLE_BODIES[`${route.method} ${route.path}`] ?? {};
          body = JSON.stringify(typeof sample === "function" ? sample(fixture) : sample);
        } else {
          headers.set("content-type", "application/x-www-form-urlencoded");
          body = "";
        }
      }
      const query = SAMPLE_QUERIES[`${route.method} ${route.path}`] ?? "";
      const res = await app.request(concretePath(fixture, route.path) + query, {
        method: route.method,
        headers,
        body,
      });
      const text = await res.text();
      const where = `${route.method} ${route.path} as ${name}: got ${res.status}`;

      if (route.access.kind === "registration" || route.access.kind === "signed") {
        // The engine protocol ignores sessions: a browser user, signed in or not, is not an engine.
        assert.equal(res.status, 401, where);
        assert.equal(JSON.parse(text).error.code, "unauthorized", where);
        continue;
      }
      if (route.access.kind === "public") {
        assert.ok(res.status < 500 && res.status !== 401 && res.status !== 403, where);
        continue;
      }
      if (!actor) {
        if (isApi) assert.equal(res.status, 401, where);
        else {
          assert.equal(res.status, 302, where);
          assert.match(res.headers.get("location") ?? "", /^\/login/, where);
        }
        continue;
      }
      if (route.access.kind === "permission" && !actor.permissions.has(route.access.permission)) {
        assert.equal(res.status, 403, where);
        continue;
      }
      if (PLATFORM_ROUTES.test(`${route.method} ${route.path}`)) {
        const platformAdmin = actor.accountId === fixture.target.accountId && actor.orgScope === "all";
        if (!platformAdmin) {
          assert.equal(res.status, 403, where);
          continue;
        }
      }
      // Changing account-level things (the account secret) needs a scope over every org.
      if (ACCOUNT_LEVEL_CHANGES.test(`${route.method} ${route.path}`) && actor.orgScope !== "all") {
        assert.equal(res.status, 403, where);
        continue;
      }
      const visibility = params.map((p) => objectVisibility(fixture, p, actor!));
      if (visibility.includes("hidden")) {
        assert.equal(res.status, 404, where);
        assert.ok(!text.includes(fixture.target.email), `${where}: a hidden object's data leaked`);
        continue;
      }
      if (visibility.includes("forbidden")) {
        assert.equal(res.status, 403, where);
        continue;
      }
      assert.ok(![401, 403, 404].includes(res.status) && res.status < 500, `${where}: ${text.slice(0, 300)}`);
      const declared = declaredAnswers.get(`${route.method} ${route.path}`);
      if (declared && res.status < 300 && res.status !== 204) {
        const schema = declared[String(res.status)];
        assert.ok(schema, `${where}: the route does not declare a schema for ${res.status}`);
        const parsed = schema.safeParse(JSON.parse(text));
        assert.ok(
          parsed.success,
          `${where}: the answer does not match its declared schema: ${
            parsed.error?.issues.slice(0, 3).map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")
          }`,
        );
      }
      // Lists never show objects outside the actor's scope, and nothing ever shows a stored secret.
      if (!inScope(actor, { accountId: fixture.target.accountId, orgIds: fixture.target.orgScope })) {
        assert.ok(!text.includes(fixture.target.email), `${where}: out-of-scope user listed`);
      }
      assert.ok(!text.includes(fixture.secretOfA1), `${where}: an org secret was rendered`);
      assert.ok(!text.includes(PLATFORM_PASSWORD), `${where}: a platform password was rendered`);
      assert.ok(
        !text.includes("passwordHash") && !text.includes("secretHash"),
        `${where}: a hash was rendered`,
      );
    }
  });
}
