/**
 * Engine protocol v1 (DESIGN.md §5) for BES and agents: registration/enrollment with a secret, then
 * Ed25519-signed requests. Declared with zod so the protocol is part of `/api/openapi.json`; the
 * worked example is in docs/engine-protocol.md.
 */
import { createRoute, OpenAPIHono, type RouteConfig, type RouteHandler, z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { applyJobOutcome, requestPrePatch } from "../domain/runs.ts";
import {
  applyHeartbeat,
  BesHeartbeat,
  BesRegistration,
  HEARTBEAT_INTERVAL_SECONDS,
  KeyInAnotherTenantError,
  registerEngine,
} from "../domain/engines.ts";
import { type Engine, engineKey } from "../domain/engines.ts";
import { HttpError, NotFoundError } from "../domain/errors.ts";
import { CommitConflictError } from "../domain/retry.ts";
import { groupReader } from "../domain/group_read.ts";
import {
  AgentEnrollment,
  AgentHeartbeat,
  applyHostHeartbeat,
  enrollHost,
  type Host,
  hostKey,
} from "../domain/hosts.ts";
import {
  recordRegistrationFailure,
  REGISTRATION_MAX_FAILURES,
  registrationRetryAfter,
} from "../domain/rate_limit.ts";
import {
  claimNonce,
  NONCE_TTL_MS,
  principalNonceKey,
  registrationNonceKey,
} from "../domain/engine_nonces.ts";
import {
  importPublicKey,
  MAX_SKEW_SECONDS,
  type PublicKey,
  REGISTRATION_PRINCIPAL,
  SIGNATURE_HEADERS,
  verifySignedRequest,
} from "../domain/signing.ts";
import { applyCapacityReports } from "../domain/storage.ts";
import {
  applyResult,
  claimJobs,
  ProgressInput,
  queuedCount,
  reportProgress,
  ResultInput,
} from "../domain/job_queue.ts";
import { BmrTokenInput, redeemBmrToken, restorePathsChunk } from "../domain/restore.ts";
import { resolveRegistrationSecret } from "../domain/tenancy.ts";
import { handOutJob, progressDataAccess } from "../domain/data_access.ts";
import { deliverJobKeys } from "../domain/namespace_keys.ts";
import { tokenPublicKey } from "../domain/token_signing.ts";
import { PartInput, RESULT_LISTS, storeResultPart } from "../domain/result_parts.ts";
import { declare } from "./access.ts";
import { ErrorBody } from "./api_common.ts";
import type { AppEnv } from "./env.ts";
import { clientIp } from "./middleware.ts";

export { NONCE_TTL_MS, REGISTRATION_MAX_FAILURES };

const keyCache = new Map<string, PublicKey>();

/** Imported public keys are cached (a key never changes for a principal id; deletion is checked per request). */
export function cachedKey(publicKey: string): PublicKey {
  let key = keyCache.get(publicKey);
  if (!key) {
    if (keyCache.size >= 10_000) keyCache.clear();
    key = importPublicKey(publicKey);
    keyCache.set(publicKey, key);
  }
  return key;
}

const decoder = new TextDecoder();

/**
 * The path and query of a request URL exactly as `new URL(url).pathname + search` gives them: the request's
 * URL is already parsed and serialized, so they are what follows the authority, up to a fragment, without
 * an empty query's "?" (`search` is "" for it). Cheaper than parsing the URL again on every signed request.
 */
export function pathAndQuery(url: string): string {
  const start = url.indexOf("/", url.indexOf("//") + 2);
  if (start === -1) return "/";
  const hash = url.indexOf("#", start);
  const end = hash === -1 ? url.length : hash;
  const query = url.indexOf("?", start);
  return url.slice(start, query !== -1 && query === end - 1 ? query : end);
}

/** The one accepted form of the (unsigned) principal header: `bes:<id>` or `agent:<id>`, nothing around it. */
export const PRINCIPAL_HEADER = /^(bes|agent):([0-9A-Z]{26})$/;

function unauthorized(message: string): never {
  throw new HttpError(401, "unauthorized", message);
}

/** 401 for a failed signature check; `badSignature` is the answer to a signature that does not verify. */
function refuseSignature(reason: "malformed" | "skew" | "bad_signature", badSignature: string): never {
  unauthorized(
    reason === "skew"
      ? `The request timestamp is more than ${MAX_SKEW_SECONDS} s from the server clock`
      : reason === "malformed"
      ? "Malformed signature headers"
      : badSignature,
  );
}

/**
 * Verifies a signed request from a `kind` principal: known and not deleted, Ed25519 signature over
 * the canonical string, timestamp within 300 s. The nonce is claimed by the handler's write (or
 * here, for handlers that write nothing), so a replay changes nothing and is answered 401.
 */
export function signedBy(kind: "bes" | "agent"): MiddlewareHandler<AppEnv> {
  return declare({ kind: "signed", principal: kind }, async (c, next) => {
    const { kv, clock } = c.get("deps");
    // The principal header is not signed: accept only its exact canonical form, so it cannot be
    // decorated (e.g. `bes:<id>:x`) to mint fresh nonce keys for a replay.
    const match = PRINCIPAL_HEADER.exec(c.req.header(SIGNATURE_HEADERS.principal) ?? "");
    if (!match || match[1] !== kind) unauthorized(`Missing or malformed ${SIGNATURE_HEADERS.principal}`);
    const id = match[2];
    // The entry read here is the one the heartbeat's write is checked against (no second read); reads of
    // concurrent requests share one getMany (domain/group_read.ts).
    const reader = groupReader(kv);
    const entry = kind === "bes"
      ? await reader.get<Engine>(engineKey(id))
      : await reader.get<Host>(hostKey(id));
    if (kind === "bes") c.set("engineEntry", entry as Deno.KvEntryMaybe<Engine>);
    else c.set("hostEntry", entry as Deno.KvEntryMaybe<Host>);
    const record = entry.value;
    if (!record || (kind === "bes" && (record as { status: string }).status === "deleting")) {
      unauthorized("Unknown or deleted principal");
    }
    const body = new Uint8Array(await c.req.arrayBuffer());
    // The body validator parses this text (hono otherwise rebuilds a Response around the bytes to decode
    // them). Hono keeps promises in its body cache, though its type says values.
    (c.req.bodyCache as Record<string, unknown>).text = Promise.resolve(decoder.decode(body));
    const check = verifySignedRequest(
      cachedKey(record.publicKey),
      {
        method: c.req.method,
        pathAndQuery: pathAndQuery(c.req.url),
        timestamp: c.req.header(SIGNATURE_HEADERS.timestamp) ?? "",
        nonce: c.req.header(SIGNATURE_HEADERS.nonce) ?? "",
        signature: c.req.header(SIGNATURE_HEADERS.signature) ?? "",
      },
      body,
      clock(),
    );
    if (!check.ok) refuseSignature(check.reason, "Bad signature");
    const nonceKey = principalNonceKey(kind, id, c.req.header(SIGNATURE_HEADERS.nonce)!);
    c.set("principal", { kind, id, nonceKey });
    await next();
  });
}

/**
 * The answer to a registration not signed by the key it registers — and, word for word, to one whose
 * key is registered in another tenant, so that a secret holder cannot probe other tenants for keys.
 */
const REGISTRATION_REFUSED =
  "The request is not signed by the key it registers, or that key cannot be registered with this secret";

/**
 * Registration and enrollment: a Bearer org (or, for a BES, account) secret **and** proof of
 * possession of the key being registered — the request signed (X-Cadres-* headers, principal
 * `bes:register` / `agent:enroll`) by the private key of the body's `publicKey`, within 300 s. Its
 * nonce is claimed by the registration's write (401 on replay). Failures are rate-limited per IP:
 * every answer 401 (bad secret, bad or missing signature, replay, key of another tenant) counts once it
 * is given, and an address with REGISTRATION_MAX_FAILURES of them in the window is answered 429. Attempts
 * in flight count nothing, so many agents behind one NAT can enroll at once.
 */
export function registrationSecret(kind: "bes" | "agent"): MiddlewareHandler<AppEnv> {
  return declare({ kind: "registration" }, async (c, next) => {
    const { kv, clock } = c.get("deps");
    const now = clock();
    const ip = clientIp(c);
    const retryAfter = await registrationRetryAfter(kv, ip, now);
    if (retryAfter !== null) {
      c.header("Retry-After", String(retryAfter));
      throw new HttpError(
        429,
        "rate_limited",
        "Too many failed registrations from this address; try again later",
      );
    }
    try {
      const authz = c.req.header("authorization") ?? "";
      const tenant = authz.startsWith("Bearer ")
        ? await resolveRegistrationSecret(kv, authz.slice(7).trim())
        : null;
      if (!tenant) unauthorized("Missing or unknown registration secret");
      c.set("tenant", tenant);
      const proof = await possessionProof(c, kind, now);
      if (proof) c.set("registration", proof);
      await next();
    } catch (error) {
      if (error instanceof HttpError && error.status === 401) await recordRegistrationFailure(kv, ip, now);
      throw error;
    }
    // Errors thrown further in (the handler's) have been turned into the response by now (app.onError).
    if (c.res.status === 401) await recordRegistrationFailure(kv, ip, now);
  });
}

/**
 * Verifies that the request is signed by the private key of its body's `publicKey`. Throws 401 for
 * missing signature headers or a malformed, stale or wrong signature. Returns the key and the nonce
 * to claim, or null when the body names no valid key (not JSON, or a malformed key: the body validator
 * then answers 400 or 422, and `provenRegistration` refuses anything unproven).
 */
async function possessionProof(c: Context<AppEnv>, kind: "bes" | "agent", now: Date) {
  const header = (name: string) => c.req.header(name) ?? "";
  if (Object.values(SIGNATURE_HEADERS).some((name) => !header(name))) {
    unauthorized(
      `Registration must be signed with the private key of publicKey (X-Cadres-Principal: ${
        REGISTRATION_PRINCIPAL[kind]
      }, X-Cadres-Timestamp, X-Cadres-Nonce, X-Cadres-Signature)`,
    );
  }
  if (header(SIGNATURE_HEADERS.principal) !== REGISTRATION_PRINCIPAL[kind]) {
    unauthorized(`${SIGNATURE_HEADERS.principal} must be ${REGISTRATION_PRINCIPAL[kind]} on this route`);
  }
  const body = new Uint8Array(await c.req.arrayBuffer());
  let key: PublicKey;
  let publicKey: unknown;
  try {
    publicKey = JSON.parse(new TextDecoder().decode(body))?.publicKey;
    if (typeof publicKey !== "string") return null;
    key = importPublicKey(publicKey);
  } catch {
    return null;
  }
  const url = new URL(c.req.url);
  const check = verifySignedRequest(
    key,
    {
      method: c.req.method,
      pathAndQuery: url.pathname + url.search,
      timestamp: header(SIGNATURE_HEADERS.timestamp),
      nonce: header(SIGNATURE_HEADERS.nonce),
      signature: header(SIGNATURE_HEADERS.signature),
    },
    body,
    now,
  );
  if (!check.ok) refuseSignature(check.reason, REGISTRATION_REFUSED);
  return {
    publicKey,
    nonce: {
      key: registrationNonceKey(kind, publicKey, header(SIGNATURE_HEADERS.nonce)),
      expireIn: NONCE_TTL_MS,
    },
  };
}

/**
 * The tenant and the nonce of a registration whose signature proved possession of `publicKey` (the
 * validated body's). Anything else is refused, so an unproven body can never reach the write.
 */
function provenRegistration(c: Context<AppEnv>, publicKey: string) {
  const proof = c.get("registration");
  if (!proof || proof.publicKey !== publicKey) unauthorized(REGISTRATION_REFUSED);
  return { tenant: c.get("tenant")!, nonce: proof.nonce };
}

/**
 * A principal deleted after its signature was checked (while its heartbeat waited for a commit) is
 * refused like one deleted before: 401, nothing written.
 */
function refuseDeleted(e: unknown): never {
  if (e instanceof NotFoundError) unauthorized("Unknown or deleted principal");
  throw e;
}

/** A key registered in another tenant is refused exactly like a bad signature (no probing). */
function refuseForeignKey(e: unknown): never {
  if (e instanceof KeyInAnotherTenantError) unauthorized(REGISTRATION_REFUSED);
  throw e;
}

export const json = <T extends z.ZodTypeAny>(schema: T) => ({ "application/json": { schema } });
/** A required JSON request body. */
export const jsonBody = <T extends z.ZodTypeAny>(schema: T) => ({ content: json(schema), required: true });
/** A JSON response. */
export const reply = <T extends z.ZodTypeAny>(description: string, schema: T) => ({
  description,
  content: json(schema),
});
/** An error response (`ErrorBody`). */
export const failure = (description: string) => reply(description, ErrorBody);

export const errorResponses = {
  400: failure("Malformed JSON"),
  401: failure(
    "Bad or missing secret/signature, skew > 300 s, replayed nonce, unknown or deleted principal",
  ),
  413: failure("Body larger than 64 KiB"),
  422: failure("Invalid fields"),
} as const;

export const TAGS = ["Engine protocol v1"];

/** The shared part of a route authenticated by a registration secret and signed by the registered key. */
const registrationRoute = (kind: "bes" | "agent") => ({
  method: "post" as const,
  tags: TAGS,
  security: [{ registrationSecret: [], engineSignature: [] }],
  middleware: [registrationSecret(kind)],
});

/** The shared part of a route signed by a `kind` principal. */
export const signedRoute = (kind: "bes" | "agent") => ({
  method: "post" as const,
  tags: TAGS,
  security: [{ engineSignature: [] }],
  middleware: [signedBy(kind)],
});

export const signedHeaders = z.object({
  "x-cadres-principal": z.string().openapi({ description: "`bes:<id>` or `agent:<id>`" }),
  "x-cadres-timestamp": z.string().openapi({ description: "Unix seconds" }),
  "x-cadres-nonce": z.string().openapi({ description: "Random, ≥ 16 bytes, base64url" }),
  "x-cadres-signature": z.string().openapi({
    description: "base64url Ed25519 signature of the canonical string",
  }),
});

/** The signature headers of a registration: signed by the private key of the body's `publicKey`. */
const registrationHeaders = (kind: "bes" | "agent") =>
  signedHeaders.extend({
    "x-cadres-principal": z.string().openapi({ description: `Exactly \`${REGISTRATION_PRINCIPAL[kind]}\`` }),
    "x-cadres-signature": z.string().openapi({
      description: "base64url Ed25519 signature of the canonical string by the private key of `publicKey`",
    }),
  });

const HeartbeatReply = z.object({
  status: z.string(),
  serverTime: z.string(),
  pendingJobs: z.number().int(),
  storageTargetIds: z.array(z.string()).optional().openapi({
    description: "BES only: the storage targets configured on this engine, to report capacity for",
  }),
}).openapi("HeartbeatReply");

/** The engine protocol's answer to invalid input: 422 naming each field (shared by its routers). */
export const protocolHook: ConstructorParameters<typeof OpenAPIHono<AppEnv>>[0] = {
  defaultHook: (result, c) => {
    if (!result.success) {
      const fields: Record<string, string> = {};
      for (const issue of result.error.issues) fields[issue.path.join(".") || "body"] ??= issue.message;
      return c.json({ error: { code: "invalid", message: "The request is invalid", fields } }, 422);
    }
  },
};

export const engineProtocol = new OpenAPIHono<AppEnv>(protocolHook);

/**
 * Declares a signed route whose signature headers are documented (OpenAPI) but not validated again: `signedBy`
 * has already refused any request whose four headers are missing or malformed (401), so the zod validator
 * of all the request's headers would only repeat it on every heartbeat. The body is validated as usual.
 */
function openapiSigned<R extends RouteConfig>(route: R, handler: RouteHandler<R, AppEnv>) {
  const { middleware: _middleware, ...documented } = route;
  engineProtocol.openAPIRegistry.registerPath(documented);
  const { headers: _headers, ...request } = route.request ?? {};
  engineProtocol.openapi({ ...route, hide: true, request } as R, handler);
}

const Registered = z.object({
  id: z.string(),
  status: z.string(),
  heartbeatIntervalSeconds: z.number(),
  tokenPublicKey: z.string().openapi({
    description:
      "The control plane's Ed25519 public key (base64url, raw 32 bytes): data tokens are signed by it",
  }),
});

engineProtocol.openapi(
  createRoute({
    ...registrationRoute("bes"),
    path: "/api/bes/v1/register",
    summary:
      "Register a BES with an org or account secret, signed by the key it registers (idempotent per public key)",
    request: { headers: registrationHeaders("bes"), body: jsonBody(BesRegistration) },
    responses: {
      200: reply("Already registered: same id, details refreshed", Registered),
      201: reply("Registered (status pending until the first heartbeat)", Registered),
      409: failure("The engine of this key is being deleted"),
      ...errorResponses,
    },
  }),
  async (c) => {
    const input = c.req.valid("json");
    const { tenant, nonce } = provenRegistration(c, input.publicKey);
    const { kv, clock } = c.get("deps");
    const { engine, created } = await registerEngine(kv, tenant, input, clock(), { nonce })
      .catch(refuseForeignKey);
    const body = {
      id: engine.id,
      status: engine.status,
      heartbeatIntervalSeconds: HEARTBEAT_INTERVAL_SECONDS,
      tokenPublicKey: await tokenPublicKey(kv, c.get("deps").masterKey, clock()),
    };
    return created ? c.json(body, 201) : c.json(body, 200);
  },
);

openapiSigned(
  createRoute({
    ...signedRoute("bes"),
    path: "/api/bes/v1/heartbeat",
    summary: "BES heartbeat: health metrics and storage capacity",
    request: { headers: signedHeaders, body: jsonBody(BesHeartbeat) },
    responses: { 200: reply("Accepted", HeartbeatReply), ...errorResponses },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const principal = c.get("principal")!;
    const now = clock();
    const input = c.req.valid("json");
    const { engine, replayed } = await applyHeartbeat(kv, principal.id, input, now, {
      nonce: { key: principal.nonceKey, expireIn: NONCE_TTL_MS },
      entry: c.get("engineEntry"),
      parsed: true,
    }).catch(refuseDeleted);
    if (replayed) unauthorized("Replayed nonce");
    // Capacity goes in its own bounded writes after the heartbeat claimed the nonce (up to 200 reports).
    if (input.storage?.length) await applyCapacityReports(kv, engine.id, input.storage, now);
    return c.json({
      status: engine.status,
      serverTime: now.toISOString(),
      pendingJobs: await queuedCount(kv, `bes:${engine.id}`),
      storageTargetIds: engine.storageTargetIds,
    }, 200);
  },
);

const Enrolled = z.object({ id: z.string(), heartbeatIntervalSeconds: z.number() });

engineProtocol.openapi(
  createRoute({
    ...registrationRoute("agent"),
    path: "/api/agent/v1/enroll",
    summary:
      "Enroll a host agent with an org secret, signed by the key it enrolls (idempotent per public key)",
    request: { headers: registrationHeaders("agent"), body: jsonBody(AgentEnrollment) },
    responses: {
      200: reply("Already enrolled", Enrolled),
      201: reply("Enrolled", Enrolled),
      403: failure("Agents enroll with an org secret only"),
      409: failure("A concurrent enrollment of the same key kept winning; retry"),
      ...errorResponses,
    },
  }),
  async (c) => {
    const input = c.req.valid("json");
    const { tenant, nonce } = provenRegistration(c, input.publicKey);
    if (!tenant.orgId) {
      throw new HttpError(
        403,
        "forbidden",
        "Agents enroll with an organization secret, not the account secret",
      );
    }
    const { kv, clock } = c.get("deps");
    const { host, created } = await enrollHost(
      kv,
      { accountId: tenant.accountId, orgId: tenant.orgId },
      input,
      clock(),
      { nonce },
    ).catch(refuseForeignKey);
    const body = { id: host.id, heartbeatIntervalSeconds: HEARTBEAT_INTERVAL_SECONDS };
    return created ? c.json(body, 201) : c.json(body, 200);
  },
);

openapiSigned(
  createRoute({
    ...signedRoute("agent"),
    path: "/api/agent/v1/heartbeat",
    summary: "Agent heartbeat",
    request: { headers: signedHeaders, body: jsonBody(AgentHeartbeat) },
    responses: { 200: reply("Accepted", HeartbeatReply), ...errorResponses },
  }),
  async (c) => {
    const { kv, clock } = c.get("deps");
    const principal = c.get("principal")!;
    const now = clock();
    const { host, replayed } = await applyHostHeartbeat(kv, principal.id, c.req.valid("json"), now, {
      key: principal.nonceKey,
      expireIn: NONCE_TTL_MS,
    }, { entry: c.get("hostEntry"), parsed: true }).catch(refuseDeleted);
    if (replayed) unauthorized("Replayed nonce");
    return c.json({
      status: host.status,
      serverTime: now.toISOString(),
      pendingJobs: await queuedCount(kv, `agent:${host.id}`),
    }, 200);
  },
);

const PrePatchBody = z.object({
  reason: z.string().trim().max(200, "must be at most 200 characters").optional(),
}).strict();

engineProtocol.openapi(
  createRoute({
    ...signedRoute("agent"),
    path: "/api/agent/v1/pre-patch",
    summary: "Agent is about to patch the OS: queue a pre-patch incremental for policies that opt in",
    request: { headers: signedHeaders, body: jsonBody(PrePatchBody) },
    responses: {
      202: reply(
        "Runs queued (empty when no active policy of this host has pre-patch backup on)",
        z.object({
          runs: z.array(z.object({ id: z.string(), policyId: z.string(), jobId: z.string().nullable() })),
        }),
      ),
      ...errorResponses,
    },
  }),
  async (c) => {
    const { kv, principal, now } = await claimed(c);
    const runs = await requestPrePatch(kv, principal.id, now);
    return c.json({ runs: runs.map((r) => ({ id: r.id, policyId: r.policyId, jobId: r.jobId })) }, 202);
  },
);

/** The verified principal of a signed request, with its nonce claimed (401 on replay) at `now`. */
async function claimed(c: Pick<Context<AppEnv>, "get">) {
  const { kv, clock } = c.get("deps");
  const principal = c.get("principal")!;
  const now = clock();
  if (!(await claimNonce(kv, principal.nonceKey, now))) unauthorized("Replayed nonce");
  return { kv, principal, now, owner: `${principal.kind}:${principal.id}` };
}

/** The Retry-After, in seconds, of a 503 `busy`. */
export const BUSY_RETRY_AFTER_SECONDS = 1;

/**
 * Runs the work of a job report (progress, key, part, result). A CommitConflictError — every commit lost
 * its race against concurrent writers: transient, and the step that threw wrote nothing — is answered 503
 * `busy` with Retry-After, so the engine sends the report again (newly signed) instead of taking it as
 * final like a 409 (the job is no longer its, or a different result exists). A result re-sent after it was
 * recorded is answered `{ applied: false }` and its outcome applied (idempotent), never applied twice.
 */
async function busyOnCommitConflict<T>(c: Context<AppEnv>, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (e) {
    if (!(e instanceof CommitConflictError)) throw e;
    c.get("deps").logger.log("warn", "commit conflict; answered busy", {
      requestId: c.get("requestId"),
      route: c.req.routePath,
      principal: `${c.get("principal")?.kind}:${c.get("principal")?.id}`,
      tries: e.tries,
    });
    c.header("Retry-After", String(BUSY_RETRY_AFTER_SECONDS));
    throw new HttpError(503, "busy", `${e.message} (send the request again, newly signed)`);
  }
}

/** The 503 of a job report whose commit lost every race (see `busyOnCommitConflict`). */
const busy = failure(
  "`busy`: a concurrent change won every commit try (transient; Retry-After says when): send the request again, newly signed — a result already recorded is answered `applied: false`",
);

const ClaimBody = z.object({ max: z.number().int().min(1, "must be 1–50").max(50, "must be 1–50") });
const JobParam = z.object({ id: z.string().regex(/^[0-9A-Z]{26}$/, "must be a job id") });
/** The data tokens of a job (claim and progress replies). */
const DataTokens = {
  dataToken: z.string().nullable().openapi({
    description: "Job-scoped data token for the BES data API (null when the job touches no repository)",
  }),
  dataTokenExpiresAt: z.string().nullable(),
  replicaDataToken: z.string().nullable().openapi({
    description: "replicate to a target on another BES: a write token for that BES's data API",
  }),
};
const ClaimedJob = z.object({
  id: z.string(),
  kind: z.string(),
  priority: z.enum(["critical", "high", "normal"]),
  payload: z.record(z.string(), z.unknown()).openapi({
    description:
      "Kind-specific; an agent's `bes` carries its BES's `dataUrl` and `certificate` (PEM) to pin, a replicate's `target.bes` the replica BES's",
  }),
  leaseExpiresAt: z.string(),
  ...DataTokens,
}).openapi("ClaimedJob");
const noSuchJob = failure("No such job for this principal");
const KeyRequest = z.object({}).strict().openapi({ description: "An empty JSON object `{}`" });
const JobKeys = z.object({
  jobId: z.string(),
  keySetId: z.string().openapi({ description: "Names the key set (not secret)" }),
  namespace: z.string().openapi({ description: "The host id whose namespace the keys open" }),
  repository: z.object({ target: z.string(), path: z.string(), generation: z.number().int() }),
  dataKey: z.string().openapi({ description: "base64 of the 32-byte data key (blob encryption)" }),
  idKey: z.string().openapi({ description: "base64 of the 32-byte id key (keyed chunk ids)" }),
  recovery: z.object({
    keyId: z.string(),
    algorithm: z.string(),
    additionalData: z.string(),
    encryptedKey: z.string(),
    nonce: z.string(),
    ciphertext: z.string(),
  }).nullable().openapi({
    description:
      "The same keys sealed for the account's recovery public key (base64 parts), for the BES to write into the repository's keys/; null before an administrator created the recovery key",
  }),
  recoveryPublicKey: z.string().nullable().openapi({
    description:
      "The account's recovery public key (SPKI PEM), null before an administrator created it: the engine writes the key object wrapping these keys for it into the repository's keys/ (repository-format.md, Keys)",
  }),
}).openapi("JobKeys");

for (const kind of ["bes", "agent"] as const) {
  engineProtocol.openapi(
    createRoute({
      ...signedRoute(kind),
      path: `/api/${kind}/v1/jobs/claim`,
      summary: `Claim up to max jobs for this ${kind === "bes" ? "BES" : "agent"}, highest priority first`,
      request: { headers: signedHeaders, body: jsonBody(ClaimBody) },
      responses: {
        200: reply("Leased jobs", z.object({ jobs: z.array(ClaimedJob) })),
        ...errorResponses,
      },
    }),
    async (c) => {
      const { kv, owner, now } = await claimed(c);
      const { masterKey, metrics } = c.get("deps");
      const started = performance.now();
      const jobs = await claimJobs(kv, owner, c.req.valid("json").max, now);
      metrics.observeClaim(kind, (performance.now() - started) / 1000, jobs.length);
      const engines = new Map();
      return c.json({
        jobs: await Promise.all(jobs.map(async (j) => ({
          id: j.id,
          kind: j.kind,
          priority: j.priority,
          leaseExpiresAt: j.leaseExpiresAt!,
          ...await handOutJob(kv, masterKey, j, owner, now, engines),
        }))),
      }, 200);
    },
  );

  engineProtocol.openapi(
    createRoute({
      ...signedRoute(kind),
      path: `/api/${kind}/v1/jobs/{id}/progress`,
      summary: "Report progress; renews the lease and says whether to cancel",
      request: { headers: signedHeaders, params: JobParam, body: jsonBody(ProgressInput) },
      responses: {
        200: reply(
          "Lease renewed, with fresh data tokens (none once cancel is true)",
          z.object({ leaseExpiresAt: z.string(), cancel: z.boolean(), ...DataTokens }),
        ),
        404: noSuchJob,
        409: failure("Lease expired or job ended"),
        ...errorResponses,
        503: busy,
      },
    }),
    async (c) => {
      const { kv, owner, now } = await claimed(c);
      const id = c.req.valid("param").id;
      return await busyOnCommitConflict(c, async () => {
        const reply = await reportProgress(kv, owner, id, c.req.valid("json"), now);
        const tokens = await progressDataAccess(kv, c.get("deps").masterKey, owner, id, now);
        return c.json({ ...reply, ...tokens }, 200);
      });
    },
  );

  engineProtocol.openapi(
    createRoute({
      ...signedRoute(kind),
      path: `/api/${kind}/v1/jobs/{id}/key`,
      summary:
        "The keys of the one namespace this job needs, for its holder while it runs (never stored with the job)",
      request: { headers: signedHeaders, params: JobParam, body: jsonBody(KeyRequest) },
      responses: {
        200: reply("The namespace's keys (Cache-Control: no-store)", JobKeys),
        403: failure("`no_keys_for_job`: this kind of job needs no keys (prune, health check)"),
        404: failure("`not_found`: no such job for this principal"),
        409: failure(
          "`job_not_running` (not leased to you, lease expired, ended), `job_cancelled`, or `repository_unknown`",
        ),
        ...errorResponses,
        503: busy,
      },
    }),
    async (c) => {
      const { kv, clock, masterKey } = c.get("deps");
      const principal = c.get("principal")!;
      const keys = await busyOnCommitConflict(c, () =>
        deliverJobKeys(
          kv,
          masterKey,
          `${principal.kind}:${principal.id}`,
          c.req.valid("param").id,
          { key: principal.nonceKey, expireIn: NONCE_TTL_MS },
          clock(),
        ));
      c.header("Cache-Control", "no-store");
      const b64 = (bytes: Uint8Array) => bytes.toBase64();
      const body = {
        jobId: keys.jobId,
        keySetId: keys.keySetId,
        namespace: keys.namespace,
        repository: keys.repository,
        dataKey: b64(keys.dataKey),
        idKey: b64(keys.idKey),
        recovery: keys.recovery && {
          keyId: keys.recovery.keyId,
          algorithm: keys.recovery.algorithm,
          additionalData: keys.recovery.additionalData,
          encryptedKey: b64(keys.recovery.encryptedKey),
          nonce: b64(keys.recovery.nonce),
          ciphertext: b64(keys.recovery.ciphertext),
        },
        recoveryPublicKey: keys.recoveryPublicKey,
      };
      keys.dataKey.fill(0);
      keys.idKey.fill(0);
      return c.json(body, 200);
    },
  );

  engineProtocol.openapi(
    createRoute({
      ...signedRoute(kind),
      path: `/api/${kind}/v1/jobs/{id}/parts`,
      summary: "Upload one part of a long result list (browse entries, search matches, per-file errors) " +
        "before the result; the result names how many parts each list has",
      request: { headers: signedHeaders, params: JobParam, body: jsonBody(PartInput) },
      responses: {
        200: reply(
          "Stored (sending the same part again replaces it)",
          z.object({ list: z.enum(RESULT_LISTS), part: z.number().int(), items: z.number().int() }),
        ),
        404: noSuchJob,
        409: failure("The result is already recorded, or the lease expired"),
        ...errorResponses,
        413: failure("Body larger than 64 KiB, or the part too large to keep once validated"),
        503: busy,
      },
    }),
    async (c) => {
      const { kv, owner, now } = await claimed(c);
      const stored = await busyOnCommitConflict(
        c,
        () => storeResultPart(kv, owner, c.req.valid("param").id, c.req.valid("json"), now),
      );
      return c.json(stored, 200);
    },
  );

  engineProtocol.openapi(
    createRoute({
      ...signedRoute(kind),
      path: `/api/${kind}/v1/jobs/{id}/result`,
      summary: "Post a job's result; applied once (a duplicate is a no-op, a different one is refused)",
      request: { headers: signedHeaders, params: JobParam, body: jsonBody(ResultInput) },
      responses: {
        200: reply("Recorded", z.object({ applied: z.boolean() })),
        404: noSuchJob,
        409: failure("A different result exists, or the lease expired (final: the job is no longer yours)"),
        ...errorResponses,
        422: failure("Invalid fields, or a part named in `parts` is missing (`parts.<list>`)"),
        503: busy,
      },
    }),
    async (c) => {
      const { kv, owner, now } = await claimed(c);
      return await busyOnCommitConflict(c, async () => {
        const { applied, job } = await applyResult(
          kv,
          owner,
          c.req.valid("param").id,
          c.req.valid("json"),
          now,
        );
        // A duplicate post still applies the outcome (idempotent): the process may have stopped after
        // recording the result and before its run, restore point or state caught up — or the outcome's
        // commit lost its races (503 `busy`) after the result was recorded.
        await applyJobOutcome(kv, job, now);
        return c.json({ applied }, 200);
      });
    },
  );
}

engineProtocol.openapi(
  createRoute({
    ...signedRoute("agent"),
    path: "/api/agent/v1/jobs/{id}/paths",
    summary: "One chunk of a file restore's path list (payloads with pathChunks > 0 carry no paths inline)",
    request: {
      headers: signedHeaders,
      params: JobParam,
      body: jsonBody(z.object({ chunk: z.number().int().min(0, "must be 0 or more") })),
    },
    responses: {
      200: reply(
        "The chunk's paths, in selection order",
        z.object({ chunk: z.number().int(), chunks: z.number().int(), paths: z.array(z.string()) }),
      ),
      404: failure("No such file restore job for this agent, or no such chunk"),
      ...errorResponses,
    },
  }),
  async (c) => {
    const { kv, owner } = await claimed(c);
    const reply = await restorePathsChunk(kv, owner, c.req.valid("param").id, c.req.valid("json").chunk);
    return c.json(reply, 200);
  },
);

engineProtocol.openapi(
  createRoute({
    ...signedRoute("bes"),
    path: "/api/bes/v1/bmr/redeem",
    summary: "Redeem a bare-metal restore token once (a machine booted through this BES presented it)",
    request: { headers: signedHeaders, body: jsonBody(z.object({ token: BmrTokenInput })) },
    responses: {
      200: reply(
        "Redeemed: the restore it belongs to (restore the point's image onto the machine)",
        z.object({ restoreId: z.string(), restorePointId: z.string(), mode: z.enum(["pxe", "iso"]) }),
      ),
      404: failure("Unknown token, or a token of another BES"),
      409: failure("The token was already used, or has expired (4 hours after it was issued)"),
      ...errorResponses,
    },
  }),
  async (c) => {
    const { kv, principal, now } = await claimed(c);
    return c.json(await redeemBmrToken(kv, principal.id, c.req.valid("json").token, now), 200);
  },
);
