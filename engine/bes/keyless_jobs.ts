/**
 * The BES jobs that need no key (ENGINE.md §4):
 * - `prune`: forget the snapshots the control plane's retention chose (payload `restorePointIds`: the
 *   engine's restore point ids, which are snapshot ids), in every generation of the policy's repository on
 *   the target, then gc there. Result `pruned`: {restorePointIds, bytesFreed} plus what was absent and each
 *   repository's gc figures. gc deletes a pack only a grace period (`--gc-grace`, 24 h by default) after
 *   condemning it, so `bytesFreed` of
 *   one prune is what that gc deleted (earlier prunes' condemned packs and unreferenced segments).
 * - `verify`, structural part: every pack trailer valid, every index entry pointing at an existing pack,
 *   every blob a snapshot's clear reference list names indexed in its namespace. For a restore point it
 *   checks that point's snapshot in its repository; for a target (`scope: "storage_target"`) every
 *   repository on it. Reading back `sampleCount` blobs needs the namespace's keys: this handler alone ends a
 *   sampled verify whose structure is sound `warning` (`NOT_IMPLEMENTED`, verification `partial`), and
 *   keyed_jobs.ts `sampledVerifyHandler` then reads them back with the job's keys.
 *
 * Where the repository is: the payload's `repository` {target, path `cadres/<policyId>/g<N>`, generation}
 * (ENGINE.md §3: every restore point records it, and every payload that touches one names it). Payloads
 * queued by control planes older than generations lack it: then `targetId` (or, without one, the BES's
 * targets one by one) and every generation `cadres/<policyId>/g<N>/` there are searched.
 */
import { z } from "zod";
import { RepoError } from "../repo/errors.ts";
import { forgetSnapshots, garbageCollect } from "../repo/gc.ts";
import { Repository } from "../repo/repository.ts";
import { type VerifyProblem, verifyRepository } from "../repo/verify.ts";
import { type JobContext, JobFailure, type JobHandler, type JobOutcome, outcomeOfError } from "./jobs.ts";
import { messageOf } from "./log.ts";
import {
  classifyStorageError,
  isRepositoryDamage,
  listGenerations,
  listPolicies,
  type OpenOptions,
  openTargetStorage,
  repositoryPath,
  type TargetInfo,
  type TargetStorage,
} from "./storage.ts";
import type { TargetRegistry } from "./targets.ts";

/** What the keyless jobs need from the BES. */
export interface KeylessServices {
  targets: Pick<TargetRegistry, "find" | "all">;
  open: OpenOptions;
  /** gc's grace period before a condemned pack is deleted (`--gc-grace`; absent: `GC_GRACE_MS`, 24 h). */
  gcGraceMs?: number;
}

export const SnapshotId = /^[0-9a-f]{64}$/;
export const PolicyId = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/, "must be a policy id");
export const TargetId = z.string().min(1).max(40);
export const Generation = z.number().int().min(1).optional();
/** A repository as payloads name it (ENGINE.md §3). */
export const RepositoryRef = z.object({
  target: TargetId,
  path: z.string().regex(
    /^cadres\/[A-Za-z0-9][A-Za-z0-9_-]{0,127}\/g[1-9]\d{0,8}$/,
    "must be cadres/<policyId>/g<generation>",
  ),
  generation: z.number().int().min(1),
}).refine((r) => r.path.endsWith(`/g${r.generation}`), {
  message: "must end in the repository's generation",
  path: ["path"],
});
export type RepositoryRef = z.infer<typeof RepositoryRef>;
/** Most problems listed in a result (the count is always whole). */
const MAX_PROBLEMS = 50;

/** The payload parsed with `schema`, or a `BAD_PAYLOAD` failure naming the field. */
export function parsePayload<T extends z.ZodTypeAny>(ctx: JobContext, schema: T): z.infer<T> {
  const r = schema.safeParse(ctx.job.payload);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new JobFailure(
      "BAD_PAYLOAD",
      `The ${ctx.job.kind} job's payload is invalid: ${issue.path.join(".") || "payload"} ${issue.message}`,
    );
  }
  return r.data;
}

