/**
 * Protected objects: what a backup covers (guide, "Protected Objects"). A native one is created when a
 * policy is assigned to a host, one per (host, policy), in the same atomic operation as the assignment
 * (see assignments.ts); platform sync adds one per vendor object (platforms.ts). A protected object
 * outlives its assignment: removing the host from the policy, or deleting the policy, marks it
 * `unprotected` and keeps it, because the restore points it was backed up into are kept for their
 * retention.
 */
import {
  hostCoverageKey,
  objectByDimensionKey,
  objectByNameKey,
  objectCountKey,
  objectRpoKey,
  objectsBreachedPrefix,
  objectsByDimensionPrefix,
  objectsByNamePrefix,
  objectsDueBound,
  protectedByAccountKey,
  protectedByHostKey,
  protectedByHostPrefix,
  protectedObjectKey,
  unprotectedHostsKey,
} from "./keys/protected.ts";
import { accountsPrefix } from "./keys/tenancy.ts";
import { assignmentsByPolicyPrefix } from "./keys/policies.ts";
import { z } from "zod";
import { raiseAlert, readOpenAlert, resolveAlert } from "./alerts.ts";
import {
  CursorField,
  CursorList,
  InvalidCursorError,
  openCursor,
  sealCursor,
  selectorBinding,
} from "./cursor.ts";
import { NotFoundError } from "./errors.ts";
import type { Host } from "./hosts.ts";
import { COUNT_DOWN, COUNT_UP, getManyValues } from "./kv.ts";
import { CommitConflictError, withRetry } from "./retry.ts";
import type { Policy } from "./policies.ts";
import { type Actor, inScope } from "./rbac.ts";
export {
  hostCoverageKey,
  objectCountKey,
  protectedByAccountKey,
  protectedByHostKey,
  protectedObjectKey,
  unprotectedHostsKey,
};

/** Object types of the guide's filter; native assignments create `fileset`, `physical` or `vm`. */
export const PROTECTED_TYPES = ["vm", "physical", "fileset", "cloud_resource", "nas"] as const;
export type ProtectedType = (typeof PROTECTED_TYPES)[number];
/** The last backup's outcome; `never` until a first backup reports. */
export const LAST_BACKUP_STATUSES = ["success", "failed", "warning", "never"] as const;
export type LastBackupStatus = (typeof LAST_BACKUP_STATUSES)[number];
/**
 * Mirrors the state of the assignment that protects the object; `unprotected` once that assignment
 * is gone. Only `active` objects are expected to get new backups (and can breach their RPO).
 */
export const PROTECTION_STATES = ["active", "paused", "archived", "unprotected"] as const;
export type ProtectionState = (typeof PROTECTION_STATES)[number];

/**
 * Where an object's backups come from: a BES of ours (native), or a third-party platform whose sync
 * imported it (domain/platforms.ts). A platform object has no managed host: its `hostId` is the
 * synthetic `platform:<platformId>` and it never counts in host coverage.
 */
export type ProtectedSource =
  | { kind: "bes"; besId: string }
  | {
    kind: "platform";
    platformId: string;
    platformType: string;
    /** The vendor's id of the object. */
    vendorObjectId: string;
    /** The vendor's type of the object, as the vendor names it. */
    vendorType: string;
  };

/** Anything covered by backup: native ones one per (host, policy), platform ones one per vendor object. */
export interface ProtectedObject {
  id: string;
  accountId: string;
  /** The host's org. */
  orgId: string;
  hostId: string;
  policyId: string;
  /** The hostname at the last (re)assignment. */
  name: string;
  type: ProtectedType;
  source: ProtectedSource;
  /** Platform objects: the ids of the platform jobs that protect it (`policyId` is the first one). */
  platformJobIds?: string[];
  /** Copied from the policy at the last (re)assignment. */
  rpoHours: number;
  lastBackupAt: string | null;
  lastBackupStatus: LastBackupStatus;
  /** End of the last successful backup (success or warning: both leave a restore point). */
  lastSuccessAt?: string | null;
  /** The restore point of the last successful backup (the dashboard's deep link into Restore). */
  lastRestorePointId?: string | null;
  /** When the object last became `active`; the RPO clock starts here until a first backup succeeds. */
  activeSince?: string;
  /**
   * Set by the RPO sweep (`sweepRpoBreaches`) when the object passed its RPO, cleared by the next
   * successful backup. Whether an object is in breach at `now` is `isRpoBreached(o, now)`; this flag
   * only decides which index (due or breached) holds the object, so the dashboard can count breaches
   * from a counter plus the few objects that fell due since the last sweep.
   */
  breached?: boolean;
  protection: ProtectionState;
  createdAt: string;
  updatedAt: string;
}

