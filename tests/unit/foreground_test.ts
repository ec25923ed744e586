/**
 * Background work gives way to console requests (domain/foreground.ts): the count of console requests in
 * flight per KV, waiting for them to finish (bounded), and which requests the app counts.
 */
import assert from "node:assert/strict";
import { consoleBusy, consoleRequest, giveWayToConsole } from "../../domain/foreground.ts";

Deno.test("giveWayToConsole() returns at once when the console is idle, on idle when busy, and never waits past its bound", async () => {
  using kv = await Deno.openKv(":memory:");
  assert.equal(consoleBusy(kv), false);
  assert.equal(await giveWayToConsole(kv, 1000), false, "idle: no wait");
  const first = consoleRequest(kv);
  const second = consoleRequest(kv);
  assert.equal(consoleBusy(kv), true);
  let released = false;
  const waiting = giveWayToConsole(kv, 10_000).then((waited) => {
    released = true;
    return waited;
  });
  first();
  first(); // ending twice counts once
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(released, false, "one request is still in flight");
  second();
  assert.equal(await waiting, true);
  assert.equal(consoleBusy(kv), false);
  // Bounded: a console that never goes idle delays background work by at most maxWaitMs.
  const stuck = consoleRequest(kv);
  const started = performance.now();
  assert.equal(await giveWayToConsole(kv, 30), true);
  const waited = performance.now() - started;
  assert.ok(waited >= 25 && waited < 1000, `waited ${waited.toFixed(0)} ms`);
  stuck();
  // Another KV's console does not hold this one.
  using other = await Deno.openKv(":memory:");
  const elsewhere = consoleRequest(other);
  assert.equal(consoleBusy(kv), false);
  elsewhere();
});
