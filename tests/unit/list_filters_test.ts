/** The offset-paged lists' sorting and paging (domain/list_filters.ts): the admin lists and the API lists. */
import assert from "node:assert/strict";
import { compareAsText, offsetPage, sortBy } from "../../domain/list_filters.ts";

const rows = () => [
  { name: "beta", createdAt: "2026-01-02T00:00:00.000Z" },
  { name: "alpha", createdAt: "2026-01-03T00:00:00.000Z" },
  { name: "gamma", createdAt: "2026-01-01T00:00:00.000Z" },
];

Deno.test("sortBy sorts on the named field, a leading '-' reverses it; ISO times sort as text", () => {
  assert.deepEqual(sortBy(rows(), "name", compareAsText).map((r) => r.name), ["alpha", "beta", "gamma"]);
  assert.deepEqual(sortBy(rows(), "-name", compareAsText).map((r) => r.name), ["gamma", "beta", "alpha"]);
  assert.deepEqual(sortBy(rows(), "createdAt", compareAsText).map((r) => r.name), ["gamma", "beta", "alpha"]);
});

Deno.test("offsetPage returns the requested page of the sorted rows and the total before paging", () => {
  const page = offsetPage(rows(), { sort: "-createdAt", offset: 1, limit: 1 }, compareAsText);
  assert.deepEqual(page, { values: [rows()[0]], total: 3 });
  assert.deepEqual(offsetPage(rows(), { sort: "name", offset: 5, limit: 10 }, compareAsText), {
    values: [],
    total: 3,
  });
});
