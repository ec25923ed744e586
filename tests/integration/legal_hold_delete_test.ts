/**
 * Deleting what held restore points live on (holds.ts: "held points are never pruned or expired"):
 * - a BES: its deletion drops its storage targets (and the credentials the data is read through) and
 *   its policies, so it is refused with a 409 naming the hold's case, page and API, changing nothing;
 * - a policy: it is kept retired and its repositories stay until its points expire under its last
 *   retention, so it is deleted, and its held points are still never expired (nor sent to a prune job).
 */
import assert from "node:assert/strict";
import { ConflictError } from "../../domain/errors.ts";
import { deleteEngine, getEngine } from "../../domain/engines.ts";
import { placeHold, releaseHold } from "../../domain/holds.ts";
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
