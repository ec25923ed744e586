/**
 * Engine results kept with the run, and long lists in parts (DESIGN.md §5), over the signed protocol:
 * a backup's measures and its per-file errors (inline, then parts; a cut list keeps its total) are stored
 * with the run and shown on the run page, the restore point page and `/api/v1/runs/{id}`; a result that
 * names a missing part is refused and records nothing; a browse of more than 500 entries arrives in parts
 * and is read a page at a time (API and the server-rendered page links); a search cut by the BES says so.
 */
import assert from "node:assert/strict";
import { assignHost } from "../../domain/assignments.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { applyHostHeartbeat, enrollHost } from "../../domain/hosts.ts";
import { applyResult, claimJobs, expireLeases, getJob, type Job, LEASE_MS } from "../../domain/job_queue.ts";
import { ValidationError } from "../../domain/errors.ts";
import { storeResultPart } from "../../domain/result_parts.ts";
import { jobErrorsPage } from "../../domain/run_results.ts";
import { createPolicy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import {
  getBrowse,
  getSearch,
  LIST_PAGE_SIZE,
  requestBrowse,
  requestSearch,
} from "../../domain/restore_browse.ts";
import { listRunsByPolicy, type Run } from "../../domain/runs.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { createTarget } from "../../domain/storage.ts";
import type { EngineIdentity } from "../../tools/engine_client.ts";
import {
  addUser,
  assertIncludes,
  Browser,
  createTenant,
  engineClient,
  engineMetrics,
  registerTestEngine,
  signInAs,
  targetInput,
  testApp,
  TestClock,
} from "../helpers.ts";

const system = systemActor("test");
const masterKey = new Uint8Array(32).fill(7);

async function setup(kv: Deno.Kv) {
  const clock = new TestClock(new Date("2026-11-02T00:59:00Z"));
  const now = clock.now();
  const tenant = await createTenant(kv, "Acme", ["Ops"], now);
  const scope = { accountId: tenant.account.id, orgId: tenant.orgs[0].id };
  const { engine, keys } = await registerTestEngine(kv, scope, now, "bes-parts");
  const target = await createTarget(kv, system, targetInput(engine.id), { now, masterKey });
  const policy = await createPolicy(kv, system, {
    name: "Files",
    besId: engine.id,
    targetId: target.id,
    backupType: "file",
    fullSchedule: "0 1 * * *",
  }, now);
  const agentKeys = generateKeyPair();
  const { host } = await enrollHost(kv, scope, {
    hostname: "files-01.acme.example",
    os: "Debian 12",
    ipAddress: "10.0.0.2",
    publicKey: agentKeys.publicKey,
    version: "1",
  }, now);
  await assignHost(kv, system, { policyId: policy.id, hostId: host.id }, now);
  const { app } = testApp(kv, clock);
  const client = engineClient(app, clock);
  const bes: EngineIdentity = { kind: "bes", id: engine.id, ...keys };
  const agent: EngineIdentity = { kind: "agent", id: host.id, ...agentKeys };
  const online = async () => {
    await applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, clock.now());
    await applyHostHeartbeat(kv, host.id, { version: "1", metrics: engineMetrics() }, clock.now());
  };
  const admin = await addUser(kv, tenant, "admin@acme.example", "admin", "all", now);
  const browser = async () => {
    const b = new Browser(app);
    await signInAs(b, kv, admin, clock.now());
    return b;
  };
  /** Claims one job of `kind` as `who` over the protocol. */
  const claim = async (who: EngineIdentity, kind: string) => {
    const res = await client.post(who, `/api/${who.kind}/v1/jobs/claim`, { max: 10 });
    assert.equal(res.status, 200);
    const { jobs } = await res.json() as { jobs: Job[] };
    const job = jobs.find((j) => j.kind === kind);
    assert.ok(job, `a ${kind} job for ${who.kind}`);
    return job;
  };
  const post = (who: EngineIdentity, path: string, body: unknown) =>
    client.post(who, `/api/${who.kind}/v1/jobs/${path}`, body);
  const base = () => ({
    status: "success",
    startedAt: clock.now().toISOString(),
    endedAt: clock.now().toISOString(),
    bytesTransferred: 10,
    protectedBytes: 10,
  });
  return {
    kv,
    clock,
    tenant,
    engine,
    target,
    policy,
    host,
    app,
    bes,
    agent,
    online,
    browser,
    claim,
    post,
    base,
  };
}

