/**
 * Crash tests: a backup and a gc killed with SIGKILL in a subprocess (crash_driver.ts), at deterministic
 * points (the driver freezes after the N-th write) and at racy ones (killed as soon as a write is seen).
 * After each kill: no snapshot appears, the repository opens and verifies, every snapshot restores
 * byte-identical, the next run resumes without uploading again what arrived, and gc removes the orphans.
 */
import assert from "node:assert/strict";
import { type Backend, LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { forgetSnapshots, garbageCollect, listCondemned } from "../../engine/repo/gc.ts";
import { loadIndex } from "../../engine/repo/index.ts";
import { createKeyFile } from "../../engine/repo/keys.ts";
import { listLiveLocks, LOCK_STALE_MS } from "../../engine/repo/lock.ts";
import { readPackListing } from "../../engine/repo/pack.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { listSnapshots, readSnapshotRefs } from "../../engine/repo/snapshot.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const DRIVER = new URL("./crash_driver.ts", import.meta.url).pathname;
const PARAMS = { chunker: { min: 4096, avg: 16384, max: 65536 }, packTargetBytes: 128 * 1024 };

interface Killed {
  /** True when the driver was killed at the marker; false when it exited first. */
  killed: boolean;
  code: number;
  stderr: string[];
}

/**
 * Runs the driver with `args` and `env`; SIGKILLs it as soon as a stderr line satisfies `killAt`.
 */
async function runAndKill(args: string[], env: Record<string, string>, killAt: (line: string) => boolean) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", DRIVER, ...args],
    env,
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  let killed = false;
  let rest = "";
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  while (true) {
    const { value, done } = await reader.read();
    if (done) break;
    rest += value;
    const parts = rest.split("\n");
    rest = parts.pop()!;
    for (const l of parts) {
      lines.push(l);
      if (!killed && killAt(l)) {
        child.kill("SIGKILL");
        killed = true;
      }
    }
  }
  const status = await child.status;
  return { killed, code: status.code, stderr: lines } satisfies Killed;
}

/** Runs the driver to completion; returns stdout and the completed writes. */
async function runDriver(args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", DRIVER, ...args],
    env,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  const stderr = dec.decode(out.stderr);
  assert.equal(out.code, 0, stderr.split("\n").filter((l) => !l.startsWith("@@")).join("\n"));
  return { stdout: dec.decode(out.stdout), stderr: stderr.split("\n") };
}

async function packs(be: Backend): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const o of be.list("data/")) out.set(o.name.slice(o.name.lastIndexOf("/") + 1), o.size);
  return out;
}

/** Temporary files of writes that never completed, below `root`. */
async function temporaries(root: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(root)) {
    if (e.isDirectory) out.push(...await temporaries(`${root}/${e.name}`));
    else if (e.name.startsWith(".tmp-")) out.push(`${root}/${e.name}`);
  }
  return out;
}

/** A gc far enough ahead that every lock is stale and a killed write's temporary files count as abandoned. */
async function gcMuchLater(be: Backend, repoPath: string, what: string) {
  const r = await garbageCollect(be, {
    graceMs: 0,
    now: () => new Date(Date.now() + 4 * LOCK_STALE_MS + 60_000),
  });
  assert.deepEqual(await temporaries(repoPath), [], `${what}: no half-written file left`);
  assert.deepEqual(await Array.fromAsync(be.list("locks/")), [], `${what}: no lock left`);
  return r;
}

async function snapshotIds(be: Backend): Promise<string[]> {
  return (await listSnapshots(be)).map((s) => s.id).sort();
}

/** Relative path → SHA-256 of every regular file below `root`. */
async function digests(root: string, rel = ""): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const e of Deno.readDir(`${root}${rel}`)) {
    const p = `${rel}/${e.name}`;
    if (e.isDirectory) { for (const [k, v] of await digests(root, p)) out.set(k, v); }
    else {
      const d = await crypto.subtle.digest("SHA-256", await Deno.readFile(`${root}${p}`));
      out.set(p, Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join(""));
    }
  }
  return new Map([...out].sort());
}

/** Opens the repository afresh, verifies all data, and restores each snapshot comparing it with `expected`. */
async function assertIntact(
  repoPath: string,
  kek: Uint8Array,
  expected: Map<string, Map<string, string>>,
  src: string,
  what: string,
) {
  const repo = await Repository.open(new LocalBackend(repoPath), kek);
  const v = await verifyRepository(repo, { all: true });
  assert.deepEqual(v.problems, [], `${what}: verify --all`);
  for (const [id, files] of expected) {
    const target = await Deno.makeTempDir({ prefix: "cadres-crash-restore-" });
    try {
      const r = await restoreSnapshot(repo.namespace("h"), id, { target });
      assert.deepEqual(r.errors, [], `${what}: restore ${id.slice(0, 12)}`);
      assert.deepEqual(await digests(`${target}${src}`), files, `${what}: ${id.slice(0, 12)} byte-identical`);
    } finally {
      await Deno.remove(target, { recursive: true });
    }
  }
}

