/**
 * Issue 16, bad input, with the real app, a BES data API and the agent as a subprocess: a backup that
 * cannot read hundreds of files warns and the run keeps every error (the first inline, the rest uploaded in
 * parts before the result — never cut); a restore into a folder the agent cannot write fails naming every
 * path, again all of them; include paths of a policy that do not exist make a warning run naming them (a
 * failed one when none exists); a full target fails the backup with TARGET_FULL and leaves no snapshot.
 *
 * Unreadable and unwritable: as a normal user, mode 000/0555; as root (which reads and writes anything) the
 * agent runs under `setpriv` without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, as tests/engine/
 * cli_input_test.ts does — skipped, saying so, when neither works. A full target: a 2 MiB tmpfs mounted as
 * the target's folder when running as root and `mount` works; otherwise the BES's storage answers ENOSPC
 * for every pack (a storage fault hook, agent_world's `setStorageFault`) — the test says which it used.
 */
import assert from "node:assert/strict";
import { jobErrorsPage } from "../../domain/run_results.ts";
import { getJob } from "../../domain/job_queue.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { deterministicBytes } from "../engine/helpers.ts";
import { type AgentWorld, agentWorld, assignHosts, createPolicy, runNow } from "./agent_world.ts";

const text = (s: string) => new TextEncoder().encode(s);

/**
 * The command the agent runs under so that file modes bind it: none for a normal user; `setpriv` without the
 * capabilities that let root read and write anything; null when neither is possible.
 */
async function unprivileged(): Promise<string[] | null> {
  if (Deno.uid() !== 0) return [];
  const wrapper = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"];
  const probe = await new Deno.Command(wrapper[0], { args: [...wrapper.slice(1), "true"] }).output()
    .catch(() => null);
  return probe?.success ? wrapper : null;
}

/** Every error kept with a job, page by page (the inline ones, then each uploaded part). */
async function allErrors(w: AgentWorld, jobId: string) {
  const job = await getJob(w.kv, jobId);
  const first = await jobErrorsPage(w.kv, job, 0);
  const errors = [...first.errors];
  for (let page = 1; page < first.pages; page++) {
    errors.push(...(await jobErrorsPage(w.kv, job, page)).errors);
  }
  return { errors, pages: first.pages, kept: first.kept, total: first.total };
}

