/** Users of an account: email, name, role, org scope, argon2id password. */
import { accountKey, orgKey } from "./keys/tenancy.ts";
import { apiTokenKey, apiTokensByAccountKey, apiTokensByUserPrefix } from "./keys/api_tokens.ts";
import { sessionKey, sessionsByUserPrefix } from "./keys/auth.ts";
import { z } from "zod";
import { appendAudit } from "./audit.ts";
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from "./errors.ts";
import { newId, randomToken } from "./ids.ts";
import { getManyValues, withRetry } from "./kv.ts";
import { deleteByPointerIndex, readByPointerIndex } from "./pointer_index.ts";
import { type Argon2Params, hashPassword } from "./passwords.ts";
import { type Actor, authorize, inScope, scopeCovers } from "./rbac.ts";
import { DisplayName } from "./validation.ts";
import { type OrgScope, type PublicUser, ROLES, type User } from "./types.ts";
import {
  userByEmailKey,
  userKey,
  usersByAccountKey,
  usersByAccountPrefix,
  usersPrefix,
} from "./keys/users.ts";
export { userByEmailKey, userKey, usersByAccountKey };

export const Email = z.string().trim().toLowerCase().max(254, "must be at most 254 characters")
  .pipe(z.email({ error: "must be a valid email address" }));

export const Password = z.string().min(12, "must be at least 12 characters")
  .max(256, "must be at most 256 characters");

export const OrgScopeInput = z.union([
  z.literal("all"),
  z.array(z.string().min(1).max(40)).min(1, "select at least one organization").max(500),
]);

/** A new user. */
export const UserCreateInput = z.object({
  email: Email,
  name: DisplayName,
  role: z.enum(ROLES, { error: `must be one of ${ROLES.join(", ")}` }),
  orgScope: OrgScopeInput,
  password: Password,
});
export type UserCreateInput = z.infer<typeof UserCreateInput>;

/** Changes to a user (email is the login and stays). */
export const UserUpdateInput = z.object({
  name: DisplayName,
  role: z.enum(ROLES, { error: `must be one of ${ROLES.join(", ")}` }),
  orgScope: OrgScopeInput,
  disabled: z.boolean().default(false),
});
export type UserUpdateInput = z.infer<typeof UserUpdateInput>;

/** The user without its password hash. */
export function toPublicUser(user: User): PublicUser {
  const { passwordHash: _hash, ...rest } = user;
  return rest;
}

/** The tenancy of a user object, for `authorize`: it spans the orgs of its scope. */
export function userScope(user: Pick<User, "accountId" | "orgScope">) {
  return { accountId: user.accountId, orgIds: user.orgScope };
}

export async function getUser(kv: Deno.Kv, id: string): Promise<User | null> {
  return (await kv.get<User>(userKey(id))).value;
}

export async function findUserByEmail(kv: Deno.Kv, email: string): Promise<User | null> {
  const id = (await kv.get<string>(userByEmailKey(email.trim().toLowerCase()))).value;
  return id ? await getUser(kv, id) : null;
}

/** Returns the user if the actor may see it; throws NotFoundError otherwise. */
export async function requireUser(kv: Deno.Kv, actor: Actor, id: string): Promise<User> {
  const user = await getUser(kv, id);
  if (!user || !inScope(actor, userScope(user))) throw new NotFoundError(`User ${id} not found`);
  return user;
}

/** True when any user exists (first-run detection). */
export async function hasAnyUser(kv: Deno.Kv): Promise<boolean> {
  for await (const _ of kv.list({ prefix: usersPrefix() }, { limit: 1 })) return true;
  return false;
}

/** Lists the account's users the actor may see, sorted by email. */
export async function listUsers(kv: Deno.Kv, actor: Actor, accountId: string): Promise<User[]> {
  const users = await readByPointerIndex<User>(kv, usersByAccountPrefix(accountId), userKey);
  return users.filter((u) => inScope(actor, userScope(u))).sort((a, b) => a.email.localeCompare(b.email));
}

/** Refuses to hand out a scope or role the acting admin does not have, and unknown orgs. */
async function checkGrant(kv: Deno.Kv, actor: Actor, accountId: string, orgScope: OrgScope): Promise<void> {
  if (!scopeCovers(actor.orgScope, orgScope)) {
    throw new ValidationError("You cannot grant access to organizations outside your own scope", {
      orgScope: "Outside your own organization scope",
    });
  }
  if (orgScope !== "all") {
    const orgs = await getManyValues<{ accountId: string }>(kv, orgScope.map((id) => orgKey(id)));
    if (orgs.length !== orgScope.length || orgs.some((o) => o.accountId !== accountId)) {
      throw new ValidationError("Unknown organization in scope", { orgScope: "Unknown organization" });
    }
  }
}

/**
 * Creates a user in an account. Throws ValidationError (e.g. email taken) or ForbiddenError. `hashing`:
 * the argon2id cost (`Config.passwordHashing`; production's when omitted).
 */
