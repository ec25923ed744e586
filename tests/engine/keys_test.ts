import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { IntegrityError, RepoConfigError, WrongKeyError } from "../../engine/repo/errors.ts";
import {
  kekId,
  kekOpener,
  keyObjectName,
  namespaceKeysOpener,
  parseKeyObject,
  recoveryKeyObject,
  recoveryOpener,
  wrapNamespaceKeys,
} from "../../engine/repo/keys.ts";
import { generateRecoveryKeyPair, RECOVERY_ALGORITHM } from "../../engine/repo/recovery.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { loadSnapshot } from "../../engine/repo/snapshot.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";
import { repoState } from "./repo_state.ts";

const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 64 * 1024 };
const KEK = crypto.getRandomValues(new Uint8Array(32));
// RSA-3072 key generation takes a moment: two pairs serve every test.
const RECOVERY = await generateRecoveryKeyPair();
const OTHER_RECOVERY = await generateRecoveryKeyPair();

async function source(dir: string, seed: string): Promise<string> {
  const src = `${dir}/src-${seed}`;
  await Deno.mkdir(`${src}/sub`, { recursive: true });
  await Deno.writeFile(`${src}/a.bin`, deterministicBytes(seed, 20_000));
  await Deno.writeFile(`${src}/sub/b.txt`, new TextEncoder().encode(`${seed}\n`.repeat(300)));
  return src;
}

Deno.test("init wraps for a KEK and a recovery public key; the recovery private key opens the same keys", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, KEK, {
    namespace: "h",
    ...SMALL,
    recoveryPublicKeys: [RECOVERY.publicPem],
  });
  const src = await source(dir.path, "r1");
  const snap = await backupFiles(repo.namespace("h"), { paths: [src] });

  const ko = JSON.parse(await Deno.readTextFile(`${dir.path}/repo/keys/h/${RECOVERY.id}`));
  assert.deepEqual(Object.keys(ko), [
    "version",
    "namespace",
    "wrappedBy",
    "algorithm",
    "encryptedKey",
    "nonce",
    "ciphertext",
  ]);
  assert.deepEqual(ko.wrappedBy, { kind: "recovery", id: RECOVERY.id });
  assert.equal(ko.algorithm, RECOVERY_ALGORITHM);
  assert.equal(atob(ko.encryptedKey).length, 384);
  assert.equal(atob(ko.nonce).length, 12);
  // The KEK object keeps its original form exactly.
  const kekObj = JSON.parse(await Deno.readTextFile(`${dir.path}/repo/keys/h/${kekId(KEK)}`));
  assert.deepEqual(Object.keys(kekObj), [
    "version",
    "namespace",
    "wrappedBy",
    "algorithm",
    "nonce",
    "ciphertext",
  ]);
  assert.deepEqual(kekObj.wrappedBy, { kind: "kek", id: kekId(KEK) });

  const byRecovery = await Repository.open(be, recoveryOpener(RECOVERY.privatePem));
  assert.deepEqual(byRecovery.namespaces(), ["h"]);
  assert.equal(byRecovery.keyId, RECOVERY.id);
  assert.deepEqual(byRecovery.namespace("h").keys.dataKey, repo.namespace("h").keys.dataKey);
  assert.deepEqual(byRecovery.namespace("h").keys.idKey, repo.namespace("h").keys.idKey);
  assert.throws(() => byRecovery.kek, WrongKeyError);
  const res = await restoreSnapshot(byRecovery.namespace("h"), snap.snapshotId, {
    target: `${dir.path}/out`,
  });
  assert.deepEqual(res.errors, []);
  assert.deepEqual(await Deno.readFile(`${dir.path}/out${src}/a.bin`), deterministicBytes("r1", 20_000));

  // A namespace created through the recovery key is wrapped for it (its public half derived from the private).
  await byRecovery.createNamespace("h2");
  assert.ok(await be.exists(keyObjectName("h2", RECOVERY.id)));
  assert.equal(await be.exists(keyObjectName("h2", kekId(KEK))), false);
  assert.deepEqual((await Repository.open(be, recoveryOpener(RECOVERY.privatePem))).namespaces(), [
    "h",
    "h2",
  ]);
  assert.deepEqual((await Repository.open(be, KEK)).namespaces(), ["h"], "the KEK does not open h2");
});

