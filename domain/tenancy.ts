/** Accounts and organizations, with each org's registration secret (stored only as a hash). */
import { z } from "zod";
import { appendAudit, commitAudited } from "./audit.ts";
import { NotFoundError, ValidationError } from "./errors.ts";
import { newId, randomToken, sha256Hex } from "./ids.ts";
import { withRetry } from "./kv.ts";
import { readByPointerIndex } from "./pointer_index.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import { DisplayName } from "./validation.ts";
import type { Account, Org } from "./types.ts";
import {
  accountByNameKey,
  accountBySecretKey,
  accountKey,
  accountsPrefix,
  orgByNameKey,
  orgBySecretKey,
  orgKey,
  orgsByAccountKey,
  orgsByAccountPrefix,
} from "./keys/tenancy.ts";
export {
  accountByNameKey,
  accountBySecretKey,
  accountKey,
  orgByNameKey,
  orgBySecretKey,
  orgKey,
  orgsByAccountKey,
};

export const AccountInput = z.object({ name: DisplayName });
export type AccountInput = z.infer<typeof AccountInput>;

export const OrgInput = z.object({ name: DisplayName });
export type OrgInput = z.infer<typeof OrgInput>;

/** Registration secrets carry a recognisable prefix so a leaked one can be spotted. */
function newOrgSecret(): string {
  return `cdo_${randomToken(32)}`;
}

/** Returns the account or null. */
export async function getAccount(kv: Deno.Kv, id: string): Promise<Account | null> {
  return (await kv.get<Account>(accountKey(id))).value;
}

/** Finds an account by its (case-insensitive) name. */
export async function findAccountByName(kv: Deno.Kv, name: string): Promise<Account | null> {
  const id = (await kv.get<string>(accountByNameKey(name))).value;
  return id ? await getAccount(kv, id) : null;
}

/** Lists every account (system use: CLI, demo). */
export async function listAccounts(kv: Deno.Kv): Promise<Account[]> {
  const out: Account[] = [];
  for await (const entry of kv.list<Account>({ prefix: accountsPrefix() })) out.push(entry.value);
  return out;
}

/** Creates an account. Throws ConflictError if the name is taken. Only the system creates accounts. */
export async function createAccount(
  kv: Deno.Kv,
  actor: Actor,
  input: AccountInput,
  now: Date,
): Promise<Account> {
  if (actor.kind !== "system") authorize(actor, "admin");
  const { name } = AccountInput.parse(input);
  const account: Account = { id: newId(now), name, createdAt: now.toISOString() };
  const op = kv.atomic()
    .check({ key: accountByNameKey(name), versionstamp: null })
    .set(accountKey(account.id), account)
    .set(accountByNameKey(name), account.id);
  await commitAudited(
    op,
    actor,
    {
      accountId: account.id,
      action: "account.create",
      objectType: "account",
      objectId: account.id,
      summary: `Created account ${name}`,
    },
    now,
    `An account named "${name}" already exists`,
  );
  return account;
}

/** Returns the org or null (no scope check: for the system and for registration). */
export async function getOrg(kv: Deno.Kv, id: string): Promise<Org | null> {
  return (await kv.get<Org>(orgKey(id))).value;
}

/** Returns the org if the actor may see it. Throws NotFoundError otherwise. */
export async function requireOrg(kv: Deno.Kv, actor: Actor, id: string): Promise<Org> {
  const org = await getOrg(kv, id);
  if (!org || !inScope(actor, { accountId: org.accountId, orgId: org.id })) {
    throw new NotFoundError(`Organization ${id} not found`);
  }
  return org;
}

/** The org's entry for a change by an admin of it: NotFoundError when out of scope, ForbiddenError when not admin. */
async function adminOrgEntry(kv: Deno.Kv, actor: Actor, id: string): Promise<Deno.KvEntry<Org>> {
  const entry = await kv.get<Org>(orgKey(id));
  const org = entry.value;
  if (!org || !inScope(actor, { accountId: org.accountId, orgId: org.id })) {
    throw new NotFoundError("Not found");
  }
  authorize(actor, "admin", { accountId: org.accountId, orgId: org.id });
  return entry as Deno.KvEntry<Org>;
}

