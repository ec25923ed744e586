import assert from "node:assert/strict";
import { z } from "zod";
import { deleteEngine, markEngineDeleting } from "../../domain/engines.ts";
import { ConflictError, ForbiddenError, NotFoundError, ValidationError } from "../../domain/errors.ts";
import { checkInvariants } from "../../domain/invariants.ts";
import { createPolicy, deletePolicy, type PolicyCore } from "../../domain/policies.ts";
import { type Actor, permissionsOf, systemActor } from "../../domain/rbac.ts";
import {
  createReplica,
  deleteReplica,
  deleteReplicasOfPolicy,
  evaluatePolicy321,
  listReplicas,
  listReplicasByPolicy,
  type ReplicaCreateInput,
  type ReplicaRule,
  requireReplica,
  sweepOrphanReplicas,
  updateReplica,
} from "../../domain/replicas.ts";
import { createTarget, deleteTarget, getTarget, type StorageTarget } from "../../domain/storage.ts";
import type { TargetType } from "../../domain/storage.ts";
import type { Role } from "../../domain/types.ts";
import { auditEntries, createTenant, registerTestEngine, targetInput, TestClock } from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

function userActor(accountId: string, role: Role, orgScope: "all" | string[], label: string = role): Actor {
  return {
    kind: "user",
    id: `user-${label}`,
    label,
    accountId,
    role,
    permissions: permissionsOf(role),
    orgScope,
  };
}

async function fixture(kv: Deno.Kv, clock = new TestClock()) {
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops", "Dev"], now);
  const [ops, dev] = tenant.orgs;
  const scope = { accountId: tenant.account.id, orgId: ops.id };
  const { engine } = await registerTestEngine(kv, scope, now, "bes-1");
  const { engine: far } = await registerTestEngine(kv, scope, now, "bes-far");
  const target = (type: TargetType, besId: string, name: string) =>
    createTarget(kv, system, { ...targetInput(besId, type), name }, { now, masterKey });
  const primary = await target("local", engine.id, "primary-disk");
  const nas = await target("nfs", engine.id, "nas-1");
  const cloud = await target("s3", far.id, "cloud-bucket");
  const policy = await createPolicy(kv, system, {
    name: "file-daily",
    besId: engine.id,
    targetId: primary.id,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, now);
  const other = await createTenant(kv, "Globex", ["Main"], now);
  const { engine: foreignEngine } = await registerTestEngine(
    kv,
    { accountId: other.account.id, orgId: other.orgs[0].id },
    now,
    "globex-bes",
  );
  const foreign = await target("s3", foreignEngine.id, "globex-bucket");
  const operator = userActor(tenant.account.id, "operator", [ops.id], "ops-operator");
  return { tenant, ops, dev, engine, far, primary, nas, cloud, policy, foreign, operator, clock };
}

function rule(
  policyId: string,
  targetId: string,
  overrides: Partial<ReplicaCreateInput> = {},
): ReplicaCreateInput {
  return { policyId, targetId, ...overrides } as ReplicaCreateInput;
}

async function count(kv: Deno.Kv, targetId: string): Promise<number | undefined> {
  return (await getTarget(kv, targetId))?.policyCount;
}

async function keysUnder(kv: Deno.Kv, prefix: Deno.KvKey) {
  return (await Array.fromAsync(kv.list({ prefix }))).map((e) => e.key);
}

/**
 * Replica invariants over the whole KV: every rule's policy and target exist, every index points at a
 * rule with that field, and each target's `policyCount` is its policies plus the rules writing to it.
 */
async function replicaProblems(kv: Deno.Kv): Promise<string[]> {
  const problems = [...await checkInvariants(kv)];
  const rules = new Map<string, ReplicaRule>();
  for await (const e of kv.list<ReplicaRule>({ prefix: ["replicas"] })) rules.set(e.value.id, e.value);
  const targets = new Map<string, StorageTarget>();
  for await (const e of kv.list<StorageTarget>({ prefix: ["storage_targets"] })) {
    targets.set(e.value.id, e.value);
  }
  const policies = new Map<string, PolicyCore>();
  for await (const e of kv.list<PolicyCore>({ prefix: ["policies"] })) policies.set(e.value.id, e.value);
  for (const r of rules.values()) {
    if (!targets.has(r.targetId)) problems.push(`rule ${r.id} replicates to missing target ${r.targetId}`);
    if (!policies.has(r.policyId)) problems.push(`rule ${r.id} belongs to missing policy ${r.policyId}`);
  }
  for (
    const [prefix, field] of [["replicas_by_policy", "policyId"], ["replicas_by_target", "targetId"]] as const
  ) {
    for await (const e of kv.list<string>({ prefix: [prefix] })) {
      if (rules.get(e.value)?.[field] !== e.key[1]) problems.push(`${prefix} ${String(e.key)} is stale`);
    }
  }
  for (const t of targets.values()) {
    const expected = [...policies.values()].filter((p) => p.targetId === t.id).length +
      [...rules.values()].filter((r) => r.targetId === t.id).length;
    if (t.policyCount !== expected) {
      problems.push(`target ${t.name} counts ${t.policyCount}, expected ${expected}`);
    }
  }
  return problems;
}

Deno.test("createReplica() accepts a same-account target on another BES and counts it on the target", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const r = await createReplica(kv, f.operator, rule(f.policy.id, f.cloud.id), f.clock.now());
  assert.deepEqual(
    [r.kekSource, r.replicateAfterFull, r.replicateAfterIncremental, r.isOffsite, r.accountId, r.orgId],
    ["account", true, true, false, f.tenant.account.id, f.ops.id],
  );
  assert.equal(await count(kv, f.cloud.id), 1);
  const [row] = await listReplicasByPolicy(kv, f.operator, f.policy.id);
  assert.deepEqual(
    [row.id, row.policyName, row.targetName, row.targetType, row.targetTypeLabel, row.targetBesName],
    [r.id, "file-daily", "cloud-bucket", "s3", "S3", "bes-far"],
  );
  assert.deepEqual((await listReplicas(kv, f.operator)).map((x) => x.id), [r.id]);
  assert.equal((await requireReplica(kv, f.operator, r.id)).targetId, f.cloud.id);
  const [audit] = (await auditEntries(kv, f.tenant.account.id)).filter((e) => e.action === "replica.create");
  assert.match(
    audit.summary,
    /policy file-daily → cloud-bucket \(after full and incremental backups, KEK account\)/,
  );
  assert.deepEqual(await replicaProblems(kv), []);
});

