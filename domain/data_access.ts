/**
 * What a job may touch in a repository, and the job-scoped data tokens that say so (ENGINE.md §5).
 *
 * A job that reads or writes a repository gets, with its claim and with every progress reply, a fresh
 * data token signed by the control plane's key (token_signing.ts): {job, host, BES, repository,
 * namespace, access, 5-minute expiry}. The namespace is the host id of the control plane. Writes are
 * backups and synthetic fulls; restores, browse, search, verify, replicate (its source) and bmr read. A
 * replicate job whose replica target sits on another BES also gets a write token for that BES and the
 * replica repository, and the replica BES's data URL and certificate in its payload. No token for prune
 * and health checks (they need none), a job that has ended or been cancelled, or one this principal
 * does not hold.
 *
 * A restore from a replica (payload `source` {kind "replica", targetId, besId, kekSource}) reads the replica
 * repository — the point's path on the replica's target — on that target's BES.
 *
 * Agents' payloads carry the data URL and certificate of their BES (`payload.bes.dataUrl`,
 * `payload.bes.certificate`) as that BES last reported them, added when the job is handed out (never
 * stored with the job), so an agent pins exactly the certificate its BES serves.
 */
import { policyKey } from "./keys/policies.ts";
import { signDataToken } from "../engine/protocol/token.ts";
import { type Engine, engineKey } from "./engines.ts";
import { type Job, jobKey } from "./job_queue.ts";
import type { KekSource } from "./replicas.ts";
import type { RestorePoint } from "./restore_points.ts";
import { restorePointKey } from "./keys/restore.ts";
import { tokenSigningKey } from "./token_signing.ts";
import { type Repository, repositoryOf, repositoryOfPayload } from "./repositories.ts";

/** How long a data token lives. Progress replies renew it; engines report progress every few seconds. */
export const DATA_TOKEN_TTL_SECONDS = 5 * 60;

/** A repository: one (storage target, policy, generation), at `cadres/<policyId>/g<N>` in the target. */
export type RepositoryRef = Repository;

function isRepository(r: unknown): r is RepositoryRef {
  return repositoryOfPayload({ repository: r }) !== null;
}

/**
 * The repository a job touches: the one its payload names (a backup goes where it was sent, even if the
 * policy moved to a new generation since), else its restore point's, else the policy's current one.
 */
export function jobRepository(
  payload: Record<string, unknown>,
  point: { repository?: unknown } | null,
  policy: { id: string; targetId: string; generation?: number } | null,
): RepositoryRef | null {
  if (isRepository(payload.repository)) return payload.repository;
  if (point) return isRepository(point.repository) ? point.repository : policy ? repositoryOf(policy) : null;
  return policy ? repositoryOf(policy) : null;
}

/** What one job may touch: a namespace of a repository on a BES, read or write. */
export interface DataScope {
  accountId: string;
  orgId: string | null;
  policyId: string;
  repository: RepositoryRef;
  /** The host id whose namespace it is (the token's `host` and `namespace`). */
  namespace: string;
  /** The BES whose data API accepts the token. */
  bes: string;
  access: "read" | "write";
  /** The KEK source guarding the repository's keys (primary repositories: the account's). */
  kekSource: KekSource;
  /** Replicate jobs: the replica repository, its BES and its rule's KEK source. */
  replica: { bes: string; repository: RepositoryRef; kekSource: KekSource } | null;
}

export type ScopeResult =
  | { kind: "scope"; scope: DataScope }
  /** The job's kind touches no repository data (prune, health check). */
  | { kind: "none" }
  /** It does, but what it touches cannot be worked out (its policy or restore point is gone, no host). */
  | { kind: "unknown"; reason: string };

const READ_KINDS = new Set([
  "restore_files",
  "restore_image",
  "browse",
  "search",
  "file_history",
  "verify",
  "bmr",
  "replicate",
  "restore_drill",
]);

const str = (v: unknown): string | null => typeof v === "string" && v.length > 0 ? v : null;

interface PolicyLike {
  id: string;
  accountId: string;
  orgId: string | null;
  besId: string;
  targetId: string;
  generation?: number;
}

