/**
 * Four-eyes approval (approvals.ts): each gated action becomes a request when on and runs directly when
 * off; a second, different user with the action's permission approves it; it runs exactly once (raced);
 * refused and expired requests change nothing.
 */
import assert from "node:assert/strict";
import {
  approveRequest,
  expireApprovalRequests,
  getFourEyesSettings,
  INTERRUPTED_AFTER_MS,
  refuseRequest,
  requestIfFourEyes,
  setFourEyesSettings,
} from "../../domain/approvals.ts";
import { ConflictError, ForbiddenError } from "../../domain/errors.ts";
import { getPolicy } from "../../domain/policies.ts";
import { createTarget, getTarget } from "../../domain/storage.ts";
import { type Actor, systemActor } from "../../domain/rbac.ts";
import { getEngine } from "../../domain/engines.ts";
import { getOrg } from "../../domain/tenancy.ts";
import { auditEntries, Browser, dumpKv, signInAs, targetInput } from "../helpers.ts";
import { allPoints, apiAs, fourEyesWorld, masterKey, type World } from "./four_eyes_world.ts";

async function turnOn(kv: Deno.Kv, w: World, ttlHours = 24) {
  await setFourEyesSettings(kv, w.actors.admin1, { enabled: true, ttlHours }, w.clock.now());
}

/** `actor` asks to delete the world's policy while four-eyes is on: the request. */
async function requestPolicyDelete(kv: Deno.Kv, w: World, actor: Actor, now: Date) {
  return (await requestIfFourEyes(
    kv,
    actor,
    { kind: "policy.delete", input: { policyId: w.policy.id } },
    now,
  ))!;
}

/** The KV without the approval requests and the audit log (what "changed nothing" compares). */
async function stateOf(kv: Deno.Kv) {
  return JSON.stringify(
    (await dumpKv(kv)).filter((e) => !/^(approval_requests|audit)/.test(String(e.key[0]))),
    (_k, v) => typeof v === "bigint" ? String(v) : v,
  );
}

async function countAudit(kv: Deno.Kv, w: World, action: string) {
  return (await auditEntries(kv, w.tenant.account.id)).filter((e) => e.action === action).length;
}

Deno.test("four-eyes is off by default; only an account admin changes it (PUT /api/v1/account/four-eyes), audited", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  assert.equal((await getFourEyesSettings(kv, w.tenant.account.id)).enabled, false);
  const operator = await apiAs(w, kv, w.users.operator);
  assert.equal((await operator("PUT", "/api/v1/account/four-eyes", { enabled: true })).status, 403);
  const admin = await apiAs(w, kv, w.users.admin1);
  const bad = await admin("PUT", "/api/v1/account/four-eyes", { enabled: true, ttlHours: 0 });
  assert.equal(bad.status, 422);
  assert.ok(bad.body.error.fields.ttlHours, "the field is named");
  const ok = await admin("PUT", "/api/v1/account/four-eyes", { enabled: true, ttlHours: 4 });
  assert.equal(ok.status, 200);
  assert.deepEqual([ok.body.enabled, ok.body.ttlHours], [true, 4]);
  assert.equal((await admin("GET", "/api/v1/account/four-eyes")).body.enabled, true);
  assert.equal(await countAudit(kv, w, "four_eyes.settings"), 1);
});

Deno.test("four-eyes: turning it off while on is itself a request; a second admin's approval turns it off", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  await turnOn(kv, w, 12);
  const admin1 = await apiAs(w, kv, w.users.admin1);
  const off = await admin1("PUT", "/api/v1/account/four-eyes", { enabled: false, ttlHours: 12 });
  assert.equal(off.status, 202, "one admin alone must not switch the guard off and then act alone");
  assert.equal((await getFourEyesSettings(kv, w.tenant.account.id)).enabled, true, "nothing changed yet");
  const id = off.body.approvalRequest.id as string;
  await assert.rejects(
    () => approveRequest(kv, w.actors.admin1, id, { now: w.clock.now(), masterKey }),
    ForbiddenError,
  );
  const { request } = await approveRequest(kv, w.actors.admin2, id, { now: w.clock.now(), masterKey });
  assert.equal(request.status, "executed", request.outcome ?? "");
  const settings = await getFourEyesSettings(kv, w.tenant.account.id);
  assert.deepEqual([settings.enabled, settings.ttlHours], [false, 12]);
  // Off, turning it on (or off again) runs directly.
  assert.equal((await admin1("PUT", "/api/v1/account/four-eyes", { enabled: false })).status, 200);
  assert.equal((await admin1("PUT", "/api/v1/account/four-eyes", { enabled: true })).status, 200);
  // The admin form: the same request, then the approval page.
  const browser = new Browser(w.app);
  await signInAs(browser, kv, w.users.admin1, w.clock.now());
  const posted = await browser.postForm("/admin/four-eyes", { ttlHours: "24" }, {
    tokenFrom: "/admin/four-eyes",
  });
  assert.equal(posted.status, 303);
  assert.match(posted.headers.get("location") ?? "", /^\/backup\/approvals\//);
  assert.equal((await getFourEyesSettings(kv, w.tenant.account.id)).enabled, true);
});

