/**
 * Self-backup operations: settings (Admin > Backups), triggers (scheduled and manual), the backup run
 * (free-disk check → consistent export with progress → encrypted bundle on the local volume → optional
 * S3 copy → "verified restorable" test restore → retention clean-up), the schedule, and the health
 * summary of the spec's Health > Backup view. Times come from the caller (`now`/`clock`).
 */
import fs from "node:fs";
import { z } from "zod";
import { appendAudit, type AuditInput, commitAudited } from "./audit.ts";
import { ConflictError, ForbiddenError } from "./errors.ts";
import { newId } from "./ids.ts";
import { checkInvariants } from "./invariants.ts";
import { type Actor, authorize } from "./rbac.ts";
import { probeBucket, putObject, type S3Location } from "./s3.ts";
import { withRetry } from "./retry.ts";
import {
  BUNDLE_CIPHER,
  type DatabaseName,
  exportDatabase,
  openBundle,
  restoreBundle,
  SCHEMA_VERSION,
  sealBundle,
} from "./self_backup.ts";
import { readVaultSecret, replaceVaultRecord, sealOwnedSecret } from "./vault.ts";
import {
  selfBackupCountersKey,
  selfBackupLastSuccessKey,
  selfBackupS3ProbeKey,
  selfBackupSettingsKey,
  selfBackupSlotKey,
  selfBackupTriggerKey,
  selfBackupTriggersPrefix,
  selfBackupVerifiedKey,
  selfBackupWorkerKey,
} from "./keys/self_backup.ts";
import { accountsPrefix } from "./keys/tenancy.ts";

/** The audit entry of a change to the control plane's own backups (`objectId`: settings, worker or a DB). */
function selfBackupAudit(actor: Actor, action: string, objectId: string, summary: string): AuditInput {
  return { accountId: actor.accountId ?? "system", action, objectType: "self_backup", objectId, summary };
}

/** S3 reachability is cached this long (the spec's 5-minute cache). */
export const S3_PROBE_TTL_MS = 5 * 60_000;
export const BUNDLE_SUFFIX = ".cadres-bundle";

const DbSchedule = z.object({
  enabled: z.boolean(),
  hour: z.coerce.number({ error: "must be an hour 0–23" }).int("must be an hour 0–23").min(
    0,
    "must be an hour 0–23",
  )
    .max(23, "must be an hour 0–23"),
  retentionDays: z.coerce.number({ error: "must be 1–3650 days" }).int("must be a whole number of days")
    .min(1, "must be 1–3650 days").max(3650, "must be 1–3650 days"),
});

/**
 * The control plane's own backups hold every account's data, so they belong to the platform's
 * operator: an admin with an all-orgs scope in the operator account — the oldest account, the one
 * created at first-run setup. Throws ForbiddenError for anyone else.
 */
export async function authorizePlatformAdmin(kv: Deno.Kv, actor: Actor): Promise<void> {
  if (actor.kind === "system") return;
  authorize(actor, "admin");
  if (!(await isPlatformOperator(kv, actor))) {
    throw new ForbiddenError(
      "The control plane's own backups hold every account's data: only administrators of the operator account " +
        "(with access to all its organizations) can see or change them",
    );
  }
}

/** When the last successful self-backup of each database finished (null: none yet). One read per database. */
export async function lastSuccessfulBackups(kv: Deno.Kv): Promise<Record<DatabaseName, string | null>> {
  const [config, results] = await kv.getMany<[{ at: string }, { at: string }]>([
    selfBackupLastSuccessKey("config"),
    selfBackupLastSuccessKey("results"),
  ]);
  return { config: config.value?.at ?? null, results: results.value?.at ?? null };
}

/** True for an actor of the operator account (the oldest) with an all-orgs scope, or the system. */
export async function isPlatformOperator(kv: Deno.Kv, actor: Actor): Promise<boolean> {
  if (actor.kind === "system") return true;
  let operatorAccount: string | null = null;
  for await (const e of kv.list<{ id: string }>({ prefix: accountsPrefix() }, { limit: 1 })) {
    operatorAccount = e.value.id;
  }
  return actor.accountId === operatorAccount && actor.orgScope === "all";
}

