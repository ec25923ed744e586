/**
 * The agent's sampled restore drill (engine/agent/worker_drill.ts): sampled files are fetched and verified
 * with bounded parallelism (`mapLimited`, DRILL_FILES_AT_ONCE), every restored byte is checked, and each
 * failure names the damaged file — the same outcome whatever the parallelism.
 */
import assert from "node:assert/strict";
import { DRILL_FILES_AT_ONCE, mapLimited, runDrill, sampleFiles } from "../../engine/agent/worker_drill.ts";
import { findEntry, TreeCache } from "../../engine/agent/tree_walk.ts";
import type { RestoreDrillRequest, WorkerMessage } from "../../engine/agent/worker_protocol.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { fromHex } from "../../engine/repo/bytes.ts";
import type { NamespaceKeys } from "../../engine/repo/keys.ts";
import { packObjectName } from "../../engine/repo/pack.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { loadSnapshot } from "../../engine/repo/snapshot.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const PARAMS = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 64 * 1024 };

Deno.test("mapLimited: never more than the limit in flight, every item once, results in order", async () => {
  for (let iteration = 0; iteration < 20; iteration++) {
    let inFlight = 0;
    let most = 0;
    const seen: number[] = [];
    const items = Array.from({ length: 25 }, (_, i) => i);
    const out = await mapLimited(items, 4, async (n) => {
      inFlight++;
      most = Math.max(most, inFlight);
      seen.push(n);
      await new Promise((r) => setTimeout(r, Math.floor(Math.random() * 4)));
      inFlight--;
      return n * 2;
    });
    assert.ok(most <= 4, `at most 4 at once, saw ${most}`);
    assert.equal(most, 4, "the lanes are used");
    assert.deepEqual([...seen].sort((a, b) => a - b), items);
    assert.deepEqual(out, items.map((n) => n * 2));
  }
  assert.deepEqual(await mapLimited([], 4, () => Promise.resolve(1)), []);
  assert.equal(DRILL_FILES_AT_ONCE, 4);
});

Deno.test("sampled drill: files fetched 4 at once are all verified; a damaged chunk fails exactly its file, named, at any parallelism", async () => {
  await using dir = await tempDir("cadres-drill-");
  const src = `${dir.path}/src`;
  const contents = new Map<string, Uint8Array>();
  for (let d = 0; d < 6; d++) {
    await Deno.mkdir(`${src}/d${d}`, { recursive: true });
    for (let f = 0; f < 4; f++) {
      const path = `${src}/d${d}/f${f}.bin`;
      const bytes = deterministicBytes(`drill-${d}-${f}`, 6000 + d * 700 + f * 300);
      await Deno.writeFile(path, bytes);
      contents.set(path, bytes);
    }
  }
  const local = new LocalBackend(`${dir.path}/repo`);
  const created = await Repository.init(local, crypto.getRandomValues(new Uint8Array(32)), {
    namespace: "h",
    ...PARAMS,
  });
  const keys: NamespaceKeys = created.namespace("h").keys;
  const { snapshotId } = await backupFiles((await Repository.openNamespace(local, keys)).namespace("h"), {
    paths: [src],
  });

  const drill = async (target: string, sampleCount: number, filesAtOnce: number) => {
    const messages: WorkerMessage[] = [];
    const request = {
      op: "restore_drill",
      snapshotId,
      mode: "sample",
      sampleCount,
      seed: "seed-1",
      targetPath: target,
    } as RestoreDrillRequest;
    return await runDrill(request, local, keys, (m) => messages.push(m), filesAtOnce);
  };

  // Undamaged: every sampled file restored and verified, byte for byte.
  const clean = await drill(`${dir.path}/scratch-clean`, 10, 4);
  assert.equal(clean.selected, 10);
  assert.equal(clean.verified, 10);
  assert.equal(clean.files, 10);
  assert.deepEqual(clean.failures, []);
  const repo = await Repository.openNamespace(local, keys);
  const ns = repo.namespace("h");
  const snap = await loadSnapshot(ns, snapshotId);
  const trees = new TreeCache(ns, ns.hasher(snap.chainSalt ? fromHex(snap.chainSalt) : null));
  const sample = await sampleFiles(trees, snap.tree, 10, "seed-1");
  for (const [i, s] of sample.entries()) {
    assert.deepEqual(
      await Deno.readFile(`${dir.path}/scratch-clean/${i}${s.path}`),
      contents.get(s.path),
      s.path,
    );
  }

  // Damage two files: flip a byte inside the first chunk of each in its pack.
  const damaged = [`${src}/d1/f2.bin`, `${src}/d4/f0.bin`];
  for (const path of damaged) {
    const entry = await findEntry(trees, snap.tree, path);
    assert.ok(entry?.content?.length, path);
    const loc = repo.index.lookup("h", entry.content[0])!;
    const pack = await local.get(packObjectName(loc.packId));
    pack[loc.offset + Math.floor(loc.length / 2)] ^= 0xff;
    await local.put(packObjectName(loc.packId), pack);
  }
  const results = [];
  for (const filesAtOnce of [1, 4, 8]) {
    const all = await drill(`${dir.path}/scratch-${filesAtOnce}`, 24, filesAtOnce);
    assert.equal(all.selected, 24);
    assert.equal(all.verified, 22, JSON.stringify(all.failures));
    assert.deepEqual([...new Set(all.failures.map((f) => f.path))], damaged, "each failure names its file");
    for (const f of all.failures) assert.ok(f.message.length > 0);
    // A damaged file is never written wrong.
    const all24 = await sampleFiles(trees, snap.tree, 24, "seed-1");
    for (const [i, s] of all24.entries()) {
      const copy = await Deno.readFile(`${dir.path}/scratch-${filesAtOnce}/${i}${s.path}`).catch(() => null);
      if (damaged.includes(s.path)) assert.notDeepEqual(copy, contents.get(s.path));
      else assert.deepEqual(copy, contents.get(s.path), s.path);
    }
    results.push(all.failures);
  }
  assert.deepEqual(results[1], results[0], "the same failures, in the same order, whatever the parallelism");
  assert.deepEqual(results[2], results[0]);
});
