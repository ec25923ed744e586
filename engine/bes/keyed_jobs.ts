/**
 * BES jobs that read a restore point's data, with the keys of its one namespace fetched just in time
 * (`job_keys.ts`): `browse` lists one folder of the point's tree; `search` matches names over the whole
 * tree; and `readBackSample` re-reads a verify's `sampleCount` referenced blobs. Every blob read is
 * authenticated and re-hashed; a damaged one fails the job naming it. The keys are wiped when the job ends.
 *
 * Listings go to the control plane in parts (`POST …/jobs/{id}/parts`, docs/engine-protocol.md "Long lists
 * in parts") before the result, which names their count and the total found: a browse lists the whole folder
 * (up to `MAX_BROWSE_ENTRIES`, what the control plane keeps), a search its first `maxMatches` matches by
 * path (up to 10,000). A list cut to fit says so with its total — never cut silently.
 */
import { z } from "zod";
import { fromHex } from "../repo/bytes.ts";
import type { ChunkIdHasher } from "../repo/chunk_id.ts";
import { WrongKeyError } from "../repo/errors.ts";
import { globRegExp } from "../repo/glob.ts";
import { type NamespaceKeys, namespaceKeysOpener } from "../repo/keys.ts";
import { type Namespace, Repository } from "../repo/repository.ts";
import { loadSnapshot, readSnapshotInfo, type Snapshot } from "../repo/snapshot.ts";
import { compareNames, loadTree, type TreeEntry } from "../repo/tree.ts";
import { verifyRepository, type VerifyResult } from "../repo/verify.ts";
import { type JobKeyProvider, type JobKeys, wipeKeys } from "./job_keys.ts";
import {
  type JobContext,
  JobFailure,
  type JobHandler,
  type JobOutcome,
  MAX_PARTS,
  type ResultList,
  splitParts,
} from "./jobs.ts";
import {
  describeRepositories,
  findSnapshot,
  Generation,
  jobRepositories,
  type KeylessServices,
  parsePayload,
  PolicyId,
  RepositoryRef,
  storageFailure,
  TargetId,
  verifyHandler,
} from "./keyless_jobs.ts";
import type { TargetStorage } from "./storage.ts";

/** What keyed jobs need: the keyless services and where keys come from. */
export interface KeyedServices extends KeylessServices {
  keys: JobKeyProvider;
}

/** Most entries of a browse answer (what the control plane keeps of one), and of a search's matches. */
export const MAX_BROWSE_ENTRIES = 50_000;
export const MAX_SEARCH_MATCHES = 10_000;

export const PointPayload = z.object({
  restorePointId: z.string().min(1).max(200),
  engineRestorePointId: z.string().min(1).max(200).optional(),
  policyId: PolicyId,
  targetId: TargetId.optional(),
  repository: RepositoryRef.optional(),
  generation: Generation,
});

/** An open restore point: its namespace handle, snapshot and id hasher. */
interface OpenPoint {
  storage: TargetStorage;
  path: string;
  repo: Repository;
  ns: Namespace;
  snapshot: Snapshot;
  hasher: ChunkIdHasher;
}

/** Throws KEY_MISMATCH when the key endpoint gave the keys for another repository than `path` on `target`. */
export function checkKeysRepository(keys: JobKeys, target: string, path: string): void {
  const r = keys.repository;
  if (r && (r.target !== target || r.path !== path)) {
    throw new JobFailure(
      "KEY_MISMATCH",
      `The control plane gave the keys of repository ${r.path} on target ${r.target}, but the job's ` +
        `repository is ${path} on target ${target}`,
    );
  }
}

