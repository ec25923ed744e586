/**
 * Page cursors: what a list hands out to continue after its last row, and the one check every list
 * applies to a cursor a client sends back. A client's cursor is input like any other: a stale link, a
 * truncated copy or plain junk (`xx`, `AAAA`, `-1`, `%FF%FE`) is an InvalidCursorError — 422 naming the
 * field `cursor` on the API, the first page with a notice on pages — never a KV exception.
 *
 * Two kinds of cursor exist:
 * - **KV positions** (alerts, audit, deliveries, protected objects): a Deno KV list cursor, sealed by
 *   `sealCursor` as `<base64url>.<check>`, where the check is a hash of the position and of the list it
 *   belongs to (its KV selector). A cursor this server did not issue for that list fails the check.
 *   The check is not a secret: a forged cursor still passes only the base64 form KV accepts, stays
 *   inside the list's own key range (the selector already bounds it to the account and filters), and
 *   KV's own refusal of it becomes an InvalidCursorError too (`CursorList`).
 * - **ids** (runs, restore points, restores): the id of the last row, a ULID (`openIdCursor`).
 */
import { z } from "zod";
import { ValidationError } from "./errors.ts";
import { fromBase64, toBase64Url } from "./ids.ts";

/** The query field of a cursor; its content is checked where the list reads it (`openCursor`, `openIdCursor`). */
export const CursorField = z.string().optional().default("");

/** Longest cursor read (a sealed KV position is well under it; anything longer is junk). */
const MAX_CURSOR_LENGTH = 2000;

/** The cursor a client sent is not one this list handed out. 422, field `cursor`. */
export class InvalidCursorError extends ValidationError {
  override name = "InvalidCursorError";
  constructor() {
    super("The cursor is invalid", {
      cursor:
        "Is not a cursor of this list (it may be from an older link or another filter); start from the first page",
    });
  }
}

/** A Deno KV cursor: standard base64 of a key suffix (KV throws on anything else). */
const KV_POSITION = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** Longest KV position accepted: with any list prefix it stays below KV's 2 KiB key limit. */
const MAX_KV_POSITION = 1200;
const SEALED = /^([A-Za-z0-9_-]*)\.([0-9a-f]{8})$/;
const ULID = /^[0-9A-Z]{26}$/;

const utf8 = new TextEncoder();

/** FNV-1a (32 bits) as 8 hex digits. */
function fnv1a(text: string): string {
  let hash = 0x811c9dc5;
  for (const byte of utf8.encode(text)) hash = Math.imul(hash ^ byte, 0x01000193) >>> 0;
  return hash.toString(16).padStart(8, "0");
}

/** Text as base64url of its UTF-8 (ids.ts's encoding). */
function textToBase64Url(text: string): string {
  return toBase64Url(utf8.encode(text));
}

/** base64url back to text; null when it is not base64 or not valid UTF-8 (fatal decoding). */
function textFromBase64Url(text: string): string | null {
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(fromBase64(text));
  } catch {
    return null;
  }
}

/** What a sealed cursor is bound to for a KV selector: its prefix, start and end keys. */
export function selectorBinding(selector: Deno.KvListSelector): string {
  const key = (k: Deno.KvKey | undefined) => k ? k.map((p) => `${typeof p}:${String(p)}`).join("/") : "-";
  const s = selector as { prefix?: Deno.KvKey; start?: Deno.KvKey; end?: Deno.KvKey };
  return `${key(s.prefix)}|${key(s.start)}|${key(s.end)}`;
}

/** A position of the list `binding` as a cursor for clients ("" stays "": no next page). */
export function sealCursor(binding: string, position: string): string {
  return position ? `${textToBase64Url(position)}.${fnv1a(`${binding}\n${position}`)}` : "";
}

/** The position a cursor of the list `binding` holds ("" for none). Throws InvalidCursorError. */
export function openCursor(binding: string, cursor: string | null | undefined): string {
  if (!cursor) return "";
  const m = cursor.length <= MAX_CURSOR_LENGTH ? SEALED.exec(cursor) : null;
  const position = m ? textFromBase64Url(m[1]) : null;
  if (!m || !position || fnv1a(`${binding}\n${position}`) !== m[2]) throw new InvalidCursorError();
  return position;
}

/** Throws InvalidCursorError unless `position` has the form of a Deno KV cursor ("" is the start). */
function checkKvPosition(position: string): void {
  if (position.length > MAX_KV_POSITION || !KV_POSITION.test(position)) throw new InvalidCursorError();
}

/** An id cursor (the last row's ULID), checked: "" for the first page. Throws InvalidCursorError. */
export function openIdCursor(cursor: string | null | undefined): string {
  if (!cursor) return "";
  if (!ULID.test(cursor)) throw new InvalidCursorError();
  return cursor;
}

/**
 * `kv.list(selector)` from a raw KV position (checked by `checkKvPosition`), whose cursor KV refuses
 * (out of the selector's bounds) surfaces as InvalidCursorError. `position` is where it stands now.
 */
export class CursorList<T> implements AsyncIterable<Deno.KvEntry<T>> {
  readonly #iter: Deno.KvListIterator<T>;
  readonly #binding: string;

  constructor(
    kv: Deno.Kv,
    selector: Deno.KvListSelector,
    position: string,
    options: Deno.KvListOptions = {},
  ) {
    checkKvPosition(position);
    this.#binding = selectorBinding(selector);
    this.#iter = kv.list<T>(selector, { ...options, cursor: position || undefined });
  }

  /** A list from a cursor it sealed before (`cursor`). Throws InvalidCursorError for any other. */
  static fromCursor<T>(
    kv: Deno.Kv,
    selector: Deno.KvListSelector,
    cursor: string | null | undefined,
    options: Deno.KvListOptions = {},
  ): CursorList<T> {
    return new CursorList<T>(kv, selector, openCursor(selectorBinding(selector), cursor), options);
  }

  /** The raw KV position after the last entry read. */
  get position(): string {
    return this.#iter.cursor;
  }

  /** The position as a cursor for clients (read back by `fromCursor` on the same selector). */
  get cursor(): string {
    return sealCursor(this.#binding, this.#iter.cursor);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Deno.KvEntry<T>> {
    for (;;) {
      let next: IteratorResult<Deno.KvEntry<T>>;
      try {
        next = await this.#iter.next();
      } catch (error) {
        if (error instanceof TypeError && /cursor/i.test(error.message)) throw new InvalidCursorError();
        throw error;
      }
      if (next.done) return;
      yield next.value;
    }
  }
}