/** Admin > Backups. Hours are UTC. The S3 secret is write-only (vault). */
export const SelfBackupSettingsInput = z.object({
  config: DbSchedule,
  results: DbSchedule,
  directory: z.string().trim().min(1, "is required").max(1024).regex(
    /^\.?\//,
    "must be an absolute path (or ./ relative to the server)",
  ),
  minFreeBytes: z.coerce.number({ error: "must be a number of bytes" }).int().min(0).max(2 ** 53),
  s3: z.object({
    enabled: z.boolean(),
    endpoint: z.union([z.literal(""), z.url({ protocol: /^https?$/, error: "must be an http(s) URL" })]),
    bucket: z.string().trim().max(63),
    region: z.string().trim().max(50),
    prefix: z.string().trim().max(512),
    accessKeyId: z.string().trim().max(200),
    /** New secret access key; empty keeps the stored one. */
    secretAccessKey: z.string().max(4096).default(""),
  }).superRefine((s, ctx) => {
    if (!s.enabled) return;
    if (!s.endpoint) {
      ctx.addIssue({ code: "custom", path: ["endpoint"], message: "is required when S3 copy is enabled" });
    }
    if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(s.bucket)) {
      ctx.addIssue({ code: "custom", path: ["bucket"], message: "must be a valid bucket name" });
    }
    if (!s.region) {
      ctx.addIssue({ code: "custom", path: ["region"], message: "is required when S3 copy is enabled" });
    }
    if (!s.accessKeyId) {
      ctx.addIssue({ code: "custom", path: ["accessKeyId"], message: "is required when S3 copy is enabled" });
    }
  }),
});
export type SelfBackupSettingsInput = z.input<typeof SelfBackupSettingsInput>;

export interface SelfBackupSettings {
  config: z.infer<typeof DbSchedule>;
  results: z.infer<typeof DbSchedule>;
  directory: string;
  minFreeBytes: number;
  s3: {
    enabled: boolean;
    endpoint: string;
    bucket: string;
    region: string;
    prefix: string;
    accessKeyId: string;
    credentialId: string | null;
  };
  updatedAt: string | null;
}

/** Defaults: daily at 02:00 (config) and 03:00 (results) UTC, 14 and 7 days, 1 GiB free minimum. */
export function defaultSettings(dataDir: string): SelfBackupSettings {
  return {
    config: { enabled: true, hour: 2, retentionDays: 14 },
    results: { enabled: true, hour: 3, retentionDays: 7 },
    directory: `${dataDir.replace(/\/+$/, "")}/backups`,
    minFreeBytes: 1024 ** 3,
    s3: {
      enabled: false,
      endpoint: "",
      bucket: "",
      region: "us-east-1",
      prefix: "",
      accessKeyId: "",
      credentialId: null,
    },
    updatedAt: null,
  };
}

/** The settings (no authorization: callers that show them to a person check `authorizePlatformAdmin`). */
export async function getSettings(kv: Deno.Kv, dataDir: string): Promise<SelfBackupSettings> {
  return (await kv.get<SelfBackupSettings>(selfBackupSettingsKey())).value ?? defaultSettings(dataDir);
}

/** Saves the settings (admin over the whole account). A new S3 secret replaces the vault record. */
export async function updateSettings(
  kv: Deno.Kv,
  actor: Actor,
  input: SelfBackupSettingsInput,
  options: { now: Date; masterKey: Uint8Array; dataDir: string },
): Promise<SelfBackupSettings> {
  await authorizePlatformAdmin(kv, actor);
  const data = SelfBackupSettingsInput.parse(input);
  const entry = await kv.get<SelfBackupSettings>(selfBackupSettingsKey());
  const current = entry.value ?? defaultSettings(options.dataDir);
  const op = kv.atomic().check(entry);
  let credentialId = current.s3.credentialId;
  if (data.s3.secretAccessKey) {
    const owner = { accountId: actor.accountId ?? "system", orgId: null };
    const record = await sealOwnedSecret(
      options.masterKey,
      owner,
      "self_backup:s3",
      data.s3.secretAccessKey,
      options.now,
    );
    replaceVaultRecord(op, credentialId, record);
    credentialId = record.id;
  }
  if (data.s3.enabled && !credentialId) {
    throw new z.ZodError([{
      code: "custom",
      path: ["s3", "secretAccessKey"],
      message: "is required when S3 copy is enabled",
      input: "",
    }]);
  }
  const { secretAccessKey: _s, ...s3 } = data.s3;
  const next: SelfBackupSettings = {
    config: data.config,
    results: data.results,
    directory: data.directory,
    minFreeBytes: data.minFreeBytes,
    s3: { ...s3, credentialId },
    updatedAt: options.now.toISOString(),
  };
  op.set(selfBackupSettingsKey(), next).delete(selfBackupS3ProbeKey());
  await commitAudited(
    op,
    actor,
    selfBackupAudit(
      actor,
      "self_backup.configure",
      "settings",
      `Self-backup: config ${
        next.config.enabled ? `daily ${next.config.hour}:00 UTC, ${next.config.retentionDays} d` : "off"
      }; ` +
        `results ${
          next.results.enabled ? `daily ${next.results.hour}:00 UTC, ${next.results.retentionDays} d` : "off"
        }; ` +
        `S3 ${next.s3.enabled ? next.s3.bucket : "off"}${data.s3.secretAccessKey ? " (new secret)" : ""}`,
    ),
    options.now,
    "The settings were changed by someone else; reload and try again",
  );
  return next;
}