/** Every index key of a protected object (create and delete touch exactly these). */
export function protectedIndexKeys(o: Pick<ProtectedObject, "id" | "accountId" | "hostId" | "policyId">) {
  return [protectedByHostKey(o.hostId, o.policyId), protectedByAccountKey(o.accountId, o.id)] as const;
}

const HYPERVISOR_GUEST = /\b(vmware|kvm|qemu|hyper-v|hyperv|virtualbox|xen|proxmox)\b/i;

/**
 * The object type of a host under a policy: `fileset` for file policies; for image policies `vm` when
 * the agent's os string names a hypervisor (e.g. "Ubuntu 24.04 (KVM guest)", "Windows Server 2022 on
 * VMware", "Hyper-V"), otherwise `physical`. The agent protocol has no dedicated field for this, so
 * the os string is the only hint; an unrecognised virtual machine shows as `physical`.
 */
export function protectedTypeFor(backupType: Policy["backupType"], os: string): ProtectedType {
  if (backupType !== "image") return "fileset";
  return HYPERVISOR_GUEST.test(os) ? "vm" : "physical";
}

function objectScope(o: Pick<ProtectedObject, "accountId" | "orgId">) {
  return { accountId: o.accountId, orgId: o.orgId };
}

/** The protected object, or null; no scope check. */
export async function getProtectedObject(kv: Deno.Kv, id: string): Promise<ProtectedObject | null> {
  return (await kv.get<ProtectedObject>(protectedObjectKey(id))).value;
}

/** Returns the protected object if the actor may see it. Throws NotFoundError otherwise. */
export async function requireProtectedObject(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
): Promise<ProtectedObject> {
  const o = await getProtectedObject(kv, id);
  if (!o || !inScope(actor, objectScope(o))) throw new NotFoundError(`Protected object ${id} not found`);
  return o;
}

// ---------------------------------------------------------------------------------------------------
// RPO

const HOUR_MS = 3_600_000;

/**
 * When the object's RPO runs out (ms since epoch): the last successful backup (or, before the first
 * one, the moment it became active) plus its RPO. Null when the object is not `active`: paused,
 * archived and unprotected objects are not expected to get backups and never breach.
 */
export function rpoDueAt(o: ProtectedObject): number | null {
  if (o.protection !== "active") return null;
  const since = o.lastSuccessAt ?? o.activeSince ?? o.createdAt;
  return Date.parse(since) + o.rpoHours * HOUR_MS;
}

/** The guide's rule: in breach when now − last successful backup > RPO (strictly). */
export function isRpoBreached(o: ProtectedObject, now: Date): boolean {
  const due = rpoDueAt(o);
  return due !== null && now.getTime() > due;
}

/** How long the object has been past its RPO at `now` (0 when it is not in breach). */
export function breachDurationMs(o: ProtectedObject, now: Date): number {
  const due = rpoDueAt(o);
  return due === null ? 0 : Math.max(0, now.getTime() - due);
}

// ---------------------------------------------------------------------------------------------------
// Indexes and counters. Every write of a protected object goes through `writeProtected`, which moves
// its index entries and adjusts the dashboard counters from the object before and after, in the
// caller's atomic operation: the counters can never drift from the objects.

/** Dashboard counters of an org's objects: active ones, active ones whose last backup failed, swept breaches. */
export type ObjectMetric = "protected" | "at_risk" | "breached";

export interface HostCoverage {
  accountId: string;
  orgId: string;
  active: number;
  /** The host was decommissioned (archive.ts): it is no longer a managed host missing its backups. */
  decommissioned?: boolean;
}

/** Whether the org's unprotected-hosts counter counts a host with this coverage. */
function countsUnprotected(c: HostCoverage): boolean {
  return !c.decommissioned && c.active === 0;
}

