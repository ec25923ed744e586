/**
 * Response schemas of `/api/v1`, for the OpenAPI document (a generated client gets typed answers).
 * Each names the fields a client can rely on; objects are loose (`additionalProperties`), so a field
 * added later is not a breaking change. The permission-matrix test parses every successful answer of
 * every route with the schema its route declares, so these stay true.
 */
import { z } from "@hono/zod-openapi";
import { ASSIGNMENT_STATES } from "../domain/assignments.ts";
import { HOST_STATUSES } from "../domain/hosts.ts";
import { KEK_SOURCES } from "../domain/replicas.ts";
import { BACKUP_TYPES } from "../domain/policies.ts";
import { RESTORE_POINT_STATUSES, VERIFICATION_STATUSES } from "../domain/restore_points.ts";
import { CHANNEL_TYPES } from "../domain/notification_channels.ts";

const Ts = z.string().describe("ISO 8601 UTC timestamp");
const NullTs = Ts.nullable();

/** `{values, cursor}`: a page of a list; `cursor` is empty when there is no next page. */
export const page = <T extends z.ZodType>(item: T, extra: z.ZodRawShape = {}) =>
  z.looseObject({
    values: z.array(item),
    cursor: z.string().describe("Pass back to get the next page; empty when there is none"),
    ...extra,
  });

/** `total`: the number of matches before paging (hosts, policies, engines, storage, jobs). */
export const Total = { total: z.number().int().describe("Matches before paging") };

export const EngineSchema = z.looseObject({
  id: z.string(),
  accountId: z.string(),
  orgId: z.string().nullable(),
  name: z.string(),
  deploymentModel: z.string(),
  hostname: z.string(),
  ipAddress: z.string(),
  port: z.number(),
  version: z.string(),
  status: z.string(),
  pxeEnabled: z.boolean(),
  pxeNetwork: z.string().nullable(),
  registeredAt: Ts,
  lastHeartbeatAt: NullTs,
  storageTargetIds: z.array(z.string()),
}).openapi("Engine");

export const StorageTargetSchema = z.looseObject({
  id: z.string(),
  accountId: z.string(),
  orgId: z.string().nullable(),
  besId: z.string(),
  name: z.string(),
  type: z.string(),
  config: z.record(z.string(), z.union([z.string(), z.number()])),
  alertThreshold: z.number(),
  criticalThreshold: z.number(),
  hasCredentials: z.boolean(),
  policyCount: z.number(),
  health: z.string(),
  capacity: z.looseObject({}).nullable(),
  createdAt: Ts,
  updatedAt: Ts,
}).openapi("StorageTarget");

export const AlertSchema = z.looseObject({
  id: z.string(),
  orgId: z.string().nullable(),
  subjectType: z.string(),
  subjectId: z.string(),
  subjectName: z.string(),
  reason: z.string(),
  severity: z.string(),
  status: z.string(),
  message: z.string(),
  openedAt: Ts,
  lastSeenAt: Ts,
  count: z.number(),
  acknowledgedAt: NullTs,
  resolvedAt: NullTs,
}).openapi("Alert");

export const PolicySchema = z.looseObject({
  id: z.string(),
  accountId: z.string(),
  orgId: z.string().nullable(),
  besId: z.string(),
  targetId: z.string(),
  name: z.string(),
  enabled: z.boolean(),
  pausedReason: z.string().nullable().describe("Set by the system (storage_critical); null when not paused"),
  backupType: z.enum(BACKUP_TYPES),
  timeZone: z.string(),
  fullSchedule: z.string(),
  incrementalSchedule: z.string().nullable().optional(),
  syntheticFullSchedule: z.string().nullable().optional(),
  excludePaths: z.array(z.string()),
  excludePatterns: z.array(z.string()),
  retentionDaily: z.number(),
  retentionWeekly: z.number(),
  retentionMonthly: z.number(),
  rpoHours: z.number(),
  rpoDerived: z.boolean(),
  createdAt: Ts,
  updatedAt: Ts,
}).openapi("Policy");

/** A host's status. */
export const HOST_STATUS = z.enum(HOST_STATUSES);

/** A managed host (agent). */
export const HostSchema = z.looseObject({
  id: z.string(),
  accountId: z.string(),
  orgId: z.string(),
  hostname: z.string(),
  os: z.string(),
  ipAddress: z.string(),
  publicKey: z.string().describe("The agent's Ed25519 public key (public)"),
  version: z.string(),
  relay: z.boolean(),
  status: HOST_STATUS,
  enrolledAt: Ts,
  updatedAt: Ts,
  lastHeartbeatAt: NullTs,
  decommissionedAt: NullTs.optional(),
}).openapi("Host");

