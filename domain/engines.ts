/**
 * Backup Engine Services (BES): registration with an org or account secret, heartbeats with health
 * metrics, the 3-minute offline rule, edits, and the crash-safe cascading delete (DESIGN.md §4.4).
 */
import { z } from "zod";
import { raiseAlert, type RaiseInput, readOpenAlert, resolveAlert } from "./alerts.ts";
import { appendAudit, auditTarget } from "./audit.ts";
import { ConflictError, NotFoundError, UnauthorizedError, ValidationError } from "./errors.ts";
import { newId } from "./ids.ts";
import { AtomicRecorder, groupCommitter } from "./group_commit.ts";
import { withRetry } from "./kv.ts";
import { deleteKeysUnder, scopedList } from "./pointer_index.ts";
import { CommitConflictError } from "./retry.ts";
import { type Actor, authorize, inScope, principalActor } from "./rbac.ts";
import { CertificatePem, DataUrl, inspectCertificate } from "./certificates.ts";
import { decodePublicKey } from "./signing.ts";
import { countStatusChange } from "./ops_counters.ts";
import { besDeletionEpochKey } from "./keys/holds.ts";
import { DisplayName } from "./validation.ts";
import {
  deletingEngineKey,
  deletingEnginesPrefix,
  engineByPublicKeyKey,
  engineKey,
  engineMetricsKey,
  engineMetricsPrefix,
  enginesByAccountKey,
  enginesByAccountPrefix,
  liveEngineKey,
  liveEnginesPrefix,
} from "./keys/engines.ts";
import { policiesByBesPrefix } from "./keys/policies.ts";
import { targetsByBesPrefix } from "./keys/storage.ts";
import { lenientFilter, LimitField, OffsetField, strictQuery } from "./list_filters.ts";
export {
  deletingEngineKey,
  engineByPublicKeyKey,
  engineKey,
  engineMetricsKey,
  enginesByAccountKey,
  liveEngineKey,
};

export const DEPLOYMENT_MODELS = ["on_premise", "cloud_vm", "cadres_hosted"] as const;
export const ENGINE_STATUSES = ["pending", "online", "offline", "degraded", "deleting"] as const;
export type EngineStatus = (typeof ENGINE_STATUSES)[number];

/** Engines are asked to heartbeat this often. */
export const HEARTBEAT_INTERVAL_SECONDS = 60;
/** No heartbeat for longer than this → offline + critical alert. */
export const OFFLINE_AFTER_MS = 3 * 60_000;
/** True when the engine heartbeated within the offline window at `now` (explicit times, not the status alone). */
export function engineOnlineAt(engine: Pick<Engine, "status" | "lastHeartbeatAt">, now: Date): boolean {
  if (engine.status === "offline" || engine.status === "deleting" || !engine.lastHeartbeatAt) return false;
  return now.getTime() - Date.parse(engine.lastHeartbeatAt) <= OFFLINE_AFTER_MS;
}
/** `degraded`: the engine reports memory or disk at or above this percent (see docs/engine-protocol.md). */
export const DEGRADED_PERCENT = 95;
/** Metrics history kept per engine: 24 h at one sample a minute. */
export const METRICS_RETENTION_MS = 24 * 3600_000;

export interface EngineMetrics {
  cpuPercent: number;
  memoryPercent: number;
  diskPercent: number;
  activeJobs: number;
  uptimeSeconds: number;
}

export interface Engine {
  id: string;
  accountId: string;
  /** null: registered with the account secret (account-scoped). */
  orgId: string | null;
  name: string;
  deploymentModel: (typeof DEPLOYMENT_MODELS)[number];
  publicKey: string;
  hostname: string;
  ipAddress: string;
  port: number;
  version: string;
  status: EngineStatus;
  statusReason: string;
  pxeEnabled: boolean;
  pxeNetwork: string | null;
  registeredAt: string;
  updatedAt: string;
  lastHeartbeatAt: string | null;
  metrics: EngineMetrics | null;
  /** Ids of its storage targets, kept by target create/delete in the same write (count = length). */
  storageTargetIds: string[];
  managedBytes: number;
  /**
   * The data API agents reach (ENGINE.md §5) and its TLS certificate (PEM), as the BES last reported
   * them: the URL only through a signed registration, the certificate also through heartbeats (renewal).
   * Absent on engines registered before the data API existed.
   */
  dataUrl?: string | null;
  certificate?: string | null;
  /** SHA-256 of the certificate's DER (hex) and its expiry. */
  certificateSha256?: string | null;
  certificateExpiresAt?: string | null;
}

const Percent = z.number().min(0, "must be 0–100").max(100, "must be 0–100");
const Hostname = z.string().trim().min(1, "is required").max(253, "must be at most 253 characters")
  .regex(
    /^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$/,
    "must be a valid hostname",
  );
