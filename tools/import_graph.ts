/**
 * The app's static import graph and its cycles, for tests/unit/import_cycles_test.ts.
 *
 * Reads every .ts/.tsx file under domain/, routes/, jobs/, components/, islands/ and engine/ plus the
 * root entry points, and records each relative static import as a value edge or a type-only edge:
 * `import type …`, `export type … from` and `import { type A, type B }` (every specifier `type`) are
 * type-only, erased before the program runs, so they cannot cause a load-order problem; everything
 * else (named, default, namespace, side-effect imports and re-exports) is a value edge. Dynamic
 * `import()` is left out: it runs after every module has loaded.
 *
 * A value edge a → b lies on a cycle exactly when a and b are in the same strongly connected
 * component, so the set of such edges names every cycle: a new cycle always adds an edge to it.
 *
 * Run `deno run --allow-read tools/import_graph.ts` to print the cycles.
 */

/** Folders whose modules make up the app, relative to the repository root. */
export const APP_DIRS = ["domain", "routes", "jobs", "components", "islands", "engine"];
/** Root modules of the app. */
export const APP_ROOT_FILES = ["main.ts", "app.ts", "cli.ts", "cli_api.ts"];

/** One static import of one module. */
export interface ImportEdge {
  from: string;
  to: string;
  typeOnly: boolean;
}

// `import … from "x"` with a clause of identifiers, braces, commas, `*` and `as` only (so the match never
// runs across statements), `export {…} from "x"` / `export * from "x"`, and `import "x"`.
const IMPORT_FROM = /^[ \t]*import\s+(type\s+)?([\w$\s{},*]+?)\s*from\s*["']([^"']+)["']/gm;
const EXPORT_FROM =
  /^[ \t]*export\s+(type\s+)?(\*(?:\s+as\s+[\w$]+)?|\{[\w$\s,]*\})\s*from\s*["']([^"']+)["']/gm;
const SIDE_EFFECT = /^[ \t]*import\s*["']([^"']+)["']/gm;

/** True when a clause such as `{ type A, type B as C }` imports types only. */
function clauseIsTypeOnly(clause: string): boolean {
  const c = clause.trim();
  if (!c.startsWith("{") || !c.endsWith("}")) return false; // default or namespace binding: a value
  const names = c.slice(1, -1).split(",").map((s) => s.trim()).filter((s) => s !== "");
  return names.length > 0 && names.every((n) => /^type\s/.test(n));
}

/** The relative static imports of one module's source text, resolved against `file` (a repo path). */
export function parseImports(file: string, text: string): ImportEdge[] {
  const edges: ImportEdge[] = [];
  const add = (spec: string, typeOnly: boolean) => {
    if (!spec.startsWith(".")) return;
    const to = new URL(spec, `file:///${file}`).pathname.slice(1);
    edges.push({ from: file, to, typeOnly });
  };
  for (const m of text.matchAll(IMPORT_FROM)) add(m[3], m[1] !== undefined || clauseIsTypeOnly(m[2]));
  for (const m of text.matchAll(EXPORT_FROM)) add(m[3], m[1] !== undefined || clauseIsTypeOnly(m[2]));
  for (const m of text.matchAll(SIDE_EFFECT)) add(m[1], false);
  return edges;
}

async function* sources(root: string, dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(`${root}/${dir}`)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) yield* sources(root, p);
    else if (/\.(ts|tsx)$/.test(e.name)) yield p;
  }
}

/** Every import edge among the app's modules; `root` is the repository root (a filesystem path). */
export async function appImportEdges(root: string): Promise<{ files: string[]; edges: ImportEdge[] }> {
  const files: string[] = [];
  for (const dir of APP_DIRS) {
    for await (const f of sources(root, dir)) files.push(f);
  }
  for (const f of APP_ROOT_FILES) files.push(f);
  files.sort();
  const known = new Set(files);
  const edges: ImportEdge[] = [];
  for (const f of files) {
    const text = await Deno.readTextFile(`${root}/${f}`);
    for (const e of parseImports(f, text)) if (known.has(e.to)) edges.push(e);
  }
  return { files, edges };
}

