/**
 * Restore points: the record a backup leaves (`RestorePoint`, keyed by `restorePointKey` in
 * keys/restore.ts), its id, the per-host index and its start-up data fix, and the reads pages and the API
 * make of it — lists in the actor's scope, one point with its policy, host and BES, its chain, a host's
 * latest point — plus the checks every job on a point shares (complete, BES online, payload fields).
 */
import { type DataFixResult, runDataFix } from "./data_fixes.ts";
import {
  firstBackupKey,
  restorePointKey,
  restorePointsByHostKey,
  restorePointsByHostPrefix,
  restorePointsByPolicyPrefix,
  restorePointsPrefix,
} from "./keys/restore.ts";
import { CursorField, openIdCursor } from "./cursor.ts";
import { NotFoundError, ValidationError } from "./errors.ts";
import { type Engine, engineKey, engineOnlineAt } from "./engines.ts";
import { getManyValues } from "./kv.ts";
import { idAt } from "./ids.ts";
import type { ResultStats } from "./job_queue.ts";
import type { Policy } from "./policies.ts";
import {
  policiesByAccountPrefix,
  policiesPrefix,
  policyKey,
  retiredPoliciesByAccountPrefix,
  retiredPoliciesPrefix,
  retiredPolicyKey,
} from "./keys/policies.ts";
import { type Host, hostKey, hostScope, requireHost } from "./hosts.ts";
import { type Actor, authorize, can, inScope, type ScopedObject } from "./rbac.ts";
import type { PointAnomalyMark } from "./anomalies.ts";
import type { Repository } from "./repositories.ts";
import { z } from "zod";
import type { RunKind } from "./runs.ts";
import { dataFixKey } from "./keys/data_fixes.ts";

/** Set once every restore point has its `restore_points_by_host` entry (points older than the index had none). */
const POINTS_BY_HOST_FIX_KEY = dataFixKey("restore_points_by_host_v1");
const FIRST_BACKUPS_FIX_KEY = dataFixKey("first_backups_v1");

/** What a backup leaves: one point of a host's (or the BES's) chain, at `restorePointKey(id)` (keys/restore.ts). */
export interface RestorePoint {
  id: string;
  /** The engine's own id of the point; `parentId` refers to the parent by this id. */
  engineRestorePointId?: string;
  engineId: string;
  policyId: string;
  hostId: string | null;
  runId: string;
  chainId: string;
  type: RunKind;
  parentId: string | null;
  sizeBytes: number;
  fileCount: number;
  completedAt: string;
  status: RestorePointStatus;
  verification: VerificationStatus;
  /**
   * Set when the point's host was decommissioned under a policy with Archive On Host Deactivation on
   * (archive.ts): retention keeps it until an operator expires it.
   */
  archivedAt?: string | null;
  /**
   * The repository the point was written to (repositories.ts): storage target, path, generation. Points
   * older than generations get it from the start-up data fix (`indexRestorePointsByTarget`).
   */
  repository?: Repository;
  /** What the engine measured writing the point (as its run's `stats`). */
  stats?: ResultStats | null;
  /**
   * The anomaly guard's mark (anomalies.ts): "suspect" on a flagged backup's point, "last_clean" on the host's
   * newest point judged normal before it.
   */
  anomaly?: PointAnomalyMark | null;
}

/**
 * A new restore point's id, dated by its completion (never later than `now`, `now` when unreadable): the
 * point indexes list by id, so Restore's "newest first" and a chain's order follow completion even when
 * an engine reports a backup late or two backups finish out of order.
 */
export function restorePointId(completedAt: string, now: Date): string {
  const completed = Date.parse(completedAt);
  return idAt(new Date(Number.isFinite(completed) ? Math.min(completed, now.getTime()) : now.getTime()));
}

/** A policy's restore points grouped by protected object (host id, or "bes" for BES-side points). */
export async function pointsByObject(kv: Deno.Kv, policyId: string): Promise<Map<string, RestorePoint[]>> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: restorePointsByPolicyPrefix(policyId) })) {
    keys.push(restorePointKey(e.value));
  }
  const groups = new Map<string, RestorePoint[]>();
  for (const p of await getManyValues<RestorePoint>(kv, keys)) {
    const key = p.hostId ?? "bes";
    groups.set(key, [...(groups.get(key) ?? []), p]);
  }
  return groups;
}

/**
 * The policy's restore points of one host (null: the BES's own), read through `restore_points_by_host`
 * — or, until that index's start-up backfill has completed, through all the policy's points.
 */
export async function pointsOfHost(
  kv: Deno.Kv,
  policyId: string,
  hostId: string | null,
): Promise<RestorePoint[]> {
  if (!(await kv.get(POINTS_BY_HOST_FIX_KEY)).value) {
    return (await pointsByObject(kv, policyId)).get(hostId ?? "bes") ?? [];
  }
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: restorePointsByHostPrefix(policyId, hostId) })) {
    keys.push(restorePointKey(e.value));
  }
  return await getManyValues<RestorePoint>(kv, keys);
}

/**
 * Data fix run on start (and after a results-DB restore, `force`): gives every restore point its
 * `restore_points_by_host` entry (points written before the index had none). Points are never deleted
 * and their policy and host never change, so a plain set is idempotent. Once complete a marker makes later
 * calls skip it (unless `force`); until then `pointsOfHost` reads all the policy's points instead.
 */
