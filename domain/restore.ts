/**
 * Restore (issue 7): restore points with the guide's filters and their chains, browse and search of a
 * point's file tree through BES jobs, file-level and image restores on an agent, and bare-metal restore
 * with a one-time token (DESIGN.md invariant 7). Every action needs `backup.restore` on the point's scope
 * (its policy's account and org); objects outside the scope are not found. Job outcomes come back through
 * `applyRestoreJobOutcome`, called from runs.ts for the kinds browse, search, restore_files,
 * restore_image and bmr; reads also reconcile with the job, so a lease that ran out shows as failed.
 */
import { policiesByAccountPrefix, policyKey, retiredPolicyKey } from "./keys/policies.ts";
import { restorePointsByPolicyPrefix } from "./keys/restore.ts";
import { z } from "zod";
import { appendAudit } from "./audit.ts";
import { CursorField, openIdCursor } from "./cursor.ts";
import { type Engine, engineActor, engineKey, engineOnlineAt } from "./engines.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { type Host, hostKey, hostScope, requireHost } from "./hosts.ts";
import { newId, sha256Hex } from "./ids.ts";
import { getManyValues } from "./kv.ts";
import { withRetry } from "./retry.ts";
import { getJob, getJobs, type Job, queueJobInOp } from "./job_queue.ts";
import { listPartNumbers, readResultList, readResultPart } from "./result_parts.ts";
import type { Policy } from "./policies.ts";
import { type Actor, authorize, can, inScope, type ScopedObject } from "./rbac.ts";
import type { RestorePoint } from "./runs.ts";
import { restorePointKey } from "./restore_point_keys.ts";
import { listReplicationsOfPoint } from "./replicas.ts";
import type { StorageTarget } from "./storage.ts";
import { targetKey } from "./storage_keys.ts";
import { joinPath, MAX_PATH_LENGTH, normalizeRestorePath, PathList, RestorePath } from "./restore_paths.ts";
import {
  bmrTokenKey,
  browseByJobKey,
  listPageKey,
  restoreByJobKey,
  restoreKey,
  restorePathsKey,
  restoresByAccountKey,
  searchByJobKey,
  searchKey,
} from "./keys/restore.ts";
export {
  bmrTokenKey,
  browseByJobKey,
  listPageKey,
  restoreByJobKey,
  restoreKey,
  restorePathsKey,
  restoresByAccountKey,
  searchByJobKey,
  searchKey,
};

// Path rules live in restore_paths.ts (no imports from other domain modules, so any module can use them).
export * from "./restore_paths.ts";

export const RESTORE_POINT_STATUSES = ["complete", "running", "failed", "expired"] as const;
export type RestorePointStatus = (typeof RESTORE_POINT_STATUSES)[number];
export const VERIFICATION_STATUSES = ["passed", "failed", "partial", "pending"] as const;
export type VerificationStatus = (typeof VERIFICATION_STATUSES)[number];

/** How long a bare-metal restore token can be redeemed. */
export const BMR_TOKEN_TTL_MS = 4 * 3600_000;
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
/** Per-file errors kept with a restore's result (the rest are counted). */
export const MAX_RESULT_ERRORS = 100;
/** Restore points one page of a list may read before it answers with a cursor. */
export const RESTORE_POINT_SCAN_LIMIT = 5000;

// ---------------------------------------------------------------------------------------------------
// Keys

/** The browse state of a (restore point, path); the path is hashed because keys are limited to 2 KiB. */
export function browseKey(restorePointId: string, path: string) {
  return ["restore_browse", restorePointId, sha256Hex(path)] as const;
}

// ---------------------------------------------------------------------------------------------------
// Restore points

/** A restore point with what pages show next to it. */
export interface RestorePointView extends RestorePoint {
  accountId: string;
  orgId: string | null;
  policyName: string;
  backupType: "file" | "image";
  /** null for BES-side points (a synthetic full has no host). */
  hostName: string | null;
  /** The org of the point's host (null without one, or when the host was deleted). */
  hostOrgId: string | null;
  besName: string;
}

const ID_PATTERN = /^[0-9A-Z]{26}$/;
const IdFilter = z.string().regex(ID_PATTERN).catch("");

/** Throws NotFoundError for an id that cannot exist (ids are ULIDs; a long one would overflow a KV key). */
function requireIdShape(id: string, what: string): void {
  if (!ID_PATTERN.test(id)) throw new NotFoundError(`${what} ${id.slice(0, 40)} not found`);
}

/** Filters of the restore points list; every field falls back to its default, so a raw query parses. */
export const RestorePointFilter = z.object({
  hostId: IdFilter,
  policyId: IdFilter,
  besId: IdFilter,
  chainId: z.string().trim().max(200).catch(""),
  status: z.enum(["", ...RESTORE_POINT_STATUSES]).catch(""),
  verification: z.enum(["", ...VERIFICATION_STATUSES]).catch(""),
  /** The last point of the previous page; checked by `openIdCursor` (an invalid one is an error, not ""). */
  cursor: CursorField,
  limit: z.coerce.number().int().min(1).max(200).catch(50),
});
export type RestorePointFilter = z.infer<typeof RestorePointFilter>;

function policyScope(policy: Pick<Policy, "accountId" | "orgId">): ScopedObject {
  return { accountId: policy.accountId, orgId: policy.orgId };
}

/** The orgs of the hosts a search or restore involves (its point's host, its target host). */
function hostOrgsOf(...orgIds: Array<string | null | undefined>): string[] {
  return [...new Set(orgIds.filter((id): id is string => Boolean(id)))];
}

/**
 * True when every host org a search or restore involves is in the actor's scope: its files are that
 * host's, whatever org its policy belongs to (the same rule as `requireRestorePoint`).
 */
function hostsInScope(actor: Actor, object: { accountId: string; hostOrgIds?: string[] }): boolean {
  return (object.hostOrgIds ?? []).every((orgId) => inScope(actor, { accountId: object.accountId, orgId }));
}

/** The policy fields a view shows (a view carries them, so its chain needs no second read). */
type PolicyFacts = Pick<Policy, "id" | "accountId" | "orgId" | "name" | "backupType">;

function toView(
  point: RestorePoint,
  policy: PolicyFacts,
  engine: Pick<Engine, "name"> | null,
  host: Pick<Host, "hostname" | "orgId"> | null,
): RestorePointView {
  return {
    ...point,
    accountId: policy.accountId,
    orgId: policy.orgId,
    policyName: policy.name,
    backupType: policy.backupType,
    hostName: point.hostId ? host?.hostname ?? "(deleted host)" : null,
    hostOrgId: point.hostId ? host?.orgId ?? null : null,
    besName: engine?.name ?? "(deleted BES)",
  };
}

/** Views of points whose policies are known, with their engines and hosts read in chunks. */
async function toViews(
  kv: Deno.Kv,
  points: RestorePoint[],
  policies: Map<string, PolicyFacts>,
): Promise<RestorePointView[]> {
  const engineIds = [...new Set(points.map((p) => p.engineId))];
  const hostIds = [...new Set(points.map((p) => p.hostId).filter((id): id is string => Boolean(id)))];
  const [engines, hosts] = await Promise.all([
    getManyValues<Engine>(kv, engineIds.map(engineKey)),
    getManyValues<Host>(kv, hostIds.map(hostKey)),
  ]);
  const engineById = new Map(engines.map((e) => [e.id, e]));
  const hostById = new Map(hosts.map((h) => [h.id, h]));
  return points.map((p) =>
    toView(
      p,
      policies.get(p.policyId)!,
      engineById.get(p.engineId) ?? null,
      hostById.get(p.hostId ?? "") ?? null,
    )
  );
}