/** Packs none of whose blobs is the indexed copy of a blob some snapshot references. */
async function unreferencedPacks(be: Backend): Promise<string[]> {
  const condemned = await listCondemned(be);
  const index = await loadIndex(be, { isDead: (p) => condemned.has(p) });
  const live = new Set<string>();
  for (const s of await listSnapshots(be)) {
    for (const id of await readSnapshotRefs(be, s)) live.add(index.lookup(s.namespace, id)?.packId ?? "?");
  }
  return [...(await packs(be)).keys()].filter((p) => !live.has(p)).sort();
}

for (const mode of ["frozen after the 14th pack", "killed as the 14th pack arrives"] as const) {
  Deno.test(`crash: a backup killed midway (${mode}) leaves no snapshot, resumes, and gc removes its orphans`, async () => {
    await using dir = await tempDir("cadres-crash-");
    const repoPath = `${dir.path}/repo`;
    const keyFile = `${dir.path}/key`;
    const src = `${dir.path}/src`;
    const be = new LocalBackend(repoPath);
    const kek = await createKeyFile(keyFile);
    await Repository.init(be, kek, { namespace: "h", ...PARAMS });

    // An earlier snapshot that must stay intact.
    await Deno.mkdir(`${src}/small`, { recursive: true });
    for (let i = 0; i < 3; i++) {
      await Deno.writeFile(`${src}/small/s${i}`, deterministicBytes(`small-${i}`, 40_000));
    }
    const s1 = await backupFiles((await Repository.open(be, kek)).namespace("h"), { paths: [src] });
    const expected = new Map([[s1.snapshotId, await digests(src)]]);

    // The data of the killed run: 3 MiB that do not compress, about 24 packs.
    const bigBytes = 4 * 768 * 1024;
    await Deno.mkdir(`${src}/big`);
    for (let i = 0; i < 4; i++) {
      await Deno.writeFile(`${src}/big/b${i}`, deterministicBytes(`big-${i}`, bigBytes / 4));
    }
    const before = await packs(be);
    const cli = ["repo", "backup", "--repo", repoPath, "--key-file", keyFile, "--host", "h", "--json", src];

    let packsSeen = 0;
    const k = await runAndKill(
      cli,
      mode === "frozen after the 14th pack" ? { CRASH_HANG_AT: "put:data/:14" } : {},
      (l) =>
        mode === "frozen after the 14th pack"
          ? l === "@@hang"
          : l.startsWith("@@put data/") && ++packsSeen >= 14,
    );
    assert.ok(
      k.killed,
      `the backup was killed midway (it exited ${k.code}): ${k.stderr.slice(-5).join(" | ")}`,
    );

    // No snapshot appeared; the repository opens, verifies, and the earlier snapshot restores.
    assert.deepEqual(await snapshotIds(be), [s1.snapshotId]);
    assert.equal((await listLiveLocks(be)).length, 1, "the killed backup's lock is left behind (and live)");
    await assertIntact(repoPath, kek, expected, src, "after the killed backup");

    const afterKill = await packs(be);
    const arrived = [...afterKill.keys()].filter((p) => !before.has(p));
    const indexed = (await loadIndex(be)).packIds();
    const checkpointed = arrived.filter((p) => indexed.has(p));
    const orphans = arrived.filter((p) => !indexed.has(p));
    const checkpointedBytes = checkpointed.reduce((n, p) => n + afterKill.get(p)!, 0);
    assert.ok(arrived.length >= 14, `packs arrived before the kill: ${arrived.length}`);
    assert.ok(
      checkpointed.length >= 8,
      `index checkpoints written as the backup went: ${checkpointed.length} of ${arrived.length}`,
    );

    // The next backup of the same data completes and does not upload again what the index already knew.
    const resumed = await runDriver(cli);
    const r = JSON.parse(resumed.stdout);
    const afterResume = await packs(be);
    const uploaded = [...afterResume.keys()].filter((p) => !afterKill.has(p));
    const uploadedBytes = uploaded.reduce((n, p) => n + afterResume.get(p)!, 0);
    assert.ok(
      uploadedBytes <= bigBytes - checkpointedBytes + 2 * PARAMS.packTargetBytes,
      `resumed run uploaded ${uploadedBytes} bytes; a full run is ~${bigBytes}, ${checkpointedBytes} had arrived`,
    );
    assert.ok(
      uploadedBytes < 0.8 * bigBytes,
      `resumed run uploaded clearly less than a full run (${uploadedBytes})`,
    );
    assert.ok(r.bytesStored < 0.8 * bigBytes, `bytesStored ${r.bytesStored}`);
    for (const p of checkpointed) assert.ok(afterResume.has(p));
    expected.set(r.snapshotId, await digests(src));
    assert.deepEqual(await snapshotIds(be), [s1.snapshotId, r.snapshotId].sort());
    await assertIntact(repoPath, kek, expected, src, "after the resumed backup");

    // gc while the dead writer's lock is still live: its packs are left alone (it might be about to commit).
    await garbageCollect(be, { graceMs: 0 });
    const held = await garbageCollect(be, { graceMs: 0 });
    assert.deepEqual(held.deleted, []);
    for (const p of orphans) assert.ok((await packs(be)).has(p), "held back while the lock is live");
    // Past the stale timeout the lock no longer blocks gc: two gcs past the grace period remove the orphans.
    const later = () => new Date(Date.now() + LOCK_STALE_MS + 60_000);
    assert.deepEqual(await listLiveLocks(be, { now: later() }), []);
    const g1 = await garbageCollect(be, { graceMs: 0, now: later });
    const g2 = await garbageCollect(be, { graceMs: 0, now: later });
    assert.ok(g1.condemned.length >= orphans.length, `condemned ${g1.condemned.length}`);
    assert.deepEqual(g2.deleted.sort(), g1.condemned.sort());
    const final = await packs(be);
    for (const p of orphans) {
      assert.ok(!final.has(p), `orphan pack ${p.slice(0, 12)} of the killed run removed`);
    }
    for (const p of checkpointed) assert.ok(final.has(p), `reused pack ${p.slice(0, 12)} kept`);
    assert.deepEqual(await unreferencedPacks(be), []);
    assert.equal((await listCondemned(be)).size, 0);
    const swept = await gcMuchLater(be, repoPath, mode);
    assert.deepEqual([swept.condemned, swept.deleted], [[], []]);
    await assertIntact(repoPath, kek, expected, src, "after gc");
  });
}

