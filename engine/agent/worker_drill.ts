/**
 * The worker's restore drill (drill.ts runs it): picks the files — a seeded random sample of N files of
 * the restore point (reservoir sampling over one walk of its trees, so memory stays bounded by N), or the
 * whole point — restores them below the drill's own folder with engine/repo's restore (every chunk
 * authenticated and re-hashed against its id before it is written; a chunk that fails is an error naming
 * its file, and the file is never written wrong), then reads every restored file back and checks that it
 * chunks to exactly the ids the backup recorded for it (`contentProblem`). The time from the start of the
 * restore to the last file verified is the drill's RTO.
 */
import { fromHex } from "../repo/bytes.ts";
import type { Backend } from "../repo/backend.ts";
import { joinPath } from "../repo/fs.ts";
import type { NamespaceKeys } from "../repo/keys.ts";
import { Repository } from "../repo/repository.ts";
import { restoreSnapshot } from "../repo/restore.ts";
import { loadSnapshot } from "../repo/snapshot.ts";
import type { TreeEntry } from "../repo/tree.ts";
import { TreeCache } from "./tree_walk.ts";
import { contentProblem } from "./worker_restore.ts";
import type { DrillOutcome, PathError, RestoreDrillRequest, WorkerMessage } from "./worker_protocol.ts";

/** A small seeded generator (xorshift32 over an FNV-1a hash of the seed): the same seed, the same sample. */
export function seededRandom(seed: string): () => number {
  let h = 0x811c9dc5;
  for (let i = 0; i < seed.length; i++) {
    h ^= seed.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  let x = h || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

/** Visits every file of the tree rooted at `root` (depth first, in tree order) with its absolute path. */
async function walkFiles(
  trees: TreeCache,
  root: string,
  visit: (path: string, e: TreeEntry) => Promise<void> | void,
): Promise<void> {
  const walk = async (path: string, subtree: string): Promise<void> => {
    for (const e of await trees.entries(subtree)) {
      const child = joinPath(path, e.name);
      if (e.type === "file") await visit(child, e);
      else if (e.type === "dir" && e.subtree) await walk(child, e.subtree);
    }
  };
  await walk("/", root);
}

/** Up to `n` files of the tree, uniformly at random for `seed` (reservoir sampling); sorted by path. */
export async function sampleFiles(
  trees: TreeCache,
  root: string,
  n: number,
  seed: string,
): Promise<Array<{ path: string; entry: TreeEntry }>> {
  const random = seededRandom(seed);
  const reservoir: Array<{ path: string; entry: TreeEntry }> = [];
  let seen = 0;
  await walkFiles(trees, root, (path, entry) => {
    seen++;
    if (reservoir.length < n) reservoir.push({ path, entry });
    else {
      const j = Math.floor(random() * seen);
      if (j < n) reservoir[j] = { path, entry };
    }
  });
  return reservoir.sort((a, b) => a.path < b.path ? -1 : a.path > b.path ? 1 : 0);
}

export async function runDrill(
  request: RestoreDrillRequest,
  storage: Backend,
  keys: NamespaceKeys,
  send: (m: WorkerMessage) => void,
): Promise<DrillOutcome> {
  const repo = await Repository.openNamespace(storage, keys);
  const ns = repo.namespace(keys.namespace);
  const snap = await loadSnapshot(ns, request.snapshotId);
  const hasher = ns.hasher(snap.chainSalt ? fromHex(snap.chainSalt) : null);
  const trees = new TreeCache(ns, hasher);
  const image = snap.kind === "image";
  send({ type: "progress", percent: 0, bytes: 0, files: 0, message: "choosing the files to restore" });
  const sample = request.mode === "sample"
    ? await sampleFiles(trees, snap.tree, Math.max(1, request.sampleCount), request.seed)
    : null;
  const failures: PathError[] = [];
  const started = performance.now();
  let lastSent = 0;
  const result = sample && sample.length === 0 ? null : await restoreSnapshot(ns, request.snapshotId, {
    target: request.targetPath,
    include: sample ? sample.map((s) => s.path) : undefined,
    overwrite: false,
    progress: (p) => {
      const now = performance.now();
      if (now - lastSent < 500) return;
      lastSent = now;
      send({
        type: "progress",
        percent: 50,
        bytes: p.bytes,
        files: p.files,
        message: `restoring ${p.currentPath}`,
      });
    },
  });
  const failed = new Set<string>();
  for (const e of result?.errors ?? []) {
    failed.add(e.path);
    failures.push({ path: e.path, message: e.error });
  }
  send({
    type: "progress",
    percent: 90,
    bytes: result?.bytes ?? 0,
    files: result?.files ?? 0,
    message: "verifying the restored files against the backup's record",
  });
  let verified = 0;
  let selected = 0;
  const check = async (path: string, entry: TreeEntry) => {
    selected++;
    if (failed.has(path)) return;
    const problem = await contentProblem(ns, hasher, image, `${request.targetPath}${path}`, entry);
    if (problem) failures.push({ path, message: problem });
    else verified++;
  };
  if (sample) { for (const s of sample) await check(s.path, s.entry); }
  else await walkFiles(trees, snap.tree, check);
  const restoreMs = performance.now() - started;
  return {
    op: "restore_drill",
    selected,
    files: result?.files ?? 0,
    bytes: result?.bytes ?? 0,
    verified,
    failures,
    restoreMs: Math.round(restoreMs * 1000) / 1000,
  };
}
