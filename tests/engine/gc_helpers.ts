/**
 * Helpers of the gc tests (repack_test.ts, gc_process_race_test.ts, namespace_test.ts): digests of a
 * restored tree, a full check of a repository (verify --all and byte-identical restores), and what each
 * pack holds that a snapshot still references.
 */
import assert from "node:assert/strict";
import { type Backend, LocalBackend } from "../../engine/repo/backend.ts";
import { readPackListing } from "../../engine/repo/pack.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { listSnapshots, readSnapshotRefs } from "../../engine/repo/snapshot.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";

/** Relative path → SHA-256 hex of every regular file below `root`, sorted by path. */
export async function digests(root: string, rel = ""): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const e of Deno.readDir(`${root}${rel}`)) {
    const p = `${rel}/${e.name}`;
    if (e.isDirectory) { for (const [k, v] of await digests(root, p)) out.set(k, v); }
    else {
      const d = await crypto.subtle.digest("SHA-256", await Deno.readFile(`${root}${p}`));
      out.set(p, Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join(""));
    }
  }
  return new Map([...out].sort());
}

/**
 * Opens the repository at `repoPath` afresh with `kek`, checks `verify --all` finds nothing, and restores
 * each snapshot of `expected` (snapshot id → digests of the backed-up folder `src`, or of the folder `src`
 * maps the snapshot to), comparing every file.
 */
export async function assertIntact(
  repoPath: string,
  kek: Uint8Array,
  expected: Map<string, Map<string, string>>,
  src: string | Map<string, string>,
  what: string,
): Promise<void> {
  const repo = await Repository.open(new LocalBackend(repoPath), kek);
  const v = await verifyRepository(repo, { all: true });
  assert.deepEqual(v.problems, [], `${what}: verify --all`);
  for (const [id, files] of expected) {
    const target = await Deno.makeTempDir({ prefix: "cadres-gc-restore-" });
    try {
      const info = (await listSnapshots(repo.backend)).find((s) => s.id === id);
      assert.ok(info, `${what}: snapshot ${id.slice(0, 12)} exists`);
      const r = await restoreSnapshot(repo.namespace(info.namespace), id, { target });
      assert.deepEqual(r.errors, [], `${what}: restore ${id.slice(0, 12)}`);
      const folder = typeof src === "string" ? src : src.get(id)!;
      assert.deepEqual(
        await digests(`${target}${folder}`),
        files,
        `${what}: ${id.slice(0, 12)} byte-identical`,
      );
    } finally {
      await Deno.remove(target, { recursive: true });
    }
  }
}

/** One pack: its size, the bytes of its blobs, and the bytes of those blobs some snapshot references. */
export interface PackStat {
  packId: string;
  size: number;
  blobBytes: number;
  referencedBytes: number;
  /** "namespace NUL id" of each referenced blob it holds. */
  referenced: string[];
}

/** Every pack of `be` with how much of it the snapshots reference (each copy of a referenced blob counts). */
export async function packStats(be: Backend): Promise<PackStat[]> {
  const referenced = new Set<string>();
  for (const s of await listSnapshots(be)) {
    for (const id of await readSnapshotRefs(be, s)) referenced.add(`${s.namespace}\u0000${id}`);
  }
  const out: PackStat[] = [];
  for await (const o of be.list("data/")) {
    const packId = o.name.slice(o.name.lastIndexOf("/") + 1);
    const l = await readPackListing(be, packId, o.size);
    let blobBytes = 0;
    let referencedBytes = 0;
    const held: string[] = [];
    for (const e of l.entries) {
      blobBytes += e.length;
      const key = `${l.namespace}\u0000${e.id}`;
      if (!referenced.has(key)) continue;
      referencedBytes += e.length;
      held.push(key);
    }
    out.push({ packId, size: o.size, blobBytes, referencedBytes, referenced: held });
  }
  return out.sort((a, b) => a.packId.localeCompare(b.packId));
}

/** Total bytes of the objects below `prefix`. */
export async function bytesUnder(be: Backend, prefix: string): Promise<number> {
  let n = 0;
  for await (const o of be.list(prefix)) n += o.size;
  return n;
}

/** Copies the folder `from` to `to` (which must not exist), recursively. */
export async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to);
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyTree(`${from}/${e.name}`, `${to}/${e.name}`);
    else await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}
