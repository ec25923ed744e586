/**
 * The BES's parts without a control plane: command line, identity file, metrics, storage opening and
 * error reasons, capacity (statfs and S3 on s3rver), the keyless prune and verify handlers against real
 * repositories, the keyless opener, and the job runner's progress, cancel and lease rules.
 */
import assert from "node:assert/strict";
import S3rver from "s3rver";
import { CapacityMonitor, s3Quota } from "../../engine/bes/capacity.ts";
import { parseBesArgs, UsageError } from "../../engine/bes/config.ts";
import { GC_GRACE_MS } from "../../engine/repo/gc.ts";
import { IdentityError, loadOrCreateKey } from "../../engine/bes/identity.ts";
import { type ClaimedJob, type JobContext, type JobOutcome, JobRunner } from "../../engine/bes/jobs.ts";
import { type KeylessServices, pruneHandler, verifyHandler } from "../../engine/bes/keyless_jobs.ts";
import { createLogger } from "../../engine/bes/log.ts";
import { CpuSampler, fileSystemUsage, memoryPercent, parseProcStat } from "../../engine/bes/metrics.ts";
import {
  classifyStorageError,
  listGenerations,
  openTargetStorage,
  TargetError,
  type TargetInfo,
} from "../../engine/bes/storage.ts";
import { EngineClient } from "../../engine/protocol/client.ts";
import { generateKeyPair } from "../../engine/protocol/signing.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import { RepoError, WrongKeyError } from "../../engine/repo/errors.ts";
import { acquireLock } from "../../engine/repo/lock.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { S3Backend, S3RequestError } from "../../engine/repo/s3_backend.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 32 * 1024 };
const KEK = crypto.getRandomValues(new Uint8Array(32));
const quiet = createLogger("error");

// ---------------------------------------------------------------------------------------------------
// command line

Deno.test("parseBesArgs: flags, defaults, the secret from the environment", () => {
  const c = parseBesArgs(
    ["--control-plane", "https://cp.example.com/", "--data", "/var/lib/cadres-bes/", "--name", "bes-hq"],
    { CADRES_BES_SECRET: "cdo_x" },
  );
  assert.equal(c.controlPlane, "https://cp.example.com");
  assert.equal(c.secret, "cdo_x");
  assert.equal(c.dataDir, "/var/lib/cadres-bes");
  assert.deepEqual(c.listen, { hostname: "0.0.0.0", port: 8443 });
  assert.equal(c.mounts, "/var/lib/cadres-bes/mounts");
  assert.equal(c.heartbeatSeconds, null);
  assert.equal(c.insecureHttp, false);
  const local = parseBesArgs([
    "--control-plane",
    "http://127.0.0.1:8000",
    "--secret",
    "s",
    "--data",
    "d",
    "--listen",
    "127.0.0.1:0",
    "--insecure-http",
  ]);
  assert.equal(local.insecureHttp, true);
  assert.equal(local.listen.port, 0);
  assert.equal(c.dataUrl, null);
  const behindNat = parseBesArgs([
    "--control-plane",
    "https://cp.example.com",
    "--secret",
    "s",
    "--data",
    "d",
    "--data-url",
    "https://bes.example.com:9443/",
  ]);
  assert.equal(behindNat.dataUrl, "https://bes.example.com:9443");
  assert.equal(c.gcGraceMs, GC_GRACE_MS, "gc's grace period defaults to 24 h");
  assert.equal(GC_GRACE_MS, 24 * 3_600_000);
  const grace = (v: string) =>
    parseBesArgs([
      ...["--control-plane", "https://x.example", "--secret", "s"],
      "--data",
      "d",
      "--gc-grace",
      v,
    ]).gcGraceMs;
  assert.deepEqual(
    ["0s", "30s", "90m", "6h", "2d", "30d"].map(grace),
    [0, 30_000, 90 * 60_000, 6 * 3_600_000, 2 * 86_400_000, 30 * 86_400_000],
  );
});

Deno.test("parseBesArgs: every bad command line is one error naming the flag", () => {
  const base = ["--control-plane", "https://cp.example.com", "--secret", "s", "--data", "d"];
  const cases: [string[], RegExp][] = [
    [["--secret", "s", "--data", "d"], /--control-plane URL is required/],
    [["--control-plane", "https://cp.example.com", "--data", "d"], /--secret/],
    [["--control-plane", "https://cp.example.com", "--secret", "s"], /--data DIR is required/],
    [["--control-plane", "http://cp.example.com", "--secret", "s", "--data", "d"], /must be https/],
    [["--control-plane", "ftp://x", "--secret", "s", "--data", "d"], /https/],
    [[...base, "--listen", "8443"], /--listen must be HOST:PORT/],
    [[...base, "--listen", "0.0.0.0:99999"], /--listen/],
    [[...base, "--insecure-http"], /--insecure-http needs a loopback/],
    [[...base, "--data-url", "http://bes.example.com"], /--data-url must be a plain https:/],
    [[...base, "--data-url", "https://u:p@bes.example.com"], /--data-url must be a plain https:/],
    [[...base, "--data-url", "bes.example.com"], /--data-url must be a URL/],
    [[...base, "--jobs", "0"], /--jobs/],
    [[...base, "--log-level", "loud"], /--log-level/],
    [[...base, "--gc-grace", "24"], /--gc-grace must be a duration such as 24h.*not "24"/],
    [[...base, "--gc-grace=-1h"], /--gc-grace must be a duration/],
    [[...base, "--gc-grace", "1.5h"], /--gc-grace must be a duration/],
    [[...base, "--gc-grace", "1w"], /--gc-grace must be a duration/],
    [[...base, "--gc-grace", "31d"], /--gc-grace .*at most 30d/],
    [[...base, "--gc-grace", ""], /--gc-grace must be a duration/],
    [[...base, "--unknown"], /unknown/i],
  ];
  for (const [args, message] of cases) {
    assert.throws(
      () => parseBesArgs(args),
      (e: unknown) => e instanceof UsageError && message.test(e.message),
    );
  }
});

