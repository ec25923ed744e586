/**
 * Self-backup operations (domain/self_backup_runs.ts) and the Health > Backup API: retention clean-up,
 * the free-disk refusal, manual backups and how health is judged, the S3 copy against a real s3rver on
 * loopback with its 5-minute reachability cache, every field of the spec's Health > Backup table, the
 * schedule, restarting the worker, and settings validation.
 *
 * Each test owns an in-memory KV and a temporary data folder (removed afterwards); every time comes
 * from an explicit clock.
 */
import assert from "node:assert/strict";
import { AwsClient } from "aws4fetch";
import S3rver from "s3rver";
import { z } from "zod";
import { createApp } from "../../app.ts";
import { userActor } from "../../domain/auth.ts";
import { createApiToken } from "../../domain/api_tokens.ts";
import { testConfig } from "../../domain/config.ts";
import { ConflictError, ForbiddenError } from "../../domain/errors.ts";
import { newId } from "../../domain/ids.ts";
import { createLogger } from "../../domain/log.ts";
import { type Actor, systemActor } from "../../domain/rbac.ts";
import { classifyKey, type DatabaseName, readBundleHeader, restoreBundle } from "../../domain/self_backup.ts";
import {
  backupHealth,
  cleanupBundles,
  getSettings,
  nextRun,
  restartWorker,
  runBackup,
  runScheduledBackups,
  S3_PROBE_TTL_MS,
  s3Reachability,
  type SelfBackupSettingsInput,
  type Trigger,
  triggerManualBackup,
  updateSettings,
} from "../../domain/self_backup_runs.ts";
import { openSecret, vaultKey, type VaultRecord } from "../../domain/vault.ts";
import { BackupHealthSchema } from "../../routes/self_backup.tsx";
import {
  addUser,
  assertExcludes,
  auditEntries,
  Browser,
  createTenant,
  dumpKv,
  freePort,
  signInAs,
  TestClock,
} from "../helpers.ts";

const masterKey = testConfig().masterKey!;
const T0 = new Date("2026-11-22T10:00:00Z");
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const SETTINGS_KEY = ["self_backup", "settings"];
const WORKER_KEY = ["self_backup_state", "worker"];

// ---------------------------------------------------------------------------------------------------
// Fixture

interface Fixture extends AsyncDisposable {
  kv: Deno.Kv;
  dataDir: string;
  /** The backups folder the tests configure (`<dataDir>/backups`, also the default). */
  dir: string;
  clock: TestClock;
  opts: { clock: () => Date; masterKey: Uint8Array; dataDir: string };
}

/** A fresh in-memory KV, a temporary data folder and a clock at `start`; disposed with `await using`. */
async function fixture(start = T0): Promise<Fixture> {
  const kv = await Deno.openKv(":memory:");
  const dataDir = await Deno.makeTempDir({ prefix: "cadres-self-backup-" });
  const clock = new TestClock(new Date(start));
  return {
    kv,
    dataDir,
    dir: `${dataDir}/backups`,
    clock,
    opts: { clock: clock.now, masterKey, dataDir },
    async [Symbol.asyncDispose]() {
      kv.close();
      await Deno.remove(dataDir, { recursive: true });
    },
  };
}

type S3Input = SelfBackupSettingsInput["s3"];
interface SettingsPatch {
  config?: Partial<{ enabled: boolean; hour: number; retentionDays: number }>;
  results?: Partial<{ enabled: boolean; hour: number; retentionDays: number }>;
  directory?: string;
  minFreeBytes?: number;
  s3?: Partial<S3Input>;
}

/** A complete settings input (config 02:00/14 d, results 03:00/7 d, no free-disk minimum, S3 off). */
function settingsInput(dir: string, patch: SettingsPatch = {}): SelfBackupSettingsInput {
  return {
    config: { enabled: true, hour: 2, retentionDays: 14, ...patch.config },
    results: { enabled: true, hour: 3, retentionDays: 7, ...patch.results },
    directory: patch.directory ?? dir,
    minFreeBytes: patch.minFreeBytes ?? 0,
    s3: {
      enabled: false,
      endpoint: "",
      bucket: "",
      region: "us-east-1",
      prefix: "",
      accessKeyId: "",
      secretAccessKey: "",
      ...patch.s3,
    },
  };
}

async function configure(f: Fixture, patch: SettingsPatch = {}, actor: Actor = systemActor("test")) {
  return await updateSettings(f.kv, actor, settingsInput(f.dir, patch), {
    now: f.clock.now(),
    masterKey,
    dataDir: f.dataDir,
  });
}

async function health(f: Fixture, actor: Actor = systemActor("test")) {
  return await backupHealth(f.kv, actor, { now: f.clock.now(), masterKey, dataDir: f.dataDir });
}

async function backup(f: Fixture, database: DatabaseName, requestedBy = "test") {
  return await runBackup(f.kv, { database, kind: "manual", requestedBy }, f.opts);
}

