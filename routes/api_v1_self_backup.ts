/**
 * `/api/v1/self-backup/…`: the control plane's own backups as Admin > Backups and Admin > Maintenance
 * offer them — settings read and update, back up now, restart the worker. The same domain functions as
 * the pages (domain/self_backup_runs.ts), and the same rule: only administrators of the operator account
 * with access to all its organizations (`authorizePlatformAdmin`). Their health stays at
 * GET /api/health/infra/backup.
 */
import { createRoute, z } from "@hono/zod-openapi";
import { ValidationError } from "../domain/errors.ts";
import { DATABASE_NAMES } from "../domain/self_backup.ts";
import {
  authorizePlatformAdmin,
  getSettings,
  listTriggers,
  restartWorker,
  type SelfBackupSettings,
  SelfBackupSettingsInput,
  triggerManualBackup,
  updateSettings,
} from "../domain/self_backup_runs.ts";
import { requires } from "./access.ts";
import { apiRouter, err, jsonBody, ok } from "./api_common.ts";
import { unknownFieldNames } from "./forms.ts";

const denied = {
  401: err("Not signed in or bad token"),
  403: err("Needs admin, in the operator account, with access to all its organizations"),
};

/** zod issue paths as dotted field names (`s3.bucket`), first message per field. */
function dottedFields(error: z.ZodError): Record<string, string> {
  const out: Record<string, string> = {};
  for (const issue of error.issues) {
    if (issue.code === "unrecognized_keys") {
      for (const name of unknownFieldNames(issue)) out[name] ??= "Unknown field";
      continue;
    }
    out[issue.path.join(".") || "body"] ??= issue.message[0].toUpperCase() + issue.message.slice(1);
  }
  return out;
}

/** The form's schema with every object strict: a misspelt field is a 422, not silently dropped. */
const shape = SelfBackupSettingsInput.shape;
const SettingsBody = z.strictObject({
  ...shape,
  config: shape.config.strict(),
  results: shape.results.strict(),
  s3: shape.s3.strict(),
}).openapi("SelfBackupSettingsInput");

const Schedule = z.object({ enabled: z.boolean(), hour: z.number().int(), retentionDays: z.number().int() });
const SettingsSchema = z.object({
  config: Schedule.describe("Config DB: daily at `hour`:00 UTC"),
  results: Schedule.describe("Results DB: daily at `hour`:00 UTC"),
  directory: z.string(),
  minFreeBytes: z.number(),
  s3: z.object({
    enabled: z.boolean(),
    endpoint: z.string(),
    bucket: z.string(),
    region: z.string(),
    prefix: z.string(),
    accessKeyId: z.string(),
    hasSecretAccessKey: z.boolean().describe("The secret is in the vault; it is never returned"),
  }),
  updatedAt: z.string().nullable(),
}).openapi("SelfBackupSettings");

const TriggerSchema = z.looseObject({
  id: z.string(),
  database: z.enum(DATABASE_NAMES),
  kind: z.enum(["scheduled", "manual"]),
  requestedBy: z.string(),
  requestedAt: z.string(),
  finishedAt: z.string().nullable(),
  status: z.enum(["running", "success", "failed"]),
  error: z.string().nullable(),
  progress: z.object({ phase: z.string(), entries: z.number() }),
}).openapi("SelfBackupTrigger");

function publicSettings(s: SelfBackupSettings) {
  const { credentialId, ...s3 } = s.s3;
  return { ...s, s3: { ...s3, hasSecretAccessKey: credentialId !== null } };
}

/** `/api/v1/self-backup` */
export const apiV1SelfBackup = apiRouter();

apiV1SelfBackup.openapi(
  createRoute({
    method: "get",
    path: "/settings",
    operationId: "getSelfBackupSettings",
    summary: "The control plane's own backup settings (Admin > Backups); the S3 secret is never returned",
    tags: ["Self-backup"],
    middleware: [requires("admin")] as const,
    responses: { 200: ok("The settings", SettingsSchema), ...denied },
  }),
  async (c) => {
    const { kv, config } = c.get("deps");
    await authorizePlatformAdmin(kv, c.get("actor")!);
    return c.json(publicSettings(await getSettings(kv, config.dataDir)), 200);
  },
);

