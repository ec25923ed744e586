/**
 * Issue 16 item 3, keys and tokens (ENGINE.md §5): the control plane's token-signing key (created once,
 * sealed in the vault, its public half in the registration reply), the BES data URL and certificate
 * (signed registration, heartbeat renewal, refusals), job payloads carrying them, and job-scoped data
 * tokens on claims and on every progress reply — scoped, renewed, and withheld from jobs that ended,
 * were cancelled or are not the caller's.
 */
import assert from "node:assert/strict";
import nodeCrypto from "node:crypto";
import { importTokenPublicKey, verifyDataToken } from "../../engine/protocol/token.ts";
import { jobRepository } from "../../domain/data_access.ts";
import { repositoryOf } from "../../domain/repositories.ts";
import { getEngine } from "../../domain/engines.ts";
import { cancelJob, enqueueJob } from "../../domain/job_queue.ts";
import { createReplica } from "../../domain/replicas.ts";
import { requestBrowse } from "../../domain/restore_browse.ts";
import { requestFileRestore } from "../../domain/restore_requests.ts";
import { createTarget } from "../../domain/storage.ts";
import { TOKEN_KEY_VAULT_ID, tokenSigningKey } from "../../domain/token_signing.ts";
import { vaultKey, type VaultRecord } from "../../domain/vault.ts";
import { BES_CERT, CA_CERT, OTHER_HOST_CERT, RENEWED_CERT } from "../fixtures/certificates.ts";
import { addUser, Browser, dumpKv, engineMetrics, signInAs, targetInput, testApp } from "../helpers.ts";
import { ValidationError } from "../../domain/errors.ts";
import {
  call,
  claim,
  claimedBackup,
  DATA_URL,
  dataWorld,
  finishBackup,
  MASTER_KEY,
  registerBesWithDataApi,
  system,
} from "./data_access_fixture.ts";

function claimsOf(w: { tokenPublicKey: string }, token: string | null, now: Date) {
  assert.ok(token, "a token was issued");
  return verifyDataToken(importTokenPublicKey(w.tokenPublicKey), token, now);
}

Deno.test("the token-signing key is created once, sealed in the vault, and its public half is in every registration reply", async () => {
  await using w = await dataWorld();
  const again = await registerBesWithDataApi(w.client, w.tenant.secrets[0], {}, "bes-2");
  assert.equal(again.status, 201);
  assert.equal(again.body.tokenPublicKey, w.tokenPublicKey, "one key for the whole control plane");
  const record = (await w.kv.get<VaultRecord>(vaultKey(TOKEN_KEY_VAULT_ID))).value!;
  assert.equal(record.purpose, "token_signing_key");
  const { privateKey, publicKey } = await tokenSigningKey(w.kv, MASTER_KEY, w.clock.now());
  assert.equal(publicKey, w.tokenPublicKey);
  // The private seed (last 32 bytes of the PKCS#8 DER) appears nowhere in clear: not in KV, not in logs.
  const seed = new Uint8Array(privateKey.export({ format: "der", type: "pkcs8" })).slice(-32);
  const forms = [seed.toBase64(), seed.toBase64({ alphabet: "base64url" }).replace(/=+$/, ""), seed.toHex()];
  const kvText = JSON.stringify(await dumpKv(w.kv), (_k, v) => typeof v === "bigint" ? String(v) : v);
  for (const form of forms) {
    assert.ok(!kvText.includes(form.slice(0, 40)), "the signing key is not in KV in clear");
    assert.ok(!w.logs.join("\n").includes(form.slice(0, 40)), "the signing key is not logged");
  }
  // Two first uses racing on a fresh database create one key.
  using fresh = await Deno.openKv(":memory:");
  const keys = await Promise.all(
    Array.from({ length: 8 }, (_, i) => tokenSigningKey(fresh, new Uint8Array(MASTER_KEY), new Date(i))),
  );
  assert.equal(new Set(keys.map((k) => k.publicKey)).size, 1);
});