/** A repository with forgotten snapshots: returns the kept snapshots and their expected contents. */
async function repoWithGarbage(dir: string, kek: Uint8Array) {
  const repoPath = `${dir}/repo`;
  const src = `${dir}/src`;
  const be = new LocalBackend(repoPath);
  const repo = await Repository.init(be, kek, { namespace: "h", ...PARAMS, packTargetBytes: 32 * 1024 });
  const ns = repo.namespace("h");
  await Deno.mkdir(src);
  const expected = new Map<string, Map<string, string>>();
  const forget: string[] = [];
  for (let gen = 0; gen < 4; gen++) {
    for (let i = 0; i < 3; i++) {
      await Deno.writeFile(`${src}/f${i}`, deterministicBytes(`gen-${gen}-${i}`, 200_000));
    }
    const s = await backupFiles(ns, { paths: [src] });
    if (gen % 2 === 0) forget.push(s.snapshotId);
    else expected.set(s.snapshotId, await digests(src));
  }
  await forgetSnapshots(be, forget);
  return { repoPath, src, be, expected };
}

const GC_KILLS = [
  { phase: "condemn", hang: "put:condemned/:1" },
  { phase: "condemn", hang: "put:condemned/:17" },
  { phase: "condemn", race: "@@put condemned/", at: 5 },
  { phase: "delete", hang: "delete:data/:1" },
  { phase: "delete", hang: "delete:data/:20" },
  { phase: "delete", hang: "delete:index/:1" },
  { phase: "delete", race: "@@delete data/", at: 3 },
  { phase: "delete", race: "@@delete condemned/", at: 12 },
] as const;

Deno.test("crash: a gc killed in its condemn or delete phase leaves a repository that verifies and restores", async () => {
  for (const kill of GC_KILLS) {
    const what = `gc killed in the ${kill.phase} phase (${
      "hang" in kill ? `frozen after ${kill.hang}` : `killed at ${kill.race} #${kill.at}`
    })`;
    await using dir = await tempDir("cadres-crash-gc-");
    const kek = crypto.getRandomValues(new Uint8Array(32));
    const { repoPath, src, be, expected } = await repoWithGarbage(dir.path, kek);
    const garbage = await unreferencedPacks(be);
    assert.ok(garbage.length >= 20, `${what}: forgotten packs ${garbage.length}`);
    if (kill.phase === "delete") {
      const first = await garbageCollect(be, { graceMs: 0 });
      assert.equal(first.condemned.length, garbage.length);
    }
    let seen = 0;
    const k = await runAndKill(
      ["gc", repoPath],
      { CRASH_GRACE_MS: "0", ...("hang" in kill ? { CRASH_HANG_AT: kill.hang } : {}) },
      (l) => "hang" in kill ? l === "@@hang" : l.startsWith(kill.race) && ++seen >= kill.at,
    );
    assert.ok(k.killed, `${what}: killed midway (exited ${k.code}): ${k.stderr.slice(-3).join(" | ")}`);
    await assertIntact(repoPath, kek, expected, src, what);

    // The killed gc's lock refuses another gc until it is stale; then gc completes and finishes the job.
    await assert.rejects(garbageCollect(be, { graceMs: 0 }), /Another gc is running/);
    const later = () => new Date(Date.now() + LOCK_STALE_MS + 60_000);
    await garbageCollect(be, { graceMs: 0, now: later });
    await garbageCollect(be, { graceMs: 0, now: later });
    assert.deepEqual(await unreferencedPacks(be), [], `${what}: every forgotten pack removed`);
    assert.equal((await listCondemned(be)).size, 0, `${what}: no condemnation left`);
    for (const [p, size] of await packs(be)) await readPackListing(be, p, size);
    await gcMuchLater(be, repoPath, what);
    await assertIntact(repoPath, kek, expected, src, `${what}, then gc twice`);
  }
});
