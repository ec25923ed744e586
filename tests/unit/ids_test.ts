import assert from "node:assert/strict";
import { decodeTime } from "ulid";
import {
  fromBase64,
  idAt,
  newId,
  randomToken,
  sha256Hex,
  timingSafeEqual,
  toBase64Url,
} from "../../domain/ids.ts";
import { restorePointId } from "../../domain/restore_points.ts";

Deno.test("timingSafeEqual() is true only for identical strings", () => {
  assert.equal(timingSafeEqual("abc", "abc"), true);
  assert.equal(timingSafeEqual("abc", "abd"), false);
  assert.equal(timingSafeEqual("abc", "abcd"), false);
  assert.equal(timingSafeEqual("", ""), true);
});

Deno.test("fromBase64() reads base64 and base64url, with or without padding", () => {
  const bytes = Uint8Array.from([251, 255, 191, 0, 1]);
  const url = toBase64Url(bytes);
  assert.equal(url, "-_-_AAE");
  assert.deepEqual(fromBase64(url), bytes);
  assert.deepEqual(fromBase64("+/+/AAE="), bytes);
  assert.throws(() => fromBase64("not base64!"));
});

Deno.test("randomToken() returns unpadded base64url of the requested length", () => {
  const a = randomToken(32);
  assert.match(a, /^[A-Za-z0-9_-]{43}$/);
  assert.notEqual(randomToken(32), a);
  assert.equal(fromBase64(randomToken(18)).length, 18);
});

Deno.test("newId() is ordered by time and strictly increasing within one millisecond", () => {
  const now = new Date("2026-11-22T10:00:00Z");
  const ids = Array.from({ length: 50 }, () => newId(now));
  assert.deepEqual([...ids].sort(), ids);
  assert.equal(new Set(ids).size, ids.length);
  assert.ok(newId(new Date("2026-11-22T10:00:01Z")) > ids.at(-1)!);
});

Deno.test("sha256Hex() matches the known digest of 'abc'", () => {
  assert.equal(
    sha256Hex("abc"),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
});

Deno.test("idAt() dates the id by the time given, not by when it is made", () => {
  const early = idAt(new Date("2026-11-01T23:00:00Z"));
  const later = newId(new Date("2026-11-02T00:30:00Z"));
  assert.equal(decodeTime(early), Date.parse("2026-11-01T23:00:00Z"));
  assert.ok(early < later, "an earlier time sorts first even when made after");
  assert.notEqual(idAt(new Date(0)), idAt(new Date(0)), "ids of one millisecond still differ");
});

Deno.test("restorePointId() dates a point by its completion, never later than now, and by now when unreadable", () => {
  const now = new Date("2026-11-02T00:31:00Z");
  assert.equal(decodeTime(restorePointId("2026-11-01T23:00:00Z", now)), Date.parse("2026-11-01T23:00:00Z"));
  assert.equal(decodeTime(restorePointId("2027-01-01T00:00:00Z", now)), now.getTime(), "a skewed clock");
  assert.equal(decodeTime(restorePointId("not a time", now)), now.getTime());
});
