/**
 * The storage targets of a BES as places to open repositories in.
 *
 * - `local`: the folder `config.path`.
 * - `smb`, `nfs`, `iscsi`: the BES does not mount anything itself; the operator mounts each such target at
 *   `<mounts>/<targetId>` (an SMB share, an NFS export, or a file system on the iSCSI LUN; docs/engines.md
 *   shows the fstab lines). For SMB, `config.path` is a folder inside the share. The folder must be a mount
 *   point: an unmounted target would otherwise fill the BES's own disk, so it is `TARGET_UNREACHABLE`.
 * - `s3`, `s3_compatible`: the bucket `config.bucket` at `config.endpoint`, under `config.prefix`, with
 *   the target's credentials (username = access key id, secret = secret access key).
 *
 * A policy's repository of generation N is `cadres/<policyId>/g<N>/` under that root (ENGINE.md §3).
 */
import { type Backend, LocalBackend } from "../repo/backend.ts";
import { IntegrityError, MissingObjectError, RepoError } from "../repo/errors.ts";
import { S3Backend, type S3BackendOptions, S3RequestError } from "../repo/s3_backend.ts";

/** One storage target as the control plane delivers it to its BES (`POST /api/bes/v1/targets`). */
export interface TargetInfo {
  id: string;
  name: string;
  type: "s3" | "s3_compatible" | "smb" | "nfs" | "iscsi" | "local";
  config: Record<string, string | number>;
  credentials: { username: string; credentialType: string | null; secret: string } | null;
  updatedAt: string;
}

/** Reasons a job fails for its storage (DESIGN.md §5 and docs/engine-protocol.md list them). */
export type StorageReason = "TARGET_UNREACHABLE" | "TARGET_FULL" | "AUTH" | "TARGET_UNKNOWN";

/** A storage problem with the reason a job result reports. */
export class TargetError extends Error {
  constructor(readonly reason: StorageReason, message: string, options?: ErrorOptions) {
    super(message, options);
  }
  /** Whether trying again later may succeed. */
  get retryable(): boolean {
    return this.reason === "TARGET_UNREACHABLE" || this.reason === "TARGET_FULL";
  }
}

/** Errno codes of a file system that is not (or no longer) there. */
const UNREACHABLE_CODES = new Set([
  "ENOENT",
  "ENOTDIR",
  "EACCES",
  "EPERM",
  "EIO",
  "ENOTCONN",
  "ESTALE",
  "EHOSTDOWN",
  "EHOSTUNREACH",
  "ETIMEDOUT",
  "ECONNREFUSED",
  "ENXIO",
  "ENODEV",
  "EROFS",
]);

/**
 * The `TargetError` an error of `target`'s storage amounts to, or null when it is not a storage problem
 * (a damaged repository, a bug): disk full (`ENOSPC`, `EDQUOT`, S3 507 or a quota error) is `TARGET_FULL`;
 * S3 401/403 is `AUTH`; a file system that is gone or refuses access, an S3 endpoint that does not answer,
 * answers 5xx after retries or has no such bucket is `TARGET_UNREACHABLE`.
 */
export function classifyStorageError(
  e: unknown,
  target: Pick<TargetInfo, "name" | "id">,
): TargetError | null {
  if (e instanceof TargetError) return e;
  const where = `storage target ${target.name} (${target.id})`;
  const msg = e instanceof Error ? e.message : String(e);
  const code = (e as { code?: unknown })?.code;
  if (code === "ENOSPC" || code === "EDQUOT" || /No space left on device|Disk quota exceeded/.test(msg)) {
    return new TargetError("TARGET_FULL", `${where} is full: ${msg}`, { cause: e });
  }
  if (e instanceof S3RequestError) {
    if (e.status === 507 || /QuotaExceeded|InsufficientStorage/.test(msg)) {
      return new TargetError("TARGET_FULL", `${where} is full: ${msg}`, { cause: e });
    }
    if (e.status === 401 || e.status === 403) {
      return new TargetError("AUTH", `${where} refused its credentials: ${msg}`, { cause: e });
    }
    if (e.status === null || e.status >= 500 || /NoSuchBucket/.test(msg)) {
      return new TargetError("TARGET_UNREACHABLE", `${where} is not reachable: ${msg}`, { cause: e });
    }
    return null;
  }
  if (typeof code === "string" && UNREACHABLE_CODES.has(code)) {
    return new TargetError("TARGET_UNREACHABLE", `${where} is not reachable: ${msg}`, { cause: e });
  }
  if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.PermissionDenied) {
    return new TargetError("TARGET_UNREACHABLE", `${where} is not reachable: ${msg}`, { cause: e });
  }
  return null;
}