/** Each gated action: how to ask for it over the API, and how to tell it ran. */
const GATED: Array<{
  name: string;
  setup?: (kv: Deno.Kv, w: World) => Promise<Record<string, string>>;
  call: (w: World, ids: Record<string, string>) => [string, string, unknown?];
  direct: number;
  ran: (kv: Deno.Kv, w: World, ids: Record<string, string>) => Promise<boolean>;
}> = [
  {
    name: "deleting a BES",
    call: (w) => ["DELETE", `/api/v1/engines/${w.engine.id}`],
    direct: 204,
    ran: async (kv, w) =>
      (await getEngine(kv, w.engine.id))?.status === "deleting" || !(await getEngine(kv, w.engine.id)),
  },
  {
    name: "deleting a storage target",
    setup: async (kv, w) => {
      const t = await createTarget(kv, systemActor("test"), { ...targetInput(w.engine.id), name: "spare" }, {
        now: w.clock.now(),
        masterKey,
      });
      return { targetId: t.id };
    },
    call: (_w, ids) => ["DELETE", `/api/v1/storage/${ids.targetId}`],
    direct: 204,
    ran: async (kv, _w, ids) => !(await getTarget(kv, ids.targetId)),
  },
  {
    name: "deleting a policy",
    call: (w) => ["DELETE", `/api/v1/policies/${w.policy.id}`],
    direct: 204,
    ran: async (kv, w) => !(await getPolicy(kv, w.policy.id)),
  },
  {
    name: "expiring a restore point early",
    setup: async (kv) => {
      const [point] = await allPoints(kv);
      await kv.set(["restore_points", point.id], { ...point, archivedAt: "2026-11-20T00:00:00.000Z" });
      return { pointId: point.id };
    },
    call: (_w, ids) => ["POST", `/api/v1/restore-points/${ids.pointId}/expire`, { confirm: true }],
    direct: 200,
    ran: async (kv, _w, ids) => (await allPoints(kv)).find((p) => p.id === ids.pointId)!.status === "expired",
  },
  {
    name: "turning encryption off",
    call: (w) => ["PATCH", `/api/v1/policies/${w.policy.id}`, { encryption: "none" }],
    direct: 200,
    ran: async (kv, w) => (await getPolicy(kv, w.policy.id))!.encryption === "none",
  },
  {
    name: "lowering retention",
    call: (w) => ["PATCH", `/api/v1/policies/${w.policy.id}`, { retentionDaily: 3 }],
    direct: 200,
    ran: async (kv, w) => (await getPolicy(kv, w.policy.id))!.retentionDaily === 3,
  },
  {
    name: "rotating an org's registration secret",
    call: (w) => ["POST", `/api/v1/orgs/${w.org.id}/rotate-secret`],
    direct: 200,
    ran: async (kv, w) => (await getOrg(kv, w.org.id))!.secretHash !== w.org.secretHash,
  },
  {
    name: "rotating the account registration secret",
    setup: async (kv, w) => {
      // The first secret is issued directly (it replaces nothing); its rotation is gated.
      const admin = await apiAs(w, kv, w.users.admin3);
      assert.equal((await admin("POST", "/api/v1/account/registration-secret")).status, 200);
      const hash =
        (await kv.get<{ secretHash: string }>(["accounts", w.tenant.account.id])).value!.secretHash;
      return { hash };
    },
    call: () => ["POST", "/api/v1/account/registration-secret"],
    direct: 200,
    ran: async (kv, w, ids) =>
      (await kv.get<{ secretHash: string }>(["accounts", w.tenant.account.id])).value!.secretHash !==
        ids.hash,
  },
  {
    name: "rotating an org's PAM vault key",
    call: (w) => ["POST", `/api/v1/orgs/${w.org.id}/pam-vault-key/rotate`],
    direct: 200,
    ran: async (kv, w) =>
      (await auditEntries(kv, w.tenant.account.id)).some((e) =>
        /kek|vault key/i.test(e.action + e.summary) && !/approval/.test(e.action)
      ),
  },
];