Deno.test("a BES reports its data URL and certificate in its signed registration and renews the certificate by heartbeat", async () => {
  await using w = await dataWorld();
  const engine = (await getEngine(w.kv, w.bes.id))!;
  assert.equal(engine.dataUrl, DATA_URL);
  assert.equal(engine.certificate, BES_CERT);
  assert.match(engine.certificateSha256 ?? "", /^[0-9a-f]{64}$/);
  assert.ok(Date.parse(engine.certificateExpiresAt!) > w.clock.now().getTime());

  const beat = (certificate: string) =>
    w.client.post(w.bes, "/api/bes/v1/heartbeat", {
      version: "1.0.0",
      metrics: engineMetrics(),
      certificate,
    });
  assert.equal((await beat(RENEWED_CERT)).status, 200);
  const renewed = (await getEngine(w.kv, w.bes.id))!;
  assert.equal(renewed.certificate, RENEWED_CERT);
  assert.notEqual(renewed.certificateSha256, engine.certificateSha256);
  assert.equal(renewed.dataUrl, DATA_URL, "a heartbeat never moves the data URL");

  for (
    const [pem, pattern] of [[CA_CERT, /CA:FALSE/], [OTHER_HOST_CERT, /does not name bes-1\.acme\.example/]]
  ) {
    const res = await beat(pem as string);
    assert.equal(res.status, 422);
    assert.match((await res.json()).error.fields.certificate, pattern as RegExp);
  }
  assert.equal(
    (await getEngine(w.kv, w.bes.id))!.certificate,
    RENEWED_CERT,
    "a refused renewal changes nothing",
  );

  // The engine's page shows the data URL and the certificate's fingerprint, to compare with the BES's.
  const viewer = await addUser(w.kv, w.tenant, "viewer@acme.example", "viewer", "all", w.clock.now());
  const browser = new Browser(w.app);
  await signInAs(browser, w.kv, viewer, w.clock.now());
  const page = await (await browser.get(`/backup/engines/${w.bes.id}`)).text();
  assert.ok(page.includes(DATA_URL), "the data URL is shown");
  assert.ok(page.includes(renewed.certificateSha256!), "the certificate's SHA-256 is shown");
  assert.ok(!page.includes("BEGIN CERTIFICATE"), "the PEM itself is not needed on the page");
});

Deno.test("registrations with a bad data URL or certificate are refused with 422 naming the field, and change nothing", async () => {
  await using w = await dataWorld();
  const secret = w.tenant.secrets[0];
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{ dataUrl: DATA_URL, certificate: CA_CERT }, "certificate", /CA:FALSE/],
    [{ dataUrl: DATA_URL, certificate: OTHER_HOST_CERT }, "certificate", /does not name/],
    [{ dataUrl: DATA_URL }, "certificate", /required with an https/],
    [{ dataUrl: "http://10.0.0.10:8080", certificate: BES_CERT }, "dataUrl", /loopback/],
    [
      { dataUrl: DATA_URL, certificate: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n" },
      "certificate",
      /readable/,
    ],
    [{ dataUrl: DATA_URL, certificate: "not a pem" }, "certificate", /PEM/],
    [{ certificate: BES_CERT }, "dataUrl", /required/],
  ];
  for (const [fields, field, pattern] of cases) {
    const before = (await dumpKv(w.kv)).filter((e) => e.key[0] !== "registration_failures").length;
    const res = await registerBesWithDataApi(w.client, secret, fields, "bes-bad");
    assert.equal(res.status, 422, JSON.stringify(fields));
    assert.match(res.body.error.fields[field], pattern, JSON.stringify(res.body));
    assert.equal((await dumpKv(w.kv)).filter((e) => e.key[0] !== "registration_failures").length, before);
  }
  // Plain HTTP on loopback (the BES's --insecure-http for tests) needs no certificate.
  const loopback = await registerBesWithDataApi(
    w.client,
    secret,
    { dataUrl: "http://127.0.0.1:9443" },
    "bes-lo",
  );
  assert.equal(loopback.status, 201);
  assert.equal((await getEngine(w.kv, loopback.identity.id))!.certificate, null);
  // An expired certificate: the same one, twenty years on.
  w.clock.advance(20 * 365 * 86_400_000);
  const expired = await registerBesWithDataApi(
    w.client,
    secret,
    { dataUrl: DATA_URL, certificate: BES_CERT },
    "bes-old",
  );
  assert.equal(expired.status, 422);
  assert.match(expired.body.error.fields.certificate, /expired/);
});

