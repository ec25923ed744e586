/** The engine protocol's nonce claim and registration failure limit, as domain functions (issue 19 item 4). */
import assert from "node:assert/strict";
import {
  claimNonce,
  NONCE_TTL_MS,
  principalNonceKey,
  registrationNonceKey,
} from "../../domain/engine_nonces.ts";
import {
  recordRegistrationFailure,
  REGISTRATION_MAX_FAILURES,
  REGISTRATION_WINDOW_MS,
  registrationRetryAfter,
} from "../../domain/rate_limit.ts";

Deno.test("nonce keys: one per principal and nonce, registrations under the key they register", () => {
  assert.deepEqual(principalNonceKey("bes", "01ABC", "n1"), ["nonces", "bes:01ABC", "n1"]);
  assert.deepEqual(principalNonceKey("agent", "01ABC", "n1"), ["nonces", "agent:01ABC", "n1"]);
  assert.deepEqual(registrationNonceKey("bes", "pk", "n1"), ["nonces", "bes:register:pk", "n1"]);
  assert.deepEqual(registrationNonceKey("agent", "pk", "n1"), ["nonces", "agent:enroll:pk", "n1"]);
  assert.equal(NONCE_TTL_MS, 900_000);
});

Deno.test("claimNonce: the first claim wins, a replay is refused and changes nothing", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const key = principalNonceKey("bes", "01ABC", "n1");
    const now = new Date("2026-01-01T00:00:00Z");
    assert.equal(await claimNonce(kv, key, now), true);
    const first = await kv.get(key);
    assert.equal(first.value, now.getTime());
    assert.equal(await claimNonce(kv, key, new Date(now.getTime() + 1000)), false);
    assert.deepEqual(await kv.get(key), first);
    assert.equal(await claimNonce(kv, principalNonceKey("bes", "01ABC", "n2"), now), true);
  } finally {
    kv.close();
  }
});

Deno.test("claimNonce race: of concurrent claims of one nonce exactly one wins", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    for (let i = 0; i < 100; i++) {
      const key = principalNonceKey("agent", "01XYZ", `n${i}`);
      const wins = await Promise.all(Array.from({ length: 8 }, () => claimNonce(kv, key, new Date())));
      assert.equal(wins.filter((w) => w).length, 1, `iteration ${i}`);
    }
  } finally {
    kv.close();
  }
});

Deno.test("registration failures: refused after the limit with the seconds to the window's end", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const start = new Date(
      Math.floor(Date.UTC(2026, 0, 1) / REGISTRATION_WINDOW_MS) * REGISTRATION_WINDOW_MS,
    );
    const now = new Date(start.getTime() + 60_000);
    for (let i = 0; i < REGISTRATION_MAX_FAILURES; i++) {
      assert.equal(await registrationRetryAfter(kv, "192.0.2.1", now), null, `failure ${i} still allowed`);
      await recordRegistrationFailure(kv, "192.0.2.1", now);
    }
    assert.equal(
      await registrationRetryAfter(kv, "192.0.2.1", now),
      (REGISTRATION_WINDOW_MS - 60_000) / 1000,
    );
    // Another address and the next window are not limited.
    assert.equal(await registrationRetryAfter(kv, "192.0.2.2", now), null);
    assert.equal(
      await registrationRetryAfter(kv, "192.0.2.1", new Date(start.getTime() + REGISTRATION_WINDOW_MS)),
      null,
    );
  } finally {
    kv.close();
  }
});
