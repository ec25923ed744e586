/**
 * Self-backup of the control plane: two logical databases (Config DB and Results DB) exported
 * consistently, compressed and encrypted into bundles, verified, and restored.
 *
 * Consistency while writes continue: Deno KV cannot snapshot a long scan, so an export reads every
 * key of the database's prefixes (pass 1), then reads them all again (pass 2). If pass 2 finds every
 * versionstamp unchanged and no key added or removed, each exported value was current from its read in
 * pass 1 until its re-read in pass 2; all pass-1 reads precede all pass-2 reads, so every value was
 * current at the instant between the passes: the bundle is an exact snapshot of that instant. When
 * something changed, the export starts over (up to `maxPasses` times) and otherwise says it is not
 * consistent.
 *
 * Bundle format (all integers big-endian):
 *   "CADRESB1" | u32 header length | header JSON | frames…
 *   frame: u32 length | 12-byte IV | AES-256-GCM ciphertext+tag of gzip(v8.serialize([[key, value]…]))
 * The AES key is HKDF-SHA256(master key, salt from the header, "cadres self-backup v1"). Each frame's
 * additional data is SHA-256(header) | frame index | last-frame flag, so a changed header, a reordered,
 * altered or missing frame, or a truncated file fails authentication. Nothing is written on restore
 * until every frame has been authenticated.
 */
import { createHash } from "node:crypto";
import v8 from "node:v8";

export const BUNDLE_MAGIC = "CADRESB1";
export const BUNDLE_VERSION = 1;
/** Bump when the meaning of stored data changes; restores check it. */
export const SCHEMA_VERSION = 1;
export const BUNDLE_CIPHER = "AES-256-GCM";
const ENTRIES_PER_FRAME = 500;

export type DatabaseName = "config" | "results";