/** The policies whose points the actor may restore from (all accounts for the system). */
export async function restorablePolicies(kv: Deno.Kv, actor: Actor): Promise<Policy[]> {
  const out: Policy[] = [];
  if (actor.accountId) {
    const keys: Deno.KvKey[] = [];
    for await (const e of kv.list<string>({ prefix: policiesByAccountPrefix(actor.accountId) })) {
      keys.push(policyKey(e.value));
    }
    // Deleted policies whose restore points have not all expired yet (their points stay restorable).
    for await (const e of kv.list<string>({ prefix: ["policies_retired_by_account", actor.accountId] })) {
      keys.push(retiredPolicyKey(e.value));
    }
    out.push(...await getManyValues<Policy>(kv, keys));
  } else if (actor.kind === "system") {
    for await (const e of kv.list<Policy>({ prefix: ["policies"] })) out.push(e.value);
    for await (const e of kv.list<Policy>({ prefix: ["policies_retired"] })) out.push(e.value);
  }
  return out.filter((p) => can(actor, "backup.restore", policyScope(p)));
}

/**
 * Restore points in the actor's scope, newest first, filtered by host, policy, BES, chain, status and
 * verification, a page at a time. The account's policies' point indexes are merged newest first, so only
 * the actor's own account is read; a page reads at most RESTORE_POINT_SCAN_LIMIT points, and the cursor
 * (the last point read) resumes the scan. Throws ForbiddenError without backup.restore, InvalidCursorError
 * for a cursor that is not a point id.
 */
export async function listRestorePoints(
  kv: Deno.Kv,
  actor: Actor,
  filterInput: Partial<RestorePointFilter> = {},
): Promise<{ values: RestorePointView[]; cursor: string }> {
  authorize(actor, "backup.restore");
  const filter = RestorePointFilter.parse(filterInput);
  filter.cursor = openIdCursor(filter.cursor);
  const policies = (await restorablePolicies(kv, actor)).filter((p) =>
    (!filter.policyId || p.id === filter.policyId) && (!filter.besId || p.besId === filter.besId)
  );
  const byId = new Map(policies.map((p) => [p.id, p]));
  const batchSize = policies.length === 1 ? Math.min(200, filter.limit + 1) : 25;
  const heads = await Promise.all(policies.map(async (policy) => {
    const prefix = restorePointsByPolicyPrefix(policy.id);
    const selector = filter.cursor ? { prefix, end: [...prefix, filter.cursor] } : { prefix };
    const iter = kv.list<string>(selector, { reverse: true, batchSize })[Symbol.asyncIterator]();
    const first = await iter.next();
    return { iter, head: first.done ? null : first.value.value };
  }));
  const next = async (): Promise<string | null> => {
    let best = -1;
    for (let i = 0; i < heads.length; i++) {
      const id = heads[i].head;
      if (id !== null && (best < 0 || id > heads[best].head!)) best = i;
    }
    if (best < 0) return null;
    const id = heads[best].head!;
    const step = await heads[best].iter.next();
    heads[best].head = step.done ? null : step.value.value;
    return id;
  };
  // A point holds its host's files: it is visible only when the host's org is in scope too (an all-scope
  // admin may assign a host of one org to a policy of another).
  const hostInScope = new Map<string, boolean>();
  const readHostScopes = async (points: Iterable<RestorePoint>) => {
    const unknown = [...new Set([...points].map((p) => p.hostId).filter((id): id is string => Boolean(id)))]
      .filter((id) => !hostInScope.has(id));
    for (const id of unknown) hostInScope.set(id, true); // a deleted host: the policy's scope decides
    for (const host of await getManyValues<Host>(kv, unknown.map(hostKey))) {
      hostInScope.set(host.id, inScope(actor, hostScope(host)));
    }
  };
  const matches = (p: RestorePoint) =>
    (!p.hostId || hostInScope.get(p.hostId) !== false) &&
    (!filter.hostId || p.hostId === filter.hostId) &&
    (!filter.besId || p.engineId === filter.besId) &&
    (!filter.chainId || p.chainId === filter.chainId) &&
    (!filter.status || p.status === filter.status) &&
    (!filter.verification || p.verification === filter.verification);
  const found: RestorePoint[] = [];
  let scanned = 0;
  while (true) {
    const ids: string[] = [];
    while (ids.length < 20 && scanned + ids.length < RESTORE_POINT_SCAN_LIMIT) {
      const id = await next();
      if (id === null) break;
      ids.push(id);
    }
    if (!ids.length) break;
    const points = new Map(
      (await getManyValues<RestorePoint>(kv, ids.map(restorePointKey))).map((p) => [p.id, p]),
    );
    await readHostScopes(points.values());
    for (const [i, id] of ids.entries()) {
      scanned++;
      const point = points.get(id);
      if (point && matches(point)) found.push(point);
      const full = found.length >= filter.limit;
      if (full || scanned >= RESTORE_POINT_SCAN_LIMIT) {
        const more = i < ids.length - 1 || heads.some((h) => h.head !== null);
        return { values: await toViews(kv, found, byId), cursor: more ? id : "" };
      }
    }
  }
  return { values: await toViews(kv, found, byId), cursor: "" };
}

/**
 * The restore point with its policy, BES and host names. Throws NotFoundError when it does not exist or
 * is outside the actor's scope (its policy's org, and its host's org), ForbiddenError without
 * backup.restore.
 */
export async function requireRestorePoint(kv: Deno.Kv, actor: Actor, id: string): Promise<RestorePointView> {
  return (await loadPoint(kv, actor, id)).point;
}

/** `requireRestorePoint` with the engine and host it read, so a request does not read them again. */
async function loadPoint(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
): Promise<{ point: RestorePointView; engine: Engine | null; host: Host | null }> {
  requireIdShape(id, "Restore point");
  const point = (await kv.get<RestorePoint>(restorePointKey(id))).value;
  const [live, retired] = point
    ? await kv.getMany<[Policy, Policy]>([policyKey(point.policyId), retiredPolicyKey(point.policyId)])
    : [];
  // A deleted policy's points stay restorable until they expire (its last settings are kept retired).
  const policy = live?.value ?? retired?.value ?? null;
  if (!point || !policy || !inScope(actor, policyScope(policy))) {
    throw new NotFoundError(`Restore point ${id} not found`);
  }
  const [engine, host] = await kv.getMany<[Engine, Host]>([
    engineKey(point.engineId),
    hostKey(point.hostId ?? "-"),
  ]);
  if (host.value && !inScope(actor, hostScope(host.value))) {
    throw new NotFoundError(`Restore point ${id} not found`);
  }
  authorize(actor, "backup.restore", policyScope(policy));
  return { point: toView(point, policy, engine.value, host.value), engine: engine.value, host: host.value };
}

function isFull(p: Pick<RestorePoint, "type">): boolean {
  return p.type === "full" || p.type === "synthetic_full";
}

/** Points of one policy read around a point: how many index entries one direction may read. */
const CHAIN_SCAN_LIMIT = 20_000;

/**
 * Visits the points of a policy's index in `selector` order, 50 at a time, until `visit` answers false or
 * CHAIN_SCAN_LIMIT entries were read.
 */
