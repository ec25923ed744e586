/**
 * Third-party platforms (guide, "Third-Party Platform Integration"): Veeam B&R and Cohesity servers
 * registered per org, with their password in the vault, and the sync that imports their jobs, runs and
 * protected objects so the Jobs view, the protected objects list and the dashboard treat them like
 * native ones.
 *
 * What a sync writes, with `source` = the platform:
 * - a platform job per vendor job (`platform_jobs`): the "policy" of its runs, so its runs live in
 *   `runs_by_policy` under the platform job's id and the Jobs view reads them like a policy's;
 * - a `Run` per vendor run (Veeam session, Cohesity protection run), `hostId: null` (a vendor run is
 *   job-level), its id a ULID of the vendor's start time so history sorts by when runs started;
 *   `platform_runs` maps the vendor run id to it, so a run is imported once however often it is read,
 *   and its outcome is counted on the dashboard (`countRunOutcome`) exactly once, when it first
 *   becomes final;
 * - a protected object per vendor object, written through `writeProtected` (counters and indexes
 *   exact), with `hostId` = `platform:<platformId>` (no managed host), the platform's default RPO, and
 *   its last backup from the newest final run of its jobs (per object when the vendor reports it).
 *
 * The sync itself (its order, idempotence, and what a failure part-way keeps) is platform_sync.ts.
 *
 * Deleting a platform removes its credential, its imported jobs and protected objects (their counters,
 * indexes and open alerts); the runs stay as history in the results database, like a deleted policy's.
 */
import { z } from "zod";
import { readOpenAlert, resolveAlert } from "./alerts.ts";
import { appendAudit, auditTarget, commitAudited } from "./audit.ts";
import {
  PLATFORM_TYPE_LABELS,
  PLATFORM_TYPES,
  type PlatformType,
  type VendorJobType,
} from "./connectors/types.ts";
import { VEEAM_DEFAULT_API_VERSION } from "./connectors/veeam.ts";
import { type LatestOutcome, latestOutcomeKey } from "./dashboard.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { newId } from "./ids.ts";
import { RETRY_SCAN_LIMIT, retryBlockedReason, type RetryFacts } from "./job_rules.ts";
import { withRetry } from "./kv.ts";
import { deleteKeysUnder, readByPointerIndex } from "./pointer_index.ts";
import {
  deleteProtected,
  isRpoBreached,
  type ProtectedObject,
  protectedObjectKey,
  writeProtected,
} from "./protected.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import { listRunsByPolicy, notStartedRunFields, type Run } from "./runs.ts";
import { retryGuardKey, runKey, runsByPolicyKey } from "./keys/runs.ts";
import { resolveOwner } from "./tenancy.ts";
import { DisplayName } from "./validation.ts";
import { replaceVaultRecord, type SealingOptions, sealOwnedSecret, vaultKey } from "./vault.ts";
import {
  platformByEndpointIdentityKey,
  platformJobByVendorKey,
  platformJobKey,
  platformJobsByAccountKey,
  platformJobsByAccountPrefix,
  platformJobsByVendorPrefix,
  platformKey,
  platformObjectKey,
  platformObjectsPrefix,
  platformPendingKey,
  platformPendingPrefix,
  platformRunKey,
  platformRunsPrefix,
  platformsByAccountKey,
  platformsByAccountPrefix,
  syncLockKey,
} from "./keys/platforms.ts";
export {
  platformJobByVendorKey,
  platformJobKey,
  platformJobsByAccountKey,
  platformKey,
  platformObjectKey,
  platformPendingKey,
  platformRunKey,
  platformsByAccountKey,
  syncLockKey,
};

export { PLATFORM_TYPE_LABELS, PLATFORM_TYPES, type PlatformType };

/** How far back the first sync of a platform imports runs. */
export const INITIAL_LOOKBACK_DAYS = 30;
/** Runs that started this long before the watermark are read again (late writes, clock skew). */
export const WATERMARK_OVERLAP_MS = 3_600_000;
/** A sync holds its platform's lock at most this long (a crashed sync frees it then). */
const SYNC_LEASE_MS = 15 * 60_000;

// ---------------------------------------------------------------------------------------------------
// Input

const LOOPBACK = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i;

