/**
 * Namespace keys (ENGINE.md §3 "Keys", §5 "Keys are delivered just in time").
 *
 * Each host has its own namespace in a repository, with a data key and an id key (32 random bytes each,
 * engine/repo/keys.ts `generateNamespaceKeys`). The control plane creates them the first time a job
 * needs them and keeps them only wrapped by the KEK of the repository's KEK source (keks.ts):
 * `["namespace_keys", <repository path>, <namespace>]` holds one record per key set with one wrapped
 * copy per KEK (AES-256-GCM, additional data binding path, namespace, record id and KEK), indexed by KEK
 * in `["namespace_keys_by_kek", kekRef, path, namespace]` for rotations. The path (`cadres/<policy>/g<N>`)
 * names the key set: a replica of the repository on another target shares its keys (ENGINE.md §4), and
 * gets a copy wrapped by its own rule's KEK source.
 *
 * `deliverJobKeys` hands the keys of the one namespace a job needs to the principal holding the job,
 * while it runs, with an audit entry (no key material) written in the same atomic operation as the
 * request's nonce, checked against the job. Keys are never stored in a job, a payload or a log. With the
 * account's recovery public key (recovery_keys.ts), the reply also carries the keys sealed for it, for
 * the BES to write into the repository's `keys/`.
 */
import { generateNamespaceKeys, KEY_BYTES } from "../engine/repo/keys.ts";
import { RECOVERY_ALGORITHM, sealForRecovery } from "../engine/repo/recovery.ts";
import { appendAudit, auditTarget } from "./audit.ts";
import { type DataScope, jobDataScope, type RepositoryRef } from "./data_access.ts";
import { type Engine, engineKey } from "./engines.ts";
import { HttpError, NotFoundError } from "./errors.ts";
import { type Host, hostKey } from "./hosts.ts";
import { newId } from "./ids.ts";
import { type Job, jobKey } from "./job_queue.ts";
import {
  kekProviders,
  kekReference,
  type KekScope,
  type KekState,
  kekStateKey,
  type WrappedSecret,
} from "./keks.ts";
import { namespaceKeysByKekKey, namespaceKeysByKekPrefix, namespaceKeysKey } from "./keys/namespace_keys.ts";
export { namespaceKeysByKekKey, namespaceKeysKey };
import { type Actor, authorize, systemActor } from "./rbac.ts";
import { getRecoveryKey } from "./recovery_keys.ts";
import { withRetry } from "./retry.ts";
import type { KekSource } from "./replicas.ts";

/** One namespace's key set, as stored: wrapped copies only. */
export interface NamespaceKeyRecord {
  /** Names the key set (not secret). */
  id: string;
  accountId: string;
  orgId: string | null;
  repositoryPath: string;
  namespace: string;
  /** One copy per KEK (the primary KEK source's first; replicas add theirs). */
  wraps: WrappedSecret[];
  createdAt: string;
  updatedAt: string;
}

/** The keys of a namespace in memory (callers zero them when done). */
export interface OpenedKeys {
  dataKey: Uint8Array;
  idKey: Uint8Array;
}

/** Where a key set lives and who owns it. */
export interface KeySetScope {
  accountId: string;
  orgId: string | null;
  repositoryPath: string;
  namespace: string;
  kekSource: KekSource;
}

const keyActor = systemActor("key-management");

function wrapAad(record: Pick<NamespaceKeyRecord, "id" | "repositoryPath" | "namespace">, kekRef: string) {
  return new TextEncoder().encode(
    `cadres-namespace-keys-v1\u0000${record.repositoryPath}\u0000${record.namespace}\u0000${record.id}\u0000${kekRef}`,
  );
}

function refOf(scope: { accountId: string; orgId: string | null }, source: KekSource): string {
  return kekReference(source, scope.accountId, scope.orgId).keyId;
}

function kekScope(scope: { accountId: string; orgId: string | null }, source: KekSource): KekScope {
  return { source, accountId: scope.accountId, orgId: scope.orgId };
}

/** Reads a KEK's state entry, creating the KEK first if needed (its versionstamp guards wraps against rotations). */
async function kekEntry(
  kv: Deno.Kv,
  masterKey: Uint8Array,
  scope: KekScope,
  now: Date,
): Promise<Deno.KvEntry<KekState>> {
  await kekProviders(masterKey)[scope.source].ensure(kv, scope, now);
  return await kv.get<KekState>(kekStateKey(refOf(scope, scope.source))) as Deno.KvEntry<KekState>;
}

function concat(keys: OpenedKeys): Uint8Array {
  const out = new Uint8Array(KEY_BYTES * 2);
  out.set(keys.dataKey);
  out.set(keys.idKey, KEY_BYTES);
  return out;
}

