import assert from "node:assert/strict";
import { ByteReader, ByteWriter, fromBase64, fromHex, toBase64, toHex } from "../../engine/repo/bytes.ts";
import { compileExcludes } from "../../engine/repo/exclude.ts";
import { globRegExp } from "../../engine/repo/glob.ts";
import { BLOB_ENTRY_BYTES, readBlobEntry, writeBlobEntry } from "../../engine/repo/pack.ts";
import { nameMatcher } from "../../tools/simulator.ts";

Deno.test("globRegExp(): one glob for excludes, finds and the simulator; case sensitivity is an option", () => {
  assert.ok(globRegExp("*.TXT", { caseInsensitive: true }).test("notes.txt"));
  assert.ok(!globRegExp("*.TXT").test("notes.txt"));
  assert.ok(globRegExp("cache/*.bin", { match: "tail" }).test("/home/a/cache/x.bin"));
  assert.ok(!globRegExp("*.bin", { match: "whole" }).test("a/x.bin"), '"*" stays within a component');
  assert.ok(globRegExp("/home/**/x", { match: "whole" }).test("/home/a/b/x"));
  assert.ok(globRegExp("f[!a]o").test("fbo") && !globRegExp("f[!a]o").test("fao"));
  assert.ok(globRegExp("a.b(c)").test("a.b(c)") && !globRegExp("a.b").test("axb"));
  // The callers keep their behaviour: excludes are case-sensitive, the simulator's search is not.
  assert.ok(compileExcludes([], ["*.tmp"])("/a/b.tmp") && !compileExcludes([], ["*.tmp"])("/a/b.TMP"));
  assert.ok(nameMatcher("*.TMP")("b.tmp") && nameMatcher("rep?rt*")("Report-2026.pdf"));
  assert.ok(!nameMatcher("[")("x") && nameMatcher("budget")("Q3-BUDGET.xlsx"));
});

Deno.test("blob entries are coded once for trailers and index segments; hex and base64 are the built-ins", () => {
  const e = { type: "tree" as const, id: "ab".repeat(32), offset: 7, length: 9 };
  const w = new ByteWriter();
  writeBlobEntry(w, e);
  const bytes = w.finish();
  assert.equal(bytes.length, BLOB_ENTRY_BYTES);
  assert.equal(bytes[0], 1);
  assert.deepEqual(readBlobEntry(new ByteReader(bytes), (d) => assert.fail(d)), e);
  bytes[0] = 7;
  assert.throws(() =>
    readBlobEntry(new ByteReader(bytes), (d) => {
      throw new Error(d);
    }), /unknown blob type 7/);
  assert.equal(toHex(new Uint8Array([0, 15, 255])), "000fff");
  assert.deepEqual(fromHex("000FfF"), new Uint8Array([0, 15, 255]));
  assert.throws(() => fromHex("abc"), /Cannot parse hex/);
  assert.equal(toBase64(new Uint8Array([1, 2, 255])), "AQL/");
  assert.deepEqual(fromBase64(" AQL/\n"), new Uint8Array([1, 2, 255]));
});