/** Which key prefixes belong to which logical database. Everything else must be listed as ephemeral. */
export const DATABASE_PREFIXES: Record<DatabaseName, readonly string[]> = {
  config: [
    "accounts",
    "accounts_by_name",
    // Legal holds (holds.ts): the holds, their indexes and the epochs expiring writers and placements check.
    "legal_holds",
    "legal_holds_by_account",
    "legal_holds_active",
    "legal_holds_epoch",
    "legal_holds_bes_deletions",
    "accounts_by_secret",
    "orgs",
    "orgs_by_account",
    "orgs_by_name",
    "orgs_by_secret",
    "users",
    "users_by_email",
    "users_by_account",
    "api_tokens",
    "api_tokens_by_user",
    "api_tokens_by_account",
    "setup",
    "engines",
    "engines_by_account",
    "engines_by_public_key",
    "engines_live",
    "engines_deleting",
    "hosts",
    "hosts_by_account",
    "hosts_by_public_key",
    "hosts_live",
    "host_decommissions",
    "storage_targets",
    "storage_targets_by_bes",
    "storage_targets_by_account",
    "vault",
    // Key management: KEK versions (their keys are vault records), wrapped namespace keys, recovery public keys.
    "keks",
    "namespace_keys",
    "namespace_keys_by_kek",
    "account_recovery_keys",
    "policies",
    "policies_by_target",
    "policies_by_bes",
    "policies_by_account",
    "policies_by_name",
    "policy_counts",
    // Deleted policies kept while they have restore points (retention goes on under their last settings).
    "policies_retired",
    "policies_retired_by_account",
    "assignments",
    "assignments_by_policy",
    "assignments_by_host",
    "protected_objects",
    "protected_by_host",
    "protected_by_account",
    "po_name",
    "po_by",
    "po_due",
    "po_breached",
    "po_counts",
    "host_counts",
    "host_coverage",
    // Operational counters (ops_counters.ts): engines and hosts by status.
    "fleet_counts",
    "hooks",
    "hooks_by_policy",
    "hooks_by_script",
    "scripts",
    "scripts_by_account",
    "scripts_by_name",
    "replicas",
    "replicas_by_policy",
    "replicas_by_target",
    "replicas_by_account",
    "notification_channels",
    "notification_channels_by_account",
    "notification_rules",
    "notification_rules_by_account",
    "self_backup",
    // Third-party platforms: registrations (password in the vault), imported jobs and objects' index.
    "platforms",
    "platforms_by_account",
    "platforms_by_endpoint",
    "platform_jobs",
    "platform_jobs_by_vendor",
    "platform_jobs_by_account",
    "platform_objects",
    // Restore drill policies (drills.ts).
    "drills",
    "drills_by_account",
    "drills_by_name",
  ],
  results: [
    "audit",
    "alerts",
    "alerts_open",
    "alerts_by_account",
    "alerts_open_by_account",
    "alert_counts",
    "alert_events",
    "notification_deliveries",
    "notification_deliveries_by_account",
    "notification_deliveries_by_channel",
    "notification_due",
    "engine_metrics",
    "capacity_samples",
    "capacity_daily",
    "self_backup_triggers",
    "self_backup_triggers_counters",
    "jobs",
    "job_queue",
    "job_leases",
    "runs",
    "runs_by_policy",
    "runs_by_job",
    "restore_points",
    "restore_points_by_policy",
    "restore_points_by_host",
    // Repositories (repositories.ts): points by the target that holds them, hosts seen per generation.
    "restore_points_by_target",
    "repository_hosts",
    // Long result lists uploaded in parts (result_parts.ts), and browse/search pages built from them.
    "job_parts",
    "job_part_counts",
    "restore_list_pages",
    "run_retries",
    "replications",
    "replications_by_rule",
    "replica_counts",
    "replica_last",
    "replica_index_cleanups",
    "runs_retryable",
    "runs_deferred",
    "runs_open",
    "storage_checks",
    "auto_retry_count",
    "self_backup_verified",
    "self_backup_last_success",
    // Operational counters (ops_counters.ts): queued jobs (by kind and by principal) and notification deliveries
    // by status.
    "job_queue_counts",
    "job_queue_principal_counts",
    "delivery_counts",
    "run_outcomes",
    "run_daily",
    "runs_failing",
    "runs_latest",
    "rp_verify_failed",
    // Platform runs: vendor run id → run, and retries the next sync starts.
    "platform_runs",
    "platform_pending",
    "restores",
    "restores_by_account",
    "restores_by_job",
    "restore_paths",
    "restore_browse",
    "restore_browse_by_job",
    "restore_searches",
    "restore_searches_by_job",
    // File version history (file_history.ts): per (host, path) state, per-point observations, job index.
    "file_history",
    "file_history_points",
    "file_history_by_job",
    // The last consistency check (invariant_checks.ts), shown on Health > Database.
    "invariant_checks",
    // Restore drill runs, their indexes and each policy's last proven restore (drills.ts).
    "drill_runs",
    "drill_runs_by_drill",
    "drill_runs_by_job",
    "drill_runs_open",
    "drill_proven",
    "drill_proven_recent",
    "drill_proven_recent_by_org",
    "drill_proven_counts",
    "drill_proven_indexed",
    // The anomaly guard (anomalies.ts): flagged backups and their indexes, baselines, prune freezes.
    "anomalies",
    "anomalies_by_account",
    "anomalies_open",
    "anomalies_by_run",
    "anomaly_baselines",
    "prune_freezes",
  ],
};

/** Prefixes never backed up: short-lived by nature (sessions, nonces, rate-limit counters, cron slots). */
export const EPHEMERAL_PREFIXES: readonly string[] = [
  "sessions",
  "sessions_by_user",
  "nonces",
  "login_failures",
  "registration_failures",
  "cron_slots",
  "probe",
  "self_backup_state",
  "schedule_slots",
  // The scheduler's last evaluated minute (a restored bundle must not make it replay old minutes).
  "scheduler_cursor",
  // A running platform sync's lease (expires on its own).
  "platform_sync_lock",
  // Run now's per-policy write guard (lives a minute).
  "run_now_guard",
  // One-time BMR tokens live 4 hours; restoring an old bundle must never bring a used token back to life.
  "bmr_tokens",
  // A restore drill's claimed (drill, minute) slots: a restored bundle must not block or replay a minute.
  "drill_slots",
];

