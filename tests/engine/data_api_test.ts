import assert from "node:assert/strict";
import nodeCrypto from "node:crypto";
import { backupFiles } from "../../engine/repo/backup.ts";
import { encodeCondemnedMarker } from "../../engine/repo/gc.ts";
import { repairIndex } from "../../engine/repo/index.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import {
  listSnapshots,
  readSnapshotInfo,
  readSnapshotRefs,
  writeSnapshot,
} from "../../engine/repo/snapshot.ts";
import { MissingObjectError, RepoConfigError } from "../../engine/repo/errors.ts";
import { CHUNKS_EXIST_PATH, objectPath, OBJECTS_PATH } from "../../engine/protocol/data_api.ts";
import { DataApiRequestError, RemoteBackend } from "../../engine/protocol/remote_backend.ts";
import { signDataToken } from "../../engine/protocol/token.ts";
import { deterministicBytes } from "./helpers.ts";
import { BES_ID, type BesFixture, names, REPO, startBes } from "./data_api_fixture.ts";
import { assertSameTree } from "./tree_fixture.ts";

/**
 * Writes a small source folder: a few files, a nested folder, a symlink, an empty folder. With `settle`,
 * waits until an incremental may reuse them (it reads again what changed within 2 s of its parent's start).
 */
async function writeSource(dir: string, settle = false): Promise<void> {
  await Deno.mkdir(`${dir}/docs/deep`, { recursive: true });
  await Deno.mkdir(`${dir}/empty`);
  await Deno.writeFile(`${dir}/docs/report.bin`, deterministicBytes("report", 200_000));
  await Deno.writeFile(`${dir}/docs/deep/notes.txt`, new TextEncoder().encode("notes\n".repeat(5000)));
  await Deno.writeFile(`${dir}/small.txt`, new TextEncoder().encode("hello"));
  await Deno.writeFile(`${dir}/dup.bin`, deterministicBytes("report", 200_000));
  await Deno.chmod(`${dir}/small.txt`, 0o600);
  await Deno.symlink("docs/report.bin", `${dir}/link`);
  if (settle) await new Promise((r) => setTimeout(r, 2100));
}

/** Backs `src` up into host-a's namespace through the API; returns the snapshot id. */
async function backupThroughBes(bes: BesFixture, src: string, parent?: string) {
  const remote = bes.remote(bes.token());
  const repo = await Repository.openNamespace(remote, bes.keys.a, { expect: { encryption: "aes-256-gcm" } });
  return await backupFiles(repo.namespace("host-a"), { paths: [src], parent, host: "host-a" });
}

async function errorOf(res: Response): Promise<{ status: number; code: string; message: string }> {
  const body = await res.json();
  return { status: res.status, code: body.error.code, message: body.error.message };
}

Deno.test("data API: a backup through the client and the BES restores byte-identical, over pinned HTTPS", async () => {
  await using bes = await startBes({ https: true });
  const src = `${bes.dir}/src`;
  await writeSource(src, true);
  const first = await backupThroughBes(bes, src);
  assert.deepEqual(first.errors, []);
  assert.equal(first.files, 4);
  // The BES held the writer lock for the job and released it at the commit.
  assert.deepEqual(await names(bes.storage, "locks/"), []);
  assert.equal(bes.api.locks.size, 0);

  // Incremental after a change: only the changed file is read again.
  await Deno.writeFile(`${src}/small.txt`, new TextEncoder().encode("hello, changed"));
  const second = await backupThroughBes(bes, src, first.snapshotId);
  assert.deepEqual(second.errors, []);
  assert.equal(second.reusedFiles, 3);
  assert.equal(second.bytesRead, "hello, changed".length);
  assert.equal(second.bytesNew, "hello, changed".length);

  // Restore with a read token, into a fresh folder.
  const reader = bes.remote(bes.token({ access: "read", job: "job_restore" }));
  const repo = await Repository.openNamespace(reader, bes.keys.a);
  const target = `${bes.dir}/restored`;
  const restored = await restoreSnapshot(repo.namespace("host-a"), second.snapshotId, { target });
  assert.deepEqual(restored.errors, []);
  await assertSameTree(src, `${target}${src}`);

  // The repository behind the API is an ordinary one: the snapshots list from storage too.
  const snaps = await listSnapshots(bes.storage);
  assert.deepEqual(snaps.map((s) => s.id).sort(), [first.snapshotId, second.snapshotId].sort());
  assert.ok(snaps.every((s) => s.namespace === "host-a"));
});

