/**
 * Heartbeats in shared group commits (domain/group_commit.ts, `heartbeatCommitter`), over HTTP: a
 * heartbeat is written exactly when its own checks hold — replays (the same nonce twice in one burst),
 * skew (the window is checked at the door, the nonce outlives it) and deletion (an engine deleted while
 * its heartbeat waits for a shared commit is refused, never resurrected). The deterministic tests hold
 * a commit in flight with a gated KV, so the heartbeats under test are queued for the same shared
 * commit; the race tests run many iterations of concurrent bursts. Requests carry a Content-Length, as
 * over HTTP, so they take the heartbeats' direct path (routes/heartbeat_direct.ts) with the entries it
 * remembers; one race iteration in three goes through the declared route instead.
 */
import assert from "node:assert/strict";
import {
  deleteEngine,
  deletingEngineKey,
  type Engine,
  engineKey,
  getEngine,
  heartbeatCommitter,
  liveEngineKey,
} from "../../domain/engines.ts";
import { getHost, liveHostKey } from "../../domain/hosts.ts";
import { systemActor } from "../../domain/rbac.ts";
import { type EngineIdentity } from "../../tools/engine_client.ts";
import { gatedKv } from "../fakes/gated_kv.ts";
import { createTenant, dumpKv, engineClient, engineMetrics, testApp, TestClock } from "../helpers.ts";

const BASE = "http://localhost:8000";

async function fixture(real: Deno.Kv, engines: number, agents = 0) {
  const gated = gatedKv(real);
  const clock = new TestClock();
  const { app } = testApp(gated.kv, clock);
  const tenant = await createTenant(real, "Acme", ["Ops"], clock.now());
  const client = engineClient(app, clock);
  const bes: EngineIdentity[] = [];
  for (let i = 0; i < engines; i++) {
    const { identity, response } = await client.registerBes(tenant.secrets[0], {
      name: `bes-${i}`,
      hostname: `bes${i}.acme.example`,
      ipAddress: "10.0.0.10",
    });
    assert.equal(response.status, 201);
    bes.push(identity);
  }
  const hosts: EngineIdentity[] = [];
  for (let i = 0; i < agents; i++) {
    const { identity, response } = await client.enrollAgent(tenant.secrets[0], {
      hostname: `web${i}.acme.example`,
      ipAddress: "10.1.0.5",
    });
    assert.equal(response.status, 201);
    hosts.push(identity);
  }
  const committer = heartbeatCommitter(gated.kv);
  return { gated, clock, app, client, bes, hosts, committer };
}

type Fixture = Awaited<ReturnType<typeof fixture>>;

/**
 * A signed heartbeat request (BES or agent) that can be sent several times (a replay). `direct`: with a
 * Content-Length, as over HTTP, so the app answers it on the heartbeats' direct path
 * (routes/heartbeat_direct.ts); without one it goes through the declared route (hono's chain).
 */
async function signed(f: Fixture, identity: EngineIdentity, signedAt = f.clock.now(), direct = true) {
  const path = `/api/${identity.kind}/v1/heartbeat`;
  const body = JSON.stringify({ version: "1.0.0", metrics: engineMetrics() });
  const headers = await f.client.signedHeaders(identity, "POST", path, body, signedAt);
  const length: Record<string, string> = direct ? { "content-length": String(body.length) } : {};
  return {
    nonce: headers["x-cadres-nonce"],
    send: async (): Promise<Response> =>
      await f.app.request(`${BASE}${path}`, {
        method: "POST",
        headers: { ...headers, "content-type": "application/json", ...length },
        body,
      }),
  };
}

