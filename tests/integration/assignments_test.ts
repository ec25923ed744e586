import assert from "node:assert/strict";
import { z } from "zod";
import type { Alert } from "../../domain/alerts.ts";
import {
  assignHost,
  type Assignment,
  assignmentByHostKey,
  assignmentByPolicyKey,
  assignmentKey,
  deletePolicyAssignments,
  listAssignableHosts,
  listAssignmentsByHost,
  listAssignmentsByPolicy,
  purgeOrphanAssignments,
  removeAssignment,
  requireAssignment,
  setAssignmentState,
} from "../../domain/assignments.ts";
import { userActor } from "../../domain/auth.ts";
import { deleteEngine } from "../../domain/engines.ts";
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import {
  applyHostHeartbeat,
  enrollHost,
  getHost,
  type Host,
  listHosts,
  liveHostKey,
  requireHost,
} from "../../domain/hosts.ts";
import { checkInvariants } from "../../domain/invariants.ts";
import { createPolicy, deletePolicy, type PolicyCreateInput } from "../../domain/policies.ts";
import {
  getProtectedObject,
  listProtectedByHost,
  listProtectedObjects,
  type ProtectedObject,
  protectedTypeFor,
} from "../../domain/protected.ts";
import { type Actor, systemActor } from "../../domain/rbac.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import { sweepHosts } from "../../jobs/sweep_hosts.ts";
import {
  addUser,
  auditEntries,
  createTenant,
  dumpKv,
  engineMetrics,
  registerTestEngine,
  targetInput,
  type Tenant,
} from "../helpers.ts";

const T0 = new Date("2026-11-22T10:00:00Z");
const MIN = 60_000;
const at = (ms: number) => new Date(T0.getTime() + ms);
const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

let hostSeq = 0;

/** Enrolls a host agent in `org` of `tenant`, directly in the domain. */
async function enroll(
  kv: Deno.Kv,
  tenant: Tenant,
  org: number,
  overrides: { hostname?: string; os?: string; ipAddress?: string } = {},
): Promise<Host> {
  hostSeq++;
  const { host } = await enrollHost(kv, { accountId: tenant.account.id, orgId: tenant.orgs[org].id }, {
    hostname: overrides.hostname ?? `host-${hostSeq}.acme.example`,
    os: overrides.os ?? "Ubuntu 24.04",
    ipAddress: overrides.ipAddress ?? `10.1.0.${hostSeq % 250}`,
    publicKey: generateKeyPair().publicKey,
    version: "1.0.0",
  }, T0);
  return host;
}

async function heartbeat(kv: Deno.Kv, hostId: string, now: Date) {
  return await applyHostHeartbeat(kv, hostId, { version: "1.0.0", metrics: engineMetrics() }, now);
}

function policyInput(besId: string, targetId: string, overrides: Partial<PolicyCreateInput> = {}) {
  return {
    name: "file-daily",
    besId,
    targetId,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
    ...overrides,
  } as PolicyCreateInput;
}