Deno.test("data API: a token of one namespace neither reads another's objects nor learns whether they exist", async () => {
  await using bes = await startBes();
  const src = `${bes.dir}/src`;
  await writeSource(src);
  const a = await backupThroughBes(bes, src);
  const tokenB = bes.token({ job: "job_b", host: "host-b", namespace: "host-b", access: "write" });
  const remoteB = bes.remote(tokenB);

  // Listings are filtered: host-b sees none of host-a's packs, index segments, refs or snapshots.
  for (const prefix of ["data/", "index/", "refs/", "snapshots/", "condemned/"]) {
    assert.ok((await names(bes.storage, prefix)).length > 0 || prefix === "condemned/", prefix);
    assert.deepEqual(await names(remoteB, prefix), [], `host-b lists ${prefix}`);
  }
  // host-a sees its own.
  const remoteA = bes.remote(bes.token());
  assert.deepEqual(await names(remoteA, "data/"), await names(bes.storage, "data/"));
  assert.deepEqual(await names(remoteA, "snapshots/"), [`snapshots/${a.snapshotId}`]);

  // Reading one of host-a's objects answers exactly as reading one that does not exist.
  const pack = (await names(bes.storage, "data/"))[0];
  const index = (await names(bes.storage, "index/"))[0];
  const ref = (await names(bes.storage, "refs/"))[0];
  const fake = "0".repeat(64);
  for (
    const [real, missing] of [
      [pack, `data/00/${fake}`],
      [index, `index/${fake}`],
      [ref, `refs/${fake}`],
      [`snapshots/${a.snapshotId}`, `snapshots/${fake}`],
    ]
  ) {
    const r1 = await errorOf(await bes.request(objectPath(real), { token: tokenB }));
    const r2 = await errorOf(await bes.request(objectPath(missing), { token: tokenB }));
    assert.equal(r1.status, 403, real);
    assert.equal(r1.code, "not_accessible");
    assert.equal(r2.status, r1.status);
    assert.equal(r2.code, r1.code);
    assert.equal(r1.message.replace(real, "X"), r2.message.replace(missing, "X"));
    const h1 = await bes.request(objectPath(real), { token: tokenB, method: "HEAD" });
    const h2 = await bes.request(objectPath(missing), { token: tokenB, method: "HEAD" });
    assert.deepEqual([h1.status, h2.status], [403, 403]);
    await assert.rejects(() => remoteB.get(real), MissingObjectError);
    assert.equal(await remoteB.exists(real), false);
    assert.equal(await remoteA.exists(real), true);
  }
  // Ranges of another namespace's pack are refused the same way.
  await assert.rejects(() => remoteB.get(pack, { offset: 0, length: 16 }), MissingObjectError);
  await assert.rejects(() => remoteB.get(pack, { suffix: 64 }), MissingObjectError);

  // Which chunks exist: host-a's ids are absent for host-b, present for host-a.
  const refs = await readSnapshotRefs(bes.storage, await readSnapshotInfo(bes.storage, a.snapshotId));
  assert.deepEqual(await remoteB.existingChunks(refs), new Set());
  assert.deepEqual(await remoteA.existingChunks([...refs, fake]), new Set(refs));

  // Opening host-b's namespace through the API sees an empty repository; its restore of host-a's
  // snapshot fails as "missing".
  const repoB = await Repository.openNamespace(remoteB, bes.keys.b);
  assert.equal(repoB.index.size, 0);
  await assert.rejects(
    () => restoreSnapshot(repoB.namespace("host-b"), a.snapshotId, { target: `${bes.dir}/t` }),
    MissingObjectError,
  );

  // A token of another repository (another policy on the same target) sees nothing of this one.
  const elsewhere = bes.remote(bes.token({ repository: { ...REPO, path: "cadres/pol_2/g1" } }));
  assert.deepEqual(await names(elsewhere, "data/"), []);
  assert.deepEqual(await names(elsewhere, "snapshots/"), []);
  await assert.rejects(() => elsewhere.get(`snapshots/${a.snapshotId}`), MissingObjectError);
  await assert.rejects(() => elsewhere.get("config"), MissingObjectError);

  // A token cannot list keys or locks, nor read the key objects.
  assert.equal((await bes.request(`${OBJECTS_PATH}?prefix=keys/`, { token: tokenB })).status, 403);
  assert.equal((await bes.request(`${OBJECTS_PATH}?prefix=locks/`, { token: tokenB })).status, 403);
  const keyName = (await names(bes.storage, "keys/"))[0];
  assert.equal((await errorOf(await bes.request(objectPath(keyName)))).code, "not_accessible");
});