// ---------------------------------------------------------------------------------------------------
// identity

Deno.test("loadOrCreateKey: creates an Ed25519 key 0600 once, reads it back, refuses one readable by others", async () => {
  await using dir = await tempDir();
  const first = await loadOrCreateKey(dir.path);
  assert.equal(first.created, true);
  assert.equal((await Deno.stat(`${dir.path}/bes.key`)).mode! & 0o777, 0o600);
  const again = await loadOrCreateKey(dir.path);
  assert.equal(again.created, false);
  assert.equal(again.publicKey, first.publicKey);
  assert.match(first.publicKey, /^[A-Za-z0-9_-]{43}$/);
  await Deno.chmod(`${dir.path}/bes.key`, 0o644);
  await assert.rejects(
    loadOrCreateKey(dir.path),
    (e: unknown) =>
      e instanceof IdentityError && /readable by others \(mode 644\).*chmod 600/.test(e.message),
  );
  await Deno.chmod(`${dir.path}/bes.key`, 0o600);
  await Deno.writeTextFile(`${dir.path}/bes.key`, "not a key");
  await assert.rejects(loadOrCreateKey(dir.path), IdentityError);
});

// ---------------------------------------------------------------------------------------------------
// metrics

Deno.test("CPU percent from /proc/stat deltas; memory and disk as free and df compute them", async () => {
  assert.deepEqual(parseProcStat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n"), {
    idle: 850,
    total: 1000,
  });
  assert.equal(parseProcStat("intr 1 2 3"), null);
  const stats = ["cpu  100 0 50 800 50 0 0 0", "cpu  400 0 150 1200 50 0 0 0"];
  const cpu = new CpuSampler(() => stats.shift() ?? null);
  // 800 jiffies passed, 400 of them idle: 50 %.
  assert.equal(cpu.sample(), 50);
  const mem = memoryPercent({
    total: 1000,
    free: 100,
    available: 250,
    buffers: 0,
    cached: 0,
    swapTotal: 0,
    swapFree: 0,
  });
  assert.equal(mem, 75);
  const fs = await fileSystemUsage("/");
  assert.ok(fs.totalBytes > 0 && fs.usedBytes <= fs.totalBytes && fs.freeBytes <= fs.totalBytes);
});

// ---------------------------------------------------------------------------------------------------
// storage

function target(overrides: Partial<TargetInfo>): TargetInfo {
  return {
    id: "01KTARGET0000000000000000A",
    name: "t",
    type: "local",
    config: {},
    credentials: null,
    updatedAt: "2026-01-01T00:00:00Z",
    ...overrides,
  };
}

Deno.test("classifyStorageError: full, credentials, unreachable, or not a storage problem", () => {
  const t = { id: "T", name: "backups" };
  const enospc = Object.assign(new Error("No space left on device (os error 28)"), { code: "ENOSPC" });
  assert.equal(classifyStorageError(enospc, t)?.reason, "TARGET_FULL");
  assert.equal(classifyStorageError(new S3RequestError("k", 403, "PUT answered 403"), t)?.reason, "AUTH");
  assert.equal(
    classifyStorageError(new S3RequestError("k", null, "timed out"), t)?.reason,
    "TARGET_UNREACHABLE",
  );
  assert.equal(classifyStorageError(new S3RequestError("k", 507, "full"), t)?.reason, "TARGET_FULL");
  assert.equal(
    classifyStorageError(Object.assign(new Error("stale"), { code: "ESTALE" }), t)?.reason,
    "TARGET_UNREACHABLE",
  );
  assert.equal(classifyStorageError(new RepoError("a damaged thing"), t), null);
  assert.match(classifyStorageError(enospc, t)!.message, /storage target backups \(T\) is full/);
});

Deno.test("openTargetStorage: a Local folder must exist; SMB/NFS/iSCSI must be mounted at <mounts>/<id>", async () => {
  await using dir = await tempDir();
  const ok = await openTargetStorage(target({ config: { path: dir.path } }), { mounts: dir.path });
  assert.equal(ok.folder, dir.path);
  await assert.rejects(
    openTargetStorage(target({ config: { path: `${dir.path}/missing` } }), { mounts: dir.path }),
    (e: unknown) =>
      e instanceof TargetError && e.reason === "TARGET_UNREACHABLE" && /does not exist/.test(e.message),
  );
  const nfs = target({ type: "nfs", id: "NFS1" });
  await assert.rejects(
    openTargetStorage(nfs, { mounts: dir.path }),
    (e: unknown) => e instanceof TargetError && /is not mounted: .*NFS1 does not exist/.test(e.message),
  );
  // A plain folder where the mount should be: refused, or backups would fill the BES's own disk.
  await Deno.mkdir(`${dir.path}/NFS1`);
  await assert.rejects(
    openTargetStorage(nfs, { mounts: dir.path }),
    (e: unknown) => e instanceof TargetError && /is not a mount point/.test(e.message),
  );
  // (A real mount point passes; tests cannot mount one without root, and Deno refuses /proc and /dev to
  // anything less than --allow-all.)
  const smb = target({ type: "smb", id: "SMB1", config: { server: "fs", share: "b", path: "sub\\dir" } });
  await assert.rejects(openTargetStorage(smb, { mounts: dir.path }), /not mounted/);
});

// ---------------------------------------------------------------------------------------------------
// S3: capacity and folder listing on s3rver

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

