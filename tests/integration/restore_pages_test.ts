/**
 * Backup > Restore pages: the restore points list with its filters and deep links, a point's page
 * (chain, Browse, Search, the restore forms), the form fallbacks of Browse and Search, file, image and
 * bare-metal restore through the forms, the request page, and the fail-closed 403 for every role
 * without backup.restore.
 */
import assert from "node:assert/strict";
import { assignHost } from "../../domain/assignments.ts";
import { applyHeartbeat } from "../../domain/engines.ts";
import { applyHostHeartbeat } from "../../domain/hosts.ts";
import { claimJobs, type Job, reportProgress, type ResultInput } from "../../domain/job_queue.ts";
import { createPolicy, type Policy } from "../../domain/policies.ts";
import { systemActor } from "../../domain/rbac.ts";
import { runSchedulerTick } from "../../domain/scheduler.ts";
import {
  addUser,
  assertExcludes,
  assertIncludes,
  Browser,
  engineMetrics,
  signInAs,
  testApp,
  TestClock,
} from "../helpers.ts";
import { backupWorld, enrollTestHost, finishJob, heartbeatsAndTick } from "./backup_world.ts";

const system = systemActor("test");

/** Jobs of every kind in the KV, for "nothing was queued" checks. */
async function jobCount(kv: Deno.Kv): Promise<number> {
  return (await Array.fromAsync(kv.list({ prefix: ["jobs"] }))).length;
}

/**
 * A tenant with one BES, one host, a file policy with a full and an incremental restore point of the
 * host (one chain), an image policy with one point, and a viewer, operator and restore operator.
 */
async function setup(kv: Deno.Kv) {
  const clock = new TestClock(new Date("2026-11-02T00:00:00Z"));
  const now = clock.now();
  const { tenant, scope, engine, target, policy, host } = await backupWorld(kv, now, {
    engineName: "bes-restore",
    policy: { name: "Files nightly", fullSchedule: "0 0 * * *", incrementalSchedule: "30 0 * * *" },
    hostname: "files-01.acme.example",
    ipAddress: "10.0.0.2",
  });
  const other = await enrollTestHost(kv, scope, "files-02.acme.example", "10.0.0.3", now);
  const imagePolicy = await createPolicy(kv, system, {
    name: "Disk images",
    besId: engine.id,
    targetId: target.id,
    backupType: "image",
    fullSchedule: "0 0 * * *",
  }, now) as Policy;
  await assignHost(kv, system, { policyId: imagePolicy.id, hostId: host.id }, now);

  /** Runs the due schedules at `at`, and completes each backup of `host` with the point `points[kind]`. */
  const backup = async (at: Date, points: Array<Record<string, unknown>>) => {
    clock.time = at;
    await heartbeatsAndTick(kv, engine.id, host.id, at);
    const jobs = (await claimJobs(kv, `agent:${host.id}`, 10, at)).filter((j) => j.kind === "backup");
    assert.equal(jobs.length, points.length, `backups due at ${at.toISOString()}`);
    for (const [i, job] of jobs.entries()) {
      const point = points.find((p) => p.policyId === job.payload.policyId) ?? points[i];
      const { policyId: _, ...restorePoint } = point;
      await finish(job, {
        status: "success",
        bytesTransferred: 1000,
        protectedBytes: 5000,
        output: { restorePoint: { completedAt: at.toISOString(), ...restorePoint } },
      }, at);
    }
  };
  /** Posts a result for a claimed job as its engine and applies the outcome. */
  const finish = (job: Job, result: Partial<ResultInput>, at = clock.now()) => finishJob(kv, job, result, at);
  await backup(new Date("2026-11-02T00:00:00Z"), [
    { policyId: policy.id, id: "rp-full", chainId: "chain-A", type: "full", sizeBytes: 4096, fileCount: 12 },
    {
      policyId: imagePolicy.id,
      id: "rp-img",
      chainId: "chain-I",
      type: "full",
      sizeBytes: 1 << 30,
      fileCount: 1,
    },
  ]);
  await backup(new Date("2026-11-02T00:30:00Z"), [
    {
      policyId: policy.id,
      id: "rp-inc",
      chainId: "chain-A",
      type: "incremental",
      parentId: "rp-full",
      sizeBytes: 512,
      fileCount: 3,
    },
  ]);
  clock.time = new Date("2026-11-02T00:31:00Z");
  const { app } = testApp(kv, clock);
  const users = {
    viewer: await addUser(kv, tenant, "viewer@acme.example", "viewer", "all", now),
    operator: await addUser(kv, tenant, "operator@acme.example", "operator", "all", now),
    restorer: await addUser(kv, tenant, "restorer@acme.example", "restore_operator", "all", now),
  };
  const as = async (who: keyof typeof users) => {
    const b = new Browser(app);
    await signInAs(b, kv, users[who], clock.now());
    return b;
  };
  // Our point ids are assigned by the control plane; find them by the engine's ids.
  const points = new Map<string, string>();
  for await (
    const e of kv.list<{ id: string; engineRestorePointId?: string }>({ prefix: ["restore_points"] })
  ) {
    if (e.value.engineRestorePointId) points.set(e.value.engineRestorePointId, e.value.id);
  }
  const pointId = (engineId: string) => points.get(engineId)!;
  const heartbeat = () =>
    applyHeartbeat(kv, engine.id, { version: "1", metrics: engineMetrics() }, clock.now());
  return {
    app,
    clock,
    tenant,
    engine,
    policy,
    imagePolicy,
    host,
    other,
    users,
    as,
    pointId,
    finish,
    heartbeat,
  };
}

