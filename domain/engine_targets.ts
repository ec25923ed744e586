/**
 * Storage targets as their own BES needs them to open repositories: type, connection config and the
 * credential secret from the vault. Delivered only to the BES that owns the target (targets are found
 * through the BES's own index, and each one's `besId` is checked again), never to anyone else. Each
 * delivery of a credential is audited — which target, to which BES, never the secret — in the same atomic
 * operation that claims the request's nonce, so a replayed request delivers nothing.
 */
import { appendAudit, auditTarget } from "./audit.ts";
import { type Engine, engineActor, engineKey } from "./engines.ts";
import { NotFoundError } from "./errors.ts";
import { getManyValues } from "./kv.ts";
import {
  type CREDENTIAL_TYPES,
  listTargetIdsOfEngine,
  type StorageTarget,
  targetKey,
  type TargetType,
} from "./storage.ts";
import { openSecret, vaultKey, type VaultRecord } from "./vault.ts";

/** One target as delivered to its BES. */
export interface DeliveredTarget {
  id: string;
  name: string;
  type: TargetType;
  config: Record<string, string | number>;
  /** null when the target has no credentials. */
  credentials: {
    username: string;
    credentialType: (typeof CREDENTIAL_TYPES)[number] | null;
    secret: string;
  } | null;
  updatedAt: string;
}

/**
 * The storage targets of engine `engineId` (all of them, or those of `targetIds` that are its own), with
 * their credential secrets opened from the vault. Writes one audit entry per delivered credential and claims
 * `nonce` in one atomic operation; `replayed: true` (and no targets) when the nonce was already used.
 * Throws NotFoundError when the engine is gone or being deleted.
 */
export async function deliverTargetsToEngine(
  kv: Deno.Kv,
  engineId: string,
  masterKey: Uint8Array,
  options: { targetIds?: string[]; nonce: { key: Deno.KvKey; expireIn: number } },
  now: Date,
): Promise<{ targets: DeliveredTarget[]; replayed: boolean }> {
  const engineEntry = await kv.get<Engine>(engineKey(engineId));
  const engine = engineEntry.value;
  if (!engine || engine.status === "deleting") throw new NotFoundError("Engine not found");
  let ids = await listTargetIdsOfEngine(kv, engineId);
  if (options.targetIds) {
    const wanted = new Set(options.targetIds);
    ids = ids.filter((id) => wanted.has(id));
  }
  // The BES index names the targets; each target's own besId is checked too (belt and braces).
  const targets = (await getManyValues<StorageTarget>(kv, ids.map(targetKey)))
    .filter((t) => t.besId === engineId)
    .sort((a, b) => a.id.localeCompare(b.id));
  const withCredentials = targets.filter((t) => t.credentialId);
  const vault = new Map(
    (await getManyValues<VaultRecord>(kv, withCredentials.map((t) => vaultKey(t.credentialId!))))
      .map((r) => [r.id, r]),
  );
  const delivered: DeliveredTarget[] = [];
  const op = kv.atomic()
    .check({ key: options.nonce.key, versionstamp: null })
    .set(options.nonce.key, now.getTime(), { expireIn: options.nonce.expireIn });
  for (const t of targets) {
    const record = t.credentialId ? vault.get(t.credentialId) : undefined;
    let credentials: DeliveredTarget["credentials"] = null;
    if (record) {
      credentials = {
        username: t.credentialUsername ?? "",
        credentialType: t.credentialType,
        secret: await openSecret(masterKey, record),
      };
      appendAudit(op, engineActor(engine), {
        ...auditTarget("storage_target", t),
        action: "storage_target.credentials_delivered",
        summary: `Delivered the credentials of storage target ${t.name} (${t.credentialType ?? "secret"}${
          t.credentialUsername ? ` of ${t.credentialUsername}` : ""
        }) to its BES ${engine.name}`,
      }, now);
    }
    delivered.push({
      id: t.id,
      name: t.name,
      type: t.type,
      config: t.config,
      credentials,
      updatedAt: t.updatedAt,
    });
  }
  if (!(await op.commit()).ok) return { targets: [], replayed: true };
  return { targets: delivered, replayed: false };
}
