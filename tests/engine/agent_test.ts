/**
 * The agent's parts on their own: hooks (order, output, timeout stopping the whole process group, a missing
 * interpreter), the VSS snapshot hook (reading from the snapshot, recording the original paths; "not
 * applied" where unavailable), IO priority, the throttle schedule, change counts, the local state,
 * the identity file, health probes, metrics and failure reasons.
 */
import assert from "node:assert/strict";
import { backupFiles } from "../../engine/repo/backup.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { RepoError } from "../../engine/repo/errors.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { loadSnapshot } from "../../engine/repo/snapshot.ts";
import { DataApiRequestError } from "../../engine/protocol/remote_backend.ts";
import { describeFailure } from "../../engine/agent/failure.ts";
import { type HookSpec, parseHooks, runHook } from "../../engine/agent/hooks.ts";
import { probeEndpoint, probeTarget } from "../../engine/agent/health.ts";
import { loadIdentity, saveIdentity } from "../../engine/agent/identity.ts";
import { MetricsSampler } from "../../engine/agent/metrics.ts";
import { priorityPlan } from "../../engine/agent/priority.ts";
import { snapshotFileSystem, takeSnapshots } from "../../engine/agent/snapshot.ts";
import { AgentState } from "../../engine/agent/state.ts";
import { scheduledThrottle } from "../../engine/agent/throttle.ts";
import { diffTrees } from "../../engine/agent/tree_walk.ts";
import { repositorySettings } from "../../engine/agent/jobs.ts";
import { MAX_PARTS, PART_BYTES, PART_ITEMS, splitErrors } from "../../engine/agent/error_list.ts";
import type { TreeEntry } from "../../engine/repo/tree.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const hook = (over: Partial<HookSpec>): HookSpec => ({
  id: "h1",
  type: "pre_backup",
  timeoutSeconds: 30,
  failOnError: true,
  interpreter: "bash",
  body: "true",
  ...over,
});

Deno.test("agent hooks: output captured, exit codes kept, payload hooks parsed in order", async () => {
  await using dir = await tempDir("cadres-hooks-");
  const ok = await runHook(hook({ body: 'echo "out $CADRES_JOB_ID"; echo err >&2' }), {
    workDir: dir.path,
    env: { CADRES_JOB_ID: "job-7" },
  });
  assert.equal(ok.ok, true);
  assert.equal(ok.exitCode, 0);
  assert.match(ok.output, /out job-7/);
  assert.match(ok.output, /err/);
  const bad = await runHook(hook({ body: "echo failing; exit 4", interpreter: "sh" }), { workDir: dir.path });
  assert.deepEqual([bad.ok, bad.exitCode], [false, 4]);
  assert.match(bad.output, /failing[\s\S]*exited with 4/);
  const py = await runHook(hook({ body: "print(6 * 7)", interpreter: "python" }), { workDir: dir.path });
  assert.match(py.output, /42/);
  // A long output is cut to its tail.
  const long = await runHook(hook({ body: "for i in $(seq 1 3000); do echo line $i; done" }), {
    workDir: dir.path,
  });
  assert.ok(long.output.length <= 4000);
  assert.match(long.output, /line 3000/);
  assert.doesNotMatch(long.output, /line 1\n/);
  // The scripts are removed after they ran.
  assert.deepEqual(await Array.fromAsync(Deno.readDir(dir.path)), []);
  const parsed = parseHooks([
    { id: "a", type: "pre_backup", timeoutSeconds: 5, failOnError: false, interpreter: "sh", body: "x" },
    { id: "b", type: "post_backup", body: "y" },
  ]);
  assert.deepEqual(parsed.map((h) => [h.id, h.failOnError, h.timeoutSeconds]), [["a", false, 5], [
    "b",
    true,
    300,
  ]]);
  assert.throws(() => parseHooks([{ id: "c" }]), /Hook 1 of the payload has no id, type or body/);
});

