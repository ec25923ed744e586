/**
 * No KV key literal outside domain/keys/ (issue 19 item 1): an array literal used as a KV key or prefix in
 * domain/, routes/ or jobs/ must be built by a key builder of domain/keys/. tools/key_literals.ts finds
 * them; run `deno run --allow-read tools/key_literals.ts` to print every one as `file:line root`.
 */
import assert from "node:assert/strict";
import { arrayLiterals, builderRoots, findKeyLiterals, stripComments } from "../../tools/key_literals.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * The `file:root` pairs still spelling a key literal outside domain/keys/ (TO SHRINK: move each builder to
 * domain/keys/ and call it). The test fails on a literal not listed here and on a listed pair that no
 * longer exists, so this list can only shrink.
 */
const ALLOWED: string[] = [
  "domain/alerts.ts:alert_counts",
  "domain/alerts.ts:alerts_by_account",
  "domain/anomalies.ts:anomalies_by_account",
  "domain/anomalies.ts:anomalies_open",
  "domain/api_tokens.ts:api_tokens_by_account",
  "domain/api_tokens.ts:api_tokens_by_user",
  "domain/approvals.ts:approval_requests_by_account",
  "domain/approvals.ts:approval_requests_open",
  "domain/archive.ts:host_decommissions",
  "domain/assignments.ts:assignments",
  "domain/audit.ts:audit",
  "domain/auth.ts:login_failures",
  "domain/auth.ts:sessions",
  "domain/db_health.ts:alerts",
  "domain/db_health.ts:audit",
  "domain/db_health.ts:capacity_samples",
  "domain/drills.ts:alerts_open",
  "domain/drills.ts:drill_runs_by_drill",
  "domain/drills.ts:drill_runs_open",
  "domain/drills.ts:drill_slots",
  "domain/drills.ts:drills",
  "domain/drills.ts:drills_by_account",
  "domain/drills.ts:drills_by_name",
  "domain/drills.ts:policies",
  "domain/drills.ts:restore_points_by_host",
  "domain/engines.ts:engine_metrics",
  "domain/engines.ts:engines_by_account",
  "domain/engines.ts:engines_deleting",
  "domain/engines.ts:engines_live",
  "domain/engines.ts:policies_by_bes",
  "domain/engines.ts:storage_targets_by_bes",
  "domain/file_history.ts:file_history",
  "domain/file_history.ts:file_history_points",
  "domain/file_history.ts:restore_points_by_host",
  "domain/getting_started.ts:po_by",
  "domain/getting_started.ts:policies",
  "domain/holds.ts:legal_holds_active",
  "domain/holds.ts:restore_points",
  "domain/holds.ts:restore_points_by_target",
  "domain/hooks.ts:hooks",
  "domain/hooks.ts:hooks_by_script",
  "domain/hosts.ts:hosts_live",
  "domain/invariant_checks.ts:alerts_open",
  "domain/invariant_checks.ts:invariant_checks",
  "domain/invariants.ts:alert_counts",
  "domain/invariants.ts:platform_jobs_by_account",
  "domain/invariants.ts:platform_jobs_by_vendor",
  "domain/invariants.ts:platform_objects",
  "domain/invariants.ts:platform_runs",
  "domain/invariants.ts:po_counts",
  "domain/invariants.ts:policies_by_name",
  "domain/invariants.ts:policy_counts",
  "domain/invariants.ts:replica_counts",
  "domain/invariants.ts:replications",
  "domain/invariants.ts:runs_failing",
  "domain/invariants.ts:runs_latest",
  "domain/job_queue.ts:job_leases",
  "domain/job_queue.ts:job_queue",
  "domain/namespace_keys.ts:namespace_keys",
  "domain/namespace_keys.ts:namespace_keys_by_kek",
  "domain/notifications.ts:alert_events",
  "domain/notifications.ts:notification_channels_by_account",
  "domain/notifications.ts:notification_deliveries",
  "domain/notifications.ts:notification_deliveries_by_account",
  "domain/notifications.ts:notification_deliveries_by_channel",
  "domain/notifications.ts:notification_due",
  "domain/notifications.ts:notification_rules_by_account",
  "domain/ops_counters.ts:delivery_counts",
  "domain/ops_counters.ts:fleet_counts",
  "domain/ops_counters.ts:job_queue",
  "domain/ops_counters.ts:job_queue_counts",
  "domain/ops_counters.ts:notification_deliveries",
  "domain/platform_sync.ts:platform_objects",
  "domain/platform_sync.ts:platform_pending",
  "domain/platform_sync.ts:platforms",
  "domain/platforms.ts:platform_jobs_by_account",
  "domain/platforms.ts:platform_jobs_by_vendor",
  "domain/platforms.ts:platform_objects",
  "domain/platforms.ts:platform_pending",
  "domain/platforms.ts:platform_runs",
  "domain/platforms.ts:platforms_by_account",
  "domain/platforms.ts:platforms_by_endpoint",
  "domain/policy_names.ts:policies",
  "domain/policy_names.ts:policies_by_name",
  "domain/policy_names.ts:policy_counts",
  "domain/protected.ts:accounts",
  "domain/protected.ts:po_breached",
  "domain/protected.ts:po_by",
  "domain/protected.ts:po_due",
  "domain/protected.ts:po_name",
  "domain/protected.ts:protected_by_host",
  "domain/rate_limit.ts:registration_failures",
  "domain/replicas.ts:replica_counts",
  "domain/replicas.ts:replica_index_cleanups",
  "domain/replicas.ts:replica_last",
  "domain/replicas.ts:replicas",
  "domain/replicas.ts:replicas_by_account",
  "domain/replicas.ts:replications",
  "domain/replicas.ts:replications_by_rule",
  "domain/repositories.ts:policies",
  "domain/repositories.ts:policies_retired",
  "domain/repositories.ts:restore_points",
  "domain/repositories.ts:restore_points_by_target",
  "domain/restore.ts:policies",
  "domain/restore.ts:policies_retired",
  "domain/restore.ts:policies_retired_by_account",
  "domain/restore.ts:restore_browse",
  "domain/restore.ts:restores",
  "domain/restore.ts:restores_by_account",
  "domain/result_parts.ts:job_part_counts",
  "domain/result_parts.ts:job_parts",
  "domain/run_now.ts:run_now_guard",
  "domain/scripts.ts:hooks_by_script",
  "domain/scripts.ts:scripts_by_account",
  "domain/scripts.ts:scripts_by_name",
  "domain/self_backup.ts:accounts",
  "domain/self_backup.ts:audit",
  "domain/self_backup.ts:sessions",
  "domain/self_backup_runs.ts:accounts",
  "domain/self_backup_runs.ts:self_backup_last_success",
  "domain/self_backup_runs.ts:self_backup_state",
  "domain/self_backup_runs.ts:self_backup_triggers",
  "domain/self_backup_runs.ts:self_backup_verified",
  "domain/tenancy.ts:accounts",
  "domain/tenancy.ts:accounts_by_name",
  "domain/tenancy.ts:orgs_by_account",
  "domain/tenancy.ts:orgs_by_name",
  "domain/users.ts:api_tokens_by_account",
  "domain/users.ts:api_tokens_by_user",
  "domain/users.ts:orgs",
  "domain/users.ts:sessions_by_user",
  "domain/users.ts:users",
  "domain/users.ts:users_by_account",
  "domain/users.ts:users_by_email",
];