/** The S3 location with its secret, or null when the copy is off. */
async function s3Location(kv: Deno.Kv, s3: SelfBackupSettings["s3"], masterKey: Uint8Array) {
  if (!s3.enabled || !s3.credentialId) return null;
  const secretAccessKey = await readVaultSecret(kv, masterKey, s3.credentialId);
  return secretAccessKey === null ? null : { ...s3, secretAccessKey } satisfies S3Location;
}

export type TriggerStatus = "running" | "success" | "failed";

export interface Trigger {
  id: string;
  database: DatabaseName;
  kind: "scheduled" | "manual";
  requestedBy: string;
  requestedAt: string;
  finishedAt: string | null;
  status: TriggerStatus;
  error: string | null;
  progress: { phase: string; entries: number };
  bundle: { file: string; bytes: number; entries: number; consistent: boolean } | null;
  s3: { status: "uploaded" | "failed" | "skipped"; error: string | null };
  verification: { status: "passed" | "failed" | "skipped"; error: string | null };
}

export interface BundleFile {
  name: string;
  database: DatabaseName;
  bytes: number;
  createdAt: string;
}

/** The bundles in the local backups folder (newest first). Missing folder → none. */
export async function listBundles(directory: string): Promise<BundleFile[]> {
  const out: BundleFile[] = [];
  try {
    for await (const e of Deno.readDir(directory)) {
      const m = /^(config|results)-(\d{8}T\d{6}Z)(?:-\w+)?\.cadres-bundle$/.exec(e.name);
      if (!e.isFile || !m) continue;
      const info = await Deno.stat(`${directory}/${e.name}`);
      const t = m[2];
      const createdAt = `${t.slice(0, 4)}-${t.slice(4, 6)}-${t.slice(6, 8)}T${t.slice(9, 11)}:${
        t.slice(11, 13)
      }:${t.slice(13, 15)}Z`;
      out.push({ name: e.name, database: m[1] as DatabaseName, bytes: info.size, createdAt });
    }
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw e;
  }
  return out.sort((a, b) => b.createdAt.localeCompare(a.createdAt) || b.name.localeCompare(a.name));
}

/** Free bytes for unprivileged writes on the volume of `directory` (its nearest existing parent). */
export function freeDiskBytes(directory: string): number {
  let dir = directory;
  while (dir && !fs.existsSync(dir)) dir = dir.slice(0, dir.lastIndexOf("/")) || "/";
  const s = fs.statfsSync(dir || "/");
  return Number(s.bavail) * Number(s.bsize);
}

/** Deletes bundles of `db` older than its retention at `now`, never the newest one. Returns their names. */
export async function cleanupBundles(
  directory: string,
  db: DatabaseName,
  retentionDays: number,
  now: Date,
): Promise<string[]> {
  const bundles = (await listBundles(directory)).filter((b) => b.database === db);
  const cutoff = now.getTime() - retentionDays * 86_400_000;
  const removed: string[] = [];
  for (const b of bundles.slice(1)) {
    if (Date.parse(b.createdAt) < cutoff) {
      await Deno.remove(`${directory}/${b.name}`);
      removed.push(b.name);
    }
  }
  return removed;
}