type Setup = Awaited<ReturnType<typeof setup>>;

/** The one queued job of `kind` for `principal`, claimed now. */
async function claim(kv: Deno.Kv, s: Setup, principal: string, kind: Job["kind"]): Promise<Job> {
  const jobs = (await claimJobs(kv, principal, 20, s.clock.now())).filter((j) => j.kind === kind);
  assert.equal(jobs.length, 1, `one ${kind} job for ${principal}`);
  return jobs[0];
}

Deno.test("GET /backup/restore lists restore points newest first with the guide's filters", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const b = await s.as("restorer");
  const res = await b.get("/backup/restore");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /text\/html/);
  const html = await res.text();
  for (const name of ["hostId", "policyId", "besId", "chainId", "status", "verification"]) {
    assertIncludes(html, `name="${name}"`, `the ${name} filter`);
  }
  for (const status of ["complete", "running", "failed", "expired", "passed", "partial", "pending"]) {
    assertIncludes(html, `value="${status}"`);
  }
  const order = [...html.matchAll(/<tr[^>]*data-point="([^"]+)"/g)].map((m) => m[1]);
  assert.equal(order.length, 3);
  assert.equal(order[0], s.pointId("rp-inc"), "newest first");
  assertIncludes(html, "files-01.acme.example");
  assertIncludes(html, "Files nightly");
  assertIncludes(html, "bes-restore");

  const filtered = await (await b.get(`/backup/restore?policyId=${s.imagePolicy.id}`)).text();
  assert.deepEqual([...filtered.matchAll(/<tr[^>]*data-point="([^"]+)"/g)].map((m) => m[1]), [
    s.pointId("rp-img"),
  ]);
  const none = await (await b.get("/backup/restore?status=expired")).text();
  assertIncludes(none, "No restore points match these filters");
});

