/**
 * A repository in an S3-compatible bucket (path-style URLs, SigV4 via aws4fetch). Each object is one
 * PUT (atomic on S3); reads use Range requests; listing is ListObjectsV2 with continuation tokens.
 * Every request has a timeout and is retried with exponential backoff on 5xx, 429 and network errors,
 * a bounded number of times. Errors name the object key.
 */
import { AwsClient } from "aws4fetch";
import { type Backend, type ByteRange, kindOf, type ObjectInfo, validateObjectName } from "./backend.ts";
import { MissingObjectError, RepoError } from "./errors.ts";

export interface S3BackendOptions {
  /** e.g. "https://s3.eu-west-1.amazonaws.com" or "http://127.0.0.1:4568". */
  endpoint: string;
  bucket: string;
  /** Key prefix of the repository inside the bucket ("" for the bucket root). */
  prefix?: string;
  region?: string;
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
  /** Attempts per request, including the first (default 5). */
  maxAttempts?: number;
  /** Timeout of one attempt, in ms (default 60 000). */
  timeoutMs?: number;
  /** First backoff delay, in ms; doubled each retry, with jitter (default 200). */
  backoffMs?: number;
  /** `max-keys` of each list request (default 1000, the S3 maximum). */
  pageSize?: number;
}

/** An S3 request that failed for good (the status, or the network reason), naming the key. */
export class S3RequestError extends RepoError {
  constructor(readonly key: string, readonly status: number | null, detail: string, options?: ErrorOptions) {
    super(`S3 ${detail} (object ${key})`, options);
  }
}

const RETRYABLE = (status: number) => status >= 500 || status === 429;

export class S3Backend implements Backend {
  readonly location: string;
  readonly #client: AwsClient;
  readonly #base: string;
  readonly #prefix: string;
  readonly #maxAttempts: number;
  readonly #timeoutMs: number;
  readonly #backoffMs: number;
  readonly #pageSize: number;