for (const action of GATED) {
  Deno.test(`four-eyes: ${action.name} runs directly when off, becomes a request when on, and runs once approved`, async () => {
    // Off: the action runs at once.
    {
      using kv = await Deno.openKv(":memory:");
      const w = await fourEyesWorld(kv, 2);
      const ids = (await action.setup?.(kv, w)) ?? {};
      const api = await apiAs(w, kv, w.users.admin1);
      const [method, path, body] = action.call(w, ids);
      const res = await api(method, path, body);
      assert.equal(res.status, action.direct, JSON.stringify(res.body));
      assert.ok(await action.ran(kv, w, ids), "the action ran");
    }
    // On: a request, nothing changed; a second admin approves and it runs.
    using kv = await Deno.openKv(":memory:");
    const w = await fourEyesWorld(kv, 2);
    const ids = (await action.setup?.(kv, w)) ?? {};
    await turnOn(kv, w);
    const api = await apiAs(w, kv, w.users.admin1);
    const before = await stateOf(kv);
    const [method, path, body] = action.call(w, ids);
    const res = await api(method, path, body);
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const request = res.body.approvalRequest;
    assert.equal(request.status, "pending");
    assert.equal(request.requestedById, w.users.admin1.id);
    assert.ok(!(await action.ran(kv, w, ids)), "nothing ran yet");
    assert.equal(
      (await stateOf(kv)).replace(/"token of[^]*?}/g, ""),
      before.replace(/"token of[^]*?}/g, ""),
      "only the request (and its audit entry) was written",
    );
    const own = await api("POST", `/api/v1/approvals/${request.id}/approve`);
    assert.equal(own.status, 403, "the requester cannot approve");
    const second = await apiAs(w, kv, w.users.admin2);
    const approved = await second("POST", `/api/v1/approvals/${request.id}/approve`);
    assert.equal(approved.status, 200);
    assert.equal(approved.body.approvalRequest.status, "executed", approved.body.approvalRequest.outcome);
    assert.equal(approved.body.approvalRequest.decidedById, w.users.admin2.id);
    assert.ok(await action.ran(kv, w, ids), "the approved action ran");
    if (/registration secret/.test(action.name)) {
      assert.equal(typeof approved.body.secret, "string", "the new secret is shown to the approver, once");
      const stored = JSON.stringify(
        (await dumpKv(kv)).map((e) => e.value),
        (_k, v) => typeof v === "bigint" ? String(v) : v,
      );
      assert.ok(!stored.includes(approved.body.secret), "the secret is not stored in clear");
    }
    const audit = await auditEntries(kv, w.tenant.account.id);
    assert.ok(audit.some((e) => e.action === "approval.request"));
    assert.ok(audit.some((e) => e.action === "approval.approve" && e.summary.includes("admin1")));
    assert.ok(audit.some((e) => e.action === "approval.executed" && e.summary.includes("admin2")));
  });
}

Deno.test("four-eyes: a gated policy edit names every other field it changes, so the approver sees what runs", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  await turnOn(kv, w);
  const api = await apiAs(w, kv, w.users.admin1);
  // Lowering retention is gated; the include paths riding along must not be approved unseen.
  const res = await api("PATCH", `/api/v1/policies/${w.policy.id}`, {
    retentionDaily: 3,
    includePaths: ["/etc"],
  });
  assert.equal(res.status, 202, JSON.stringify(res.body));
  const summary = res.body.approvalRequest.summary as string;
  assert.match(summary, /lowers daily retention 7 → 3/);
  assert.match(summary, /includePaths/, `the summary names the other change: ${summary}`);
  // A gated edit that changes nothing else names nothing else.
  const only = await api("PATCH", `/api/v1/policies/${w.policy.id}`, { retentionDaily: 2 });
  assert.equal(only.status, 202);
  assert.doesNotMatch(only.body.approvalRequest.summary, /also changes/);
});

Deno.test("four-eyes: a policy edit that lowers nothing runs directly while four-eyes is on", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  await turnOn(kv, w);
  const api = await apiAs(w, kv, w.users.admin1);
  assert.equal((await api("PATCH", `/api/v1/policies/${w.policy.id}`, { retentionDaily: 9 })).status, 200);
  assert.equal((await api("PATCH", `/api/v1/policies/${w.policy.id}`, { enabled: false })).status, 200);
  assert.equal((await getPolicy(kv, w.policy.id))!.retentionDaily, 9);
});

