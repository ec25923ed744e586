/**
 * The offline command line: `deno task repo <command> …` backs up, lists, restores and verifies a
 * repository with nothing but its key file — no control plane, no BES. Exit codes: 0 success, 1 a
 * failure (one line on stderr), 2 bad usage, 3 a backup that finished but could not read some files.
 * Backup and restore draw a progress bar on stderr when it is a terminal (never with --json).
 */
import { parseArgs } from "node:util";
import { type Backend, LocalBackend } from "./repo/backend.ts";
import { backupFiles } from "./repo/backup.ts";
import { backupImage, restoreImage } from "./repo/image.ts";
import { terminalProgressBar } from "./progress_bar.ts";
import type { Compression } from "./repo/compression.ts";
import type { Encryption } from "./repo/blob.ts";
import { IntegrityError, RepoConfigError, RepoError, WrongKeyError } from "./repo/errors.ts";
import { absolutePath } from "./repo/fs.ts";
import {
  createKeyFile,
  kekOpener,
  type KeyOpener,
  readKeyFile,
  readRecoveryKeyFile,
  readRecoveryPublicKeyFile,
  recoveryOpener,
} from "./repo/keys.ts";
import { copySnapshots } from "./repo/copy.ts";
import { generateRecoveryKeyPair } from "./repo/recovery.ts";
import { forgetSnapshots, garbageCollect } from "./repo/gc.ts";
import { listLiveLocks, removeStaleLocks } from "./repo/lock.ts";
import { type Namespace, Repository } from "./repo/repository.ts";
import { restoreSnapshot } from "./repo/restore.ts";
import { S3Backend } from "./repo/s3_backend.ts";
import {
  listSnapshots,
  loadSnapshot,
  readSnapshotInfo,
  resolveSnapshotId,
  type Snapshot,
} from "./repo/snapshot.ts";
import { loadTree, type TreeEntry } from "./repo/tree.ts";
import { compileExcludes } from "./repo/exclude.ts";
import { verifyRepository } from "./repo/verify.ts";
import { repairIndex } from "./repo/index.ts";
import { fromHex } from "./repo/bytes.ts";

/** A usage error: exit code 2. */
class UsageError extends Error {}

const USAGE =
  `Usage: deno task repo <command> --repo LOCATION (--key-file FILE | --recovery-key FILE) [--host NAME] …
  init      [--compression zstd|lz4|none] [--encryption aes-256-gcm|aes-256-cbc|none] [--no-dedup]
            [--recovery-public-key FILE]   also wrap the namespace for the account recovery key
  backup    [--parent SNAPSHOT] [--exclude PATTERN]... [--limit-mbps N] [--json] PATH...
  backup    --image [--parent SNAPSHOT] [--limit-mbps N] [--json] DEVICE_OR_IMAGE_FILE
  snapshots [--json]
  ls        SNAPSHOT [PATH] [--json]
  find      SNAPSHOT PATTERN [--json]
  restore   SNAPSHOT --target DIR [--include PATH]... [--overwrite] [--limit-mbps N] [--json]
  restore   IMAGE_SNAPSHOT --target FILE_OR_DEVICE [--overwrite] [--device-zeroed] [--limit-mbps N] [--json]
  verify    [SNAPSHOT] [--sample N | --all] [--json]
  forget    SNAPSHOT...
  gc        [--grace-ms N] [--max-repack-bytes N] [--json]
  unlock    --stale [--json]
  repair    [index] [--json]   write a fresh index from the pack trailers; remove damaged segments
  copy      --to LOCATION2 --to-key-file FILE2 SNAPSHOT... [--json]   (creates LOCATION2 when missing)
  key list  [--json]
  key add   (--new-key-file FILE | --recovery-public-key FILE) [--json]
  key remove ID [--json]
  recovery-keygen --private-out FILE --public-out FILE [--json]   (no --repo)`;

const OPTIONS = {
  repo: { type: "string" },
  "key-file": { type: "string" },
  "recovery-key": { type: "string" },
  host: { type: "string" },
  compression: { type: "string" },
  encryption: { type: "string" },
  "no-dedup": { type: "boolean" },
  parent: { type: "string" },
  exclude: { type: "string", multiple: true },
  image: { type: "boolean" },
  "limit-mbps": { type: "string" },
  json: { type: "boolean" },
  target: { type: "string" },
  include: { type: "string", multiple: true },
  overwrite: { type: "boolean" },
  "device-zeroed": { type: "boolean" },
  sample: { type: "string" },
  all: { type: "boolean" },
  "grace-ms": { type: "string" },
  "max-repack-bytes": { type: "string" },
  stale: { type: "boolean" },
  "recovery-public-key": { type: "string" },
  "new-key-file": { type: "string" },
  to: { type: "string" },
  "to-key-file": { type: "string" },
  "private-out": { type: "string" },
  "public-out": { type: "string" },
  help: { type: "boolean", short: "h" },
} as const;

type Flags = ReturnType<typeof parseFlags>["values"];

