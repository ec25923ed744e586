/**
 * A job's per-file errors as the protocol takes them (docs/engine-protocol.md, "Results" and "Long lists in
 * parts"): the first ones inline with the result (at most 100, and few enough bytes to leave the result room
 * in its 64 KiB), the rest uploaded before the result as numbered parts of the list "errors", each well inside
 * one 64 KiB request and one KV value. Nothing is dropped silently: a list longer than the control plane keeps
 * (200 parts) is cut, and the result then names its total (`totals.errors`).
 */
import type { PathError } from "./worker_protocol.ts";

/** Errors a result carries inline (the protocol's maximum). */
export const INLINE_ERRORS = 100;
/** UTF-8 bytes of the inline errors' JSON: the result keeps room for its output and hook output. */
export const INLINE_ERROR_BYTES = 24_000;
/** UTF-8 bytes of one part's items (a KV value holds 64,000; the request adds a small envelope). */
export const PART_BYTES = 48_000;
/** Items one part may hold, and parts one list may have (the control plane's limits). */
export const PART_ITEMS = 5000;
export const MAX_PARTS = 200;
/** Longest path and message the control plane accepts per error. */
const PATH_CHARS = 4096;
const MESSAGE_CHARS = 1000;

/** The errors split for sending: inline first, then the parts in order; `total` is every error met. */
export interface ErrorLists {
  inline: PathError[];
  parts: PathError[][];
  total: number;
}

const encoder = new TextEncoder();

function fit(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

/** The bytes one item adds to a JSON array (its JSON and a comma). */
function itemBytes(item: PathError): number {
  return encoder.encode(JSON.stringify(item)).length + 1;
}

/** Splits `errors` (in the order met) into the inline errors and the parts. */
export function splitErrors(errors: PathError[]): ErrorLists {
  const inline: PathError[] = [];
  const parts: PathError[][] = [];
  let i = 0;
  let bytes = 2;
  for (; i < errors.length && inline.length < INLINE_ERRORS; i++) {
    const item = { path: fit(errors[i].path, PATH_CHARS), message: fit(errors[i].message, MESSAGE_CHARS) };
    const n = itemBytes(item);
    if (bytes + n > INLINE_ERROR_BYTES) break;
    inline.push(item);
    bytes += n;
  }
  let part: PathError[] = [];
  bytes = 2;
  for (; i < errors.length; i++) {
    const item = { path: fit(errors[i].path, PATH_CHARS), message: fit(errors[i].message, MESSAGE_CHARS) };
    const n = itemBytes(item);
    if (part.length > 0 && (part.length >= PART_ITEMS || bytes + n > PART_BYTES)) {
      parts.push(part);
      if (parts.length >= MAX_PARTS) {
        part = [];
        break;
      }
      part = [];
      bytes = 2;
    }
    part.push(item);
    bytes += n;
  }
  if (part.length > 0) parts.push(part);
  return { inline, parts, total: errors.length };
}
