/**
 * The framing the binary objects share (pack trailer, index segment, reference segment, snapshot
 * header): ASCII magic (4 bytes) ‖ version u8 ‖ 3 reserved zero bytes ‖ body, and — for all but the
 * snapshot header — ‖ SHA-256 of everything before it (32 bytes).
 */
import { ByteReader, bytesEqual, ByteWriter, concat } from "./bytes.ts";
import { sha256 } from "./chunk_id.ts";

/** Length of the trailing checksum. */
export const CHECKSUM_BYTES = 32;

/** A writer holding the section header: `magic` ‖ `version` ‖ 3 zero bytes. */
export function sectionWriter(magic: Uint8Array, version: number): ByteWriter {
  return new ByteWriter().bytes(magic).u8(version).u8(0).u8(0).u8(0);
}

/** `body` ‖ SHA-256(`body`). */
export function withChecksum(body: Uint8Array): Uint8Array<ArrayBuffer> {
  return concat(body, sha256(body));
}

/** The body of `bytes` (= body ‖ SHA-256 of body), or null if it is too short or the checksum differs. */
export function checkedBody(bytes: Uint8Array): Uint8Array | null {
  if (bytes.length < CHECKSUM_BYTES) return null;
  const body = bytes.subarray(0, bytes.length - CHECKSUM_BYTES);
  return bytesEqual(sha256(body), bytes.subarray(bytes.length - CHECKSUM_BYTES)) ? body : null;
}

/**
 * Reads and checks a section header at `r`'s position; calls `fail` ("<what> magic missing", "unknown
 * <what> version N") when it is not `magic` and `version`.
 */
export function readSectionHeader(
  r: ByteReader,
  magic: Uint8Array,
  version: number,
  what: string,
  fail: (detail: string) => never,
): void {
  if (!bytesEqual(r.bytes(magic.length), magic)) fail(`${what} magic missing`);
  const found = r.u8();
  if (found !== version) fail(`unknown ${what} version ${found}`);
  r.bytes(3);
}
