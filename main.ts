/**
 * Starts the server: config → KV → app → crons; on SIGTERM (or SIGINT) shuts down gracefully: stops
 * starting cron ticks, keeps answering for a drain window (CADRES_SHUTDOWN_DRAIN_SECONDS), stops accepting
 * connections, lets in-flight requests and a running cron tick finish (at most CADRES_SHUTDOWN_SECONDS),
 * then closes KV and exits 0 (docs/deploy.md).
 */
import { createApp } from "./app.ts";
import { parseConfig } from "./domain/config.ts";
import { createLogger } from "./domain/log.ts";
import { rederiveScheduleRpos } from "./domain/policies.ts";
import { indexPolicyNames } from "./domain/policy_names.ts";
import { indexOpenRuns } from "./domain/run_lifecycle.ts";
import { indexFirstBackups, indexRestorePointsByHost } from "./domain/restore_points.ts";
import { indexRestorePointsByTarget } from "./domain/repositories.ts";
import { rebuildReplicaCounts } from "./domain/replicas.ts";
import { issueSetupToken } from "./domain/setup.ts";
import { registerCrons, TickGate } from "./jobs/crons.ts";
import { rebuildOpsCounters } from "./domain/ops_counters.ts";
import { createMetrics } from "./routes/metrics.ts";
import { startupCheck } from "./jobs/resume_deletions.ts";
import { openStore } from "./domain/store.ts";
import { startDemoBackup } from "./tools/demo_backup.ts";
import { seedDemo } from "./tools/seed_demo.ts";
import { type DemoEngines, startDemoEngines } from "./tools/demo_engines.ts";
import { sweepHeartbeats } from "./jobs/sweep_heartbeats.ts";

const demo = Deno.args.includes("--demo");
const env = Deno.env.toObject();
if (demo && !env.CADRES_KV) env.CADRES_KV = ":memory:";
const parsed = parseConfig(env);
if (!parsed.ok) {
  console.error(parsed.error);
  Deno.exit(1);
}
const config = parsed.config;
const logger = createLogger(config.logLevel);

const store = await openStore(config).catch((error) => {
  console.error(error instanceof Error ? error.message : String(error));
  Deno.exit(1);
});
const { kv } = store;

// Data fix: RPOs derived from schedules before the longest gap was exact (once; a marker remembers it).
// A failure is logged and retried at the next start; it does not keep the server from starting.
await rederiveScheduleRpos(kv, new Date()).then(
  (fix) => fix.skipped || logger.log("info", "schedule-derived RPOs re-derived", fix),
  (error) => logger.log("error", "re-deriving schedule RPOs failed", { error: String(error) }),
);
// Data fix: policies from before the name index get their entry (once, marker).
await indexPolicyNames(kv, new Date()).then(
  (fix) => fix.skipped || logger.log("info", "policies indexed by name", fix),
  (error) => logger.log("error", "indexing policies by name failed", { error: String(error) }),
);
// Data fix: runs pending or running before the open-run index existed get their entry (once, marker).
await indexOpenRuns(kv, new Date()).then(
  (fix) => fix.skipped || logger.log("info", "open runs indexed", fix),
  (error) => logger.log("error", "indexing open runs failed", { error: String(error) }),
);
// Data fix: restore points from before the by-host index get their entry (once, marker).
await indexRestorePointsByHost(kv, new Date()).then(
  (fix) => fix.skipped || logger.log("info", "restore points indexed by host", fix),
  (error) => logger.log("error", "indexing restore points by host failed", { error: String(error) }),
);
// Data fix: the getting-started checklist's "first backup" marker of every org with a restore point (once, marker).
await indexFirstBackups(kv, new Date()).then(
  (fix) => fix.skipped || logger.log("info", "first backups indexed", fix),
  (error) => logger.log("error", "indexing first backups failed", { error: String(error) }),
);
// Data fix: restore points from before repository generations get their repository and the by-target
// index that keeps a target holding points from being deleted (once, marker).
await indexRestorePointsByTarget(kv, new Date()).then(
  (fix) => fix.skipped || logger.log("info", "restore points indexed by repository", fix),
  (error) => logger.log("error", "indexing restore points by repository failed", { error: String(error) }),
);
// Data fix: replication counts, last results and index rebuilt from the records (once, marker); records
// from before the counts (or with the legacy `success`) had left them wrong. Corrections are logged.
await rebuildReplicaCounts(kv, new Date()).then(
  (fix) => fix.skipped || logger.log("info", "replication counts rebuilt", fix),
  (error) => logger.log("error", "rebuilding replication counts failed", { error: String(error) }),
);

