/**
 * What every `/api/v1` JSON router shares: the error shape of DESIGN.md §5 and its response helper,
 * the id schema, and a router whose failed request validation answers 422 with the field errors.
 */
import { OpenAPIHono, type RouteConfig, z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { HttpError, ValidationError } from "../domain/errors.ts";
import type { AppEnv } from "./env.ts";
import { fieldErrors } from "./forms.ts";
import { strictInput } from "./api_strict.ts";

/** The error shape of DESIGN.md §5, used by every JSON endpoint. */
export const ErrorBody = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
    fields: z.record(z.string(), z.string()).optional(),
  }),
}).openapi("Error");

/** An error response (any status) with the shared error shape. */
export const err = (description: string) => ({
  description,
  content: { "application/json": { schema: ErrorBody } },
});

/** A JSON success response; the schema defaults to anything. */
export const ok = (description: string, schema: z.ZodType = z.any()) => ({
  description,
  content: { "application/json": { schema } },
});

/**
 * A required JSON request body validated by `schema` (`request: jsonBody(Schema)` or `{ params,
 * ...jsonBody(Schema) }`), with an example for the document when given (create bodies have one).
 */
export const jsonBody = <T extends z.ZodType>(schema: T, example?: z.input<T>) => ({
  body: {
    content: { "application/json": example === undefined ? { schema } : { schema, example } },
    required: true,
  },
});

/** A ULID, as every stored object's id. */
export const Id = z.string().regex(/^[0-9A-Z]{26}$/, "must be an id");

/** The usual refusals of a route on objects in scope (401, 403, 404), in the shared error shape. */
export const scopedErrors = {
  401: err("Not signed in or bad token"),
  403: err("Missing permission"),
  404: err("Not found or outside your scope"),
};

/** 401 and 403 of a route that needs a permission (no object in its path). */
export const denied = { 401: err("Not signed in or bad token"), 403: err("Missing permission") };

/** 401 and 403 of the restore routes (restore points, searches, restores). */
export const restoreDenied = {
  401: err("Not signed in or bad token"),
  403: err("Missing the backup.restore permission"),
};

/** The identity routes' (me, users, orgs, tokens, audit) error answers, by status. */
export const errors = {
  401: { description: "Not signed in or bad token", content: { "application/json": { schema: ErrorBody } } },
  403: {
    description: "Missing permission or CSRF failure",
    content: { "application/json": { schema: ErrorBody } },
  },
  404: {
    description: "Not found or outside your scope",
    content: { "application/json": { schema: ErrorBody } },
  },
  422: { description: "Invalid input", content: { "application/json": { schema: ErrorBody } } },
} as const;

/** The identity routes' refusals of a list or a create (`input`), of one object (`object`), of a change to it. */
export const identityErrors = {
  input: { 401: errors[401], 403: errors[403], 422: errors[422] },
  object: { 401: errors[401], 403: errors[403], 404: errors[404] },
  change: { 401: errors[401], 403: errors[403], 404: errors[404], 422: errors[422] },
};

/** A JSON answer of the identity routes (`ok` with the arguments the other way round). */
export const json = <T extends z.ZodType>(schema: T, description: string) => ({
  description,
  content: { "application/json": { schema } },
});

/** Offset paging of the identity lists (`offset`, `limit`). */
export const Paging = z.object({
  offset: z.coerce.number().int().min(0).default(0),
  limit: z.coerce.number().int().min(1).max(200).default(50),
});

/** A page of an offset-paged identity list; the cursor is the next offset. */
export const offsetPage = <T extends z.ZodType>(item: T) =>
  z.object({
    values: z.array(item),
    cursor: z.string().describe("Opaque; empty when there is no next page"),
  });

/**
 * An OpenAPIHono router whose failed request validation answers 422 with the per-field messages, and whose
 * routes' queries and JSON bodies are strict (`strictInput`): a field the schema does not declare is refused,
 * named (`"Unknown field"`), and nothing changes. The document is generated from the strict schemas too.
 */
export function apiRouter(): OpenAPIHono<AppEnv> {
  const router = new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) {
        return c.json({
          error: { code: "invalid", message: "The request is invalid", fields: fieldErrors(result.error) },
        }, 422);
      }
    },
  });
  const declare = router.openapi;
  router.openapi =
    ((route, handler, hook) => declare(strictRequest(route), handler, hook)) as typeof router.openapi;
  return router;
}

/**
 * `route` with its query and every JSON body schema strict; the rest as declared. A route that declares no
 * query takes none (`?orgId=…` on it is an unknown field, not a filter silently ignored), and a route that
 * declares no body refuses a JSON object with fields (`{"hostIds": […]}` sent to a retry that takes none).
 */
function strictRequest<R extends RouteConfig>(route: R): R {
  const request = route.request ?? {};
  const content = request.body?.content;
  const middleware = route.middleware === undefined
    ? []
    : Array.isArray(route.middleware)
    ? route.middleware
    : [route.middleware];
  return {
    ...route,
    middleware: content ? route.middleware : [...middleware, refuseUndeclaredBody],
    request: {
      ...request,
      query: request.query ? strictInput(request.query) : NO_QUERY,
      ...(content
        ? {
          body: {
            ...request.body,
            content: Object.fromEntries(
              Object.entries(content).map(([type, media]) => [
                type,
                media && "schema" in media && media.schema instanceof z.ZodType
                  ? { ...media, schema: strictInput(media.schema) }
                  : media,
              ]),
            ),
          },
        }
        : {}),
    },
  };
}

/** The query of a route that takes none: every parameter is unknown. */
const NO_QUERY = z.strictObject({});

/** For routes without a body: a JSON object with fields is refused, each field named (422). */
const refuseUndeclaredBody: MiddlewareHandler<AppEnv> = async (c, next) => {
  if (/^application\/(.+\+)?json\b/i.test(c.req.header("content-type") ?? "")) {
    const text = await c.req.text();
    let body: unknown = null;
    try {
      body = text.trim() ? JSON.parse(text) : null;
    } catch {
      throw new HttpError(400, "malformed", "The body is not valid JSON");
    }
    const keys = body && typeof body === "object" && !Array.isArray(body) ? Object.keys(body) : [];
    if (keys.length) {
      throw new ValidationError(
        `This request takes no body: ${keys.join(", ")} ${keys.length === 1 ? "is" : "are"} not understood`,
        Object.fromEntries(keys.map((key) => [key, "Unknown field"])),
      );
    }
  }
  await next();
};
