/**
 * The data API's repository creation (`POST /api/data/v1/init`, put-if-absent) and add-only key objects
 * (`PUT keys/<namespace>/<id>`) for write tokens: an agent's first backup creates its repository and writes
 * the copy of its keys wrapped for the account's recovery key, which then opens the repository alone.
 */
import assert from "node:assert/strict";
import { backupFiles } from "../../engine/repo/backup.ts";
import { encodeConfig, newConfig } from "../../engine/repo/config.ts";
import { generateNamespaceKeys, recoveryKeyObject, recoveryOpener } from "../../engine/repo/keys.ts";
import { generateRecoveryKeyPair } from "../../engine/repo/recovery.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { RepoConfigError } from "../../engine/repo/errors.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { INIT_PATH, objectPath, OBJECTS_PATH } from "../../engine/protocol/data_api.ts";
import { DataApiRequestError } from "../../engine/protocol/remote_backend.ts";
import { deterministicBytes } from "./helpers.ts";
import { names, SMALL, startBes } from "./data_api_fixture.ts";
import { assertSameTree } from "./tree_fixture.ts";

/** A repository the fixture's BES serves but nobody created yet. */
const FRESH = { target: "tgt_1", path: "cadres/pol_new/g1", generation: 1 };

async function errorOf(res: Response) {
  const body = await res.json();
  return { status: res.status, code: body.error.code as string, message: body.error.message as string };
}

Deno.test("data API init: a write token creates the config once; later inits get the stored one", async () => {
  await using bes = await startBes();
  const storage = new LocalBackend(`${bes.dir}/target/${FRESH.path}`);
  const remote = bes.remote(bes.token({ repository: FRESH }));
  const first = encodeConfig(newConfig({ encryption: "aes-256-gcm", dedup: true, ...SMALL }, new Date()));
  const created = await remote.initRepository(first);
  assert.equal(created.created, true);
  assert.deepEqual(created.config, first);
  assert.deepEqual(await storage.get("config"), first);

  // Another host's first backup with other settings: the stored config wins and is returned.
  const other = encodeConfig(newConfig({ encryption: "none", dedup: false }, new Date()));
  const again = await bes.remote(
    bes.token({ repository: FRESH, host: "host-b", namespace: "host-b", job: "j2" }),
  )
    .initRepository(other);
  assert.equal(again.created, false);
  assert.deepEqual(again.config, first);
  assert.deepEqual(await storage.get("config"), first);
  // Opening with the other settings expected is refused, naming the field.
  await assert.rejects(
    Repository.openNamespace(remote, generateNamespaceKeys("host-a"), { expect: { encryption: "none" } }),
    (e: unknown) =>
      e instanceof RepoConfigError && /encryption "aes-256-gcm", not the expected "none"/.test(e.message),
  );
});

Deno.test("data API init: racing first backups create exactly one config", async () => {
  await using bes = await startBes();
  const storage = new LocalBackend(`${bes.dir}/target/${FRESH.path}`);
  for (let round = 0; round < 5; round++) {
    const path = `cadres/pol_race/g${round + 1}`;
    const configs = Array.from({ length: 8 }, () => encodeConfig(newConfig({}, new Date())));
    const results = await Promise.all(
      configs.map((c, i) =>
        bes.remote(bes.token({ repository: { ...FRESH, path, generation: round + 1 }, job: `job_${i}` }))
          .initRepository(c)
      ),
    );
    assert.equal(results.filter((r) => r.created).length, 1, `round ${round}: one init creates`);
    const stored = await new LocalBackend(`${bes.dir}/target/${path}`).get("config");
    for (const r of results) assert.deepEqual(r.config, stored);
  }
  assert.equal(await storage.exists("config"), false);
});

Deno.test("data API init: refused for a read token and for bytes that are not a config; nothing written", async () => {
  await using bes = await startBes();
  const storage = new LocalBackend(`${bes.dir}/target/${FRESH.path}`);
  const config = encodeConfig(newConfig({}, new Date()));
  const post = (token: string, body: Uint8Array) =>
    bes.request(INIT_PATH, { method: "POST", body: body as Uint8Array<ArrayBuffer>, token });
  const readOnly = await errorOf(await post(bes.token({ repository: FRESH, access: "read" }), config));
  assert.deepEqual([readOnly.status, readOnly.code], [403, "read_only"]);
  const notJson = await errorOf(await post(bes.token({ repository: FRESH }), new TextEncoder().encode("{")));
  assert.deepEqual([notJson.status, notJson.code], [422, "invalid"]);
  const bad = JSON.parse(new TextDecoder().decode(config));
  bad.encryption = "rot13";
  const invalid = await errorOf(
    await post(bes.token({ repository: FRESH }), new TextEncoder().encode(JSON.stringify(bad))),
  );
  assert.deepEqual([invalid.status, invalid.code], [422, "invalid"]);
  assert.match(invalid.message, /rot13/);
  const newer = { ...JSON.parse(new TextDecoder().decode(config)), version: 9 };
  const tooNew = await errorOf(
    await post(bes.token({ repository: FRESH }), new TextEncoder().encode(JSON.stringify(newer))),
  );
  assert.deepEqual([tooNew.status, tooNew.code], [422, "invalid"]);
  assert.equal(await storage.exists("config"), false);
  // A write token still cannot PUT the config directly.
  const put = await errorOf(
    await bes.request(objectPath("config"), {
      method: "PUT",
      body: config,
      token: bes.token({ repository: FRESH }),
    }),
  );
  assert.deepEqual([put.status, put.code], [403, "forbidden"]);
});