  constructor(options: S3BackendOptions) {
    if (!options.bucket) throw new RepoError("S3 location needs a bucket");
    const prefix = (options.prefix ?? "").replace(/^\/+|\/+$/g, "");
    this.#prefix = prefix === "" ? "" : `${prefix}/`;
    this.#base = `${options.endpoint.replace(/\/+$/, "")}/${encodeURIComponent(options.bucket)}`;
    this.location = `s3://${options.bucket}/${prefix}`;
    this.#maxAttempts = Math.max(1, options.maxAttempts ?? 5);
    this.#timeoutMs = options.timeoutMs ?? 60_000;
    this.#backoffMs = options.backoffMs ?? 200;
    this.#pageSize = Math.min(1000, Math.max(1, options.pageSize ?? 1000));
    this.#client = new AwsClient({
      accessKeyId: options.accessKeyId,
      secretAccessKey: options.secretAccessKey,
      sessionToken: options.sessionToken,
      region: options.region ?? "us-east-1",
      service: "s3",
      retries: 0,
    });
  }

  #key(name: string): string {
    validateObjectName(name);
    return this.#prefix + name;
  }

  #url(key: string): string {
    return `${this.#base}/${key.split("/").map(encodeURIComponent).join("/")}`;
  }

  /** One request with timeout and retries; returns the first non-retryable response. */
  async #request(method: string, url: string, key: string, init: RequestInit = {}): Promise<Response> {
    let last = "";
    let cause: unknown;
    for (let attempt = 1; attempt <= this.#maxAttempts; attempt++) {
      if (attempt > 1) {
        const delay = this.#backoffMs * 2 ** (attempt - 2);
        await new Promise((r) => setTimeout(r, delay * (0.5 + Math.random() / 2)));
      }
      try {
        const res = await this.#client.fetch(url, {
          ...init,
          method,
          signal: AbortSignal.timeout(this.#timeoutMs),
        });
        if (!RETRYABLE(res.status)) return res;
        last = `answered ${res.status}: ${errorCode(await res.text().catch(() => ""))}`;
        cause = undefined;
      } catch (e) {
        cause = e;
        last = (e as Error).name === "TimeoutError"
          ? `timed out after ${this.#timeoutMs} ms`
          : describeError(e);
      }
    }
    throw new S3RequestError(
      key,
      null,
      `${method} at ${this.location} failed after ${this.#maxAttempts} attempts: ${last}`,
      cause ? { cause } : undefined,
    );
  }

  async #fail(method: string, key: string, res: Response): Promise<never> {
    const body = await res.text().catch(() => "");
    throw new S3RequestError(
      key,
      res.status,
      `${method} at ${this.location} answered ${res.status}: ${errorCode(body)}`,
    );
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    for await (const xml of this.#listPages(this.#prefix + prefix, null)) {
      for (const m of xml.matchAll(/<Contents>([\s\S]*?)<\/Contents>/g)) {
        const key = xmlText(m[1], "Key");
        if (key === null || !key.startsWith(this.#prefix)) continue;
        const name = key.slice(this.#prefix.length);
        const modified = xmlText(m[1], "LastModified");
        yield {
          name,
          size: Number(xmlText(m[1], "Size") ?? 0),
          modified: modified ? new Date(modified) : new Date(0),
        };
      }
    }
  }

  /**
   * The pages (XML bodies) of a ListObjectsV2 of `full` (with `delimiter`, if given), following continuation
   * tokens. Throws on a failed request, a body that is not a ListBucketResult (a proxy's page, a cut body must
   * not read as "no objects": gc and verify would take missing packs for absent ones), or a truncated page
   * without a continuation token.
   */
  async *#listPages(full: string, delimiter: string | null): AsyncIterable<string> {
    let token: string | null = null;
    do {
      const q = new URLSearchParams({ "list-type": "2", prefix: full });
      if (delimiter !== null) q.set("delimiter", delimiter);
      q.set("max-keys", String(this.#pageSize));
      if (token) q.set("continuation-token", token);
      const res = await this.#request("GET", `${this.#base}?${q}`, full);
      if (!res.ok) await this.#fail("LIST", full, res);
      const xml = await res.text();
      if (!/<ListBucketResult[\s>]/.test(xml)) {
        throw new S3RequestError(
          full,
          res.status,
          `LIST at ${this.location} answered without a ListBucketResult`,
        );
      }
      yield xml;
      if (xmlText(xml, "IsTruncated") === "true") {
        token = xmlText(xml, "NextContinuationToken");
        if (!token) {
          throw new S3RequestError(
            full,
            res.status,
            `LIST at ${this.location} is truncated but gives no continuation token`,
          );
        }
      } else token = null;
    } while (token);
  }

  async listFolders(prefix: string): Promise<string[]> {
    const base = prefix.replace(/\/+$/, "");
    if (base !== "") validateObjectName(base);
    const full = this.#prefix + (base === "" ? "" : `${base}/`);
    const out = new Set<string>();
    for await (const xml of this.#listPages(full, "/")) {
      for (const m of xml.matchAll(/<CommonPrefixes>([\s\S]*?)<\/CommonPrefixes>/g)) {
        const p = xmlText(m[1], "Prefix");
        if (p === null || !p.startsWith(full)) continue;
        const name = p.slice(full.length).replace(/\/$/, "");
        if (name !== "" && !name.includes("/")) out.add(name);
      }
    }
    if (out.size === 0) {
      // Nothing, or a server that ignores the delimiter (s3rver does): the plain listing decides (one
      // request when the prefix is empty).
      const rel = base === "" ? "" : `${base}/`;
      for await (const obj of this.list(rel)) {
        const rest = obj.name.slice(rel.length);
        const i = rest.indexOf("/");
        if (i > 0) out.add(rest.slice(0, i));
      }
    }
    return [...out].sort();
  }

  async get(name: string, range?: ByteRange): Promise<Uint8Array<ArrayBuffer>> {
    const key = this.#key(name);
    const headers: Record<string, string> = {};
    if (range && "suffix" in range) {
      if (range.suffix <= 0) return (await this.exists(name)) ? new Uint8Array(0) : this.#missing(name);
      headers.range = `bytes=-${range.suffix}`;
    } else if (range) {
      if (range.length <= 0) return (await this.exists(name)) ? new Uint8Array(0) : this.#missing(name);
      headers.range = `bytes=${range.offset}-${range.offset + range.length - 1}`;
    }
    const res = await this.#request("GET", this.#url(key), key, { headers });
    if (res.status === 404) {
      await res.body?.cancel();
      this.#missing(name);
    }
    if (res.status === 416) {
      await res.body?.cancel();
      throw new RepoError(`Cannot read ${key} at ${this.location} bytes ${headers.range}: out of range`);
    }
    if (!res.ok) await this.#fail("GET", key, res);
    let data = new Uint8Array(await res.arrayBuffer());
    if (range && "offset" in range) {
      if (res.status === 200) data = data.slice(range.offset, range.offset + range.length); // Range ignored
      if (data.length !== range.length) {
        throw new RepoError(
          `Cannot read ${key} at ${this.location} bytes ${range.offset}+${range.length}: got ${data.length}`,
        );
      }
    } else if (range && "suffix" in range) {
      // Some S3-compatible servers (s3rver among them) read "bytes=-N" as "bytes=0-N": check the
      // Content-Range and, if it is not the object's tail, ask again for the tail explicitly.
      const m = res.headers.get("content-range")?.match(/^bytes (\d+)-(\d+)\/(\d+)$/);
      if (res.status === 206 && m && Number(m[2]) !== Number(m[3]) - 1) {
        const size = Number(m[3]);
        const length = Math.min(range.suffix, size);
        return this.get(name, { offset: size - length, length });
      }
      if (data.length > range.suffix) data = data.slice(data.length - range.suffix);
    }
    return data;
  }

  #missing(name: string): never {
    throw new MissingObjectError(kindOf(name), name, `not found at ${this.location}`);
  }

  async put(name: string, data: Uint8Array): Promise<void> {
    const key = this.#key(name);
    const res = await this.#request("PUT", this.#url(key), key, {
      body: data as Uint8Array<ArrayBuffer>,
      headers: { "content-type": "application/octet-stream" },
    });
    if (!res.ok) await this.#fail("PUT", key, res);
    await res.body?.cancel();
  }

  async delete(name: string): Promise<void> {
    const key = this.#key(name);
    const res = await this.#request("DELETE", this.#url(key), key);
    if (!res.ok && res.status !== 404) await this.#fail("DELETE", key, res);
    await res.body?.cancel();
  }

  async exists(name: string): Promise<boolean> {
    const key = this.#key(name);
    const res = await this.#request("HEAD", this.#url(key), key);
    await res.body?.cancel();
    if (res.status === 404) return false;
    if (!res.ok) await this.#fail("HEAD", key, res);
    return true;
  }
}

/** The text of the first `<tag>` in `xml`, entities decoded, or null. */
function xmlText(xml: string, tag: string): string | null {
  const m = xml.match(new RegExp(`<${tag}>([\\s\\S]*?)</${tag}>`));
  if (!m) return null;
  return m[1].replace(
    /&(lt|gt|quot|apos|amp|#(\d+)|#x([0-9a-fA-F]+));/g,
    (_, e, d, h) =>
      d
        ? String.fromCodePoint(Number(d))
        : h
        ? String.fromCodePoint(parseInt(h, 16))
        : ({ lt: "<", gt: ">", quot: '"', apos: "'", amp: "&" } as Record<string, string>)[e],
  );
}

/** The S3 error code and message of an error body, short. */
function errorCode(body: string): string {
  const code = xmlText(body, "Code");
  const msg = xmlText(body, "Message");
  return code ? `${code}${msg ? ` (${msg})` : ""}` : body.slice(0, 200) || "no body";
}

/** An error's message with its cause (fetch puts the network reason there). */
function describeError(e: unknown): string {
  const err = e as Error & { cause?: { message?: string } };
  return err.cause?.message ? `${err.message} (${err.cause.message})` : String(err.message ?? e);
}