/**
 * Counters are `Deno.KvU64`, which v8.serialize turns into a plain object: the bundle carries them
 * tagged, and the restore turns them back into KvU64 (so `sum` keeps working after a restore).
 */
function packValue(value: unknown): unknown {
  return value instanceof Deno.KvU64 ? { __kvu64: value.value.toString() } : value;
}
function unpackValue(value: unknown): unknown {
  const tagged = value as { __kvu64?: unknown } | null;
  return tagged && typeof tagged === "object" && typeof tagged.__kvu64 === "string" &&
      Object.keys(tagged).length === 1
    ? new Deno.KvU64(BigInt(tagged.__kvu64))
    : value;
}

/** The logical database of a key, "ephemeral", or null when nobody classified its prefix. */
export function classifyKey(key: Deno.KvKey): DatabaseName | "ephemeral" | null {
  const prefix = String(key[0]);
  if (DATABASE_PREFIXES.config.includes(prefix)) return "config";
  if (DATABASE_PREFIXES.results.includes(prefix)) return "results";
  if (EPHEMERAL_PREFIXES.includes(prefix)) return "ephemeral";
  return null;
}

export interface ExportedEntry {
  key: Deno.KvKey;
  value: unknown;
  versionstamp: string;
}

async function readAll(kv: Deno.Kv, db: DatabaseName): Promise<ExportedEntry[]> {
  const out: ExportedEntry[] = [];
  for (const prefix of DATABASE_PREFIXES[db]) {
    for await (const e of kv.list({ prefix: [prefix] }, { batchSize: 500 })) {
      out.push({ key: e.key, value: e.value, versionstamp: e.versionstamp });
    }
  }
  return out;
}

function sameSnapshot(a: ExportedEntry[], b: ExportedEntry[]): boolean {
  if (a.length !== b.length) return false;
  const stamps = new Map(a.map((e) => [JSON.stringify(e.key), e.versionstamp]));
  return b.every((e) => stamps.get(JSON.stringify(e.key)) === e.versionstamp);
}

/**
 * Exports one logical database. `consistent` is true when a verification pass proved the entries are
 * an exact snapshot (see the module comment); `onProgress` reports entries read.
 */
export async function exportDatabase(
  kv: Deno.Kv,
  db: DatabaseName,
  options: { maxPasses?: number; onProgress?: (read: number) => void } = {},
): Promise<{ entries: ExportedEntry[]; consistent: boolean; passes: number }> {
  const maxPasses = options.maxPasses ?? 4;
  let entries = await readAll(kv, db);
  options.onProgress?.(entries.length);
  for (let pass = 2; pass <= maxPasses; pass++) {
    const again = await readAll(kv, db);
    if (sameSnapshot(entries, again)) return { entries, consistent: true, passes: pass };
    entries = again;
    options.onProgress?.(entries.length);
  }
  return { entries, consistent: false, passes: maxPasses };
}

export interface BundleHeader {
  format: "cadres-bundle";
  version: number;
  schemaVersion: number;
  database: DatabaseName;
  createdAt: string;
  entryCount: number;
  frameCount: number;
  consistent: boolean;
  cipher: typeof BUNDLE_CIPHER;
  compression: "gzip";
  /** base64 HKDF salt. */
  salt: string;
}

async function bundleKey(masterKey: Uint8Array, salt: Uint8Array): Promise<CryptoKey> {
  const base = await crypto.subtle.importKey("raw", masterKey as BufferSource, "HKDF", false, ["deriveKey"]);
  return await crypto.subtle.deriveKey(
    {
      name: "HKDF",
      hash: "SHA-256",
      salt: salt as BufferSource,
      info: new TextEncoder().encode("cadres self-backup v1"),
    },
    base,
    { name: "AES-GCM", length: 256 },
    false,
    ["encrypt", "decrypt"],
  );
}