/** Reads what a job touches (one or two KV reads). */
export async function jobDataScope(kv: Deno.Kv, job: Job): Promise<ScopeResult> {
  const p = job.payload;
  if (job.kind === "backup" || job.kind === "synthetic_full") {
    const policyId = str(p.policyId);
    const host = str(p.hostId) ?? (job.principal.startsWith("agent:") ? job.principal.slice(6) : null);
    if (!policyId) return { kind: "unknown", reason: "the job names no policy" };
    if (!host) return { kind: "unknown", reason: "the job names no host (namespace)" };
    const policy = (await kv.get<PolicyLike>(policyKey(policyId))).value;
    const repository = jobRepository(p, null, policy);
    if (!policy || !repository) return { kind: "unknown", reason: `policy ${policyId} no longer exists` };
    const bes = str((p.bes as { id?: unknown } | undefined)?.id) ??
      (job.principal.startsWith("bes:") ? job.principal.slice(4) : policy.besId);
    return {
      kind: "scope",
      scope: {
        accountId: policy.accountId,
        orgId: policy.orgId,
        policyId,
        repository,
        namespace: host,
        bes,
        access: "write",
        kekSource: "account",
        replica: null,
      },
    };
  }
  if (!READ_KINDS.has(job.kind)) return { kind: "none" };
  const pointId = str(p.restorePointId);
  if (!pointId) return { kind: "unknown", reason: "the job names no restore point" };
  const point = (await kv.get<RestorePoint & { repository?: unknown }>(restorePointKey(pointId))).value;
  if (!point) return { kind: "unknown", reason: `restore point ${pointId} no longer exists` };
  if (!point.hostId) return { kind: "unknown", reason: `restore point ${pointId} belongs to no host` };
  const policy = (await kv.get<PolicyLike>(policyKey(point.policyId))).value;
  // The point's own repository: where it was written (prune payloads name theirs too, but need no token).
  const repository = jobRepository({}, point, policy);
  if (!repository) {
    return { kind: "unknown", reason: `the repository of restore point ${pointId} is not recorded` };
  }
  const namespace = point.hostId;
  // Every read of the point: in its policy's account and org (the job's once the policy is gone), its host's namespace.
  const readScope = (
    where: Pick<DataScope, "repository" | "bes" | "kekSource" | "replica">,
  ): ScopeResult => ({
    kind: "scope",
    scope: {
      accountId: policy?.accountId ?? job.accountId,
      orgId: policy ? policy.orgId : job.orgId,
      policyId: point.policyId,
      repository: where.repository,
      namespace,
      bes: where.bes,
      access: "read",
      kekSource: where.kekSource,
      replica: where.replica,
    },
  });
  // A restore from a replica copy (restore_requests.ts `restoreSource`): the same repository path and namespace on
  // the replica's target, served by that target's BES, its keys opened with the rule's KEK source.
  const source = p.source as
    | { kind?: unknown; targetId?: unknown; besId?: unknown; kekSource?: unknown }
    | undefined;
  if ((job.kind === "restore_files" || job.kind === "restore_image") && source?.kind === "replica") {
    const targetId = str(source.targetId);
    const besId = str(source.besId);
    if (!targetId || !besId) return { kind: "unknown", reason: "the restore names no replica target" };
    return readScope({
      repository: { ...repository, target: targetId },
      bes: besId,
      kekSource: source.kekSource === "pam_vault" ? "pam_vault" : "account",
      replica: null,
    });
  }
  let replica: DataScope["replica"] = null;
  if (job.kind === "replicate") {
    const target = p.target as { id?: unknown; besId?: unknown } | undefined;
    const targetId = str(p.targetId) ?? str(target?.id);
    const besId = str(target?.besId);
    if (!targetId || !besId) return { kind: "unknown", reason: "the replicate job names no replica target" };
    replica = {
      bes: besId,
      repository: { ...repository, target: targetId },
      kekSource: p.kekSource === "pam_vault" ? "pam_vault" : "account",
    };
  }
  return readScope({ repository, bes: point.engineId, kekSource: "account", replica });
}

/** A signed data token and when it expires. */
export interface IssuedToken {
  token: string;
  expiresAt: string;
}

/** Signs a token for `job` over `scope` (or, with `replica`, its replica repository on the replica BES). */
export async function issueDataToken(
  kv: Deno.Kv,
  masterKey: Uint8Array,
  job: Pick<Job, "id">,
  scope: DataScope,
  now: Date,
  which: "primary" | "replica" = "primary",
): Promise<IssuedToken> {
  const { privateKey } = await tokenSigningKey(kv, masterKey, now);
  const iat = Math.floor(now.getTime() / 1000);
  const exp = iat + DATA_TOKEN_TTL_SECONDS;
  const target = which === "replica" && scope.replica
    ? { bes: scope.replica.bes, repository: scope.replica.repository, access: "write" as const }
    : { bes: scope.bes, repository: scope.repository, access: scope.access };
  const token = signDataToken(privateKey, {
    v: 1,
    job: job.id,
    host: scope.namespace,
    bes: target.bes,
    repository: target.repository,
    namespace: scope.namespace,
    access: target.access,
    iat,
    exp,
  });
  return { token, expiresAt: new Date(exp * 1000).toISOString() };
}

