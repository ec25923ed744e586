/**
 * Keyset pages over a list read whole and sorted in memory (hosts, scripts, assignments, replica rules:
 * lists the pages filter and sort themselves). The cursor holds the sort key of the last row handed out,
 * sealed to its list (`sealCursor`), so the next page starts after that row even when rows were added or
 * removed before it — an offset would skip or repeat them. A cursor of another list, or junk, is an
 * InvalidCursorError (422 naming `cursor`).
 */
import { z } from "zod";
import { InvalidCursorError, openCursor, sealCursor } from "./cursor.ts";
import type { Page } from "./kv.ts";

/** Most rows one page may hold. */
export const MAX_PAGE_LIMIT = 200;

/** The paging fields of a list query: an opaque cursor ("" or absent: the first page) and a limit. */
export const PageQuery = z.object({
  cursor: z.string().max(2000, "is not a cursor of this list").optional(),
  limit: z.coerce.number({ error: `must be 1–${MAX_PAGE_LIMIT}` }).int(`must be 1–${MAX_PAGE_LIMIT}`)
    .min(1, `must be 1–${MAX_PAGE_LIMIT}`).max(MAX_PAGE_LIMIT, `must be 1–${MAX_PAGE_LIMIT}`).default(50),
});

/** A sort key: the row's sort fields, most significant first, ending with its id (so keys are unique). */
export type SortKey = readonly string[];

/** Compares sort keys field by field with `localeCompare` (as the pages sort), the last field (an id) by code unit. */
export function compareKeys(a: SortKey, b: SortKey): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    const x = a[i] ?? "";
    const y = b[i] ?? "";
    const d = i === a.length - 1 ? (x < y ? -1 : x > y ? 1 : 0) : x.localeCompare(y);
    if (d) return d;
  }
  return 0;
}

/**
 * One page of `rows`: sorted by `compare` over `key`, starting after the row whose key `cursor` holds.
 * `list` names the list and its order (a cursor is only valid for the same name). Throws
 * InvalidCursorError for a cursor this list did not hand out.
 */
export function pageOf<T>(
  rows: readonly T[],
  options: {
    list: string;
    key: (row: T) => SortKey;
    compare?: (a: SortKey, b: SortKey) => number;
    cursor?: string;
    limit: number;
  },
): Page<T> {
  const compare = options.compare ?? compareKeys;
  const keyed = rows.map((row) => ({ row, key: options.key(row) }));
  keyed.sort((a, b) => compare(a.key, b.key));
  const position = openCursor(options.list, options.cursor);
  let start = 0;
  if (position) {
    const after = parseKey(position, keyed[0]?.key.length);
    start = keyed.findIndex((k) => compare(k.key, after) > 0);
    if (start < 0) start = keyed.length;
  }
  const page = keyed.slice(start, start + options.limit);
  const more = start + page.length < keyed.length;
  return {
    values: page.map((k) => k.row),
    cursor: more ? sealCursor(options.list, JSON.stringify(page[page.length - 1].key)) : "",
  };
}

/** A sealed position back to a sort key; a key of another shape is not one this list handed out. */
function parseKey(position: string, length: number | undefined): SortKey {
  let key: unknown;
  try {
    key = JSON.parse(position);
  } catch {
    throw new InvalidCursorError();
  }
  if (
    !Array.isArray(key) || key.length === 0 || key.some((v) => typeof v !== "string") ||
    (length !== undefined && key.length !== length)
  ) {
    throw new InvalidCursorError();
  }
  return key as string[];
}
