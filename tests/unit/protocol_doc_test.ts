/** docs/engine-protocol.md's worked examples must match the implementation, byte for byte. */
import assert from "node:assert/strict";
import nodeCrypto from "node:crypto";
import { sha256Hex, toBase64Url } from "../../domain/ids.ts";
import { canonicalString, importPublicKey, verifySignedRequest } from "../../domain/signing.ts";

const doc = await Deno.readTextFile(new URL("../../docs/engine-protocol.md", import.meta.url));

/** The doc between two headings (to the end when `end` is omitted). */
function section(start: string, end?: string): string {
  const i = doc.indexOf(start);
  assert.ok(i >= 0, `the doc has ${start}`);
  const j = end ? doc.indexOf(end, i) : doc.length;
  assert.ok(j > i, `the doc has ${end} after ${start}`);
  return doc.slice(i, j);
}

function after(text: string, label: string): string {
  const i = text.indexOf(label);
  assert.ok(i >= 0, `the doc mentions ${label}`);
  return text.slice(i + label.length);
}

/** The test key of the examples: the 32-byte seed 01 02 … 20. */
function testKey() {
  const seed = new Uint8Array(32).map((_, i) => i + 1);
  const pkcs8 = new Uint8Array([...Buffer.from("302e020100300506032b657004220420", "hex"), ...seed]);
  const privateKey = nodeCrypto.createPrivateKey({ key: Buffer.from(pkcs8), format: "der", type: "pkcs8" });
  const raw = new Uint8Array(nodeCrypto.createPublicKey(privateKey).export({ format: "der", type: "spki" }))
    .slice(12);
  return { privateKey, publicKey: toBase64Url(raw) };
}

/** Checks one worked example: body hash, canonical string, signature, headers; returns the body. */
function checkExample(
  text: string,
  example: { bodyPattern: RegExp; path: string; principal: string; timestamp: string; nonce: string },
): string {
  const { privateKey, publicKey } = testKey();
  const body = example.bodyPattern.exec(text)?.[1];
  assert.ok(body, "the doc shows the exact body");
  assert.ok(after(text, "SHA-256 of the body bytes: `").startsWith(sha256Hex(body)));

  const canonical = canonicalString(
    "POST",
    example.path,
    example.timestamp,
    example.nonce,
    new TextEncoder().encode(body),
  );
  const documented = /2\. Canonical string:\n\n {3}```\n([\s\S]*?)\n {3}```/.exec(text)?.[1].split("\n").map((
    l,
  ) => l.trim()).join("\n");
  assert.equal(documented, canonical);

  const signature = toBase64Url(
    new Uint8Array(nodeCrypto.sign(null, new TextEncoder().encode(canonical), privateKey)),
  );
  for (
    const header of [
      `POST ${example.path}`,
      `X-Cadres-Principal: ${example.principal}`,
      `X-Cadres-Timestamp: ${example.timestamp}`,
      `X-Cadres-Nonce: ${example.nonce}`,
      `X-Cadres-Signature: ${signature}`,
    ]
  ) {
    assert.ok(text.includes(header), `the documented request has ${header} (the signature is the real one)`);
  }
  const check = verifySignedRequest(
    importPublicKey(publicKey),
    {
      method: "POST",
      pathAndQuery: example.path,
      timestamp: example.timestamp,
      nonce: example.nonce,
      signature,
    },
    new TextEncoder().encode(body),
    new Date(Number(example.timestamp) * 1000),
  );
  assert.deepEqual(check, { ok: true });
  return body;
}

Deno.test("docs/engine-protocol.md: the documented public key is the one of the documented seed", () => {
  assert.ok(section("### Worked example").includes(testKey().publicKey));
});

Deno.test("docs/engine-protocol.md registration example is signed by the key it registers, as documented", () => {
  const body = checkExample(section("#### Registration example", "#### Heartbeat example"), {
    bodyPattern: /```\n(\{"name":"bes-hq-01".*\})\n```/,
    path: "/api/bes/v1/register",
    principal: "bes:register",
    timestamp: "1795330740",
    nonce: "Zr9Kp2vQx7LmN4tB8wYc3A",
  });
  assert.equal(JSON.parse(body).publicKey, testKey().publicKey, "the body registers the signing key");
});

Deno.test("docs/engine-protocol.md heartbeat example signs and verifies as documented", () => {
  checkExample(section("#### Heartbeat example"), {
    bodyPattern: /```\n(\{"version":"2\.4\.1".*\})\n```/,
    path: "/api/bes/v1/heartbeat",
    principal: "bes:01KAHZ3Y3N4G2D8QF5T0V7W9XB",
    timestamp: "1795330800",
    nonce: "q8Jv3xM1cT0pQ2rS9uWk1A",
  });
});
