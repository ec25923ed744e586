/**
 * Prometheus metrics (docs/monitoring.md): `GET /metrics` in the text exposition format, for a bearer
 * token with the `metrics` scope of the platform operator (or disabled with CADRES_METRICS=off).
 *
 * Two kinds of series: this instance's own (HTTP requests by route pattern, job claims, cron ticks; a
 * registry per app, so two instances in one process never mix them) and the domain gauges, read from
 * KV counters at each scrape (domain/ops_metrics.ts) and the same on every instance.
 */
import { Hono } from "hono";
import client from "prom-client";
import { ForbiddenError, NotFoundError } from "../domain/errors.ts";
import { readOpsGauges } from "../domain/ops_metrics.ts";
import { isPlatformOperator } from "../domain/self_backup_runs.ts";
import { requires } from "./access.ts";
import type { AppEnv } from "./env.ts";

/** Seconds; request and claim latencies (a claim is one KV list and a group commit). */
const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Seconds; a cron tick takes from milliseconds to minutes (a scheduler storm). */
const TICK_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300];

/** What the app and its crons record into; one per app instance (createApp makes it). */
export interface AppMetrics {
  readonly registry: client.Registry;
  /** One answered request: `route` is the matched route pattern (never the raw path). */
  observeRequest(method: string, route: string, status: number, seconds: number): void;
  /** One claim request of an engine: its latency and the jobs it leased. */
  observeClaim(principal: "bes" | "agent", seconds: number, jobs: number): void;
  /** One cron tick this instance claimed and ran (`result` is the job's own summary). */
  observeTick(job: string, seconds: number, outcome: "ok" | "failed", result: unknown): void;
  /** Reads the domain gauges at `now` into the registry (before each scrape). */
  collectDomain(kv: Deno.Kv, now: Date, options: { dataDir: string }): Promise<void>;
}