/**
 * Adds to `op`: replaces the host's coverage (`coverage`, read before, is checked) with `next`, and
 * moves the org's unprotected-hosts counter when the host starts or stops counting.
 */
function writeCoverage(
  op: Deno.AtomicOperation,
  coverage: Deno.KvEntryMaybe<HostCoverage>,
  next: HostCoverage,
): void {
  const value: HostCoverage = { accountId: next.accountId, orgId: next.orgId, active: next.active };
  if (next.decommissioned) value.decommissioned = true;
  op.check(coverage).set(coverage.key, value);
  // A host without a coverage entry was never counted (enrolled before the counters existed).
  if (!coverage.value) return;
  const delta = Number(countsUnprotected(value)) - Number(countsUnprotected(coverage.value));
  if (delta !== 0) op.sum(unprotectedHostsKey(next.accountId, next.orgId), delta > 0 ? COUNT_UP : COUNT_DOWN);
}

/** The filter dimensions with an index of their own (each sorted by name). */
export type ObjectDimension = "org" | "type" | "host" | "src" | "status" | "prot";

/** The source filter's value of an object: `bes:<engine id>` or `platform:<platform id>`. */
export function sourceKey(o: Pick<ProtectedObject, "source">): string {
  return o.source.kind === "bes" ? `bes:${o.source.besId}` : `platform:${o.source.platformId}`;
}

function dimensionValues(o: ProtectedObject): Record<ObjectDimension, string> {
  return {
    org: o.orgId,
    type: o.type,
    host: o.hostId,
    src: sourceKey(o),
    status: o.lastBackupStatus,
    prot: o.protection,
  };
}

function nameKey(o: Pick<ProtectedObject, "name">): string {
  return o.name.toLowerCase();
}

/** Every secondary index entry of an object (key → value, the value is the object's org for scope checks). */
function indexEntries(o: ProtectedObject): Map<string, Deno.KvKey> {
  const out = new Map<string, Deno.KvKey>();
  const add = (key: Deno.KvKey) => out.set(JSON.stringify(key), key);
  const name = nameKey(o);
  add(objectByNameKey(o.accountId, name, o.id));
  for (const [dim, value] of Object.entries(dimensionValues(o))) {
    add(objectByDimensionKey(o.accountId, dim, value, name, o.id));
  }
  const due = rpoDueAt(o);
  if (due !== null) {
    add(objectRpoKey(o.breached === true, o.accountId, new Date(due).toISOString(), o.id));
  }
  return out;
}

function metricsOf(o: ProtectedObject | null): Record<ObjectMetric, number> {
  const active = o?.protection === "active";
  return {
    protected: active ? 1 : 0,
    at_risk: active && o?.lastBackupStatus === "failed" ? 1 : 0,
    breached: active && o?.breached ? 1 : 0,
  };
}

/**
 * Adds to `op`: writes `after` (whose previous value was `before`, null for a new object), moves its
 * index entries and adjusts the counters. When the object becomes active or stops being active,
 * `coverage` (the host's entry, read before) is required: it is checked and updated, and the org's
 * unprotected-hosts counter follows the host's 0 ↔ 1 transitions. `decommissioned` (with `coverage`)
 * marks the host decommissioned or not, which takes it out of that counter or puts it back.
 */
export function writeProtected(
  op: Deno.AtomicOperation,
  before: ProtectedObject | null,
  after: ProtectedObject,
  coverage?: Deno.KvEntryMaybe<HostCoverage>,
  options: { decommissioned?: boolean } = {},
): void {
  const delta = writeObject(op, before, after);
  // Platform objects have no managed host: host coverage and the unprotected-hosts counter ignore them.
  if (after.source.kind === "platform") return;
  moveCoverage(op, coverage, after, delta, options.decommissioned);
}

/**
 * Adds to `op`: moves the host's coverage by `delta` active objects and, when `decommissioned` is given,
 * sets its decommissioned mark — nothing when neither changes. `coverage` (the host's entry, read
 * before) is required once something changes.
 */