Deno.test("data API: an index segment shared by two namespaces (after repair) is shown filtered to each", async () => {
  await using bes = await startBes();
  const src = `${bes.dir}/src`;
  await writeSource(src);
  const a = await backupThroughBes(bes, src);
  // host-b backs up something too, then an operator's repair writes one segment listing both.
  const srcB = `${bes.dir}/srcb`;
  await Deno.mkdir(srcB);
  await Deno.writeFile(`${srcB}/b.bin`, deterministicBytes("b", 50_000));
  const remoteB = bes.remote(bes.token({ job: "job_b", host: "host-b", namespace: "host-b" }));
  const repoB = await Repository.openNamespace(remoteB, bes.keys.b);
  const b = await backupFiles(repoB.namespace("host-b"), { paths: [srcB] });
  await repairIndex(bes.storage);
  const segments = await names(bes.storage, "index/");
  assert.equal(segments.length, 1);

  const seenByB = await names(remoteB, "index/");
  assert.equal(seenByB.length, 1);
  assert.notEqual(seenByB[0], segments[0]);
  const reopenedB = await Repository.openNamespace(remoteB, bes.keys.b);
  assert.deepEqual(reopenedB.warnings, []);
  const out = `${bes.dir}/outb`;
  const rb = await restoreSnapshot(reopenedB.namespace("host-b"), b.snapshotId, { target: out });
  assert.deepEqual(rb.errors, []);
  await assertSameTree(srcB, `${out}${srcB}`);

  const remoteA = bes.remote(bes.token({ access: "read" }));
  const reopenedA = await Repository.openNamespace(remoteA, bes.keys.a);
  const outA = `${bes.dir}/outa`;
  const ra = await restoreSnapshot(reopenedA.namespace("host-a"), a.snapshotId, { target: outA });
  assert.deepEqual(ra.errors, []);
  await assertSameTree(src, `${outA}${src}`);
  // B's filtered segment is not readable by A.
  await assert.rejects(() => remoteA.get(seenByB[0]), MissingObjectError);
});

