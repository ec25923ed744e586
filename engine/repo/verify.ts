/**
 * Verify: a checker separate from the writer (restic's `checker`). The structural pass needs no key:
 * every pack trailer is read and checked, every index entry must point into an existing pack, and every
 * blob a snapshot's clear reference list names must be indexed in its namespace. The data pass (a
 * sample of referenced blobs, or all of them with every pack re-hashed) reads bytes back, authenticates
 * and re-hashes them with the namespace's keys. Every problem names the object that is damaged.
 * A repository opened without a key (`Repository.openStorage`, what a BES holds for a keyless job) gets the
 * structural pass over every namespace's snapshots; `all` then re-hashes every pack but reads no blob.
 */
import { fromHex } from "./bytes.ts";
import type { BlobId, ChunkIdHasher } from "./chunk_id.ts";
import { IntegrityError, MissingObjectError, RepoError } from "./errors.ts";
import { listCondemned } from "./gc.ts";
import { checkPackBytes, packObjectName, readPackListing } from "./pack.ts";
import type { Repository } from "./repository.ts";
import { listSnapshots, loadSnapshot, readSnapshotRefs, type SnapshotInfo } from "./snapshot.ts";

/** One damaged or missing object. */
export interface VerifyProblem {
  kind: string;
  id: string;
  detail: string;
}

/** Options of `verifyRepository`. */
export interface VerifyOptions {
  /** Only this snapshot (full id); default every snapshot of the namespaces the key opens. */
  snapshot?: string;
  /** Referenced blobs to read back at random (default 0). Needs a key: refused when opened without one. */
  sample?: number;
  /** Read back every referenced blob and re-hash every pack. */
  all?: boolean;
}

/** The outcome of a verify. */
export interface VerifyResult {
  ok: boolean;
  packs: number;
  snapshots: number;
  referencedBlobs: number;
  blobsRead: number;
  problems: VerifyProblem[];
}

function problemOf(e: unknown): VerifyProblem {
  if (e instanceof IntegrityError) return { kind: e.kind, id: e.id, detail: e.detail };
  if (e instanceof MissingObjectError) return { kind: e.kind, id: e.id, detail: `missing: ${e.message}` };
  if (e instanceof RepoError) return { kind: "object", id: "-", detail: e.message };
  throw e;
}

/** Checks `repo` (see the module comment). Throws only on a failure of the storage itself. */
export async function verifyRepository(repo: Repository, options: VerifyOptions = {}): Promise<VerifyResult> {
  const backend = repo.backend;
  if (repo.keyless && (options.sample ?? 0) > 0) {
    throw new RepoError(
      `Reading back ${options.sample} blobs needs a key: ${backend.location} was opened without one`,
    );
  }
  const problems: VerifyProblem[] = [];
  const packSizes = new Map<string, number>();
  for await (const obj of backend.list("data/")) {
    packSizes.set(obj.name.slice(obj.name.lastIndexOf("/") + 1), obj.size);
  }
  const damagedPacks = new Set<string>();
  for (const [packId, size] of packSizes) {
    try {
      await readPackListing(backend, packId, size);
      if (options.all) checkPackBytes(packId, await backend.get(packObjectName(packId)));
    } catch (e) {
      problems.push(problemOf(e));
      damagedPacks.add(packId);
    }
  }
  await listCondemned(backend, { onDamaged: (e) => problems.push(problemOf(e)) });
  // The index as the repository loaded it: segments found damaged then are reported, not read again.
  for (const e of repo.indexDamage) problems.push(problemOf(e));
  for (const packId of repo.index.packIds()) {
    if (!packSizes.has(packId)) problems.push({ kind: "pack", id: packId, detail: "indexed but missing" });
  }

  const opened = new Set(repo.namespaces());
  let infos: SnapshotInfo[] = await listSnapshots(backend, { onDamaged: (e) => problems.push(problemOf(e)) });
  if (!repo.keyless) infos = infos.filter((s) => opened.has(s.namespace));
  if (options.snapshot) {
    infos = infos.filter((s) => s.id === options.snapshot);
    if (infos.length === 0) throw new MissingObjectError("snapshot", options.snapshot);
  }
  const toRead: { ns: string; id: BlobId; hasher: ChunkIdHasher; snapshot: string }[] = [];
  const seen = new Set<string>();
  let referenced = 0;
  for (const info of infos) {
    let refs: BlobId[];
    let hasher: ChunkIdHasher | null = null;
    try {
      if (!repo.keyless) {
        const ns = repo.namespace(info.namespace);
        const snap = await loadSnapshot(ns, info.id);
        hasher = ns.hasher(snap.chainSalt ? fromHex(snap.chainSalt) : null);
      }
      refs = await readSnapshotRefs(backend, info);
    } catch (e) {
      problems.push(problemOf(e));
      continue;
    }
    for (const id of refs) {
      const entry = repo.index.lookup(info.namespace, id);
      if (!entry) {
        problems.push({ kind: "blob", id, detail: `referenced by snapshot ${info.id} but not indexed` });
        continue;
      }
      if (!packSizes.has(entry.packId)) {
        problems.push({ kind: "blob", id, detail: `its pack ${entry.packId} is missing` });
        continue;
      }
      const key = `${info.namespace}/${id}`;
      if (seen.has(key)) continue;
      seen.add(key);
      referenced++;
      if (hasher) toRead.push({ ns: info.namespace, id, hasher, snapshot: info.id });
    }
  }

  let chosen = toRead;
  if (!options.all) {
    const n = Math.max(0, Math.min(options.sample ?? 0, toRead.length));
    const pool = [...toRead];
    chosen = [];
    for (let i = 0; i < n; i++) chosen.push(pool.splice(Math.floor(Math.random() * pool.length), 1)[0]);
  }
  let blobsRead = 0;
  for (const b of chosen) {
    try {
      await repo.namespace(b.ns).loadBlob(b.id, b.hasher);
      blobsRead++;
    } catch (e) {
      if (!(e instanceof RepoError)) throw e;
      const p = problemOf(e);
      const pack = repo.index.lookup(b.ns, b.id)?.packId;
      problems.push({ ...p, detail: `${p.detail} (in pack ${pack}, snapshot ${b.snapshot})` });
    }
  }
  return {
    ok: problems.length === 0,
    packs: packSizes.size,
    snapshots: infos.length,
    referencedBlobs: referenced,
    blobsRead,
    problems,
  };
}
