/**
 * Repositories and generations (ENGINE.md §3): a policy writes to one repository per storage target,
 * at `cadres/<policyId>/g<N>` under the target's root or prefix. Changing the policy's storage target,
 * encryption or deduplication starts generation N+1 (`updatePolicy`): its next backup on each host is a
 * full, and the older generations stay until their restore points expire. Every restore point records
 * the repository it was written to, so a target that still holds restore points is not deleted, and
 * prune jobs go to the repository that holds the points (not to wherever the policy writes today).
 *
 * Index keys written with each restore point (job_outcomes.ts `applyJobResultToRun`):
 * - `["restore_points_by_target", targetId, pointId]`: what `countPointsOnTarget` reads;
 * - `["repository_hosts", policyId, generation, hostId | "bes"]`: a host already has a restore point in
 *   that generation (its next incremental may chain on it); without one the backup is sent as a full.
 */
import { type DataFixResult, runDataFix } from "./data_fixes.ts";
import { policyKey, retiredPolicyKey } from "./keys/policies.ts";
import { restorePointKey, restorePointsPrefix } from "./keys/restore.ts";
import { runKey } from "./keys/runs.ts";
import { jobKey } from "./keys/jobs.ts";
import { getManyValues, withRetry } from "./kv.ts";
import { pointsByTargetKey, pointsByTargetPrefix, repositoryHostKey } from "./keys/repositories.ts";
import { dataFixKey } from "./keys/data_fixes.ts";

/** The repository a policy's backups go to: storage target, path under its root, generation. */
export interface Repository {
  target: string;
  path: string;
  generation: number;
}

/** The fields of a policy that decide its repository. */
export type RepositoryFacts = {
  id: string;
  targetId: string;
  /** Absent on policies stored before generations existed: generation 1. */
  generation?: number;
};

/** The path of a policy's repository of generation `generation` under a target's root or prefix. */
export function repositoryPath(policyId: string, generation: number): string {
  return `cadres/${policyId}/g${generation}`;
}

/** The current repository of a policy (where its next backup writes). */
export function repositoryOf(policy: RepositoryFacts): Repository {
  const generation = policy.generation ?? 1;
  return { target: policy.targetId, path: repositoryPath(policy.id, generation), generation };
}

/** The policy settings whose change starts a new generation. */
export const GENERATION_FIELDS = ["targetId", "encryption", "deduplication"] as const;

/**
 * Which of the generation fields differ between a policy and its edit (empty: same repository). A
 * policy stored before a field existed compares with the field's default.
 */
export function generationChanges(
  before: { targetId: string; encryption?: string; deduplication?: boolean },
  after: { targetId: string; encryption?: string; deduplication?: boolean },
): string[] {
  const changed: string[] = [];
  if (before.targetId !== after.targetId) changed.push("storage target");
  if ((before.encryption ?? "AES-256-GCM") !== (after.encryption ?? "AES-256-GCM")) {
    changed.push("encryption");
  }
  if ((before.deduplication ?? true) !== (after.deduplication ?? true)) changed.push("deduplication");
  return changed;
}

/** Set once every restore point has its repository and target index (points older than generations had none). */
export const POINTS_BY_TARGET_FIX_KEY = dataFixKey("restore_points_by_target_v1");

/** What an old job payload says about its repository, or null (then `repositoryOf` the policy). */
export function repositoryOfPayload(payload: Record<string, unknown>): Repository | null {
  const r = payload.repository as Partial<Repository> | undefined;
  if (
    r && typeof r.target === "string" && typeof r.path === "string" && typeof r.generation === "number" &&
    Number.isInteger(r.generation) && r.generation >= 1
  ) {
    return { target: r.target, path: r.path, generation: r.generation };
  }
  return null;
}

/**
 * The hosts among `hostIds` whose next backup under `policy` must be a full because the policy's
 * current generation holds no restore point of theirs yet. Generation 1 needs no read: an agent with no
 * parent backs up in full anyway, as before generations existed.
 */
export async function hostsNeedingFull(
  kv: Deno.Kv,
  policy: RepositoryFacts,
  hostIds: string[],
): Promise<Set<string>> {
  const generation = policy.generation ?? 1;
  if (generation <= 1 || hostIds.length === 0) return new Set();
  const needs = new Set<string>();
  for (let i = 0; i < hostIds.length; i += 10) {
    const chunk = hostIds.slice(i, i + 10);
    const entries = await kv.getMany(chunk.map((h) => repositoryHostKey(policy.id, generation, h)));
    entries.forEach((e, j) => e.versionstamp === null && needs.add(chunk[j]));
  }
  return needs;
}

