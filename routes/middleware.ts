/** App-wide middleware: request id + JSON request log, authentication, CSRF, security headers. */
import { trace } from "@opentelemetry/api";
import type { Context, MiddlewareHandler } from "hono";
import { getCookie, setCookie } from "hono/cookie";
import { secureHeaders } from "hono/secure-headers";
import { resolveApiToken } from "../domain/api_tokens.ts";
import { resolveSession, userActor } from "../domain/auth.ts";
import { HttpError } from "../domain/errors.ts";
import { randomToken, timingSafeEqual } from "../domain/ids.ts";
import { isEngineProtocol } from "./access.ts";
import { parseFormBody } from "./forms.ts";
import type { AppEnv, Deps } from "./env.ts";

export const SESSION_COOKIE = "cadres_session";
export const CSRF_COOKIE = "cadres_csrf";

/** The kind of principal a request acted as, for logs, metrics and traces. */
function principalKind(c: Context<AppEnv>): string {
  return c.get("principal")?.kind ?? c.get("actor")?.kind ?? "anonymous";
}

/**
 * Names the request's span (Deno's built-in OpenTelemetry, with OTEL_DENO=true; a no-op otherwise) after
 * the route pattern, adds the principal kind, and drops the query string: it may carry one-time tokens.
 */
function annotateSpan(c: Context<AppEnv>, route: string, principal: string): void {
  annotateRequestSpan(c.req.method, c.req.url, route, principal, c.get("requestId"));
}

/** `annotateSpan` for a request answered outside hono (the heartbeats' direct path). */
export function annotateRequestSpan(
  method: string,
  requestUrl: string,
  route: string,
  principal: string,
  requestId: string,
): void {
  const span = trace.getActiveSpan();
  if (!span) return;
  const url = new URL(requestUrl);
  span.updateName(`${method} ${route}`);
  span.setAttributes({
    "http.route": route,
    "cadres.principal.kind": principal,
    "cadres.request_id": requestId,
    "url.full": `${url.origin}${url.pathname}`,
    "url.query": "",
  });
}

/** The request id of a request: the client's `X-Request-Id` (cleaned, at most 64 characters) or a fresh one. */
export function requestIdFrom(header: string | null | undefined): string {
  return header?.slice(0, 64).replace(/[^\w.-]/g, "") || crypto.randomUUID();
}

/** Sets deps and a request id, then writes one JSON log line per request. */
export function requestContext(deps: Deps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const started = performance.now();
    const requestId = requestIdFrom(c.req.header("x-request-id"));
    c.set("deps", deps);
    c.set("requestId", requestId);
    c.set("actor", null);
    c.set("user", null);
    c.set("session", null);
    // Set before the response exists, so the response is built with it; setting a header on a finished
    // response makes hono copy the response (a cost on every request). A response the route built itself
    // (without the context's prepared headers) still gets it below.
    c.header("X-Request-Id", requestId);
    try {
      await next();
    } finally {
      if (!c.res.headers.has("X-Request-Id")) c.header("X-Request-Id", requestId);
      const actor = c.get("actor");
      const seconds = (performance.now() - started) / 1000;
      // The route pattern, never the raw URL: query strings may carry one-time tokens. A request no
      // route matched is "unmatched" (raw paths would make one series per scanner's guess).
      const route = c.req.routePath === "*" || c.req.routePath === "/*" ? "unmatched" : c.req.routePath;
      deps.metrics.observeRequest(c.req.method, route, c.res.status, seconds);
      annotateSpan(c, route, principalKind(c));
      deps.logger.log(c.res.status >= 500 ? "error" : "info", "request", {
        requestId,
        principal: actor ? `${actor.kind}:${actor.id}` : "anonymous",
        method: c.req.method,
        route,
        status: c.res.status,
        durationMs: Math.round(seconds * 100_000) / 100,
      });
    }
  };
}