/** The data-access part of a job handed to its engine (claim reply; progress replies carry the tokens). */
export interface JobDataAccess {
  dataToken: string | null;
  dataTokenExpiresAt: string | null;
  /** Replicate to a target on another BES: a write token for that BES's data API. */
  replicaDataToken: string | null;
}

const NO_ACCESS: JobDataAccess = { dataToken: null, dataTokenExpiresAt: null, replicaDataToken: null };

/** True while `owner` holds `job` and it may still work: leased to it, lease live, not cancelled. */
export function holdsLiveJob(job: Job | null, owner: string, now: Date): job is Job {
  return !!job && job.principal === owner && job.status === "leased" && !job.cancelRequested &&
    now.getTime() < Date.parse(job.leaseExpiresAt ?? "");
}

/** Fresh tokens for a job `owner` holds (none when it does not hold it live, or the job needs none). */
export async function dataAccessFor(
  kv: Deno.Kv,
  masterKey: Uint8Array,
  job: Job,
  owner: string,
  now: Date,
  known?: ScopeResult,
): Promise<JobDataAccess> {
  if (!holdsLiveJob(job, owner, now)) return NO_ACCESS;
  const result = known ?? await jobDataScope(kv, job);
  if (result.kind !== "scope") return NO_ACCESS;
  const primary = await issueDataToken(kv, masterKey, job, result.scope, now);
  const replica = result.scope.replica && result.scope.replica.bes !== result.scope.bes
    ? await issueDataToken(kv, masterKey, job, result.scope, now, "replica")
    : null;
  return {
    dataToken: primary.token,
    dataTokenExpiresAt: primary.expiresAt,
    replicaDataToken: replica?.token ?? null,
  };
}

/** The data API of a BES as payloads carry it. */
function dataApiOf(engine: Engine | null) {
  return { dataUrl: engine?.dataUrl ?? null, certificate: engine?.certificate ?? null };
}

/**
 * A claimed job as handed to its engine: the payload with the current data URL and certificate of the
 * BES it talks to (agents: `bes`; replicate: `target.bes`), and its data tokens. `engines` caches
 * engine reads across the jobs of one claim.
 */
export async function handOutJob(
  kv: Deno.Kv,
  masterKey: Uint8Array,
  job: Job,
  owner: string,
  now: Date,
  engines = new Map<string, Promise<Engine | null>>(),
): Promise<{ payload: Record<string, unknown> } & JobDataAccess> {
  const engine = (id: string) => {
    let e = engines.get(id);
    if (!e) engines.set(id, e = kv.get<Engine>(engineKey(id)).then((r) => r.value));
    return e;
  };
  const scope = await jobDataScope(kv, job);
  let payload = job.payload;
  const bes = payload.bes as { id?: unknown } | undefined;
  const besId = str(bes?.id) ??
    (scope.kind === "scope" && owner.startsWith("agent:") ? scope.scope.bes : null);
  if (owner.startsWith("agent:") && besId) {
    payload = { ...payload, bes: { ...(bes ?? { id: besId }), ...dataApiOf(await engine(besId)) } };
  }
  const target = payload.target as { besId?: unknown } | undefined;
  if (job.kind === "replicate" && str(target?.besId)) {
    const replicaBes = str(target!.besId)!;
    payload = {
      ...payload,
      target: { ...target, bes: { id: replicaBes, ...dataApiOf(await engine(replicaBes)) } },
    };
  }
  return { payload, ...await dataAccessFor(kv, masterKey, job, owner, now, scope) };
}

/** Fresh tokens for a progress reply: re-reads the job (the progress write just renewed its lease). */
export async function progressDataAccess(
  kv: Deno.Kv,
  masterKey: Uint8Array,
  owner: string,
  jobId: string,
  now: Date,
): Promise<JobDataAccess> {
  const job = (await kv.get<Job>(jobKey(jobId))).value;
  return job ? await dataAccessFor(kv, masterKey, job, owner, now) : NO_ACCESS;
}
