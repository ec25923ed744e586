/**
 * The BES `file_history` job: one file looked up in several snapshots of a real repository with the job's
 * keys — present or not, size, mtime, mode, chunk list id and content hash (each distinct version read once,
 * within a byte budget); a point whose snapshot is gone is answered with an error, the others still are.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { fileHistoryHandler, type Observation } from "../../engine/bes/file_history.ts";
import type { JobKeyProvider } from "../../engine/bes/job_keys.ts";
import type { ClaimedJob, JobContext } from "../../engine/bes/jobs.ts";
import type { KeyedServices } from "../../engine/bes/keyed_jobs.ts";
import { createLogger } from "../../engine/bes/log.ts";
import type { TargetInfo } from "../../engine/bes/storage.ts";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles } from "../../engine/repo/backup.ts";
import type { NamespaceKeys } from "../../engine/repo/keys.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const SMALL = { chunker: { min: 1024, avg: 4096, max: 16384 }, packTargetBytes: 32 * 1024 };
const KEK = crypto.getRandomValues(new Uint8Array(32));
const NS = "01KHOST0000000000000000000";
const T = "01KTARGET0000000000000000A";
const REPO = { target: T, path: "cadres/POL1/g1", generation: 1 };

function services(root: string, keys: NamespaceKeys): { services: KeyedServices; handed: NamespaceKeys[] } {
  const t: TargetInfo = {
    id: T,
    name: "local",
    type: "local",
    config: { path: `${root}/target` },
    credentials: null,
    updatedAt: "",
  };
  const handed: NamespaceKeys[] = [];
  const provider: JobKeyProvider = () => {
    const copy = {
      namespace: keys.namespace,
      dataKey: keys.dataKey.slice(),
      idKey: keys.idKey.slice(),
      repository: REPO,
      recoveryPublicKey: null,
    };
    handed.push(copy);
    return Promise.resolve(copy);
  };
  return {
    services: {
      targets: { find: (id) => Promise.resolve(id === T ? t : null), all: () => [t] },
      open: { mounts: "/nonexistent" },
      keys: provider,
    },
    handed,
  };
}

function ctx(payload: Record<string, unknown>): JobContext {
  const job: ClaimedJob = {
    id: "01KJOB00000000000000000000",
    kind: "file_history",
    priority: "high",
    payload,
    leaseExpiresAt: "",
  };
  return {
    job,
    signal: new AbortController().signal,
    lastProgressReply: null,
    progress: () => {},
    reportNow: () => Promise.resolve(null),
    uploadParts: () => Promise.reject(new Error("file_history uploads no parts")),
    log: createLogger("error"),
  };
}

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

Deno.test("file_history: one file across five snapshots — versions, absence, hashes, a missing snapshot", async () => {
  await using dir = await tempDir();
  const src = `${dir.path}/src/data`;
  await Deno.mkdir(src, { recursive: true });
  const file = `${src}/report.bin`;
  const v1 = deterministicBytes("v1", 30_000);
  const v2 = deterministicBytes("v2", 45_000);
  const repo = await Repository.init(new LocalBackend(`${dir.path}/target/${REPO.path}`), KEK, {
    namespace: NS,
    ...SMALL,
  });
  const ns = repo.namespace(NS);
  const snaps: string[] = [];
  let parent: string | null = null;
  const backup = async () => {
    parent = (await backupFiles(ns, { paths: [src], parent })).snapshotId;
    snaps.push(parent);
  };
  // 1: absent; 2, 3: v1; 4: v2 (mode changed too); 5: v2 again.
  await Deno.writeFile(`${src}/other.txt`, new TextEncoder().encode("x"));
  await backup();
  await Deno.writeFile(file, v1);
  await Deno.utime(file, new Date("2026-01-01T00:00:00Z"), new Date("2026-01-01T00:00:00Z"));
  await backup();
  await backup();
  await Deno.writeFile(file, v2);
  await Deno.chmod(file, 0o600);
  await Deno.utime(file, new Date("2026-02-01T00:00:00Z"), new Date("2026-02-01T00:00:00Z"));
  await backup();
  await backup();

  const { services: s, handed } = services(dir.path, ns.keys);
  const points = snaps.map((id, i) => ({ restorePointId: `RP${i + 1}`, engineRestorePointId: id }));
  const payload = {
    restorePointId: "RP1",
    engineRestorePointId: snaps[0],
    policyId: "POL1",
    repository: REPO,
    path: file,
    points: [...points, { restorePointId: "RP6", engineRestorePointId: "ab".repeat(32) }],
  };
  const out = await fileHistoryHandler(s)(ctx(payload));
  assert.equal(out.status, "warning", JSON.stringify(out));
  const obs = out.output!.observations as Observation[];
  assert.deepEqual(obs.map((o) => [o.restorePointId, o.exists]), [
    ["RP1", false],
    ["RP2", true],
    ["RP3", true],
    ["RP4", true],
    ["RP5", true],
    ["RP6", false],
  ]);
  assert.equal(obs[1].size, 30_000);
  assert.equal(obs[1].mtime, "2026-01-01T00:00:00.000Z");
  assert.equal(obs[1].contentId, sha(v1));
  assert.equal(obs[2].chunksId, obs[1].chunksId);
  assert.equal(obs[3].contentId, sha(v2));
  assert.equal(obs[3].mode, 0o600);
  assert.equal(obs[3].size, 45_000);
  assert.notEqual(obs[3].chunksId, obs[1].chunksId);
  assert.equal(obs[4].contentId, sha(v2));
  assert.match(obs[5].error!, /RP6.*report\.bin.*no snapshot/);
  assert.match(out.error!.message, /1 of 6 restore points could not be read/);
  // The keys were wiped once the job ended.
  assert.ok(handed.length >= 1 && handed.every((k) => k.dataKey.every((b) => b === 0)));

  // A budget of 40 kB hashes v1 (30 kB) but not v2 (45 kB): its chunk list id still tells versions apart.
  const small = await fileHistoryHandler(s)(ctx({ ...payload, points, maxHashBytes: 40_000 }));
  assert.equal(small.status, "success", JSON.stringify(small));
  const o2 = small.output!.observations as Observation[];
  assert.deepEqual(o2.map((o) => o.contentId ?? null), [null, sha(v1), sha(v1), null, null]);
  assert.equal(o2[4].chunksId, obs[4].chunksId);

  // A path that is not absolute is refused as a whole.
  const bad = await fileHistoryHandler(s)(ctx({ ...payload, path: "data/report.bin" })).catch((e) => e);
  assert.match(String(bad.message ?? JSON.stringify(bad)), /absolute POSIX path/);
});