Deno.test("agent hooks: a timeout stops the hook and everything it started; a missing interpreter is reported", async () => {
  await using dir = await tempDir("cadres-hooks-");
  const pidFile = `${dir.path}/child.pid`;
  const t0 = performance.now();
  const slow = await runHook(
    hook({ timeoutSeconds: 1, body: `sleep 60 & echo $! > "${pidFile}"; echo started; wait` }),
    { workDir: dir.path, killGraceMs: 500 },
  );
  const elapsed = performance.now() - t0;
  assert.equal(slow.ok, false);
  assert.equal(slow.exitCode, -1);
  assert.match(slow.output, /started[\s\S]*timed out after 1 s/);
  assert.ok(elapsed < 6000, `took ${elapsed} ms`);
  const pid = Number(await Deno.readTextFile(pidFile));
  await new Promise((r) => setTimeout(r, 300));
  const alive = await Deno.stat(`/proc/${pid}`).then(() => true, () => false);
  if (alive) {
    const stat = await Deno.readTextFile(`/proc/${pid}/stat`).catch(() => "");
    assert.match(stat, /\) Z /, "the hook's background child was stopped (at most a zombie)");
  }
  const missing = await runHook(hook({ interpreter: "powershell", body: "Write-Output 1" }), {
    workDir: dir.path,
  });
  if (missing.exitCode === -1) {
    assert.equal(missing.ok, false);
    assert.match(missing.output, /could not start: its interpreter pwsh is not installed/);
  }
});

Deno.test("agent VSS: a snapshot hook's folder is read, the original paths are recorded, then removed", async () => {
  await using dir = await tempDir("cadres-vss-");
  const src = `${dir.path}/data`;
  await Deno.mkdir(`${src}/sub`, { recursive: true });
  await Deno.writeFile(`${src}/sub/a.txt`, new TextEncoder().encode("as snapshotted"));
  await Deno.writeFile(`${src}/b.bin`, deterministicBytes("b", 20_000));
  // A fake hook: "snapshots" by copying, prints where the copy is; removes it on request.
  const hookPath = `${dir.path}/hook.sh`;
  await Deno.writeTextFile(
    hookPath,
    `#!/bin/bash
set -e
case "$1" in
  create) snap="${dir.path}/snap-$RANDOM"; cp -a "$2" "$snap"; echo "making a snapshot"; echo "$snap" ;;
  remove) echo "$3" >> "${dir.path}/removed"; rm -rf "$3" ;;
esac
`,
    { mode: 0o755 },
  );
  const snaps = await takeSnapshots(hookPath, [src], { enabled: true });
  assert.equal(snaps.status, "applied");
  assert.equal(snaps.mappings.length, 1);
  // The live file changes after the snapshot: the backup must hold the snapshot's content.
  await Deno.writeFile(`${src}/sub/a.txt`, new TextEncoder().encode("changed after the snapshot"));
  const repo = await Repository.init(
    new LocalBackend(`${dir.path}/repo`),
    crypto.getRandomValues(new Uint8Array(32)),
    {
      namespace: "h",
    },
  );
  const result = await backupFiles(repo.namespace("h"), {
    paths: [src],
    fs: snapshotFileSystem(snaps.mappings),
  });
  assert.deepEqual(result.errors, []);
  assert.deepEqual((await loadSnapshot(repo.namespace("h"), result.snapshotId)).paths, [src]);
  const out = `${dir.path}/out`;
  await restoreSnapshot(repo.namespace("h"), result.snapshotId, { target: out });
  assert.equal(await Deno.readTextFile(`${out}${src}/sub/a.txt`), "as snapshotted");
  assert.deepEqual(await Deno.readFile(`${out}${src}/b.bin`), deterministicBytes("b", 20_000));
  assert.deepEqual(await snaps.release(), []);
  assert.equal(await Deno.readTextFile(`${dir.path}/removed`), `${snaps.mappings[0].snapshot}\n`);
  assert.equal(await Deno.stat(snaps.mappings[0].snapshot).then(() => true, () => false), false);
});