/**
 * The key set of a namespace, created (and wrapped by the KEK of `scope.kekSource`) on first need with
 * its audit entry. Two first uses racing create ONE key set: the creation checks the record is absent,
 * the loser reads the winner's. The creation also checks the KEK's state, so a rotation in between makes
 * it wrap again under the new version. Returns the record (never the keys).
 */
export async function ensureNamespaceKeys(
  kv: Deno.Kv,
  masterKey: Uint8Array,
  scope: KeySetScope,
  now: Date,
): Promise<{ record: NamespaceKeyRecord; created: boolean }> {
  const provider = kekProviders(masterKey)[scope.kekSource];
  const attempt = async (): Promise<{ value: { record: NamespaceKeyRecord; created: boolean } } | null> => {
    const entry = await kv.get<NamespaceKeyRecord>(namespaceKeysKey(scope.repositoryPath, scope.namespace));
    if (entry.value) return { value: { record: entry.value, created: false } };
    const kek = await kekEntry(kv, masterKey, kekScope(scope, scope.kekSource), now);
    const at = now.toISOString();
    const record: NamespaceKeyRecord = {
      id: newId(now),
      accountId: scope.accountId,
      orgId: scope.orgId,
      repositoryPath: scope.repositoryPath,
      namespace: scope.namespace,
      wraps: [],
      createdAt: at,
      updatedAt: at,
    };
    const fresh = generateNamespaceKeys(scope.namespace);
    const plain = concat(fresh);
    try {
      record.wraps.push(
        await provider.wrap(kv, kekScope(scope, scope.kekSource), plain, wrapAad(record, kek.value.ref), now),
      );
    } finally {
      plain.fill(0);
      fresh.dataKey.fill(0);
      fresh.idKey.fill(0);
    }
    const op = kv.atomic().check(entry, kek)
      .set(entry.key, record)
      .set(namespaceKeysByKekKey(kek.value.ref, record.repositoryPath, record.namespace), record.id);
    appendAudit(op, keyActor, {
      accountId: scope.accountId,
      orgId: scope.orgId,
      action: "keys.create",
      objectType: "namespace_keys",
      objectId: record.id,
      summary: `Created the keys of namespace ${scope.namespace} in repository ${scope.repositoryPath}, ` +
        `wrapped by ${kek.value.ref}`,
    }, now);
    return (await op.commit()).ok ? { value: { record, created: true } } : null;
  };
  return await withRetry(attempt, 10, "The namespace keys could not be created (too much contention); retry");
}

/** What an unwrap is for, for the access audit entry of a KEK source that audits unwraps. */
interface UnwrapContext {
  op: Deno.AtomicOperation;
  actor: Actor;
  purpose: string;
  now: Date;
}

/**
 * Unwraps a key set with the copy of `source` (or, without one, the first copy). With a KEK source that
 * audits unwraps (pam_vault), adds the access audit entry to `context.op`: the caller commits it before
 * using the keys.
 */
export async function openNamespaceKeys(
  kv: Deno.Kv,
  masterKey: Uint8Array,
  record: NamespaceKeyRecord,
  source: KekSource,
  context: UnwrapContext,
): Promise<OpenedKeys> {
  const ref = refOf(record, source);
  const wrapped = record.wraps.find((w) => w.kekRef === ref) ?? record.wraps[0];
  if (!wrapped) throw new Error(`Key set ${record.id} holds no wrapped copy`);
  const provider = kekProviders(masterKey)[wrapped.source];
  const plain = await provider.unwrap(kv, wrapped, wrapAad(record, wrapped.kekRef));
  if (plain.length !== KEY_BYTES * 2) {
    plain.fill(0);
    throw new Error(`Key set ${record.id} does not hold two ${KEY_BYTES}-byte keys`);
  }
  if (provider.auditsUnwrap) {
    appendAudit(context.op, context.actor, {
      accountId: record.accountId,
      orgId: record.orgId,
      action: "kek.unwrap",
      objectType: "namespace_keys",
      objectId: record.id,
      summary: `Unwrapped the keys of namespace ${record.namespace} in ${record.repositoryPath} with ` +
        `${wrapped.kekRef} version ${wrapped.kekVersion}: ${context.purpose}`,
    }, context.now);
  }
  const keys = { dataKey: plain.slice(0, KEY_BYTES), idKey: plain.slice(KEY_BYTES) };
  plain.fill(0);
  return keys;
}