/**
 * The owner of a new object, from the actor and the input's `accountId` and `orgId`: a given org must
 * exist and be in the actor's scope (else ValidationError on `orgId`) and then decides the account; without
 * one, the input's account or the actor's own (else ValidationError on `accountId`; with `orgRequired`, on
 * `orgId`). Checks scope only: the caller authorizes the action on the returned owner, and checks
 * `orgEntry` in its write so the org is not deleted under the new object.
 */
export async function resolveOwner(
  kv: Deno.Kv,
  actor: Actor,
  input: { accountId?: string | null; orgId?: string | null },
  options: { orgRequired?: boolean } = {},
): Promise<{ accountId: string; orgId: string | null; org: Org | null; orgEntry: Deno.KvEntry<Org> | null }> {
  const unknownOrg = () =>
    new ValidationError("Unknown organization", { orgId: "Choose an organization you can see" });
  if (input.orgId) {
    const orgEntry = await kv.get<Org>(orgKey(input.orgId));
    const org = orgEntry.value;
    if (!org || !inScope(actor, { accountId: org.accountId, orgId: org.id })) throw unknownOrg();
    return { accountId: org.accountId, orgId: org.id, org, orgEntry: orgEntry as Deno.KvEntry<Org> };
  }
  if (options.orgRequired) throw unknownOrg();
  const accountId = input.accountId ?? actor.accountId;
  if (!accountId) throw new ValidationError("An account is required", { accountId: "is required" });
  return { accountId, orgId: null, org: null, orgEntry: null };
}