Deno.test("a wrong recovery key is a clear error and writes nothing; a damaged recovery object is named", async () => {
  await using dir = await tempDir();
  const root = `${dir.path}/repo`;
  const be = new LocalBackend(root);
  await Repository.init(be, recoveryOpener(RECOVERY.privatePem), { namespace: "h", ...SMALL });
  assert.deepEqual((await Array.fromAsync(be.list("keys/"))).map((o) => o.name), [`keys/h/${RECOVERY.id}`]);
  const before = await repoState(root);
  await assert.rejects(
    Repository.open(be, recoveryOpener(OTHER_RECOVERY.privatePem)),
    (e: unknown) =>
      e instanceof WrongKeyError &&
      e.message ===
        `The recovery key (id ${OTHER_RECOVERY.id}) opens no namespace of the repository at ${root}`,
  );
  await assert.rejects(Repository.open(be, recoveryOpener("not a key")), WrongKeyError);
  await assert.rejects(Repository.open(be, recoveryOpener(RECOVERY.publicPem)), WrongKeyError);
  await assert.rejects(Repository.open(be, KEK), /opens no namespace/);
  assert.deepEqual(await repoState(root), before);

  const path = `${root}/keys/h/${RECOVERY.id}`;
  const ko = JSON.parse(await Deno.readTextFile(path));
  const ct = Uint8Array.fromBase64(ko.ciphertext);
  ct[3] ^= 1;
  await Deno.writeTextFile(path, JSON.stringify({ ...ko, ciphertext: ct.toBase64() }));
  await assert.rejects(
    Repository.open(be, recoveryOpener(RECOVERY.privatePem)),
    (e: unknown) => e instanceof IntegrityError && e.kind === "key" && e.id === `keys/h/${RECOVERY.id}`,
  );
  // Swapping the wrapper kind or algorithm, or moving the object, is damage too.
  const bytes = new TextEncoder().encode(JSON.stringify({ ...ko, algorithm: "aes-256-gcm" }));
  assert.throws(() => parseKeyObject(`keys/h/${RECOVERY.id}`, bytes), IntegrityError);
  const moved = new TextEncoder().encode(JSON.stringify(ko));
  assert.throws(() => parseKeyObject(`keys/other/${RECOVERY.id}`, moved), /stored under another name/);
});

Deno.test("recoveryKeyObject() wraps namespace keys for a public key alone; bound to the repository and config", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "h", ...SMALL });
  const keys = repo.namespace("h").keys;
  const binding = { repoId: repo.config.id, configSha256: repo.configSha256 };
  const { name, bytes } = await recoveryKeyObject(keys, RECOVERY.publicPem, binding);
  assert.equal(name, `keys/h/${RECOVERY.id}`);
  assert.equal(parseKeyObject(name, bytes).wrappedBy.kind, "recovery");
  await be.put(name, bytes);
  const opened = await Repository.open(be, recoveryOpener(RECOVERY.privatePem));
  assert.deepEqual(opened.namespace("h").keys.dataKey, keys.dataKey);

  // Wrapped for another repository id or config hash, it does not open this repository.
  const wrongRepo = await recoveryKeyObject(keys, RECOVERY.publicPem, { ...binding, repoId: "0".repeat(32) });
  await be.put(name, wrongRepo.bytes);
  await assert.rejects(Repository.open(be, recoveryOpener(RECOVERY.privatePem)), IntegrityError);
  const wrongConfig = await recoveryKeyObject(keys, RECOVERY.publicPem, { ...binding, configSha256: "ab" });
  await be.put(name, wrongConfig.bytes);
  await assert.rejects(
    Repository.open(be, recoveryOpener(RECOVERY.privatePem)),
    (e: unknown) => e instanceof IntegrityError && e.kind === "config",
  );
  await assert.rejects(
    recoveryKeyObject(keys, "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", binding),
    WrongKeyError,
  );
  // A KEK key object made the original way still reads.
  const old = await wrapNamespaceKeys(keys, KEK, { ...binding, now: new Date() });
  assert.equal(old.wrappedBy.kind, "kek");
});

