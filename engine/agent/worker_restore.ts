/**
 * The worker's restores. A file restore checks that every requested path is in the restore point (one not
 * found is an error naming it), restores them below the target folder at their full paths (engine/repo's
 * restore: every chunk authenticated and re-hashed before it is written, each file renamed into place only
 * when complete), then reads every restored file back and checks that it chunks to exactly the ids the
 * restore point lists — so each written chunk is verified on disk too. An image restore writes the image to
 * a file or device (image.ts verifies each chunk before writing it).
 */
import { fromHex } from "../repo/bytes.ts";
import { chunkFile, fixedFileChunks } from "../repo/chunker.ts";
import { absolutePath, joinPath } from "../repo/fs.ts";
import { restoreImage } from "../repo/image.ts";
import type { NamespaceKeys } from "../repo/keys.ts";
import { type Namespace, Repository } from "../repo/repository.ts";
import { restoreSnapshot } from "../repo/restore.ts";
import { loadSnapshot } from "../repo/snapshot.ts";
import type { TreeEntry } from "../repo/tree.ts";
import type { Backend } from "../repo/backend.ts";
import { findEntry, sizeBelow, TreeCache } from "./tree_walk.ts";
import type {
  PathError,
  RestoreFilesRequest,
  RestoreImageRequest,
  RestoreOutcome,
  WorkerMessage,
} from "./worker_protocol.ts";

/** Whether `path` is `dir` or below it (absolute, normalized). */
function within(path: string, dir: string): boolean {
  return dir === "/" || path === dir || path.startsWith(dir + "/");
}

export async function runRestoreFiles(
  request: RestoreFilesRequest,
  remote: Backend,
  keys: NamespaceKeys,
  send: (m: WorkerMessage) => void,
): Promise<RestoreOutcome> {
  const repo = await Repository.openNamespace(remote, keys);
  const ns = repo.namespace(keys.namespace);
  const snap = await loadSnapshot(ns, request.snapshotId);
  const hasher = ns.hasher(snap.chainSalt ? fromHex(snap.chainSalt) : null);
  const trees = new TreeCache(ns, hasher);
  const errors: PathError[] = [];
  const found: string[] = [];
  let totalBytes = 0;
  send({ type: "progress", percent: 0, bytes: 0, files: 0, message: "reading the restore point" });
  for (const raw of request.paths) {
    const path = absolutePath(raw, "/");
    const entry = await findEntry(trees, snap.tree, path);
    if (!entry) {
      errors.push({ path: raw, message: "not in this restore point" });
      continue;
    }
    found.push(path);
    totalBytes += (await sizeBelow(trees, entry)).bytes;
  }
  if (found.length === 0) return { op: "restore_files", files: 0, bytes: 0, found: 0, errors, verified: 0 };
  const target = absolutePath(request.targetPath);
  let lastSent = 0;
  const result = await restoreSnapshot(ns, request.snapshotId, {
    target,
    include: found,
    overwrite: request.overwrite,
    mergeIntoTarget: true,
    progress: (p) => {
      const now = performance.now();
      if (now - lastSent < 500) return;
      lastSent = now;
      const percent = totalBytes > 0 ? Math.min(95, Math.round(p.bytes / totalBytes * 950) / 10) : 50;
      send({
        type: "progress",
        percent,
        bytes: p.bytes,
        files: p.files,
        message: `restoring ${p.currentPath}`,
      });
    },
  });
  for (const e of result.errors) errors.push({ path: e.path, message: e.error });
  send({
    type: "progress",
    percent: 96,
    bytes: result.bytes,
    files: result.files,
    message: "verifying restored files",
  });
  const failed = new Set(result.errors.map((e) => e.path));
  const verified = await verifyRestored(
    ns,
    trees,
    snap.tree,
    snap.kind === "image",
    found,
    target,
    failed,
    errors,
  );
  return {
    op: "restore_files",
    files: result.files,
    bytes: result.bytes,
    found: found.length,
    errors,
    verified,
  };
}