const IpAddress = z.union([z.ipv4(), z.ipv6()], { error: "must be an IPv4 or IPv6 address" });

/** The registration body of DESIGN.md §5. */
export const BesRegistration = z.object({
  name: DisplayName,
  deploymentModel: z.enum(DEPLOYMENT_MODELS, { error: `must be one of ${DEPLOYMENT_MODELS.join(", ")}` }),
  publicKey: z.string().superRefine((v, ctx) => {
    try {
      decodePublicKey(v);
    } catch (e) {
      ctx.addIssue({ code: "custom", message: (e as Error).message });
    }
  }),
  hostname: Hostname,
  ipAddress: IpAddress,
  port: z.number().int().min(1, "must be 1–65535").max(65535, "must be 1–65535"),
  version: z.string().trim().min(1, "is required").max(50, "must be at most 50 characters"),
  /** The data API's URL (`https://…`; `http://` on loopback only), and its certificate (PEM). */
  dataUrl: DataUrl.optional(),
  certificate: CertificatePem.optional(),
}).strict().superRefine((v, ctx) => {
  if (v.certificate && !v.dataUrl) {
    ctx.addIssue({ code: "custom", path: ["dataUrl"], message: "is required with a certificate" });
  } else if (v.dataUrl?.startsWith("https:") && !v.certificate) {
    ctx.addIssue({ code: "custom", path: ["certificate"], message: "is required with an https:// data URL" });
  } else if (v.certificate) {
    try {
      inspectCertificate(v.certificate, v.dataUrl ?? null);
    } catch (e) {
      ctx.addIssue({ code: "custom", path: ["certificate"], message: (e as Error).message });
    }
  }
});
export type BesRegistration = z.infer<typeof BesRegistration>;

export const HeartbeatMetrics = z.object({
  cpuPercent: Percent,
  memoryPercent: Percent,
  diskPercent: Percent,
  activeJobs: z.number().int().min(0).max(100_000),
  uptimeSeconds: z.number().int().min(0),
});

export const StorageReport = z.object({
  targetId: z.string().min(1).max(40),
  totalBytes: z.number().int().min(0),
  usedBytes: z.number().int().min(0),
  freeBytes: z.number().int().min(0),
}).refine((r) => r.usedBytes <= r.totalBytes, { message: "usedBytes must not exceed totalBytes" });

export const BesHeartbeat = z.object({
  version: z.string().trim().min(1).max(50),
  metrics: HeartbeatMetrics,
  storage: z.array(StorageReport).max(200).optional(),
  /** A renewed data API certificate (PEM); it must name the data URL registered. */
  certificate: CertificatePem.optional(),
});
export type BesHeartbeat = z.infer<typeof BesHeartbeat>;

/** IPv4 CIDR (`10.0.0.0/24`) or IPv6 CIDR; the network address must have no host bits set for IPv4. */
export const Cidr = z.string().trim().superRefine((v, ctx) => {
  const m4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(v);
  if (m4) {
    const octets = m4.slice(1, 5).map(Number);
    const bits = Number(m4[5]);
    if (octets.some((o) => o > 255) || bits > 32) {
      ctx.addIssue({ code: "custom", message: "must be a valid CIDR such as 10.20.0.0/24" });
      return;
    }
    const ip = octets.reduce((a, o) => a * 256 + o, 0);
    const hostBits = 2 ** (32 - bits);
    if (ip % hostBits !== 0) {
      ctx.addIssue({
        code: "custom",
        message: `host bits are set: did you mean the network address of /${bits}?`,
      });
    }
    return;
  }
  const m6 = /^([0-9a-fA-F:]+)\/(\d{1,3})$/.exec(v);
  if (m6 && z.ipv6().safeParse(m6[1]).success && Number(m6[2]) <= 128) return;
  ctx.addIssue({ code: "custom", message: "must be a valid CIDR such as 10.20.0.0/24" });
});

/** What an operator may edit on an engine. */
export const EngineUpdate = z.object({
  name: DisplayName,
  pxeEnabled: z.boolean(),
  pxeNetwork: z.union([z.literal(""), z.null(), Cidr]).transform((v) => v || null),
}).superRefine((v, ctx) => {
  if (v.pxeEnabled && !v.pxeNetwork) {
    ctx.addIssue({ code: "custom", path: ["pxeNetwork"], message: "is required when PXE is enabled" });
  }
});
export type EngineUpdate = z.input<typeof EngineUpdate>;

/**
 * The data API fields a registration sets (null: it reported none, the previous ones stay). Throws
 * ValidationError naming `certificate` when the certificate has expired at `now`.
 */
