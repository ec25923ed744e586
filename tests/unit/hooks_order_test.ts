import assert from "node:assert/strict";
import fc from "fast-check";
import { HOOK_TYPES, type HookType, orderHooks } from "../../domain/hooks.ts";

function hook(id: string, type: HookType, sequence = 100) {
  return { id, type, sequence };
}

Deno.test("orderHooks() runs types in backup order: pre_backup, pre_snapshot, post_snapshot, post_backup", () => {
  const ordered = orderHooks([
    hook("a", "post_backup"),
    hook("b", "post_snapshot"),
    hook("c", "pre_snapshot"),
    hook("d", "pre_backup"),
  ]);
  assert.deepEqual(ordered.map((h) => h.type), [...HOOK_TYPES]);
});

Deno.test("orderHooks() orders hooks of one type by sequence ascending", () => {
  const ordered = orderHooks([
    hook("a", "pre_backup", 500),
    hook("b", "pre_backup", 0),
    hook("c", "pre_backup", 20),
  ]);
  assert.deepEqual(ordered.map((h) => h.id), ["b", "c", "a"]);
});

Deno.test("orderHooks() breaks sequence ties by id, by code unit and not by locale", () => {
  const ordered = orderHooks([
    hook("01J0000000000000000000000B", "pre_snapshot", 10),
    hook("01J0000000000000000000000A", "pre_snapshot", 10),
    hook("01J000000000000000000000Z9", "pre_snapshot", 10),
    hook("01J0000000000000000000000C", "pre_snapshot", 5),
  ]);
  assert.deepEqual(ordered.map((h) => h.id), [
    "01J0000000000000000000000C",
    "01J0000000000000000000000A",
    "01J0000000000000000000000B",
    "01J000000000000000000000Z9",
  ]);
  // "B" < "a" in code-unit order (a locale compare would put "a" first).
  assert.deepEqual(orderHooks([hook("a", "pre_backup"), hook("B", "pre_backup")]).map((h) => h.id), [
    "B",
    "a",
  ]);
});

Deno.test("orderHooks() type beats sequence: a post hook with sequence 0 still runs after a pre hook with 1000", () => {
  const ordered = orderHooks([hook("x", "post_backup", 0), hook("y", "pre_backup", 1000)]);
  assert.deepEqual(ordered.map((h) => h.id), ["y", "x"]);
});

Deno.test("orderHooks() returns a new array and leaves its input alone", () => {
  const input = [hook("b", "post_backup"), hook("a", "pre_backup")];
  const copy = structuredClone(input);
  const out = orderHooks(input);
  assert.notEqual(out, input);
  assert.deepEqual(input, copy);
});

Deno.test("orderHooks() gives the same total order whatever the input order (property)", () => {
  const arbHook = fc.record({
    id: fc.stringMatching(/^[0-9A-Z]{1,4}$/),
    type: fc.constantFrom(...HOOK_TYPES),
    sequence: fc.integer({ min: 0, max: 3 }),
  });
  fc.assert(
    fc.property(fc.uniqueArray(arbHook, { selector: (h) => h.id, maxLength: 20 }), (hooks) => {
      const once = orderHooks(hooks);
      assert.deepEqual(orderHooks([...hooks].reverse()), once);
      for (let i = 1; i < once.length; i++) {
        const [a, b] = [once[i - 1], once[i]];
        const key = (h: typeof a) => [HOOK_TYPES.indexOf(h.type), h.sequence];
        const [ta, sa] = key(a);
        const [tb, sb] = key(b);
        assert.ok(ta < tb || (ta === tb && (sa < sb || (sa === sb && a.id < b.id))));
      }
    }),
  );
});