Deno.test("an agent's claimed backup carries its BES's data URL and certificate and a write token scoped to the job", async () => {
  await using w = await dataWorld();
  const job = await claimedBackup(w);
  const bes = job.payload.bes as Record<string, unknown>;
  assert.equal(bes.id, w.bes.id);
  assert.equal(bes.dataUrl, DATA_URL);
  assert.equal(bes.certificate, BES_CERT);
  const now = w.clock.now();
  const claims = claimsOf(w, job.dataToken, now);
  assert.deepEqual(claims, {
    v: 1,
    job: job.id,
    host: w.agent.id,
    bes: w.bes.id,
    repository: { target: w.target.id, path: `cadres/${w.policy.id}/g1`, generation: 1 },
    namespace: w.agent.id,
    access: "write",
    iat: Math.floor(now.getTime() / 1000),
    exp: Math.floor(now.getTime() / 1000) + 300,
  });
  assert.equal(job.dataTokenExpiresAt, new Date(claims.exp * 1000).toISOString());
  assert.equal(job.replicaDataToken, null);
  assert.deepEqual(repositoryOf(w.policy), claims.repository, "one function decides the repository");
  // Nothing about tokens or certificates is stored with the job.
  const stored = JSON.stringify((await w.kv.get(["jobs", job.id])).value);
  assert.ok(!stored.includes(job.dataToken!) && !stored.includes("BEGIN CERTIFICATE"));
  // A token of another control plane's key does not verify against this one.
  const other = nodeCrypto.generateKeyPairSync("ed25519").publicKey;
  assert.throws(() => verifyDataToken(other, job.dataToken!, now), /not signed/);
});

Deno.test("every progress reply carries a fresh token; a cancelled or finished job, or another principal, gets none", async () => {
  await using w = await dataWorld();
  const job = await claimedBackup(w);
  const progress = (who = w.agent) =>
    call(w, who, `/api/${who.kind}/v1/jobs/${job.id}/progress`, {
      percent: 10,
      bytesTransferred: 1,
      message: "",
    });
  let last = claimsOf(w, job.dataToken, w.clock.now());
  let lastToken = job.dataToken;
  for (let i = 0; i < 5; i++) {
    w.clock.advance(4 * 60_000); // the previous token has a minute left; the lease too
    const res = await progress();
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.cancel, false);
    assert.notEqual(res.body.dataToken, lastToken);
    const claims = claimsOf(w, res.body.dataToken, w.clock.now());
    assert.equal(claims.iat, Math.floor(w.clock.now().getTime() / 1000));
    assert.ok(claims.exp > last.exp);
    assert.deepEqual({ ...claims, iat: 0, exp: 0 }, { ...last, iat: 0, exp: 0 }, "same scope, later expiry");
    last = claims;
    lastToken = res.body.dataToken;
  }
  // A token is useless after its five minutes.
  assert.throws(
    () =>
      verifyDataToken(
        importTokenPublicKey(w.tokenPublicKey),
        lastToken!,
        new Date(w.clock.now().getTime() + 301_000),
      ),
    /expired/,
  );
  // Another agent, and the BES, cannot renew a token for this job.
  assert.equal((await progress(w.otherAgent)).status, 404);
  assert.equal(
    (await call(w, w.bes, `/api/bes/v1/jobs/${job.id}/progress`, { percent: 1, bytesTransferred: 1 })).status,
    404,
  );
  // Cancelled: the reply says cancel and carries no token.
  await cancelJob(w.kv, job.id, w.clock.now());
  const cancelled = await progress();
  assert.equal(cancelled.status, 200);
  assert.equal(cancelled.body.cancel, true);
  assert.equal(cancelled.body.dataToken, null);
  assert.equal(cancelled.body.replicaDataToken, null);
  // Finished: progress is refused, so no token.
  await finishBackup(w, job.id);
  const after = await progress();
  assert.equal(after.status, 409);
  assert.equal(after.body.dataToken, undefined);
});

