/**
 * Browse and search of a restore point: a folder listing or a search is one BES job, kept per (point,
 * path) or per search for a week, its answer stored a page at a time; reads bring a pending state up to
 * date with its job.
 */
import { appendAudit, auditTarget, commitAudited } from "./audit.ts";
import { NotFoundError, ValidationError } from "./errors.ts";
import { commitOrConflict, withRetry } from "./retry.ts";
import { newId, sha256Hex } from "./ids.ts";
import { getJob, type Job, queueJobInOp } from "./job_queue.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import { z } from "zod";
import { readResultList } from "./result_parts.ts";
import { joinPath, normalizeRestorePath, RestorePath } from "./restore_paths.ts";
import { browseByJobKey, browseStateKey, listPageKey, searchByJobKey, searchKey } from "./keys/restore.ts";
import {
  hostOrgsOf,
  hostsInScope,
  loadPoint,
  pointPayload,
  requireComplete,
  requireEngineOnline,
  requireIdShape,
  requireRestorePoint,
  type RestorePointView,
} from "./restore_points.ts";
import { jobFailure, packByWeight, resultError, updateWithOutcome } from "./restore_jobs.ts";

/** Browse listings and search results are kept this long (the content of a restore point never changes). */
export const RESTORE_CACHE_TTL_MS = 7 * 86_400_000;

/**
 * Entries one browse or search keeps (paged, LIST_PAGE_SIZE a page): an answer longer than this keeps its
 * total and says it was cut. Engines send long answers in parts (result_parts.ts).
 */
export const MAX_LISTED_ENTRIES = 50_000;

/** Matches a search asks the BES for (`maxMatches` of its payload). */
export const MAX_SEARCH_MATCHES = 10_000;

/** Entries on one page of a browse listing or search (fewer when their paths are very long). */
export const LIST_PAGE_SIZE = 200;

/** The browse state of a (restore point, path); the path is hashed because keys are limited to 2 KiB. */
export function browseKey(restorePointId: string, path: string) {
  return browseStateKey(restorePointId, sha256Hex(path));
}

/** One file-tree entry as engines report it. */
export interface TreeEntry {
  path: string;
  name: string;
  type: "dir" | "file";
  size: number;
  modifiedAt: string;
}

/**
 * How a ready listing is paged: its entries are stored a page at a time (`listPageKey`), `pageSizes`
 * entries each. A state read for a page carries that page's entries and where it lies in the listing.
 * States stored before paging have no `pageSizes` and keep their entries inline (one page).
 */
export interface ListingPages {
  /** Entries the engine found (at least `kept`). */
  total?: number;
  /** Entries kept (the sum of `pageSizes`). */
  kept?: number;
  /** Entries per stored page. */
  pageSizes?: number[];
  /** The page `entries` holds (0-based), the number of pages, and the index of its first entry. */
  page?: number;
  pages?: number;
  offset?: number;
}

/** What a browse and a search state share: their point, their job and how it went. */
interface ListingState extends ListingPages {
  restorePointId: string;
  status: "pending" | "ready" | "failed";
  jobId: string;
  /** True when the answer had more entries than are kept (`total` says how many). */
  truncated: boolean;
  error: string | null;
  requestedAt: string;
  updatedAt: string;
}

/** Browse: cached per (restore point, normalized path). */
export interface BrowseState extends ListingState {
  path: string;
  /** The entries of the page asked for once ready (null before). */
  entries: TreeEntry[] | null;
}

export interface SearchState extends ListingState {
  id: string;
  accountId: string;
  orgId: string | null;
  /** The org of the point's host: reading the search needs it in scope too. */
  hostOrgIds: string[];
  query: string;
  matches: TreeEntry[] | null;
}

/** A search query: a name (substring, case-insensitive) or a glob (`*`, `?`, `[…]`), 1–200 characters. */
export const SearchQuery = z.string({ error: "is required" }).trim().min(1, "is required")
  .max(200, "must be at most 200 characters")
  .regex(/^[^\p{Cc}]+$/u, "must not contain control characters");