/**
 * `file:root` pairs whose literal is not a KV key although its first element is a key root (a diagram's
 * link in routes/health_pages.tsx starts with "engines").
 */
const NOT_KEYS = new Set(["routes/health_pages.tsx:engines"]);

Deno.test("key literals: KV positions and builder roots are found, element accesses and comments are not", () => {
  const text = stripComments([
    'const a = await kv.get(["storage_targets", id]);',
    '// kv.get(["commented", id])',
    'const b = kv.list({ prefix: ["runs_by_policy", p] });',
    'const c = obj["policies"];',
    'const d = ["hosts", id];',
    'const e = z.enum(["daily", "weekly"]);',
    'const f = `kv.get(["in_template"])`;',
    'await kv.atomic().check({ key: ["po_due", x], versionstamp: null }).delete(["jobs", id]).commit();',
    'kv.getMany([["policies", id], ["policies_retired", id]]);',
    'const key = ["cron_slots", name, slot];',
    'const startKey: Deno.KvKey = ["audit", from];',
  ].join("\n"));
  const found = arrayLiterals(text).map((f) => `${f.line}:${f.root}:${f.kvPosition}`);
  assert.deepEqual(found, [
    "1:storage_targets:true",
    "3:runs_by_policy:true",
    "5:hosts:false",
    "6:daily:false",
    "8:po_due:true",
    "8:jobs:true",
    "9:policies:true",
    "9:policies_retired:false",
    "10:cron_slots:true",
    "11:audit:true",
  ]);
  assert.deepEqual(
    builderRoots('export function hostKey(id: string) {\n  return ["hosts", id] as const;\n}'),
    ["hosts"],
  );
});

Deno.test("key literals: none outside domain/keys/ except the allowlisted ones", async () => {
  const { literals } = await findKeyLiterals(ROOT);
  const allowed = new Set(ALLOWED);
  const keyLiterals = literals.filter((l) => !NOT_KEYS.has(`${l.file}:${l.root}`));
  const unexpected = keyLiterals.filter((l) => !allowed.has(`${l.file}:${l.root}`)).map((l) =>
    `${l.file}:${l.line} ${l.root}`
  );
  assert.deepEqual(
    unexpected,
    [],
    `key literals outside domain/keys/ (use a builder of domain/keys/):\n${unexpected.join("\n")}`,
  );
  const present = new Set(keyLiterals.map((l) => `${l.file}:${l.root}`));
  const stale = ALLOWED.filter((a) => !present.has(a));
  const staleNotKeys = [...NOT_KEYS].filter((a) => !literals.some((l) => `${l.file}:${l.root}` === a));
  assert.deepEqual(staleNotKeys, [], "NOT_KEYS entries that no longer exist: remove them");
  assert.deepEqual(stale, [], "allowlisted key literals that no longer exist: remove them from ALLOWED");
});
