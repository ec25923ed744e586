/**
 * The control plane's own backups: GET /api/health/infra/backup, the read-only Health > Backup page,
 * Admin > Backups (settings) and Admin > Maintenance (manual backup, restart the worker).
 */
import { createRoute, OpenAPIHono, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import { Island } from "../components/Island.tsx";
import {
  Badge,
  Checkbox,
  Csrf,
  DataTable,
  Field,
  FormActions,
  formatBytes,
  formatTime,
  FormErrors,
  PageHeader,
  type Tone,
} from "../components/ui.tsx";
import { ConflictError, type FieldErrors } from "../domain/errors.ts";
import {
  authorizePlatformAdmin,
  backupHealth,
  getSettings,
  restartWorker,
  SelfBackupSettingsInput,
  triggerManualBackup,
  updateSettings,
} from "../domain/self_backup_runs.ts";
import BackupProgress from "../islands/BackupProgress.tsx";
import { getSelfBackupSettings } from "../domain/read_models/health.ts";
import { requires } from "./access.ts";
import { ErrorBody } from "./api_common.ts";
import type { AppEnv } from "./env.ts";
import { type FormFields, readForm, str } from "./forms.ts";
import { redirectWithNotice, render } from "./render.tsx";

const TriggerSchema = z.object({
  id: z.string(),
  database: z.enum(["config", "results"]),
  kind: z.enum(["scheduled", "manual"]),
  requestedBy: z.string(),
  requestedAt: z.string(),
  finishedAt: z.string().nullable(),
  status: z.enum(["running", "success", "failed"]),
  error: z.string().nullable(),
});

/** Every field of the spec's Health > Backup table, plus health and "last verified restorable". */
export const BackupHealthSchema = z.object({
  configSchedule: z.object({ enabled: z.boolean(), hourUtc: z.number() }).describe("Config DB schedule"),
  resultsSchedule: z.object({ enabled: z.boolean(), hourUtc: z.number() }).describe("Results DB schedule"),
  configRetentionDays: z.number(),
  resultsRetentionDays: z.number(),
  nextConfigBackup: z.string().nullable(),
  nextResultsBackup: z.string().nullable(),
  bundleCount: z.number(),
  totalSizeBytes: z.number(),
  freeDiskBytes: z.number(),
  minFreeBytes: z.number(),
  freeDiskBelowMinimum: z.boolean(),
  oldestBundle: z.string().nullable(),
  newestBundle: z.string().nullable(),
  encryption: z.object({ encrypted: z.boolean(), algorithm: z.string() }),
  s3Bucket: z.string().nullable(),
  s3Reachable: z.boolean().nullable().describe(
    "Checked with a 5-minute cache; null when S3 is not configured",
  ),
  s3CheckedAt: z.string().nullable(),
  s3Error: z.string().nullable(),
  totalTriggers: z.number(),
  successfulTriggers: z.number(),
  failedTriggers: z.number(),
  recentTriggers: z.array(TriggerSchema.passthrough()),
  health: z.enum(["healthy", "unhealthy", "unknown"]).describe(
    "Judged by the most recent completed trigger only",
  ),
  running: z.string().nullable(),
  lastVerifiedRestorable: z.object({ config: z.string().nullable(), results: z.string().nullable() }),
  newestBundleStale: z.object({ config: z.boolean(), results: z.boolean() }),
  directory: z.string(),
}).openapi("BackupHealth");

/** `/api/health/infra/backup` */
export const selfBackupApi = new OpenAPIHono<AppEnv>();

function healthOptions(c: Context<AppEnv>) {
  const { clock, masterKey, config } = c.get("deps");
  return { now: clock(), masterKey, dataDir: config.dataDir };
}

selfBackupApi.openapi(
  createRoute({
    method: "get",
    path: "/",
    summary: "Fetch backup schedule, storage, encryption, S3, and trigger data",
    tags: ["Health"],
    middleware: [requires("admin")] as const,
    responses: {
      200: {
        description: "The control plane's own backups",
        content: { "application/json": { schema: BackupHealthSchema } },
      },
      401: { description: "Not signed in", content: { "application/json": { schema: ErrorBody } } },
      403: { description: "Needs admin", content: { "application/json": { schema: ErrorBody } } },
    },
  }),
  async (c) => c.json(await backupHealth(c.get("deps").kv, c.get("actor")!, healthOptions(c)), 200),
);

type Health = Awaited<ReturnType<typeof backupHealth>>;
const STATUS_TONE: Record<string, Tone> = { success: "ok", failed: "bad", running: "info" };

function HealthBackupPage(props: { h: Health }) {
  const { h } = props;
  const sched = (s: Health["configSchedule"]) =>
    s.enabled ? `Daily at ${String(s.hourUtc).padStart(2, "0")}:00 UTC` : "Disabled";
  return (
    <>
      <PageHeader
        title="Backup"
        subtitle="Read-only health of the control plane's own backups. Config DB and Results DB are backed up independently. Configure them in Admin > Backups."
        actions={
          <Badge tone={h.health === "healthy" ? "ok" : h.health === "unhealthy" ? "bad" : "muted"}>
            {h.health}
          </Badge>
        }
      />
      {(h.newestBundleStale.config || h.newestBundleStale.results) && (
        <p class="notice notice--warn" role="alert">
          The newest{" "}
          {[h.newestBundleStale.config && "Config DB", h.newestBundleStale.results && "Results DB"].filter(
            Boolean,
          ).join(" and ")} bundle is older than 1.5× its daily schedule.
        </p>
      )}
      <div class="grid-2">
        <section class="panel">
          <h2>Schedules</h2>
          <dl class="facts">
            <dt>Config DB schedule</dt>
            <dd>{sched(h.configSchedule)}</dd>
            <dt>Results DB schedule</dt>
            <dd>{sched(h.resultsSchedule)}</dd>
            <dt>Config retention</dt>
            <dd>{h.configRetentionDays} days</dd>
            <dt>Results retention</dt>
            <dd>{h.resultsRetentionDays} days</dd>
            <dt>Next Config backup</dt>
            <dd>{formatTime(h.nextConfigBackup)}</dd>
            <dt>Next Results backup</dt>
            <dd>{formatTime(h.nextResultsBackup)}</dd>
            <dt>Last verified restorable</dt>
            <dd>
              Config {formatTime(h.lastVerifiedRestorable.config)} · Results{" "}
              {formatTime(h.lastVerifiedRestorable.results)}
            </dd>
          </dl>
        </section>
        <section class="panel">
          <h2>Local backups volume</h2>
          <dl class="facts">
            <dt>Bundle count</dt>
            <dd data-testid="bundle-count">{h.bundleCount}</dd>
            <dt>Total size</dt>
            <dd>{formatBytes(h.totalSizeBytes)}</dd>
            <dt>Free disk</dt>
            <dd class={h.freeDiskBelowMinimum ? "text-bad" : ""} data-testid="free-disk">
              {formatBytes(h.freeDiskBytes)}
              {h.freeDiskBelowMinimum ? " — below the minimum" : ""}
            </dd>
            <dt>Min free threshold</dt>
            <dd>{formatBytes(h.minFreeBytes)}</dd>
            <dt>Oldest bundle</dt>
            <dd>{formatTime(h.oldestBundle)}</dd>
            <dt>Newest bundle</dt>
            <dd>{formatTime(h.newestBundle)}</dd>
            <dt>Encryption status</dt>
            <dd>{h.encryption.encrypted ? `Encrypted (${h.encryption.algorithm})` : "Not encrypted"}</dd>
            <dt>S3 bucket</dt>
            <dd>{h.s3Bucket ?? "Not configured"}</dd>
            <dt>S3 reachable</dt>
            <dd>
              {h.s3Reachable === null
                ? "—"
                : h.s3Reachable
                ? <Badge tone="ok">reachable</Badge>
                : <Badge tone="bad">unreachable</Badge>}
              {h.s3CheckedAt && <span class="hint">checked {formatTime(h.s3CheckedAt)} (5-minute cache)
              </span>}
              {h.s3Error && <div class="hint">{h.s3Error}</div>}
            </dd>
          </dl>
        </section>
      </div>
      <section class="panel">
        <h2>Triggers</h2>
        <p>
          Total {h.totalTriggers} · Successful {h.successfulTriggers} · Failed {h.failedTriggers}
        </p>
        {h.recentTriggers.length === 0 ? <p class="muted">No backup has run yet.</p> : (
          <DataTable
            class="table"
            heads={["Requested", "By", "Database", "Kind", "Status", "Bundle", "Detail"]}
          >
            {h.recentTriggers.map((t) => (
              <tr key={t.id}>
                <td class="nowrap">{formatTime(t.requestedAt)}</td>
                <td>{t.requestedBy}</td>
                <td>{t.database === "config" ? "Config DB" : "Results DB"}</td>
                <td>{t.kind}</td>
                <td>
                  <Badge tone={STATUS_TONE[t.status] ?? "muted"}>{t.status}</Badge>
                </td>
                <td>
                  {t.bundle ? `${formatBytes(t.bundle.bytes)}, ${t.bundle.entries} entries` : "—"}
                </td>
                <td>
                  {t.error ?? (t.status === "running"
                    ? t.progress.phase
                    : `verified ${t.verification.status}, S3 ${t.s3.status}`)}
                </td>
              </tr>
            ))}
          </DataTable>
        )}
      </section>
    </>
  );
}

/** Health > Backup (mounted at /health/backup). */
export const backupHealthPages = new OpenAPIHono<AppEnv>();
/** Admin > Backups: the self-backup settings (mounted at /admin/backups). */
export const adminBackupRoutes = new OpenAPIHono<AppEnv>();
/** Admin > Maintenance: a backup now, restarting the worker (mounted at /admin/maintenance). */
export const adminMaintenanceRoutes = new OpenAPIHono<AppEnv>();

backupHealthPages.get("/", requires("admin"), async (c) => {
  const h = await backupHealth(c.get("deps").kv, c.get("actor")!, healthOptions(c));
  return render(c, "Health · Backup", <HealthBackupPage h={h} />);
});

function settingsToForm(s: Awaited<ReturnType<typeof getSettings>>): FormFields {
  return {
    config_enabled: s.config.enabled ? "on" : "",
    config_hour: String(s.config.hour),
    config_retentionDays: String(s.config.retentionDays),
    results_enabled: s.results.enabled ? "on" : "",
    results_hour: String(s.results.hour),
    results_retentionDays: String(s.results.retentionDays),
    directory: s.directory,
    minFreeGiB: String(Math.round((s.minFreeBytes / 1024 ** 3) * 100) / 100),
    s3_enabled: s.s3.enabled ? "on" : "",
    s3_endpoint: s.s3.endpoint,
    s3_bucket: s.s3.bucket,
    s3_region: s.s3.region,
    s3_prefix: s.s3.prefix,
    s3_accessKeyId: s.s3.accessKeyId,
  };
}

function formToInput(f: FormFields): SelfBackupSettingsInput {
  // A blank number field is missing, not 0 (z.coerce.number("") is 0).
  const num = (k: string) => (str(f, k).trim() === "" ? undefined : str(f, k)) as unknown as number;
  const gib = str(f, "minFreeGiB").trim();
  return {
    config: {
      enabled: str(f, "config_enabled") === "on",
      hour: num("config_hour"),
      retentionDays: num("config_retentionDays"),
    },
    results: {
      enabled: str(f, "results_enabled") === "on",
      hour: num("results_hour"),
      retentionDays: num("results_retentionDays"),
    },
    directory: str(f, "directory"),
    minFreeBytes: gib === "" ? NaN : Math.round(Number(gib) * 1024 ** 3),
    s3: {
      enabled: str(f, "s3_enabled") === "on",
      endpoint: str(f, "s3_endpoint"),
      bucket: str(f, "s3_bucket"),
      region: str(f, "s3_region"),
      prefix: str(f, "s3_prefix"),
      accessKeyId: str(f, "s3_accessKeyId"),
      secretAccessKey: str(f, "s3_secretAccessKey"),
    },
  };
}

/** zod paths like config.hour → form names config_hour; minFreeBytes → minFreeGiB. */
function settingsErrors(error: z.ZodError): FieldErrors {
  const out: FieldErrors = {};
  for (const issue of error.issues) {
    const name = issue.path.join("_").replace(/^minFreeBytes$/, "minFreeGiB");
    out[name] ??= name === "minFreeGiB"
      ? "Must be a number of GiB from 0 to 8388608 (8 PiB)"
      : issue.message[0].toUpperCase() + issue.message.slice(1);
  }
  return out;
}

function AdminBackupsPage(
  props: { csrf: string; values: FormFields; hasSecret: boolean; errors?: FieldErrors; error?: string },
) {
  const v = (k: string) => str(props.values, k);
  const e = props.errors;
  const db = (name: "config" | "results", title: string) => (
    <fieldset class="type-fields">
      <legend>{title}</legend>
      <label class="choice">
        <input type="checkbox" name={`${name}_enabled`} value="on" checked={v(`${name}_enabled`) === "on"} />
        {" "}
        Daily automated backup
      </label>
      <Field
        name={`${name}_hour`}
        label="Hour (UTC, 0–23)"
        type="number"
        value={v(`${name}_hour`)}
        errors={e}
      />
      <Field
        name={`${name}_retentionDays`}
        label="Retention (days)"
        type="number"
        value={v(`${name}_retentionDays`)}
        errors={e}
        hint="Bundles older than this are removed automatically (the newest is always kept)."
      />
    </fieldset>
  );
  return (
    <>
      <PageHeader
        title="Backups"
        subtitle="Schedules, retention, the local backups volume and the optional S3 copy of the control plane's own backups."
        actions={<a class="btn" href="/admin/maintenance">Maintenance…</a>}
      />
      <form method="post" action="/admin/backups" class="form">
        <Csrf token={props.csrf} />
        <FormErrors message={props.error} />
        {db("config", "Config DB (accounts, users, engines, targets, policies, hosts…)")}
        {db("results", "Results DB (jobs, runs, restore points, capacity history, alerts, audit)")}
        <fieldset class="type-fields">
          <legend>Local backups volume</legend>
          <Field name="directory" label="Backups folder" value={v("directory")} errors={e} />
          <Field
            name="minFreeGiB"
            label="Minimum free disk (GiB)"
            type="number"
            value={v("minFreeGiB")}
            errors={e}
            hint="A backup refuses to run, and says why, when free space is below this."
          />
          <p class="hint">
            Encryption: always on, AES-256-GCM with a key derived from the master key (bundles hold password
            hashes and vault ciphertexts, so plaintext bundles are not offered).
          </p>
        </fieldset>
        <fieldset class="type-fields">
          <legend>S3 copy (optional)</legend>
          <Checkbox
            name="s3_enabled"
            checked={v("s3_enabled") === "on"}
            label="Copy every bundle to an S3-compatible bucket"
          />
          <Field
            name="s3_endpoint"
            label="Endpoint URL"
            value={v("s3_endpoint")}
            errors={e}
            hint="e.g. https://s3.eu-west-1.amazonaws.com"
          />
          <Field name="s3_bucket" label="Bucket" value={v("s3_bucket")} errors={e} />
          <Field name="s3_region" label="Region" value={v("s3_region")} errors={e} />
          <Field name="s3_prefix" label="Prefix (optional)" value={v("s3_prefix")} errors={e} />
          <Field name="s3_accessKeyId" label="Access key id" value={v("s3_accessKeyId")} errors={e} />
          <Field
            name="s3_secretAccessKey"
            label="Secret access key"
            type="password"
            errors={e}
            hint={props.hasSecret
              ? "Stored in the vault. Type a new one to replace it; leave empty to keep it."
              : "Stored in the vault; never shown again."}
          />
        </fieldset>
        <FormActions submit="Save" />
      </form>
    </>
  );
}

adminBackupRoutes.get("/", requires("admin"), async (c) => {
  const { kv, clock, config } = c.get("deps");
  const s = await getSelfBackupSettings(kv, c.get("actor")!, { dataDir: config.dataDir }, clock());
  return render(
    c,
    "Backups",
    <AdminBackupsPage
      csrf={c.get("csrfToken")}
      values={settingsToForm(s)}
      hasSecret={Boolean(s.s3.credentialId)}
    />,
  );
});

adminBackupRoutes.post("/", requires("admin"), async (c) => {
  const { kv, clock, masterKey, config } = c.get("deps");
  await authorizePlatformAdmin(kv, c.get("actor")!);
  const form = await readForm(c);
  const current = await getSettings(kv, config.dataDir);
  const parsed = SelfBackupSettingsInput.safeParse(formToInput(form));
  let errors: FieldErrors | undefined;
  let error: string | undefined;
  if (!parsed.success) errors = settingsErrors(parsed.error);
  else {
    try {
      await updateSettings(kv, c.get("actor")!, parsed.data, {
        now: clock(),
        masterKey,
        dataDir: config.dataDir,
      });
      return redirectWithNotice(c, "/admin/backups", "Backup settings saved.");
    } catch (e) {
      if (e instanceof z.ZodError) errors = settingsErrors(e);
      else if (e instanceof ConflictError) error = e.message;
      else throw e;
    }
  }
  return render(
    c,
    "Backups",
    (
      <AdminBackupsPage
        csrf={c.get("csrfToken")}
        values={form}
        hasSecret={Boolean(current.s3.credentialId)}
        errors={errors}
        error={error}
      />
    ),
    422,
  );
});

adminMaintenanceRoutes.get("/", requires("admin"), async (c) => {
  const h = await backupHealth(c.get("deps").kv, c.get("actor")!, healthOptions(c));
  return render(
    c,
    "Maintenance",
    (
      <>
        <PageHeader
          title="Maintenance"
          subtitle="Run a backup of the control plane now, or restart the backup worker."
        />
        <Island
          name="BackupProgress"
          component={BackupProgress}
          props={{ running: h.running, triggers: h.recentTriggers.slice(0, 5) }}
        />
        <section class="panel">
          <h2>Manual backup</h2>
          <form method="post" action="/admin/maintenance/backup" class="form">
            <Csrf token={c.get("csrfToken")} />
            <fieldset class="field">
              <legend>Database</legend>
              <label class="choice">
                <input type="radio" name="database" value="config" checked /> Config DB
              </label>
              <label class="choice">
                <input type="radio" name="database" value="results" /> Results DB
              </label>
            </fieldset>
            <FormActions submit="Back up now" />
          </form>
        </section>
        <section class="panel panel--danger">
          <h2>Restart the backup worker</h2>
          <p>Frees a stuck worker. A running backup stops at its next step and is recorded as failed.</p>
          <form method="post" action="/admin/maintenance/restart-worker">
            <Csrf token={c.get("csrfToken")} />
            <button type="submit" class="btn btn--danger">Restart worker</button>
          </form>
        </section>
      </>
    ),
  );
});

adminMaintenanceRoutes.post("/backup", requires("admin"), async (c) => {
  const { kv, clock, masterKey, config, logger } = c.get("deps");
  const form = await readForm(c);
  const database = str(form, "database") === "results" ? "results" : "config";
  const actor = c.get("actor")!;
  await authorizePlatformAdmin(kv, actor);
  // Long exports run in the background; the page shows their progress.
  const run = triggerManualBackup(kv, actor, database, { clock, masterKey, dataDir: config.dataDir });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const first = await Promise.race([
    run,
    new Promise<"running">((r) => (timer = setTimeout(() => r("running"), 300))),
  ])
    .catch((e) => e)
    .finally(() => clearTimeout(timer));
  if (first instanceof ConflictError) return redirectWithNotice(c, "/admin/maintenance", first.message);
  if (first instanceof Error) throw first;
  run.catch((e) => logger.log("error", "self-backup failed", { error: String(e) }));
  const label = database === "config" ? "Config" : "Results";
  if (first !== "running" && first.status === "failed") {
    return redirectWithNotice(c, "/admin/maintenance", `Backup of the ${label} DB failed: ${first.error}`);
  }
  return redirectWithNotice(
    c,
    "/admin/maintenance",
    `Backup of the ${label} DB ${first === "running" ? "started" : "finished"}.`,
  );
});

adminMaintenanceRoutes.post("/restart-worker", requires("admin"), async (c) => {
  const { kv, clock } = c.get("deps");
  const { abandoned } = await restartWorker(kv, c.get("actor")!, clock());
  return redirectWithNotice(
    c,
    "/admin/maintenance",
    abandoned ? "Worker restarted; the running backup was abandoned." : "Worker restarted.",
  );
});
