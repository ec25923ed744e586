/**
 * A BES data API on loopback over a Local target, a repository with two namespaces in it, and tokens
 * signed by a test control-plane key: the fixture of the data API tests.
 */
import nodeCrypto from "node:crypto";
import { createDataApi, localTargetResolver, serveDataApi } from "../../engine/bes/data_api.ts";
import { createCertificate } from "../../engine/bes/tls.ts";
import type { WriterLocksOptions } from "../../engine/bes/writer_locks.ts";
import { type Backend, LocalBackend } from "../../engine/repo/backend.ts";
import type { NamespaceKeys } from "../../engine/repo/keys.ts";
import { Repository } from "../../engine/repo/repository.ts";
import type { BODY_LIMITS } from "../../engine/protocol/data_api.ts";
import { RemoteBackend } from "../../engine/protocol/remote_backend.ts";
import { type DataTokenClaims, signDataToken } from "../../engine/protocol/token.ts";
import { tempDir } from "./helpers.ts";

export const BES_ID = "bes_1";
export const REPO = { target: "tgt_1", path: "cadres/pol_1/g1", generation: 1 };
export const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 64 * 1024 };

/** A running data API and what the tests need around it. */
export interface BesFixture extends AsyncDisposable {
  dir: string;
  url: string;
  /** The repository as the BES's storage holds it (the tests' view "behind" the API). */
  storage: Backend;
  keys: { a: NamespaceKeys; b: NamespaceKeys };
  /** Certificate PEM when served over HTTPS. */
  certPem: string | null;
  /** The control plane's signing key. */
  signingKey: nodeCrypto.KeyObject;
  /** A token; defaults: job_a, host-a's namespace, write, valid 5 minutes. */
  token(overrides?: Partial<DataTokenClaims>): string;
  /** A client with a fixed token. */
  remote(token: string | (() => string)): RemoteBackend;
  /** A raw request to the API. */
  request(path: string, init?: RequestInit & { token?: string | null }): Promise<Response>;
  api: ReturnType<typeof createDataApi>;
}

/** Starts a BES data API with a repository of namespaces "host-a" and "host-b" at a Local target. */
export async function startBes(
  options: {
    https?: boolean;
    limits?: Partial<typeof BODY_LIMITS>;
    locks?: WriterLocksOptions;
    now?: () => Date;
    /** The target's storage (default: a Local folder in the fixture's temporary folder). */
    storage?: Backend;
  } = {},
): Promise<BesFixture> {
  const tmp = await tempDir("cadres-bes-");
  const root = `${tmp.path}/target`;
  const storage = options.storage ?? new LocalBackend(`${root}/${REPO.path}`);
  const kek = crypto.getRandomValues(new Uint8Array(32));
  const repo = await Repository.init(storage, kek, { namespace: "host-a", ...SMALL });
  await repo.createNamespace("host-b");
  const keys = { a: repo.namespace("host-a").keys, b: repo.namespace("host-b").keys };
  const pair = nodeCrypto.generateKeyPairSync("ed25519");
  const now = options.now ?? (() => new Date());
  const api = createDataApi({
    besId: BES_ID,
    tokenPublicKey: pair.publicKey,
    resolveRepository: options.storage
      ? (r) => (r.target === REPO.target && r.path === REPO.path ? options.storage! : null)
      : localTargetResolver({ [REPO.target]: root }),
    now,
    limits: options.limits,
    locks: options.locks,
    log: () => {},
  });
  const cert = options.https
    ? await createCertificate({ dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] })
    : null;
  const server = serveDataApi(api, {
    hostname: "127.0.0.1",
    port: 0,
    certificate: cert ?? undefined,
    insecureHttp: !cert,
  });
  const url = `${cert ? "https" : "http"}://127.0.0.1:${server.addr.port}`;
  const client = cert ? Deno.createHttpClient({ caCerts: [cert.certPem] }) : undefined;
  const remotes: RemoteBackend[] = [];
  const token = (overrides: Partial<DataTokenClaims> = {}) => {
    const t = Math.floor(now().getTime() / 1000);
    return signDataToken(pair.privateKey, {
      v: 1,
      job: "job_a",
      host: "host-a",
      bes: BES_ID,
      repository: REPO,
      namespace: "host-a",
      access: "write",
      iat: t,
      exp: t + 300,
      ...overrides,
    });
  };
  return {
    dir: tmp.path,
    url,
    storage,
    keys,
    certPem: cert?.certPem ?? null,
    signingKey: pair.privateKey,
    api,
    token,
    remote(tok) {
      const r = new RemoteBackend({
        url,
        token: typeof tok === "string" ? () => tok : tok,
        caCert: cert?.certPem,
        maxAttempts: 2,
        backoffMs: 10,
      });
      remotes.push(r);
      return r;
    },
    request(path, init = {}) {
      const { token: tok, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (tok !== null) headers.set("authorization", `Bearer ${tok ?? token()}`);
      return fetch(`${url}${path}`, { ...rest, headers, client });
    },
    async [Symbol.asyncDispose]() {
      for (const r of remotes) r.close();
      client?.close();
      await api.close();
      await server.shutdown();
      await tmp[Symbol.asyncDispose]();
    },
  };
}

/** Names of the objects under `prefix` in `backend`, sorted. */
export async function names(backend: { list(p: string): AsyncIterable<{ name: string }> }, prefix: string) {
  const out: string[] = [];
  for await (const o of backend.list(prefix)) out.push(o.name);
  return out.sort();
}
