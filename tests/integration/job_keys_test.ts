/**
 * Issue 16 item 3, keys (ENGINE.md §3 "Keys", §5): `POST /api/{bes,agent}/v1/jobs/{id}/key` hands the
 * keys of the job's one namespace to its holder only, while it runs; keys are created once (a race of
 * first deliveries makes one key set), stored only wrapped by a KEK (account, or pam_vault with rotation
 * and audited unwraps), never in clear in KV or a log line; the account recovery key is downloaded once
 * and seals the delivered keys for the BES to write into `keys/`.
 */
import assert from "node:assert/strict";
import { createApiToken } from "../../domain/api_tokens.ts";
import { userActor } from "../../domain/auth.ts";
import { createPolicy } from "../../domain/policies.ts";
import { assignHost } from "../../domain/assignments.ts";
import { cancelJob, enqueueJob } from "../../domain/job_queue.ts";
import { type KekState, kekStateKey } from "../../domain/keks.ts";
import {
  ensureNamespaceKeys,
  type NamespaceKeyRecord,
  namespaceKeysKey,
  openNamespaceKeys,
} from "../../domain/namespace_keys.ts";
import { checkInvariants } from "../../domain/invariants.ts";
import { createReplica } from "../../domain/replicas.ts";
import { getRecoveryKey } from "../../domain/recovery_keys.ts";
import { requestBrowse } from "../../domain/restore_browse.ts";
import { requestFileRestore } from "../../domain/restore_requests.ts";
import { runPolicyNow } from "../../domain/run_now.ts";
import { issueSetupToken } from "../../domain/setup.ts";
import { createTarget } from "../../domain/storage.ts";
import { openSecret, vaultKey } from "../../domain/vault.ts";
import { openWithRecovery, recoveryKeyIdOfPrivate } from "../../engine/repo/recovery.ts";
import { RENEWED_CERT } from "../fixtures/certificates.ts";
import {
  addUser,
  auditEntries,
  Browser,
  createTenant,
  dumpKv,
  kvSnapshot,
  signInAs,
  targetInput,
  testApp,
} from "../helpers.ts";
import {
  call,
  claim,
  claimedBackup,
  type DataWorld,
  dataWorld,
  finishBackup,
  MASTER_KEY,
  registerBesWithDataApi,
  system,
} from "./data_access_fixture.ts";

interface KeyReply {
  jobId: string;
  keySetId: string;
  namespace: string;
  repository: { target: string; path: string; generation: number };
  dataKey: string;
  idKey: string;
  recovery: null | {
    keyId: string;
    algorithm: string;
    additionalData: string;
    encryptedKey: string;
    nonce: string;
    ciphertext: string;
  };
}

async function requestKeys(w: DataWorld, who: DataWorld["agent"], jobId: string) {
  return await call(w, who, `/api/${who.kind}/v1/jobs/${jobId}/key`, {});
}

/** The encodings a leaked key could take in a stored value or a log line. */
function encodings(b64: string): string[] {
  const raw = Uint8Array.fromBase64(b64);
  return [
    raw.toBase64(),
    raw.toBase64({ omitPadding: true }),
    raw.toBase64({ alphabet: "base64url", omitPadding: true }),
    raw.toHex(),
    raw.toHex().toUpperCase(),
    JSON.stringify(Array.from(raw)).slice(1, -1),
  ];
}

/** The whole KV as text, byte arrays spelled out in base64 and hex too. */
async function kvText(kv: Deno.Kv): Promise<string> {
  return JSON.stringify(await dumpKv(kv), (_k, v) => {
    if (typeof v === "bigint") return String(v);
    if (v instanceof Uint8Array) return [v.toBase64(), v.toHex(), Array.from(v)];
    return v;
  });
}

function assertNowhere(haystacks: Record<string, string>, secretB64: string, what: string) {
  for (const form of encodings(secretB64)) {
    for (const [where, text] of Object.entries(haystacks)) {
      assert.ok(!text.includes(form), `${what} appears in clear in ${where} (${form.slice(0, 12)}…)`);
    }
  }
}

