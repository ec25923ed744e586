/**
 * Issue 16, security, end to end: the real control plane issues the data tokens and delivers the keys, a BES
 * data API verifies them, two real agents (web01, web02) back up and restore. A third host, web03, is an
 * engine of the test's own — a compromised host holding the org secret, enrolled, assigned and given jobs
 * like any other — that turns its real tokens against the data API and the key endpoint:
 *
 * - its write token (a backup of policy 1) reads nothing of the other hosts' namespaces in that repository
 *   (answered exactly as a missing object), nothing of policy 2's repository, confirms none of their chunks,
 *   deletes nothing, overwrites nothing and adds nothing under another namespace;
 * - its read token (a restore of web01's point to web03) reads web01's namespace and nothing else — not
 *   web02's, not policy 2's — and writes and deletes nothing;
 * - any token stops working once expired; a token not signed by this BES's control plane — re-signed by
 *   another key, its claims edited, or issued for another BES — is refused;
 * - the key endpoint gives keys only to the principal holding the job, while it runs;
 * - after a full backup and restore cycle, no key (namespace data and id keys, the KEKs, the control plane's
 *   token-signing key, the recovery private key) appears in any log line of the app or the agents, in any
 *   KV value, or in the agents' data folders — in raw bytes, base64, base64url or hex.
 *
 * (tests/engine/data_api_test.ts covers the same rules with tokens signed by the test itself, and
 * tests/integration/job_keys_test.ts the key endpoint in-process; this is the version with everything real.)
 */
import assert from "node:assert/strict";
import { getJob } from "../../domain/job_queue.ts";
import { type KekState } from "../../domain/keks.ts";
import { TOKEN_KEY_VAULT_ID, tokenSigningKey } from "../../domain/token_signing.ts";
import { openSecret, vaultKey, type VaultRecord } from "../../domain/vault.ts";
import { testConfig } from "../../domain/config.ts";
import { CHUNKS_EXIST_PATH, INIT_PATH, objectPath, OBJECTS_PATH } from "../../engine/protocol/data_api.ts";
import { generateKeyPair } from "../../engine/protocol/signing.ts";
import type { EngineIdentity } from "../../engine/protocol/client.ts";
import { type DataTokenClaims, signDataToken } from "../../engine/protocol/token.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { recoveryOpener } from "../../engine/repo/keys.ts";
import { readPackListing } from "../../engine/repo/pack.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { readSnapshotInfo } from "../../engine/repo/snapshot.ts";
import { deterministicBytes } from "../engine/helpers.ts";
import { assertSameTree } from "../engine/tree_fixture.ts";
import { dumpKv, engineMetrics } from "../helpers.ts";
import { agentWorld, assignHosts, createPolicy, runNow, waitFor } from "./agent_world.ts";
import nodeCrypto from "node:crypto";

const text = (s: string) => new TextEncoder().encode(s);

/** The objects of one repository folder, by namespace: packs (with their chunk ids), snapshots, index. */
async function objectsOf(root: string) {
  const backend = new LocalBackend(root);
  const packs = new Map<string, { name: string; ns: string; ids: string[] }>();
  for await (const o of backend.list("data/")) {
    const id = o.name.slice(o.name.lastIndexOf("/") + 1);
    const l = await readPackListing(backend, id, o.size);
    packs.set(o.name, { name: o.name, ns: l.namespace, ids: l.entries.map((e) => e.id) });
  }
  const snapshots: Array<{ name: string; ns: string }> = [];
  for await (const o of backend.list("snapshots/")) {
    const info = await readSnapshotInfo(backend, o.name.slice("snapshots/".length));
    snapshots.push({ name: o.name, ns: info.namespace });
  }
  const index = (await Array.fromAsync(backend.list("index/"))).map((o) => o.name);
  const of = (ns: string) => ({
    packs: [...packs.values()].filter((p) => p.ns === ns),
    snapshots: snapshots.filter((s) => s.ns === ns).map((s) => s.name),
  });
  return { backend, packs, snapshots, index, of };
}