/** Acme with orgs Ops and Lab, a BES and target in Ops, a file and an image policy, hosts in both orgs. */
async function fixture(kv: Deno.Kv) {
  const tenant = await createTenant(kv, "Acme", ["Ops", "Lab"], T0);
  const { engine } = await registerTestEngine(
    kv,
    { accountId: tenant.account.id, orgId: tenant.orgs[0].id },
    T0,
  );
  const target = await createTarget(kv, system, targetInput(engine.id), { now: T0, masterKey });
  const filePolicy = await createPolicy(kv, system, policyInput(engine.id, target.id), T0);
  const imagePolicy = await createPolicy(
    kv,
    system,
    policyInput(engine.id, target.id, { name: "image-weekly", backupType: "image", rpoHours: 200 }),
    T0,
  );
  const opsHost = await enroll(kv, tenant, 0, { hostname: "web-01.ops.example" });
  const labHost = await enroll(kv, tenant, 1, { hostname: "db-01.lab.example" });
  const operator = userActor(await addUser(kv, tenant, "ops@acme.example", "operator", [tenant.orgs[0]], T0));
  const viewer = userActor(await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", T0));
  return { tenant, engine, target, filePolicy, imagePolicy, opsHost, labHost, operator, viewer };
}

async function allOf<T>(kv: Deno.Kv, prefix: string): Promise<Array<Deno.KvEntry<T>>> {
  return await Array.fromAsync(kv.list<T>({ prefix: [prefix] }));
}

async function protectedFor(kv: Deno.Kv, hostId: string, policyId: string): Promise<ProtectedObject | null> {
  const id = (await kv.get<string>(["protected_by_host", hostId, policyId])).value;
  return id ? await getProtectedObject(kv, id) : null;
}

async function assertClean(kv: Deno.Kv, message?: string) {
  assert.deepEqual(await checkInvariants(kv), [], message);
}

// ---------------------------------------------------------------------------------------------------
// Assigning

Deno.test("assignHost() creates an active assignment, its indexes and a fileset protected object, audited", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  assert.deepEqual(await allOf(kv, "assignments"), []);
  const { assignment, created } = await assignHost(kv, f.operator, {
    policyId: f.filePolicy.id,
    hostId: f.opsHost.id,
  }, at(MIN));
  assert.equal(created, true);
  assert.equal(assignment.state, "active");
  assert.deepEqual(
    [assignment.policyId, assignment.hostId, assignment.accountId, assignment.orgId],
    [f.filePolicy.id, f.opsHost.id, f.tenant.account.id, f.tenant.orgs[0].id],
  );
  assert.equal(assignment.createdAt, at(MIN).toISOString());
  assert.deepEqual((await kv.get(assignmentKey(assignment.id))).value, assignment);
  assert.equal((await kv.get(assignmentByPolicyKey(f.filePolicy.id, f.opsHost.id))).value, assignment.id);
  assert.equal((await kv.get(assignmentByHostKey(f.opsHost.id, f.filePolicy.id))).value, assignment.id);

  const object = await protectedFor(kv, f.opsHost.id, f.filePolicy.id);
  assert.ok(object);
  assert.deepEqual(
    {
      type: object.type,
      name: object.name,
      source: object.source,
      rpoHours: object.rpoHours,
      lastBackupAt: object.lastBackupAt,
      lastBackupStatus: object.lastBackupStatus,
      protection: object.protection,
      orgId: object.orgId,
    },
    {
      type: "fileset",
      name: "web-01.ops.example",
      source: { kind: "bes", besId: f.engine.id },
      rpoHours: f.filePolicy.rpoHours,
      lastBackupAt: null,
      lastBackupStatus: "never",
      protection: "active",
      orgId: f.tenant.orgs[0].id,
    },
  );
  assert.equal((await kv.get(["protected_by_account", f.tenant.account.id, object.id])).value, object.id);
  assert.deepEqual(await listProtectedByHost(kv, f.operator, f.opsHost.id), [object]);

  const audit = (await auditEntries(kv, f.tenant.account.id)).filter((e) =>
    e.action.startsWith("assignment.")
  );
  assert.deepEqual(audit.map((e) => e.action), ["assignment.create"]);
  assert.match(audit[0].summary, /web-01\.ops\.example.*file-daily/);

  const byPolicy = await listAssignmentsByPolicy(kv, f.operator, f.filePolicy.id);
  assert.deepEqual(byPolicy.map((r) => [r.assignment.id, r.host.hostname]), [[
    assignment.id,
    "web-01.ops.example",
  ]]);
  const byHost = await listAssignmentsByHost(kv, f.operator, f.opsHost.id);
  assert.deepEqual(byHost.map((r) => [r.assignment.id, r.policy.name]), [[assignment.id, "file-daily"]]);
  assert.equal((await requireAssignment(kv, f.operator, assignment.id)).host.id, f.opsHost.id);
  await assertClean(kv);
});

Deno.test("assignHost() makes a physical protected object for an image policy, a vm one for a hypervisor guest", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const guest = await enroll(kv, f.tenant, 0, { os: "Windows Server 2022 (VMware guest)" });
  await assignHost(kv, system, { policyId: f.imagePolicy.id, hostId: f.opsHost.id }, T0);
  await assignHost(kv, system, { policyId: f.imagePolicy.id, hostId: guest.id }, T0);
  const physical = (await protectedFor(kv, f.opsHost.id, f.imagePolicy.id))!;
  assert.equal(physical.type, "physical");
  assert.equal(physical.rpoHours, 200);
  assert.equal((await protectedFor(kv, guest.id, f.imagePolicy.id))!.type, "vm");
  await assertClean(kv);
});

