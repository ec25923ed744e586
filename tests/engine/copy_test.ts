import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { copySnapshots } from "../../engine/repo/copy.ts";
import { IntegrityError, RepoConfigError } from "../../engine/repo/errors.ts";
import { kekId } from "../../engine/repo/keys.ts";
import { packObjectName } from "../../engine/repo/pack.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { listSnapshots, readSnapshotRefs } from "../../engine/repo/snapshot.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";
import { repoState } from "./repo_state.ts";

const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 32 * 1024 };
const KEK = crypto.getRandomValues(new Uint8Array(32));
const KEK2 = crypto.getRandomValues(new Uint8Array(32));

async function tree(root: string, rel = ""): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const e of Deno.readDir(`${root}${rel}`)) {
    const p = `${rel}/${e.name}`;
    const st = await Deno.lstat(`${root}${p}`);
    if (e.isDirectory) Object.assign(out, { [p]: `dir ${st.mode! & 0o7777}` }, await tree(root, p));
    else if (e.isSymlink) out[p] = `-> ${await Deno.readLink(`${root}${p}`)}`;
    else {
      const d = await crypto.subtle.digest("SHA-256", await Deno.readFile(`${root}${p}`));
      out[p] = `${st.mode! & 0o7777} ${st.mtime?.getTime()} ${new Uint8Array(d).toHex()}`;
    }
  }
  return out;
}

