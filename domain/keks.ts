/**
 * Key-encryption keys (KEKs) per KEK source (ENGINE.md §3 "Keys"). A namespace's keys are stored
 * wrapped by the KEK of their repository's KEK source, never in clear:
 *
 * - `account`: a KEK per account that the control plane holds (`account:<accountId>`).
 * - `pam_vault`: a KEK owned by an organization's vault (`pam_vault:<accountId>:<orgId>`, `account` in
 *   place of the org for account-level objects), with its own rotation, and an access audit entry for
 *   every unwrap. This is the seam where an external KMS plugs in: `KekProvider` is all the rest of the
 *   control plane sees; the built-in provider keeps each version of each KEK as a vault record sealed
 *   under the master key.
 *
 * A KEK has versions: `["keks", ref]` names the current one and the versions still in use. Wrapping
 * always uses the current version; unwrapping takes the version recorded with the wrapped secret, so a
 * rotation (namespace_keys.ts `rotateKek`) can re-wrap stored keys one record at a time and retire the
 * old version once nothing refers to it.
 */
import { appendAudit } from "./audit.ts";
import { fromBase64, toBase64Url } from "./ids.ts";
import { type Actor, systemActor } from "./rbac.ts";
import type { KekSource } from "./replicas.ts";
import { withRetry } from "./retry.ts";
import { openSecret, sealOwnedSecret, vaultKey, type VaultRecord } from "./vault.ts";
import { kekStateKey } from "./keys/keks.ts";
export { kekStateKey };

/** The reference of a KEK: which source, whose. Engines see references, never keys. */
export function kekReference(
  source: KekSource,
  accountId: string,
  orgId: string | null,
): { source: KekSource; keyId: string } {
  return source === "pam_vault"
    ? { source, keyId: `pam_vault:${accountId}:${orgId ?? "account"}` }
    : { source, keyId: `account:${accountId}` };
}

/** The versions of one KEK. */
export interface KekState {
  ref: string;
  source: KekSource;
  accountId: string;
  orgId: string | null;
  /** The version new wraps use. */
  current: number;
  /** Versions still held (the current one and any a rotation has not finished with). */
  versions: Array<{ version: number; vaultId: string; createdAt: string }>;
  createdAt: string;
  rotatedAt: string | null;
}

/** A secret wrapped by a KEK: which KEK and version, AES-256-GCM nonce and ciphertext (base64url). */
export interface WrappedSecret {
  source: KekSource;
  kekRef: string;
  kekVersion: number;
  nonce: string;
  ciphertext: string;
}

/**
 * What the control plane needs from a KEK source. The built-in `VaultKekProvider` serves both sources;
 * an external KMS for `pam_vault` implements the same four calls (wrap and unwrap then happen in the
 * KMS, and `rotate` asks it for a new version).
 */
export interface KekProvider {
  /** Every unwrap is recorded in the audit log (written with the operation that uses the secret). */
  readonly auditsUnwrap: boolean;
  /** The KEK's state, created (version 1) on first use. */
  ensure(kv: Deno.Kv, ref: KekScope, now: Date): Promise<KekState>;
  wrap(kv: Deno.Kv, ref: KekScope, plaintext: Uint8Array, aad: Uint8Array, now: Date): Promise<WrappedSecret>;
  unwrap(kv: Deno.Kv, wrapped: WrappedSecret, aad: Uint8Array): Promise<Uint8Array>;
  /** Makes a new current version; returns the state after. Stored secrets are re-wrapped by the caller. */
  rotate(kv: Deno.Kv, ref: KekScope, actor: Actor, now: Date): Promise<KekState>;
  /** Forgets the versions in `retired` (no stored secret refers to them any more). */
  retire(kv: Deno.Kv, ref: string, retired: number[]): Promise<void>;
}

/** Whose KEK of which source. */
export interface KekScope {
  source: KekSource;
  accountId: string;
  orgId: string | null;
}

const KEY_BYTES = 32;
const keyActor = systemActor("key-management");

async function aes(raw: Uint8Array, usage: "encrypt" | "decrypt"): Promise<CryptoKey> {
  return await crypto.subtle.importKey("raw", new Uint8Array(raw), "AES-GCM", false, [usage]);
}

/** The built-in provider: each KEK version is 32 random bytes in a vault record (sealed by the master key). */
export class VaultKekProvider implements KekProvider {
  constructor(private masterKey: Uint8Array, readonly auditsUnwrap: boolean) {}

  async ensure(kv: Deno.Kv, scope: KekScope, now: Date): Promise<KekState> {
    const ref = kekReference(scope.source, scope.accountId, scope.orgId).keyId;
    return await withRetry(
      async () => {
        const entry = await kv.get<KekState>(kekStateKey(ref));
        if (entry.value) return { value: entry.value };
        const at = now.toISOString();
        const vault = await this.#sealNew(scope, ref, 1, now);
        const state: KekState = {
          ref,
          source: scope.source,
          accountId: scope.accountId,
          orgId: scope.orgId,
          current: 1,
          versions: [{ version: 1, vaultId: vault.id, createdAt: at }],
          createdAt: at,
          rotatedAt: null,
        };
        const op = kv.atomic().check(entry).set(kekStateKey(ref), state).set(vaultKey(vault.id), vault);
        appendAudit(op, keyActor, {
          accountId: scope.accountId,
          orgId: scope.orgId,
          action: "kek.create",
          objectType: "kek",
          objectId: ref,
          summary: `Created the ${scope.source} key-encryption key ${ref} (version 1)`,
        }, now);
        return (await op.commit()).ok ? { value: state } : null;
      },
      10,
      `The key-encryption key could not be created; retry`,
    );
  }