Deno.test("agent VSS: unsupported, failing, missing or disabled snapshots are reported as not applied", async () => {
  await using dir = await tempDir("cadres-vss-");
  const hookAt = async (name: string, body: string) => {
    const p = `${dir.path}/${name}`;
    await Deno.writeTextFile(p, `#!/bin/bash\n${body}\n`, { mode: 0o755 });
    return p;
  };
  const unsupported = await takeSnapshots(
    await hookAt("u.sh", 'echo "tmpfs cannot be snapshotted" >&2; exit 3'),
    [
      dir.path,
    ],
    { enabled: true },
  );
  assert.equal(unsupported.status, "not applied");
  assert.equal(unsupported.failed, false);
  assert.match(unsupported.detail, /tmpfs cannot be snapshotted/);
  const failing = await takeSnapshots(await hookAt("f.sh", 'echo "lvcreate: no space" >&2; exit 5'), [
    dir.path,
  ], {
    enabled: true,
  });
  assert.equal(failing.status, "not applied");
  assert.equal(failing.failed, true);
  assert.match(failing.detail, /exit 5.*lvcreate: no space/);
  const none = await takeSnapshots(null, [dir.path], { enabled: true });
  assert.equal(none.status, "not applied");
  assert.match(none.detail, /no snapshot hook is configured/);
  assert.equal((await takeSnapshots("/nonexistent", [dir.path], { enabled: false })).status, "off");
  // The shipped LVM/btrfs hook is valid bash and says "unsupported" (exit 3) off LVM and btrfs.
  const shipped = new URL("../../engine/agent/snapshot-hook.sh", import.meta.url).pathname;
  const syntax = await new Deno.Command("bash", { args: ["-n", shipped] }).output();
  assert.equal(syntax.code, 0, new TextDecoder().decode(syntax.stderr));
  const fstype = await new Deno.Command("findmnt", { args: ["-n", "-o", "FSTYPE", "-T", dir.path] }).output()
    .then((o) => new TextDecoder().decode(o.stdout).trim(), () => "");
  if (fstype && fstype !== "btrfs") {
    const r = await new Deno.Command(shipped, { args: ["create", dir.path] }).output();
    assert.equal(r.code, 3, new TextDecoder().decode(r.stderr));
  }
});

Deno.test("agent IO priority: the worker runs under nice/ionice as the policy asks", async () => {
  const all = (name: string) => `/usr/bin/${name}`;
  assert.deepEqual(priorityPlan("normal", all, false), { prefix: [], applied: "none (normal)" });
  const low = priorityPlan("low", all, false);
  assert.deepEqual(low.prefix, ["/usr/bin/nice", "-n", "10", "/usr/bin/ionice", "-c", "2", "-n", "7"]);
  assert.equal(low.applied, "nice -n 10, ionice -c 2 -n 7");
  assert.deepEqual(priorityPlan("high", all, false).prefix, ["/usr/bin/ionice", "-c", "2", "-n", "0"]);
  assert.deepEqual(priorityPlan("high", all, true).prefix.slice(0, 3), ["/usr/bin/nice", "-n", "-5"]);
  assert.match(priorityPlan("low", () => null, false).applied, /^not applied/);
  // Where the tools exist, a command under the prefix really runs with niceness 10.
  const real = priorityPlan("low");
  if (real.prefix.includes("-n") && real.prefix[0].endsWith("nice")) {
    const [cmd, ...args] = [...real.prefix, "cat", "/proc/self/stat"];
    const out = await new Deno.Command(cmd, { args }).output();
    const stat = new TextDecoder().decode(out.stdout);
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    assert.equal(Number(fields[16]), 10, "niceness of the worker");
  }
});

Deno.test("agent throttle: the cap applies only during the schedule's minutes", async () => {
  let now = new Date("2026-11-23T10:15:30Z"); // a Monday, 10:15 UTC
  const measure = async (schedule: string | null) => {
    const { throttle, describe } = scheduledThrottle(
      { maxTransferMbps: 1, schedule, timeZone: "UTC" },
      () => now,
    );
    await throttle.take(1); // the first take starts the clock
    const t0 = performance.now();
    await throttle.take(300_000); // 300 kB at 1 MB/s
    return { ms: performance.now() - t0, describe };
  };
  const inWindow = await measure("* 8-18 * * 1-5");
  assert.ok(inWindow.ms >= 150, `throttled: ${inWindow.ms} ms`);
  assert.match(inWindow.describe, /1 MBps during "\* 8-18 \* \* 1-5" \(UTC\)/);
  now = new Date("2026-11-23T20:15:30Z");
  assert.ok((await measure("* 8-18 * * 1-5")).ms < 50, "not throttled outside the window");
  assert.ok((await measure(null)).ms >= 150, "no schedule: always");
  assert.equal(scheduledThrottle({ maxTransferMbps: null }).describe, "none");
  assert.match(scheduledThrottle({ maxTransferMbps: 5, schedule: "not a cron" }).describe, /always/);
});

