/**
 * BES jobs that write repository data with one namespace's keys (ENGINE.md §4):
 *
 * - `replicate`: copies the snapshot of a restore point, and every blob it needs, into the replica
 *   repository — the same path (`cadres/<policy>/g<N>`) on the rule's target. Blobs are copied as stored
 *   (ciphertext, engine/repo/copy.ts), each authenticated and re-hashed first so damage is never copied; a
 *   second copy adds nothing. A target of this BES is written directly; a target of another BES through that
 *   BES's data API, with the write token the control plane issued for it (`replicaDataToken`, renewed by
 *   every progress reply) and its certificate pinned. The replica shares the namespace's keys: the control
 *   plane keeps a copy of them wrapped by the rule's KEK source (it makes it when it delivers the keys for
 *   this job), and, when it sends the account's recovery public key, the BES writes a copy wrapped for it
 *   into the replica's `keys/`, so the replica opens without the control plane.
 * - `synthetic_full`: writes a new snapshot of kind `synthetic_full` equal to the newest state of a host's
 *   chain (the newest snapshot of its namespace, or the one the payload names) with no parent: the same root
 *   tree and reference list, every blob checked present and live first, under a writer lock — no host I/O,
 *   nothing re-read or re-stored.
 */
import { z } from "zod";
import type { Backend } from "../repo/backend.ts";
import { fromHex } from "../repo/bytes.ts";
import { encodeConfig, newConfig } from "../repo/config.ts";
import { copySnapshots } from "../repo/copy.ts";
import { WrongKeyError } from "../repo/errors.ts";
import { namespaceKeysOpener, recoveryKeyObject } from "../repo/keys.ts";
import { acquireLock } from "../repo/lock.ts";
import { type Namespace, Repository } from "../repo/repository.ts";
import {
  listSnapshots,
  loadSnapshot,
  readSnapshotInfo,
  readSnapshotRefs,
  type SnapshotBody,
  writeSnapshot,
} from "../repo/snapshot.ts";
import { loadTree } from "../repo/tree.ts";
import { DataApiRequestError, RemoteBackend } from "../protocol/remote_backend.ts";
import { type JobKeys, wipeKeys } from "./job_keys.ts";
import { type JobContext, JobFailure, type JobHandler, type JobOutcome } from "./jobs.ts";
import { checkKeysRepository, type KeyedServices } from "./keyed_jobs.ts";
import {
  describeRepositories,
  findSnapshot,
  jobRepositories,
  openTarget,
  parsePayload,
  PolicyId,
  RepositoryRef,
  storageFailure,
  TargetId,
} from "./keyless_jobs.ts";
import { messageOf } from "./log.ts";
import type { TargetStorage } from "./storage.ts";

/** Creations of a repository on this BES, one at a time per place (two jobs must not write two configs). */
const creating = new Map<string, Promise<unknown>>();

async function oneAtATime<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const prev = creating.get(key) ?? Promise.resolve();
  const run = prev.catch(() => {}).then(fn);
  const tail = run.catch(() => {});
  creating.set(key, tail);
  tail.then(() => creating.get(key) === tail && creating.delete(key));
  return await run;
}

/** Gets the job's keys, checks them against the repository at `path` on `storage`, and runs `fn`; wipes them. */
async function withKeys<T>(
  ctx: JobContext,
  services: KeyedServices,
  storage: TargetStorage,
  path: string,
  namespace: string,
  fn: (keys: JobKeys) => Promise<T>,
): Promise<T> {
  const keys = await services.keys(ctx.job.id);
  try {
    checkKeysRepository(keys, storage.target.id, path);
    if (keys.namespace !== namespace) {
      throw new JobFailure(
        "KEY_MISMATCH",
        `The job's keys are namespace "${keys.namespace}"'s, but the snapshot is namespace "${namespace}"'s`,
      );
    }
    return await fn(keys);
  } finally {
    wipeKeys(keys);
  }
}

/** Opens a repository with one namespace's keys; wrong keys are KEY_MISMATCH. */
async function openWith(backend: Backend, keys: JobKeys): Promise<Repository> {
  try {
    return await Repository.open(backend, namespaceKeysOpener(keys));
  } catch (e) {
    if (e instanceof WrongKeyError) throw new JobFailure("KEY_MISMATCH", e.message);
    throw e;
  }
}

