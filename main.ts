/** Starts the server: config → KV → app → crons. */
import { createApp } from "./app.ts";
import { parseConfig } from "./domain/config.ts";
import { createLogger } from "./domain/log.ts";
import { rederiveScheduleRpos } from "./domain/policies.ts";
import { indexPolicyNames } from "./domain/policy_names.ts";
import { indexOpenRuns, indexRestorePointsByHost } from "./domain/runs.ts";
import { indexRestorePointsByTarget } from "./domain/repositories.ts";
import { rebuildReplicaCounts } from "./domain/replicas.ts";
import { issueSetupToken } from "./domain/setup.ts";
import { registerCrons } from "./jobs/crons.ts";
import { startupCheck } from "./jobs/resume_deletions.ts";
import { openStore } from "./domain/store.ts";
import { startDemoBackup } from "./tools/demo_backup.ts";
import { seedDemo } from "./tools/seed_demo.ts";
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

const app = createApp({ kv, config, logger, masterKey: store.masterKey });
registerCrons(kv, logger, { masterKey: store.masterKey, dataDir: config.dataDir, baseUrl: config.baseUrl });
if (demo) {
  // Simulated engines talk to the app in-process over the real, signed protocol.
  const fetcher = (url: string, init: RequestInit) =>
    app.fetch(new Request(url, init), { remoteAddr: { hostname: "127.0.0.1" } });
  await startDemoBackup(kv, fetcher, { masterKey: store.masterKey, now: new Date() });
  await sweepHeartbeats(kv, new Date());
}
Deno.serve({
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
