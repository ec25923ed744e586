/** Builds the Hono app: middleware, then every area's routes in one readable table. */
import { OpenAPIHono } from "@hono/zod-openapi";
import { bodyLimit } from "hono/body-limit";
import { serveStatic } from "hono/deno";
import type { MiddlewareHandler } from "hono";
import type { Config } from "./domain/config.ts";
import { HttpError, NotFoundError } from "./domain/errors.ts";
import { consoleRequest } from "./domain/foreground.ts";
import { createLogger, type Logger } from "./domain/log.ts";
import { isEngineProtocol, publicAccess } from "./routes/access.ts";
import { adminAuditRoutes } from "./routes/admin_audit.tsx";
import { adminOrgRoutes } from "./routes/admin_orgs.tsx";
import { adminRecoveryKeyRoutes } from "./routes/admin_recovery_key.tsx";
import { adminTokenRoutes } from "./routes/admin_tokens.tsx";
import { adminUserRoutes } from "./routes/admin_users.tsx";
import { alertRoutes } from "./routes/alerts.tsx";
import { approvalRoutes, fourEyesAdminRoutes } from "./routes/approvals.tsx";
import { holdRoutes } from "./routes/holds.tsx";
import { notificationRoutes } from "./routes/notifications.tsx";
import { apiV1Me } from "./routes/api_v1_me.ts";
import { apiV1Users } from "./routes/api_v1_users.ts";
import { apiV1Orgs } from "./routes/api_v1_orgs.ts";
import { apiV1Tokens } from "./routes/api_v1_tokens.ts";
import { apiV1Audit } from "./routes/api_v1_audit.ts";
import { apiV1Approvals, apiV1FourEyes } from "./routes/api_v1_approvals.ts";
import { apiV1Engines } from "./routes/api_v1_engines.ts";
import { apiV1Storage, apiV1StorageCapacity } from "./routes/api_v1_storage.ts";
import { apiV1Alerts } from "./routes/api_v1_alerts.ts";
import { apiV1RegistrationSecret } from "./routes/api_v1_registration_secret.ts";
import { apiV1LegalHolds } from "./routes/api_v1_holds.ts";
import { apiV1Policies } from "./routes/api_v1_policies.ts";
import { apiV1Runs } from "./routes/api_v1_runs.ts";
import { apiV1Anomalies } from "./routes/api_v1_anomalies.ts";
import { apiV1Dashboard, apiV1DashboardPanels } from "./routes/api_v1_dashboard.ts";
import { apiV1ProtectedObjects } from "./routes/api_v1_protected_objects.ts";
import { apiV1Jobs } from "./routes/api_v1_jobs.ts";
import { apiV1NotificationChannels } from "./routes/api_v1_notification_channels.ts";
import { apiV1NotificationRules } from "./routes/api_v1_notification_rules.ts";
import { apiV1NotificationDeliveries } from "./routes/api_v1_notification_deliveries.ts";
import { apiV1Platforms } from "./routes/api_v1_platforms.ts";
import { apiV1RestorePoints, apiV1Searches } from "./routes/api_v1_restore_points.ts";
import { apiV1Restores } from "./routes/api_v1_restores.ts";
import { apiV1FileHistory } from "./routes/api_v1_file_history.ts";
import { apiV1Replicas, apiV1ThreeTwoOne } from "./routes/api_v1_replicas.ts";
import { apiV1Hosts } from "./routes/api_v1_hosts.ts";
import {
  apiV1Assignments,
  apiV1HostAssignments,
  apiV1PolicyAssignments,
} from "./routes/api_v1_assignments.ts";
import {
  apiV1ExclusionTemplates,
  apiV1Hooks,
  apiV1HookTemplates,
  apiV1PolicyHooks,
} from "./routes/api_v1_hooks.ts";
import { apiV1Scripts } from "./routes/api_v1_scripts.ts";
import { apiV1DrillRuns, apiV1Drills, apiV1ProvenRestores } from "./routes/api_v1_drills.ts";
import { apiV1SelfBackup } from "./routes/api_v1_self_backup.ts";
import { anomalyRoutes } from "./routes/anomalies.tsx";
import { drillRoutes } from "./routes/drills.tsx";
import { engineRoutes } from "./routes/engines.tsx";
import { storageRoutes } from "./routes/storage.tsx";
import { agentEnrollment, besRegistration } from "./routes/engine_registration.ts";
import { agentHeartbeat, besHeartbeat } from "./routes/engine_heartbeats.ts";
import { agentPrePatch } from "./routes/engine_pre_patch.ts";
import { agentJobs, besJobs } from "./routes/engine_jobs.ts";
import { besBmr } from "./routes/engine_bmr.ts";
import { engineTargets } from "./routes/engine_targets.ts";
import { heartbeatDirect } from "./routes/heartbeat_direct.ts";
import { authRoutes } from "./routes/auth.tsx";
import { docsRoutes } from "./routes/docs.tsx";
import type { AppEnv, Deps } from "./routes/env.ts";
import { handleError, notFound } from "./routes/errors.tsx";
import { healthRoutes } from "./routes/health.ts";
import { type AppMetrics, createMetrics, metricsRoutes } from "./routes/metrics.ts";
import { healthPages } from "./routes/health_pages.tsx";
import {
  adminBackupRoutes,
  adminMaintenanceRoutes,
  backupHealthPages,
  selfBackupApi,
} from "./routes/self_backup.tsx";
import { authenticate, csrf, requestContext, securityHeaders } from "./routes/middleware.ts";
import { dashboardRoutes } from "./routes/dashboard.tsx";
import { gettingStartedRoutes } from "./routes/getting_started.tsx";
import { runListRoutes } from "./routes/runs_list.tsx";
import { protectedRoutes } from "./routes/protected.tsx";
import { policyRoutes } from "./routes/policies.tsx";
import { policySectionRoutes } from "./routes/policy_sections.tsx";
import { hostRoutes } from "./routes/hosts.tsx";
import { jobRoutes } from "./routes/jobs.tsx";
import { runRoutes } from "./routes/runs.tsx";
import { platformRoutes } from "./routes/platforms.tsx";
import { replicaRoutes } from "./routes/replicas.tsx";
import { scriptRoutes } from "./routes/scripts.tsx";
import { assignmentRoutes } from "./routes/assignments.tsx";
import { hookRoutes } from "./routes/hooks.tsx";
import { restoreRoutes } from "./routes/restore.tsx";
import { fileHistoryRoutes } from "./routes/file_history.tsx";

