/**
 * A script's new body is checked against the hooks that run it whatever was imported first (issue 19
 * item 3): the check was a callback hooks.ts registered in scripts.ts when it loaded, so a program that
 * imported scripts.ts without hooks.ts saved a body too big for its policies' backup jobs. scripts.ts now
 * imports the check from hooks.ts; the worker imports only scripts.ts in a fresh module graph.
 */
import assert from "node:assert/strict";

const WORKER = new URL("../fixtures/script_body_alone_worker.ts", import.meta.url);

Deno.test("updateScript() refuses a body too big for its hooks when only scripts.ts was imported", async () => {
  const worker = new Worker(WORKER, { type: "module" });
  const result = await new Promise<Record<string, unknown>>((resolve, reject) => {
    worker.onmessage = (e: MessageEvent<Record<string, unknown>>) => resolve(e.data);
    worker.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      reject(new Error(e.message));
    };
    worker.postMessage("go");
  }).finally(() => worker.terminate());
  assert.equal(result.ok, false, "the update is refused");
  assert.equal(result.name, "ValidationError");
  assert.match(
    String(result.message),
    /The hooks of policy db-servers would come to \d+ KB, more than the 40 KB/,
  );
  assert.ok((result.fields as Record<string, string>).body, JSON.stringify(result.fields));
  assert.equal(result.bodyUnchanged, true, "the stored body is unchanged");
});