Deno.test("S3 targets: used bytes of the prefix summed, total from config.quotaBytes, none without a quota", async () => {
  await using dir = await tempDir("cadres-s3rver-");
  const port = freePort();
  const server = new S3rver({
    port,
    address: "127.0.0.1",
    silent: true,
    directory: dir.path,
    configureBuckets: [{ name: "bucket" }],
  });
  await server.run();
  try {
    const endpoint = `http://127.0.0.1:${port}`;
    const creds = { username: "S3RVER", credentialType: "access_key", secret: "S3RVER" };
    const config = { endpoint, bucket: "bucket", region: "us-east-1", prefix: "acme/backups" };
    const inside = new S3Backend({
      endpoint,
      bucket: "bucket",
      prefix: "acme/backups",
      accessKeyId: "S3RVER",
      secretAccessKey: "S3RVER",
    });
    const outside = new S3Backend({
      endpoint,
      bucket: "bucket",
      prefix: "other",
      accessKeyId: "S3RVER",
      secretAccessKey: "S3RVER",
    });
    await inside.put("cadres/P1/g1/config", new Uint8Array(1000));
    await inside.put("cadres/P1/g2/config", new Uint8Array(500));
    await inside.put("cadres/P2/g1/data/aa/x", new Uint8Array(2500));
    await outside.put("big", new Uint8Array(100_000));
    const withQuota = target({
      id: "S3Q",
      type: "s3_compatible",
      config: { ...config, quotaBytes: 10_000 },
      credentials: creds,
    });
    const noQuota = target({ id: "S3N", type: "s3_compatible", config, credentials: creds });
    assert.equal(s3Quota(withQuota), 10_000);
    assert.equal(s3Quota(noQuota), null);
    const lines: string[] = [];
    const monitor = new CapacityMonitor(createLogger("info", (l) => lines.push(l)), {
      mounts: "/nonexistent",
    });
    assert.deepEqual(
      await monitor.reports([withQuota, noQuota]),
      [],
      "the first heartbeat only starts measuring",
    );
    await Promise.all([monitor.refreshS3(withQuota), monitor.refreshS3(noQuota)]);
    assert.equal(monitor.s3Used("S3Q"), 4000);
    assert.deepEqual(await monitor.reports([withQuota, noQuota]), [
      { targetId: "S3Q", totalBytes: 10_000, usedBytes: 4000, freeBytes: 6000 },
    ]);
    assert.ok(
      lines.some((l) => l.includes("S3N") && l.includes("no quota configured") && l.includes("4000")),
    );
    // Folders by delimiter listing: generations with a config.
    const storage = await openTargetStorage(withQuota, { mounts: "/nonexistent" });
    assert.deepEqual(await listGenerations(storage, "P1"), [1, 2]);
    assert.deepEqual(await listGenerations(storage, "P2"), []);
    assert.deepEqual(await inside.listFolders("cadres"), ["P1", "P2"]);
    // Nothing listening: unreachable. (Refused credentials: below, s3rver does not check them.)
    await assert.rejects(
      openTargetStorage(
        target({
          type: "s3",
          config: { ...config, endpoint: `http://127.0.0.1:${freePort()}` },
          credentials: creds,
        }),
        {
          mounts: "",
          s3: { maxAttempts: 1, timeoutMs: 2000 },
        },
      ),
      (e: unknown) => e instanceof TargetError && e.reason === "TARGET_UNREACHABLE",
    );
    await assert.rejects(
      openTargetStorage(target({ type: "s3", config }), { mounts: "" }),
      (e: unknown) => e instanceof TargetError && e.reason === "AUTH" && /no credentials/.test(e.message),
    );
  } finally {
    await server.close();
  }
});