function moveCoverage(
  op: Deno.AtomicOperation,
  coverage: Deno.KvEntryMaybe<HostCoverage> | undefined,
  host: Pick<Host, "accountId" | "orgId">,
  delta: number,
  decommissioned: boolean | undefined,
): void {
  const flagChange = decommissioned !== undefined &&
    Boolean(coverage?.value?.decommissioned) !== decommissioned;
  if (delta === 0 && !flagChange) return;
  if (!coverage) {
    throw new Error("writeProtected: the host's coverage entry is required when activity changes");
  }
  writeCoverage(op, coverage, {
    accountId: host.accountId,
    orgId: host.orgId,
    active: Math.max(0, (coverage.value?.active ?? 0) + delta),
    decommissioned: decommissioned ?? coverage.value?.decommissioned,
  });
}

/**
 * Adds to `op`: writes `after` with its index entries and object counters (not the host's coverage).
 * Returns how the host's count of active objects changes: +1, −1 or 0.
 */
function writeObject(
  op: Deno.AtomicOperation,
  before: ProtectedObject | null,
  after: ProtectedObject,
): number {
  op.set(protectedObjectKey(after.id), after);
  const old = before ? indexEntries(before) : new Map<string, Deno.KvKey>();
  const next = indexEntries(after);
  for (const [id, key] of old) if (!next.has(id)) op.delete(key);
  for (const key of next.values()) op.set(key, after.orgId);
  const [a, b] = [metricsOf(before), metricsOf(after)];
  for (const metric of ["protected", "at_risk", "breached"] as const) {
    const delta = b[metric] - a[metric];
    if (delta !== 0) {
      op.sum(objectCountKey(after.accountId, after.orgId, metric), delta > 0 ? COUNT_UP : COUNT_DOWN);
    }
  }
  return b.protected - a.protected;
}

/**
 * Adds to `op`: sets the protection of several objects of ONE host (each read by `readProtectedFor`)
 * and writes the host's coverage once — two writes of one object each would race on it — marking the
 * host decommissioned or not when `decommissioned` is given. `coverage` is the host's entry.
 */
export function setHostProtection(
  op: Deno.AtomicOperation,
  host: Pick<Host, "accountId" | "orgId">,
  coverage: Deno.KvEntryMaybe<HostCoverage>,
  objects: ProtectedEntry[],
  protection: ProtectionState,
  now: Date,
  options: { decommissioned?: boolean } = {},
): void {
  const at = now.toISOString();
  let delta = 0;
  for (const current of objects) {
    op.check(current.pointer);
    const existing = current.entry?.value;
    if (!current.entry || !existing) continue;
    op.check(current.entry);
    if (existing.source.kind === "platform" || existing.protection === protection) continue;
    delta += writeObject(op, existing, {
      ...existing,
      protection,
      breached: false,
      activeSince: protection === "active" ? at : existing.activeSince,
      updatedAt: at,
    });
  }
  moveCoverage(op, coverage, host, delta, options.decommissioned);
}

/**
 * Adds to `op`: deletes a platform object with its index entries and takes it out of the counters
 * (its platform was deleted). Native objects are never deleted: they become `unprotected`.
 */
export function deleteProtected(op: Deno.AtomicOperation, before: ProtectedObject): void {
  if (before.source.kind !== "platform") {
    throw new Error("deleteProtected: only platform objects are deleted");
  }
  op.delete(protectedObjectKey(before.id));
  for (const key of indexEntries(before).values()) op.delete(key);
  const metrics = metricsOf(before);
  for (const metric of ["protected", "at_risk", "breached"] as const) {
    if (metrics[metric]) op.sum(objectCountKey(before.accountId, before.orgId, metric), COUNT_DOWN);
  }
}

/** Adds to `op`: counts a newly enrolled host as unprotected (it has no protected object yet). */
export function countNewHost(op: Deno.AtomicOperation, host: Pick<Host, "id" | "accountId" | "orgId">): void {
  op.check({ key: hostCoverageKey(host.id), versionstamp: null })
    .set(hostCoverageKey(host.id), { accountId: host.accountId, orgId: host.orgId, active: 0 })
    .sum(unprotectedHostsKey(host.accountId, host.orgId), COUNT_UP);
}

// ---------------------------------------------------------------------------------------------------
// Writers

/** What `protectForAssignment` and `setProtection` need: the pointer, the object and the host's coverage. */
export interface ProtectedEntry {
  pointer: Deno.KvEntryMaybe<string>;
  entry: Deno.KvEntryMaybe<ProtectedObject> | null;
  coverage: Deno.KvEntryMaybe<HostCoverage>;
}

