/**
 * The vault: credentials encrypted at rest with AES-256-GCM envelope encryption. Each secret gets its
 * own data key; the data key is wrapped with the master key. The secret id is bound as additional
 * data, so a ciphertext moved to another id does not decrypt. Plaintext never leaves the domain
 * except to the engine that needs it.
 */
import { fromBase64, newId, toBase64Url } from "./ids.ts";
import { vaultKey } from "./keys/vault.ts";
export { vaultKey };

/** What a write that seals a secret in the vault needs: the time it runs at and the master key. */
export interface SealingOptions {
  now: Date;
  masterKey: Uint8Array;
}

export interface VaultRecord {
  id: string;
  accountId: string;
  orgId: string | null;
  /** What the secret is for, e.g. `storage_target:<id>`. */
  purpose: string;
  iv: string;
  ciphertext: string;
  wrapIv: string;
  wrappedKey: string;
  createdAt: string;
}

async function aesKey(raw: Uint8Array): Promise<CryptoKey> {
  return await crypto.subtle.importKey("raw", raw as BufferSource, { name: "AES-GCM" }, false, [
    "encrypt",
    "decrypt",
  ]);
}

/**
 * Seals a new secret of an account (and org) under a new vault id; `purpose` says what it is for, e.g.
 * `storage_target:<id>`.
 */
export async function sealOwnedSecret(
  masterKey: Uint8Array,
  owner: { accountId: string; orgId: string | null },
  purpose: string,
  plaintext: string,
  now: Date,
): Promise<VaultRecord> {
  return await sealSecret(masterKey, {
    id: newId(now),
    accountId: owner.accountId,
    orgId: owner.orgId,
    purpose,
    createdAt: now.toISOString(),
  }, plaintext);
}

/** Encrypts `plaintext` for storage under `id`. */
export async function sealSecret(
  masterKey: Uint8Array,
  meta: Omit<VaultRecord, "iv" | "ciphertext" | "wrapIv" | "wrappedKey">,
  plaintext: string,
): Promise<VaultRecord> {
  const aad = new TextEncoder().encode(`cadres-vault:${meta.id}`);
  const dataKey = crypto.getRandomValues(new Uint8Array(32));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const wrapIv = crypto.getRandomValues(new Uint8Array(12));
  const ciphertext = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv, additionalData: aad },
    await aesKey(dataKey),
    new TextEncoder().encode(plaintext),
  );
  const wrappedKey = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: wrapIv, additionalData: aad },
    await aesKey(masterKey),
    dataKey,
  );
  dataKey.fill(0);
  return {
    ...meta,
    iv: toBase64Url(iv),
    ciphertext: toBase64Url(new Uint8Array(ciphertext)),
    wrapIv: toBase64Url(wrapIv),
    wrappedKey: toBase64Url(new Uint8Array(wrappedKey)),
  };
}

/** Decrypts a vault record. Throws if the master key is wrong or the record was tampered with. */
export async function openSecret(masterKey: Uint8Array, record: VaultRecord): Promise<string> {
  const aad = new TextEncoder().encode(`cadres-vault:${record.id}`);
  const dataKey = new Uint8Array(
    await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: fromBase64(record.wrapIv) as BufferSource, additionalData: aad },
      await aesKey(masterKey),
      fromBase64(record.wrappedKey) as BufferSource,
    ),
  );
  const plaintext = await crypto.subtle.decrypt(
    { name: "AES-GCM", iv: fromBase64(record.iv) as BufferSource, additionalData: aad },
    await aesKey(dataKey),
    fromBase64(record.ciphertext) as BufferSource,
  );
  dataKey.fill(0);
  return new TextDecoder().decode(plaintext);
}

/**
 * Adds a rotation to `op`: the new vault record is written and the one it replaces (`previousId`, if
 * any) deleted, in the same atomic operation as the record that points to it.
 */
export function replaceVaultRecord(
  op: Deno.AtomicOperation,
  previousId: string | null,
  record: VaultRecord,
): void {
  if (previousId) op.delete(vaultKey(previousId));
  op.set(vaultKey(record.id), record);
}

/** The plaintext of the vault record `id`, or null when the record is gone. */
export async function readVaultSecret(
  kv: Deno.Kv,
  masterKey: Uint8Array,
  id: string,
): Promise<string | null> {
  const record = (await kv.get<VaultRecord>(vaultKey(id))).value;
  return record ? await openSecret(masterKey, record) : null;
}
