/**
 * The worker's backup: creates the repository on first use (the data API's put-if-absent `init`, with the
 * policy's settings) and opens it with the job's namespace keys, refusing a repository whose encryption or
 * deduplication differs from the policy's; writes the copy of the keys wrapped for the account's recovery
 * key into `keys/` (add-only); backs up files (or an image) as an incremental of the agent's last recorded
 * snapshot when that snapshot still exists, else a full; and counts what changed since that snapshot.
 */
import { backupFiles, type BackupResult } from "../repo/backup.ts";
import { fromHex } from "../repo/bytes.ts";
import { encodeConfig, newConfig } from "../repo/config.ts";
import { backupImage } from "../repo/image.ts";
import { recoveryKeyObject } from "../repo/keys.ts";
import { Repository } from "../repo/repository.ts";
import { loadSnapshot } from "../repo/snapshot.ts";
import type { RemoteBackend } from "../protocol/remote_backend.ts";
import type { Backend } from "../repo/backend.ts";
import { percentOf, startScan } from "./scan.ts";
import { snapshotFileSystem } from "./snapshot.ts";
import { scheduledThrottle } from "./throttle.ts";
import { diffSnapshots } from "./tree_walk.ts";
import type { BackupOutcome, BackupRequest, WorkerMessage } from "./worker_protocol.ts";
import type { NamespaceKeys } from "../repo/keys.ts";

/** Runs a backup request against `remote`; progress goes to `send`. */
export async function runBackup(
  request: BackupRequest,
  remote: RemoteBackend,
  keys: NamespaceKeys,
  send: (m: WorkerMessage) => void,
  /** The repository's objects as the library reads them (`remote` behind the agent's cache), default `remote`. */
  storage: Backend = remote,
): Promise<BackupOutcome> {
  const notes: string[] = [];
  const config = encodeConfig(newConfig(request.settings, new Date()));
  const init = await remote.initRepository(config);
  // Compression is what new blobs use and may change without a new repository; encryption and
  // deduplication may not (a change of either starts a new generation, so a mismatch is an error).
  const repo = await Repository.openNamespace(storage, keys, {
    expect: { encryption: request.settings.encryption, dedup: request.settings.dedup },
  });
  if (repo.config.compression !== request.settings.compression) {
    notes.push(
      `The repository compresses with ${repo.config.compression} (set when it was created); the policy's ` +
        `${request.settings.compression} applies to a new repository generation`,
    );
  }
  let recoveryKey: BackupOutcome["recoveryKey"] = "none";
  if (request.recoveryPublicKey) {
    const ko = await recoveryKeyObject(keys, request.recoveryPublicKey, {
      repoId: repo.config.id,
      configSha256: repo.configSha256,
    });
    recoveryKey = (await remote.addKeyObject(ko.name, ko.bytes)).existed ? "present" : "written";
  } else {
    notes.push(
      "The account has no recovery key yet: this repository opens only with keys from the control plane",
    );
  }
  const ns = repo.namespace(keys.namespace);
  // The previous snapshot: the parent of an incremental, and what the change counts compare with.
  let previous: string | null = null;
  if (request.previous) {
    if (await remote.exists(`snapshots/${request.previous.snapshotId}`)) {
      previous = request.previous.snapshotId;
    } else {
      notes.push(
        `The last backup this agent recorded (${request.previous.snapshotId}) is not in the repository: ` +
          `this backup is a full`,
      );
    }
  }
  const parent = request.full ? null : previous;
  const { throttle, describe } = scheduledThrottle(request.throttle);
  const fs = snapshotFileSystem(request.snapshots);
  let result: BackupResult;
  let lastSent = 0;
  const tick = (percent: number, bytes: number, files: number, message: string) => {
    const now = performance.now();
    if (now - lastSent < 500) return;
    lastSent = now;
    send({ type: "progress", percent, bytes, files, message });
  };
  if (request.backupType === "image") {
    if (request.paths.length !== 1) {
      throw new Error(
        `An image backup reads one device or image file; ${request.paths.length} paths were given`,
      );
    }
    result = await backupImage(ns, {
      path: request.paths[0],
      host: request.hostname,
      parent,
      throttle,
      progress: (p) =>
        tick(
          p.totalBytes ? Math.min(99, Math.round(p.bytes / p.totalBytes * 1000) / 10) : 0,
          p.bytes,
          p.files,
          `reading ${p.currentPath}`,
        ),
    });
  } else {
    const scan = startScan(fs, request.paths, request.excludePaths, request.excludePatterns);
    result = await backupFiles(ns, {
      paths: request.paths,
      host: request.hostname,
      parent,
      excludePaths: request.excludePaths,
      excludePatterns: request.excludePatterns,
      oneFileSystem: true,
      throttle,
      fs,
      progress: (p) =>
        tick(
          percentOf(p.files, scan, request.previous?.files ?? null),
          p.bytes,
          p.files,
          `backing up ${p.currentPath}`,
        ),
    });
  }
  send({
    type: "progress",
    percent: 99,
    bytes: result.bytesRead,
    files: result.files,
    message: "counting changes",
  });
  let changes: BackupOutcome["changes"] = { added: result.files, modified: 0, deleted: 0, against: null };
  const snap = await loadSnapshot(ns, result.snapshotId);
  if (previous) {
    try {
      const before = await loadSnapshot(ns, previous);
      const hasher = (salt: string | null) => ns.hasher(salt ? fromHex(salt) : null);
      changes = {
        ...await diffSnapshots(
          ns,
          { tree: before.tree, hasher: hasher(before.chainSalt) },
          { tree: snap.tree, hasher: hasher(snap.chainSalt) },
        ),
        against: previous,
      };
    } catch (e) {
      notes.push(`The changes since ${previous} could not be counted: ${(e as Error).message}`);
    }
  }
  return {
    op: "backup",
    snapshotId: result.snapshotId,
    kind: snap.parent ? "incremental" : "full",
    parentId: snap.parent,
    files: result.files,
    dirs: result.dirs,
    reusedFiles: result.reusedFiles,
    bytesRead: result.bytesRead,
    bytesNew: result.bytesNew,
    // With compression "none" nothing is tried, so nothing is known about how the new data compresses.
    bytesNewIncompressible: repo.config.compression === "none" ? null : result.bytesNewIncompressible ?? null,
    bytesStored: result.bytesStored,
    totalBytes: result.totalBytes ?? ("size" in result ? Number(result.size) : result.bytesRead),
    durationMs: result.durationMs,
    errors: result.errors.map((e) => ({ path: e.path, message: e.error })),
    changes,
    repositoryCreated: init.created,
    recoveryKey,
    notes,
    throttle: describe,
  };
}
