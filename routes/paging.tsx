/**
 * Cursor pages: a cursor in a page's link that the list refuses (a stale bookmark, an edited or
 * truncated link) shows the first page with a notice, where the API answers 422 (domain/cursor.ts).
 */
import { InvalidCursorError } from "../domain/cursor.ts";

const STALE_CURSOR_NOTICE = "That page link is no longer valid; showing the first page.";

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

/** The notice of a page shown from the start because its link's cursor was refused. */
export function StaleCursorNotice(props: { show: boolean }) {
  return props.show
    ? <p class="notice notice--warn" role="status" data-testid="cursor-notice">{STALE_CURSOR_NOTICE}</p>
    : null;
}