/** The vendor API's base URL: https (plain http only for loopback, i.e. tests), no credentials or query. */
export const EndpointUrl = z.string({ error: "is required" }).trim().min(1, "is required")
  .max(500, "must be at most 500 characters").superRefine((v, ctx) => {
    let url: URL;
    try {
      url = new URL(v);
    } catch {
      ctx.addIssue({ code: "custom", message: "must be a URL such as https://vbr01.example.com:9419" });
      return;
    }
    if (url.protocol !== "https:" && !(url.protocol === "http:" && LOOPBACK.test(url.hostname))) {
      ctx.addIssue({
        code: "custom",
        message: "must use https (plain http is accepted only for localhost, for testing)",
      });
    }
    if (url.username || url.password) {
      ctx.addIssue({
        code: "custom",
        message: "must not contain credentials: use the user name and password",
      });
    }
    if (url.search || url.hash) {
      ctx.addIssue({ code: "custom", message: "must not contain a query or fragment" });
    }
  }).transform((v) => v.replace(/\/+$/, ""));

const PEM = /^-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+-----END CERTIFICATE-----\s*$/;

/** An extra CA certificate (PEM) to trust for the endpoint; "" means none. */
export const CaCertificate = z.string().trim().max(20_000, "must be at most 20000 characters")
  .refine((v) => v === "" || PEM.test(v), "must be one PEM certificate (-----BEGIN CERTIFICATE----- …)")
  .refine((v) => {
    if (v === "") return true;
    try {
      Deno.createHttpClient({ caCerts: [v] }).close();
      return true;
    } catch {
      return false;
    }
  }, "is not a readable certificate")
  .transform((v) => v === "" ? null : v);

const Username = z.string({ error: "is required" }).trim().min(1, "is required")
  .max(200, "must be at most 200 characters").regex(/^[^\p{Cc}]+$/u, "must not contain control characters");

const Fields = {
  name: DisplayName,
  endpointUrl: EndpointUrl,
  username: Username,
  /** Cohesity: the login domain; "" means LOCAL. */
  domain: z.string().trim().max(200, "must be at most 200 characters")
    .regex(/^[\w.-]*$/, "must be a domain such as LOCAL or corp.example.com").optional()
    .transform((v) => v || "LOCAL"),
  /**
   * Veeam: the `x-api-version` header; "" means the default. 1.1 (VBR 12) or later: before it a session
   * does not name its job, so no run could be imported.
   */
  apiVersion: z.string().trim().regex(/^$|^\d+\.\d+-rev\d+$/, "must be an API revision such as 1.1-rev2")
    .refine((v) => {
      const m = /^(\d+)\.(\d+)-/.exec(v);
      return !m || Number(m[1]) > 1 || (Number(m[1]) === 1 && Number(m[2]) >= 1);
    }, "must be 1.1-rev0 or later (Veeam Backup & Replication 12 or later)")
    .optional().transform((v) => v || VEEAM_DEFAULT_API_VERSION),
  caCertificate: CaCertificate.nullish().transform((v) => v ?? null),
  syncIntervalMinutes: z.coerce.number({ error: "must be a number" }).int("must be a whole number")
    .min(5, "must be 5–1440 minutes").max(1440, "must be 5–1440 minutes").default(60),
  defaultRpoHours: z.coerce.number({ error: "must be a number" }).int("must be a whole number")
    .min(1, "must be 1–8760 hours").max(8760, "must be 1–8760 hours").default(24),
  syncEnabled: z.boolean({ error: "must be true or false" }).default(true),
};

type PlatformSettings = z.output<z.ZodObject<typeof Fields>>;

/** The settings of a create or update input: the fields both share (`Fields`), not the password. */
function platformSettings(data: PlatformSettings): PlatformSettings {
  const keys = Object.keys(Fields) as Array<keyof PlatformSettings>;
  return Object.fromEntries(keys.map((k) => [k, data[k]])) as PlatformSettings;
}

/** Registering a platform: one schema for the form, the JSON API and the domain. */
export const PlatformCreateInput = z.object({
  type: z.enum(PLATFORM_TYPES, { error: `must be one of ${PLATFORM_TYPES.join(", ")}` }),
  orgId: z.string({ error: "is required" }).trim().min(1, "is required").max(64, "must be an org id"),
  ...Fields,
  password: z.string({ error: "is required" }).min(1, "is required").max(
    1024,
    "must be at most 1024 characters",
  ),
});
export type PlatformCreateInput = z.input<typeof PlatformCreateInput>;

