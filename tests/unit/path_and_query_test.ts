/** The signed path and query are taken from the request URL without parsing it again. */
import assert from "node:assert/strict";
import fc from "fast-check";
import { pathAndQuery } from "../../routes/engine_protocol.ts";

Deno.test("pathAndQuery gives what new URL(url).pathname + search gives, for any request URL", () => {
  fc.assert(
    fc.property(fc.webUrl({ withQueryParameters: true, withFragments: true }), (raw) => {
      // A request's URL is parsed and serialized: what Deno.serve and app.request hand over.
      const url = new Request(raw).url;
      const parsed = new URL(url);
      assert.equal(pathAndQuery(url), parsed.pathname + parsed.search);
    }),
    { numRuns: 2000 },
  );
  for (
    const url of [
      "http://127.0.0.1:8000/api/bes/v1/heartbeat",
      "http://h/a?b=//c",
      "http://h/",
      "http://h/a?",
      "http://h/a?#x",
      "http://h/a??",
      "http://h/a#?",
    ]
  ) {
    const parsed = new URL(url);
    assert.equal(pathAndQuery(url), parsed.pathname + parsed.search);
  }
});
