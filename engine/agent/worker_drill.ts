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

/** Sampled files restored and verified at once (a drill shares the agent with its backups). */
export const DRILL_FILES_AT_ONCE = 4;

/**
 * Runs `fn` over `items` with at most `limit` calls in flight (the next starts as soon as one ends);
 * results in the items' order. A call that throws rejects the whole (callers catch per item).
 */
export async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, lane));
  return out;
}

export async function runDrill(
  request: RestoreDrillRequest,
  storage: Backend,
  keys: NamespaceKeys,
  send: (m: WorkerMessage) => void,
  filesAtOnce = DRILL_FILES_AT_ONCE,
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
  if (sample) {
    return await ns.withWorkers(() => sampledDrill(request, ns, hasher, image, sample, send, filesAtOnce));
  }
  const failures: PathError[] = [];
  const started = performance.now();
  let lastSent = 0;
  const result = await restoreSnapshot(ns, request.snapshotId, {
    target: request.targetPath,
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
  for (const e of result.errors) {
    failed.add(e.path);
    failures.push({ path: e.path, message: e.error });
  }
  send({
    type: "progress",
    percent: 90,
    bytes: result.bytes,
    files: result.files,
    message: "verifying the restored files against the backup's record",
  });
  let verified = 0;
  let selected = 0;
  await walkFiles(trees, snap.tree, async (path, entry) => {
    selected++;
    if (failed.has(path)) return;
    const problem = await contentProblem(ns, hasher, image, `${request.targetPath}${path}`, entry);
    if (problem) failures.push({ path, message: problem });
    else verified++;
  });
  const restoreMs = performance.now() - started;
  return {
    op: "restore_drill",
    selected,
    files: result.files,
    bytes: result.bytes,
    verified,
    failures,
    restoreMs: Math.round(restoreMs * 1000) / 1000,
  };
}

/**
 * A sampled drill: up to `filesAtOnce` sampled files are fetched and verified at once, each restored on
 * its own below `<target>/<its index in the sample>` (an empty folder, so two files never race over a
 * shared folder's metadata) and read back as soon as it is written. Every failure names the file's path
 * in the backup; failures come out in the sample's (path) order whatever order the files finished in.
 */
async function sampledDrill(
  request: RestoreDrillRequest,
  ns: Parameters<typeof restoreSnapshot>[0],
  hasher: Parameters<typeof contentProblem>[1],
  image: boolean,
  sample: Array<{ path: string; entry: TreeEntry }>,
  send: (m: WorkerMessage) => void,
  filesAtOnce: number,
): Promise<DrillOutcome> {
  const started = performance.now();
  let files = 0;
  let bytes = 0;
  let done = 0;
  let lastSent = 0;
  const outcomes = await mapLimited(sample, filesAtOnce, async ({ path, entry }, i) => {
    const dir = `${request.targetPath}/${i}`;
    let result;
    try {
      result = await restoreSnapshot(ns, request.snapshotId, {
        target: dir,
        include: [path],
        overwrite: false,
      });
    } catch (err) {
      return [{ path, message: `not restored: ${(err as Error).message}` }];
    }
    files += result.files;
    bytes += result.bytes;
    const problems: PathError[] = result.errors.map((e) => ({ path: e.path, message: e.error }));
    if (!result.errors.some((e) => e.path === path)) {
      const problem = await contentProblem(ns, hasher, image, `${dir}${path}`, entry);
      if (problem) problems.push({ path, message: problem });
    }
    done++;
    const now = performance.now();
    if (now - lastSent >= 500) {
      lastSent = now;
      send({
        type: "progress",
        percent: Math.min(95, Math.round((done / sample.length) * 95)),
        bytes,
        files,
        message: `restored and verified ${done} of ${sample.length} sampled files`,
      });
    }
    return problems;
  });
  const failures = outcomes.flat();
  const failed = new Set(outcomes.flatMap((o, i) => o.length ? [sample[i].path] : []));
  return {
    op: "restore_drill",
    selected: sample.length,
    files,
    bytes,
    verified: sample.length - failed.size,
    failures,
    restoreMs: Math.round((performance.now() - started) * 1000) / 1000,
  };
}