/** Editing a platform: type and org are fixed; a password replaces the stored one, none keeps it. */
export const PlatformUpdateInput = z.object({
  ...Fields,
  password: z.string().max(1024, "must be at most 1024 characters").nullish().transform((v) => v || null),
});
export type PlatformUpdateInput = z.input<typeof PlatformUpdateInput>;

// ---------------------------------------------------------------------------------------------------
// Records and keys

export type SyncStage = "connect" | "jobs" | "retries" | "runs" | "objects";

/** What one sync did (kept on the platform as `lastSync`). */
export interface SyncReport {
  status: "success" | "failed";
  startedAt: string;
  endedAt: string;
  /** The stage that failed (null on success). */
  stage: SyncStage | null;
  /** Why it failed, in words for the operator; never a credential. */
  error: string | null;
  /** Things that did not stop the sync (a retry whose start must wait for the next sync). */
  warnings: string[];
  jobs: { created: number; updated: number; removed: number };
  runs: { imported: number; updated: number };
  objects: { created: number; updated: number; unprotected: number };
  retries: { started: number; failed: number; deferred: number };
}

export interface Platform {
  id: string;
  accountId: string;
  orgId: string;
  type: PlatformType;
  name: string;
  endpointUrl: string;
  username: string;
  /** Vault record of the password; never rendered, logged or returned. */
  credentialId: string | null;
  credentialRotatedAt: string | null;
  domain: string;
  apiVersion: string;
  /** PEM of an extra CA to trust; TLS verification itself is always on. */
  caCertificate: string | null;
  syncIntervalMinutes: number;
  defaultRpoHours: number;
  syncEnabled: boolean;
  /** `deleting` while its jobs and objects are being removed. */
  status: "active" | "deleting";
  lastSync: SyncReport | null;
  lastSuccessAt: string | null;
  lastTest: { at: string; ok: boolean; message: string } | null;
  /** Incremental sync: runs are read from `watermark − overlap` or the oldest run still in flight. */
  syncState: { watermark: string | null; openSince: string | null };
  createdAt: string;
  updatedAt: string;
}

/** A vendor job as imported. */
export interface PlatformJob {
  id: string;
  platformId: string;
  platformType: PlatformType;
  accountId: string;
  orgId: string;
  vendorJobId: string;
  name: string;
  vendorType: string;
  jobType: VendorJobType;
  objectType: string | null;
  enabled: boolean;
  /** No longer listed by the platform (deleted there); kept with its history. */
  removed: boolean;
  /** The newest final run's outcome (success, warning or failed). */
  lastOutcome: { status: "success" | "warning" | "failed"; endedAt: string } | null;
  lastSuccessAt: string | null;
  sourceIds?: string[];
  createdAt: string;
  updatedAt: string;
}

/** What a platform run carries besides a native run's fields. */
export interface PlatformRunInfo {
  platformId: string;
  /** The vendor's run id (null for a retry until its vendor run is known). */
  runId: string | null;
  jobType: VendorJobType;
  /** When a retry's start was requested from the vendor. */
  startRequestedAt: string | null;
}
export type PlatformRun = Run & { platform: PlatformRunInfo };

/**
 * Unique: one platform per (account, type, endpoint). The same server registered twice would import every
 * job, run and object twice, and count them twice on the dashboard.
 */
export function platformByEndpointKey(accountId: string, type: string, endpointUrl: string) {
  return platformByEndpointIdentityKey(accountId, type, endpointIdentity(endpointUrl));
}
/** The endpoint as a server identity: lower-case origin and path without trailing slashes. */
export function endpointIdentity(endpointUrl: string): string {
  try {
    const url = new URL(endpointUrl);
    return `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, "")}`.toLowerCase();
  } catch {
    return endpointUrl.trim().toLowerCase();
  }
}
const DUPLICATE_ENDPOINT = "This server is already registered as a platform of this type in your account";