function dataApiOf(data: BesRegistration, now: Date):
  | Pick<
    Engine,
    "dataUrl" | "certificate" | "certificateSha256" | "certificateExpiresAt"
  >
  | null {
  if (!data.dataUrl) return null;
  if (!data.certificate) {
    return { dataUrl: data.dataUrl, certificate: null, certificateSha256: null, certificateExpiresAt: null };
  }
  const info = certificateInfo(data.certificate, data.dataUrl, now);
  return {
    dataUrl: data.dataUrl,
    certificate: data.certificate,
    certificateSha256: info.sha256,
    certificateExpiresAt: info.expiresAt,
  };
}

function certificateInfo(pem: string, dataUrl: string | null, now: Date) {
  try {
    return inspectCertificate(pem, dataUrl, now);
  } catch (e) {
    throw new ValidationError(`The certificate ${(e as Error).message}`, {
      certificate: (e as Error).message,
    });
  }
}

/** The tenancy of an engine, for `authorize`. */
export function engineScope(engine: Pick<Engine, "accountId" | "orgId">) {
  return { accountId: engine.accountId, orgId: engine.orgId };
}

export async function getEngine(kv: Deno.Kv, id: string): Promise<Engine | null> {
  return (await kv.get<Engine>(engineKey(id))).value;
}

/** Returns the engine if the actor may see it; throws NotFoundError otherwise. */
export async function requireEngine(kv: Deno.Kv, actor: Actor, id: string): Promise<Engine> {
  const engine = await getEngine(kv, id);
  if (!engine || !inScope(actor, engineScope(engine))) throw new NotFoundError(`Engine ${id} not found`);
  return engine;
}

/** The actor an engine acts as in audit entries. */
export function engineActor(engine: Pick<Engine, "id" | "name" | "accountId">): Actor {
  return principalActor(`bes:${engine.id}`, `BES ${engine.name}`, engine.accountId);
}

/**
 * The public key is registered (or enrolled) in another tenant. The protocol answers it exactly like
 * a registration with a bad signature, so a secret holder cannot probe other tenants for keys.
 */
export class KeyInAnotherTenantError extends ConflictError {}

/** A registration's nonce, claimed in the registration's own atomic write. */
export interface RegistrationNonce {
  key: Deno.KvKey;
  expireIn: number;
}

/** Adds the nonce claim to a registration's write (a replay then fails the operation's check). */
export function claimRegistrationNonce(
  op: Deno.AtomicOperation,
  nonce: RegistrationNonce | undefined,
  now: Date,
) {
  if (nonce) {
    op.check({ key: nonce.key, versionstamp: null }).set(nonce.key, now.getTime(), {
      expireIn: nonce.expireIn,
    });
  }
}

/** After a failed commit: throws UnauthorizedError when the reason was the nonce (a replay), else returns. */
export async function refuseReplayedNonce(kv: Deno.Kv, nonce: RegistrationNonce | undefined): Promise<void> {
  if (nonce && (await kv.get(nonce.key)).versionstamp !== null) throw new UnauthorizedError("Replayed nonce");
}

/**
 * Registers a BES for the tenant its secret resolved to. The same public key again is idempotent:
 * `{ created: false }`, same id, details refreshed. A key registered in another tenant is a
 * KeyInAnotherTenantError. With `nonce` (the protocol's signed registration), the nonce is claimed in
 * the same atomic write; a replay throws UnauthorizedError and changes nothing. Proving possession of
 * the key is the caller's part (routes/engine_protocol.ts).
 */
