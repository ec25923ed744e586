/** First run: a one-time setup token lets the first administrator create the account. */
import { z } from "zod";
import { commitAudited } from "./audit.ts";
import { UnauthorizedError } from "./errors.ts";
import { newId, randomToken, sha256Hex, timingSafeEqual } from "./ids.ts";
import { type Argon2Params, hashPassword } from "./passwords.ts";
import { systemActor } from "./rbac.ts";
import {
  accountByNameKey,
  accountKey,
  orgByNameKey,
  orgBySecretKey,
  orgKey,
  orgsByAccountKey,
} from "./tenancy.ts";
import type { Account, Org, User } from "./types.ts";
import { DisplayName } from "./validation.ts";
import { Email, hasAnyUser, Password, userByEmailKey, userKey, usersByAccountKey } from "./users.ts";

const SETUP_KEY = ["setup", "token"] as const;
/** Set once the first administrator exists; creating it checks this key is absent. */
const INITIALIZED_KEY = ["setup", "initialized"] as const;
export const SETUP_TOKEN_TTL_MS = 24 * 3600_000;

export const SetupInput = z.object({
  token: z.string().min(1, "is required").max(200),
  accountName: DisplayName,
  orgName: DisplayName,
  name: DisplayName,
  email: Email,
  password: Password,
});
export type SetupInput = z.infer<typeof SetupInput>;

/**
 * On an empty database, issues a fresh one-time setup token (valid 24 h) and returns it for the
 * operator's console; returns null once any user exists.
 */
export async function issueSetupToken(kv: Deno.Kv, now: Date): Promise<string | null> {
  if (await hasAnyUser(kv)) return null;
  const token = randomToken(24);
  await kv.set(SETUP_KEY, { hash: sha256Hex(token), expiresAt: now.getTime() + SETUP_TOKEN_TTL_MS });
  return token;
}

/** True while the app waits for its first administrator. */
export async function needsSetup(kv: Deno.Kv): Promise<boolean> {
  return !(await kv.get(INITIALIZED_KEY)).value && !(await hasAnyUser(kv));
}

/**
 * Creates the first account, org and administrator, consuming the setup token in the same atomic
 * operation. Throws UnauthorizedError for a wrong or expired token, ConflictError when already set up.
 * `hashing`: the argon2id cost (`Config.passwordHashing`; production's when omitted).
 */
export async function completeSetup(
  kv: Deno.Kv,
  input: SetupInput,
  now: Date,
  hashing?: Argon2Params,
): Promise<{ user: User; account: Account; org: Org; orgSecret: string }> {
  const data = SetupInput.parse(input);
  const stored = await kv.get<{ hash: string; expiresAt: number }>(SETUP_KEY);
  if (
    !stored.value || now.getTime() >= stored.value.expiresAt ||
    !timingSafeEqual(stored.value.hash, sha256Hex(data.token))
  ) {
    throw new UnauthorizedError("The setup link is invalid or has expired; restart the server for a new one");
  }
  const at = now.toISOString();
  const account: Account = { id: newId(now), name: data.accountName, createdAt: at };
  const orgSecret = `cdo_${randomToken(32)}`;
  const org: Org = {
    id: newId(now),
    accountId: account.id,
    name: data.orgName,
    secretHash: sha256Hex(orgSecret),
    secretRotatedAt: at,
    createdAt: at,
    updatedAt: at,
  };
  const user: User = {
    id: newId(now),
    accountId: account.id,
    email: data.email,
    name: data.name,
    role: "admin",
    orgScope: "all",
    passwordHash: await hashPassword(data.password, hashing),
    disabled: false,
    createdAt: at,
    updatedAt: at,
  };
  const op = kv.atomic()
    .check(stored)
    .check({ key: INITIALIZED_KEY, versionstamp: null })
    .check({ key: userByEmailKey(user.email), versionstamp: null })
    .check({ key: accountByNameKey(account.name), versionstamp: null })
    .delete(SETUP_KEY)
    .set(INITIALIZED_KEY, at)
    .set(accountKey(account.id), account)
    .set(accountByNameKey(account.name), account.id)
    .set(orgKey(org.id), org)
    .set(orgsByAccountKey(account.id, org.id), org.id)
    .set(orgByNameKey(account.id, org.name), org.id)
    .set(orgBySecretKey(org.secretHash), org.id)
    .set(userKey(user.id), user)
    .set(userByEmailKey(user.email), user.id)
    .set(usersByAccountKey(account.id, user.id), user.id);
  await commitAudited(
    op,
    systemActor("setup"),
    {
      accountId: account.id,
      action: "setup.complete",
      objectType: "user",
      objectId: user.id,
      summary:
        `First-run setup: account ${account.name}, organization ${org.name}, administrator ${user.email}`,
    },
    now,
    "Setup has already been completed",
  );
  return { user, account, org, orgSecret };
}

/** Marks the database initialized (used when the CLI or demo creates the first users). */
export async function markInitialized(kv: Deno.Kv, now: Date): Promise<void> {
  await kv.atomic().delete(SETUP_KEY).set(INITIALIZED_KEY, now.toISOString()).commit();
}
