/**
 * What every `/api/v1` JSON router shares: the error shape of DESIGN.md §5 and its response helper,
 * the id schema, and a router whose failed request validation answers 422 with the field errors.
 */
import { OpenAPIHono, z } from "@hono/zod-openapi";
import type { AppEnv } from "./env.ts";
import { fieldErrors } from "./forms.ts";

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
 * A required JSON request body validated by `schema` (`request: jsonBody(Schema)` or
 * `{ params, ...jsonBody(Schema) }`); `example` is shown in the OpenAPI document (create bodies have one).
 */
export const jsonBody = <T extends z.ZodType>(schema: T, example?: unknown) => ({
  body: {
    content: { "application/json": { schema, ...(example === undefined ? {} : { example }) } },
    required: true,
  },
});

/** A ULID, as every stored object's id. */
export const Id = z.string().regex(/^[0-9A-Z]{26}$/, "must be an id");

/** An OpenAPIHono router whose failed request validation answers 422 with the per-field messages. */
export function apiRouter(): OpenAPIHono<AppEnv> {
  return new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) {
        return c.json({
          error: { code: "invalid", message: "The request is invalid", fields: fieldErrors(result.error) },
        }, 422);
      }
    },
  });
}