Deno.test("createReplica() refuses a target of another account, the policy's own target, and a duplicate", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await assert.rejects(
    () => createReplica(kv, system, rule(f.policy.id, f.foreign.id), f.clock.now()),
    (e: unknown) =>
      e instanceof ValidationError && /policy's account/.test(e.message) && "targetId" in e.fields,
  );
  await assert.rejects(
    () => createReplica(kv, f.operator, rule(f.policy.id, f.foreign.id), f.clock.now()),
    /Unknown storage target/,
    "a user cannot even see another account's target",
  );
  await assert.rejects(
    () => createReplica(kv, f.operator, rule(f.policy.id, f.primary.id), f.clock.now()),
    (e: unknown) => e instanceof ValidationError && /policy's own storage target/.test(e.message),
  );
  await createReplica(kv, f.operator, rule(f.policy.id, f.nas.id, { isOffsite: true }), f.clock.now());
  await assert.rejects(
    () => createReplica(kv, f.operator, rule(f.policy.id, f.nas.id), f.clock.now()),
    (e: unknown) => e instanceof ValidationError && /already replicates to nas-1/.test(e.message),
  );
  await assert.rejects(
    () => createReplica(kv, f.operator, rule("missing", f.nas.id), f.clock.now()),
    NotFoundError,
  );
  assert.deepEqual(
    [await count(kv, f.nas.id), await count(kv, f.foreign.id), await count(kv, f.primary.id)],
    [
      1,
      0,
      1,
    ],
  );
  assert.equal((await keysUnder(kv, ["replicas"])).length, 1);
  assert.deepEqual(await replicaProblems(kv), []);
});