function parseFlags(args: string[]) {
  try {
    return parseArgs({ args, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

function backendFor(location: string | undefined): Backend {
  if (!location) throw new UsageError("--repo LOCATION is required");
  if (location.startsWith("s3://")) return s3BackendFor(location);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(location)) {
    throw new RepoConfigError(`Cannot open ${location}: unknown location scheme`);
  }
  const root = absolutePath(location);
  let info: Deno.FileInfo | null = null;
  try {
    info = Deno.statSync(root);
  } catch {
    // Missing (init creates it; other commands say it is not a repository) or unreadable (the backend says).
  }
  if (info && !info.isDirectory) {
    throw new RepoConfigError(`${root} is not a Cadres repository: it is not a folder`);
  }
  return new LocalBackend(root);
}

/**
 * `s3://bucket/prefix?endpoint=URL&region=R`; credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
 * (and AWS_SESSION_TOKEN if set). Without `endpoint`, AWS S3 in `region` (default us-east-1).
 */
function s3BackendFor(location: string): Backend {
  let url: URL;
  try {
    url = new URL(location);
  } catch {
    throw new RepoConfigError(`Cannot open ${location}: not a valid s3://bucket/prefix location`);
  }
  const bucket = decodeURIComponent(url.host);
  if (!bucket) throw new RepoConfigError(`Cannot open ${location}: no bucket (s3://bucket/prefix)`);
  for (const k of url.searchParams.keys()) {
    if (k !== "endpoint" && k !== "region") {
      throw new RepoConfigError(`Cannot open ${location}: unknown parameter "${k}" (endpoint, region)`);
    }
  }
  const region = url.searchParams.get("region") || "us-east-1";
  const endpoint = url.searchParams.get("endpoint") || `https://s3.${region}.amazonaws.com`;
  if (!/^https?:\/\//.test(endpoint)) {
    throw new RepoConfigError(`Cannot open ${location}: endpoint must be an http(s) URL`);
  }
  const accessKeyId = Deno.env.get("AWS_ACCESS_KEY_ID");
  const secretAccessKey = Deno.env.get("AWS_SECRET_ACCESS_KEY");
  if (!accessKeyId || !secretAccessKey) {
    throw new RepoConfigError(
      `Cannot open ${location}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3 locations`,
    );
  }
  return new S3Backend({
    endpoint,
    bucket,
    region,
    prefix: decodeURIComponent(url.pathname),
    accessKeyId,
    secretAccessKey,
    sessionToken: Deno.env.get("AWS_SESSION_TOKEN") || undefined,
  });
}

function keyFileOf(flags: Flags): string {
  if (!flags["key-file"]) throw new UsageError("--key-file FILE or --recovery-key FILE is required");
  return flags["key-file"];
}

/** The key the command opens the repository with: `--key-file` (a KEK) or `--recovery-key`. */
async function openerOf(flags: Flags): Promise<KeyOpener> {
  if (flags["recovery-key"] !== undefined) {
    if (flags["key-file"] !== undefined) {
      throw new UsageError("--key-file and --recovery-key exclude each other");
    }
    return recoveryOpener(await readRecoveryKeyFile(flags["recovery-key"]));
  }
  return kekOpener(await readKeyFile(keyFileOf(flags)));
}

async function openRepo(flags: Flags): Promise<Repository> {
  const backend = backendFor(flags.repo);
  const repo = await Repository.open(backend, await openerOf(flags));
  for (const w of repo.warnings) console.error(`warning: ${w}`);
  return repo;
}

/**
 * The KEK of key file `path`, created (32 random bytes, base64, mode 0600) when no file is there; a file
 * that is there but unreadable or damaged is an error, never replaced.
 */
async function keyFileCreatingIfMissing(path: string): Promise<{ kek: Uint8Array; created: boolean }> {
  try {
    return { kek: await readKeyFile(path), created: false };
  } catch (e) {
    if (!(e instanceof WrongKeyError) || (await Deno.lstat(path).then(() => true, () => false))) throw e;
    return { kek: await createKeyFile(path), created: true };
  }
}

function hostOf(flags: Flags): string {
  return flags.host ?? Deno.hostname();
}

function namespaceOf(repo: Repository, flags: Flags): Namespace {
  const host = hostOf(flags);
  if (!repo.namespaces().includes(host)) {
    throw new WrongKeyError(
      `This key opens no namespace "${host}" in ${repo.backend.location} (it opens: ${
        repo.namespaces().join(", ")
      }); pass --host or run init --host ${host}`,
    );
  }
  return repo.namespace(host);
}

/**
 * Resolves a snapshot id prefix from the listing (names only) and reads that one snapshot's header, so
 * a damaged other snapshot never blocks it; returns the id and its namespace.
 */
async function snapshotOf(
  repo: Repository,
  prefix: string | undefined,
): Promise<{ id: string; ns: Namespace }> {
  if (!prefix) throw new UsageError("SNAPSHOT is required");
  const id = await resolveSnapshotId(repo.backend, prefix);
  const info = await readSnapshotInfo(repo.backend, id);
  if (!repo.namespaces().includes(info.namespace)) {
    throw new WrongKeyError(`Snapshot ${id} belongs to a namespace this key does not open`);
  }
  return { id, ns: repo.namespace(info.namespace) };
}

function out(flags: Flags, json: unknown, text: string) {
  console.log(flags.json ? JSON.stringify(json) : text);
}

function isInside(path: string, dir: string): boolean {
  return path === dir || path.startsWith(dir === "/" ? "/" : dir + "/");
}

/** `--limit-mbps N` in bytes per second (N × 10⁶), or null without it. */
function limitOf(flags: Flags): number | null {
  if (flags["limit-mbps"] === undefined) return null;
  const limit = Number(flags["limit-mbps"]);
  if (!(limit > 0)) {
    throw new UsageError(`Cannot parse --limit-mbps "${flags["limit-mbps"]}": not a positive number`);
  }
  return limit * 1_000_000;
}

/** The paths of a local repository's folder (as given and with symlinks resolved); none for S3. */
async function repoFolders(repo: Repository): Promise<string[]> {
  if (!(repo.backend instanceof LocalBackend)) return [];
  const root = repo.backend.root;
  const real = await Deno.realPath(root).catch(() => root);
  return real === root ? [root] : [root, real];
}

/** `path` and, when it exists, its real path (symlinks resolved). */
async function pathForms(path: string): Promise<string[]> {
  const real = await Deno.realPath(path).catch(() => path);
  return real === path ? [path] : [path, real];
}

async function cmdInit(flags: Flags): Promise<number> {
  const backend = backendFor(flags.repo);
  // Read before anything is created: a bad recovery public key leaves no key file and no repository.
  const recoveryPublicKeys = flags["recovery-public-key"]
    ? [await readRecoveryPublicKeyFile(flags["recovery-public-key"])]
    : [];
  let opener: KeyOpener;
  let created = false;
  const keyFile = flags["recovery-key"] === undefined ? keyFileOf(flags) : null;
  if (keyFile === null) {
    opener = await openerOf(flags); // the recovery private key: never created here
  } else {
    const missing = await Deno.lstat(keyFile).then(() => false, () => true);
    // A new key can open no existing repository: refused before the key file is written.
    if (missing && await backend.exists("config")) {
      throw new WrongKeyError(
        `Cannot read key file ${keyFile}: it does not exist, and ${backend.location} already holds a ` +
          `repository (init creates a key file only for a new one)`,
      );
    }
    const k = await keyFileCreatingIfMissing(keyFile);
    opener = kekOpener(k.kek);
    created = k.created;
  }
  const host = hostOf(flags);
  let repo: Repository;
  let added = false;
  if (await backend.exists("config")) {
    // An existing repository gains this host's namespace when the key opens it.
    repo = await Repository.open(backend, opener);
    if (repo.namespaces().includes(host)) {
      throw new RepoConfigError(`${backend.location} already holds a repository with namespace "${host}"`);
    }
    await repo.createNamespace(host, new Date(), { recoveryPublicKeys });
    added = true;
  } else {
    repo = await Repository.init(backend, opener, {
      namespace: host,
      compression: flags.compression as Compression | undefined,
      encryption: flags.encryption as Encryption | undefined,
      dedup: !flags["no-dedup"],
      recoveryPublicKeys,
    });
  }
  const c = repo.config;
  out(
    flags,
    { repo: backend.location, id: c.id, namespace: host, keyFileCreated: created, namespaceAdded: added },
    `${added ? "added namespace" : "created repository"} ${c.id} at ${backend.location} ` +
      `(namespace ${host}, ${c.compression}, ${c.encryption}, dedup ${c.dedup ? "on" : "off"})` +
      (created ? `; new key file ${keyFile} — keep a copy: without it the data cannot be read` : ""),
  );
  return 0;
}

async function cmdBackup(flags: Flags, paths: string[]): Promise<number> {
  if (paths.length === 0) throw new UsageError("backup needs at least one PATH");
  if (flags.image && paths.length !== 1) {
    throw new UsageError("backup --image takes exactly one PATH: a block device or image file");
  }
  if (flags.image && flags.exclude?.length) throw new UsageError("--exclude does not apply to --image");
  const limit = limitOf(flags);
  const repo = await openRepo(flags);
  const ns = namespaceOf(repo, flags);
  // A repository inside a backed-up folder is left out of the backup (below); a path inside the
  // repository is refused: the backup would read the very objects it is writing.
  const repoDirs = await repoFolders(repo);
  for (const p of paths) {
    for (const form of await pathForms(absolutePath(p))) {
      const dir = repoDirs.find((d) => isInside(form, d));
      if (dir) throw new RepoError(`Cannot back up ${form}: it lies inside the repository ${dir}`);
    }
  }
  const parent = flags.parent ? await resolveSnapshotId(repo.backend, flags.parent) : null;
  const bar = terminalProgressBar("backup", flags.json ?? false);
  const progress = bar ? bar.update.bind(bar) : undefined;
  if (flags.image) {
    let r;
    try {
      r = await backupImage(ns, {
        path: paths[0],
        host: hostOf(flags),
        parent,
        limitBytesPerSecond: limit,
        progress,
      });
    } finally {
      bar?.clear();
    }
    const { snapshotId, files, dirs, bytesRead, bytesNew, bytesStored, durationMs, errors } = r;
    out(
      flags,
      {
        snapshotId,
        kind: "image",
        files,
        dirs,
        bytesRead,
        bytesNew,
        bytesStored,
        durationMs,
        errors,
        size: r.size,
        chunks: r.chunks,
        zeroChunks: r.zeroChunks,
        newChunks: r.newChunks,
      },
      `snapshot ${snapshotId} saved: image ${
        absolutePath(paths[0])
      }, ${r.size} bytes in ${r.chunks} chunks ` +
        `(${r.zeroChunks} all zero, ${r.newChunks} new), ${bytesNew} bytes new, ${bytesStored} stored, ${durationMs} ms`,
    );
    for (const e of errors) console.error(`warning: ${e.path}: ${e.error}`);
    return errors.length > 0 ? 3 : 0;
  }
  const patterns = flags.exclude ?? [];
  // backupFiles holds the writer lock and re-reads gc's condemnations once it holds it.
  let result;
  try {
    result = await backupFiles(ns, {
      paths,
      host: hostOf(flags),
      parent,
      excludePaths: repoDirs,
      excludePatterns: patterns,
      limitBytesPerSecond: limit,
      progress,
    });
  } finally {
    bar?.clear();
  }
  const { snapshotId, files, dirs, bytesRead, bytesNew, bytesStored, durationMs, errors } = result;
  out(
    flags,
    {
      snapshotId,
      kind: parent ? "incremental" : "full",
      files,
      dirs,
      reusedFiles: result.reusedFiles,
      bytesRead,
      bytesNew,
      bytesStored,
      durationMs,
      errors,
    },
    `snapshot ${snapshotId} saved: ${files} files (${result.reusedFiles} unchanged), ${dirs} folders, ` +
      `${bytesRead} bytes read, ${bytesNew} new, ${bytesStored} stored, ${durationMs} ms`,
  );
  for (const e of errors) console.error(`warning: ${e.path}: ${e.error}`);
  return errors.length > 0 ? 3 : 0;
}

async function cmdSnapshots(flags: Flags): Promise<number> {
  const repo = await openRepo(flags);
  const opened = new Set(repo.namespaces());
  const rows: Record<string, unknown>[] = [];
  const damaged: { id: string; error: string }[] = [];
  // A damaged snapshot is listed as damaged; it does not hide the others.
  const infos = await listSnapshots(repo.backend, {
    onDamaged: (e) => damaged.push({ id: e.id, error: e.message }),
  });
  for (const info of infos) {
    if (!opened.has(info.namespace)) continue;
    try {
      const s = await loadSnapshot(repo.namespace(info.namespace), info.id);
      rows.push({
        id: s.id,
        namespace: s.namespace,
        host: s.host,
        kind: s.kind,
        parent: s.parent,
        paths: s.paths,
        startTime: s.startTime,
        endTime: s.endTime,
        stats: s.stats,
        errors: s.errors.length,
      });
    } catch (e) {
      if (!(e instanceof IntegrityError)) throw e;
      damaged.push({ id: info.id, error: e.message });
    }
  }
  for (const d of damaged) rows.push({ id: d.id, damaged: true, error: d.error });
  out(
    flags,
    { snapshots: rows },
    rows.map((r) =>
      r.damaged
        ? `${String(r.id).slice(0, 12)}  DAMAGED  ${r.error}`
        : `${String(r.id).slice(0, 12)}  ${r.endTime}  ${r.host}  ${r.kind}  ${
          (r.paths as string[]).join(" ")
        }`
    ).join("\n") || "no snapshots",
  );
  if (damaged.length > 0) {
    console.error(
      `error: ${damaged.length} damaged snapshots: ${damaged.map((d) => d.id).join(", ")} ` +
        `(verify names the damage; forget removes them)`,
    );
    return 1;
  }
  return 0;
}

interface Listed {
  path: string;
  type: string;
  mode: number;
  size: number;
  mtime: string;
  target?: string;
}

async function* walk(
  ns: Namespace,
  treeId: string,
  dir: string,
  hasherSalt: string | null,
): AsyncGenerator<Listed> {
  const hasher = ns.hasher(hasherSalt ? fromHex(hasherSalt) : null);
  const tree = await loadTree(ns, treeId, hasher);
  for (const e of tree.entries) {
    const path = dir === "/" ? `/${e.name}` : `${dir}/${e.name}`;
    yield listed(path, e);
    if (e.type === "dir" && e.subtree) yield* walk(ns, e.subtree, path, hasherSalt);
  }
}

function listed(path: string, e: TreeEntry): Listed {
  return {
    path,
    type: e.type,
    mode: e.mode,
    size: e.size,
    mtime: new Date(e.mtimeMs).toISOString(),
    ...(e.target !== undefined ? { target: e.target } : {}),
  };
}

function line(l: Listed): string {
  const mode = l.mode.toString(8).padStart(4, "0");
  return `${l.type.padEnd(7)} ${mode} ${String(l.size).padStart(12)} ${l.mtime}  ${l.path}` +
    (l.target !== undefined ? ` -> ${l.target}` : "");
}

async function cmdLs(flags: Flags, args: string[]): Promise<number> {
  const repo = await openRepo(flags);
  const { id, ns } = await snapshotOf(repo, args[0]);
  const snap = await loadSnapshot(ns, id);
  const prefix = args[1] ? absolutePath(args[1], "/").replace(/\/+$/, "") || "/" : "/";
  const rows: Listed[] = [];
  for await (const l of walk(ns, snap.tree, "/", snap.chainSalt)) {
    if (isInside(l.path, prefix)) rows.push(l);
  }
  if (prefix !== "/" && rows.length === 0) {
    throw new RepoError(`Snapshot ${id.slice(0, 12)} has no path ${prefix}`);
  }
  out(flags, { snapshot: id, entries: rows }, rows.map(line).join("\n"));
  return 0;
}

async function cmdFind(flags: Flags, args: string[]): Promise<number> {
  if (args.length < 2) throw new UsageError("find needs SNAPSHOT and PATTERN");
  const repo = await openRepo(flags);
  const { id, ns } = await snapshotOf(repo, args[0]);
  const snap = await loadSnapshot(ns, id);
  const pattern = args[1];
  const hasGlob = /[*?[]/.test(pattern);
  const matches = compileExcludes([], [pattern]);
  const rows: Listed[] = [];
  for await (const l of walk(ns, snap.tree, "/", snap.chainSalt)) {
    const name = l.path.slice(l.path.lastIndexOf("/") + 1);
    if (hasGlob ? matches(l.path) : name.includes(pattern)) rows.push(l);
  }
  out(flags, { snapshot: id, pattern, matches: rows }, rows.map(line).join("\n") || "no matches");
  return 0;
}

async function cmdRestore(flags: Flags, args: string[]): Promise<number> {
  if (!flags.target) {
    throw new UsageError("restore needs --target DIR (FILE_OR_DEVICE for an image snapshot)");
  }
  const limit = limitOf(flags);
  const repo = await openRepo(flags);
  const { id, ns } = await snapshotOf(repo, args[0]);
  const snap = await loadSnapshot(ns, id);
  const target = absolutePath(flags.target);
  const repoDirs = await repoFolders(repo);
  for (const form of await pathForms(target)) {
    const dir = repoDirs.find((d) => isInside(form, d));
    if (dir) {
      throw new RepoError(
        `Restore target ${form} lies inside the repository ${dir}; choose a place outside it`,
      );
    }
  }
  if (snap.kind === "image") return await restoreImageCli(flags, ns, id, target, limit);
  if (flags["device-zeroed"]) throw new UsageError("--device-zeroed applies only to image snapshots");
  for (const p of snap.paths) {
    // Restoring into a backed-up folder would mix the restore into that folder's next backup and, with
    // --overwrite, write over the very files being restored.
    if (isInside(target, p)) {
      throw new RepoError(
        `Restore target ${target} lies inside ${p}, which this snapshot backed up; choose a folder outside it`,
      );
    }
  }
  // An --include path the snapshot does not hold is a mistake (a typo restores nothing), not an empty success.
  const includes = (flags.include ?? []).map((p) => absolutePath(p, "/").replace(/\/+$/, "") || "/");
  const missing: string[] = [];
  for (const inc of includes) if (!(await snapshotHasPath(ns, snap, inc))) missing.push(inc);
  if (missing.length > 0) {
    throw new RepoError(`Snapshot ${id.slice(0, 12)} has no path ${missing.join(", ")}; nothing restored`);
  }
  const bar = terminalProgressBar("restore", flags.json ?? false);
  let result;
  try {
    result = await restoreSnapshot(ns, id, {
      target,
      include: flags.include,
      overwrite: flags.overwrite ?? false,
      limitBytesPerSecond: limit,
      progress: bar ? bar.update.bind(bar) : undefined,
    });
  } finally {
    bar?.clear();
  }
  out(
    flags,
    { snapshot: id, target, ...result },
    `restored ${result.files} files, ${result.dirs} folders, ${result.symlinks} symlinks, ${result.bytes} bytes to ${target}`,
  );
  for (const e of result.errors) console.error(`error: ${e.path}: ${e.error}`);
  if (result.errors.length > 0) {
    if (!flags.json) {
      console.error(`Restore incomplete: ${result.errors.length} entries could not be restored`);
    }
    return 1;
  }
  return 0;
}

/** Whether snapshot `snap` holds absolute `path`, following its trees down that path alone. */
async function snapshotHasPath(ns: Namespace, snap: Snapshot, path: string): Promise<boolean> {
  const hasher = ns.hasher(snap.chainSalt ? fromHex(snap.chainSalt) : null);
  let treeId: string | undefined = snap.tree;
  for (const part of path.split("/").filter((p) => p !== "")) {
    if (treeId === undefined) return false;
    const entry: TreeEntry | undefined = (await loadTree(ns, treeId, hasher)).entries.find((e) =>
      e.name === part
    );
    if (!entry) return false;
    treeId = entry.type === "dir" ? entry.subtree : undefined;
  }
  return true;
}

async function restoreImageCli(
  flags: Flags,
  ns: Namespace,
  id: string,
  target: string,
  limit: number | null,
): Promise<number> {
  if (flags.include?.length) {
    throw new UsageError("--include does not apply to an image snapshot: it restores whole");
  }
  const bar = terminalProgressBar("restore", flags.json ?? false);
  let r;
  try {
    r = await restoreImage(ns, id, {
      target,
      overwrite: flags.overwrite ?? false,
      targetZeroed: flags["device-zeroed"] ?? false,
      limitBytesPerSecond: limit,
      progress: bar ? bar.update.bind(bar) : undefined,
    });
  } finally {
    bar?.clear();
  }
  out(
    flags,
    { snapshot: id, kind: "image", ...r },
    `restored image of ${r.size} bytes (${r.chunks} chunks, ${r.zeroChunks} all zero) to ${r.target}` +
      (r.blockDevice ? " (block device)" : ""),
  );
  for (const e of r.errors) console.error(`error: chunk at offset ${e.offset} (blob ${e.chunk}): ${e.error}`);
  if (r.errors.length > 0) {
    console.error(
      r.blockDevice
        ? `Restore incomplete: ${r.errors.length} chunks could not be restored; those ranges of ${r.target} keep their old bytes`
        : `Restore failed: ${r.errors.length} chunks could not be restored; ${r.target} was not written`,
    );
    return 1;
  }
  return 0;
}

async function cmdVerify(flags: Flags, args: string[]): Promise<number> {
  if (flags.sample !== undefined && flags.all) throw new UsageError("--sample and --all exclude each other");
  const sample = flags.sample === undefined ? 0 : Number(flags.sample);
  if (!Number.isInteger(sample) || sample < 0) {
    throw new UsageError(`Cannot parse --sample "${flags.sample}": not a whole number`);
  }
  const repo = await openRepo(flags);
  const snapshot = args[0] ? (await snapshotOf(repo, args[0])).id : undefined;
  const r = await verifyRepository(repo, { snapshot, sample, all: flags.all ?? false });
  out(
    flags,
    r,
    `checked ${r.packs} packs, ${r.snapshots} snapshots, ${r.referencedBlobs} referenced blobs, ` +
      `read back ${r.blobsRead}: ${r.ok ? "no problems" : `${r.problems.length} problems`}`,
  );
  for (const p of r.problems) console.error(`damaged ${p.kind} ${p.id}: ${p.detail}`);
  return r.ok ? 0 : 1;
}

async function cmdForget(flags: Flags, args: string[]): Promise<number> {
  if (args.length === 0) throw new UsageError("forget needs at least one SNAPSHOT");
  const repo = await openRepo(flags);
  const ids = [];
  for (const a of args) {
    const id = await resolveSnapshotId(repo.backend, a);
    try {
      const info = await readSnapshotInfo(repo.backend, id);
      if (!repo.namespaces().includes(info.namespace)) {
        throw new WrongKeyError(`Snapshot ${id} belongs to a namespace this key does not open`);
      }
    } catch (e) {
      // A damaged snapshot can still be forgotten (only its object is deleted; gc removes what it
      // alone referenced), or it would block gc for good.
      if (!(e instanceof IntegrityError)) throw e;
      console.error(`warning: forgetting damaged snapshot ${id}: ${e.detail}`);
    }
    ids.push(id);
  }
  await forgetSnapshots(repo.backend, ids);
  out(flags, { forgotten: ids }, ids.map((id) => `forgot snapshot ${id}`).join("\n"));
  return 0;
}

async function cmdGc(flags: Flags): Promise<number> {
  const repo = await openRepo(flags);
  const count = (flag: "grace-ms" | "max-repack-bytes"): number | undefined => {
    if (flags[flag] === undefined) return undefined;
    const n = Number(flags[flag]);
    if (!(Number.isInteger(n) && n >= 0)) throw new UsageError(`Cannot parse --${flag} "${flags[flag]}"`);
    return n;
  };
  const graceMs = count("grace-ms");
  const maxRepackBytes = count("max-repack-bytes");
  const r = await garbageCollect(repo.backend, { graceMs, maxRepackBytes });
  out(
    flags,
    r,
    `gc: ${r.referencedBlobs} referenced blobs; condemned ${r.condemned.length} packs, deleted ${r.deleted.length} ` +
      `(${r.bytesFreed} bytes freed), kept ${r.pending.length} condemned packs for a later gc; rewrote ` +
      `${r.repacked.length} mostly dead packs into ${r.repackWritten.length} (${r.bytesRepacked} bytes copied)`,
  );
  for (const name of r.damagedLocks) {
    console.error(`warning: lock ${name} is damaged; until it is stale gc condemns and deletes nothing`);
  }
  for (const s of r.repackSkipped) console.error(`warning: pack ${s.pack} not rewritten: ${s.reason}`);
  return 0;
}

async function cmdUnlock(flags: Flags): Promise<number> {
  if (!flags.stale) {
    throw new UsageError("unlock removes only stale locks (not refreshed for 5 minutes): pass --stale");
  }
  const repo = await openRepo(flags);
  const removed = await removeStaleLocks(repo.backend);
  const live = await listLiveLocks(repo.backend);
  out(
    flags,
    { removed, live: live.map((l) => l.name) },
    [...removed.map((n) => `removed stale lock ${n}`), `${live.length} live locks left`].join("\n"),
  );
  return 0;
}

async function cmdRepair(flags: Flags, args: string[]): Promise<number> {
  if (args.length > 1 || (args.length === 1 && args[0] !== "index")) {
    throw new UsageError(`repair knows only "index" (the default)`);
  }
  const repo = await openRepo(flags);
  const r = await repairIndex(repo.backend);
  out(
    flags,
    {
      packs: r.packs,
      written: r.written,
      removed: r.removed,
      damagedSegments: r.damagedSegments.map((e) => e.id),
      damagedPacks: r.damagedPacks.map((e) => ({ id: e.id, detail: e.detail })),
    },
    `repair index: ${r.packs} packs listed in ${r.written.length} new segments; removed ${r.removed.length} ` +
      `old segments (${r.damagedSegments.length} damaged)`,
  );
  for (const e of r.damagedPacks) console.error(`damaged pack ${e.id}: ${e.detail} (left out of the index)`);
  return r.damagedPacks.length > 0 ? 1 : 0;
}

async function cmdCopy(flags: Flags, args: string[]): Promise<number> {
  if (!flags.to) throw new UsageError("copy needs --to LOCATION2");
  if (!flags["to-key-file"]) {
    throw new UsageError("copy needs --to-key-file FILE2 (the destination's key file)");
  }
  if (args.length === 0) throw new UsageError("copy needs at least one SNAPSHOT");
  const src = await openRepo(flags);
  const ids: string[] = [];
  for (const a of args) ids.push(await resolveSnapshotId(src.backend, a));
  const to = backendFor(flags.to);
  // A new destination gets a new key file, as init does; an existing one needs its key.
  const exists = await to.exists("config");
  const { kek, created: keyCreated } = exists
    ? { kek: await readKeyFile(flags["to-key-file"]), created: false }
    : await keyFileCreatingIfMissing(flags["to-key-file"]);
  const r = await copySnapshots(src, { backend: to, key: kek }, ids);
  const json = {
    to: to.location,
    created: r.created,
    keyFileCreated: keyCreated,
    snapshots: r.snapshots,
    blobsCopied: r.blobsCopied,
    bytesCopied: r.bytesCopied,
    blobsPresent: r.blobsPresent,
    packsWritten: r.packsWritten,
    keysWrapped: r.keysWrapped,
  };
  out(
    flags,
    json,
    [
      ...(r.created ? [`created repository ${r.destination.config.id} at ${to.location}`] : []),
      ...(keyCreated
        ? [`new key file ${flags["to-key-file"]} — keep a copy: without it the copy cannot be read`]
        : []),
      ...r.snapshots.map((s) =>
        `${s.copied ? "copied" : "already there:"} snapshot ${s.id.slice(0, 12)} (namespace ${s.namespace})`
      ),
      `${r.blobsCopied} blobs copied (${r.bytesCopied} bytes, ${r.packsWritten} packs), ${r.blobsPresent} already ` +
      `there; ${r.keysWrapped.length} namespace keys wrapped for the destination's key`,
    ].join("\n"),
  );
  return 0;
}

async function cmdKey(flags: Flags, args: string[]): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case "list": {
      if (rest.length > 0) throw new UsageError("key list takes no arguments");
      const repo = await openRepo(flags);
      const keys = await repo.listKeys();
      const rows = keys.map((k) => ({ ...k, inUse: k.id === repo.keyId }));
      out(
        flags,
        { keys: rows },
        rows.map((k) =>
          `${k.kind.padEnd(8)} ${k.id}  ${k.namespace}  ${k.created}${k.inUse ? "  (in use)" : ""}` +
          (k.damaged ? `  DAMAGED: ${k.damaged}` : "")
        ).join("\n") || "no keys",
      );
      return 0;
    }
    case "add": {
      if (rest.length > 0) throw new UsageError("key add takes no arguments besides its flags");
      const newKeyFile = flags["new-key-file"];
      const publicKeyFile = flags["recovery-public-key"];
      if ((newKeyFile === undefined) === (publicKeyFile === undefined)) {
        throw new UsageError(
          "key add needs exactly one of --new-key-file FILE and --recovery-public-key FILE",
        );
      }
      const repo = await openRepo(flags);
      let created = false;
      let r: { added: string[]; skipped: string[] };
      if (publicKeyFile !== undefined) {
        r = await repo.addWrapper({
          kind: "recovery",
          publicPem: await readRecoveryPublicKeyFile(publicKeyFile),
        });
      } else {
        const k = await keyFileCreatingIfMissing(newKeyFile!);
        created = k.created;
        r = await repo.addWrapper({ kind: "kek", kek: k.kek });
      }
      out(
        flags,
        { added: r.added, skipped: r.skipped, keyFileCreated: created },
        [
          ...(created
            ? [`new key file ${newKeyFile} — keep a copy: without it the data cannot be read`]
            : []),
          ...r.added.map((n) => `added ${n}`),
          ...r.skipped.map((n) => `already there: ${n}`),
        ].join("\n"),
      );
      return 0;
    }
    case "remove": {
      if (rest.length !== 1) throw new UsageError("key remove needs exactly one ID (see key list)");
      const repo = await openRepo(flags);
      const removed = await repo.removeWrapper(rest[0]);
      out(flags, { removed }, removed.map((n) => `removed ${n}`).join("\n"));
      return 0;
    }
    default:
      throw new UsageError(`key knows "list", "add" and "remove"${sub ? `, not "${sub}"` : ""}`);
  }
}

async function cmdRecoveryKeygen(flags: Flags): Promise<number> {
  const priv = flags["private-out"];
  const pub = flags["public-out"];
  if (!priv || !pub) throw new UsageError("recovery-keygen needs --private-out FILE and --public-out FILE");
  if (absolutePath(priv) === absolutePath(pub)) {
    throw new UsageError("--private-out and --public-out must be different files");
  }
  for (const p of [priv, pub]) {
    if (await Deno.lstat(p).then(() => true, () => false)) {
      throw new RepoError(`Refusing to overwrite ${p}: it exists (nothing was written)`);
    }
  }
  const pair = await generateRecoveryKeyPair();
  await writeNewFile(priv, pair.privatePem, 0o600);
  try {
    await writeNewFile(pub, pair.publicPem, 0o644);
  } catch (e) {
    await Deno.remove(priv).catch(() => {}); // no half-made pair left behind
    throw e;
  }
  out(
    flags,
    { id: pair.id, privateKeyFile: priv, publicKeyFile: pub },
    `recovery key ${pair.id}: private key ${priv} (mode 0600 — keep it offline: it opens every repository ` +
      `wrapped for it), public key ${pub}`,
  );
  return 0;
}

/** Writes `text` to a file that must not exist yet, with `mode`, synced. */
async function writeNewFile(path: string, text: string, mode: number): Promise<void> {
  const data = new TextEncoder().encode(text);
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { write: true, createNew: true, mode });
  } catch (e) {
    throw new RepoError(`Cannot create ${path}: ${(e as Error).message}`);
  }
  try {
    let off = 0;
    while (off < data.length) off += await file.write(data.subarray(off));
    await Deno.chmod(path, mode); // the mode given to open is narrowed by the umask only
    await file.sync();
  } finally {
    file.close();
  }
}

