/**
 * `file_history` (issue 21 item 3): one file's state in each of several restore points of one host in one
 * repository, read from the points' trees with the namespace's keys fetched just in time (like `browse`).
 *
 * Payload: the point fields every keyed job carries (`restorePointId`, `engineRestorePointId`, `policyId`,
 * `repository`…: the first point, which names the repository and the keys), `path` (absolute, normalized,
 * POSIX), `points`: [{`restorePointId`, `engineRestorePointId`}] (1–MAX_HISTORY_JOB_POINTS, every one in the
 * same repository and namespace), and `maxHashBytes` (optional: how many bytes of file content the job may
 * read in all to compute content hashes; default `DEFAULT_HASH_BUDGET`).
 *
 * Output: `{path, observations: [...]}`, one per point in the payload's order:
 * {`restorePointId`, `exists`, and when it exists `type`, `size`, `mtime`, `mode`, `chunksId` (files: the
 * SHA-256 of the file's chunk id list — equal lists mean equal content), `contentId` (files: the SHA-256 of
 * the file's bytes, read and authenticated chunk by chunk, once per distinct chunk list; null when the
 * file is larger than the budget left), `target` (symlinks); or `error` when the point could not be read
 * (its snapshot is gone, a tree or chunk is damaged) — the other points are still answered}. A result with
 * any `error` is a `warning`. Every blob read is authenticated and re-hashed; the keys are wiped at the end.
 */
import { createHash } from "node:crypto";
import { z } from "zod";
import { fromHex } from "../repo/bytes.ts";
import type { ChunkIdHasher } from "../repo/chunk_id.ts";
import type { Namespace } from "../repo/repository.ts";
import { loadSnapshot, readSnapshotInfo } from "../repo/snapshot.ts";
import { loadTree, type Tree, type TreeEntry } from "../repo/tree.ts";
import { JobFailure, type JobHandler } from "./jobs.ts";
import { type KeyedServices, PointPayload, withPoint } from "./keyed_jobs.ts";
import { parsePayload } from "./keyless_jobs.ts";
import { messageOf } from "./log.ts";

/** Most points one job examines (its output stays far below a 64 KiB result body). */
export const MAX_HISTORY_JOB_POINTS = 50;
/** Bytes of content one job reads by default to hash file versions (each distinct version once). */
export const DEFAULT_HASH_BUDGET = 256 * 1024 * 1024;

const HistoryPayload = PointPayload.extend({
  path: z.string().min(1).max(4096),
  points: z.array(z.object({
    restorePointId: z.string().min(1).max(200),
    engineRestorePointId: z.string().min(1).max(200),
  })).min(1).max(MAX_HISTORY_JOB_POINTS),
  maxHashBytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).optional(),
});

/** One point's answer. */
export interface Observation {
  restorePointId: string;
  exists: boolean;
  type?: "file" | "dir" | "symlink";
  size?: number;
  mtime?: string;
  mode?: number;
  chunksId?: string;
  contentId?: string | null;
  target?: string;
  error?: string;
}

/** `path` as the components of an absolute POSIX path. Throws BAD_PAYLOAD for anything else. */
function components(path: string): string[] {
  if (!path.startsWith("/")) {
    throw new JobFailure("BAD_PAYLOAD", `The file's path must be an absolute POSIX path, not "${path}"`);
  }
  const parts = path.split("/").filter((x) => x !== "");
  if (parts.length === 0) throw new JobFailure("BAD_PAYLOAD", "The file's path must not be the root");
  if (parts.some((x) => x === "." || x === "..")) {
    throw new JobFailure("BAD_PAYLOAD", `The file's path must be normalized, not "${path}"`);
  }
  return parts;
}

/** The SHA-256 (hex) of a file's chunk id list. */
export function chunkListId(content: readonly string[]): string {
  return createHash("sha256").update(content.join("\n")).digest("hex");
}

