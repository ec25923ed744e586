import assert from "node:assert/strict";
import { ForbiddenError, NotFoundError } from "../../domain/errors.ts";
import {
  type Actor,
  authorize,
  can,
  inScope,
  permissionsOf,
  scopeCovers,
  systemActor,
} from "../../domain/rbac.ts";
import { ROLE_PERMISSIONS, ROLES } from "../../domain/types.ts";

function actor(overrides: Partial<Actor> = {}): Actor {
  return {
    kind: "user",
    id: "u1",
    label: "u1@example.com",
    accountId: "acc1",
    role: "admin",
    permissions: permissionsOf("admin"),
    orgScope: "all",
    ...overrides,
  };
}

Deno.test("permissionsOf() grants view to every role and admin only to admin", () => {
  for (const role of ROLES) {
    assert.ok(permissionsOf(role).has("backup.view"), role);
    assert.equal(permissionsOf(role).has("admin"), role === "admin", role);
  }
  assert.deepEqual([...permissionsOf("restore_operator")].sort(), ["backup.restore", "backup.view"]);
  assert.deepEqual([...permissionsOf("operator")].sort(), ["backup.manage", "backup.view"]);
  assert.equal(Object.keys(ROLE_PERMISSIONS).length, ROLES.length);
});

Deno.test("scopeCovers() compares org scopes", () => {
  assert.equal(scopeCovers("all", "all"), true);
  assert.equal(scopeCovers("all", ["a"]), true);
  assert.equal(scopeCovers(["a"], "all"), false);
  assert.equal(scopeCovers(["a", "b"], ["b"]), true);
  assert.equal(scopeCovers(["a"], ["a", "b"]), false);
});

Deno.test("inScope() hides other accounts and orgs outside the scope", () => {
  const restricted = actor({ orgScope: ["o1"] });
  assert.equal(inScope(restricted, { accountId: "acc1", orgId: "o1" }), true);
  assert.equal(inScope(restricted, { accountId: "acc1", orgId: "o2" }), false);
  assert.equal(inScope(restricted, { accountId: "acc2", orgId: "o1" }), false);
  assert.equal(
    inScope(restricted, { accountId: "acc1", orgId: null }),
    true,
    "account-level objects are visible",
  );
  assert.equal(inScope(restricted, { accountId: "acc1", orgIds: ["o1", "o2"] }), false);
  assert.equal(inScope(actor(), { accountId: "acc2", orgId: null }), false);
  assert.equal(inScope(systemActor("t"), { accountId: "any", orgId: "x" }), true);
});

Deno.test("can() needs an all-orgs scope to change account-level objects", () => {
  const restricted = actor({ orgScope: ["o1"] });
  assert.equal(can(restricted, "backup.view", { accountId: "acc1", orgId: null }), true);
  assert.equal(can(restricted, "admin", { accountId: "acc1", orgId: null }), false);
  assert.equal(can(actor(), "admin", { accountId: "acc1", orgId: null }), true);
  assert.equal(can(actor({ permissions: permissionsOf("viewer") }), "backup.manage"), false);
});

Deno.test("authorize() throws NotFoundError outside the scope before ForbiddenError", () => {
  const viewer = actor({ role: "viewer", permissions: permissionsOf("viewer"), orgScope: ["o1"] });
  assert.throws(() => authorize(viewer, "admin", { accountId: "acc1", orgId: "o2" }), NotFoundError);
  assert.throws(() => authorize(viewer, "admin", { accountId: "acc1", orgId: "o1" }), ForbiddenError);
  assert.doesNotThrow(() => authorize(viewer, "backup.view", { accountId: "acc1", orgId: "o1" }));
});