Deno.test("protectedTypeFor() reads the hypervisor from the os string only for image policies", () => {
  assert.equal(protectedTypeFor("file", "Ubuntu on KVM"), "fileset");
  assert.equal(protectedTypeFor("image", "Ubuntu 24.04 (KVM guest)"), "vm");
  assert.equal(protectedTypeFor("image", "Windows Server 2022 Hyper-V"), "vm");
  assert.equal(protectedTypeFor("image", "Debian 12 on QEMU"), "vm");
  assert.equal(protectedTypeFor("image", "Windows Server 2022"), "physical");
  assert.equal(protectedTypeFor("image", "Rocky Linux (kvmtool-free)"), "physical");
});

Deno.test("assignHost() refuses an already assigned host (active or paused) and writes nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const input = { policyId: f.filePolicy.id, hostId: f.opsHost.id };
  const { assignment } = await assignHost(kv, f.operator, input, T0);
  for (const state of ["active", "paused"] as const) {
    await setAssignmentState(kv, f.operator, assignment.id, state, T0);
    const before = await dumpKv(kv);
    await assert.rejects(() => assignHost(kv, f.operator, input, at(MIN)), (e: Error) => {
      assert.ok(e instanceof ValidationError, String(e));
      assert.match(e.message, /already assigned/);
      assert.equal(e.fields.hostId, "is already assigned to this policy");
      return true;
    });
    assert.deepEqual(await dumpKv(kv), before, `nothing written while ${state}`);
  }
  assert.equal((await allOf(kv, "assignments")).length, 1);
});

Deno.test("assignHost() reactivates an archived assignment: same id, one record, protected object active again", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const input = { policyId: f.filePolicy.id, hostId: f.opsHost.id };
  const { assignment } = await assignHost(kv, f.operator, input, T0);
  const object = (await protectedFor(kv, f.opsHost.id, f.filePolicy.id))!;
  await setAssignmentState(kv, f.operator, assignment.id, "archived", at(MIN));
  assert.equal((await protectedFor(kv, f.opsHost.id, f.filePolicy.id))!.protection, "archived");

  const again = await assignHost(kv, f.operator, input, at(2 * MIN));
  assert.equal(again.created, false);
  assert.equal(again.assignment.id, assignment.id);
  assert.equal(again.assignment.state, "active");
  assert.equal(again.assignment.createdAt, assignment.createdAt);
  assert.equal(again.assignment.updatedAt, at(2 * MIN).toISOString());
  assert.deepEqual((await allOf(kv, "assignments")).map((e) => e.key), [assignmentKey(assignment.id)]);
  const reprotected = (await protectedFor(kv, f.opsHost.id, f.filePolicy.id))!;
  assert.equal(reprotected.id, object.id);
  assert.equal(reprotected.protection, "active");
  assert.equal((await allOf(kv, "protected_objects")).length, 1);
  const actions = (await auditEntries(kv, f.tenant.account.id)).map((e) => e.action).filter((a) =>
    a.startsWith("assignment.")
  );
  assert.deepEqual(actions, ["assignment.create", "assignment.state", "assignment.reactivate"]);
  await assertClean(kv);
});

Deno.test("assignHost() refuses a host of another account: ValidationError for the system, NotFound for a user", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const other = await createTenant(kv, "Globex", ["Main"], T0);
  const foreign = await enroll(kv, other, 0);
  const admin = userActor(await addUser(kv, f.tenant, "admin@acme.example", "admin", "all", T0));
  const before = await dumpKv(kv);
  await assert.rejects(
    () => assignHost(kv, system, { policyId: f.filePolicy.id, hostId: foreign.id }, T0),
    (e: Error) => e instanceof ValidationError && /another account/.test(e.message),
  );
  await assert.rejects(
    () => assignHost(kv, admin, { policyId: f.filePolicy.id, hostId: foreign.id }, T0),
    NotFoundError,
  );
  assert.deepEqual(await dumpKv(kv), before);
});

Deno.test("assignHost() by an actor scoped to org A refuses a host of org B as not found; nothing written", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const before = await dumpKv(kv);
  await assert.rejects(
    () => assignHost(kv, f.operator, { policyId: f.filePolicy.id, hostId: f.labHost.id }, T0),
    (e: Error) => e instanceof NotFoundError && e.message === `Host ${f.labHost.id} not found`,
  );
  await assert.rejects(() => requireHost(kv, f.operator, f.labHost.id), NotFoundError);
  assert.deepEqual(await dumpKv(kv), before);
  // An actor over both orgs may (the guide only requires the same account).
  const { assignment } = await assignHost(
    kv,
    system,
    { policyId: f.filePolicy.id, hostId: f.labHost.id },
    T0,
  );
  assert.equal(assignment.orgId, f.tenant.orgs[1].id);
  // The org-A operator cannot see it: not in the policy's list, not by id.
  assert.deepEqual(await listAssignmentsByPolicy(kv, f.operator, f.filePolicy.id), []);
  await assert.rejects(() => requireAssignment(kv, f.operator, assignment.id), NotFoundError);
  await assert.rejects(() => removeAssignment(kv, f.operator, assignment.id, T0), NotFoundError);
});

