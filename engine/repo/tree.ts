/**
 * Trees: one blob per folder, listing its entries sorted by name (Unicode code point order, the same
 * as UTF-8 byte order), as canonical JSON — fixed key order, absent fields left out — so an unchanged
 * folder encodes to the same bytes and deduplicates. docs/repository-format.md §Trees lists the fields.
 */
import type { BlobId, ChunkIdHasher } from "./chunk_id.ts";
import { IntegrityError } from "./errors.ts";
import type { Namespace } from "./repository.ts";

/** Tree format version. */
export const TREE_VERSION = 1;

/** Entry types format v1 stores. Other file types (sockets, devices, fifos) are reported, not stored. */
export type EntryType = "file" | "dir" | "symlink";

/** One entry of a folder. */
export interface TreeEntry {
  name: string;
  type: EntryType;
  /** Permission bits incl. setuid/setgid/sticky (mode & 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Modification time, milliseconds since the epoch (Deno's resolution). */
  mtimeMs: number;
  /** Change time (ms) and inode, recorded so an incremental can reuse unchanged files. */
  ctimeMs?: number;
  inode?: number;
  /** Size in bytes (files; 0 otherwise). */
  size: number;
  /** Files: ids of the data blobs, in order. */
  content?: BlobId[];
  /** Folders: id of the subtree blob. */
  subtree?: BlobId;
  /** Symlinks: the link target. */
  target?: string;
  /** Reserved for extended attributes, ACLs and capabilities; Deno cannot read them, so always null. */
  xattrs: null;
}

/** A decoded tree. */
export interface Tree {
  version: number;
  entries: TreeEntry[];
}

/** Compares names by Unicode code point (UTF-16 order differs for characters beyond U+FFFF). */
export function compareNames(a: string, b: string): number {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0)! - y[i].codePointAt(0)!;
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

function canonicalEntry(e: TreeEntry): Record<string, unknown> {
  const o: Record<string, unknown> = {
    name: e.name,
    type: e.type,
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    mtimeMs: e.mtimeMs,
  };
  if (e.ctimeMs !== undefined) o.ctimeMs = e.ctimeMs;
  if (e.inode !== undefined) o.inode = e.inode;
  o.size = e.size;
  if (e.content !== undefined) o.content = e.content;
  if (e.subtree !== undefined) o.subtree = e.subtree;
  if (e.target !== undefined) o.target = e.target;
  o.xattrs = null;
  return o;
}

/**
 * Why `name` cannot be a tree entry name, or null if it can: an entry name is one path component — not
 * empty, not "." or "..", without "/" or NUL — so a restore can never be steered outside its target.
 */
export function entryNameProblem(name: unknown): string | null {
  if (typeof name !== "string") return "entry name is not a string";
  if (name === "" || name === "." || name === "..") return `invalid entry name ${JSON.stringify(name)}`;
  if (name.includes("/") || name.includes("\u0000")) return `invalid entry name ${JSON.stringify(name)}`;
  return null;
}

/** The canonical bytes of a tree of `entries` (sorted here). Throws on duplicate or invalid names. */
export function encodeTree(entries: TreeEntry[]): Uint8Array {
  const sorted = [...entries].sort((a, b) => compareNames(a.name, b.name));
  for (let i = 0; i < sorted.length; i++) {
    const n = sorted[i].name;
    if (entryNameProblem(n) !== null) throw new Error(`Cannot store entry name ${JSON.stringify(n)}`);
    if (i > 0 && sorted[i - 1].name === n) throw new Error(`Duplicate entry name ${JSON.stringify(n)}`);
  }
  return new TextEncoder().encode(
    JSON.stringify({ version: TREE_VERSION, entries: sorted.map(canonicalEntry) }),
  );
}

/** The tree in `bytes` (blob `id`). Throws `IntegrityError` naming the tree if it is malformed. */
export function decodeTree(id: BlobId, bytes: Uint8Array): Tree {
  const fail = (detail: string): never => {
    throw new IntegrityError("tree", id, detail);
  };
  let t: Tree;
  try {
    t = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
  } catch {
    return fail("not valid JSON");
  }
  if (t?.version !== TREE_VERSION || !Array.isArray(t.entries)) fail("unknown version or no entries");
  let prev: string | null = null;
  for (const e of t.entries) {
    if (typeof e?.name !== "string" || !["file", "dir", "symlink"].includes(e.type)) fail("malformed entry");
    // The rules encodeTree() enforces, checked again: a crafted or damaged tree must not name "../x".
    const problem = entryNameProblem(e.name);
    if (problem !== null) fail(problem);
    if (prev !== null && compareNames(prev, e.name) >= 0) fail("entries not sorted");
    if (e.type === "file" && !Array.isArray(e.content)) {
      fail(`file ${JSON.stringify(e.name)} has no content list`);
    }
    if (e.type === "dir" && typeof e.subtree !== "string") {
      fail(`folder ${JSON.stringify(e.name)} has no subtree`);
    }
    if (e.type === "symlink" && typeof e.target !== "string") {
      fail(`symlink ${JSON.stringify(e.name)} has no target`);
    }
    prev = e.name;
  }
  return t;
}

/** Stores a tree of `entries` in `ns`; returns its id and bytes added. */
export async function saveTree(
  ns: Namespace,
  entries: TreeEntry[],
  hasher: ChunkIdHasher,
): Promise<{ id: BlobId; isNew: boolean; storedBytes: number }> {
  return await ns.saveBlob("tree", encodeTree(entries), hasher);
}

/** Loads and decodes tree `id`. Throws `IntegrityError` (kind "tree") naming it if damaged. */
export async function loadTree(ns: Namespace, id: BlobId, hasher: ChunkIdHasher): Promise<Tree> {
  let bytes: Uint8Array;
  try {
    bytes = await ns.loadBlob(id, hasher);
  } catch (e) {
    if (e instanceof IntegrityError && e.kind === "blob") {
      throw new IntegrityError("tree", id, e.detail, { cause: e });
    }
    throw e;
  }
  return decodeTree(id, bytes);
}