/** Reads the protected object of (host, policy) for a later atomic write. */
export async function readProtectedFor(
  kv: Deno.Kv,
  hostId: string,
  policyId: string,
): Promise<ProtectedEntry> {
  const [pointer, coverage] = await kv.getMany<[string, HostCoverage]>([
    protectedByHostKey(hostId, policyId),
    hostCoverageKey(hostId),
  ]);
  const entry = pointer.value ? await kv.get<ProtectedObject>(protectedObjectKey(pointer.value)) : null;
  return { pointer, entry, coverage };
}

/**
 * Adds to `op`: creates the protected object of (host, policy), or makes the existing one `active`
 * again with the current hostname, type, BES and RPO. Checks the versionstamps read by
 * `readProtectedFor`, so a concurrent creation makes `op` fail instead of duplicating. Returns it.
 */
export function protectForAssignment(
  op: Deno.AtomicOperation,
  current: ProtectedEntry,
  policy: Pick<Policy, "id" | "besId" | "backupType" | "rpoHours">,
  host: Pick<Host, "id" | "accountId" | "orgId" | "hostname" | "os">,
  options: { id: string; now: Date; reactivateHost?: boolean },
): ProtectedObject {
  const hostFlag = options.reactivateHost ? { decommissioned: false } : {};
  const at = options.now.toISOString();
  const details = {
    name: host.hostname,
    type: protectedTypeFor(policy.backupType, host.os),
    source: { kind: "bes" as const, besId: policy.besId },
    rpoHours: policy.rpoHours,
    protection: "active" as const,
    updatedAt: at,
  };
  op.check(current.pointer);
  const existing = current.entry?.value;
  if (current.entry && existing) {
    op.check(current.entry);
    const next: ProtectedObject = {
      ...existing,
      ...details,
      activeSince: existing.protection === "active" ? existing.activeSince ?? existing.createdAt : at,
      breached: existing.protection === "active" ? existing.breached ?? false : false,
    };
    writeProtected(op, existing, next, current.coverage, hostFlag);
    return next;
  }
  const created: ProtectedObject = {
    id: options.id,
    accountId: host.accountId,
    orgId: host.orgId,
    hostId: host.id,
    policyId: policy.id,
    ...details,
    lastBackupAt: null,
    lastBackupStatus: "never",
    lastSuccessAt: null,
    lastRestorePointId: null,
    activeSince: at,
    breached: false,
    createdAt: at,
  };
  op.check({ key: protectedObjectKey(created.id), versionstamp: null });
  writeProtected(op, null, created, current.coverage, hostFlag);
  for (const key of protectedIndexKeys(created)) op.set(key, created.id);
  return created;
}

/**
 * Adds to `op`: sets the protection state of the object read by `readProtectedFor` (no-op when there
 * is none, or when it already has that state). `reactivateHost` also takes the host's decommissioned
 * mark off its coverage. Returns the object after the change, or null.
 */
export function setProtection(
  op: Deno.AtomicOperation,
  current: ProtectedEntry,
  protection: ProtectionState,
  now: Date,
  options: { reactivateHost?: boolean } = {},
): ProtectedObject | null {
  op.check(current.pointer);
  const existing = current.entry?.value;
  if (!current.entry || !existing) return null;
  op.check(current.entry);
  if (existing.protection === protection) {
    if (options.reactivateHost) {
      writeProtected(op, existing, existing, current.coverage, { decommissioned: false });
    }
    return existing;
  }
  const at = now.toISOString();
  const next: ProtectedObject = {
    ...existing,
    protection,
    breached: false,
    activeSince: protection === "active" ? at : existing.activeSince,
    updatedAt: at,
  };
  writeProtected(
    op,
    existing,
    next,
    current.coverage,
    options.reactivateHost ? { decommissioned: false } : {},
  );
  return next;
}

/** A finished backup of a protected object, as `recordBackupOutcome` applies it. */
export interface BackupOutcome {
  status: "success" | "warning" | "failed";
  endedAt: string;
  restorePointId: string | null;
}

/**
 * The object after a finished backup: last backup time and status; on success or warning also the
 * last successful backup and its restore point, which restarts the RPO clock (and ends a breach when
 * the new due time is after `now`). Results can arrive out of order: one older than the last backup
 * recorded leaves the last backup as it is, but a success still counts when it is newer than the
 * last success (a failure that ended later does not undo it). Returns null when nothing changes.
 */