Deno.test("data API: a read token cannot write, and no token deletes or overwrites anything", async () => {
  await using bes = await startBes();
  const src = `${bes.dir}/src`;
  await writeSource(src);
  const a = await backupThroughBes(bes, src);
  const before = new Map<string, Uint8Array<ArrayBuffer>>();
  for (const prefix of ["config", "keys/", "data/", "index/", "refs/", "snapshots/"]) {
    const list = prefix === "config" ? ["config"] : await names(bes.storage, prefix);
    for (const n of list) before.set(n, await bes.storage.get(n));
  }
  const readToken = bes.token({ access: "read", job: "job_r" });
  const reader = bes.remote(readToken);
  const pack = (await names(bes.storage, "data/"))[0];
  const packBytes = before.get(pack)!;

  // Read token: every write refused with read_only.
  for (const name of [pack, `snapshots/${a.snapshotId}`, "locks/x"]) {
    const put = await bes.request(objectPath(name), { method: "PUT", body: packBytes, token: readToken });
    assert.deepEqual(await errorOf(put).then((e) => [e.status, e.code]), [403, "read_only"], name);
    const del = await bes.request(objectPath(name), { method: "DELETE", token: readToken });
    assert.deepEqual(await errorOf(del).then((e) => [e.status, e.code]), [403, "read_only"], name);
  }
  await assert.rejects(() => reader.put(pack, packBytes), (e: DataApiRequestError) => e.code === "read_only");

  // Write token: deletes refused, whatever the object.
  const writer = bes.remote(bes.token({ job: "job_w" }));
  for (const name of [pack, `snapshots/${a.snapshotId}`, "config", (await names(bes.storage, "index/"))[0]]) {
    await assert.rejects(
      () => writer.delete(name),
      (e: DataApiRequestError) => e.status === 403 && e.code === "forbidden",
      name,
    );
  }
  // Overwrites: other bytes under an existing name do not hash to it; config and condemnation markers are
  // never written by a token; a key object must be one (and one already stored is never replaced:
  // data_api_init_test.ts).
  const other = deterministicBytes("other", 1000);
  for (const name of [pack, `snapshots/${a.snapshotId}`, (await names(bes.storage, "refs/"))[0]]) {
    await assert.rejects(
      () => writer.put(name, other),
      (e: DataApiRequestError) => e.status === 422 && e.code === "invalid",
      name,
    );
  }
  for (const name of ["config", `condemned/${pack.slice(8)}`]) {
    await assert.rejects(
      () => writer.put(name, other),
      (e: DataApiRequestError) => e.status === 403 && e.code === "forbidden",
      name,
    );
  }
  const keyName = (await names(bes.storage, "keys/"))[0];
  await assert.rejects(
    () => writer.put(keyName, other),
    (e: DataApiRequestError) => e.status === 422 && e.code === "invalid",
    keyName,
  );
  // Nothing changed behind the API.
  for (const [name, bytes] of before) assert.deepEqual(await bes.storage.get(name), bytes, name);
  assert.deepEqual(await names(bes.storage, "condemned/"), []);
});

Deno.test("data API: expired tokens, tokens of another key or another BES, and missing tokens are refused", async () => {
  await using bes = await startBes();
  const t = Math.floor(Date.now() / 1000);
  const claims = {
    v: 1 as const,
    job: "job_a",
    host: "host-a",
    bes: BES_ID,
    repository: REPO,
    namespace: "host-a",
    access: "read" as const,
    iat: t - 400,
    exp: t - 100,
  };
  const cases: [string | null, number, string][] = [
    [bes.token({ iat: t - 400, exp: t - 100 }), 401, "token_expired"],
    [
      signDataToken(nodeCrypto.generateKeyPairSync("ed25519").privateKey, { ...claims, iat: t, exp: t + 60 }),
      401,
      "token_invalid",
    ],
    [bes.token({ bes: "bes_other" }), 401, "token_invalid"],
    ["cdt1.garbage.garbage", 401, "token_invalid"],
    [null, 401, "unauthorized"],
    [bes.token({ repository: { ...REPO, target: "tgt_unknown" } }), 403, "repository_unknown"],
  ];
  for (const [token, status, code] of cases) {
    for (const path of [objectPath("config"), `${OBJECTS_PATH}?prefix=data/`]) {
      const res = await bes.request(path, { token });
      assert.deepEqual([res.status, (await res.json()).error.code], [status, code], `${code} at ${path}`);
    }
  }
  // The client names the refusal; an expired token is retried with the callback's fresh one.
  let calls = 0;
  const renewing = bes.remote(
    () => (calls++ === 0 ? bes.token({ iat: t - 400, exp: t - 100 }) : bes.token()),
  );
  assert.ok((await renewing.get("config")).length > 0);
  assert.equal(calls, 2);
  const stale = bes.remote(bes.token({ iat: t - 400, exp: t - 100 }));
  await assert.rejects(() => stale.get("config"), /token_expired/);
});

