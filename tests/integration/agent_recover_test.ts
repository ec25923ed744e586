/**
 * The recovery mode of the agent (`deno task agent recover`, engine/agent/recover.ts) end to end: the control
 * plane in-process, the BES as a subprocess over HTTPS, an image backup of a small disk image made with the
 * control plane's keys, a bare-metal restore requested in the control plane, and the recovery agent as a
 * subprocess writing onto a "disk" that is a plain file (a loop file): it ends byte-identical.
 */
import assert from "node:assert/strict";
import { deliverJobKeys } from "../../domain/namespace_keys.ts";
import { applyResult, claimJobs, getJob } from "../../domain/job_queue.ts";
import { requestBmr } from "../../domain/bmr.ts";
import { applyJobOutcome } from "../../domain/job_outcomes.ts";
import type { RestorePoint } from "../../domain/restore_points.ts";
import { runPolicyNow } from "../../domain/run_now.ts";
import { createPolicy } from "../../domain/policies.ts";
import { createTarget } from "../../domain/storage.ts";
import { assignHost } from "../../domain/assignments.ts";
import { enrollHost } from "../../domain/hosts.ts";
import { generateKeyPair } from "../../domain/signing.ts";
import { backupImage } from "../../engine/repo/image.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { namespaceKeysOpener } from "../../engine/repo/keys.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { deterministicBytes } from "../engine/helpers.ts";
import { REPO_ROOT, targetInput } from "../helpers.ts";
import {
  config,
  controlPlane,
  engineNamed,
  finished,
  SMALL,
  spawnBes,
  system,
  waitFor,
} from "./bes_world.ts";

/** Runs `deno task agent recover …` as a subprocess; its exit code and output. */
async function runRecover(args: string[]): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-all", `${REPO_ROOT}/engine/agent/main.ts`, "recover", ...args],
    cwd: REPO_ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return { code: out.code, output: text.decode(out.stdout) + text.decode(out.stderr) };
}

Deno.test({
  name:
    "agent recover (subprocess): redeems the one-time token at the BES subprocess pinned to its certificate, restores the image onto a loop file byte-identical (progress and read token through renew), reports done; the restore succeeds; a used token is refused and writes nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    await using cp = await controlPlane();
    const data = `${cp.dir}/bes`;
    const bes = spawnBes(cp.url, cp.tenant.secrets[0], data, "bes-recover", { tls: true });
    try {
      const engine = await waitFor(
        "the BES to go online with its data URL",
        async () => {
          const e = await engineNamed(cp.kv, "bes-recover");
          return e?.status === "online" && e.dataUrl ? e : null;
        },
        30_000,
        bes,
      );
      const pem = engine.certificate!;
      const targetDir = `${cp.dir}/target`;
      await Deno.mkdir(targetDir);
      const now = () => new Date();
      const target = await createTarget(
        cp.kv,
        system,
        targetInput(engine.id, "local", { config: { path: targetDir } }),
        { now: now(), masterKey: config.masterKey! },
      );
      const policy = await createPolicy(cp.kv, system, {
        name: "disk",
        besId: engine.id,
        targetId: target.id,
        backupType: "image",
        fullSchedule: "0 2 * * *",
      }, now());
      const { host } = await enrollHost(cp.kv, cp.scope, {
        hostname: "metal.acme.example",
        os: "Debian 12",
        ipAddress: "10.0.0.7",
        publicKey: generateKeyPair().publicKey,
        version: "1",
      }, now());
      await assignHost(cp.kv, system, { policyId: policy.id, hostId: host.id }, now());
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
      const point =
        (await Array.fromAsync(cp.kv.list<RestorePoint>({ prefix: ["restore_points"] })))[0].value;

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

      const certFile = `${cp.dir}/bes-cert.pem`;
      await Deno.writeTextFile(certFile, pem);
      // The "disk": a loop file that holds other bytes (the restore replaces them).
      const disk = `${cp.dir}/disk-loop.img`;
      await Deno.writeFile(disk, deterministicBytes("old disk", 1024 * 1024));
      const args = [
        "--bes",
        engine.dataUrl!,
        "--bes-cert",
        certFile,
        "--token",
        started.token,
        "--disk",
        disk,
        "--progress-seconds",
        "0.2",
      ];
      const run = await runRecover(args);
      assert.equal(run.code, 0, run.output);
      assert.match(run.output, /every chunk verified/);
      assert.ok(!run.output.includes(started.token), "the token is not printed");
      assert.deepEqual(await Deno.readFile(disk), image, "the disk is byte-identical to the backed-up image");

      const result = await finished(cp.kv, started.restore.jobId!);
      assert.equal(result.result?.status, "success", JSON.stringify(result.result));
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

      // The token works once: a second recovery is refused before anything is written.
      const other = `${cp.dir}/other-disk.img`;
      await Deno.writeFile(other, new Uint8Array([7, 7, 7]));
      const again = await runRecover(args.map((a) => a === disk ? other : a));
      assert.equal(again.code, 1, again.output);
      assert.match(again.output, /refused the token: 404/);
      assert.deepEqual(await Deno.readFile(other), new Uint8Array([7, 7, 7]));

      // A certificate that is not the BES's: the TLS connection is refused, nothing redeemed or written.
      const wrongCert = `${cp.dir}/wrong.pem`;
      const { createCertificate } = await import("../../engine/bes/tls.ts");
      await Deno.writeTextFile(
        wrongCert,
        (await createCertificate({ dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] })).certPem,
      );
      const pinned = await runRecover(args.map((a) => a === certFile ? wrongCert : a === disk ? other : a));
      assert.equal(pinned.code, 1, pinned.output);
      assert.match(pinned.output, /Cannot reach the BES/);
      assert.deepEqual(await Deno.readFile(other), new Uint8Array([7, 7, 7]));
      assert.ok(!bes.output.includes(started.token), "the one-time token is not logged");
      assert.ok(!bes.output.includes(delivered.dataKey.toBase64()), "no key in the BES's log");
    } finally {
      const status = await bes.stop();
      if (status.code !== 0 || Deno.env.get("DEBUG_BES")) console.error(bes.output);
    }
  },
});