async function visitPoints(
  kv: Deno.Kv,
  selector: Deno.KvListSelector,
  reverse: boolean,
  visit: (point: RestorePoint) => boolean,
): Promise<void> {
  let ids: string[] = [];
  let going = true;
  const flush = async () => {
    const points = new Map(
      (await getManyValues<RestorePoint>(kv, ids.map(restorePointKey))).map((p) => [p.id, p]),
    );
    for (const id of ids) {
      const point = points.get(id);
      if (going && point) going = visit(point);
    }
    ids = [];
  };
  let scanned = 0;
  for await (const e of kv.list<string>(selector, { reverse, batchSize: 200 })) {
    ids.push(e.value);
    if (ids.length === 50) await flush();
    if (!going || ++scanned >= CHAIN_SCAN_LIMIT) break;
  }
  if (going) await flush();
}

/**
 * The chain of a point: its full first, then the incrementals in order, each with size and
 * verification. Reads the policy's points outward from this one (ids are in completion order): back to
 * the chain's full, and forward until the host's next chain starts, so an old point of a busy policy
 * finds its chain as quickly as the newest one.
 */
export async function restorePointChain(kv: Deno.Kv, actor: Actor, id: string): Promise<RestorePointView[]> {
  return await chainOf(kv, await requireRestorePoint(kv, actor, id));
}

/** The chain of a point already read through `requireRestorePoint` (which checked the scope). */
export async function chainOf(kv: Deno.Kv, point: RestorePointView): Promise<RestorePointView[]> {
  const prefix = restorePointsByPolicyPrefix(point.policyId);
  const chain: RestorePoint[] = [];
  const sameHost = (p: RestorePoint) => p.hostId === point.hostId;
  if (!isFull(point)) {
    await visitPoints(kv, { prefix, end: [...prefix, point.id] }, true, (p) => {
      if (!sameHost(p) || p.chainId !== point.chainId) return true;
      chain.push(p);
      return !isFull(p);
    });
  }
  await visitPoints(kv, { prefix, start: [...prefix, point.id] }, false, (p) => {
    if (!sameHost(p)) return true;
    if (p.chainId === point.chainId) chain.push(p);
    else if (isFull(p)) return false; // the host's next chain began
    return true;
  });
  chain.sort((a, b) =>
    Number(isFull(b)) - Number(isFull(a)) || a.completedAt.localeCompare(b.completedAt) ||
    a.id.localeCompare(b.id)
  );
  const policy: PolicyFacts = {
    id: point.policyId,
    accountId: point.accountId,
    orgId: point.orgId,
    name: point.policyName,
    backupType: point.backupType,
  };
  return await toViews(kv, chain, new Map([[policy.id, policy]]));
}

/** The newest complete restore point of a host (optionally of one policy), for deep links with only a host. */
export async function latestRestorePointOfHost(
  kv: Deno.Kv,
  actor: Actor,
  hostId: string,
  policyId?: string,
): Promise<RestorePointView | null> {
  await requireHost(kv, actor, hostId);
  let cursor = "";
  for (let page = 0; page < 5; page++) {
    const result = await listRestorePoints(kv, actor, {
      hostId,
      policyId: policyId ?? "",
      status: "complete",
      cursor,
      limit: 1,
    });
    if (result.values.length) return result.values[0];
    if (!result.cursor) return null;
    cursor = result.cursor;
  }
  return null;
}

function requireComplete(point: RestorePointView, what: string): void {
  if (point.status !== "complete") {
    throw new ValidationError(`Only complete restore points can be ${what}; this one is ${point.status}`, {
      restorePointId: `The restore point is ${point.status}`,
    });
  }
}

/** The point's BES as a job payload sees it (where the agent fetches manifests and chunks). */
function besEndpoint(engine: Engine | null, engineId: string) {
  return engine
    ? { id: engine.id, endpoint: `https://${engine.hostname}:${engine.port}`, ipAddress: engine.ipAddress }
    : { id: engineId, endpoint: null, ipAddress: null };
}

// ---------------------------------------------------------------------------------------------------
// Browse and search

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

/** Browse: cached per (restore point, normalized path). */
export interface BrowseState extends ListingPages {
  restorePointId: string;
  path: string;
  status: "pending" | "ready" | "failed";
  jobId: string;
  /** The entries of the page asked for once ready (null before). */
  entries: TreeEntry[] | null;
  /** True when the folder had more entries than are kept (`total` says how many). */
  truncated: boolean;
  error: string | null;
  requestedAt: string;
  updatedAt: string;
}