Deno.test("namespace keys open their namespace alone, without a key object; wrong keys are refused", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const repo = await Repository.init(be, KEK, { namespace: "a", ...SMALL });
  await repo.createNamespace("b");
  const srcA = await source(dir.path, "a");
  const srcB = await source(dir.path, "b");
  const snapA = await backupFiles(repo.namespace("a"), { paths: [srcA] });
  const snapB = await backupFiles(repo.namespace("b"), { paths: [srcB] });
  const keysA = repo.namespace("a").keys;

  // What a job gets: the keys, no key object involved (remove them all to be sure).
  for await (const o of be.list("keys/a/")) await be.delete(o.name);
  const job = await Repository.open(be, namespaceKeysOpener(keysA));
  assert.deepEqual(job.namespaces(), ["a"]);
  assert.equal(job.keyId, null);
  assert.throws(() => job.namespace("b"), WrongKeyError);
  await assert.rejects(loadSnapshot(job.namespace("a"), snapB.snapshotId), /belongs to namespace "b"/);
  const res = await restoreSnapshot(job.namespace("a"), snapA.snapshotId, { target: `${dir.path}/out` });
  assert.deepEqual(res.errors, []);
  assert.deepEqual(await Deno.readFile(`${dir.path}/out${srcA}/a.bin`), deterministicBytes("a", 20_000));
  const again = await backupFiles(job.namespace("a"), { paths: [srcA], parent: snapA.snapshotId });
  assert.equal(again.bytesStored < 2000, true, "an incremental with namespace keys reuses the data");
  await assert.rejects(job.createNamespace("c"), WrongKeyError);
  assert.deepEqual(await job.addWrapper({ kind: "recovery", publicPem: RECOVERY.publicPem }), {
    added: [`keys/a/${RECOVERY.id}`],
    skipped: [],
  });
  assert.deepEqual((await Repository.open(be, recoveryOpener(RECOVERY.privatePem))).namespaces(), ["a"]);

  const random = () => crypto.getRandomValues(new Uint8Array(32));
  await assert.rejects(
    Repository.open(be, namespaceKeysOpener({ namespace: "a", dataKey: random(), idKey: random() })),
    (e: unknown) => e instanceof WrongKeyError && /open none of its snapshots/.test(e.message),
  );
  await assert.rejects(
    Repository.open(be, namespaceKeysOpener({ ...keysA, idKey: random() })),
    (e: unknown) => e instanceof WrongKeyError && /id key/.test(e.message),
  );
  // A namespace without snapshots (a first backup) takes the keys it is given.
  const fresh = await Repository.open(
    be,
    namespaceKeysOpener({ namespace: "new", dataKey: random(), idKey: random() }),
  );
  assert.deepEqual(fresh.namespaces(), ["new"]);
  assert.throws(
    () => namespaceKeysOpener({ namespace: "a", dataKey: new Uint8Array(3), idKey: random() }),
    WrongKeyError,
  );
});

Deno.test("init with namespace keys writes only the recovery wrappers it is given", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(`${dir.path}/repo`);
  const keys = {
    namespace: "job-host",
    dataKey: crypto.getRandomValues(new Uint8Array(32)),
    idKey: crypto.getRandomValues(new Uint8Array(32)),
  };
  // The recovery key as opener and as an extra public key: one object, not two.
  const dup = new LocalBackend(`${dir.path}/dup`);
  await Repository.init(dup, recoveryOpener(RECOVERY.privatePem), {
    namespace: "d",
    recoveryPublicKeys: [RECOVERY.publicPem],
  });
  assert.deepEqual((await Array.fromAsync(dup.list("keys/"))).map((o) => o.name), [`keys/d/${RECOVERY.id}`]);
  await Repository.init(be, namespaceKeysOpener(keys), {
    namespace: "job-host",
    ...SMALL,
    recoveryPublicKeys: [RECOVERY.publicPem],
  });
  assert.deepEqual((await Array.fromAsync(be.list("keys/"))).map((o) => o.name), [
    `keys/job-host/${RECOVERY.id}`,
  ]);
  const r = await Repository.open(be, recoveryOpener(RECOVERY.privatePem));
  assert.deepEqual(r.namespace("job-host").keys.dataKey, keys.dataKey);
  await assert.rejects(
    Repository.init(new LocalBackend(`${dir.path}/other`), namespaceKeysOpener(keys), { namespace: "x" }),
    WrongKeyError,
  );
  // A bad recovery public key fails init before anything is written.
  const be2 = new LocalBackend(`${dir.path}/repo2`);
  await assert.rejects(
    Repository.init(be2, KEK, {
      namespace: "h",
      recoveryPublicKeys: ["-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----"],
    }),
    WrongKeyError,
  );
  assert.equal(await Deno.stat(`${dir.path}/repo2`).then(() => true, () => false), false);
});

