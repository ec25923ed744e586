/**
 * API tokens for automation: bearer, stored as a hash, revocable, never above their owner. A token's
 * permissions are scopes: `backup.*` and `admin` for `/api/v1`, `metrics` for `GET /metrics` (Prometheus;
 * routes/metrics.ts) — a monitoring token should hold only `metrics`.
 */
import { z } from "zod";
import { appendAudit, commitAudited } from "./audit.ts";
import { NotFoundError, UnauthorizedError, ValidationError } from "./errors.ts";
import { newId, randomToken, sha256Hex, timingSafeEqual } from "./ids.ts";
import { withRetry } from "./kv.ts";
import { readByPointerIndex } from "./pointer_index.ts";
import { type Actor, authorize, inScope, permissionsOf } from "./rbac.ts";
import { type ApiToken, PERMISSIONS, type PublicApiToken, type User } from "./types.ts";
import { getUser, userScope } from "./users.ts";
import { DisplayName } from "./validation.ts";
import {
  apiTokenKey,
  apiTokensByAccountKey,
  apiTokensByAccountPrefix,
  apiTokensByUserKey,
  apiTokensByUserPrefix,
} from "./keys/api_tokens.ts";
export { apiTokenKey, apiTokensByAccountKey, apiTokensByUserKey };

export const ApiTokenInput = z.object({
  name: DisplayName,
  permissions: z.array(z.enum(PERMISSIONS, { error: `must be among ${PERMISSIONS.join(", ")}` }))
    .min(1, "choose at least one permission"),
  expiresInDays: z.coerce.number().int().min(0, "must be 0 (never) or more").max(3650, "must be at most 3650")
    .default(90),
});
export type ApiTokenInput = z.infer<typeof ApiTokenInput>;

const TOKEN_PATTERN = /^cdt_([0-9A-HJKMNP-TV-Z]{26})_([A-Za-z0-9_-]{43})$/;

export function toPublicToken(token: ApiToken): PublicApiToken {
  const { secretHash: _hash, ...rest } = token;
  return rest;
}

/**
 * Creates a token for the actor (a signed-in user) with a subset of the actor's permissions.
 * Returns the token string, shown once. Throws ValidationError when asking for more than the owner has.
 */
export async function createApiToken(
  kv: Deno.Kv,
  actor: Actor,
  input: ApiTokenInput & { userId?: string },
  now: Date,
): Promise<{ token: ApiToken; secret: string }> {
  const data = ApiTokenInput.parse(input);
  const ownerId = input.userId ?? actor.id;
  const owner = await getUser(kv, ownerId);
  if (!owner || !inScope(actor, userScope(owner))) throw new NotFoundError("User not found");
  if (owner.id !== actor.id) authorize(actor, "admin", userScope(owner));
  const allowed = permissionsOf(owner.role);
  // A token acting for its owner can only hand out what it holds itself.
  const extra = data.permissions.filter((p) =>
    !allowed.has(p) || (actor.kind === "token" && !actor.permissions.has(p))
  );
  if (extra.length) {
    throw new ValidationError(`The token cannot have ${extra.join(", ")}: its creator does not`, {
      permissions: `Not held by ${actor.kind === "token" ? "this token" : owner.email}: ${extra.join(", ")}`,
    });
  }
  const id = newId(now);
  const secret = `cdt_${id}_${randomToken(32)}`;
  const token: ApiToken = {
    id,
    accountId: owner.accountId,
    userId: owner.id,
    name: data.name,
    permissions: [...new Set(data.permissions)],
    secretHash: sha256Hex(secret),
    createdAt: now.toISOString(),
    expiresAt: data.expiresInDays
      ? new Date(now.getTime() + data.expiresInDays * 86_400_000).toISOString()
      : null,
    revokedAt: null,
    lastUsedAt: null,
  };
  const op = kv.atomic()
    .check({ key: apiTokenKey(id), versionstamp: null })
    .set(apiTokenKey(id), token)
    .set(apiTokensByUserKey(owner.id, id), id)
    .set(apiTokensByAccountKey(owner.accountId, id), id);
  await commitAudited(
    op,
    actor,
    {
      accountId: owner.accountId,
      orgIds: owner.orgScope,
      action: "api_token.create",
      objectType: "api_token",
      objectId: id,
      summary: `Created API token "${data.name}" for ${owner.email} (${token.permissions.join(", ")})`,
    },
    now,
    "Could not create the token; try again",
  );
  return { token, secret };
}