Deno.test("four-eyes: the approver needs the action's permission and the object in scope", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  await turnOn(kv, w);
  const now = w.clock.now();
  const rotate = (await requestIfFourEyes(kv, w.actors.admin1, {
    kind: "org_secret.rotate",
    input: { orgId: w.org.id },
  }, now))!;
  const del = await requestPolicyDelete(kv, w, w.actors.operator, now);
  assert.equal(del.permission, "backup.manage");
  const ctx = { now, masterKey };
  // An operator (backup.manage, no admin) cannot approve a secret rotation; a viewer approves nothing.
  await assert.rejects(approveRequest(kv, w.actors.operator2, rotate.id, ctx), ForbiddenError);
  await assert.rejects(approveRequest(kv, w.actors.viewer, del.id, ctx), ForbiddenError);
  await assert.rejects(approveRequest(kv, w.actors.operator, del.id, ctx), ForbiddenError, "own request");
  await assert.rejects(approveRequest(kv, systemActor("cli"), del.id, ctx), ForbiddenError);
  const viewer = await apiAs(w, kv, w.users.viewer);
  assert.equal((await viewer("POST", `/api/v1/approvals/${del.id}/approve`)).status, 403);
  assert.equal((await viewer("GET", `/api/v1/approvals`)).body.values.length, 2, "viewers see requests");
  // Another operator of the org holds backup.manage: they approve the deletion.
  const { request } = await approveRequest(kv, w.actors.operator2, del.id, ctx);
  assert.equal(request.status, "executed");
  assert.equal(await getPolicy(kv, w.policy.id), null);
  assert.equal((await kv.get(["approval_requests", rotate.id])).value !== null, true);
});

Deno.test("four-eyes: a refused request changes nothing, and cannot be approved afterwards", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  await turnOn(kv, w);
  const now = w.clock.now();
  const request = await requestPolicyDelete(kv, w, w.actors.admin1, now);
  const before = await stateOf(kv);
  const refused = await refuseRequest(kv, w.actors.admin2, request.id, { note: "not during the audit" }, now);
  assert.equal(refused.status, "refused");
  assert.equal(refused.outcome, "not during the audit");
  await assert.rejects(approveRequest(kv, w.actors.admin3, request.id, { now, masterKey }), ConflictError);
  assert.equal(await stateOf(kv), before, "nothing but the request and the audit changed");
  assert.ok(await getPolicy(kv, w.policy.id));
  assert.equal(await countAudit(kv, w, "approval.refuse"), 1);
  // The requester may withdraw their own request.
  const second = await requestPolicyDelete(kv, w, w.actors.admin1, now);
  assert.equal((await refuseRequest(kv, w.actors.admin1, second.id, {}, now)).status, "refused");
  assert.equal(await countAudit(kv, w, "approval.withdraw"), 1);
});

Deno.test("four-eyes: an expired request changes nothing; the job expires it once", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  await turnOn(kv, w, 2);
  const now = w.clock.now();
  const request = await requestPolicyDelete(kv, w, w.actors.admin1, now);
  const before = await stateOf(kv);
  const late = new Date(now.getTime() + 2 * 3_600_000);
  assert.deepEqual(await expireApprovalRequests(kv, new Date(late.getTime() - 1)), {
    expired: 0,
    interrupted: 0,
  });
  await assert.rejects(approveRequest(kv, w.actors.admin2, request.id, { now: late, masterKey }), /expired/);
  assert.deepEqual(await expireApprovalRequests(kv, late), { expired: 1, interrupted: 0 });
  assert.deepEqual(await expireApprovalRequests(kv, late), { expired: 0, interrupted: 0 }, "idempotent");
  assert.equal(
    (await kv.get<{ status: string }>(["approval_requests", request.id])).value!.status,
    "expired",
  );
  await assert.rejects(approveRequest(kv, w.actors.admin2, request.id, { now, masterKey }), ConflictError);
  assert.equal(await stateOf(kv), before);
  assert.ok(await getPolicy(kv, w.policy.id));
  assert.equal(await countAudit(kv, w, "approval.expire"), 1);
});