/** The file names in `dir`, sorted ([] when it does not exist). */
async function filesIn(dir: string): Promise<string[]> {
  try {
    return (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

/** `2026-11-22T10:00:00.000Z` → `20261122T100000Z`, the timestamp in bundle names. */
function stamp(at: Date): string {
  return at.toISOString().replace(/[-:]/g, "").replace(/\.\d+Z$/, "Z");
}

/** Writes a file named like a bundle of `db` created at `at` (the clean-up only reads names). */
async function fakeBundle(dir: string, db: DatabaseName, at: Date, tag = "abc123"): Promise<string> {
  const name = `${db}-${stamp(at)}-${tag}.cadres-bundle`;
  await Deno.mkdir(dir, { recursive: true });
  await Deno.writeFile(`${dir}/${name}`, new Uint8Array(64), { mode: 0o600 });
  return name;
}

function ago(now: Date, ms: number): Date {
  return new Date(now.getTime() - ms);
}

/** The operator account (created first) with an all-scope admin, and a second account with its admin. */
async function tenants(f: Fixture) {
  const now = f.clock.now();
  const operator = await createTenant(f.kv, "Operator", ["Main", "Lab"], now);
  const other = await createTenant(f.kv, "Other Co", ["HQ"], now);
  const admin = await addUser(f.kv, operator, "root@operator.example", "admin", "all", now);
  const otherAdmin = await addUser(f.kv, other, "admin@other.example", "admin", "all", now);
  return { operator, other, admin, otherAdmin };
}

/** An s3rver on a loopback port with bucket "bucket"; files under `directory`. */
async function startS3rver(directory: string) {
  const port = freePort();
  const server = new S3rver({
    port,
    address: "127.0.0.1",
    silent: true,
    directory,
    configureBuckets: [{ name: "bucket" }],
  });
  await server.run();
  let running = true;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    async close() {
      if (running) await server.close();
      running = false;
    },
  };
}

/** The object keys under `prefix` in an s3rver bucket, and a way to read one (path-style, SigV4). */
function s3Client(endpoint: string, bucket: string) {
  const client = new AwsClient({
    accessKeyId: "S3RVER",
    secretAccessKey: "S3RVER",
    region: "us-east-1",
    service: "s3",
    retries: 0,
  });
  return {
    async list(prefix: string): Promise<string[]> {
      const res = await client.fetch(
        `${endpoint}/${bucket}?list-type=2&prefix=${encodeURIComponent(prefix)}`,
      );
      const xml = await res.text();
      assert.equal(res.status, 200, xml);
      return [...xml.matchAll(/<Key>([^<]*)<\/Key>/g)].map((m) => m[1]).sort();
    },
    async get(key: string): Promise<Uint8Array> {
      const res = await client.fetch(`${endpoint}/${bucket}/${key}`);
      assert.equal(res.status, 200);
      return new Uint8Array(await res.arrayBuffer());
    },
  };
}

/** Writes what a backup in progress leaves behind: the worker claim and a "running" trigger record. */
async function simulateRunningBackup(kv: Deno.Kv, at: Date, database: DatabaseName = "config") {
  const id = newId(at);
  const trigger: Trigger = {
    id,
    database,
    kind: "manual",
    requestedBy: "someone@operator.example",
    requestedAt: at.toISOString(),
    finishedAt: null,
    status: "running",
    error: null,
    progress: { phase: "exporting", entries: 1000 },
    bundle: null,
    s3: { status: "skipped", error: null },
    verification: { status: "skipped", error: null },
  };
  await kv.atomic()
    .set(["self_backup_triggers", id], trigger)
    .set(WORKER_KEY, { triggerId: id, since: at.toISOString() })
    .commit();
  return trigger;
}

async function triggerRecord(kv: Deno.Kv, id: string): Promise<Trigger | null> {
  return (await kv.get<Trigger>(["self_backup_triggers", id])).value;
}

function isConflict(e: unknown): boolean {
  return e instanceof ConflictError;
}

// ---------------------------------------------------------------------------------------------------
// 1. Retention clean-up

Deno.test("cleanupBundles() removes bundles of one database older than its retention, never the newest, never the other database's", async () => {
  await using f = await fixture();
  const now = T0;
  const config = {
    d30: await fakeBundle(f.dir, "config", ago(now, 30 * DAY), "aaaaa1"),
    d10: await fakeBundle(f.dir, "config", ago(now, 10 * DAY), "aaaaa2"),
    justOver7: await fakeBundle(f.dir, "config", ago(now, 7 * DAY + 1000), "aaaaa3"),
    exactly7: await fakeBundle(f.dir, "config", ago(now, 7 * DAY), "aaaaa4"),
    d3: await fakeBundle(f.dir, "config", ago(now, 3 * DAY), "aaaaa5"),
    h1: await fakeBundle(f.dir, "config", ago(now, HOUR), "aaaaa6"),
  };
  const results = {
    d30: await fakeBundle(f.dir, "results", ago(now, 30 * DAY), "bbbbb1"),
    d20: await fakeBundle(f.dir, "results", ago(now, 20 * DAY), "bbbbb2"),
  };
  // Files that are not bundles are never touched.
  await Deno.writeTextFile(`${f.dir}/README.txt`, "not a bundle");
  await Deno.writeTextFile(`${f.dir}/config-20200101T000000Z.partial`, "not a bundle either");

  const removed = await cleanupBundles(f.dir, "config", 7, now);
  assert.deepEqual(removed.sort(), [config.d30, config.d10, config.justOver7].sort());
  assert.deepEqual(
    await filesIn(f.dir),
    [
      config.exactly7,
      config.d3,
      config.h1,
      results.d30,
      results.d20,
      "README.txt",
      "config-20200101T000000Z.partial",
    ].sort(),
    "a bundle exactly at the retention limit is kept; results bundles and other files are untouched",
  );
  assert.deepEqual(await cleanupBundles(f.dir, "config", 7, now), [], "idempotent");

  // Far in the future every config bundle is out of retention: the newest one is still kept.
  const later = new Date(now.getTime() + 100 * DAY);
  assert.deepEqual(
    (await cleanupBundles(f.dir, "config", 7, later)).sort(),
    [config.exactly7, config.d3].sort(),
  );
  assert.ok((await filesIn(f.dir)).includes(config.h1), "the newest config bundle survives");
  assert.ok((await filesIn(f.dir)).includes(results.d30), "results untouched by a config clean-up");

  // The results clean-up follows its own rule, again keeping its newest.
  assert.deepEqual(await cleanupBundles(f.dir, "results", 7, later), [results.d30]);
  assert.deepEqual(
    await filesIn(f.dir),
    [config.h1, results.d20, "README.txt", "config-20200101T000000Z.partial"].sort(),
  );

  // A missing folder has nothing to clean.
  assert.deepEqual(await cleanupBundles(`${f.dataDir}/missing`, "config", 7, now), []);
});

Deno.test("runBackup() applies the retention of its own database after each run (real bundles, moving clock)", async () => {
  await using f = await fixture();
  await configure(f, { config: { retentionDays: 7 }, results: { retentionDays: 7 } });
  const results0 = await backup(f, "results");
  assert.equal(results0.status, "success", results0.error ?? "");
  const kept: Array<{ day: number; file: string }> = [];
  for (const day of [0, 3, 6, 9, 12]) {
    f.clock.time = new Date(T0.getTime() + day * DAY);
    const t = await backup(f, "config");
    assert.equal(t.status, "success", t.error ?? "");
    kept.push({ day, file: t.bundle!.file });
    const expected = kept.filter((k) => day - k.day <= 7).map((k) => k.file);
    const configFiles = (await filesIn(f.dir)).filter((n) => n.startsWith("config-"));
    assert.deepEqual(configFiles, expected.sort(), `after the day-${day} run`);
  }
  assert.deepEqual(
    (await filesIn(f.dir)).filter((n) => n.startsWith("config-")),
    kept.filter((k) => k.day >= 6).map((k) => k.file).sort(),
  );
  assert.ok(
    (await filesIn(f.dir)).includes(results0.bundle!.file),
    "a 12-day-old results bundle is not removed by config runs",
  );
  const results12 = await backup(f, "results");
  assert.equal(results12.status, "success");
  assert.deepEqual((await filesIn(f.dir)).filter((n) => n.startsWith("results-")), [results12.bundle!.file]);
});

Deno.test("a backup that fails verification does not clean up the older, verified bundles", async () => {
  await using f = await fixture();
  await tenants(f);
  await configure(f, { config: { retentionDays: 7 } });
  f.clock.time = ago(T0, 10 * DAY);
  const good1 = await backup(f, "config");
  f.clock.time = ago(T0, 9 * DAY);
  const good2 = await backup(f, "config");
  assert.equal(good1.verification.status, "passed");
  assert.equal(good2.verification.status, "passed");
  // A dangling index makes the Config DB fail its invariant check: the new bundle is not restorable.
  await f.kv.set(["users_by_email", "ghost@operator.example"], "no-such-user");
  f.clock.time = T0;
  const bad = await backup(f, "config");
  assert.equal(bad.verification.status, "failed");
  assert.equal(bad.status, "failed");
  assert.match(bad.error ?? "", /Verification failed: invariant check failed/);
  const files = await filesIn(f.dir);
  assert.ok(
    files.includes(good2.bundle!.file),
    "the newest verified-restorable bundle must survive a run whose bundle is not restorable",
  );
  assert.ok(files.includes(good1.bundle!.file));
});

// ---------------------------------------------------------------------------------------------------
// 2. Low disk

Deno.test("runBackup() refuses when free disk is below the minimum: no bundle, a failed trigger, health says so", async () => {
  await using f = await fixture();
  await configure(f, { minFreeBytes: 2 ** 52 });
  const t = await backup(f, "config", "root@operator.example");
  assert.equal(t.status, "failed");
  assert.match(t.error ?? "", /free disk .* below the minimum/i);
  assert.equal(t.bundle, null);
  assert.equal(t.verification.status, "skipped");
  assert.ok(t.finishedAt);
  assert.deepEqual(
    (await filesIn(f.dir)).filter((n) => n.endsWith(".cadres-bundle")),
    [],
    "no bundle file written",
  );
  assert.equal((await triggerRecord(f.kv, t.id))?.status, "failed");
  const h = await health(f);
  assert.equal(h.freeDiskBelowMinimum, true);
  assert.equal(h.minFreeBytes, 2 ** 52);
  assert.ok(h.freeDiskBytes > 0 && h.freeDiskBytes < 2 ** 52);
  assert.equal(h.health, "unhealthy");
  assert.deepEqual(
    [h.totalTriggers, h.successfulTriggers, h.failedTriggers],
    [1, 0, 1],
  );
  assert.equal(h.bundleCount, 0);
  assert.equal(h.recentTriggers[0].id, t.id);
  assert.match(h.recentTriggers[0].error ?? "", /below the minimum/);
  assert.equal(h.lastVerifiedRestorable.config, null);
  assert.equal(h.running, null, "the worker is free again");
});

// ---------------------------------------------------------------------------------------------------
// 3. Manual backup, and how health is judged

Deno.test("a manual backup writes a 0600 bundle that verifies restorable and is recorded with who asked", async () => {
  await using f = await fixture();
  const { operator, admin } = await tenants(f);
  await configure(f, {}, userActor(admin));
  const t = await triggerManualBackup(f.kv, userActor(admin), "config", f.opts);
  assert.equal(t.status, "success", t.error ?? "");
  assert.equal(t.error, null);
  assert.equal(t.kind, "manual");
  assert.equal(t.requestedBy, admin.email);
  assert.equal(t.requestedAt, T0.toISOString());
  assert.equal(t.finishedAt, T0.toISOString());
  assert.equal(t.verification.status, "passed");
  assert.equal(t.s3.status, "skipped", "no S3 copy configured");
  assert.ok(t.bundle && t.bundle.consistent && t.bundle.entries > 0);

  const path = `${f.dir}/${t.bundle.file}`;
  const info = await Deno.stat(path);
  assert.equal(info.mode! & 0o777, 0o600, "bundles hold every account's data: owner-only");
  assert.equal(info.size, t.bundle.bytes);
  const bytes = await Deno.readFile(path);
  const { header } = readBundleHeader(bytes);
  assert.equal(header.database, "config");
  assert.equal(header.entryCount, t.bundle.entries);
  using scratch = await Deno.openKv(":memory:");
  assert.equal((await restoreBundle(scratch, bytes, masterKey)).written, t.bundle.entries);

  const h = await health(f, userActor(admin));
  assert.equal(h.health, "healthy");
  assert.deepEqual([h.totalTriggers, h.successfulTriggers, h.failedTriggers], [1, 1, 0]);
  assert.equal(h.lastVerifiedRestorable.config, T0.toISOString());
  assert.equal(h.lastVerifiedRestorable.results, null);
  assert.equal(h.bundleCount, 1);
  assert.equal(h.totalSizeBytes, info.size);
  // Bundle times come from the file names (whole seconds).
  assert.equal(Date.parse(h.newestBundle!), T0.getTime());
  assert.equal(Date.parse(h.oldestBundle!), T0.getTime());
  assert.equal(h.recentTriggers[0].requestedBy, admin.email);
  assert.equal(h.recentTriggers[0].status, "success");
  assert.ok(
    (await auditEntries(f.kv, operator.account.id)).some((e) => e.action === "self_backup.trigger"),
    "the request is audited",
  );
});

Deno.test("backup health is judged by the most recent completed trigger only", async () => {
  await using f = await fixture();
  assert.equal((await health(f)).health, "unknown", "no trigger yet");

  await configure(f, { minFreeBytes: 2 ** 52 });
  assert.equal((await backup(f, "config")).status, "failed");
  assert.equal((await health(f)).health, "unhealthy");

  f.clock.advance(HOUR);
  await configure(f, { minFreeBytes: 0 });
  assert.equal((await backup(f, "results")).status, "success");
  let h = await health(f);
  assert.equal(h.health, "healthy", "a single past failure does not keep health unhealthy");
  assert.deepEqual([h.totalTriggers, h.successfulTriggers, h.failedTriggers], [2, 1, 1]);

  // A trigger still running is not completed: it does not change the judgement.
  f.clock.advance(HOUR);
  await simulateRunningBackup(f.kv, f.clock.now());
  assert.equal((await health(f)).health, "healthy");
  await restartWorker(f.kv, systemActor("test"), f.clock.now());

  f.clock.advance(HOUR);
  await configure(f, { minFreeBytes: 2 ** 52 });
  assert.equal((await backup(f, "config")).status, "failed");
  h = await health(f);
  assert.equal(h.health, "unhealthy", "success followed by a failure");
});

// ---------------------------------------------------------------------------------------------------
// 4. S3 copy against a real s3rver

const S3_SECRET = `s3-secret-${crypto.randomUUID()}`;

function s3Settings(endpoint: string, prefix = "cadres/self"): SettingsPatch["s3"] {
  return {
    enabled: true,
    endpoint,
    bucket: "bucket",
    region: "us-east-1",
    prefix,
    accessKeyId: "S3RVER",
    // s3rver accepts any secret; a unique one lets the test look for leaks.
    secretAccessKey: S3_SECRET,
  };
}

Deno.test("S3 copy: uploads each bundle, caches reachability 5 minutes, reports an unreachable endpoint clearly; the secret stays in the vault", async () => {
  await using f = await fixture();
  const s3dir = await Deno.makeTempDir({ prefix: "cadres-s3rver-" });
  const s3 = await startS3rver(s3dir);
  try {
    const { admin } = await tenants(f);
    await configure(f, { s3: s3Settings(s3.endpoint) }, userActor(admin));

    // The secret is in the vault, sealed; the settings hold only a reference.
    const settings = await getSettings(f.kv, f.dataDir);
    assert.ok(settings.s3.credentialId);
    assert.equal("secretAccessKey" in settings.s3, false);
    assertExcludes(JSON.stringify(settings), S3_SECRET, "the S3 secret in the settings");
    const record = (await f.kv.get<VaultRecord>(vaultKey(settings.s3.credentialId))).value;
    assert.ok(record);
    assert.equal(await openSecret(masterKey, record), S3_SECRET);
    assertExcludes(JSON.stringify(await dumpKv(f.kv)), S3_SECRET, "the S3 secret in plaintext in the KV");

    // A backup uploads its bundle under the prefix, byte for byte.
    const t = await backup(f, "results", admin.email);
    assert.equal(t.s3.status, "uploaded", t.s3.error ?? "");
    assert.equal(t.status, "success", t.error ?? "");
    const client = s3Client(s3.endpoint, "bucket");
    assert.deepEqual(await client.list("cadres/self/"), [`cadres/self/${t.bundle!.file}`]);
    assert.deepEqual(
      await client.get(`cadres/self/${t.bundle!.file}`),
      await Deno.readFile(`${f.dir}/${t.bundle!.file}`),
    );

    // Reachability, cached for 5 minutes.
    const checked = f.clock.now();
    const first = await s3Reachability(f.kv, { now: checked, masterKey, dataDir: f.dataDir });
    assert.deepEqual(first, { reachable: true, checkedAt: checked.toISOString(), error: null });
    await s3.close();
    const almost = new Date(checked.getTime() + S3_PROBE_TTL_MS - 1);
    assert.deepEqual(
      await s3Reachability(f.kv, { now: almost, masterKey, dataDir: f.dataDir }),
      first,
      "still the cached answer just before 5 minutes",
    );
    f.clock.time = almost;
    let h = await health(f, userActor(admin));
    assert.equal(h.s3Reachable, true);
    assert.equal(h.s3CheckedAt, checked.toISOString());
    assert.equal(h.s3Bucket, "bucket");

    const expired = new Date(checked.getTime() + 5 * MINUTE);
    const second = await s3Reachability(f.kv, { now: expired, masterKey, dataDir: f.dataDir });
    assert.equal(second.reachable, false);
    assert.equal(second.checkedAt, expired.toISOString());
    assert.ok(second.error, "an unreachable endpoint says why");
    f.clock.time = expired;
    h = await health(f, userActor(admin));
    assert.equal(h.s3Reachable, false);
    assert.ok(h.s3Error);

    // With the endpoint down a backup still writes its local bundle, but the trigger fails and says why.
    f.clock.advance(MINUTE);
    const down = await backup(f, "results", admin.email);
    assert.ok(down.bundle, "the local bundle is written");
    assert.ok((await filesIn(f.dir)).includes(down.bundle.file));
    assert.equal(down.verification.status, "passed");
    assert.equal(down.s3.status, "failed");
    assert.ok(down.s3.error);
    assert.equal(down.status, "failed");
    assert.ok(down.error);

    // The health API never shows the secret.
    const app = createApp({
      kv: f.kv,
      config: testConfig({ dataDir: f.dataDir }),
      clock: f.clock.now,
      logger: createLogger("error"),
    });
    const browser = new Browser(app);
    await signInAs(browser, f.kv, admin, f.clock.now());
    const res = await browser.get("/api/health/infra/backup");
    assert.equal(res.status, 200);
    const text = await res.text();
    assertExcludes(text, S3_SECRET, "the S3 secret in the health API");
    assertExcludes(text, settings.s3.credentialId, "the vault record id in the health API");
    assert.equal(JSON.parse(text).s3Bucket, "bucket");

    // Last (so the checks above run whatever this says): the failed copy's error is one a person can act on.
    assert.match(down.error, /S3/, `the error names the S3 copy: ${JSON.stringify(down.error)}`);
    assert.match(down.error, /refused|connect/i, `the error gives the cause: ${JSON.stringify(down.error)}`);
  } finally {
    await s3.close();
    await Deno.remove(s3dir, { recursive: true });
  }
});

Deno.test("with an S3 copy configured, a Config DB backup still verifies restorable (the S3 secret's vault record is referenced)", async () => {
  await using f = await fixture();
  const s3dir = await Deno.makeTempDir({ prefix: "cadres-s3rver-" });
  const s3 = await startS3rver(s3dir);
  try {
    await tenants(f);
    await configure(f, { s3: s3Settings(s3.endpoint, "") });
    const t = await backup(f, "config");
    assert.equal(t.s3.status, "uploaded", t.s3.error ?? "");
    assert.equal(t.verification.status, "passed", t.verification.error ?? "");
    assert.equal(t.status, "success", t.error ?? "");
    assert.deepEqual(await s3Client(s3.endpoint, "bucket").list(""), [t.bundle!.file]);
  } finally {
    await s3.close();
    await Deno.remove(s3dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------------
// 5. GET /api/health/infra/backup against the spec's Fields & Columns table

/** Each row of the spec's Health > Backup "Fields & Columns" table → the JSON fields that carry it. */
const SPEC_ROWS: Record<string, string[]> = {
  "Config DB / Results DB schedule": ["configSchedule", "resultsSchedule"],
  "Config / Results Retention": ["configRetentionDays", "resultsRetentionDays"],
  "Next Config / Results Backup": ["nextConfigBackup", "nextResultsBackup"],
  "Bundle Count": ["bundleCount"],
  "Total Size": ["totalSizeBytes"],
  "Free Disk": ["freeDiskBytes", "freeDiskBelowMinimum"],
  "Min Free Threshold": ["minFreeBytes"],
  "Oldest / Newest Bundle": ["oldestBundle", "newestBundle"],
  "Encryption Status": ["encryption"],
  "S3 Bucket": ["s3Bucket"],
  "S3 Reachable": ["s3Reachable", "s3CheckedAt"],
  "Total / Successful / Failed Triggers": ["totalTriggers", "successfulTriggers", "failedTriggers"],
  "Recent Triggers": ["recentTriggers"],
};

Deno.test("GET /api/health/infra/backup: every field of the spec's table, schema-valid, for the operator's admins only", async () => {
  await using f = await fixture();
  const s3dir = await Deno.makeTempDir({ prefix: "cadres-s3rver-" });
  const s3 = await startS3rver(s3dir);
  try {
    const { operator, admin, otherAdmin } = await tenants(f);
    const viewer = await addUser(f.kv, operator, "viewer@operator.example", "viewer", "all", f.clock.now());
    const scopedAdmin = await addUser(f.kv, operator, "lab-admin@operator.example", "admin", [
      operator.orgs[1],
    ], f.clock.now());
    await configure(f, {
      config: { hour: 2, retentionDays: 14 },
      results: { enabled: false, hour: 5, retentionDays: 30 },
      minFreeBytes: 1024,
      s3: s3Settings(s3.endpoint),
    }, userActor(admin));
    f.clock.time = ago(T0, 2 * DAY);
    const older = await triggerManualBackup(f.kv, userActor(admin), "results", f.opts);
    f.clock.time = T0;
    const newer = await triggerManualBackup(f.kv, userActor(admin), "results", f.opts);
    assert.equal(older.status, "success", older.error ?? "");
    assert.equal(newer.status, "success", newer.error ?? "");

    const app = createApp({
      kv: f.kv,
      config: testConfig({ dataDir: f.dataDir }),
      clock: f.clock.now,
      logger: createLogger("error"),
    });
    const session = new Browser(app);
    await signInAs(session, f.kv, admin, f.clock.now());
    const res = await session.get("/api/health/infra/backup");
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
    const json = await res.json();
    const parsed = BackupHealthSchema.safeParse(json);
    assert.ok(parsed.success, parsed.success ? "" : JSON.stringify(parsed.error.issues));

    for (const [row, fields] of Object.entries(SPEC_ROWS)) {
      for (const field of fields) {
        assert.ok(Object.hasOwn(json, field), `spec row "${row}" needs the field "${field}"`);
      }
    }
    // And what each row says.
    assert.deepEqual(json.configSchedule, { enabled: true, hourUtc: 2 });
    assert.deepEqual(json.resultsSchedule, { enabled: false, hourUtc: 5 });
    assert.equal(json.configRetentionDays, 14);
    assert.equal(json.resultsRetentionDays, 30);
    assert.equal(json.nextConfigBackup, "2026-11-23T02:00:00.000Z");
    assert.equal(json.nextResultsBackup, null, "disabled: no next backup");
    const files = (await filesIn(f.dir)).filter((n) => n.endsWith(".cadres-bundle"));
    assert.equal(json.bundleCount, files.length);
    assert.equal(json.bundleCount, 2);
    let size = 0;
    for (const n of files) size += (await Deno.stat(`${f.dir}/${n}`)).size;
    assert.equal(json.totalSizeBytes, size);
    assert.ok(json.freeDiskBytes > 1024);
    assert.equal(json.freeDiskBelowMinimum, false);
    assert.equal(json.minFreeBytes, 1024);
    assert.equal(Date.parse(json.oldestBundle), ago(T0, 2 * DAY).getTime());
    assert.equal(Date.parse(json.newestBundle), T0.getTime());
    const header = readBundleHeader(await Deno.readFile(`${f.dir}/${newer.bundle!.file}`)).header;
    assert.deepEqual(json.encryption, { encrypted: true, algorithm: header.cipher }, "what the bundles use");
    assert.equal(json.s3Bucket, "bucket");
    assert.equal(json.s3Reachable, true);
    assert.equal(json.s3CheckedAt, T0.toISOString());
    assert.deepEqual([json.totalTriggers, json.successfulTriggers, json.failedTriggers], [2, 2, 0]);
    assert.deepEqual(json.recentTriggers.map((t: Trigger) => t.id), [newer.id, older.id]);
    for (const t of json.recentTriggers) {
      assert.equal(t.requestedBy, admin.email, "who requested it");
      assert.ok(t.requestedAt, "when");
      assert.equal(t.status, "success", "its status");
    }
    assert.equal(json.health, "healthy");
    assertExcludes(JSON.stringify(json), S3_SECRET, "the S3 secret");

    // The same with a bearer API token of the operator's admin.
    const { secret } = await createApiToken(f.kv, userActor(admin), {
      name: "monitoring",
      permissions: ["admin"],
      expiresInDays: 0,
    }, f.clock.now());
    const bearer = await app.request("http://localhost:8000/api/health/infra/backup", {
      headers: { authorization: `Bearer ${secret}` },
    }, { remoteAddr: { hostname: "192.0.2.10" } });
    assert.equal(bearer.status, 200);
    assert.ok(BackupHealthSchema.safeParse(await bearer.json()).success);

    // Everyone else.
    const denied: Array<[string, typeof admin]> = [
      ["an admin of another account", otherAdmin],
      ["a viewer of the operator account", viewer],
      ["an operator-account admin limited to some organizations", scopedAdmin],
    ];
    for (const [who, user] of denied) {
      const b = new Browser(app);
      await signInAs(b, f.kv, user, f.clock.now());
      const r = await b.get("/api/health/infra/backup");
      assert.equal(r.status, 403, who);
      const body = await r.json();
      assert.ok(body.error?.message, who);
      assertExcludes(JSON.stringify(body), f.dir, "the backups folder");
    }
    const anonymous = await new Browser(app).get("/api/health/infra/backup");
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
  } finally {
    await s3.close();
    await Deno.remove(s3dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------------
// 6. Scheduling

Deno.test("nextRun(): today's hour when still ahead, else tomorrow's; null when disabled", () => {
  const at = (iso: string) => new Date(iso);
  assert.equal(nextRun({ enabled: true, hour: 2 }, at("2026-11-22T01:59:59Z")), "2026-11-22T02:00:00.000Z");
  assert.equal(nextRun({ enabled: true, hour: 2 }, at("2026-11-22T02:00:00Z")), "2026-11-23T02:00:00.000Z");
  assert.equal(nextRun({ enabled: true, hour: 2 }, at("2026-11-22T02:00:01Z")), "2026-11-23T02:00:00.000Z");
  assert.equal(nextRun({ enabled: true, hour: 23 }, at("2026-11-22T10:00:00Z")), "2026-11-22T23:00:00.000Z");
  assert.equal(nextRun({ enabled: true, hour: 0 }, at("2026-11-22T10:00:00Z")), "2026-11-23T00:00:00.000Z");
  assert.equal(nextRun({ enabled: true, hour: 2 }, at("2026-12-31T23:30:00Z")), "2027-01-01T02:00:00.000Z");
  assert.equal(nextRun({ enabled: true, hour: 5 }, at("2028-02-28T06:00:00Z")), "2028-02-29T05:00:00.000Z");
  assert.equal(nextRun({ enabled: false, hour: 2 }, at("2026-11-22T01:00:00Z")), null);
});

Deno.test("runScheduledBackups(): each enabled database once in its hour, never outside it, never when disabled", async () => {
  await using f = await fixture(new Date("2026-11-22T00:00:00Z"));
  await configure(f, { config: { hour: 2 }, results: { hour: 3 } });
  const run = async (iso: string) => {
    f.clock.time = new Date(iso);
    return await runScheduledBackups(f.kv, { ...f.opts, now: new Date(iso) });
  };
  assert.deepEqual(await run("2026-11-22T01:59:00Z"), []);
  const atTwo = await run("2026-11-22T02:00:00Z");
  assert.deepEqual(atTwo.map((t) => [t.database, t.kind, t.requestedBy, t.status]), [
    ["config", "scheduled", "scheduler", "success"],
  ]);
  assert.deepEqual(await run("2026-11-22T02:01:00Z"), [], "once per hour");
  const concurrent = await Promise.all([
    run("2026-11-22T02:30:00Z"),
    run("2026-11-22T02:30:00Z"),
  ]);
  assert.deepEqual(concurrent, [[], []], "concurrent calls in the same hour run nothing more");
  assert.deepEqual(
    (await run("2026-11-22T03:05:00Z")).map((t) => [t.database, t.status]),
    [["results", "success"]],
  );
  assert.deepEqual(await run("2026-11-22T03:59:00Z"), []);
  assert.deepEqual(await run("2026-11-22T10:00:00Z"), []);
  assert.deepEqual(
    (await run("2026-11-23T02:10:00Z")).map((t) => t.database),
    ["config"],
    "the next day runs again",
  );

  // Results disabled: a whole day of minute-job calls runs only the config backup.
  await configure(f, { config: { hour: 2 }, results: { enabled: false, hour: 3 } });
  const ran: string[] = [];
  for (let hour = 0; hour < 24; hour++) {
    for (const minute of [0, 30]) {
      const now = new Date(Date.UTC(2026, 10, 24, hour, minute));
      f.clock.time = now;
      ran.push(...(await runScheduledBackups(f.kv, { ...f.opts, now })).map((t) => t.database));
    }
  }
  assert.deepEqual(ran, ["config"]);
  const h = await health(f);
  assert.equal(h.totalTriggers, 4);
  assert.equal(h.recentTriggers.filter((t) => t.kind === "scheduled").length, 4);
});

Deno.test("runScheduledBackups(): both databases in the same hour, called concurrently, still each run that hour", async () => {
  await using f = await fixture(new Date("2026-11-22T02:00:00Z"));
  await configure(f, { config: { hour: 2 }, results: { hour: 2 } });
  const now = f.clock.now();
  const first = await Promise.all([
    runScheduledBackups(f.kv, { ...f.opts, now }),
    runScheduledBackups(f.kv, { ...f.opts, now }),
  ]);
  // The minute job calls again a minute later (another instance, or the next tick).
  const later = new Date(now.getTime() + MINUTE);
  const second = await runScheduledBackups(f.kv, { ...f.opts, now: later });
  const all = [...first.flat(), ...second];
  assert.deepEqual(
    all.map((t) => t.database).sort(),
    ["config", "results"],
    "each enabled database runs exactly once in its hour",
  );
});

Deno.test("runScheduledBackups(): a scheduled run that finds another backup running is retried later in its hour", async () => {
  await using f = await fixture(new Date("2026-11-22T02:00:00Z"));
  await configure(f, { config: { hour: 2 }, results: { enabled: false } });
  // A manual Results DB backup is running when the minute job fires.
  await simulateRunningBackup(f.kv, f.clock.now(), "results");
  assert.deepEqual(await runScheduledBackups(f.kv, { ...f.opts, now: f.clock.now() }), []);
  // It finishes (here: the worker is restarted) and the minute job fires again in the same hour.
  f.clock.advance(10 * MINUTE);
  await restartWorker(f.kv, systemActor("test"), f.clock.now());
  f.clock.advance(MINUTE);
  const retried = await runScheduledBackups(f.kv, { ...f.opts, now: f.clock.now() });
  assert.deepEqual(
    retried.map((t) => [t.database, t.status]),
    [["config", "success"]],
    "the daily config backup must not be lost because the worker was busy at 02:00",
  );
});

// ---------------------------------------------------------------------------------------------------
// 7. The worker: one backup at a time, restart

Deno.test("restartWorker(): abandons the running trigger, frees the worker; a new backup then runs", async () => {
  await using f = await fixture();
  const { operator, admin, otherAdmin } = await tenants(f);
  const actor = userActor(admin);
  await configure(f, {}, actor);
  const stuck = await simulateRunningBackup(f.kv, f.clock.now());

  f.clock.advance(30 * MINUTE);
  await assert.rejects(() => backup(f, "config"), isConflict);
  await assert.rejects(() => backup(f, "results"), isConflict, "one worker for both databases");
  await assert.rejects(() => triggerManualBackup(f.kv, actor, "config", f.opts), isConflict);
  let h = await health(f, actor);
  assert.equal(h.running, stuck.id);
  assert.equal(h.recentTriggers[0].status, "running");
  assert.equal(h.totalTriggers, 0, "refused runs are not triggers");

  await assert.rejects(() => restartWorker(f.kv, userActor(otherAdmin), f.clock.now()), ForbiddenError);
  assert.equal((await triggerRecord(f.kv, stuck.id))?.status, "running", "a refused restart changes nothing");

  const restartedAt = f.clock.now();
  assert.deepEqual(await restartWorker(f.kv, actor, restartedAt), { abandoned: stuck.id });
  const abandoned = await triggerRecord(f.kv, stuck.id);
  assert.equal(abandoned?.status, "failed");
  assert.match(abandoned?.error ?? "", /^Abandoned/);
  assert.equal(abandoned?.finishedAt, restartedAt.toISOString());
  assert.equal((await f.kv.get<{ triggerId: string | null }>(WORKER_KEY)).value?.triggerId, null);
  assert.ok(
    (await auditEntries(f.kv, operator.account.id)).some((e) =>
      e.action === "self_backup.restart_worker" && e.summary.includes(stuck.id)
    ),
  );

  f.clock.advance(MINUTE);
  const t = await backup(f, "config");
  assert.equal(t.status, "success", t.error ?? "");
  h = await health(f, actor);
  assert.equal(h.running, null);
  assert.equal(h.health, "healthy");
  assert.deepEqual(await restartWorker(f.kv, actor, f.clock.now()), { abandoned: null }, "idle restart");
});

Deno.test("an abandoned trigger is counted as a failed trigger", async () => {
  await using f = await fixture();
  await configure(f);
  const stuck = await simulateRunningBackup(f.kv, f.clock.now());
  f.clock.advance(HOUR);
  await restartWorker(f.kv, systemActor("test"), f.clock.now());
  const h = await health(f);
  assert.equal(h.recentTriggers.find((t) => t.id === stuck.id)?.status, "failed");
  assert.deepEqual(
    [h.totalTriggers, h.successfulTriggers, h.failedTriggers],
    [1, 0, 1],
    "the counters agree with the trigger list",
  );
});

Deno.test("two concurrent runBackup() calls: one runs, the other is refused with ConflictError", async () => {
  await using f = await fixture();
  await configure(f);
  const settled = await Promise.allSettled([backup(f, "config"), backup(f, "results")]);
  const fulfilled = settled.filter((s) => s.status === "fulfilled");
  const rejected = settled.filter((s) => s.status === "rejected");
  assert.equal(fulfilled.length, 1);
  assert.equal(rejected.length, 1);
  assert.ok(rejected[0].reason instanceof ConflictError, String(rejected[0].reason));
  assert.match(rejected[0].reason.message, /already running/);
  assert.equal(fulfilled[0].value.status, "success");
  const h = await health(f);
  assert.deepEqual([h.totalTriggers, h.successfulTriggers, h.failedTriggers], [1, 1, 0]);
  assert.equal((await filesIn(f.dir)).length, 1);
  assert.equal(h.running, null);
});

Deno.test("restartWorker() while a backup is really running (held in its S3 upload): that trigger ends failed", async () => {
  await using f = await fixture();
  // An S3 endpoint that holds the first PUT until released, and answers everything else at once.
  let held = 0;
  const received = Promise.withResolvers<void>();
  const release = Promise.withResolvers<void>();
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    await req.arrayBuffer();
    if (req.method === "PUT" && held++ === 0) {
      received.resolve();
      await release.promise;
    }
    return new Response(null, { status: 200 });
  });
  try {
    await configure(f, { s3: s3Settings(`http://127.0.0.1:${server.addr.port}`) });
    const first = backup(f, "results", "first");
    await received.promise;
    const running = (await health(f)).running;
    assert.ok(running);
    assert.equal((await triggerRecord(f.kv, running))?.progress.phase, "uploading");

    f.clock.advance(MINUTE);
    assert.deepEqual(await restartWorker(f.kv, systemActor("test"), f.clock.now()), { abandoned: running });
    f.clock.advance(MINUTE);
    const second = await backup(f, "results", "second");
    assert.equal(second.status, "success", second.error ?? "");

    release.resolve();
    const abandoned = await first;
    const record = await triggerRecord(f.kv, running);
    assert.equal(record?.status, "failed", "restarting the worker records the running backup as failed");
    assert.equal(abandoned.status, "failed");
    const h = await health(f);
    assert.equal(h.successfulTriggers, 1, "only the second backup succeeded");
    assert.equal(h.running, null);
  } finally {
    release.resolve();
    await server.shutdown();
  }
});

// ---------------------------------------------------------------------------------------------------
// 8. Settings validation

Deno.test("updateSettings(): invalid input is refused field by field and nothing is written; a valid save is audited", async () => {
  await using f = await fixture();
  const { operator, admin, otherAdmin } = await tenants(f);
  const actor = userActor(admin);
  const before = await dumpKv(f.kv);
  const valid = settingsInput(f.dir);
  const save = (input: SelfBackupSettingsInput, who: Actor = actor) =>
    updateSettings(f.kv, who, input, { now: f.clock.now(), masterKey, dataDir: f.dataDir });
  const failsAt = (path: string) => (e: unknown) => {
    assert.ok(e instanceof z.ZodError, String(e));
    assert.ok(
      e.issues.some((i) => i.path.join(".") === path),
      `expected an issue at ${path}: ${JSON.stringify(e.issues)}`,
    );
    return true;
  };
  const s3Ok = s3Settings("http://127.0.0.1:9", "") as S3Input;
  const cases: Array<[string, SelfBackupSettingsInput, string]> = [
    ["hour 24", { ...valid, config: { ...valid.config, hour: 24 } }, "config.hour"],
    ["hour -1", { ...valid, results: { ...valid.results, hour: -1 } }, "results.hour"],
    ["retention 0", { ...valid, results: { ...valid.results, retentionDays: 0 } }, "results.retentionDays"],
    ["retention 1.5", { ...valid, config: { ...valid.config, retentionDays: 1.5 } }, "config.retentionDays"],
    ["a relative folder", { ...valid, directory: "backups" }, "directory"],
    ["an empty folder", { ...valid, directory: "  " }, "directory"],
    ["a negative minimum", { ...valid, minFreeBytes: -1 }, "minFreeBytes"],
    ["S3 without a bucket", { ...valid, s3: { ...s3Ok, bucket: "" } }, "s3.bucket"],
    ["S3 without an endpoint", { ...valid, s3: { ...s3Ok, endpoint: "" } }, "s3.endpoint"],
    [
      "S3 with a non-http endpoint",
      { ...valid, s3: { ...s3Ok, endpoint: "ftp://x.example" } },
      "s3.endpoint",
    ],
    ["S3 without an access key", { ...valid, s3: { ...s3Ok, accessKeyId: "" } }, "s3.accessKeyId"],
    ["S3 without any secret", { ...valid, s3: { ...s3Ok, secretAccessKey: "" } }, "s3.secretAccessKey"],
  ];
  for (const [what, input, path] of cases) {
    await assert.rejects(() => save(input), failsAt(path), what);
  }
  await assert.rejects(() => save(valid, userActor(otherAdmin)), ForbiddenError, "another account's admin");
  assert.deepEqual(await dumpKv(f.kv), before, "nothing written by refused saves");

  f.clock.advance(MINUTE);
  const saved = await save(settingsInput(f.dir, {
    config: { hour: 4, retentionDays: 30 },
    results: { enabled: false },
    minFreeBytes: 5 * 1024 ** 3,
    s3: s3Ok,
  }));
  assert.equal(saved.updatedAt, f.clock.now().toISOString());
  assert.deepEqual(await getSettings(f.kv, f.dataDir), saved);
  assert.deepEqual(saved.config, { enabled: true, hour: 4, retentionDays: 30 });
  assert.equal(saved.results.enabled, false);
  assert.equal(saved.minFreeBytes, 5 * 1024 ** 3);
  const audit = (await auditEntries(f.kv, operator.account.id)).filter((e) =>
    e.action === "self_backup.configure"
  );
  assert.equal(audit.length, 1);
  assert.match(audit[0].summary, /config daily 4:00 UTC, 30 d; results off; S3 bucket \(new secret\)/);
  assertExcludes(JSON.stringify(audit), S3_SECRET, "the S3 secret in the audit log");

  // An empty secret keeps the stored one; a new one replaces the vault record.
  f.clock.advance(MINUTE);
  const kept = await save(settingsInput(f.dir, { s3: { ...s3Ok, secretAccessKey: "" } }));
  assert.equal(kept.s3.credentialId, saved.s3.credentialId);
  f.clock.advance(MINUTE);
  const replaced = await save(settingsInput(f.dir, { s3: { ...s3Ok, secretAccessKey: "another-secret" } }));
  assert.notEqual(replaced.s3.credentialId, saved.s3.credentialId);
  assert.equal((await f.kv.get(vaultKey(saved.s3.credentialId!))).value, null, "the old secret is gone");
  const record = (await f.kv.get<VaultRecord>(vaultKey(replaced.s3.credentialId!))).value!;
  assert.equal(await openSecret(masterKey, record), "another-secret");
  assert.deepEqual((await f.kv.get(SETTINGS_KEY)).value, replaced);
});

// ---------------------------------------------------------------------------------------------------
// Key classification of what the self-backup itself writes

Deno.test("every key the self-backup writes belongs to the Config DB, the Results DB, or a listed ephemeral prefix", async () => {
  await using f = await fixture(new Date("2026-11-22T02:00:00Z"));
  await tenants(f);
  await configure(f, { config: { hour: 2 }, results: { hour: 2 } });
  await runScheduledBackups(f.kv, { ...f.opts, now: f.clock.now() });
  f.clock.advance(MINUTE);
  await backup(f, "results");
  await health(f);
  const unclassified = new Set<string>();
  for await (const e of f.kv.list({ prefix: [] })) {
    if (classifyKey(e.key) === null) unclassified.add(String(e.key[0]));
  }
  assert.deepEqual([...unclassified].sort(), []);
});