const errorsOf = (from: number, to: number) =>
  Array.from({ length: to - from }, (_, i) => ({
    path: `/srv/data/locked-${String(from + i).padStart(4, "0")}.db`,
    message: `file ${from + i} was locked`,
  }));

Deno.test("a backup's measures and errors (inline, then parts, cut with a total) are kept and shown", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  s.clock.time = new Date("2026-11-02T01:00:00Z");
  await s.online();
  await runSchedulerTick(kv, s.clock.now());
  const job = await s.claim(s.agent, "backup");

  // Parts are checked: an item without a path, a list a backup has not, another principal's job.
  const badItem = await s.post(s.agent, `${job.id}/parts`, {
    list: "errors",
    part: 0,
    items: [{ path: "/a", message: "x" }, { message: "no path" }],
  });
  assert.equal(badItem.status, 422);
  const badBody = await badItem.json();
  assert.equal(badBody.error.code, "invalid");
  assert.ok(badBody.error.fields["items.1.path"], JSON.stringify(badBody));
  const wrongList = await s.post(s.agent, `${job.id}/parts`, { list: "entries", part: 0, items: [{}] });
  assert.equal(wrongList.status, 422);
  assert.match((await wrongList.json()).error.fields.list, /errors for a backup job/);
  const stranger = await s.post(s.bes, `${job.id}/parts`, { list: "errors", part: 0, items: errorsOf(0, 1) });
  assert.equal(stranger.status, 404);
  await stranger.body?.cancel();

  // 250 errors sent (100 inline, parts 0 and 1), of 400 the engine met.
  for (const [part, items] of [[0, errorsOf(100, 200)], [1, errorsOf(200, 250)]] as const) {
    const res = await s.post(s.agent, `${job.id}/parts`, { list: "errors", part, items });
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { list: "errors", part, items: items.length });
  }
  const stats = {
    files: 12_345,
    dirs: 678,
    bytesRead: 1_610_612_736,
    bytesNew: 524_288_000,
    bytesStored: 262_144_000,
    durationMs: 125_000,
    added: 12,
    modified: 3,
    deleted: 1,
  };
  const result = {
    ...s.base(),
    status: "warning",
    error: { reason: "PARTIAL_FILES", message: "400 files could not be read" },
    stats,
    errors: errorsOf(0, 100),
    totals: { errors: 400 },
    output: {
      restorePoint: { id: "rp-1", chainId: "c-1", type: "full", sizeBytes: 1000, fileCount: 12_345 },
    },
  };
  // A result naming a part that never arrived is refused and records nothing.
  const missing = await s.post(s.agent, `${job.id}/result`, { ...result, parts: { errors: 3 } });
  assert.equal(missing.status, 422);
  assert.match((await missing.json()).error.fields["parts.errors"], /part 2 of 3 is missing/);
  assert.equal((await getJob(kv, job.id))!.result, null, "nothing recorded");
  const low = await s.post(s.agent, `${job.id}/result`, {
    ...result,
    parts: { errors: 2 },
    totals: { errors: 7 },
  });
  assert.equal(low.status, 422);
  assert.match((await low.json()).error.fields["totals.errors"], /at least 250/);
  const tooManyInline = await s.post(s.agent, `${job.id}/result`, { ...result, errors: errorsOf(0, 101) });
  assert.equal(tooManyInline.status, 422);
  await tooManyInline.body?.cancel();

  const ok = await s.post(s.agent, `${job.id}/result`, { ...result, parts: { errors: 2 } });
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { applied: true });
  const late = await s.post(s.agent, `${job.id}/parts`, { list: "errors", part: 2, items: errorsOf(0, 1) });
  assert.equal(late.status, 409, "parts come before the result");
  await late.body?.cancel();

  const run = (await listRunsByPolicy(kv, s.policy.id)).find((r) => r.jobId === job.id)!;
  assert.deepEqual(run.stats, stats);
  assert.equal(run.errorCount, 400);
  assert.equal(run.errorsKept, 250);
  const point = (await kv.get<RestorePoint>(["restore_points", run.restorePointId!])).value!;
  assert.deepEqual(point.stats, stats);

  // The run page: measures in human units, errors a page at a time, the cut said plainly.
  const b = await s.browser();
  const page = await (await b.get(`/backup/runs/${run.id}`)).text();
  for (
    const text of [
      "12,345",
      "678",
      "1.5 GB",
      "500.0 MB",
      "250.0 MB",
      "2 min 5 s",
      "12 added · 3 modified · 1 deleted",
      "The engine met 400 errors and sent the first 250",
      "Errors 1–100 of 250 (page 1 of 3)",
      "/srv/data/locked-0000.db",
      "file 99 was locked",
    ]
  ) assertIncludes(page, text);
  assert.ok(!page.includes("locked-0100.db"), "the second page is not on the first");
  assertIncludes(page, `href="/backup/runs/${run.id}?errorsPage=1#errors"`);
  const last = await (await b.get(`/backup/runs/${run.id}?errorsPage=2`)).text();
  assertIncludes(last, "Errors 201–250 of 250 (page 3 of 3)");
  assertIncludes(last, "/srv/data/locked-0249.db");
  assertIncludes(last, `href="/backup/runs/${run.id}?errorsPage=1#errors"`);
  // The restore point page shows the same measures and links to the errors.
  const pointPage = await (await b.get(`/backup/restore/points/${point.id}`)).text();
  assertIncludes(pointPage, "1.5 GB");
  assertIncludes(pointPage, "12 added · 3 modified · 1 deleted");
  assertIncludes(pointPage, `href="/backup/runs/${run.id}#errors"`);
  assertIncludes(pointPage, `cadres/${s.policy.id}/g1`);
  // The policy page links each run to its page.
  assertIncludes(
    await (await b.get(`/backup/policies/${s.policy.id}`)).text(),
    `href="/backup/runs/${run.id}"`,
  );
  // And the API.
  const api = await b.get(`/api/v1/runs/${run.id}?errorsPage=1`);
  assert.equal(api.status, 200);
  const json = await api.json() as { run: Run; errors: { errors: unknown[]; offset: number; total: number } };
  assert.deepEqual(json.run.stats, stats);
  assert.equal(json.errors.offset, 100);
  assert.equal(json.errors.errors.length, 100);
  assert.equal(json.errors.total, 400);
  assert.equal((await b.get(`/api/v1/runs/${run.id}?errorsPage=-1`)).status, 422);
});