// ---------------------------------------------------------------------------------------------------
// replicate

const ReplicatePayload = z.object({
  restorePointId: z.string().min(1).max(200),
  engineRestorePointId: z.string().min(1).max(200).optional(),
  policyId: PolicyId,
  hostId: z.string().min(1).max(128).nullable().optional(),
  sourceTargetId: TargetId.optional(),
  repository: RepositoryRef.optional(),
  targetId: TargetId,
  target: z.object({
    id: TargetId,
    besId: z.string().min(1).max(128).optional(),
    bes: z.object({
      id: z.string().min(1).max(128),
      dataUrl: z.string().max(2048).nullable().optional(),
      certificate: z.string().max(16 * 1024).nullable().optional(),
    }).optional(),
  }).passthrough().optional(),
  kekSource: z.enum(["account", "pam_vault"]).optional(),
}).refine((p) => !p.target || p.target.id === p.targetId, {
  message: "must be the target targetId names",
  path: ["target", "id"],
});

/** A replica's data API methods that a control plane's BES may not serve yet (the init endpoint). */
interface InitCapable {
  initRepository?(config: Uint8Array): Promise<{ created: boolean; config: Uint8Array }>;
  addKeyObject?(name: string, bytes: Uint8Array): Promise<{ existed: boolean }>;
}

/** The replica repository's storage: a target of this BES, or another BES's data API. */
interface ReplicaPlace {
  backend: Backend & InitCapable;
  remote: RemoteBackend | null;
  /** For messages. */
  where: string;
  /** Creates the repository (no config there yet) with `src`'s settings. */
  create(src: Repository): Promise<void>;
  /** Maps an error of the replica's storage to the job's failure. */
  failure(e: unknown): unknown;
}

/** The failure a data API error of the replica's BES amounts to. */
function remoteFailure(e: unknown, where: string): unknown {
  if (!(e instanceof DataApiRequestError)) return e;
  const reason = e.status === null || e.status >= 500 || e.status === 429
    ? "TARGET_UNREACHABLE"
    : e.code === "repository_unknown"
    ? "TARGET_UNKNOWN"
    : e.status === 401 || e.status === 403
    ? "AUTH"
    : "REPLICA_REFUSED";
  return new JobFailure(reason, `${where}: ${e.message}`, reason === "TARGET_UNREACHABLE");
}

async function replicaPlace(
  ctx: JobContext,
  services: KeyedServices,
  p: z.infer<typeof ReplicatePayload>,
  path: string,
): Promise<ReplicaPlace> {
  let local;
  try {
    local = await services.targets.find(p.targetId);
  } catch (e) {
    throw new JobFailure(
      "CONTROL_PLANE_UNREACHABLE",
      `Could not fetch the storage targets from the control plane: ${messageOf(e)}`,
      true,
    );
  }
  if (local) {
    const storage = await openTarget(services, p.targetId);
    const backend = storage.at(path);
    return {
      backend,
      remote: null,
      where: `${path} on ${storage.target.name}`,
      create: (src) =>
        oneAtATime(`${storage.target.id}\u0000${path}`, async () => {
          if (await backend.exists("config")) return;
          await backend.put("config", encodeConfig(newConfig(src.config, new Date())));
        }),
      failure: (e) => storageFailure(e, storage.target),
    };
  }
  // A target of another BES: through its data API, with the token issued for it.
  const bes = p.target?.bes;
  const where = `${path} on target ${p.targetId} of BES ${bes?.id ?? p.target?.besId ?? "?"}`;
  const token = () => {
    const fresh = ctx.lastProgressReply?.replicaDataToken;
    const t = typeof fresh === "string" ? fresh : ctx.job.replicaDataToken;
    if (!t) throw new Error("the control plane issued no replicaDataToken for this job");
    return t;
  };
  if (!ctx.job.replicaDataToken && typeof ctx.lastProgressReply?.replicaDataToken !== "string") {
    throw new JobFailure(
      "TARGET_UNKNOWN",
      `Target ${p.targetId} is not one of this BES's, and the control plane issued no replicaDataToken for ` +
        `its BES (${bes?.id ?? p.target?.besId ?? "none named"})`,
    );
  }
  if (!bes?.dataUrl) {
    throw new JobFailure(
      "TARGET_UNREACHABLE",
      `${where}: that BES has reported no data API (no data URL); it may be older or not started`,
      true,
    );
  }
  if (bes.dataUrl.startsWith("https:") && !bes.certificate) {
    throw new JobFailure("TARGET_UNREACHABLE", `${where}: that BES has reported no certificate`, true);
  }
  const remote = new RemoteBackend({ url: bes.dataUrl, token, caCert: bes.certificate ?? undefined });
  const backend = remote as RemoteBackend & InitCapable;
  return {
    backend,
    remote,
    where,
    create: async (src) => {
      if (typeof backend.initRepository !== "function") {
        throw new JobFailure(
          "REPLICA_REFUSED",
          `${where}: no repository there yet, and this BES cannot create one through the data API (it needs ` +
            `the data API's init endpoint)`,
        );
      }
      await backend.initRepository(encodeConfig(newConfig(src.config, new Date())));
    },
    failure: (e) => remoteFailure(e, where),
  };
}