/** True for a run that will not change any more. */
export function isFinalRun(status: Run["status"]): boolean {
  return status === "success" || status === "warning" || status === "failed" || status === "skipped";
}

export function platformScope(p: Pick<Platform, "accountId" | "orgId">) {
  return { accountId: p.accountId, orgId: p.orgId };
}

/** A platform as pages and the API show it: the vault record id stays internal. */
export function toPublicPlatform(p: Platform) {
  const { credentialId, ...rest } = p;
  return { ...rest, hasCredentials: credentialId !== null };
}

// ---------------------------------------------------------------------------------------------------
// CRUD

export async function getPlatform(kv: Deno.Kv, id: string): Promise<Platform | null> {
  return (await kv.get<Platform>(platformKey(id))).value;
}

/** The platform if the actor may see it (and it is not being deleted). Throws NotFoundError otherwise. */
export async function requirePlatform(kv: Deno.Kv, actor: Actor, id: string): Promise<Platform> {
  const p = await getPlatform(kv, id);
  if (!p || p.status === "deleting" || !inScope(actor, platformScope(p))) {
    throw new NotFoundError(`Platform ${id} not found`);
  }
  return p;
}

/** The platforms of the actor's account inside its org scope, by name. */
export async function listPlatforms(kv: Deno.Kv, actor: Actor): Promise<Platform[]> {
  authorize(actor, "backup.view");
  if (!actor.accountId) return [];
  return (await readByPointerIndex<Platform>(kv, platformsByAccountPrefix(actor.accountId), platformKey))
    .filter((p) => p.status !== "deleting" && inScope(actor, platformScope(p)))
    .sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
}

/**
 * Registers a platform in an org the actor may manage; the password goes to the vault in the same
 * atomic operation as the platform and its audit entry. Throws ValidationError for an unknown org.
 */
export async function createPlatform(
  kv: Deno.Kv,
  actor: Actor,
  input: PlatformCreateInput,
  options: SealingOptions,
): Promise<Platform> {
  const data = PlatformCreateInput.parse(input);
  const { now, masterKey } = options;
  const org = (await resolveOwner(kv, actor, { orgId: data.orgId }, { orgRequired: true })).org!;
  authorize(actor, "backup.manage", { accountId: org.accountId, orgId: org.id });
  const at = now.toISOString();
  const id = newId(now);
  const owner = { accountId: org.accountId, orgId: org.id };
  const vault = await sealOwnedSecret(masterKey, owner, `platform:${id}`, data.password, now);
  const platform: Platform = {
    id,
    accountId: org.accountId,
    orgId: org.id,
    type: data.type,
    ...platformSettings(data),
    credentialId: vault.id,
    credentialRotatedAt: at,
    status: "active",
    lastSync: null,
    lastSuccessAt: null,
    lastTest: null,
    syncState: { watermark: null, openSince: null },
    createdAt: at,
    updatedAt: at,
  };
  const endpointKey = platformByEndpointKey(platform.accountId, platform.type, platform.endpointUrl);
  if ((await kv.get(endpointKey)).value) {
    throw new ValidationError(DUPLICATE_ENDPOINT, { endpointUrl: DUPLICATE_ENDPOINT });
  }
  const op = kv.atomic()
    .check({ key: platformKey(id), versionstamp: null }, { key: endpointKey, versionstamp: null })
    .set(platformKey(id), platform)
    .set(platformsByAccountKey(platform.accountId, id), id)
    .set(endpointKey, id)
    .set(vaultKey(vault.id), vault);
  appendAudit(op, actor, {
    ...auditTarget("platform", platform),
    action: "platform.create",
    summary:
      `Registered ${
        PLATFORM_TYPE_LABELS[platform.type]
      } platform ${platform.name} at ${platform.endpointUrl} ` +
      `(org ${org.name}); its password is in the vault`,
  }, now);
  if (!(await op.commit()).ok) {
    if ((await kv.get(endpointKey)).value) {
      throw new ValidationError(DUPLICATE_ENDPOINT, { endpointUrl: DUPLICATE_ENDPOINT });
    }
    throw new ConflictError("Could not register the platform; try again");
  }
  return platform;
}

