import assert from "node:assert/strict";
import { userActor } from "../../domain/auth.ts";
import { ForbiddenError, NotFoundError } from "../../domain/errors.ts";
import { authorize, can, inScope, permissionsOf, scopeCovers, systemActor } from "../../domain/rbac.ts";
import type { Role, User } from "../../domain/types.ts";

function actorOf(role: Role, orgScope: User["orgScope"], accountId = "acc1") {
  return userActor({
    id: `u-${role}`,
    accountId,
    email: `${role}@acme.example`,
    name: role,
    role,
    orgScope,
    passwordHash: "",
    disabled: false,
    createdAt: "",
    updatedAt: "",
  });
}

Deno.test("scopeCovers() compares org scopes", () => {
  assert.equal(scopeCovers("all", ["a"]), true);
  assert.equal(scopeCovers("all", "all"), true);
  assert.equal(scopeCovers(["a", "b"], ["a"]), true);
  assert.equal(scopeCovers(["a"], ["a", "b"]), false);
  assert.equal(scopeCovers(["a", "b"], "all"), false);
});

Deno.test("permissionsOf() grants admin only to the admin role", () => {
  assert.deepEqual([...permissionsOf("viewer")], ["backup.view"]);
  assert.deepEqual([...permissionsOf("restore_operator")].sort(), ["backup.restore", "backup.view"]);
  for (const role of ["viewer", "operator", "restore_operator", "backup_admin"] as const) {
    assert.equal(permissionsOf(role).has("admin"), false, role);
  }
  assert.equal(permissionsOf("admin").has("admin"), true);
});

Deno.test("inScope() hides other accounts and orgs outside the actor's scope", () => {
  const scoped = actorOf("operator", ["org-a"]);
  assert.equal(inScope(scoped, { accountId: "acc1", orgId: "org-a" }), true);
  assert.equal(inScope(scoped, { accountId: "acc1", orgId: "org-b" }), false);
  assert.equal(inScope(scoped, { accountId: "acc2", orgId: "org-a" }), false);
  assert.equal(
    inScope(scoped, { accountId: "acc1", orgId: null }),
    true,
    "account-level objects are visible",
  );
  assert.equal(inScope(scoped, { accountId: "acc1", orgIds: "all" }), false);
  assert.equal(inScope(systemActor("t"), { accountId: "acc9", orgId: "x" }), true);
});

Deno.test("can() needs a whole-account scope to change account-level objects", () => {
  const scopedAdmin = actorOf("admin", ["org-a"]);
  const fullAdmin = actorOf("admin", "all");
  const account = { accountId: "acc1", orgId: null };
  assert.equal(can(scopedAdmin, "admin", account), false);
  assert.equal(can(scopedAdmin, "backup.view", account), true);
  assert.equal(can(scopedAdmin, "admin", { accountId: "acc1", orgId: "org-a" }), true);
  assert.equal(can(fullAdmin, "admin", account), true);
  assert.equal(can(actorOf("operator", "all"), "admin", account), false);
});

Deno.test("authorize() says not found outside the scope and forbidden without the permission", () => {
  const viewer = actorOf("viewer", ["org-a"]);
  assert.throws(() => authorize(viewer, "backup.view", { accountId: "acc2", orgId: "org-a" }), NotFoundError);
  assert.throws(() => authorize(viewer, "backup.view", { accountId: "acc1", orgId: "org-b" }), NotFoundError);
  assert.throws(
    () => authorize(viewer, "backup.manage", { accountId: "acc1", orgId: "org-a" }),
    ForbiddenError,
  );
  authorize(viewer, "backup.view", { accountId: "acc1", orgId: "org-a" });
});
