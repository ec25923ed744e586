/**
 * The BES program's data API, wired (ENGINE.md §5): on start it keeps a TLS certificate in its data folder,
 * serves the data API over HTTPS on --listen, registers its data URL and certificate, verifies data tokens
 * with the registration reply's key and resolves their repositories to its own targets. An agent's backup
 * runs through it, pinned to exactly that certificate, with the token the control plane issued for the job;
 * a token signed by another key is refused. A renewed certificate is served at once and reported by the next
 * heartbeat.
 */
import assert from "node:assert/strict";
import nodeCrypto, { X509Certificate } from "node:crypto";
import { handOutJob } from "../../domain/data_access.ts";
import { applyResult, claimJobs, enqueueJob, getJob } from "../../domain/job_queue.ts";
import { requestBmr } from "../../domain/bmr.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { runPolicyNow } from "../../domain/run_now.ts";
import { backupImage, restoreImage } from "../../engine/repo/image.ts";
import { deliverJobKeys } from "../../domain/namespace_keys.ts";
import { createPolicy } from "../../domain/policies.ts";
import { createTarget } from "../../domain/storage.ts";
import { assignHost } from "../../domain/assignments.ts";
import { enrollHost } from "../../domain/hosts.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { startBes } from "../../engine/bes/bes.ts";
import { parseBesArgs } from "../../engine/bes/config.ts";
import { createLogger } from "../../engine/bes/log.ts";
import { defaultCertificateNames } from "../../engine/bes/tls.ts";
import { RemoteBackend } from "../../engine/protocol/remote_backend.ts";
import { type DataTokenClaims, signDataToken } from "../../engine/protocol/token.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { namespaceKeysOpener } from "../../engine/repo/keys.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { deterministicBytes } from "../engine/helpers.ts";
import { targetInput } from "../helpers.ts";
import {
  config,
  controlPlane,
  engineNamed,
  finished,
  onlineBes,
  SMALL,
  system,
  waitFor,
} from "./bes_world.ts";

/** The claims of a token, read without checking it (the test knows where it came from). */
function claimsOf(token: string): DataTokenClaims {
  return JSON.parse(
    new TextDecoder().decode(Uint8Array.fromBase64(token.split(".")[1], { alphabet: "base64url" })),
  );
}

/**
 * A Local target of BES `besId` in `${cp.dir}/target`, a daily policy on it named `policy` of `backupType`,
 * and an enrolled host (Debian, `hostname`, `ipAddress`) assigned to it.
 */
async function assignedHost(
  cp: { kv: Deno.Kv; dir: string; scope: { accountId: string; orgId: string } },
  besId: string,
  o: { policy: string; backupType: "file" | "image"; hostname: string; ipAddress: string },
) {
  const targetDir = `${cp.dir}/target`;
  await Deno.mkdir(targetDir);
  const now = () => new Date();
  const target = await createTarget(
    cp.kv,
    system,
    targetInput(besId, "local", { config: { path: targetDir } }),
    { now: now(), masterKey: config.masterKey! },
  );
  const policy = await createPolicy(cp.kv, system, {
    name: o.policy,
    besId,
    targetId: target.id,
    backupType: o.backupType,
    fullSchedule: "0 2 * * *",
  }, now());
  const { host } = await enrollHost(cp.kv, cp.scope, {
    hostname: o.hostname,
    os: "Debian 12",
    ipAddress: o.ipAddress,
    publicKey: generateKeyPair().publicKey,
    version: "1",
  }, now());
  await assignHost(cp.kv, system, { policyId: policy.id, hostId: host.id }, now());
  return { targetDir, target, policy, host };
}

