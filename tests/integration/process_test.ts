/**
 * main.ts as a real process: OpenTelemetry export (OTEL_DENO=true to an in-process OTLP/HTTP receiver,
 * http/json) and graceful shutdown under load. One run serves three tests: the server is started on a
 * seeded KV file, loaded with requests, and sent SIGTERM while the scheduler's cron tick is writing
 * 1,000 runs; afterwards the spans it exported and the KV it left are checked.
 *
 * The tick fires at the next minute boundary, so the run takes up to a minute.
 */
import assert from "node:assert/strict";
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { assignHost } from "../../domain/assignments.ts";
import { testConfig } from "../../domain/config.ts";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import type { Run } from "../../domain/runs.ts";
import { createTarget } from "../../domain/storage.ts";
import { EngineClient } from "../../tools/engine_client.ts";
import {
  addUser,
  childEnv,
  createTenant,
  enrollTestHost,
  freePort,
  onlineTestEngine,
  REPO_ROOT,
} from "../helpers.ts";

const POLICIES = 25;
const HOSTS = 40;

interface Span {
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
  status?: { code?: number };
}

interface ProcessRun {
  spans: Span[];
  code: number;
  stdout: string[];
  answers: number[];
  /** Requests accepted before SIGTERM that got no answer (a network error other than a refused connection). */
  lostBeforeSignal: number;
  /** Requests refused once the listener closed (or sent after SIGTERM): expected. */
  refusedAfterSignal: number;
  /** Requests sent after SIGTERM that were answered (the drain window). */
  answeredAfterSignal: number;
  runs: Run[];
  tickStartedAt: string;
  setupToken: string;
}

/** Flattens OTLP/JSON attributes into a plain record. */
function attributesOf(
  list: Array<{ key: string; value: Record<string, unknown> }> = [],
): Record<string, unknown> {
  return Object.fromEntries(list.map(({ key, value }) => [key, Object.values(value)[0]]));
}

async function seed(kvPath: string, masterKey: Uint8Array) {
  const kv = await Deno.openKv(kvPath);
  try {
    const now = new Date();
    const tenant = await createTenant(kv, "Acme", ["Ops"], now);
    const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", now);
    const { secret } = await createApiToken(kv, userActor(admin), {
      name: "ops",
      permissions: ["backup.view", "metrics"],
      expiresInDays: 0,
    }, now);
    const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
    const { engine } = await onlineTestEngine(kv, scope, now, "bes-main");
    const target = await createTarget(kv, systemActor("seed"), {
      name: "disk",
      besId: engine.id,
      type: "local",
      config: { path: "/srv/backup" },
    }, { now, masterKey });
    const hosts = [];
    for (let i = 0; i < HOSTS; i++) hosts.push(await enrollTestHost(kv, scope, `h${i}`, now));
    for (let p = 0; p < POLICIES; p++) {
      // Due every minute: the first tick dispatches POLICIES × HOSTS runs.
      const policy = await createPolicy(kv, systemActor("seed"), {
        name: `every-minute-${p}`,
        besId: engine.id,
        targetId: target.id,
        backupType: "file",
        fullSchedule: "* * * * *",
      }, now);
      for (const host of hosts) {
        await assignHost(kv, systemActor("seed"), { policyId: policy.id, hostId: host.id }, now);
      }
    }
    return { token: secret, orgSecret: tenant.secrets[0] };
  } finally {
    kv.close();
  }
}

let memo: Promise<ProcessRun> | null = null;
function processRun(): Promise<ProcessRun> {
  return memo ??= runProcess();
}

