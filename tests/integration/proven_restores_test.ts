/**
 * The dashboard's "Last proven restore" card (domain/proven_restores.ts): its bounded read gives the same
 * rows as the full per-policy list (every policy and proof read), newest first, with the number of
 * unproven policies; a deleted policy's proof goes with it; a renamed policy shows its current name;
 * actors limited to an org see only that org's rows and counts; proofs written before the time index
 * are indexed on first read; the card's section renders the rows and the count.
 */
import assert from "node:assert/strict";
import { userActor } from "../../domain/auth.ts";
import { testConfig } from "../../domain/config.ts";
import { provenRestores } from "../../domain/drills.ts";
import { provenRestoreKey } from "../../domain/keys/drills.ts";
import {
  createPolicy,
  deletePolicy,
  listPolicies,
  type Policy,
  updatePolicy,
} from "../../domain/policies.ts";
import { lastProvenRestores, type ProvenRestore, setProvenInOp } from "../../domain/proven_restores.ts";
import { systemActor } from "../../domain/rbac.ts";
import { createTarget } from "../../domain/storage.ts";
import { PROVEN_CARD_ROWS } from "../../domain/read_models/dashboard.ts";
import {
  addUser,
  Browser,
  createTenant,
  onlineTestEngine,
  signInAs,
  testApp,
  TestClock,
} from "../helpers.ts";

const NOW = new Date("2026-12-01T12:00:00Z");

async function prove(kv: Deno.Kv, policy: Policy, at: Date, host = "web") {
  const before = await kv.get<ProvenRestore>(provenRestoreKey(policy.accountId, policy.id));
  const op = kv.atomic();
  setProvenInOp(op, before, {
    accountId: policy.accountId,
    orgId: policy.orgId,
    policyId: policy.id,
    policyOrgId: policy.orgId,
    policyName: policy.name,
    hostId: "H".repeat(26),
    hostName: host,
    drillId: "D".repeat(26),
    drillName: "nightly",
    drillRunId: "R".repeat(26),
    at: at.toISOString(),
    rtoSeconds: 10,
    rtoObjectiveSeconds: 60,
    bytesPerSecond: 1000,
  });
  assert.ok((await op.commit()).ok);
}

async function world() {
  const kv = await Deno.openKv(":memory:");
  const tenant = await createTenant(kv, "Acme", ["A1", "A2"], NOW);
  const [a1, a2] = tenant.orgs;
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", NOW);
  const viewerA2 = await addUser(kv, tenant, "viewer-a2@acme.example", "viewer", [a2], NOW);
  const system = systemActor("test");
  const policies: Policy[] = [];
  for (const org of [a1, a2]) {
    const { engine } = await onlineTestEngine(
      kv,
      { accountId: tenant.account.id, orgId: org.id },
      NOW,
      org.name,
    );
    const target = await createTarget(kv, system, {
      name: `t-${org.name}`,
      besId: engine.id,
      type: "local",
      config: { path: "/srv/backup" },
    }, { now: NOW, masterKey: testConfig().masterKey! });
    for (let i = 0; i < 20; i++) {
      policies.push(
        await createPolicy(kv, system, {
          name: `${org.name}-p${String(i).padStart(2, "0")}`,
          besId: engine.id,
          targetId: target.id,
          backupType: "file",
          fullSchedule: "0 2 * * 0",
        }, NOW),
      );
    }
  }
  return { kv, tenant, a1, a2, admin, viewerA2, policies };
}

/** The reference: every policy and proof read, newest proof first, `limit` rows, and the unproven count. */
async function reference(kv: Deno.Kv, actor: ReturnType<typeof userActor>, limit: number) {
  const all = await provenRestores(kv, actor, await listPolicies(kv, actor));
  const rows = all.filter((r) => r.proven).sort((a, b) =>
    b.proven!.at.localeCompare(a.proven!.at) || a.policy.id.localeCompare(b.policy.id)
  ).slice(0, limit).map((r) => ({ policy: r.policy, at: r.proven!.at }));
  return { rows, policies: all.length, unproven: all.filter((r) => !r.proven).length };
}

async function card(kv: Deno.Kv, actor: ReturnType<typeof userActor>, limit: number) {
  const c = await lastProvenRestores(kv, actor, limit);
  return {
    rows: c.rows.map((r) => ({ policy: r.policy, at: r.proven.at })),
    policies: c.policies,
    unproven: c.unproven,
  };
}