Deno.test("data API keys: a write token adds its own namespace's key objects, never replacing one", async () => {
  await using bes = await startBes();
  const remote = bes.remote(bes.token());
  const repo = await Repository.openNamespace(remote, bes.keys.a);
  const pair = await generateRecoveryKeyPair();
  const binding = { repoId: repo.config.id, configSha256: repo.configSha256 };
  const ko = await recoveryKeyObject(bes.keys.a, pair.publicPem, binding);
  assert.deepEqual(await remote.addKeyObject(ko.name, ko.bytes), { existed: false });
  assert.deepEqual(await bes.storage.get(ko.name), ko.bytes);
  // Another object under the same name (a fresh nonce): kept as it was.
  const second = await recoveryKeyObject(bes.keys.a, pair.publicPem, binding);
  assert.notDeepEqual(second.bytes, ko.bytes);
  assert.deepEqual(await remote.addKeyObject(second.name, second.bytes), { existed: true });
  assert.deepEqual(await bes.storage.get(ko.name), ko.bytes);

  // Another namespace's key object, garbage, a read token: refused, nothing written.
  const foreign = await recoveryKeyObject(bes.keys.b, pair.publicPem, binding);
  await assert.rejects(
    remote.addKeyObject(foreign.name, foreign.bytes),
    (e: unknown) => e instanceof DataApiRequestError && e.status === 403 && e.code === "forbidden",
  );
  const garbage = `keys/host-a/${"0".repeat(16)}`;
  await assert.rejects(
    remote.addKeyObject(garbage, new TextEncoder().encode('{"version":1}')),
    (e: unknown) => e instanceof DataApiRequestError && e.status === 422,
  );
  await assert.rejects(
    bes.remote(bes.token({ access: "read", job: "r" })).addKeyObject(ko.name, ko.bytes),
    (e: unknown) => e instanceof DataApiRequestError && e.status === 403 && e.code === "read_only",
  );
  // A key object stored under another name than its own is refused (it would be read as damaged).
  const misnamed = `keys/host-a/${"1".repeat(16)}`;
  await assert.rejects(
    remote.addKeyObject(misnamed, ko.bytes),
    (e: unknown) => e instanceof DataApiRequestError && e.status === 422,
  );
  assert.deepEqual(
    (await names(bes.storage, "keys/host-a/")).filter((n) => n.startsWith("keys/host-a/") && n !== ko.name)
      .filter((n) => n === garbage || n === misnamed),
    [],
  );
  assert.equal(await bes.storage.exists(foreign.name), false);
  // Key objects stay unreadable and unlisted through the API.
  const read = await errorOf(await bes.request(objectPath(ko.name)));
  assert.deepEqual([read.status, read.code], [403, "not_accessible"]);
  const list = await errorOf(await bes.request(`${OBJECTS_PATH}?prefix=keys/`));
  assert.deepEqual([list.status, list.code], [403, "forbidden"]);
});

Deno.test("data API init + keys: an agent-made repository opens with the recovery private key alone", async () => {
  await using bes = await startBes();
  const pair = await generateRecoveryKeyPair();
  const keys = generateNamespaceKeys("host-a");
  const remote = bes.remote(bes.token({ repository: FRESH }));
  await remote.initRepository(encodeConfig(newConfig({ ...SMALL }, new Date())));
  const repo = await Repository.openNamespace(remote, keys, {
    expect: { encryption: "aes-256-gcm", dedup: true },
  });
  const ko = await recoveryKeyObject(keys, pair.publicPem, {
    repoId: repo.config.id,
    configSha256: repo.configSha256,
  });
  await remote.addKeyObject(ko.name, ko.bytes);
  const src = `${bes.dir}/src`;
  await Deno.mkdir(`${src}/d`, { recursive: true });
  await Deno.writeFile(`${src}/d/a.bin`, deterministicBytes("a", 50_000));
  const backup = await backupFiles(repo.namespace("host-a"), { paths: [src] });
  assert.deepEqual(backup.errors, []);

  const storage = new LocalBackend(`${bes.dir}/target/${FRESH.path}`);
  const byRecovery = await Repository.open(storage, recoveryOpener(pair.privatePem));
  assert.deepEqual(byRecovery.namespaces(), ["host-a"]);
  const target = `${bes.dir}/out`;
  const restored = await restoreSnapshot(byRecovery.namespace("host-a"), backup.snapshotId, { target });
  assert.deepEqual(restored.errors, []);
  await assertSameTree(src, `${target}${src}`);
});