Deno.test("assignHost() needs backup.manage; unknown ids are not found", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await assert.rejects(
    () => assignHost(kv, f.viewer, { policyId: f.filePolicy.id, hostId: f.opsHost.id }, T0),
    ForbiddenError,
  );
  await assert.rejects(
    () => assignHost(kv, f.operator, { policyId: "nope", hostId: f.opsHost.id }, T0),
    (e: Error) => e instanceof NotFoundError && /Policy nope/.test(e.message),
  );
  await assert.rejects(
    () => assignHost(kv, f.operator, { policyId: f.filePolicy.id, hostId: "nope" }, T0),
    (e: Error) => e instanceof NotFoundError && /Host nope/.test(e.message),
  );
  await assert.rejects(
    () => assignHost(kv, f.operator, { policyId: "", hostId: f.opsHost.id }, T0),
    (e) => e instanceof z.ZodError,
  );
  const { assignment } = await assignHost(
    kv,
    f.operator,
    { policyId: f.filePolicy.id, hostId: f.opsHost.id },
    T0,
  );
  await assert.rejects(() => setAssignmentState(kv, f.viewer, assignment.id, "paused", T0), ForbiddenError);
  await assert.rejects(() => removeAssignment(kv, f.viewer, assignment.id, T0), ForbiddenError);
  assert.equal((await listAssignmentsByPolicy(kv, f.viewer, f.filePolicy.id)).length, 1, "a viewer may list");
});

Deno.test("assignHost() refuses a policy whose BES is being deleted", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await kv.set(["engines_deleting", f.engine.id], T0.toISOString());
  await assert.rejects(
    () => assignHost(kv, system, { policyId: f.filePolicy.id, hostId: f.opsHost.id }, T0),
    ConflictError,
  );
  assert.deepEqual(await allOf(kv, "assignments"), []);
});

// ---------------------------------------------------------------------------------------------------
// States and removal

Deno.test("setAssignmentState() moves between active, paused and archived; the protected object follows", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const { assignment } = await assignHost(
    kv,
    f.operator,
    { policyId: f.filePolicy.id, hostId: f.opsHost.id },
    T0,
  );
  let t = 0;
  for (const state of ["paused", "active", "archived", "paused", "archived", "active"] as const) {
    t += MIN;
    const next = await setAssignmentState(kv, f.operator, assignment.id, state, at(t));
    assert.equal(next.state, state);
    assert.equal(next.updatedAt, at(t).toISOString());
    assert.equal((await kv.get<Assignment>(assignmentKey(assignment.id))).value!.state, state);
    assert.equal((await protectedFor(kv, f.opsHost.id, f.filePolicy.id))!.protection, state);
    await assertClean(kv, state);
  }
  const before = await dumpKv(kv);
  assert.equal(
    (await setAssignmentState(kv, f.operator, assignment.id, "active", at(t + MIN))).state,
    "active",
  );
  assert.deepEqual(await dumpKv(kv), before, "the same state again writes nothing (no audit entry)");
  await assert.rejects(
    () => setAssignmentState(kv, f.operator, assignment.id, "deleted" as "active", T0),
    (e) => e instanceof z.ZodError,
  );
  await assert.rejects(() => setAssignmentState(kv, f.operator, "nope", "paused", T0), NotFoundError);
});