Deno.test("four-eyes race: two approvers approving at once run the action exactly once (many iterations)", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  await turnOn(kv, w);
  const ctx = { now: w.clock.now(), masterKey };
  const iterations = 40;
  for (let i = 0; i < iterations; i++) {
    const request = (await requestIfFourEyes(kv, w.actors.admin1, {
      kind: "org_secret.rotate",
      input: { orgId: w.org.id },
    }, ctx.now))!;
    const results = await Promise.allSettled([
      approveRequest(kv, w.actors.admin2, request.id, ctx),
      approveRequest(kv, w.actors.admin3, request.id, ctx),
    ]);
    const won = results.filter((r) => r.status === "fulfilled");
    assert.equal(won.length, 1, `iteration ${i}: exactly one approval wins`);
    const lost = results.find((r) => r.status === "rejected") as PromiseRejectedResult;
    assert.ok(lost.reason instanceof ConflictError, `iteration ${i}: the loser gets a conflict`);
    assert.equal(await countAudit(kv, w, "org.rotate_secret"), i + 1, `iteration ${i}: one rotation`);
    assert.equal(await countAudit(kv, w, "approval.approve"), i + 1);
  }
});

Deno.test("four-eyes race: approve vs expire — exactly one wins, and the action ran iff the approval won", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  await turnOn(kv, w, 1);
  let approvals = 0;
  let expiries = 0;
  for (let i = 0; i < 40; i++) {
    const now = w.clock.now();
    const request = (await requestIfFourEyes(kv, w.actors.admin1, {
      kind: "org_secret.rotate",
      input: { orgId: w.org.id },
    }, now))!;
    // Two processes whose clocks straddle the time limit: one approves just before, one expires just after.
    const rotationsBefore = await countAudit(kv, w, "org.rotate_secret");
    const [approve, expire] = await Promise.allSettled([
      approveRequest(kv, w.actors.admin2, request.id, {
        now: new Date(Date.parse(request.expiresAt) - 1),
        masterKey,
      }),
      expireApprovalRequests(kv, new Date(request.expiresAt)),
    ]);
    const stored = (await kv.get<{ status: string }>(["approval_requests", request.id])).value!;
    const rotated = (await countAudit(kv, w, "org.rotate_secret")) - rotationsBefore;
    if (approve.status === "fulfilled") {
      approvals++;
      assert.equal(stored.status, "executed", `iteration ${i}`);
      assert.equal(rotated, 1, `iteration ${i}: ran once`);
      assert.equal(expire.status === "fulfilled" && expire.value.expired, 0, `iteration ${i}`);
    } else {
      expiries++;
      assert.ok(approve.reason instanceof ConflictError, `iteration ${i}: ${approve.reason}`);
      assert.equal(stored.status, "expired", `iteration ${i}`);
      assert.equal(rotated, 0, `iteration ${i}: nothing ran`);
    }
    w.clock.advance(60_000);
  }
  assert.equal(approvals + expiries, 40);
});

Deno.test("four-eyes: a request stuck executing after a crash becomes interrupted and is never re-run", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  await turnOn(kv, w);
  const now = w.clock.now();
  const request = await requestPolicyDelete(kv, w, w.actors.admin1, now);
  // The claim landed, then the process died before the action ran.
  await kv.set(["approval_requests", request.id], {
    ...request,
    status: "executing",
    decidedById: w.users.admin2.id,
    decidedByLabel: "admin2",
    decidedAt: now.toISOString(),
  });
  assert.deepEqual(await expireApprovalRequests(kv, new Date(now.getTime() + INTERRUPTED_AFTER_MS - 1)), {
    expired: 0,
    interrupted: 0,
  });
  assert.deepEqual(await expireApprovalRequests(kv, new Date(now.getTime() + INTERRUPTED_AFTER_MS)), {
    expired: 0,
    interrupted: 1,
  });
  assert.equal(
    (await kv.get<{ status: string }>(["approval_requests", request.id])).value!.status,
    "interrupted",
  );
  await assert.rejects(approveRequest(kv, w.actors.admin3, request.id, { now, masterKey }), ConflictError);
  assert.ok(await getPolicy(kv, w.policy.id), "the action was not run by the job");
});

