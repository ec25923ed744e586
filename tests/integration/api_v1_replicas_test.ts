/** Replica rules over `/api/v1/replicas` with a policy's 3-2-1 status, as its page's badge shows it. */
import assert from "node:assert/strict";
import { auditEntries, Browser, signInAs } from "../helpers.ts";
import { apiWorld } from "./api_world.ts";

type World = Awaited<ReturnType<typeof apiWorld>>;

/** The 3-2-1 badge of the policy page: `met` and its hint text. */
async function badge(w: World): Promise<{ met: boolean; text: string }> {
  const browser = new Browser(w.app);
  await signInAs(browser, w.kv, w.users.viewer, w.clock.now());
  const html = await (await browser.get(`/backup/policies/${w.policy.id}`)).text();
  const m = /data-testid="badge-321" data-met="(true|false)"[\s\S]*?<span class="hint">([\s\S]*?)<\/span>/
    .exec(html);
  assert.ok(m, "the policy page shows the 3-2-1 badge");
  return { met: m[1] === "true", text: m[2].replace(/<!--.*?-->/g, "").replace(/\s+/g, " ") };
}

Deno.test("replica rules: create, list by cursor, read, update, delete — and the 3-2-1 status follows, as on the page", async () => {
  using w = await apiWorld();
  const nas = await w.addTarget("nas-copy", "nfs");
  const spare = await w.addTarget("spare-disk");
  const status = async () =>
    (await w.api("viewer", "GET", `/api/v1/policies/${w.policy.id}/three-two-one`)).body;

  let verdict = await status();
  assert.deepEqual([verdict.copies, verdict.mediaTypes, verdict.offsite, verdict.met, verdict.missing], [
    1,
    ["disk"],
    0,
    false,
    ["2 more copies", "a second media type", "an offsite copy"],
  ]);
  assert.deepEqual(verdict.required, { copies: 3, mediaTypes: 2, offsite: 1 });
  assert.equal((await badge(w)).met, false);

  let res = await w.api("operator", "POST", "/api/v1/replicas", {
    policyId: w.policy.id,
    targetId: nas.id,
    isOffsite: true,
  });
  assert.equal(res.status, 201, JSON.stringify(res.body));
  const offsite = res.body;
  assert.deepEqual([offsite.kekSource, offsite.replicateAfterFull, offsite.isOffsite], [
    "account",
    true,
    true,
  ]);
  res = await w.api("operator", "POST", "/api/v1/replicas", { policyId: w.policy.id, targetId: spare.id });
  assert.equal(res.status, 201);
  const local = res.body;
  verdict = await status();
  assert.deepEqual([verdict.copies, verdict.mediaTypes, verdict.offsite, verdict.met, verdict.missing], [
    3,
    ["disk", "nas"],
    1,
    true,
    [],
  ]);
  assert.deepEqual((await badge(w)).met, true, "the page's badge agrees");

  res = await w.api("viewer", "GET", `/api/v1/replicas?policyId=${w.policy.id}&limit=1`);
  assert.deepEqual(res.body.values.map((r: { id: string }) => r.id), [offsite.id]);
  const next = await w.api(
    "viewer",
    "GET",
    `/api/v1/replicas?policyId=${w.policy.id}&limit=1&cursor=${encodeURIComponent(res.body.cursor)}`,
  );
  assert.deepEqual([next.body.values.map((r: { id: string }) => r.id), next.body.cursor], [[local.id], ""]);
  res = await w.api("viewer", "GET", `/api/v1/replicas/${offsite.id}`);
  assert.deepEqual([res.status, res.body.targetName, res.body.stats.replicated, res.body.recent], [
    200,
    "nas-copy",
    0,
    [],
  ]);

  res = await w.api("operator", "PUT", `/api/v1/replicas/${offsite.id}`, {
    targetId: nas.id,
    isOffsite: false,
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.isOffsite, false);
  verdict = await status();
  assert.deepEqual([verdict.met, verdict.missing], [false, ["an offsite copy"]]);
  const page = await badge(w);
  assert.deepEqual([page.met, page.text.includes("needs an offsite copy")], [false, true], page.text);

  assert.equal((await w.api("operator", "DELETE", `/api/v1/replicas/${local.id}`)).status, 204);
  assert.equal((await w.api("operator", "GET", `/api/v1/replicas/${local.id}`)).status, 404);
  assert.equal((await status()).copies, 2);
  const actions = (await auditEntries(w.kv, w.tenant.account.id)).map((e) => e.action).filter((a) =>
    a.startsWith("replica.")
  );
  assert.deepEqual(actions, ["replica.create", "replica.create", "replica.update", "replica.delete"]);
});

Deno.test("replica rules over /api/v1 refuse bad input, the primary target and other scopes, changing nothing", async () => {
  using w = await apiWorld();
  const nas = await w.addTarget("nas-copy", "nfs");
  const rule =
    (await w.api("operator", "POST", "/api/v1/replicas", { policyId: w.policy.id, targetId: nas.id }))
      .body;
  const one = `/api/v1/replicas/${rule.id}`;
  const policy321 = `/api/v1/policies/${w.policy.id}/three-two-one`;
  const before = await w.state();
  for (
    const [who, method, path, input, status, field] of [
      [
        "operator",
        "POST",
        "/api/v1/replicas",
        { policyId: w.policy.id, targetId: w.target.id },
        422,
        "targetId",
      ],
      ["operator", "POST", "/api/v1/replicas", { policyId: w.policy.id, targetId: nas.id }, 422, "targetId"],
      [
        "operator",
        "POST",
        "/api/v1/replicas",
        { policyId: w.policy.id, targetId: nas.id, offsite: true },
        422,
        "offsite",
      ],
      ["operator", "POST", "/api/v1/replicas", { policyId: w.policy.id }, 422, "targetId"],
      [
        "operator",
        "PUT",
        one,
        { targetId: nas.id, replicateAfterFull: false, replicateAfterIncremental: false },
        422,
        "replicateAfterFull",
      ],
      ["operator", "PUT", one, { targetId: nas.id, policyId: w.policy.id }, 422, "policyId"],
      ["operator", "GET", "/api/v1/replicas?offset=1", undefined, 422, "offset"],
      ["operator", "GET", "/api/v1/replicas?cursor=xx", undefined, 422, "cursor"],
      ["viewer", "POST", "/api/v1/replicas", { policyId: w.policy.id, targetId: nas.id }, 403, null],
      ["viewer", "DELETE", one, undefined, 403, null],
      ["devOperator", "POST", "/api/v1/replicas", { policyId: w.policy.id, targetId: nas.id }, 404, null],
      ["devOperator", "GET", one, undefined, 404, null],
      ["devOperator", "GET", policy321, undefined, 404, null],
      ["devOperator", "GET", `/api/v1/replicas?policyId=${w.policy.id}`, undefined, 404, null],
      ["otherAdmin", "GET", policy321, undefined, 404, null],
      ["otherAdmin", "PUT", one, { targetId: nas.id }, 404, null],
      ["otherAdmin", "DELETE", one, undefined, 404, null],
    ] as const
  ) {
    const res = await w.api(who, method, path, input);
    const where = `${who} ${method} ${path} ${JSON.stringify(input)}: ${JSON.stringify(res.body)}`;
    assert.equal(res.status, status, where);
    if (field) assert.equal(typeof res.body.error.fields[field], "string", where);
  }
  assert.deepEqual(await w.state(), before, "refusals changed nothing");
  assert.deepEqual((await w.api("devOperator", "GET", "/api/v1/replicas")).body.values, []);
});
