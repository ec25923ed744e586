/** Audit atomicity: each mutation writes exactly one entry in its own commit; failures write none. */
import assert from "node:assert/strict";
import { createApiToken, revokeApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { ForbiddenError, ValidationError } from "../../domain/errors.ts";
import type { Actor } from "../../domain/rbac.ts";
import { createOrg, getOrg, renameOrg, rotateOrgSecret } from "../../domain/tenancy.ts";
import type { AuditEntry } from "../../domain/types.ts";
import { createUser, deleteUser, resetPassword, updateUser } from "../../domain/users.ts";
import { addUser, createTenant, dumpKv, TestClock } from "../helpers.ts";

async function fixture(kv: Deno.Kv) {
  const clock = new TestClock();
  const tenant = await createTenant(kv, "Acme", ["Ops", "Finance"], clock.now());
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", clock.now());
  return { clock, tenant, admin, actor: userActor(admin) };
}

async function audit(kv: Deno.Kv, accountId: string): Promise<AuditEntry[]> {
  const out: AuditEntry[] = [];
  for await (const e of kv.list<AuditEntry>({ prefix: ["audit", accountId] })) out.push(e.value);
  return out;
}

/** Runs `mutation` and asserts it added exactly one audit entry, with `action`, by `actor`. */
async function expectOneEntry<T>(
  kv: Deno.Kv,
  accountId: string,
  actor: Actor,
  action: string,
  mutation: () => Promise<T>,
): Promise<{ result: T; entry: AuditEntry }> {
  const before = await audit(kv, accountId);
  const result = await mutation();
  const after = await audit(kv, accountId);
  assert.deepEqual(after.slice(0, before.length), before, "earlier entries are untouched");
  const added = after.slice(before.length);
  assert.deepEqual(added.map((e) => e.action), [action]);
  assert.equal(added[0].actorId, actor.id);
  assert.equal(added[0].accountId, accountId);
  return { result, entry: added[0] };
}

/** Runs `mutation`, which must throw `errorClass`, and asserts the database did not change at all. */
async function expectNoChange(
  kv: Deno.Kv,
  errorClass: new (...a: never[]) => Error,
  mutation: () => Promise<unknown>,
) {
  const before = await dumpKv(kv);
  await assert.rejects(mutation, errorClass);
  assert.deepEqual(await dumpKv(kv), before);
}

const newUser = {
  email: "ops@acme.example",
  name: "Ops person",
  role: "operator" as const,
  orgScope: "all" as const,
  password: "a long enough password",
};

Deno.test("every user mutation writes exactly one audit entry with its action", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, tenant, actor } = await fixture(kv);
  const accountId = tenant.account.id;

  const { result: user, entry: created } = await expectOneEntry(
    kv,
    accountId,
    actor,
    "user.create",
    () => createUser(kv, actor, { ...newUser, accountId }, clock.now()),
  );
  assert.equal(created.objectId, user.id);
  assert.equal(created.objectType, "user");

  const { entry: updated } = await expectOneEntry(
    kv,
    accountId,
    actor,
    "user.update",
    () =>
      updateUser(kv, actor, user.id, {
        name: "Ops person",
        role: "viewer",
        orgScope: [tenant.orgs[0].id],
        disabled: false,
      }, clock.now()),
  );
  assert.equal(updated.objectId, user.id);
  assert.match(updated.summary, /role operator → viewer/);

  const { entry: reset } = await expectOneEntry(
    kv,
    accountId,
    actor,
    "user.reset_password",
    () => resetPassword(kv, actor, user.id, {}, clock.now()),
  );
  assert.equal(reset.objectId, user.id);

  const { entry: deleted } = await expectOneEntry(
    kv,
    accountId,
    actor,
    "user.delete",
    () => deleteUser(kv, actor, user.id, clock.now()),
  );
  assert.equal(deleted.objectId, user.id);
});