async function saveTrigger(kv: Deno.Kv, trigger: Trigger): Promise<void> {
  await kv.set(selfBackupTriggerKey(trigger.id), trigger);
}

/**
 * Runs one backup of `database` and records it as a trigger. Never throws for an operational failure
 * (low disk, write error, S3 error): the trigger says what happened. A second run while one is going
 * is refused with ConflictError.
 */
export async function runBackup(
  kv: Deno.Kv,
  input: { database: DatabaseName; kind: Trigger["kind"]; requestedBy: string },
  options: { clock: () => Date; masterKey: Uint8Array; dataDir: string },
): Promise<Trigger> {
  const { clock, masterKey } = options;
  const settings = await getSettings(kv, options.dataDir);
  const started = clock();
  const trigger: Trigger = {
    id: newId(started),
    database: input.database,
    kind: input.kind,
    requestedBy: input.requestedBy,
    requestedAt: started.toISOString(),
    finishedAt: null,
    status: "running",
    error: null,
    progress: { phase: "starting", entries: 0 },
    bundle: null,
    s3: { status: "skipped", error: null },
    verification: { status: "skipped", error: null },
  };
  const worker = await kv.get<{ triggerId: string | null }>(selfBackupWorkerKey());
  if (worker.value?.triggerId) {
    throw new ConflictError("A self-backup is already running; wait for it or restart the worker");
  }
  const claimed = await kv.atomic().check(worker).set(selfBackupWorkerKey(), {
    triggerId: trigger.id,
    since: trigger.requestedAt,
  })
    .set(selfBackupTriggerKey(trigger.id), trigger).commit();
  if (!claimed.ok) {
    throw new ConflictError("A self-backup is already running; wait for it or restart the worker");
  }

  const cancelled = async () =>
    (await kv.get<{ triggerId: string | null }>(selfBackupWorkerKey())).value?.triggerId !== trigger.id;
  const phase = async (name: string, entries = trigger.progress.entries) => {
    if (await cancelled()) throw new Error("Cancelled: the backup worker was restarted");
    trigger.progress = { phase: name, entries };
    await saveTrigger(kv, trigger);
  };
  try {
    const free = freeDiskBytes(settings.directory);
    if (free < settings.minFreeBytes) {
      throw new Error(
        `Refused: free disk ${formatGiB(free)} on the backup volume is below the minimum ${
          formatGiB(settings.minFreeBytes)
        }`,
      );
    }
    await phase("exporting");
    let lastReport = 0;
    const { entries, consistent } = await exportDatabase(kv, input.database, {
      onProgress: (n) => {
        if (n - lastReport >= 1000) {
          lastReport = n;
          void phase("exporting", n).catch(() => {});
        }
      },
    });
    if (await cancelled()) throw new Error("Cancelled: the backup worker was restarted");
    await phase("encrypting", entries.length);
    const at = clock();
    const bundle = await sealBundle(
      entries,
      { database: input.database, createdAt: at, consistent },
      masterKey,
    );
    const name = `${input.database}-${at.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z")}-${
      trigger.id.slice(-6)
    }${BUNDLE_SUFFIX}`;
    await phase("writing", entries.length);
    await Deno.mkdir(settings.directory, { recursive: true });
    await Deno.writeFile(`${settings.directory}/${name}`, bundle, { mode: 0o600 });
    trigger.bundle = { file: name, bytes: bundle.length, entries: entries.length, consistent };
    const s3 = await s3Location(kv, settings.s3, masterKey);
    if (s3) {
      await phase("uploading", entries.length);
      try {
        await putObject(s3, name, bundle);
        trigger.s3 = { status: "uploaded", error: null };
      } catch (e) {
        trigger.s3 = { status: "failed", error: (e as Error).message };
      }
    }
    await phase("verifying", entries.length);
    trigger.verification = await verifyRestorable(bundle, masterKey, entries.length);
    if (trigger.verification.status === "passed") {
      await kv.set(selfBackupVerifiedKey(input.database), { at: clock().toISOString(), file: name });
    }
    // Old bundles go only once a newer one has proven restorable.
    if (trigger.verification.status === "passed") {
      await phase("cleaning up", entries.length);
      const days = settings[input.database].retentionDays;
      await cleanupBundles(settings.directory, input.database, days, clock());
    }
    trigger.status = trigger.verification.status === "passed" && trigger.s3.status !== "failed"
      ? "success"
      : "failed";
    trigger.error = trigger.verification.error ?? trigger.s3.error;
  } catch (e) {
    trigger.status = "failed";
    trigger.error = (e as Error).message;
  }
  trigger.finishedAt = clock().toISOString();
  trigger.progress = { phase: "done", entries: trigger.progress.entries };
  await finishTrigger(kv, trigger);
  return trigger;
}