/** Writes the copy of `keys` wrapped for the account's recovery key into the replica, unless it is there. */
async function writeRecoveryCopy(
  place: ReplicaPlace,
  dst: Repository,
  keys: JobKeys,
): Promise<string | null> {
  if (!keys.recoveryPublicKey) return null;
  const ko = await recoveryKeyObject(keys, keys.recoveryPublicKey, {
    repoId: dst.config.id,
    configSha256: dst.configSha256,
  });
  if (place.remote) {
    if (typeof place.backend.addKeyObject !== "function") return null;
    await place.backend.addKeyObject(ko.name, ko.bytes);
    return ko.name;
  }
  if (!(await place.backend.exists(ko.name))) await place.backend.put(ko.name, ko.bytes);
  return ko.name;
}

export function replicateHandler(services: KeyedServices): JobHandler {
  return async (ctx) => {
    const started = Date.now();
    const p = parsePayload(ctx, ReplicatePayload);
    const id = p.engineRestorePointId ?? p.restorePointId;
    const located = await jobRepositories(services, {
      repository: p.repository,
      targetId: p.sourceTargetId,
      policyId: p.policyId,
    });
    const storage = located.storage;
    if (storage.target.id === p.targetId) {
      throw new JobFailure(
        "BAD_PAYLOAD",
        `The replica target ${p.targetId} is the target the restore point is on: nothing to copy to`,
      );
    }
    let path: string | null;
    let namespace: string;
    try {
      path = await findSnapshot(located, id);
      if (!path) {
        throw new JobFailure(
          "RESTORE_POINT_MISSING",
          `Restore point ${p.restorePointId} has no snapshot ${id} in ${
            describeRepositories(located, p.policyId)
          }`,
        );
      }
      namespace = (await readSnapshotInfo(storage.at(path), id)).namespace;
    } catch (e) {
      throw storageFailure(e, storage.target);
    }
    const sourcePath = path;
    const place = await replicaPlace(ctx, services, p, sourcePath);
    try {
      return await withKeys(ctx, services, storage, sourcePath, namespace, async (keys) => {
        ctx.progress({ percent: 5, message: `Opening ${sourcePath} on ${storage.target.name}` });
        let src: Repository;
        try {
          src = await openWith(storage.at(sourcePath), keys);
        } catch (e) {
          throw storageFailure(e, storage.target);
        }
        let dst: Repository;
        let created = false;
        try {
          if (!(await place.backend.exists("config"))) {
            ctx.progress({ percent: 10, message: `Creating the replica repository ${place.where}` });
            await place.create(src);
            created = true;
          }
          dst = await openWith(place.backend, keys);
        } catch (e) {
          throw place.failure(e);
        }
        ctx.signal.throwIfAborted();
        ctx.progress({ percent: 15, message: `Copying snapshot ${id.slice(0, 12)} to ${place.where}` });
        let copied;
        try {
          copied = await copySnapshots(src, dst, [id]);
        } catch (e) {
          // The replica's storage or BES refusing; else the source's storage (damage names its object).
          const f = place.failure(e);
          throw f !== e ? f : storageFailure(e, storage.target);
        }
        let recoveryCopy: string | null = null;
        try {
          recoveryCopy = await writeRecoveryCopy(place, dst, keys);
        } catch (e) {
          throw place.failure(e);
        }
        ctx.progress({ percent: 100, message: `Copied ${copied.blobsCopied} blobs to ${place.where}` });
        const output = {
          replication: { restorePointId: p.restorePointId, targetId: p.targetId, bytes: copied.bytesCopied },
          replica: {
            repository: { target: p.targetId, path: sourcePath },
            via: place.remote ? "data API of the replica's BES" : "this BES",
            created,
            snapshotCopied: copied.snapshots[0]?.copied ?? false,
            blobsCopied: copied.blobsCopied,
            blobsPresent: copied.blobsPresent,
            packsWritten: copied.packsWritten,
            kekSource: p.kekSource ?? "account",
            recoveryKeyObject: recoveryCopy,
          },
        };
        return {
          status: "success",
          bytesTransferred: copied.bytesCopied,
          stats: { bytesStored: copied.bytesCopied, durationMs: Date.now() - started },
          output,
        } satisfies JobOutcome;
      });
    } finally {
      place.remote?.close();
    }
  };
}