/** Opens the point a payload names with the job's keys (`keys` receives them, to be wiped by the caller). */
export async function openPoint(
  ctx: JobContext,
  services: KeyedServices,
  p: z.infer<typeof PointPayload>,
  got: NamespaceKeys[],
): Promise<OpenPoint> {
  const id = p.engineRestorePointId ?? p.restorePointId;
  const located = await jobRepositories(services, p);
  const storage = located.storage;
  try {
    const path = await findSnapshot(located, id);
    if (!path) {
      throw new JobFailure(
        "RESTORE_POINT_MISSING",
        `Restore point ${p.restorePointId} has no snapshot ${id} in ${
          describeRepositories(located, p.policyId)
        }`,
      );
    }
    const backend = storage.at(path);
    const info = await readSnapshotInfo(backend, id);
    ctx.progress({ percent: 5, message: `Opening ${path}` });
    const keys = await services.keys(ctx.job.id);
    got.push(keys);
    checkKeysRepository(keys, storage.target.id, path);
    if (keys.namespace !== info.namespace) {
      throw new JobFailure(
        "KEY_MISMATCH",
        `The job's keys are namespace "${keys.namespace}"'s, but snapshot ${id} is namespace "${info.namespace}"'s`,
      );
    }
    let repo: Repository;
    try {
      repo = await Repository.open(backend, namespaceKeysOpener(keys));
    } catch (e) {
      if (e instanceof WrongKeyError) throw new JobFailure("KEY_MISMATCH", e.message);
      throw e;
    }
    const ns = repo.namespace(keys.namespace);
    const snapshot = await loadSnapshot(ns, id);
    return {
      storage,
      path,
      repo,
      ns,
      snapshot,
      hasher: ns.hasher(snapshot.chainSalt ? fromHex(snapshot.chainSalt) : null),
    };
  } catch (e) {
    throw storageFailure(e, storage.target);
  }
}

/** Runs `fn` with the point open, wiping the keys afterwards whatever happens. */
export async function withPoint<T>(
  ctx: JobContext,
  services: KeyedServices,
  p: z.infer<typeof PointPayload>,
  fn: (point: OpenPoint) => Promise<T>,
): Promise<T> {
  const got: NamespaceKeys[] = [];
  try {
    const point = await openPoint(ctx, services, p, got);
    try {
      return await fn(point);
    } catch (e) {
      throw storageFailure(e, point.storage.target);
    }
  } finally {
    for (const k of got) wipeKeys(k);
  }
}

/** An entry's type as parts carry it. */
function partType(e: TreeEntry): "file" | "dir" | "symlink" | "other" {
  return e.type === "dir" || e.type === "file" || e.type === "symlink" ? e.type : "other";
}

/** An entry's mtime (ISO 8601), or undefined when it has none a date can show. */
function mtimeOf(e: TreeEntry): string | undefined {
  const d = new Date(e.mtimeMs);
  return Number.isFinite(d.getTime()) ? d.toISOString() : undefined;
}

/** One browse entry as a part carries it: {name, type, size, mtime}. */
function entryItem(e: TreeEntry) {
  const mtime = mtimeOf(e);
  return { name: e.name, type: partType(e), size: e.size, ...(mtime ? { mtime } : {}) };
}

/** One search match as a part carries it: {path, type, size, mtime}. */
function matchItem(path: string, e: TreeEntry) {
  const mtime = mtimeOf(e);
  return { path, type: partType(e), size: e.size, ...(mtime ? { mtime } : {}) };
}

/**
 * Uploads `items` (the first `max` of them) as parts of `list`, before the result: the parts it sent and
 * how many items they hold (fewer than `items.length` when `max` or the parts ran out).
 */
async function uploadList(
  ctx: JobContext,
  list: ResultList,
  items: unknown[],
  max: number,
): Promise<{ parts: number; sent: number }> {
  const { parts, kept } = splitParts(items.slice(0, max), MAX_PARTS);
  return { parts: await ctx.uploadParts(list, parts), sent: kept };
}

/** `path` as the components of an absolute POSIX path. Throws BAD_PAYLOAD for anything else. */
function components(path: string): string[] {
  if (!path.startsWith("/")) {
    throw new JobFailure("BAD_PAYLOAD", `The path to browse must be absolute, not "${path}"`);
  }
  const parts = path.split("/").filter((x) => x !== "");
  if (parts.some((x) => x === "." || x === "..")) {
    throw new JobFailure("BAD_PAYLOAD", `The path to browse must be normalized, not "${path}"`);
  }
  return parts;
}