Deno.test("a browse of 1,234 entries arrives in 13 parts and is read 200 a page (API and page links)", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  s.clock.time = new Date("2026-11-02T01:00:00Z");
  await s.online();
  await runSchedulerTick(kv, s.clock.now());
  const backup = await s.claim(s.agent, "backup");
  await (await s.post(s.agent, `${backup.id}/result`, {
    ...s.base(),
    output: { restorePoint: { id: "rp-1", chainId: "c-1", type: "full", sizeBytes: 1, fileCount: 1234 } },
  })).body?.cancel();
  const run = (await listRunsByPolicy(kv, s.policy.id))[0];
  const pointId = run.restorePointId!;

  const requested = await requestBrowse(kv, system, pointId, "/srv/big", s.clock.now());
  assert.equal(requested.status, "pending");
  const job = await s.claim(s.bes, "browse");
  // 1,200 files and 34 folders, sent in the engine's own order (by name), 100 a part.
  const entries = Array.from({ length: 1234 }, (_, i) => {
    const dir = i % 37 === 0 && i < 37 * 34;
    return {
      name: `${dir ? "dir" : "file"}-${String(i).padStart(5, "0")}`,
      type: dir ? "dir" : "file",
      size: dir ? 0 : i * 10,
      mtime: "2026-10-01T00:00:00Z",
    };
  });
  assert.equal(entries.filter((e) => e.type === "dir").length, 34);
  for (let part = 0; part * 100 < entries.length; part++) {
    const body = { list: "entries", part, items: entries.slice(part * 100, part * 100 + 100) };
    assert.ok(JSON.stringify(body).length < 64 * 1024);
    const res = await s.post(s.bes, `${job.id}/parts`, body);
    assert.equal(res.status, 200, await res.text());
  }
  assert.equal((await getBrowse(kv, system, pointId, "/srv/big", s.clock.now()))!.status, "pending");
  const done = await s.post(s.bes, `${job.id}/result`, { ...s.base(), parts: { entries: 13 }, output: {} });
  assert.equal(done.status, 200, await done.text());

  const first = (await getBrowse(kv, system, pointId, "/srv/big", s.clock.now()))!;
  assert.equal(first.status, "ready");
  assert.equal(first.total, 1234);
  assert.equal(first.kept, 1234);
  assert.equal(first.truncated, false);
  assert.equal(first.pages, 7);
  assert.equal(first.entries!.length, LIST_PAGE_SIZE);
  assert.equal(first.entries!.slice(0, 34).every((e) => e.type === "dir"), true, "folders first");
  assert.equal(first.entries![0].path, "/srv/big/dir-00000");
  const last = (await getBrowse(kv, system, pointId, "/srv/big", s.clock.now(), 6))!;
  assert.equal(last.page, 6);
  assert.equal(last.offset, 1200);
  assert.equal(last.entries!.length, 34);
  assert.equal(last.entries!.at(-1)!.name, "file-01233");
  const beyond = (await getBrowse(kv, system, pointId, "/srv/big", s.clock.now(), 99))!;
  assert.equal(beyond.page, 6, "past the end is the last page");
  // Every entry exactly once across the pages.
  const seen = new Set<string>();
  for (let p = 0; p < 7; p++) {
    for (const e of (await getBrowse(kv, system, pointId, "/srv/big", s.clock.now(), p))!.entries!) {
      seen.add(e.name);
    }
  }
  assert.equal(seen.size, 1234);

  // The API and the server-rendered page (links that work without JavaScript).
  const b = await s.browser();
  const api = await b.get(
    `/api/v1/restore-points/${pointId}/browse?path=${encodeURIComponent("/srv/big")}&page=3`,
  );
  assert.equal(api.status, 200);
  const state = await api.json();
  assert.equal(state.offset, 600);
  assert.equal(state.entries[0].name, entries.filter((e) => e.type === "file")[600 - 34].name);
  assert.equal((await b.get(`/api/v1/restore-points/${pointId}/browse?path=/srv/big&page=x`)).status, 422);
  const html =
    await (await b.get(`/backup/restore/points/${pointId}?path=${encodeURIComponent("/srv/big")}&page=3`))
      .text();
  assertIncludes(html, "Entries 601–800 of 1,234 (page 4 of 7)");
  assertIncludes(html, `href="?path=%2Fsrv%2Fbig&amp;page=4#browse"`);
  assertIncludes(html, `href="?path=%2Fsrv%2Fbig&amp;page=2#browse"`);
  assertIncludes(html, state.entries[0].name);
  // A second request for the folder answers from what is kept: no new job.
  const again = await requestBrowse(kv, system, pointId, "/srv/big", s.clock.now());
  assert.equal(again.jobId, job.id);
  assert.equal(again.entries!.length, LIST_PAGE_SIZE);
});

