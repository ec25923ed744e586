/** docs/engine-protocol.md's worked example must match the implementation, byte for byte. */
import assert from "node:assert/strict";
import nodeCrypto from "node:crypto";
import { sha256Hex, toBase64Url } from "../../domain/ids.ts";
import { canonicalString, importPublicKey, verifySignedRequest } from "../../domain/signing.ts";

const doc = await Deno.readTextFile(new URL("../../docs/engine-protocol.md", import.meta.url));

function after(label: string): string {
  const i = doc.indexOf(label);
  assert.ok(i >= 0, `the doc mentions ${label}`);
  return doc.slice(i + label.length);
}

Deno.test("docs/engine-protocol.md worked example signs and verifies as documented", () => {
  const seed = new Uint8Array(32).map((_, i) => i + 1);
  const pkcs8 = new Uint8Array([...Buffer.from("302e020100300506032b657004220420", "hex"), ...seed]);
  const privateKey = nodeCrypto.createPrivateKey({ key: Buffer.from(pkcs8), format: "der", type: "pkcs8" });
  const raw = new Uint8Array(nodeCrypto.createPublicKey(privateKey).export({ format: "der", type: "spki" }))
    .slice(12);
  const publicKey = toBase64Url(raw);
  assert.ok(doc.includes(publicKey), "the documented public key is the one of the documented seed");

  const body = /```\n(\{"version":"2\.4\.1".*\})\n```/.exec(doc)?.[1];
  assert.ok(body, "the doc shows the exact body");
  const bodyHash = sha256Hex(body);
  assert.ok(after("SHA-256 of the body bytes: `").startsWith(bodyHash));

  const canonical = canonicalString(
    "POST",
    "/api/bes/v1/heartbeat",
    "1795330800",
    "q8Jv3xM1cT0pQ2rS9uWk1A",
    new TextEncoder().encode(body),
  );
  const documented = /2\. Canonical string:\n\n {3}```\n([\s\S]*?)\n {3}```/.exec(doc)?.[1].split("\n").map((
    l,
  ) => l.trim()).join("\n");
  assert.equal(documented, canonical);

  const signature = toBase64Url(
    new Uint8Array(nodeCrypto.sign(null, new TextEncoder().encode(canonical), privateKey)),
  );
  assert.ok(doc.includes(`X-Cadres-Signature: ${signature}`), "the documented signature is the real one");
  const check = verifySignedRequest(
    importPublicKey(publicKey),
    {
      method: "POST",
      pathAndQuery: "/api/bes/v1/heartbeat",
      timestamp: "1795330800",
      nonce: "q8Jv3xM1cT0pQ2rS9uWk1A",
      signature,
    },
    new TextEncoder().encode(body),
    new Date("2026-11-22T07:00:00Z"),
  );
  assert.deepEqual(check, { ok: true });
});