/** Waits until `commits` commits have started and `queued` heartbeats wait for the next one. */
async function queuedBehind(f: Fixture, commits: number, queued: number) {
  for (let i = 0; i < 2000; i++) {
    if (f.committer.stats.commits === commits && f.committer.queued === queued) return;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  throw new Error(
    `expected ${queued} queued behind ${commits} commits, saw ${f.committer.queued} behind ${f.committer.stats.commits}`,
  );
}

async function nonceUsed(kv: Deno.Kv, identity: EngineIdentity, nonce: string) {
  return (await kv.get(["nonces", `${identity.kind}:${identity.id}`, nonce])).versionstamp !== null;
}

Deno.test("two copies of one signed heartbeat queued for the same shared commit: exactly one is accepted, the other answers 401 and writes nothing", async () => {
  using real = await Deno.openKv(":memory:");
  const f = await fixture(real, 4);
  const [blocker, victim, ...others] = f.bes;
  f.gated.close();
  const first = (await signed(f, blocker)).send();
  await queuedBehind(f, 1, 0);
  const request = await signed(f, victim);
  const copies = [request.send(), request.send()];
  const rest = await Promise.all(others.map((o) => signed(f, o)));
  const sent = rest.map((r) => r.send());
  await queuedBehind(f, 1, 2 + others.length);
  f.gated.open();
  assert.equal((await first).status, 200);
  const statuses = await Promise.all(copies.map((p) => p.then((r) => r.status)));
  assert.deepEqual(statuses.sort(), [200, 401]);
  for (const r of await Promise.all(sent)) assert.equal(r.status, 200);
  assert.ok(await nonceUsed(real, victim, request.nonce));
  assert.ok(f.committer.stats.writes > f.committer.stats.commits, "heartbeats shared commits");
  // The refused copy changed nothing: the engine is the accepted copy's, and a third copy is refused too.
  const engine = (await getEngine(real, victim.id))!;
  const before = await dumpKv(real);
  f.clock.advance(5_000);
  assert.equal((await request.send()).status, 401);
  assert.deepEqual(await dumpKv(real), before);
  assert.equal(engine.status, "online");
});

Deno.test("an engine deleted while its heartbeat waits for a shared commit: the heartbeat answers 401 and the engine is not resurrected", async () => {
  using real = await Deno.openKv(":memory:");
  const f = await fixture(real, 3);
  const [blocker, victim, bystander] = f.bes;
  // Online first, so the deletion has live keys and a metrics sample to remove.
  assert.equal((await (await signed(f, victim)).send()).status, 200);
  f.clock.advance(60_000);
  const commitsBefore = f.committer.stats.commits;
  f.gated.close();
  const first = (await signed(f, blocker)).send();
  await queuedBehind(f, commitsBefore + 1, 0);
  const doomed = await signed(f, victim);
  const waiting = doomed.send();
  const other = (await signed(f, bystander)).send();
  await queuedBehind(f, commitsBefore + 1, 2);
  // The whole deletion runs (through the real KV) while the heartbeat waits.
  await deleteEngine(real, systemActor("test"), victim.id, f.clock.now());
  assert.equal(await getEngine(real, victim.id), null);
  f.gated.open();
  assert.equal((await first).status, 200);
  assert.equal((await other).status, 200);
  const res = await waiting;
  assert.equal(res.status, 401);
  assert.match((await res.json()).error.message, /Unknown or deleted principal/);
  assert.equal(await getEngine(real, victim.id), null, "no resurrection");
  assert.equal((await real.get(liveEngineKey(victim.id))).versionstamp, null);
  assert.equal(await nonceUsed(real, victim, doomed.nonce), false, "the refused heartbeat wrote nothing");
  const leftovers = (await dumpKv(real)).filter((e) =>
    JSON.stringify(e.key).includes(victim.id) && e.key[0] !== "audit" && e.key[0] !== "nonces" &&
    !String(e.key[0]).startsWith("audit")
  );
  assert.deepEqual(leftovers, [], "nothing of the deleted engine is left or re-created");
});

Deno.test("an engine marked deleting while its heartbeat waits for a shared commit stays deleting: 401, nothing written", async () => {
  using real = await Deno.openKv(":memory:");
  const f = await fixture(real, 2);
  const [blocker, victim] = f.bes;
  assert.equal((await (await signed(f, victim)).send()).status, 200);
  f.clock.advance(60_000);
  const commitsBefore = f.committer.stats.commits;
  f.gated.close();
  const first = (await signed(f, blocker)).send();
  await queuedBehind(f, commitsBefore + 1, 0);
  const doomed = await signed(f, victim);
  const waiting = doomed.send();
  await queuedBehind(f, commitsBefore + 1, 1);
  const engine = (await getEngine(real, victim.id))!;
  await real.atomic()
    .set(engineKey(engine.id), { ...engine, status: "deleting" } satisfies Engine)
    .set(deletingEngineKey(engine.id), f.clock.now().toISOString())
    .delete(liveEngineKey(engine.id))
    .commit();
  const marked = await real.get(engineKey(engine.id));
  f.gated.open();
  assert.equal((await first).status, 200);
  assert.equal((await waiting).status, 401);
  const after = await real.get<Engine>(engineKey(engine.id));
  assert.equal(after.versionstamp, marked.versionstamp, "the engine entry is untouched");
  assert.equal(after.value!.status, "deleting");
  assert.equal((await real.get(liveEngineKey(victim.id))).versionstamp, null);
  assert.equal(await nonceUsed(real, victim, doomed.nonce), false);
});

Deno.test("skew under shared commits: the window is checked at the door; a heartbeat queued past the window's edge is applied once, and its replays are refused", async () => {
  using real = await Deno.openKv(":memory:");
  const f = await fixture(real, 4);
  const [blocker, edge, late, fresh] = f.bes;
  const at = (seconds: number) => new Date(f.clock.now().getTime() + seconds * 1000);
  f.gated.close();
  const first = (await signed(f, blocker)).send();
  await queuedBehind(f, 1, 0);
  const edgeRequest = await signed(f, edge, at(-299));
  const lateRequest = await signed(f, late, at(-301));
  const freshRequest = await signed(f, fresh);
  const edgeSent = edgeRequest.send();
  const lateSent = lateRequest.send();
  const freshSent = freshRequest.send();
  const refused = await lateSent;
  assert.equal(refused.status, 401, "301 s old: refused at the door, before any commit");
  assert.match((await refused.json()).error.message, /300 s/);
  await queuedBehind(f, 1, 2);
  // The commit takes long enough for the edge request to leave the window while it waits: it was
  // verified in time, so it is applied.
  f.clock.advance(5_000);
  f.gated.open();
  assert.equal((await first).status, 200);
  assert.equal((await edgeSent).status, 200);
  assert.equal((await freshSent).status, 200);
  assert.equal(await nonceUsed(real, late, lateRequest.nonce), false);
  assert.equal((await getEngine(real, late.id))!.status, "pending", "the refused engine is untouched");
  // Replays: the fresh one inside the window (its nonce is taken), the edge one outside it (skew).
  const before = await dumpKv(real);
  for (const replay of [freshRequest, edgeRequest]) assert.equal((await replay.send()).status, 401);
  assert.deepEqual(await dumpKv(real), before);
});

Deno.test("heartbeat bursts with replays, skewed requests, agents and a deletion, many iterations: every distinct nonce accepted at most once, each write exactly when its checks hold", async () => {
  let shared = 0;
  for (let iteration = 0; iteration < 30; iteration++) {
    // Two iterations in three on the direct path (with the entries it remembers), one through hono's chain.
    const direct = iteration % 3 !== 2;
    using real = await Deno.openKv(":memory:");
    const f = await fixture(real, 6, 3);
    const [victim, ...live] = f.bes;
    const principals = [...live, ...f.hosts];
    const at = (seconds: number) => new Date(f.clock.now().getTime() + seconds * 1000);
    const distinct: Array<{ id: EngineIdentity; nonce: string; copies: Promise<Response>[] }> = [];
    const skewed: Array<{ id: EngineIdentity; nonce: string; response: Promise<Response> }> = [];
    const burst: Array<() => void> = [];
    // Each principal: three distinct heartbeats, the first of them sent twice or three times (a replay),
    // and one signed 301 s in the past.
    for (const id of [victim, ...principals]) {
      for (let k = 0; k < 3; k++) {
        const request = await signed(f, id, at(-(k * 100)), direct);
        const entry = { id, nonce: request.nonce, copies: [] as Promise<Response>[] };
        distinct.push(entry);
        const copies = k === 0 ? 2 + (iteration % 2) : 1;
        for (let c = 0; c < copies; c++) burst.push(() => entry.copies.push(request.send()));
      }
      const stale = await signed(f, id, at(-301), direct);
      burst.push(() => skewed.push({ id, nonce: stale.nonce, response: stale.send() }));
    }
    // A deterministic shuffle, different per iteration.
    let seed = iteration + 1;
    for (let i = burst.length - 1; i > 0; i--) {
      seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31;
      const j = seed % (i + 1);
      [burst[i], burst[j]] = [burst[j], burst[i]];
    }
    const commitsBefore = f.committer.stats.commits;
    const writesBefore = f.committer.stats.writes;
    const deletion = new Promise<void>((resolve, reject) =>
      setTimeout(
        () => deleteEngine(real, systemActor("test"), victim.id, f.clock.now()).then(resolve, reject),
        iteration % 4,
      )
    );
    for (const send of burst) send();
    await deletion;
    for (const d of distinct) {
      const statuses = await Promise.all(d.copies.map((p) => p.then((r) => r.status)));
      const accepted = statuses.filter((s) => s === 200).length;
      assert.ok(statuses.every((s) => s === 200 || s === 401), `only 200 or 401: ${statuses}`);
      if (d.id === victim) {
        assert.ok(accepted <= 1, "a deleted engine's heartbeat is accepted at most once");
      } else {
        assert.equal(accepted, 1, `exactly one copy of ${d.id.kind} ${d.id.id}'s heartbeat is accepted`);
        assert.ok(await nonceUsed(real, d.id, d.nonce));
      }
    }
    for (const s of skewed) {
      assert.equal((await s.response).status, 401);
      assert.equal(await nonceUsed(real, s.id, s.nonce), false, "a skewed request claims no nonce");
    }
    for (const id of live) {
      const engine = (await getEngine(real, id.id))!;
      assert.equal(engine.status, "online");
      assert.ok((await real.get(liveEngineKey(id.id))).versionstamp !== null);
    }
    for (const id of f.hosts) {
      assert.equal((await getHost(real, id.id))!.status, "online");
      assert.ok((await real.get(liveHostKey(id.id))).versionstamp !== null);
    }
    // No resurrection: every key of the deleted engine is gone (its nonces and audit entries aside).
    assert.equal(await getEngine(real, victim.id), null);
    const leftovers = (await dumpKv(real)).filter((e) =>
      JSON.stringify(e.key).includes(victim.id) && e.key[0] !== "nonces" &&
      !String(e.key[0]).startsWith("audit")
    );
    assert.deepEqual(leftovers.map((e) => e.key), []);
    shared += (f.committer.stats.writes - writesBefore) - (f.committer.stats.commits - commitsBefore);
  }
  assert.ok(shared > 0, "the bursts shared commits");
});