Deno.test("the key endpoint gives the holder of a running job its namespace's keys, creating them once, with an audit entry", async () => {
  await using w = await dataWorld();
  const job = await claimedBackup(w);
  const res = await requestKeys(w, w.agent, job.id);
  assert.equal(res.status, 200, res.text);
  assert.equal(res.headers.get("cache-control"), "no-store");
  const keys = res.body as KeyReply;
  assert.equal(keys.jobId, job.id);
  assert.equal(keys.namespace, w.agent.id);
  assert.deepEqual(keys.repository, { target: w.target.id, path: `cadres/${w.policy.id}/g1`, generation: 1 });
  assert.equal(Uint8Array.fromBase64(keys.dataKey).length, 32);
  assert.equal(Uint8Array.fromBase64(keys.idKey).length, 32);
  assert.notEqual(keys.dataKey, keys.idKey);
  assert.equal(keys.recovery, null, "no recovery key yet");

  const again = (await requestKeys(w, w.agent, job.id)).body as KeyReply;
  assert.deepEqual(
    [again.keySetId, again.dataKey, again.idKey],
    [keys.keySetId, keys.dataKey, keys.idKey],
    "the same keys every time",
  );
  const audit = await auditEntries(w.kv, w.tenant.account.id);
  assert.equal(audit.filter((e) => e.action === "keys.create").length, 1);
  const deliveries = audit.filter((e) => e.action === "keys.deliver");
  assert.equal(deliveries.length, 2);
  assert.match(
    deliveries[0].summary,
    new RegExp(`namespace ${w.agent.id}.*Agent web01\\.acme\\.example.*${job.id}`),
  );

  // The BES browsing the point later reads the same namespace: same keys. Another host: other keys.
  const pointId = await finishBackup(w, job.id);
  await requestBrowse(w.kv, system, pointId, "/", w.clock.now());
  const [browse] = (await claim(w, w.bes)).filter((j) => j.kind === "browse");
  const forBes = (await requestKeys(w, w.bes, browse.id)).body as KeyReply;
  assert.equal(forBes.dataKey, keys.dataKey);
  assert.equal(forBes.keySetId, keys.keySetId);
  await assignHost(w.kv, system, { policyId: w.policy.id, hostId: w.otherAgent.id }, w.clock.now());
  await runPolicyNow(w.kv, system, w.policy.id, { kind: "full", hostIds: [w.otherAgent.id] }, w.clock.now());
  const [otherJob] = await claim(w, w.otherAgent);
  const other = (await requestKeys(w, w.otherAgent, otherJob.id)).body as KeyReply;
  assert.equal(other.namespace, w.otherAgent.id);
  assert.notEqual(other.dataKey, keys.dataKey);
  assert.notEqual(other.keySetId, keys.keySetId);
  // A file restore of the first host's point onto the second host reads the first host's namespace.
  await requestFileRestore(w.kv, system, {
    restorePointId: pointId,
    paths: ["/etc"],
    targetHostId: w.otherAgent.id,
    targetPath: "/restore",
  }, w.clock.now());
  const [restore] = (await claim(w, w.otherAgent)).filter((j) => j.kind === "restore_files");
  assert.equal(((await requestKeys(w, w.otherAgent, restore.id)).body as KeyReply).dataKey, keys.dataKey);
});

