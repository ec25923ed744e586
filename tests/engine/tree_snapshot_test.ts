import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { IntegrityError } from "../../engine/repo/errors.ts";
import { Repository } from "../../engine/repo/repository.ts";
import {
  listSnapshots,
  loadSnapshot,
  readSnapshotRefs,
  resolveSnapshotId,
  type SnapshotBody,
  splitRefs,
  writeSnapshot,
} from "../../engine/repo/snapshot.ts";
import {
  compareNames,
  decodeTree,
  encodeTree,
  loadTree,
  saveTree,
  type TreeEntry,
} from "../../engine/repo/tree.ts";
import { tempDir } from "./helpers.ts";

const KEK = crypto.getRandomValues(new Uint8Array(32));
const file = (name: string, extra: Partial<TreeEntry> = {}): TreeEntry => ({
  name,
  type: "file",
  mode: 0o644,
  uid: 1,
  gid: 2,
  mtimeMs: 1000,
  size: 0,
  content: [],
  xattrs: null,
  ...extra,
});

Deno.test("encodeTree() sorts by code point and is canonical; decodeTree() round-trips", () => {
  const entries = [file("b"), file("\u{1F600}"), file("\uFFFD"), file("a")];
  const bytes = encodeTree(entries);
  assert.deepEqual(encodeTree([...entries].reverse()), bytes);
  const t = decodeTree("x", bytes);
  assert.deepEqual(t.entries.map((e) => e.name), ["a", "b", "\uFFFD", "\u{1F600}"]);
  assert.ok(compareNames("\uFFFD", "\u{1F600}") < 0);
  assert.throws(() => encodeTree([file("a"), file("a")]), /Duplicate/);
  assert.throws(() => encodeTree([file("a/b")]), /Cannot store/);
  assert.throws(() => decodeTree("t1", new TextEncoder().encode("{")), (e: unknown) => {
    return e instanceof IntegrityError && e.kind === "tree" && e.id === "t1";
  });
});

Deno.test("writeSnapshot() writes refs and a sealed snapshot; damage is named", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(dir.path);
  const repo = await Repository.init(be, KEK, { namespace: "h" });
  const ns = repo.namespace("h");
  const h = ns.hasher();
  const tree = await saveTree(ns, [file("a", { size: 3, content: [h.id(new Uint8Array([1, 2, 3]))] })], h);
  await ns.flush();
  assert.equal((await loadTree(ns, tree.id, h)).entries[0].name, "a");
  const body: SnapshotBody = {
    version: 1,
    namespace: "h",
    host: "h",
    kind: "full",
    paths: ["/x"],
    parent: null,
    tree: tree.id,
    startTime: "2026-01-01T00:00:00.000Z",
    endTime: "2026-01-01T00:00:01.000Z",
    stats: { files: 1, dirs: 0, bytesRead: 3, bytesNew: 3, bytesStored: 40, durationMs: 1000 },
    errors: [],
    chainSalt: null,
  };
  const id = await writeSnapshot(ns, body, [tree.id, tree.id]);
  const [info] = await listSnapshots(be);
  assert.equal(info.id, id);
  assert.equal(info.refCount, 1);
  assert.deepEqual(await readSnapshotRefs(be, info), [tree.id]);
  assert.equal(await resolveSnapshotId(be, id.slice(0, 8)), id);
  assert.deepEqual(await loadSnapshot(ns, id), { id, ...body });

  const bytes = await be.get(`snapshots/${id}`);
  for (const pos of [2, 20, bytes.length - 5]) {
    const bad = bytes.slice();
    bad[pos] ^= 1;
    await be.put(`snapshots/${id}`, bad);
    await assert.rejects(loadSnapshot(ns, id), (e: unknown) => e instanceof IntegrityError && e.id === id);
  }
});

Deno.test("splitRefs() cuts where ids say, so unchanged runs give equal segments", () => {
  const ids = Array.from(
    { length: 5000 },
    (_, i) => i.toString(16).padStart(64, "0").split("").reverse().join(""),
  )
    .sort();
  const segs = splitRefs(ids);
  assert.deepEqual(segs.flat(), ids);
  const extra = [...ids, "f".repeat(64)].sort();
  const segs2 = splitRefs(extra);
  assert.deepEqual(segs2.slice(0, -1), segs.slice(0, -1));
});