apiV1SelfBackup.openapi(
  createRoute({
    method: "put",
    path: "/settings",
    operationId: "updateSelfBackupSettings",
    summary:
      "Replace the self-backup settings (the Admin > Backups form's fields); an empty secretAccessKey keeps the stored one",
    tags: ["Self-backup"],
    middleware: [requires("admin")] as const,
    request: jsonBody(SettingsBody, {
      config: { enabled: true, hour: 2, retentionDays: 14 },
      results: { enabled: true, hour: 3, retentionDays: 7 },
      directory: "/var/lib/cadres/backups",
      minFreeBytes: 1073741824,
      s3: {
        enabled: true,
        endpoint: "https://s3.eu-west-1.amazonaws.com",
        bucket: "acme-cadres-selfbackup",
        region: "eu-west-1",
        prefix: "cadres/",
        accessKeyId: "AKIAEXAMPLE",
        secretAccessKey: "",
      },
    }),
    responses: {
      200: ok("Saved", SettingsSchema),
      ...denied,
      409: err("Changed by someone else meanwhile; read them again and retry"),
      422: err("Invalid or unknown field (fields names each, dotted: s3.bucket)"),
    },
  }),
  async (c) => {
    const { kv, clock, masterKey, config } = c.get("deps");
    try {
      const saved = await updateSettings(kv, c.get("actor")!, c.req.valid("json"), {
        now: clock(),
        masterKey,
        dataDir: config.dataDir,
      });
      return c.json(publicSettings(saved), 200);
    } catch (e) {
      if (e instanceof z.ZodError) throw new ValidationError("The settings are invalid", dottedFields(e));
      throw e;
    }
  },
  (result, c) => {
    if (!result.success) {
      return c.json({
        error: { code: "invalid", message: "The request is invalid", fields: dottedFields(result.error) },
      }, 422);
    }
  },
);

apiV1SelfBackup.openapi(
  createRoute({
    method: "post",
    path: "/backups",
    operationId: "startSelfBackup",
    summary:
      "Back up one database of the control plane now (Admin > Maintenance); long exports continue in the background",
    description:
      "Answers 200 with the finished trigger (status success or failed, with the error) when the backup ends " +
      "within a moment, otherwise 202 with the running trigger: follow it in GET /api/health/infra/backup.",
    tags: ["Self-backup"],
    middleware: [requires("admin")] as const,
    request: jsonBody(
      z.strictObject({ database: z.enum(DATABASE_NAMES, { error: "must be config or results" }) }),
      { database: "config" },
    ),
    responses: {
      200: ok("Finished (success or failed)", z.object({ trigger: TriggerSchema })),
      202: ok(
        "Started; still running",
        z.object({ trigger: TriggerSchema.nullable().describe("null when it had not yet been recorded") }),
      ),
      ...denied,
      409: err("A self-backup is already running"),
      422: err("Invalid database"),
    },
  }),
  async (c) => {
    const { kv, clock, masterKey, config, logger } = c.get("deps");
    const actor = c.get("actor")!;
    const { database } = c.req.valid("json");
    await authorizePlatformAdmin(kv, actor);
    const asked = clock().toISOString();
    const run = triggerManualBackup(kv, actor, database, { clock, masterKey, dataDir: config.dataDir });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const first = await Promise.race([
      run,
      new Promise<"running">((r) => (timer = setTimeout(() => r("running"), 300))),
    ]).finally(() => clearTimeout(timer));
    if (first !== "running") return c.json({ trigger: first }, 200);
    run.catch((e) => logger.log("error", "self-backup failed", { error: String(e) }));
    // The worker runs one backup at a time: the newest trigger, if requested since, is this one.
    const [newest] = await listTriggers(kv, 1);
    const mine = newest && newest.kind === "manual" && newest.requestedAt >= asked ? newest : null;
    return c.json({ trigger: mine }, 202);
  },
);

apiV1SelfBackup.openapi(
  createRoute({
    method: "post",
    path: "/restart-worker",
    operationId: "restartSelfBackupWorker",
    summary:
      "Restart the self-backup worker (Admin > Maintenance): a running backup stops at its next step and is recorded as failed",
    tags: ["Self-backup"],
    middleware: [requires("admin")] as const,
    responses: {
      200: ok(
        "Restarted",
        z.object({ abandoned: z.string().nullable().describe("The trigger that was running, if any") }),
      ),
      ...denied,
      409: err("The worker changed state meanwhile; try again"),
    },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    return c.json(await restartWorker(kv, c.get("actor")!, clock()), 200);
  },
);