Deno.test("a search cut by the BES keeps its total; its matches come in parts and pages", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  s.clock.time = new Date("2026-11-02T01:00:00Z");
  await s.online();
  await runSchedulerTick(kv, s.clock.now());
  const backup = await s.claim(s.agent, "backup");
  await (await s.post(s.agent, `${backup.id}/result`, {
    ...s.base(),
    output: { restorePoint: { id: "rp-1", chainId: "c-1", type: "full", sizeBytes: 1, fileCount: 1 } },
  })).body?.cancel();
  const pointId = (await listRunsByPolicy(kv, s.policy.id))[0].restorePointId!;
  const search = await requestSearch(kv, system, pointId, "*.pdf", s.clock.now());
  const job = await s.claim(s.bes, "search");
  assert.equal(job.payload.maxMatches, 10_000);
  const matches = Array.from({ length: 450 }, (_, i) => ({
    path: `/home/u${i % 9}/report-${String(i).padStart(4, "0")}.pdf`,
    size: 1000 + i,
    mtime: "2026-10-01T00:00:00Z",
  }));
  for (let part = 0; part < 5; part++) {
    const res = await s.post(s.bes, `${job.id}/parts`, {
      list: "matches",
      part,
      items: matches.slice(part * 100, part * 100 + 100),
    });
    assert.equal(res.status, 200);
    await res.body?.cancel();
  }
  const done = await s.post(s.bes, `${job.id}/result`, {
    ...s.base(),
    parts: { matches: 5 },
    totals: { matches: 12_000 },
    output: {},
  });
  assert.equal(done.status, 200, await done.text());
  const ready = await getSearch(kv, system, search.id, s.clock.now(), 2);
  assert.equal(ready.status, "ready");
  assert.equal(ready.truncated, true);
  assert.equal(ready.total, 12_000);
  assert.equal(ready.kept, 450);
  assert.equal(ready.pages, 3);
  assert.equal(ready.offset, 400);
  assert.deepEqual(ready.matches!.map((m) => m.path), matches.slice(400).map((m) => m.path), "engine order");
  const b = await s.browser();
  const html = await (await b.get(`/backup/restore/points/${pointId}?searchId=${search.id}&searchPage=1`))
    .text();
  assertIncludes(html, "450 matches for “*.pdf” (the BES found 12,000 and stopped at this many");
  assertIncludes(html, "Matches 201–400 (page 2 of 3)");
  assertIncludes(html, matches[200].path);
});