Deno.test("every org mutation writes exactly one audit entry with its action", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, tenant, actor } = await fixture(kv);
  const accountId = tenant.account.id;

  const { result: { org }, entry: created } = await expectOneEntry(
    kv,
    accountId,
    actor,
    "org.create",
    () => createOrg(kv, actor, { accountId, name: "Legal" }, clock.now()),
  );
  assert.equal(created.objectId, org.id);
  assert.equal(created.orgId, org.id);

  const { entry: renamed } = await expectOneEntry(
    kv,
    accountId,
    actor,
    "org.rename",
    () => renameOrg(kv, actor, org.id, { name: "Legal & Compliance" }, clock.now()),
  );
  assert.equal(renamed.summary, "Renamed organization Legal to Legal & Compliance");

  const { entry: rotated } = await expectOneEntry(
    kv,
    accountId,
    actor,
    "org.rotate_secret",
    () => rotateOrgSecret(kv, actor, org.id, clock.now()),
  );
  assert.equal(rotated.objectId, org.id);
});

Deno.test("creating and revoking an API token each write exactly one audit entry", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, tenant, actor } = await fixture(kv);
  const accountId = tenant.account.id;
  const { result: { token }, entry: created } = await expectOneEntry(
    kv,
    accountId,
    actor,
    "api_token.create",
    () =>
      createApiToken(kv, actor, { name: "ci", permissions: ["backup.view"], expiresInDays: 30 }, clock.now()),
  );
  assert.equal(created.objectId, token.id);
  const { entry: revoked } = await expectOneEntry(
    kv,
    accountId,
    actor,
    "api_token.revoke",
    () => revokeApiToken(kv, actor, token.id, clock.now()),
  );
  assert.equal(revoked.objectId, token.id);

  // Revoking again changes nothing and is not audited twice.
  const before = await dumpKv(kv);
  await revokeApiToken(kv, actor, token.id, clock.now());
  assert.deepEqual(await dumpKv(kv), before);
});

Deno.test("createUser() with a taken email throws ValidationError and writes nothing", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, tenant, actor } = await fixture(kv);
  const accountId = tenant.account.id;
  await createUser(kv, actor, { ...newUser, accountId }, clock.now());
  const usersBefore = (await dumpKv(kv)).filter((e) => String(e.key[0]).startsWith("users"));
  await expectNoChange(
    kv,
    ValidationError,
    () =>
      createUser(kv, actor, { ...newUser, email: "OPS@acme.example", name: "Twin", accountId }, clock.now()),
  );
  const usersAfter = (await dumpKv(kv)).filter((e) => String(e.key[0]).startsWith("users"));
  assert.equal(usersAfter.length, usersBefore.length);
});

Deno.test("two concurrent createUser() with one email: one user, one audit entry", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, tenant, actor } = await fixture(kv);
  const accountId = tenant.account.id;
  const before = (await audit(kv, accountId)).length;
  const results = await Promise.allSettled([
    createUser(kv, actor, { ...newUser, name: "First", accountId }, clock.now()),
    createUser(kv, actor, { ...newUser, name: "Second", accountId }, clock.now()),
  ]);
  assert.deepEqual(results.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
  const rejected = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
  assert.ok(rejected.reason instanceof ValidationError);
  const added = (await audit(kv, accountId)).slice(before);
  assert.deepEqual(added.map((e) => e.action), ["user.create"]);
  const winner =
    (results.find((r) => r.status === "fulfilled") as PromiseFulfilledResult<{ id: string }>).value;
  assert.equal(added[0].objectId, winner.id);
  assert.equal((await kv.get(["users_by_email", newUser.email])).value, winner.id);
});

Deno.test("renameOrg() to a taken name throws ValidationError and writes nothing", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, tenant, actor } = await fixture(kv);
  await expectNoChange(
    kv,
    ValidationError,
    () => renameOrg(kv, actor, tenant.orgs[0].id, { name: "finance" }, clock.now()),
  );
  assert.equal((await getOrg(kv, tenant.orgs[0].id))?.name, "Ops");
});

Deno.test("createOrg() with a taken name throws ValidationError and writes nothing", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, tenant, actor } = await fixture(kv);
  await expectNoChange(
    kv,
    ValidationError,
    () => createOrg(kv, actor, { accountId: tenant.account.id, name: "OPS" }, clock.now()),
  );
});