/** The target `id` of this BES, opened. Throws TARGET_UNKNOWN, or the TargetError of opening it. */
export async function openTarget(services: KeylessServices, id: string): Promise<TargetStorage> {
  let target: TargetInfo | null;
  try {
    target = await services.targets.find(id);
  } catch (e) {
    throw new JobFailure(
      "CONTROL_PLANE_UNREACHABLE",
      `Could not fetch the storage targets from the control plane: ${messageOf(e)}`,
      true,
    );
  }
  if (!target) {
    throw new JobFailure("TARGET_UNKNOWN", `Storage target ${id} is not one of this BES's targets`);
  }
  return await openTargetStorage(target, services.open);
}

/** A storage error of `target` as a JobFailure (or the error itself when it is something else). */
export function storageFailure(e: unknown, target: TargetInfo): unknown {
  const t = classifyStorageError(e, target);
  return t ? new JobFailure(t.reason, t.message, t.retryable) : e;
}

/** The repositories a job may look in: those of one target, by path (relative to its root). */
export interface JobRepositories {
  storage: TargetStorage;
  /** The repository named by the payload: just it. Older payloads: every generation of the policy found. */
  paths: string[];
  /** Whether the payload named the repository (else the generations were searched). */
  named: boolean;
}

/**
 * Where a job's repository is: the payload's `repository` (its target must be this BES's, its path the
 * policy's), else — payloads of older control planes — `targetId` (or the target holding a repository of the
 * policy) and the `generation` given, or every generation there. Throws `JobFailure` (BAD_PAYLOAD,
 * TARGET_UNKNOWN, TARGET_UNREACHABLE…).
 */
export async function jobRepositories(
  services: KeylessServices,
  p: { repository?: RepositoryRef; targetId?: string; policyId: string; generation?: number },
): Promise<JobRepositories> {
  if (p.repository) {
    const policy = p.repository.path.split("/")[1];
    if (policy !== p.policyId) {
      throw new JobFailure(
        "BAD_PAYLOAD",
        `The payload's repository ${p.repository.path} is not one of policy ${p.policyId}`,
      );
    }
    const storage = await openTarget(services, p.repository.target);
    return { storage, paths: [p.repository.path], named: true };
  }
  const storage = p.targetId
    ? await openTarget(services, p.targetId)
    : await findPolicyTarget(services, p.policyId);
  try {
    const generations = p.generation ? [p.generation] : await listGenerations(storage, p.policyId);
    return { storage, paths: generations.map((g) => repositoryPath(p.policyId, g)), named: false };
  } catch (e) {
    throw storageFailure(e, storage.target);
  }
}

/** "repository X on T" or "any repository of policy P on T (searched: …)", for messages. */
export function describeRepositories(r: JobRepositories, policyId: string): string {
  return r.named
    ? `repository ${r.paths[0]} on ${r.storage.target.name}`
    : `any repository of policy ${policyId} on ${r.storage.target.name} (searched: ${
      r.paths.join(", ") || "none"
    })`;
}

/** The path of the repository among `located` that holds snapshot `id`, or null. */
export async function findSnapshot(located: JobRepositories, id: string): Promise<string | null> {
  if (!SnapshotId.test(id)) return null;
  for (const path of located.paths) {
    if (await located.storage.at(path).exists(`snapshots/${id}`)) return path;
  }
  return null;
}

// ---------------------------------------------------------------------------------------------------
// prune

const PrunePayload = z.object({
  policyId: PolicyId,
  targetId: TargetId.optional(),
  repository: RepositoryRef.optional(),
  restorePointIds: z.array(z.string().min(1).max(200)).min(1).max(1000),
  generation: Generation,
}).refine((p) => p.targetId || p.repository, { message: "is required", path: ["repository"] });

/** One repository's part of a prune. */
interface PrunedRepository {
  path: string;
  generation: number;
  forgotten: string[];
  condemnedPacks: number;
  /** Mostly dead packs rewritten (live blobs copied to new packs), then condemned like the others. */
  repackedPacks: number;
  deletedPacks: number;
  pendingPacks: number;
  bytesFreed: number;
  error?: string;
}