  async wrap(
    kv: Deno.Kv,
    scope: KekScope,
    plaintext: Uint8Array,
    aad: Uint8Array,
    now: Date,
  ): Promise<WrappedSecret> {
    const state = await this.ensure(kv, scope, now);
    const kek = await this.#open(kv, state, state.current);
    try {
      const nonce = crypto.getRandomValues(new Uint8Array(12));
      const ct = await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: nonce, additionalData: new Uint8Array(aad) },
        await aes(kek, "encrypt"),
        new Uint8Array(plaintext),
      );
      return {
        source: state.source,
        kekRef: state.ref,
        kekVersion: state.current,
        nonce: toBase64Url(nonce),
        ciphertext: toBase64Url(new Uint8Array(ct)),
      };
    } finally {
      kek.fill(0);
    }
  }

  async unwrap(kv: Deno.Kv, wrapped: WrappedSecret, aad: Uint8Array): Promise<Uint8Array> {
    const state = (await kv.get<KekState>(kekStateKey(wrapped.kekRef))).value;
    if (!state) throw new Error(`Key-encryption key ${wrapped.kekRef} is missing`);
    const kek = await this.#open(kv, state, wrapped.kekVersion);
    try {
      return new Uint8Array(
        await crypto.subtle.decrypt(
          {
            name: "AES-GCM",
            iv: fromBase64(wrapped.nonce) as BufferSource,
            additionalData: new Uint8Array(aad),
          },
          await aes(kek, "decrypt"),
          fromBase64(wrapped.ciphertext) as BufferSource,
        ),
      );
    } catch {
      throw new Error(
        `A secret wrapped by ${wrapped.kekRef} version ${wrapped.kekVersion} does not authenticate (damaged, or moved)`,
      );
    } finally {
      kek.fill(0);
    }
  }

  async rotate(kv: Deno.Kv, scope: KekScope, actor: Actor, now: Date): Promise<KekState> {
    await this.ensure(kv, scope, now);
    const ref = kekReference(scope.source, scope.accountId, scope.orgId).keyId;
    return await withRetry(
      async () => {
        const entry = await kv.get<KekState>(kekStateKey(ref));
        const state = entry.value!;
        const version = state.current + 1;
        const vault = await this.#sealNew(scope, ref, version, now);
        const next: KekState = {
          ...state,
          current: version,
          versions: [...state.versions, { version, vaultId: vault.id, createdAt: now.toISOString() }],
          rotatedAt: now.toISOString(),
        };
        const op = kv.atomic().check(entry).set(kekStateKey(ref), next).set(vaultKey(vault.id), vault);
        appendAudit(op, actor, {
          accountId: scope.accountId,
          orgId: scope.orgId,
          action: "kek.rotate",
          objectType: "kek",
          objectId: ref,
          summary: `Rotated the ${scope.source} key-encryption key ${ref} to version ${version}`,
        }, now);
        return (await op.commit()).ok ? { value: next } : null;
      },
      10,
      "The key-encryption key changed repeatedly during the rotation; retry",
    );
  }

  async retire(kv: Deno.Kv, ref: string, retired: number[]): Promise<void> {
    await withRetry(
      async () => {
        const entry = await kv.get<KekState>(kekStateKey(ref));
        const state = entry.value;
        if (!state) return { value: undefined };
        const gone = state.versions.filter((v) => retired.includes(v.version) && v.version !== state.current);
        if (!gone.length) return { value: undefined };
        const op = kv.atomic().check(entry).set(kekStateKey(ref), {
          ...state,
          versions: state.versions.filter((v) => !gone.includes(v)),
        });
        for (const v of gone) op.delete(vaultKey(v.vaultId));
        return (await op.commit()).ok ? { value: undefined } : null;
      },
      10,
      "The key-encryption key changed repeatedly while retiring old versions; retry",
    );
  }

  async #sealNew(scope: KekScope, ref: string, version: number, now: Date): Promise<VaultRecord> {
    const kek = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
    try {
      return await sealOwnedSecret(this.masterKey, scope, `kek:${ref}:v${version}`, toBase64Url(kek), now);
    } finally {
      kek.fill(0);
    }
  }

  async #open(kv: Deno.Kv, state: KekState, version: number): Promise<Uint8Array> {
    const held = state.versions.find((v) => v.version === version);
    if (!held) throw new Error(`Key-encryption key ${state.ref} has no version ${version} any more`);
    const record = (await kv.get<VaultRecord>(vaultKey(held.vaultId))).value;
    if (!record) throw new Error(`The vault record of ${state.ref} version ${version} is missing`);
    const kek = fromBase64(await openSecret(this.masterKey, record));
    if (kek.length !== KEY_BYTES) {
      throw new Error(`Key-encryption key ${state.ref} is not ${KEY_BYTES} bytes`);
    }
    return kek;
  }
}

/**
 * The provider of each KEK source. Both are the vault today; `pam_vault` audits every unwrap. An
 * external KMS replaces the `pam_vault` entry (the only line to change).
 */
export function kekProviders(masterKey: Uint8Array): Record<KekSource, KekProvider> {
  return {
    account: new VaultKekProvider(masterKey, false),
    pam_vault: new VaultKekProvider(masterKey, true),
  };
}