async function finishTrigger(kv: Deno.Kv, trigger: Trigger): Promise<void> {
  // A run whose worker was restarted meanwhile was already recorded failed and counted by
  // `restartWorker`: it is left as that. Commit retry (retry.ts): ten lost races throw CommitConflictError,
  // never return as if the run had been recorded (it would stay running and hold the worker).
  await withRetry(
    async () => {
      const [counters, worker] = await kv.getMany<
        [{ total: number; success: number; failed: number }, { triggerId: string | null }]
      >([selfBackupCountersKey(), selfBackupWorkerKey()]);
      if (worker.value?.triggerId !== trigger.id) return { value: undefined };
      const c = counters.value ?? { total: 0, success: 0, failed: 0 };
      const op = kv.atomic().check(counters, worker).set(selfBackupTriggerKey(trigger.id), trigger).set(
        selfBackupCountersKey(),
        {
          total: c.total + 1,
          success: c.success + (trigger.status === "success" ? 1 : 0),
          failed: c.failed + (trigger.status === "failed" ? 1 : 0),
        },
      ).set(selfBackupWorkerKey(), { triggerId: null, since: trigger.finishedAt });
      if (trigger.status === "success") {
        op.set(selfBackupLastSuccessKey(trigger.database), {
          at: trigger.finishedAt,
          file: trigger.bundle?.file ?? null,
        });
      }
      return (await op.commit()).ok ? { value: undefined } : null;
    },
    10,
    `Self-backup run ${trigger.id} could not be recorded (concurrent writers); restart the worker`,
  );
}

/**
 * Test-restores a bundle into a scratch in-memory KV: authenticity, entry count, schema version, and
 * (for the Config DB) the cross-key invariants, whose vault-ownership rule knows every owner of a vault
 * record from one list (vault_owners.ts).
 */
export async function verifyRestorable(
  bundle: Uint8Array,
  masterKey: Uint8Array,
  expectedEntries: number,
): Promise<{ status: "passed" | "failed"; error: string | null }> {
  using scratch = await Deno.openKv(":memory:");
  try {
    const { header } = await openBundle(bundle, masterKey);
    if (header.entryCount !== expectedEntries) {
      throw new Error(`expected ${expectedEntries} entries, the bundle has ${header.entryCount}`);
    }
    if (header.schemaVersion !== SCHEMA_VERSION) {
      throw new Error(`schema version ${header.schemaVersion} ≠ ${SCHEMA_VERSION}`);
    }
    const { written } = await restoreBundle(scratch, bundle, masterKey);
    if (written !== expectedEntries) throw new Error(`restored ${written} of ${expectedEntries} entries`);
    if (header.database === "config") {
      const problems = await checkInvariants(scratch);
      if (problems.length) throw new Error(`invariant check failed: ${problems.slice(0, 3).join("; ")}`);
    }
    return { status: "passed", error: null };
  } catch (e) {
    return { status: "failed", error: `Verification failed: ${(e as Error).message}` };
  }
}