Deno.test("GET /backup/restore sorts by completion: a backup reported late is listed by when it completed", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  // The next night's backup of "Files nightly" is reported now but completed before every other point.
  const at = new Date("2026-11-03T00:00:00Z");
  s.clock.time = at;
  await s.heartbeat();
  await applyHostHeartbeat(kv, s.host.id, { version: "1", metrics: engineMetrics() }, at);
  await runSchedulerTick(kv, at);
  const jobs = (await claimJobs(kv, `agent:${s.host.id}`, 10, at)).filter((j) =>
    j.kind === "backup" && j.payload.policyId === s.policy.id
  );
  assert.ok(jobs.length >= 1, "a backup of the file policy is due");
  await s.finish(jobs[0], {
    status: "success",
    output: {
      restorePoint: {
        id: "rp-late",
        chainId: "chain-B",
        type: "full",
        completedAt: "2026-11-01T23:00:00Z",
        sizeBytes: 1,
        fileCount: 1,
      },
    },
  }, at);
  const b = await s.as("restorer");
  const html = await (await b.get("/backup/restore")).text();
  const order = [...html.matchAll(/<tr[^>]*data-point="([^"]+)"/g)].map((m) => m[1]);
  assert.equal(order.length, 4);
  assert.equal(order[0], s.pointId("rp-inc"), "the newest completion first");
  const late = (await Array.fromAsync(kv.list<{ id: string; engineRestorePointId: string }>({
    prefix: ["restore_points"],
  }))).find((e) => e.value.engineRestorePointId === "rp-late")!.value.id;
  assert.equal(order[3], late, "the late report last: it completed first");
  const completed = [...html.matchAll(/data-label="Completed"><a [^>]*><time datetime="([^"]+)"/g)].map((m) =>
    m[1]
  );
  assert.equal(completed.length, 4);
  assert.deepEqual(completed, [...completed].sort().reverse(), "the Completed column descends");
});

Deno.test("file restore offers the original location by default: the point's host, every file at its own path", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const b = await s.as("restorer");
  const page = `/backup/restore/points/${s.pointId("rp-inc")}`;
  const html = await (await b.get(page)).text();
  assert.match(
    html,
    /<input type="radio" name="location" value="original" id="f-location-original"\s+checked/,
    "original location is the default",
  );
  assertIncludes(html, "Original location: each file back to its own path on files-01.acme.example");
  assert.match(html, /<input type="radio" name="location" value="other" id="f-location-other"\s*>/);
  const res = await b.postForm(`${page}/files`, {
    paths: "/etc/hosts\n/home/ann/report.pdf",
    location: "original",
    // Fields of "another location" left as they were: ignored for the original location.
    targetHostId: s.other.id,
    targetPath: "",
  }, { tokenFrom: page });
  assert.equal(res.status, 303);
  const request = await (await b.get(res.headers.get("location")!)).text();
  assert.match(
    request,
    /data-testid="restore-headline">File restore queued: 2 paths to their original location on files-01\.acme\.example\.</,
  );
  const job = await claim(kv, s, `agent:${s.host.id}`, "restore_files");
  assert.equal(job.payload.targetPath, "/");
  assert.equal(job.payload.overwrite, false, "existing files are left as they are unless asked");

  // Another location: the typed host and folder, and a folder is required.
  const other = await b.postForm(`${page}/files`, {
    paths: "/etc/hosts",
    location: "other",
    targetHostId: s.other.id,
    targetPath: "",
  }, { tokenFrom: page });
  assert.equal(other.status, 422);
  assert.match(await other.text(), /id="f-location-other"\s+checked/, "the choice is kept");
});

Deno.test("GET /backup/restore deep links select the host and point; a host alone selects its newest complete point", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const b = await s.as("restorer");
  const full = s.pointId("rp-full");
  const html = await (await b.get(`/backup/restore?hostId=${s.host.id}&restorePointId=${full}`)).text();
  assert.match(html, new RegExp(`data-testid="selected-point" data-point="${full}"`));
  assert.match(html, new RegExp(`<option\\s+value="${s.host.id}"\\s+selected`), "the host is filtered");
  assertIncludes(html, `/backup/restore/points/${full}#browse`);
  assert.match(html, /data-testid="chain"/);

  const byHost = await (await b.get(`/backup/restore?hostId=${s.host.id}&policyId=${s.policy.id}`)).text();
  assert.match(byHost, new RegExp(`data-testid="selected-point" data-point="${s.pointId("rp-inc")}"`));

  const gone = await b.get(`/backup/restore?hostId=${s.host.id}&restorePointId=01NOSUCHPOINT`);
  assert.equal(gone.status, 200);
  assertIncludes(await gone.text(), "does not exist any more");

  const empty = await (await b.get(`/backup/restore?hostId=${s.other.id}`)).text();
  assertIncludes(empty, "has no complete restore point yet");
});

