/**
 * The agent's parent–worker protocol: the heavy part of a job (reading and uploading a backup, writing a
 * restore) runs in a child process (worker.ts), so that IO priority (nice/ionice) covers all of it and a
 * crash of the data path cannot take the agent down. JSON lines: the parent writes a `start` message and
 * then `token` messages (each progress reply's fresh data token) to the worker's stdin; the worker writes
 * `progress` lines and one `result` or `error` line to its stdout, each prefixed with `WORKER_LINE_PREFIX`
 * (anything else on stdout or stderr is logged). Keys travel on the pipe only: never in arguments,
 * environment or files.
 */
import type { CacheStats } from "./cache.ts";
import type { JobFailure } from "./failure.ts";
import type { SnapshotMapping } from "./snapshot.ts";
import type { ThrottleSettings } from "./throttle.ts";

export const WORKER_LINE_PREFIX = "\u0001cadres-worker ";

/** Where and how the worker reaches the repository. */
export interface WorkerData {
  dataUrl: string;
  certificate: string | null;
  /** The namespace's keys, base64. */
  namespace: string;
  dataKey: string;
  idKey: string;
  /** The agent's cache of trees and index (cache.ts), or null when it is off. */
  cache: { dir: string; maxBytes: number } | null;
}

export interface BackupRequest {
  op: "backup";
  data: WorkerData;
  jobId: string;
  hostname: string;
  backupType: "file" | "image";
  /** Files: folders and files to back up (absolute, existing). Image: exactly one device or image file. */
  paths: string[];
  excludePaths: string[];
  excludePatterns: string[];
  /** The repository settings of the policy (created with them; an existing one must agree). */
  settings: {
    compression: "zstd" | "lz4" | "none";
    encryption: "aes-256-gcm" | "aes-256-cbc" | "none";
    dedup: boolean;
  };
  recoveryPublicKey: string | null;
  /** The last snapshot this agent recorded for the chain (null: none). */
  previous: { snapshotId: string; files: number } | null;
  /** A full backup: no parent, whatever the record says. */
  full: boolean;
  throttle: ThrottleSettings | null;
  snapshots: SnapshotMapping[];
}

export interface RestoreFilesRequest {
  op: "restore_files";
  data: WorkerData;
  snapshotId: string;
  paths: string[];
  targetPath: string;
  overwrite: boolean;
}

export interface RestoreImageRequest {
  op: "restore_image";
  data: WorkerData;
  snapshotId: string;
  targetPath: string;
  overwrite: boolean;
}

/** A restore drill (drill.ts): restore a sample (or all) of a point into `targetPath`, verify, measure. */
export interface RestoreDrillRequest {
  op: "restore_drill";
  data: WorkerData;
  snapshotId: string;
  mode: "sample" | "whole";
  /** Files restored in sample mode. */
  sampleCount: number;
  /** Seeds the sample (the same seed picks the same files of the same point). */
  seed: string;
  /** A folder of the drill's own, created by the restore (the agent deletes it afterwards). */
  targetPath: string;
}

export type WorkerRequest = BackupRequest | RestoreFilesRequest | RestoreImageRequest | RestoreDrillRequest;

/** Parent → worker. */
export type ParentMessage =
  | { type: "start"; request: WorkerRequest; token: string }
  | { type: "token"; token: string };

/** A path that could not be backed up or restored. */
export interface PathError {
  path: string;
  message: string;
}

export interface BackupOutcome {
  op: "backup";
  snapshotId: string;
  kind: "full" | "incremental";
  parentId: string | null;
  files: number;
  dirs: number;
  reusedFiles: number;
  bytesRead: number;
  bytesNew: number;
  /**
   * Of `bytesNew`, the bytes of new chunks that did not compress (stored raw); null when the repository
   * compresses nothing, so compressibility was not measured.
   */
  bytesNewIncompressible: number | null;
  bytesStored: number;
  totalBytes: number;
  durationMs: number;
  errors: PathError[];
  changes: { added: number; modified: number; deleted: number; against: string | null };
  repositoryCreated: boolean;
  recoveryKey: "written" | "present" | "none";
  notes: string[];
  throttle: string;
  /** What the cache of trees and index served (null: no cache). */
  cache?: CacheStats | null;
}

export interface RestoreOutcome {
  op: "restore_files" | "restore_image";
  files: number;
  bytes: number;
  /** Paths asked for and found in the restore point. */
  found: number;
  errors: PathError[];
  /** Files read back after writing and found equal to the restore point. */
  verified: number;
  cache?: CacheStats | null;
}

export interface DrillOutcome {
  op: "restore_drill";
  /** Files in the sample (sample mode) or in the point (whole mode). */
  selected: number;
  /** Files written by the restore. */
  files: number;
  bytes: number;
  /** Files read back and found equal to the backup's record (their chunk ids). */
  verified: number;
  /** Every file that failed, by path: not restored (damaged or missing data) or not as recorded. */
  failures: PathError[];
  /** Time from the start of the restore to the last file verified, milliseconds. */
  restoreMs: number;
  cache?: CacheStats | null;
}

export type WorkerOutcome = BackupOutcome | RestoreOutcome | DrillOutcome;

/** Worker → parent. */
export type WorkerMessage =
  | { type: "progress"; percent: number; bytes: number; files: number; message: string }
  | { type: "result"; outcome: WorkerOutcome }
  | { type: "error"; failure: JobFailure };