Deno.test("the key endpoint refuses anyone not holding the job, and jobs not running; a refusal changes nothing", async () => {
  await using w = await dataWorld();
  const job = await claimedBackup(w);
  const refused = async (who: DataWorld["agent"], jobId: string, status: number, code: string) => {
    const before = await kvSnapshot(w.kv);
    const res = await requestKeys(w, who, jobId);
    assert.equal(res.status, status, `${who.kind}: ${res.text}`);
    assert.equal(res.body.error.code, code);
    assert.ok(!("dataKey" in res.body));
    assert.equal(await kvSnapshot(w.kv), before, "a refusal writes nothing (not even its nonce)");
  };
  await refused(w.otherAgent, job.id, 404, "not_found");
  await refused(w.bes, job.id, 404, "not_found");
  await refused(w.agent, "01ARZ3NDEKTSV4RRFFQ69G5FAV", 404, "not_found");
  // Queued, not yet claimed.
  const queued = await enqueueJob(w.kv, {
    kind: "backup",
    principal: `agent:${w.agent.id}`,
    accountId: w.tenant.account.id,
    orgId: w.tenant.orgs[0].id,
    payload: { policyId: w.policy.id, hostId: w.agent.id, bes: { id: w.bes.id } },
  }, w.clock.now());
  await refused(w.agent, queued.id, 409, "job_not_running");
  // A prune job needs no keys.
  const prune = await enqueueJob(w.kv, {
    kind: "prune",
    principal: `bes:${w.bes.id}`,
    accountId: w.tenant.account.id,
    orgId: w.tenant.orgs[0].id,
    payload: { policyId: w.policy.id, targetId: w.target.id, restorePointIds: ["x"] },
  }, w.clock.now());
  await claim(w, w.bes);
  await refused(w.bes, prune.id, 403, "no_keys_for_job");
  // A replayed request (same signature, same nonce) is refused after it was answered once.
  const body = "{}";
  const path = `/api/agent/v1/jobs/${job.id}/key`;
  const headers = {
    ...await w.client.signedHeaders(w.agent, "POST", path, body),
    "content-type": "application/json",
  };
  assert.equal(
    (await w.app.request(`http://localhost:8000${path}`, { method: "POST", headers, body })).status,
    200,
  );
  const replay = await w.app.request(`http://localhost:8000${path}`, { method: "POST", headers, body });
  assert.equal(replay.status, 401);
  // Cancelled, then finished.
  await cancelJob(w.kv, job.id, w.clock.now());
  await refused(w.agent, job.id, 409, "job_cancelled");
  await finishBackup(w, job.id);
  await refused(w.agent, job.id, 409, "job_not_running");
  // A lease that expired without progress.
  const [second] = await claim(w, w.agent);
  assert.equal(second.id, queued.id);
  assert.equal((await requestKeys(w, w.agent, second.id)).status, 200);
  w.clock.advance(5 * 60_000 + 1000);
  await refused(w.agent, second.id, 409, "job_not_running");
  // The job records never carry keys.
  for (const id of [job.id, second.id]) {
    assert.ok(!JSON.stringify((await w.kv.get(["jobs", id])).value).match(/dataKey|idKey/));
  }
});

Deno.test("no key appears in clear in any KV value or log line after deliveries and a recovery key", async () => {
  await using w = await dataWorld();
  const job = await claimedBackup(w);
  const keys = (await requestKeys(w, w.agent, job.id)).body as KeyReply;
  const pointId = await finishBackup(w, job.id);
  await requestBrowse(w.kv, system, pointId, "/", w.clock.now());
  const [browse] = (await claim(w, w.bes)).filter((j) => j.kind === "browse");
  assert.equal((await requestKeys(w, w.bes, browse.id)).status, 200);
  const admin = await addUser(w.kv, w.tenant, "admin@acme.example", "admin", "all", w.clock.now());
  const browser = new Browser(w.app);
  await signInAs(browser, w.kv, admin, w.clock.now());
  const pem = await (await browser.postForm("/admin/recovery-key", {}, { tokenFrom: "/admin/recovery-key" }))
    .text();
  assert.match(pem, /^-----BEGIN PRIVATE KEY-----/);
  const sealed = (await requestKeys(w, w.bes, browse.id)).body as KeyReply;
  assert.ok(sealed.recovery);

  const text = await kvText(w.kv);
  const logs = w.logs.join("\n");
  assert.ok(logs.includes("/api/bes/v1/jobs/:id/key"), "the deliveries were logged (as requests)");
  assertNowhere({ KV: text, logs }, keys.dataKey, "the data key");
  assertNowhere({ KV: text, logs }, keys.idKey, "the id key");
  // The KEK itself is only in its vault record, sealed.
  const state = (await w.kv.get<KekState>(kekStateKey(`account:${w.tenant.account.id}`))).value!;
  const vaultRecord = (await w.kv.get(vaultKey(state.versions[0].vaultId))).value as never;
  const kek = await openSecret(MASTER_KEY, vaultRecord);
  assertNowhere(
    { KV: text, logs },
    Uint8Array.fromBase64(kek, { alphabet: "base64url" }).toBase64(),
    "the KEK",
  );
  // The recovery private key is nowhere either (each base64 line of its body).
  for (const line of pem.split("\n").filter((l) => l && !l.startsWith("-----"))) {
    assert.ok(
      !text.includes(line) && !logs.includes(line),
      "a line of the recovery private key is stored or logged",
    );
  }
});