Deno.test("the card's bounded read equals the full list: newest first, unproven counted, per org scope", async () => {
  const w = await world();
  using _kv = w.kv;
  const admin = userActor(w.admin);
  const viewerA2 = userActor(w.viewerA2);
  // Empty: every policy unproven, no rows.
  assert.deepEqual(await card(w.kv, admin, PROVEN_CARD_ROWS), { rows: [], policies: 40, unproven: 40 });
  // 30 of the 40 policies proven at scattered times, 10 of them proven again later (replacing the proof).
  const order = w.policies.map((_, i) => (i * 17) % w.policies.length);
  for (let k = 0; k < 30; k++) {
    await prove(w.kv, w.policies[order[k]], new Date(NOW.getTime() + k * 60_000));
  }
  for (let k = 0; k < 10; k++) {
    await prove(w.kv, w.policies[order[k * 3]], new Date(NOW.getTime() + (100 + k) * 60_000));
  }
  // A proven policy renamed shows its current name; a deleted one goes with its proof.
  const renamed = w.policies[order[27]];
  await updatePolicy(w.kv, systemActor("test"), renamed.id, {
    name: "renamed",
    targetId: renamed.targetId,
    backupType: "file",
    fullSchedule: "0 2 * * 0",
  }, NOW);
  await deletePolicy(w.kv, admin, w.policies[order[29]].id, NOW);

  for (const actor of [admin, viewerA2]) {
    for (const limit of [1, 5, PROVEN_CARD_ROWS, 100]) {
      const got = await card(w.kv, actor, limit);
      assert.deepEqual(got, await reference(w.kv, actor, limit), `${actor.label}, limit ${limit}`);
    }
  }
  const adminCard = await card(w.kv, admin, PROVEN_CARD_ROWS);
  assert.equal(adminCard.rows.length, PROVEN_CARD_ROWS);
  assert.deepEqual([adminCard.policies, adminCard.unproven], [39, 10]);
  assert.equal(adminCard.rows[0].policy.id, w.policies[order[27]].id, "the newest proof first");
  assert.equal(adminCard.rows[0].policy.name, "renamed");
  const ats = adminCard.rows.map((r) => r.at);
  assert.deepEqual(ats, [...ats].sort().reverse(), "newest first");
  // A2's viewer: only A2's policies, rows and counts.
  const a2Card = await lastProvenRestores(w.kv, viewerA2, 100);
  assert.ok(a2Card.rows.length > 0);
  assert.ok(a2Card.rows.every((r) => r.policy.name.startsWith("A2-")), JSON.stringify(a2Card.rows));
  assert.equal(
    a2Card.policies,
    w.policies.filter((p) => p.orgId === w.a2.id).length - (w.policies[order[29]].orgId === w.a2.id ? 1 : 0),
  );
});

Deno.test("proofs written before the time index are indexed on the first read, once", async () => {
  const w = await world();
  using _kv = w.kv;
  const admin = userActor(w.admin);
  // Legacy proofs: the record only (no policyOrgId, no index entry, no counter).
  for (let i = 0; i < 5; i++) {
    const p = w.policies[i * 7];
    await w.kv.set(provenRestoreKey(p.accountId, p.id), {
      accountId: p.accountId,
      orgId: p.orgId,
      policyId: p.id,
      policyName: p.name,
      hostId: "H".repeat(26),
      hostName: "web",
      drillId: "D".repeat(26),
      drillName: "nightly",
      drillRunId: "R".repeat(26),
      at: new Date(NOW.getTime() + i * 1000).toISOString(),
      rtoSeconds: 1,
      rtoObjectiveSeconds: 60,
      bytesPerSecond: null,
    });
  }
  // One legacy proof is then replaced by a new drill before the first read: counted once.
  await prove(w.kv, w.policies[0], new Date(NOW.getTime() + 10_000));
  const got = await card(w.kv, admin, PROVEN_CARD_ROWS);
  assert.deepEqual(got, await reference(w.kv, admin, PROVEN_CARD_ROWS));
  assert.deepEqual([got.rows.length, got.unproven], [5, 35]);
  assert.equal(got.rows[0].policy.id, w.policies[0].id);
  // A second read finds the index as it was (the marker is set; nothing counted twice).
  assert.deepEqual(await card(w.kv, admin, PROVEN_CARD_ROWS), got);
});

Deno.test("the card's section: the newest rows and the count of unproven policies; no policy is 'No backup policies'", async () => {
  const w = await world();
  using _kv = w.kv;
  const clock = new TestClock(NOW);
  const { app } = testApp(w.kv, clock);
  const browser = new Browser(app);
  await signInAs(browser, w.kv, w.admin, NOW);
  for (let i = 0; i < 25; i++) await prove(w.kv, w.policies[i], new Date(NOW.getTime() + i * 60_000));
  const res = await browser.get("/backup/dashboard/sections/proven");
  assert.equal(res.status, 200);
  const html = await res.text();
  const shown = [...html.matchAll(/data-policy="([0-9A-Z]{26})"/g)].map((m) => m[1]);
  assert.deepEqual(shown, w.policies.slice(5, 25).map((p) => p.id).reverse(), "the 20 newest, newest first");
  assert.match(html, /15 of 40\s*(<!-- -->)?\s*policies have no proven restore yet/);
});
