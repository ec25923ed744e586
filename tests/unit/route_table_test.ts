/**
 * app.ts is the route table: every JSON API and engine protocol router is mounted at its own prefix there, and
 * its route files declare paths relative to it. A route file that spells a full path again (`path:
 * "/api/v1/…"`) — or app.ts mounting one of them at "/" — would bring back the layout where no single place
 * says which prefix serves what.
 */
import assert from "node:assert/strict";

const root = new URL("../../", import.meta.url);

async function routeFiles(): Promise<string[]> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(new URL("routes/", root))) {
    if (entry.isFile && /^(api_v1_|engine_)\w+\.ts$/.test(entry.name)) names.push(`routes/${entry.name}`);
  }
  return names.sort();
}

Deno.test("API and engine protocol route files declare their paths relative to their prefix", async () => {
  const files = await routeFiles();
  assert.ok(files.length >= 30, `found the route files (${files.length})`);
  const absolute: string[] = [];
  for (const file of files) {
    const lines = (await Deno.readTextFile(new URL(file, root))).split("\n");
    lines.forEach((line, i) => {
      if (/\bpath: ["'`]\/api\//.test(line)) absolute.push(`${file}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(absolute, [], "a route's path is relative to the prefix app.ts mounts its router at");
});

Deno.test("app.ts mounts every API and engine protocol router at its own prefix, not at /", async () => {
  const app = await Deno.readTextFile(new URL("app.ts", root));
  const atRoot = [...app.matchAll(/app\.route\("\/", (\w+)/g)].map((m) => m[1]);
  const protocolOrApi = atRoot.filter((name) => /^(apiV1|besx?|agent|engine)/i.test(name));
  assert.deepEqual(protocolOrApi, [], "no API or protocol router is mounted at /");
  const mounted = [...app.matchAll(/app\.route\("(\/api\/[^"]+)", (\w+)\)/g)].map((m) => m[1]);
  assert.ok(mounted.length >= 50, `app.ts mounts the API resources (${mounted.length})`);
});
