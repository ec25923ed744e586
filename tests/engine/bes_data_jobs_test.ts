/**
 * The BES jobs that write with one namespace's keys: `replicate` (to a target of this BES, and to one of
 * another BES through its data API with the replica write token, pinned to its certificate) and
 * `synthetic_full`. Restores from what they wrote are byte-identical; damage is never copied; a second
 * replicate adds nothing.
 */
import assert from "node:assert/strict";
import nodeCrypto from "node:crypto";
import { createDataApi, localTargetResolver, serveDataApi } from "../../engine/bes/data_api.ts";
import { replicateHandler, syntheticFullHandler } from "../../engine/bes/data_jobs.ts";
import type { JobKeyProvider } from "../../engine/bes/job_keys.ts";
import type { ClaimedJob, JobContext } from "../../engine/bes/jobs.ts";
import type { KeyedServices } from "../../engine/bes/keyed_jobs.ts";
import { createLogger } from "../../engine/bes/log.ts";
import type { TargetInfo } from "../../engine/bes/storage.ts";
import { createCertificate } from "../../engine/bes/tls.ts";
import { signDataToken } from "../../engine/protocol/token.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { IntegrityError } from "../../engine/repo/errors.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { type NamespaceKeys, namespaceKeysOpener, recoveryOpener } from "../../engine/repo/keys.ts";
import { generateRecoveryKeyPair } from "../../engine/repo/recovery.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { listSnapshots } from "../../engine/repo/snapshot.ts";
import { forgetSnapshots, garbageCollect } from "../../engine/repo/gc.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 32 * 1024 };
const NS = "01KHOST0000000000000000000";
const SRC_T = "01KTARGETSRC00000000000000";
const DST_T = "01KTARGETDST00000000000000";
const PATH = "cadres/POL1/g1";
const REPO = { target: SRC_T, path: PATH, generation: 1 };

function target(id: string, path: string): TargetInfo {
  return {
    id,
    name: `t-${id.slice(-4)}`,
    type: "local",
    config: { path },
    credentials: null,
    updatedAt: "1",
  };
}

function services(targets: TargetInfo[], keys: JobKeyProvider): KeyedServices {
  return {
    targets: {
      find: (id) => Promise.resolve(targets.find((t) => t.id === id) ?? null),
      all: () => targets,
    },
    open: { mounts: "/nonexistent" },
    keys,
  };
}

/** Hands out copies of `keys` (as the key endpoint would for the job's repository), remembering them. */
function provider(keys: NamespaceKeys, recoveryPublicKey: string | null = null) {
  const handed: NamespaceKeys[] = [];
  const fn: JobKeyProvider = () => {
    const copy = {
      namespace: keys.namespace,
      dataKey: keys.dataKey.slice(),
      idKey: keys.idKey.slice(),
      repository: REPO,
      recoveryPublicKey,
    };
    handed.push(copy);
    return Promise.resolve(copy);
  };
  return { fn, handed };
}

function ctx(kind: string, payload: Record<string, unknown>, extra: Partial<ClaimedJob> = {}): JobContext {
  return {
    job: {
      id: "01KJOB00000000000000000000",
      kind,
      priority: "normal",
      payload,
      leaseExpiresAt: "",
      ...extra,
    },
    signal: new AbortController().signal,
    lastProgressReply: null,
    progress: () => {},
    reportNow: () => Promise.resolve(null),
    uploadParts: () => Promise.reject(new Error("no parts expected")),
    log: createLogger("error"),
  };
}

/** A source repository (namespace keys only, as the control plane hands them) with two backups of `src`. */
async function source(root: string) {
  const src = `${root}/data`;
  await Deno.mkdir(`${src}/sub/deeper`, { recursive: true });
  await Deno.writeFile(`${src}/big.bin`, deterministicBytes("big", 300_000));
  await Deno.writeFile(`${src}/sub/notes.txt`, new TextEncoder().encode("notes"));
  await Deno.writeFile(`${src}/sub/deeper/x.bin`, deterministicBytes("x", 50_000));
  await Deno.symlink("notes.txt", `${src}/sub/link`);
  await Deno.chmod(`${src}/sub/notes.txt`, 0o640);
  const keys = {
    namespace: NS,
    dataKey: crypto.getRandomValues(new Uint8Array(32)),
    idKey: crypto.getRandomValues(new Uint8Array(32)),
  };
  const path = `${root}/src-target/${PATH}`;
  const repo = await Repository.init(new LocalBackend(path), namespaceKeysOpener(keys), {
    namespace: NS,
    ...SMALL,
  });
  const first = (await backupFiles(repo.namespace(NS), { paths: [src] })).snapshotId;
  await Deno.writeFile(`${src}/sub/added.bin`, deterministicBytes("added", 70_000));
  await Deno.writeFile(`${src}/big.bin`, deterministicBytes("big2", 300_000));
  const second = (await backupFiles(repo.namespace(NS), { paths: [src], parent: first })).snapshotId;
  return { src, keys, path, first, second };
}