Deno.test("four-eyes: approving an edit of a policy changed since the request fails and applies nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  await turnOn(kv, w);
  const api = await apiAs(w, kv, w.users.admin1);
  const res = await api("PATCH", `/api/v1/policies/${w.policy.id}`, { retentionDaily: 2 });
  assert.equal(res.status, 202);
  w.clock.advance(1000);
  assert.equal((await api("PATCH", `/api/v1/policies/${w.policy.id}`, { name: "renamed" })).status, 200);
  const second = await apiAs(w, kv, w.users.admin2);
  const approved = await second("POST", `/api/v1/approvals/${res.body.approvalRequest.id}/approve`);
  assert.equal(approved.status, 200);
  assert.equal(approved.body.approvalRequest.status, "failed");
  assert.match(approved.body.approvalRequest.outcome, /changed after/);
  assert.equal((await getPolicy(kv, w.policy.id))!.retentionDaily, 7);
});

Deno.test("Approvals page: delete becomes a request, approve needs the confirmation and the CSRF token", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  const admin = new Browser(w.app);
  await signInAs(admin, kv, w.users.admin1, w.clock.now());
  // The admin turns four-eyes on by the form.
  const saved = await admin.postForm("/admin/four-eyes", { enabled: "on", ttlHours: "12" }, {
    tokenFrom: "/admin/four-eyes",
  });
  assert.equal(saved.status, 303);
  assert.equal((await getFourEyesSettings(kv, w.tenant.account.id)).ttlHours, 12);
  const requested = await admin.postForm(`/backup/policies/${w.policy.id}/delete`, {}, {
    tokenFrom: `/backup/policies/${w.policy.id}/delete`,
  });
  assert.equal(requested.status, 303);
  const location = requested.headers.get("location")!;
  assert.match(location, /^\/backup\/approvals\/[0-9A-Z]{26}$/);
  assert.ok(await getPolicy(kv, w.policy.id), "not deleted yet");
  const ownPage = await (await admin.get(location)).text();
  assert.match(ownPage, /a second, different user must approve it/);
  assert.doesNotMatch(ownPage, /Approve and run/);

  const other = new Browser(w.app);
  await signInAs(other, kv, w.users.admin2, w.clock.now());
  const list = await (await other.get("/backup/approvals")).text();
  assert.match(list, /Delete policy daily/);
  const page = await (await other.get(location)).text();
  assert.match(page, /Approve and run/);
  const noCsrf = await other.postForm(`${location}/approve`, { confirm: "on" }, { csrf: null });
  assert.equal(noCsrf.status, 403);
  const unconfirmed = await other.postForm(`${location}/approve`, {}, { tokenFrom: location });
  assert.equal(unconfirmed.status, 422);
  assert.ok(await getPolicy(kv, w.policy.id));
  const approved = await other.postForm(`${location}/approve`, { confirm: "on" }, { tokenFrom: location });
  assert.equal(approved.status, 303);
  assert.equal(await getPolicy(kv, w.policy.id), null);
  assert.match(await (await other.get("/backup/approvals")).text(), /executed/);
});

Deno.test("Policy form: lowering retention with four-eyes on becomes a request; the edit is saved only on approval", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  await turnOn(kv, w);
  const admin = new Browser(w.app);
  await signInAs(admin, kv, w.users.admin1, w.clock.now());
  const form = {
    name: "daily",
    targetId: w.policy.targetId,
    backupType: "file",
    timeZone: "UTC",
    fullSchedule: "0 2 * * *",
    retentionDaily: "5",
    retentionWeekly: "0",
    retentionMonthly: "0",
    encryption: "AES-256-GCM",
    enabled: "on",
    confirmRetention: "on",
  };
  const res = await admin.postForm(`/backup/policies/${w.policy.id}/edit`, form, {
    tokenFrom: `/backup/policies/${w.policy.id}/edit`,
  });
  assert.equal(res.status, 303);
  const location = res.headers.get("location")!;
  assert.match(location, /^\/backup\/approvals\//);
  assert.equal((await getPolicy(kv, w.policy.id))!.retentionDaily, 7, "not saved yet");
  const id = location.split("/").pop()!;
  const { request } = await approveRequest(kv, w.actors.admin2, id, { now: w.clock.now(), masterKey });
  assert.equal(request.status, "executed", request.outcome ?? "");
  assert.equal((await getPolicy(kv, w.policy.id))!.retentionDaily, 5);
});
