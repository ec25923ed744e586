import assert from "node:assert/strict";
import fc from "fast-check";
import { InvalidCursorError, sealCursor } from "../../domain/cursor.ts";
import { compareKeys, pageOf } from "../../domain/paging.ts";

interface Row {
  name: string;
  id: string;
}
const key = (r: Row) => [r.name, r.id];

/** Every page of `rows` (following cursors), as ids. */
function walk(rows: Row[], limit: number): string[][] {
  const out: string[][] = [];
  let cursor = "";
  for (let i = 0; i <= rows.length + 1; i++) {
    const page = pageOf(rows, { list: "rows", key, cursor, limit });
    out.push(page.values.map((r) => r.id));
    if (!page.cursor) return out;
    cursor = page.cursor;
  }
  throw new Error("pageOf() handed out cursors forever");
}

Deno.test("pageOf() hands out every row exactly once, in sort order, whatever the limit", () => {
  fc.assert(
    fc.property(
      fc.uniqueArray(
        fc.record({ name: fc.string({ maxLength: 4 }), id: fc.string({ minLength: 1, maxLength: 6 }) }),
        {
          selector: (r) => r.id,
          maxLength: 40,
        },
      ),
      fc.integer({ min: 1, max: 12 }),
      (rows, limit) => {
        const pages = walk(rows, limit);
        const sorted = [...rows].sort((a, b) => compareKeys(key(a), key(b))).map((r) => r.id);
        assert.deepEqual(pages.flat(), sorted);
        assert.ok(pages.slice(0, -1).every((p) => p.length === limit), "only the last page is short");
      },
    ),
  );
});

Deno.test("pageOf() continues after the cursor's row when rows are added or removed before it", () => {
  const rows = ["b", "d", "f", "h"].map((name) => ({ name, id: `id-${name}` }));
  const first = pageOf(rows, { list: "rows", key, limit: 2 });
  assert.deepEqual(first.values.map((r) => r.name), ["b", "d"]);
  const changed = [{ name: "a", id: "id-a" }, ...rows.filter((r) => r.name !== "d"), {
    name: "e",
    id: "id-e",
  }];
  const next = pageOf(changed, { list: "rows", key, limit: 2, cursor: first.cursor });
  assert.deepEqual(next.values.map((r) => r.name), ["e", "f"]);
  assert.equal(pageOf([], { list: "rows", key, limit: 2, cursor: first.cursor }).cursor, "");
});

Deno.test("pageOf() refuses a cursor of another list, of another key shape, or junk", () => {
  const rows = ["a", "b", "c"].map((name) => ({ name, id: `id-${name}` }));
  const { cursor } = pageOf(rows, { list: "rows", key, limit: 1 });
  for (
    const bad of [
      pageOf(rows, { list: "other", key, limit: 1 }).cursor,
      sealCursor("rows", JSON.stringify(["a"])),
      sealCursor("rows", JSON.stringify({ name: "a" })),
      sealCursor("rows", "not json"),
      sealCursor("rows", JSON.stringify(["a", 1])),
      "xx",
      `${cursor}x`,
    ]
  ) {
    assert.throws(() => pageOf(rows, { list: "rows", key, limit: 1, cursor: bad }), InvalidCursorError, bad);
  }
  assert.equal(pageOf(rows, { list: "rows", key, limit: 1, cursor }).values[0].name, "b");
});
