/**
 * The offline command line: `deno task repo <command> …` backs up, lists, restores and verifies a
 * repository with nothing but its key file — no control plane, no BES. Exit codes: 0 success, 1 a
 * failure (one line on stderr), 2 bad usage, 3 a backup that finished but could not read some files.
 */
import { parseArgs } from "node:util";
import { type Backend, LocalBackend } from "./repo/backend.ts";
import { backupFiles } from "./repo/backup.ts";
import type { Compression } from "./repo/compression.ts";
import type { Encryption } from "./repo/blob.ts";
import { IntegrityError, RepoConfigError, RepoError, WrongKeyError } from "./repo/errors.ts";
import { absolutePath } from "./repo/fs.ts";
import { createKeyFile, readKeyFile } from "./repo/keys.ts";
import { forgetSnapshots, garbageCollect } from "./repo/gc.ts";
import { listLiveLocks, removeStaleLocks } from "./repo/lock.ts";
import { type Namespace, Repository } from "./repo/repository.ts";
import { restoreSnapshot } from "./repo/restore.ts";
import { S3Backend } from "./repo/s3_backend.ts";
import { listSnapshots, loadSnapshot, readSnapshotInfo, resolveSnapshotId } from "./repo/snapshot.ts";
import { loadTree, type TreeEntry } from "./repo/tree.ts";
import { compileExcludes } from "./repo/exclude.ts";
import { verifyRepository } from "./repo/verify.ts";
import { repairIndex } from "./repo/index.ts";
import { fromHex } from "./repo/bytes.ts";

/** A usage error: exit code 2. */
class UsageError extends Error {}

const USAGE = `Usage: deno task repo <command> --repo LOCATION --key-file FILE [--host NAME] …
  init      [--compression zstd|lz4|none] [--encryption aes-256-gcm|aes-256-cbc|none] [--no-dedup]
  backup    [--parent SNAPSHOT] [--exclude PATTERN]... [--limit-mbps N] [--json] PATH...
  snapshots [--json]
  ls        SNAPSHOT [PATH] [--json]
  find      SNAPSHOT PATTERN [--json]
  restore   SNAPSHOT --target DIR [--include PATH]... [--overwrite] [--json]
  verify    [SNAPSHOT] [--sample N | --all] [--json]
  forget    SNAPSHOT...
  gc        [--grace-ms N] [--max-repack-bytes N] [--json]
  unlock    --stale [--json]
  repair    [index] [--json]   write a fresh index from the pack trailers; remove damaged segments`;

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
  sample: { type: "string" },
  all: { type: "boolean" },
  "grace-ms": { type: "string" },
  "max-repack-bytes": { type: "string" },
  stale: { type: "boolean" },
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
  return new LocalBackend(absolutePath(location));
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
  if (flags["recovery-key"]) {
    throw new WrongKeyError("--recovery-key is not yet supported by this tool; use --key-file");
  }
  if (!flags["key-file"]) throw new UsageError("--key-file FILE is required");
  return flags["key-file"];
}

async function openRepo(flags: Flags): Promise<Repository> {
  const backend = backendFor(flags.repo);
  const kek = await readKeyFile(keyFileOf(flags));
  const repo = await Repository.open(backend, kek);
  for (const w of repo.warnings) console.error(`warning: ${w}`);
  return repo;
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

async function cmdInit(flags: Flags): Promise<number> {
  const backend = backendFor(flags.repo);
  const keyFile = keyFileOf(flags);
  let kek: Uint8Array;
  let created = false;
  try {
    kek = await readKeyFile(keyFile);
  } catch (e) {
    if (!(e instanceof WrongKeyError) || (await Deno.lstat(keyFile).then(() => true, () => false))) throw e;
    kek = await createKeyFile(keyFile);
    created = true;
  }
  const host = hostOf(flags);
  let repo: Repository;
  let added = false;
  if (await backend.exists("config")) {
    // An existing repository gains this host's namespace when the key opens it.
    repo = await Repository.open(backend, kek);
    if (repo.namespaces().includes(host)) {
      throw new RepoConfigError(`${backend.location} already holds a repository with namespace "${host}"`);
    }
    await repo.createNamespace(host);
    added = true;
  } else {
    repo = await Repository.init(backend, kek, {
      namespace: host,
      compression: flags.compression as Compression | undefined,
      encryption: flags.encryption as Encryption | undefined,
      dedup: !flags["no-dedup"],
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
  if (flags.image) throw new UsageError("--image is not yet supported by this tool");
  if (paths.length === 0) throw new UsageError("backup needs at least one PATH");
  let limit: number | null = null;
  if (flags["limit-mbps"] !== undefined) {
    limit = Number(flags["limit-mbps"]);
    if (!(limit > 0)) {
      throw new UsageError(`Cannot parse --limit-mbps "${flags["limit-mbps"]}": not a positive number`);
    }
    limit *= 1_000_000;
  }
  const repo = await openRepo(flags);
  const ns = namespaceOf(repo, flags);
  const parent = flags.parent ? await resolveSnapshotId(repo.backend, flags.parent) : null;
  const patterns = flags.exclude ?? [];
  // backupFiles holds the writer lock and re-reads gc's condemnations once it holds it.
  const result = await backupFiles(ns, {
    paths,
    host: hostOf(flags),
    parent,
    // A repository inside a backed-up folder is never backed up into itself.
    excludePaths: repo.backend instanceof LocalBackend ? [repo.backend.root] : [],
    excludePatterns: patterns,
    limitBytesPerSecond: limit,
  });
  const { snapshotId, files, dirs, bytesRead, bytesNew, bytesStored, durationMs, errors } = result;
  out(
    flags,
    {
      snapshotId,
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
  if (!flags.target) throw new UsageError("restore needs --target DIR");
  const repo = await openRepo(flags);
  const { id, ns } = await snapshotOf(repo, args[0]);
  const snap = await loadSnapshot(ns, id);
  const target = absolutePath(flags.target);
  for (const p of snap.paths) {
    // Restoring into a backed-up folder would mix the restore into that folder's next backup and, with
    // --overwrite, write over the very files being restored.
    if (isInside(target, p)) {
      throw new RepoError(
        `Restore target ${target} lies inside ${p}, which this snapshot backed up; choose a folder outside it`,
      );
    }
  }
  const result = await restoreSnapshot(ns, id, {
    target,
    include: flags.include,
    overwrite: flags.overwrite ?? false,
  });
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