/** The strongly connected components of a directed graph (Tarjan), as a node → component id map. */
export function components(nodes: string[], adj: Map<string, string[]>): Map<string, number> {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const comp = new Map<string, number>();
  let next = 0;
  let compId = 0;
  // Iterative, so a deep graph cannot overflow the call stack.
  for (const start of nodes) {
    if (index.has(start)) continue;
    const work: { node: string; i: number }[] = [{ node: start, i: 0 }];
    index.set(start, next);
    low.set(start, next++);
    stack.push(start);
    onStack.add(start);
    while (work.length > 0) {
      const top = work[work.length - 1];
      const out = adj.get(top.node) ?? [];
      if (top.i < out.length) {
        const w = out[top.i++];
        if (!index.has(w)) {
          index.set(w, next);
          low.set(w, next++);
          stack.push(w);
          onStack.add(w);
          work.push({ node: w, i: 0 });
        } else if (onStack.has(w)) {
          low.set(top.node, Math.min(low.get(top.node)!, index.get(w)!));
        }
        continue;
      }
      work.pop();
      if (work.length > 0) {
        const parent = work[work.length - 1].node;
        low.set(parent, Math.min(low.get(parent)!, low.get(top.node)!));
      }
      if (low.get(top.node) === index.get(top.node)) {
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          comp.set(w, compId);
        } while (w !== top.node);
        compId++;
      }
    }
  }
  return comp;
}

/** The value-import cycles of the app. */
export interface CycleReport {
  /** Every value edge `a -> b` that lies on a cycle, sorted. */
  cyclicEdges: string[];
  /** The modules of each strongly connected component with more than one module, sorted. */
  groups: string[][];
  /** For each cyclic edge, one shortest cycle through it (`a -> b -> … -> a`). */
  shortestCycles: Map<string, string[]>;
}

/** Finds the cycles among value imports in `edges`. */
export function valueCycles(files: string[], edges: ImportEdge[]): CycleReport {
  const adj = new Map<string, string[]>();
  for (const e of edges) {
    if (e.typeOnly) continue;
    const out = adj.get(e.from) ?? [];
    if (!out.includes(e.to)) out.push(e.to);
    adj.set(e.from, out);
  }
  for (const out of adj.values()) out.sort();
  const comp = components(files, adj);
  const cyclicEdges: string[] = [];
  const shortestCycles = new Map<string, string[]>();
  for (const [from, out] of adj) {
    for (const to of out) {
      if (comp.get(from) !== comp.get(to)) continue;
      const edge = `${from} -> ${to}`;
      cyclicEdges.push(edge);
      shortestCycles.set(edge, [from, ...shortestPath(adj, to, from)]);
    }
  }
  cyclicEdges.sort();
  const byComp = new Map<number, string[]>();
  for (const [node, id] of comp) byComp.set(id, [...(byComp.get(id) ?? []), node]);
  const groups = [...byComp.values()].filter((g) => g.length > 1).map((g) => g.sort()).sort((a, b) =>
    a[0] < b[0] ? -1 : 1
  );
  return { cyclicEdges, groups, shortestCycles };
}

function shortestPath(adj: Map<string, string[]>, from: string, to: string): string[] {
  const prev = new Map<string, string>([[from, ""]]);
  const queue = [from];
  while (queue.length > 0) {
    const n = queue.shift()!;
    if (n === to) break;
    for (const w of adj.get(n) ?? []) {
      if (!prev.has(w)) {
        prev.set(w, n);
        queue.push(w);
      }
    }
  }
  const path: string[] = [];
  for (let n = to; n !== ""; n = prev.get(n)!) path.unshift(n);
  return path;
}

if (import.meta.main) {
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const { files, edges } = await appImportEdges(root);
  const report = valueCycles(files, edges);
  console.log(`${files.length} modules, ${edges.filter((e) => !e.typeOnly).length} value imports`);
  console.log(
    `${report.groups.length} cyclic group(s), ${report.cyclicEdges.length} value edge(s) on a cycle`,
  );
  for (const g of report.groups) console.log(`\ngroup (${g.length}): ${g.join(", ")}`);
  console.log("");
  for (const e of report.cyclicEdges) console.log(`${e}    [${report.shortestCycles.get(e)!.join(" -> ")}]`);
}
