/**
 * The OpenAPI document is pinned byte for byte: tests/fixtures/openapi.snapshot.json is the document
 * `/api/openapi.json` serves (the JSON text of `openApiDocument`). A refactor of the route files (prefixes,
 * shared schemas) must leave it identical; a change to the API itself updates the snapshot on purpose:
 * `UPDATE_OPENAPI_SNAPSHOT=1 deno test -A tests/unit/openapi_snapshot_test.ts`, then review the diff.
 */
import assert from "node:assert/strict";
import { createApp, openApiDocument } from "../../app.ts";
import { testConfig } from "../../domain/config.ts";
import { sha256Hex } from "../../domain/ids.ts";
import { createLogger } from "../../domain/log.ts";

const SNAPSHOT = new URL("../fixtures/openapi.snapshot.json", import.meta.url);

/** The document's text, as the docs route serves it (`c.json` is `JSON.stringify`), plus a final newline. */
async function documentText(): Promise<string> {
  using kv = await Deno.openKv(":memory:");
  const app = createApp({ kv, config: testConfig(), logger: createLogger("error") });
  return JSON.stringify(openApiDocument(app), null, 2) + "\n";
}

Deno.test("the OpenAPI document is byte-identical to the pinned snapshot", async () => {
  const text = await documentText();
  if (Deno.env.get("UPDATE_OPENAPI_SNAPSHOT") === "1") await Deno.writeTextFile(SNAPSHOT, text);
  const pinned = await Deno.readTextFile(SNAPSHOT);
  if (text !== pinned) {
    // The first differing line, so the failure says where (the hashes alone would not).
    const [a, b] = [text.split("\n"), pinned.split("\n")];
    const line = a.findIndex((l, i) => l !== b[i]);
    assert.fail(
      `the OpenAPI document differs from tests/fixtures/openapi.snapshot.json at line ${line + 1}:\n` +
        `  now:    ${a[line]}\n  pinned: ${b[line]}\n` +
        `(sha-256 now ${sha256Hex(text)}, pinned ${sha256Hex(pinned)}; an intended API change: rerun with ` +
        "UPDATE_OPENAPI_SNAPSHOT=1 and review the diff)",
    );
  }
});

Deno.test("/api/openapi.json serves exactly the pinned document", async () => {
  using kv = await Deno.openKv(":memory:");
  const app = createApp({ kv, config: testConfig(), logger: createLogger("error") });
  const served = await (await app.request("http://localhost:8000/api/openapi.json")).text();
  const pinned = await Deno.readTextFile(SNAPSHOT);
  assert.equal(served, JSON.stringify(JSON.parse(pinned)), "the served bytes are the snapshot's, compact");
});
