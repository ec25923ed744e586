/**
 * Reading a snapshot's trees for the agent's own figures: what changed between two snapshots (files added,
 * modified, deleted — folders whose tree id is equal are skipped unread), where a requested path is in a
 * snapshot and how much lies below it (the restore's total for its progress bar).
 */
import type { ChunkIdHasher } from "../repo/chunk_id.ts";
import type { Namespace } from "../repo/repository.ts";
import { loadTree, type TreeEntry } from "../repo/tree.ts";

/** Counts of non-folder entries (files and links) that differ between two snapshots. */
export interface ChangeCounts {
  added: number;
  modified: number;
  deleted: number;
}

type Loader = (id: string) => Promise<TreeEntry[]>;

function loader(ns: Namespace, hasher: ChunkIdHasher): Loader {
  return async (id) => (await loadTree(ns, id, hasher)).entries;
}

async function countLeaves(load: Loader, subtree: string): Promise<number> {
  let n = 0;
  for (const e of await load(subtree)) {
    if (e.type === "dir") n += e.subtree ? await countLeaves(load, e.subtree) : 0;
    else n++;
  }
  return n;
}

function sameLeaf(a: TreeEntry, b: TreeEntry): boolean {
  if (a.type !== b.type) return false;
  if (a.type === "symlink") return a.target === b.target;
  return a.size === b.size && JSON.stringify(a.content ?? []) === JSON.stringify(b.content ?? []);
}

/**
 * The files and links added, modified (other content, or another type) and deleted from tree `before` to
 * tree `after`. `loadBefore` / `loadAfter` read trees with the right hasher each (two chains may salt their
 * ids differently).
 */
export async function diffTrees(
  loadBefore: Loader,
  loadAfter: Loader,
  before: string,
  after: string,
): Promise<ChangeCounts> {
  const counts: ChangeCounts = { added: 0, modified: 0, deleted: 0 };
  const walk = async (b: string | undefined, a: string | undefined) => {
    if (b !== undefined && b === a) return;
    const old = new Map((b ? await loadBefore(b) : []).map((e) => [e.name, e]));
    const now = a ? await loadAfter(a) : [];
    for (const e of now) {
      const prev = old.get(e.name);
      old.delete(e.name);
      if (e.type === "dir") {
        if (prev?.type === "dir") await walk(prev.subtree, e.subtree);
        else {
          if (prev) counts.deleted++;
          if (e.subtree) counts.added += await countLeaves(loadAfter, e.subtree);
        }
      } else if (!prev) counts.added++;
      else if (prev.type === "dir") {
        if (prev.subtree) counts.deleted += await countLeaves(loadBefore, prev.subtree);
        counts.added++;
      } else if (!sameLeaf(prev, e)) counts.modified++;
    }
    for (const gone of old.values()) {
      if (gone.type === "dir") {
        counts.deleted += gone.subtree ? await countLeaves(loadBefore, gone.subtree) : 0;
      } else counts.deleted++;
    }
  };
  await walk(before, after);
  return counts;
}

/** `diffTrees` of two snapshots' root trees in namespace `ns`. */
export function diffSnapshots(
  ns: Namespace,
  before: { tree: string; hasher: ChunkIdHasher },
  after: { tree: string; hasher: ChunkIdHasher },
): Promise<ChangeCounts> {
  return diffTrees(loader(ns, before.hasher), loader(ns, after.hasher), before.tree, after.tree);
}

/**
 * Trees of one snapshot read once each (a restore of many paths looks up the same folders again and
 * again): at most `max` kept, the oldest dropped first.
 */
export class TreeCache {
  #trees = new Map<string, Promise<TreeEntry[]>>();
  constructor(readonly ns: Namespace, readonly hasher: ChunkIdHasher, readonly max = 4096) {}

  entries(id: string): Promise<TreeEntry[]> {
    let t = this.#trees.get(id);
    if (!t) {
      t = loadTree(this.ns, id, this.hasher).then((tree) => tree.entries);
      t.catch(() => this.#trees.delete(id));
      if (this.#trees.size >= this.max) this.#trees.delete(this.#trees.keys().next().value!);
      this.#trees.set(id, t);
    }
    return t;
  }
}

/** The entry at absolute `path` in the tree rooted at `root` (a synthetic folder entry for "/"), or null. */
export async function findEntry(trees: TreeCache, root: string, path: string): Promise<TreeEntry | null> {
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  let entry: TreeEntry = {
    name: "",
    type: "dir",
    mode: 0,
    uid: 0,
    gid: 0,
    mtimeMs: 0,
    size: 0,
    subtree: root,
    xattrs: null,
  };
  for (const part of parts) {
    if (entry.type !== "dir" || !entry.subtree) return null;
    const next = (await trees.entries(entry.subtree)).find((e) => e.name === part);
    if (!next) return null;
    entry = next;
  }
  return entry;
}

/** Files and bytes at or below `entry` (a folder's whole subtree). */
export async function sizeBelow(
  trees: TreeCache,
  entry: TreeEntry,
): Promise<{ files: number; bytes: number }> {
  if (entry.type === "file") return { files: 1, bytes: entry.size };
  if (entry.type !== "dir" || !entry.subtree) return { files: 0, bytes: 0 };
  let files = 0;
  let bytes = 0;
  for (const e of await trees.entries(entry.subtree)) {
    const s = await sizeBelow(trees, e);
    files += s.files;
    bytes += s.bytes;
  }
  return { files, bytes };
}