function parseOr422<T>(schema: z.ZodType<T, string>, value: string, field: string): T {
  const result = schema.safeParse(value);
  if (!result.success) {
    const message = result.error.issues[0]?.message ?? "is invalid";
    throw new ValidationError(`The ${field} ${message}`, {
      [field]: message[0].toUpperCase() + message.slice(1),
    });
  }
  return result.data;
}

/** Sizes of stored entries are budgeted so a page stays well inside KV's 64 KiB per value. */
const PAGE_BUDGET = 56_000;

/** Entries of an engine's answer, checked; entries without a usable name or path are skipped. */
function readEntries(raw: unknown, parent: string | null, cap: number): TreeEntry[] {
  const list = Array.isArray(raw) ? raw : [];
  const entries: TreeEntry[] = [];
  for (const item of list) {
    if (entries.length >= cap) break;
    if (!item || typeof item !== "object") continue;
    const e = item as Record<string, unknown>;
    let path: string | null = null;
    if (typeof e.path === "string") {
      const n = normalizeRestorePath(e.path);
      path = n.ok ? n.path : null;
    }
    // "." and ".." are not children: joined to the folder they would be the folder itself or its parent.
    const name = typeof e.name === "string" && e.name.length > 0 && e.name.length <= 1024 &&
        !/[\p{Cc}/\\]/u.test(e.name) && e.name !== "." && e.name !== ".."
      ? e.name
      : null;
    if (!path && name && parent) {
      const joined = normalizeRestorePath(joinPath(parent, name));
      path = joined.ok ? joined.path : null;
    }
    if (!path) continue;
    const finalName = name ?? path.split(/[\\/]/).filter(Boolean).pop() ?? path;
    const type = e.type === "dir" || e.type === "directory" ? "dir" : "file";
    const size = typeof e.size === "number" && Number.isFinite(e.size) && e.size >= 0
      ? Math.floor(e.size)
      : 0;
    const time = typeof e.modifiedAt === "string" ? e.modifiedAt : typeof e.mtime === "string" ? e.mtime : "";
    const modifiedAt = Number.isFinite(Date.parse(time)) ? new Date(Date.parse(time)).toISOString() : "";
    entries.push({ path, name: finalName, type, size, modifiedAt });
  }
  return entries;
}

function sortEntries(entries: TreeEntry[]): TreeEntry[] {
  return entries.sort((a, b) =>
    Number(b.type === "dir") - Number(a.type === "dir") || a.name.localeCompare(b.name) ||
    a.path.localeCompare(b.path)
  );
}

/** Splits entries into pages of at most LIST_PAGE_SIZE and PAGE_BUDGET (estimated KV bytes). */
function pagesOf(entries: TreeEntry[]): TreeEntry[][] {
  return packByWeight(entries, (e) => (e.path.length + e.name.length) * 2 + 96, PAGE_BUDGET, LIST_PAGE_SIZE);
}

/**
 * The listing a finished browse or search job answered (inline `output.entries|matches`, then its
 * uploaded parts), checked, sorted for a browse, cut at MAX_LISTED_ENTRIES, and stored a page at a time.
 * Idempotent (pages are keyed by the job). Returns how it is paged.
 */
async function storeListing(
  kv: Deno.Kv,
  job: Job,
  list: "entries" | "matches",
  parent: string | null,
): Promise<Required<Pick<ListingPages, "total" | "kept" | "pageSizes">> & { truncated: boolean }> {
  const result = job.result!;
  const output = (result.output ?? {}) as Record<string, unknown>;
  const entries = readEntries(output[list], parent, MAX_LISTED_ENTRIES);
  const facts = result.lists?.[list];
  if (facts?.parts && entries.length < MAX_LISTED_ENTRIES) {
    const parted = await readResultList(kv, job.id, result.partsAttempt ?? job.attempts, list, facts.parts);
    entries.push(...readEntries(parted, parent, MAX_LISTED_ENTRIES - entries.length));
  }
  if (list === "entries") sortEntries(entries);
  const reported = [facts?.total, typeof output.total === "number" ? output.total : undefined]
    .filter((n): n is number => typeof n === "number" && Number.isFinite(n));
  const total = Math.max(entries.length, ...reported);
  const pages = pagesOf(entries);
  for (let i = 0; i < pages.length; i += 10) {
    const op = kv.atomic();
    pages.slice(i, i + 10).forEach((page, j) =>
      op.set(listPageKey(job.id, i + j), page, { expireIn: RESTORE_CACHE_TTL_MS })
    );
    await commitOrConflict(op, "Could not store the listing; try again");
  }
  return {
    total,
    kept: entries.length,
    pageSizes: pages.map((p) => p.length),
    truncated: entries.length < total || output.truncated === true,
  };
}

