/** Legal holds in GFS retention (domain/retention.ts `holds`): held points and their chains are kept. */
import assert from "node:assert/strict";
import fc from "fast-check";
import { planRetention, type RetentionPoint } from "../../domain/retention.ts";

const DAY = 86_400_000;

function point(id: string, completedAt: string, overrides: Partial<RetentionPoint> = {}): RetentionPoint {
  return {
    id,
    chainId: "c1",
    type: "full",
    parentId: null,
    completedAt,
    sizeBytes: 1000,
    status: "complete",
    ...overrides,
  };
}

Deno.test("planRetention() keeps a held incremental with its chain, the hold as the reason", () => {
  const points = [
    point("f1", "2026-11-01T02:00:00Z"),
    point("i1", "2026-11-02T02:00:00Z", { type: "incremental", parentId: "f1" }),
    point("i2", "2026-11-03T02:00:00Z", {
      type: "incremental",
      parentId: "i1",
      holds: ["legal hold CASE-1"],
    }),
    point("f2", "2026-11-10T02:00:00Z", { chainId: "c2" }),
    point("old", "2026-10-01T02:00:00Z", { chainId: "c0" }),
  ];
  const plan = planRetention(points, { daily: 1, weekly: 0, monthly: 0 });
  assert.deepEqual(plan.keep, ["f1", "i1", "i2", "f2"]);
  assert.deepEqual(plan.expire, ["old"]);
  assert.deepEqual(plan.reasons.i2, ["legal hold CASE-1"]);
  assert.deepEqual(plan.reasons.i1, ["parent of i2"]);
  assert.deepEqual(plan.reasons.f1, ["parent of i1"]);
  // Without the hold, the chain goes.
  const free = planRetention(points.map((p) => ({ ...p, holds: [] })), { daily: 1, weekly: 0, monthly: 0 });
  assert.deepEqual(free.expire, ["f1", "i1", "i2", "old"]);
});

Deno.test("planRetention() never expires a held point, and holds only ever shrink the expiry list (property)", () => {
  const history = fc.array(
    fc.record({ day: fc.integer({ min: 0, max: 400 }), incremental: fc.boolean(), held: fc.boolean() }),
    { minLength: 1, maxLength: 40 },
  );
  const counts = fc.record({
    daily: fc.integer({ min: 1, max: 10 }),
    weekly: fc.integer({ min: 0, max: 5 }),
    monthly: fc.integer({ min: 0, max: 5 }),
  });
  fc.assert(
    fc.property(history, counts, (rows, c) => {
      const start = Date.parse("2026-01-01T02:00:00Z");
      const points: RetentionPoint[] = rows.map((r, i) => ({
        id: `p${String(i).padStart(3, "0")}`,
        chainId: "c",
        type: r.incremental && i > 0 ? "incremental" : "full",
        parentId: r.incremental && i > 0 ? `p${String(i - 1).padStart(3, "0")}` : null,
        completedAt: new Date(start + r.day * DAY + i * 1000).toISOString(),
        sizeBytes: 1,
        status: "complete",
        holds: r.held ? ["legal hold X"] : [],
      }));
      const plan = planRetention(points, c);
      const byId = new Map(points.map((p) => [p.id, p]));
      for (const p of points) {
        if (!p.holds!.length) continue;
        assert.ok(plan.keep.includes(p.id), `${p.id} is held and kept`);
        assert.ok(plan.reasons[p.id].includes("legal hold X"));
        // Its ancestors up to the full are kept too (it stays restorable).
        let q = p;
        while (q.type === "incremental" && q.parentId) {
          q = byId.get(q.parentId)!;
          assert.ok(plan.keep.includes(q.id), `${q.id}, an ancestor of held ${p.id}, is kept`);
        }
      }
      const free = planRetention(points.map((p) => ({ ...p, holds: [] })), c);
      for (const id of plan.expire) assert.ok(free.expire.includes(id), `a hold never expires ${id}`);
    }),
    { numRuns: 300 },
  );
});
