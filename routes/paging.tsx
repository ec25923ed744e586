/**
 * Cursor pages: a cursor in a page's link that the list refuses (a stale bookmark, an edited or
 * truncated link) shows the first page with a notice, where the API answers 422 (domain/cursor.ts).
 */

const STALE_CURSOR_NOTICE = "That page link is no longer valid; showing the first page.";

export { readPage } from "../domain/read_models/paging.ts";

/** The notice of a page shown from the start because its link's cursor was refused. */
export function StaleCursorNotice(props: { show: boolean }) {
  return props.show
    ? <p class="notice notice--warn" role="status" data-testid="cursor-notice">{STALE_CURSOR_NOTICE}</p>
    : null;
}