export async function registerEngine(
  kv: Deno.Kv,
  tenant: { accountId: string; orgId: string | null },
  input: BesRegistration,
  now: Date,
  options: { nonce?: RegistrationNonce } = {},
): Promise<{ engine: Engine; created: boolean }> {
  const data = BesRegistration.parse(input);
  const { nonce } = options;
  const dataApi = dataApiOf(data, now);
  return await withRetry<{ engine: Engine; created: boolean }>(async () => {
    const pointer = await kv.get<string>(engineByPublicKeyKey(data.publicKey));
    const at = now.toISOString();
    if (pointer.value) {
      const entry = await kv.get<Engine>(engineKey(pointer.value));
      const existing = entry.value;
      if (!existing) return null; // a delete is finishing: retry
      if (existing.accountId !== tenant.accountId || existing.orgId !== tenant.orgId) {
        throw new KeyInAnotherTenantError("This public key is already registered to another organization");
      }
      if (existing.status === "deleting") throw new ConflictError("This engine is being deleted");
      const next: Engine = {
        ...existing,
        name: data.name,
        deploymentModel: data.deploymentModel,
        hostname: data.hostname,
        ipAddress: data.ipAddress,
        port: data.port,
        version: data.version,
        ...dataApi,
        updatedAt: at,
      };
      const op = kv.atomic().check(pointer, entry).set(engineKey(next.id), next);
      claimRegistrationNonce(op, nonce, now);
      appendAudit(op, engineActor(next), {
        ...auditTarget("engine", next),
        action: "engine.reregister",
        summary: `BES ${next.name} registered again (${next.hostname}, ${next.version})`,
      }, now);
      if ((await op.commit()).ok) return { value: { engine: next, created: false } };
      await refuseReplayedNonce(kv, nonce);
      return null;
    }
    const { dataUrl: _url, certificate: _pem, ...details } = data;
    const engine: Engine = {
      id: newId(now),
      accountId: tenant.accountId,
      orgId: tenant.orgId,
      ...details,
      dataUrl: null,
      certificate: null,
      certificateSha256: null,
      certificateExpiresAt: null,
      ...dataApi,
      status: "pending",
      statusReason: "Registered; waiting for the first heartbeat",
      pxeEnabled: false,
      pxeNetwork: null,
      registeredAt: at,
      updatedAt: at,
      lastHeartbeatAt: null,
      metrics: null,
      storageTargetIds: [],
      managedBytes: 0,
    };
    const op = kv.atomic()
      .check({ key: engineByPublicKeyKey(data.publicKey), versionstamp: null })
      .set(engineKey(engine.id), engine)
      .set(enginesByAccountKey(engine.accountId, engine.id), engine.id)
      .set(engineByPublicKeyKey(data.publicKey), engine.id);
    countStatusChange(op, "engine", engine.accountId, null, engine.status);
    claimRegistrationNonce(op, nonce, now);
    appendAudit(op, engineActor(engine), {
      ...auditTarget("engine", engine),
      action: "engine.register",
      summary:
        `BES ${engine.name} registered (${engine.hostname}, ${engine.ipAddress}:${engine.port}, ${engine.version})`,
    }, now);
    if ((await op.commit()).ok) return { value: { engine, created: true } };
    await refuseReplayedNonce(kv, nonce);
    return null;
  });
}

/** Total managed bytes: the used bytes the engine reports for its own targets (unchanged without reports). */
function managedBytesOf(engine: Engine, data: BesHeartbeat): number {
  const own = new Set(engine.storageTargetIds);
  const reported = (data.storage ?? []).filter((r) => own.has(r.targetId));
  return reported.length ? reported.reduce((sum, r) => sum + r.usedBytes, 0) : engine.managedBytes;
}

/** `degraded` when memory or disk is at or above DEGRADED_PERCENT; otherwise online. */
export function healthFromMetrics(metrics: EngineMetrics): { status: "online" | "degraded"; reason: string } {
  const problems = [];
  if (metrics.memoryPercent >= DEGRADED_PERCENT) problems.push(`memory ${metrics.memoryPercent}%`);
  if (metrics.diskPercent >= DEGRADED_PERCENT) problems.push(`disk ${metrics.diskPercent}%`);
  return problems.length
    ? { status: "degraded", reason: `Engine reports ${problems.join(" and ")} (≥ ${DEGRADED_PERCENT}%)` }
    : { status: "online", reason: "Heartbeats arriving" };
}

/** Heartbeats per group commit: each checks two keys (four more on a status change). */
export const HEARTBEATS_PER_COMMIT = 32;

/**
 * The group committer of heartbeats (BES and agents): heartbeats that arrive while a commit is in
 * flight share the next one, each with its own checks (domain/group_commit.ts).
 */
export function heartbeatCommitter(kv: Deno.Kv) {
  return groupCommitter(kv, "heartbeats", HEARTBEATS_PER_COMMIT);
}

/**
 * Applies a heartbeat: status (pending/offline → online or degraded), metrics sample, and the
 * transitions' alerts, in one atomic write that also claims the request's nonce (so a replayed
 * request changes nothing: `replayed: true`). Returns the engine after the heartbeat. Throws
 * NotFoundError when the engine is gone or being deleted.
 *
 * The write is checked on the engine entry (the version the heartbeat was computed from) and on the
 * nonce being unused, and may share a group commit with concurrent heartbeats (`heartbeatCommitter`):
 * two heartbeats of one engine never share a commit, and when a shared commit fails each heartbeat is
 * committed on its own, so a heartbeat is written exactly when its own checks hold.
 */