export function afterBackup(o: ProtectedObject, outcome: BackupOutcome, now: Date): ProtectedObject | null {
  const ended = Date.parse(outcome.endedAt);
  const ok = outcome.status !== "failed";
  const latest = !o.lastBackupAt || Date.parse(o.lastBackupAt) <= ended;
  const latestSuccess = ok && (!o.lastSuccessAt || Date.parse(o.lastSuccessAt) <= ended);
  if (!latest && !latestSuccess) return null;
  const next: ProtectedObject = { ...o, updatedAt: now.toISOString() };
  if (latest) {
    next.lastBackupAt = outcome.endedAt;
    next.lastBackupStatus = outcome.status;
  }
  if (latestSuccess) {
    next.lastSuccessAt = outcome.endedAt;
    if (outcome.restorePointId) next.lastRestorePointId = outcome.restorePointId;
  }
  if (next.breached && !isRpoBreached(next, now)) next.breached = false;
  return next;
}

/** The protected objects of a host the actor may see (one per policy it was ever assigned to). */
export async function listProtectedByHost(
  kv: Deno.Kv,
  actor: Actor,
  hostId: string,
): Promise<ProtectedObject[]> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: protectedByHostPrefix(hostId) })) {
    keys.push(protectedObjectKey(e.value));
  }
  return (await getManyValues<ProtectedObject>(kv, keys)).filter((o) => inScope(actor, objectScope(o)));
}

// ---------------------------------------------------------------------------------------------------
// The list

/** Filters of the protected objects list (the guide's); every field falls back to its default. */
export const ProtectedFilter = z.object({
  /** Substring of the object name or hostname, case-insensitive. */
  q: z.string().trim().max(200).catch(""),
  orgId: z.string().max(40).catch(""),
  type: z.enum(["", ...PROTECTED_TYPES]).catch(""),
  hostId: z.string().max(40).catch(""),
  /** "bes:<engine id>" or "platform:<platform id>". */
  source: z.string().max(60).regex(/^$|^(bes|platform):[\w-]+$/).catch(""),
  /** Kept for older links: the same as source=bes:<id>. */
  besId: z.string().max(40).catch(""),
  lastBackupStatus: z.enum(["", ...LAST_BACKUP_STATUSES]).catch(""),
  protection: z.enum(["", ...PROTECTION_STATES]).catch(""),
  rpoBreach: z.enum(["", "true", "false"]).catch(""),
  cursor: CursorField,
  limit: z.coerce.number().int().min(1).max(200).catch(50),
});
export type ProtectedFilter = z.infer<typeof ProtectedFilter>;

/** Index entries read at most per page; a sparse filter returns fewer rows and a cursor to go on. */
export const PROTECTED_SCAN_LIMIT = 5000;

export interface ProtectedPage {
  values: ProtectedObject[];
  /** Empty when there is nothing more. */
  cursor: string;
  /** True when the page stopped at PROTECTED_SCAN_LIMIT before it was full. */
  partial: boolean;
}

function matches(o: ProtectedObject, f: ProtectedFilter, now: Date): boolean {
  const needle = f.q.toLowerCase();
  const source = f.source || (f.besId ? `bes:${f.besId}` : "");
  return (!f.orgId || o.orgId === f.orgId) &&
    (!f.type || o.type === f.type) &&
    (!f.hostId || o.hostId === f.hostId) &&
    (!source || sourceKey(o) === source) &&
    (!f.lastBackupStatus || o.lastBackupStatus === f.lastBackupStatus) &&
    (!f.protection || o.protection === f.protection) &&
    (!f.rpoBreach || isRpoBreached(o, now) === (f.rpoBreach === "true")) &&
    (!needle || o.name.toLowerCase().includes(needle));
}

interface Scan {
  /** The index prefixes to walk, one after the other. */
  ranges: { prefix: Deno.KvKey; end?: Deno.KvKey }[];
  /** Position of the lower-cased name in the index key, when the key has one (q filters keys only). */
  namePos: number | null;
}