/** An assignment of a host to a policy. */
export const AssignmentSchema = z.looseObject({
  id: z.string(),
  policyId: z.string(),
  hostId: z.string(),
  accountId: z.string(),
  orgId: z.string(),
  state: z.enum(ASSIGNMENT_STATES),
  createdAt: Ts,
  updatedAt: Ts,
}).openapi("Assignment");

/** An assignment as a host lists it: with its policy's name and Archive On Host Deactivation. */
export const HostAssignmentSchema = AssignmentSchema.extend({
  policyName: z.string(),
  archiveOnHostDeactivation: z.boolean(),
}).openapi("HostAssignment");

export const RunSchema = z.looseObject({
  id: z.string(),
  policyId: z.string().describe("The job: a native run's policy, a platform run's platform job"),
  orgId: z.string().nullable(),
  hostId: z.string().nullable(),
  jobId: z.string().nullable(),
  kind: z.string(),
  trigger: z.string(),
  status: z.enum(["pending", "running", "success", "warning", "failed", "skipped"]),
  scheduledFor: Ts,
  startedAt: NullTs,
  endedAt: NullTs,
  bytesTransferred: z.number(),
  restorePointId: z.string().nullable(),
  error: z.object({ reason: z.string(), message: z.string() }).nullable(),
  retryable: z.boolean(),
  createdAt: Ts,
}).openapi("Run");

export const RestorePointSchema = z.looseObject({
  id: z.string(),
  engineId: z.string(),
  policyId: z.string(),
  hostId: z.string().nullable(),
  runId: z.string(),
  chainId: z.string(),
  type: z.string(),
  parentId: z.string().nullable(),
  sizeBytes: z.number(),
  fileCount: z.number(),
  completedAt: Ts,
  status: z.enum(RESTORE_POINT_STATUSES),
  verification: z.enum(VERIFICATION_STATUSES),
}).openapi("RestorePoint");

/** A suspicious change the anomaly guard flagged (domain/anomalies.ts). */
export const AnomalySchema = z.looseObject({
  id: z.string(),
  orgId: z.string().nullable(),
  policyId: z.string(),
  policyName: z.string(),
  hostId: z.string(),
  hostName: z.string(),
  runId: z.string(),
  restorePointId: z.string().describe("The suspect restore point"),
  lastCleanPointId: z.string().nullable().describe("The host's newest point judged normal before it"),
  status: z.enum(["pending", "approved", "incident", "released"]).describe(
    "pending: awaiting review (prune frozen); approved: expected change; incident: confirmed, prune " +
      "frozen until released; released",
  ),
  verdict: z.looseObject({
    flagged: z.boolean(),
    baselineRuns: z.number().int(),
    reasons: z.array(z.string()),
    checks: z.array(z.looseObject({
      signal: z.enum(["changed_files", "bytes_new", "incompressible_share"]),
      value: z.number(),
      median: z.number(),
      threshold: z.number(),
      fired: z.boolean(),
      text: z.string(),
    })),
    figures: z.looseObject({
      changedFiles: z.number(),
      added: z.number(),
      modified: z.number(),
      deleted: z.number(),
      files: z.number(),
      bytesNew: z.number(),
      incompressibleShare: z.number().nullable(),
    }),
  }),
  flaggedAt: Ts,
  reviewedAt: NullTs,
  reviewedBy: z.string().nullable(),
  reviewNote: z.string().nullable(),
  releasedAt: NullTs,
  releasedBy: z.string().nullable(),
}).openapi("Anomaly");

export const JobSchema = z.looseObject({
  id: z.string().describe("A native job's id is its policy's"),
  name: z.string(),
  source: z.looseObject({ kind: z.enum(["bes", "platform"]) }),
  sourceName: z.string(),
  orgId: z.string().nullable(),
  backupType: z.string(),
  enabled: z.boolean(),
  pausedReason: z.string().nullable(),
  lastRun: z.looseObject({ id: z.string(), status: z.string(), retryable: z.boolean() }).nullable(),
}).openapi("Job");

export const RestoreSchema = z.looseObject({
  id: z.string(),
  kind: z.enum(["file", "image", "bmr"]),
  restorePointId: z.string(),
  sourceHostId: z.string().nullable(),
  sourceTargetId: z.string().nullable().optional().describe(
    "The storage target of the replica copy the restore reads; null or absent: the point's own repository",
  ),
  targetHostId: z.string().nullable(),
  targetPath: z.string().nullable(),
  paths: z.array(z.string()),
  pathCount: z.number(),
  jobId: z.string(),
  status: z.enum(["pending", "running", "success", "warning", "failed"]),
  progress: z.object({ percent: z.number(), bytesTransferred: z.number() }).nullable(),
  result: z.looseObject({ files: z.number(), bytes: z.number(), errorCount: z.number() }).nullable(),
  error: z.string().nullable(),
}).openapi("Restore");