Deno.test("racing first deliveries of a namespace's keys create ONE key set (many iterations, over HTTP)", async () => {
  await using w = await dataWorld();
  const ITERATIONS = 25;
  for (let i = 0; i < ITERATIONS; i++) {
    const policy = await createPolicy(w.kv, system, {
      name: `race ${i}`,
      besId: w.bes.id,
      targetId: w.target.id,
      backupType: "file",
      fullSchedule: "0 2 * * 0",
    }, w.clock.now());
    for (let j = 0; j < 3; j++) {
      await enqueueJob(w.kv, {
        kind: "backup",
        principal: `agent:${w.agent.id}`,
        accountId: w.tenant.account.id,
        orgId: w.tenant.orgs[0].id,
        payload: { policyId: policy.id, hostId: w.agent.id, bes: { id: w.bes.id } },
      }, w.clock.now());
    }
    const jobs = await claim(w, w.agent);
    assert.equal(jobs.length, 3);
    const replies = await Promise.all(jobs.map((j) => requestKeys(w, w.agent, j.id)));
    for (const r of replies) assert.equal(r.status, 200, r.text);
    const sets = replies.map((r) => r.body as KeyReply);
    assert.equal(new Set(sets.map((s) => `${s.keySetId}:${s.dataKey}:${s.idKey}`)).size, 1, `iteration ${i}`);
    let records = 0;
    for await (const _ of w.kv.list({ prefix: ["namespace_keys", `cadres/${policy.id}/g1`] })) records++;
    assert.equal(records, 1, `iteration ${i}: one stored key set`);
  }
  const created = (await auditEntries(w.kv, w.tenant.account.id)).filter((e) => e.action === "keys.create");
  assert.equal(created.length, ITERATIONS);
});

Deno.test("racing first key creations on a fresh database make one KEK and one key set (many iterations)", async () => {
  for (let i = 0; i < 40; i++) {
    using kv = await Deno.openKv(":memory:");
    const now = new Date("2026-11-22T10:00:00Z");
    const scope = {
      accountId: "ACCT",
      orgId: "ORG",
      repositoryPath: "cadres/P/g1",
      namespace: "HOST",
      kekSource: "account" as const,
    };
    const results = await Promise.all(
      Array.from({ length: 6 }, () => ensureNamespaceKeys(kv, MASTER_KEY, scope, now)),
    );
    assert.equal(results.filter((r) => r.created).length, 1, `iteration ${i}: one creation`);
    assert.equal(new Set(results.map((r) => r.record.id)).size, 1);
    let keks = 0;
    for await (const _ of kv.list({ prefix: ["keks"] })) keks++;
    let vault = 0;
    for await (const _ of kv.list({ prefix: ["vault"] })) vault++;
    assert.deepEqual([keks, vault], [1, 1], `iteration ${i}: one KEK`);
    const opened = await Promise.all(
      results.map((r) =>
        openNamespaceKeys(kv, MASTER_KEY, r.record, "account", {
          op: kv.atomic(),
          actor: system,
          purpose: "test",
          now,
        })
      ),
    );
    assert.equal(new Set(opened.map((k) => k.dataKey.toHex() + k.idKey.toHex())).size, 1);
  }
});