Deno.test("key add / list / remove: a second KEK and a recovery key; removal refusals change nothing", async () => {
  await using dir = await tempDir();
  const root = `${dir.path}/repo`;
  const be = new LocalBackend(root);
  const repo = await Repository.init(be, KEK, { namespace: "a", ...SMALL });
  await repo.createNamespace("b");
  const kek2 = crypto.getRandomValues(new Uint8Array(32));
  const id1 = kekId(KEK);
  const id2 = kekId(kek2);

  // Only KEK wraps a and b: removing it would be removing the last key (and it is in use).
  const only = await repoState(root);
  await assert.rejects(repo.removeWrapper(id1), /is the key in use/);
  // Opened with x's keys (no wrapper in use), the KEK is still x's last key.
  const r0 = await Repository.init(new LocalBackend(`${dir.path}/r0`), KEK, { namespace: "x" });
  const r0State = await repoState(`${dir.path}/r0`);
  const byKeys = await Repository.open(
    new LocalBackend(`${dir.path}/r0`),
    namespaceKeysOpener(r0.namespace("x").keys),
  );
  await assert.rejects(byKeys.removeWrapper(id1), /last key of namespace "x"/);
  assert.deepEqual(await repoState(`${dir.path}/r0`), r0State);
  await assert.rejects(repo.removeWrapper("0123456789abcdef"), /No key 0123456789abcdef/);
  assert.deepEqual(await repoState(root), only);

  assert.deepEqual(await repo.addWrapper({ kind: "kek", kek: kek2 }), {
    added: [`keys/a/${id2}`, `keys/b/${id2}`],
    skipped: [],
  });
  assert.deepEqual(await repo.addWrapper({ kind: "kek", kek: kek2 }), {
    added: [],
    skipped: [`keys/a/${id2}`, `keys/b/${id2}`],
  }, "adding again adds nothing");
  await repo.addWrapper({ kind: "recovery", publicPem: RECOVERY.publicPem });
  const listed = await repo.listKeys();
  assert.deepEqual(listed.map((k) => [k.namespace, k.kind, k.id, k.opens]), [
    ...[id1, id2, RECOVERY.id].sort().map((
      id,
    ) => ["a", id === RECOVERY.id ? "recovery" : "kek", id, id === id1]),
    ...[id1, id2, RECOVERY.id].sort().map((
      id,
    ) => ["b", id === RECOVERY.id ? "recovery" : "kek", id, id === id1]),
  ]);
  for (const k of listed) assert.ok(!Number.isNaN(Date.parse(k.created)), k.created);

  // The second KEK opens both; opened with it, the first can be removed; then the second is the last of
  // nothing (the recovery key remains), but it is in use.
  const by2 = await Repository.open(be, kek2);
  assert.deepEqual(by2.namespaces(), ["a", "b"]);
  assert.deepEqual(await by2.removeWrapper(id1), [`keys/a/${id1}`, `keys/b/${id1}`]);
  await assert.rejects(Repository.open(be, KEK), WrongKeyError);
  await assert.rejects(by2.removeWrapper(id2), /in use/);
  const byRecovery = await Repository.open(be, recoveryOpener(RECOVERY.privatePem));
  await assert.rejects(byRecovery.removeWrapper(RECOVERY.id), /in use/);
  assert.deepEqual(await byRecovery.removeWrapper(id2), [`keys/a/${id2}`, `keys/b/${id2}`]);

  // A wrapper of a namespace the opener does not open is refused whole.
  const kek3 = crypto.getRandomValues(new Uint8Array(32));
  await byRecovery.addWrapper({ kind: "kek", kek: kek3 });
  await byRecovery.createNamespace("c"); // wrapped for the recovery key only
  await (await Repository.open(be, recoveryOpener(RECOVERY.privatePem))).addWrapper({
    kind: "kek",
    kek: kek3,
  });
  const onlyA = await Repository.open(be, namespaceKeysOpener(by2.namespace("a").keys));
  const state = await repoState(root);
  await assert.rejects(onlyA.removeWrapper(kekId(kek3)), /also wraps namespace "b"/);
  assert.deepEqual(await repoState(root), state);
  await assert.rejects(Repository.init(be, KEK, { namespace: "z" }), RepoConfigError);
  // A damaged key object is listed as damaged, not hidden, and does not count as a namespace's key.
  await be.put(`keys/c/${"f".repeat(16)}`, new TextEncoder().encode("{not json"));
  const withDamage = await (await Repository.open(be, kek3)).listKeys();
  const bad = withDamage.find((k) => k.id === "f".repeat(16))!;
  assert.equal(bad.kind, "unknown");
  assert.match(bad.damaged!, /not a readable key object/);
  assert.equal(withDamage.filter((k) => !k.damaged).length, 3 + 3);
  assert.equal((await Repository.open(be, kekOpener(kek3))).namespaces().length, 3);
});
