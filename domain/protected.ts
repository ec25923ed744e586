/**
 * Protected objects: what a backup covers (guide, "Protected Objects"). A native one is created when a
 * policy is assigned to a host, one per (host, policy), in the same atomic operation as the assignment
 * (see assignments.ts); platform sync will add others later. A protected object outlives its
 * assignment: removing the host from the policy, or deleting the policy, marks it `unprotected` and
 * keeps it, because the restore points it was backed up into are kept for their retention.
 */
import { z } from "zod";
import { NotFoundError } from "./errors.ts";
import type { Host } from "./hosts.ts";
import { getManyValues } from "./kv.ts";
import type { Policy } from "./policies.ts";
import { type Actor, inScope } from "./rbac.ts";

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

/** Anything covered by backup; native ones are one per (host, policy). */
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
  source: { kind: "bes"; besId: string };
  /** Copied from the policy at the last (re)assignment. */
  rpoHours: number;
  lastBackupAt: string | null;
  lastBackupStatus: LastBackupStatus;
  protection: ProtectionState;
  createdAt: string;
  updatedAt: string;
}

/** Primary key of a protected object. */
export function protectedObjectKey(id: string) {
  return ["protected_objects", id] as const;
}
/** Unique: one native protected object per (host, policy). */
export function protectedByHostKey(hostId: string, policyId: string) {
  return ["protected_by_host", hostId, policyId] as const;
}
/** The account's protected objects (for the list page). */
export function protectedByAccountKey(accountId: string, id: string) {
  return ["protected_by_account", accountId, id] as const;
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

/** What `protectForAssignment` and `setProtection` need: the pointer and the object entry. */
export interface ProtectedEntry {
  pointer: Deno.KvEntryMaybe<string>;
  entry: Deno.KvEntryMaybe<ProtectedObject> | null;
}

/** Reads the protected object of (host, policy) for a later atomic write. */
export async function readProtectedFor(
  kv: Deno.Kv,
  hostId: string,
  policyId: string,
): Promise<ProtectedEntry> {
  const pointer = await kv.get<string>(protectedByHostKey(hostId, policyId));
  const entry = pointer.value ? await kv.get<ProtectedObject>(protectedObjectKey(pointer.value)) : null;
  return { pointer, entry };
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
  options: { id: string; now: Date },
): ProtectedObject {
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
    const next: ProtectedObject = { ...existing, ...details };
    op.set(protectedObjectKey(next.id), next);
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
    createdAt: at,
  };
  op.check({ key: protectedObjectKey(created.id), versionstamp: null }).set(
    protectedObjectKey(created.id),
    created,
  );
  for (const key of protectedIndexKeys(created)) op.set(key, created.id);
  return created;
}

/**
 * Adds to `op`: sets the protection state of the object read by `readProtectedFor` (no-op when there
 * is none, or when it already has that state). Returns the object after the change, or null.
 */
export function setProtection(
  op: Deno.AtomicOperation,
  current: ProtectedEntry,
  protection: ProtectionState,
  now: Date,
): ProtectedObject | null {
  op.check(current.pointer);
  const existing = current.entry?.value;
  if (!current.entry || !existing) return null;
  op.check(current.entry);
  if (existing.protection === protection) return existing;
  const next: ProtectedObject = { ...existing, protection, updatedAt: now.toISOString() };
  op.set(protectedObjectKey(next.id), next);
  return next;
}

/** The protected objects of a host the actor may see (one per policy it was ever assigned to). */
export async function listProtectedByHost(
  kv: Deno.Kv,
  actor: Actor,
  hostId: string,
): Promise<ProtectedObject[]> {
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: ["protected_by_host", hostId] })) {
    keys.push(protectedObjectKey(e.value));
  }
  return (await getManyValues<ProtectedObject>(kv, keys)).filter((o) => inScope(actor, objectScope(o)));
}

/** Filters of the protected objects list; every field falls back to its default. */
export const ProtectedFilter = z.object({
  /** Substring of the object name (the hostname for native objects), case-insensitive. */
  q: z.string().trim().max(200).catch(""),
  orgId: z.string().max(40).catch(""),
  type: z.enum(["", ...PROTECTED_TYPES]).catch(""),
  hostId: z.string().max(40).catch(""),
  besId: z.string().max(40).catch(""),
  lastBackupStatus: z.enum(["", ...LAST_BACKUP_STATUSES]).catch(""),
  protection: z.enum(["", ...PROTECTION_STATES]).catch(""),
  offset: z.coerce.number().int().min(0).catch(0),
  limit: z.coerce.number().int().min(1).max(200).catch(50),
});
export type ProtectedFilter = z.infer<typeof ProtectedFilter>;

/**
 * Protected objects of the actor's account inside its org scope, filtered, by name (then id); `total`
 * counts the matches before paging. RPO breach filtering is not here yet: it needs restore points.
 */
export async function listProtectedObjects(
  kv: Deno.Kv,
  actor: Actor,
  filter: Partial<z.input<typeof ProtectedFilter>> = {},
): Promise<{ values: ProtectedObject[]; total: number }> {
  const f = ProtectedFilter.parse(filter);
  if (!actor.accountId) return { values: [], total: 0 };
  const keys: Deno.KvKey[] = [];
  for await (const e of kv.list<string>({ prefix: ["protected_by_account", actor.accountId] })) {
    keys.push(protectedObjectKey(e.value));
  }
  const needle = f.q.toLowerCase();
  const rows = (await getManyValues<ProtectedObject>(kv, keys)).filter((o) =>
    inScope(actor, objectScope(o)) &&
    (!f.orgId || o.orgId === f.orgId) &&
    (!f.type || o.type === f.type) &&
    (!f.hostId || o.hostId === f.hostId) &&
    (!f.besId || o.source.besId === f.besId) &&
    (!f.lastBackupStatus || o.lastBackupStatus === f.lastBackupStatus) &&
    (!f.protection || o.protection === f.protection) &&
    (!needle || o.name.toLowerCase().includes(needle))
  );
  rows.sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  return { values: rows.slice(f.offset, f.offset + f.limit), total: rows.length };
}