Deno.test("GET /backup/restore/points/:id shows the chain, Browse, Search and the forms the point allows", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const b = await s.as("restorer");
  const res = await b.get(`/backup/restore/points/${s.pointId("rp-inc")}`);
  assert.equal(res.status, 200);
  const html = await res.text();
  const chain = /data-testid="chain"[\s\S]*?<\/table>/.exec(html)?.[0] ?? "";
  assert.deepEqual(
    [...chain.matchAll(/data-point="([^"]+)"/g)].map((m) => m[1]),
    [s.pointId("rp-full"), s.pointId("rp-inc")],
    "the full first, then the incremental",
  );
  assertIncludes(chain, "4.0 KB");
  assertIncludes(chain, "512 B");
  for (const island of ["BrowseTree", "RestoreSearch", "SelectedPaths"]) {
    assertIncludes(html, `data-island="${island}"`);
  }
  assertIncludes(html, 'id="restore-files"');
  assert.match(
    html,
    new RegExp(`<option\\s+value="${s.host.id}"\\s+selected>files-01.acme.example \\(original\\)`),
  );
  assert.ok(!html.includes('id="image"'), "no image restore for a file point");
  assertIncludes(html, 'action="/backup/restore/points/' + s.pointId("rp-inc") + '/bmr"');
  assertIncludes(html, "PXE is off on BES bes-restore");
  assert.ok(!html.includes('data-testid="bes-offline"'), "the BES is online");

  const image = await (await b.get(`/backup/restore/points/${s.pointId("rp-img")}`)).text();
  assertIncludes(image, 'id="image"');

  s.clock.advance(10 * 60_000); // the BES has been silent for 10 min
  const offline = await (await b.get(`/backup/restore/points/${s.pointId("rp-inc")}`)).text();
  assert.match(offline, /data-testid="bmr-blocked">\s*BES bes-restore is offline/);
  assert.equal(
    [...offline.matchAll(/data-testid="bes-offline">\s*BES bes-restore\s+is offline: browse and search/g)]
      .length,
    2,
    "Browse and Search say why their jobs wait",
  );

  const hidden = await b.get("/backup/restore/points/01NOSUCHPOINT");
  assert.equal(hidden.status, 404);
  // Ids too long for a KV key are not found either (not a 500), on every page that takes one.
  const long = "A".repeat(3000);
  for (const path of [`/backup/restore/points/${long}`, `/backup/restore/requests/${long}`]) {
    const res = await b.get(path);
    assert.equal(res.status, 404, path.slice(0, 40));
    await res.body?.cancel();
  }
  const withSearch = await b.get(`/backup/restore/points/${s.pointId("rp-inc")}?searchId=${long}`);
  assert.equal(withSearch.status, 200);
  await withSearch.body?.cancel();
  const deepLink = await b.get(`/backup/restore?hostId=${s.host.id}&restorePointId=${long}`);
  assert.equal(deepLink.status, 200);
  assertIncludes(await deepLink.text(), "does not exist any more");
});