Deno.test("removeAssignment() deletes the assignment and indexes, keeps restore points and an unprotected object", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const input = { policyId: f.filePolicy.id, hostId: f.opsHost.id };
  const { assignment } = await assignHost(kv, f.operator, input, T0);
  const object = (await protectedFor(kv, f.opsHost.id, f.filePolicy.id))!;
  const restorePoint = {
    id: "rp1",
    protectedObjectId: object.id,
    hostId: f.opsHost.id,
    policyId: f.filePolicy.id,
  };
  await kv.set(["restore_points", "rp1"], restorePoint);
  await kv.set(["restore_points_by_object", object.id, "rp1"], "rp1");

  await removeAssignment(kv, f.operator, assignment.id, at(MIN));
  assert.equal((await kv.get(assignmentKey(assignment.id))).versionstamp, null);
  assert.equal((await kv.get(assignmentByPolicyKey(f.filePolicy.id, f.opsHost.id))).versionstamp, null);
  assert.equal((await kv.get(assignmentByHostKey(f.opsHost.id, f.filePolicy.id))).versionstamp, null);
  assert.deepEqual((await kv.get(["restore_points", "rp1"])).value, restorePoint);
  assert.equal((await kv.get(["restore_points_by_object", object.id, "rp1"])).value, "rp1");
  const kept = (await protectedFor(kv, f.opsHost.id, f.filePolicy.id))!;
  assert.equal(kept.id, object.id);
  assert.equal(kept.protection, "unprotected");
  assert.deepEqual(await listAssignmentsByHost(kv, f.operator, f.opsHost.id), []);
  const last = (await auditEntries(kv, f.tenant.account.id)).at(-1)!;
  assert.equal(last.action, "assignment.remove");
  assert.match(last.summary, /restore points are kept/);
  await assertClean(kv);
  await assert.rejects(() => removeAssignment(kv, f.operator, assignment.id, at(MIN)), NotFoundError);

  // Assigning again creates a new assignment and reuses the protected object.
  const again = await assignHost(kv, f.operator, input, at(2 * MIN));
  assert.equal(again.created, true);
  assert.notEqual(again.assignment.id, assignment.id);
  assert.equal((await protectedFor(kv, f.opsHost.id, f.filePolicy.id))!.id, object.id);
  assert.equal((await protectedFor(kv, f.opsHost.id, f.filePolicy.id))!.protection, "active");
  assert.equal((await kv.get(["restore_points", "rp1"])).versionstamp !== null, true);
  await assertClean(kv);
});

Deno.test("listAssignableHosts() offers hosts in scope that are unassigned or archived", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const second = await enroll(kv, f.tenant, 0, { hostname: "app-02.ops.example" });
  const third = await enroll(kv, f.tenant, 0, { hostname: "zz-03.ops.example" });
  const names = async (actor: Actor) =>
    (await listAssignableHosts(kv, actor, f.filePolicy.id)).map((h) => h.hostname);
  assert.deepEqual(await names(f.operator), [
    "app-02.ops.example",
    "web-01.ops.example",
    "zz-03.ops.example",
  ]);
  await assignHost(kv, f.operator, { policyId: f.filePolicy.id, hostId: second.id }, T0);
  const { assignment } = await assignHost(
    kv,
    f.operator,
    { policyId: f.filePolicy.id, hostId: third.id },
    T0,
  );
  await setAssignmentState(kv, f.operator, assignment.id, "archived", T0);
  assert.deepEqual(await names(f.operator), ["web-01.ops.example", "zz-03.ops.example"]);
  const admin = userActor(await addUser(kv, f.tenant, "admin@acme.example", "admin", "all", T0));
  assert.deepEqual(await names(admin), ["db-01.lab.example", "web-01.ops.example", "zz-03.ops.example"]);
});

// ---------------------------------------------------------------------------------------------------
// Invariant 3 under races

Deno.test("invariant 3 under races: 3 concurrent assignHost for one (policy, host) leave exactly one assignment", async () => {
  for (let i = 0; i < 30; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const input = { policyId: f.filePolicy.id, hostId: f.opsHost.id };
    // Every other iteration starts from an archived assignment that the racers try to reactivate.
    const archived = i % 2 === 1
      ? (await setAssignmentState(
        kv,
        system,
        (await assignHost(kv, system, input, T0)).assignment.id,
        "archived",
        T0,
      ))
      : null;
    const results = await Promise.allSettled([
      assignHost(kv, f.operator, input, at(MIN)),
      assignHost(kv, system, input, at(MIN)),
      assignHost(kv, f.operator, input, at(MIN)),
    ]);
    const won = results.filter((r) => r.status === "fulfilled");
    assert.equal(won.length, 1, `iteration ${i}: exactly one writer wins`);
    for (const r of results) {
      if (r.status === "rejected") {
        assert.ok(
          r.reason instanceof ValidationError && /already assigned/.test(r.reason.message),
          String(r.reason),
        );
      }
    }
    const records = await allOf<Assignment>(kv, "assignments");
    assert.equal(records.length, 1, `iteration ${i}: one record`);
    assert.equal(records[0].value.state, "active");
    if (archived) assert.equal(records[0].value.id, archived.id, "the archived assignment was reactivated");
    assert.deepEqual(
      (await allOf<string>(kv, "assignments_by_policy")).map((e) => e.value),
      [records[0].value.id],
    );
    assert.equal((await allOf(kv, "assignments_by_host")).length, 1);
    assert.equal((await allOf(kv, "protected_objects")).length, 1);
    await assertClean(kv, `iteration ${i}`);
  }
});