export async function indexRestorePointsByHost(
  kv: Deno.Kv,
  now: Date,
  options: { force?: boolean } = {},
): Promise<DataFixResult> {
  return await runDataFix(kv, POINTS_BY_HOST_FIX_KEY, now, options, async () => {
    let indexed = 0;
    let op = kv.atomic();
    let pending = 0;
    for await (const e of kv.list<RestorePoint>({ prefix: restorePointsPrefix() }, { batchSize: 500 })) {
      const point = e.value;
      if (!point?.policyId) continue;
      op.set(restorePointsByHostKey(point.policyId, point.hostId, point.id), point.id);
      indexed++;
      if (++pending === 500) {
        await op.commit();
        op = kv.atomic();
        pending = 0;
      }
    }
    if (pending) await op.commit();
    return indexed;
  });
}

export const RESTORE_POINT_STATUSES = ["complete", "running", "failed", "expired"] as const;

export type RestorePointStatus = (typeof RESTORE_POINT_STATUSES)[number];

export const VERIFICATION_STATUSES = ["passed", "failed", "partial", "pending"] as const;

export type VerificationStatus = (typeof VERIFICATION_STATUSES)[number];

/** Restore points one page of a list may read before it answers with a cursor. */
export const RESTORE_POINT_SCAN_LIMIT = 5000;

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

export const ID_PATTERN = /^[0-9A-Z]{26}$/;

const IdFilter = z.string().regex(ID_PATTERN).catch("");

/** Throws NotFoundError for an id that cannot exist (ids are ULIDs; a long one would overflow a KV key). */
export function requireIdShape(id: string, what: string): void {
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
export function hostOrgsOf(...orgIds: Array<string | null | undefined>): string[] {
  return [...new Set(orgIds.filter((id): id is string => Boolean(id)))];
}

/**
 * True when every host org a search or restore involves is in the actor's scope: its files are that
 * host's, whatever org its policy belongs to (the same rule as `requireRestorePoint`).
 */
export function hostsInScope(actor: Actor, object: { accountId: string; hostOrgIds?: string[] }): boolean {
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
    for await (const e of kv.list<string>({ prefix: retiredPoliciesByAccountPrefix(actor.accountId) })) {
      keys.push(retiredPolicyKey(e.value));
    }
    out.push(...await getManyValues<Policy>(kv, keys));
  } else if (actor.kind === "system") {
    for await (const e of kv.list<Policy>({ prefix: policiesPrefix() })) out.push(e.value);
    for await (const e of kv.list<Policy>({ prefix: retiredPoliciesPrefix() })) out.push(e.value);
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
export async function loadPoint(
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

export function requireComplete(point: RestorePointView, what: string): void {
  if (point.status !== "complete") {
    throw new ValidationError(`Only complete restore points can be ${what}; this one is ${point.status}`, {
      restorePointId: `The restore point is ${point.status}`,
    });
  }
}

/** The point's BES as a job payload sees it (where the agent fetches manifests and chunks). */
export function besEndpoint(engine: Engine | null, engineId: string) {
  return engine
    ? { id: engine.id, endpoint: `https://${engine.hostname}:${engine.port}`, ipAddress: engine.ipAddress }
    : { id: engineId, endpoint: null, ipAddress: null };
}

/** What every job on a restore point carries about the point. */
export function pointPayload(point: RestorePointView) {
  return {
    restorePointId: point.id,
    engineRestorePointId: point.engineRestorePointId ?? point.id,
    policyId: point.policyId,
    completedAt: point.completedAt,
    // The repository that holds the point (ENGINE.md §3); absent only until the start-up data fix ran.
    ...(point.repository ? { repository: point.repository } : {}),
  };
}

/** Throws ValidationError naming the BES and its last heartbeat when the point's BES is not online at `now`. */
export function requireEngineOnline(
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

/**
 * Data fix run on start (and after a results-DB restore, `force`): the "first backup" marker of every org
 * that has a restore point (points written before the marker existed). Until it has run,
 * `hasFirstBackupMarkers` says so and the checklist reads the policies' points instead.
 */
export async function indexFirstBackups(
  kv: Deno.Kv,
  now: Date,
  options: { force?: boolean } = {},
): Promise<DataFixResult> {
  return await runDataFix(kv, FIRST_BACKUPS_FIX_KEY, now, options, async () => {
    const policies = new Set<string>();
    const orgs = new Set<string>();
    for await (const e of kv.list<RestorePoint>({ prefix: restorePointsPrefix() }, { batchSize: 500 })) {
      const policyId = e.value?.policyId;
      if (!policyId || policies.has(policyId)) continue;
      policies.add(policyId);
      // The point's policy, or the deleted policy kept for its points.
      const [live, retired] = await kv.getMany<[Policy, Policy]>([
        policyKey(policyId),
        retiredPolicyKey(policyId),
      ]);
      const policy = live.value ?? retired.value;
      if (!policy) continue;
      const org = `${policy.accountId}/${policy.orgId ?? ""}`;
      if (orgs.has(org)) continue;
      orgs.add(org);
      await kv.set(firstBackupKey(policy.accountId, policy.orgId), true);
    }
    return orgs.size;
  });
}

/** Whether the first-backup markers can be trusted: `indexFirstBackups` has run. */
export async function hasFirstBackupMarkers(kv: Deno.Kv): Promise<boolean> {
  return (await kv.get(FIRST_BACKUPS_FIX_KEY)).versionstamp !== null;
}