Deno.test("viewers and operators get a 403 naming backup.restore on every Restore page and form", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const point = s.pointId("rp-inc");
  const before = await jobCount(kv);
  for (const who of ["viewer", "operator"] as const) {
    const b = await s.as(who);
    for (
      const path of [
        "/backup/restore",
        `/backup/restore?hostId=${s.host.id}&restorePointId=${point}`,
        `/backup/restore/points/${point}`,
        "/backup/restore/requests/01NOSUCHRESTORE",
      ]
    ) {
      const res = await b.get(path);
      assert.equal(res.status, 403, `${who} GET ${path}`);
      assertIncludes(await res.text(), "backup.restore", `${who} GET ${path} names the permission`);
    }
    for (const action of ["browse", "search", "files", "image", "bmr"]) {
      const res = await b.postForm(`/backup/restore/points/${point}/${action}`, {
        path: "/",
        query: "x",
        paths: "/etc",
        targetPath: "/tmp",
        mode: "iso",
      }, { tokenFrom: "/backup/dashboard" });
      assert.equal(res.status, 403, `${who} POST ${action}`);
      assertIncludes(await res.text(), "backup.restore");
    }
  }
  assert.equal(await jobCount(kv), before, "nothing was queued");
});

Deno.test("POST /backup/restore/points/:id/files with bad input shows field errors and queues nothing", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const b = await s.as("restorer");
  const point = s.pointId("rp-inc");
  const page = `/backup/restore/points/${point}`;
  const before = await jobCount(kv);
  const cases: Array<[Record<string, string>, string, RegExp]> = [
    [{ paths: "", targetPath: "/restore" }, "paths", /at least one/i],
    [
      { paths: "/etc\n../secret", targetPath: "/restore" },
      "paths",
      /Path 2 \(\.\.\/secret\) must be an absolute path/,
    ],
    [{ paths: "/etc", targetPath: "relative/dir" }, "targetPath", /absolute/i],
    [{ paths: "/etc", targetPath: "" }, "targetPath", /./],
  ];
  for (const [fields, field, message] of cases) {
    const res = await b.postForm(`${page}/files`, fields, { tokenFrom: page });
    assert.equal(res.status, 422, JSON.stringify(fields));
    const html = await res.text();
    assertIncludes(html, "Nothing was queued");
    assert.match(html, message, `${field} error for ${JSON.stringify(fields)}`);
    if (fields.targetPath) assertIncludes(html, `value="${fields.targetPath}"`, "the typed value is kept");
    if (fields.paths) assertIncludes(html, `>${fields.paths}</textarea>`, "the typed paths are kept");
  }
  const many = Array.from({ length: 10_001 }, (_, i) => `/d/${i}`).join("\n");
  const tooMany = await b.postForm(`${page}/files`, { paths: many, targetPath: "/restore" }, {
    tokenFrom: page,
  });
  assert.equal(tooMany.status, 422);
  assertIncludes(await tooMany.text(), "Must be at most 10,000 paths");
  const hidden = await b.postForm(`${page}/files`, {
    paths: "/etc",
    targetPath: "/restore",
    targetHostId: "01NOSUCHHOST",
  }, { tokenFrom: page });
  assert.equal(hidden.status, 422, "an unknown target host is a form error");
  assert.equal(await jobCount(kv), before, "nothing was queued");

  const tenThousand = Array.from({ length: 10_000 }, (_, i) => `/d/${i}`).join("\n");
  const ok = await b.postForm(`${page}/files`, { paths: tenThousand, targetPath: "/restore" }, {
    tokenFrom: page,
  });
  assert.equal(ok.status, 303, "10,000 paths are the limit, not over it");
  assertIncludes(await (await b.get(ok.headers.get("location")!)).text(), "10,000 paths");
});

