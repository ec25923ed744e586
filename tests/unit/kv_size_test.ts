import assert from "node:assert/strict";
import { serialize } from "node:v8";
import fc from "fast-check";
import { kvValueBytes } from "../../domain/kv.ts";

// Strings of ASCII, Latin-1, wider BMP characters and astral ones (surrogate pairs), mixed.
const text = fc.string({
  unit: fc.oneof(
    fc.constantFrom("a", "é", "€", "字", "😀"),
    fc.string({ unit: "binary", minLength: 1, maxLength: 1 }),
  ),
  maxLength: 200,
});
const value = fc.letrec((tie) => ({
  leaf: fc.oneof(text, fc.double(), fc.integer(), fc.boolean(), fc.constant(null)),
  node: fc.oneof(
    { depthSize: "small" },
    tie("leaf"),
    fc.array(tie("node"), { maxLength: 8 }),
    fc.dictionary(text, tie("node"), { maxKeys: 8 }),
  ),
})).node;

Deno.test("kvValueBytes() is never below what V8 serialization (KV's encoding) takes", () => {
  fc.assert(
    fc.property(value, (v) => {
      assert.ok(kvValueBytes(v) >= serialize(v).length - 3, `${kvValueBytes(v)} < ${serialize(v).length}`);
    }),
    { numRuns: 2000 },
  );
});

Deno.test("kvValueBytes(): one wide character makes the whole string two bytes a character", () => {
  assert.equal(kvValueBytes("a".repeat(1000)), 1005);
  assert.equal(kvValueBytes("é".repeat(1000)), 1005, "Latin-1 is one byte a character");
  assert.equal(kvValueBytes(`…${"a".repeat(999)}`), 2005);
  assert.ok(serialize(`…${"a".repeat(999)}`).length >= 2000, "as V8 stores it");
});