Deno.test("data API: a commit referencing a missing blob or one in a condemned pack is refused", async () => {
  await using bes = await startBes();
  const src = `${bes.dir}/src`;
  await writeSource(src);
  const a = await backupThroughBes(bes, src);
  const remote = bes.remote(bes.token({ job: "job_c" }));
  const repo = await Repository.openNamespace(remote, bes.keys.a);
  const ns = repo.namespace("host-a");
  const parent = await readSnapshotInfo(bes.storage, a.snapshotId);
  const refs = await readSnapshotRefs(bes.storage, parent);
  const body = {
    version: 1,
    namespace: "host-a",
    host: "host-a",
    kind: "incremental" as const,
    paths: [src],
    parent: a.snapshotId,
    tree: refs[0],
    startTime: new Date().toISOString(),
    endTime: new Date().toISOString(),
    stats: { files: 0, dirs: 0, bytesRead: 0, bytesNew: 0, bytesStored: 0, durationMs: 0 },
    errors: [],
    chainSalt: null,
  };
  const missing = nodeCrypto.randomBytes(32).toString("hex");
  await assert.rejects(
    () => writeSnapshot(ns, body, [...refs, missing]),
    (e: DataApiRequestError) =>
      e.status === 409 && e.code === "missing_blobs" && e.message.includes("1 blobs"),
  );
  // A blob of another namespace is as missing: host-b cannot commit host-a's ids.
  const remoteB = bes.remote(bes.token({ job: "job_b", host: "host-b", namespace: "host-b" }));
  const nsB = (await Repository.openNamespace(remoteB, bes.keys.b)).namespace("host-b");
  await assert.rejects(
    () => writeSnapshot(nsB, { ...body, namespace: "host-b", parent: null }, refs),
    (e: DataApiRequestError) => e.code === "missing_blobs",
  );
  // gc condemns a pack (written behind the API, as the BES's gc job would): a commit naming its blobs fails.
  const pack = (await names(bes.storage, "data/"))[0];
  await bes.storage.put(`condemned/${pack.slice(8)}`, encodeCondemnedMarker(pack.slice(8), new Date()));
  await assert.rejects(
    () => writeSnapshot(ns, body, refs),
    (e: DataApiRequestError) => e.code === "missing_blobs",
  );
  // The same commit without the condemnation is accepted, and its lock is released.
  await bes.storage.delete(`condemned/${pack.slice(8)}`);
  assert.equal((await names(bes.storage, "locks/")).length, 2); // job_c's and job_b's (both refused)
  const id = await writeSnapshot(ns, body, refs);
  assert.ok((await names(bes.storage, "snapshots/")).includes(`snapshots/${id}`));
  assert.equal((await names(bes.storage, "locks/")).length, 1);
  // job_b gives up: deleting its lock object releases the lock the BES held for it.
  await remoteB.delete("locks/whatever");
  assert.deepEqual(await names(bes.storage, "locks/"), []);
  // A snapshot whose clear header names another namespace is refused outright.
  const foreign = (await Repository.openNamespace(remote, bes.keys.b)).namespace("host-b");
  await assert.rejects(
    () => writeSnapshot(foreign, { ...body, namespace: "host-b" }, refs),
    (e: DataApiRequestError) => e.status === 403 && e.code === "forbidden",
  );
});