export function pruneHandler(services: KeylessServices): JobHandler {
  return async (ctx) => {
    const p = parsePayload(ctx, PrunePayload);
    const located = await jobRepositories(services, p);
    const storage = located.storage;
    const target = storage.target;
    const wanted = [...new Set(p.restorePointIds)];
    const remaining = new Set(wanted.filter((id) => SnapshotId.test(id)));
    const repositories: PrunedRepository[] = [];
    const forgotten: string[] = [];
    const gcDamage: string[] = [];
    const result = (): Record<string, unknown> => ({
      pruned: {
        restorePointIds: forgotten,
        bytesFreed: repositories.reduce((s, r) => s + r.bytesFreed, 0),
        absent: wanted.filter((id) => !forgotten.includes(id)),
        repositories: repositories.slice(0, 50),
      },
    });
    try {
      for (const [i, path] of located.paths.entries()) {
        ctx.signal.throwIfAborted();
        const generation = Number(path.slice(path.lastIndexOf("/g") + 2));
        ctx.progress({
          percent: Math.round((i / located.paths.length) * 100),
          message: `Pruning ${path} on ${target.name}`,
        });
        const backend = storage.at(path);
        if (!(await backend.exists("config"))) {
          // A named repository that holds nothing (never written, or removed): its points are absent.
          repositories.push({
            path,
            generation,
            forgotten: [],
            condemnedPacks: 0,
            repackedPacks: 0,
            deletedPacks: 0,
            pendingPacks: 0,
            bytesFreed: 0,
            error: "no repository here",
          });
          continue;
        }
        const here: string[] = [];
        for (const id of remaining) if (await backend.exists(`snapshots/${id}`)) here.push(id);
        if (here.length > 0) {
          try {
            await forgetSnapshots(backend, here);
          } catch (e) {
            if (e instanceof RepoError && !isRepositoryDamage(e)) {
              throw new JobFailure("REPOSITORY_BUSY", `${path} on ${target.name}: ${e.message}`, true);
            }
            throw e;
          }
          for (const id of here) {
            remaining.delete(id);
            forgotten.push(id);
          }
        }
        const entry: PrunedRepository = {
          path,
          generation,
          forgotten: here,
          condemnedPacks: 0,
          repackedPacks: 0,
          deletedPacks: 0,
          pendingPacks: 0,
          bytesFreed: 0,
        };
        repositories.push(entry);
        // gc in every generation: what was forgotten now, packs earlier prunes condemned (deleted after the
        // grace period) and what killed backups left behind.
        try {
          const gc = await garbageCollect(backend, { graceMs: services.gcGraceMs });
          entry.condemnedPacks = gc.condemned.length;
          entry.repackedPacks = gc.repacked.length;
          entry.deletedPacks = gc.deleted.length;
          entry.pendingPacks = gc.pending.length;
          entry.bytesFreed = gc.bytesFreed;
        } catch (e) {
          if (!isRepositoryDamage(e)) {
            if (e instanceof RepoError && !classifyStorageError(e, target)) {
              throw new JobFailure("REPOSITORY_BUSY", `gc of ${path} on ${target.name}: ${e.message}`, true);
            }
            throw e;
          }
          // A damaged object stops gc (it never guesses); retrying does not help: say so, naming it.
          entry.error = `gc: ${messageOf(e)}`;
          gcDamage.push(`${path}: ${messageOf(e)}`);
        }
      }
    } catch (e) {
      const failure = storageFailure(e, target);
      if (forgotten.length === 0) throw failure;
      // Part is done: the result says what, and a retry does the rest (what is gone is then `absent`).
      const { error } = outcomeOfError(failure);
      return {
        status: "failed",
        retryable: true,
        error: {
          reason: error!.reason,
          message: `${error!.message}\n${forgotten.length} restore points were removed before it stopped: ` +
            forgotten.slice(0, 20).join(", "),
        },
        output: result(),
      };
    }
    const output = result();
    const absent = (output.pruned as { absent: string[] }).absent;
    const problems: string[] = [];
    let reason = "";
    if (gcDamage.length) {
      reason = "GC_FAILED";
      problems.push(
        `The snapshots were forgotten but gc stopped at a damaged object (${gcDamage.join("; ")}); their ` +
          `space is freed once it is repaired ("deno task repo repair")`,
      );
    }
    if (absent.length > 0) {
      reason ||= "SNAPSHOTS_ABSENT";
      problems.push(
        `${absent.length} of ${wanted.length} restore points were not in ${
          describeRepositories(located, p.policyId)
        } (already pruned, or never stored there): ${absent.slice(0, 20).join(", ")}${
          absent.length > 20 ? ", …" : ""
        }`,
      );
    }
    ctx.progress({ percent: 100, message: `Pruned ${forgotten.length} restore points` });
    return problems.length
      ? { status: "warning", error: { reason, message: problems.join("\n") }, output }
      : { status: "success", output };
  };
}