Deno.test({
  name:
    "BES subprocess over HTTPS: registers its data URL and certificate; an agent's backup goes through the data API pinned to that certificate with the control plane's token; a token signed by another key is refused",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using cp = await controlPlane();
    const data = `${cp.dir}/bes`;
    await using bes = await onlineBes(cp, { data, name: "bes-tls", tls: true });
    const engine = bes.engine;
    const pem = await Deno.readTextFile(`${data}/tls/cert.pem`);
    assert.match(engine.dataUrl!, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(engine.certificate, pem);
    assert.equal((await Deno.stat(`${data}/tls/key.pem`)).mode! & 0o777, 0o600);
    const cert = new X509Certificate(pem);
    assert.equal(cert.ca, false);
    assert.ok(cert.checkIP("127.0.0.1"));
    assert.equal(engine.certificateSha256, cert.fingerprint256.replaceAll(":", "").toLowerCase());

    // A policy on a Local target of this BES, a host assigned; the agent's backup job as handed out.
    const now = () => new Date();
    const { targetDir, target, policy, host } = await assignedHost(cp, engine.id, {
      policy: "daily",
      backupType: "file",
      hostname: "h.acme.example",
      ipAddress: "10.0.0.9",
    });
    const repository = { target: target.id, path: `cadres/${policy.id}/g1`, generation: 1 };
    const principal = `agent:${host.id}`;
    await enqueueJob(cp.kv, {
      kind: "backup",
      principal,
      accountId: cp.scope.accountId,
      orgId: cp.scope.orgId,
      payload: {
        policyId: policy.id,
        hostId: host.id,
        runKind: "full",
        repository,
        bes: { id: engine.id },
      },
    }, now());
    const [job] = await claimJobs(cp.kv, principal, 1, now());
    const handed = await handOutJob(cp.kv, config.masterKey!, job, principal, now());
    const bes0 = handed.payload.bes as { dataUrl: string; certificate: string };
    assert.deepEqual([bes0.dataUrl, bes0.certificate], [engine.dataUrl, pem]);
    const token = handed.dataToken!;
    assert.deepEqual(claimsOf(token).repository, repository);
    assert.equal(claimsOf(token).access, "write");

    // The repository, made with the keys the control plane hands the agent (creating one through the data
    // API is the agent's first step, its own change); then the backup through the BES.
    const delivered = await deliverJobKeys(cp.kv, config.masterKey!, principal, job.id, null, now());
    const keys = { namespace: delivered.namespace, dataKey: delivered.dataKey, idKey: delivered.idKey };
    const folder = `${targetDir}/${repository.path}`;
    await Repository.init(new LocalBackend(folder), namespaceKeysOpener(keys), {
      namespace: host.id,
      ...SMALL,
    });
    const src = `${cp.dir}/src`;
    await Deno.mkdir(`${src}/sub`, { recursive: true });
    await Deno.writeFile(`${src}/a.bin`, deterministicBytes("a", 150_000));
    await Deno.writeFile(`${src}/sub/b.txt`, new TextEncoder().encode("hello over https"));
    const remote = new RemoteBackend({ url: engine.dataUrl!, token: () => token, caCert: pem });
    let snapshotId: string;
    try {
      const repo = await Repository.openNamespace(remote, keys);
      snapshotId = (await backupFiles(repo.namespace(host.id), { paths: [src] })).snapshotId;
    } finally {
      remote.close();
    }
    // It landed in the target folder; restored from there, byte-identical.
    assert.ok(await new LocalBackend(folder).exists(`snapshots/${snapshotId}`));
    const local = await Repository.open(new LocalBackend(folder), namespaceKeysOpener(keys));
    const out = `${cp.dir}/restored`;
    await restoreSnapshot(local.namespace(host.id), snapshotId, { target: out });
    assert.deepEqual(await Deno.readFile(`${out}${src}/a.bin`), deterministicBytes("a", 150_000));
    assert.equal(await Deno.readTextFile(`${out}${src}/sub/b.txt`), "hello over https");

    // Tokens are checked with the control plane's key: the same claims signed by another key are refused.
    const client = Deno.createHttpClient({ caCerts: [pem] });
    try {
      const list = (t: string) =>
        fetch(`${engine.dataUrl}/api/data/v1/objects?prefix=snapshots/`, {
          client,
          headers: { authorization: `Bearer ${t}` },
        });
      const ok = await list(token);
      assert.equal(ok.status, 200);
      assert.deepEqual(
        ((await ok.json()).objects as { name: string }[]).map((o) => o.name),
        [`snapshots/${snapshotId}`],
      );
      const forged = signDataToken(nodeCrypto.generateKeyPairSync("ed25519").privateKey, claimsOf(token));
      const refused = await list(forged);
      assert.equal(refused.status, 401);
      assert.equal((await refused.json()).error.code, "token_invalid");
      const none = await list("");
      assert.equal(none.status, 401);
      await none.body?.cancel();
    } finally {
      client.close();
    }
    // Without pinning its certificate, the BES is not trusted.
    await assert.rejects(fetch(`${engine.dataUrl}/healthz`));
    assert.ok(!bes.output.includes(token), "no token in the BES's log");
  },
});