/**
 * Updates a platform's connection and sync settings; a new password replaces the vault record
 * (rotation). Type and org never change. A new default RPO reaches the platform's objects.
 * Pointing the platform at another endpoint or trusting another CA needs the password typed again:
 * otherwise anyone with backup.manage could send the stored password to a server of their choosing
 * (Test connectivity logs in there). Throws ValidationError (field `password`) then.
 */
export async function updatePlatform(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: PlatformUpdateInput,
  options: SealingOptions,
): Promise<Platform> {
  const data = PlatformUpdateInput.parse(input);
  const { now, masterKey } = options;
  const { next, rpoChanged } = await withRetry(async () => {
    const entry = await kv.get<Platform>(platformKey(id));
    const p = entry.value;
    if (!p || p.status === "deleting" || !inScope(actor, platformScope(p))) {
      throw new NotFoundError(`Platform ${id} not found`);
    }
    authorize(actor, "backup.manage", platformScope(p));
    if (!data.password && (data.endpointUrl !== p.endpointUrl || data.caCertificate !== p.caCertificate)) {
      const message = "Type the password again to use it with another endpoint or CA certificate";
      throw new ValidationError(message, { password: message });
    }
    const at = now.toISOString();
    const next: Platform = { ...p, ...platformSettings(data), updatedAt: at };
    const op = kv.atomic().check(entry);
    const oldKey = platformByEndpointKey(p.accountId, p.type, p.endpointUrl);
    const newKey = platformByEndpointKey(p.accountId, p.type, next.endpointUrl);
    if (JSON.stringify(oldKey) !== JSON.stringify(newKey)) {
      const taken = await kv.get<string>(newKey);
      if (taken.value && taken.value !== id) {
        throw new ValidationError(DUPLICATE_ENDPOINT, { endpointUrl: DUPLICATE_ENDPOINT });
      }
      op.check(taken).delete(oldKey).set(newKey, id);
    }
    if (data.password) {
      const vault = await sealOwnedSecret(masterKey, p, `platform:${id}`, data.password, now);
      replaceVaultRecord(op, p.credentialId, vault);
      next.credentialId = vault.id;
      next.credentialRotatedAt = at;
    }
    op.set(platformKey(id), next);
    appendAudit(op, actor, {
      ...auditTarget("platform", p),
      action: "platform.update",
      summary:
        `Updated platform ${next.name} (${next.endpointUrl}, sync every ${next.syncIntervalMinutes} min` +
        `${next.syncEnabled ? "" : ", sync off"}, RPO ${next.defaultRpoHours} h)` +
        (data.password ? "; rotated its password" : ""),
    }, now);
    // The RPO change is judged against the platform this write replaced (not an earlier read).
    const rpoChanged = next.defaultRpoHours !== p.defaultRpoHours;
    return (await op.commit()).ok ? { value: { next, rpoChanged } } : null;
  });
  if (rpoChanged) await applyPlatformRpo(kv, next, now);
  return next;
}

/**
 * Rewrites one protected object of a platform in a checked write, retried on conflict: `change(o)` returns
 * its next state, or null when nothing changes; `alerts` adds to the same write the alerts the change
 * raises or resolves. Nothing when the object is gone. Returns whether it wrote.
 */
export async function rewritePlatformObject(
  kv: Deno.Kv,
  id: string,
  change: (o: ProtectedObject) => ProtectedObject | null,
  alerts: (op: Deno.AtomicOperation, o: ProtectedObject, next: ProtectedObject) => Promise<void>,
): Promise<boolean> {
  return await withRetry(async () => {
    const entry = await kv.get<ProtectedObject>(protectedObjectKey(id));
    const o = entry.value;
    const next = o ? change(o) : null;
    if (!o || !next) return { value: false };
    const op = kv.atomic().check(entry);
    writeProtected(op, o, next);
    await alerts(op, o, next);
    return (await op.commit()).ok ? { value: true } : null;
  });
}

/** Adds to `op` the resolution of an object's rpo_breach alert when `next` ends its breach. */
export async function resolveEndedBreach(
  kv: Deno.Kv,
  op: Deno.AtomicOperation,
  o: ProtectedObject,
  next: ProtectedObject,
  now: Date,
): Promise<void> {
  if (o.breached && !next.breached) {
    resolveAlert(op, await readOpenAlert(kv, "protected_object", o.id, "rpo_breach"), now);
  }
}