/** Every spelling of `raw` a leak could take in text. */
function spellings(raw: Uint8Array): string[] {
  return [
    raw.toBase64(),
    raw.toBase64({ omitPadding: true }),
    raw.toBase64({ alphabet: "base64url", omitPadding: true }),
    raw.toHex(),
    raw.toHex().toUpperCase(),
    Array.from(raw).join(","),
  ];
}

function containsBytes(hay: Uint8Array, needle: Uint8Array): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

Deno.test({
  name:
    "security: a compromised host's real tokens reach only its job's repository and namespace, read-only when read, never delete, never after expiry; keys only to the job's holder; no key in clear anywhere",
  sanitizeResources: false,
  sanitizeOps: false,
}, async (t) => {
  await using w = await agentWorld();
  const srcA = `${w.tmp}/src-a`;
  const srcB = `${w.tmp}/src-b`;
  for (const [src, seed] of [[srcA, "a"], [srcB, "b"]]) {
    await Deno.mkdir(`${src}/docs`, { recursive: true });
    await Deno.writeFile(`${src}/docs/data.bin`, deterministicBytes(seed, 600_000));
    await Deno.writeFile(`${src}/docs/notes.txt`, text(`notes of ${seed}\n`.repeat(200)));
  }
  await Deno.writeFile(`${srcA}/big.bin`, deterministicBytes("a-big", 2_000_000));
  const p1 = await createPolicy(w, "policy 1");
  // 1 MB/s: a backup of policy 2 runs for a few seconds (a job of web01 held while web03 asks for its keys).
  const p2 = await createPolicy(w, "policy 2", { maxTransferMbps: 1 });
  const agentA = w.startAgent(`${w.tmp}/agent-a`, ["--include-root", srcA]);
  const agentB = w.startAgent(`${w.tmp}/agent-b`, ["--include-root", srcB], {
    hostname: "web02.acme.example",
  });
  const hostA = await w.enrolledHost(`${w.tmp}/agent-a`);
  const hostB = await w.enrolledHost(`${w.tmp}/agent-b`);
  // web03: enrolled with the org secret like any host, but driven by this test.
  const c: EngineIdentity = (await w.besClient.enrollAgent(w.secret, {
    hostname: "web03.acme.example",
    ipAddress: "127.0.0.1",
  }, generateKeyPair())).identity;
  assert.equal(
    (await w.besClient.post(c, "/api/agent/v1/heartbeat", { version: "1.0.0", metrics: engineMetrics() }))
      .status,
    200,
  );
  await assignHosts(w, p1.id, [hostA.id, hostB.id, c.id]);
  await assignHosts(w, p2.id, [hostA.id]);

  // The real agents back up (policy 1: web01 and web02; policy 2: web01).
  const output = () => `${agentA.output.join("")}\n${agentB.output.join("")}`;
  const p1Runs = await runNow(w, p1.id, "full", [hostA.id, hostB.id]);
  for (const r of p1Runs) {
    const done = await w.finishedRun(r.id);
    assert.equal(done.run.status, "success", `${JSON.stringify(done.run.error)}\n${output()}`);
  }
  const [p2Run] = await runNow(w, p2.id);
  assert.equal((await w.finishedRun(p2Run.id)).run.status, "success", output());
  const repo1 = await objectsOf(`${w.targetRoot}/cadres/${p1.id}/g1`);
  const repo2 = await objectsOf(`${w.targetRoot}/cadres/${p2.id}/g1`);
  const a1 = repo1.of(hostA.id);
  const b1 = repo1.of(hostB.id);
  const a2 = repo2.of(hostA.id);
  assert.ok(
    a1.packs.length && b1.packs.length && a2.packs.length && a1.snapshots.length && b1.snapshots.length,
  );

  // web03's jobs, claimed with its own key: a backup of policy 1 (write token), a restore of web01's point
  // to web03 (read token of web01's namespace).
  const claim = async () => {
    const res = await w.besClient.post(c, "/api/agent/v1/jobs/claim", { max: 5 });
    assert.equal(res.status, 200);
    return (await res.json()).jobs as Array<{ id: string; kind: string; dataToken: string }>;
  };
  const [cRun] = await runNow(w, p1.id, "full", [c.id]);
  const pointA = (await w.finishedRun(p1Runs.find((r) => r.hostId === hostA.id)!.id)).run.restorePointId!;
  const restore = await w.api("POST", "/api/v1/restores", {
    restorePointId: pointA,
    paths: [`${srcA}/docs`],
    targetPath: `${w.tmp}/stolen`,
    targetHostId: c.id,
    overwrite: false,
  });
  assert.equal(restore.status, 201, restore.text);
  const jobs = await claim();
  const write = jobs.find((j) => j.id === cRun.jobId)!;
  const read = jobs.find((j) => j.id === restore.body.jobId)!;
  assert.ok(write?.dataToken && read?.dataToken, JSON.stringify(jobs));

  const http = Deno.createHttpClient({ caCerts: [w.cert.certPem] });
  const call = async (
    token: string,
    method: string,
    path: string,
    body?: Uint8Array | string,
    headers: Record<string, string> = {},
  ) => {
    const res = await fetch(`${w.dataUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...headers },
      body: body as BodyInit | undefined,
      client: http,
    });
    const bytes = new Uint8Array(await res.arrayBuffer());
    let code: string | null = null;
    try {
      code = JSON.parse(new TextDecoder().decode(bytes)).error?.code ?? null;
    } catch {
      // not JSON (an object)
    }
    return { status: res.status, code, bytes };
  };
  const obj = (name: string) => objectPath(name);
  const listNames = async (token: string, prefix: string) => {
    const res = await call(token, "GET", `${OBJECTS_PATH}?prefix=${encodeURIComponent(prefix)}`);
    assert.equal(res.status, 200);
    return (JSON.parse(new TextDecoder().decode(res.bytes)).objects as Array<{ name: string }>).map((o) =>
      o.name
    );
  };
  /** The bytes of every object of the target, to check nothing changed. */
  const targetState = async () => {
    const out: string[] = [];
    for (const b of [repo1.backend, repo2.backend]) {
      for await (const o of b.list("")) {
        if (!o.name.startsWith("locks/")) {
          out.push(`${b.location}/${o.name} ${(await b.get(o.name)).toHex().slice(0, 64)} ${o.size}`);
        }
      }
    }
    return out.sort();
  };
  const before = await targetState();

  await t.step(
    "a write token reads nothing of other namespaces or policies, confirms none of their chunks",
    async () => {
      // Positive control: the token works for what is its own.
      assert.equal((await call(write.dataToken, "GET", obj("config"))).status, 200);
      for (
        const name of [
          ...a1.packs.map((p) => p.name),
          ...b1.packs.map((p) => p.name),
          ...a1.snapshots,
          ...b1.snapshots,
        ]
      ) {
        const got = await call(write.dataToken, "GET", obj(name));
        assert.deepEqual([got.status, got.code], [403, "not_accessible"], name);
        assert.equal((await call(write.dataToken, "HEAD", obj(name))).status, 403, name);
        const range = await call(write.dataToken, "GET", obj(name), undefined, { range: "bytes=0-15" });
        assert.equal(range.status, 403, name);
      }
      // Another policy's repository is out of reach: its objects are not there for this token.
      for (const name of [...a2.packs.map((p) => p.name), ...a2.snapshots]) {
        assert.deepEqual((await call(write.dataToken, "GET", obj(name))).code, "not_accessible", name);
      }
      for (const prefix of ["data/", "snapshots/", "index/", "refs/"]) {
        assert.deepEqual(await listNames(write.dataToken, prefix), [], `listing ${prefix}`);
      }
      for (const prefix of ["keys/", "locks/"]) {
        assert.equal(
          (await call(write.dataToken, "GET", `${OBJECTS_PATH}?prefix=${prefix}`)).code,
          "forbidden",
        );
      }
      const ids = [...a1.packs, ...b1.packs].flatMap((p) => p.ids);
      const exists = await call(write.dataToken, "POST", CHUNKS_EXIST_PATH, JSON.stringify({ ids }), {
        "content-type": "application/json",
      });
      assert.equal(exists.status, 200);
      assert.deepEqual(JSON.parse(new TextDecoder().decode(exists.bytes)).existing, []);
    },
  );

  await t.step(
    "a write token deletes nothing, overwrites nothing, adds nothing under another namespace",
    async () => {
      for (const name of [a1.packs[0].name, a1.snapshots[0], repo1.index[0], "config", b1.snapshots[0]]) {
        const del = await call(write.dataToken, "DELETE", obj(name));
        assert.deepEqual([del.status, del.code], [403, "forbidden"], name);
      }
      const victim = a1.packs[0].name;
      const garbage = await call(write.dataToken, "PUT", obj(victim), deterministicBytes("garbage", 4096));
      assert.equal(garbage.status, 422, "other bytes under an existing name");
      // The exact bytes of web01's pack, sent again by web03: its trailer names web01's namespace.
      const again = await call(write.dataToken, "PUT", obj(victim), await repo1.backend.get(victim));
      assert.deepEqual([again.status, again.code], [403, "forbidden"]);
      const config = await call(write.dataToken, "PUT", obj("config"), text("{}"));
      assert.equal(config.status, 403);
      const key = await call(write.dataToken, "PUT", obj(`keys/${hostA.id}/0123456789abcdef`), text("x"));
      assert.equal(key.status, 403);
      assert.deepEqual(await targetState(), before, "the target is unchanged");
    },
  );

  await t.step("a read token reads its point's namespace only, and writes and deletes nothing", async () => {
    const own = await call(read.dataToken, "GET", obj(a1.snapshots[0]));
    assert.equal(own.status, 200, "the restore reads web01's snapshot");
    assert.deepEqual(own.bytes, await repo1.backend.get(a1.snapshots[0]));
    for (
      const name of [
        ...b1.packs.map((p) => p.name),
        ...b1.snapshots,
        ...a2.packs.map((p) => p.name),
        ...a2.snapshots,
      ]
    ) {
      assert.deepEqual((await call(read.dataToken, "GET", obj(name))).code, "not_accessible", name);
    }
    const pack = a1.packs[0].name;
    for (
      const [method, path, body] of [
        ["PUT", obj(pack), await repo1.backend.get(pack)],
        ["PUT", obj(`locks/${crypto.randomUUID()}`), text("{}")],
        ["PUT", obj(`keys/${hostA.id}/0123456789abcdef`), text("x")],
        ["POST", INIT_PATH, text("x")],
      ] as const
    ) {
      const res = await call(read.dataToken, method, path, body);
      assert.deepEqual([res.status, res.code], [403, "read_only"], `${method} ${path}`);
    }
    for (const name of [pack, a1.snapshots[0], "config"]) {
      const res = await call(read.dataToken, "DELETE", obj(name));
      assert.equal(res.status, 403, name);
    }
    assert.deepEqual(await targetState(), before, "the target is unchanged");
  });

  await t.step("tokens expire; a token not signed by this BES's control plane is refused", async () => {
    // Past the 5 minutes a token lives (the BES's clock moved on): refused, both kinds.
    w.setDataClockSkew(6 * 60_000);
    try {
      for (const token of [write.dataToken, read.dataToken]) {
        const res = await call(token, "GET", obj("config"));
        assert.deepEqual([res.status, res.code], [401, "token_expired"]);
      }
    } finally {
      w.setDataClockSkew(0);
    }
    assert.equal((await call(read.dataToken, "GET", obj(a1.snapshots[0]))).status, 200, "valid again now");
    const [, body] = write.dataToken.split(".");
    const claims = JSON.parse(
      new TextDecoder().decode(Uint8Array.fromBase64(body, { alphabet: "base64url" })),
    ) as DataTokenClaims;
    // The same claims signed by another key.
    const stranger = nodeCrypto.generateKeyPairSync("ed25519").privateKey;
    const forged = signDataToken(stranger, { ...claims, namespace: hostA.id, host: hostA.id });
    // A real signature over edited claims (web03's token made to name web01's namespace).
    const edited = [
      "cdt1",
      new TextEncoder().encode(JSON.stringify({ ...claims, namespace: hostA.id, host: hostA.id })).toBase64({
        alphabet: "base64url",
        omitPadding: true,
      }),
      write.dataToken.split(".")[2],
    ].join(".");
    // The control plane's own key, but for another BES.
    const cpKey = await tokenSigningKey(w.kv, testConfig().masterKey!, new Date());
    const otherBes = signDataToken(cpKey.privateKey, { ...claims, bes: "01KZZZZZZZZZZZZZZZZZZZZZZZ" });
    for (
      const [what, token] of [["another key", forged], ["edited claims", edited], ["another BES", otherBes]]
    ) {
      const res = await call(token, "GET", obj(a1.snapshots[0]));
      assert.deepEqual([res.status, res.code], [401, "token_invalid"], what);
      assert.equal((await call(token, "GET", obj("config"))).status, 401, what);
    }
    // The genuine control plane key with valid claims works: the refusals above are about the signature.
    const genuine = signDataToken(cpKey.privateKey, { ...claims, exp: claims.exp });
    assert.equal((await call(genuine, "GET", obj("config"))).status, 200);
  });

  const keysOf = (who: EngineIdentity, jobId: string) =>
    w.besClient.post(who, `/api/${who.kind}/v1/jobs/${jobId}/key`, {});
  let cKeys: { dataKey: string; idKey: string } | null = null;

  await t.step("the key endpoint answers only the principal holding the job, while it runs", async () => {
    // web03's own running job: its keys (its namespace).
    const own = await keysOf(c, write.id);
    assert.equal(own.status, 200);
    cKeys = await own.json();
    // A job of web01 while web01 holds it: refused to web03 and to the BES, as if it did not exist.
    const [slow] = await runNow(w, p2.id);
    await waitFor("web01 to hold its job", async () => (await getJob(w.kv, slow.jobId))?.status === "leased");
    const bes: EngineIdentity = w.bes;
    for (const who of [c, bes]) {
      const res = await keysOf(who, slow.jobId);
      assert.equal(res.status, 404, `${who.kind} ${await res.text()}`);
    }
    assert.equal((await getJob(w.kv, slow.jobId))?.status, "leased", "web01 still held it");
    assert.equal((await w.finishedRun(slow.id)).run.status, "success", output());
    // web01's finished jobs, and web03's own job once it ended: refused too.
    for (const r of p1Runs) assert.equal((await keysOf(c, r.jobId)).status, 404);
    const ended = await w.besClient.post(c, `/api/agent/v1/jobs/${read.id}/result`, {
      status: "failed",
      startedAt: new Date().toISOString(),
      endedAt: new Date().toISOString(),
      bytesTransferred: 0,
      protectedBytes: 0,
      error: { reason: "CANCELLED", message: "the test ends it" },
    });
    assert.equal(ended.status, 200, await ended.text());
    const after = await keysOf(c, read.id);
    assert.deepEqual([after.status, (await after.json()).error.code], [409, "job_not_running"]);
  });

  await t.step(
    "after a backup and restore cycle, no key is in any log line, KV value or data folder",
    async () => {
      // The real restore of the cycle (web01 restores its folder).
      const dir = `${w.tmp}/restored`;
      const res = await w.api("POST", "/api/v1/restores", {
        restorePointId: pointA,
        paths: [`${srcA}/docs`],
        targetPath: dir,
        overwrite: false,
      });
      assert.equal(res.status, 201, res.text);
      assert.equal(
        ((await w.finishedRestore(res.body.id)) as { status: string }).status,
        "success",
        output(),
      );
      await assertSameTree(`${srcA}/docs`, `${dir}${srcA}/docs`);

      // The keys: every namespace's data and id keys (opened with the recovery key), the KEKs, the token
      // signing key, the recovery private key.
      const secrets: Array<{ what: string; raw: Uint8Array }> = [];
      for (const [label, backend] of [["policy 1", repo1.backend], ["policy 2", repo2.backend]] as const) {
        const repo = await Repository.open(backend, recoveryOpener(w.recovery!.privatePem));
        for (const ns of repo.namespaces()) {
          const k = repo.namespace(ns).keys;
          secrets.push({ what: `${label} ${ns} data key`, raw: k.dataKey }, {
            what: `${label} ${ns} id key`,
            raw: k.idKey,
          });
        }
      }
      assert.equal(secrets.length, 6, "web01 and web02 in policy 1, web01 in policy 2");
      secrets.push(
        { what: "web03's delivered data key", raw: Uint8Array.fromBase64(cKeys!.dataKey) },
        { what: "web03's delivered id key", raw: Uint8Array.fromBase64(cKeys!.idKey) },
      );
      const masterKey = testConfig().masterKey!;
      let keks = 0;
      for await (const e of w.kv.list<KekState>({ prefix: ["keks"] })) {
        for (const v of e.value.versions) {
          const record = (await w.kv.get<VaultRecord>(vaultKey(v.vaultId))).value!;
          secrets.push({
            what: `KEK ${e.value.ref} v${v.version}`,
            raw: Uint8Array.fromBase64(await openSecret(masterKey, record), { alphabet: "base64url" }),
          });
          keks++;
        }
      }
      assert.ok(keks >= 1);
      const tokenKey = (await w.kv.get<VaultRecord>(vaultKey(TOKEN_KEY_VAULT_ID))).value!;
      const der = Uint8Array.fromBase64(await openSecret(masterKey, tokenKey), { alphabet: "base64url" });
      secrets.push({ what: "token-signing key (PKCS#8)", raw: der }, {
        what: "token-signing key (seed)",
        raw: der.slice(-32),
      });
      const recoveryDer = Uint8Array.fromBase64(
        w.recovery!.privatePem.replace(/-----[A-Z ]+-----/g, "").replace(/\s+/g, ""),
      );
      secrets.push({ what: "recovery private key", raw: recoveryDer });

      // Where they must not be: the app's log, the agents' output, every KV value, the agents' folders.
      const texts: Record<string, string> = {
        "the app's log": w.logs.join("\n"),
        "web01's output": agentA.output.join(""),
        "web02's output": agentB.output.join(""),
      };
      const binaries: Record<string, Uint8Array> = {};
      const entries = await dumpKv(w.kv);
      assert.ok(entries.length > 50);
      for (const { key, value } of entries) {
        const where = `KV ${JSON.stringify(key, (_k, v) => typeof v === "bigint" ? String(v) : v)}`;
        texts[where] = JSON.stringify(value, (_k, v) => {
          if (typeof v === "bigint") return String(v);
          if (v instanceof Uint8Array) {
            binaries[where] = v;
            return { b64: v.toBase64(), hex: v.toHex() };
          }
          return v;
        });
      }
      for (const dir of [`${w.tmp}/agent-a`, `${w.tmp}/agent-b`]) {
        for (const path of await filesBelow(dir)) binaries[path] = await Deno.readFile(path);
      }
      for (const { what, raw } of secrets) {
        for (const form of spellings(raw)) {
          for (const [where, hay] of Object.entries(texts)) {
            assert.ok(!hay.includes(form), `${what} appears in clear in ${where}`);
          }
        }
        for (const [where, hay] of Object.entries(binaries)) {
          assert.ok(!containsBytes(hay, raw), `${what} appears in ${where}`);
          const asText = new TextDecoder().decode(hay);
          for (const form of spellings(raw)) {
            assert.ok(!asText.includes(form), `${what} appears in clear in ${where}`);
          }
        }
      }
    },
  );
  http.close();
});

async function filesBelow(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await filesBelow(path));
    else if (e.isFile) out.push(path);
  }
  return out;
}
