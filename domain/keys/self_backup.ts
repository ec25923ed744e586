/** The KV keys of the control plane's own backups (self_backup_runs.ts, self_backup.ts; no imports). */

/** The self-backup settings (schedules, S3 location, the sealed bundle key). */
export function selfBackupSettingsKey() {
  return ["self_backup", "settings"] as const;
}
export function selfBackupCountersKey() {
  return ["self_backup_triggers_counters"] as const;
}
/** Process state, never backed up: a restored "running" worker would block every later backup. */
export function selfBackupWorkerKey() {
  return ["self_backup_state", "worker"] as const;
}
/** The cached S3 reachability probe. */
export function selfBackupS3ProbeKey() {
  return ["self_backup_state", "s3_probe"] as const;
}
/** A database's scheduled slot, claimed once (process state, never backed up). */
export function selfBackupSlotKey(db: string, slot: string) {
  return ["self_backup_state", "slot", db, slot] as const;
}
export function selfBackupTriggerKey(id: string) {
  return ["self_backup_triggers", id] as const;
}
/** Every trigger (`selfBackupTriggerKey`). */
export function selfBackupTriggersPrefix(): Deno.KvKey {
  return ["self_backup_triggers"];
}
/** The last verification of a database's bundle. */
export function selfBackupVerifiedKey(db: string) {
  return ["self_backup_verified", db] as const;
}
/** The last self-backup of a database that succeeded: when it finished, and its bundle. */
export function selfBackupLastSuccessKey(db: string) {
  return ["self_backup_last_success", db] as const;
}

/**
 * The key roots of the control plane, each in the logical database it is backed up with, or ephemeral.
 * A new key root is listed here (self_backup_test checks that every key of a populated database is classified).
 */
/** Which key prefixes belong to which logical database. Everything else must be listed as ephemeral. */
export const DATABASE_PREFIXES: Record<"config" | "results", readonly string[]> = {
  config: [
    "accounts",
    "accounts_by_name",
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
    // Legal holds (holds.ts): the holds, their indexes and the epochs expiring writers and placements check.
    "legal_holds",
    "legal_holds_by_account",
    "legal_holds_active",
    "legal_holds_epoch",
    "legal_holds_bes_deletions",
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
    // The getting-started checklist's "first backup" marker per org (restore_points.ts).
    "first_backups",
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
