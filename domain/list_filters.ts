/**
 * One list's filter fields read two ways: leniently by its page (a bad value falls back to the default,
 * so a raw query object parses) and strictly by its API (a bad value is refused, 422 naming it).
 */
import { z } from "zod";

type Defaults<F extends Record<string, z.ZodType>> = { [K in keyof F]: z.output<F[K]> };

/** The page's filter: every field falls back to its default. */
export function lenientFilter<F extends Record<string, z.ZodType>>(fields: F, defaults: Defaults<F>) {
  const shape = Object.fromEntries(Object.keys(fields).map((k) => [k, fields[k].catch(defaults[k])]));
  return z.object(shape as { [K in keyof F]: z.ZodCatch<F[K]> });
}

/** The API's query: every field has its default when absent, and a bad value is refused. */
export function strictQuery<F extends Record<string, z.ZodType>>(fields: F, defaults: Defaults<F>) {
  const shape = Object.fromEntries(
    Object.keys(fields).map((k) => [k, fields[k].default(defaults[k] as never)]),
  );
  return z.object(shape as { [K in keyof F]: z.ZodDefault<F[K]> });
}
