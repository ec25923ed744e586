/**
 * The BES's data API (ENGINE.md §5; docs/engines.md "Data API"): agents read and add repository objects
 * through it with a job-scoped data token, never holding storage credentials. The objects keep their
 * repository names (docs/repository-format.md), so engine/repo's backup and restore run unchanged over
 * the client (engine/protocol/remote_backend.ts).
 *
 * The rules, all decided from clear parts of the format (no key):
 * - a token reaches only its repository and namespace: listings are filtered to the namespace, and an
 *   object of another namespace is answered exactly as a missing one (403 `not_accessible`);
 * - a write token adds new packs, index segments, reference segments and snapshots of its namespace —
 *   each checked against its content (its name is the SHA-256 of its bytes, its trailer, listings or
 *   header name the namespace) — and never overwrites or deletes anything;
 * - committing a snapshot (writing `snapshots/<id>`) is refused while a blob its clear reference list
 *   names is missing from the namespace's index or lies in a condemned or missing pack;
 * - the BES holds the writer lock on behalf of a write token's job (writer_locks.ts): taken before its
 *   first write lands, refreshed while its requests arrive, released when its snapshot is committed;
 * - a write token may create the repository (`init`: its `config`, only when it has none) and add key
 *   objects of its own namespace (`keys/<namespace>/<id>`), never replacing one — the agent's first backup
 *   creates the repository and writes the copy of its keys wrapped for the account's recovery key.
 */
import type nodeCrypto from "node:crypto";
import { createHash } from "node:crypto";
import { Hono } from "hono";
import { z } from "zod";
import {
  type Backend,
  type ByteRange,
  LocalBackend,
  type ObjectInfo,
  validateObjectName,
} from "../repo/backend.ts";
import { concat } from "../repo/bytes.ts";
import { sha256Hex } from "../repo/chunk_id.ts";
import { CONFIG_OBJECT, parseConfigBytes } from "../repo/config.ts";
import {
  FormatVersionError,
  IntegrityError,
  MissingObjectError,
  RepoConfigError,
  RepoError,
} from "../repo/errors.ts";
import { parseKeyObject } from "../repo/keys.ts";
import { CONDEMNED_PREFIX } from "../repo/gc.ts";
import { decodeIndexSegment } from "../repo/index.ts";
import { parseLock } from "../repo/lock.ts";
import { type PackListing, parsePackTail } from "../repo/pack.ts";
import { decodeRefSegment, parseSnapshotObject, type SnapshotHeader } from "../repo/snapshot.ts";
import { S3RequestError } from "../repo/s3_backend.ts";
import {
  BODY_LIMITS,
  CHUNKS_EXIST_PATH,
  DATA_API_BASE,
  type DataApiErrorBody,
  type DataApiErrorCode,
  EXISTS_BATCH_MAX,
  INIT_PATH,
  LIST_PAGE_MAX,
  type ListPage,
  OBJECTS_PATH,
} from "../protocol/data_api.ts";
import { type DataTokenClaims, DataTokenError, verifyDataToken } from "../protocol/token.ts";
import { RepositoryScope } from "./repo_scope.ts";
import { LockLapsedError, WriterLocks, type WriterLocksOptions } from "./writer_locks.ts";

/** The repository a token names. */
export type TokenRepository = DataTokenClaims["repository"];

/** Maps a token's repository to the storage of one of this BES's targets; null when it serves none such. */
export type RepositoryResolver = (repository: TokenRepository) => Backend | null | Promise<Backend | null>;

/** Options of `createDataApi`. */
export interface DataApiOptions {
  /** This BES's id: a token issued for another BES is refused. */
  besId: string;
  /** The control plane's token key (from the registration reply); null until the BES has it. */
  tokenPublicKey: nodeCrypto.KeyObject | (() => nodeCrypto.KeyObject | null);
  resolveRepository: RepositoryResolver;
  now?: () => Date;
  /** Timing of the writer locks held for write tokens. */
  locks?: WriterLocksOptions;
  /** Body limits per kind (default `BODY_LIMITS`). */
  limits?: Partial<typeof BODY_LIMITS>;
  /** Where unexpected errors are reported (never with a token). */
  log?: (message: string) => void;
}

/** A data API: its request handler, and the writer locks it holds. */
export interface DataApi {
  fetch: (request: Request) => Promise<Response>;
  locks: WriterLocks;
  /** Releases every lock held (the BES is stopping). */
  close(): Promise<void>;
}

/** A refusal with its status and code. */
export class DataApiError extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 409 | 413 | 416 | 422 | 502 | 503 | 507,
    readonly code: DataApiErrorCode,
    message: string,
    readonly extra: Omit<DataApiErrorBody["error"], "code" | "message"> = {},
  ) {
    super(message);
    this.name = "DataApiError";
  }
}

/** What the auth step puts on a request. */
interface RequestScope {
  claims: DataTokenClaims;
  backend: Backend;
  scope: RepositoryScope;
  /** The job's writer lock key. */
  lockKey: string;
  /** Names the token's repository (target, path, generation). */
  repoKey: string;
}

