import assert from "node:assert/strict";
import { createLogger, redact } from "../../domain/log.ts";

Deno.test("createLogger() masks secret-looking fields at any depth", () => {
  const lines: string[] = [];
  const logger = createLogger("info", (l) => lines.push(l));
  logger.log("debug", "dropped below the level", { password: "x" });
  logger.log("info", "event", {
    password: "hunter2-hunter2",
    nested: { apiToken: "cdt_abc", list: [{ cookie: "c=1" }], ok: "visible" },
    Authorization: "Bearer cdt_abc",
    route: "/login",
  });
  assert.equal(lines.length, 1);
  const entry = JSON.parse(lines[0]);
  assert.equal(entry.level, "info");
  assert.equal(entry.msg, "event");
  assert.equal(entry.password, "[redacted]");
  assert.equal(entry.Authorization, "[redacted]");
  assert.deepEqual(entry.nested, { apiToken: "[redacted]", list: [{ cookie: "[redacted]" }], ok: "visible" });
  assert.equal(entry.route, "/login");
  assert.deepEqual(redact({ secret: { a: 1 } }), { secret: "[redacted]" });
});