export async function applyHeartbeat(
  kv: Deno.Kv,
  engineId: string,
  input: BesHeartbeat,
  now: Date,
  options: {
    nonce?: { key: Deno.KvKey; expireIn: number };
    /** The engine entry the caller already read (used for the first attempt). */
    entry?: Deno.KvEntryMaybe<Engine>;
    /** Input already validated by the caller. */
    parsed?: boolean;
    /**
     * The public key the request's signature was verified with: an entry read again for a retry must
     * still carry it (an engine's key never changes, so this only ever refuses what no longer exists).
     */
    signedWith?: string;
  } = {},
): Promise<{ engine: Engine; replayed: boolean; versionstamp?: string }> {
  const data = options.parsed ? input : BesHeartbeat.parse(input);
  const { nonce } = options;
  const minute = Math.floor(now.getTime() / 60_000) * 60_000;
  let known = options.entry;
  for (let i = 0; i < 10; i++) {
    const entry = known ?? await kv.get<Engine>(engineKey(engineId));
    known = undefined;
    const engine = entry.value;
    if (!engine || engine.status === "deleting") throw new NotFoundError("Engine not found");
    if (options.signedWith !== undefined && engine.publicKey !== options.signedWith) {
      throw new NotFoundError("Engine not found");
    }
    const health = healthFromMetrics(data.metrics);
    // A renewed certificate must serve the data URL the last signed registration set.
    if (data.certificate && !engine.dataUrl) {
      throw new ValidationError(
        "No data URL is registered for this BES: report it in a signed registration",
        {
          certificate: "needs a data URL registered first (signed registration)",
        },
      );
    }
    const renewed = data.certificate && data.certificate !== engine.certificate
      ? certificateInfo(data.certificate, engine.dataUrl ?? null, now)
      : null;
    const next: Engine = {
      ...engine,
      ...(renewed
        ? {
          certificate: data.certificate,
          certificateSha256: renewed.sha256,
          certificateExpiresAt: renewed.expiresAt,
        }
        : {}),
      status: health.status,
      statusReason: health.reason,
      version: data.version,
      lastHeartbeatAt: now.toISOString(),
      metrics: data.metrics,
      managedBytes: managedBytesOf(engine, data),
    };
    const op = new AtomicRecorder().check(entry).set(engineKey(engineId), next);
    // History is one sample a minute: the first heartbeat of each minute writes it.
    const lastMinute = engine.lastHeartbeatAt
      ? Math.floor(Date.parse(engine.lastHeartbeatAt) / 60_000) * 60_000
      : -1;
    if (lastMinute !== minute) {
      op.set(engineMetricsKey(engineId, minute), { at: now.toISOString(), ...data.metrics }, {
        expireIn: METRICS_RETENTION_MS + 3600_000,
      });
    }
    if (nonce) {
      op.check({ key: nonce.key, versionstamp: null }).set(nonce.key, now.getTime(), {
        expireIn: nonce.expireIn,
      });
    }
    if (engine.status !== "online" && engine.status !== "degraded") op.set(liveEngineKey(engineId), true);
    countStatusChange(op, "engine", engine.accountId, engine.status, next.status);
    // Alert transitions are rare; read them only when the status changes.
    if (engine.status === "offline" || engine.status !== next.status) {
      const offline = await readOpenAlert(kv, "engine", engineId, "engine_offline");
      resolveAlert(op, offline, now);
      const degraded = await readOpenAlert(kv, "engine", engineId, "engine_degraded");
      if (next.status === "degraded") {
        raiseAlert(op, degraded, {
          accountId: engine.accountId,
          orgId: engine.orgId,
          subjectType: "engine",
          subjectId: engineId,
          subjectName: engine.name,
          reason: "engine_degraded",
          severity: "warning",
          message: `BES ${engine.name} is degraded: ${health.reason}`,
        }, now);
      } else resolveAlert(op, degraded, now);
    }
    const res = await heartbeatCommitter(kv).submit(op);
    if (res.ok) return { engine: next, replayed: false, versionstamp: res.versionstamp };
    if (nonce && (await kv.get(nonce.key)).versionstamp !== null) return { engine, replayed: true };
  }
  throw new ConflictError("Heartbeat conflicted repeatedly; retry");
}

/**
 * The ids under a one-id-per-key index (`[...prefix, id]`), ten at a time: a sweep reads the records of a
 * page with one `getMany` instead of one read each (100,000 hosts: 10,000 reads, not 100,000).
 */
export async function* idPages(kv: Deno.Kv, prefix: Deno.KvKey, size = 10): AsyncGenerator<string[]> {
  let page: string[] = [];
  for await (const e of kv.list({ prefix })) {
    page.push(String(e.key[prefix.length]));
    if (page.length === size) {
      yield page;
      page = [];
    }
  }
  if (page.length) yield page;
}

/** What a heartbeat sweep over one live index (`sweepLiveIndex`) needs to know of its records. */
export interface LiveSweep<T extends SweptRecord> {
  /** The kind of record swept: its fleet counter and the subject of its offline alert. */
  kind: "engine" | "host";
  /** The live index: one key per watched record (`[...prefix, id]`). */
  prefix: Deno.KvKey;
  recordKey: (id: string) => Deno.KvKey;
  liveKey: (id: string) => Deno.KvKey;
  /** Whether the sweep watches a record in this status; one it does not leaves the live index. */
  watched: (record: T) => boolean;
  /** The record gone offline, or null while it is still fresh. */
  offline: (record: T) => T | null;
  /** The alert a record going offline raises (or sees again), beside its status counters. */
  offlineAlert: (record: T) => Pick<RaiseInput, "subjectName" | "reason" | "severity" | "message">;
  /** Adds to `op` what going offline writes besides that (other alerts resolved). */
  write?: (op: Deno.AtomicOperation, id: string, record: T) => Promise<void>;
}