const BrowsePayload = PointPayload.extend({ path: z.string().min(1).max(4096) });

export function browseHandler(services: KeyedServices): JobHandler {
  return async (ctx) => {
    const p = parsePayload(ctx, BrowsePayload);
    const parts = components(p.path);
    return await withPoint(ctx, services, p, async ({ ns, snapshot, hasher }) => {
      let treeId = snapshot.tree;
      let here = "";
      for (const name of parts) {
        const tree = await loadTree(ns, treeId, hasher);
        const e = tree.entries.find((x) => x.name === name);
        here += `/${name}`;
        if (!e || e.type !== "dir" || !e.subtree) {
          throw new JobFailure(
            "PATH_NOT_FOUND",
            `Restore point ${p.restorePointId} has no folder ${here}${e ? ` (it is a ${e.type})` : ""}`,
          );
        }
        treeId = e.subtree;
      }
      const folder = parts.length ? `/${parts.join("/")}` : "/";
      const tree = await loadTree(ns, treeId, hasher);
      const entries = [...tree.entries]
        .sort((a, b) => Number(b.type === "dir") - Number(a.type === "dir") || compareNames(a.name, b.name))
        .map(entryItem);
      ctx.progress({ percent: 80, message: `Listed ${folder}: ${entries.length} entries; uploading them` });
      const sent = await uploadList(ctx, "entries", entries, MAX_BROWSE_ENTRIES);
      ctx.progress({ percent: 100, message: `Listed ${folder}` });
      const truncated = sent.sent < entries.length;
      return {
        status: "success",
        output: { path: folder, total: entries.length, truncated },
        parts: { entries: sent.parts },
        totals: { entries: entries.length },
      };
    });
  };
}