function frameAad(headerHash: Uint8Array, index: number, last: boolean): Uint8Array {
  const aad = new Uint8Array(headerHash.length + 5);
  aad.set(headerHash);
  new DataView(aad.buffer).setUint32(headerHash.length, index);
  aad[headerHash.length + 4] = last ? 1 : 0;
  return aad;
}

async function gzip(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(
    await new Response(new Blob([data as BlobPart]).stream().pipeThrough(new CompressionStream("gzip")))
      .arrayBuffer(),
  );
}

async function gunzip(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(
    await new Response(new Blob([data as BlobPart]).stream().pipeThrough(new DecompressionStream("gzip")))
      .arrayBuffer(),
  );
}

function u32(n: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n);
  return b;
}

/** Seals exported entries into an encrypted bundle. */
export async function sealBundle(
  entries: ExportedEntry[],
  meta: { database: DatabaseName; createdAt: Date; consistent: boolean },
  masterKey: Uint8Array,
): Promise<Uint8Array> {
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const frameCount = Math.max(1, Math.ceil(entries.length / ENTRIES_PER_FRAME));
  const header: BundleHeader = {
    format: "cadres-bundle",
    version: BUNDLE_VERSION,
    schemaVersion: SCHEMA_VERSION,
    database: meta.database,
    createdAt: meta.createdAt.toISOString(),
    entryCount: entries.length,
    frameCount,
    consistent: meta.consistent,
    cipher: BUNDLE_CIPHER,
    compression: "gzip",
    salt: btoa(String.fromCharCode(...salt)),
  };
  const headerBytes = new TextEncoder().encode(JSON.stringify(header));
  const headerHash = new Uint8Array(createHash("sha256").update(headerBytes).digest());
  const key = await bundleKey(masterKey, salt);
  const parts: Uint8Array[] = [new TextEncoder().encode(BUNDLE_MAGIC), u32(headerBytes.length), headerBytes];
  for (let i = 0; i < frameCount; i++) {
    const slice = entries.slice(i * ENTRIES_PER_FRAME, (i + 1) * ENTRIES_PER_FRAME).map((
      e,
    ) => [e.key, packValue(e.value)]);
    const plain = await gzip(new Uint8Array(v8.serialize(slice)));
    const iv = crypto.getRandomValues(new Uint8Array(12));
    const cipher = new Uint8Array(
      await crypto.subtle.encrypt(
        {
          name: "AES-GCM",
          iv,
          additionalData: frameAad(headerHash, i, i === frameCount - 1) as BufferSource,
        },
        key,
        plain as BufferSource,
      ),
    );
    parts.push(u32(iv.length + cipher.length), iv, cipher);
  }
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A bundle that cannot be read or fails authentication. */
export class BundleError extends Error {
  override name = "BundleError";
}

/** Reads only the (unauthenticated) header, e.g. to list bundles. Throws BundleError if malformed. */
export function readBundleHeader(
  bytes: Uint8Array,
): { header: BundleHeader; headerBytes: Uint8Array; offset: number } {
  if (bytes.length < 12 || new TextDecoder().decode(bytes.subarray(0, 8)) !== BUNDLE_MAGIC) {
    throw new BundleError("Not a Cadres bundle (bad magic)");
  }
  const length = new DataView(bytes.buffer, bytes.byteOffset + 8, 4).getUint32(0);
  if (12 + length > bytes.length) throw new BundleError("Truncated bundle header");
  const headerBytes = bytes.subarray(12, 12 + length);
  let header: BundleHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(headerBytes));
  } catch {
    throw new BundleError("Corrupt bundle header");
  }
  if (header.format !== "cadres-bundle" || header.version !== BUNDLE_VERSION) {
    throw new BundleError(`Unsupported bundle format ${header.format} v${header.version}`);
  }
  return { header, headerBytes, offset: 12 + length };
}

/**
 * Authenticates and decrypts a whole bundle. Throws BundleError when anything — header, frame, order,
 * length — does not verify under the master key. Returns the entries only when all of it did.
 */