Deno.test("agent change counts: added, modified and deleted files between two trees", async () => {
  const file = (name: string, content: string[], size = 1): TreeEntry => ({
    name,
    type: "file",
    mode: 0o644,
    uid: 0,
    gid: 0,
    mtimeMs: 0,
    size,
    content,
    xattrs: null,
  });
  const dir = (name: string, subtree: string): TreeEntry => ({
    name,
    type: "dir",
    mode: 0o755,
    uid: 0,
    gid: 0,
    mtimeMs: 0,
    size: 0,
    subtree,
    xattrs: null,
  });
  const trees: Record<string, TreeEntry[]> = {
    root1: [dir("a", "a1"), dir("same", "s"), file("x", ["1"]), dir("gone", "g")],
    a1: [file("keep", ["k"]), file("edit", ["e1"]), file("del", ["d"])],
    s: [file("s1", ["s"]), file("s2", ["s"])],
    g: [file("g1", ["g"]), dir("gg", "gg")],
    gg: [file("g2", ["g"])],
    root2: [dir("a", "a2"), dir("same", "s"), dir("x", "nx"), file("new", ["n"])],
    a2: [file("keep", ["k"]), file("edit", ["e2"]), file("add", ["a"])],
    nx: [file("inner", ["i"])],
  };
  const loaded: string[] = [];
  const load = (id: string) => {
    loaded.push(id);
    return Promise.resolve(trees[id]);
  };
  const counts = await diffTrees(load, load, "root1", "root2");
  // added: a/add, x/inner (x became a folder), new; modified: a/edit; deleted: a/del, x (a file), gone/g1, gone/gg/g2
  assert.deepEqual(counts, { added: 3, modified: 1, deleted: 4 });
  assert.ok(!loaded.includes("s"), "an unchanged folder is not read");
});

Deno.test("agent state and identity: records survive a restart; the key is private and stable", async () => {
  await using dir = await tempDir("cadres-agent-");
  const state = await AgentState.load(dir.path);
  const repo = { target: "t", path: "cadres/p/g1", generation: 1 };
  assert.equal(state.lastSnapshot("p", repo), null);
  await state.recordSnapshot({
    policyId: "p",
    repository: repo,
    backupType: "file",
    snapshotId: "a".repeat(64),
    chainId: "a".repeat(64),
    type: "full",
    completedAt: "2026-01-01T00:00:00.000Z",
    files: 3,
    totalBytes: 10,
  });
  await state.recordJob({
    jobId: "j1",
    kind: "backup",
    status: "success",
    endedAt: "2026-01-01T00:00:00.000Z",
  });
  const again = await AgentState.load(dir.path);
  assert.equal(again.lastSnapshot("p", repo)?.snapshotId, "a".repeat(64));
  assert.equal(
    again.lastSnapshot("p", { ...repo, generation: 2 }),
    null,
    "a new generation starts a new chain",
  );
  assert.equal(again.job("j1")?.status, "success");
  await Deno.writeTextFile(`${dir.path}/state.json`, "{not json");
  await assert.rejects(AgentState.load(dir.path), /state\.json is damaged/);

  const first = await loadIdentity(`${dir.path}/agent`);
  assert.equal((await Deno.stat(`${dir.path}/agent/agent.key`)).mode! & 0o777, 0o600);
  assert.equal(first.file.id, null);
  await saveIdentity(`${dir.path}/agent`, {
    ...first.file,
    id: "01HOST",
    enrolledAt: "2026-01-01T00:00:00Z",
  });
  await Deno.chmod(`${dir.path}/agent/agent.key`, 0o644);
  const second = await loadIdentity(`${dir.path}/agent`);
  assert.equal(second.publicKey, first.publicKey);
  assert.equal(second.file.id, "01HOST");
  assert.match(second.warnings.join(), /readable by others/);
  assert.equal((await Deno.stat(`${dir.path}/agent/agent.key`)).mode! & 0o777, 0o600);
});

Deno.test("agent health check: endpoints per target type, a TCP probe measures latency", async () => {
  assert.deepEqual(probeEndpoint({ type: "smb", config: { server: "fs01" } }), {
    kind: "tcp",
    host: "fs01",
    port: 445,
  });
  assert.deepEqual(probeEndpoint({ type: "iscsi", config: { portal: "10.0.0.5:3261" } }), {
    kind: "tcp",
    host: "10.0.0.5",
    port: 3261,
  });
  assert.deepEqual(probeEndpoint({ type: "s3_compatible", config: { endpoint: "https://minio:9000" } }), {
    kind: "http",
    url: "https://minio:9000",
  });
  assert.equal(probeEndpoint({ type: "local", config: { path: "/x" } }).kind, "none");
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const accepting = (async () => {
    for await (const c of listener) c.close();
  })().catch(() => {});
  const up = await probeTarget({ type: "iscsi", config: { portal: `127.0.0.1:${port}` } });
  assert.equal(up.reachable, true);
  assert.ok(up.latencyMs !== null && up.latencyMs >= 0);
  listener.close();
  await accepting;
  const down = await probeTarget({ type: "iscsi", config: { portal: `127.0.0.1:${port}` } }, 2000);
  assert.equal(down.reachable, false);
  assert.ok(down.error);
  const local = await probeTarget({ type: "local", config: { path: "/srv" } });
  assert.equal(local.reachable, null);
});