/** Maintenance: frees the worker; a running trigger stops at its next phase and is recorded as failed. */
export async function restartWorker(
  kv: Deno.Kv,
  actor: Actor,
  now: Date,
): Promise<{ abandoned: string | null }> {
  await authorizePlatformAdmin(kv, actor);
  const [worker, counters] = await kv.getMany<
    [{ triggerId: string | null }, { total: number; success: number; failed: number }]
  >([selfBackupWorkerKey(), selfBackupCountersKey()]);
  const abandoned = worker.value?.triggerId ?? null;
  const op = kv.atomic().check(worker, counters).set(selfBackupWorkerKey(), {
    triggerId: null,
    since: now.toISOString(),
  });
  if (abandoned) {
    const t = (await kv.get<Trigger>(selfBackupTriggerKey(abandoned))).value;
    if (t && t.status === "running") {
      // Counted here, as failed: the run itself stops at its next step without counting again.
      const c = counters.value ?? { total: 0, success: 0, failed: 0 };
      op.set(selfBackupCountersKey(), { total: c.total + 1, success: c.success, failed: c.failed + 1 });
      op.set(selfBackupTriggerKey(abandoned), {
        ...t,
        status: "failed",
        error: "Abandoned: the backup worker was restarted",
        finishedAt: now.toISOString(),
      });
    }
  }
  await commitAudited(
    op,
    actor,
    selfBackupAudit(
      actor,
      "self_backup.restart_worker",
      "worker",
      abandoned
        ? `Restarted the backup worker, abandoning trigger ${abandoned}`
        : "Restarted the backup worker",
    ),
    now,
    "The worker changed state; try again",
  );
  return { abandoned };
}

/** Records who asked for a manual backup (audit) and runs it. */
export async function triggerManualBackup(
  kv: Deno.Kv,
  actor: Actor,
  database: DatabaseName,
  options: { clock: () => Date; masterKey: Uint8Array; dataDir: string },
): Promise<Trigger> {
  await authorizePlatformAdmin(kv, actor);
  const op = kv.atomic();
  appendAudit(
    op,
    actor,
    selfBackupAudit(
      actor,
      "self_backup.trigger",
      database,
      `Requested a manual backup of the ${database === "config" ? "Config" : "Results"} DB`,
    ),
    options.clock(),
  );
  await op.commit();
  return await runBackup(kv, { database, kind: "manual", requestedBy: actor.label }, options);
}

/** The next scheduled run of a database after `now` (daily at `hour`:00 UTC), or null when off. */
export function nextRun(schedule: { enabled: boolean; hour: number }, now: Date): string | null {
  if (!schedule.enabled) return null;
  const next = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate(), schedule.hour));
  if (next.getTime() <= now.getTime()) next.setUTCDate(next.getUTCDate() + 1);
  return next.toISOString();
}

/**
 * The minute job: runs each enabled database's backup in the hour it is scheduled, once per day
 * (claimed atomically, so two instances never both run it).
 */
export async function runScheduledBackups(
  kv: Deno.Kv,
  options: { now: Date; clock: () => Date; masterKey: Uint8Array; dataDir: string },
): Promise<Trigger[]> {
  const settings = await getSettings(kv, options.dataDir);
  const done: Trigger[] = [];
  for (const db of ["config", "results"] as const) {
    const s = settings[db];
    if (!s.enabled || options.now.getUTCHours() !== s.hour) continue;
    const slot = options.now.toISOString().slice(0, 13);
    const res = await kv.atomic().check({ key: selfBackupSlotKey(db, slot), versionstamp: null })
      .set(selfBackupSlotKey(db, slot), true, { expireIn: 2 * 86_400_000 }).commit();
    if (!res.ok) continue;
    try {
      done.push(await runBackup(kv, { database: db, kind: "scheduled", requestedBy: "scheduler" }, options));
    } catch (e) {
      if (!(e instanceof ConflictError)) throw e;
      // Another backup is running: give the hour back so a later minute of it runs this one.
      await kv.delete(selfBackupSlotKey(db, slot));
    }
  }
  return done;
}

/** S3 reachability, cached 5 minutes in KV (tolerates staleness; shared by all instances). */
export async function s3Reachability(
  kv: Deno.Kv,
  options: { now: Date; masterKey: Uint8Array; dataDir: string; refresh?: boolean },
): Promise<{ reachable: boolean | null; checkedAt: string | null; error: string | null }> {
  const settings = await getSettings(kv, options.dataDir);
  if (!settings.s3.enabled) return { reachable: null, checkedAt: null, error: null };
  const cached =
    (await kv.get<{ reachable: boolean; checkedAt: string; error: string | null }>(selfBackupS3ProbeKey()))
      .value;
  if (!options.refresh && cached && options.now.getTime() - Date.parse(cached.checkedAt) < S3_PROBE_TTL_MS) {
    return cached;
  }
  const loc = await s3Location(kv, settings.s3, options.masterKey);
  const probe = loc ? await probeBucket(loc) : { reachable: false, error: "No S3 credentials stored" };
  const value = { reachable: probe.reachable, checkedAt: options.now.toISOString(), error: probe.error };
  await kv.set(selfBackupS3ProbeKey(), value, { expireIn: S3_PROBE_TTL_MS * 2 });
  return value;
}