/** Creates the registry with every series of docs/monitoring.md. */
export function createMetrics(): AppMetrics {
  const registry = new client.Registry();
  const r = [registry];
  const requests = new client.Counter({
    name: "cadres_http_requests_total",
    help: "HTTP requests answered, by method, route pattern and status code.",
    labelNames: ["method", "route", "status"] as const,
    registers: r,
  });
  const requestSeconds = new client.Histogram({
    name: "cadres_http_request_duration_seconds",
    help: "HTTP request latency in seconds, by method and route pattern.",
    labelNames: ["method", "route"] as const,
    buckets: LATENCY_BUCKETS,
    registers: r,
  });
  const claimSeconds = new client.Histogram({
    name: "cadres_job_claim_duration_seconds",
    help: "Latency of job claims (POST …/jobs/claim) in seconds, by principal kind.",
    labelNames: ["principal"] as const,
    buckets: LATENCY_BUCKETS,
    registers: r,
  });
  const claimed = new client.Counter({
    name: "cadres_jobs_claimed_total",
    help: "Jobs leased to engines by claims answered on this instance, by principal kind.",
    labelNames: ["principal"] as const,
    registers: r,
  });
  const tickSeconds = new client.Histogram({
    name: "cadres_cron_tick_duration_seconds",
    help: "Duration of the cron ticks this instance claimed and ran, by job.",
    labelNames: ["job"] as const,
    buckets: TICK_BUCKETS,
    registers: r,
  });
  const ticks = new client.Counter({
    name: "cadres_cron_ticks_total",
    help: "Cron ticks this instance claimed and ran, by job and outcome (ok, failed).",
    labelNames: ["job", "outcome"] as const,
    registers: r,
  });
  const dispatched = new client.Counter({
    name: "cadres_scheduler_jobs_dispatched_total",
    help: "Jobs the scheduler tick dispatched on this instance (policy schedules due).",
    registers: r,
  });
  const gauge = (name: string, help: string, labelNames: string[] = []) =>
    new client.Gauge({ name, help, labelNames, registers: r });
  const engines = gauge("cadres_engines", "Backup engines (BES) by status.", ["status"]);
  const hosts = gauge("cadres_hosts", "Managed hosts (agents) by status.", ["status"]);
  const protectedObjects = gauge("cadres_protected_objects", "Protected objects (active protection).");
  const atRisk = gauge("cadres_protected_objects_at_risk", "Protected objects whose last backup failed.");
  const breaches = gauge("cadres_rpo_breaches", "Protected objects in breach of their RPO.");
  const unprotected = gauge("cadres_unprotected_hosts", "Hosts with no active protection.");
  const runs24h = gauge("cadres_runs_last_24h", "Backup runs finished in the last 24 hours, by outcome.", [
    "outcome",
  ]);
  const queued = gauge("cadres_jobs_queued", "Jobs waiting in the queue, by kind and priority.", [
    "kind",
    "priority",
  ]);
  const oldest = gauge(
    "cadres_jobs_queued_oldest_age_seconds",
    "Age of the oldest queued job in seconds (to the minute it was created); 0 when the queue is empty.",
  );
  const deliveries = gauge(
    "cadres_notification_deliveries",
    "Notification deliveries in the log by status (pending: still to send or retry; kept 30 days).",
    ["status"],
  );
  const lastBackup = gauge(
    "cadres_self_backup_last_success_timestamp_seconds",
    "Unix time of the last successful self-backup, by database; 0 when there has been none.",
    ["database"],
  );
  const backupEnabled = gauge(
    "cadres_self_backup_enabled",
    "1 when the scheduled self-backup of the database is on (Admin > Backups), else 0.",
    ["database"],
  );
  const accounts = gauge("cadres_accounts", "Accounts (tenants).");
  const scrapeSeconds = gauge(
    "cadres_metrics_domain_read_seconds",
    "Time the last scrape took to read the domain gauges from KV.",
  );
  return {
    registry,
    observeRequest(method, route, status, seconds) {
      requests.inc({ method, route, status: String(status) });
      requestSeconds.observe({ method, route }, seconds);
    },
    observeClaim(principal, seconds, jobs) {
      claimSeconds.observe({ principal }, seconds);
      claimed.inc({ principal }, jobs);
    },
    observeTick(job, seconds, outcome, result) {
      tickSeconds.observe({ job }, seconds);
      ticks.inc({ job, outcome });
      const n = (result as { dispatched?: unknown } | null)?.dispatched;
      if (job === "dispatch_schedules" && typeof n === "number") dispatched.inc(n);
    },
    async collectDomain(kv, now, options) {
      const started = performance.now();
      const g = await readOpsGauges(kv, now, options);
      for (const [status, n] of Object.entries(g.engines)) engines.set({ status }, n);
      for (const [status, n] of Object.entries(g.hosts)) hosts.set({ status }, n);
      protectedObjects.set(g.protectedObjects);
      atRisk.set(g.atRisk);
      breaches.set(g.rpoBreaches);
      unprotected.set(g.unprotectedHosts);
      for (const [outcome, n] of Object.entries(g.runsLast24h)) runs24h.set({ outcome }, n);
      for (const q of g.queued) queued.set({ kind: q.kind, priority: q.priority }, q.count);
      oldest.set(g.oldestQueuedAgeSeconds);
      for (const [status, n] of Object.entries(g.deliveries)) deliveries.set({ status }, n);
      for (const [database, at] of Object.entries(g.lastSelfBackup)) lastBackup.set({ database }, at ?? 0);
      for (const [database, on] of Object.entries(g.selfBackupEnabled)) {
        backupEnabled.set({ database }, on ? 1 : 0);
      }
      accounts.set(g.accounts);
      scrapeSeconds.set((performance.now() - started) / 1000);
    },
  };
}

export const metricsRoutes = new Hono<AppEnv>();

metricsRoutes.get("/metrics", requires("metrics"), async (c) => {
  const { kv, clock, config, metrics } = c.get("deps");
  if (!config.metricsEnabled) throw new NotFoundError("Metrics are disabled (CADRES_METRICS=off)");
  // Instance-wide figures span every account: only the platform operator may read them.
  if (!(await isPlatformOperator(kv, c.get("actor")!))) {
    throw new ForbiddenError(
      "Metrics cover every account: only a token of the operator account (all organizations) may scrape them",
    );
  }
  await metrics.collectDomain(kv, clock(), { dataDir: config.dataDir });
  c.header("Cache-Control", "no-store");
  return c.body(await metrics.registry.metrics(), 200, { "Content-Type": metrics.registry.contentType });
});
