/**
 * Pages receive their data as props (issue 19 item 4): a page route reads through its read model
 * (domain/read_models/, or a domain read function) and renders components with plain data, so no
 * component, page section or page helper in routes/*.tsx or components/ takes the KV handle. A route
 * handler takes the request context (`c`) and passes `kv` only to domain functions.
 *
 * The check reads the source: a function (declaration or arrow) with a parameter named `kv` or typed
 * `Deno.Kv`, a props type with a `kv` member, a JSX `kv={…}` attribute, or a component called with an
 * object holding `kv` is a finding.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

/** The parameter list that starts at `open` (the index just after its "("), brackets balanced. */
function paramsAt(source: string, open: number): string {
  let depth = 1;
  let i = open;
  while (depth > 0 && i < source.length) {
    const ch = source[i];
    if (ch === "(" || ch === "{" || ch === "[") depth++;
    else if (ch === ")" || ch === "}" || ch === "]") depth--;
    i++;
  }
  return source.slice(open, i - 1);
}

/** Does a parameter list take the KV handle (named `kv`, typed `Deno.Kv`, or a props object with `kv`)? */
function takesKv(params: string): boolean {
  return /^\s*kv\s*[:,?)]|,\s*kv\s*[:,?)]|^\s*kv\s*$|,\s*kv\s*$/.test(params) ||
    /\bDeno\.Kv\b/.test(params) ||
    /[{;,]\s*kv\s*\??\s*:/.test(params) || /^\s*\{[^}]*\bkv\b[^}]*\}\s*:/.test(params);
}

/** The findings in one file's source, as "line: what". */
export function kvPropFindings(source: string): string[] {
  const findings: string[] = [];
  const lineOf = (index: number) => source.slice(0, index).split("\n").length;
  // function Name(…) / function Name<T>(…)
  for (const m of source.matchAll(/\bfunction\s*\*?\s*(\w*)\s*(?:<[^>(]*>)?\s*\(/g)) {
    if (takesKv(paramsAt(source, m.index! + m[0].length))) {
      findings.push(`${lineOf(m.index!)}: function ${m[1] || "(anonymous)"} takes kv`);
    }
  }
  // const Name = (…) => / async (…) =>
  for (const m of source.matchAll(/\b(?:const|let)\s+(\w+)\s*(?::[^=]+)?=\s*(?:async\s*)?\(/g)) {
    const params = paramsAt(source, m.index! + m[0].length);
    const after = source.slice(m.index! + m[0].length + params.length + 1).trimStart();
    if ((after.startsWith("=>") || /^:[^=]*=>/.test(after)) && takesKv(params)) {
      findings.push(`${lineOf(m.index!)}: ${m[1]} takes kv`);
    }
  }
  for (const m of source.matchAll(/\bkv=\{/g)) findings.push(`${lineOf(m.index!)}: a kv={…} attribute`);
  for (const m of source.matchAll(/(?<!\bfunction\s*)\b([A-Z]\w*)\(\s*\{[^}]*\bkv\b/g)) {
    findings.push(`${lineOf(m.index!)}: ${m[1]} called with kv`);
  }
  return findings;
}

async function pageSources(): Promise<string[]> {
  const files: string[] = [];
  for (const dir of ["routes", "components"]) {
    for await (const entry of Deno.readDir(`${ROOT}/${dir}`)) {
      if (entry.isFile && entry.name.endsWith(".tsx")) files.push(`${dir}/${entry.name}`);
    }
  }
  return files.sort();
}

Deno.test("the check finds a section, a component or a helper that takes kv", () => {
  const caught = [
    "export async function HostsSection(props: { kv: Kv; actor: Actor; policy: Policy }) {}",
    "async function HooksSummary(props: { kv: Deno.Kv; policy: Policy }) {}",
    "function rows(kv: Deno.Kv, id: string) {}",
    "async function load(actor: Actor, kv) {}",
    "function Panel({ kv, policy }: Props) {}",
    "const section = async (kv: Deno.Kv, name: string) => {};",
    "const x = <RunsSection kv={kv} policy={p} />;",
    "{await RunsSection({ kv, actor, policy: p })}",
  ];
  for (const source of caught) assert.equal(kvPropFindings(source).length, 1, source);
  const fine = [
    "policyRoutes.get('/', requires('backup.view'), async (c) => { const { kv } = c.get('deps'); });",
    "const data = await getPolicyDetail(kv, actor, { policy, query }, now);",
    "export function RunsSection(props: { data: PolicyRuns; csrf: string }) {}",
    "async function policyPage(c: Context<AppEnv>, p: Policy) {}",
    "const kvs = (keys: string[]) => keys;",
  ];
  for (const source of fine) assert.deepEqual(kvPropFindings(source), [], source);
});

Deno.test("no component, page section or page helper in routes/*.tsx or components/ takes kv", async () => {
  const files = await pageSources();
  assert.ok(files.length > 40, `found the page sources (${files.length})`);
  const findings: string[] = [];
  for (const file of files) {
    for (const f of kvPropFindings(await Deno.readTextFile(`${ROOT}/${file}`))) findings.push(`${file}:${f}`);
  }
  assert.deepEqual(
    findings,
    [],
    "pages get their data from a read model (domain/read_models/) and pass props, never the KV handle",
  );
});