/** What every swept record has: its account and org (the alert's) and its status (the counters'). */
type SweptRecord = { accountId: string; orgId: string | null; status: string };

/**
 * A heartbeat sweep: the records of a live index are read ten at a time (`idPages`); one no longer watched
 * (gone, or in a status the sweep does not watch) leaves the index; one `offline` finds silent is written
 * offline, out of the index, with its status counters moved, its `offlineAlert` raised and `write`'s
 * additions, in one checked write, reading the record again before each retry. Idempotent for the same
 * `offline` and `now`. Returns the ids it took offline.
 */
export async function sweepLiveIndex<T extends SweptRecord>(
  kv: Deno.Kv,
  sweep: LiveSweep<T>,
  now: Date,
): Promise<string[]> {
  const offline: string[] = [];
  for await (const ids of idPages(kv, sweep.prefix)) {
    const entries = await kv.getMany<T[]>(ids.map((id) => sweep.recordKey(id)));
    for (const [n, id] of ids.entries()) {
      let tries = 0;
      const attempt = async (): Promise<{ value: void } | null> => {
        const entry = tries++ === 0 ? entries[n] : await kv.get<T>(sweep.recordKey(id));
        const record = entry.value;
        if (!record || !sweep.watched(record)) {
          await kv.atomic().check(entry).delete(sweep.liveKey(id)).commit();
          return { value: undefined };
        }
        const next = sweep.offline(record);
        if (!next) return { value: undefined };
        const op = kv.atomic().check(entry).set(sweep.recordKey(id), next).delete(sweep.liveKey(id));
        countStatusChange(op, sweep.kind, record.accountId, record.status, next.status);
        const alert = sweep.offlineAlert(record);
        raiseAlert(op, await readOpenAlert(kv, sweep.kind, id, alert.reason), {
          accountId: record.accountId,
          orgId: record.orgId,
          subjectType: sweep.kind,
          subjectId: id,
          ...alert,
        }, now);
        await sweep.write?.(op, id, record);
        if (!(await op.commit()).ok) return null;
        offline.push(id);
        return { value: undefined };
      };
      try {
        await withRetry(attempt, 5);
      } catch (error) {
        // Giving up on this record is deliberate, not a dropped change: nothing was written, so it stays in
        // the live index and the next minute's sweep re-judges it (the race it lost is most likely a
        // heartbeat that just arrived); one contended record must not stop the sweep of the others.
        if (!(error instanceof CommitConflictError)) throw error;
      }
    }
  }
  return offline;
}

/**
 * The sweep: every live engine silent for more than 3 minutes at `now` goes offline with one critical
 * alert (raised in the same atomic operation). Idempotent for the same `now`. Engines are read ten at a
 * time; an engine that must change is read again before each retry of its checked write.
 */
export async function sweepEngineHeartbeats(kv: Deno.Kv, now: Date): Promise<{ offline: string[] }> {
  const offline = await sweepLiveIndex<Engine>(kv, {
    kind: "engine",
    prefix: liveEnginesPrefix(),
    recordKey: engineKey,
    liveKey: liveEngineKey,
    watched: (engine) => engine.status === "online" || engine.status === "degraded",
    offline: (engine) => {
      const last = engine.lastHeartbeatAt ? Date.parse(engine.lastHeartbeatAt) : 0;
      if (now.getTime() - last <= OFFLINE_AFTER_MS) return null;
      const silentMin = Math.floor((now.getTime() - last) / 60_000);
      return {
        ...engine,
        status: "offline",
        statusReason: `No heartbeat for ${silentMin} minutes (last ${engine.lastHeartbeatAt})`,
      };
    },
    offlineAlert: (engine) => ({
      subjectName: engine.name,
      reason: "engine_offline",
      severity: "critical",
      message: `BES ${engine.name} is offline: no heartbeat for more than 3 minutes`,
    }),
    async write(op, id) {
      resolveAlert(op, await readOpenAlert(kv, "engine", id, "engine_degraded"), now);
    },
  }, now);
  return { offline };
}

/** The metrics history of an engine (oldest first) within the last 24 h at `now`. */
export async function listEngineMetrics(
  kv: Deno.Kv,
  engineId: string,
  now: Date,
): Promise<Array<EngineMetrics & { at: string }>> {
  const from = Math.floor((now.getTime() - METRICS_RETENTION_MS) / 60_000) * 60_000;
  const out = [];
  for await (
    const e of kv.list<EngineMetrics & { at: string }>({
      start: engineMetricsKey(engineId, from),
      end: engineMetricsKey(engineId, Number.MAX_SAFE_INTEGER),
    })
  ) out.push(e.value);
  return out;
}