Deno.test("a file restore from the form runs: high-priority job on the agent, live progress, then files, bytes and errors", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const b = await s.as("restorer");
  const page = `/backup/restore/points/${s.pointId("rp-inc")}`;
  const res = await b.postForm(`${page}/files`, {
    // Duplicates and a file inside a selected folder collapse; the no-JS checkboxes arrive as repeats.
    paths: ["/etc\n/etc/hosts\n/home/ann/report.pdf", "/etc"],
    targetPath: "/restore",
    targetHostId: s.other.id,
  }, { tokenFrom: page });
  assert.equal(res.status, 303);
  const location = res.headers.get("location") ?? "";
  assert.match(location, /^\/backup\/restore\/requests\/[\w-]+$/);
  let html = await (await b.get(location)).text();
  const headline = (text: string) => /data-testid="restore-headline">([^<]*)</.exec(text)?.[1];
  assert.equal(headline(html), "File restore queued: 2 paths to /restore on files-02.acme.example.");
  assert.ok(!html.includes('class="notice" role="status"'), "no flash notice that would stay behind");
  const job = await claim(kv, s, `agent:${s.other.id}`, "restore_files");
  assert.equal(job.priority, "high");

  html = await (await b.get(location)).text();
  assert.equal(headline(html), "File restore running: 2 paths to /restore on files-02.acme.example.");
  assertIncludes(html, 'data-island="RestoreProgress"');
  assertIncludes(html, "files-02.acme.example");
  assertIncludes(html, "<code>/restore</code>");
  assertIncludes(html, "2 paths");

  await reportProgress(kv, job.principal, job.id, { percent: 40, bytesTransferred: 2048 }, s.clock.now());
  html = await (await b.get(location)).text();
  assert.match(html, /<progress[^>]*value="40"/);
  assertIncludes(html, "2.0 KB transferred");

  await s.finish(job, {
    status: "warning",
    bytesTransferred: 4096,
    error: { reason: "PARTIAL", message: "1 file could not be written" },
    output: { files: 11, errors: [{ path: "/home/ann/report.pdf", message: "Permission denied" }] },
  });
  html = await (await b.get(location)).text();
  assert.match(html, /data-status="warning"/);
  assert.equal(
    headline(html),
    "File restore finished with errors: 2 paths to /restore on files-02.acme.example (11 files, 1 error).",
    "the finished restore replaces the queued line",
  );
  assert.ok(!html.includes("queued"), "nothing says queued any more");
  assert.match(html, /Files restored<\/dt><dd>11</);
  assertIncludes(html, "Permission denied");
  assertIncludes(html, "/home/ann/report.pdf");

  const list = await (await b.get("/backup/restore")).text();
  assertIncludes(list, location, "recent restores link to the request");
});