Deno.test("a replica under pam_vault gets its own wrapped copy; rotating the pam_vault key re-wraps it, audits every unwrap and retires the old version", async () => {
  await using w = await dataWorld();
  const second = await registerBesWithDataApi(w.client, w.tenant.secrets[0], {
    dataUrl: "https://10.0.0.10:9443",
    certificate: RENEWED_CERT,
  }, "bes-2");
  const replicaTarget = await createTarget(w.kv, system, targetInput(second.identity.id), {
    now: w.clock.now(),
    masterKey: MASTER_KEY,
  });
  await createReplica(w.kv, system, {
    policyId: w.policy.id,
    targetId: replicaTarget.id,
    kekSource: "pam_vault",
  }, w.clock.now());
  const backup = await claimedBackup(w);
  const keys = (await requestKeys(w, w.agent, backup.id)).body as KeyReply;
  await finishBackup(w, backup.id);
  const [replicate] = (await claim(w, w.bes)).filter((j) => j.kind === "replicate");
  const forReplica = (await requestKeys(w, w.bes, replicate.id)).body as KeyReply;
  assert.equal(forReplica.dataKey, keys.dataKey, "a replica shares its source's keys");
  const path = `cadres/${w.policy.id}/g1`;
  const record = (await w.kv.get<NamespaceKeyRecord>(namespaceKeysKey(path, w.agent.id))).value!;
  const pamRef = `pam_vault:${w.tenant.account.id}:${w.tenant.orgs[0].id}`;
  assert.deepEqual(record.wraps.map((x) => x.kekRef), [`account:${w.tenant.account.id}`, pamRef]);

  const admin = await addUser(w.kv, w.tenant, "admin@acme.example", "admin", "all", w.clock.now());
  const { secret: token } = await createApiToken(w.kv, userActor(admin), {
    name: "rotation",
    permissions: ["admin"],
    expiresInDays: 0,
  }, w.clock.now());
  const oldVault = (await w.kv.get<KekState>(kekStateKey(pamRef))).value!.versions[0].vaultId;
  const rotate = await w.app.request(
    `http://localhost:8000/api/v1/orgs/${w.tenant.orgs[0].id}/pam-vault-key/rotate`,
    { method: "POST", headers: { authorization: `Bearer ${token}` } },
  );
  assert.equal(rotate.status, 200, await rotate.clone().text());
  assert.deepEqual(await rotate.json(), { keyId: pamRef, version: 2, rewrapped: 1 });
  const state = (await w.kv.get<KekState>(kekStateKey(pamRef))).value!;
  assert.deepEqual(state.versions.map((v) => v.version), [2], "the old version is retired");
  assert.equal((await w.kv.get(vaultKey(oldVault))).value, null, "and its vault record deleted");
  const after = (await w.kv.get<NamespaceKeyRecord>(namespaceKeysKey(path, w.agent.id))).value!;
  assert.equal(after.wraps.find((x) => x.kekRef === pamRef)!.kekVersion, 2);
  assert.deepEqual(await checkInvariants(w.kv), [], "every vault record has its owner after the rotation");

  // Unwrapping with the pam_vault copy gives the same keys and is audited, in the caller's operation.
  const op = w.kv.atomic();
  const opened = await openNamespaceKeys(w.kv, MASTER_KEY, after, "pam_vault", {
    op,
    actor: system,
    purpose: "a restore from the replica",
    now: w.clock.now(),
  });
  assert.ok((await op.commit()).ok);
  assert.equal(opened.dataKey.toBase64(), keys.dataKey);
  const actions = (await auditEntries(w.kv, w.tenant.account.id)).map((e) => e.action);
  assert.ok(
    actions.includes("keys.wrap") && actions.includes("kek.rotate") && actions.includes("keys.rewrap"),
  );
  assert.equal(actions.filter((a) => a === "kek.unwrap").length, 2, "the rotation's unwrap and this one");
  // The account copy is untouched: deliveries go on working.
  const [next] = await (async () => {
    await runPolicyNow(w.kv, system, w.policy.id, { kind: "incremental" }, w.clock.now());
    return await claim(w, w.agent);
  })();
  assert.equal(((await requestKeys(w, w.agent, next.id)).body as KeyReply).dataKey, keys.dataKey);
});