/** A ready state with the entries of `page` (clamped to the pages there are) read in. */
async function withPage<T extends ListingPages & { status: string; jobId: string }>(
  kv: Deno.Kv,
  state: T,
  page: number,
  field: "entries" | "matches",
): Promise<T> {
  if (state.status !== "ready" || !state.pageSizes) return state; // pending, failed, or kept inline
  const pages = state.pageSizes.length;
  const p = Math.max(0, Math.min(Math.floor(page) || 0, Math.max(0, pages - 1)));
  const offset = state.pageSizes.slice(0, p).reduce((a, b) => a + b, 0);
  const entries = pages ? (await kv.get<TreeEntry[]>(listPageKey(state.jobId, p))).value ?? [] : [];
  return { ...state, [field]: entries, page: p, pages, offset };
}

/**
 * How long a browse or search may wait for its BES to pick it up. Past that, while the job is still
 * queued, the request reads as failed (the BES is probably offline or stuck) instead of spinning; a
 * later answer from the BES still lands.
 */
export const RESTORE_PICKUP_MS = 2 * 60_000;

/** Why a pending request reads as failed: its job is still queued past the pickup deadline. */
function pickupOverdue(job: Job, requestedAt: string, now: Date): string | null {
  if (job.status !== "queued" || now.getTime() - Date.parse(requestedAt) <= RESTORE_PICKUP_MS) return null;
  return `The BES has not picked up this request in ${
    RESTORE_PICKUP_MS / 60_000
  } minutes; it may be offline or busy. Check the engine on the dashboard and try again.`;
}

/**
 * A pending browse or search state brought up to date with its job (result recorded: its listing stored a
 * page at a time; or failed without one). Returns the same object when nothing changed.
 */
async function listingWithJob<T extends ListingState>(
  kv: Deno.Kv,
  state: T,
  job: Job | null,
  at: string,
  now: Date,
  list: "entries" | "matches",
  parent: string | null,
): Promise<T> {
  if (state.status !== "pending" || !job || job.id !== state.jobId) return state;
  const overdue = pickupOverdue(job, state.requestedAt, now);
  if (overdue) return { ...state, status: "failed", error: overdue };
  if (job.result) {
    if (job.result.status === "failed") {
      return { ...state, status: "failed", error: resultError(job), updatedAt: at };
    }
    const listing = await storeListing(kv, job, list, parent);
    return { ...state, ...listing, status: "ready", [list]: null, error: null, updatedAt: at };
  }
  if (job.status === "failed" || job.status === "cancelled") {
    return { ...state, status: "failed", error: jobFailure(job), updatedAt: job.updatedAt };
  }
  return state;
}

/** A pending browse state brought up to date with its job (`listingWithJob`). */
export function browseWithJob(
  kv: Deno.Kv,
  state: BrowseState,
  job: Job | null,
  at: string,
  now: Date,
): Promise<BrowseState> {
  return listingWithJob(kv, state, job, at, now, "entries", state.path);
}

/** A pending search state brought up to date with its job (`listingWithJob`). */
export function searchWithJob(
  kv: Deno.Kv,
  state: SearchState,
  job: Job | null,
  at: string,
  now: Date,
): Promise<SearchState> {
  return listingWithJob(kv, state, job, at, now, "matches", null);
}

/**
 * Writes a listing a read found ready (its job answered since, and its pages are stored), checked against
 * the entry it was read from, so the next read needs no second look at the job. A lost race is harmless:
 * the winner wrote the same. A failure a read inferred (pickup overdue) is not kept: a late answer lands.
 */