/** Lists tokens the actor may see: their own, and (for admins) those of users in scope. */
export async function listApiTokens(
  kv: Deno.Kv,
  actor: Actor,
): Promise<Array<PublicApiToken & { ownerEmail: string }>> {
  if (!actor.accountId) return [];
  const isAdmin = actor.permissions.has("admin");
  const prefix = isAdmin ? apiTokensByAccountPrefix(actor.accountId) : apiTokensByUserPrefix(actor.id);
  const tokens = await readByPointerIndex<ApiToken>(kv, prefix, apiTokenKey);
  const owners = new Map<string, User | null>();
  const out: Array<PublicApiToken & { ownerEmail: string }> = [];
  for (const t of tokens.reverse()) {
    if (!owners.has(t.userId)) owners.set(t.userId, await getUser(kv, t.userId));
    const owner = owners.get(t.userId);
    if (!owner || !inScope(actor, userScope(owner))) continue;
    out.push({ ...toPublicToken(t), ownerEmail: owner.email });
  }
  return out;
}

/** Revokes a token: the owner may revoke their own; admins those of users in their scope. */
export async function revokeApiToken(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<ApiToken> {
  return await withRetry(async () => {
    const entry = await kv.get<ApiToken>(apiTokenKey(id));
    const token = entry.value;
    const owner = token ? await getUser(kv, token.userId) : null;
    if (!token || !owner || !inScope(actor, userScope(owner))) throw new NotFoundError("Token not found");
    if (owner.id !== actor.id) authorize(actor, "admin", userScope(owner));
    if (token.revokedAt) return { value: token };
    const next = { ...token, revokedAt: now.toISOString() };
    const op = kv.atomic().check(entry).set(apiTokenKey(id), next);
    appendAudit(op, actor, {
      accountId: token.accountId,
      orgIds: owner.orgScope,
      action: "api_token.revoke",
      objectType: "api_token",
      objectId: id,
      summary: `Revoked API token "${token.name}" of ${owner.email}`,
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  });
}

/**
 * Resolves a bearer token to an actor whose permissions are the token's, intersected with the
 * owner's current role (so demoting the owner narrows the token). Throws UnauthorizedError.
 */
export async function resolveApiToken(kv: Deno.Kv, bearer: string, now: Date): Promise<Actor> {
  const match = TOKEN_PATTERN.exec(bearer);
  if (!match) throw new UnauthorizedError("Invalid API token");
  const entry = await kv.get<ApiToken>(apiTokenKey(match[1]));
  const token = entry.value;
  if (!token || !timingSafeEqual(token.secretHash, sha256Hex(bearer))) {
    throw new UnauthorizedError("Invalid API token");
  }
  if (token.revokedAt) throw new UnauthorizedError("This API token has been revoked");
  if (token.expiresAt && now.getTime() >= Date.parse(token.expiresAt)) {
    throw new UnauthorizedError("This API token has expired");
  }
  const owner = await getUser(kv, token.userId);
  if (!owner || owner.disabled) {
    throw new UnauthorizedError("The owner of this API token is disabled or gone");
  }
  const ownerPermissions = permissionsOf(owner.role);
  if (!token.lastUsedAt || now.getTime() - Date.parse(token.lastUsedAt) > 60_000) {
    // Checked write: a concurrent revoke must never be overwritten by this bookkeeping.
    await kv.atomic().check(entry).set(apiTokenKey(token.id), { ...token, lastUsedAt: now.toISOString() })
      .commit();
  }
  return {
    kind: "token",
    id: owner.id,
    label: `${owner.email} (token ${token.name})`,
    accountId: owner.accountId,
    role: owner.role,
    permissions: new Set(token.permissions.filter((p) => ownerPermissions.has(p))),
    orgScope: owner.orgScope,
    tokenId: token.id,
  };
}