export async function createUser(
  kv: Deno.Kv,
  actor: Actor,
  input: UserCreateInput & { accountId: string },
  now: Date,
  hashing?: Argon2Params,
): Promise<User> {
  const data = UserCreateInput.parse(input);
  authorize(actor, "admin", { accountId: input.accountId, orgIds: data.orgScope });
  await checkGrant(kv, actor, input.accountId, data.orgScope);
  const at = now.toISOString();
  const user: User = {
    id: newId(now),
    accountId: input.accountId,
    email: data.email,
    name: data.name,
    role: data.role,
    orgScope: data.orgScope,
    passwordHash: await hashPassword(data.password, hashing),
    disabled: false,
    createdAt: at,
    updatedAt: at,
  };
  const account = await kv.get(accountKey(user.accountId));
  if (!account.value) throw new NotFoundError("Account not found");
  const op = kv.atomic()
    .check(account)
    .check({ key: userByEmailKey(user.email), versionstamp: null })
    .set(userKey(user.id), user)
    .set(userByEmailKey(user.email), user.id)
    .set(usersByAccountKey(user.accountId, user.id), user.id);
  appendAudit(op, actor, {
    accountId: user.accountId,
    orgIds: user.orgScope,
    action: "user.create",
    objectType: "user",
    objectId: user.id,
    summary: `Created user ${user.email} (${user.role})`,
  }, now);
  if (!(await op.commit()).ok) {
    if ((await kv.get(userByEmailKey(user.email))).value) {
      throw new ValidationError(`A user with email ${user.email} already exists`, {
        email: "A user with this email already exists",
      });
    }
    throw new ConflictError("The account changed while the user was being created; try again");
  }
  return user;
}

/** Updates name, role, scope and disabled flag. An admin cannot demote or disable themself. */
export async function updateUser(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: UserUpdateInput,
  now: Date,
): Promise<User> {
  const data = UserUpdateInput.parse(input);
  return await withRetry(async () => {
    const entry = await kv.get<User>(userKey(id));
    const user = entry.value;
    if (!user || !inScope(actor, userScope(user))) throw new NotFoundError(`User ${id} not found`);
    authorize(actor, "admin", userScope(user));
    await checkGrant(kv, actor, user.accountId, data.orgScope);
    if (actor.id === user.id && (data.role !== "admin" || data.disabled)) {
      throw new ForbiddenError("You cannot remove your own admin role or disable yourself");
    }
    const next: User = { ...user, ...data, updatedAt: now.toISOString() };
    const op = kv.atomic().check(entry).set(userKey(id), next);
    const changes = [
      user.role !== next.role ? `role ${user.role} → ${next.role}` : "",
      JSON.stringify(user.orgScope) !== JSON.stringify(next.orgScope) ? "org scope changed" : "",
      user.disabled !== next.disabled ? (next.disabled ? "disabled" : "enabled") : "",
      user.name !== next.name ? "name changed" : "",
    ].filter(Boolean);
    appendAudit(op, actor, {
      accountId: user.accountId,
      orgIds: user.orgScope,
      action: "user.update",
      objectType: "user",
      objectId: user.id,
      summary: `Updated user ${user.email}${changes.length ? `: ${changes.join(", ")}` : ""}`,
    }, now);
    if (!(await op.commit()).ok) return null;
    if (next.disabled) await revokeSessionsOf(kv, id);
    return { value: next };
  });
}

/**
 * Sets a new password (given, or generated when omitted) and ends the user's sessions.
 * Returns the password so a generated one can be shown once. `hashing` as for `createUser`.
 */
export async function resetPassword(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: { password?: string },
  now: Date,
  hashing?: Argon2Params,
): Promise<{ user: User; password: string }> {
  const password = input.password === undefined ? randomToken(18) : Password.parse(input.password);
  const passwordHash = await hashPassword(password, hashing);
  const user = await withRetry(async () => {
    const entry = await kv.get<User>(userKey(id));
    const user = entry.value;
    if (!user || !inScope(actor, userScope(user))) throw new NotFoundError(`User ${id} not found`);
    if (actor.id !== user.id) authorize(actor, "admin", userScope(user));
    const next: User = { ...user, passwordHash, updatedAt: now.toISOString() };
    const op = kv.atomic().check(entry).set(userKey(id), next);
    appendAudit(op, actor, {
      accountId: user.accountId,
      orgIds: user.orgScope,
      action: "user.reset_password",
      objectType: "user",
      objectId: user.id,
      summary: `Reset the password of ${user.email}`,
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  });
  await revokeSessionsOf(kv, id);
  return { user, password };
}

/** Deletes a user, their sessions and their API tokens. An admin cannot delete themself. */
export async function deleteUser(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<void> {
  await withRetry(async () => {
    const entry = await kv.get<User>(userKey(id));
    const user = entry.value;
    if (!user || !inScope(actor, userScope(user))) throw new NotFoundError(`User ${id} not found`);
    const tokenKeys: Deno.KvKey[] = [];
    for await (const e of kv.list<string>({ prefix: apiTokensByUserPrefix(id) })) {
      tokenKeys.push(e.key, apiTokenKey(e.value), apiTokensByAccountKey(user.accountId, e.value));
    }
    authorize(actor, "admin", userScope(user));
    if (actor.id === user.id) throw new ForbiddenError("You cannot delete your own account");
    const op = kv.atomic().check(entry)
      .delete(userKey(id))
      .delete(userByEmailKey(user.email))
      .delete(usersByAccountKey(user.accountId, id));
    for (const key of tokenKeys) op.delete(key);
    appendAudit(op, actor, {
      accountId: user.accountId,
      orgIds: user.orgScope,
      action: "user.delete",
      objectType: "user",
      objectId: user.id,
      summary: `Deleted user ${user.email}`,
    }, now);
    return (await op.commit()).ok ? { value: undefined } : null;
  });
  await revokeSessionsOf(kv, id);
}

/** Ends every session of a user. */
export async function revokeSessionsOf(kv: Deno.Kv, userId: string): Promise<void> {
  await deleteByPointerIndex(kv, sessionsByUserPrefix(userId), async (id, indexKey) => {
    await kv.atomic().delete(indexKey).delete(sessionKey(id)).commit();
    return true;
  });
}