/** Largest request body accepted anywhere (forms and JSON)… */
export const MAX_BODY_BYTES = 64 * 1024;
/** …except a file restore's selection (up to 10,000 paths): the restore API and the Restore forms. */
export const MAX_RESTORE_BODY_BYTES = 4 * 1024 * 1024;

function bodyLimitFor(maxSize: number): MiddlewareHandler<AppEnv> {
  const tooLarge = () => {
    throw new HttpError(413, "payload_too_large", `The request body is larger than ${maxSize} bytes`);
  };
  const streamed = bodyLimit({ maxSize, onError: tooLarge });
  // A declared length is checked as hono's bodyLimit checks it, without first opening the body as a stream
  // (a cost per request on the engine protocol's hot path); a chunked body goes through hono's, which counts.
  return (c, next) => {
    const headers = c.req.raw.headers;
    const length = headers.get("content-length");
    if (length === null || headers.has("transfer-encoding")) return streamed(c, next);
    return parseInt(length || "0", 10) > maxSize ? tooLarge() : next();
  };
}

/** Requests that may carry a long path selection. */
function isRestoreSelection(method: string, path: string): boolean {
  return method === "POST" && (path === "/api/v1/restores" || path.startsWith("/backup/restore/"));
}

export interface AppOptions {
  kv: Deno.Kv;
  config: Config;
  /** Defaults to `config.masterKey` (tests); main.ts passes the loaded key. */
  masterKey?: Uint8Array;
  clock?: () => Date;
  logger?: Logger;
  /** This instance's metrics registry; main.ts passes the one its crons record into. */
  metrics?: AppMetrics;
}

/** Builds the app. Tests call this with an in-memory KV and use `app.request()`. */
/** The longest path segment a route accepts (ids are 26 characters). */
const MAX_PATH_SEGMENT = 200;