/**
 * Unwraps a key set with its copy of `from` (as `openNamespaceKeys`, auditing into `context.op`) and wraps
 * it again with the current KEK of `to`, for the key reference of `to`. The plain keys are zeroed after.
 */
async function rewrapKeys(
  kv: Deno.Kv,
  masterKey: Uint8Array,
  record: NamespaceKeyRecord,
  from: KekSource,
  to: KekSource,
  context: UnwrapContext,
): Promise<WrappedSecret> {
  const keys = await openNamespaceKeys(kv, masterKey, record, from, context);
  const plain = concat(keys);
  try {
    return await kekProviders(masterKey)[to].wrap(
      kv,
      kekScope(record, to),
      plain,
      wrapAad(record, refOf(record, to)),
      context.now,
    );
  } finally {
    plain.fill(0);
    keys.dataKey.fill(0);
    keys.idKey.fill(0);
  }
}

/**
 * Adds a copy of a key set wrapped by the KEK of `source` (for a replica whose rule names another KEK
 * source), with its audit entry, unless it has one. Returns the record after.
 */
export async function ensureWrappedFor(
  kv: Deno.Kv,
  masterKey: Uint8Array,
  repositoryPath: string,
  namespace: string,
  source: KekSource,
  actor: Actor,
  now: Date,
): Promise<NamespaceKeyRecord> {
  const attempt = async (): Promise<{ value: NamespaceKeyRecord } | null> => {
    const entry = await kv.get<NamespaceKeyRecord>(namespaceKeysKey(repositoryPath, namespace));
    const record = entry.value;
    if (!record) throw new NotFoundError(`No keys for namespace ${namespace} in ${repositoryPath}`);
    const ref = refOf(record, source);
    if (record.wraps.some((w) => w.kekRef === ref)) return { value: record };
    const kek = await kekEntry(kv, masterKey, kekScope(record, source), now);
    const op = kv.atomic().check(entry, kek);
    const wrapped = await rewrapKeys(kv, masterKey, record, record.wraps[0].source, source, {
      op,
      actor,
      purpose: `to wrap them for ${ref}`,
      now,
    });
    const next = { ...record, wraps: [...record.wraps, wrapped], updatedAt: now.toISOString() };
    op.set(entry.key, next).set(namespaceKeysByKekKey(ref, repositoryPath, namespace), record.id);
    appendAudit(op, actor, {
      ...auditTarget("namespace_keys", record),
      action: "keys.wrap",
      summary: `Wrapped the keys of namespace ${namespace} in ${repositoryPath} for ${ref} (${source})`,
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  };
  return await withRetry(attempt, 10, "The namespace keys changed repeatedly; retry");
}

/** The keys sealed for the account's recovery key, as the BES writes them into `keys/`. */
export interface RecoveryWrapped {
  keyId: string;
  algorithm: typeof RECOVERY_ALGORITHM;
  /** The additional data the seal binds (UTF-8; see docs/engine-protocol.md). */
  additionalData: string;
  encryptedKey: Uint8Array;
  nonce: Uint8Array;
  ciphertext: Uint8Array;
}

/** The additional data of a key set sealed for the recovery key. */
export function recoveryAdditionalData(repositoryPath: string, namespace: string): string {
  return `cadres-recovery-keys-v1\u0000${repositoryPath}\u0000${namespace}`;
}

/**
 * Seals a namespace's keys for a recovery public key. Plaintext: UTF-8 JSON
 * `{"version":1,"repository":<path>,"namespace":<ns>,"dataKey":<base64>,"idKey":<base64>}`.
 */
export async function sealKeysForRecovery(
  recovery: { id: string; publicPem: string },
  repositoryPath: string,
  namespace: string,
  keys: OpenedKeys,
): Promise<RecoveryWrapped> {
  const json = JSON.stringify({
    version: 1,
    repository: repositoryPath,
    namespace,
    dataKey: keys.dataKey.toBase64(),
    idKey: keys.idKey.toBase64(),
  });
  const plain = new TextEncoder().encode(json);
  const additionalData = recoveryAdditionalData(repositoryPath, namespace);
  try {
    const sealed = await sealForRecovery(recovery.publicPem, plain, new TextEncoder().encode(additionalData));
    return { keyId: recovery.id, algorithm: RECOVERY_ALGORITHM, additionalData, ...sealed };
  } finally {
    plain.fill(0);
  }
}

/** What the key endpoint hands a job's holder. */
export interface DeliveredKeys {
  jobId: string;
  keySetId: string;
  namespace: string;
  repository: RepositoryRef;
  dataKey: Uint8Array;
  idKey: Uint8Array;
  recovery: RecoveryWrapped | null;
  /**
   * The account's recovery public key (SPKI PEM; null before an administrator created it): an agent that
   * creates the repository writes the key object wrapping these keys for it (`recoveryKeyObject`), bound to
   * the repository's config, so the recovery key opens every repository without the control plane.
   */
  recoveryPublicKey: string | null;
}

/** The actor a principal acts as in audit entries. */
async function principalActor(kv: Deno.Kv, owner: string, accountId: string): Promise<Actor> {
  const [kind, id] = owner.split(":");
  const label = kind === "bes"
    ? `BES ${(await kv.get<Engine>(engineKey(id))).value?.name ?? id}`
    : `Agent ${(await kv.get<Host>(hostKey(id))).value?.hostname ?? id}`;
  return { kind: "system", id: owner, label, accountId, role: null, permissions: new Set(), orgScope: "all" };
}

/** A refusal of the key endpoint (status and stable code). */
function refuse(status: number, code: string, message: string): never {
  throw new HttpError(status, code, message);
}

/**
 * Delivers the keys of the one namespace job `jobId` needs to `owner` (`bes:<id>` / `agent:<id>`),
 * which must hold the job now: 404 `not_found` for a job of another principal (or none), 409
 * `job_not_running` when it is not leased to it with a live lease, 409 `job_cancelled` once a cancel
 * was asked, 403 `no_keys_for_job` for kinds that need no keys (prune, health check), 409
 * `repository_unknown` when its restore point or policy is gone. Creates the key set on first need.
 * The audit entry (no key material) and the request's nonce (`nonce`: 401 `unauthorized` on replay) are
 * written in one atomic operation that checks the job is unchanged, before any key leaves.
 */
export async function deliverJobKeys(
  kv: Deno.Kv,
  masterKey: Uint8Array,
  owner: string,
  jobId: string,
  nonce: { key: Deno.KvKey; expireIn: number } | null,
  now: Date,
): Promise<DeliveredKeys> {
  const attempt = async (): Promise<{ value: DeliveredKeys } | null> => {
    const jobEntry = await kv.get<Job>(jobKey(jobId));
    const job = jobEntry.value;
    if (!job || job.principal !== owner) refuse(404, "not_found", "No such job for this principal");
    if (job.status !== "leased" || now.getTime() >= Date.parse(job.leaseExpiresAt ?? "")) {
      refuse(409, "job_not_running", `Job ${jobId} is not running under your lease (it is ${job.status})`);
    }
    if (job.cancelRequested) refuse(409, "job_cancelled", `Job ${jobId} was cancelled`);
    const result = await jobDataScope(kv, job);
    if (result.kind === "none") refuse(403, "no_keys_for_job", `A ${job.kind} job needs no keys`);
    if (result.kind === "unknown") refuse(409, "repository_unknown", `Job ${jobId}: ${result.reason}`);
    const scope: DataScope = result.scope;
    const actor = await principalActor(kv, owner, scope.accountId);
    const keySet: KeySetScope = {
      accountId: scope.accountId,
      orgId: scope.orgId,
      repositoryPath: scope.repository.path,
      namespace: scope.namespace,
      kekSource: scope.kekSource,
    };
    let { record } = await ensureNamespaceKeys(kv, masterKey, keySet, now);
    if (scope.replica && refOf(record, scope.replica.kekSource) !== refOf(record, scope.kekSource)) {
      record = await ensureWrappedFor(
        kv,
        masterKey,
        record.repositoryPath,
        record.namespace,
        scope.replica.kekSource,
        actor,
        now,
      );
    }
    const op = kv.atomic().check(jobEntry);
    if (nonce) {
      op.check({ key: nonce.key, versionstamp: null }).set(nonce.key, now.getTime(), {
        expireIn: nonce.expireIn,
      });
    }
    const keys = await openNamespaceKeys(kv, masterKey, record, scope.kekSource, {
      op,
      actor,
      purpose: `delivered to ${owner} for ${job.kind} job ${job.id}`,
      now,
    });
    appendAudit(op, actor, {
      accountId: scope.accountId,
      orgId: scope.orgId,
      action: "keys.deliver",
      objectType: "job",
      objectId: job.id,
      summary: `Delivered the keys of namespace ${scope.namespace} (key set ${record.id}) in repository ` +
        `${scope.repository.path} on target ${scope.repository.target} to ${actor.label} for ${job.kind} job ` +
        `${job.id} (${scope.access})`,
    }, now);
    if (!(await op.commit()).ok) {
      keys.dataKey.fill(0);
      keys.idKey.fill(0);
      if (nonce && (await kv.get(nonce.key)).versionstamp !== null) {
        refuse(401, "unauthorized", "Replayed nonce");
      }
      return null; // the job changed meanwhile (progress renewed its lease, a cancel): look again
    }
    const recoveryKey = await getRecoveryKey(kv, scope.accountId);
    const delivered: DeliveredKeys = {
      jobId: job.id,
      keySetId: record.id,
      namespace: scope.namespace,
      repository: scope.repository,
      dataKey: keys.dataKey,
      idKey: keys.idKey,
      recovery: recoveryKey
        ? await sealKeysForRecovery(recoveryKey, scope.repository.path, scope.namespace, keys)
        : null,
      recoveryPublicKey: recoveryKey?.publicPem ?? null,
    };
    return { value: delivered };
  };
  return await withRetry(attempt, 5, "The job changed repeatedly while its keys were requested; retry");
}

/**
 * Rotates a KEK (pam_vault: the org-owned vault key; `account` works the same way): a new current
 * version with its audit entry, then every stored key set wrapped by an older version is re-wrapped
 * (unwrap audited for pam_vault), then the old versions are retired. Needs `admin` over the KEK's
 * scope. Safe to run again after a crash: it finishes what is left. Returns the version and the number
 * of key sets re-wrapped.
 */
export async function rotateKek(
  kv: Deno.Kv,
  masterKey: Uint8Array,
  actor: Actor,
  scope: KekScope,
  now: Date,
): Promise<{ version: number; rewrapped: number }> {
  authorize(actor, "admin", { accountId: scope.accountId, orgId: scope.orgId });
  const provider = kekProviders(masterKey)[scope.source];
  const state = await provider.rotate(kv, scope, actor, now);
  const rewrapped = await rewrapStale(kv, masterKey, state.ref, actor, now);
  const after = (await kv.get<KekState>(kekStateKey(state.ref))).value!;
  // Creations and re-wraps check the KEK's state, so none under an old version can land after the
  // rotation's version bump; this last look makes sure before the old versions go.
  const inUse = new Set<number>();
  for await (const index of kv.list<string>({ prefix: namespaceKeysByKekPrefix(state.ref) })) {
    const [, , path, namespace] = index.key as [string, string, string, string];
    const record = (await kv.get<NamespaceKeyRecord>(namespaceKeysKey(path, namespace))).value;
    for (const w of record?.wraps ?? []) if (w.kekRef === state.ref) inUse.add(w.kekVersion);
  }
  const stale = after.versions.map((v) => v.version).filter((v) => v !== after.current && !inUse.has(v));
  await provider.retire(kv, state.ref, stale);
  return { version: after.current, rewrapped };
}

/** Re-wraps every key set wrapped by an older version of KEK `ref` under its current version. */
async function rewrapStale(kv: Deno.Kv, masterKey: Uint8Array, ref: string, actor: Actor, now: Date) {
  let rewrapped = 0;
  for await (const index of kv.list<string>({ prefix: namespaceKeysByKekPrefix(ref) })) {
    const [, , repositoryPath, namespace] = index.key as [string, string, string, string];
    /** True once re-wrapped, false when there was nothing (left) to re-wrap. */
    const attempt = async (): Promise<{ value: boolean } | null> => {
      const entry = await kv.get<NamespaceKeyRecord>(namespaceKeysKey(repositoryPath, namespace));
      const record = entry.value;
      const kek = await kv.get<KekState>(kekStateKey(ref));
      const at = record?.wraps.findIndex((w) => w.kekRef === ref) ?? -1;
      if (!record || !kek.value || at < 0 || record.wraps[at].kekVersion === kek.value.current) {
        return { value: false };
      }
      const source = record.wraps[at].source;
      const op = kv.atomic().check(entry, kek);
      const wrapped = await rewrapKeys(kv, masterKey, record, source, source, {
        op,
        actor,
        purpose: "re-wrapped by a key rotation",
        now,
      });
      const wraps = record.wraps.map((w, j) => j === at ? wrapped : w);
      op.set(entry.key, { ...record, wraps, updatedAt: now.toISOString() });
      appendAudit(op, actor, {
        ...auditTarget("namespace_keys", record),
        action: "keys.rewrap",
        summary: `Re-wrapped the keys of namespace ${namespace} in ${repositoryPath} under ${ref} version ` +
          `${wrapped.kekVersion}`,
      }, now);
      return (await op.commit()).ok ? { value: true } : null;
    };
    // Never retire a version a key set still needs: ten lost races throw, a later rotation finishes the job.
    const message = `Key set ${repositoryPath}/${namespace} kept changing; run the rotation again`;
    if (await withRetry(attempt, 10, message)) rewrapped++;
  }
  return rewrapped;
}