Deno.test("agent metrics and failure reasons", async () => {
  const m = new MetricsSampler("/");
  await new Promise((r) => setTimeout(r, 50));
  const s = m.sample(2);
  for (const k of ["cpuPercent", "memoryPercent", "diskPercent"] as const) {
    assert.ok(s[k] >= 0 && s[k] <= 100, `${k} ${s[k]}`);
  }
  assert.ok(s.memoryPercent > 0 && s.diskPercent > 0);
  assert.equal(s.activeJobs, 2);
  const reason = (status: number | null, code: string | null, message = "x") =>
    describeFailure(new DataApiRequestError("o", status, code, message)).reason;
  assert.equal(reason(null, null), "ENGINE_OFFLINE");
  assert.equal(
    reason(502, "storage_unavailable", "The storage target failed: No space left on device"),
    "TARGET_FULL",
  );
  assert.equal(reason(502, "storage_unavailable"), "TARGET_UNREACHABLE");
  // The library wraps an upload's failure ("An earlier upload failed"): judged by the data API's failure.
  const wrapped = describeFailure(
    new RepoError("An earlier upload failed: …", { cause: new DataApiRequestError("o", null, null, "down") }),
  );
  assert.deepEqual([wrapped.reason, wrapped.retryable, wrapped.message], [
    "ENGINE_OFFLINE",
    true,
    "An earlier upload failed: …",
  ]);
  assert.equal(
    reason(507, "storage_full", "The storage target is full: data/ab/ab12 was not stored"),
    "TARGET_FULL",
  );
  assert.equal(reason(401, "token_expired"), "AUTH");
  assert.deepEqual(
    repositorySettings({ compression: "lz4", encryption: "AES-256-CBC", deduplication: false }),
    {
      compression: "lz4",
      encryption: "aes-256-cbc",
      dedup: false,
    },
  );
  assert.throws(() => repositorySettings({ encryption: "rot13" }), /Unknown encryption "rot13"/);
  const many = Array.from(
    { length: 500 },
    (_, i) => ({ path: `/p/${i}/${"x".repeat(900)}`, message: "cannot read" }),
  );
  // Long error lists: the first inline (at most 100, well inside a result), the rest in parts that each fit
  // one request and one KV value, in order, none dropped.
  const split = splitErrors(many);
  assert.equal(split.total, 500);
  assert.ok(split.inline.length > 0 && split.inline.length <= 100);
  assert.ok(JSON.stringify(split.inline).length < 30_000);
  assert.ok(split.parts.length > 1);
  for (const part of split.parts) {
    assert.ok(new TextEncoder().encode(JSON.stringify(part)).length <= PART_BYTES);
    assert.ok(part.length <= PART_ITEMS);
  }
  assert.deepEqual([...split.inline, ...split.parts.flat()], many);
  // Short errors: 100 inline, then parts bounded by bytes; a path or message too long is shortened.
  const short = Array.from({ length: 12_345 }, (_, i) => ({ path: `/f${i}`, message: "denied" }));
  const s2 = splitErrors([...short, { path: `/${"p".repeat(5000)}`, message: "m".repeat(2000) }]);
  assert.equal(s2.inline.length, 100);
  assert.equal(s2.inline.length + s2.parts.flat().length, 12_346);
  assert.ok(s2.parts.every((p) => new TextEncoder().encode(JSON.stringify(p)).length <= PART_BYTES));
  const last = s2.parts.at(-1)!.at(-1)!;
  assert.equal(last.path.length, 4096);
  assert.ok(last.path.endsWith("…") && last.message.length === 1000);
  // Beyond what the control plane keeps (200 parts) the list is cut: the total still counts every error.
  const huge = Array.from(
    { length: 100 + MAX_PARTS * PART_ITEMS + 7 },
    (_, i) => ({ path: `/${i}`, message: "" }),
  );
  const s3 = splitErrors(huge);
  assert.equal(s3.parts.length, MAX_PARTS);
  assert.equal(s3.total, huge.length);
  assert.ok(s3.inline.length + s3.parts.flat().length < huge.length);
});
