/** Form parsing: turns a submitted form into an object, and zod issues into field messages. */
import type { Context } from "hono";
import { z } from "zod";
import { ConflictError, type FieldErrors, HttpError, ValidationError } from "../domain/errors.ts";
import type { AppEnv } from "./env.ts";

/** A submitted form's fields as strings; a repeated field is an array. */
export type FormFields = Record<string, string | string[]>;

/**
 * The submitted form body, parsed once (Hono caches it for later readers). A body that cannot be read
 * as the form its content type announces — `multipart/form-data` without a boundary, a broken
 * multipart body — is the client's error: 400 `malformed`, not a 500 with a stack in the log.
 */
export async function parseFormBody(
  c: Context<AppEnv>,
): Promise<Record<string, string | File | (string | File)[]>> {
  try {
    return await c.req.parseBody({ all: true });
  } catch (error) {
    if (error instanceof HttpError) throw error; // the body limit (413)
    throw new HttpError(
      400,
      "malformed",
      "The form could not be read: its body does not match its content type",
    );
  }
}

/** The submitted form as strings (repeated fields become arrays), without `_csrf`. */
export async function readForm(c: Context<AppEnv>): Promise<FormFields> {
  const body = await parseFormBody(c);
  const out: FormFields = {};
  for (const [key, value] of Object.entries(body)) {
    if (key === "_csrf") continue;
    if (Array.isArray(value)) out[key] = value.filter((v): v is string => typeof v === "string");
    else if (typeof value === "string") out[key] = value;
  }
  return out;
}

/** One string field of a form ("" when missing). */
export function str(form: FormFields, key: string): string {
  const v = form[key];
  return Array.isArray(v) ? (v[0] ?? "") : (v ?? "");
}

/** A repeated field as a list. */
export function list(form: FormFields, key: string): string[] {
  const v = form[key];
  return Array.isArray(v) ? v : v ? [v] : [];
}

/**
 * The dotted names of a strict object's unknown fields (`s3.buckt`), or none for any other issue — a typo in
 * automation is a 422 naming the field that was not understood.
 */
export function unknownFieldNames(issue: z.core.$ZodIssue): string[] {
  if (issue.code !== "unrecognized_keys") return [];
  const at = issue.path.length ? `${issue.path.map(String).join(".")}.` : "";
  return issue.keys.map((key) => `${at}${key}`);
}

/**
 * zod issues → `{ field: message }`, first message per field, with a readable field label. An unknown
 * field of a strict object is named itself, dotted when nested (`{ "sheduleCron": "Unknown field" }`).
 */
export function fieldErrors(error: z.ZodError): FieldErrors {
  const out: FieldErrors = {};
  for (const issue of error.issues) {
    if (issue.code === "unrecognized_keys") {
      for (const name of unknownFieldNames(issue)) out[name] ??= "Unknown field";
      continue;
    }
    const key = String(issue.path[0] ?? "form");
    if (!out[key]) out[key] = capitalize(issue.message);
  }
  return out;
}

function capitalize(text: string): string {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

/** A form's expected refusal (bad input, a concurrent change) as what to show on the form again; rethrows the rest. */
export function formFailure(e: unknown): { fields?: FieldErrors; message: string } {
  if (e instanceof ValidationError) return { fields: e.fields, message: e.message };
  if (e instanceof ConflictError) return { message: e.message };
  throw e;
}

/**
 * The flow of a form POST that saves: input the schema refuses shows the form again with each field's
 * message (and `opts.invalid` as the form's own line, when given); a refusal of the domain (`formFailure`)
 * shows it again with that refusal; anything else is `save`'s response. Errors other than refusals
 * propagate, and so does a ConflictError with `opts.validationOnly` (the forms that leave a conflict to
 * the error handler).
 */
export async function saveForm<T>(
  parsed: z.ZodSafeParseResult<T>,
  save: (data: T) => Response | Promise<Response>,
  refuse: (fields?: FieldErrors, message?: string) => Response | Promise<Response>,
  opts: { invalid?: string; validationOnly?: boolean } = {},
): Promise<Response> {
  if (!parsed.success) return await refuse(fieldErrors(parsed.error), opts.invalid);
  try {
    return await save(parsed.data);
  } catch (e) {
    if (opts.validationOnly && !(e instanceof ValidationError)) throw e;
    const { fields, message } = formFailure(e);
    return await refuse(fields, message);
  }
}

/** A refused change as one sentence for a notice: the first field's message, or the conflict's. */
export function problem(e: unknown): string {
  if (e instanceof ValidationError) return Object.values(e.fields)[0] ?? e.message;
  if (e instanceof ConflictError) return e.message;
  throw e;
}
