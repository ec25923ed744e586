/**
 * Every domain/ module loads on its own (issue 19 item 3). An import cycle makes load order depend on
 * which module is imported first: drills.ts once read `RestorePath` from restore.ts while restore.ts,
 * imported first, was still waiting on runs → drills, and loading restore.ts alone failed with
 * "ReferenceError: Cannot access 'RestorePath' before initialization". Each module is imported as the
 * first module of a fresh module graph (one worker each), so every load order a program can start with
 * is tried.
 */
import assert from "node:assert/strict";

const ROOT = new URL("../..", import.meta.url);
const WORKER = new URL("../fixtures/load_module_worker.ts", import.meta.url);

type LoadResult = { ok: true } | { ok: false; name: string; message: string };

async function* sources(dir: URL): AsyncGenerator<URL> {
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) yield* sources(new URL(`${e.name}/`, dir));
    else if (/\.(ts|tsx)$/.test(e.name)) yield new URL(e.name, dir);
  }
}

function loadAlone(module: URL): Promise<LoadResult> {
  const worker = new Worker(WORKER, { type: "module" });
  return new Promise<LoadResult>((resolve) => {
    worker.onmessage = (e: MessageEvent<LoadResult>) => resolve(e.data);
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      resolve({ ok: false, name: "Error", message: e.message });
    };
    worker.postMessage(module.href);
  }).finally(() => worker.terminate());
}

Deno.test("the worker reports a load-order ReferenceError", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // a.ts → b.ts → a.ts, and b.ts reads a.ts's constant at load: importing a.ts first fails.
    await Deno.writeTextFile(
      `${dir}/a.ts`,
      'import { B } from "./b.ts";\nexport const A = 1;\nexport { B };\n',
    );
    await Deno.writeTextFile(`${dir}/b.ts`, 'import { A } from "./a.ts";\nexport const B = A + 1;\n');
    const first = await loadAlone(new URL(`file://${dir}/a.ts`));
    assert.equal(first.ok, false);
    assert.equal((first as { name: string }).name, "ReferenceError");
    assert.deepEqual(await loadAlone(new URL(`file://${dir}/b.ts`)), { ok: true });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test({
  name: "every domain/ module loads alone in a fresh module graph",
  // Loads each module with its whole import graph: slow on a busy machine, never timing-dependent.
  fn: async () => {
    const modules: URL[] = [];
    for await (const m of sources(new URL("domain/", ROOT))) modules.push(m);
    modules.sort((a, b) => a.href < b.href ? -1 : 1);
    assert.ok(modules.length > 50, `domain modules found (${modules.length})`);
    const failures: string[] = [];
    let next = 0;
    const loadNext = async () => {
      while (next < modules.length) {
        const m = modules[next++];
        const r = await loadAlone(m);
        if (!r.ok) failures.push(`${m.pathname.slice(ROOT.pathname.length)}: ${r.name}: ${r.message}`);
      }
    };
    await Promise.all([loadNext(), loadNext()]);
    assert.deepEqual(failures.sort(), []);
  },
});