/** Deletes metrics samples older than 24 h (KV's expiry is lazy). */
export async function purgeEngineMetrics(kv: Deno.Kv, now: Date): Promise<number> {
  const cutoff = now.getTime() - METRICS_RETENTION_MS;
  let removed = 0;
  for await (const e of kv.list({ prefix: engineMetricsPrefix() })) {
    if (Number(e.key[2]) < cutoff) {
      await kv.delete(e.key);
      removed++;
    }
  }
  return removed;
}

const ENGINE_SORTS = ["name", "-name", "status", "-status", "lastHeartbeatAt", "-lastHeartbeatAt"] as const;

/** The filter fields of the Engines page, once: the page reads them leniently, the API strictly. */
const ENGINE_FILTER_FIELDS = {
  q: z.string().trim().max(200, "must be at most 200 characters"),
  orgId: z.string().max(40, "must be an organization id (or account)"),
  status: z.enum(["", ...ENGINE_STATUSES], { error: `must be one of ${ENGINE_STATUSES.join(", ")}` }),
  sort: z.enum(ENGINE_SORTS, { error: `must be one of ${ENGINE_SORTS.join(", ")}` }),
  offset: OffsetField,
  limit: LimitField,
};

const ENGINE_FILTER_DEFAULTS = { q: "", orgId: "", status: "", sort: "name", offset: 0, limit: 50 } as const;

/** Filters of the engines list; every field falls back to its default, so a raw query object parses. */
export const EngineFilter = lenientFilter(ENGINE_FILTER_FIELDS, ENGINE_FILTER_DEFAULTS);
export type EngineFilter = z.infer<typeof EngineFilter>;

/** The same filters as a strict query (`GET /api/v1/engines`): a bad value is refused (422 naming it). */
export const EngineQuery = strictQuery(ENGINE_FILTER_FIELDS, ENGINE_FILTER_DEFAULTS);

/** Engines of the actor's account in scope, filtered and sorted; `total` before paging. */
export const listEngines = scopedList<Engine, EngineFilter>({
  index: () => ({ prefix: enginesByAccountPrefix, key: engineKey, scope: engineScope }),
  match: (filter) => {
    const needle = filter.q.toLowerCase();
    return (e) =>
      (!filter.status || e.status === filter.status) &&
      (!filter.orgId || (filter.orgId === "account" ? e.orgId === null : e.orgId === filter.orgId)) &&
      (!needle || e.name.toLowerCase().includes(needle) || e.hostname.toLowerCase().includes(needle) ||
        e.ipAddress.includes(needle));
  },
  compare: (a, b, field) => {
    const f = field as "name" | "status" | "lastHeartbeatAt";
    return String(a[f] ?? "").localeCompare(String(b[f] ?? ""));
  },
});

/** Edits name and PXE settings. Needs backup.manage on the engine. */
export async function updateEngine(
  kv: Deno.Kv,
  actor: Actor,
  id: string,
  input: EngineUpdate,
  now: Date,
): Promise<Engine> {
  const data = EngineUpdate.parse(input);
  return await withRetry(async () => {
    const entry = await kv.get<Engine>(engineKey(id));
    const engine = entry.value;
    if (!engine || !inScope(actor, engineScope(engine))) throw new NotFoundError(`Engine ${id} not found`);
    authorize(actor, "backup.manage", engineScope(engine));
    if (engine.status === "deleting") throw new ConflictError("This engine is being deleted");
    const next: Engine = { ...engine, ...data, updatedAt: now.toISOString() };
    const op = kv.atomic().check(entry).set(engineKey(id), next);
    appendAudit(op, actor, {
      ...auditTarget("engine", engine),
      action: "engine.update",
      summary: `Updated BES ${next.name}: PXE ${next.pxeEnabled ? `on (${next.pxeNetwork})` : "off"}`,
    }, now);
    return (await op.commit()).ok ? { value: next } : null;
  });
}

/** Children of an engine removed by the cascade, in dependency order (deepest first). */
export interface CascadeStep {
  /** KV prefixes listing the ids of one kind of child. */
  name: string;
  run: (kv: Deno.Kv, engine: Engine, now: Date) => Promise<number>;
}

const cascadeSteps: CascadeStep[] = [];

/** Lets other aggregates (storage targets, policies, …) add their part of an engine's cascade. */
export function registerEngineCascade(step: CascadeStep): void {
  if (!cascadeSteps.some((s) => s.name === step.name)) cascadeSteps.push(step);
}

/**
 * Deletes an engine and everything under it. First marks it `deleting` (so nothing new can attach
 * and its heartbeats are refused) in one atomic operation with the audit entry; then removes children
 * in batches; finally the engine itself. Safe to call again after a crash: it resumes.
 */