/** Runs the `repo` command line with `args` (after "repo"); returns the exit code. */
export async function runRepoCli(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    const { values: flags, positionals } = parseFlags(rest);
    if (!command || command === "help" || flags.help) {
      console.log(USAGE);
      return command ? 0 : 2;
    }
    switch (command) {
      case "init":
        return await cmdInit(flags);
      case "backup":
        return await cmdBackup(flags, positionals);
      case "snapshots":
        return await cmdSnapshots(flags);
      case "ls":
        return await cmdLs(flags, positionals);
      case "find":
        return await cmdFind(flags, positionals);
      case "restore":
        return await cmdRestore(flags, positionals);
      case "verify":
        return await cmdVerify(flags, positionals);
      case "forget":
        return await cmdForget(flags, positionals);
      case "gc":
        return await cmdGc(flags);
      case "unlock":
        return await cmdUnlock(flags);
      case "repair":
        return await cmdRepair(flags, positionals);
      case "copy":
        return await cmdCopy(flags, positionals);
      case "key":
        return await cmdKey(flags, positionals);
      case "recovery-keygen":
        return await cmdRecoveryKeygen(flags);
      default:
        throw new UsageError(`Unknown command "${command}"`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      console.error(`error: ${e.message}\n${USAGE}`);
      return 2;
    }
    console.error(`error: ${e instanceof Error ? e.message : String(e)}`);
    return 1;
  }
}

if (import.meta.main) {
  const [area, ...args] = Deno.args;
  if (area !== "repo") {
    console.error(`error: unknown area "${area ?? ""}"; use: deno task repo …`);
    Deno.exit(2);
  }
  Deno.exit(await runRepoCli(args));
}
