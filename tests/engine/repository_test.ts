import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import {
  FormatVersionError,
  IntegrityError,
  MissingObjectError,
  RepoConfigError,
  WrongKeyError,
} from "../../engine/repo/errors.ts";
import { createKeyFile, readKeyFile } from "../../engine/repo/keys.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const KEK = crypto.getRandomValues(new Uint8Array(32));
const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 8192 };

async function listAll(be: LocalBackend): Promise<string[]> {
  return (await Array.fromAsync(be.list(""))).map((o) => o.name).sort();
}

Deno.test("Repository.init() then open() with the same key sees the namespace and config", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(dir.path);
  await Repository.init(be, KEK, { namespace: "host-a", compression: "lz4", encryption: "aes-256-cbc" });
  const repo = await Repository.open(be, KEK);
  assert.deepEqual(repo.namespaces(), ["host-a"]);
  assert.equal(repo.config.compression, "lz4");
  assert.equal(repo.config.encryption, "aes-256-cbc");
  assert.equal(repo.config.dedup, true);
  assert.equal(repo.config.chunker.avg, 1024 * 1024);
  await assert.rejects(Repository.init(be, KEK, { namespace: "host-a" }), RepoConfigError);
});

Deno.test("Repository.open() refuses a wrong key clearly and writes nothing", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(dir.path);
  await Repository.init(be, KEK, { namespace: "host-a" });
  const before = await listAll(be);
  await assert.rejects(
    Repository.open(be, crypto.getRandomValues(new Uint8Array(32))),
    (e: unknown) => e instanceof WrongKeyError && /opens no namespace/.test(e.message),
  );
  assert.deepEqual(await listAll(be), before);
});

Deno.test("Repository.open() refuses a location that is not a repository and a newer format", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(dir.path);
  await assert.rejects(Repository.open(be, KEK), /is not a Cadres repository: it has no config object/);
  await be.put("config", new TextEncoder().encode("hello"));
  await assert.rejects(Repository.open(be, KEK), /is not a Cadres repository/);
  await be.delete("config");
  await Repository.init(be, KEK, { namespace: "h" });
  const config = JSON.parse(new TextDecoder().decode(await be.get("config")));
  await be.put("config", new TextEncoder().encode(JSON.stringify({ ...config, version: 2 })));
  await assert.rejects(Repository.open(be, KEK), (e: unknown) => {
    assert.ok(e instanceof FormatVersionError);
    assert.match(e.message, /format version 2 is newer than this program supports \(1\); upgrade Cadres/);
    return true;
  });
});

Deno.test("Repository.open() detects a swapped config and a damaged key object", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(dir.path);
  await Repository.init(be, KEK, { namespace: "host-a" });
  const original = await be.get("config");
  const config = JSON.parse(new TextDecoder().decode(original));
  await be.put("config", new TextEncoder().encode(JSON.stringify({ ...config, encryption: "none" })));
  await assert.rejects(
    Repository.open(be, KEK),
    (e: unknown) => e instanceof IntegrityError && e.kind === "config",
  );
  await be.put("config", original);

  const [keyName] = (await Array.fromAsync(be.list("keys/"))).map((o) => o.name);
  const ko = JSON.parse(new TextDecoder().decode(await be.get(keyName)));
  const ct = ko.ciphertext as string;
  ko.ciphertext = (ct[0] === "A" ? "B" : "A") + ct.slice(1);
  await be.put(keyName, new TextEncoder().encode(JSON.stringify(ko)));
  await assert.rejects(
    Repository.open(be, KEK),
    (e: unknown) => e instanceof IntegrityError && e.id === keyName,
  );
});