// Data fix: engines and hosts by status, queued jobs and deliveries counted for /metrics (once, marker).
await rebuildOpsCounters(kv, new Date()).then(
  (fix) => fix.skipped || logger.log("info", "operational counters rebuilt", fix),
  (error) => logger.log("error", "rebuilding operational counters failed", { error: String(error) }),
);

if (demo) {
  const logins = await seedDemo(kv, new Date());
  console.error("Demo data seeded. Sign in with any of these (password for all: " + logins.password + "):");
  for (const l of logins.users) console.error(`  ${l.role.padEnd(17)} ${l.email}`);
}
const setupToken = await issueSetupToken(kv, new Date());
if (setupToken) {
  // Printed to the operator's console only (not the JSON log stream): it is a one-time credential.
  console.error(
    `No administrator yet. Finish setup at ${config.baseUrl}/setup?token=${setupToken} (valid 24 h).`,
  );
}

const metrics = createMetrics();
const app = createApp({ kv, config, logger, masterKey: store.masterKey, metrics });
const gate = new TickGate();
registerCrons(kv, logger, {
  masterKey: store.masterKey,
  dataDir: config.dataDir,
  baseUrl: config.baseUrl,
  gate,
  onTick: metrics.observeTick,
});
if (demo) {
  // Simulated engines talk to the app in-process over the real, signed protocol.
  const fetcher = (url: string, init: RequestInit) =>
    app.fetch(new Request(url, init), { remoteAddr: { hostname: "127.0.0.1" } });
  await startDemoBackup(kv, fetcher, { masterKey: store.masterKey, now: new Date() });
  await sweepHeartbeats(kv, new Date());
}
const server = Deno.serve({
  port: config.port,
  onListen: ({ hostname, port }) => {
    logger.log("info", "listening", { hostname, port, baseUrl: config.baseUrl });
    // The consistency check runs once, in the background and time-boxed: the server already answers.
    // Engine deletions a crash interrupted are resumed first: a half-done cascade is no violation.
    startupCheck(kv, new Date(), { logger }).catch((error) =>
      logger.log("error", "invariant check", { trigger: "startup", status: "failed", error: String(error) })
    );
  },
}, (req, info) => app.fetch(req, info));

// The demo's real BES and two real agents (subprocesses, data under <data dir>/demo), once the server answers.
let demoEngines: DemoEngines | null = null;
if (demo) {
  startDemoEngines(kv, {
    baseUrl: `http://127.0.0.1:${server.addr.port}`,
    dataDir: config.dataDir,
    masterKey: store.masterKey,
  }).then(
    (started) => {
      demoEngines = started;
      if (stopping) void started.stop();
    },
    (error) => logger.log("error", "demo engines did not start", { error: String(error) }),
  );
}

let stopping = false;
/** Graceful shutdown: no new connections or ticks, in-flight work finishes (bounded), KV closed, exit 0. */
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  const deadline = Date.now() + config.shutdownSeconds * 1000;
  logger.log("info", "shutting down", {
    signal,
    graceSeconds: config.shutdownSeconds,
    drainSeconds: config.shutdownDrainSeconds,
  });
  // The demo's BES and agents first, while the server still answers their last requests.
  if (demoEngines) await (demoEngines as DemoEngines).stop(config.shutdownSeconds * 1000);
  // Ticks first: a tick that has not claimed its slot yet leaves the minute to another instance.
  const ticks = gate.stop(config.shutdownSeconds * 1000);
  // The drain window: still accepting and answering, so connections opened just before the signal (in the
  // listen backlog, or accepted with their request not read yet, which closing the listener would reset)
  // are answered; a busy server needs it most. Bounded by the whole grace period.
  const drainMs = Math.min(config.shutdownDrainSeconds * 1000, Math.max(0, deadline - Date.now()) / 2);
  if (drainMs > 0) await new Promise((r) => setTimeout(r, drainMs));
  const requests = server.shutdown();
  const left = (ms: number) => new Promise<"timeout">((r) => setTimeout(() => r("timeout"), ms));
  const served = await Promise.race([requests.then(() => "done" as const), left(deadline - Date.now())]);
  const unfinished = await ticks;
  logger.log(served === "done" && unfinished.length === 0 ? "info" : "warn", "shutdown", {
    requests: served === "done" ? "finished" : "cut at the deadline",
    ticksUnfinished: unfinished,
  });
  store.close(); // KV, and the one-process lock of a local KV file
  logger.log("info", "stopped", { kv: "closed" });
  Deno.exit(0);
}
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.addSignalListener(signal, () => void shutdown(signal));
}