Deno.test("restores, browse and verify get read tokens for the point's host namespace; prune gets none", async () => {
  await using w = await dataWorld();
  const backup = await claimedBackup(w);
  const pointId = await finishBackup(w, backup.id);
  // A file restore onto the other host reads the first host's namespace.
  await requestFileRestore(w.kv, system, {
    restorePointId: pointId,
    paths: ["/etc/hosts"],
    targetHostId: w.otherAgent.id,
    targetPath: "/restore",
  }, w.clock.now());
  const [restore] = await claim(w, w.otherAgent);
  assert.equal(restore.kind, "restore_files");
  assert.equal((restore.payload.bes as Record<string, unknown>).certificate, BES_CERT);
  const read = claimsOf(w, restore.dataToken, w.clock.now());
  assert.equal(read.access, "read");
  assert.equal(read.namespace, w.agent.id, "the source host's namespace, not the restoring host's");
  assert.equal(read.host, w.agent.id);
  assert.equal(read.bes, w.bes.id);
  assert.equal(read.job, restore.id);
  assert.deepEqual(read.repository, { target: w.target.id, path: `cadres/${w.policy.id}/g1`, generation: 1 });

  await requestBrowse(w.kv, system, pointId, "/", w.clock.now());
  const besJobs = await claim(w, w.bes);
  const browse = besJobs.find((j) => j.kind === "browse")!;
  assert.equal(claimsOf(w, browse.dataToken, w.clock.now()).access, "read");
  assert.ok(
    !("certificate" in (browse.payload as Record<string, unknown>)),
    "a BES's own jobs need no pinning",
  );
  // Verify follows backups whose policy verifies after backup; a prune job touches no namespace's data.
  await enqueueJob(w.kv, {
    kind: "prune",
    principal: `bes:${w.bes.id}`,
    accountId: w.tenant.account.id,
    orgId: w.tenant.orgs[0].id,
    payload: { policyId: w.policy.id, targetId: w.target.id, restorePointIds: ["rp-1"] },
  }, w.clock.now());
  const verifyJob = await enqueueJob(w.kv, {
    kind: "verify",
    principal: `bes:${w.bes.id}`,
    accountId: w.tenant.account.id,
    orgId: w.tenant.orgs[0].id,
    payload: { restorePointId: pointId, policyId: w.policy.id, sampleCount: 3 },
  }, w.clock.now());
  const more = await claim(w, w.bes);
  assert.equal(more.find((j) => j.kind === "prune")!.dataToken, null);
  assert.equal(claimsOf(w, more.find((j) => j.id === verifyJob.id)!.dataToken, w.clock.now()).access, "read");
});

Deno.test("replicating to a target on another BES: the source BES gets a write token for the replica's BES and its certificate", async () => {
  await using w = await dataWorld();
  const second = await registerBesWithDataApi(w.client, w.tenant.secrets[0], {
    dataUrl: "https://10.0.0.10:9443",
    certificate: RENEWED_CERT,
  }, "bes-2");
  assert.equal(second.status, 201);
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
  await finishBackup(w, backup.id);
  const [replicate] = (await claim(w, w.bes)).filter((j) => j.kind === "replicate");
  assert.ok(replicate, "the backup queued a replicate job on the source BES");
  const target = replicate.payload.target as { bes: Record<string, unknown> };
  assert.deepEqual(target.bes, {
    id: second.identity.id,
    dataUrl: "https://10.0.0.10:9443",
    certificate: RENEWED_CERT,
  });
  const source = claimsOf(w, replicate.dataToken, w.clock.now());
  assert.equal(source.access, "read");
  assert.equal(source.bes, w.bes.id);
  const replica = claimsOf(w, replicate.replicaDataToken, w.clock.now());
  assert.equal(replica.access, "write");
  assert.equal(replica.bes, second.identity.id);
  assert.equal(replica.namespace, w.agent.id);
  assert.deepEqual(replica.repository, {
    target: replicaTarget.id,
    path: `cadres/${w.policy.id}/g1`,
    generation: 1,
  });
  // Renewed with progress, like the primary token.
  w.clock.advance(60_000);
  const res = await call(w, w.bes, `/api/bes/v1/jobs/${replicate.id}/progress`, {
    percent: 5,
    bytesTransferred: 1,
  });
  assert.equal(res.status, 200);
  assert.equal(claimsOf(w, res.body.replicaDataToken, w.clock.now()).bes, second.identity.id);
});