async function keepSettled<T extends { status: string }>(
  kv: Deno.Kv,
  entry: Deno.KvEntryMaybe<T>,
  next: T,
): Promise<void> {
  if (next === entry.value || next.status !== "ready") return;
  await kv.atomic().check(entry).set(entry.key, next, { expireIn: RESTORE_CACHE_TTL_MS }).commit();
}

/**
 * Adds to `op` a browse or search job on the point's BES, priority high: its payload is the point's, its
 * host and `payload`.
 */
function queueListingJob(
  op: Deno.AtomicOperation,
  point: RestorePointView,
  kind: "browse" | "search",
  payload: Record<string, unknown>,
  now: Date,
) {
  return queueJobInOp(op, {
    kind,
    principal: `bes:${point.engineId}`,
    accountId: point.accountId,
    orgId: point.orgId,
    priority: "high",
    payload: { ...pointPayload(point), hostId: point.hostId, ...payload },
  }, now);
}

/**
 * Browses a folder of a complete restore point. Returns the kept state when there is one that has not
 * failed (no new job: a second visit is instant); otherwise queues a `browse` job on the point's BES
 * (priority high) and returns the pending state. Two requests racing queue one job. `path` defaults to
 * "/". Throws ValidationError for a bad path or a point that is not complete.
 */
export async function requestBrowse(
  kv: Deno.Kv,
  actor: Actor,
  restorePointId: string,
  path: string | undefined,
  now: Date,
): Promise<BrowseState> {
  return (await browse(kv, actor, restorePointId, path, now)).state;
}

/** `requestBrowse`, also saying whether this call queued a new job (false: the kept state answered). */
export async function browse(
  kv: Deno.Kv,
  actor: Actor,
  restorePointId: string,
  path: string | undefined,
  now: Date,
): Promise<{ state: BrowseState; queued: boolean }> {
  const { point, engine } = await loadPoint(kv, actor, restorePointId);
  const normalized = parseOr422(RestorePath, path || "/", "path");
  requireComplete(point, "browsed");
  const key = browseKey(point.id, normalized);
  const attempt = async (): Promise<{ value: { state: BrowseState; queued: boolean } } | null> => {
    const entry = await kv.get<BrowseState>(key);
    if (entry.value) {
      const current = await browseWithJob(
        kv,
        entry.value,
        await getJob(kv, entry.value.jobId),
        now.toISOString(),
        now,
      );
      if (current.status !== "failed") {
        await keepSettled(kv, entry, current);
        return { value: { state: await withPage(kv, current, 0, "entries"), queued: false } };
      }
    }
    requireEngineOnline(engine, point, now, "browsing");
    const op = kv.atomic().check(entry);
    const job = queueListingJob(op, point, "browse", { path: normalized }, now);
    const at = now.toISOString();
    const state: BrowseState = {
      restorePointId: point.id,
      path: normalized,
      status: "pending",
      jobId: job.id,
      entries: null,
      truncated: false,
      error: null,
      requestedAt: at,
      updatedAt: at,
    };
    op.set(key, state, { expireIn: RESTORE_CACHE_TTL_MS })
      .set(browseByJobKey(job.id), { restorePointId: point.id, path: normalized }, {
        expireIn: RESTORE_CACHE_TTL_MS,
      });
    appendAudit(op, actor, {
      ...auditTarget("restore_point", point),
      action: "restore.browse",
      summary: `Browsed ${normalized} in restore point ${point.id} (${point.policyName}, ${
        point.hostName ?? "BES"
      })`,
    }, now);
    return (await op.commit()).ok ? { value: { state, queued: true } } : null;
  };
  return await withRetry(attempt, 5, "The browse request conflicted repeatedly; try again");
}

/**
 * The kept browse state of a folder, brought up to date with its job, with the entries of `page` (0-based,
 * LIST_PAGE_SIZE a page; clamped to the last page); null when never requested.
 */
export async function getBrowse(
  kv: Deno.Kv,
  actor: Actor,
  restorePointId: string,
  path: string | undefined,
  now: Date,
  page = 0,
): Promise<BrowseState | null> {
  const point = await requireRestorePoint(kv, actor, restorePointId);
  const normalized = parseOr422(RestorePath, path || "/", "path");
  const entry = await kv.get<BrowseState>(browseKey(point.id, normalized));
  if (!entry.value) return null;
  const state = await browseWithJob(
    kv,
    entry.value,
    await getJob(kv, entry.value.jobId),
    entry.value.updatedAt,
    now,
  );
  await keepSettled(kv, entry, state);
  return await withPage(kv, state, page, "entries");
}