/**
 * Reads back every file restored below `target` for the paths `found` (skipping those listed as failed)
 * and checks it chunks to the restore point's ids. A mismatch is added to `errors`. Returns how many
 * files matched.
 */
async function verifyRestored(
  ns: Namespace,
  trees: TreeCache,
  root: string,
  image: boolean,
  found: string[],
  target: string,
  failed: Set<string>,
  errors: PathError[],
): Promise<number> {
  let verified = 0;
  const hasher = trees.hasher;
  const params = ns.repo.config.chunker;
  const checkFile = async (path: string, e: TreeEntry) => {
    if (failed.has(path)) return;
    const dest = target === "/" ? path : `${target}${path}`;
    let file: Deno.FsFile;
    try {
      file = await Deno.open(dest, { read: true });
    } catch (err) {
      errors.push({ path, message: `restored file cannot be read back: ${(err as Error).message}` });
      return;
    }
    const ids: string[] = [];
    let size = 0;
    try {
      if (image) {
        for await (const c of fixedFileChunks(file, ns.repo.config.imageChunkSize)) {
          ids.push(hasher.id(c.data));
          size += c.data.length;
        }
      } else {
        for await (const c of chunkFile(file, params)) {
          ids.push(hasher.id(c));
          size += c.length;
        }
      }
    } catch (err) {
      errors.push({ path, message: `restored file cannot be read back: ${(err as Error).message}` });
      return;
    } finally {
      file.close();
    }
    const want = e.content ?? [];
    if (size !== e.size || ids.length !== want.length || ids.some((id, i) => id !== want[i])) {
      errors.push({
        path,
        message: `the file written at ${dest} does not read back as the restore point holds it ` +
          `(${size} of ${e.size} bytes; its content differs): do not trust it`,
      });
      return;
    }
    verified++;
  };
  const walk = async (path: string, e: TreeEntry): Promise<void> => {
    if (e.type === "file") return await checkFile(path, e);
    if (e.type !== "dir" || !e.subtree || failed.has(path)) return;
    let entries: TreeEntry[];
    try {
      entries = await trees.entries(e.subtree);
    } catch {
      return; // already reported by the restore
    }
    for (const child of entries) await walk(joinPath(path, child.name), child);
  };
  // Paths nested in another selected path are walked once.
  const tops = found.filter((p) => !found.some((q) => q !== p && within(p, q)));
  for (const p of [...new Set(tops)]) {
    const e = await findEntry(trees, root, p);
    if (e) await walk(p, e);
  }
  return verified;
}

export async function runRestoreImage(
  request: RestoreImageRequest,
  remote: Backend,
  keys: NamespaceKeys,
  send: (m: WorkerMessage) => void,
): Promise<RestoreOutcome> {
  const repo = await Repository.openNamespace(remote, keys);
  const ns = repo.namespace(keys.namespace);
  let lastSent = 0;
  const result = await restoreImage(ns, request.snapshotId, {
    target: request.targetPath,
    overwrite: request.overwrite,
    progress: (p) => {
      const now = performance.now();
      if (now - lastSent < 500) return;
      lastSent = now;
      const percent = p.totalBytes ? Math.min(99, Math.round(p.bytes / p.totalBytes * 1000) / 10) : 0;
      send({
        type: "progress",
        percent,
        bytes: p.bytes,
        files: p.files,
        message: `writing ${request.targetPath}`,
      });
    },
  });
  const errors = result.errors.map((e) => ({
    path: `${result.target} @ ${e.offset}`,
    message: `chunk ${e.chunk}: ${e.error}`,
  }));
  return {
    op: "restore_image",
    files: errors.length === 0 ? 1 : 0,
    bytes: result.bytesWritten,
    found: 1,
    errors,
    verified: errors.length === 0 ? 1 : 0,
  };
}
