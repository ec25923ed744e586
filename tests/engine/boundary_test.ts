import assert from "node:assert/strict";

const FORBIDDEN = ["domain/", "routes/", "components/", "islands/", "jobs/"];

async function* sources(dir: string): AsyncGenerator<string> {
  for await (const e of Deno.readDir(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory) yield* sources(p);
    else if (/\.(ts|tsx)$/.test(e.name)) yield p;
  }
}

Deno.test("nothing under engine/ imports from the control plane", async () => {
  const root = new URL("../../engine", import.meta.url).pathname;
  const offenders: string[] = [];
  let files = 0;
  for await (const file of sources(root)) {
    files++;
    const text = await Deno.readTextFile(file);
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*["']([^"']+)["']/g)) {
      const spec = m[1];
      if (!spec.startsWith(".")) continue;
      const resolved = new URL(spec, `file://${file}`).pathname;
      const rel = resolved.slice(new URL("../../", import.meta.url).pathname.length);
      if (FORBIDDEN.some((f) => rel.startsWith(f))) offenders.push(`${file}: ${spec}`);
    }
  }
  assert.ok(files > 5, "engine sources found");
  assert.deepEqual(offenders, []);
});
