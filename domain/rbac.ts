/** Actors and the one helper that decides whether an actor may see or change an object. */
import { ForbiddenError, NotFoundError } from "./errors.ts";
import { type OrgScope, type Permission, PERMISSIONS, type Role, ROLE_PERMISSIONS } from "./types.ts";

/** Who is acting: a signed-in user, an API token (on behalf of its owner), or the system (CLI, jobs). */
export interface Actor {
  kind: "user" | "token" | "system";
  /** User id, or `system:<name>` for the system. */
  id: string;
  label: string;
  accountId: string | null;
  role: Role | null;
  permissions: ReadonlySet<Permission>;
  orgScope: OrgScope;
  tokenId?: string;
}

/** An object's tenancy. `orgId: null` means account-level; `orgIds` lists the orgs a multi-org object spans. */
export interface ScopedObject {
  accountId: string;
  orgId?: string | null;
  orgIds?: OrgScope;
}

/** The permissions a role grants. */
export function permissionsOf(role: Role): Set<Permission> {
  return new Set(ROLE_PERMISSIONS[role]);
}

/** A system actor with every permission in every account (CLI, background jobs). */
export function systemActor(name: string): Actor {
  return {
    kind: "system",
    id: `system:${name}`,
    label: name,
    accountId: null,
    role: null,
    permissions: new Set(PERMISSIONS),
    orgScope: "all",
  };
}

/**
 * An engine or agent as the actor of what it reports (`bes:<id>`, `agent:<id>`): the system, in the
 * principal's account, with no permission of its own.
 */
export function principalActor(id: string, label: string, accountId: string): Actor {
  return { kind: "system", id, label, accountId, role: null, permissions: new Set(), orgScope: "all" };
}

/** True when `outer` covers every org of `inner`. */
export function scopeCovers(outer: OrgScope, inner: OrgScope): boolean {
  if (outer === "all") return true;
  if (inner === "all") return false;
  return inner.every((id) => outer.includes(id));
}

/** True when the actor may know the object exists (same account and inside the org scope). */
export function inScope(actor: Actor, object: ScopedObject): boolean {
  if (actor.kind === "system") return true;
  if (object.accountId !== actor.accountId) return false;
  if (object.orgIds !== undefined) return scopeCovers(actor.orgScope, object.orgIds);
  if (object.orgId) return scopeCovers(actor.orgScope, [object.orgId]);
  return true; // account-level: visible to every user of the account
}

/** True when the actor may use `permission` on the object (or in general, without one). */
export function can(actor: Actor, permission: Permission, object?: ScopedObject): boolean {
  if (!actor.permissions.has(permission)) return false;
  if (!object) return true;
  if (!inScope(actor, object)) return false;
  // Changing an account-level object needs a scope over the whole account.
  const accountLevel = object.orgIds === undefined && !object.orgId;
  if (accountLevel && permission !== "backup.view" && actor.kind !== "system") {
    return actor.orgScope === "all";
  }
  return true;
}

/**
 * Asserts the actor may use `permission` on the object. Throws NotFoundError when the object is
 * outside the actor's reach (so ids cannot be probed), ForbiddenError when the permission is missing.
 */
export function authorize(actor: Actor, permission: Permission, object?: ScopedObject): void {
  if (object && !inScope(actor, object)) throw new NotFoundError("Not found");
  if (!can(actor, permission, object)) {
    throw new ForbiddenError(`This needs the ${permission} permission${object ? " on this object" : ""}`);
  }
}

/** The org ids the actor may list, or "all". Useful to filter lists. */
export function visibleOrgs(actor: Actor): OrgScope {
  return actor.orgScope;
}