Deno.test("data API: uploads are checked against their content and namespace", async () => {
  await using bes = await startBes({ limits: { pack: 8 * 1024, index: 4096 } });
  const src = `${bes.dir}/src`;
  await Deno.mkdir(src);
  await Deno.writeFile(`${src}/f.txt`, new TextEncoder().encode("small\n".repeat(100)));
  const a = await backupThroughBes(bes, src);
  assert.ok(a.snapshotId);
  const pack = (await names(bes.storage, "data/"))[0];
  const packBytes = await bes.storage.get(pack);

  // host-b uploading host-a's pack (its trailer names host-a) is refused, under any name.
  const tokenB = bes.token({ job: "job_b", host: "host-b", namespace: "host-b" });
  const res = await bes.request(objectPath(pack), { method: "PUT", body: packBytes, token: tokenB });
  assert.deepEqual(await errorOf(res).then((e) => [e.status, e.code]), [403, "forbidden"]);
  // Bytes that do not hash to the name.
  const wrong = await bes.request(objectPath(`data/00/${"0".repeat(64)}`), {
    method: "PUT",
    body: packBytes,
  });
  assert.deepEqual(await errorOf(wrong).then((e) => [e.status, e.code]), [422, "invalid"]);
  // Too large: 413 before storing anything.
  const big = deterministicBytes("big", 9000);
  const tooBig = await bes.request(objectPath(`data/00/${"0".repeat(64)}`), { method: "PUT", body: big });
  assert.deepEqual(await errorOf(tooBig).then((e) => [e.status, e.code]), [413, "payload_too_large"]);
  // An index segment of host-b naming host-a's pack is refused: an index may not claim another's pack.
  const { encodeIndexSegment } = await import("../../engine/repo/index.ts");
  const { sha256Hex } = await import("../../engine/repo/chunk_id.ts");
  const { parsePackTail } = await import("../../engine/repo/pack.ts");
  const listing = parsePackTail(pack.slice(8), packBytes, packBytes.length);
  assert.ok(!("need" in listing));
  const seg = encodeIndexSegment([{ ...listing, namespace: "host-b" }]);
  const segRes = await bes.request(objectPath(`index/${sha256Hex(seg)}`), {
    method: "PUT",
    body: seg,
    token: tokenB,
  });
  assert.equal(segRes.status, 422);
  // An index segment of host-a naming its pack with a forged entry is refused too.
  const forged = encodeIndexSegment([{ ...listing, entries: [{ ...listing.entries[0], length: 1 }] }]);
  const forgedRes = await bes.request(objectPath(`index/${sha256Hex(forged)}`), {
    method: "PUT",
    body: forged,
  });
  assert.deepEqual(await errorOf(forgedRes).then((e) => [e.status, e.code]), [422, "invalid"]);
  // Chunk-exists requests are bounded and checked.
  const badIds = await bes.request(CHUNKS_EXIST_PATH, {
    method: "POST",
    body: JSON.stringify({ ids: ["xyz"] }),
  });
  assert.deepEqual(await errorOf(badIds).then((e) => [e.status, e.code]), [422, "invalid"]);
});

Deno.test("data API: the BES holds a write token's lock from its first write and releases it at the commit", async () => {
  await using bes = await startBes();
  const remote = bes.remote(bes.token({ job: "job_l" }));
  const repo = await Repository.openNamespace(remote, bes.keys.a);
  const ns = repo.namespace("host-a");
  const { saveTree } = await import("../../engine/repo/tree.ts");
  const saved = await saveTree(ns, [], ns.hasher());
  assert.deepEqual(await names(bes.storage, "locks/"), []); // nothing written yet
  await ns.flush();
  const locks = await names(bes.storage, "locks/");
  assert.equal(locks.length, 1, "a lock appears with the first write");
  const { parseLock } = await import("../../engine/repo/lock.ts");
  const info = parseLock(locks[0], await bes.storage.get(locks[0]));
  assert.deepEqual([info.kind, info.namespace, info.hostname], ["backup", "host-a", "host-a"]);
  // The client's lock calls stand for the BES's lock.
  assert.equal(await remote.exists("locks/anything"), true);
  const now = new Date().toISOString();
  const id = await writeSnapshot(ns, {
    version: 1,
    namespace: "host-a",
    host: "host-a",
    kind: "full",
    paths: ["/"],
    parent: null,
    tree: saved.id,
    startTime: now,
    endTime: now,
    stats: { files: 0, dirs: 1, bytesRead: 0, bytesNew: 0, bytesStored: 0, durationMs: 0 },
    errors: [],
    chainSalt: null,
  }, [saved.id]);
  assert.ok(id);
  assert.deepEqual(await names(bes.storage, "locks/"), []);
  assert.equal(await remote.exists("locks/anything"), false);
  // Asking which chunks exist is deciding what to upload: a write token holds the lock from then on, a
  // read token never takes one.
  await bes.remote(bes.token({ job: "job_r", access: "read" })).existingChunks([saved.id]);
  assert.deepEqual(await names(bes.storage, "locks/"), []);
  assert.deepEqual(await remote.existingChunks([saved.id]), new Set([saved.id]));
  assert.equal((await names(bes.storage, "locks/")).length, 1);
});

