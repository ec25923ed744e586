import assert from "node:assert/strict";
import nodeCrypto from "node:crypto";
import {
  type DataTokenClaims,
  DataTokenError,
  exportTokenPublicKey,
  importTokenPublicKey,
  signDataToken,
  verifyDataToken,
} from "../../engine/protocol/token.ts";

const now = new Date("2026-12-06T10:00:00Z");
const t = Math.floor(now.getTime() / 1000);
const claims: DataTokenClaims = {
  v: 1,
  job: "run_1",
  host: "host_1",
  bes: "bes_1",
  repository: { target: "tgt_1", path: "cadres/pol_1/g1", generation: 1 },
  namespace: "host_1",
  access: "write",
  iat: t,
  exp: t + 300,
};

function reason(f: () => unknown): string {
  try {
    f();
  } catch (e) {
    if (e instanceof DataTokenError) return e.reason;
    throw e;
  }
  return "accepted";
}

Deno.test("data token: signed by the control plane, verified by the BES with the raw public key", () => {
  const pair = nodeCrypto.generateKeyPairSync("ed25519");
  const pub = importTokenPublicKey(exportTokenPublicKey(pair.publicKey));
  const token = signDataToken(pair.privateKey, claims);
  assert.deepEqual(verifyDataToken(pub, token, now), claims);
});

Deno.test("data token: refused when signed by another key, tampered, expired, too long or malformed", () => {
  const pair = nodeCrypto.generateKeyPairSync("ed25519");
  const other = nodeCrypto.generateKeyPairSync("ed25519");
  const token = signDataToken(pair.privateKey, claims);
  assert.deepEqual(reason(() => verifyDataToken(other.publicKey, token, now)), "bad_signature");
  const [p, body, sig] = token.split(".");
  const forged = JSON.parse(new TextDecoder().decode(Uint8Array.fromBase64(body, { alphabet: "base64url" })));
  forged.access = "write";
  forged.namespace = "host_2";
  const forgedBody = new TextEncoder().encode(JSON.stringify(forged)).toBase64({
    alphabet: "base64url",
    omitPadding: true,
  });
  assert.deepEqual(
    reason(() => verifyDataToken(pair.publicKey, `${p}.${forgedBody}.${sig}`, now)),
    "bad_signature",
  );
  assert.deepEqual(
    reason(() => verifyDataToken(pair.publicKey, token, new Date((t + 300) * 1000))),
    "expired",
  );
  assert.deepEqual(
    reason(() => verifyDataToken(pair.publicKey, token, new Date((t - 120) * 1000))),
    "not_yet_valid",
  );
  const long = signDataToken(pair.privateKey, { ...claims, exp: t + 3600 });
  assert.deepEqual(reason(() => verifyDataToken(pair.publicKey, long, now)), "too_long");
  for (const bad of ["", "x.y.z", `cdt1.${body}`, `cdt1.${body}.!!`, `cdt1.e30.${sig}`]) {
    assert.notEqual(reason(() => verifyDataToken(pair.publicKey, bad, now)), "accepted", bad);
  }
  assert.throws(() => importTokenPublicKey("AAAA"));
});
