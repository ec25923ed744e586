/**
 * What a backup job carries (the guide's `build_backup_payload`): the BES endpoint, target, repository,
 * data protection, excludes, hooks, throttling and verification of a policy, within the size a KV value
 * allows. The scheduler, run now, retries and pre-patch backups all build it here.
 */
import { ValidationError } from "./errors.ts";
import { type Engine, engineKey } from "./engines.ts";
import { kvValueBytes } from "./kv.ts";
import { type HookPlan, hookPlan } from "./hooks.ts";
import { effectiveExcludes, type Policy } from "./policies.ts";
import type { StorageTarget } from "./storage.ts";
import { targetKey } from "./storage_keys.ts";
import { hostBackupPayload, hostsNeedingFull, repositoryOf } from "./repositories.ts";
import type { RunKind } from "./runs.ts";

/**
 * The payload of a synthetic full job, less the `hostId` each host's job adds (the namespace the BES makes
 * it of): the policy, its target and its current repository.
 */
export function syntheticFullPayload(
  policy: Pick<Policy, "id" | "targetId" | "generation">,
  target: Pick<StorageTarget, "id">,
): Record<string, unknown> {
  return { policyId: policy.id, targetId: target.id, repository: repositoryOf(policy) };
}

/**
 * Everything an agent needs to run a backup (the guide's `build_backup_payload`): the BES endpoint,
 * the target, type, data protection, excludes with the template expanded, hooks in execution order,
 * throttling and verification settings. Used by schedules, manual runs and retries alike.
 */
export async function buildBackupPayload(
  kv: Deno.Kv,
  policy: Policy,
  engine: Pick<Engine, "id" | "hostname" | "ipAddress" | "port">,
  target: Pick<StorageTarget, "id" | "type" | "config">,
  kind: RunKind,
): Promise<Record<string, unknown>> {
  return backupPayload(policy, engine, target, kind, await hookPlan(kv, policy.id)).payload;
}

/** `buildBackupPayload` with the policy's hook plan already read (the tick reads it once per policy). */
export function backupPayload(
  policy: Policy,
  engine: Pick<Engine, "id" | "hostname" | "ipAddress" | "port">,
  target: Pick<StorageTarget, "id" | "type" | "config">,
  kind: RunKind,
  hooks: HookPlan,
): { payload: Record<string, unknown>; bytes: number } {
  const payload = {
    policyId: policy.id,
    backupType: policy.backupType,
    runKind: kind,
    bes: {
      id: engine.id,
      endpoint: `https://${engine.hostname}:${engine.port}`,
      ipAddress: engine.ipAddress,
    },
    target: { id: target.id, type: target.type, config: target.config },
    // Where the backup writes (ENGINE.md §3): `cadres/<policyId>/g<N>` on the target.
    repository: repositoryOf(policy),
    compression: policy.compression,
    encryption: policy.encryption,
    deduplication: policy.deduplication,
    // Empty: the agent's default roots (it reported them when it enrolled).
    includePaths: policy.includePaths ?? [],
    excludePaths: policy.excludePaths,
    excludePatterns: effectiveExcludes(policy),
    hooks,
    throttle: {
      maxTransferMbps: policy.maxTransferMbps,
      schedule: policy.throttleSchedule,
      ioPriority: policy.ioPriority,
      /** The time zone the throttle schedule is read in (the policy's). */
      timeZone: policy.timeZone ?? "UTC",
    },
    vssEnabled: policy.vssEnabled,
    verify: { afterBackup: policy.verifyAfterBackup, sampleCount: policy.verifySampleCount },
  };
  const bytes = kvValueBytes(payload);
  if (bytes > MAX_PAYLOAD_BYTES) {
    const kb = (n: number) => `${Math.ceil(n / 1000)} KB`;
    throw new ValidationError(
      `Policy ${policy.name} needs ${kb(bytes)} to send with a backup job, more than the ${
        kb(MAX_PAYLOAD_BYTES)
      } a job can carry: shorten its hook scripts or exclude lists`,
      { hooks: `The hooks and excludes come to ${kb(bytes)}; at most ${kb(MAX_PAYLOAD_BYTES)}` },
    );
  }
  return { payload, bytes };
}

/**
 * The most a backup payload may take in KV (`kvValueBytes`), which keeps the job — the payload plus
 * about 1.5 KB of its own fields — under KV's 64 KiB per value.
 */
export const MAX_PAYLOAD_BYTES = 60_000;

/**
 * An agent's backup payload for a policy and the run kind it amounts to (an incremental of a host new to
 * the policy's generation goes as a full), or null when the policy's BES or storage target is gone.
 */
export async function agentBackupPayload(
  kv: Deno.Kv,
  policy: Policy,
  kind: RunKind,
  hostId: string,
): Promise<{ payload: Record<string, unknown>; kind: RunKind } | null> {
  const [engine, target] = await kv.getMany<[Engine, StorageTarget]>([
    engineKey(policy.besId),
    targetKey(policy.targetId),
  ]);
  if (!engine.value || !target.value) return null;
  const built = await buildBackupPayload(kv, policy, engine.value, target.value, kind);
  return hostBackupPayload(built, kind, hostId, await hostsNeedingFull(kv, policy, [hostId]));
}