async function runProcess(): Promise<ProcessRun> {
  const dataDir = await Deno.makeTempDir({ prefix: "cadres-process-" });
  const kvPath = `${dataDir}/cadres.kv`;
  const masterKey = testConfig().masterKey!;
  const { token, orgSecret } = await seed(kvPath, masterKey);

  // The OTLP/HTTP receiver (JSON).
  const spans: Span[] = [];
  const receiver = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const body = await req.json().catch(() => null);
    if (new URL(req.url).pathname === "/v1/traces" && body) {
      for (const rs of body.resourceSpans ?? []) {
        for (const ss of rs.scopeSpans ?? []) {
          for (const s of ss.spans ?? []) {
            spans.push({
              name: s.name,
              kind: s.kind,
              attributes: attributesOf(s.attributes),
              status: s.status,
            });
          }
        }
      }
    }
    return Response.json({});
  });
  const port = freePort();
  const base = `http://127.0.0.1:${port}`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "--allow-sys", "main.ts"],
    cwd: REPO_ROOT,
    clearEnv: true,
    env: childEnv({
      PORT: String(port),
      CADRES_DATA_DIR: dataDir,
      CADRES_MASTER_KEY: btoa(String.fromCharCode(...masterKey)),
      CADRES_LOG_LEVEL: "debug",
      CADRES_SHUTDOWN_SECONDS: "30",
      OTEL_DENO: "true",
      OTEL_SERVICE_NAME: "cadres-test",
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.addr.port}`,
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/json",
    }),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();

  // Read stdout line by line; resolve waiters on matching lines.
  const stdout: string[] = [];
  const waiters: Array<{ test: (l: string) => boolean; resolve: (l: string) => void }> = [];
  const pump = (async () => {
    const decoder = new TextDecoderStream();
    let rest = "";
    for await (const chunk of child.stdout.pipeThrough(decoder)) {
      rest += chunk;
      const lines = rest.split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        stdout.push(line);
        for (const w of [...waiters]) {
          if (w.test(line)) {
            waiters.splice(waiters.indexOf(w), 1);
            w.resolve(line);
          }
        }
      }
    }
  })();
  const stderr = new Response(child.stderr).text();
  const waitFor = (test: (l: string) => boolean, ms: number, what: string) => {
    const seen = stdout.find(test);
    if (seen) return Promise.resolve(seen);
    return new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
      waiters.push({ test, resolve: (l) => (clearTimeout(timer), resolve(l)) });
    });
  };
  const logged =
    (msg: string, extra: (e: Record<string, unknown>) => boolean = () => true) => (l: string) => {
      try {
        const e = JSON.parse(l);
        return e.msg === msg && extra(e);
      } catch {
        return false;
      }
    };

  try {
    await waitFor(logged("listening"), 30_000, "the server to listen");
    const setupToken = "not-a-real-one-" + crypto.randomUUID();

    // A few requests whose spans the trace test reads: a token on the API, a page with a token in its
    // query, a BES registering and heartbeating (signed).
    assert.equal(
      (await fetch(`${base}/api/v1/engines`, { headers: { authorization: `Bearer ${token}` } })).status,
      200,
    );
    await (await fetch(`${base}/setup?token=${setupToken}`, { redirect: "manual" })).body?.cancel();
    const client = new EngineClient(base);
    const { identity, response } = await client.registerBes(orgSecret, {
      name: "bes-otel",
      hostname: "bes-otel.example",
      ipAddress: "10.0.0.9",
    });
    assert.equal(response.status, 201);
    const beat = await client.heartbeat(identity, {
      cpuPercent: 1,
      memoryPercent: 1,
      diskPercent: 1,
      activeJobs: 0,
      uptimeSeconds: 1,
    });
    assert.equal(beat.status, 200);
    await beat.body?.cancel();

    // Load: 8 workers, each request on a fresh connection, until the process is gone.
    const answers: number[] = [];
    let signalled = false;
    let lostBeforeSignal = 0;
    let refusedAfterSignal = 0;
    let answeredAfterSignal = 0;
    let exited = false;
    const paths = ["/readyz", "/healthz", "/api/v1/engines", "/metrics"];
    const worker = async (w: number) => {
      for (let i = 0; !exited && i < 100_000; i++) {
        const sentBefore = !signalled;
        try {
          const res = await fetch(`${base}${paths[(w + i) % paths.length]}`, {
            headers: { authorization: `Bearer ${token}`, connection: "close" },
          });
          await res.arrayBuffer();
          answers.push(res.status);
          if (!sentBefore) answeredAfterSignal++;
        } catch (error) {
          // A connection the closed listener refused was never accepted: not a request in flight.
          const refused = /Connection refused/i.test(String(error));
          if (sentBefore && !refused) lostBeforeSignal++;
          else refusedAfterSignal++;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    };
    const load = Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));

    // SIGTERM as soon as the scheduler's tick has claimed its minute and started writing.
    const started = await waitFor(
      logged("job started", (e) => e.job === "dispatch_schedules"),
      90_000,
      "the scheduler's tick",
    );
    child.kill("SIGTERM");
    signalled = true;
    const status = await child.status;
    exited = true;
    await load;
    await pump;
    const err = await stderr;
    assert.ok(status.code === 0, `exit code ${status.code}; stderr: ${err.slice(-2000)}`);
    // Give the receiver a moment for the last export.
    await new Promise((r) => setTimeout(r, 300));

    const kv = await Deno.openKv(kvPath);
    const runs: Run[] = [];
    for await (const e of kv.list<Run>({ prefix: ["runs"] })) runs.push(e.value);
    kv.close();
    return {
      spans,
      code: status.code,
      stdout,
      answers,
      lostBeforeSignal,
      refusedAfterSignal,
      answeredAfterSignal,
      runs,
      tickStartedAt: JSON.parse(started).slot,
      setupToken,
    };
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
    await receiver.shutdown();
    await Deno.remove(dataDir, { recursive: true }).catch(() => {});
  }
}

Deno.test("main.ts with OTEL_DENO=true exports request spans named by route pattern with the principal kind", async () => {
  const { spans, setupToken } = await processRun();
  const server = spans.filter((s) => s.kind === 2); // SPAN_KIND_SERVER
  const byRoute = (route: string) => server.filter((s) => s.attributes["http.route"] === route);

  const api = byRoute("/api/v1/engines");
  assert.ok(api.length > 0, `no span for /api/v1/engines among ${server.length} server spans`);
  assert.equal(api[0].name, "GET /api/v1/engines");
  assert.equal(api[0].attributes["cadres.principal.kind"], "token");
  assert.match(String(api[0].attributes["cadres.request_id"]), /^[\w.-]+$/);

  const heartbeat = byRoute("/api/bes/v1/heartbeat");
  assert.equal(heartbeat.length, 1);
  assert.equal(heartbeat[0].attributes["cadres.principal.kind"], "bes");
  assert.equal(byRoute("/api/bes/v1/register")[0]?.attributes["cadres.principal.kind"], "anonymous");

  const setup = byRoute("/setup");
  assert.equal(setup.length, 1);
  assert.equal(setup[0].attributes["url.query"], "", "the query string (a one-time token) is dropped");
  assert.ok(!JSON.stringify(spans).includes(setupToken), "the setup token appears in no span");
});

Deno.test("main.ts with OTEL_DENO=true exports a span per cron tick, claimed or not", async () => {
  const { spans, tickStartedAt } = await processRun();
  const ticks = spans.filter((s) => s.name.startsWith("cron "));
  const dispatch = ticks.find((s) => s.name === "cron dispatch_schedules");
  assert.ok(dispatch, `no cron span among ${spans.map((s) => s.name).join(", ")}`);
  assert.equal(dispatch.attributes["cadres.cron.job"], "dispatch_schedules");
  assert.equal(dispatch.attributes["cadres.cron.slot"], tickStartedAt);
  assert.equal(dispatch.attributes["cadres.cron.claimed"], true);
  assert.ok(ticks.some((s) => s.name === "cron sweep_heartbeats"), "every registered cron has its span");
});

Deno.test("SIGTERM under load: no 5xx, requests in flight answered, the running tick finishes, KV closed", async () => {
  const run = await processRun();
  assert.equal(run.code, 0);
  assert.ok(run.answers.length > 50, `only ${run.answers.length} answers under load`);
  const errors = run.answers.filter((s) => s >= 500);
  assert.deepEqual(errors, [], "no request answered 5xx");
  assert.equal(run.lostBeforeSignal, 0, "every request sent before SIGTERM was answered");
  assert.ok(run.answeredAfterSignal > 0, "the drain window still answers after SIGTERM");

  // The tick in progress at SIGTERM wrote all its runs: one per policy and host, all in its minute.
  const slotRuns = run.runs.filter((r) => r.scheduledFor.slice(0, 16) === run.tickStartedAt);
  assert.equal(slotRuns.length, POLICIES * HOSTS, "no half-written tick");
  assert.equal(run.runs.length, POLICIES * HOSTS, "and no other tick started after SIGTERM");

  const events = run.stdout.flatMap((l) => {
    try {
      return [JSON.parse(l) as Record<string, unknown>];
    } catch {
      return [];
    }
  });
  const index = (test: (e: Record<string, unknown>) => boolean) => events.findIndex(test);
  const tickDone = index((e) => e.msg === "job" && e.job === "dispatch_schedules" && e.status === "ok");
  const shutdown = index((e) => e.msg === "shutdown");
  const stopped = index((e) => e.msg === "stopped");
  assert.ok(tickDone >= 0 && tickDone < stopped, "the tick finished before KV was closed");
  assert.deepEqual(events[shutdown].ticksUnfinished, []);
  assert.equal(events[shutdown].requests, "finished");
  assert.equal(events[stopped].kv, "closed");
});