Deno.test("createReplica() validates its fields and needs backup.manage on the policy", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  for (
    const [bad, field] of [
      [{ kekSource: "kms" }, "kekSource"],
      [{ replicateAfterFull: false, replicateAfterIncremental: false }, "replicateAfterFull"],
      [{ targetId: "" }, "targetId"],
    ] as const
  ) {
    await assert.rejects(
      () =>
        createReplica(
          kv,
          f.operator,
          rule(f.policy.id, f.nas.id, bad as Partial<ReplicaCreateInput>),
          f.clock.now(),
        ),
      (e: unknown) => e instanceof z.ZodError && e.issues[0].path[0] === field,
      field,
    );
  }
  const viewer = userActor(f.tenant.account.id, "viewer", "all");
  const devOperator = userActor(f.tenant.account.id, "operator", [f.dev.id], "dev-operator");
  await assert.rejects(
    () => createReplica(kv, viewer, rule(f.policy.id, f.nas.id), f.clock.now()),
    ForbiddenError,
  );
  await assert.rejects(
    () => createReplica(kv, devOperator, rule(f.policy.id, f.nas.id), f.clock.now()),
    NotFoundError,
  );
  const r = await createReplica(
    kv,
    f.operator,
    rule(f.policy.id, f.nas.id, {
      kekSource: "pam_vault",
      replicateAfterIncremental: false,
      isOffsite: true,
    }),
    f.clock.now(),
  );
  assert.deepEqual([r.kekSource, r.replicateAfterFull, r.replicateAfterIncremental, r.isOffsite], [
    "pam_vault",
    true,
    false,
    true,
  ]);
  assert.equal((await listReplicas(kv, viewer)).length, 1);
  assert.deepEqual(await listReplicas(kv, devOperator), [], "rules follow their policy's scope");
  await assert.rejects(() => listReplicasByPolicy(kv, devOperator, f.policy.id), NotFoundError);
  await assert.rejects(() => deleteReplica(kv, viewer, r.id, f.clock.now()), ForbiddenError);
  await assert.rejects(() => deleteReplica(kv, devOperator, r.id, f.clock.now()), NotFoundError);
});

Deno.test("listReplicas() hides the name of a target outside the actor's scope", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const { engine: devEngine } = await registerTestEngine(
    kv,
    { accountId: f.tenant.account.id, orgId: f.dev.id },
    f.clock.now(),
    "dev-bes",
  );
  const devTarget = await createTarget(
    kv,
    system,
    { ...targetInput(devEngine.id, "smb"), name: "dev-share" },
    {
      now: f.clock.now(),
      masterKey,
    },
  );
  await createReplica(kv, system, rule(f.policy.id, devTarget.id), f.clock.now());
  const [row] = await listReplicas(kv, f.operator);
  assert.deepEqual([row.policyName, row.targetName, row.targetType, row.targetBesName], [
    "file-daily",
    null,
    null,
    null,
  ]);
  const admin = userActor(f.tenant.account.id, "backup_admin", "all");
  assert.equal((await listReplicas(kv, admin))[0].targetName, "dev-share");
});

Deno.test("deleteTarget() is refused while a replica rule writes to the target, allowed once the rule is gone", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const r = await createReplica(kv, f.operator, rule(f.policy.id, f.cloud.id), f.clock.now());
  await assert.rejects(() => deleteTarget(kv, system, f.cloud.id, f.clock.now()), ConflictError);
  assert.ok(await getTarget(kv, f.cloud.id));
  await deleteReplica(kv, f.operator, r.id, f.clock.now());
  assert.equal(await count(kv, f.cloud.id), 0);
  for (const prefix of ["replicas", "replicas_by_policy", "replicas_by_target", "replicas_by_account"]) {
    assert.deepEqual(await keysUnder(kv, [prefix]), [], prefix);
  }
  await deleteTarget(kv, system, f.cloud.id, f.clock.now());
  assert.equal(await getTarget(kv, f.cloud.id), null);
  await assert.rejects(() => deleteReplica(kv, f.operator, r.id, f.clock.now()), NotFoundError);
  const actions = (await auditEntries(kv, f.tenant.account.id)).map((e) => e.action);
  assert.deepEqual(actions.filter((a) => a.startsWith("replica.")), ["replica.create", "replica.delete"]);
  assert.deepEqual(await replicaProblems(kv), []);
});

