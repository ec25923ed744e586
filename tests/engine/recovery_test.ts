import assert from "node:assert/strict";
import { WrongKeyError } from "../../engine/repo/errors.ts";
import {
  generateRecoveryKeyPair,
  openWithRecovery,
  recoveryKeyId,
  recoveryKeyIdOfPrivate,
  sealForRecovery,
} from "../../engine/repo/recovery.ts";

const aad = new TextEncoder().encode("cadres-key-v1\u0000repo\u0000ns");

Deno.test("recovery key: seal for the public half, open with the private half; ids agree", async () => {
  const pair = await generateRecoveryKeyPair();
  assert.match(pair.privatePem, /^-----BEGIN PRIVATE KEY-----\n/);
  assert.match(pair.publicPem, /^-----BEGIN PUBLIC KEY-----\n/);
  assert.equal(recoveryKeyId(pair.publicPem), pair.id);
  assert.equal(await recoveryKeyIdOfPrivate(pair.privatePem), pair.id);
  const secret = crypto.getRandomValues(new Uint8Array(64));
  const sealed = await sealForRecovery(pair.publicPem, secret, aad);
  assert.equal(sealed.encryptedKey.length, 384);
  assert.deepEqual(await openWithRecovery(pair.privatePem, sealed, aad), secret);
});

Deno.test("recovery key: another key, other additional data, or a flipped byte is refused", async () => {
  const pair = await generateRecoveryKeyPair();
  const other = await generateRecoveryKeyPair();
  assert.notEqual(pair.id, other.id);
  const sealed = await sealForRecovery(pair.publicPem, new Uint8Array([1, 2, 3]), aad);
  await assert.rejects(() => openWithRecovery(other.privatePem, sealed, aad), WrongKeyError);
  await assert.rejects(() => openWithRecovery(pair.privatePem, sealed, new Uint8Array([9])), WrongKeyError);
  const ct = sealed.ciphertext.slice();
  ct[0] ^= 1;
  await assert.rejects(
    () => openWithRecovery(pair.privatePem, { ...sealed, ciphertext: ct }, aad),
    WrongKeyError,
  );
  await assert.rejects(() => openWithRecovery("not a pem", sealed, aad), WrongKeyError);
  assert.throws(
    () => recoveryKeyId("-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----"),
    WrongKeyError,
  );
});