/** True for errors of the repository library that name a damaged or missing object. */
export function isRepositoryDamage(e: unknown): boolean {
  return e instanceof IntegrityError || e instanceof MissingObjectError;
}

/** Policy ids and the like used as path segments: never a separator or a dot segment. */
const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

/** The repository of `policyId`, generation `generation`, relative to its target's root. */
export function repositoryPath(policyId: string, generation: number): string {
  if (!SEGMENT.test(policyId)) throw new RepoError(`Invalid policy id "${policyId}"`);
  if (!Number.isInteger(generation) || generation < 1) {
    throw new RepoError(`Invalid generation ${generation}`);
  }
  return `cadres/${policyId}/g${generation}`;
}

/** An opened target: its root and backends for paths under it. */
export interface TargetStorage {
  readonly target: TargetInfo;
  /** For messages: the folder or s3:// URL of the root. */
  readonly location: string;
  /** A backend rooted at `path` (relative, "/"-separated) under the target's root. */
  at(path: string): Backend;
  /** A backend at the target's root. */
  readonly root: Backend;
  /** The local folder of the root (null for S3). */
  readonly folder: string | null;
}

function str(config: Record<string, string | number>, key: string): string {
  const v = config[key];
  return typeof v === "string" ? v : v === undefined ? "" : String(v);
}

function joinPath(a: string, b: string): string {
  const parts = [...a.split("/"), ...b.split("/")].filter((p) => p !== "");
  return parts.join("/");
}

/** Where a folder-type target lives on the BES (without checking it). */
export function targetFolder(target: TargetInfo, mounts: string): string {
  switch (target.type) {
    case "local":
      return str(target.config, "path").replace(/\/+$/, "") || "/";
    case "smb": {
      const sub = str(target.config, "path").replace(/\\/g, "/").replace(/^\/+|\/+$/g, "");
      if (sub.split("/").includes("..")) throw new RepoError(`Invalid SMB path "${sub}"`);
      return sub ? `${mounts}/${target.id}/${sub}` : `${mounts}/${target.id}`;
    }
    case "nfs":
    case "iscsi":
      return `${mounts}/${target.id}`;
    default:
      throw new RepoError(`Storage target ${target.id} of type ${target.type} is not a folder`);
  }
}

/** The S3 options of an S3 target (credentials required). Throws `TargetError` AUTH without them. */
export function s3Options(target: TargetInfo, overrides: Partial<S3BackendOptions> = {}): S3BackendOptions {
  if (!target.credentials) {
    throw new TargetError(
      "AUTH",
      `Storage target ${target.name} (${target.id}) has no credentials: an S3 target needs an access key`,
    );
  }
  return {
    endpoint: str(target.config, "endpoint"),
    bucket: str(target.config, "bucket"),
    region: str(target.config, "region") || "us-east-1",
    prefix: str(target.config, "prefix"),
    accessKeyId: target.credentials.username,
    secretAccessKey: target.credentials.secret,
    ...overrides,
  };
}

/** Options of `openTargetStorage`. */
export interface OpenOptions {
  /** Root of the mount points of SMB, NFS and iSCSI targets. */
  mounts: string;
  /** S3 request overrides (tests shorten retries and timeouts). */
  s3?: Partial<S3BackendOptions>;
}

/**
 * Opens `target`, checking that it is there: a folder target's folder must exist (and, for SMB, NFS and
 * iSCSI, be inside a mounted file system at `<mounts>/<id>`); an S3 target must answer a request with
 * its credentials. Throws `TargetError` (TARGET_UNREACHABLE, AUTH) naming the target and the place.
 */