Deno.test("updateReplica() changes flags and moves the rule's count to its new target", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  const r = await createReplica(kv, f.operator, rule(f.policy.id, f.nas.id), f.clock.now());
  await createReplica(kv, f.operator, rule(f.policy.id, f.cloud.id), f.clock.now());
  await assert.rejects(
    () => updateReplica(kv, f.operator, r.id, { targetId: f.cloud.id }, f.clock.now()),
    /already replicates to cloud-bucket/,
  );
  await assert.rejects(
    () => updateReplica(kv, f.operator, r.id, { targetId: f.primary.id }, f.clock.now()),
    ValidationError,
  );
  const third = await createTarget(kv, system, { ...targetInput(f.far.id, "iscsi"), name: "san" }, {
    now: f.clock.now(),
    masterKey,
  });
  const moved = await updateReplica(
    kv,
    f.operator,
    r.id,
    { targetId: third.id, isOffsite: true },
    f.clock.now(),
  );
  assert.deepEqual([moved.targetId, moved.isOffsite, moved.kekSource], [third.id, true, "account"]);
  assert.deepEqual([await count(kv, f.nas.id), await count(kv, third.id), await count(kv, f.cloud.id)], [
    0,
    1,
    1,
  ]);
  await deleteTarget(kv, system, f.nas.id, f.clock.now());
  const flagsOnly = await updateReplica(
    kv,
    f.operator,
    r.id,
    { targetId: third.id, isOffsite: true, replicateAfterFull: false },
    f.clock.now(),
  );
  assert.equal(flagsOnly.replicateAfterFull, false);
  assert.equal(await count(kv, third.id), 1);
  assert.deepEqual(await replicaProblems(kv), []);
});

Deno.test("evaluatePolicy321() reads the primary and the replica targets", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  assert.deepEqual((await evaluatePolicy321(kv, f.operator, f.policy.id)).missing, [
    "2 more copies",
    "a second media type",
    "an offsite copy",
  ]);
  await createReplica(kv, f.operator, rule(f.policy.id, f.nas.id), f.clock.now());
  const r = await createReplica(kv, f.operator, rule(f.policy.id, f.cloud.id), f.clock.now());
  assert.deepEqual((await evaluatePolicy321(kv, f.operator, f.policy.id)).missing, ["an offsite copy"]);
  await updateReplica(kv, f.operator, r.id, { targetId: f.cloud.id, isOffsite: true }, f.clock.now());
  const met = await evaluatePolicy321(kv, f.operator, f.policy.id);
  assert.deepEqual([met.met, met.copies, met.mediaTypes, met.offsite], [
    true,
    3,
    ["disk", "nas", "object"],
    1,
  ]);
});

Deno.test("race: deleteTarget vs createReplica never leaves a rule on a missing target", async () => {
  for (let i = 0; i < 30; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const create = () => createReplica(kv, f.operator, rule(f.policy.id, f.cloud.id), f.clock.now());
    const remove = () => deleteTarget(kv, system, f.cloud.id, f.clock.now());
    const results = await Promise.allSettled(i % 2 ? [create(), remove()] : [remove(), create()]);
    for (const r of results) {
      if (r.status === "rejected") {
        assert.ok(
          r.reason instanceof ConflictError || r.reason instanceof ValidationError,
          `${i}: ${r.reason}`,
        );
      }
    }
    assert.equal(
      results.filter((r) => r.status === "fulfilled").length,
      1,
      `iteration ${i}: exactly one wins`,
    );
    assert.deepEqual(await replicaProblems(kv), [], `iteration ${i}`);
  }
});

Deno.test("race: two identical createReplica calls make exactly one rule", async () => {
  for (let i = 0; i < 10; i++) {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    const results = await Promise.allSettled(
      [1, 2, 3].map(() => createReplica(kv, f.operator, rule(f.policy.id, f.cloud.id), f.clock.now())),
    );
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 1, `iteration ${i}`);
    assert.equal(await count(kv, f.cloud.id), 1);
    assert.deepEqual(await replicaProblems(kv), [], `iteration ${i}`);
  }
});

