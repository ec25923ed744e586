/**
 * Finds KV key literals outside the key modules (issue 19 item 1): array literals used as KV keys or
 * prefixes (`kv.get(["storage_targets", id])`, `kv.list({ prefix: ["runs"] })`…) in domain/, routes/ and
 * jobs/, except domain/keys/, where every key builder lives. tests/unit/key_literals_test.ts fails on one;
 * `deno run --allow-read tools/key_literals.ts` prints them as `file:line root`.
 *
 * A literal is an array literal whose first element is a string. It counts as a key literal when it stands
 * where KV takes a key (the argument of `.get(`, `.set(`, `.delete(`, `.check(`, `.getMany(`, `.sum(`,
 * `.min(`, `.max(`, a `key:`, `prefix:`, `start:`, `end:` property, or a `const …Key =`/`…Prefix =`) or when its first element is a
 * known key root. The roots are the first elements of the literals in domain/keys/, of the literals found
 * in a KV position anywhere, and of the literals returned by a function named `…Key`/`…Prefix`.
 */

export interface KeyLiteral {
  file: string;
  line: number;
  root: string;
}

/** The text with comments and the contents of strings other than plain `"…"`/`'…'` blanked, lines kept. */
export function stripComments(src: string): string {
  let out = "";
  let i = 0;
  while (i < src.length) {
    const c = src[i];
    const n = src[i + 1];
    if (c === "/" && n === "/") {
      while (i < src.length && src[i] !== "\n") {
        out += " ";
        i++;
      }
    } else if (c === "/" && n === "*") {
      while (i < src.length && !(src[i] === "*" && src[i + 1] === "/")) {
        out += src[i] === "\n" ? "\n" : " ";
        i++;
      }
      out += "  ";
      i += 2;
    } else if (c === '"' || c === "'") {
      out += c;
      i++;
      while (i < src.length && src[i] !== c && src[i] !== "\n") {
        if (src[i] === "\\") {
          out += "  ";
          i += 2;
          continue;
        }
        out += src[i];
        i++;
      }
      if (i < src.length) out += src[i++];
    } else if (c === "`") {
      // Template literals: blanked, `${…}` expressions kept (one level of braces).
      out += c;
      i++;
      while (i < src.length && src[i] !== "`") {
        if (src[i] === "\\") {
          out += "  ";
          i += 2;
        } else if (src[i] === "$" && src[i + 1] === "{") {
          let depth = 0;
          do {
            if (src[i] === "{") depth++;
            if (src[i] === "}") depth--;
            out += src[i];
            i++;
          } while (i < src.length && depth > 0);
        } else {
          out += src[i] === "\n" ? "\n" : " ";
          i++;
        }
      }
      if (i < src.length) out += src[i++];
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

const LITERAL = /\[\s*(["'])([a-z][a-z0-9_]*)\1/g;
const KV_POSITION =
  /(?:\.(?:get|set|delete|check|getMany|sum|min|max)\(\s*\[?\s*|\b(?:key|prefix|start|end):\s*|\b(?:const|let)\s+\w*(?:[kK]ey|[pP]refix)\w*\s*(?::[^=;]+)?=\s*)$/;
const BUILDER_RETURN =
  /function\s+\w*(?:Key|Prefix|Keys)\w*\s*(?:<[^>]*>)?\s*\([^)]*\)[^{]*\{[^{}]*?return\s*\[\s*(["'])([a-z][a-z0-9_]*)\1/g;

interface Found {
  line: number;
  root: string;
  kvPosition: boolean;
}

/** The string-first array literals of one (comment-stripped) source, not element accesses (`a["x"]`). */
export function arrayLiterals(text: string): Found[] {
  const found: Found[] = [];
  for (const m of text.matchAll(LITERAL)) {
    const at = m.index!;
    const before = text.slice(Math.max(0, at - 40), at);
    if (/[\w$)\]]\s*$/.test(before) && !/\breturn\s*$/.test(before)) continue; // element access
    found.push({
      line: text.slice(0, at).split("\n").length,
      root: m[2],
      kvPosition: KV_POSITION.test(before),
    });
  }
  return found;
}

/** The roots that builders declare: first elements of literals returned by a `…Key`/`…Prefix` function. */
export function builderRoots(text: string): string[] {
  return [...text.matchAll(BUILDER_RETURN)].map((m) => m[2]);
}

async function* sources(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) yield* sources(p);
    else if (/\.tsx?$/.test(e.name)) yield p;
  }
}

/** Every key literal in domain/, routes/, jobs/ outside domain/keys/, and the key roots, under `root`. */
export async function findKeyLiterals(root: string): Promise<{ literals: KeyLiteral[]; roots: Set<string> }> {
  const texts = new Map<string, string>();
  for (const dir of ["domain", "routes", "jobs"]) {
    for await (const p of sources(`${root}/${dir}`)) {
      texts.set(p.slice(root.length + 1), stripComments(await Deno.readTextFile(p)));
    }
  }
  const roots = new Set<string>();
  const perFile = new Map<string, Found[]>();
  for (const [file, text] of texts) {
    const found = arrayLiterals(text);
    perFile.set(file, found);
    for (const f of found) if (file.startsWith("domain/keys/") || f.kvPosition) roots.add(f.root);
    for (const r of builderRoots(text)) roots.add(r);
  }
  const literals: KeyLiteral[] = [];
  for (const [file, found] of perFile) {
    if (file.startsWith("domain/keys/")) continue;
    for (const f of found) {
      if (f.kvPosition || roots.has(f.root)) literals.push({ file, line: f.line, root: f.root });
    }
  }
  literals.sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line);
  return { literals, roots };
}

if (import.meta.main) {
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const { literals } = await findKeyLiterals(root);
  for (const l of literals) console.log(`${l.file}:${l.line} ${l.root}`);
  console.error(`${literals.length} key literals`);
}