Deno.test("the Browse and Search form fallbacks queue one job each and show the engine's answer", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const b = await s.as("restorer");
  const point = s.pointId("rp-full");
  const page = `/backup/restore/points/${point}`;
  const bad = await b.postForm(`${page}/browse`, { path: "/etc/../root" }, { tokenFrom: page });
  assert.equal(bad.status, 422);
  assert.match(await bad.text(), /id="browse-path"[^>]*value="\/etc\/\.\.\/root"/, "the typed path is kept");

  const res = await b.postForm(`${page}/browse`, { path: "/home//ann/" }, { tokenFrom: page });
  assert.equal(res.status, 303);
  assert.equal(res.headers.get("location"), `${page}?path=%2Fhome%2Fann#browse`);
  const job = await claim(kv, s, `bes:${s.engine.id}`, "browse");
  assert.equal(job.payload.path, "/home/ann");
  let html = await (await b.get(`${page}?path=%2Fhome%2Fann`)).text();
  assertIncludes(html, "Waiting for the BES to list /home/ann");
  await s.finish(job, {
    output: {
      entries: [
        { path: "/home/ann/docs", name: "docs", type: "dir", size: 0, modifiedAt: "2026-10-01T08:00:00Z" },
        {
          path: "/home/ann/a.txt",
          name: "a.txt",
          type: "file",
          size: 2048,
          modifiedAt: "2026-10-02T09:30:00Z",
        },
      ],
    },
  });
  html = await (await b.get(`${page}?path=%2Fhome%2Fann`)).text();
  assertIncludes(html, 'data-path="/home/ann/docs"');
  assertIncludes(html, "2026-10-02 09:30 UTC");
  assertIncludes(html, 'form="restore-files"');

  // A second visit is served from the cache: no new job.
  const again = await b.postForm(`${page}/browse`, { path: "/home/ann" }, { tokenFrom: page });
  assert.equal(again.status, 303);
  assert.equal(
    (await claimJobs(kv, `bes:${s.engine.id}`, 20, s.clock.now())).filter((j) => j.kind === "browse").length,
    0,
  );

  const empty = await b.postForm(`${page}/search`, { query: "" }, { tokenFrom: page });
  assert.equal(empty.status, 422);
  const long = await b.postForm(`${page}/search`, { query: `report-${"x".repeat(200)}` }, {
    tokenFrom: page,
  });
  assert.equal(long.status, 422);
  assert.match(await long.text(), /id="search-query"[^>]*value="report-x{200}"/, "the typed query is kept");
  const searched = await b.postForm(`${page}/search`, { query: "*.pdf" }, { tokenFrom: page });
  assert.equal(searched.status, 303);
  const searchUrl = searched.headers.get("location") ?? "";
  assert.match(searchUrl, /\?searchId=[\w-]+#search$/);
  const searchJob = await claim(kv, s, `bes:${s.engine.id}`, "search");
  await s.finish(searchJob, {
    output: {
      matches: [{
        path: "/home/ann/report.pdf",
        name: "report.pdf",
        type: "file",
        size: 1 << 20,
        modifiedAt: "2026-10-03T10:00:00Z",
      }],
      truncated: false,
    },
  });
  html = await (await b.get(searchUrl.replace(/#.*$/, ""))).text();
  assertIncludes(html, "1 match for");
  assertIncludes(html, "1.0 MB");
});

Deno.test("image restore needs a target host and path, and queues a critical job on that host", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const b = await s.as("restorer");
  const page = `/backup/restore/points/${s.pointId("rp-img")}`;
  const before = await jobCount(kv);
  const missing = await b.postForm(`${page}/image`, { targetHostId: "", targetPath: "" }, {
    tokenFrom: page,
  });
  assert.equal(missing.status, 422);
  const html = await missing.text();
  assertIncludes(html, "Choose the host to restore the image to");
  assert.equal(await jobCount(kv), before);

  const filePoint = `/backup/restore/points/${s.pointId("rp-full")}`;
  const refused = await b.postForm(
    `${filePoint}/image`,
    { targetHostId: s.host.id, targetPath: "/dev/sdb" },
    {
      tokenFrom: filePoint,
    },
  );
  assert.ok([409, 422].includes(refused.status), "a file point has no image to restore");
  assert.equal(await jobCount(kv), before);

  const ok = await b.postForm(`${page}/image`, {
    targetHostId: s.host.id,
    targetPath: "/dev/sdb",
    overwrite: "on",
  }, {
    tokenFrom: page,
  });
  assert.equal(ok.status, 303);
  const job = await claim(kv, s, `agent:${s.host.id}`, "restore_image");
  assert.equal(job.priority, "critical");
});

Deno.test("the BMR token is shown once, never cached, never on the request page or a reload", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const b = await s.as("restorer");
  const page = `/backup/restore/points/${s.pointId("rp-inc")}`;
  const noMode = await b.postForm(`${page}/bmr`, {}, { tokenFrom: page });
  assert.equal(noMode.status, 422);
  assertIncludes(await noMode.text(), "Choose PXE or ISO");
  const pxe = await b.postForm(`${page}/bmr`, { mode: "pxe" }, { tokenFrom: page });
  assert.equal(pxe.status, 422, "PXE is off on this BES");
  assertIncludes(await pxe.text(), "PXE boot is not enabled on BES bes-restore");

  await s.heartbeat();
  const res = await b.postForm(`${page}/bmr`, { mode: "iso" }, { tokenFrom: page });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("cache-control"), "no-store");
  const html = await res.text();
  const token = /data-testid="secret">([0-9a-f-]{36})</.exec(html)?.[1] ?? "";
  assert.match(token, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, "a UUID token");
  assertIncludes(html, "shown only this once");
  assert.match(
    html,
    /expires <time datetime="2026-11-02T04:31[^"]*"[^>]*>in 4 h · /,
    "expires 4 hours later",
  );
  const follow = /href="(\/backup\/restore\/requests\/[\w-]+)"/.exec(html)?.[1] ?? "";
  assert.ok(follow, "a link to the request");
  const job = await claim(kv, s, `bes:${s.engine.id}`, "bmr");
  assert.equal(job.priority, "critical");
  assertExcludes(JSON.stringify(job), token, "the token in the job");

  for (const path of [follow, page, "/backup/restore", `/api/v1/restores/${follow.split("/").pop()}`]) {
    assertExcludes(await (await b.get(path)).text(), token, `the token on ${path}`);
  }
});