Deno.test("deleteReplicasOfPolicy() (the policy cascade's part) removes the rules and releases their targets", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await createReplica(kv, f.operator, rule(f.policy.id, f.nas.id), f.clock.now());
  await createReplica(kv, f.operator, rule(f.policy.id, f.cloud.id), f.clock.now());
  assert.equal(await deleteReplicasOfPolicy(kv, f.policy.id), 2);
  assert.deepEqual([await count(kv, f.nas.id), await count(kv, f.cloud.id)], [0, 0]);
  assert.equal(await deleteReplicasOfPolicy(kv, f.policy.id), 0, "idempotent");
  for (const prefix of ["replicas", "replicas_by_policy", "replicas_by_target", "replicas_by_account"]) {
    assert.deepEqual(await keysUnder(kv, [prefix]), [], prefix);
  }
});

Deno.test("deletePolicy() removes the policy's rules; with the orphan sweep their targets are released", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await createReplica(kv, f.operator, rule(f.policy.id, f.nas.id), f.clock.now());
  const r = await createReplica(kv, f.operator, rule(f.policy.id, f.cloud.id), f.clock.now());
  await deletePolicy(kv, f.operator, f.policy.id, f.clock.now());
  assert.deepEqual(await keysUnder(kv, ["replicas_by_policy", f.policy.id]), []);
  assert.deepEqual(await listReplicas(kv, f.operator), []);
  await assert.rejects(() => requireReplica(kv, f.operator, r.id), NotFoundError);
  // Until the policy cascade calls deleteReplicasOfPolicy itself, the sweep finishes its job.
  await sweepOrphanReplicas(kv, f.clock.now());
  assert.deepEqual([await count(kv, f.primary.id), await count(kv, f.nas.id), await count(kv, f.cloud.id)], [
    0,
    0,
    0,
  ]);
  assert.deepEqual(await replicaProblems(kv), []);
  await deleteTarget(kv, system, f.cloud.id, f.clock.now());
  assert.equal(await sweepOrphanReplicas(kv, f.clock.now()), 0, "idempotent");
});

Deno.test({
  name: "deletePolicy() alone removes the policy's rules and decrements their targets' counts",
  async fn() {
    using kv = await Deno.openKv(":memory:");
    const f = await fixture(kv);
    await createReplica(kv, f.operator, rule(f.policy.id, f.nas.id), f.clock.now());
    await createReplica(kv, f.operator, rule(f.policy.id, f.cloud.id), f.clock.now());
    await deletePolicy(kv, f.operator, f.policy.id, f.clock.now());
    assert.deepEqual(
      [await count(kv, f.primary.id), await count(kv, f.nas.id), await count(kv, f.cloud.id)],
      [
        0,
        0,
        0,
      ],
    );
    for (const prefix of ["replicas", "replicas_by_policy", "replicas_by_target", "replicas_by_account"]) {
      assert.deepEqual(await keysUnder(kv, [prefix]), [], prefix);
    }
  },
});

Deno.test("deleteEngine() removes the rules of its policies and the rules writing to its targets", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  // A policy on the far BES replicating to a target of bes-1, and bes-1's policy replicating to the far BES.
  const farPolicy = await createPolicy(kv, system, {
    name: "far-policy",
    besId: f.far.id,
    targetId: f.cloud.id,
    backupType: "image",
    fullSchedule: "0 3 * * *",
  }, f.clock.now());
  await createReplica(kv, system, rule(farPolicy.id, f.nas.id), f.clock.now());
  await createReplica(kv, system, rule(f.policy.id, f.cloud.id), f.clock.now());
  await deleteEngine(kv, system, f.engine.id, f.clock.now());
  assert.deepEqual(await keysUnder(kv, ["replicas"]), []);
  assert.equal(await count(kv, f.cloud.id), 1, "only far-policy still counts on the far target");
  assert.deepEqual(await replicaProblems(kv), []);
});

Deno.test("createReplica() refuses while the policy's or the target's BES is being deleted", async () => {
  using kv = await Deno.openKv(":memory:");
  const f = await fixture(kv);
  await markEngineDeleting(kv, systemActor("test"), f.far.id, f.clock.now());
  await assert.rejects(
    () => createReplica(kv, f.operator, rule(f.policy.id, f.cloud.id), f.clock.now()),
    /being deleted/,
  );
  assert.equal(await count(kv, f.cloud.id), 0);
});