Deno.test({
  name:
    "BES certificate renewal: a certificate that no longer names the machine is renewed, served at once on the same port and reported by the next heartbeat",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using cp = await controlPlane();
    const extra: string[] = [];
    const lines: string[] = [];
    const bes = await startBes(
      parseBesArgs([
        "--control-plane",
        cp.url,
        "--secret",
        cp.tenant.secrets[0],
        "--data",
        `${cp.dir}/bes`,
        "--listen",
        "127.0.0.1:0",
        "--name",
        "bes-renew",
        "--heartbeat-seconds",
        "3600",
        "--poll-seconds",
        "60",
      ]),
      {
        certificateNames: () => {
          const names = defaultCertificateNames();
          return { ...names, dnsNames: [...names.dnsNames, ...extra] };
        },
        certificateCheckMs: 100,
        logger: createLogger("info", (l) => lines.push(l)),
      },
    );
    try {
      const first = bes.certificate!;
      const engine = await engineNamed(cp.kv, "bes-renew");
      assert.equal(engine?.certificate, first);
      assert.equal(engine?.dataUrl, bes.dataUrl);
      const health = async (pem: string) => {
        const client = Deno.createHttpClient({ caCerts: [pem] });
        try {
          const res = await fetch(`${bes.dataUrl}/healthz`, { client });
          return (await res.json()).status;
        } finally {
          client.close();
        }
      };
      assert.equal(await health(first), "ok");
      // The machine gains a name: the certificate must carry it, so it is renewed.
      extra.push("renewed.bes.test");
      const renewed = await waitFor("the renewed certificate reported", async () => {
        const e = await engineNamed(cp.kv, "bes-renew");
        return e?.certificate && e.certificate !== first ? e : null;
      });
      assert.equal(renewed.certificate, bes.certificate);
      assert.equal(renewed.certificate, await Deno.readTextFile(`${cp.dir}/bes/tls/cert.pem`));
      assert.ok(new X509Certificate(renewed.certificate!).checkHost("renewed.bes.test"));
      assert.equal(renewed.dataUrl, bes.dataUrl, "same data URL, same port");
      assert.equal(await health(renewed.certificate!), "ok");
      await assert.rejects(health(first), "the old certificate is no longer served");
      assert.ok(lines.some((l) => l.includes("renewed the data API certificate")));
      assert.ok(lines.some((l) => l.includes("reported the renewed certificate")));
    } finally {
      await bes.stop();
    }
  },
});