// ---------------------------------------------------------------------------------------------------
// verify (structural)

const VerifyTargetPayload = z.object({ scope: z.literal("storage_target"), targetId: TargetId });
const VerifyPointPayload = z.object({
  restorePointId: z.string().min(1).max(200),
  engineRestorePointId: z.string().min(1).max(200).optional(),
  policyId: PolicyId,
  targetId: TargetId.optional(),
  repository: RepositoryRef.optional(),
  sampleCount: z.number().int().min(0).max(100_000).optional(),
  generation: Generation,
});

/** What one structural check found, summed over repositories. */
interface Tally {
  repositories: number;
  packs: number;
  snapshots: number;
  referencedBlobs: number;
  problems: (VerifyProblem & { repository: string })[];
  problemCount: number;
}

function emptyTally(): Tally {
  return { repositories: 0, packs: 0, snapshots: 0, referencedBlobs: 0, problems: [], problemCount: 0 };
}

/** Runs the structural verify of the repository at `path` on `storage` (only `snapshot` when given). */
async function checkRepository(
  storage: TargetStorage,
  path: string,
  tally: Tally,
  snapshot?: string,
): Promise<void> {
  let result;
  try {
    const repo = await Repository.openStorage(storage.at(path));
    result = await verifyRepository(repo, snapshot ? { snapshot } : {});
  } catch (e) {
    const failure = storageFailure(e, storage.target);
    if (failure instanceof JobFailure) throw failure;
    if (!(e instanceof RepoError)) throw e;
    // A config that cannot be read (or the snapshot gone meanwhile) is a finding, not a crash.
    tally.repositories++;
    tally.problemCount++;
    tally.problems.push({ repository: path, kind: "repository", id: path, detail: e.message });
    return;
  }
  tally.repositories++;
  tally.packs += result.packs;
  tally.snapshots += result.snapshots;
  tally.referencedBlobs += result.referencedBlobs;
  tally.problemCount += result.problems.length;
  for (const p of result.problems) {
    if (tally.problems.length < MAX_PROBLEMS) tally.problems.push({ ...p, repository: path });
  }
}

/** The `verify` result of a structural check: passed or failed, `partial` when keys were needed too. */
function verifyOutcome(tally: Tally, sampleCount: number, what: string): JobOutcome {
  const lines = tally.problems.map((p) => `${p.repository}: ${p.kind} ${p.id}: ${p.detail}`);
  const summary = `${what}: ${tally.repositories} repositor${tally.repositories === 1 ? "y" : "ies"}, ` +
    `${tally.packs} packs, ${tally.snapshots} snapshots, ${tally.referencedBlobs} referenced blobs checked`;
  const verification = {
    sampled: 0,
    failedCount: tally.problemCount,
    repositories: tally.repositories,
    packs: tally.packs,
    snapshots: tally.snapshots,
    referencedBlobs: tally.referencedBlobs,
    problems: tally.problems,
  };
  if (tally.problemCount > 0) {
    // The first line (what the runs table shows) names the first damaged object.
    const details =
      `${tally.problemCount} problem${tally.problemCount === 1 ? "" : "s"}, the first: ${lines[0]}\n` +
      `${summary}\n${lines.slice(1).join("\n")}` +
      (tally.problemCount > lines.length ? `\n… and ${tally.problemCount - lines.length} more` : "");
    return {
      status: "failed",
      error: { reason: "VERIFY_MISMATCH", message: details.slice(0, 2000) },
      output: { verification: { status: "failed", details: details.slice(0, 8000), ...verification } },
    };
  }
  if (sampleCount > 0) {
    const details = `${summary}: structure sound. Reading back ${sampleCount} sampled blobs needs the ` +
      `namespace's keys: not done`;
    return {
      status: "warning",
      error: { reason: "NOT_IMPLEMENTED", message: details },
      output: { verification: { status: "partial", details, ...verification } },
    };
  }
  const details = `${summary}: no problem found`; // (the structure; no blob read back)
  return { status: "success", output: { verification: { status: "passed", details, ...verification } } };
}