/** Lists the orgs of an account that the actor may see, by name. */
export async function listOrgs(kv: Deno.Kv, actor: Actor, accountId: string): Promise<Org[]> {
  const orgs = await readByPointerIndex<Org>(kv, orgsByAccountPrefix(accountId), orgKey);
  return orgs.filter((org) => inScope(actor, { accountId: org.accountId, orgId: org.id }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/**
 * Creates an org in the actor's account and returns it with its registration secret — the only time
 * the secret is ever available. Needs `admin` over the whole account. Throws ConflictError on a taken name.
 */
export async function createOrg(
  kv: Deno.Kv,
  actor: Actor,
  input: { accountId: string } & OrgInput,
  now: Date,
): Promise<{ org: Org; secret: string }> {
  const { name } = OrgInput.parse(input);
  authorize(actor, "admin", { accountId: input.accountId, orgId: null });
  if (!(await getAccount(kv, input.accountId))) throw new NotFoundError("Account not found");
  const secret = newOrgSecret();
  const secretHash = sha256Hex(secret);
  const at = now.toISOString();
  const org: Org = {
    id: newId(now),
    accountId: input.accountId,
    name,
    secretHash,
    secretRotatedAt: at,
    createdAt: at,
    updatedAt: at,
  };
  const op = kv.atomic()
    .check({ key: orgByNameKey(org.accountId, name), versionstamp: null })
    .check({ key: orgBySecretKey(secretHash), versionstamp: null })
    .set(orgKey(org.id), org)
    .set(orgsByAccountKey(org.accountId, org.id), org.id)
    .set(orgByNameKey(org.accountId, name), org.id)
    .set(orgBySecretKey(secretHash), org.id);
  appendAudit(op, actor, {
    accountId: org.accountId,
    orgId: org.id,
    action: "org.create",
    objectType: "org",
    objectId: org.id,
    summary: `Created organization ${name}`,
  }, now);
  if (!(await op.commit()).ok) {
    throw new ValidationError(`An organization named "${name}" already exists`, {
      name: "An organization with this name already exists",
    });
  }
  return { org, secret };
}

/** Renames an org. Throws NotFoundError/ForbiddenError/ValidationError. */
export async function renameOrg(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: OrgInput,
  now: Date,
): Promise<Org> {
  const { name } = OrgInput.parse(input);
  return await withRetry(async () => {
    const entry = await adminOrgEntry(kv, actor, id);
    const org = entry.value;
    if (org.name === name) return { value: org };
    const next: Org = { ...org, name, updatedAt: now.toISOString() };
    const op = kv.atomic().check(entry).set(orgKey(id), next);
    // A change of letter case keeps the same (lower-cased) name key.
    if (name.toLowerCase() !== org.name.toLowerCase()) {
      op.check({ key: orgByNameKey(org.accountId, name), versionstamp: null })
        .delete(orgByNameKey(org.accountId, org.name))
        .set(orgByNameKey(org.accountId, name), org.id);
    }
    appendAudit(op, actor, {
      accountId: org.accountId,
      orgId: org.id,
      action: "org.rename",
      objectType: "org",
      objectId: org.id,
      summary: `Renamed organization ${org.name} to ${name}`,
    }, now);
    if ((await op.commit()).ok) return { value: next };
    const taken = (await kv.get(orgByNameKey(org.accountId, name))).value;
    if (taken && taken !== id) {
      throw new ValidationError(`An organization named "${name}" already exists`, {
        name: "An organization with this name already exists",
      });
    }
    return null;
  });
}

/**
 * Replaces an org's registration secret; the old one stops working at once. Returns the new secret,
 * which is never available again.
 */
export async function rotateOrgSecret(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  now: Date,
): Promise<{ org: Org; secret: string }> {
  return await withRetry(async () => {
    const entry = await adminOrgEntry(kv, actor, id);
    const org = entry.value;
    const secret = newOrgSecret();
    const secretHash = sha256Hex(secret);
    const next: Org = {
      ...org,
      secretHash,
      secretRotatedAt: now.toISOString(),
      updatedAt: now.toISOString(),
    };
    const op = kv.atomic()
      .check(entry)
      .delete(orgBySecretKey(org.secretHash))
      .set(orgBySecretKey(secretHash), org.id)
      .set(orgKey(id), next);
    appendAudit(op, actor, {
      accountId: org.accountId,
      orgId: org.id,
      action: "org.rotate_secret",
      objectType: "org",
      objectId: org.id,
      summary: `Rotated the registration secret of ${org.name}`,
    }, now);
    return (await op.commit()).ok ? { value: { org: next, secret } } : null;
  });
}

/** Resolves a registration secret to its org, or null. */
export async function findOrgBySecret(kv: Deno.Kv, secret: string): Promise<Org | null> {
  const id = (await kv.get<string>(orgBySecretKey(sha256Hex(secret)))).value;
  return id ? await getOrg(kv, id) : null;
}

/**
 * Issues (or replaces) the account's registration secret, used by account-scoped BES. Returns it,
 * shown once. Needs admin over the whole account.
 */
export async function rotateAccountSecret(
  kv: Deno.Kv,
  actor: Actor,
  accountId: string,
  now: Date,
): Promise<{ account: Account; secret: string }> {
  authorize(actor, "admin", { accountId, orgId: null });
  return await withRetry(async () => {
    const entry = await kv.get<Account>(accountKey(accountId));
    const account = entry.value;
    if (!account) throw new NotFoundError("Account not found");
    const secret = `cda_${randomToken(32)}`;
    const secretHash = sha256Hex(secret);
    const next: Account = { ...account, secretHash, secretRotatedAt: now.toISOString() };
    const op = kv.atomic().check(entry).set(accountKey(accountId), next).set(
      accountBySecretKey(secretHash),
      accountId,
    );
    if (account.secretHash) op.delete(accountBySecretKey(account.secretHash));
    appendAudit(op, actor, {
      accountId,
      action: account.secretHash ? "account.rotate_secret" : "account.create_secret",
      objectType: "account",
      objectId: accountId,
      summary: `${account.secretHash ? "Rotated" : "Created"} the account registration secret`,
    }, now);
    return (await op.commit()).ok ? { value: { account: next, secret } } : null;
  });
}

/**
 * Resolves a registration secret (org first, then account) to the tenant an engine registers into:
 * an org-scoped `{ accountId, orgId }` or an account-scoped `{ accountId, orgId: null }`; null if unknown.
 */
export async function resolveRegistrationSecret(
  kv: Deno.Kv,
  secret: string,
): Promise<{ accountId: string; orgId: string | null } | null> {
  if (!/^cd[oa]_[A-Za-z0-9_-]{43}$/.test(secret)) return null;
  const hash = sha256Hex(secret);
  const [orgId, accountId] = await kv.getMany<[string, string]>([
    orgBySecretKey(hash),
    accountBySecretKey(hash),
  ]);
  if (orgId.value) {
    const org = await getOrg(kv, orgId.value);
    return org ? { accountId: org.accountId, orgId: org.id } : null;
  }
  return accountId.value ? { accountId: accountId.value, orgId: null } : null;
}