/** A glob (`*`, `?`, `[…]`) or a plain name (case-insensitive substring), matched against names. */
export function nameMatcher(query: string, mode?: "glob" | "name"): (name: string) => boolean {
  if ((mode ?? (/[*?[]/.test(query) ? "glob" : "name")) === "name") {
    const needle = query.toLowerCase();
    return (name) => name.toLowerCase().includes(needle);
  }
  let re: RegExp;
  try {
    re = globRegExp(query, { caseInsensitive: true });
  } catch {
    throw new JobFailure("BAD_PAYLOAD", `The search pattern "${query}" is not a valid glob`);
  }
  return (name) => re.test(name);
}

const SearchPayload = PointPayload.extend({
  query: z.string().min(1).max(200),
  mode: z.enum(["glob", "name"]).optional(),
  maxMatches: z.number().int().min(1).max(MAX_SEARCH_MATCHES).optional(),
});

export function searchHandler(services: KeyedServices): JobHandler {
  return async (ctx) => {
    const p = parsePayload(ctx, SearchPayload);
    const match = nameMatcher(p.query, p.mode);
    const max = p.maxMatches ?? MAX_SEARCH_MATCHES;
    return await withPoint(ctx, services, p, async ({ ns, snapshot, hasher }) => {
      // The first `max` matches by path, whatever the walk's order: kept sorted and cut now and then.
      let matches: ReturnType<typeof matchItem>[] = [];
      const keepFirst = () => {
        matches.sort((a, b) => compareNames(a.path, b.path));
        if (matches.length > max) matches = matches.slice(0, max);
      };
      let total = 0;
      let folders = 0;
      const stack: { id: string; path: string }[] = [{ id: snapshot.tree, path: "" }];
      while (stack.length) {
        ctx.signal.throwIfAborted();
        const { id, path } = stack.pop()!;
        const tree = await loadTree(ns, id, hasher);
        if (++folders % 200 === 0) ctx.progress({ message: `Searched ${folders} folders, ${total} matches` });
        for (const e of tree.entries) {
          const full = `${path}/${e.name}`;
          if (e.type === "dir" && e.subtree) stack.push({ id: e.subtree, path: full });
          if (!match(e.name)) continue;
          total++;
          matches.push(matchItem(full, e));
          if (matches.length >= 2 * max) keepFirst();
        }
      }
      keepFirst();
      ctx.progress({ percent: 95, message: `${total} matches in ${folders} folders; uploading them` });
      const sent = await uploadList(ctx, "matches", matches, max);
      ctx.progress({ percent: 100, message: `${total} matches in ${folders} folders` });
      return {
        status: "success",
        output: { query: p.query, total, truncated: sent.sent < total },
        parts: { matches: sent.parts },
        totals: { matches: total },
      };
    });
  };
}

/**
 * A verify's read-back: `sample` referenced blobs of the point's snapshot (file chunks and trees) read,
 * authenticated and re-hashed with the namespace's keys. Throws `JobFailure` (KEY_*) when the keys are not
 * to be had, so the caller can still report the structural result.
 */
export async function readBackSample(
  ctx: JobContext,
  services: KeyedServices,
  p: z.infer<typeof PointPayload>,
  sample: number,
): Promise<VerifyResult & { path: string }> {
  return await withPoint(ctx, services, p, async ({ repo, snapshot, path }) => {
    ctx.progress({ percent: 50, message: `Reading back ${sample} blobs of ${snapshot.id.slice(0, 12)}` });
    const result = await verifyRepository(repo, { snapshot: snapshot.id, sample });
    return { ...result, path };
  });
}

/**
 * `verify` with the read-back: the structural check (keyless_jobs.ts), then, for a point's verify with a
 * `sampleCount` and a sound structure, `sampleCount` blobs read back with the job's keys. Without keys (the
 * control plane refuses or has no key endpoint) the structural result stands, `warning` with the
 * verification `partial` and the reason the keys were not had.
 */
export function sampledVerifyHandler(services: KeyedServices): JobHandler {
  const structural = verifyHandler(services);
  return async (ctx) => {
    const first = await structural(ctx);
    const sample = Number(ctx.job.payload.sampleCount ?? 0);
    if (ctx.job.payload.scope === "storage_target" || !(sample > 0) || first.status !== "warning") {
      return first;
    }
    const p = parsePayload(ctx, PointPayload);
    const base = (first.output?.verification ?? {}) as Record<string, unknown>;
    let r: VerifyResult & { path: string };
    try {
      r = await readBackSample(ctx, services, p, sample);
    } catch (e) {
      if (e instanceof JobFailure && e.reason.startsWith("KEY_")) {
        const details =
          `${String(base.details ?? "").replace(/ Reading back.*$/, "")} Reading back ${sample} ` +
          `sampled blobs needs the namespace's keys: ${e.message}`;
        return {
          status: "warning",
          error: { reason: e.reason, message: details },
          output: { verification: { ...base, status: "partial", details } },
        } satisfies JobOutcome;
      }
      throw e;
    }
    const lines = r.problems.slice(0, 50).map((x) => `${r.path}: ${x.kind} ${x.id}: ${x.detail}`);
    const verification = {
      ...base,
      sampled: r.blobsRead,
      failedCount: r.problems.length,
      problems: r.problems.slice(0, 50).map((x) => ({ ...x, repository: r.path })),
    };
    if (!r.ok) {
      const details =
        `${r.problems.length} problem${r.problems.length === 1 ? "" : "s"}, the first: ${lines[0]}\n` +
        `Read back ${r.blobsRead} of ${sample} sampled blobs of ${r.referencedBlobs}\n${
          lines.slice(1).join("\n")
        }`;
      return {
        status: "failed",
        error: { reason: "VERIFY_MISMATCH", message: details.slice(0, 2000) },
        output: { verification: { ...verification, status: "failed", details: details.slice(0, 8000) } },
      };
    }
    const details = `Restore point ${p.restorePointId}: structure sound; ${r.blobsRead} sampled blobs of ` +
      `${r.referencedBlobs} read back, authenticated and re-hashed: no problem found`;
    return { status: "success", output: { verification: { ...verification, status: "passed", details } } };
  };
}