Deno.test("invariant 3 under races: assign, remove and reassign racing never duplicate or orphan anything", async () => {
  for (let i = 0; i < 30; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const input = { policyId: f.filePolicy.id, hostId: f.opsHost.id };
    const { assignment } = await assignHost(kv, system, input, T0);
    await Promise.allSettled([
      removeAssignment(kv, system, assignment.id, at(MIN)),
      assignHost(kv, system, input, at(MIN)),
      setAssignmentState(kv, system, assignment.id, "archived", at(MIN)),
      assignHost(kv, f.operator, input, at(MIN)),
    ]);
    assert.ok((await allOf(kv, "assignments")).length <= 1, `iteration ${i}`);
    assert.equal((await allOf(kv, "protected_objects")).length, 1, `iteration ${i}`);
    await assertClean(kv, `iteration ${i}`);
  }
});

// ---------------------------------------------------------------------------------------------------
// Policy deletion

Deno.test("deletePolicy() takes the policy's assignments with it; the repair removes what its cascade leaves", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const kept = await assignHost(kv, system, { policyId: f.imagePolicy.id, hostId: f.opsHost.id }, T0);
  for (const host of [f.opsHost, f.labHost]) {
    await assignHost(kv, system, { policyId: f.filePolicy.id, hostId: host.id }, T0);
  }
  await kv.set(["restore_points", "rp1"], { policyId: f.filePolicy.id, hostId: f.opsHost.id });
  await deletePolicy(kv, system, f.filePolicy.id, at(MIN));

  // The unique index goes with the policy (its prefix is one of policyChildPrefixes) …
  assert.deepEqual(
    (await allOf(kv, "assignments_by_policy")).map((e) => e.key),
    [assignmentByPolicyKey(f.imagePolicy.id, f.opsHost.id)],
  );
  // … and readers no longer show the assignments.
  assert.deepEqual(
    (await listAssignmentsByHost(kv, system, f.opsHost.id)).map((r) => r.assignment.id),
    [kept.assignment.id],
  );
  assert.deepEqual(await listAssignmentsByHost(kv, system, f.labHost.id), []);
  await assert.rejects(() => listAssignmentsByPolicy(kv, system, f.filePolicy.id), NotFoundError);

  // Records the cascade left (see deletePolicyAssignments) are removed by the repair; run twice: idempotent.
  await purgeOrphanAssignments(kv, at(2 * MIN));
  assert.equal(await purgeOrphanAssignments(kv, at(2 * MIN)), 0);
  assert.deepEqual((await allOf<Assignment>(kv, "assignments")).map((e) => e.value.id), [kept.assignment.id]);
  assert.deepEqual(
    (await allOf(kv, "assignments_by_host")).map((e) => e.key),
    [assignmentByHostKey(f.opsHost.id, f.imagePolicy.id)],
  );
  const objects = (await allOf<ProtectedObject>(kv, "protected_objects")).map((e) => e.value);
  assert.deepEqual(
    objects.map((o) => [o.policyId, o.protection]).sort(),
    [[f.filePolicy.id, "unprotected"], [f.filePolicy.id, "unprotected"], [f.imagePolicy.id, "active"]].sort(),
  );
  assert.ok((await kv.get(["restore_points", "rp1"])).value, "restore points are kept");
  await assertClean(kv);
});

Deno.test("deletePolicyAssignments() before deletePolicy() leaves a consistent database at once", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  for (const host of [f.opsHost, f.labHost]) {
    await assignHost(kv, system, { policyId: f.filePolicy.id, hostId: host.id }, T0);
  }
  assert.equal(await deletePolicyAssignments(kv, f.filePolicy.id, at(MIN)), 2);
  await deletePolicy(kv, system, f.filePolicy.id, at(MIN));
  for (const prefix of ["assignments", "assignments_by_policy", "assignments_by_host"]) {
    assert.deepEqual(await allOf(kv, prefix), [], prefix);
  }
  await assertClean(kv);
});

