/**
 * Every owner of a vault record (vault.ts), in one list. The invariants' vault-ownership rule (no vault
 * record is referenced by nothing; no owner refers to a missing record; each record is sealed for its
 * owner) reads owners only from here, and so does the self-backup's test-restore verification, which
 * runs those invariants over the restored Config DB. A module that starts sealing vault records must
 * be added here: tests/integration/vault_owners_test.ts fails when a module calling `sealSecret` is not
 * listed, and when a listed owner's records are missing from its scripted scenario.
 *
 * Not vault records (and so not listed): namespace keys (wrapped by KEKs, `namespace_keys`) and account
 * recovery keys (only their public halves are stored, `account_recovery_keys`).
 */
import type { KekState } from "./keks.ts";
import type { NotificationChannel } from "./notification_channels.ts";
import type { Platform } from "./platforms.ts";
import type { StorageTarget } from "./storage.ts";
import { TOKEN_KEY_VAULT_ID, TOKEN_KEY_VAULT_PURPOSE } from "./token_signing.ts";
import { selfBackupSettingsKey } from "./keys/self_backup.ts";

/** How owners read the records that hold vault ids (the invariants' bounded reader, or a KV). */
export interface VaultOwnerReader {
  /** Every record under `[prefix]` by id. */
  all<T>(prefix: string): Promise<Map<string, T>>;
  get<T>(key: Deno.KvKey): Promise<T | null>;
}

/** One reference from an owner to a vault record. */
export interface VaultReference {
  /** The owner kind (VaultOwner.kind). */
  kind: string;
  vaultId: string;
  /** The owner in words, e.g. `storage target <id>`. */
  owner: string;
  accountId: string | null;
  /** The `purpose` the record is sealed with. */
  purpose: string;
  /** Created on first use: a missing record is not a violation. */
  optional?: boolean;
  /** The storage target holding it (a deletion cascade in progress may have removed the record). */
  storageTargetId?: string;
}

export interface VaultOwner {
  kind: string;
  /** The module under domain/ that seals its records. */
  module: string;
  references(r: VaultOwnerReader): Promise<VaultReference[]>;
}

/**
 * The references of owners that keep their secret's vault id as `credentialId`, sealed with purpose
 * `<kind>:<id>` (storage targets, platforms); `extra` adds owner-specific fields.
 */
function credentialReferences<T extends { id: string; accountId: string; credentialId: string | null }>(
  kind: string,
  label: string,
  records: Map<string, T>,
  extra: (record: T) => Partial<VaultReference> = () => ({}),
): VaultReference[] {
  return [...records.values()].flatMap((o) =>
    o.credentialId
      ? [{
        kind,
        vaultId: o.credentialId,
        owner: `${label} ${o.id}`,
        accountId: o.accountId,
        purpose: `${kind}:${o.id}`,
        ...extra(o),
      }]
      : []
  );
}

/** The owners of vault records; see the module comment. */
export const VAULT_OWNERS: readonly VaultOwner[] = [
  {
    kind: "storage_target",
    module: "storage.ts",
    async references(r) {
      const targets = await r.all<StorageTarget>("storage_targets");
      return credentialReferences(this.kind, "storage target", targets, (t) => ({ storageTargetId: t.id }));
    },
  },
  {
    // A webhook's signing secret, an SMTP channel's password.
    kind: "notification_channel",
    module: "notification_channels.ts",
    async references(r) {
      const out: VaultReference[] = [];
      for (const c of (await r.all<NotificationChannel>("notification_channels")).values()) {
        const vaultId = c.type === "webhook" ? c.secretId : c.passwordId;
        if (!vaultId) continue;
        out.push({
          kind: this.kind,
          vaultId,
          owner: `notification channel ${c.id}`,
          accountId: c.accountId,
          purpose: `notification_channel:${c.id}`,
        });
      }
      return out;
    },
  },
  {
    kind: "self_backup_s3",
    module: "self_backup_runs.ts",
    async references(r) {
      const settings = await r.get<{ s3?: { credentialId: string | null } }>(selfBackupSettingsKey());
      const vaultId = settings?.s3?.credentialId;
      return vaultId
        ? [{
          kind: this.kind,
          vaultId,
          owner: "the self-backup's S3 settings",
          accountId: null,
          purpose: "self_backup:s3",
        }]
        : [];
    },
  },
  {
    kind: "platform",
    module: "platforms.ts",
    async references(r) {
      return credentialReferences(this.kind, "platform", await r.all<Platform>("platforms"));
    },
  },
  {
    kind: "token_signing_key",
    module: "token_signing.ts",
    references() {
      return Promise.resolve([{
        kind: this.kind,
        vaultId: TOKEN_KEY_VAULT_ID,
        owner: "the control plane's token-signing key",
        accountId: null,
        purpose: TOKEN_KEY_VAULT_PURPOSE,
        optional: true,
      }]);
    },
  },
  {
    // Each held version of each KEK, of both sources (`account` and `pam_vault`).
    kind: "kek_version",
    module: "keks.ts",
    async references(r) {
      const out: VaultReference[] = [];
      for (const k of (await r.all<KekState>("keks")).values()) {
        for (const v of k.versions) {
          out.push({
            kind: this.kind,
            vaultId: v.vaultId,
            owner: `key-encryption key ${k.ref} version ${v.version}`,
            accountId: k.accountId,
            purpose: `kek:${k.ref}:v${v.version}`,
          });
        }
      }
      return out;
    },
  },
];

/** Every reference of every listed owner. */
export async function listVaultReferences(r: VaultOwnerReader): Promise<VaultReference[]> {
  const out: VaultReference[] = [];
  for (const owner of VAULT_OWNERS) out.push(...await owner.references(r));
  return out;
}

/** A VaultOwnerReader over a whole KV (unbounded; for tools and tests). */
export function kvOwnerReader(kv: Deno.Kv): VaultOwnerReader {
  return {
    async all<T>(prefix: string) {
      const out = new Map<string, T>();
      for await (const e of kv.list<T>({ prefix: [prefix] })) out.set(String(e.key[1]), e.value);
      return out;
    },
    async get<T>(key: Deno.KvKey) {
      return (await kv.get<T>(key)).value;
    },
  };
}