type Env = { Variables: { req: RequestScope } };

/** The kinds of object names the data API knows. */
type ObjectName =
  | { kind: "config" }
  | { kind: "pack"; id: string }
  | { kind: "index"; id: string }
  | { kind: "refs"; id: string }
  | { kind: "snapshot"; id: string }
  | { kind: "condemned"; id: string }
  | { kind: "lock" }
  | { kind: "key"; namespace: string }
  | { kind: "other" };

const HEX64 = /^[0-9a-f]{64}$/;

function classify(name: string): ObjectName {
  if (name === "config") return { kind: "config" };
  const parts = name.split("/");
  if (
    parts.length === 3 && parts[0] === "data" && HEX64.test(parts[2]) && parts[1] === parts[2].slice(0, 2)
  ) {
    return { kind: "pack", id: parts[2] };
  }
  if (parts.length === 2 && HEX64.test(parts[1])) {
    const kinds = { index: "index", refs: "refs", snapshots: "snapshot", condemned: "condemned" } as const;
    const kind = kinds[parts[0] as keyof typeof kinds];
    if (kind) return { kind, id: parts[1] };
  }
  if (parts.length === 2 && parts[0] === "locks") return { kind: "lock" };
  if (parts.length === 3 && parts[0] === "keys") return { kind: "key", namespace: parts[1] };
  return { kind: "other" };
}

const notAccessible = (name: string) =>
  new DataApiError(
    403,
    "not_accessible",
    `Object ${name} does not exist in this token's namespace, or is not one it may read`,
  );

const existsBody = z.object({ ids: z.array(z.string().regex(HEX64)).max(EXISTS_BATCH_MAX) });

