/**
 * No import cycles among value imports (issue 19 item 3), except allowlisted ones (none today). Type-only
 * imports (`import type`, `import { type A }`) are erased before the program runs and may form cycles. tools/import_graph.ts builds the graph; run
 * `deno run --allow-read tools/import_graph.ts` to print every cycle with one shortest loop per edge.
 */
import assert from "node:assert/strict";
import { appImportEdges, parseImports, valueCycles } from "../../tools/import_graph.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/**
 * Value imports allowed to lie on a cycle: none since the policy cascade's reads moved to
 * domain/policy_reads.ts (35 edges in 2 groups before: runs ↔ restore/drills/file history/replicas,
 * policies ↔ assignments/hooks/replicas/storage, the script registry, the agent's jobs ↔ drill). An entry
 * here must name a cycle that still exists (the test fails on a stale one), so this list can only shrink.
 */
const ALLOWED_CYCLIC_EDGES: string[] = [];

Deno.test("import graph: type-only imports are told apart from value imports", () => {
  const edges = parseImports(
    "domain/a.ts",
    [
      'import type { A } from "./t1.ts";',
      'import { type B, type C as D } from "./t2.ts";',
      'export type { E } from "./t3.ts";',
      'import { type F, g } from "./v1.ts";',
      'import h from "./v2.ts";',
      'import * as i from "./v3.ts";',
      'import "./v4.ts";',
      'export { j } from "./v5.ts";',
      'export * from "./v6.ts";',
      "import {\n  type K,\n  l,\n} from '../routes/v7.ts';",
      'import {} from "./v8.ts";',
      'import { z } from "zod";',
      'const lazy = await import("./dynamic.ts");',
      '// an example: import { x } from "./comment.ts"',
    ].join("\n"),
  );
  const byTarget = Object.fromEntries(edges.map((e) => [e.to, e.typeOnly]));
  assert.deepEqual(byTarget, {
    "domain/t1.ts": true,
    "domain/t2.ts": true,
    "domain/t3.ts": true,
    "domain/v1.ts": false,
    "domain/v2.ts": false,
    "domain/v3.ts": false,
    "domain/v4.ts": false,
    "domain/v5.ts": false,
    "domain/v6.ts": false,
    "routes/v7.ts": false,
    "domain/v8.ts": false,
  });
});

Deno.test("import graph: cycles are found, type-only edges do not close one", () => {
  const files = ["a.ts", "b.ts", "c.ts", "d.ts", "e.ts"];
  const edge = (from: string, to: string, typeOnly = false) => ({ from, to, typeOnly });
  const report = valueCycles(files, [
    edge("a.ts", "b.ts"),
    edge("b.ts", "c.ts"),
    edge("c.ts", "a.ts"),
    edge("c.ts", "d.ts"),
    edge("d.ts", "e.ts"),
    edge("e.ts", "d.ts", true),
  ]);
  assert.deepEqual(report.cyclicEdges, ["a.ts -> b.ts", "b.ts -> c.ts", "c.ts -> a.ts"]);
  assert.deepEqual(report.groups, [["a.ts", "b.ts", "c.ts"]]);
  assert.deepEqual(report.shortestCycles.get("b.ts -> c.ts"), ["b.ts", "c.ts", "a.ts", "b.ts"]);
});

Deno.test("no new import cycle among value imports, and the allowlist has no stale entry", async () => {
  const { files, edges } = await appImportEdges(ROOT);
  assert.ok(files.length > 200, `app modules found (${files.length})`);
  assert.ok(edges.filter((e) => !e.typeOnly).length > 1000, "value imports found");
  const report = valueCycles(files, edges);
  const allowed = new Set(ALLOWED_CYCLIC_EDGES);
  const found = new Set(report.cyclicEdges);
  const added = report.cyclicEdges.filter((e) => !allowed.has(e)).map((e) =>
    `${e}  (cycle: ${report.shortestCycles.get(e)!.join(" -> ")})`
  );
  const gone = ALLOWED_CYCLIC_EDGES.filter((e) => !found.has(e));
  assert.deepEqual(
    added,
    [],
    "new import cycle(s): break them with a leaf module (keys, types, schemas) or a type-only import",
  );
  assert.deepEqual(gone, [], "these allowlisted edges no longer lie on a cycle: remove them from the list");
});