export async function deleteEngine(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<void> {
  await markEngineDeleting(kv, actor, id, now);
  await finishEngineDeletion(kv, id, now);
}

/**
 * Throws a ConflictError naming the holds' case references when a restore point on one of the engine's
 * storage targets is under legal hold (holds.ts). Callers run it before asking for four-eyes approval;
 * `markEngineDeleting` runs it again and checks the hold epoch in its write.
 */
export async function refuseHeldEngineDeletion(
  kv: Deno.Kv,
  engine: Pick<Engine, "id" | "name" | "accountId" | "storageTargetIds">,
) {
  const targetIds = [...engine.storageTargetIds];
  for await (const e of kv.list<string>({ prefix: targetsByBesPrefix(engine.id) })) {
    targetIds.push(String(e.key[2]));
  }
  // Loaded lazily: holds.ts reaches this module back through hosts.ts (a static import would cycle).
  const { refuseIfTargetsHoldHeldPoints } = await import("./holds.ts");
  return await refuseIfTargetsHoldHeldPoints(kv, engine.accountId, `BES ${engine.name}`, targetIds);
}

/**
 * The first step of deleteEngine: marks the engine `deleting` (indexed as such, no longer live, counted
 * in its new status) with the audit entry, in one atomic operation. Nothing when it already is. A crash
 * after it leaves the cascade to `finishEngineDeletion` (the resume job).
 */
export async function markEngineDeleting(kv: Deno.Kv, actor: Actor, id: string, now: Date): Promise<void> {
  await withRetry(async () => {
    const entry = await kv.get<Engine>(engineKey(id));
    const engine = entry.value;
    if (!engine || !inScope(actor, engineScope(engine))) throw new NotFoundError(`Engine ${id} not found`);
    authorize(actor, "backup.manage", engineScope(engine));
    if (engine.status === "deleting") return { value: undefined };
    // Held points are never pruned or expired: a BES whose targets hold one is not deleted.
    const holds = await refuseHeldEngineDeletion(kv, engine);
    const next: Engine = {
      ...engine,
      status: "deleting",
      statusReason: "Being deleted",
      updatedAt: now.toISOString(),
    };
    const op = holds.check(kv.atomic()).check(entry).set(engineKey(id), next)
      .set(deletingEngineKey(id), now.toISOString())
      // A hold placement in flight re-reads the BESes being deleted (holds.ts placeHold checks this key).
      .set(besDeletionEpochKey(engine.accountId), { at: now.toISOString(), engineId: id })
      .delete(liveEngineKey(id));
    countStatusChange(op, "engine", engine.accountId, engine.status, next.status);
    appendAudit(op, actor, {
      ...auditTarget("engine", engine),
      action: "engine.delete",
      summary: `Deleted BES ${engine.name} with its storage targets and policies`,
    }, now);
    return (await op.commit()).ok ? { value: undefined } : null;
  });
}

/** Runs (or resumes) the cascade of an engine marked `deleting`. Idempotent. */
export async function finishEngineDeletion(kv: Deno.Kv, id: string, now: Date): Promise<void> {
  let engine = await getEngine(kv, id);
  if (!engine) {
    await kv.delete(deletingEngineKey(id));
    return;
  }
  if (engine.status !== "deleting") return;
  for (const step of cascadeSteps) await step.run(kv, engine, now);
  // A step may have lost a race (e.g. an alert acknowledged meanwhile): never drop the engine while
  // children remain; it stays `deleting` and the resume job tries again.
  for (const prefix of [targetsByBesPrefix(id), policiesByBesPrefix(id)]) {
    for await (const _ of kv.list({ prefix }, { limit: 1 })) {
      throw new ConflictError(`Deletion of engine ${id} is incomplete; it will be resumed`);
    }
  }
  await deleteKeysUnder(kv, engineMetricsPrefix(id));
  for (const reason of ["engine_offline", "engine_degraded"] as const) {
    const op = kv.atomic();
    if (resolveAlert(op, await readOpenAlert(kv, "engine", id, reason), now)) await op.commit();
  }
  // Checked: two finishers racing (the resume job and a second delete) remove it, and count it, once.
  const entry = await kv.get<Engine>(engineKey(id));
  engine = entry.value;
  if (!engine || engine.status !== "deleting") return;
  const op = kv.atomic().check(entry)
    .delete(engineKey(id))
    .delete(enginesByAccountKey(engine.accountId, id))
    .delete(engineByPublicKeyKey(engine.publicKey))
    .delete(liveEngineKey(id))
    .delete(deletingEngineKey(id));
  countStatusChange(op, "engine", engine.accountId, engine.status, null);
  await op.commit();
}

/** Resumes every interrupted engine deletion (the cron job calls this). */
export async function resumeEngineDeletions(kv: Deno.Kv, now: Date): Promise<number> {
  let n = 0;
  for await (const e of kv.list({ prefix: deletingEnginesPrefix() })) {
    await finishEngineDeletion(kv, String(e.key[1]), now);
    n++;
  }
  return n;
}
