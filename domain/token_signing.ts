/**
 * The control plane's own Ed25519 key for job-scoped data tokens (ENGINE.md §5). Created once, on first
 * use, and kept only in the vault (sealed under the master key, vault id `TOKEN_KEY_VAULT_ID`): the
 * private half is never rendered, logged or stored in clear. Its public half (base64url of the raw 32
 * bytes) goes to every BES in its registration reply (`tokenPublicKey`), so the BES verifies tokens
 * locally.
 */
import nodeCrypto from "node:crypto";
import { exportTokenPublicKey } from "../engine/protocol/token.ts";
import { fromBase64, toBase64Url } from "./ids.ts";
import { withRetry } from "./retry.ts";
import { openSecret, sealSecret, vaultKey, type VaultRecord } from "./vault.ts";

/** The vault record holding the token-signing key (its PKCS#8 DER, base64url). */
export const TOKEN_KEY_VAULT_ID = "control-plane-token-signing-key";
/** The purpose its vault record is sealed with. */
export const TOKEN_KEY_VAULT_PURPOSE = "token_signing_key";

export interface TokenSigningKey {
  privateKey: nodeCrypto.KeyObject;
  /** base64url of the raw 32-byte Ed25519 public key (what the registration reply carries). */
  publicKey: string;
}

/** One loaded key per database and master key (opening the vault record costs two AES decryptions). */
const cache = new WeakMap<Deno.Kv, { masterKey: Uint8Array; key: Promise<TokenSigningKey> }>();

function fromRecordText(text: string): TokenSigningKey {
  const der = fromBase64(text);
  const privateKey = nodeCrypto.createPrivateKey({
    key: der as unknown as Buffer,
    format: "der",
    type: "pkcs8",
  });
  der.fill(0);
  return { privateKey, publicKey: exportTokenPublicKey(nodeCrypto.createPublicKey(privateKey)) };
}

async function loadOrCreate(kv: Deno.Kv, masterKey: Uint8Array, now: Date): Promise<TokenSigningKey> {
  return await withRetry(
    async () => {
      const entry = await kv.get<VaultRecord>(vaultKey(TOKEN_KEY_VAULT_ID));
      if (entry.value) return { value: fromRecordText(await openSecret(masterKey, entry.value)) };
      const pair = nodeCrypto.generateKeyPairSync("ed25519");
      const der = new Uint8Array(pair.privateKey.export({ format: "der", type: "pkcs8" }));
      const record = await sealSecret(masterKey, {
        id: TOKEN_KEY_VAULT_ID,
        accountId: "",
        orgId: null,
        purpose: TOKEN_KEY_VAULT_PURPOSE,
        createdAt: now.toISOString(),
      }, toBase64Url(der));
      der.fill(0);
      // Two first uses racing: one record wins, the other reads it on the next turn.
      const res = await kv.atomic().check({ key: vaultKey(TOKEN_KEY_VAULT_ID), versionstamp: null })
        .set(vaultKey(TOKEN_KEY_VAULT_ID), record).commit();
      if (!res.ok) return null;
      return { value: { privateKey: pair.privateKey, publicKey: exportTokenPublicKey(pair.publicKey) } };
    },
    5,
    "The control plane's token-signing key could not be created; retry",
  );
}

/**
 * The control plane's token-signing key, created on first use. Throws if the vault record exists but
 * does not open under `masterKey` (a wrong master key must never silently mint a second key).
 */
export function tokenSigningKey(kv: Deno.Kv, masterKey: Uint8Array, now: Date): Promise<TokenSigningKey> {
  const cached = cache.get(kv);
  if (cached && cached.masterKey === masterKey) return cached.key;
  const key = loadOrCreate(kv, masterKey, now);
  cache.set(kv, { masterKey, key });
  // A failure is not kept: the next call tries again.
  key.catch(() => {
    if (cache.get(kv)?.key === key) cache.delete(kv);
  });
  return key;
}

/** The public half only (base64url raw 32 bytes), for the BES registration reply. */
export async function tokenPublicKey(kv: Deno.Kv, masterKey: Uint8Array, now: Date): Promise<string> {
  return (await tokenSigningKey(kv, masterKey, now)).publicKey;
}