export function createApp(options: AppOptions) {
  const deps: Deps = {
    kv: options.kv,
    config: options.config,
    masterKey: requireMasterKey(options),
    clock: options.clock ?? (() => new Date()),
    logger: options.logger ?? createLogger(options.config.logLevel),
    metrics: options.metrics ?? createMetrics(),
  };
  const app = new OpenAPIHono<AppEnv>();

  app.use("*", requestContext(deps));
  // Console requests in flight make a scheduler storm give way to them (domain/foreground.ts): pages,
  // fragments and the API, not the engine protocol (a fleet's steady traffic), static files, probes or scrapes.
  app.use("*", async (c, next) => {
    const path = c.req.path;
    if (
      isEngineProtocol(path) || path.startsWith("/static/") ||
      ["/healthz", "/readyz", "/metrics"].includes(path)
    ) {
      return await next();
    }
    const done = consoleRequest(deps.kv);
    try {
      await next();
    } finally {
      done();
    }
  });
  // No id or name of ours is near 200 characters: a longer path segment names nothing (and would overflow
  // a KV key further in), so it is "not found" before any route reads KV.
  app.use("*", async (c, next) => {
    const path = c.req.path;
    // A path no longer than the limit has no segment over it (the common case: no split per request).
    if (
      path.length > MAX_PATH_SEGMENT && path.split("/").some((segment) => segment.length > MAX_PATH_SEGMENT)
    ) {
      throw new NotFoundError("Not found");
    }
    await next();
  });
  // Browser security headers (CSP, frame options…) on everything but the engine protocol, which serves
  // signed JSON to programs, never to a browser.
  const browserHeaders = securityHeaders(deps);
  app.use("*", (c, next) => isEngineProtocol(c.req.path) ? next() : browserHeaders(c, next));
  const defaultLimit = bodyLimitFor(MAX_BODY_BYTES);
  const restoreLimit = bodyLimitFor(MAX_RESTORE_BODY_BYTES);
  app.use(
    "*",
    (c, next) => (isRestoreSelection(c.req.method, c.req.path) ? restoreLimit : defaultLimit)(c, next),
  );
  app.use("/static/*", async (c, next) => {
    c.header("Cache-Control", "public, max-age=300");
    await next();
  });
  app.use("*", authenticate());
  app.use("*", csrf());

  app.get("/static/*", publicAccess(), serveStatic({ root: "./" }));
  app.get("/", publicAccess(), (c) => c.redirect(c.get("actor") ? "/backup/dashboard" : "/login", 302));

  // area           routes
  app.route("/", healthRoutes);
  app.route("/", metricsRoutes);
  app.route("/", authRoutes);
  app.route("/backup/dashboard", dashboardRoutes);
  app.route("/backup/getting-started", gettingStartedRoutes);
  app.route("/backup/protected", protectedRoutes);
  app.route("/backup/engines", engineRoutes);
  app.route("/backup/storage", storageRoutes);
  app.route("/backup/alerts", alertRoutes);
  app.route("/backup/notifications", notificationRoutes);
  app.route("/backup/policies", policyRoutes);
  app.route("/backup/policies", policySectionRoutes);
  app.route("/backup/assignments", assignmentRoutes);
  app.route("/backup/hooks", hookRoutes);
  app.route("/backup/hosts", hostRoutes);
  app.route("/backup/jobs", jobRoutes);
  app.route("/backup/runs", runListRoutes);
  app.route("/backup/runs", runRoutes);
  app.route("/backup/anomalies", anomalyRoutes);
  app.route("/backup/platforms", platformRoutes);
  app.route("/backup/restore", fileHistoryRoutes);
  app.route("/backup/restore", restoreRoutes);
  app.route("/backup/replicas", replicaRoutes);
  app.route("/backup/scripts", scriptRoutes);
  app.route("/backup/drills", drillRoutes);
  app.route("/backup/approvals", approvalRoutes);
  app.route("/backup/holds", holdRoutes);
  app.route("/health", healthPages);
  app.route("/health/backup", backupHealthPages);
  app.route("/admin/users", adminUserRoutes);
  app.route("/admin/orgs", adminOrgRoutes);
  app.route("/admin/recovery-key", adminRecoveryKeyRoutes);
  app.route("/admin/tokens", adminTokenRoutes);
  app.route("/admin/audit", adminAuditRoutes);
  app.route("/admin/four-eyes", fourEyesAdminRoutes);
  app.route("/admin/backups", adminBackupRoutes);
  app.route("/admin/maintenance", adminMaintenanceRoutes);
  // JSON API v1 (bearer tokens; routes/api_v1_*.ts). Each resource at its own prefix, mounted in the order of
  // the OpenAPI document's paths (the document lists them as they are mounted).
  // identity
  app.route("/api/v1/me", apiV1Me);
  app.route("/api/v1/users", apiV1Users);
  app.route("/api/v1/orgs", apiV1Orgs);
  app.route("/api/v1/tokens", apiV1Tokens);
  app.route("/api/v1/audit", apiV1Audit);
  // backup infrastructure
  app.route("/api/v1/engines", apiV1Engines);
  app.route("/api/v1/storage", apiV1Storage);
  app.route("/api/v1/storage-capacity", apiV1StorageCapacity);
  app.route("/api/v1/alerts", apiV1Alerts);
  app.route("/api/v1/account/registration-secret", apiV1RegistrationSecret);
  // policies and runs
  app.route("/api/v1/policies", apiV1Policies);
  app.route("/api/v1/runs", apiV1Runs);
  app.route("/api/v1/anomalies", apiV1Anomalies);
  // dashboard
  app.route("/api/v1/dashboard", apiV1Dashboard);
  app.route("/api/v1/protected-objects", apiV1ProtectedObjects);
  app.route("/api/v1/dashboard", apiV1DashboardPanels);
  // engine job queue; virtualization platforms
  app.route("/api/v1/jobs", apiV1Jobs);
  app.route("/api/v1/platforms", apiV1Platforms);
  // notifications
  app.route("/api/v1/notification-channels", apiV1NotificationChannels);
  app.route("/api/v1/notification-rules", apiV1NotificationRules);
  app.route("/api/v1/notification-deliveries", apiV1NotificationDeliveries);
  // restore
  app.route("/api/v1/restore-points", apiV1RestorePoints);
  app.route("/api/v1/searches", apiV1Searches);
  app.route("/api/v1/restores", apiV1Restores);
  app.route("/api/v1/hosts/:hostId/file-history", apiV1FileHistory);
  // hosts and the policy cascade (sub-resources of a policy or a host at their own prefix)
  app.route("/api/v1/replicas", apiV1Replicas);
  app.route("/api/v1/policies/:policyId/three-two-one", apiV1ThreeTwoOne);
  app.route("/api/v1/hosts", apiV1Hosts);
  app.route("/api/v1/policies/:policyId/assignments", apiV1PolicyAssignments);
  app.route("/api/v1/hosts/:hostId/assignments", apiV1HostAssignments);
  app.route("/api/v1/assignments", apiV1Assignments);
  app.route("/api/v1/policies/:policyId/hooks", apiV1PolicyHooks);
  app.route("/api/v1/hooks", apiV1Hooks);
  app.route("/api/v1/hook-templates", apiV1HookTemplates);
  app.route("/api/v1/exclusion-templates", apiV1ExclusionTemplates);
  // restore drills
  app.route("/api/v1/drills", apiV1Drills);
  app.route("/api/v1/drill-runs", apiV1DrillRuns);
  app.route("/api/v1/proven-restores", apiV1ProvenRestores);
  // scripts
  app.route("/api/v1/scripts", apiV1Scripts);
  // the control plane's own backup
  app.route("/api/v1/self-backup", apiV1SelfBackup);
  // four-eyes approvals
  app.route("/api/v1/account/four-eyes", apiV1FourEyes);
  app.route("/api/v1/approvals", apiV1Approvals);
  // legal holds
  app.route("/api/v1/legal-holds", apiV1LegalHolds);
  // engine protocol v1 (signed requests of BES and agents; routes/engine_*.ts), in the document's order
  app.route("/api/bes/v1/register", besRegistration);
  app.route("/api/bes/v1/heartbeat", besHeartbeat);
  app.route("/api/agent/v1/enroll", agentEnrollment);
  app.route("/api/agent/v1/heartbeat", agentHeartbeat);
  app.route("/api/agent/v1/pre-patch", agentPrePatch);
  app.route("/api/bes/v1/jobs", besJobs);
  app.route("/api/agent/v1/jobs", agentJobs);
  app.route("/api/bes/v1/bmr", besBmr);
  app.route("/api/bes/v1/targets", engineTargets);
  // health of the control plane's own backup; the OpenAPI document and its rendering
  app.route("/api/health/infra/backup", selfBackupApi);
  app.route("/", docsRoutes(() => openApiDocument(app)));

  app.notFound(notFound);
  app.onError(handleError);
  // Well-formed signed heartbeats are answered before hono's chain (routes/heartbeat_direct.ts), with the
  // same checks; everything else, and every heartbeat refused before its write, goes through the routes above.
  const declared = app.fetch;
  app.fetch = heartbeatDirect(deps, MAX_BODY_BYTES, (request, env) => declared(request, env));
  return app;
}

