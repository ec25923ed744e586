/**
 * Cursor pages of the read models: a cursor in a page's link that the list refuses (a stale bookmark, an
 * edited or truncated link) reads the first page instead and says so, where the API answers 422
 * (domain/cursor.ts). routes/paging.tsx re-exports it with the notice that says so on the page.
 */
import { InvalidCursorError } from "../cursor.ts";

/**
 * Reads a page with `read(cursor)`; when the list refuses the cursor, reads the first page instead and
 * says so (`staleCursor`). Any other error is thrown.
 */
export async function readPage<T>(
  cursor: string | undefined,
  read: (cursor: string) => Promise<T>,
): Promise<{ page: T; staleCursor: boolean }> {
  try {
    return { page: await read(cursor ?? ""), staleCursor: false };
  } catch (error) {
    if (!(error instanceof InvalidCursorError) || !cursor) throw error;
    return { page: await read(""), staleCursor: true };
  }
}
