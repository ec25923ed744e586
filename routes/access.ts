/**
 * Route access declarations. Every endpoint carries exactly one `access(...)` middleware; the
 * permission-matrix test reads them back from `app.routes` and fails on a route without one.
 */
import type { Context, MiddlewareHandler } from "hono";
import { ForbiddenError, UnauthorizedError } from "../domain/errors.ts";
import type { Permission } from "../domain/types.ts";
import type { AppEnv } from "./env.ts";

export type AccessSpec =
  | { kind: "public" }
  | { kind: "signed_in" }
  | { kind: "permission"; permission: Permission }
  /** Engine protocol: `Authorization: Bearer <org or account secret>` (registration, enrollment). */
  | { kind: "registration" }
  /** Engine protocol: an Ed25519-signed request from a registered BES or agent. */
  | { kind: "signed"; principal: "bes" | "agent" };

const registry = new WeakMap<object, AccessSpec>();

/** Returns the access spec a handler declares, if it is an access middleware. */
export function accessOf(handler: unknown): AccessSpec | undefined {
  return typeof handler === "function" ? registry.get(handler) : undefined;
}

/** True when the request is for the JSON API (errors as JSON, 401 instead of a login redirect). */
export function wantsJson(c: Context): boolean {
  return (c.req.path.startsWith("/api/") && !c.req.path.startsWith("/api/docs")) || c.req.path === "/metrics";
}

/** True for the engine protocol, which uses no cookies (so no session and no CSRF token). */
export function isEngineProtocol(path: string): boolean {
  return path.startsWith("/api/bes/") || path.startsWith("/api/agent/");
}

/** Registers a middleware as the access declaration of its route (used by the protocol routes). */
export function declare(spec: AccessSpec, handler: MiddlewareHandler<AppEnv>): MiddlewareHandler<AppEnv> {
  registry.set(handler, spec);
  return handler;
}

/** Anyone, signed in or not. */
export function publicAccess(): MiddlewareHandler<AppEnv> {
  return declare({ kind: "public" }, async (_c, next) => {
    await next();
  });
}

/** Any signed-in user or API token. */
export function signedIn(): MiddlewareHandler<AppEnv> {
  return declare({ kind: "signed_in" }, async (c, next) => {
    if (!c.get("actor")) throw new UnauthorizedError("Sign in to continue");
    await next();
  });
}

/** A signed-in actor holding `permission`. Object scope is then checked by the domain. */
export function requires(permission: Permission): MiddlewareHandler<AppEnv> {
  return declare({ kind: "permission", permission }, async (c, next) => {
    const actor = c.get("actor");
    if (!actor) throw new UnauthorizedError("Sign in to continue");
    if (!actor.permissions.has(permission)) {
      throw new ForbiddenError(`This page needs the ${permission} permission, which your role does not have`);
    }
    await next();
  });
}