Deno.test("the account recovery key is created once: the private half is a one-time download, the key endpoint seals keys for it", async () => {
  await using w = await dataWorld();
  const admin = await addUser(w.kv, w.tenant, "admin@acme.example", "admin", "all", w.clock.now());
  const browser = new Browser(w.app);
  await signInAs(browser, w.kv, admin, w.clock.now());
  const page = await (await browser.get("/admin/recovery-key")).text();
  assert.match(page, /Create and download the recovery key/);

  const res = await browser.postForm("/admin/recovery-key", {}, { tokenFrom: "/admin/recovery-key" });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "application/x-pem-file");
  assert.equal(res.headers.get("cache-control"), "no-store");
  const stored = (await getRecoveryKey(w.kv, w.tenant.account.id))!;
  assert.equal(
    res.headers.get("content-disposition"),
    `attachment; filename="cadres-recovery-key-${stored.id}.pem"`,
  );
  const privatePem = await res.text();
  assert.equal(
    await recoveryKeyIdOfPrivate(privatePem),
    stored.id,
    "the download is the private half of the stored key",
  );
  assert.match(stored.publicPem, /^-----BEGIN PUBLIC KEY-----/);
  assert.ok(!(await kvText(w.kv)).includes(privatePem.split("\n")[1]), "the private half is not stored");
  assert.equal(
    (await auditEntries(w.kv, w.tenant.account.id)).filter((e) => e.action === "account.recovery_key.create")
      .length,
    1,
  );

  // Once: a second POST is refused and changes nothing; the page shows the key's id, no button.
  const before = await kvSnapshot(w.kv);
  const second = await browser.postForm("/admin/recovery-key", {}, { tokenFrom: "/admin/recovery-key" });
  assert.equal(second.status, 409);
  const secondPage = await second.text();
  assert.ok(!secondPage.includes("BEGIN PRIVATE KEY"));
  assert.match(secondPage, /already created/);
  assert.equal(await kvSnapshot(w.kv), before);
  const shown = await (await browser.get("/admin/recovery-key")).text();
  assert.ok(shown.includes(stored.id), "the page names the key");
  assert.ok(!shown.includes("Create and download"), "and offers no second download");

  // The key endpoint now seals the namespace's keys for the recovery key; only the private half opens them.
  const job = await claimedBackup(w);
  const keys = (await requestKeys(w, w.agent, job.id)).body as KeyReply;
  assert.ok(keys.recovery);
  assert.equal(keys.recovery.keyId, stored.id);
  assert.equal(keys.recovery.algorithm, "rsa-oaep-3072-sha256+aes-256-gcm");
  assert.equal(
    keys.recovery.additionalData,
    `cadres-recovery-keys-v1\u0000cadres/${w.policy.id}/g1\u0000${w.agent.id}`,
  );
  const opened = JSON.parse(
    new TextDecoder().decode(
      await openWithRecovery(privatePem, {
        encryptedKey: Uint8Array.fromBase64(keys.recovery.encryptedKey),
        nonce: Uint8Array.fromBase64(keys.recovery.nonce),
        ciphertext: Uint8Array.fromBase64(keys.recovery.ciphertext),
      }, new TextEncoder().encode(keys.recovery.additionalData)),
    ),
  );
  assert.deepEqual(opened, {
    version: 1,
    repository: `cadres/${w.policy.id}/g1`,
    namespace: w.agent.id,
    dataKey: keys.dataKey,
    idKey: keys.idKey,
  });
  // An admin of one organization only cannot create it (an account-level change).
  using kv2 = await Deno.openKv(":memory:");
  const t2 = testApp(kv2);
  const tenant2 = await createTenant(kv2, "Other", ["A", "B"], new Date());
  const scoped = await addUser(kv2, tenant2, "a-admin@other.example", "admin", [tenant2.orgs[0]], new Date());
  const b2 = new Browser(t2.app);
  await signInAs(b2, kv2, scoped, new Date());
  const denied = await b2.postForm("/admin/recovery-key", {}, { tokenFrom: "/admin/recovery-key" });
  assert.equal(denied.status, 403);
  assert.equal(await getRecoveryKey(kv2, tenant2.account.id), null);
});

Deno.test("setup ends signed in on the first-run page, which offers the recovery key download once", async () => {
  using kv = await Deno.openKv(":memory:");
  const { app } = testApp(kv);
  const token = (await issueSetupToken(kv, new Date()))!;
  const browser = new Browser(app);
  const res = await browser.postForm("/setup", {
    token,
    accountName: "Acme",
    orgName: "Ops",
    name: "First Admin",
    email: "first@acme.example",
    password: "a long enough password",
  }, { tokenFrom: `/setup?token=${token}` });
  assert.equal(res.status, 200);
  const page = await res.text();
  assert.match(page, /Create and download the recovery key/);
  // The form carries the new session's CSRF token: the download works from this very page.
  const csrf = /action="\/admin\/recovery-key"[^]*?name="_csrf" value="([^"]+)"/.exec(page)![1];
  const download = await browser.postForm("/admin/recovery-key", {}, { csrf });
  assert.equal(download.status, 200);
  assert.match(await download.text(), /^-----BEGIN PRIVATE KEY-----/);
  const again = await browser.postForm("/admin/recovery-key", {}, { csrf });
  assert.equal(again.status, 409, "the private half downloads exactly once");
  assert.doesNotMatch(await again.text(), /PRIVATE KEY-----/);
  const later = await (await browser.get("/backup/getting-started")).text();
  assert.doesNotMatch(later, /Create and download the recovery key/, "the first-run page now names the key");
});
