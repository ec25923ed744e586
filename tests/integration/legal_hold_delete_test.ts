/**
 * Deleting what held restore points live on (holds.ts: "held points are never pruned or expired"):
 * - a BES: its deletion drops its storage targets (and the credentials the data is read through) and
 *   its policies, so it is refused with a 409 naming the hold's case, page and API, changing nothing;
 * - a policy: it is kept retired and its repositories stay until its points expire under its last
 *   retention, so it is deleted, and its held points are still never expired (nor sent to a prune job).
 */
import assert from "node:assert/strict";
import { ConflictError } from "../../domain/errors.ts";
import { deleteEngine, getEngine, markEngineDeleting } from "../../domain/engines.ts";
import { listHolds, placeHold, releaseHold } from "../../domain/holds.ts";
import type { Job } from "../../domain/job_queue.ts";
import { retiredPolicyKey } from "../../domain/policies.ts";
import { applyRetention } from "../../domain/retention_apply.ts";
import { enrollHost } from "../../domain/hosts.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { auditEntries, Browser, signInAs } from "../helpers.ts";
import { allPoints, apiAs, fourEyesWorld, masterKey, type World } from "./four_eyes_world.ts";
import { approveRequest, setFourEyesSettings } from "../../domain/approvals.ts";

async function pruneJobIds(kv: Deno.Kv): Promise<string[]> {
  const ids: string[] = [];
  for await (const e of kv.list<Job>({ prefix: ["jobs"] })) {
    if (e.value && typeof e.value === "object" && e.value.kind === "prune") {
      ids.push(...(e.value.payload.restorePointIds as string[]));
    }
  }
  return ids.sort();
}

async function hold(kv: Deno.Kv, w: World, scope: "host" | "policy" | "point", subjectId: string) {
  return await placeHold(kv, w.actors.admin1, {
    scope,
    subjectId,
    reason: "Litigation hold",
    caseReference: "CASE-7",
  }, w.clock.now());
}

async function unchanged(kv: Deno.Kv, w: World) {
  const engine = await getEngine(kv, w.engine.id);
  assert.equal(engine?.status === "deleting", false, "the engine is not marked deleting");
  assert.ok((await kv.get(["storage_targets", w.target.id])).value, "its storage target stays");
  assert.ok((await kv.get(["policies", w.policy.id])).value, "its policy stays");
  const actions = (await auditEntries(kv, w.tenant.account.id)).map((e) => e.action);
  assert.ok(!actions.includes("engine.delete"), "no deletion is audited");
}

Deno.test("deleting a BES whose target holds a held point: 409 naming the case (API, page, domain), nothing changes", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 3);
  const [rp] = await allPoints(kv);
  const h = await hold(kv, w, "point", rp.id);

  const api = await apiAs(w, kv, w.users.admin2);
  const res = await api("DELETE", `/api/v1/engines/${w.engine.id}`);
  assert.equal(res.status, 409);
  assert.equal(res.body.error.code, "conflict");
  assert.match(res.body.error.message, /under legal hold \(case CASE-7: Litigation hold/);
  assert.match(res.body.error.message, new RegExp(rp.id));
  await unchanged(kv, w);

  const browser = new Browser(w.app);
  await signInAs(browser, kv, w.users.admin2, w.clock.now());
  const page = await browser.postForm(`/backup/engines/${w.engine.id}/delete`, { confirm: w.engine.name }, {
    tokenFrom: `/backup/engines/${w.engine.id}/delete`,
  });
  assert.equal(page.status, 409);
  const html = await page.text();
  assert.match(html, /data-testid="delete-refused"[^>]*>[^<]*case CASE-7/);
  await unchanged(kv, w);

  // The domain refuses too (the path a four-eyes approval takes).
  await assert.rejects(() => deleteEngine(kv, w.actors.admin2, w.engine.id, w.clock.now()), ConflictError);
  await unchanged(kv, w);

  // Released, the BES can go.
  await releaseHold(kv, w.actors.admin1, h.id, w.clock.now());
  assert.equal((await api("DELETE", `/api/v1/engines/${w.engine.id}`)).status, 204);
  assert.equal(await getEngine(kv, w.engine.id), null);
});

Deno.test("holds on restore points elsewhere (another host, no point on this BES) do not block deleting a BES", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 1);
  const { host: other } = await enrollHost(kv, { accountId: w.tenant.account.id, orgId: w.org.id }, {
    hostname: "other.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.10",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, w.clock.now());
  await hold(kv, w, "host", other.id);
  const api = await apiAs(w, kv, w.users.admin2);
  assert.equal((await api("DELETE", `/api/v1/engines/${w.engine.id}`)).status, 204);
  assert.equal(await getEngine(kv, w.engine.id), null);
});

Deno.test("deleting a policy with held points: it is retired, and retention never expires or prunes the held points", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 10);
  const h = await hold(kv, w, "policy", w.policy.id);
  const api = await apiAs(w, kv, w.users.admin2);
  assert.equal((await api("DELETE", `/api/v1/policies/${w.policy.id}`)).status, 204);
  assert.ok((await kv.get(retiredPolicyKey(w.policy.id))).value, "kept retired for its points");
  // Months later, retention over the retired policy keeps every held point.
  for (const days of [1, 30, 400]) {
    const later = new Date(w.clock.now().getTime() + days * 86_400_000);
    assert.deepEqual(await applyRetention(kv, later), { expired: 0, pruneJobs: 0 });
  }
  const points = await allPoints(kv);
  assert.equal(points.length, 10);
  assert.ok(points.every((p) => p.status === "complete"), "no held point expired");
  assert.deepEqual(await pruneJobIds(kv), [], "no prune job names a held point");
  assert.ok((await kv.get(retiredPolicyKey(w.policy.id))).value, "the retired policy stays while points do");
  // Released, the deleted policy's retention (7 daily) applies again.
  await releaseHold(kv, w.actors.admin1, h.id, w.clock.now());
  const later = new Date(w.clock.now().getTime() + 86_400_000);
  assert.equal((await applyRetention(kv, later)).expired, 3);
});