/** Picks the index that narrows the list most: breach, host, status, type, org, protection, source, name. */
function planScan(accountId: string, f: ProtectedFilter, now: Date): Scan {
  if (f.rpoBreach === "true") {
    return {
      ranges: [
        { prefix: objectsBreachedPrefix(accountId) },
        { prefix: objectsDueBound(accountId), end: objectsDueBound(accountId, now.toISOString()) },
      ],
      namePos: null,
    };
  }
  const source = f.source || (f.besId ? `bes:${f.besId}` : "");
  const dims: [ObjectDimension, string][] = [
    ["host", f.hostId],
    ["status", f.lastBackupStatus],
    ["type", f.type],
    ["org", f.orgId],
    ["prot", f.protection],
    ["src", source],
  ];
  const pick = dims.find(([, v]) => v);
  if (pick) {
    return { ranges: [{ prefix: objectsByDimensionPrefix(accountId, pick[0], pick[1]) }], namePos: 4 };
  }
  return { ranges: [{ prefix: objectsByNamePrefix(accountId) }], namePos: 2 };
}

const ProtectedPosition = z.object({ r: z.number().int().min(0), c: z.string() });

/** Where a protected-objects cursor resumes: the range walked and the KV position in it. */
function openProtectedCursor(
  binding: string,
  cursor: string,
  ranges: number,
): { range: number; position: string } {
  const opened = openCursor(binding, cursor);
  if (!opened) return { range: 0, position: "" };
  let parsed: z.infer<typeof ProtectedPosition>;
  try {
    parsed = ProtectedPosition.parse(JSON.parse(opened));
  } catch {
    throw new InvalidCursorError();
  }
  if (parsed.r >= ranges) throw new InvalidCursorError();
  return { range: parsed.r, position: parsed.c };
}

/**
 * Protected objects of the actor's account inside its org scope, filtered, by name — or, with
 * rpoBreach=true, longest breach first. Walks one index (see `planScan`), checks scope and the name
 * from the index entry, then reads the candidates and applies every filter; RPO breach is evaluated at
 * `now`. Reads at most PROTECTED_SCAN_LIMIT index entries per page. Throws InvalidCursorError for a cursor this list did not hand out.
 */
export async function listProtectedObjects(
  kv: Deno.Kv,
  actor: Actor,
  filter: Partial<z.input<typeof ProtectedFilter>>,
  now: Date,
): Promise<ProtectedPage> {
  const f = ProtectedFilter.parse(filter);
  if (!actor.accountId) return { values: [], cursor: "", partial: false };
  const plan = planScan(actor.accountId, f, now);
  // The cursor is bound to the indexes walked (not to a range's end: the due range ends at `now`).
  const binding = plan.ranges.map((r) => selectorBinding({ prefix: r.prefix })).join(" ");
  const start = openProtectedCursor(binding, f.cursor, plan.ranges.length);
  const needle = f.q.toLowerCase();
  const values: ProtectedObject[] = [];
  let scanned = 0;
  for (let r = start.range; r < plan.ranges.length; r++) {
    const range = plan.ranges[r];
    const selector = range.end ? { start: range.prefix, end: range.end } : { prefix: range.prefix };
    const iter = new CursorList<string>(kv, selector, r === start.range ? start.position : "", {
      batchSize: 500,
    });
    let batch: Deno.KvKey[] = [];
    const flush = async () => {
      for (const o of await getManyValues<ProtectedObject>(kv, batch)) if (matches(o, f, now)) values.push(o);
      batch = [];
    };
    for await (const e of iter) {
      scanned++;
      const scoped = inScope(actor, { accountId: actor.accountId, orgId: e.value });
      const named = plan.namePos === null || !needle || String(e.key[plan.namePos]).includes(needle);
      if (scoped && named) batch.push(protectedObjectKey(String(e.key[e.key.length - 1])));
      // Never read more candidates than the page still needs: the cursor points after the last key
      // read, so a row beyond the limit would be skipped by the next page.
      if (batch.length >= Math.min(10, f.limit - values.length)) await flush();
      if (values.length >= f.limit || scanned >= PROTECTED_SCAN_LIMIT) {
        await flush();
        return {
          values,
          cursor: sealCursor(binding, JSON.stringify({ r, c: iter.position })),
          partial: values.length < f.limit,
        };
      }
    }
    await flush();
  }
  return { values, cursor: "", partial: false };
}

// ---------------------------------------------------------------------------------------------------
// RPO sweep