Deno.test({
  name:
    "agent bad input: 600 unreadable files → warning with every error kept (inline + parts); an unwritable restore target fails naming every path",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const wrapper = await unprivileged();
  if (!wrapper) {
    console.log("skipped: running as root without setpriv, every file is readable and writable");
    return;
  }
  await using w = await agentWorld({ recoveryKey: false });
  const src = `${w.tmp}/src`;
  await Deno.mkdir(`${src}/ok`, { recursive: true });
  await Deno.mkdir(`${src}/locked`);
  const okFiles = Array.from({ length: 150 }, (_, i) => `${src}/ok/file-${String(i).padStart(4, "0")}.txt`);
  for (const [i, f] of okFiles.entries()) await Deno.writeFile(f, text(`readable ${i}\n`));
  const locked = Array.from(
    { length: 600 },
    (_, i) => `${src}/locked/secret-${String(i).padStart(4, "0")}-${"n".repeat(40)}.db`,
  );
  for (const f of locked) {
    await Deno.writeFile(f, text("nobody reads this"));
    await Deno.chmod(f, 0o000);
  }
  const policy = await createPolicy(w, "files", { includePaths: [src] });
  const agentDir = `${w.tmp}/agent`;
  const agent = w.startAgent(agentDir, ["--include-root", src], { wrapper });
  const host = await w.enrolledHost(agentDir);
  await assignHosts(w, policy.id, [host.id]);

  const backup = await w.finishedRun((await runNow(w, policy.id))[0].id);
  assert.equal(backup.run.status, "warning", `${JSON.stringify(backup.run.error)}\n${agent.output.join("")}`);
  assert.equal(backup.run.error?.reason, "PARTIAL_FILES");
  assert.match(backup.run.error!.message, /^600 paths were not backed up/);
  assert.ok(backup.run.restorePointId, "what could be read is backed up");
  assert.equal(backup.output.files, 150);
  assert.equal(backup.output.errorCount, 600);
  // The job's result: 100 inline, the rest in parts, none cut.
  const job = (await getJob(w.kv, backup.run.jobId!))!;
  const facts = job.result!.lists!.errors!;
  assert.ok(facts.parts >= 2, `parts ${facts.parts}`);
  assert.deepEqual([facts.kept, facts.total], [600, 600]);
  const kept = await allErrors(w, backup.run.jobId!);
  assert.equal(kept.errors.length, 600);
  assert.deepEqual(kept.errors.map((e) => e.path).sort(), [...locked].sort());
  for (const e of kept.errors) assert.match(e.message, /Permission denied/, e.message);
  // The same through the API the run page uses, page by page.
  const page0 = await w.api("GET", `/api/v1/runs/${backup.run.id}?errorsPage=0`);
  assert.equal(page0.status, 200, page0.text);
  assert.equal(page0.body.errors.total, 600);
  let seen = 0;
  for (let p = 0; p < page0.body.errors.pages; p++) {
    const page = await w.api("GET", `/api/v1/runs/${backup.run.id}?errorsPage=${p}`);
    assert.equal(page.body.errors.offset, seen);
    seen += page.body.errors.errors.length;
  }
  assert.equal(seen, 600);

  // A restore into a folder the agent cannot write: nothing is written, every file is named, all 150 kept.
  const restoreDir = `${w.tmp}/restored`;
  const readOnly = `${restoreDir}${src}/ok`;
  await Deno.mkdir(readOnly, { recursive: true });
  await Deno.chmod(readOnly, 0o555);
  const restore = await w.api("POST", "/api/v1/restores", {
    restorePointId: backup.run.restorePointId,
    paths: [`${src}/ok`],
    targetPath: restoreDir,
    overwrite: false,
  });
  assert.equal(restore.status, 201, restore.text);
  const done = await w.finishedRestore(restore.body.id) as {
    status: string;
    error: string;
    result: { files: number; errors: { path: string; message: string }[]; errorCount: number };
  };
  assert.equal(done.status, "failed", JSON.stringify(done));
  assert.match(done.error, /^NOTHING_RESTORED: 150 paths were not restored/);
  assert.equal(done.result.files, 0);
  assert.equal(done.result.errorCount, 150);
  assert.equal(done.result.errors.length, 100, "the restore keeps the first 100, counting all");
  const restoreErrors = await allErrors(w, restore.body.jobId);
  assert.deepEqual(restoreErrors.errors.map((e) => e.path).sort(), okFiles);
  for (const e of restoreErrors.errors) {
    assert.match(e.message, new RegExp(`Permission denied.*${readOnly}/`), e.message);
  }
  assert.deepEqual(await Array.fromAsync(Deno.readDir(readOnly)), [], "nothing was written");

  // A target folder that cannot even be created: failed, naming it.
  const parent = `${w.tmp}/read-only-parent`;
  await Deno.mkdir(parent, { mode: 0o555 });
  await Deno.chmod(parent, 0o555);
  const nowhere = await w.api("POST", "/api/v1/restores", {
    restorePointId: backup.run.restorePointId,
    paths: [`${src}/ok/file-0000.txt`],
    targetPath: `${parent}/target`,
    overwrite: false,
  });
  assert.equal(nowhere.status, 201, nowhere.text);
  const refused = await w.finishedRestore(nowhere.body.id) as { status: string; error: string };
  assert.equal(refused.status, "failed", JSON.stringify(refused));
  assert.ok(refused.error.includes(`${parent}/target`), refused.error);
  assert.match(refused.error, /Permission denied/);
  assert.deepEqual(await Array.fromAsync(Deno.readDir(parent)), []);
});

