import assert from "node:assert/strict";
import { parseConfig, testConfig } from "../../domain/config.ts";
import {
  CHEAP_ARGON2,
  DUMMY_HASH,
  dummyHashFor,
  hashPassword,
  PRODUCTION_ARGON2,
  verifyPassword,
} from "../../domain/passwords.ts";
import { systemActor } from "../../domain/rbac.ts";
import { createUser } from "../../domain/users.ts";
import { addUser, createTenant, PASSWORD } from "../helpers.ts";

/** The `m=…,t=…,p=…` parameters of an encoded argon2id hash. */
function paramsOf(encoded: string): string {
  const match = /^\$argon2id\$v=19\$(m=\d+,t=\d+,p=\d+)\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/.exec(encoded);
  assert.ok(match, `not an encoded argon2id hash: ${encoded}`);
  return match[1];
}

Deno.test("production hashing is OWASP's argon2id minimum (19 MiB, 2 iterations, 1 lane) and is the default", async () => {
  assert.deepEqual({ ...PRODUCTION_ARGON2 }, {
    parallelism: 1,
    iterations: 2,
    memorySize: 19456,
    hashLength: 32,
  });
  assert.ok(Object.isFrozen(PRODUCTION_ARGON2));
  assert.equal(paramsOf(await hashPassword("correct horse battery")), "m=19456,t=2,p=1");
  // The unknown-email dummy is unchanged: it costs what a production user's verification costs.
  assert.equal(
    DUMMY_HASH,
    "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
  );
});

Deno.test("no environment variable changes the production cost; only testConfig() makes hashing cheap", () => {
  const parsed = parseConfig({ CADRES_PASSWORD_HASHING: "cheap", CADRES_ARGON2_MEMORY: "8" });
  assert.ok(parsed.ok);
  assert.equal(parsed.config.passwordHashing, undefined); // absent means PRODUCTION_ARGON2
  assert.deepEqual(testConfig().passwordHashing, CHEAP_ARGON2);
  assert.deepEqual({ ...CHEAP_ARGON2 }, { parallelism: 1, iterations: 1, memorySize: 8, hashLength: 32 });
});

Deno.test("a cheap hash verifies like a production one, and a wrong password or malformed hash does not", async () => {
  const cheap = await hashPassword("correct horse battery", CHEAP_ARGON2);
  assert.equal(paramsOf(cheap), "m=8,t=1,p=1");
  assert.equal(await verifyPassword("correct horse battery", cheap), true);
  assert.equal(await verifyPassword("correct horse batterY", cheap), false);
  const production = await hashPassword("correct horse battery");
  assert.equal(await verifyPassword("correct horse battery", production), true);
  assert.equal(await verifyPassword("correct horse battery", "$argon2id$garbage"), false);
  // Fresh salt each time.
  assert.notEqual(await hashPassword("same", CHEAP_ARGON2), await hashPassword("same", CHEAP_ARGON2));
});

Deno.test("the dummy hash of any parameters is well-formed, carries those parameters and matches nothing", async () => {
  for (const params of [PRODUCTION_ARGON2, CHEAP_ARGON2]) {
    const dummy = dummyHashFor(params);
    assert.equal(paramsOf(dummy), `m=${params.memorySize},t=${params.iterations},p=${params.parallelism}`);
    for (const guess of ["", "a", "correct horse battery", "AAAA"]) {
      assert.equal(await verifyPassword(guess, dummy), false);
    }
  }
});

Deno.test("createUser() hashes at production cost unless given the tests' cost", async () => {
  using kv = await Deno.openKv(":memory:");
  const now = new Date("2026-11-22T10:00:00Z");
  const tenant = await createTenant(kv, "Acme", ["Prod"], now);
  const actor = systemActor("test");
  const base = { accountId: tenant.account.id, role: "viewer" as const, orgScope: "all" as const };
  const production = await createUser(kv, actor, {
    ...base,
    email: "prod@acme.example",
    name: "Prod",
    password: PASSWORD,
  }, now);
  assert.equal(paramsOf(production.passwordHash), "m=19456,t=2,p=1");
  const cheap = await addUser(kv, tenant, "cheap@acme.example", "viewer", "all", now);
  assert.equal(paramsOf(cheap.passwordHash), "m=8,t=1,p=1");
});