export async function openTargetStorage(target: TargetInfo, options: OpenOptions): Promise<TargetStorage> {
  const where = `storage target ${target.name} (${target.id})`;
  if (target.type === "s3" || target.type === "s3_compatible") {
    const opts = s3Options(target, options.s3);
    const root = new S3Backend(opts);
    try {
      await root.exists("cadres/.reachability-probe");
    } catch (e) {
      throw classifyStorageError(e, target) ??
        new TargetError("TARGET_UNREACHABLE", `${where} is not reachable: ${(e as Error).message}`, {
          cause: e,
        });
    }
    return {
      target,
      location: root.location,
      root,
      folder: null,
      at: (path) => new S3Backend({ ...opts, prefix: joinPath(opts.prefix ?? "", path) }),
    };
  }
  const folder = targetFolder(target, options.mounts);
  if (target.type !== "local") await checkMounted(target, `${options.mounts}/${target.id}`);
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(folder);
  } catch (e) {
    throw new TargetError(
      "TARGET_UNREACHABLE",
      `${where} is not reachable: ${folder} ${
        e instanceof Deno.errors.NotFound ? "does not exist" : `cannot be read (${(e as Error).message})`
      }`,
      { cause: e },
    );
  }
  if (!info.isDirectory) {
    throw new TargetError("TARGET_UNREACHABLE", `${where} is not reachable: ${folder} is not a folder`);
  }
  return {
    target,
    location: folder,
    root: new LocalBackend(folder),
    folder,
    at: (path) => new LocalBackend(path === "" ? folder : `${folder}/${path}`),
  };
}

/** Throws TARGET_UNREACHABLE unless `mountPoint` is a folder on another file system than its parent. */
async function checkMounted(target: TargetInfo, mountPoint: string): Promise<void> {
  const where = `storage target ${target.name} (${target.id})`;
  const parent = mountPoint.slice(0, mountPoint.lastIndexOf("/")) || "/";
  let here: Deno.FileInfo;
  let above: Deno.FileInfo;
  try {
    [here, above] = await Promise.all([Deno.stat(mountPoint), Deno.stat(parent)]);
  } catch (e) {
    throw new TargetError(
      "TARGET_UNREACHABLE",
      `${where} is not mounted: ${mountPoint} ${
        e instanceof Deno.errors.NotFound ? "does not exist" : `cannot be read (${(e as Error).message})`
      } (mount the ${target.type.toUpperCase()} target there; see docs/engines.md)`,
      { cause: e },
    );
  }
  if (!here.isDirectory || here.dev === above.dev) {
    throw new TargetError(
      "TARGET_UNREACHABLE",
      `${where} is not mounted: ${mountPoint} is not a mount point (mount the ${target.type.toUpperCase()} ` +
        `target there; see docs/engines.md)`,
    );
  }
}

/**
 * The generations of `policyId`'s repositories on `storage` (ascending): every `cadres/<policyId>/g<N>/`
 * that holds a config object.
 */
export async function listGenerations(storage: TargetStorage, policyId: string): Promise<number[]> {
  if (!SEGMENT.test(policyId)) throw new RepoError(`Invalid policy id "${policyId}"`);
  const base = storage.at(`cadres/${policyId}`);
  const names = base.listFolders ? await base.listFolders("") : await foldersByListing(base);
  const out: number[] = [];
  for (const name of names) {
    const m = /^g([1-9]\d{0,8})$/.exec(name);
    if (m && await base.exists(`${name}/config`)) out.push(Number(m[1]));
  }
  return out.sort((a, b) => a - b);
}

/** The policies with a `cadres/<policyId>/` folder on `storage`. */
export async function listPolicies(storage: TargetStorage): Promise<string[]> {
  const base = storage.at("cadres");
  const names = base.listFolders ? await base.listFolders("") : await foldersByListing(base);
  return names.filter((n) => SEGMENT.test(n));
}

async function foldersByListing(backend: Backend): Promise<string[]> {
  const out = new Set<string>();
  for await (const obj of backend.list("")) {
    const i = obj.name.indexOf("/");
    if (i > 0) out.add(obj.name.slice(0, i));
  }
  return [...out].sort();
}
