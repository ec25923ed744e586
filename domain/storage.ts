/**
 * Storage targets: per-type connection config, thresholds, credentials in the vault, FK RESTRICT
 * against policies (DESIGN.md invariant 1), capacity reports with EWMA growth and health transitions
 * (alerts, auto-pause and auto-resume of policies), and capacity history (fine samples + daily roll-up).
 */
import { hostsByAccountPrefix } from "./keys/hosts.ts";
import { policiesByBesPrefix, policyKey } from "./keys/policies.ts";
import { replicaKey, replicasByTargetPrefix } from "./keys/replicas.ts";
import {
  capacityDailyPrefix,
  capacitySamplesPrefix,
  storageCheckKey as storageCheckKeyOf,
  storageChecksPrefix,
  targetsByAccountPrefix,
  targetsByBesPrefix,
} from "./keys/storage.ts";
import { z } from "zod";
import {
  capacityDailyKey,
  capacitySampleKey,
  targetKey,
  targetsByAccountKey,
  targetsByBesKey,
  targetScope,
} from "./storage_keys.ts";
import { TARGET_TYPE_LABELS, TARGET_TYPES, type TargetType } from "./storage_types.ts";
import { raiseAlert, readOpenAlert, resolveAlert } from "./alerts.ts";
import { appendAudit, auditTarget, commitAudited } from "./audit.ts";
import { type CapacitySample, type CapacityState, nextCapacityState } from "./capacity.ts";
import {
  type Engine,
  engineKey,
  engineOnlineAt,
  engineScope,
  heartbeatCommitter,
  registerEngineCascade,
} from "./engines.ts";
import { AtomicRecorder } from "./group_commit.ts";
import { groupReader } from "./group_read.ts";
import { type Host, hostKey, hostOnlineAt } from "./hosts.ts";
import { ConflictError, NotFoundError, ValidationError } from "./errors.ts";
import { newId } from "./ids.ts";
import { type Job, jobKey, queueJobInOp } from "./job_queue.ts";
import { deleteByPointerIndex, deleteKeysUnder, scopedList } from "./pointer_index.ts";
import { getManyValues, withRetry } from "./kv.ts";
import { CommitConflictError } from "./retry.ts";
import { countPointsOnTarget } from "./repositories.ts";
import { deletePolicyCascade, listPoliciesByTarget } from "./policies.ts";
import { pausePoliciesForStorage, resumePoliciesForStorage } from "./storage_auto_pause.ts";
import { type Actor, authorize, inScope } from "./rbac.ts";
import { DisplayName } from "./validation.ts";
import {
  readVaultSecret,
  replaceVaultRecord,
  type SealingOptions,
  sealOwnedSecret,
  vaultKey,
} from "./vault.ts";
import { lenientFilter, LimitField, OffsetField, strictQuery } from "./list_filters.ts";

export { TARGET_TYPE_LABELS, TARGET_TYPES, type TargetType };
export const CREDENTIAL_TYPES = ["access_key", "password", "chap_secret", "api_token"] as const;

/** Capacity samples kept at full resolution; older history is the daily roll-up. */
export const FINE_RETENTION_MS = 48 * 3600_000;
/** Daily roll-ups kept. */
export const HISTORY_DAYS = 365;

const HostOrIp = z.string({ error: "is required" }).trim().min(1, "is required").max(
  253,
  "must be at most 253 characters",
).refine(
  (v) =>
    z.ipv4().safeParse(v).success || z.ipv6().safeParse(v).success ||
    /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$/.test(v),
  "must be a hostname or IP address",
);

