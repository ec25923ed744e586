/** Engine protocol v1 signatures (DESIGN.md §5): canonical string, verification, skew, tampering. */
import assert from "node:assert/strict";
import { sha256Hex } from "../../domain/ids.ts";
import {
  canonicalString,
  generateKeyPair,
  importPublicKey,
  MAX_SKEW_SECONDS,
  SIGNATURE_HEADERS,
  signRequest,
  verifySignedRequest,
} from "../../domain/signing.ts";

const NOW = new Date("2026-11-22T10:00:00Z");
const PATH = "/api/bes/v1/heartbeat";
const encode = (s: string) => new TextEncoder().encode(s);
const BODY = encode('{"version":"1.0.0"}');

/** Signs a request at `signedAt` and returns what the server sees. */
async function signed(options: { path?: string; body?: Uint8Array; signedAt?: Date; method?: string } = {}) {
  const pair = generateKeyPair();
  const headers = await signRequest(
    pair.privateKey,
    "bes:01JTESTENGINE0000000000000",
    options.method ?? "POST",
    options.path ?? PATH,
    options.body ?? BODY,
    options.signedAt ?? NOW,
  );
  return {
    key: await importPublicKey(pair.publicKey),
    request: {
      method: options.method ?? "POST",
      pathAndQuery: options.path ?? PATH,
      timestamp: headers[SIGNATURE_HEADERS.timestamp],
      nonce: headers[SIGNATURE_HEADERS.nonce],
      signature: headers[SIGNATURE_HEADERS.signature],
    },
    headers,
  };
}