/** Carries a platform's new default RPO to its objects, one checked write each (breaches re-evaluated). */
async function applyPlatformRpo(kv: Deno.Kv, platform: Platform, now: Date): Promise<void> {
  for await (const e of kv.list<string>({ prefix: platformObjectsPrefix(platform.id) })) {
    await rewritePlatformObject(kv, e.value, (o) => {
      if (o.rpoHours === platform.defaultRpoHours) return null;
      const next: ProtectedObject = {
        ...o,
        rpoHours: platform.defaultRpoHours,
        updatedAt: now.toISOString(),
      };
      if (next.breached && !isRpoBreached(next, now)) next.breached = false;
      return next;
    }, (op, o, next) => resolveEndedBreach(kv, op, o, next, now));
  }
}

/**
 * A run of a platform job that has not started: nothing transferred, no outcome yet (the sync imports a
 * vendor run as one, a retry creates one); `at` is its creation time.
 */
export function pendingPlatformRun(
  run: Pick<
    PlatformRun,
    "id" | "policyId" | "accountId" | "orgId" | "kind" | "trigger" | "scheduledFor" | "platform"
  >,
  at: string,
): PlatformRun {
  return {
    id: run.id,
    policyId: run.policyId,
    accountId: run.accountId,
    orgId: run.orgId,
    hostId: null,
    kind: run.kind,
    trigger: run.trigger,
    scheduledFor: run.scheduledFor,
    ...notStartedRunFields(at),
    errorLine: null,
    platform: run.platform,
  };
}

/** Counts shown on the delete confirmation. */
export async function platformFootprint(
  kv: Deno.Kv,
  platformId: string,
): Promise<{ jobs: number; objects: number }> {
  let jobs = 0;
  let objects = 0;
  for await (const _ of kv.list({ prefix: platformJobsByVendorPrefix(platformId) })) jobs++;
  for await (const _ of kv.list({ prefix: platformObjectsPrefix(platformId) })) objects++;
  return { jobs, objects };
}

/**
 * Deletes a platform: first marks it `deleting` and removes its vault credential (one atomic operation
 * with the audit entry), then removes its protected objects (counters, indexes, open alerts), its jobs
 * (with their entries in the failed-backups queue), its sync indexes and finally the platform. Runs
 * stay as history. A crash part-way is finished by the next sync tick (`syncDuePlatforms`).
 */