Deno.test("the repository of a job: its payload's, else its restore point's, else the policy's current generation", () => {
  const policy = { id: "P", targetId: "T2", generation: 3 };
  const older = { target: "T1", path: "cadres/P/g2", generation: 2 };
  assert.deepEqual(repositoryOf(policy), { target: "T2", path: "cadres/P/g3", generation: 3 });
  assert.deepEqual(repositoryOf({ id: "P", targetId: "T" }), {
    target: "T",
    path: "cadres/P/g1",
    generation: 1,
  });
  assert.deepEqual(
    jobRepository({ repository: older }, null, policy),
    older,
    "a backup goes where it was sent",
  );
  assert.deepEqual(
    jobRepository({}, { repository: older }, policy),
    older,
    "a point stays where it was written",
  );
  assert.deepEqual(jobRepository({}, {}, policy), repositoryOf(policy), "points from before generations");
  assert.deepEqual(
    jobRepository({ repository: { target: "T", path: "x", generation: 0 } }, null, policy),
    repositoryOf(policy),
  );
  assert.equal(jobRepository({}, {}, null), null, "no policy, no recorded repository: unknown");
});

Deno.test("a backup job whose payload names an older generation gets a token for that repository", async () => {
  await using w = await dataWorld();
  const older = { target: w.target.id, path: `cadres/${w.policy.id}/g7`, generation: 7 };
  const job = await enqueueJob(w.kv, {
    kind: "backup",
    principal: `agent:${w.agent.id}`,
    accountId: w.tenant.account.id,
    orgId: w.tenant.orgs[0].id,
    payload: { policyId: w.policy.id, hostId: w.agent.id, bes: { id: w.bes.id }, repository: older },
  }, w.clock.now());
  const [claimed] = await claim(w, w.agent);
  assert.equal(claimed.id, job.id);
  assert.deepEqual(claimsOf(w, claimed.dataToken, w.clock.now()).repository, older);
});