// ---------------------------------------------------------------------------------------------------
// synthetic_full

const SyntheticPayload = z.object({
  policyId: PolicyId,
  targetId: TargetId.optional(),
  repository: RepositoryRef.optional(),
  hostId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/, "must be a host id").nullable().optional(),
  /** The snapshot whose state to make a full of (default: the newest of the host's namespace). */
  engineRestorePointId: z.string().regex(/^[0-9a-f]{64}$/, "must be a snapshot id").optional(),
  generation: z.number().int().min(1).optional(),
}).refine((p) => p.targetId || p.repository, { message: "is required", path: ["repository"] });

/** Files, folders and bytes under a tree (every tree blob read and authenticated). */
async function countTree(
  ns: Namespace,
  root: string,
  hasher: ReturnType<Namespace["hasher"]>,
  ctx: JobContext,
) {
  let files = 0;
  let dirs = 0;
  let bytes = 0;
  const stack = [root];
  while (stack.length) {
    ctx.signal.throwIfAborted();
    const tree = await loadTree(ns, stack.pop()!, hasher);
    for (const e of tree.entries) {
      if (e.type === "dir" && e.subtree) {
        dirs++;
        stack.push(e.subtree);
      } else if (e.type === "file") {
        files++;
        bytes += e.size;
      }
    }
  }
  return { files, dirs, bytes };
}