Deno.test("canonicalString() is CADRES-V1, upper-case method, path and query, timestamp, nonce, hex sha256 of the body", async () => {
  const body = encode('{"a":1}');
  const text = await canonicalString(
    "post",
    "/api/bes/v1/heartbeat?x=1&y=2",
    "1795341600",
    "bm9uY2Vub25jZW5vbmNlMTIz",
    body,
  );
  assert.equal(
    text,
    `CADRES-V1\nPOST\n/api/bes/v1/heartbeat?x=1&y=2\n1795341600\nbm9uY2Vub25jZW5vbmNlMTIz\n${
      sha256Hex(
        body,
      )
    }`,
  );
  // The empty body hashes to the well-known SHA-256 of nothing.
  const empty = await canonicalString("GET", "/p", "1", "n", new Uint8Array());
  assert.equal(
    empty.split("\n").at(-1),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
  assert.equal(empty.split("\n").length, 6);
});

Deno.test("signRequest() sends the principal, unix-seconds timestamp, a ≥16-byte base64url nonce and a signature", async () => {
  const { headers } = await signed();
  assert.equal(headers[SIGNATURE_HEADERS.principal], "bes:01JTESTENGINE0000000000000");
  assert.equal(headers[SIGNATURE_HEADERS.timestamp], String(NOW.getTime() / 1000));
  assert.match(headers[SIGNATURE_HEADERS.nonce], /^[A-Za-z0-9_-]{22,}$/);
  assert.match(headers[SIGNATURE_HEADERS.signature], /^[A-Za-z0-9_-]{86}$/);
  const again = await signed();
  assert.notEqual(again.headers[SIGNATURE_HEADERS.nonce], headers[SIGNATURE_HEADERS.nonce]);
});

Deno.test("verifySignedRequest() accepts a correctly signed request", async () => {
  const { key, request } = await signed();
  assert.deepEqual(await verifySignedRequest(key, request, BODY, NOW), { ok: true });
  // The method is compared case-insensitively (it is upper-cased in the canonical string).
  assert.deepEqual(await verifySignedRequest(key, { ...request, method: "post" }, BODY, NOW), { ok: true });
});

Deno.test("verifySignedRequest() refuses a signature made with another key", async () => {
  const { request } = await signed();
  const other = generateKeyPair();
  assert.deepEqual(
    await verifySignedRequest(await importPublicKey(other.publicKey), request, BODY, NOW),
    { ok: false, reason: "bad_signature" },
  );
});

Deno.test("verifySignedRequest() refuses a tampered body", async () => {
  const { key, request } = await signed();
  assert.deepEqual(
    await verifySignedRequest(key, request, encode('{"version":"6.6.6"}'), NOW),
    { ok: false, reason: "bad_signature" },
  );
  assert.deepEqual(await verifySignedRequest(key, request, new Uint8Array(), NOW), {
    ok: false,
    reason: "bad_signature",
  });
});

Deno.test("verifySignedRequest() refuses a tampered path, query or method", async () => {
  const { key, request } = await signed({ path: "/api/bes/v1/heartbeat?full=1" });
  assert.deepEqual(await verifySignedRequest(key, request, BODY, NOW), { ok: true });
  for (
    const tampered of [
      { pathAndQuery: "/api/bes/v1/register?full=1" },
      { pathAndQuery: "/api/bes/v1/heartbeat?full=0" },
      { pathAndQuery: "/api/bes/v1/heartbeat" },
      { pathAndQuery: "/api/bes/v1/heartbeat?full=1&extra=2" },
      { method: "PUT" },
    ]
  ) {
    assert.deepEqual(
      await verifySignedRequest(key, { ...request, ...tampered }, BODY, NOW),
      { ok: false, reason: "bad_signature" },
      JSON.stringify(tampered),
    );
  }
});

Deno.test("verifySignedRequest() refuses a tampered timestamp or nonce inside the skew window", async () => {
  const { key, request } = await signed();
  const ts = Number(request.timestamp);
  for (const timestamp of [String(ts + 1), String(ts - 1), String(ts + 60)]) {
    assert.deepEqual(
      await verifySignedRequest(key, { ...request, timestamp }, BODY, NOW),
      { ok: false, reason: "bad_signature" },
    );
  }
  const nonce = request.nonce.slice(0, -1) + (request.nonce.endsWith("A") ? "B" : "A");
  assert.deepEqual(await verifySignedRequest(key, { ...request, nonce }, BODY, NOW), {
    ok: false,
    reason: "bad_signature",
  });
});

Deno.test("verifySignedRequest() refuses timestamps more than 300 s off the server clock, past or future", async () => {
  assert.equal(MAX_SKEW_SECONDS, 300);
  const at = (seconds: number) => new Date(NOW.getTime() + seconds * 1000);
  for (const offset of [-301, 301, -3600, 86_400]) {
    const { key, request } = await signed({ signedAt: at(offset) });
    assert.deepEqual(
      await verifySignedRequest(key, request, BODY, NOW),
      { ok: false, reason: "skew" },
      `offset ${offset} s`,
    );
  }
  for (const offset of [-300, -299, 299, 300]) {
    const { key, request } = await signed({ signedAt: at(offset) });
    assert.deepEqual(await verifySignedRequest(key, request, BODY, NOW), { ok: true }, `offset ${offset} s`);
  }
});

Deno.test("verifySignedRequest() answers malformed for bad timestamp, nonce or signature headers", async () => {
  const { key, request } = await signed();
  const cases: Array<Partial<typeof request>> = [
    { timestamp: "" },
    { timestamp: "12.5" },
    { timestamp: "-1795341600" },
    { timestamp: "1795341600abc" },
    { nonce: "" },
    { nonce: "short" },
    { nonce: "a".repeat(21) }, // 21 chars < 16 bytes
    { nonce: "a".repeat(129) },
    { nonce: request.nonce.slice(0, 20) + "+/" + request.nonce.slice(22) }, // base64, not base64url
    { nonce: request.nonce + "!" },
    { signature: "" },
    { signature: request.signature.slice(1) },
    { signature: request.signature + "A" },
    { signature: request.signature.replace(/^./, "+") },
    { signature: "%%%" },
  ];
  for (const bad of cases) {
    assert.deepEqual(
      await verifySignedRequest(key, { ...request, ...bad }, BODY, NOW),
      { ok: false, reason: "malformed" },
      JSON.stringify(bad),
    );
  }
  // Malformed wins over skew: a broken header is reported as such even far outside the window.
  const { key: k2, request: r2 } = await signed({ signedAt: new Date(NOW.getTime() - 3600_000) });
  assert.deepEqual(await verifySignedRequest(k2, { ...r2, nonce: "x" }, BODY, NOW), {
    ok: false,
    reason: "malformed",
  });
});

Deno.test("importPublicKey() refuses keys that are not base64url of 32 raw bytes", async () => {
  const { publicKey } = generateKeyPair();
  assert.ok(await importPublicKey(publicKey));
  for (const bad of ["", "abc", publicKey.slice(1), publicKey + "AA", publicKey.replace(/^./, "+")]) {
    // Works whether importPublicKey throws or returns a rejected promise.
    await assert.rejects(async () => await importPublicKey(bad), /32-byte Ed25519 key/);
  }
});