/**
 * The backup payload of one host: a scheduled incremental of a host that has no restore point in the
 * policy's current generation goes out as a full (`fullReason: "new_generation"`). Returns the payload
 * and the run kind to record.
 */
export function hostBackupPayload<K extends string>(
  payload: Record<string, unknown>,
  kind: K,
  hostId: string,
  needsFull: Set<string>,
): { payload: Record<string, unknown>; kind: K | "full" } {
  if (kind === "incremental" && needsFull.has(hostId)) {
    return { payload: { ...payload, hostId, runKind: "full", fullReason: "new_generation" }, kind: "full" };
  }
  return { payload: { ...payload, hostId }, kind };
}

/** The restore points a storage target still holds (not expired or failed), with the first few ids. */
export async function countPointsOnTarget(
  kv: Deno.Kv,
  targetId: string,
): Promise<{ count: number; sample: string[] }> {
  const ids: string[] = [];
  for await (const e of kv.list<string>({ prefix: pointsByTargetPrefix(targetId) })) {
    ids.push(e.value);
  }
  let count = 0;
  const sample: string[] = [];
  for (let i = 0; i < ids.length; i += 500) {
    const points = await getManyValues<{ id: string; status: string }>(
      kv,
      ids.slice(i, i + 500).map(restorePointKey),
    );
    for (const p of points) {
      if (p.status === "expired" || p.status === "failed") continue;
      count++;
      if (sample.length < 5) sample.push(p.id);
    }
  }
  return { count, sample };
}

/**
 * Data fix run on start: gives every restore point its `repository` (points written before generations
 * had none: the target its backup job named, else its policy's target, generation 1) and its
 * `restore_points_by_target` and `repository_hosts` entries. Each point is written checked against its
 * entry (a concurrent expiry is re-read). Idempotent; once complete a marker makes later starts skip it.
 */
export async function indexRestorePointsByTarget(
  kv: Deno.Kv,
  now: Date,
  options: { force?: boolean } = {},
): Promise<DataFixResult> {
  return await runDataFix(kv, POINTS_BY_TARGET_FIX_KEY, now, options, async () => {
    type Point = {
      id: string;
      policyId: string;
      hostId: string | null;
      runId: string;
      repository?: Repository;
    };
    let indexed = 0;
    for await (const listed of kv.list<Point>({ prefix: restorePointsPrefix() }, { batchSize: 500 })) {
      if (!listed.value?.policyId) continue;
      let tries = 0;
      // Commit retry (retry.ts): five lost races throw, so the marker is not written and the next start
      // finishes the fix (giving up quietly left the point out of its target's index for ever).
      await withRetry(async () => {
        const entry = tries++ === 0 ? listed : await kv.get<Point>(listed.key);
        const point = entry.value;
        if (!point) return { value: undefined };
        const repository = point.repository ?? await guessRepository(kv, point);
        if (!repository) return { value: undefined };
        const op = kv.atomic()
          .set(pointsByTargetKey(repository.target, point.id), point.id)
          .set(repositoryHostKey(point.policyId, repository.generation, point.hostId), point.id);
        if (!point.repository) op.check(entry).set(entry.key, { ...point, repository });
        if (!(await op.commit()).ok) return null;
        indexed++;
        return { value: undefined };
      });
    }
    return indexed;
  });
}

/** The repository of a point older than generations: its backup job's target, else its policy's. */
async function guessRepository(
  kv: Deno.Kv,
  point: { policyId: string; runId: string },
): Promise<Repository | null> {
  const run = (await kv.get<{ jobId: string | null }>(runKey(point.runId))).value;
  const job = run?.jobId
    ? (await kv.get<{ payload: Record<string, unknown> }>(jobKey(run.jobId))).value
    : null;
  const payload = job?.payload ?? {};
  const fromPayload = repositoryOfPayload(payload);
  if (fromPayload) return fromPayload;
  const target = (payload.target as { id?: unknown } | undefined)?.id ?? payload.targetId;
  if (typeof target === "string" && target) {
    return { target, path: repositoryPath(point.policyId, 1), generation: 1 };
  }
  const [live, retired] = await kv.getMany<[{ targetId: string }, { targetId: string }]>([
    policyKey(point.policyId),
    retiredPolicyKey(point.policyId),
  ]);
  const targetId = live.value?.targetId ?? retired.value?.targetId;
  return targetId ? { target: targetId, path: repositoryPath(point.policyId, 1), generation: 1 } : null;
}