/**
 * Searches a complete restore point by name or glob: queues a `search` job on its BES (priority high)
 * and returns the pending search. Throws ValidationError for an empty or too long query.
 */
export async function requestSearch(
  kv: Deno.Kv,
  actor: Actor,
  restorePointId: string,
  query: string,
  now: Date,
): Promise<SearchState> {
  const { point, engine } = await loadPoint(kv, actor, restorePointId);
  const q = parseOr422(SearchQuery, query ?? "", "query");
  requireComplete(point, "searched");
  requireEngineOnline(engine, point, now, "searching");
  const op = kv.atomic();
  const job = queueListingJob(op, point, "search", {
    query: q,
    mode: /[*?[]/.test(q) ? "glob" : "name",
    maxMatches: MAX_SEARCH_MATCHES,
  }, now);
  const at = now.toISOString();
  const state: SearchState = {
    id: newId(now),
    accountId: point.accountId,
    orgId: point.orgId,
    hostOrgIds: hostOrgsOf(point.hostOrgId),
    restorePointId: point.id,
    query: q,
    status: "pending",
    jobId: job.id,
    matches: null,
    truncated: false,
    error: null,
    requestedAt: at,
    updatedAt: at,
  };
  op.check({ key: searchKey(state.id), versionstamp: null })
    .set(searchKey(state.id), state, { expireIn: RESTORE_CACHE_TTL_MS })
    .set(searchByJobKey(job.id), state.id, { expireIn: RESTORE_CACHE_TTL_MS });
  await commitAudited(
    op,
    actor,
    {
      ...auditTarget("restore_point", point),
      action: "restore.search",
      summary: `Searched restore point ${point.id} (${point.policyName}, ${
        point.hostName ?? "BES"
      }) for "${q}"`,
    },
    now,
    "The search could not be queued; try again",
  );
  return state;
}

/**
 * A search, brought up to date with its job, with the matches of `page` (0-based, clamped). Throws
 * NotFoundError when missing or outside the scope.
 */
export async function getSearch(
  kv: Deno.Kv,
  actor: Actor,
  searchId: string,
  now: Date,
  page = 0,
): Promise<SearchState> {
  requireIdShape(searchId, "Search");
  const entry = await kv.get<SearchState>(searchKey(searchId));
  const stored = entry.value;
  if (!stored || !inScope(actor, stored) || !hostsInScope(actor, stored)) {
    throw new NotFoundError(`Search ${searchId} not found`);
  }
  authorize(actor, "backup.restore", stored);
  const state = await searchWithJob(kv, stored, await getJob(kv, stored.jobId), stored.updatedAt, now);
  await keepSettled(kv, entry, state);
  return await withPage(kv, state, page, "matches");
}

/**
 * Applies a browse or search job's recorded result to its state (called from job_outcomes.ts
 * `applyJobOutcome`). Idempotent: a state that is no longer pending, or belongs to another job, is left.
 */
export async function applyListingOutcome(kv: Deno.Kv, job: Job, now: Date): Promise<void> {
  if (!job.result) return;
  const at = now.toISOString();
  if (job.kind === "browse") {
    const ref = (await kv.get<{ restorePointId: string; path: string }>(browseByJobKey(job.id))).value;
    if (!ref) return;
    await updateWithOutcome<BrowseState>(
      kv,
      browseKey(ref.restorePointId, ref.path),
      (s) => browseWithJob(kv, s, job, at, now),
      { expireIn: RESTORE_CACHE_TTL_MS },
    );
  } else if (job.kind === "search") {
    const id = (await kv.get<string>(searchByJobKey(job.id))).value;
    if (!id) return;
    await updateWithOutcome<SearchState>(kv, searchKey(id), (s) => searchWithJob(kv, s, job, at, now), {
      expireIn: RESTORE_CACHE_TTL_MS,
    });
  }
}
