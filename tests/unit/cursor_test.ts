/** Page cursors: what a list hands out reads back; anything else is an InvalidCursorError, never a KV error. */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  CursorList,
  InvalidCursorError,
  openCursor,
  openIdCursor,
  sealCursor,
  selectorBinding,
} from "../../domain/cursor.ts";

const GARBAGE = [
  "xx",
  "AAAA",
  "-1",
  "%FF%FE",
  "\xff\xfe",
  "x".repeat(5000),
  btoa("junk junk junk"),
  "AngyAA==",
  ".",
];

async function drain(list: CursorList<unknown>): Promise<string[]> {
  const out: string[] = [];
  for await (const e of list) out.push(String(e.key.at(-1)));
  return out;
}

Deno.test("a sealed cursor opens for its own list only; garbage and tampering are InvalidCursorError", () => {
  const binding = selectorBinding({ prefix: ["alerts_by_account", "A"] });
  const cursor = sealCursor(binding, "AngyAA==");
  assert.equal(openCursor(binding, cursor), "AngyAA==");
  assert.equal(openCursor(binding, ""), "");
  assert.equal(sealCursor(binding, ""), "", "no position, no cursor");
  assert.throws(
    () => openCursor(selectorBinding({ prefix: ["alerts_by_account", "B"] }), cursor),
    InvalidCursorError,
  );
  const [payload, check] = cursor.split(".");
  assert.throws(() => openCursor(binding, `${payload}A.${check}`), InvalidCursorError);
  assert.throws(() => openCursor(binding, `${payload}.${"0".repeat(8)}`), InvalidCursorError);
  for (const junk of GARBAGE) assert.throws(() => openCursor(binding, junk), InvalidCursorError, junk);
  const error = new InvalidCursorError();
  assert.deepEqual(Object.keys(error.fields), ["cursor"], "422 names the field `cursor`");
});

Deno.test("property: a random string never opens as a cursor and throws nothing but InvalidCursorError", () => {
  const binding = selectorBinding({ prefix: ["audit", "A"] });
  fc.assert(
    fc.property(fc.string({ unit: "binary", maxLength: 300 }), (junk) => {
      try {
        openCursor(binding, junk);
        return junk === ""; // only "" (the first page) opens
      } catch (error) {
        return error instanceof InvalidCursorError;
      }
    }),
    { numRuns: 2000 },
  );
});

Deno.test("id cursors are ULIDs", () => {
  assert.equal(openIdCursor("01KBZ8G4Z7M0Q3D9W2X6Y5V1TA"), "01KBZ8G4Z7M0Q3D9W2X6Y5V1TA");
  assert.equal(openIdCursor(""), "");
  assert.equal(openIdCursor(undefined), "");
  for (const junk of [...GARBAGE, "01kbz8g4z7m0q3d9w2x6y5v1ta", "<script>"]) {
    assert.throws(() => openIdCursor(junk), InvalidCursorError, junk);
  }
});

Deno.test("CursorList pages through KV with its own cursors; a forged or out-of-range position is InvalidCursorError", async () => {
  using kv = await Deno.openKv(":memory:");
  for (let i = 0; i < 9; i++) await kv.set(["l", `k${i}`], i);
  const selector = { prefix: ["l"] };
  const seen: string[] = [];
  let cursor = "";
  for (let n = 0; n < 10; n++) {
    const list = CursorList.fromCursor<number>(kv, selector, cursor, { limit: 4, reverse: true });
    const page = await drain(list);
    seen.push(...page);
    if (page.length < 4) break;
    cursor = list.cursor;
    assert.match(cursor, /^[A-Za-z0-9_-]+\.[0-9a-f]{8}$/, "URL-safe: no + / = to be mangled in a query");
  }
  assert.deepEqual(seen, ["k8", "k7", "k6", "k5", "k4", "k3", "k2", "k1", "k0"], "every key once, in order");

  for (const junk of GARBAGE) {
    await assert.rejects(
      async () => await drain(CursorList.fromCursor(kv, selector, junk)),
      InvalidCursorError,
      junk,
    );
  }
  // Positions KV itself refuses: not base64, or outside a range (a forged checksum gets no further).
  await assert.rejects(async () => await drain(new CursorList(kv, selector, "xx")), InvalidCursorError);
  const all = kv.list({ prefix: ["l"] }, { limit: 8 });
  for await (const _ of all) { /* to k7 */ }
  const range = { start: ["l", "k0"], end: ["l", "k3"] };
  await assert.rejects(async () => await drain(new CursorList(kv, range, all.cursor)), InvalidCursorError);
  const forged = CursorList.fromCursor(kv, range, sealCursor(selectorBinding(range), all.cursor));
  await assert.rejects(async () => await drain(forged), InvalidCursorError);
});