/**
 * The minute RPO sweep: every active object whose RPO ran out by `now` moves from the due index to the
 * breached one (the breached counter +1) and gets an open `rpo_breach` alert (critical), in one atomic
 * operation per object. Reads only the objects that fell due since the last sweep. Idempotent.
 */
export async function sweepRpoBreaches(kv: Deno.Kv, now: Date): Promise<{ breached: number }> {
  let breached = 0;
  const accounts: string[] = [];
  for await (const e of kv.list({ prefix: accountsPrefix() })) accounts.push(String(e.key[1]));
  for (const accountId of accounts) {
    const due = kv.list<string>({
      start: objectsDueBound(accountId),
      end: objectsDueBound(accountId, now.toISOString()),
    });
    for await (const e of due) {
      const id = String(e.key[3]);
      const attempt = async (): Promise<{ value: void } | null> => {
        const entry = await kv.get<ProtectedObject>(protectedObjectKey(id));
        const o = entry.value;
        if (!o || o.breached || !isRpoBreached(o, now)) return { value: undefined };
        const next: ProtectedObject = { ...o, breached: true, updatedAt: now.toISOString() };
        const op = kv.atomic().check(entry);
        writeProtected(op, o, next);
        raiseAlert(op, await readOpenAlert(kv, "protected_object", o.id, "rpo_breach"), {
          accountId: o.accountId,
          orgId: o.orgId,
          subjectType: "protected_object",
          subjectId: o.id,
          subjectName: o.name,
          reason: "rpo_breach",
          severity: "critical",
          message: o.lastSuccessAt
            ? `${o.name} has had no successful backup since ${o.lastSuccessAt} (RPO ${o.rpoHours} h)`
            : `${o.name} has never had a successful backup (RPO ${o.rpoHours} h)`,
        }, now);
        if (!(await op.commit()).ok) return null;
        breached++;
        return { value: undefined };
      };
      try {
        await withRetry(attempt, 5);
      } catch (error) {
        // Giving up on this object is deliberate, not a dropped change: nothing was written, so it stays
        // in the due index and the next minute's sweep breaches it (one object must not stop the sweep).
        if (!(error instanceof CommitConflictError)) throw error;
      }
    }
  }
  return { breached };
}

/**
 * Carries a policy's new RPO to its objects (after the policy update committed), one checked write per
 * object: the due index moves, and a breach the new RPO ends is cleared with its alert resolved. Objects
 * the new RPO puts in breach are counted at once (their due time is past) and swept within a minute.
 * A crash part-way leaves the rest on the old RPO until the policy is saved again. Returns objects updated.
 */
export async function applyPolicyRpo(
  kv: Deno.Kv,
  policy: Pick<Policy, "id" | "rpoHours">,
  now: Date,
): Promise<number> {
  let updated = 0;
  let conflict: CommitConflictError | null = null;
  for await (const e of kv.list({ prefix: assignmentsByPolicyPrefix(policy.id) })) {
    const hostId = String(e.key[2]);
    const attempt = async (): Promise<{ value: void } | null> => {
      const current = await readProtectedFor(kv, hostId, policy.id);
      const o = current.entry?.value;
      if (!current.entry || !o || o.rpoHours === policy.rpoHours) return { value: undefined };
      const next: ProtectedObject = { ...o, rpoHours: policy.rpoHours, updatedAt: now.toISOString() };
      if (next.breached && !isRpoBreached(next, now)) next.breached = false;
      const op = kv.atomic().check(current.entry);
      writeProtected(op, o, next);
      if (o.breached && !next.breached) {
        resolveAlert(op, await readOpenAlert(kv, "protected_object", o.id, "rpo_breach"), now);
      }
      if (!(await op.commit()).ok) return null;
      updated++;
      return { value: undefined };
    };
    // An object that loses every race is not left on the old RPO quietly: the others are still updated,
    // then the conflict is thrown (saving the policy again re-applies its RPO; it is idempotent).
    try {
      await withRetry(
        attempt,
        5,
        `Policy ${policy.id}: its new RPO conflicted on a protected object; save it again`,
      );
    } catch (error) {
      if (!(error instanceof CommitConflictError)) throw error;
      conflict ??= error;
    }
  }
  if (conflict) throw conflict;
  return updated;
}