const AbsolutePath = z.string({ error: "is required" }).trim().min(1, "is required").max(
  1024,
  "must be at most 1024 characters",
)
  .regex(/^\//, "must be an absolute path starting with /")
  .refine((v) => !v.split("/").includes(".."), "must not contain ..")
  .refine((v) => !/\p{Cc}/u.test(v), "must not contain control characters");

/** S3 bucket naming rules (AWS): 3–63 chars, lowercase letters, digits, dots, hyphens, and more. */
export const BucketName = z.string({ error: "is required" }).trim().superRefine((v, ctx) => {
  const fail = (message: string) => ctx.addIssue({ code: "custom", message });
  if (v.length < 3 || v.length > 63) return fail("must be 3–63 characters long");
  if (!/^[a-z0-9.-]+$/.test(v)) return fail("may contain only lowercase letters, digits, dots and hyphens");
  if (!/^[a-z0-9].*[a-z0-9]$/.test(v)) return fail("must begin and end with a letter or digit");
  if (v.includes("..")) return fail("must not contain two adjacent dots");
  if (/^\d+\.\d+\.\d+\.\d+$/.test(v)) return fail("must not be formatted as an IP address");
  if (v.startsWith("xn--") || v.startsWith("sthree-")) return fail("must not start with xn-- or sthree-");
  if (v.endsWith("-s3alias") || v.endsWith("--ol-s3")) return fail("must not end with -s3alias or --ol-s3");
});

const S3Prefix = z.string().trim().max(512, "must be at most 512 characters")
  .refine((v) => !v.startsWith("/"), "must not start with /")
  .refine((v) => !v.split("/").includes(".."), "must not contain ..");

const S3Config = z.object({
  endpoint: z.url({
    protocol: /^https?$/,
    error: "must be an http(s) URL, e.g. https://s3.eu-west-1.amazonaws.com",
  }),
  bucket: BucketName,
  region: z.string({ error: "is required" }).trim().regex(
    /^[a-z]{2}(-gov)?-[a-z]+-\d$/,
    "must be an AWS region such as eu-west-1",
  ),
  prefix: S3Prefix.default(""),
});
const S3CompatibleConfig = S3Config.extend({
  region: z.string().trim().regex(/^[a-z0-9-]{1,50}$/, "must be a region name such as us-east-1 or auto")
    .default("us-east-1"),
});
const SmbConfig = z.object({
  server: HostOrIp,
  share: z.string({ error: "is required" }).trim().min(1, "is required").max(
    80,
    "must be at most 80 characters",
  )
    .regex(/^[^\\/:*?"<>|]+$/, 'must not contain \\ / : * ? " < > |'),
  path: z.string().trim().max(1024).regex(/^[^:*?"<>|]*$/, 'must not contain : * ? " < > |').default(""),
});
const NfsConfig = z.object({
  server: HostOrIp,
  exportPath: AbsolutePath,
  mountOptions: z.string().trim().max(500).regex(
    /^$|^[a-z0-9_]+(=[^,\s]+)?(,[a-z0-9_]+(=[^,\s]+)?)*$/,
    "must be comma-separated options such as vers=4.1,hard,timeo=600",
  ).default(""),
});
export const Iqn = z.string({ error: "is required" }).trim().regex(
  /^(iqn\.\d{4}-(0[1-9]|1[0-2])\.[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:[^\s]{1,200})?|eui\.[0-9A-Fa-f]{16})$/,
  "must be an IQN such as iqn.2004-05.com.example:storage.disk1 (or eui. followed by 16 hex digits)",
);
const IscsiConfig = z.object({
  portal: z.string({ error: "is required" }).trim().superRefine((v, ctx) => {
    const m = /^(\[[0-9a-fA-F:]+\]|[^:\s]+)(?::(\d{1,5}))?$/.exec(v);
    const host = m?.[1]?.replace(/^\[|\]$/g, "");
    if (
      !m || !host || !HostOrIp.safeParse(host).success || (m[2] && (Number(m[2]) < 1 || Number(m[2]) > 65535))
    ) {
      ctx.addIssue({ code: "custom", message: "must be host:port, e.g. 10.0.0.5:3260" });
    }
  }),
  iqn: Iqn,
  lun: z.preprocess(
    (v) => (v === "" || v === undefined || v === null ? undefined : Number(v)),
    z.number({
      error: (issue) => issue.input === undefined ? "is required" : "must be a whole number 0–16383",
    })
      .int("must be a whole number 0–16383").min(0, "must be a whole number 0–16383")
      .max(16383, "must be a whole number 0–16383"),
  ),
});
const LocalConfig = z.object({ path: AbsolutePath });

export const TargetConfig = z.discriminatedUnion("type", [
  z.object({ type: z.literal("s3"), config: S3Config }),
  z.object({ type: z.literal("s3_compatible"), config: S3CompatibleConfig }),
  z.object({ type: z.literal("smb"), config: SmbConfig }),
  z.object({ type: z.literal("nfs"), config: NfsConfig }),
  z.object({ type: z.literal("iscsi"), config: IscsiConfig }),
  z.object({ type: z.literal("local"), config: LocalConfig }),
], { error: `type must be one of ${TARGET_TYPES.join(", ")}` });

export const Credentials = z.object({
  username: z.string().trim().max(200, "must be at most 200 characters").default(""),
  secret: z.string().min(1, "is required").max(4096, "must be at most 4096 characters"),
  credentialType: z.enum(CREDENTIAL_TYPES, { error: `must be one of ${CREDENTIAL_TYPES.join(", ")}` }),
});

/** Thresholds in percent; the critical one must exceed the alert one. One rule for form, API and domain. */
export const Thresholds = z.object({
  alertThreshold: z.coerce.number({ error: "must be a number" }).int("must be a whole number")
    .min(1, "must be 1–99").max(99, "must be 1–99").default(85),
  criticalThreshold: z.coerce.number({ error: "must be a number" }).int("must be a whole number")
    .min(2, "must be 2–100").max(100, "must be 2–100").default(95),
}).refine((t) => t.criticalThreshold > t.alertThreshold, {
  path: ["criticalThreshold"],
  message: "must be higher than the alert threshold",
});

export const TargetCreateInput = z.object({
  name: DisplayName,
  besId: z.string().min(1, "is required").max(40),
  credentials: Credentials.optional(),
}).and(TargetConfig).and(Thresholds);
export type TargetCreateInput = z.input<typeof TargetCreateInput>;

export const TargetUpdateInput = z.object({
  name: DisplayName,
  /** New credentials replace the stored ones (rotation); absent keeps them. */
  credentials: Credentials.optional(),
  removeCredentials: z.boolean().default(false),
}).and(TargetConfig).and(Thresholds);
export type TargetUpdateInput = z.input<typeof TargetUpdateInput>;

export type TargetHealth = "unknown" | "healthy" | "warning" | "critical";

/** The alerts a storage target can have open (resolved when it is deleted). */
const TARGET_ALERT_REASONS = ["storage_warning", "storage_critical", "storage_full_soon"] as const;

export interface StorageTarget {
  id: string;
  accountId: string;
  orgId: string | null;
  besId: string;
  name: string;
  type: TargetType;
  config: Record<string, string | number>;
  alertThreshold: number;
  criticalThreshold: number;
  /** Vault record id; the secret itself never leaves the vault except to the engine. */
  credentialId: string | null;
  /** Non-secret credential facts, shown to operators. */
  credentialUsername: string | null;
  credentialType: (typeof CREDENTIAL_TYPES)[number] | null;
  credentialRotatedAt: string | null;
  /** Number of policies referencing this target; a policy create/delete writes it, so FK checks are atomic. */
  policyCount: number;
  health: TargetHealth;
  capacity: CapacityState | null;
  createdAt: string;
  updatedAt: string;
}

export { capacityDailyKey, capacitySampleKey, targetKey, targetsByAccountKey, targetsByBesKey, targetScope };

/** The message when credentials meet an account-scoped BES (the guide's fail-closed rule). */
export const ACCOUNT_SCOPED_CREDENTIALS =
  "Credentialed storage targets need an organization-scoped BES: this BES is account-scoped, and vault " +
  "identities belong to an organization. Create the target without credentials, or use an org-scoped BES.";

export async function getTarget(kv: Deno.Kv, id: string): Promise<StorageTarget | null> {
  return (await kv.get<StorageTarget>(targetKey(id))).value;
}

/** Returns the target if the actor may see it; throws NotFoundError otherwise. */
export async function requireTarget(kv: Deno.Kv, actor: Actor, id: string): Promise<StorageTarget> {
  const t = await getTarget(kv, id);
  if (!t || !inScope(actor, targetScope(t))) throw new NotFoundError(`Storage target ${id} not found`);
  return t;
}

/**
 * Runs `change` on the target's entry in a checked write retried on conflict (`withRetry`): the target
 * must be in the actor's scope (else NotFoundError) and the actor needs backup.manage on it.
 */
async function withTargetForChange<T>(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  change: (entry: Deno.KvEntry<StorageTarget>) => Promise<{ value: T } | null>,
): Promise<T> {
  return await withRetry(async () => {
    const entry = await kv.get<StorageTarget>(targetKey(id));
    const target = entry.value;
    if (!target || !inScope(actor, targetScope(target))) {
      throw new NotFoundError(`Storage target ${id} not found`);
    }
    authorize(actor, "backup.manage", targetScope(target));
    return await change(entry as Deno.KvEntry<StorageTarget>);
  });
}

type TargetCredentialFields = Pick<
  StorageTarget,
  "credentialId" | "credentialUsername" | "credentialType" | "credentialRotatedAt"
>;

/** The credential fields of a target without credentials. */
const NO_CREDENTIALS: TargetCredentialFields = {
  credentialId: null,
  credentialUsername: null,
  credentialType: null,
  credentialRotatedAt: null,
};

/**
 * Seals a target's new credentials in the vault, owned by the target's org, and returns the vault
 * record with the target's credential fields. Throws ValidationError (field `credentials`) for an
 * account-scoped BES: vault identities belong to an organization.
 */
async function sealTargetCredentials(
  owner: { accountId: string; orgId: string | null },
  targetId: string,
  credentials: z.output<typeof Credentials>,
  { now, masterKey }: SealingOptions,
): Promise<{ vault: Awaited<ReturnType<typeof sealOwnedSecret>>; fields: TargetCredentialFields }> {
  if (owner.orgId === null) {
    throw new ValidationError(ACCOUNT_SCOPED_CREDENTIALS, { credentials: ACCOUNT_SCOPED_CREDENTIALS });
  }
  const vault = await sealOwnedSecret(
    masterKey,
    owner,
    `storage_target:${targetId}`,
    credentials.secret,
    now,
  );
  const fields = {
    credentialId: vault.id,
    credentialUsername: credentials.username || null,
    credentialType: credentials.credentialType,
    credentialRotatedAt: now.toISOString(),
  };
  return { vault, fields };
}

/** Ids of the targets of an engine. */
export async function listTargetIdsOfEngine(kv: Deno.Kv, besId: string): Promise<string[]> {
  const ids: string[] = [];
  for await (const e of kv.list<string>({ prefix: targetsByBesPrefix(besId) })) ids.push(e.value);
  return ids;
}

const TARGET_HEALTHS = ["unknown", "healthy", "warning", "critical"] as const;
const TARGET_SORTS = ["name", "-name", "usage", "-usage", "health", "-health"] as const;

/** The filter fields of the Storage page, once: the page reads them leniently, the API strictly. */
const TARGET_FILTER_FIELDS = {
  q: z.string().trim().max(200, "must be at most 200 characters"),
  besId: z.string().max(40, "must be a BES id"),
  type: z.enum(["", ...TARGET_TYPES], { error: `must be one of ${TARGET_TYPES.join(", ")}` }),
  health: z.enum(["", ...TARGET_HEALTHS], { error: `must be one of ${TARGET_HEALTHS.join(", ")}` }),
  sort: z.enum(TARGET_SORTS, { error: `must be one of ${TARGET_SORTS.join(", ")}` }),
  offset: OffsetField,
  limit: LimitField,
};

const TARGET_FILTER_DEFAULTS = {
  q: "",
  besId: "",
  type: "",
  health: "",
  sort: "name",
  offset: 0,
  limit: 50,
} as const;

/** Filters of the targets list; every field falls back to its default, so a raw query object parses. */
export const TargetFilter = lenientFilter(TARGET_FILTER_FIELDS, TARGET_FILTER_DEFAULTS);
export type TargetFilter = z.infer<typeof TargetFilter>;

/** The same filters as a strict query (`GET /api/v1/storage`): a bad value is refused (422 naming it). */
export const TargetQuery = strictQuery(TARGET_FILTER_FIELDS, TARGET_FILTER_DEFAULTS);

/** Health from best to worst (the Storage page's health sort). */
const HEALTH_RANK = { unknown: 0, healthy: 1, warning: 2, critical: 3 };

/** Targets in the actor's scope, filtered and sorted; `total` before paging. */
export const listTargets = scopedList<StorageTarget, TargetFilter>({
  index: (filter) => ({
    prefix: (accountId) =>
      filter.besId ? targetsByBesPrefix(filter.besId) : targetsByAccountPrefix(accountId),
    key: targetKey,
    scope: targetScope,
  }),
  match: (filter) => {
    const needle = filter.q.toLowerCase();
    return (t) =>
      (!filter.type || t.type === filter.type) && (!filter.health || t.health === filter.health) &&
      (!needle || t.name.toLowerCase().includes(needle));
  },
  compare: (a, b, field) =>
    field === "usage"
      ? (a.capacity?.usagePercent ?? -1) - (b.capacity?.usagePercent ?? -1)
      : field === "health"
      ? HEALTH_RANK[a.health] - HEALTH_RANK[b.health]
      : a.name.localeCompare(b.name),
});

/**
 * Creates a target on a BES. Credentials go to the vault in the same atomic operation. Refuses
 * credentials on an account-scoped BES, and a BES that is being deleted. Needs backup.manage.
 */
export async function createTarget(
  kv: Deno.Kv,
  actor: Actor,
  input: TargetCreateInput,
  options: SealingOptions,
): Promise<StorageTarget> {
  const data = TargetCreateInput.parse(input);
  const { now, masterKey } = options;
  return await withRetry(async () => {
    const engineEntry = await kv.get<Engine>(engineKey(data.besId));
    const engine = engineEntry.value;
    if (!engine || !inScope(actor, engineScope(engine))) {
      throw new ValidationError("Unknown BES", { besId: "Choose a BES you can see" });
    }
    authorize(actor, "backup.manage", engineScope(engine));
    if (engine.status === "deleting") throw new ConflictError("This BES is being deleted");
    const at = now.toISOString();
    const id = newId(now);
    const sealed = data.credentials
      ? await sealTargetCredentials(engine, id, data.credentials, { now, masterKey })
      : null;
    const vault = sealed?.vault ?? null;
    const target: StorageTarget = {
      id,
      accountId: engine.accountId,
      orgId: engine.orgId,
      besId: engine.id,
      name: data.name,
      type: data.type,
      config: data.config as Record<string, string | number>,
      alertThreshold: data.alertThreshold,
      criticalThreshold: data.criticalThreshold,
      ...(sealed?.fields ?? NO_CREDENTIALS),
      policyCount: 0,
      health: "unknown",
      capacity: null,
      createdAt: at,
      updatedAt: at,
    };
    const op = kv.atomic()
      .check(engineEntry)
      .set(engineKey(engine.id), { ...engine, storageTargetIds: [...engine.storageTargetIds, id] })
      .set(targetKey(id), target)
      .set(targetsByBesKey(engine.id, id), id)
      .set(targetsByAccountKey(engine.accountId, id), id);
    if (vault) op.set(vaultKey(vault.id), vault);
    appendAudit(op, actor, {
      ...auditTarget("storage_target", target),
      action: "storage_target.create",
      summary:
        `Created ${TARGET_TYPE_LABELS[target.type]} storage target ${target.name} on BES ${engine.name}` +
        (vault ? " with credentials" : ""),
    }, now);
    return (await op.commit()).ok ? { value: target } : null;
  });
}

/**
 * Updates name, connection config and thresholds; new credentials replace the stored ones (rotation),
 * `removeCredentials` drops them. The type and BES never change.
 */
export async function updateTarget(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: TargetUpdateInput,
  options: SealingOptions,
): Promise<StorageTarget> {
  const data = TargetUpdateInput.parse(input);
  const { now, masterKey } = options;
  return await withTargetForChange(kv, actor, id, async (entry) => {
    const target = entry.value;
    const engineEntry = await kv.get<Engine>(engineKey(target.besId));
    if (!engineEntry.value || engineEntry.value.status === "deleting") {
      throw new ConflictError("The BES of this storage target is being deleted");
    }
    if (data.type !== target.type) {
      throw new ValidationError("The type of a storage target cannot change", { type: "Cannot change" });
    }
    const at = now.toISOString();
    const op = kv.atomic().check(entry, engineEntry);
    let next: StorageTarget = {
      ...target,
      name: data.name,
      config: data.config as Record<string, string | number>,
      alertThreshold: data.alertThreshold,
      criticalThreshold: data.criticalThreshold,
      updatedAt: at,
    };
    let credentialNote = "";
    if (data.credentials) {
      const { vault, fields } = await sealTargetCredentials(target, id, data.credentials, { now, masterKey });
      replaceVaultRecord(op, target.credentialId, vault);
      next = { ...next, ...fields };
      credentialNote = target.credentialId ? "; rotated credentials" : "; added credentials";
    } else if (data.removeCredentials && target.credentialId) {
      op.delete(vaultKey(target.credentialId));
      next = { ...next, ...NO_CREDENTIALS };
      credentialNote = "; removed credentials";
    }
    op.set(targetKey(id), next);
    appendAudit(op, actor, {
      ...auditTarget("storage_target", target),
      action: "storage_target.update",
      summary:
        `Updated storage target ${next.name} (alert ${next.alertThreshold}%, critical ${next.criticalThreshold}%)` +
        credentialNote,
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  });
}

/** Names of the policies writing to a target as their primary, and of those replicating to it. */
export async function targetReferences(
  kv: Deno.Kv,
  id: string,
): Promise<{ policies: string[]; replicaPolicies: string[] }> {
  const policies = (await listPoliciesByTarget(kv, id)).map((p) => p.name);
  const replicaPolicies: string[] = [];
  for await (const r of kv.list<string>({ prefix: replicasByTargetPrefix(id) })) {
    const rule = (await kv.get<{ policyId: string }>(replicaKey(r.value))).value;
    const p = rule ? (await kv.get<{ name: string }>(policyKey(rule.policyId))).value : null;
    if (p) replicaPolicies.push(p.name);
  }
  return { policies, replicaPolicies };
}

/** "policies A, B and replica rules of C" (empty when nothing references the target). */
export function describeReferences(refs: { policies: string[]; replicaPolicies: string[] }): string {
  return [
    refs.policies.length ? `policies ${refs.policies.join(", ")}` : "",
    refs.replicaPolicies.length ? `replica rules of ${refs.replicaPolicies.join(", ")}` : "",
  ].filter(Boolean).join(" and ");
}

/**
 * Deletes a target with its vault credential and capacity history. Refused while policies reference
 * it (the message names them) or while it holds restore points (the message counts them). Atomic against a concurrent policy create, which writes `policyCount`.
 */
export async function deleteTarget(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<void> {
  await withTargetForChange(kv, actor, id, async (entry) => {
    const target = entry.value;
    const { policies, replicaPolicies } = await targetReferences(kv, id);
    // Restore points keep their repository (ENGINE.md §3): a target holding any is not deleted, even
    // once no policy writes to it any more (an older generation, a deleted policy).
    const held = await countPointsOnTarget(kv, id);
    if (held.count > 0) {
      throw new ConflictError(
        `Storage target ${target.name} still holds ${held.count} restore point${
          held.count === 1 ? "" : "s"
        } ` +
          `(for example ${held.sample.join(", ")}). It can be deleted once they have expired under their ` +
          "policies' retention (or have been expired by hand).",
      );
    }
    if (target.policyCount > 0 || policies.length > 0) {
      throw new ConflictError(
        `Storage target ${target.name} is used by ${
          describeReferences({ policies, replicaPolicies }) || `${target.policyCount} references`
        }. ` +
          "Remove or reassign those first.",
      );
    }
    const engineEntry = await kv.get<Engine>(engineKey(target.besId));
    const op = kv.atomic().check(entry).delete(targetKey(id))
      .delete(targetsByBesKey(target.besId, id))
      .delete(targetsByAccountKey(target.accountId, id));
    if (engineEntry.value) {
      op.check(engineEntry).set(engineKey(target.besId), {
        ...engineEntry.value,
        storageTargetIds: engineEntry.value.storageTargetIds.filter((t) => t !== id),
      });
    }
    if (target.credentialId) op.delete(vaultKey(target.credentialId));
    for (const reason of TARGET_ALERT_REASONS) {
      resolveAlert(op, await readOpenAlert(kv, "storage_target", id, reason), now);
    }
    appendAudit(op, actor, {
      ...auditTarget("storage_target", target),
      action: "storage_target.delete",
      summary: `Deleted storage target ${target.name}${
        target.credentialId ? " and its vault credential" : ""
      }`,
    }, now);
    return (await op.commit()).ok ? { value: undefined } : null;
  });
  await purgeTargetHistory(kv, id);
}

async function purgeTargetHistory(kv: Deno.Kv, id: string): Promise<void> {
  for (const prefix of [capacitySamplesPrefix(id), capacityDailyPrefix(id), storageChecksPrefix(id)]) {
    await deleteKeysUnder(kv, prefix);
  }
}

/** Decrypts a target's credential for the engine that needs it. Never call this for a page or API reply. */
export async function revealTargetSecret(
  kv: Deno.Kv,
  target: StorageTarget,
  masterKey: Uint8Array,
): Promise<string | null> {
  if (!target.credentialId) return null;
  return await readVaultSecret(kv, masterKey, target.credentialId);
}

/** One day of the capacity roll-up: the day's last report and its peak usage. */
export interface CapacityDay {
  day: string;
  totalBytes: number;
  usedBytes: number;
  freeBytes: number;
  usagePercent: number;
  peakUsagePercent: number;
  growthBytesPerDay: number | null;
}

type CapacityReport = { targetId: string } & Omit<CapacitySample, "at">;

/**
 * Adds BES capacity reports for the engine's own targets to `op`: new capacity state (EWMA growth,
 * time-to-full, health), a fine sample, the day's roll-up and the alert transitions, each guarded by a
 * check of the entries read. Reports for targets of other engines are ignored. Returns what must run
 * after the commit: pausing policies of targets that turned critical, resuming those that recovered.
 */
export async function addCapacityReports(
  kv: Deno.Kv,
  op: Deno.AtomicOperation,
  engineId: string,
  reports: CapacityReport[],
  now: Date,
): Promise<
  { targets: StorageTarget[]; afterCommit: () => Promise<{ paused: string[]; resumed: string[] }> }
> {
  const day = now.toISOString().slice(0, 10);
  const keys = reports.flatMap((r) => [targetKey(r.targetId), capacityDailyKey(r.targetId, day)]);
  const entries: Deno.KvEntryMaybe<unknown>[] = [];
  if (keys.length <= 10) {
    // A heartbeat's few reports: read with the concurrent heartbeats' reads (domain/group_read.ts; as fresh
    // as a read issued now, and checked in the write as before).
    const reader = groupReader(kv);
    entries.push(...await Promise.all(keys.map((key) => reader.get(key))));
  } else for (let i = 0; i < keys.length; i += 10) entries.push(...await kv.getMany(keys.slice(i, i + 10)));
  const targets: StorageTarget[] = [];
  const toPause: string[] = [];
  const toResume: string[] = [];
  for (const [i, report] of reports.entries()) {
    const entry = entries[2 * i] as Deno.KvEntryMaybe<StorageTarget>;
    const dayEntry = entries[2 * i + 1] as Deno.KvEntryMaybe<CapacityDay>;
    const target = entry.value;
    if (!target || target.besId !== engineId) continue;
    const sample: CapacitySample = {
      at: now.toISOString(),
      totalBytes: report.totalBytes,
      usedBytes: report.usedBytes,
      freeBytes: report.freeBytes,
    };
    const state = nextCapacityState(target.capacity, sample, target);
    const next: StorageTarget = { ...target, capacity: state, health: state.status };
    const rollup: CapacityDay = {
      day,
      totalBytes: sample.totalBytes,
      usedBytes: sample.usedBytes,
      freeBytes: sample.freeBytes,
      usagePercent: state.usagePercent,
      peakUsagePercent: Math.max(state.usagePercent, dayEntry.value?.peakUsagePercent ?? 0),
      growthBytesPerDay: state.growthBytesPerDay,
    };
    op.check(entry, dayEntry)
      .set(targetKey(target.id), next)
      .set(capacitySampleKey(target.id, now.getTime()), state, { expireIn: FINE_RETENTION_MS + 3600_000 })
      .set(capacityDailyKey(target.id, day), rollup);
    if (target.health !== state.status) await addHealthTransition(kv, op, target, state, now);
    if ((target.capacity?.fullSoon ?? false) !== state.fullSoon) {
      await addFullSoonTransition(kv, op, target, state, now);
    }
    if (state.status === "critical") toPause.push(target.id);
    if (state.status === "healthy") toResume.push(target.id);
    targets.push(next);
  }
  return {
    targets,
    async afterCommit() {
      const paused = (await Promise.all(toPause.map((id) => pausePoliciesForStorage(kv, id, now)))).flat();
      const resumed = (await Promise.all(toResume.map((id) => resumePoliciesForStorage(kv, id, now)))).flat();
      return { paused, resumed };
    },
  };
}

/** Adds to `op` the alerts of one kind that a target's new capacity state raises or resolves. */
type CapacityAlerts = (
  kv: Deno.Kv,
  op: Deno.AtomicOperation,
  target: StorageTarget,
  state: CapacityState,
  now: Date,
) => Promise<void>;

/** What a target's capacity alert is about: the target. */
function targetAlertSubject(target: StorageTarget) {
  return {
    accountId: target.accountId,
    orgId: target.orgId,
    subjectType: "storage_target" as const,
    subjectId: target.id,
    subjectName: target.name,
  };
}

/** Alerts for a change of health: warning and critical raise their alert and resolve the other. */
const addHealthTransition: CapacityAlerts = async (kv, op, target, state, now) => {
  const [warning, critical] = await Promise.all([
    readOpenAlert(kv, "storage_target", target.id, "storage_warning"),
    readOpenAlert(kv, "storage_target", target.id, "storage_critical"),
  ]);
  const base = targetAlertSubject(target);
  if (state.status === "critical") {
    resolveAlert(op, warning, now);
    raiseAlert(op, critical, {
      ...base,
      reason: "storage_critical",
      severity: "critical",
      message: `Storage target ${target.name} is critical: ${state.statusReason}. Its policies are paused.`,
    }, now);
  } else if (state.status === "warning") {
    resolveAlert(op, critical, now);
    raiseAlert(op, warning, {
      ...base,
      reason: "storage_warning",
      severity: "warning",
      message: `Storage target ${target.name} needs attention: ${state.statusReason}`,
    }, now);
  } else {
    resolveAlert(op, warning, now);
    resolveAlert(op, critical, now);
  }
};

/**
 * The early warning's own alert: raised when the projected full date comes within 14 days, resolved when
 * it no longer does. Independent of the status and its alerts (a healthy target can have it).
 */
const addFullSoonTransition: CapacityAlerts = async (kv, op, target, state, now) => {
  const current = await readOpenAlert(kv, "storage_target", target.id, "storage_full_soon");
  if (!state.fullSoon) {
    resolveAlert(op, current, now);
    return;
  }
  raiseAlert(op, current, {
    ...targetAlertSubject(target),
    reason: "storage_full_soon",
    severity: "warning",
    message:
      `Storage target ${target.name} is projected to be full on ${state.estimatedFullAt!.slice(0, 10)}, ` +
      `within 14 days at the current growth (usage ${state.usagePercent}%)`,
  }, now);
};

/**
 * Reports per atomic write: at most 8 checks each (entry, day, and the pointer and alert of up to three
 * alert reasons: warning, critical, full soon) stays under 100.
 */
const REPORTS_PER_WRITE = 10;

/**
 * Applies a BES's capacity reports in bounded atomic writes (see `addCapacityReports`; each may share
 * a group commit with concurrent heartbeats), retrying a batch that lost a race, then pauses or resumes
 * policies. Reports for other engines' targets are ignored.
 */
export async function applyCapacityReports(
  kv: Deno.Kv,
  engineId: string,
  reports: CapacityReport[],
  now: Date,
): Promise<{ targets: StorageTarget[]; paused: string[]; resumed: string[] }> {
  const out = { targets: [] as StorageTarget[], paused: [] as string[], resumed: [] as string[] };
  for (let i = 0; i < reports.length; i += REPORTS_PER_WRITE) {
    const batch = reports.slice(i, i + REPORTS_PER_WRITE);
    const attempt = async () => {
      const op = new AtomicRecorder();
      const { targets, afterCommit } = await addCapacityReports(kv, op, engineId, batch, now);
      if (!targets.length) return { value: null };
      // Shares a group commit with concurrent heartbeats and reports, with its own checks.
      return (await heartbeatCommitter(kv).submit(op)).ok ? { value: { targets, afterCommit } } : null;
    };
    const written = await withRetry(attempt, 5, "Capacity report conflicted repeatedly; retry");
    if (written) {
      const { paused, resumed } = await written.afterCommit();
      out.targets.push(...written.targets);
      out.paused.push(...paused);
      out.resumed.push(...resumed);
    }
  }
  return out;
}

/** Applies one capacity report (tests, backfills). Returns null for a target of another engine. */
export async function applyCapacityReport(
  kv: Deno.Kv,
  engineId: string,
  report: CapacityReport,
  now: Date,
): Promise<{ target: StorageTarget; paused: string[]; resumed: string[] } | null> {
  const { targets, paused, resumed } = await applyCapacityReports(kv, engineId, [report], now);
  return targets.length ? { target: targets[0], paused, resumed } : null;
}

/** Capacity history: daily roll-ups for up to 365 days, and the fine samples of the last 48 h. */
export async function capacityHistory(
  kv: Deno.Kv,
  targetId: string,
  now: Date,
): Promise<{ days: CapacityDay[]; recent: CapacityState[] }> {
  const fromDay = new Date(now.getTime() - HISTORY_DAYS * 86_400_000).toISOString().slice(0, 10);
  const days: CapacityDay[] = [];
  for await (
    const e of kv.list<CapacityDay>({
      start: capacityDailyKey(targetId, fromDay),
      end: capacityDailyKey(targetId, "9999-12-31"),
    })
  ) days.push(e.value);
  const recent: CapacityState[] = [];
  for await (
    const e of kv.list<CapacityState>({
      start: capacitySampleKey(targetId, now.getTime() - FINE_RETENTION_MS),
      end: capacitySampleKey(targetId, Number.MAX_SAFE_INTEGER),
    })
  ) recent.push(e.value);
  return { days, recent };
}

/** Deletes fine samples older than 48 h and roll-ups older than 365 days. */
export async function purgeCapacityHistory(kv: Deno.Kv, now: Date): Promise<number> {
  let removed = 0;
  const fineCutoff = now.getTime() - FINE_RETENTION_MS;
  for await (const e of kv.list({ prefix: capacitySamplesPrefix() })) {
    if (Number(e.key[2]) < fineCutoff) {
      await kv.delete(e.key);
      removed++;
    }
  }
  const dayCutoff = new Date(now.getTime() - HISTORY_DAYS * 86_400_000).toISOString().slice(0, 10);
  for await (const e of kv.list({ prefix: capacityDailyPrefix() })) {
    if (String(e.key[2]) < dayCutoff) {
      await kv.delete(e.key);
      removed++;
    }
  }
  return removed;
}

// The engine cascade removes policies first (their children with them), then targets.
registerEngineCascade({
  name: "policies",
  async run(kv, engine, now) {
    return await deleteByPointerIndex(kv, policiesByBesPrefix(engine.id), async (id) => {
      const policy = (await kv.get<Parameters<typeof deletePolicyCascade>[1]>(policyKey(id))).value;
      if (policy) await deletePolicyCascade(kv, policy, now);
      return policy !== null;
    });
  },
});
registerEngineCascade({
  name: "storage_targets",
  async run(kv, engine, now) {
    let n = 0;
    for (const id of await listTargetIdsOfEngine(kv, engine.id)) {
      // Checked against the target entry (a concurrent credential rotation must not leave its new
      // vault record behind) and its alerts; retried (commit retry) until it commits. Ten lost races leave
      // the target, and its history, to the resume job: `finishEngineDeletion` then reports the deletion
      // incomplete and keeps the engine `deleting`.
      const attempt = async (): Promise<{ value: void } | null> => {
        const entry = await kv.get<StorageTarget>(targetKey(id));
        const target = entry.value;
        const op = kv.atomic().check(entry).delete(targetsByBesKey(engine.id, id)).delete(targetKey(id));
        if (target) {
          op.delete(targetsByAccountKey(target.accountId, id));
          if (target.credentialId) op.delete(vaultKey(target.credentialId));
          for (const reason of TARGET_ALERT_REASONS) {
            resolveAlert(op, await readOpenAlert(kv, "storage_target", id, reason), now);
          }
        }
        return (await op.commit()).ok ? { value: undefined } : null;
      };
      if (!(await withRetry(attempt, 10).then(() => true, leftForResume))) continue;
      await purgeTargetHistory(kv, id);
      n++;
    }
    return n;
  },
});

/** A commit retry that ran out in a cascade step: false (the resume job finishes it); other errors throw. */
function leftForResume(error: unknown): false {
  if (error instanceof CommitConflictError) return false;
  throw error;
}

/** A target as shown to operators and the API: the vault record id stays internal. */
export function toPublicTarget(t: StorageTarget) {
  const { credentialId, ...rest } = t;
  return { ...rest, hasCredentials: credentialId !== null };
}

/** The live capacity rows of targets (for the widget and its JSON endpoint). */
export function capacityRows(targets: StorageTarget[]) {
  return targets.map((t) => ({
    id: t.id,
    name: t.name,
    health: t.health,
    usagePercent: t.capacity?.usagePercent ?? null,
    freeBytes: t.capacity?.freeBytes ?? null,
    growthBytesPerDay: t.capacity?.growthBytesPerDay ?? null,
    estimatedFullAt: t.capacity?.estimatedFullAt ?? null,
    fullSoon: t.capacity?.fullSoon ?? false,
    lastReportAt: t.capacity?.at ?? null,
  }));
}

/** The on-demand checks of a storage target (its page, the dashboard's inline actions, the API). */
export const STORAGE_CHECKS = { health_check: "health check", verify: "integrity verification" } as const;
export type StorageCheck = keyof typeof STORAGE_CHECKS;

/** The latest request of each check of a target: the job that answers it. */
function storageCheckKey(targetId: string, check: StorageCheck) {
  return storageCheckKeyOf(targetId, check);
}

/** The latest request of a check, as stored (the job holds its status and result). */
interface StorageCheckRequest {
  check: StorageCheck;
  jobId: string;
  /** Who runs it: `agent:<id>` or `bes:<id>`. */
  principal: string;
  /** The host's or the BES's name when it was requested. */
  runsOn: string;
  requestedAt: string;
  requestedBy: string;
}

/** Hosts read at most while choosing one for a health check (an operator action, not a page). */
const HOST_SCAN_LIMIT = 20_000;

/**
 * How well a host suits a target's health check, lower first; null when it may not run it. The guide:
 * "any eligible online relay host in the target org when scoped, otherwise an online host in the same
 * account". The check's payload carries the target's connection settings and its result names the host,
 * so a target of an org is checked only by hosts of that org (a relay host first, then any of its hosts)
 * — never by another org's host; only an account-level target (no org) may use any host of the account
 * (a relay host first).
 */
export function healthCheckHostRank(
  host: Pick<Host, "accountId" | "orgId" | "relay">,
  target: Pick<StorageTarget, "accountId" | "orgId">,
): number | null {
  if (host.accountId !== target.accountId) return null;
  if (target.orgId !== null && host.orgId !== target.orgId) return null;
  return host.relay ? 0 : 1;
}

/** The online host that best suits the target's health check (`healthCheckHostRank`), or null. */
async function chooseHealthCheckHost(kv: Deno.Kv, target: StorageTarget, now: Date): Promise<Host | null> {
  const best = { host: null as Host | null, rank: Infinity };
  let batch: Deno.KvKey[] = [];
  const consider = async () => {
    for (const h of await getManyValues<Host>(kv, batch)) {
      const rank = hostOnlineAt(h, now) ? healthCheckHostRank(h, target) : null;
      if (rank !== null && rank < best.rank) Object.assign(best, { host: h, rank });
    }
    batch = [];
  };
  let scanned = 0;
  for await (
    const e of kv.list<string>({ prefix: hostsByAccountPrefix(target.accountId) }, { batchSize: 500 })
  ) {
    batch.push(hostKey(e.value));
    if (batch.length === 100) {
      await consider();
      if (best.rank === 0) break; // nothing suits better
    }
    if (++scanned >= HOST_SCAN_LIMIT) break;
  }
  if (batch.length) await consider();
  return best.host;
}

/** What a check request answered with: who runs it and its job. */
export interface StorageCheckQueued {
  check: StorageCheck;
  jobId: string;
  principal: string;
  runsOn: string;
}

/**
 * Queues an on-demand check of a storage target — any target, whatever its health — with its audit entry
 * and the target's "latest check" record in the same atomic operation. A health check (a reachability
 * probe; capacity keeps arriving with the BES heartbeat) runs on the online host `healthCheckHostRank`
 * prefers — for a target of an org only a host of that org; its payload names the target and its
 * connection settings (never credentials). An integrity verification (catalog, chains, a restore
 * rehearsal) runs on the target's BES, which must be online. Needs backup.manage on the target. Throws
 * ConflictError (the message says why; nothing is written) when no eligible host is online — in the
 * target's org, or in the account for an account-level target — or the BES is not online.
 */
export async function requestStorageCheck(
  kv: Deno.Kv,
  actor: Actor,
  targetId: string,
  check: StorageCheck,
  now: Date,
): Promise<StorageCheckQueued> {
  const target = await requireTarget(kv, actor, targetId);
  authorize(actor, "backup.manage", targetScope(target));
  let principal: string;
  let runsOn: string;
  const payload: Record<string, unknown> = {
    targetId: target.id,
    scope: "storage_target",
    besId: target.besId,
  };
  if (check === "health_check") {
    const host = await chooseHealthCheckHost(kv, target, now);
    if (!host) {
      throw new ConflictError(
        target.orgId
          ? `No host of the target's organization is online to run the health check of ${target.name}: ` +
            "a host is online while its agent sends heartbeats, and hosts of other organizations never " +
            "run it (it carries the target's settings)."
          : `No host of this account is online to run the health check of ${target.name}: ` +
            "a host is online while its agent sends heartbeats.",
      );
    }
    principal = `agent:${host.id}`;
    runsOn = host.hostname;
    payload.target = { id: target.id, type: target.type, config: target.config };
  } else {
    const engine = (await kv.get<Engine>(engineKey(target.besId))).value;
    if (!engine || !engineOnlineAt(engine, now)) {
      const state = !engine
        ? "gone"
        : engine.status === "deleting"
        ? "being deleted"
        : `offline (${
          engine.lastHeartbeatAt ? `last heartbeat ${engine.lastHeartbeatAt}` : "no heartbeat yet"
        })`;
      throw new ConflictError(
        `The integrity verification of ${target.name} runs on its BES${engine ? ` ${engine.name}` : ""}, ` +
          `which is ${state}.`,
      );
    }
    principal = `bes:${engine.id}`;
    runsOn = engine.name;
  }
  const op = kv.atomic();
  const job = queueJobInOp(op, {
    kind: check,
    principal,
    accountId: target.accountId,
    orgId: target.orgId,
    payload,
    priority: "high",
  }, now);
  const request: StorageCheckRequest = {
    check,
    jobId: job.id,
    principal,
    runsOn,
    requestedAt: now.toISOString(),
    requestedBy: actor.label,
  };
  op.set(storageCheckKey(target.id, check), request);
  await commitAudited(
    op,
    actor,
    {
      accountId: target.accountId,
      orgId: target.orgId,
      action: `storage.${check}`,
      objectType: "storage_target",
      objectId: target.id,
      summary: `Requested a ${
        STORAGE_CHECKS[check]
      } of storage target ${target.name} (job ${job.id} on ${runsOn})`,
    },
    now,
    "Could not queue the check; try again",
  );
  return { check, jobId: job.id, principal, runsOn };
}

/** The latest run of one check of a target, as its page and the API show it. */
export interface StorageCheckView {
  check: StorageCheck;
  jobId: string;
  runsOn: string;
  requestedAt: string;
  requestedBy: string;
  /** queued, running (leased), succeeded, failed or cancelled: the job's state. */
  state: "queued" | "running" | "succeeded" | "failed" | "cancelled" | "unknown";
  /** The engine's verdict when it answered: success, warning or failed. */
  result: "success" | "warning" | "failed" | null;
  finishedAt: string | null;
  /** The first line of the engine's error, or why the job failed without an answer. */
  message: string | null;
  /** What the engine reported (`probe` for a health check, `verification` for a verify). */
  output: Record<string, unknown> | null;
}

/**
 * The latest request of each check of a target (health check, integrity verification), null when never.
 * `target` is one the caller has read in the actor's scope (`requireTarget`); needs backup.view on it.
 */
export async function readStorageChecks(
  kv: Deno.Kv,
  actor: Actor,
  target: Pick<StorageTarget, "id" | "accountId" | "orgId">,
): Promise<Record<StorageCheck, StorageCheckView | null>> {
  authorize(actor, "backup.view", targetScope(target));
  const checks = Object.keys(STORAGE_CHECKS) as StorageCheck[];
  const requests = await kv.getMany<StorageCheckRequest[]>(checks.map((c) => storageCheckKey(target.id, c)));
  const jobs = await kv.getMany<Job[]>(requests.map((r) => jobKey(r.value?.jobId ?? "none")));
  const out = {} as Record<StorageCheck, StorageCheckView | null>;
  checks.forEach((check, i) => {
    const request = requests[i].value;
    const job = jobs[i].value;
    if (!request) return out[check] = null;
    const r = job?.result ?? null;
    out[check] = {
      check,
      jobId: request.jobId,
      runsOn: request.runsOn,
      requestedAt: request.requestedAt,
      requestedBy: request.requestedBy,
      state: !job ? "unknown" : job.status === "leased" ? "running" : job.status,
      result: r?.status ?? null,
      finishedAt: r?.endedAt ?? (job && job.status === "failed" ? job.updatedAt : null),
      message: firstLineOf(r?.error?.message) ??
        (job?.failureReason ? `The job failed without an answer (${job.failureReason})` : null),
      output: r?.output ?? null,
    };
  });
  return out;
}

function firstLineOf(message: string | null | undefined): string | null {
  const line = (message ?? "").split(/\r?\n/).map((l) => l.trim()).find(Boolean);
  return line ? line.slice(0, 300) : null;
}