Deno.test({
  name:
    "BES bare-metal restore: the bmr job waits for the machine; the recovery agent redeems the one-time token over HTTPS (once), gets a read token and the keys, writes the image to a disk file byte-identical and reports; the restore completes with the command in its result",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using cp = await controlPlane();
    const data = `${cp.dir}/bes`;
    await using bes = await onlineBes(cp, { data, name: "bes-bmr", tls: true });
    const engine = bes.engine;
    const pem = engine.certificate!;
    const now = () => new Date();
    const { targetDir, policy, host } = await assignedHost(cp, engine.id, {
      policy: "disk",
      backupType: "image",
      hostname: "metal.acme.example",
      ipAddress: "10.0.0.7",
    });
    // The image backup, as the agent makes it: its run's job, the control plane's keys, engine/repo.
    assert.equal((await runPolicyNow(cp.kv, system, policy.id, { kind: "full" }, now())).length, 1);
    const principal = `agent:${host.id}`;
    const [job] = await claimJobs(cp.kv, principal, 1, now());
    const repository = job.payload.repository as { path: string };
    const delivered = await deliverJobKeys(cp.kv, config.masterKey!, principal, job.id, null, now());
    const keys = { namespace: delivered.namespace, dataKey: delivered.dataKey, idKey: delivered.idKey };
    const repo = await Repository.init(
      new LocalBackend(`${targetDir}/${repository.path}`),
      namespaceKeysOpener(keys),
      {
        namespace: host.id,
        ...SMALL,
      },
    );
    const image = new Uint8Array(3 * 1024 * 1024);
    image.set(deterministicBytes("boot", 200_000), 0);
    image.set(deterministicBytes("root", 500_000), 2 * 1024 * 1024);
    await Deno.writeFile(`${cp.dir}/disk.img`, image);
    const backedUp = await backupImage(repo.namespace(host.id), { path: `${cp.dir}/disk.img` });
    const at = now();
    const { job: done } = await applyResult(cp.kv, principal, job.id, {
      status: "success",
      startedAt: at.toISOString(),
      endedAt: at.toISOString(),
      bytesTransferred: image.length,
      protectedBytes: image.length,
      output: {
        restorePoint: {
          id: backedUp.snapshotId,
          chainId: backedUp.snapshotId,
          type: "full",
          parentId: null,
          sizeBytes: image.length,
          fileCount: 1,
          completedAt: at.toISOString(),
        },
      },
    }, at);
    await applyJobOutcome(cp.kv, done, at);
    const point = (await Array.fromAsync(cp.kv.list<RestorePoint>({ prefix: ["restore_points"] })))[0].value;

    // The operator starts the bare-metal restore: a one-time token, a bmr job for the BES.
    const started = await requestBmr(cp.kv, system, { restorePointId: point.id, mode: "iso" }, now());
    await waitFor(
      "the bmr job to run",
      async () => {
        const j = await getJob(cp.kv, started.restore.jobId!);
        return j?.status === "leased" && j.progress?.message?.startsWith("Waiting for the machine")
          ? j
          : null;
      },
      30_000,
      bes,
    );

    // The recovery agent, in the live environment: pins the BES's certificate, redeems the token.
    const client = Deno.createHttpClient({ caCerts: [pem] });
    const call = async (path: string, body: unknown, bearer?: string) => {
      const res = await fetch(`${engine.dataUrl}${path}`, {
        method: "POST",
        client,
        headers: {
          "content-type": "application/json",
          ...(bearer ? { authorization: `Bearer ${bearer}` } : {}),
        },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() };
    };
    try {
      const wrong = await call("/api/bmr/v1/redeem", { token: crypto.randomUUID() });
      assert.equal(wrong.status, 404);
      const redeemed = await call("/api/bmr/v1/redeem", { token: started.token });
      assert.equal(redeemed.status, 200, JSON.stringify(redeemed.body));
      const r = redeemed.body as {
        snapshot: string;
        namespace: string;
        dataKey: string;
        idKey: string;
        readToken: string;
        session: string;
      };
      assert.equal(r.snapshot, backedUp.snapshotId);
      assert.equal(r.namespace, host.id);
      assert.equal(claimsOf(r.readToken).access, "read");
      // Once only.
      assert.equal((await call("/api/bmr/v1/redeem", { token: started.token })).status, 404);

      let readToken = r.readToken;
      const remote = new RemoteBackend({ url: engine.dataUrl!, token: () => readToken, caCert: pem });
      try {
        const opened = await Repository.openNamespace(remote, {
          namespace: r.namespace,
          dataKey: Uint8Array.fromBase64(r.dataKey),
          idKey: Uint8Array.fromBase64(r.idKey),
        });
        // A read token writes nothing.
        await assert.rejects(remote.put(`refs/${"0".repeat(64)}`, new Uint8Array(1)), /read_only/);
        const restored = await restoreImage(opened.namespace(r.namespace), r.snapshot, {
          target: `${cp.dir}/new-disk.img`,
        });
        assert.deepEqual(restored.errors, []);
        const renewed = await call(
          "/api/bmr/v1/renew",
          { percent: 90, bytesWritten: image.length },
          r.session,
        );
        assert.equal(renewed.status, 200);
        readToken = renewed.body.readToken;
      } finally {
        remote.close();
      }
      assert.deepEqual(await Deno.readFile(`${cp.dir}/new-disk.img`), image);
      assert.equal((await call("/api/bmr/v1/renew", {}, "not-a-session")).status, 401);
      const reported = await call(
        "/api/bmr/v1/done",
        { status: "success", files: 1, bytes: image.length },
        r.session,
      );
      assert.equal(reported.status, 200);
    } finally {
      client.close();
    }
    const result = await finished(cp.kv, started.restore.jobId!);
    assert.equal(result.result?.status, "success", JSON.stringify(result.result));
    const bmr = result.result!.output!.bmr as { instructions: string; command: string };
    assert.equal(bmr.instructions, "Boot any live environment and run the recovery agent");
    assert.equal(
      bmr.command,
      `deno task agent recover --bes ${engine.dataUrl} --bes-cert FILE --token TOKEN --disk PATH`,
    );
    const restore = await waitFor("the restore to complete", async () => {
      const v = (await cp.kv.get<{ status: string; result: unknown; tokenUsedAt: string | null }>([
        "restores",
        started.restore.id,
      ])).value;
      return v && v.status !== "pending" && v.status !== "running" ? v : null;
    });
    assert.equal(restore.status, "success", JSON.stringify(restore));
    assert.deepEqual(restore.result, { files: 1, bytes: image.length, errors: [], errorCount: 0 });
    assert.ok(restore.tokenUsedAt, "the control plane recorded the redemption");
    assert.ok(!bes.output.includes(started.token), "the one-time token is not logged");
    assert.ok(!bes.output.includes(delivered.dataKey.toBase64()), "no key in the BES's log");
  },
});