Deno.test("parts belong to their attempt: a job retried after a lost lease uploads its own", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  s.clock.time = new Date("2026-11-02T01:00:00Z");
  await s.online();
  await runSchedulerTick(kv, s.clock.now());
  const [first] = await claimJobs(kv, `agent:${s.host.id}`, 1, s.clock.now());
  const principal = `agent:${s.host.id}`;
  await storeResultPart(
    kv,
    principal,
    first.id,
    { list: "errors", part: 0, items: errorsOf(0, 3) },
    s.clock.now(),
  );
  // The agent goes silent: the lease expires and the job is claimed again (attempt 2).
  s.clock.advance(LEASE_MS + 1000);
  assert.equal((await expireLeases(kv, s.clock.now())).requeued, 1);
  const [second] = await claimJobs(kv, principal, 1, s.clock.now());
  assert.equal(second.id, first.id);
  assert.equal(second.attempts, 2);
  const result = {
    status: "warning" as const,
    startedAt: s.clock.now().toISOString(),
    endedAt: s.clock.now().toISOString(),
    bytesTransferred: 1,
    protectedBytes: 1,
    error: { reason: "PARTIAL_FILES", message: "some files" },
    parts: { errors: 1 },
  };
  await assert.rejects(
    () => applyResult(kv, principal, second.id, result, s.clock.now()),
    (e: unknown) => e instanceof ValidationError && /part 0 of 1 is missing/.test(e.fields["parts.errors"]),
    "the first attempt's part is not this attempt's",
  );
  await storeResultPart(
    kv,
    principal,
    second.id,
    { list: "errors", part: 0, items: errorsOf(10, 12) },
    s.clock.now(),
  );
  const { job } = await applyResult(kv, principal, second.id, result, s.clock.now());
  assert.deepEqual(job.result!.lists!.errors, { parts: 1, kept: 2, total: 2 });
  const page = await jobErrorsPage(kv, job, 0);
  assert.deepEqual(page.errors.map((e) => e.path), errorsOf(10, 12).map((e) => e.path));
  const left = await Array.fromAsync(kv.list({ prefix: ["job_parts", job.id] }));
  assert.deepEqual(left.map((e) => e.key[2]), [2], "the first attempt's parts are gone");
});

Deno.test("the run page shows a running backup's progress as the agent last reported it, and no bar once it ended", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  s.clock.time = new Date("2026-11-02T01:00:00Z");
  await s.online();
  await runSchedulerTick(kv, s.clock.now());
  const [run] = await listRunsByPolicy(kv, s.policy.id);
  const b = await s.browser();
  const page = async () => await (await b.get(`/backup/runs/${run.id}`)).text();
  assert.ok(!(await page()).includes('data-testid="run-progress"'), "queued: no bar");
  const job = await s.claim(s.agent, "backup");
  assertIncludes(await page(), "started, no progress reported yet");
  const progress = await s.post(s.agent, `${job.id}/progress`, {
    percent: 42.4,
    bytesTransferred: 1_048_576,
    message: "reading /srv/data",
  });
  assert.equal(progress.status, 200);
  await progress.body?.cancel();
  const running = await page();
  assertIncludes(running, 'data-testid="run-progress"');
  assertIncludes(running, '<progress max="100" value="42" aria-label="Backup progress">');
  assertIncludes(running, "1.0 MB transferred · reading /srv/data");
  const done = await s.post(s.agent, `${job.id}/result`, s.base());
  assert.equal(done.status, 200);
  await done.body?.cancel();
  assert.ok(!(await page()).includes('data-testid="run-progress"'), "ended: no bar");
});