async function setup(dir: string) {
  const be = new LocalBackend(`${dir}/src-repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", ...SMALL });
  const src = `${dir}/data`;
  await Deno.mkdir(`${src}/sub/empty`, { recursive: true });
  await Deno.writeFile(`${src}/big.bin`, deterministicBytes("big", 200_000));
  await Deno.writeFile(`${src}/sub/text.txt`, new TextEncoder().encode("line\n".repeat(5000)));
  await Deno.symlink("big.bin", `${src}/link`);
  const s1 = await backupFiles(repo.namespace("h"), { paths: [src] });
  // The incremental changes 10 KiB in the middle of big.bin: most blobs are shared with s1.
  const big = deterministicBytes("big", 200_000);
  big.set(deterministicBytes("change", 10_000), 100_000);
  await Deno.writeFile(`${src}/big.bin`, big);
  const s2 = await backupFiles(repo.namespace("h"), { paths: [src], parent: s1.snapshotId });
  return { be, repo, src, s1: s1.snapshotId, s2: s2.snapshotId };
}

Deno.test("copySnapshots() creates the destination, copies what each snapshot needs, restores identical, idempotent", async () => {
  await using dir = await tempDir();
  const { repo, src, s1, s2 } = await setup(dir.path);
  const expected = await tree(src);
  const dstRoot = `${dir.path}/dst-repo`;

  const first = await copySnapshots(repo, { backend: new LocalBackend(dstRoot), key: KEK2 }, [s1]);
  assert.equal(first.created, true);
  assert.deepEqual(first.snapshots, [{ id: s1, namespace: "h", copied: true }]);
  assert.deepEqual(first.keysWrapped, [`keys/h/${kekId(KEK2)}`]);
  assert.ok(first.blobsCopied > 10 && first.blobsPresent === 0);
  const dst = first.destination;
  assert.deepEqual(
    { ...dst.config, id: "", createdAt: "" },
    { ...repo.config, id: "", createdAt: "" },
    "created with the source's settings",
  );
  assert.notEqual(dst.config.id, repo.config.id);

  // Copying again adds nothing at all.
  const state = await repoState(dstRoot);
  const again = await copySnapshots(repo, { backend: new LocalBackend(dstRoot), key: KEK2 }, [s1]);
  assert.deepEqual(again.snapshots, [{ id: s1, namespace: "h", copied: false }]);
  assert.equal(again.blobsCopied, 0);
  assert.deepEqual(await repoState(dstRoot), state);

  // The incremental: only the blobs the destination lacks.
  const second = await copySnapshots(repo, { backend: new LocalBackend(dstRoot), key: KEK2 }, [s2, s1]);
  assert.equal(second.created, false);
  assert.deepEqual(second.snapshots.map((s) => [s.id, s.copied]), [[s2, true], [s1, false]]);
  assert.ok(
    second.blobsPresent > second.blobsCopied,
    `${second.blobsPresent} present, ${second.blobsCopied} copied`,
  );
  assert.ok(second.bytesCopied < first.bytesCopied / 2);
  assert.deepEqual(second.keysWrapped, []);

  // The copy opens with the destination's key alone, restores byte-identical, and verifies in full.
  const reopened = await Repository.open(new LocalBackend(dstRoot), KEK2);
  assert.deepEqual((await listSnapshots(reopened.backend)).map((s) => s.id).sort(), [s1, s2].sort());
  const res = await restoreSnapshot(reopened.namespace("h"), s2, { target: `${dir.path}/out` });
  assert.deepEqual(res.errors, []);
  assert.deepEqual(await tree(`${dir.path}/out${src}`), expected);
  const v = await verifyRepository(reopened, { all: true });
  assert.deepEqual(v.problems, []);
  assert.equal(v.snapshots, 2);
  await assert.rejects(Repository.open(new LocalBackend(dstRoot), KEK), /opens no namespace/);
});

Deno.test("copySnapshots() into an existing repository: adopts a namespace, refuses other keys and other settings", async () => {
  await using dir = await tempDir();
  const { repo, s1, src } = await setup(dir.path);
  // An existing destination with its own namespace "other": "h" is added, wrapped by its key.
  const dstBe = new LocalBackend(`${dir.path}/dst`);
  await Repository.init(dstBe, KEK2, { namespace: "other", ...SMALL });
  const dst = await Repository.open(dstBe, KEK2);
  const r = await copySnapshots(repo, dst, [s1]);
  assert.deepEqual(r.keysWrapped, [`keys/h/${kekId(KEK2)}`]);
  assert.deepEqual((await Repository.open(dstBe, KEK2)).namespaces(), ["h", "other"]);
  const res = await restoreSnapshot(r.destination.namespace("h"), s1, { target: `${dir.path}/out` });
  assert.deepEqual(res.errors, []);
  assert.deepEqual(
    await Deno.readFile(`${dir.path}/out${src}/sub/text.txt`),
    await Deno.readFile(`${src}/sub/text.txt`),
  );

  // A destination holding "h" with other keys is refused, and nothing is written.
  const clashBe = new LocalBackend(`${dir.path}/clash`);
  await Repository.init(clashBe, KEK2, { namespace: "h", ...SMALL });
  const clashState = await repoState(`${dir.path}/clash`);
  await assert.rejects(
    copySnapshots(repo, { backend: clashBe, key: KEK2 }, [s1]),
    (e: unknown) =>
      e instanceof RepoConfigError && /already holds namespace "h" with other keys/.test(e.message),
  );
  assert.deepEqual(await repoState(`${dir.path}/clash`), clashState);
  // …as is one holding "h" under a key the destination key does not open (KEK2 opens only "x" there).
  const KEK3 = crypto.getRandomValues(new Uint8Array(32));
  const foreignBe = new LocalBackend(`${dir.path}/foreign`);
  const foreign = await Repository.init(foreignBe, KEK3, { namespace: "h", ...SMALL });
  await foreign.createNamespace("x");
  await foreign.addWrapper({ kind: "kek", kek: KEK2 });
  await Deno.remove(`${dir.path}/foreign/keys/h/${kekId(KEK2)}`);
  const foreignState = await repoState(`${dir.path}/foreign`);
  await assert.rejects(
    copySnapshots(repo, { backend: foreignBe, key: KEK2 }, [s1]),
    /holds namespace "h" under a key the destination key does not open/,
  );
  assert.deepEqual(await repoState(`${dir.path}/foreign`), foreignState);

  // Other encryption or dedup: refused.
  const plainBe = new LocalBackend(`${dir.path}/plain`);
  await Repository.init(plainBe, KEK2, { namespace: "z", encryption: "none" });
  const plainState = await repoState(`${dir.path}/plain`);
  await assert.rejects(copySnapshots(repo, { backend: plainBe, key: KEK2 }, [s1]), /must be the same/);
  assert.deepEqual(await repoState(`${dir.path}/plain`), plainState);
  // The same repository: refused.
  await assert.rejects(copySnapshots(repo, repo, [s1]), /same repository/);
});

Deno.test("copySnapshots() never copies a damaged blob: it names it and writes no snapshot", async () => {
  await using dir = await tempDir();
  const { repo, s1 } = await setup(dir.path);
  // Flip a byte inside a blob that s1 needs (its first ciphertext byte). The pack is chosen by what it
  // holds, not by listing order: pack names are random, and a pack of s2 alone would not concern s1.
  const info = (await listSnapshots(repo.backend)).find((x) => x.id === s1)!;
  const entry = repo.index.lookup("h", (await readSnapshotRefs(repo.backend, info))[0])!;
  const packId = entry.packId;
  const path = `${dir.path}/src-repo/${packObjectName(packId)}`;
  const bytes = await Deno.readFile(path);
  bytes[entry.offset + 20] ^= 0xff;
  await Deno.writeFile(path, bytes);
  const src = await Repository.open(repo.backend, KEK);
  const dstBe = new LocalBackend(`${dir.path}/dst`);
  await assert.rejects(
    copySnapshots(src, { backend: dstBe, key: KEK2 }, [s1]),
    (e: unknown) => e instanceof IntegrityError && e.kind === "blob" && e.detail.includes(packId),
  );
  assert.deepEqual(await Array.fromAsync(dstBe.list("snapshots/")), []);
  assert.deepEqual(await Array.fromAsync(dstBe.list("locks/")), [], "the lock is released");
});

Deno.test("copySnapshots() copies several namespaces at once, each wrapped by the destination key", async () => {
  await using dir = await tempDir();
  const { repo, s1, src } = await setup(dir.path);
  const b = await repo.createNamespace("b");
  const sb = await backupFiles(b, { paths: [`${src}/sub`] });
  const r = await copySnapshots(repo, { backend: new LocalBackend(`${dir.path}/dst`), key: KEK2 }, [
    s1,
    sb.snapshotId,
  ]);
  assert.deepEqual(r.keysWrapped.sort(), [`keys/b/${kekId(KEK2)}`, `keys/h/${kekId(KEK2)}`]);
  const dst = await Repository.open(new LocalBackend(`${dir.path}/dst`), KEK2);
  assert.deepEqual(dst.namespaces(), ["b", "h"]);
  assert.deepEqual((await verifyRepository(dst, { all: true })).problems, []);
  const res = await restoreSnapshot(dst.namespace("b"), sb.snapshotId, { target: `${dir.path}/out` });
  assert.deepEqual(res.errors, []);
  assert.deepEqual(
    await Deno.readFile(`${dir.path}/out${src}/sub/text.txt`),
    await Deno.readFile(`${src}/sub/text.txt`),
  );
});