Deno.test("createKeyFile() writes 32 random bytes base64 with mode 0600; readKeyFile() refuses damage", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/repo.key`;
  const kek = await createKeyFile(path);
  assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
  assert.deepEqual(await readKeyFile(path), kek);
  await assert.rejects(createKeyFile(path), Deno.errors.AlreadyExists);
  await Deno.writeTextFile(path, "not base64!");
  await assert.rejects(readKeyFile(path), WrongKeyError);
  await Deno.writeTextFile(path, btoa("short"));
  await assert.rejects(readKeyFile(path), /holds 5 bytes, not 32/);
  await assert.rejects(readKeyFile(`${dir.path}/missing`), /Cannot read key file/);
});

Deno.test("Namespace.saveBlob() packs, dedups, flushes; loadBlob() reads back after reopening", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(dir.path);
  const repo = await Repository.init(be, KEK, { namespace: "host-a", ...SMALL });
  const ns = repo.namespace("host-a");
  const h = ns.hasher();
  const blobs = Array.from({ length: 20 }, (_, i) => deterministicBytes(`b${i}`, 1000 + i * 100));
  const results = await Promise.all(blobs.map((b) => ns.saveBlob("data", b, h)));
  assert.ok(results.every((r) => r.isNew));
  const again = await Promise.all(blobs.map((b) => ns.saveBlob("data", b, h)));
  assert.ok(again.every((r) => !r.isNew && r.storedBytes === 0));
  await ns.flush();
  assert.ok((await Array.fromAsync(be.list("data/"))).length >= 2, "several packs");

  const reopened = await Repository.open(be, KEK);
  const ns2 = reopened.namespace("host-a");
  for (const [i, b] of blobs.entries()) assert.deepEqual(await ns2.loadBlob(results[i].id, ns2.hasher()), b);
  assert.equal((await ns2.saveBlob("data", blobs[3], ns2.hasher())).isNew, false);
});

Deno.test("Namespaces are separate: another namespace neither finds nor reads a blob", async () => {
  await using dir = await tempDir();
  const be = new LocalBackend(dir.path);
  const repo = await Repository.init(be, KEK, { namespace: "host-a" });
  const b = await repo.createNamespace("host-b");
  const a = repo.namespace("host-a");
  const data = deterministicBytes("shared", 5000);
  const saved = await a.saveBlob("data", data, a.hasher());
  await a.flush();
  assert.notEqual(b.hasher().id(data), saved.id, "ids are keyed per namespace");
  assert.equal(b.has(saved.id), false);
  await assert.rejects(b.loadBlob(saved.id), MissingObjectError);
  assert.deepEqual((await Repository.open(be, KEK)).namespaces(), ["host-a", "host-b"]);
});

Deno.test("LocalBackend.put() syncs the file before the rename and the folder after; createKeyFile() syncs", async () => {
  await using dir = await tempDir();
  const events: string[] = [];
  const paths = new WeakMap<object, string>();
  const origOpen = Deno.open;
  const origRename = Deno.rename;
  const origSync = Deno.FsFile.prototype.sync;
  const origSyncData = Deno.FsFile.prototype.syncData;
  const rel = (p: string) => p.replace(dir.path, "").replace(/\.tmp-[0-9a-f-]+$/, ".tmp");
  const d = Deno as unknown as Record<string, unknown>;
  d.open = async (p: string | URL, o?: Deno.OpenOptions) => {
    const f = await origOpen(p, o);
    paths.set(f, String(p));
    return f;
  };
  d.rename = (a: string | URL, b: string | URL) => {
    events.push(`rename ${rel(String(a))} -> ${rel(String(b))}`);
    return origRename(a, b);
  };
  Deno.FsFile.prototype.sync = function () {
    events.push(`sync ${rel(paths.get(this) ?? "?")}`);
    return origSync.call(this);
  };
  Deno.FsFile.prototype.syncData = function () {
    events.push(`syncData ${rel(paths.get(this) ?? "?")}`);
    return origSyncData.call(this);
  };
  try {
    const be = new LocalBackend(`${dir.path}/repo`);
    await be.put("data/ab/obj", new Uint8Array([1, 2, 3]));
    assert.deepEqual(events, [
      "sync /repo/data",
      "sync /repo",
      "sync ", // the folder holding the repository (the test's temporary folder)
      "syncData /repo/data/ab/.tmp",
      "rename /repo/data/ab/.tmp -> /repo/data/ab/obj",
      "sync /repo/data/ab",
    ]);
    events.length = 0;
    await be.put("data/ab/obj2", new Uint8Array([4]));
    assert.deepEqual(events, [
      "syncData /repo/data/ab/.tmp",
      "rename /repo/data/ab/.tmp -> /repo/data/ab/obj2",
      "sync /repo/data/ab",
    ]);
    events.length = 0;
    await createKeyFile(`${dir.path}/k`);
    assert.deepEqual(events, ["sync /k", "sync "]);
  } finally {
    d.open = origOpen;
    d.rename = origRename;
    Deno.FsFile.prototype.sync = origSync;
    Deno.FsFile.prototype.syncData = origSyncData;
  }
});