Deno.test("a restore from a replica on another BES: that BES's data URL and certificate, a read token for the replica repository there, its keys; only once the replication succeeded", async () => {
  await using w = await dataWorld();
  const second = await registerBesWithDataApi(w.client, w.tenant.secrets[0], {
    dataUrl: "https://10.0.0.10:9443",
    certificate: RENEWED_CERT,
  }, "bes-2");
  assert.equal(second.status, 201);
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
  const pointId = await finishBackup(w, backup.id);
  const input = {
    restorePointId: pointId,
    paths: ["/etc"],
    targetHostId: w.otherAgent.id,
    targetPath: "/restore",
    sourceTargetId: replicaTarget.id,
  };
  // Not replicated yet: refused, naming the field, nothing queued.
  const before = await dumpKv(w.kv);
  const early = await requestFileRestore(w.kv, system, input, w.clock.now()).catch((e) => e);
  assert.ok(early instanceof ValidationError, String(early));
  assert.ok(early.fields.sourceTargetId, JSON.stringify(early.fields));
  assert.match(early.message, /has no finished replica on target/);
  assert.deepEqual(await dumpKv(w.kv), before, "a refusal changes nothing");

  const [replicate] = (await claim(w, w.bes)).filter((j) => j.kind === "replicate");
  const at = w.clock.now().toISOString();
  const done = await call(w, w.bes, `/api/bes/v1/jobs/${replicate.id}/result`, {
    status: "success",
    startedAt: at,
    endedAt: at,
    bytesTransferred: 10,
    protectedBytes: 10,
    output: { replication: { restorePointId: pointId, targetId: replicaTarget.id, bytes: 10 } },
  });
  assert.equal(done.status, 200, done.text);

  const restore = await requestFileRestore(w.kv, system, input, w.clock.now());
  assert.equal(restore.sourceTargetId, replicaTarget.id);
  const [job] = await claim(w, w.otherAgent);
  assert.equal(job.kind, "restore_files");
  assert.deepEqual(job.payload.bes, {
    id: second.identity.id,
    endpoint: (job.payload.bes as { endpoint: string }).endpoint,
    ipAddress: (job.payload.bes as { ipAddress: string }).ipAddress,
    dataUrl: "https://10.0.0.10:9443",
    certificate: RENEWED_CERT,
  }, "the agent pins the replica BES's certificate");
  const replicaRepo = { target: replicaTarget.id, path: `cadres/${w.policy.id}/g1`, generation: 1 };
  assert.deepEqual(job.payload.repository, replicaRepo);
  const token = claimsOf(w, job.dataToken, w.clock.now());
  assert.deepEqual(
    [token.access, token.bes, token.namespace, token.repository],
    ["read", second.identity.id, w.agent.id, replicaRepo],
  );
  // The keys: the same namespace's (a replica shares them), for the replica repository, opened with the
  // rule's KEK source (pam_vault: its unwrap is audited).
  const keys = await call(w, w.otherAgent, `/api/agent/v1/jobs/${job.id}/key`, {});
  assert.equal(keys.status, 200, keys.text);
  assert.deepEqual([keys.body.namespace, keys.body.repository], [w.agent.id, replicaRepo]);
  const audit = (await Array.fromAsync(w.kv.list<{ action: string; summary: string }>({ prefix: ["audit"] })))
    .map((e) => e.value).filter((e) => e?.action === "kek.unwrap");
  assert.ok(audit.some((e) => e.summary.includes(job.id)), "the vault unwrap is audited");
  // A primary restore of the same point still reads the point's own repository on its own BES.
  await requestFileRestore(w.kv, system, { ...input, sourceTargetId: undefined }, w.clock.now());
  const [primary] = await claim(w, w.otherAgent);
  const primaryToken = claimsOf(w, primary.dataToken, w.clock.now());
  assert.deepEqual([primaryToken.bes, primaryToken.repository.target], [w.bes.id, w.target.id]);

  // The restore page offers the replica as a source; the form restores from it and the request says so.
  const { app } = testApp(w.kv, w.clock);
  const browser = new Browser(app);
  const admin = await addUser(w.kv, w.tenant, "restorer@acme.example", "admin", "all", w.clock.now());
  await signInAs(browser, w.kv, admin, w.clock.now());
  const pagePath = `/backup/restore/points/${pointId}`;
  const page = await (await browser.get(pagePath)).text();
  assert.match(page, /<label for="f-sourceTargetId-files">Restore from<\/label>/);
  assert.match(
    page,
    new RegExp(
      `<option\\s+value="${replicaTarget.id}"\\s*>Replica on ${replicaTarget.name} — KEK: PAM vault`,
    ),
  );
  const posted = await browser.postForm(`${pagePath}/files`, {
    paths: "/etc",
    location: "other",
    targetHostId: w.otherAgent.id,
    targetPath: "/restore-2",
    sourceTargetId: replicaTarget.id,
  }, { tokenFrom: pagePath });
  assert.equal(posted.status, 303, await posted.text());
  const requestPage = await (await browser.get(posted.headers.get("location")!)).text();
  assert.match(requestPage, new RegExp(`data-testid="restore-source">\\s*replica on ${replicaTarget.name}`));
});