Deno.test("updateUser() refusing an admin's self-demotion writes nothing", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, admin, actor } = await fixture(kv);
  await expectNoChange(
    kv,
    ForbiddenError,
    () =>
      updateUser(
        kv,
        actor,
        admin.id,
        { name: "x", role: "viewer", orgScope: "all", disabled: false },
        clock.now(),
      ),
  );
});

Deno.test("createApiToken() above the owner's role writes nothing", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, tenant } = await fixture(kv);
  const viewer = await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", clock.now());
  await expectNoChange(
    kv,
    ValidationError,
    () =>
      createApiToken(
        kv,
        userActor(viewer),
        { name: "x", permissions: ["admin"], expiresInDays: 1 },
        clock.now(),
      ),
  );
});

Deno.test("renameOrg() to its current name is a no-op without an audit entry", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, tenant, actor } = await fixture(kv);
  const before = await dumpKv(kv);
  const org = await renameOrg(kv, actor, tenant.orgs[0].id, { name: "Ops" }, clock.now());
  assert.equal(org.name, "Ops");
  assert.deepEqual(await dumpKv(kv), before);
});

Deno.test("renameOrg() can change only the letter case of a name", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, tenant, actor } = await fixture(kv);
  const { result: org } = await expectOneEntry(
    kv,
    tenant.account.id,
    actor,
    "org.rename",
    () => renameOrg(kv, actor, tenant.orgs[0].id, { name: "OPS" }, clock.now()),
  );
  assert.equal(org.name, "OPS");
  assert.equal((await kv.get(["orgs_by_name", tenant.account.id, "ops"])).value, org.id);
});

Deno.test("concurrent renameOrg() calls: audit entries match the renames that took effect", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, tenant, actor } = await fixture(kv);
  const accountId = tenant.account.id;
  const orgId = tenant.orgs[0].id;
  let tookEffect = 0;
  for (let i = 0; i < 20; i++) {
    const results = await Promise.allSettled([
      renameOrg(kv, actor, orgId, { name: `Ops ${i}a` }, clock.now()),
      renameOrg(kv, actor, orgId, { name: `Ops ${i}b` }, clock.now()),
    ]);
    for (const r of results) {
      if (r.status === "fulfilled") tookEffect++;
      else assert.equal((r.reason as Error).name, "ConflictError", String(r.reason));
    }
  }
  const renames = (await audit(kv, accountId)).filter((e) => e.action === "org.rename");
  assert.equal(renames.length, tookEffect);
  assert.ok(tookEffect >= 20, `at least one rename per round took effect (${tookEffect})`);

  // The audited renames form one unbroken chain from the original name to the final one.
  let name = "Ops";
  for (const e of renames) {
    const m = /^Renamed organization (.+) to (.+)$/.exec(e.summary);
    assert.ok(m, e.summary);
    assert.equal(m[1], name, "each rename starts from the name the previous one left");
    name = m[2];
  }
  const org = await getOrg(kv, orgId);
  assert.equal(org?.name, name, "the final name is the last audited one");
  // Only the current name is indexed.
  const indexed = (await dumpKv(kv)).filter((e) => e.key[0] === "orgs_by_name" && e.value === orgId);
  assert.deepEqual(indexed.map((e) => e.key[2]), [name.toLowerCase()]);
});

Deno.test("deleteUser() leaves no key of the user or of their API tokens behind", async () => {
  await using kv = await Deno.openKv(":memory:");
  const { clock, tenant, actor } = await fixture(kv);
  const user = await createUser(kv, actor, { ...newUser, accountId: tenant.account.id }, clock.now());
  const { token } = await createApiToken(kv, userActor(user), {
    name: "ci",
    permissions: ["backup.view"],
    expiresInDays: 30,
  }, clock.now());
  await deleteUser(kv, actor, user.id, clock.now());
  const leftovers = (await dumpKv(kv))
    .filter((e) => e.key[0] !== "audit")
    .filter((e) => e.key.includes(user.id) || e.key.includes(token.id) || e.value === token.id);
  assert.deepEqual(leftovers.map((e) => e.key), []);
});