export async function openBundle(
  bytes: Uint8Array,
  masterKey: Uint8Array,
): Promise<{ header: BundleHeader; entries: Array<{ key: Deno.KvKey; value: unknown }> }> {
  const { header, headerBytes, offset } = readBundleHeader(bytes);
  const headerHash = new Uint8Array(createHash("sha256").update(headerBytes).digest());
  let salt: Uint8Array;
  try {
    salt = Uint8Array.from(atob(header.salt), (c) => c.charCodeAt(0));
  } catch {
    throw new BundleError("Corrupt bundle header (salt)");
  }
  const key = await bundleKey(masterKey, salt);
  const entries: Array<{ key: Deno.KvKey; value: unknown }> = [];
  let at = offset;
  for (let i = 0; i < header.frameCount; i++) {
    if (at + 4 > bytes.length) throw new BundleError("Truncated bundle");
    const length = new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0);
    at += 4;
    if (length < 28 || at + length > bytes.length) throw new BundleError("Truncated bundle");
    const iv = bytes.subarray(at, at + 12);
    const cipher = bytes.subarray(at + 12, at + length);
    at += length;
    let plain: Uint8Array;
    try {
      plain = new Uint8Array(
        await crypto.subtle.decrypt(
          {
            name: "AES-GCM",
            iv: iv as BufferSource,
            additionalData: frameAad(headerHash, i, i === header.frameCount - 1) as BufferSource,
          },
          key,
          cipher as BufferSource,
        ),
      );
    } catch {
      throw new BundleError(
        `Bundle frame ${i + 1} of ${header.frameCount} failed authentication (wrong key or altered)`,
      );
    }
    for (const [k, value] of v8.deserialize(await gunzip(plain)) as Array<[Deno.KvKey, unknown]>) {
      entries.push({ key: k, value: unpackValue(value) });
    }
  }
  if (at !== bytes.length) throw new BundleError("Unexpected data after the last frame");
  if (entries.length !== header.entryCount) throw new BundleError("Entry count does not match the header");
  return { header, entries };
}

/**
 * Restores a bundle into `kv`. Authenticates everything first; refuses a KV that already holds data of
 * the bundle's database unless `force`. Writes in batches. Returns the number of entries written.
 */
export async function restoreBundle(
  kv: Deno.Kv,
  bytes: Uint8Array,
  masterKey: Uint8Array,
  options: { force?: boolean } = {},
): Promise<{ header: BundleHeader; written: number }> {
  const { header, entries } = await openBundle(bytes, masterKey);
  if (header.schemaVersion > SCHEMA_VERSION) {
    throw new BundleError(
      `The bundle's schema version ${header.schemaVersion} is newer than this program's ${SCHEMA_VERSION}`,
    );
  }
  if (!options.force) {
    for (const prefix of DATABASE_PREFIXES[header.database]) {
      for await (const _ of kv.list({ prefix: [prefix] }, { limit: 1 })) {
        throw new BundleError(
          `The target database already holds ${header.database} data (key prefix "${prefix}"); use --force to overwrite`,
        );
      }
    }
  }
  let written = 0;
  for (let i = 0; i < entries.length; i += 200) {
    const op = kv.atomic();
    for (const e of entries.slice(i, i + 200)) op.set(e.key, restoredValue(e.key, e.value, header.createdAt));
    if (!(await op.commit()).ok) throw new Error("Restore write failed");
    written += Math.min(200, entries.length - i);
  }
  return { header, written };
}

/** A trigger that was running when its bundle was taken did not finish in the restored world. */
function restoredValue(key: Deno.KvKey, value: unknown, createdAt: string): unknown {
  if (key[0] !== "self_backup_triggers" || (value as { status?: string })?.status !== "running") return value;
  return {
    ...(value as object),
    status: "failed",
    error: "Interrupted: the database was restored from a bundle taken while this backup ran",
    finishedAt: createdAt,
  };
}