/** Recent triggers, newest first. */
export async function listTriggers(kv: Deno.Kv, limit = 20): Promise<Trigger[]> {
  const out: Trigger[] = [];
  for await (const e of kv.list<Trigger>({ prefix: selfBackupTriggersPrefix() }, { reverse: true, limit })) {
    out.push(e.value);
  }
  return out;
}

function formatGiB(bytes: number): string {
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

/** Everything the spec's Health > Backup view shows (GET /api/health/infra/backup). */
export async function backupHealth(
  kv: Deno.Kv,
  actor: Actor,
  options: { now: Date; masterKey: Uint8Array; dataDir: string },
) {
  await authorizePlatformAdmin(kv, actor);
  const { now } = options;
  const settings = await getSettings(kv, options.dataDir);
  const [bundles, counters, recent, s3, worker, verifiedConfig, verifiedResults] = await Promise.all([
    listBundles(settings.directory),
    kv.get<{ total: number; success: number; failed: number }>(selfBackupCountersKey()),
    listTriggers(kv, 20),
    s3Reachability(kv, options),
    kv.get<{ triggerId: string | null }>(selfBackupWorkerKey()),
    kv.get<{ at: string; file: string }>(selfBackupVerifiedKey("config")),
    kv.get<{ at: string; file: string }>(selfBackupVerifiedKey("results")),
  ]);
  const free = freeDiskBytes(settings.directory);
  const lastCompleted = recent.find((t) => t.status !== "running") ?? null;
  const newest = (db: DatabaseName) => bundles.find((b) => b.database === db)?.createdAt ?? null;
  /** A daily schedule's period is 24 h: warn when the newest bundle is older than 1.5 × that. */
  const stale = (db: DatabaseName) => {
    if (!settings[db].enabled) return false;
    const n = newest(db);
    return !n || now.getTime() - Date.parse(n) > 1.5 * 86_400_000;
  };
  const c = counters.value ?? { total: 0, success: 0, failed: 0 };
  return {
    configSchedule: { enabled: settings.config.enabled, hourUtc: settings.config.hour },
    resultsSchedule: { enabled: settings.results.enabled, hourUtc: settings.results.hour },
    configRetentionDays: settings.config.retentionDays,
    resultsRetentionDays: settings.results.retentionDays,
    nextConfigBackup: nextRun(settings.config, now),
    nextResultsBackup: nextRun(settings.results, now),
    bundleCount: bundles.length,
    totalSizeBytes: bundles.reduce((n, b) => n + b.bytes, 0),
    freeDiskBytes: free,
    minFreeBytes: settings.minFreeBytes,
    freeDiskBelowMinimum: free < settings.minFreeBytes,
    oldestBundle: bundles.at(-1)?.createdAt ?? null,
    newestBundle: bundles[0]?.createdAt ?? null,
    encryption: { encrypted: true, algorithm: BUNDLE_CIPHER },
    s3Bucket: settings.s3.enabled ? settings.s3.bucket : null,
    s3Reachable: s3.reachable,
    s3CheckedAt: s3.checkedAt,
    s3Error: s3.error,
    totalTriggers: c.total,
    successfulTriggers: c.success,
    failedTriggers: c.failed,
    recentTriggers: recent.map((t) => ({
      id: t.id,
      database: t.database,
      kind: t.kind,
      requestedBy: t.requestedBy,
      requestedAt: t.requestedAt,
      finishedAt: t.finishedAt,
      status: t.status,
      error: t.error,
      progress: t.progress,
      bundle: t.bundle,
      s3: t.s3,
      verification: t.verification,
    })),
    /** Judged by the most recent completed trigger only. */
    health: (lastCompleted ? (lastCompleted.status === "success" ? "healthy" : "unhealthy") : "unknown") as
      | "healthy"
      | "unhealthy"
      | "unknown",
    running: worker.value?.triggerId ?? null,
    lastVerifiedRestorable: {
      config: verifiedConfig.value?.at ?? null,
      results: verifiedResults.value?.at ?? null,
    },
    newestBundleStale: { config: stale("config"), results: stale("results") },
    directory: settings.directory,
  };
}