export async function deletePlatform(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<void> {
  const before = await requirePlatform(kv, actor, id);
  authorize(actor, "backup.manage", platformScope(before));
  // A running sync would keep writing jobs and objects while they are removed: wait for it.
  const token = await acquireLock(kv, id, now);
  if (!token) throw new ConflictError(`A sync of platform ${before.name} is running; delete it when it ends`);
  const footprint = await platformFootprint(kv, id);
  const marked = await withRetry(async () => {
    const entry = await kv.get<Platform>(platformKey(id));
    const p = entry.value;
    if (!p || p.status === "deleting") throw new NotFoundError(`Platform ${id} not found`);
    const next: Platform = { ...p, status: "deleting", credentialId: null, updatedAt: now.toISOString() };
    const op = kv.atomic().check(entry).set(platformKey(id), next);
    if (p.credentialId) op.delete(vaultKey(p.credentialId));
    appendAudit(op, actor, {
      ...auditTarget("platform", p),
      action: "platform.delete",
      summary:
        `Deleted platform ${p.name} with its vault credential, ${footprint.jobs} imported job(s) and ` +
        `${footprint.objects} protected object(s); their run history is kept`,
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  }).catch(async (error) => {
    await releaseLock(kv, id, token);
    throw error;
  });
  await finishPlatformDeletion(kv, marked, now); // removes the lock with the rest
}

/** Removes what a `deleting` platform left (idempotent; also resumes after a crash). */
export async function finishPlatformDeletion(kv: Deno.Kv, platform: Platform, now: Date): Promise<void> {
  for await (const e of kv.list<string>({ prefix: platformObjectsPrefix(platform.id) })) {
    await withRetry(async () => {
      const entry = await kv.get<ProtectedObject>(protectedObjectKey(e.value));
      const op = kv.atomic().check(entry).delete(e.key);
      const o = entry.value;
      if (o) {
        deleteProtected(op, o);
        for (const reason of ["rpo_breach", "backup_failed"] as const) {
          resolveAlert(op, await readOpenAlert(kv, "protected_object", o.id, reason), now);
        }
      }
      return (await op.commit()).ok ? { value: undefined } : null;
    });
  }
  for await (const e of kv.list<string>({ prefix: platformPendingPrefix(platform.id) })) {
    await withRetry(async () => {
      const entry = await kv.get<PlatformRun>(runKey(String(e.key[2])));
      const run = entry.value;
      const op = kv.atomic().check(entry).delete(e.key);
      if (run && !isFinalRun(run.status)) {
        op.set(runKey(run.id), {
          ...run,
          status: "skipped",
          error: { reason: "PLATFORM_DELETED", message: "The platform was deleted before this run started" },
          errorLine: "The platform was deleted before this run started",
          updatedAt: now.toISOString(),
        });
      }
      return (await op.commit()).ok ? { value: undefined } : null;
    });
  }
  for await (const e of kv.list<string>({ prefix: platformJobsByVendorPrefix(platform.id) })) {
    await withRetry(async () => {
      const [entry, latest] = await kv.getMany<[PlatformJob, LatestOutcome]>([
        platformJobKey(e.value),
        latestOutcomeKey(e.value, null),
      ]);
      const op = kv.atomic().check(entry, latest).delete(e.key).delete(platformJobKey(e.value))
        .delete(latestOutcomeKey(e.value, null))
        .delete(platformJobsByAccountKey(platform.accountId, e.value));
      if (latest.value?.failingKey) op.delete(latest.value.failingKey);
      return (await op.commit()).ok ? { value: undefined } : null;
    });
  }
  // The vendor-run index goes (the runs stay): a platform registered again imports its runs anew.
  await deleteKeysUnder(kv, platformRunsPrefix(platform.id));
  await kv.atomic().delete(platformKey(platform.id))
    .delete(platformsByAccountKey(platform.accountId, platform.id))
    .delete(platformByEndpointKey(platform.accountId, platform.type, platform.endpointUrl))
    .delete(syncLockKey(platform.id))
    .commit();
}

// ---------------------------------------------------------------------------------------------------
// Sync lease and imported jobs (the sync itself is platform_sync.ts)

/** Takes the platform's sync lease (one sync or deletion at a time); null when another holds it. */
export async function acquireLock(kv: Deno.Kv, platformId: string, now: Date): Promise<string | null> {
  const entry = await kv.get<{ until: number; token: string }>(syncLockKey(platformId));
  if (entry.value && entry.value.until > now.getTime()) return null;
  const token = crypto.randomUUID();
  const res = await kv.atomic().check(entry)
    .set(syncLockKey(platformId), { until: now.getTime() + SYNC_LEASE_MS, token }, {
      expireIn: SYNC_LEASE_MS,
    })
    .commit();
  return res.ok ? token : null;
}

/** Releases the lease if this holder still has it. */
export async function releaseLock(kv: Deno.Kv, platformId: string, token: string): Promise<void> {
  const entry = await kv.get<{ token: string }>(syncLockKey(platformId));
  if (entry.value?.token === token) await kv.atomic().check(entry).delete(syncLockKey(platformId)).commit();
}

/** The jobs of a platform as imported (removed ones included). */
export async function listPlatformJobs(kv: Deno.Kv, platformId: string): Promise<PlatformJob[]> {
  return (await readByPointerIndex<PlatformJob>(kv, platformJobsByVendorPrefix(platformId), platformJobKey))
    .sort((a, b) => a.name.localeCompare(b.name));
}

// ---------------------------------------------------------------------------------------------------
// Jobs view and retry

/** A platform job if it exists; no scope check. */
export async function getPlatformJob(kv: Deno.Kv, id: string): Promise<PlatformJob | null> {
  return (await kv.get<PlatformJob>(platformJobKey(id))).value;
}

/** The platform jobs of the actor's account inside its scope, with their platform's name. */
export async function listVisiblePlatformJobs(
  kv: Deno.Kv,
  actor: Actor,
): Promise<Array<{ job: PlatformJob; platform: Platform }>> {
  if (!actor.accountId) return [];
  const platforms = new Map((await listPlatforms(kv, actor)).map((p) => [p.id, p]));
  if (!platforms.size) return [];
  const out: Array<{ job: PlatformJob; platform: Platform }> = [];
  for (
    const job of await readByPointerIndex<PlatformJob>(
      kv,
      platformJobsByAccountPrefix(actor.accountId),
      platformJobKey,
    )
  ) {
    const platform = platforms.get(job.platformId);
    if (platform && inScope(actor, { accountId: job.accountId, orgId: job.orgId })) {
      out.push({ job, platform });
    }
  }
  return out;
}

/** The retry facts of a platform job: its newest run, other runs in flight, why it cannot start. */
export async function readPlatformRetryFacts(
  kv: Deno.Kv,
  job: PlatformJob,
  platform: Platform,
): Promise<{ facts: RetryFacts; latest: Run | null }> {
  const runs = await listRunsByPolicy(kv, job.id, RETRY_SCAN_LIMIT);
  const latest = runs[0] ?? null;
  const inFlight = runs.slice(1).filter((r) => r.status === "pending" || r.status === "running").length;
  const pausedReason = job.removed
    ? "removed from the platform"
    : !job.enabled
    ? "disabled on the platform"
    : !platform.syncEnabled
    ? "the platform's sync is off, so a retry would never start"
    : null;
  return {
    latest,
    facts: {
      latest: latest
        ? { status: latest.status, retryable: latest.retryable, trigger: latest.trigger, kind: latest.kind }
        : null,
      inFlight,
      activeHosts: null,
      pausedReason,
    },
  };
}

/**
 * Retries a platform job (guide: "for platform jobs, retry creates a pending run that the next sync
 * picks up"): the same rule as native jobs (`retryBlockedReason`). One pending run (trigger `retry`, not
 * retryable) is written with the latest run's retry guard (racing retries create one run, and a job
 * retry excludes a run retry of that run), the pending index the sync reads, and the audit entry, in
 * one atomic operation. Throws NotFoundError, ForbiddenError, ValidationError (the reason), or
 * ConflictError when another retry won.
 * Retry glossary: the **platform retry** (README › Architecture › "Retry: six meanings").
 */
export async function retryPlatformJob(
  kv: Deno.Kv,
  actor: Actor,
  jobId: string,
  now: Date,
): Promise<PlatformRun> {
  const job = await getPlatformJob(kv, jobId);
  const platform = job ? await getPlatform(kv, job.platformId) : null;
  if (!job || !platform || platform.status === "deleting" || !inScope(actor, job)) {
    throw new NotFoundError(`Job ${jobId} not found`);
  }
  authorize(actor, "backup.manage", { accountId: job.accountId, orgId: job.orgId });
  const { facts, latest } = await readPlatformRetryFacts(kv, job, platform);
  const reason = retryBlockedReason(facts);
  if (reason || !latest) {
    throw new ValidationError(reason ?? "Nothing to retry", { job: reason ?? "Nothing to retry" });
  }
  const at = now.toISOString();
  const run = pendingPlatformRun({
    id: newId(now),
    policyId: job.id,
    accountId: job.accountId,
    orgId: job.orgId,
    kind: latest.kind,
    trigger: "retry",
    scheduledFor: at,
    platform: {
      platformId: platform.id,
      runId: null,
      jobType: (latest as Partial<PlatformRun>).platform?.jobType ?? job.jobType,
      startRequestedAt: null,
    },
  }, at);
  const op = kv.atomic().check({ key: retryGuardKey(latest.id), versionstamp: null })
    .set(retryGuardKey(latest.id), run.id)
    .set(runKey(run.id), run)
    .set(runsByPolicyKey(job.id, run.id), run.id)
    .set(platformPendingKey(platform.id, run.id), job.id);
  await commitAudited(
    op,
    actor,
    {
      ...auditTarget("job", job),
      action: "job.retry",
      summary:
        `Retried platform job ${job.name} on ${platform.name} after ${latest.status} run ${latest.id}: ` +
        "one pending run, started on the platform by the next sync",
    },
    now,
    "This job has already been retried",
  );
  return run;
}