export function fileHistoryHandler(services: KeyedServices): JobHandler {
  return async (ctx) => {
    const p = parsePayload(ctx, HistoryPayload);
    const names = components(p.path);
    let budget = p.maxHashBytes ?? DEFAULT_HASH_BUDGET;
    return await withPoint(ctx, services, p, async ({ storage, path: repoPath, ns }) => {
      const backend = storage.at(repoPath);
      // Unchanged folders are the same tree blob in every point: each is read once per job.
      const trees = new Map<string, Tree>();
      const hashes = new Map<string, string>();
      const tree = async (id: string, hasher: ChunkIdHasher, salt: string) => {
        const key = `${salt}:${id}`;
        let t = trees.get(key);
        if (!t) {
          t = await loadTree(ns, id, hasher);
          trees.set(key, t);
        }
        return t;
      };
      const observations: Observation[] = [];
      let done = 0;
      for (const point of p.points) {
        ctx.signal.throwIfAborted();
        ctx.progress({
          percent: Math.floor(10 + (80 * done++) / p.points.length),
          message: `Looking up ${p.path} in restore point ${point.restorePointId}`,
        });
        try {
          observations.push(
            await observe(ns, backend, point, names, tree, hashes, (n) => {
              if (n > budget) return false;
              budget -= n;
              return true;
            }),
          );
        } catch (e) {
          if (e instanceof JobFailure && e.reason === "BAD_PAYLOAD") throw e;
          if (e instanceof DOMException && e.name === "AbortError") throw e;
          observations.push({
            restorePointId: point.restorePointId,
            exists: false,
            error: `Restore point ${point.restorePointId}, ${p.path}: ${messageOf(e)}`.slice(0, 500),
          });
        }
      }
      ctx.progress({ percent: 100, message: `Looked up ${p.path} in ${p.points.length} restore points` });
      const failed = observations.filter((o) => o.error);
      return {
        status: failed.length ? "warning" : "success",
        ...(failed.length
          ? {
            error: {
              reason: "POINT_UNREADABLE",
              message:
                `${failed.length} of ${observations.length} restore points could not be read; the first: ${
                  failed[0].error
                }`.slice(0, 2000),
            },
          }
          : {}),
        output: { path: p.path, observations },
      };
    });
  };
}

/** The file at `names` in one point. Throws when the point or a tree or chunk of it cannot be read. */
async function observe(
  ns: Namespace,
  backend: { exists(name: string): Promise<boolean> },
  point: { restorePointId: string; engineRestorePointId: string },
  names: string[],
  tree: (id: string, hasher: ChunkIdHasher, salt: string) => Promise<Tree>,
  hashes: Map<string, string>,
  spend: (bytes: number) => boolean,
): Promise<Observation> {
  const id = point.engineRestorePointId;
  if (!/^[0-9a-f]{64}$/.test(id) || !(await backend.exists(`snapshots/${id}`))) {
    throw new Error(`no snapshot ${id} in this repository (pruned, or another repository's)`);
  }
  const info = await readSnapshotInfo(ns.repo.backend, id);
  if (info.namespace !== ns.name) {
    throw new Error(`snapshot ${id} is namespace "${info.namespace}"'s, not the job's "${ns.name}"`);
  }
  const snapshot = await loadSnapshot(ns, id);
  const salt = snapshot.chainSalt ?? "";
  const hasher = ns.hasher(snapshot.chainSalt ? fromHex(snapshot.chainSalt) : null);
  let treeId = snapshot.tree;
  let entry: TreeEntry | undefined;
  for (const [i, name] of names.entries()) {
    const t = await tree(treeId, hasher, salt);
    entry = t.entries.find((x) => x.name === name);
    if (!entry) return { restorePointId: point.restorePointId, exists: false };
    if (i < names.length - 1) {
      if (entry.type !== "dir" || !entry.subtree) {
        return { restorePointId: point.restorePointId, exists: false };
      }
      treeId = entry.subtree;
    }
  }
  const e = entry!;
  const mtime = Number.isFinite(new Date(e.mtimeMs).getTime())
    ? new Date(e.mtimeMs).toISOString()
    : undefined;
  const out: Observation = {
    restorePointId: point.restorePointId,
    exists: true,
    type: e.type,
    size: e.size,
    ...(mtime ? { mtime } : {}),
    mode: e.mode,
  };
  if (e.type === "symlink") out.target = e.target ?? "";
  if (e.type === "file") {
    const content = e.content ?? [];
    const chunks = chunkListId(content);
    out.chunksId = chunks;
    let sha = hashes.get(chunks) ?? null;
    if (sha === null && spend(e.size)) {
      const h = createHash("sha256");
      for (const blob of content) h.update(await ns.loadBlob(blob, hasher));
      sha = h.digest("hex");
      hashes.set(chunks, sha);
    }
    out.contentId = sha;
  }
  return out;
}