/** Reads a request body of at most `limit` bytes. Throws `DataApiError` 413 beyond it. */
async function readBody(req: Request, limit: number, what: string): Promise<Uint8Array<ArrayBuffer>> {
  const tooLarge = () =>
    new DataApiError(413, "payload_too_large", `The body of ${what} is over the limit of ${limit} bytes`);
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) {
    await req.body?.cancel().catch(() => {});
    throw tooLarge();
  }
  if (!req.body) return new Uint8Array(0);
  const parts: Uint8Array[] = [];
  let n = 0;
  const reader = req.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    n += value.length;
    if (n > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    parts.push(value);
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Bytes gathered before one write to a staged object (fewer, larger writes than the body's pieces). */
const STAGE_WRITE_BYTES = 4 * 1024 * 1024;
/** The least room given to one read of a request body (see `receivePack`). */
const RECEIVE_VIEW_MIN = 64 * 1024;
/** The end of a pack kept in memory while it streams, where its trailer is (a longer one is read back). */
const PACK_TAIL_BYTES = 64 * 1024;

/**
 * Receives pack `packId`'s body into a staged object (`stage`, the backend's) while hashing it (at most `limit` bytes),
 * then checks it whole — its SHA-256 is its name, its trailer is intact, `checkListing` accepts the listing —
 * and only then asks `beforeCommit` (which takes the writer lock; false: the pack is stored already) and
 * commits. Whatever fails, nothing is left behind and nothing unchecked becomes visible. Returns the size.
 */
async function receivePack(
  req: Request,
  stage: NonNullable<Backend["stage"]>,
  name: string,
  packId: string,
  limit: number,
  beforeCommit: () => Promise<boolean>,
  checkListing: (listing: PackListing) => void,
): Promise<{ size: number; listing: PackListing; stored: boolean }> {
  const tooLarge = () =>
    new DataApiError(413, "payload_too_large", `The body of ${name} is over the limit of ${limit} bytes`);
  const declared = req.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) {
    await req.body?.cancel().catch(() => {});
    throw tooLarge();
  }
  const staged = await stage(name);
  let committed = false;
  // One write in flight while the next block is received (the disk and the network overlap).
  let writing: Promise<void> = Promise.resolve();
  const body = req.body;
  // The body is read straight into two blocks of STAGE_WRITE_BYTES (a byte stream's BYOB reader: no copy,
  // no joining of pieces); one block is written while the other fills. A body that is not a byte stream is
  // copied into the blocks piece by piece.
  let byob: ReadableStreamBYOBReader | undefined;
  let plain: ReadableStreamDefaultReader<Uint8Array> | undefined;
  if (body) {
    try {
      byob = body.getReader({ mode: "byob" });
    } catch {
      plain = body.getReader();
    }
  }
  const reader = byob ?? plain;
  try {
    const hash = createHash("sha256");
    let size = 0;
    // A block has room past STAGE_WRITE_BYTES so that a read is never given a tiny view: a BYOB read of the
    // body's last bytes into a view of a few bytes never returned (measured, Deno 2.9).
    const capacity = STAGE_WRITE_BYTES + RECEIVE_VIEW_MIN;
    const blocks = [new Uint8Array(capacity), new Uint8Array(capacity)];
    let cur = 0;
    let fill = 0;
    let lastLen = 0;
    const flush = async () => {
      if (fill === 0) return;
      const data = blocks[cur].subarray(0, fill);
      // Hashed once per block (4 MiB), not once per network piece.
      hash.update(data);
      // The other block's write must end before that block is filled again.
      await writing;
      writing = staged.write(data);
      writing.catch(() => {}); // awaited by the next call; a failure is not unhandled meanwhile
      lastLen = fill;
      cur ^= 1;
      fill = 0;
    };
    // A body over the limit: cancelled and refused.
    const refuse = async (): Promise<never> => {
      await reader!.cancel().catch(() => {});
      throw tooLarge();
    };
    let tail: Uint8Array = new Uint8Array(0);
    for (;;) {
      if (byob) {
        const { done, value } = await byob.read(blocks[cur].subarray(fill));
        // The block's buffer is transferred by each read: keep the one handed back.
        if (value) blocks[cur] = new Uint8Array(value.buffer);
        if (done) break;
        if ((size += value.length) > limit) await refuse();
        fill += value.length;
        if (fill >= STAGE_WRITE_BYTES) await flush();
      } else if (plain) {
        const { done, value } = await plain.read();
        if (done) break;
        if ((size += value.length) > limit) await refuse();
        for (let o = 0; o < value.length;) {
          const k = Math.min(value.length - o, capacity - fill);
          blocks[cur].set(value.subarray(o, o + k), fill);
          fill += k;
          o += k;
          if (fill >= STAGE_WRITE_BYTES) await flush();
        }
      } else break;
    }
    // The pack's last PACK_TAIL_BYTES (its trailer), from the block being filled and the one written last.
    if (fill >= PACK_TAIL_BYTES) tail = blocks[cur].slice(fill - PACK_TAIL_BYTES, fill);
    else {
      const before = Math.min(lastLen, PACK_TAIL_BYTES - fill);
      tail = concat(blocks[cur ^ 1].subarray(lastLen - before, lastLen), blocks[cur].subarray(0, fill));
    }
    await flush();
    await writing;
    if (hash.digest("hex") !== packId) {
      throw new DataApiError(422, "invalid", `The bytes sent for ${name} do not hash to its name`);
    }
    let listing: PackListing;
    try {
      let parsed = parsePackTail(packId, tail, size);
      if ("need" in parsed) {
        parsed = parsePackTail(packId, await staged.read(size - parsed.need, parsed.need), size);
        if ("need" in parsed) throw new IntegrityError("pack", packId, "trailer unreadable");
      }
      listing = parsed;
    } catch (e) {
      if (e instanceof IntegrityError) throw new DataApiError(422, "invalid", e.message);
      throw e;
    }
    checkListing(listing);
    if (await beforeCommit()) {
      await staged.commit();
      committed = true;
    }
    return { size, listing, stored: committed };
  } finally {
    await writing.catch(() => {});
    if (!committed) await staged.abort();
    reader?.releaseLock();
  }
}

/** The range of a `Range` header (`bytes=a-b` or `bytes=-n`), or undefined. Throws 400 on another form. */
function parseRange(header: string | null): ByteRange | undefined {
  if (header === null) return undefined;
  const m = header.match(/^bytes=(\d*)-(\d*)$/);
  if (m && m[1] === "" && m[2] !== "") return { suffix: Number(m[2]) };
  if (m && m[1] !== "" && m[2] !== "" && Number(m[2]) >= Number(m[1])) {
    return { offset: Number(m[1]), length: Number(m[2]) - Number(m[1]) + 1 };
  }
  throw new DataApiError(400, "malformed", `Unsupported Range "${header}": use bytes=FIRST-LAST or bytes=-N`);
}

function sliceRange(bytes: Uint8Array, range: ByteRange | undefined, name: string): Uint8Array {
  if (!range) return bytes;
  if ("suffix" in range) return bytes.subarray(Math.max(0, bytes.length - range.suffix));
  if (range.offset + range.length > bytes.length) {
    throw new DataApiError(
      416,
      "range_not_satisfiable",
      `Cannot read ${name} bytes ${range.offset}+${range.length}: it has ${bytes.length} bytes`,
    );
  }
  return bytes.subarray(range.offset, range.offset + range.length);
}

function checkHeader(id: string, h: SnapshotHeader): void {
  const bad = (detail: string): never => {
    throw new DataApiError(422, "invalid", `Snapshot ${id} has an invalid clear header: ${detail}`);
  };
  if (typeof h !== "object" || h === null) bad("not an object");
  if (typeof h.namespace !== "string") bad("namespace is not a string");
  if (!["full", "incremental", "synthetic_full", "image"].includes(h.kind)) bad(`unknown kind`);
  if (typeof h.time !== "string" || !Number.isFinite(Date.parse(h.time))) bad("time is not a time");
  if (h.parent !== null && (typeof h.parent !== "string" || !HEX64.test(h.parent))) {
    bad("parent is not an id");
  }
  if (!Array.isArray(h.refSegments) || !h.refSegments.every((s) => typeof s === "string" && HEX64.test(s))) {
    bad("refSegments is not a list of segment ids");
  }
  if (!Number.isSafeInteger(h.refCount) || h.refCount < 0) bad("refCount is not a count");
}

function sameListing(a: PackListing, b: PackListing): boolean {
  return a.packId === b.packId && a.namespace === b.namespace && a.entries.length === b.entries.length &&
    a.entries.every((e, i) => {
      const f = b.entries[i];
      return e.type === f.type && e.id === f.id && e.offset === f.offset && e.length === f.length;
    });
}

/** The data API handler of a BES. */
export function createDataApi(options: DataApiOptions): DataApi {
  const now = options.now ?? (() => new Date());
  const limits = { ...BODY_LIMITS, ...options.limits };
  const locks = new WriterLocks({ now, ...options.locks });
  const scopes = new Map<string, { backend: Backend; scope: RepositoryScope }>();
  const publicKey = () =>
    typeof options.tokenPublicKey === "function" ? options.tokenPublicKey() : options.tokenPublicKey;
  const log = options.log ?? ((m: string) => console.error(m));
  /**
   * Check-then-write steps that must not interleave within one repository (creating its config, adding a
   * key object): a storage backend has no put-if-absent, and this BES is the only writer of a target's
   * config and keys through the API, so one queue per repository makes them atomic.
   */
  const queues = new Map<string, Promise<unknown>>();
  const exclusive = <T>(repoKey: string, fn: () => Promise<T>): Promise<T> => {
    const run = (queues.get(repoKey) ?? Promise.resolve()).catch(() => {}).then(fn);
    const tail = run.catch(() => {});
    queues.set(repoKey, tail);
    tail.then(() => {
      if (queues.get(repoKey) === tail) queues.delete(repoKey);
    });
    return run;
  };

  const app = new Hono<Env>();

  app.onError((err, c) => {
    let e: DataApiError;
    if (err instanceof DataApiError) e = err;
    else if (isStorageFull(err)) {
      const path = new URL(c.req.url).pathname;
      const object = path.startsWith(`${OBJECTS_PATH}/`)
        ? decodeURIComponent(path.slice(OBJECTS_PATH.length + 1))
        : path === INIT_PATH
        ? "config"
        : path;
      e = new DataApiError(
        507,
        "storage_full",
        `The storage target is full: ${object} was not stored (${(err as Error).message})`,
      );
    } else if (
      err instanceof S3RequestError || (err instanceof RepoError && !(err instanceof IntegrityError))
    ) {
      e = new DataApiError(502, "storage_unavailable", `The storage target failed: ${err.message}`);
    } else {
      log(`data API: ${c.req.method} ${new URL(c.req.url).pathname} failed: ${(err as Error).stack ?? err}`);
      return c.json(
        { error: { code: "internal", message: "Internal error" } } satisfies DataApiErrorBody,
        500,
      );
    }
    if (c.req.method === "HEAD") return c.body(null, e.status);
    return c.json(
      { error: { code: e.code, message: e.message, ...e.extra } } satisfies DataApiErrorBody,
      e.status,
    );
  });
  app.notFound((c) =>
    c.json(
      { error: { code: "not_found", message: "No such data API endpoint" } } satisfies DataApiErrorBody,
      404,
    )
  );

  app.use(`${DATA_API_BASE}/*`, async (c, next) => {
    const auth = c.req.header("authorization") ?? "";
    const m = auth.match(/^Bearer\s+(\S+)$/i);
    if (!m) throw new DataApiError(401, "unauthorized", "A data token is required (Authorization: Bearer …)");
    const key = publicKey();
    if (!key) {
      throw new DataApiError(503, "not_ready", "This BES has not yet received its control plane's key");
    }
    let claims: DataTokenClaims;
    try {
      claims = verifyDataToken(key, m[1], now());
    } catch (e) {
      if (!(e instanceof DataTokenError)) throw e;
      if (e.reason === "expired") throw new DataApiError(401, "token_expired", e.message);
      throw new DataApiError(401, "token_invalid", e.message);
    }
    if (claims.bes !== options.besId) {
      throw new DataApiError(401, "token_invalid", "The data token was issued for another BES");
    }
    const repo = claims.repository;
    const backend = await options.resolveRepository(repo);
    if (!backend) {
      throw new DataApiError(
        403,
        "repository_unknown",
        "This BES serves no repository at the token's target",
      );
    }
    const repoKey = JSON.stringify([repo.target, repo.path, repo.generation]);
    let entry = scopes.get(repoKey);
    if (!entry || entry.backend !== backend) {
      scopes.set(repoKey, entry = { backend, scope: new RepositoryScope(backend) });
    }
    const lockKey = JSON.stringify([claims.job, repo.target, repo.path, repo.generation, claims.namespace]);
    c.set("req", { claims, backend, scope: entry.scope, lockKey, repoKey });
    await locks.touch(lockKey);
    await next();
  });

  const requireWrite = (r: RequestScope) => {
    if (r.claims.access !== "write") {
      throw new DataApiError(403, "read_only", "This data token only reads; it cannot write or delete");
    }
  };

  app.get(OBJECTS_PATH, async (c) => {
    const r = c.get("req");
    const prefix = c.req.query("prefix") ?? "";
    const cursor = c.req.query("cursor") ?? null;
    const limit = Math.min(LIST_PAGE_MAX, Math.max(1, Number(c.req.query("limit") ?? LIST_PAGE_MAX) || 1));
    const top = prefix.slice(0, prefix.indexOf("/") + 1);
    const ns = r.claims.namespace;
    let objects: ObjectInfo[];
    if (top === "data/") objects = await r.scope.packObjects(ns, prefix);
    else if (top === "index/") objects = await r.scope.indexObjects(ns);
    else if (top === "snapshots/") objects = await r.scope.snapshotObjects(ns);
    else if (top === CONDEMNED_PREFIX) objects = await r.scope.condemnedObjects(ns);
    else if (top === "refs/") {
      const named = await r.scope.referenceSegments(ns);
      objects = [];
      for await (const o of r.backend.list("refs/")) if (named.has(o.name.slice(5))) objects.push(o);
    } else {
      throw new DataApiError(
        403,
        "forbidden",
        `Listing "${prefix}" is not allowed: a token lists data/, index/, refs/, snapshots/ or condemned/`,
      );
    }
    let after = "";
    if (cursor !== null) {
      try {
        after = new TextDecoder("utf-8", { fatal: true }).decode(
          Uint8Array.fromBase64(cursor, { alphabet: "base64url" }),
        );
      } catch {
        throw new DataApiError(400, "malformed", "The cursor is not one this BES gave");
      }
    }
    const sorted = objects.filter((o) => o.name.startsWith(prefix) && o.name > after)
      .sort((a, b) => (a.name < b.name ? -1 : 1));
    const page = sorted.slice(0, limit);
    const body: ListPage = {
      objects: page.map((o) => ({ name: o.name, size: o.size, modified: o.modified.toISOString() })),
      cursor: sorted.length > limit
        ? new TextEncoder().encode(page[page.length - 1].name).toBase64({
          alphabet: "base64url",
          omitPadding: true,
        })
        : null,
    };
    return c.json(body);
  });

  /** The object name of a request to OBJECTS_PATH/<name>. Throws 400 if it is not a valid name. */
  const nameOf = (url: string): string => {
    const path = new URL(url).pathname.slice(OBJECTS_PATH.length + 1);
    let name: string;
    try {
      name = path.split("/").map(decodeURIComponent).join("/");
      validateObjectName(name);
    } catch {
      throw new DataApiError(400, "malformed", `"${path}" is not an object name`);
    }
    return name;
  };

  /** The bytes (or range) of `name` if the token may read it; throws 403 `not_accessible` otherwise. */
  const readObject = async (r: RequestScope, name: string, range: ByteRange | undefined, head: boolean) => {
    const o = classify(name);
    const ns = r.claims.namespace;
    const getRaw = async (): Promise<Uint8Array> => {
      try {
        return await r.backend.get(name, range);
      } catch (e) {
        if (e instanceof MissingObjectError) throw notAccessible(name);
        if (range && e instanceof RepoError && !(e instanceof S3RequestError)) {
          throw new DataApiError(416, "range_not_satisfiable", e.message);
        }
        throw e;
      }
    };
    const whole = async (): Promise<Uint8Array | null> => {
      if (!head) return await getRaw();
      if (!(await r.backend.exists(name))) throw notAccessible(name);
      return null;
    };
    switch (o.kind) {
      case "config":
        return await whole();
      case "pack":
        if ((await r.scope.packNamespace(o.id)) !== ns) throw notAccessible(name);
        return head ? null : await getRaw();
      case "index": {
        const bytes = await r.scope.readIndexObject(name, ns);
        if (!bytes) throw notAccessible(name);
        return head ? null : sliceRange(bytes, range, name);
      }
      case "refs":
        if (!(await r.scope.referenceSegments(ns)).has(o.id)) throw notAccessible(name);
        return await whole();
      case "snapshot":
        if ((await r.scope.snapshotHeader(o.id))?.namespace !== ns) throw notAccessible(name);
        return head ? null : await getRaw();
      case "condemned":
        if (!(await r.scope.isCondemnedObjectOf(name, ns))) throw notAccessible(name);
        return await whole();
      case "lock":
        // The one lock a write token sees is the one the BES holds for its job, whatever its name.
        if (r.claims.access !== "write" || !locks.isHeld(r.lockKey)) throw notAccessible(name);
        return head ? null : new Uint8Array(0);
      default:
        throw notAccessible(name);
    }
  };

  app.get(`${OBJECTS_PATH}/*`, async (c) => {
    const r = c.get("req");
    const name = nameOf(c.req.url);
    const head = c.req.method === "HEAD";
    const range = head ? undefined : parseRange(c.req.header("range") ?? null);
    const bytes = await readObject(r, name, range, head);
    if (bytes === null) return c.body(null, 200);
    const headers: Record<string, string> = { "content-type": "application/octet-stream" };
    if (range && "offset" in range) {
      headers["content-range"] = `bytes ${range.offset}-${range.offset + range.length - 1}/*`;
    }
    return c.body(bytes as Uint8Array<ArrayBuffer>, range ? 206 : 200, headers);
  });

  app.put(`${OBJECTS_PATH}/*`, async (c) => {
    const r = c.get("req");
    const name = nameOf(c.req.url);
    requireWrite(r);
    const o = classify(name);
    const ns = r.claims.namespace;
    const holder = { namespace: ns, hostname: r.claims.host };
    const hashMismatch = () =>
      new DataApiError(422, "invalid", `The bytes sent for ${name} do not hash to its name`);
    switch (o.kind) {
      case "pack": {
        const checkListing = (listing: PackListing) => {
          if (listing.namespace !== ns) {
            throw new DataApiError(
              403,
              "forbidden",
              `Pack ${o.id} holds namespace "${listing.namespace}"'s blobs`,
            );
          }
        };
        if (r.backend.stage) {
          // Streamed: written to a temporary object while it is hashed, checked whole, then made visible.
          const { size, listing, stored } = await receivePack(
            c.req.raw,
            (n) => r.backend.stage!(n),
            name,
            o.id,
            limits.pack,
            async () => {
              await locks.acquire(r.lockKey, r.backend, holder);
              // Same name, same bytes: a retried upload changes nothing.
              return !(await r.backend.exists(name));
            },
            checkListing,
          );
          r.scope.notePackReceived(listing, stored);
          return c.json({ name, size }, 201);
        }
        const body = await readBody(c.req.raw, limits.pack, name);
        if (sha256Hex(body) !== o.id) throw hashMismatch();
        let listing: PackListing;
        try {
          const parsed = parsePackTail(o.id, body, body.length);
          if ("need" in parsed) throw new IntegrityError("pack", o.id, "trailer longer than the pack");
          listing = parsed;
        } catch (e) {
          if (e instanceof IntegrityError) throw new DataApiError(422, "invalid", e.message);
          throw e;
        }
        checkListing(listing);
        await locks.acquire(r.lockKey, r.backend, holder);
        // Same name, same bytes: a retried upload changes nothing.
        const stored = !(await r.backend.exists(name));
        if (stored) await r.backend.put(name, body);
        r.scope.notePackReceived(listing, stored);
        return c.json({ name, size: body.length }, 201);
      }
      case "index": {
        const body = await readBody(c.req.raw, limits.index, name);
        let listings: PackListing[];
        try {
          listings = decodeIndexSegment(name, body);
        } catch (e) {
          if (e instanceof IntegrityError) throw new DataApiError(422, "invalid", e.message);
          throw e;
        }
        if (listings.length === 0) {
          throw new DataApiError(422, "invalid", `Index segment ${o.id} lists no pack`);
        }
        for (const l of listings) {
          if (l.namespace !== ns) {
            throw new DataApiError(
              403,
              "forbidden",
              `Index segment ${o.id} lists a pack of another namespace`,
            );
          }
          // The listing must be the pack's own trailer: an index may not point into a pack it does not describe.
          let trailer: PackListing | null;
          try {
            // The trailer checked when this BES received the pack, if it did (else read back).
            trailer = await r.scope.storedTrailer(l.packId);
          } catch (e) {
            if (e instanceof IntegrityError) trailer = null;
            else throw e;
          }
          if (!trailer || !sameListing(trailer, l)) {
            throw new DataApiError(
              422,
              "invalid",
              `Index segment ${o.id} lists pack ${l.packId}, which is not stored in this namespace as listed`,
            );
          }
        }
        await locks.acquire(r.lockKey, r.backend, holder);
        if (!(await r.backend.exists(name))) await r.backend.put(name, body);
        r.scope.noteSegment(name, listings);
        return c.json({ name, size: body.length }, 201);
      }
      case "refs": {
        const body = await readBody(c.req.raw, limits.refs, name);
        try {
          decodeRefSegment(name, body);
        } catch (e) {
          if (e instanceof IntegrityError) throw new DataApiError(422, "invalid", e.message);
          throw e;
        }
        await locks.acquire(r.lockKey, r.backend, holder);
        // Rewritten even when present (same bytes): its fresh time keeps gc from removing a segment the
        // snapshot about to be committed names (docs/repository-format.md, Forget and gc, step 5).
        await r.backend.put(name, body);
        return c.json({ name, size: body.length }, 201);
      }
      case "snapshot":
        return c.json(
          await commitSnapshot(r, name, o.id, await readBody(c.req.raw, limits.snapshot, name)),
          201,
        );
      case "lock": {
        const body = await readBody(c.req.raw, limits.lock, name);
        let info;
        try {
          info = parseLock(name, body);
        } catch (e) {
          if (e instanceof IntegrityError) throw new DataApiError(422, "invalid", e.message);
          throw e;
        }
        if (info.kind !== "backup" || (info.namespace !== null && info.namespace !== ns)) {
          throw new DataApiError(
            403,
            "forbidden",
            "A data token holds only a backup lock of its own namespace",
          );
        }
        await locks.acquire(r.lockKey, r.backend, { ...holder, parent: info.parent });
        return c.json({ name, held: true }, 201);
      }
      case "key": {
        // Add-only: a key object of the token's own namespace, checked to be one, never replacing another.
        if (o.namespace !== ns) {
          await c.req.raw.body?.cancel().catch(() => {});
          throw new DataApiError(403, "forbidden", `A data token adds key objects of its own namespace only`);
        }
        const body = await readBody(c.req.raw, limits.key, name);
        try {
          parseKeyObject(name, body);
        } catch (e) {
          if (e instanceof IntegrityError) throw new DataApiError(422, "invalid", e.message);
          throw e;
        }
        const existed = await exclusive(r.repoKey, async () => {
          if (await r.backend.exists(name)) return true;
          await r.backend.put(name, body);
          return false;
        });
        return c.json({ name, size: body.length, existed }, existed ? 200 : 201);
      }
      default:
        await c.req.raw.body?.cancel().catch(() => {});
        throw new DataApiError(
          403,
          "forbidden",
          `A data token cannot write ${name}: it adds packs, index and reference segments, snapshots and ` +
            `key objects of its namespace only (a config through ${INIT_PATH})`,
        );
    }
  });

  const commitSnapshot = async (r: RequestScope, name: string, id: string, body: Uint8Array) => {
    if (sha256Hex(body) !== id) {
      throw new DataApiError(422, "invalid", `The bytes sent for ${name} do not hash to its name`);
    }
    let header: SnapshotHeader;
    try {
      header = parseSnapshotObject(id, body).header;
    } catch (e) {
      if (e instanceof IntegrityError) throw new DataApiError(422, "invalid", e.message);
      throw e;
    }
    checkHeader(id, header);
    const ns = r.claims.namespace;
    if (header.namespace !== ns) {
      throw new DataApiError(403, "forbidden", `Snapshot ${id} is of namespace "${header.namespace}"`);
    }
    if (await r.backend.exists(name)) {
      await locks.release(r.lockKey);
      return { name, size: body.length };
    }
    // The lock first: a pack gc condemns after it is taken is not deleted before it is released.
    await locks.acquire(r.lockKey, r.backend, { namespace: ns, hostname: r.claims.host });
    const refs: string[] = [];
    for (const seg of header.refSegments) {
      const segName = `refs/${seg}`;
      let ids: string[];
      try {
        ids = decodeRefSegment(segName, await r.backend.get(segName));
      } catch (e) {
        if (e instanceof MissingObjectError || e instanceof IntegrityError) {
          throw new DataApiError(
            422,
            "invalid",
            `Snapshot ${id} names reference segment ${seg}, which is ${
              e instanceof MissingObjectError ? "not stored" : "damaged"
            }: upload it first`,
          );
        }
        throw e;
      }
      for (const x of ids) refs.push(x);
    }
    if (refs.length !== header.refCount) {
      throw new DataApiError(
        422,
        "invalid",
        `Snapshot ${id} counts ${header.refCount} references, its segments ${refs.length}`,
      );
    }
    const live = await r.scope.liveBlobs(ns, refs, { checkPacksExist: true });
    const missing = [...new Set(refs.filter((x) => !live.has(x)))];
    if (missing.length > 0) {
      throw new DataApiError(
        409,
        "missing_blobs",
        `Snapshot ${id} references ${missing.length} blobs that are missing from namespace "${ns}" or in ` +
          `a condemned pack; upload them again, then commit`,
        { missing: missing.slice(0, 100), missingCount: missing.length },
      );
    }
    try {
      await locks.check(r.lockKey);
    } catch (e) {
      if (e instanceof LockLapsedError) throw new DataApiError(409, "lock_lapsed", e.message);
      throw e;
    }
    await r.backend.put(name, body);
    r.scope.noteSnapshot(id, header);
    await locks.release(r.lockKey).catch((e) => {
      log(`data API: snapshot ${id} committed, but its writer lock was not deleted (it goes stale): ${e}`);
    });
    return { name, size: body.length };
  };

  app.delete(`${OBJECTS_PATH}/*`, async (c) => {
    const r = c.get("req");
    const name = nameOf(c.req.url);
    requireWrite(r);
    if (classify(name).kind !== "lock") {
      throw new DataApiError(
        403,
        "forbidden",
        `The data API never deletes (${name}): prune and gc are BES jobs`,
      );
    }
    await locks.release(r.lockKey);
    return c.body(null, 204);
  });

  app.post(INIT_PATH, async (c) => {
    const r = c.get("req");
    requireWrite(r);
    const body = await readBody(c.req.raw, limits.config, "a repository config");
    try {
      parseConfigBytes(body, "The config sent");
    } catch (e) {
      if (e instanceof RepoConfigError || e instanceof FormatVersionError) {
        throw new DataApiError(422, "invalid", e.message);
      }
      throw e;
    }
    // Put-if-absent: an existing config is never replaced (the writer then opens the repository with the
    // settings it expects, and a mismatch is refused there).
    const { created, stored } = await exclusive(r.repoKey, async () => {
      try {
        return { created: false, stored: await r.backend.get(CONFIG_OBJECT) };
      } catch (e) {
        if (!(e instanceof MissingObjectError)) throw e;
      }
      await r.backend.put(CONFIG_OBJECT, body);
      return { created: true, stored: body as Uint8Array };
    });
    return c.body(stored as Uint8Array<ArrayBuffer>, created ? 201 : 200, {
      "content-type": "application/json",
    });
  });

  app.post(CHUNKS_EXIST_PATH, async (c) => {
    const r = c.get("req");
    const raw = await readBody(c.req.raw, limits.json, "an exists request");
    let ids: string[];
    try {
      const parsed = existsBody.safeParse(JSON.parse(new TextDecoder().decode(raw)));
      if (!parsed.success) {
        throw new DataApiError(
          422,
          "invalid",
          `"ids" must be a list of at most ${EXISTS_BATCH_MAX} chunk ids (64 lower-case hex digits)`,
        );
      }
      ids = parsed.data.ids;
    } catch (e) {
      if (e instanceof SyntaxError) throw new DataApiError(400, "malformed", "The body is not JSON");
      throw e;
    }
    // A writer holds its lock before it decides which blobs exist (lock.ts): gc then never deletes a pack
    // this answer names while the job runs.
    if (r.claims.access === "write") {
      await locks.acquire(r.lockKey, r.backend, { namespace: r.claims.namespace, hostname: r.claims.host });
    }
    const live = await r.scope.liveBlobs(r.claims.namespace, ids);
    return c.json({ existing: ids.filter((id) => live.has(id)) });
  });

  return {
    fetch: (request) => Promise.resolve(app.fetch(request)),
    locks,
    close: () => locks.close(),
  };
}

/**
 * Whether a storage error says the target has no space left: ENOSPC or EDQUOT from a folder, a 507 or a
 * "storage full"/quota error code from an S3-compatible store.
 */
function isStorageFull(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  if (code === "ENOSPC" || code === "EDQUOT") return true;
  if (err instanceof S3RequestError && err.status === 507) return true;
  const message = err instanceof Error ? err.message : "";
  return /no space left on device|disk quota exceeded|QuotaExceeded|InsufficientStorage|StorageFull/i.test(
    message,
  );
}

/** Options of `serveDataApi`. */
export interface ServeDataApiOptions {
  hostname: string;
  port: number;
  /** The BES's certificate (tls.ts). Required unless `insecureHttp`. */
  certificate?: { certPem: string; keyPem: string };
  /** Plain HTTP, for tests: allowed on a loopback address only. */
  insecureHttp?: boolean;
  signal?: AbortSignal;
  onListen?: (addr: Deno.NetAddr) => void;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

/**
 * Serves `api` over HTTPS with the BES's certificate — or, with `insecureHttp`, plain HTTP on a loopback
 * address only. Throws if neither applies.
 */
export function serveDataApi(
  api: Pick<DataApi, "fetch">,
  options: ServeDataApiOptions,
): Deno.HttpServer<Deno.NetAddr> {
  const base = {
    hostname: options.hostname,
    port: options.port,
    signal: options.signal,
    onListen: options.onListen ?? (() => {}),
  };
  if (options.certificate) {
    return Deno.serve(
      { ...base, cert: options.certificate.certPem, key: options.certificate.keyPem },
      api.fetch,
    );
  }
  if (!options.insecureHttp) throw new Error("The data API is served over HTTPS: give the BES's certificate");
  if (!LOOPBACK.has(options.hostname)) {
    throw new Error(`Plain HTTP is allowed on a loopback address only, not on ${options.hostname}`);
  }
  return Deno.serve(base, api.fetch);
}

/**
 * A resolver for Local targets: target id → root folder; the repository lives at `<root>/<path>` (the
 * token's path, which names its generation, e.g. `cadres/<policy>/g2`). A path that is not a plain
 * relative path is refused (null).
 */
export function localTargetResolver(roots: Record<string, string>): RepositoryResolver {
  const backends = new Map<string, LocalBackend>();
  return (repo) => {
    const root = roots[repo.target];
    if (root === undefined) return null;
    try {
      validateObjectName(repo.path);
    } catch {
      return null;
    }
    const dir = `${root.replace(/\/+$/, "")}/${repo.path}`;
    let b = backends.get(dir);
    if (!b) backends.set(dir, b = new LocalBackend(dir));
    return b;
  };
}