Deno.test("S3 targets: an endpoint that refuses the credentials (403) is AUTH, not unreachable", async () => {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    await req.arrayBuffer();
    const body = req.method === "HEAD"
      ? null
      : "<Error><Code>InvalidAccessKeyId</Code><Message>no</Message></Error>";
    return new Response(body, { status: 403, headers: { "content-type": "application/xml" } });
  });
  try {
    const t = target({
      type: "s3_compatible",
      config: { endpoint: `http://127.0.0.1:${server.addr.port}`, bucket: "bucket", region: "us-east-1" },
      credentials: { username: "AK", credentialType: "access_key", secret: "wrong" },
    });
    await assert.rejects(
      openTargetStorage(t, { mounts: "", s3: { maxAttempts: 1 } }),
      (e: unknown) =>
        e instanceof TargetError && e.reason === "AUTH" && /refused its credentials/.test(e.message),
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("CapacityMonitor: a Local target's file system; an unmounted NFS target is left out and logged once", async () => {
  await using dir = await tempDir();
  const lines: string[] = [];
  const monitor = new CapacityMonitor(createLogger("info", (l) => lines.push(l)), { mounts: dir.path });
  const local = target({ id: "L", config: { path: dir.path } });
  const nfs = target({ id: "N", type: "nfs" });
  for (let i = 0; i < 3; i++) {
    const reports = await monitor.reports([local, nfs]);
    assert.deepEqual(reports.map((r) => r.targetId), ["L"]);
    const expected = await fileSystemUsage(dir.path);
    assert.equal(reports[0].totalBytes, expected.totalBytes);
  }
  assert.equal(lines.filter((l) => l.includes("capacity not reported")).length, 1);
});

// ---------------------------------------------------------------------------------------------------
// keyless opener and verify

async function repoWithSnapshots(path: string, src: string, n = 3, namespace = "host-a") {
  await Deno.mkdir(src, { recursive: true });
  await Deno.writeFile(`${src}/same.bin`, deterministicBytes(`${path}-same`, 20_000));
  const repo = await Repository.init(new LocalBackend(path), KEK, { namespace, ...SMALL });
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    // Larger than a pack: each snapshot has packs of its own, which a prune condemns.
    await Deno.writeFile(`${src}/day.bin`, deterministicBytes(`${path}-${i}`, 100_000));
    ids.push((await backupFiles(repo.namespace(namespace), { paths: [src] })).snapshotId);
  }
  return ids;
}

Deno.test("Repository.openStorage: no key, no namespace; the structural verify covers every namespace", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/repo`;
  await repoWithSnapshots(path, `${dir.path}/src`, 2);
  const repo = await Repository.openStorage(new LocalBackend(path));
  assert.equal(repo.keyless, true);
  assert.deepEqual(repo.namespaces(), []);
  assert.throws(() => repo.namespace("host-a"), WrongKeyError);
  assert.throws(() => repo.opener, WrongKeyError);
  assert.throws(() => repo.kek, WrongKeyError);
  await assert.rejects(repo.createNamespace("x"), WrongKeyError);
  assert.ok((await repo.listKeys()).every((k) => !k.opens));
  const ok = await verifyRepository(repo);
  assert.deepEqual(ok.problems, []);
  assert.equal(ok.snapshots, 2);
  assert.ok(ok.referencedBlobs > 0);
  assert.equal(ok.blobsRead, 0);
  await assert.rejects(verifyRepository(repo, { sample: 3 }), /needs a key/);
  // The keyed verify still sees the same structure.
  const keyed = await verifyRepository(await Repository.open(new LocalBackend(path), KEK));
  assert.equal(keyed.referencedBlobs, ok.referencedBlobs);
  // A missing pack is found without a key, named.
  const backend = new LocalBackend(path);
  const pack = (await Array.fromAsync(backend.list("data/")))[0];
  await backend.delete(pack.name);
  const bad = await verifyRepository(await Repository.openStorage(backend));
  const packId = pack.name.slice(pack.name.lastIndexOf("/") + 1);
  assert.ok(
    bad.problems.some((p) => p.id === packId || p.detail.includes(packId)),
    JSON.stringify(bad.problems),
  );
});

// ---------------------------------------------------------------------------------------------------
// prune and verify handlers

function fakeCtx(job: Partial<ClaimedJob>): JobContext & { updates: string[] } {
  const updates: string[] = [];
  return {
    job: { id: "J", kind: "prune", priority: "normal", payload: {}, leaseExpiresAt: "", ...job },
    signal: new AbortController().signal,
    lastProgressReply: null,
    progress: (u) => void (u.message && updates.push(u.message)),
    reportNow: () => Promise.resolve(null),
    uploadParts: () => Promise.reject(new Error("no parts expected")),
    log: quiet,
    updates,
  };
}

function services(t: TargetInfo, gcGraceMs?: number): KeylessServices {
  return {
    targets: { find: (id) => Promise.resolve(id === t.id ? t : null), all: () => [t] },
    open: { mounts: "/nonexistent" },
    gcGraceMs,
  };
}

Deno.test("prune: gc's grace period is the BES's --gc-grace: 24 h keeps condemned packs, 0 s deletes them at the next prune", async () => {
  await using dir = await tempDir();
  const root = `${dir.path}/target`;
  const ids = await repoWithSnapshots(`${root}/cadres/POL1/g1`, `${dir.path}/src1`, 3);
  const t = target({ config: { path: root } });
  const backend = new LocalBackend(`${root}/cadres/POL1/g1`);
  const packBytes = async () => {
    let n = 0;
    for await (const o of backend.list("data/")) n += o.size;
    return n;
  };
  const packNames = async () => (await Array.fromAsync(backend.list("data/"))).map((o) => o.name).sort();
  const original = await packNames();
  type Pruned = {
    bytesFreed: number;
    repositories: { condemnedPacks: number; deletedPacks: number; pendingPacks: number }[];
  };
  const prune = async (restorePointIds: string[], graceMs?: number) =>
    (await pruneHandler(services(t, graceMs))(fakeCtx({
      payload: { policyId: "POL1", targetId: t.id, restorePointIds },
    }))).output!.pruned as Pruned;
  const first = await prune([ids[0]]);
  assert.ok(first.repositories[0].condemnedPacks > 0, JSON.stringify(first));
  // The default (24 h): a second prune at once deletes nothing.
  const kept = await prune([ids[1]]);
  assert.equal(kept.repositories[0].deletedPacks, 0, JSON.stringify(kept));
  assert.ok(kept.repositories[0].pendingPacks > 0);
  // gc may have rewritten mostly-dead packs into new ones (more bytes), but it deleted none.
  const held = await packNames();
  assert.deepEqual(
    original.filter((n) => !held.includes(n)),
    [],
    "nothing is deleted within the grace period",
  );
  const before = await packBytes();
  // 0 s: the next prune deletes what was condemned; the bytes leave the target.
  const gone = await prune([ids[1]], 0);
  assert.ok(gone.repositories[0].deletedPacks > 0, JSON.stringify(gone));
  assert.ok(gone.bytesFreed > 0);
  const after = await packNames();
  assert.equal(held.filter((n) => !after.includes(n)).length, gone.repositories[0].deletedPacks);
  const written = after.filter((n) => !held.includes(n));
  let writtenBytes = 0;
  for await (const o of backend.list("data/")) if (written.includes(o.name)) writtenBytes += o.size;
  assert.equal(
    await packBytes(),
    before - gone.bytesFreed + writtenBytes,
    "the freed bytes are gone from data/",
  );
  // The kept snapshot is whole.
  const r = await verifyRepository(await Repository.open(backend, KEK), { all: true });
  assert.deepEqual(r.problems, []);
  assert.ok(await backend.exists(`snapshots/${ids[2]}`));
});

Deno.test("prune: forgets the named snapshots in every generation, gc runs, absent ids are a warning", async () => {
  await using dir = await tempDir();
  const root = `${dir.path}/target`;
  const g1 = await repoWithSnapshots(`${root}/cadres/POL1/g1`, `${dir.path}/src1`, 2);
  const g2 = await repoWithSnapshots(`${root}/cadres/POL1/g2`, `${dir.path}/src2`, 2);
  const other = await repoWithSnapshots(`${root}/cadres/POL2/g1`, `${dir.path}/src3`, 1);
  const t = target({ config: { path: root } });
  const absent = "f".repeat(64);
  const outcome = await pruneHandler(services(t))(fakeCtx({
    payload: { policyId: "POL1", targetId: t.id, restorePointIds: [g1[0], g2[0], absent, "rp-0", other[0]] },
  }));
  assert.equal(outcome.status, "warning");
  assert.equal(outcome.error?.reason, "SNAPSHOTS_ABSENT");
  assert.match(outcome.error!.message, /3 of 5 restore points were not in any repository of policy POL1/);
  const pruned = outcome.output!.pruned as {
    restorePointIds: string[];
    absent: string[];
    bytesFreed: number;
    repositories: { generation: number; forgotten: string[]; condemnedPacks: number }[];
  };
  assert.deepEqual(pruned.restorePointIds.sort(), [g1[0], g2[0]].sort());
  assert.deepEqual(pruned.absent.sort(), [absent, "rp-0", other[0]].sort());
  assert.deepEqual(pruned.repositories.map((r) => [r.generation, r.forgotten.length]), [[1, 1], [2, 1]]);
  assert.ok(pruned.repositories.every((r) => r.condemnedPacks > 0), "gc condemned the pruned data");
  const exists = (p: string, id: string) => new LocalBackend(`${root}/cadres/${p}`).exists(`snapshots/${id}`);
  assert.deepEqual(
    await Promise.all([
      exists("POL1/g1", g1[0]),
      exists("POL1/g1", g1[1]),
      exists("POL1/g2", g2[0]),
      exists("POL1/g2", g2[1]),
    ]),
    [false, true, false, true],
  );
  assert.equal(await exists("POL2/g1", other[0]), true, "another policy's repository is untouched");
  // The kept snapshots are whole.
  for (const g of ["g1", "g2"]) {
    const r = await verifyRepository(
      await Repository.open(new LocalBackend(`${root}/cadres/POL1/${g}`), KEK),
      { all: true },
    );
    assert.deepEqual(r.problems, []);
  }
  // Again: everything is absent now; a generation given limits the search.
  const again = await pruneHandler(services(t))(fakeCtx({
    payload: { policyId: "POL1", targetId: t.id, restorePointIds: [g1[1]], generation: 2 },
  }));
  assert.equal(again.error?.reason, "SNAPSHOTS_ABSENT");
  assert.equal(await exists("POL1/g1", g1[1]), true);
  const done = await pruneHandler(services(t))(fakeCtx({
    payload: { policyId: "POL1", targetId: t.id, restorePointIds: [g1[1]], generation: 1 },
  }));
  assert.equal(done.status, "success");
  assert.equal(await exists("POL1/g1", g1[1]), false);
});

Deno.test("prune: the payload's repository is the only one touched; a named repository that holds nothing leaves its points absent", async () => {
  await using dir = await tempDir();
  const root = `${dir.path}/target`;
  const g1 = await repoWithSnapshots(`${root}/cadres/POL1/g1`, `${dir.path}/src1`, 2);
  const g2 = await repoWithSnapshots(`${root}/cadres/POL1/g2`, `${dir.path}/src2`, 2);
  const t = target({ config: { path: root } });
  const repository = { target: t.id, path: "cadres/POL1/g2", generation: 2 };
  const out = await pruneHandler(services(t))(fakeCtx({
    payload: { policyId: "POL1", targetId: t.id, repository, restorePointIds: [g1[0], g2[0]] },
  }));
  // g1's snapshot is not in the repository named: absent, and g1 is not even looked at.
  assert.equal(out.status, "warning");
  assert.match(out.error!.message, /1 of 2 restore points were not in repository cadres\/POL1\/g2 on /);
  const pruned = out.output!.pruned as { restorePointIds: string[]; repositories: { path: string }[] };
  assert.deepEqual(pruned.restorePointIds, [g2[0]]);
  assert.deepEqual(pruned.repositories.map((r) => r.path), ["cadres/POL1/g2"]);
  assert.equal(await new LocalBackend(`${root}/cadres/POL1/g1`).exists(`snapshots/${g1[0]}`), true);
  assert.equal(await new LocalBackend(`${root}/cadres/POL1/g2`).exists(`snapshots/${g2[0]}`), false);
  // A repository that was never written: nothing to forget, nothing created.
  const none = await pruneHandler(services(t))(fakeCtx({
    payload: {
      policyId: "POL1",
      repository: { target: t.id, path: "cadres/POL1/g7", generation: 7 },
      restorePointIds: [g1[1]],
    },
  }));
  assert.equal(none.error?.reason, "SNAPSHOTS_ABSENT");
  await assert.rejects(Deno.stat(`${root}/cadres/POL1/g7`), Deno.errors.NotFound);
  // A repository of another policy, or a path that does not name its generation: one clear refusal.
  for (
    const bad of [
      { target: t.id, path: "cadres/POL2/g1", generation: 1 },
      { target: t.id, path: "cadres/POL1/g1", generation: 2 },
      { target: t.id, path: "cadres/POL1/../g1", generation: 1 },
    ]
  ) {
    await assert.rejects(
      pruneHandler(services(t))(
        fakeCtx({ payload: { policyId: "POL1", repository: bad, restorePointIds: [g1[1]] } }),
      ),
      (e: unknown) => (e as { reason?: string }).reason === "BAD_PAYLOAD",
      JSON.stringify(bad),
    );
  }
});

Deno.test("prune: refuses to forget the parent of a running backup (REPOSITORY_BUSY, retryable), bad payloads named", async () => {
  await using dir = await tempDir();
  const root = `${dir.path}/target`;
  const ids = await repoWithSnapshots(`${root}/cadres/POL1/g1`, `${dir.path}/src`, 2);
  const lock = await acquireLock(new LocalBackend(`${root}/cadres/POL1/g1`), {
    kind: "backup",
    parent: ids[1],
  });
  try {
    const t = target({ config: { path: root } });
    await assert.rejects(
      pruneHandler(services(t))(
        fakeCtx({ payload: { policyId: "POL1", targetId: t.id, restorePointIds: [ids[1]] } }),
      ),
      (e: unknown) =>
        e instanceof Error && (e as { reason?: string }).reason === "REPOSITORY_BUSY" &&
        (e as { retryable?: boolean }).retryable === true && /parent of a running backup/.test(e.message),
    );
    assert.ok(await new LocalBackend(`${root}/cadres/POL1/g1`).exists(`snapshots/${ids[1]}`));
    await assert.rejects(
      pruneHandler(services(t))(
        fakeCtx({ payload: { policyId: "../x", targetId: t.id, restorePointIds: ["a"] } }),
      ),
      (e: unknown) =>
        (e as { reason?: string }).reason === "BAD_PAYLOAD" && /policyId/.test((e as Error).message),
    );
    await assert.rejects(
      pruneHandler(services(t))(
        fakeCtx({ payload: { policyId: "POL1", targetId: "OTHER", restorePointIds: ["a"] } }),
      ),
      (e: unknown) => (e as { reason?: string }).reason === "TARGET_UNKNOWN",
    );
  } finally {
    await lock.release();
  }
});

Deno.test("prune: a gc that cannot run (another is live) fails the job retryable, listing what was removed already", async () => {
  await using dir = await tempDir();
  const root = `${dir.path}/target`;
  const g1 = await repoWithSnapshots(`${root}/cadres/POL1/g1`, `${dir.path}/src1`, 2);
  const g2 = await repoWithSnapshots(`${root}/cadres/POL1/g2`, `${dir.path}/src2`, 2);
  const other = await acquireLock(new LocalBackend(`${root}/cadres/POL1/g2`), { kind: "gc" });
  try {
    const t = target({ config: { path: root } });
    const out = await pruneHandler(services(t))(fakeCtx({
      payload: { policyId: "POL1", targetId: t.id, restorePointIds: [g1[0], g2[0]] },
    }));
    assert.equal(out.status, "failed");
    assert.equal(out.retryable, true);
    assert.equal(out.error?.reason, "REPOSITORY_BUSY");
    assert.match(
      out.error!.message,
      /Another gc is running[\s\S]*2 restore points were removed before it stopped/,
    );
    const pruned = out.output!.pruned as { restorePointIds: string[] };
    assert.deepEqual(pruned.restorePointIds.sort(), [g1[0], g2[0]].sort());
  } finally {
    await other.release();
  }
  // The retry finishes: nothing left to forget (absent), gc runs.
  const t = target({ config: { path: root } });
  const retry = await pruneHandler(services(t))(fakeCtx({
    payload: { policyId: "POL1", targetId: t.id, restorePointIds: [g1[0], g2[0]] },
  }));
  assert.equal(retry.error?.reason, "SNAPSHOTS_ABSENT");
  const repos = (retry.output!.pruned as { repositories: { condemnedPacks: number }[] }).repositories;
  assert.ok(repos[1].condemnedPacks > 0, "the second generation's gc ran this time");
});

Deno.test("verify: a point's snapshot checked structurally; a missing snapshot or pack fails it; a target verify walks every repository", async () => {
  await using dir = await tempDir();
  const root = `${dir.path}/target`;
  const ids = await repoWithSnapshots(`${root}/cadres/POL1/g1`, `${dir.path}/src`, 2);
  await repoWithSnapshots(`${root}/cadres/POL2/g3`, `${dir.path}/src2`, 1);
  const t = target({ config: { path: root } });
  const verify = verifyHandler(services(t));
  const point = (extra: Record<string, unknown>) =>
    fakeCtx({ kind: "verify", payload: { restorePointId: "RP", policyId: "POL1", ...extra } });

  const sampled = await verify(point({ engineRestorePointId: ids[0], targetId: t.id, sampleCount: 5 }));
  assert.equal(sampled.status, "warning");
  assert.equal(sampled.error?.reason, "NOT_IMPLEMENTED");
  assert.equal((sampled.output!.verification as { status: string }).status, "partial");
  // No targetId (older control planes): found among the BES's targets.
  const found = await verify(point({ engineRestorePointId: ids[1] }));
  assert.equal(found.status, "success", JSON.stringify(found));
  const v = found.output!.verification as { status: string; snapshots: number; failedCount: number };
  assert.deepEqual([v.status, v.snapshots, v.failedCount], ["passed", 1, 0]);

  const missing = await verify(point({ engineRestorePointId: "e".repeat(64), targetId: t.id }));
  assert.equal(missing.status, "failed");
  assert.equal(missing.error?.reason, "VERIFY_MISMATCH");
  assert.match(missing.error!.message, /has no snapshot in any repository of policy POL1/);
  // With the repository the payload names: found there, and only there.
  const repository = { target: t.id, path: "cadres/POL1/g1", generation: 1 };
  const named = await verify(point({ engineRestorePointId: ids[0], repository }));
  assert.equal(named.status, "success", JSON.stringify(named));
  const elsewhere = await verify(
    point({
      engineRestorePointId: ids[0],
      repository: { ...repository, path: "cadres/POL1/g2", generation: 2 },
    }),
  );
  assert.equal(elsewhere.error?.reason, "VERIFY_MISMATCH");
  assert.match(elsewhere.error!.message, /has no snapshot in repository cadres\/POL1\/g2 on /);

  const whole = await verify(
    fakeCtx({ kind: "verify", payload: { scope: "storage_target", targetId: t.id } }),
  );
  assert.equal(whole.status, "success");
  const w = whole.output!.verification as { repositories: number; snapshots: number };
  assert.deepEqual([w.repositories, w.snapshots], [2, 3]);

  const backend = new LocalBackend(`${root}/cadres/POL2/g3`);
  const pack = (await Array.fromAsync(backend.list("data/")))[0];
  await backend.delete(pack.name);
  const broken = await verify(
    fakeCtx({ kind: "verify", payload: { scope: "storage_target", targetId: t.id } }),
  );
  assert.equal(broken.status, "failed");
  const packId = pack.name.slice(pack.name.lastIndexOf("/") + 1);
  const firstLine = broken.error!.message.split("\n")[0];
  assert.match(firstLine, /cadres\/POL2\/g3/);
  assert.ok(firstLine.includes(packId), firstLine);
});

// ---------------------------------------------------------------------------------------------------
// job runner: progress replies, cancel, lease lost

/** A control plane stand-in for the job endpoints. */
function fakeControlPlane(progressReplies: Array<{ status: number; body: Record<string, unknown> }>) {
  const posts: { path: string; body: Record<string, unknown> }[] = [];
  const fetcher = (url: string, init: RequestInit) => {
    const path = new URL(url).pathname;
    const body = JSON.parse(String(init.body ?? "{}"));
    posts.push({ path, body });
    if (path.endsWith("/progress")) {
      const r = progressReplies.shift() ?? { status: 200, body: { leaseExpiresAt: "later", cancel: false } };
      return Response.json(r.body, { status: r.status });
    }
    if (path.endsWith("/result")) return Response.json({ applied: true });
    return Response.json({ jobs: [] });
  };
  return { client: new EngineClient("http://cp.test", fetcher), posts };
}

function runner(client: EngineClient, handler: (ctx: JobContext) => Promise<JobOutcome>) {
  const pair = generateKeyPair();
  return new JobRunner({
    client,
    identity: () => ({ kind: "bes", id: "01KBES00000000000000000000", ...pair }),
    handlers: { verify: handler },
    fallback: () => Promise.resolve({ status: "failed", error: { reason: "X", message: "x" } }),
    log: quiet,
    maxJobs: 1,
    pollMs: 1000,
    progressMs: 20,
  });
}

const JOB: ClaimedJob = {
  id: "01KJOB00000000000000000000",
  kind: "verify",
  priority: "normal",
  payload: {},
  leaseExpiresAt: "",
};

Deno.test("job runner: progress at once and every few ms, the latest reply kept for the job, the result in the protocol's shape", async () => {
  const cp = fakeControlPlane([
    { status: 200, body: { leaseExpiresAt: "t1", cancel: false, dataToken: "first" } },
    { status: 200, body: { leaseExpiresAt: "t2", cancel: false, dataToken: "second" } },
  ]);
  let seen: unknown[] = [];
  await runner(cp.client, async (ctx) => {
    seen.push(ctx.lastProgressReply?.dataToken);
    ctx.progress({ percent: 50, message: "half", bytesTransferred: 10 });
    await new Promise((r) => setTimeout(r, 120));
    seen.push(ctx.lastProgressReply?.dataToken);
    return { status: "success", output: { verification: { status: "passed" } } };
  }).runJob(JOB);
  seen = seen.map(String);
  assert.deepEqual(seen[0], "first");
  assert.notEqual(seen[1], "first");
  const progress = cp.posts.filter((p) => p.path.endsWith("/progress"));
  assert.ok(progress.length >= 3, `${progress.length} progress reports`);
  assert.ok(progress.some((p) => p.body.message === "half" && p.body.percent === 50));
  const results = cp.posts.filter((p) => p.path.endsWith("/result"));
  assert.equal(results.length, 1);
  const r = results[0].body;
  assert.equal(r.status, "success");
  assert.equal(r.error, null);
  assert.ok(Date.parse(r.endedAt as string) >= Date.parse(r.startedAt as string));
  assert.deepEqual(r.output, { verification: { status: "passed" } });
});

Deno.test("job runner: a cancel in a progress reply aborts the job (CANCELLED); a lost lease posts no result", async () => {
  const cancelled = fakeControlPlane([
    { status: 200, body: { leaseExpiresAt: "t", cancel: false } },
    { status: 200, body: { leaseExpiresAt: "t", cancel: true } },
  ]);
  await runner(cancelled.client, async (ctx) => {
    await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
    ctx.signal.throwIfAborted();
    return { status: "success" };
  }).runJob(JOB);
  const result = cancelled.posts.find((p) => p.path.endsWith("/result"))!.body;
  assert.equal(result.status, "failed");
  assert.deepEqual(result.error, { reason: "CANCELLED", message: "The job was cancelled" });

  const lost = fakeControlPlane([
    { status: 200, body: { leaseExpiresAt: "t", cancel: false } },
    { status: 409, body: { error: { code: "conflict", message: "lease expired" } } },
  ]);
  await runner(lost.client, async (ctx) => {
    await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
    return { status: "success" };
  }).runJob(JOB);
  assert.equal(lost.posts.filter((p) => p.path.endsWith("/result")).length, 0);
});

// ---------------------------------------------------------------------------------------------------
// job runner: a result the control plane could not take now (503 busy, network) is re-sent, never dropped

/**
 * A control plane whose result endpoint answers from `script` (then 200 `{ applied }`, where `applied` is
 * false once an earlier send was recorded); `record` marks a scripted answer given after recording the
 * result (its answer lost). Keeps each result send's nonce.
 */
function resultControlPlane(
  script: Array<{ status: number; code?: string; retryAfter?: string; record?: boolean } | "network">,
) {
  const sends: { nonce: string; body: Record<string, unknown> }[] = [];
  let recorded = 0;
  const fetcher = (url: string, init: RequestInit) => {
    const path = new URL(url).pathname;
    if (path.endsWith("/progress")) return Response.json({ leaseExpiresAt: "later", cancel: false });
    if (!path.endsWith("/result")) return Response.json({ jobs: [] });
    const headers = init.headers as Record<string, string>;
    sends.push({ nonce: headers["x-cadres-nonce"], body: JSON.parse(String(init.body)) });
    const step = script.shift();
    if (step === "network") throw new TypeError("error sending request: connection refused");
    if (step) {
      if (step.record) recorded++;
      return Response.json({ error: { code: step.code ?? "busy", message: "try again" } }, {
        status: step.status,
        headers: step.retryAfter ? { "retry-after": step.retryAfter } : {},
      });
    }
    recorded++;
    return Response.json({ applied: recorded === 1 });
  };
  return { client: new EngineClient("http://cp.test", fetcher), sends, recorded: () => recorded };
}

function retryRunner(client: EngineClient, lines: string[], waits: number[]) {
  const pair = generateKeyPair();
  return new JobRunner({
    client,
    identity: () => ({ kind: "bes", id: "01KBES00000000000000000000", ...pair }),
    handlers: {
      verify: () => Promise.resolve({ status: "success", output: { verification: { status: "passed" } } }),
    },
    fallback: () => Promise.resolve({ status: "failed", error: { reason: "X", message: "x" } }),
    log: createLogger("info", (line) => lines.push(line)),
    maxJobs: 1,
    pollMs: 1000,
    progressMs: 60_000,
    resultRetry: {
      sleep: (ms) => {
        waits.push(ms);
        return Promise.resolve();
      },
    },
  });
}

const logged = (lines: string[], msg: string) =>
  lines.map((l) => JSON.parse(l)).filter((l: { msg: string }) => l.msg === msg);

Deno.test("job runner: 503 busy twice then 200: the result is delivered once, each retry newly signed and logged with the job id", async () => {
  const cp = resultControlPlane([{ status: 503, retryAfter: "1" }, { status: 503, retryAfter: "1" }]);
  const lines: string[] = [];
  const waits: number[] = [];
  await retryRunner(cp.client, lines, waits).runJob(JOB);
  assert.equal(cp.sends.length, 3, "two refused sends and the one that was recorded");
  assert.equal(cp.recorded(), 1, "recorded exactly once");
  assert.equal(new Set(cp.sends.map((s) => s.nonce)).size, 3, "a fresh nonce each send (never a replay)");
  assert.deepEqual(cp.sends[1].body, cp.sends[0].body, "the same result each time (a duplicate is a no-op)");
  assert.deepEqual(cp.sends[2].body, cp.sends[0].body);
  const retries = logged(lines, "result not delivered; retrying");
  assert.deepEqual(retries.map((r) => [r.jobId, r.retry, r.status, r.problem]), [
    [JOB.id, 1, 503, "busy"],
    [JOB.id, 2, 503, "busy"],
  ]);
  assert.ok(waits.every((w) => w >= 1000), `Retry-After honoured: ${waits}`);
  assert.ok(
    !lines.some((l) => /privateKey|x-cadres-signature|nonce/i.test(l)),
    "no key, signature or nonce logged",
  );
  assert.equal(logged(lines, "job finished").length, 1);
  assert.equal(logged(lines, "result refused").length, 0);
});

Deno.test("job runner: a result recorded but its answer lost is re-sent and answered as already applied; a 409 is final", async () => {
  // The first send was recorded but the answer lost (network); the control plane then answers busy.
  const cp = resultControlPlane([{ status: 502, code: "bad_gateway", record: true }, "network"]);
  const lines: string[] = [];
  const waits: number[] = [];
  const ok = await retryRunner(cp.client, lines, waits).postResult(JOB, new Date(), { status: "success" });
  assert.equal(ok, true);
  assert.equal(cp.sends.length, 3);
  assert.equal(cp.recorded(), 2, "the control plane saw the duplicate");
  const [finished] = logged(lines, "job finished");
  assert.equal(finished.alreadyApplied, true, "the duplicate's answer is applied: false");
  assert.equal(logged(lines, "result not delivered; retrying").length, 2);
  // Jittered exponential backoff: each wait within [½, 1] of 1 s · 2^(retry − 1).
  assert.ok(waits[0] >= 500 && waits[0] <= 1000 && waits[1] >= 1000 && waits[1] <= 2000, `${waits}`);

  // 409 (a different result exists, or the lease expired): refused at once, not re-sent.
  const refused = resultControlPlane([{ status: 409, code: "conflict" }]);
  const refusedLines: string[] = [];
  assert.equal(
    await retryRunner(refused.client, refusedLines, []).postResult(JOB, new Date(), { status: "success" }),
    false,
  );
  assert.equal(refused.sends.length, 1);
  assert.equal(logged(refusedLines, "result refused").length, 1);
});

Deno.test("job runner: a control plane busy past the retry budget: the result is reported undelivered, never as finished", async () => {
  const cp = resultControlPlane(Array.from({ length: 50 }, () => ({ status: 503 })));
  const lines: string[] = [];
  let clock = 0;
  const pair = generateKeyPair();
  const runner = new JobRunner({
    client: cp.client,
    identity: () => ({ kind: "bes", id: "01KBES00000000000000000000", ...pair }),
    handlers: {},
    fallback: () => Promise.resolve({ status: "success" }),
    log: createLogger("info", (line) => lines.push(line)),
    maxJobs: 1,
    pollMs: 1000,
    progressMs: 60_000,
    resultRetry: { sleep: (ms) => Promise.resolve(void (clock += ms)), now: () => clock },
  });
  assert.equal(await runner.postResult(JOB, new Date(), { status: "success" }), false);
  assert.ok(clock <= 120_000, `within the budget: ${clock} ms`);
  assert.ok(cp.sends.length >= 6, `${cp.sends.length} sends`);
  assert.equal(logged(lines, "result could not be delivered").length, 1);
  assert.equal(logged(lines, "job finished").length, 0);
});