/** Restores `snapshot` of the repository at `backend` into `out` and compares every file with `src`. */
async function assertRestoresAs(
  backend: LocalBackend,
  keys: NamespaceKeys,
  snapshot: string,
  src: string,
  out: string,
) {
  const repo = await Repository.open(backend, namespaceKeysOpener(keys));
  await restoreSnapshot(repo.namespace(NS), snapshot, { target: out });
  for (const rel of ["big.bin", "sub/notes.txt", "sub/deeper/x.bin", "sub/added.bin"]) {
    assert.deepEqual(await Deno.readFile(`${out}${src}/${rel}`), await Deno.readFile(`${src}/${rel}`), rel);
  }
  assert.equal(await Deno.readLink(`${out}${src}/sub/link`), "notes.txt");
  assert.equal((await Deno.stat(`${out}${src}/sub/notes.txt`)).mode! & 0o777, 0o640);
  assert.equal(
    (await Deno.stat(`${out}${src}/big.bin`)).mtime!.getTime(),
    (await Deno.stat(`${src}/big.bin`)).mtime!.getTime(),
  );
}

const payload = (snapshot: string, extra: Record<string, unknown> = {}) => ({
  restorePointId: "RP1",
  engineRestorePointId: snapshot,
  policyId: "POL1",
  hostId: NS,
  sourceTargetId: SRC_T,
  repository: REPO,
  targetId: DST_T,
  target: { id: DST_T, type: "local", besId: "BES1", config: {} },
  kekSource: "pam_vault",
  ...extra,
});

Deno.test("replicate to a target of this BES: the snapshot and its blobs copied as stored, restored from the replica byte-identical; again adds nothing; a recovery copy of the keys opens the replica", async () => {
  await using dir = await tempDir();
  const s = await source(dir.path);
  await Deno.mkdir(`${dir.path}/dst-target`);
  const targets = [target(SRC_T, `${dir.path}/src-target`), target(DST_T, `${dir.path}/dst-target`)];
  const recovery = await generateRecoveryKeyPair();
  const keys = provider(s.keys, recovery.publicPem);
  const replicate = replicateHandler(services(targets, keys.fn));

  const out = await replicate(ctx("replicate", payload(s.second)));
  assert.equal(out.status, "success", JSON.stringify(out));
  const replica = out.output!.replica as Record<string, unknown>;
  assert.equal(replica.created, true);
  assert.equal(replica.snapshotCopied, true);
  assert.ok((replica.blobsCopied as number) > 0);
  const replication = out.output!.replication as { bytes: number; targetId: string; restorePointId: string };
  assert.deepEqual([replication.restorePointId, replication.targetId], ["RP1", DST_T]);
  assert.ok(replication.bytes > 0 && replication.bytes === out.bytesTransferred);
  assert.ok(keys.handed.every((k) => k.dataKey.every((b) => b === 0)), "keys wiped");

  const dst = new LocalBackend(`${dir.path}/dst-target/${PATH}`);
  assert.ok(await dst.exists(`snapshots/${s.second}`), "same snapshot id in the replica");
  assert.ok(!(await dst.exists(`snapshots/${s.first}`)), "only the point asked for");
  await assertRestoresAs(dst, s.keys, s.second, s.src, `${dir.path}/restored`);
  const check = await verifyRepository(await Repository.open(dst, namespaceKeysOpener(s.keys)), {
    all: true,
  });
  assert.deepEqual(check.problems, []);
  // The replica opens with the account's recovery key alone (no control plane).
  const byRecovery = await Repository.open(dst, recoveryOpener(recovery.privatePem));
  assert.deepEqual(byRecovery.namespaces(), [NS]);

  // The older point next: only the blobs the replica lacks are copied; then a repeat copies nothing.
  const older = await replicate(ctx("replicate", payload(s.first)));
  assert.equal(older.status, "success");
  const o = older.output!.replica as { blobsCopied: number; blobsPresent: number; created: boolean };
  assert.equal(o.created, false);
  assert.ok(o.blobsPresent > 0, "shared blobs not copied again");
  const again = await replicate(ctx("replicate", payload(s.first)));
  const a = again.output!.replica as { blobsCopied: number; snapshotCopied: boolean };
  assert.deepEqual([a.blobsCopied, a.snapshotCopied], [0, false]);
  assert.equal((await listSnapshots(dst)).length, 2);
});