const TreeEntry = z.looseObject({ path: z.string() });

export const BrowseSchema = z.looseObject({
  restorePointId: z.string(),
  path: z.string(),
  status: z.enum(["pending", "ready", "failed"]),
  entries: z.array(TreeEntry).nullable(),
  truncated: z.boolean(),
  error: z.string().nullable(),
}).openapi("Browse");

export const SearchSchema = z.looseObject({
  id: z.string(),
  restorePointId: z.string(),
  query: z.string(),
  status: z.enum(["pending", "ready", "failed"]),
  matches: z.array(TreeEntry).nullable(),
  truncated: z.boolean(),
  error: z.string().nullable(),
}).openapi("Search");

export const ChannelSchema = z.looseObject({
  id: z.string(),
  orgId: z.string().nullable(),
  type: z.enum(CHANNEL_TYPES),
  name: z.string(),
  enabled: z.boolean(),
  url: z.string().optional().describe("Webhooks: the URL's origin only"),
}).openapi("NotificationChannel");

export const RuleSchema = z.looseObject({
  id: z.string(),
  name: z.string(),
  orgIds: z.union([z.literal("all"), z.array(z.string())]),
  minSeverity: z.string(),
  events: z.array(z.string()),
  channelIds: z.array(z.string()),
  enabled: z.boolean(),
}).openapi("NotificationRule");

export const DeliverySchema = z.looseObject({
  id: z.string(),
  channelId: z.string(),
  channelName: z.string(),
  status: z.string(),
  attempts: z.array(z.looseObject({ number: z.number(), at: Ts, ok: z.boolean() })),
}).openapi("NotificationDelivery");

export const SyncReportSchema = z.looseObject({
  status: z.enum(["success", "failed"]),
  startedAt: Ts,
  endedAt: Ts,
  error: z.string().nullable(),
  warnings: z.array(z.string()),
}).openapi("SyncReport");

export const PlatformSchema = z.looseObject({
  id: z.string(),
  orgId: z.string(),
  type: z.string(),
  name: z.string(),
  endpointUrl: z.string(),
  username: z.string(),
  hasCredentials: z.boolean(),
  syncIntervalMinutes: z.number(),
  syncEnabled: z.boolean(),
  status: z.string(),
  lastSync: SyncReportSchema.nullable(),
}).openapi("Platform");

/** A replica rule: a secondary target a policy's restore points are copied to. */
export const ReplicaRuleSchema = z.looseObject({
  id: z.string(),
  policyId: z.string(),
  accountId: z.string(),
  orgId: z.string().nullable(),
  targetId: z.string(),
  kekSource: z.enum(KEK_SOURCES),
  replicateAfterFull: z.boolean(),
  replicateAfterIncremental: z.boolean(),
  isOffsite: z.boolean(),
  createdAt: Ts,
  updatedAt: Ts,
}).openapi("ReplicaRule");

const ProtectedObjectFields = {
  id: z.string(),
  orgId: z.string(),
  hostId: z.string(),
  policyId: z.string(),
  name: z.string(),
  type: z.string(),
  rpoHours: z.number(),
  lastBackupAt: NullTs,
  lastBackupStatus: z.string(),
};

export const ProtectedObjectSchema = z.looseObject({
  ...ProtectedObjectFields,
  rpoBreach: z.boolean().describe("Past its RPO now"),
}).openapi("ProtectedObject");

/** The rows of the dashboard's four exception queues (one kind per queue). */
export const QueueRowSchema = z.union([
  z.object({ run: RunSchema, policyName: z.string(), hostName: z.string().nullable() })
    .describe("failed-backups: the latest run failed"),
  z.object({ object: z.looseObject(ProtectedObjectFields), breachMs: z.number(), dueAt: Ts })
    .describe("rpo-breaches: longest breach first"),
  StorageTargetSchema.describe("storage-health: targets not healthy, worst first"),
  z.object({ point: RestorePointSchema, policyName: z.string(), hostName: z.string().nullable() })
    .describe("verification-failures: restore points whose verification failed"),
  AnomalySchema.describe("suspicious-changes: flagged backups awaiting review, then confirmed incidents"),
]).openapi("DashboardQueueRow");

/** A run as the run-now and retry answers list it. */
export const QueuedRunSchema = z.object({
  id: z.string(),
  jobId: z.string().nullable(),
  kind: z.string(),
  status: z.string(),
  trigger: z.string(),
  hostId: z.string().nullable(),
  hostname: z.string().nullable(),
}).openapi("QueuedRun");
