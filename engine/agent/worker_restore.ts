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
import type { ChunkIdHasher } from "../repo/chunk_id.ts";
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
  const started = Date.now();
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
  // A file or link that already is exactly what the restore point holds — an earlier attempt of this restore
  // wrote it before it was interrupted — is no conflict: it counts as restored (and is verified below).
  let files = result.files;
  let bytes = result.bytes;
  const failed = new Set<string>();
  const alreadyThere = new Set<string>();
  for (const e of result.errors) {
    if (!request.overwrite && EXISTS.test(e.error)) {
      const entry = await findEntry(trees, snap.tree, e.path);
      if (entry && await alreadyRestored(ns, hasher, snap.kind === "image", destOf(target, e.path), entry)) {
        alreadyThere.add(e.path);
        if (entry.type === "file") {
          files++;
          bytes += entry.size;
        }
        continue;
      }
    }
    failed.add(e.path);
    errors.push({ path: e.path, message: e.error });
  }
  send({
    type: "progress",
    percent: 96,
    bytes,
    files,
    message: "verifying restored files",
  });
  const verified = await verifyRestored(
    ns,
    trees,
    snap.tree,
    snap.kind === "image",
    found,
    target,
    failed,
    errors,
    { alreadyThere, before: started },
  );
  return {
    op: "restore_files",
    files,
    bytes,
    found: found.length,
    errors,
    verified,
  };
}

/** How engine/repo's restore says it left an existing file alone. */
const EXISTS = / exists \(use overwrite\)$/;
/** The temporary name engine/repo's restore writes a file under before renaming it into place. */
const RESTORE_TEMP = /^\.cadres-restore-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function destOf(target: string, path: string): string {
  return target === "/" ? path : `${target}${path}`;
}

/** Why the file at `dest` does not hold exactly the content of `e` (null: it does). */
export async function contentProblem(
  ns: Namespace,
  hasher: ChunkIdHasher,
  image: boolean,
  dest: string,
  e: TreeEntry,
): Promise<string | null> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(dest, { read: true });
  } catch (err) {
    return `restored file cannot be read back: ${(err as Error).message}`;
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
      for await (const c of chunkFile(file, ns.repo.config.chunker)) {
        ids.push(hasher.id(c));
        size += c.length;
      }
    }
  } catch (err) {
    return `restored file cannot be read back: ${(err as Error).message}`;
  } finally {
    file.close();
  }
  const want = e.content ?? [];
  if (size !== e.size || ids.length !== want.length || ids.some((id, i) => id !== want[i])) {
    return `the file written at ${dest} does not read back as the restore point holds it ` +
      `(${size} of ${e.size} bytes; its content differs): do not trust it`;
  }
  return null;
}

/**
 * Whether `dest` already is entry `e` of the restore point: a file with its mode, modification time (and
 * owner, as root) and exactly its content; a link to its target. Folders are merged anyway.
 */
async function alreadyRestored(
  ns: Namespace,
  hasher: ChunkIdHasher,
  image: boolean,
  dest: string,
  e: TreeEntry,
): Promise<boolean> {
  const info = await Deno.lstat(dest).catch(() => null);
  if (!info) return false;
  if (e.type === "symlink") return info.isSymlink && await Deno.readLink(dest).catch(() => null) === e.target;
  if (e.type !== "file" || !info.isFile || info.size !== e.size) return false;
  if (((info.mode ?? 0) & 0o7777) !== (e.mode & 0o7777) || info.mtime?.getTime() !== e.mtimeMs) return false;
  if (Deno.uid() === 0 && (info.uid !== e.uid || info.gid !== e.gid)) return false;
  return await contentProblem(ns, hasher, image, dest, e) === null;
}

/**
 * Removes from folder `dir` the temporary files engine/repo's restore left there before `before` (an
 * attempt of a restore that was killed while it wrote a file); a temporary file of a restore running now is
 * younger and stays.
 */
async function removeStaleTemps(dir: string, before: number): Promise<void> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(dir));
  } catch {
    return;
  }
  const folder = await Deno.lstat(dir).catch(() => null);
  let removed = false;
  for (const e of entries) {
    if (!e.isFile || !RESTORE_TEMP.test(e.name)) continue;
    const info = await Deno.lstat(`${dir}/${e.name}`).catch(() => null);
    if (info?.mtime && info.mtime.getTime() < before) {
      await Deno.remove(`${dir}/${e.name}`).then(() => removed = true, () => {});
    }
  }
  // The folder's times were restored before: a removal must not change them.
  if (removed && folder?.mtime) {
    await Deno.utime(dir, folder.atime ?? folder.mtime, folder.mtime).catch(() => {});
  }
}

/**
 * Reads back every file restored below `target` for the paths `found` (skipping those listed as failed)
 * and checks it chunks to the restore point's ids. A mismatch is added to `errors`. Returns how many
 * files matched (those in `alreadyThere` were checked before). Removes, from every folder restored, the
 * temporary files an interrupted attempt left there before `before`.
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
  options: { alreadyThere: Set<string>; before: number },
): Promise<number> {
  let verified = 0;
  const checkFile = async (path: string, e: TreeEntry) => {
    if (failed.has(path)) return;
    if (options.alreadyThere.has(path)) {
      verified++;
      return;
    }
    const problem = await contentProblem(ns, trees.hasher, image, destOf(target, path), e);
    if (problem) errors.push({ path, message: problem });
    else verified++;
  };
  const walk = async (path: string, e: TreeEntry): Promise<void> => {
    if (e.type === "file") return await checkFile(path, e);
    if (e.type !== "dir" || !e.subtree || failed.has(path)) return;
    await removeStaleTemps(destOf(target, path), options.before);
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
    if (!e) continue;
    // A file selected on its own was written in its folder.
    if (e.type !== "dir") {
      await removeStaleTemps(destOf(target, p.slice(0, p.lastIndexOf("/")) || "/"), options.before);
    }
    await walk(p, e);
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