Deno.test("replicate: a damaged blob in the source is never copied (the job fails naming it, no snapshot in the replica); bad payloads and unknown targets are refused", async () => {
  await using dir = await tempDir();
  const s = await source(dir.path);
  await Deno.mkdir(`${dir.path}/dst-target`);
  const targets = [target(SRC_T, `${dir.path}/src-target`), target(DST_T, `${dir.path}/dst-target`)];
  const replicate = replicateHandler(services(targets, provider(s.keys).fn));
  // Flip a byte inside each pack's first blob (ciphertext; the trailers stay intact).
  const backend = new LocalBackend(s.path);
  for (const pack of await Array.fromAsync(backend.list("data/"))) {
    const bytes = await Deno.readFile(`${s.path}/${pack.name}`);
    bytes[40] ^= 0x01;
    await Deno.writeFile(`${s.path}/${pack.name}`, bytes);
  }
  await assert.rejects(
    replicate(ctx("replicate", payload(s.second))),
    (e: unknown) =>
      e instanceof IntegrityError && e.kind === "blob" &&
      /nothing of this namespace's snapshots was committed/.test(e.message),
  );
  const dst = new LocalBackend(`${dir.path}/dst-target/${PATH}`);
  assert.deepEqual(await Array.fromAsync(dst.list("snapshots/")), []);

  const cases: [Record<string, unknown>, string][] = [
    [payload(s.second, { targetId: SRC_T, target: undefined }), "BAD_PAYLOAD"],
    [payload("a".repeat(64)), "RESTORE_POINT_MISSING"],
    [payload(s.second, { repository: { ...REPO, path: "cadres/POL2/g1" } }), "BAD_PAYLOAD"],
    // Another BES's target without a replica token.
    [payload(s.second, { targetId: "01KOTHER00000000000000000", target: undefined }), "TARGET_UNKNOWN"],
  ];
  for (const [p, reason] of cases) {
    await assert.rejects(
      replicate(ctx("replicate", p)),
      (e: unknown) => (e as { reason?: string }).reason === reason,
      `${reason}: ${JSON.stringify(p)}`,
    );
  }
});