export function syntheticFullHandler(services: KeyedServices): JobHandler {
  return async (ctx) => {
    const started = Date.now();
    const p = parsePayload(ctx, SyntheticPayload);
    if (!p.hostId) {
      throw new JobFailure(
        "BAD_PAYLOAD",
        "A synthetic full is made of one host's chain (its namespace, with that namespace's keys): the " +
          "payload names no hostId",
      );
    }
    const host = p.hostId;
    const located = await jobRepositories(services, p);
    const storage = located.storage;
    // A host with no backup yet (assigned since the last backup, or whose backups all failed) has nothing
    // to make a synthetic full of: its job is skipped, not failed (`output.skipped`; the control plane
    // records the run as skipped). A named snapshot that is missing is still RESTORE_POINT_MISSING.
    const skipped = (message: string): JobOutcome => ({
      status: "warning",
      error: { reason: "NO_BACKUP", message },
      retryable: false,
      output: { skipped: { hostId: host, reason: "NO_BACKUP", message } },
    });
    // A named repository; older payloads: the newest generation found.
    const path = located.paths.at(-1);
    if (!path) {
      if (p.engineRestorePointId) {
        throw new JobFailure(
          "RESTORE_POINT_MISSING",
          `No repository of policy ${p.policyId} on ${storage.target.name}: nothing to make a synthetic full of`,
        );
      }
      return skipped(
        `Skipped: host ${host} has no backup in policy ${p.policyId}'s repository on ${storage.target.name} ` +
          `(none written yet) — nothing to make a synthetic full of`,
      );
    }
    const backend = storage.at(path);
    let baseId: string;
    try {
      if (!(await backend.exists("config"))) {
        if (!p.engineRestorePointId) {
          return skipped(
            `Skipped: host ${host} has no backup in ${path} on ${storage.target.name} (the repository is ` +
              `not written yet) — nothing to make a synthetic full of`,
          );
        }
        throw new JobFailure(
          "RESTORE_POINT_MISSING",
          `No repository at ${path} on ${storage.target.name}: host ${host} has no backup to make a synthetic ` +
            `full of`,
        );
      }
      if (p.engineRestorePointId) {
        const info = await readSnapshotInfo(backend, p.engineRestorePointId);
        if (info.namespace !== host) {
          throw new JobFailure(
            "BAD_PAYLOAD",
            `Snapshot ${p.engineRestorePointId} is namespace "${info.namespace}"'s, not host ${host}'s`,
          );
        }
        baseId = info.id;
      } else {
        // The clear headers say which snapshots are the host's and when they were made (no key needed).
        const mine = (await listSnapshots(backend, { onDamaged: () => {} })).filter((s) =>
          s.namespace === host
        );
        const newest = mine.at(-1);
        if (!newest) {
          return skipped(
            `Skipped: host ${host} has no backup in ${path} on ${storage.target.name} — nothing to make a ` +
              `synthetic full of`,
          );
        }
        baseId = newest.id;
      }
    } catch (e) {
      throw storageFailure(e, storage.target);
    }
    return await withKeys(ctx, services, storage, path, host, async (keys) => {
      try {
        const repo = await openWith(backend, keys);
        const ns = repo.namespace(host);
        const base = await loadSnapshot(ns, baseId);
        if (base.kind === "image") {
          throw new JobFailure(
            "NOT_APPLICABLE",
            `Snapshot ${baseId} is an image backup: every image snapshot already holds the whole disk, with no ` +
              `parent to depend on`,
          );
        }
        const info = await readSnapshotInfo(backend, baseId);
        const refs = await readSnapshotRefs(backend, info);
        const hasher = ns.hasher(base.chainSalt ? fromHex(base.chainSalt) : null);
        ctx.progress({ percent: 10, message: `Reading the trees of ${baseId.slice(0, 12)}` });
        const counted = await countTree(ns, base.tree, hasher, ctx);
        // The writer lock first (gc never deletes what a live writer's snapshot may need), then every blob
        // checked present and live; the snapshot is written only while the lock is proven unlapsed.
        const lock = await acquireLock(backend, { kind: "backup", namespace: host, parent: baseId });
        let id: string;
        try {
          const missing = await ns.checkCommit(refs);
          if (missing.length > 0) {
            throw new JobFailure(
              "REPOSITORY_DAMAGED",
              `${missing.length} blobs snapshot ${baseId} needs are missing or in condemned packs (the first: ` +
                `${missing.slice(0, 5).join(", ")}); no synthetic full was written — verify the repository`,
            );
          }
          const now = new Date().toISOString();
          const body: SnapshotBody = {
            version: base.version,
            namespace: base.namespace,
            host: base.host,
            kind: "synthetic_full",
            paths: base.paths,
            parent: null,
            tree: base.tree,
            startTime: now,
            endTime: now,
            stats: {
              files: counted.files,
              dirs: counted.dirs,
              bytesRead: 0,
              bytesNew: 0,
              bytesStored: 0,
              durationMs: Date.now() - started,
            },
            errors: base.errors,
            chainSalt: base.chainSalt,
          };
          await lock.check();
          id = await writeSnapshot(ns, body, refs);
        } finally {
          await lock.release().catch(() => {});
        }
        ctx.progress({ percent: 100, message: `Wrote synthetic full ${id.slice(0, 12)}` });
        const completedAt = new Date().toISOString();
        return {
          status: "success",
          protectedBytes: counted.bytes,
          stats: { files: counted.files, dirs: counted.dirs, bytesRead: 0, durationMs: Date.now() - started },
          output: {
            restorePoint: {
              id,
              chainId: id,
              type: "synthetic_full",
              parentId: null,
              sizeBytes: counted.bytes,
              fileCount: counted.files,
              completedAt,
            },
            syntheticFull: {
              base: baseId,
              repository: { target: storage.target.id, path },
              blobs: refs.length,
            },
          },
        } satisfies JobOutcome;
      } catch (e) {
        throw storageFailure(e, storage.target);
      }
    });
  };
}