/** The client address from Deno.serve's connection info (absent under `app.request`). */
export function clientIp(c: Context<AppEnv>): string {
  return c.env?.remoteAddr?.hostname ?? "unknown";
}

/** Resolves the session cookie or bearer token into `actor`. Bad bearer tokens are 401 on the API. */
export function authenticate(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (isEngineProtocol(c.req.path)) return await next();
    const { kv, clock } = c.get("deps");
    const authz = c.req.header("authorization");
    if (
      authz?.startsWith("Bearer ") &&
      (c.req.path.startsWith("/api/v1/") || c.req.path.startsWith("/api/health/") ||
        c.req.path === "/metrics")
    ) {
      c.set("actor", await resolveApiToken(kv, authz.slice(7).trim(), clock()));
      return await next();
    }
    const cookie = getCookie(c, SESSION_COOKIE);
    if (cookie) {
      const resolved = await resolveSession(kv, cookie, clock());
      if (resolved) {
        c.set("session", resolved.session);
        c.set("user", resolved.user);
        c.set("actor", userActor(resolved.user));
      }
    }
    await next();
  };
}

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/**
 * CSRF defence for every state-changing request that a browser could send with our cookies:
 * a foreign Origin or a cross-site fetch is refused, and the synchronizer token (form field `_csrf`
 * or header `X-CSRF-Token`) must match the session's (or, before sign-in, the `cadres_csrf` cookie).
 * Bearer-token API calls carry no ambient credentials and skip the token check.
 */
export function csrf(): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    if (isEngineProtocol(c.req.path)) return await next();
    const { config } = c.get("deps");
    const session = c.get("session");
    let token = session?.csrfToken ?? getCookie(c, CSRF_COOKIE) ?? "";
    if (!session && !token) {
      token = randomToken(24);
      setCookie(c, CSRF_COOKIE, token, {
        httpOnly: true,
        sameSite: "Lax",
        secure: config.secureCookies,
        path: "/",
      });
    }
    c.set("csrfToken", token);
    if (SAFE_METHODS.has(c.req.method)) return await next();
    if (c.get("actor")?.kind === "token") return await next();
    const origin = c.req.header("origin");
    const allowed = new Set([new URL(config.baseUrl).origin, new URL(c.req.url).origin]);
    if ((origin && origin !== "null" && !allowed.has(origin)) || origin === "null") {
      throw new HttpError(403, "csrf", "Cross-origin request refused");
    }
    if (c.req.header("sec-fetch-site") === "cross-site") {
      throw new HttpError(403, "csrf", "Cross-site request refused");
    }
    let sent = c.req.header("x-csrf-token") ?? "";
    if (!sent) {
      const type = c.req.header("content-type") ?? "";
      if (type.includes("application/x-www-form-urlencoded") || type.includes("multipart/form-data")) {
        const body = await parseFormBody(c);
        sent = typeof body._csrf === "string" ? body._csrf : "";
      }
    }
    if (!token || !sent || !timingSafeEqual(sent, token)) {
      throw new HttpError(
        403,
        "csrf",
        "The form has expired or did not come from this site; reload and try again",
      );
    }
    await next();
  };
}

/** Security headers with a CSP that allows no inline script (and no inline style). */
export function securityHeaders(deps: Deps): MiddlewareHandler<AppEnv> {
  return secureHeaders({
    contentSecurityPolicy: {
      defaultSrc: ["'self'"],
      scriptSrc: ["'self'"],
      styleSrc: ["'self'"],
      imgSrc: ["'self'", "data:"],
      connectSrc: ["'self'"],
      fontSrc: ["'self'"],
      objectSrc: ["'none'"],
      baseUri: ["'none'"],
      formAction: ["'self'"],
      frameAncestors: ["'none'"],
    },
    strictTransportSecurity: deps.config.secureCookies ? "max-age=31536000; includeSubDomains" : false,
    referrerPolicy: "same-origin",
    crossOriginEmbedderPolicy: false,
    xFrameOptions: "DENY",
  });
}
