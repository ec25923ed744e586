/**
 * Engine protocol v1 (DESIGN.md §5) for BES and agents: registration/enrollment with a secret, then
 * Ed25519-signed requests. Declared with zod so the protocol is part of `/api/openapi.json`; the
 * worked example is in docs/engine-protocol.md. This module holds what every protocol route shares — the
 * signature and registration-secret middlewares, the nonce claim, the declaration helpers; the routes are in
 * one file per resource: engine_registration.ts, engine_heartbeats.ts, engine_pre_patch.ts, engine_jobs.ts,
 * engine_bmr.ts, engine_targets.ts (mounted in app.ts).
 */
import { OpenAPIHono, type RouteConfig, type RouteHandler, z } from "@hono/zod-openapi";
import type { Context, MiddlewareHandler } from "hono";
import { KeyInAnotherTenantError } from "../domain/engines.ts";
import { type Engine, engineKey } from "../domain/engines.ts";
import { HttpError, NotFoundError } from "../domain/errors.ts";
import { groupReader } from "../domain/group_read.ts";
import { type Host, hostKey } from "../domain/hosts.ts";
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
import { resolveRegistrationSecret } from "../domain/tenancy.ts";
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

export function unauthorized(message: string): never {
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
export function provenRegistration(c: Context<AppEnv>, publicKey: string) {
  const proof = c.get("registration");
  if (!proof || proof.publicKey !== publicKey) unauthorized(REGISTRATION_REFUSED);
  return { tenant: c.get("tenant")!, nonce: proof.nonce };
}

/**
 * A principal deleted after its signature was checked (while its heartbeat waited for a commit) is
 * refused like one deleted before: 401, nothing written.
 */
export function refuseDeleted(e: unknown): never {
  if (e instanceof NotFoundError) unauthorized("Unknown or deleted principal");
  throw e;
}

/** A key registered in another tenant is refused exactly like a bad signature (no probing). */
export function refuseForeignKey(e: unknown): never {
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
export const registrationRoute = (kind: "bes" | "agent") => ({
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
export const registrationHeaders = (kind: "bes" | "agent") =>
  signedHeaders.extend({
    "x-cadres-principal": z.string().openapi({ description: `Exactly \`${REGISTRATION_PRINCIPAL[kind]}\`` }),
    "x-cadres-signature": z.string().openapi({
      description: "base64url Ed25519 signature of the canonical string by the private key of `publicKey`",
    }),
  });

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

/**
 * Declares a signed route whose signature headers are documented (OpenAPI) but not validated again: `signedBy`
 * has already refused any request whose four headers are missing or malformed (401), so the zod validator
 * of all the request's headers would only repeat it on every heartbeat. The body is validated as usual.
 */
export function openapiSigned<R extends RouteConfig>(
  router: OpenAPIHono<AppEnv>,
  route: R,
  handler: RouteHandler<R, AppEnv>,
) {
  const { middleware: _middleware, ...documented } = route;
  router.openAPIRegistry.registerPath(documented);
  const { headers: _headers, ...request } = route.request ?? {};
  router.openapi({ ...route, hide: true, request } as R, handler);
}

/** The verified principal of a signed request, with its nonce claimed (401 on replay) at `now`. */
export async function claimed(c: Pick<Context<AppEnv>, "get">) {
  const { kv, clock } = c.get("deps");
  const principal = c.get("principal")!;
  const now = clock();
  if (!(await claimNonce(kv, principal.nonceKey, now))) unauthorized("Replayed nonce");
  return { kv, principal, now, owner: `${principal.kind}:${principal.id}` };
}