export interface SearchState extends ListingPages {
  id: string;
  accountId: string;
  orgId: string | null;
  /** The org of the point's host: reading the search needs it in scope too. */
  hostOrgIds: string[];
  restorePointId: string;
  query: string;
  status: "pending" | "ready" | "failed";
  jobId: string;
  matches: TreeEntry[] | null;
  truncated: boolean;
  error: string | null;
  requestedAt: string;
  updatedAt: string;
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

/** Why a job ended without a result, in words. */
function jobFailure(job: Job): string {
  if (job.failureReason === "LEASE_EXPIRED") {
    return "The engine stopped answering and the job used all its attempts";
  }
  if (job.failureReason === "CANCELLED") return "The job was cancelled";
  return `The job failed${job.failureReason ? ` (${job.failureReason})` : ""}`;
}

function resultError(job: Job): string {
  const e = job.result?.error;
  return e ? `${e.reason}: ${e.message}`.slice(0, 2000) : "The engine reported a failure";
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
 * Splits `items`, in order, into groups of at most `maxCount` items whose `weightOf` sums stay within
 * `budget` (an item heavier than `budget` gets a group of its own).
 */
function packByWeight<T>(
  items: T[],
  weightOf: (item: T) => number,
  budget: number,
  maxCount = Infinity,
): T[][] {
  const groups: T[][] = [];
  let group: T[] = [];
  let weight = 0;
  for (const item of items) {
    const w = weightOf(item);
    if (group.length && (group.length >= maxCount || weight + w > budget)) {
      groups.push(group);
      group = [];
      weight = 0;
    }
    group.push(item);
    weight += w;
  }
  if (group.length) groups.push(group);
  return groups;
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
    if (!(await op.commit()).ok) throw new ConflictError("Could not store the listing; try again");
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
 * A pending browse state brought up to date with its job (result recorded: its listing stored a page at
 * a time; or failed without one). Returns the same object when nothing changed.
 */
async function browseWithJob(
  kv: Deno.Kv,
  state: BrowseState,
  job: Job | null,
  at: string,
  now: Date,
): Promise<BrowseState> {
  if (state.status !== "pending" || !job || job.id !== state.jobId) return state;
  const overdue = pickupOverdue(job, state.requestedAt, now);
  if (overdue) return { ...state, status: "failed", error: overdue };
  if (job.result) {
    if (job.result.status === "failed") {
      return { ...state, status: "failed", error: resultError(job), updatedAt: at };
    }
    const listing = await storeListing(kv, job, "entries", state.path);
    return { ...state, ...listing, status: "ready", entries: null, error: null, updatedAt: at };
  }
  if (job.status === "failed" || job.status === "cancelled") {
    return { ...state, status: "failed", error: jobFailure(job), updatedAt: job.updatedAt };
  }
  return state;
}

async function searchWithJob(
  kv: Deno.Kv,
  state: SearchState,
  job: Job | null,
  at: string,
  now: Date,
): Promise<SearchState> {
  if (state.status !== "pending" || !job || job.id !== state.jobId) return state;
  const overdue = pickupOverdue(job, state.requestedAt, now);
  if (overdue) return { ...state, status: "failed", error: overdue };
  if (job.result) {
    if (job.result.status === "failed") {
      return { ...state, status: "failed", error: resultError(job), updatedAt: at };
    }
    const listing = await storeListing(kv, job, "matches", null);
    return { ...state, ...listing, status: "ready", matches: null, error: null, updatedAt: at };
  }
  if (job.status === "failed" || job.status === "cancelled") {
    return { ...state, status: "failed", error: jobFailure(job), updatedAt: job.updatedAt };
  }
  return state;
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

/** What every job on a restore point carries about the point. */
function pointPayload(point: RestorePointView) {
  return {
    restorePointId: point.id,
    engineRestorePointId: point.engineRestorePointId ?? point.id,
    policyId: point.policyId,
    completedAt: point.completedAt,
    // The repository that holds the point (ENGINE.md §3); absent only until the start-up data fix ran.
    ...(point.repository ? { repository: point.repository } : {}),
  };
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
    const job = queueJobInOp(op, {
      kind: "browse",
      principal: `bes:${point.engineId}`,
      accountId: point.accountId,
      orgId: point.orgId,
      priority: "high",
      payload: { ...pointPayload(point), hostId: point.hostId, path: normalized },
    }, now);
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
      accountId: point.accountId,
      orgId: point.orgId,
      action: "restore.browse",
      objectType: "restore_point",
      objectId: point.id,
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
  const job = queueJobInOp(op, {
    kind: "search",
    principal: `bes:${point.engineId}`,
    accountId: point.accountId,
    orgId: point.orgId,
    priority: "high",
    payload: {
      ...pointPayload(point),
      hostId: point.hostId,
      query: q,
      mode: /[*?[]/.test(q) ? "glob" : "name",
      maxMatches: MAX_SEARCH_MATCHES,
    },
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
  appendAudit(op, actor, {
    accountId: point.accountId,
    orgId: point.orgId,
    action: "restore.search",
    objectType: "restore_point",
    objectId: point.id,
    summary: `Searched restore point ${point.id} (${point.policyName}, ${
      point.hostName ?? "BES"
    }) for "${q}"`,
  }, now);
  if (!(await op.commit()).ok) throw new ConflictError("The search could not be queued; try again");
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

// ---------------------------------------------------------------------------------------------------
// Restores

const Id = z.string({ error: "is required" }).regex(ID_PATTERN, "must be an id");
const Overwrite = z.boolean({ error: "must be true or false" }).default(false);
const OptionalId = z.union([z.literal("").transform(() => undefined), Id]).optional();

/** A file-level restore: paths to restore, where, and whether to overwrite. */
export const FileRestoreInput = z.object({
  restorePointId: Id,
  paths: PathList,
  /** Defaults to the point's host. */
  targetHostId: OptionalId,
  targetPath: RestorePath,
  overwrite: Overwrite,
  /**
   * Where the data is read from: the storage target of a finished replica of the point (its replica copy,
   * on that target's BES); empty or the point's own target: the point's own repository.
   */
  sourceTargetId: OptionalId,
});
export type FileRestoreInput = z.input<typeof FileRestoreInput>;

/** An image restore: target host and path are required. */
export const ImageRestoreInput = z.object({
  restorePointId: Id,
  targetHostId: Id,
  targetPath: RestorePath,
  overwrite: Overwrite,
  /** As for a file restore: a finished replica's storage target, or empty for the point's own. */
  sourceTargetId: OptionalId,
});
export type ImageRestoreInput = z.input<typeof ImageRestoreInput>;

/** A bare-metal restore: network boot (pxe) or boot media (iso). */
export const BmrInput = z.object({
  restorePointId: Id,
  mode: z.enum(["pxe", "iso"], { error: "must be pxe or iso" }),
});
export type BmrInput = z.input<typeof BmrInput>;

export interface RestoreRequest {
  id: string;
  kind: "file" | "image" | "bmr";
  accountId: string;
  orgId: string | null;
  /** The orgs of the source and target hosts: reading the restore needs them in scope too. */
  hostOrgIds: string[];
  restorePointId: string;
  sourceHostId: string | null;
  targetHostId: string | null;
  targetPath: string | null;
  overwrite: boolean;
  /** File restores: the first paths (for display); `pathCount` counts them all. */
  paths: string[];
  pathCount: number;
  mode: "pxe" | "iso" | null;
  /** The storage target of the replica copy the restore reads (absent or null: the point's own repository). */
  sourceTargetId?: string | null;
  jobId: string;
  priority: "high" | "critical";
  status: "pending" | "running" | "success" | "warning" | "failed";
  progress: { percent: number; bytesTransferred: number } | null;
  result:
    | { files: number; bytes: number; errors: { path: string; message: string }[]; errorCount: number }
    | null;
  error: string | null;
  /** BMR only: when the one-time token expires, and when a BES redeemed it. */
  tokenExpiresAt: string | null;
  tokenUsedAt: string | null;
  createdBy: string;
  createdAt: string;
  updatedAt: string;
}

/** A stored BMR token (by hash; the token itself is shown once and never stored). */
interface BmrToken {
  tokenHash: string;
  restoreId: string;
  restorePointId: string;
  besId: string;
  accountId: string;
  orgId: string | null;
  mode: "pxe" | "iso";
  expiresAt: string;
  usedAt: string | null;
  createdAt: string;
}

/** Paths shown with a restore (its full list is in `restore_paths` chunks or the job payload). */
const DISPLAY_PATH_BUDGET = 8_000;
/** A path list this heavy or lighter travels inline in the job payload. */
const INLINE_PATH_BUDGET = 16_000;
/** Weight of one stored path chunk: below KV's 64 KiB per value even for two-byte strings. */
const CHUNK_PATH_BUDGET = 28_000;

function pathWeight(p: string): number {
  return p.length * 2 + 8;
}

/** Splits paths into chunks of at most `budget` weight each. */
function chunkPaths(paths: string[], budget: number): string[][] {
  return packByWeight(paths, pathWeight, budget);
}

/** The target host of a restore: same account as the point and inside the actor's scope, else not found. */
async function requireTargetHost(
  kv: Deno.Kv,
  actor: Actor,
  point: RestorePointView,
  hostId: string,
  known: Host | null = null,
): Promise<Host> {
  const host = known?.id === hostId ? known : (await kv.get<Host>(hostKey(hostId))).value;
  if (!host || host.accountId !== point.accountId || !inScope(actor, hostScope(host))) {
    throw new NotFoundError(`Target host ${hostId} not found`);
  }
  authorize(actor, "backup.restore", hostScope(host));
  return host;
}

function newRestore(
  actor: Actor,
  point: RestorePointView,
  fields: Pick<
    RestoreRequest,
    | "kind"
    | "targetHostId"
    | "targetPath"
    | "overwrite"
    | "paths"
    | "pathCount"
    | "mode"
    | "priority"
    | "tokenExpiresAt"
  >,
  ids: { id: string; jobId: string },
  now: Date,
  targetHost: Pick<Host, "orgId"> | null = null,
): RestoreRequest {
  const at = now.toISOString();
  return {
    id: ids.id,
    accountId: point.accountId,
    orgId: point.orgId,
    hostOrgIds: hostOrgsOf(point.hostOrgId, targetHost?.orgId),
    restorePointId: point.id,
    sourceHostId: point.hostId,
    ...fields,
    jobId: ids.jobId,
    status: "pending",
    progress: null,
    result: null,
    error: null,
    tokenUsedAt: null,
    createdBy: actor.label,
    createdAt: at,
    updatedAt: at,
  };
}

function writeRestore(op: Deno.AtomicOperation, restore: RestoreRequest): void {
  op.check({ key: restoreKey(restore.id), versionstamp: null })
    .set(restoreKey(restore.id), restore)
    .set(restoresByAccountKey(restore.accountId, restore.id), restore.id)
    .set(restoreByJobKey(restore.jobId), restore.id);
}

function describePoint(point: RestorePointView): string {
  return `restore point ${point.id} (${point.policyName}, ${point.hostName ?? "BES"}, ${point.completedAt})`;
}

/**
 * Queues a restore's job, writes the restore and its audit entry in one atomic operation (plus `extra`
 * writes, such as a BMR token); false when the commit lost a race.
 */
async function commitRestore(
  kv: Deno.Kv,
  actor: Actor,
  point: RestorePointView,
  restore: RestoreRequest,
  job: {
    kind: "restore_files" | "restore_image" | "bmr";
    principal: string;
    payload: Record<string, unknown>;
  },
  audit: { action: string; summary: string },
  now: Date,
  extra?: (op: Deno.AtomicOperation) => void,
): Promise<boolean> {
  const op = kv.atomic();
  queueJobInOp(op, {
    id: restore.jobId,
    kind: job.kind,
    principal: job.principal,
    accountId: point.accountId,
    orgId: point.orgId,
    priority: restore.priority,
    payload: { restoreId: restore.id, ...pointPayload(point), sourceHostId: point.hostId, ...job.payload },
  }, now);
  writeRestore(op, restore);
  extra?.(op);
  appendAudit(op, actor, {
    accountId: point.accountId,
    orgId: point.orgId,
    action: audit.action,
    objectType: "restore",
    objectId: restore.id,
    summary: audit.summary,
  }, now);
  return (await op.commit()).ok;
}

/** What an image or bare-metal restore job carries about the whole point. */
function imagePayload(point: RestorePointView) {
  return { chainId: point.chainId, sizeBytes: point.sizeBytes, fileCount: point.fileCount };
}

/** Where a restore reads its point: the point's own repository on its BES, or a replica copy on another target. */
interface RestoreSource {
  /** The BES whose data API serves the copy, as the payload's `bes`. */
  bes: ReturnType<typeof besEndpoint>;
  /** Payload fields: the copy's repository and, for a replica, `source` (data_access.ts reads it). */
  payload: Record<string, unknown>;
  /** The replica's target id, or null for the point's own repository. */
  targetId: string | null;
  /** For summaries: " from its replica on <target>" or "". */
  describe: string;
}

/**
 * The copy of `point` a restore reads (ENGINE.md §4: a replica shares its source's repository path and
 * keys). Empty or the point's own target: the point's repository on its BES. Otherwise the target must
 * hold a finished replication of the point (a replica rule's job that succeeded, even if the rule was
 * removed since) and still exist in the point's account; the restore then goes to that target's BES with
 * the replica repository and the rule's KEK source. Throws ValidationError naming `sourceTargetId`.
 */
async function restoreSource(
  kv: Deno.Kv,
  point: RestorePointView,
  engine: Engine | null,
  sourceTargetId: string | undefined,
  now: Date,
): Promise<RestoreSource> {
  const primary = {
    bes: besEndpoint(engine, point.engineId),
    payload: {},
    targetId: null,
    describe: "",
  };
  if (!sourceTargetId || sourceTargetId === point.repository?.target) return primary;
  const refuse = (message: string, field: string): never => {
    throw new ValidationError(message, { sourceTargetId: field });
  };
  const replication = (await listReplicationsOfPoint(kv, point.id, now)).find((r) =>
    r.targetId === sourceTargetId && r.status === "succeeded"
  );
  if (!replication) {
    refuse(
      `Restore point ${point.id} has no finished replica on target ${sourceTargetId}: choose its own copy or ` +
        "a replica listed under Replication",
      "No finished replica of this point on that target",
    );
  }
  const target = (await kv.get<StorageTarget>(targetKey(sourceTargetId))).value;
  if (!target || target.accountId !== point.accountId) {
    refuse(`The replica's target ${sourceTargetId} no longer exists`, "That target no longer exists");
  }
  if (!point.repository) {
    refuse(
      `Restore point ${point.id} does not record its repository, so its replica cannot be located`,
      "This point's replica cannot be located",
    );
  }
  const replicaEngine = (await kv.get<Engine>(engineKey(target!.besId))).value;
  const kekSource = replication!.kekSource ?? "account";
  return {
    bes: besEndpoint(replicaEngine, target!.besId),
    payload: {
      repository: { ...point.repository!, target: target!.id },
      source: {
        kind: "replica",
        targetId: target!.id,
        besId: target!.besId,
        kekSource,
        ruleId: replication!.ruleId,
      },
    },
    targetId: target!.id,
    describe: ` (read from its replica on ${target!.name})`,
  };
}

/**
 * Restores files and folders of a complete restore point: a `restore_files` job on the target host's
 * agent (default: the point's own host), priority high. The target host must be in the point's account
 * and in the actor's scope (else NotFoundError). Long path lists are stored in chunks the agent fetches
 * (`POST /api/agent/v1/jobs/{id}/paths`); short ones travel in the payload.
 */
export async function requestFileRestore(
  kv: Deno.Kv,
  actor: Actor,
  input: FileRestoreInput,
  now: Date,
): Promise<RestoreRequest> {
  const data = FileRestoreInput.parse(input);
  const loaded = await loadPoint(kv, actor, data.restorePointId);
  const { point } = loaded;
  requireComplete(point, "restored");
  const targetHostId = data.targetHostId ?? point.hostId;
  if (!targetHostId) {
    throw new ValidationError(
      "Choose a target host: this restore point was made on the BES and has no host",
      {
        targetHostId: "Is required for this restore point",
      },
    );
  }
  const host = await requireTargetHost(kv, actor, point, targetHostId, loaded.host);
  const source = await restoreSource(kv, point, loaded.engine, data.sourceTargetId, now);
  const ids = { id: newId(now), jobId: newId(now) };
  const inline = data.paths.reduce((sum, p) => sum + pathWeight(p), 0) <= INLINE_PATH_BUDGET;
  const chunks = inline ? [] : chunkPaths(data.paths, CHUNK_PATH_BUDGET);
  // Chunks first (several writes for a long list), then the restore and its job in one atomic write: a
  // crash in between leaves only unreferenced chunks, never a job without its paths.
  for (let i = 0; i < chunks.length; i += 10) {
    const op = kv.atomic();
    chunks.slice(i, i + 10).forEach((chunk, j) => op.set(restorePathsKey(ids.id, i + j), chunk));
    if (!(await op.commit()).ok) throw new Error("Could not store the path list");
  }
  const display = chunkPaths(data.paths, DISPLAY_PATH_BUDGET)[0].slice(0, 100);
  const restore = newRestore(
    actor,
    point,
    {
      kind: "file",
      targetHostId: host.id,
      targetPath: data.targetPath,
      overwrite: data.overwrite,
      paths: display,
      pathCount: data.paths.length,
      mode: null,
      priority: "high",
      tokenExpiresAt: null,
    },
    ids,
    now,
    host,
  );
  restore.sourceTargetId = source.targetId;
  const queued = await commitRestore(kv, actor, point, restore, {
    kind: "restore_files",
    principal: `agent:${host.id}`,
    payload: {
      ...source.payload,
      bes: source.bes,
      targetPath: data.targetPath,
      overwrite: data.overwrite,
      pathCount: data.paths.length,
      paths: inline ? data.paths : null,
      pathChunks: chunks.length,
    },
  }, {
    action: "restore.files",
    summary: `Requested a file restore of ${data.paths.length} path(s) from ${
      describePoint(point)
    }${source.describe} to ${host.hostname}:${data.targetPath}${
      data.overwrite ? ", overwriting existing files" : ""
    }`,
  }, now);
  if (!queued) {
    await deleteChunks(kv, ids.id, chunks.length);
    throw new ConflictError("The restore could not be queued; try again");
  }
  return restore;
}

async function deleteChunks(kv: Deno.Kv, restoreId: string, count: number): Promise<void> {
  for (let i = 0; i < count; i += 100) {
    const op = kv.atomic();
    for (let j = i; j < Math.min(count, i + 100); j++) op.delete(restorePathsKey(restoreId, j));
    await op.commit();
  }
}

/**
 * Restores the full image of a complete restore point of an image policy to a target host and path: a
 * `restore_image` job on the target host's agent, priority critical. Throws ValidationError for a point of
 * a file policy.
 */
export async function requestImageRestore(
  kv: Deno.Kv,
  actor: Actor,
  input: ImageRestoreInput,
  now: Date,
): Promise<RestoreRequest> {
  const data = ImageRestoreInput.parse(input);
  const loaded = await loadPoint(kv, actor, data.restorePointId);
  const { point } = loaded;
  if (point.backupType !== "image") {
    throw new ValidationError(
      `Image restore needs a restore point of an image policy; ${point.policyName} backs up files (use file restore)`,
      { restorePointId: "Not an image restore point" },
    );
  }
  requireComplete(point, "restored");
  const host = await requireTargetHost(kv, actor, point, data.targetHostId, loaded.host);
  const source = await restoreSource(kv, point, loaded.engine, data.sourceTargetId, now);
  const ids = { id: newId(now), jobId: newId(now) };
  const restore = newRestore(
    actor,
    point,
    {
      kind: "image",
      targetHostId: host.id,
      targetPath: data.targetPath,
      overwrite: data.overwrite,
      paths: [],
      pathCount: 0,
      mode: null,
      priority: "critical",
      tokenExpiresAt: null,
    },
    ids,
    now,
    host,
  );
  restore.sourceTargetId = source.targetId;
  const queued = await commitRestore(kv, actor, point, restore, {
    kind: "restore_image",
    principal: `agent:${host.id}`,
    payload: {
      ...imagePayload(point),
      ...source.payload,
      bes: source.bes,
      targetPath: data.targetPath,
      overwrite: data.overwrite,
    },
  }, {
    action: "restore.image",
    summary: `Requested an image restore of ${
      describePoint(point)
    }${source.describe} to ${host.hostname}:${data.targetPath}${
      data.overwrite ? ", overwriting existing data" : ""
    }`,
  }, now);
  if (!queued) throw new ConflictError("The restore could not be queued; try again");
  return restore;
}

/** Throws ValidationError naming the BES and its last heartbeat when the point's BES is not online at `now`. */
function requireEngineOnline(
  engine: Engine | null,
  point: Pick<RestorePointView, "engineId">,
  now: Date,
  what: string,
): asserts engine is Engine {
  if (engine && engineOnlineAt(engine, now)) return;
  const last = engine?.lastHeartbeatAt ? ` (last heartbeat ${engine.lastHeartbeatAt})` : "";
  throw new ValidationError(
    `BES ${engine?.name ?? point.engineId} is offline${last}; ${what} needs the restore point's BES online`,
    { restorePointId: "The BES of this restore point is offline" },
  );
}

/** The data API URL of a BES as its recovery agent reaches it (the URL it reported, else its address and port). */
export function besDataUrl(engine: Pick<Engine, "hostname" | "port" | "dataUrl">): string {
  return engine.dataUrl ?? `https://${engine.hostname}:${engine.port}`;
}

/** The recovery agent's command line for a BES (TOKEN and the disk left for the operator). */
export function recoveryCommand(engine: Pick<Engine, "hostname" | "port" | "dataUrl">): string {
  return `deno task agent recover --bes ${
    besDataUrl(engine)
  } --bes-cert bes-cert.pem --token TOKEN --disk /dev/sdX`;
}

/**
 * What the operator does with a BMR token, step by step (docs/engines.md "Bare-metal restore"): the reference
 * BES serves no PXE or ISO image — the machine boots any Linux live environment (from the operator's network
 * boot server, or live media) and runs the recovery agent there with the token and the BES's certificate.
 */
export function bmrInstructions(
  mode: "pxe" | "iso",
  engine: Pick<Engine, "name" | "hostname" | "port" | "dataUrl" | "pxeNetwork">,
  expiresAt: string,
): string[] {
  const boot = mode === "pxe"
    ? `Boot the machine over the network (PXE) into a Linux live environment from your network boot server on ` +
      `the PXE network of BES ${engine.name}${engine.pxeNetwork ? ` (${engine.pxeNetwork})` : ""}. The BES ` +
      "itself serves no boot image: any live Linux with network access to the BES works."
    : "Boot the machine from Linux live media: a live ISO written to a USB stick or attached as virtual media " +
      "(any distribution with network access to the BES; the BES itself serves no ISO).";
  return [
    boot,
    `In the live environment, install Deno 2 and the Cadres source (the version of the BES), and save the ` +
    `certificate of BES ${engine.name} as bes-cert.pem (shown with the token; on the BES it is ` +
    "<BES data dir>/tls/cert.pem).",
    "Find the disk to restore onto (lsblk, as root): everything on it is overwritten.",
    `From the Cadres folder run: ${recoveryCommand(engine)} — TOKEN is the one-time token (or set ` +
    "CADRES_BMR_TOKEN and leave out --token, so it is not in the process list), /dev/sdX the disk.",
    "The recovery agent redeems the token with the BES (over its data API, trusting only that certificate), " +
    "writes the image onto the disk verifying every chunk, and reports its progress on this restore; it exits 0 " +
    "when the disk is restored.",
    `The token works once and expires at ${expiresAt}; after that, start a new bare-metal restore.`,
  ];
}

/**
 * Bare-metal restore of a complete restore point: its BES must be online at `now` (heartbeat within 3
 * minutes) and, for pxe, have PXE enabled. Creates a one-time token (a random UUID, stored only as its
 * SHA-256, expiring 4 h after `now`) and a `bmr` job on the BES (critical; its payload carries the token's
 * hash, never the token). Returns the token once. Throws ValidationError when a precondition fails.
 */
export async function requestBmr(
  kv: Deno.Kv,
  actor: Actor,
  input: BmrInput,
  now: Date,
): Promise<
  {
    restore: RestoreRequest;
    token: string;
    expiresAt: string;
    instructions: string[];
    /** The recovery agent's command for this BES (TOKEN and the disk to fill in). */
    command: string;
    /** The BES's certificate (PEM) the recovery agent pins; null before the BES reported one. */
    besCertificate: string | null;
  }
> {
  const data = BmrInput.parse(input);
  const { point, engine } = await loadPoint(kv, actor, data.restorePointId);
  requireComplete(point, "used for a bare-metal restore");
  requireEngineOnline(engine, point, now, "a bare-metal restore");
  if (data.mode === "pxe" && !engine.pxeEnabled) {
    throw new ValidationError(
      `PXE boot is not enabled on BES ${engine.name}; enable it on the engine or boot from the ISO instead`,
      { mode: "PXE is not enabled on this BES" },
    );
  }
  const token = crypto.randomUUID();
  const tokenHash = sha256Hex(token);
  const expiresAt = new Date(now.getTime() + BMR_TOKEN_TTL_MS).toISOString();
  const ids = { id: newId(now), jobId: newId(now) };
  const restore = newRestore(
    actor,
    point,
    {
      kind: "bmr",
      targetHostId: null,
      targetPath: null,
      overwrite: true,
      paths: [],
      pathCount: 0,
      mode: data.mode,
      priority: "critical",
      tokenExpiresAt: expiresAt,
    },
    ids,
    now,
  );
  const record: BmrToken = {
    tokenHash,
    restoreId: restore.id,
    restorePointId: point.id,
    besId: engine.id,
    accountId: point.accountId,
    orgId: point.orgId,
    mode: data.mode,
    expiresAt,
    usedAt: null,
    createdAt: now.toISOString(),
  };
  const queued = await commitRestore(
    kv,
    actor,
    point,
    restore,
    {
      kind: "bmr",
      principal: `bes:${engine.id}`,
      payload: {
        ...imagePayload(point),
        mode: data.mode,
        pxeNetwork: data.mode === "pxe" ? engine.pxeNetwork : null,
        tokenId: tokenHash,
        tokenExpiresAt: expiresAt,
      },
    },
    {
      action: "restore.bmr",
      summary:
        `Requested a bare-metal restore (${data.mode}) of ${
          describePoint(point)
        } through BES ${engine.name}; ` +
        `one-time token expires ${expiresAt}`,
    },
    now,
    (op) => {
      // The explicit expiresAt decides; expireIn only collects the record some time after.
      op.check({ key: bmrTokenKey(tokenHash), versionstamp: null })
        .set(bmrTokenKey(tokenHash), record, { expireIn: BMR_TOKEN_TTL_MS + 86_400_000 });
    },
  );
  if (!queued) throw new ConflictError("The bare-metal restore could not be queued; try again");
  return {
    restore,
    token,
    expiresAt,
    instructions: bmrInstructions(data.mode, engine, expiresAt),
    command: recoveryCommand(engine),
    besCertificate: engine.certificate ?? null,
  };
}

/** A BMR token as sent: a UUID. */
export const BmrTokenInput = z.string({ error: "is required" }).trim().toLowerCase()
  .regex(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, "must be a BMR token (a UUID)");

/**
 * Redeems a BMR token for the BES `besId` exactly once (DESIGN.md invariant 7): the token must exist for
 * this BES (else NotFoundError), be unused and not past its expiry at `now` (else ConflictError). The
 * check and the write are one atomic operation on the token record, so of concurrent redeems one wins.
 */
export async function redeemBmrToken(
  kv: Deno.Kv,
  besId: string,
  token: string,
  now: Date,
): Promise<{ restoreId: string; restorePointId: string; mode: "pxe" | "iso" }> {
  const parsed = BmrTokenInput.safeParse(token);
  if (!parsed.success) throw new NotFoundError("Unknown BMR token");
  const key = bmrTokenKey(sha256Hex(parsed.data));
  type Redeemed = { restoreId: string; restorePointId: string; mode: "pxe" | "iso" };
  const attempt = async (): Promise<{ value: Redeemed } | null> => {
    const entry = await kv.get<BmrToken>(key);
    const record = entry.value;
    if (!record || record.besId !== besId) throw new NotFoundError("Unknown BMR token");
    if (record.usedAt) throw new ConflictError(`This BMR token was already used at ${record.usedAt}`);
    if (now.getTime() > Date.parse(record.expiresAt)) {
      throw new ConflictError(`This BMR token expired at ${record.expiresAt}`);
    }
    const [restoreEntry, pointEntry] = await kv.getMany<[RestoreRequest, RestorePoint]>([
      restoreKey(record.restoreId),
      restorePointKey(record.restorePointId),
    ]);
    const restore = restoreEntry.value;
    if (!restore) throw new NotFoundError("Unknown BMR token");
    // The token unlocks a restore that is still under way, of a point that still exists in full.
    if (restore.status === "failed" || restore.status === "success" || restore.status === "warning") {
      throw new ConflictError(
        `This bare-metal restore has already ended (${restore.status}); start a new one`,
      );
    }
    if (pointEntry.value?.status !== "complete") {
      throw new ConflictError(
        "The restore point of this bare-metal restore is no longer complete (expired or removed)",
      );
    }
    const engine = (await kv.get<Engine>(engineKey(besId))).value;
    const at = now.toISOString();
    const op = kv.atomic().check(entry, restoreEntry, pointEntry).set(key, { ...record, usedAt: at }, {
      expireIn: BMR_TOKEN_TTL_MS + 86_400_000,
    });
    op.set(restoreKey(record.restoreId), { ...restore, tokenUsedAt: at, updatedAt: at });
    appendAudit(op, engineActor({ id: besId, name: engine?.name ?? besId, accountId: record.accountId }), {
      accountId: record.accountId,
      orgId: record.orgId,
      action: "restore.bmr_redeem",
      objectType: "restore",
      objectId: record.restoreId,
      summary: `BES ${
        engine?.name ?? besId
      } redeemed the one-time token of bare-metal restore ${record.restoreId}`,
    }, now);
    if (!(await op.commit()).ok) return null;
    return {
      value: { restoreId: record.restoreId, restorePointId: record.restorePointId, mode: record.mode },
    };
  };
  return await withRetry(attempt, 5, "This BMR token is being redeemed concurrently");
}

/**
 * One chunk of a file restore's path list, for the agent that holds its job (payloads carry long lists
 * as `pathChunks` instead of `paths`). Throws NotFoundError for another principal's job or a missing chunk.
 */
export async function restorePathsChunk(
  kv: Deno.Kv,
  principal: string,
  jobId: string,
  chunk: number,
): Promise<{ chunk: number; chunks: number; paths: string[] }> {
  const job = await getJob(kv, jobId);
  if (!job || job.principal !== principal || job.kind !== "restore_files") {
    throw new NotFoundError("No such file restore job for this principal");
  }
  const chunks = Number(job.payload.pathChunks ?? 0);
  const restoreId = String(job.payload.restoreId ?? "");
  if (!Number.isInteger(chunk) || chunk < 0 || chunk >= chunks) {
    throw new NotFoundError(`No chunk ${chunk}: this job has ${chunks} path chunk(s)`);
  }
  const paths = (await kv.get<string[]>(restorePathsKey(restoreId, chunk))).value;
  if (!paths) throw new NotFoundError(`Chunk ${chunk} of the path list is missing`);
  return { chunk, chunks, paths };
}

function readResult(job: Job): NonNullable<RestoreRequest["result"]> {
  const output = (job.result?.output ?? {}) as Record<string, unknown>;
  const restored = (output.restored ?? {}) as Record<string, unknown>;
  const count = (v: unknown) => typeof v === "number" && Number.isFinite(v) && v >= 0 ? Math.floor(v) : null;
  const rawErrors = Array.isArray(output.errors)
    ? output.errors
    : Array.isArray(restored.errors)
    ? restored.errors
    : [];
  const errors = rawErrors.flatMap((e) => {
    const item = e as { path?: unknown; message?: unknown } | null;
    if (!item || typeof item.path !== "string") return [];
    return [{ path: item.path.slice(0, MAX_PATH_LENGTH), message: String(item.message ?? "").slice(0, 500) }];
  });
  return {
    files: count(output.files) ?? count(restored.files) ?? 0,
    bytes: count(output.bytes) ?? count(restored.bytes) ?? job.result?.bytesTransferred ?? 0,
    errors: errors.slice(0, MAX_RESULT_ERRORS),
    errorCount: Math.max(
      errors.length,
      count(output.errorCount) ?? 0,
      job.result?.lists?.errors?.total ?? 0,
    ),
  };
}

/**
 * A finished restore with the first errors its engine sent as the result's `errors` (and in parts),
 * when its output listed none: the first MAX_RESULT_ERRORS are kept with the restore, the rest counted.
 */
async function withPartErrors(
  kv: Deno.Kv,
  restore: RestoreRequest,
  job: Job | null,
): Promise<RestoreRequest> {
  const facts = job?.result?.lists?.errors;
  if (!job?.result || !facts?.kept || !restore.result || restore.result.errors.length) return restore;
  const attempt = job.result.partsAttempt ?? job.attempts;
  const errors: Array<{ path: string; message: string }> = [];
  for (const { part } of await listPartNumbers(kv, job.id, attempt, "errors", facts.parts)) {
    const items = await readResultPart<{ path: string; message: string }>(
      kv,
      job.id,
      attempt,
      "errors",
      part,
    );
    errors.push(...(items ?? []).slice(0, MAX_RESULT_ERRORS - errors.length));
    if (errors.length >= MAX_RESULT_ERRORS) break;
  }
  return { ...restore, result: { ...restore.result, errors } };
}

/** A restore as its job stands now: status and progress from the job, the result once it is recorded. */
function restoreWithJob(restore: RestoreRequest, job: Job | null, now: string): RestoreRequest {
  if (restore.status === "success" || restore.status === "warning" || restore.status === "failed") {
    return restore;
  }
  if (!job || job.id !== restore.jobId) return restore;
  if (job.result) {
    const result = readResult(job);
    return {
      ...restore,
      status: job.result.status,
      progress: {
        percent: job.result.status === "failed" ? job.progress?.percent ?? 0 : 100,
        bytesTransferred: job.result.bytesTransferred,
      },
      result,
      error: job.result.status === "success" ? null : resultError(job),
      updatedAt: now,
    };
  }
  if (job.status === "failed" || job.status === "cancelled") {
    return { ...restore, status: "failed", error: jobFailure(job), updatedAt: job.updatedAt };
  }
  if (job.status === "leased") {
    const progress = job.progress
      ? { percent: job.progress.percent, bytesTransferred: job.progress.bytesTransferred }
      : { percent: 0, bytesTransferred: 0 };
    return { ...restore, status: "running", progress };
  }
  return { ...restore, status: "pending", progress: null };
}

/** A restore, brought up to date with its job. Throws NotFoundError when missing or outside the scope. */
export async function getRestore(kv: Deno.Kv, actor: Actor, id: string): Promise<RestoreRequest> {
  requireIdShape(id, "Restore");
  const restore = (await kv.get<RestoreRequest>(restoreKey(id))).value;
  if (!restore || !inScope(actor, restore) || !hostsInScope(actor, restore)) {
    throw new NotFoundError(`Restore ${id} not found`);
  }
  authorize(actor, "backup.restore", restore);
  const job = await getJob(kv, restore.jobId);
  return await withPartErrors(kv, restoreWithJob(restore, job, restore.updatedAt), job);
}

/**
 * Restores of the actor's account in its scope, newest first, a page at a time (bounded scan). The
 * cursor is the id of the last restore of the previous page; another one is an InvalidCursorError.
 */
export async function listRestores(
  kv: Deno.Kv,
  actor: Actor,
  page: { cursor?: string; limit?: number } = {},
): Promise<{ values: RestoreRequest[]; cursor: string }> {
  authorize(actor, "backup.restore");
  const limit = Math.min(200, Math.max(1, page.limit ?? 50));
  if (!actor.accountId && actor.kind !== "system") return { values: [], cursor: "" };
  const prefix: Deno.KvKey = actor.accountId ? ["restores_by_account", actor.accountId] : ["restores"];
  const cursor = openIdCursor(page.cursor);
  const selector = cursor ? { prefix, end: [...prefix, cursor] } : { prefix };
  const found: RestoreRequest[] = [];
  let scanned = 0;
  let last = "";
  let done = false;
  const iter = kv.list(selector, { reverse: true, batchSize: 200 })[Symbol.asyncIterator]();
  // Index entries are read in batches no larger than what the page still needs, their restores in one
  // getMany per batch (the system's prefix holds the restores themselves).
  while (!done && found.length < limit && scanned < RESTORE_POINT_SCAN_LIMIT) {
    const want = Math.min(limit - found.length, RESTORE_POINT_SCAN_LIMIT - scanned);
    const batch: Deno.KvEntry<unknown>[] = [];
    while (batch.length < want) {
      const step = await iter.next();
      if (step.done) {
        done = true;
        break;
      }
      batch.push(step.value);
    }
    const ids = batch.flatMap((e) => typeof e.value === "string" ? [e.value] : []);
    const byId = new Map(
      (await getManyValues<RestoreRequest>(kv, ids.map(restoreKey))).map((r) => [r.id, r]),
    );
    for (const e of batch) {
      scanned++;
      last = String(e.key[e.key.length - 1]);
      const restore = typeof e.value === "string" ? byId.get(e.value) : e.value as RestoreRequest;
      if (restore && can(actor, "backup.restore", restore) && hostsInScope(actor, restore)) {
        found.push(restore);
      }
    }
  }
  const more = !done && !(await iter.next()).done;
  const jobs = new Map((await getJobs(kv, found.map((r) => r.jobId))).map((j) => [j.id, j]));
  return {
    values: found.map((r) => restoreWithJob(r, jobs.get(r.jobId) ?? null, r.updatedAt)),
    cursor: more ? last : "",
  };
}

/**
 * Applies a browse, search or restore job's recorded result to its state (called from runs.ts
 * `applyJobOutcome`). Idempotent: a state that is no longer pending, or belongs to another job, is left.
 */
export async function applyRestoreJobOutcome(kv: Deno.Kv, job: Job, now: Date): Promise<void> {
  if (!job.result) return;
  const at = now.toISOString();
  if (job.kind === "browse") {
    const ref = (await kv.get<{ restorePointId: string; path: string }>(browseByJobKey(job.id))).value;
    if (!ref) return;
    await update<BrowseState>(
      kv,
      browseKey(ref.restorePointId, ref.path),
      (s) => browseWithJob(kv, s, job, at, now),
      { expireIn: RESTORE_CACHE_TTL_MS },
    );
  } else if (job.kind === "search") {
    const id = (await kv.get<string>(searchByJobKey(job.id))).value;
    if (!id) return;
    await update<SearchState>(kv, searchKey(id), (s) => searchWithJob(kv, s, job, at, now), {
      expireIn: RESTORE_CACHE_TTL_MS,
    });
  } else if (job.kind === "restore_files" || job.kind === "restore_image" || job.kind === "bmr") {
    const id = (await kv.get<string>(restoreByJobKey(job.id))).value;
    if (!id) return;
    await update<RestoreRequest>(
      kv,
      restoreKey(id),
      (r) => withPartErrors(kv, restoreWithJob(r, job, at), job),
    );
  }
}

/**
 * Read, change and write one value with a check; does nothing when unchanged. Commit retry (retry.ts):
 * five lost races throw CommitConflictError (the result route answers 503 `busy`; the engine re-posts the
 * result), so a job's outcome is never dropped with its request left pending or running.
 */
async function update<T extends { status: string }>(
  kv: Deno.Kv,
  key: Deno.KvKey,
  change: (value: T) => T | Promise<T>,
  options?: { expireIn: number },
): Promise<void> {
  await withRetry(
    async () => {
      const entry = await kv.get<T>(key);
      if (!entry.value) return { value: undefined };
      const next = await change(entry.value);
      if (next === entry.value || next.status === "pending" || next.status === "running") {
        return {
          value: undefined,
        };
      }
      return (await kv.atomic().check(entry).set(key, next, options).commit()).ok
        ? { value: undefined }
        : null;
    },
    5,
    `${String(key[0])} ${String(key[key.length - 1])}: the job's outcome conflicted; post it again`,
  );
}
