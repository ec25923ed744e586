/** resolveOwner: the one place a new object's account and org are resolved from the actor and input. */
import assert from "node:assert/strict";
import { ValidationError } from "../../domain/errors.ts";
import type { Actor } from "../../domain/rbac.ts";
import { orgKey, resolveOwner } from "../../domain/tenancy.ts";
import type { Org } from "../../domain/types.ts";

function user(accountId: string | null, orgScope: "all" | string[]): Actor {
  return { kind: "user", id: "u1", label: "u1", accountId, role: null, permissions: new Set(), orgScope };
}

async function world(kv: Deno.Kv) {
  await kv.set(orgKey("org-a"), { id: "org-a", accountId: "acct-1", name: "A" } as unknown as Org);
  await kv.set(orgKey("org-x"), { id: "org-x", accountId: "acct-2", name: "X" } as unknown as Org);
}

async function field(promise: Promise<unknown>): Promise<Record<string, string>> {
  const error = await promise.then(() => null, (e) => e);
  assert.ok(error instanceof ValidationError, `expected a ValidationError, got ${error}`);
  return (error as ValidationError).fields as Record<string, string>;
}

Deno.test("resolveOwner: an org in scope decides the account, and its entry is returned to check", async () => {
  using kv = await Deno.openKv(":memory:");
  await world(kv);
  const owner = await resolveOwner(kv, user("acct-1", ["org-a"]), { accountId: "acct-9", orgId: "org-a" });
  assert.equal(owner.accountId, "acct-1");
  assert.equal(owner.orgId, "org-a");
  assert.equal(owner.orgEntry?.key.join("/"), "orgs/org-a");
});

Deno.test("resolveOwner: an unknown or out-of-scope org is one 422 on orgId", async () => {
  using kv = await Deno.openKv(":memory:");
  await world(kv);
  for (
    const [actor, orgId] of [[user("acct-1", "all"), "org-x"], [user("acct-1", ["org-b"]), "org-a"], [
      user("acct-1", "all"),
      "nope",
    ]] as const
  ) {
    assert.deepEqual(Object.keys(await field(resolveOwner(kv, actor, { orgId }))), ["orgId"]);
  }
  assert.deepEqual(
    Object.keys(await field(resolveOwner(kv, user("acct-1", "all"), {}, { orgRequired: true }))),
    ["orgId"],
  );
});

Deno.test("resolveOwner: without an org, the input's account or the actor's; none is a 422 on accountId", async () => {
  using kv = await Deno.openKv(":memory:");
  await world(kv);
  assert.deepEqual(await resolveOwner(kv, user("acct-1", "all"), { orgId: null }), {
    accountId: "acct-1",
    orgId: null,
    org: null,
    orgEntry: null,
  });
  assert.equal((await resolveOwner(kv, user(null, "all"), { accountId: "acct-3" })).accountId, "acct-3");
  assert.deepEqual(Object.keys(await field(resolveOwner(kv, user(null, "all"), {}))), ["accountId"]);
});
