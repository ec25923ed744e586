/**
 * One list's filter fields read two ways: leniently by its page (a bad value falls back to the default,
 * so a raw query object parses) and strictly by its API (a bad value is refused, 422 naming it).
 */
import { z } from "zod";

/** A list's offset (offset-paged lists). */
export const OffsetField = z.coerce.number({ error: "must be a whole number, 0 or more" })
  .int("must be a whole number, 0 or more")
  .min(0, "must be a whole number, 0 or more");

/** How many rows a page of a list holds: 1 to 200. */
export const LimitField = z.coerce.number({ error: "must be 1–200" }).int("must be 1–200").min(
  1,
  "must be 1–200",
)
  .max(200, "must be 1–200");

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

/** A page of an offset-paged list, and how many rows match in all. */
export interface OffsetPage<T> {
  values: T[];
  total: number;
}

/**
 * An offset-paged list's page: `rows` sorted by `compare` on the sort's field (a leading `-` reverses it),
 * the `offset`/`limit` page of them, and `total` before paging.
 */
export function offsetPage<T>(
  rows: T[],
  filter: { sort: string; offset: number; limit: number },
  compare: (a: T, b: T, field: string) => number,
): OffsetPage<T> {
  sortBy(rows, filter.sort, compare);
  return { values: rows.slice(filter.offset, filter.offset + filter.limit), total: rows.length };
}

/** Sorts `rows` in place by `compare` on a list's sort field ("field" ascending, "-field" descending). */
export function sortBy<T>(rows: T[], sort: string, compare: (a: T, b: T, field: string) => number): T[] {
  const field = sort.replace(/^-/, "");
  const dir = sort.startsWith("-") ? -1 : 1;
  return rows.sort((a, b) => dir * compare(a, b, field));
}

/** Compares two rows' `field` as text (ISO times sort as text): the compare of the lists read whole. */
export function compareAsText<T>(a: T, b: T, field: string): number {
  return String(a[field as keyof T]).localeCompare(String(b[field as keyof T]));
}