Deno.test("replicate to a target of another BES: through its data API over HTTPS, pinned to its certificate, with the replica write token; restored from there byte-identical", async () => {
  await using dir = await tempDir();
  const s = await source(dir.path);
  const otherRoot = `${dir.path}/other-bes-target`;
  await Deno.mkdir(otherRoot);
  // The other BES's data API, with the control plane's key.
  const cpKey = nodeCrypto.generateKeyPairSync("ed25519");
  const api = createDataApi({
    besId: "BES2",
    tokenPublicKey: cpKey.publicKey,
    resolveRepository: localTargetResolver({ [DST_T]: otherRoot }),
    log: () => {},
  });
  const cert = await createCertificate({ dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
  const server = serveDataApi(api, { hostname: "127.0.0.1", port: 0, certificate: cert });
  const dataUrl = `https://127.0.0.1:${server.addr.port}`;
  const tokenFor = (access: "read" | "write") => {
    const t = Math.floor(Date.now() / 1000);
    return signDataToken(cpKey.privateKey, {
      v: 1,
      job: "01KJOB00000000000000000000",
      host: NS,
      bes: "BES2",
      repository: { ...REPO, target: DST_T },
      namespace: NS,
      access,
      iat: t,
      exp: t + 300,
    });
  };
  try {
    const replicate = replicateHandler(
      services([target(SRC_T, `${dir.path}/src-target`)], provider(s.keys).fn),
    );
    const remotePayload = payload(s.second, {
      target: {
        id: DST_T,
        type: "local",
        besId: "BES2",
        config: {},
        bes: { id: "BES2", dataUrl, certificate: cert.certPem },
      },
    });
    // No repository there yet: the replicate creates it through the data API's init endpoint.
    assert.equal(await new LocalBackend(`${otherRoot}/${PATH}`).exists("config"), false);
    const out = await replicate(ctx("replicate", remotePayload, { replicaDataToken: tokenFor("write") }));
    assert.equal(out.status, "success", JSON.stringify(out));
    assert.equal((out.output!.replica as { via: string }).via, "data API of the replica's BES");
    const dst = new LocalBackend(`${otherRoot}/${PATH}`);
    assert.ok(await dst.exists(`snapshots/${s.second}`));
    await assertRestoresAs(dst, s.keys, s.second, s.src, `${dir.path}/restored`);
    assert.equal(api.locks.size, 0, "the writer lock held for the copy was released");
    // A read token cannot write there; a certificate that is not that BES's is not trusted.
    await assert.rejects(
      replicate(
        ctx("replicate", payload(s.first, { target: remotePayload.target }), {
          replicaDataToken: tokenFor("read"),
        }),
      ),
      (e: unknown) => (e as { reason?: string }).reason === "AUTH" && /read_only/.test((e as Error).message),
    );
    const stranger = await createCertificate({ dnsNames: ["localhost"], ipAddresses: ["127.0.0.1"] });
    await assert.rejects(
      replicate(ctx(
        "replicate",
        payload(s.first, {
          target: { ...remotePayload.target, bes: { id: "BES2", dataUrl, certificate: stranger.certPem } },
        }),
        { replicaDataToken: tokenFor("write") },
      )),
      (e: unknown) => (e as { reason?: string }).reason === "TARGET_UNREACHABLE",
    );
  } finally {
    await api.close();
    await server.shutdown();
  }
});

Deno.test("synthetic_full: a new snapshot of the chain's newest state, no parent, no host I/O; it restores byte-identical and outlives its chain", async () => {
  await using dir = await tempDir();
  const s = await source(dir.path);
  const targets = [target(SRC_T, `${dir.path}/src-target`)];
  const keys = provider(s.keys);
  const synth = syntheticFullHandler(services(targets, keys.fn));
  const before = await listSnapshots(new LocalBackend(s.path));
  const out = await synth(
    ctx("synthetic_full", { policyId: "POL1", targetId: SRC_T, repository: REPO, hostId: NS }),
  );
  assert.equal(out.status, "success", JSON.stringify(out));
  const rp = out.output!.restorePoint as {
    id: string;
    type: string;
    parentId: null;
    fileCount: number;
    sizeBytes: number;
    chainId: string;
  };
  assert.equal(rp.type, "synthetic_full");
  assert.equal(rp.parentId, null);
  assert.equal(rp.chainId, rp.id);
  assert.equal(rp.fileCount, 4);
  assert.equal(rp.sizeBytes, 300_000 + 5 + 50_000 + 70_000);
  assert.equal((out.output!.syntheticFull as { base: string }).base, s.second, "the newest state");
  assert.ok(keys.handed.every((k) => k.dataKey.every((b) => b === 0)), "keys wiped");

  const backend = new LocalBackend(s.path);
  const after = await listSnapshots(backend);
  assert.equal(after.length, before.length + 1);
  const made = after.find((x) => x.id === rp.id)!;
  assert.deepEqual([made.kind, made.parent, made.namespace], ["synthetic_full", null, NS]);
  const base = after.find((x) => x.id === s.second)!;
  assert.equal(made.refCount, base.refCount);
  assert.deepEqual(made.refSegments, base.refSegments, "the same blobs: nothing stored again");
  // The chain it came from can go: the synthetic full stands alone.
  await forgetSnapshots(backend, [s.first, s.second]);
  await garbageCollect(backend);
  const check = await verifyRepository(await Repository.open(backend, namespaceKeysOpener(s.keys)), {
    all: true,
  });
  assert.deepEqual(check.problems, []);
  await assertRestoresAs(backend, s.keys, rp.id, s.src, `${dir.path}/restored`);

  // A payload without the host: one clear refusal; a host with no backup: nothing written.
  await assert.rejects(
    synth(ctx("synthetic_full", { policyId: "POL1", repository: REPO })),
    (e: unknown) =>
      (e as { reason?: string }).reason === "BAD_PAYLOAD" && /hostId/.test((e as Error).message),
  );
  const other = "01KOTHERHOST00000000000000";
  const noBackup = await synth(ctx("synthetic_full", { policyId: "POL1", repository: REPO, hostId: other }));
  assert.equal(noBackup.status, "warning", "skipped, not failed");
  assert.equal(noBackup.error?.reason, "NO_BACKUP");
  assert.match(
    noBackup.error!.message,
    new RegExp(`^Skipped: host ${other} has no backup in cadres/POL1/g1`),
  );
  assert.deepEqual(noBackup.output, {
    skipped: { hostId: other, reason: "NO_BACKUP", message: noBackup.error!.message },
  });
  assert.equal(noBackup.retryable, false);
  // A repository not written yet (a new generation): skipped too; nothing is created there.
  const g2 = { target: SRC_T, path: "cadres/POL1/g2", generation: 2 };
  const fresh = await synth(ctx("synthetic_full", { policyId: "POL1", repository: g2, hostId: other }));
  assert.equal(fresh.error?.reason, "NO_BACKUP");
  assert.equal(await new LocalBackend(`${dir.path}/src-target/cadres/POL1/g2`).exists("config"), false);
  // A snapshot the payload names that is not there is still a missing restore point.
  await assert.rejects(
    synth(ctx("synthetic_full", {
      policyId: "POL1",
      repository: g2,
      hostId: other,
      engineRestorePointId: "b".repeat(64),
    })),
    (e: unknown) => (e as { reason?: string }).reason === "RESTORE_POINT_MISSING",
  );
  assert.equal((await listSnapshots(backend)).length, 1);
});
