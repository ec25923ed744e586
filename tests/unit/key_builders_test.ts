/**
 * The key builders that replaced key literals (issue 19 item 1) return exactly the tuples the literals
 * spelled, so data stored before the move stays readable. Each expectation is the literal as it was.
 */
import assert from "node:assert/strict";
import { alertCountsPrefix, openAlertCountKey, openAlertsSubjectRange } from "../../domain/keys/alerts.ts";
import { auditPrefix } from "../../domain/keys/audit.ts";
import { loginFailureKey, registrationFailuresKey, sessionsByUserPrefix } from "../../domain/keys/auth.ts";
import { failingPrefix, latestOutcomeKey } from "../../domain/keys/dashboard.ts";
import { dataFixKey } from "../../domain/keys/data_fixes.ts";
import { drillByNameKey, drillSlotKey } from "../../domain/keys/drills.ts";
import { engineMetricsPrefix } from "../../domain/keys/engines.ts";
import { fileHistoryObservationKey, fileHistoryStateKey } from "../../domain/keys/file_history.ts";
import { lastInvariantCheckKey } from "../../domain/keys/invariants.ts";
import { namespaceKeysByKekKey, namespaceKeysKey } from "../../domain/keys/namespace_keys.ts";
import { platformByEndpointIdentityKey, platformObjectsPrefix } from "../../domain/keys/platforms.ts";
import { policiesByNamePrefix, policyCountsPrefix } from "../../domain/keys/policies.ts";
import { objectCountKey, objectsByDimensionPrefix } from "../../domain/keys/protected.ts";
import { replicaCountKey, replicationsPrefix } from "../../domain/keys/replicas.ts";
import { pointsByTargetPrefix } from "../../domain/keys/repositories.ts";
import { restorePointsByHostPrefix } from "../../domain/keys/restore.ts";
import {
  selfBackupCountersKey,
  selfBackupLastSuccessKey,
  selfBackupS3ProbeKey,
  selfBackupSettingsKey,
  selfBackupSlotKey,
  selfBackupTriggerKey,
  selfBackupVerifiedKey,
  selfBackupWorkerKey,
} from "../../domain/keys/self_backup.ts";
import { accountByNameKey, orgByNameKey } from "../../domain/keys/tenancy.ts";
import { userByEmailKey } from "../../domain/keys/users.ts";

Deno.test("key builders return the tuples of the literals they replaced", () => {
  const pairs: Array<[Deno.KvKey | { start: Deno.KvKey; end: Deno.KvKey }, unknown]> = [
    [openAlertCountKey("a", null), ["alert_counts", "a", "-", "open"]],
    [openAlertCountKey("a", "o"), ["alert_counts", "a", "o", "open"]],
    [alertCountsPrefix("a"), ["alert_counts", "a"]],
    [openAlertsSubjectRange("drill", "D1"), {
      start: ["alerts_open", "drill", "D1~"],
      end: ["alerts_open", "drill", "D1\u007f"],
    }],
    [auditPrefix(), ["audit"]],
    [auditPrefix("a"), ["audit", "a"]],
    [loginFailureKey("ip", "10.0.0.1", 900_000), ["login_failures", "ip", "10.0.0.1", 900_000]],
    [registrationFailuresKey("10.0.0.1", 7), ["registration_failures", "10.0.0.1", 7]],
    [sessionsByUserPrefix("u"), ["sessions_by_user", "u"]],
    [failingPrefix(), ["runs_failing"]],
    [latestOutcomeKey("p", null), ["runs_latest", "p", "bes"]],
    [dataFixKey("ops_counters_v2"), ["data_fixes", "ops_counters_v2"]],
    [drillByNameKey("a", "Nightly Drill"), ["drills_by_name", "a", "nightly drill"]],
    [drillSlotKey("d", "manual-X"), ["drill_slots", "d", "manual-X"]],
    [engineMetricsPrefix(), ["engine_metrics"]],
    [engineMetricsPrefix("e"), ["engine_metrics", "e"]],
    [fileHistoryStateKey("h", "ab12"), ["file_history", "h", "ab12"]],
    [fileHistoryObservationKey("h", "ab12", "p"), ["file_history_points", "h", "ab12", "p"]],
    [lastInvariantCheckKey(), ["invariant_checks", "last"]],
    [namespaceKeysKey("cadres/p/g1", "n"), ["namespace_keys", "cadres/p/g1", "n"]],
    [namespaceKeysByKekKey("k", "cadres/p/g1", "n"), ["namespace_keys_by_kek", "k", "cadres/p/g1", "n"]],
    [platformByEndpointIdentityKey("a", "veeam", "https://v:9419"), [
      "platforms_by_endpoint",
      "a",
      "veeam",
      "https://v:9419",
    ]],
    [platformObjectsPrefix(), ["platform_objects"]],
    [platformObjectsPrefix("p"), ["platform_objects", "p"]],
    [policyCountsPrefix(), ["policy_counts"]],
    [policiesByNamePrefix(), ["policies_by_name"]],
    [objectCountKey("a", "o", "at_risk"), ["po_counts", "a", "o", "at_risk"]],
    [objectsByDimensionPrefix("a", "src", "bes:e"), ["po_by", "a", "src", "bes:e"]],
    [replicaCountKey("r", "succeeded"), ["replica_counts", "r", "succeeded"]],
    [replicationsPrefix(), ["replications"]],
    [pointsByTargetPrefix("t"), ["restore_points_by_target", "t"]],
    [restorePointsByHostPrefix("p", "h"), ["restore_points_by_host", "p", "h"]],
    [selfBackupSettingsKey(), ["self_backup", "settings"]],
    [selfBackupCountersKey(), ["self_backup_triggers_counters"]],
    [selfBackupWorkerKey(), ["self_backup_state", "worker"]],
    [selfBackupS3ProbeKey(), ["self_backup_state", "s3_probe"]],
    [selfBackupSlotKey("config", "2026-12-06T02:00"), [
      "self_backup_state",
      "slot",
      "config",
      "2026-12-06T02:00",
    ]],
    [selfBackupTriggerKey("t"), ["self_backup_triggers", "t"]],
    [selfBackupVerifiedKey("results"), ["self_backup_verified", "results"]],
    [selfBackupLastSuccessKey("config"), ["self_backup_last_success", "config"]],
    [accountByNameKey("Acme"), ["accounts_by_name", "acme"]],
    [orgByNameKey("a", "Paris Office"), ["orgs_by_name", "a", "paris office"]],
    [userByEmailKey("Ann@Example.com"), ["users_by_email", "ann@example.com"]],
  ];
  for (const [built, literal] of pairs) assert.deepEqual(built, literal);
});