Deno.test({
  name:
    "agent bad input: a policy's include paths that do not exist → a warning run naming them; none → failed",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await agentWorld({ recoveryKey: false });
  const src = `${w.tmp}/src`;
  await Deno.mkdir(src);
  await Deno.writeFile(`${src}/a.txt`, text("a"));
  const gone1 = `${w.tmp}/gone-one`;
  const gone2 = `${w.tmp}/gone/two`;
  const partly = await createPolicy(w, "partly", { includePaths: [src, gone1, gone2] });
  const nothing = await createPolicy(w, "nothing", { includePaths: [gone1] });
  const agentDir = `${w.tmp}/agent`;
  const agent = w.startAgent(agentDir, ["--include-root", src]);
  const host = await w.enrolledHost(agentDir);
  await assignHosts(w, partly.id, [host.id]);
  await assignHosts(w, nothing.id, [host.id]);

  const warned = await w.finishedRun((await runNow(w, partly.id))[0].id);
  assert.equal(warned.run.status, "warning", `${JSON.stringify(warned.run.error)}\n${agent.output.join("")}`);
  assert.equal(warned.run.error?.reason, "INCLUDE_PATHS_MISSING");
  assert.match(
    warned.run.error!.message,
    /^Include paths not found on web01\.acme\.example, not backed up: /,
  );
  assert.ok(warned.run.error!.message.includes(`${gone1}, ${gone2}`), warned.run.error!.message);
  assert.ok(warned.run.restorePointId, "the path that exists is backed up");
  assert.deepEqual(warned.output.paths, [src]);
  assert.equal(warned.output.files, 1);

  const failed = await w.finishedRun((await runNow(w, nothing.id))[0].id);
  assert.equal(failed.run.status, "failed");
  assert.equal(failed.run.error?.reason, "INCLUDE_PATHS_MISSING");
  assert.equal(
    failed.run.error!.message,
    `Nothing to back up: ${gone1} does not exist on web01.acme.example`,
  );
  assert.equal(failed.run.restorePointId, null);
});

Deno.test({
  name: "agent bad input: a full target fails the backup with TARGET_FULL and leaves no snapshot",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  await using w = await agentWorld({ recoveryKey: false, storageFaults: true });
  const full = `${w.tmp}/full-target`;
  await Deno.mkdir(full);
  // A tiny tmpfs as the target's folder when we may mount one; else the BES's storage answers ENOSPC.
  let mounted = false;
  if (Deno.uid() === 0) {
    const m = await new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=2m", "tmpfs", full] })
      .output().catch(() => null);
    mounted = m?.success === true;
  }
  if (!mounted) {
    console.log(
      "full target simulated by a storage fault hook (ENOSPC for packs): cannot mount a tmpfs here",
    );
    w.setStorageFault((name) =>
      name.startsWith("data/")
        ? Object.assign(new Error("No space left on device (os error 28)"), { code: "ENOSPC" })
        : null
    );
  } else {
    console.log("full target: a 2 MiB tmpfs");
  }
  try {
    const targetId = await w.addTarget("tiny", full);
    const src = `${w.tmp}/src`;
    await Deno.mkdir(src);
    // 3 MB that does not compress: more than the target holds.
    for (let i = 0; i < 3; i++) {
      await Deno.writeFile(`${src}/big-${i}.bin`, deterministicBytes(`big${i}`, 1_000_000));
    }
    const policy = await createPolicy(w, "to a full target", { targetId, includePaths: [src] });
    const agentDir = `${w.tmp}/agent`;
    const agent = w.startAgent(agentDir, ["--include-root", src]);
    const host = await w.enrolledHost(agentDir);
    await assignHosts(w, policy.id, [host.id]);

    const run = await w.finishedRun((await runNow(w, policy.id))[0].id);
    assert.equal(run.run.status, "failed", agent.output.join(""));
    assert.equal(run.run.error?.reason, "TARGET_FULL", JSON.stringify(run.run.error));
    assert.match(
      run.run.error!.message,
      /507 storage_full: The storage target is full: data\/[0-9a-f]{2}\/[0-9a-f]{64} was not stored/,
    );
    assert.equal(run.run.restorePointId, null);
    const repo = new LocalBackend(`${full}/cadres/${policy.id}/g1`);
    assert.deepEqual(await Array.fromAsync(repo.list("snapshots/")), [], "no snapshot");
    // Not retried as if the BES were down: the client gave up at the first 507 (one pack, one PUT).
    const packPuts = w.dataRequests.filter((r) => r.method === "PUT" && r.path.includes("/objects/data/"));
    assert.equal(packPuts.length, 1);
  } finally {
    if (mounted) await new Deno.Command("umount", { args: [full] }).output();
  }
});