Deno.test("assignHost() racing deletePolicy() or deleteEngine() leaves nothing after the cascade and repair", async () => {
  for (let i = 0; i < 20; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const input = { policyId: f.filePolicy.id, hostId: f.opsHost.id };
    await Promise.allSettled([
      assignHost(kv, system, input, T0),
      i % 2 ? deleteEngine(kv, system, f.engine.id, T0) : deletePolicy(kv, system, f.filePolicy.id, T0),
      assignHost(kv, system, { ...input, hostId: f.labHost.id }, T0),
    ]);
    await purgeOrphanAssignments(kv, T0);
    assert.deepEqual(await allOf(kv, "assignments"), [], `iteration ${i}`);
    await assertClean(kv, `iteration ${i}`);
  }
});

// ---------------------------------------------------------------------------------------------------
// Hosts: list, sweep

Deno.test("listHosts() filters by text, status and org, sorts, pages, and stays inside the org scope", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await enroll(kv, f.tenant, 0, { hostname: "app-02.ops.example", ipAddress: "192.0.2.44" });
  await heartbeat(kv, f.opsHost.id, T0);
  const admin = userActor(await addUser(kv, f.tenant, "admin@acme.example", "admin", "all", T0));
  const names = async (actor: Actor, filter: Record<string, unknown> = {}) =>
    (await listHosts(kv, actor, filter)).values.map((h) => h.hostname);

  assert.deepEqual(await names(admin), ["app-02.ops.example", "db-01.lab.example", "web-01.ops.example"]);
  assert.deepEqual(await names(f.operator), ["app-02.ops.example", "web-01.ops.example"], "org scope");
  assert.deepEqual(await names(admin, { q: "WEB" }), ["web-01.ops.example"]);
  assert.deepEqual(await names(admin, { q: "192.0.2.4" }), ["app-02.ops.example"]);
  assert.deepEqual(await names(admin, { status: "online" }), ["web-01.ops.example"]);
  assert.deepEqual(await names(admin, { orgId: f.tenant.orgs[1].id }), ["db-01.lab.example"]);
  assert.deepEqual(await names(f.operator, { orgId: f.tenant.orgs[1].id }), []);
  assert.deepEqual(await names(admin, { sort: "-hostname" }), [
    "web-01.ops.example",
    "db-01.lab.example",
    "app-02.ops.example",
  ]);
  assert.deepEqual((await names(admin, { sort: "status" }))[0], "web-01.ops.example", "online < pending");
  assert.deepEqual((await names(admin, { sort: "-status" })).at(-1), "web-01.ops.example");
  const page = await listHosts(kv, admin, { offset: "1", limit: "1" });
  assert.deepEqual([page.values.map((h) => h.hostname), page.total], [["db-01.lab.example"], 3]);
  assert.deepEqual(
    await names(admin, { status: "bogus", limit: "abc" }),
    await names(admin),
    "bad values → defaults",
  );
  assert.deepEqual(await listHosts(kv, system, {}), { values: [], total: 0 });
  assert.equal((await requireHost(kv, admin, f.labHost.id)).id, f.labHost.id);
});

async function hostAlerts(kv: Deno.Kv): Promise<Alert[]> {
  return (await allOf<Alert>(kv, "alerts")).map((e) => e.value).filter((a) => a.subjectType === "host");
}

Deno.test("sweepHosts() keeps a host online at exactly 3 minutes of silence", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await heartbeat(kv, f.opsHost.id, T0);
  const before = await dumpKv(kv);
  assert.deepEqual(await sweepHosts(kv, at(3 * MIN)), { offline: [], decommissions: 0 });
  assert.deepEqual(await dumpKv(kv), before);
  assert.equal((await getHost(kv, f.opsHost.id))!.status, "online");
});