Deno.test("four-eyes: a BES deletion requested before a hold was placed ends failed on approval, naming the case; nothing is deleted", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 2);
  await setFourEyesSettings(kv, w.actors.admin1, { enabled: true, ttlHours: 24 }, w.clock.now());
  const api = await apiAs(w, kv, w.users.admin2);
  const asked = await api("DELETE", `/api/v1/engines/${w.engine.id}`);
  assert.equal(asked.status, 202, JSON.stringify(asked.body));
  await hold(kv, w, "host", w.host.id);
  const { request } = await approveRequest(kv, w.actors.admin3, asked.body.approvalRequest.id, {
    now: w.clock.now(),
    masterKey,
  });
  assert.equal(request.status, "failed");
  assert.match(JSON.stringify(request), /case CASE-7/);
  await unchanged(kv, w);
  // And with the hold in place, a new request is refused before it is even made.
  const again = await api("DELETE", `/api/v1/engines/${w.engine.id}`);
  assert.equal(again.status, 409);
  assert.match(again.body.error.message, /CASE-7/);
});

Deno.test("a hold on data of a BES already being deleted is refused naming the BES; nothing is placed", async () => {
  using kv = await Deno.openKv(":memory:");
  const w = await fourEyesWorld(kv, 2);
  const [rp] = await allPoints(kv);
  // The deletion's first step ran (a crash, or the cascade still under way): the BES is `deleting`.
  await markEngineDeleting(kv, w.actors.admin2, w.engine.id, w.clock.now());
  for (
    const [scope, subjectId] of [["point", rp.id], ["host", w.host.id], ["policy", w.policy.id]] as const
  ) {
    await assert.rejects(
      () => hold(kv, w, scope, subjectId),
      (e) =>
        e instanceof ConflictError &&
        e.message.includes(`BES ${w.engine.name} is being deleted`) && e.message.includes("CASE-7"),
    );
  }
  assert.deepEqual(await listHolds(kv, w.actors.admin1, { status: "all" }), [], "no hold was placed");
  // A hold on another host, with no point on the BES being deleted, is placed.
  const { host: other } = await enrollHost(kv, { accountId: w.tenant.account.id, orgId: w.org.id }, {
    hostname: "other.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.10",
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, w.clock.now());
  assert.equal((await hold(kv, w, "host", other.id)).status, "active");
});

Deno.test("legal hold vs BES deletion race: exactly one wins, and a placed hold's points are never deleted (many iterations)", async () => {
  const ITERATIONS = 40;
  const outcomes = { hold: 0, deletion: 0 };
  for (let i = 0; i < ITERATIONS; i++) {
    using kv = await Deno.openKv(":memory:");
    const w = await fourEyesWorld(kv, 2);
    const [rp] = await allPoints(kv);
    const scope = (["point", "host", "policy"] as const)[i % 3];
    const subjectId = scope === "point" ? rp.id : scope === "host" ? w.host.id : w.policy.id;
    // Vary who reaches KV first: either side yields i % 7 times before it starts.
    const later = async <T>(n: number, f: () => Promise<T>) => {
      for (let k = 0; k < n; k++) await Promise.resolve();
      return await f();
    };
    const [deletion, placed] = await Promise.allSettled([
      later(i % 2 ? i % 7 : 0, () => deleteEngine(kv, w.actors.admin2, w.engine.id, w.clock.now())),
      later(i % 2 ? 0 : i % 7, () => hold(kv, w, scope, subjectId)),
    ]);
    const engine = await getEngine(kv, w.engine.id);
    if (placed.status === "fulfilled") {
      outcomes.hold++;
      assert.equal(deletion.status, "rejected", `iteration ${i}: both the hold and the deletion succeeded`);
      assert.ok(
        deletion.reason instanceof ConflictError && deletion.reason.message.includes("case CASE-7"),
        `iteration ${i}: ${deletion.reason}`,
      );
      assert.equal(engine?.status === "deleting", false, `iteration ${i}: the BES is being deleted`);
      assert.ok((await kv.get(["restore_points", rp.id])).value, `iteration ${i}: the held point is gone`);
      assert.ok((await kv.get(["storage_targets", w.target.id])).value, `iteration ${i}: the target is gone`);
    } else {
      outcomes.deletion++;
      assert.equal(deletion.status, "fulfilled", `iteration ${i}: neither succeeded: ${placed.reason}`);
      assert.ok(
        placed.reason instanceof ConflictError &&
            /is being deleted|not found|No (restore point|host|policy)/i.test(placed.reason.message) ||
          placed.reason?.name === "NotFoundError",
        `iteration ${i}: ${placed.reason}`,
      );
      assert.equal(engine, null, `iteration ${i}: the deletion did not finish`);
      assert.deepEqual(await listHolds(kv, w.actors.admin1), [], `iteration ${i}: a hold is active`);
    }
  }
  // Both orders happened (otherwise the race was not exercised).
  assert.ok(outcomes.hold > 0 && outcomes.deletion > 0, JSON.stringify(outcomes));
});