Deno.test("Repository.openNamespace() refuses a config that differs from what the policy expects", async () => {
  await using bes = await startBes();
  const remote = bes.remote(bes.token({ access: "read" }));
  await assert.rejects(
    () => Repository.openNamespace(remote, bes.keys.a, { expect: { encryption: "none" } }),
    RepoConfigError,
  );
  const repo = await Repository.openNamespace(remote, bes.keys.a, {
    expect: { encryption: "aes-256-gcm", dedup: true },
  });
  assert.deepEqual(repo.namespaces(), ["host-a"]);
});

Deno.test("RemoteBackend retries a BES that answers 503, and names the object when the BES is unreachable or refuses", async () => {
  await using bes = await startBes();
  let seen = 0;
  const proxy = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    seen++;
    if (seen === 1) return Response.json({ error: { code: "internal", message: "busy" } }, { status: 503 });
    const url = new URL(req.url);
    return await fetch(`${bes.url}${url.pathname}${url.search}`, {
      method: req.method,
      headers: req.headers,
      body: req.body,
    });
  });
  try {
    const remote = new RemoteBackend({
      url: `http://127.0.0.1:${proxy.addr.port}`,
      token: () => bes.token(),
      maxAttempts: 3,
      backoffMs: 5,
    });
    assert.ok((await remote.get("config")).length > 0);
    assert.equal(seen, 2);
  } finally {
    await proxy.shutdown();
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const closedPort = (listener.addr as Deno.NetAddr).port;
  listener.close();
  const down = new RemoteBackend({
    url: `http://127.0.0.1:${closedPort}`,
    token: () => bes.token(),
    maxAttempts: 2,
    backoffMs: 5,
  });
  const name = `snapshots/${"ab".repeat(32)}`;
  await assert.rejects(
    () => down.get(name),
    (e: DataApiRequestError) =>
      e.objectName === name && e.message.includes(name) && /after 2 attempts/.test(e.message),
  );
  // A refusal names the object and the BES's reason.
  const writer = bes.remote(bes.token());
  const pack = `data/00/${"0".repeat(64)}`;
  await assert.rejects(
    () => writer.put(pack, new Uint8Array(10)),
    (e: DataApiRequestError) => e.message.includes(pack) && e.message.includes("do not hash to its name"),
  );
});

Deno.test("data API: concurrent first writes of one job take exactly one writer lock (20 rounds)", async () => {
  await using bes = await startBes();
  const { PackBuilder } = await import("../../engine/repo/pack.ts");
  for (let round = 0; round < 20; round++) {
    const remote = bes.remote(bes.token({ job: `job_race_${round}` }));
    const packs = Array.from({ length: 8 }, (_, i) => {
      const b = new PackBuilder("host-a");
      b.add("data", nodeCrypto.randomBytes(32).toString("hex"), deterministicBytes(`r${round}-${i}`, 100));
      return b.finish();
    });
    await Promise.all(
      packs.map((p) => remote.put(`data/${p.listing.packId.slice(0, 2)}/${p.listing.packId}`, p.bytes)),
    );
    assert.equal((await names(bes.storage, "locks/")).length, 1, `round ${round}`);
    await remote.delete("locks/mine");
    assert.deepEqual(await names(bes.storage, "locks/"), [], `round ${round}`);
  }
  assert.equal(bes.api.locks.size, 0);
});