/** Finds the target holding a repository of `policyId` among this BES's targets (older payloads). */
export async function findPolicyTarget(services: KeylessServices, policyId: string): Promise<TargetStorage> {
  const unreachable: string[] = [];
  for (const target of services.targets.all()) {
    try {
      const storage = await openTargetStorage(target, services.open);
      if ((await listGenerations(storage, policyId)).length > 0) return storage;
    } catch (e) {
      unreachable.push(`${target.name}: ${messageOf(e)}`);
    }
  }
  if (unreachable.length) {
    throw new JobFailure(
      "TARGET_UNREACHABLE",
      `No reachable storage target of this BES holds a repository of policy ${policyId}; not reachable: ` +
        unreachable.join("; "),
      true,
    );
  }
  throw new JobFailure(
    "REPOSITORY_MISSING",
    `No storage target of this BES holds a repository of policy ${policyId} (the payload names no target)`,
  );
}

export function verifyHandler(services: KeylessServices): JobHandler {
  return async (ctx) => {
    if (ctx.job.payload.scope === "storage_target") {
      const p = parsePayload(ctx, VerifyTargetPayload);
      const storage = await openTarget(services, p.targetId);
      const tally = emptyTally();
      try {
        const repos: string[] = [];
        for (const policyId of await listPolicies(storage)) {
          for (const g of await listGenerations(storage, policyId)) repos.push(repositoryPath(policyId, g));
        }
        for (const [i, path] of repos.entries()) {
          ctx.signal.throwIfAborted();
          ctx.progress({ percent: Math.round((i / repos.length) * 100), message: `Verifying ${path}` });
          await checkRepository(storage, path, tally);
        }
      } catch (e) {
        throw storageFailure(e, storage.target);
      }
      return verifyOutcome(tally, 0, `Storage target ${storage.target.name}`);
    }
    const p = parsePayload(ctx, VerifyPointPayload);
    const snapshot = p.engineRestorePointId ?? p.restorePointId;
    const located = await jobRepositories(services, p);
    const storage = located.storage;
    const tally = emptyTally();
    try {
      const path = await findSnapshot(located, snapshot);
      if (!path) {
        tally.problemCount = 1;
        tally.problems.push({
          repository: located.named ? located.paths[0] : `cadres/${p.policyId}`,
          kind: "snapshot",
          id: snapshot,
          detail: `restore point ${p.restorePointId} has no snapshot in ${
            describeRepositories(located, p.policyId)
          }`,
        });
      } else {
        ctx.progress({ percent: 10, message: `Verifying snapshot ${snapshot.slice(0, 12)} in ${path}` });
        await checkRepository(storage, path, tally, snapshot);
      }
    } catch (e) {
      throw storageFailure(e, storage.target);
    }
    return verifyOutcome(tally, p.sampleCount ?? 0, `Restore point ${p.restorePointId}`);
  };
}

/**
 * BES kinds that need a namespace's keys, fetched just in time: `browse`, `search` and a verify's read-back
 * (keyed_jobs.ts), `file_history` (file_history.ts), `replicate` and `synthetic_full` (data_jobs.ts), `bmr` (bmr.ts). The program runs them
 * all; a runner built without one of them answers it `NOT_IMPLEMENTED`.
 */
export const KEYED_KINDS = [
  "browse",
  "search",
  "file_history",
  "replicate",
  "synthetic_full",
  "bmr",
] as const;

/** The answer to a job this BES cannot run yet (it needs keys) or at all (an agent's kind). */
export const unsupportedHandler: JobHandler = (ctx) => {
  const kind = ctx.job.kind;
  if ((KEYED_KINDS as readonly string[]).includes(kind)) {
    return Promise.resolve({
      status: "failed",
      retryable: false,
      error: {
        reason: "NOT_IMPLEMENTED",
        message: `This BES does not run ${kind} jobs yet (see docs/engines.md)`,
      },
    });
  }
  return Promise.resolve({
    status: "failed",
    retryable: false,
    error: { reason: "UNSUPPORTED_KIND", message: `A BES does not run ${kind} jobs` },
  });
};
