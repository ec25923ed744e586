/**
 * The account recovery key (ENGINE.md §3 "Keys"): an RSA-OAEP-3072 key pair an administrator creates
 * once (engine/repo/recovery.ts). The private half is handed to the administrator in the reply that
 * creates it — a download — and never stored, rendered again or logged; the public half is kept with
 * the account (`["account_recovery_keys", accountId]`) and wraps every namespace's keys that the key
 * endpoint hands a BES for the repository's `keys/` (namespace_keys.ts), so `deno task repo` can open
 * the repositories with the private half alone, without the control plane.
 */
import { generateRecoveryKeyPair, RECOVERY_ALGORITHM } from "../engine/repo/recovery.ts";
import { appendAudit } from "./audit.ts";
import { ConflictError } from "./errors.ts";
import { type Actor, authorize } from "./rbac.ts";
import { recoveryKeyKey } from "./keys/recovery_keys.ts";
export { recoveryKeyKey };

export interface AccountRecoveryKey {
  accountId: string;
  /** 16 hex digits naming the pair in key objects. */
  id: string;
  algorithm: typeof RECOVERY_ALGORITHM;
  /** SPKI PEM. */
  publicPem: string;
  createdAt: string;
  /** Who created it (user id and label at the time). */
  createdBy: { id: string; label: string };
}

/** The account's recovery public key, or null before an administrator created it. */
export async function getRecoveryKey(kv: Deno.Kv, accountId: string): Promise<AccountRecoveryKey | null> {
  return (await kv.get<AccountRecoveryKey>(recoveryKeyKey(accountId))).value;
}

/**
 * Creates the account's recovery key pair: stores the public half with its audit entry in one atomic
 * operation and returns the private half (PKCS#8 PEM) for the caller to hand over once. Needs `admin`
 * over the whole account. Throws ConflictError when the account already has one (nothing changes; the
 * private half of the existing one cannot be shown again).
 */
export async function createRecoveryKey(
  kv: Deno.Kv,
  actor: Actor,
  accountId: string,
  now: Date,
): Promise<{ key: AccountRecoveryKey; privatePem: string }> {
  authorize(actor, "admin", { accountId, orgId: null });
  const existing = await kv.get<AccountRecoveryKey>(recoveryKeyKey(accountId));
  if (existing.value) throw alreadyCreated(existing.value);
  const pair = await generateRecoveryKeyPair();
  const key: AccountRecoveryKey = {
    accountId,
    id: pair.id,
    algorithm: RECOVERY_ALGORITHM,
    publicPem: pair.publicPem,
    createdAt: now.toISOString(),
    createdBy: { id: actor.id, label: actor.label },
  };
  const op = kv.atomic().check(existing).set(recoveryKeyKey(accountId), key);
  appendAudit(op, actor, {
    accountId,
    action: "account.recovery_key.create",
    objectType: "account",
    objectId: accountId,
    summary:
      `Created the account recovery key ${key.id} (${RECOVERY_ALGORITHM}); the private half was downloaded`,
  }, now);
  if (!(await op.commit()).ok) {
    const winner = await getRecoveryKey(kv, accountId);
    throw winner ? alreadyCreated(winner) : new ConflictError("The recovery key could not be created; retry");
  }
  return { key, privatePem: pair.privatePem };
}

function alreadyCreated(key: AccountRecoveryKey): ConflictError {
  return new ConflictError(
    `The account recovery key ${key.id} was already created on ${key.createdAt}; its private half was downloaded ` +
      "then and cannot be shown again",
  );
}