Deno.test("sweepHosts() takes a host offline one second after 3 minutes with one warning; a heartbeat resolves it", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await heartbeat(kv, f.opsHost.id, T0);
  await heartbeat(kv, f.labHost.id, at(MIN));
  const now = at(3 * MIN + 1000);
  assert.deepEqual(await sweepHosts(kv, now), { offline: [f.opsHost.id], decommissions: 0 });
  const offline = (await getHost(kv, f.opsHost.id))!;
  assert.equal(offline.status, "offline");
  assert.equal(offline.lastHeartbeatAt, T0.toISOString());
  assert.equal((await kv.get(liveHostKey(f.opsHost.id))).versionstamp, null);
  assert.equal((await getHost(kv, f.labHost.id))!.status, "online");
  let alerts = await hostAlerts(kv);
  assert.equal(alerts.length, 1);
  assert.deepEqual(
    [alerts[0].reason, alerts[0].severity, alerts[0].status, alerts[0].subjectId, alerts[0].orgId],
    ["host_offline", "warning", "open", f.opsHost.id, f.tenant.orgs[0].id],
  );
  assert.match(alerts[0].message, /web-01\.ops\.example/);

  const before = await dumpKv(kv);
  assert.deepEqual(await sweepHosts(kv, now), { offline: [], decommissions: 0 }, "idempotent");
  assert.deepEqual(await sweepHosts(kv, at(3 * MIN + 2000)), { offline: [], decommissions: 0 });
  assert.deepEqual(await dumpKv(kv), before);
  await assertClean(kv);

  await heartbeat(kv, f.opsHost.id, at(10 * MIN));
  assert.equal((await getHost(kv, f.opsHost.id))!.status, "online");
  assert.ok((await kv.get(liveHostKey(f.opsHost.id))).value);
  alerts = await hostAlerts(kv);
  assert.deepEqual([alerts.length, alerts[0].status, alerts[0].resolvedAt], [
    1,
    "resolved",
    at(10 * MIN).toISOString(),
  ]);
  assert.equal((await kv.get(["alerts_open", "host", f.opsHost.id, "host_offline"])).versionstamp, null);
  await assertClean(kv);

  // Silent again: a new alert, not the resolved one reopened.
  assert.deepEqual(await sweepHosts(kv, at(14 * MIN)), {
    offline: [f.labHost.id, f.opsHost.id].sort(),
    decommissions: 0,
  });
  assert.equal((await hostAlerts(kv)).filter((a) => a.status === "open").length, 2);
});

Deno.test("a pending host (never heard from) is not swept", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  assert.deepEqual(await sweepHosts(kv, at(60 * MIN)), { offline: [], decommissions: 0 });
  assert.equal((await getHost(kv, f.opsHost.id))!.status, "pending");
});

// ---------------------------------------------------------------------------------------------------
// Protected objects list

Deno.test("listProtectedObjects() lists the account's objects in scope with the guide's filters", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await assignHost(kv, system, { policyId: f.filePolicy.id, hostId: f.opsHost.id }, T0);
  await assignHost(kv, system, { policyId: f.imagePolicy.id, hostId: f.opsHost.id }, T0);
  const { assignment } = await assignHost(
    kv,
    system,
    { policyId: f.filePolicy.id, hostId: f.labHost.id },
    T0,
  );
  await removeAssignment(kv, system, assignment.id, T0);
  const admin = userActor(await addUser(kv, f.tenant, "admin@acme.example", "admin", "all", T0));
  const list = async (actor: Actor, filter: Record<string, unknown> = {}) =>
    (await listProtectedObjects(kv, actor, filter, T0)).values.map((o) =>
      `${o.name}:${o.type}:${o.protection}`
    );
  assert.deepEqual(await list(admin), [
    "db-01.lab.example:fileset:unprotected",
    "web-01.ops.example:fileset:active",
    "web-01.ops.example:physical:active",
  ]);
  assert.deepEqual(await list(f.operator), [
    "web-01.ops.example:fileset:active",
    "web-01.ops.example:physical:active",
  ]);
  assert.deepEqual(await list(admin, { type: "physical" }), ["web-01.ops.example:physical:active"]);
  assert.deepEqual(await list(admin, { protection: "unprotected" }), [
    "db-01.lab.example:fileset:unprotected",
  ]);
  assert.deepEqual(await list(admin, { q: "DB-01", lastBackupStatus: "never" }), [
    "db-01.lab.example:fileset:unprotected",
  ]);
  assert.deepEqual(await list(admin, { hostId: f.labHost.id, lastBackupStatus: "success" }), []);
  const first = await listProtectedObjects(kv, admin, { besId: f.engine.id, limit: 2 }, T0);
  assert.equal(first.values.length, 2);
  const rest = await listProtectedObjects(
    kv,
    admin,
    { besId: f.engine.id, limit: 2, cursor: first.cursor },
    T0,
  );
  assert.deepEqual(
    [...first.values, ...rest.values].map((o) => o.name),
    ["db-01.lab.example", "web-01.ops.example", "web-01.ops.example"],
    "the cursor continues where the first page stopped",
  );
  assert.equal(rest.cursor, "");
});
