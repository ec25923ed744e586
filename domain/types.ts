/** Types shared by the server and islands. Dependency-free: islands may import it. */

/**
 * `metrics`: scraping `/metrics` (Prometheus). Administrators hold it; give a monitoring token only this one
 * (docs/monitoring.md). The endpoint also needs the platform operator (see `authorizePlatformAdmin`).
 * `backup.hold`: placing and releasing legal holds on restore points (holds.ts); administrators hold it.
 */
export const PERMISSIONS = [
  "backup.view",
  "backup.manage",
  "backup.restore",
  "admin",
  "metrics",
  "backup.hold",
] as const;
export type Permission = (typeof PERMISSIONS)[number];

export const ROLES = ["viewer", "operator", "restore_operator", "backup_admin", "admin"] as const;
export type Role = (typeof ROLES)[number];

/** What each role grants. `admin` adds users, organizations, tokens, audit, self-backup, metrics and legal holds. */
export const ROLE_PERMISSIONS: Record<Role, readonly Permission[]> = {
  viewer: ["backup.view"],
  operator: ["backup.view", "backup.manage"],
  restore_operator: ["backup.view", "backup.restore"],
  backup_admin: ["backup.view", "backup.manage", "backup.restore"],
  admin: ["backup.view", "backup.manage", "backup.restore", "admin", "metrics", "backup.hold"],
};

export const ROLE_LABELS: Record<Role, string> = {
  viewer: "Viewer",
  operator: "Backup operator",
  restore_operator: "Restore operator",
  backup_admin: "Backup administrator",
  admin: "Administrator",
};

/** A user's org scope: every org of the account, or a list of org ids. */
export type OrgScope = "all" | string[];

export interface Account {
  id: string;
  name: string;
  createdAt: string;
  /** SHA-256 of the account registration secret (account-scoped engines), once issued. */
  secretHash?: string;
  secretRotatedAt?: string;
}

export interface Org {
  id: string;
  accountId: string;
  name: string;
  /** SHA-256 hex of the registration secret; the secret itself is never stored. */
  secretHash: string;
  secretRotatedAt: string;
  createdAt: string;
  updatedAt: string;
}

export interface User {
  id: string;
  accountId: string;
  email: string;
  name: string;
  role: Role;
  orgScope: OrgScope;
  passwordHash: string;
  disabled: boolean;
  createdAt: string;
  updatedAt: string;
}

/** A user as shown to others: never the password hash. */
export type PublicUser = Omit<User, "passwordHash">;

export interface ApiToken {
  id: string;
  accountId: string;
  userId: string;
  name: string;
  permissions: Permission[];
  /** SHA-256 hex of the token secret. */
  secretHash: string;
  createdAt: string;
  expiresAt: string | null;
  revokedAt: string | null;
  lastUsedAt: string | null;
}

export type PublicApiToken = Omit<ApiToken, "secretHash">;

export interface AuditEntry {
  id: string;
  accountId: string;
  orgId: string | null;
  /** Set for entries about multi-org objects (users): readers need this whole scope. */
  orgIds?: OrgScope;
  actorId: string;
  actorLabel: string;
  action: string;
  objectType: string;
  objectId: string;
  summary: string;
  at: string;
}