Deno.test("the BMR page and token page describe the real procedure: a live environment, the recovery agent's command, the BES certificate", async () => {
  using kv = await Deno.openKv(":memory:");
  const s = await setup(kv);
  const b = await s.as("restorer");
  const page = `/backup/restore/points/${s.pointId("rp-inc")}`;
  await s.heartbeat();
  const html = await (await b.get(page)).text();
  const bmr = html.slice(html.indexOf('id="bmr"'));
  // No PXE/ISO images served by the BES any more: any live Linux, then the recovery agent.
  assertExcludes(bmr, "recovery ISO");
  assertExcludes(bmr, "boots from the BES");
  assertIncludes(bmr, "boots any Linux live environment");
  assert.match(
    bmr,
    /data-testid="bmr-command"><code>deno task agent recover --bes https:\/\/[^ ]+ --bes-cert bes-cert\.pem --token TOKEN --disk \/dev\/sdX<\/code>/,
  );
  assertIncludes(bmr, "one-time token (valid 4 hours, usable once)");
  assertIncludes(bmr, "the BES&#39;s certificate");

  const res = await b.postForm(`${page}/bmr`, { mode: "iso" }, { tokenFrom: page });
  assert.equal(res.status, 200);
  const token = await res.text();
  const steps = [...token.matchAll(/<li\s*>([^<]+)<\/li>/g)].map((m) => m[1]);
  assert.ok(steps.some((l) => l.startsWith("Boot the machine from Linux live media")), steps.join("\n"));
  assert.ok(steps.some((l) => l.includes("deno task agent recover --bes ")), "the command is a step");
  assert.ok(steps.some((l) => l.includes("CADRES_BMR_TOKEN")), "the token can stay out of the process list");
  assert.ok(steps.some((l) => /works once and expires at/.test(l)));
  assert.match(token, /data-testid="bmr-token-command"><code>deno task agent recover --bes https:/);
  // The certificate the recovery agent pins: the BES's PEM, or where to find it when it reported none.
  // (This test BES registered without a data API, so the page says where the PEM is instead.)
  assert.match(
    token,
    /data-testid="bmr-certificate">BES bes-restore has not reported a certificate yet: copy <code>tls\/cert\.pem<\/code>/,
  );

  // The API answers the same command and certificate.
  const api = await b.request("/api/v1/restores/bmr", {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-csrf-token": /name="csrf-token" content="([^"]+)"/.exec(html)![1],
    },
    body: JSON.stringify({ restorePointId: s.pointId("rp-inc"), mode: "iso" }),
  });
  assert.equal(api.status, 201, await api.clone().text());
  {
    const body = await api.json();
    assert.match(
      body.command,
      /^deno task agent recover --bes https:\/\/\S+ --bes-cert bes-cert\.pem --token TOKEN --disk \/dev\/sdX$/,
    );
    assert.ok("besCertificate" in body);
    assert.ok(body.instructions.some((l: string) => l.includes(body.command)));
  }
});