/** The vault key must be known: a random one would make every stored credential unreadable after a restart. */
function requireMasterKey(options: AppOptions): Uint8Array {
  const key = options.masterKey ?? options.config.masterKey;
  if (!key || key.length !== 32) {
    throw new Error("createApp() needs the 32-byte master key (see loadMasterKey)");
  }
  return key;
}

/** The OpenAPI document of every JSON route declared with a schema. */
export function openApiDocument(app: OpenAPIHono<AppEnv>) {
  app.openAPIRegistry.registerComponent("securitySchemes", "bearer", { type: "http", scheme: "bearer" });
  app.openAPIRegistry.registerComponent("securitySchemes", "registrationSecret", {
    type: "http",
    scheme: "bearer",
    description: "An org registration secret (cdo_…) or, for a BES, the account secret (cda_…)",
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "engineSignature", {
    type: "apiKey",
    in: "header",
    name: "X-Cadres-Signature",
    description: "Ed25519 signature; see docs/engine-protocol.md",
  });
  return app.getOpenAPI31Document({
    openapi: "3.1.0",
    info: {
      title: "Cadres Backup API",
      version: "v1",
      description: "Operator API. Authenticate with `Authorization: Bearer <API token>`.",
    },
    security: [{ bearer: [] }],
  });
}
