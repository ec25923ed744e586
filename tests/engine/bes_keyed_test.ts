/**
 * The BES jobs that read data with one namespace's keys, fetched just in time: browse, search and a verify's
 * read-back, against real repositories (found by the payload's `repository`); listings uploaded in parts;
 * the key endpoint's client; wrong keys and missing keys.
 */
import assert from "node:assert/strict";
import { controlPlaneKeys, type JobKeyProvider, type JobKeys } from "../../engine/bes/job_keys.ts";
import { type ClaimedJob, type JobContext, PART_BYTES, splitParts } from "../../engine/bes/jobs.ts";
import {
  browseHandler,
  type KeyedServices,
  nameMatcher,
  sampledVerifyHandler,
  searchHandler,
} from "../../engine/bes/keyed_jobs.ts";
import { createLogger } from "../../engine/bes/log.ts";
import type { TargetInfo } from "../../engine/bes/storage.ts";
import { EngineClient } from "../../engine/protocol/client.ts";
import { generateKeyPair } from "../../engine/protocol/signing.ts";
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

/** A target folder with one policy's repository holding a snapshot of a small tree; the namespace keys. */
async function fixture(root: string, files = 3) {
  const src = `${root}/src/data`;
  await Deno.mkdir(`${src}/reports/2026`, { recursive: true });
  await Deno.writeFile(`${src}/reports/2026/Summary.PDF`, deterministicBytes("summary", 40_000));
  await Deno.writeFile(`${src}/notes.txt`, new TextEncoder().encode("hello"));
  await Deno.symlink("notes.txt", `${src}/latest`);
  for (let i = 0; i < files; i++) {
    await Deno.writeFile(`${src}/zq${String(i).padStart(4, "0")}.bin`, new Uint8Array([i]));
  }
  const path = `${root}/target/${REPO.path}`;
  const repo = await Repository.init(new LocalBackend(path), KEK, { namespace: NS, ...SMALL });
  const snap = (await backupFiles(repo.namespace(NS), { paths: [src] })).snapshotId;
  const keys = repo.namespace(NS).keys;
  return { src, path, snap, keys };
}

function services(root: string, keys: JobKeyProvider): KeyedServices {
  const t: TargetInfo = {
    id: T,
    name: "local",
    type: "local",
    config: { path: `${root}/target` },
    credentials: null,
    updatedAt: "",
  };
  return {
    targets: { find: (id) => Promise.resolve(id === T ? t : null), all: () => [t] },
    open: { mounts: "/nonexistent" },
    keys,
  };
}

/** A key provider handing out copies of `keys`, remembering each (to check they are wiped). */
function provider(keys: NamespaceKeys, repository: JobKeys["repository"] = null) {
  const handed: NamespaceKeys[] = [];
  const fn: JobKeyProvider = () => {
    const copy = {
      namespace: keys.namespace,
      dataKey: keys.dataKey.slice(),
      idKey: keys.idKey.slice(),
      repository,
      recoveryPublicKey: null,
    };
    handed.push(copy);
    return Promise.resolve(copy);
  };
  return { fn, handed };
}

/** What a job context uploaded as parts, by list. */
type Uploaded = Record<string, unknown[][]>;

/** The items of `list` as uploaded, in order. */
function items<T = Record<string, unknown>>(uploaded: Uploaded, list: string): T[] {
  return (uploaded[list] ?? []).flat() as T[];
}

function ctx(kind: string, payload: Record<string, unknown>, uploaded: Uploaded = {}): JobContext {
  const job: ClaimedJob = {
    id: "01KJOB00000000000000000000",
    kind,
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
    uploadParts: (list, parts) => {
      // As the control plane stores them: each part's JSON within a 64 KiB body.
      for (const p of parts) {
        assert.ok(JSON.stringify({ list, part: 0, items: p }).length < 64 * 1024);
      }
      uploaded[list] = parts;
      return Promise.resolve(parts.length);
    },
    log: createLogger("error"),
  };
}

Deno.test("browse: lists one folder of a restore point with the job's keys, then wipes them", async () => {
  await using dir = await tempDir();
  const f = await fixture(dir.path);
  const keys = provider(f.keys);
  const browse = browseHandler(services(dir.path, keys.fn));
  const point = { restorePointId: "RP", engineRestorePointId: f.snap, policyId: "POL1", repository: REPO };
  const uploaded: Uploaded = {};
  const out = await browse(ctx("browse", { ...point, path: f.src }, uploaded));
  assert.equal(out.status, "success", JSON.stringify(out));
  const entries = items<{ name: string; type: string; size: number; mtime: string }>(uploaded, "entries");
  assert.deepEqual(out.parts, { entries: 1 });
  assert.deepEqual(out.totals, { entries: 6 });
  assert.equal(out.output!.path, f.src);
  assert.deepEqual(entries.map((e) => [e.name, e.type]), [
    ["reports", "dir"],
    ["latest", "symlink"],
    ["notes.txt", "file"],
    ["zq0000.bin", "file"],
    ["zq0001.bin", "file"],
    ["zq0002.bin", "file"],
  ]);
  const notes = entries.find((e) => e.name === "notes.txt")!;
  assert.equal(notes.size, 5);
  assert.equal(notes.mtime, (await Deno.lstat(`${f.src}/notes.txt`)).mtime!.toISOString());
  assert.equal(out.output!.truncated, false);
  assert.ok(
    keys.handed.every((k) => k.dataKey.every((b) => b === 0) && k.idKey.every((b) => b === 0)),
    "wiped",
  );
  // The root lists the first component of the backed-up path.
  const atRoot: Uploaded = {};
  await browse(ctx("browse", { ...point, path: "/" }, atRoot));
  assert.deepEqual(items<{ name: string }>(atRoot, "entries").map((e) => e.name), [f.src.split("/")[1]]);
  // Keys the control plane gave for another repository are not used.
  await assert.rejects(
    browseHandler(services(dir.path, provider(f.keys, { ...REPO, path: "cadres/POL1/g2" }).fn))(
      ctx("browse", { ...point, path: "/" }),
    ),
    (e: unknown) => (e as { reason?: string }).reason === "KEY_MISMATCH",
  );
  // The repository the payload names is the only one looked in: another generation holds nothing.
  await assert.rejects(
    browse(
      ctx("browse", { ...point, path: "/", repository: { ...REPO, path: "cadres/POL1/g2", generation: 2 } }),
    ),
    (e: unknown) =>
      (e as { reason?: string }).reason === "RESTORE_POINT_MISSING" &&
      /repository cadres\/POL1\/g2 on local/.test((e as Error).message),
  );
  await assert.rejects(
    browse(ctx("browse", { ...point, path: "/", repository: { ...REPO, path: "cadres/OTHER/g1" } })),
    (e: unknown) => (e as { reason?: string }).reason === "BAD_PAYLOAD",
  );
  // A path that is not a folder of the point: one clear failure.
  await assert.rejects(
    browse(ctx("browse", { ...point, path: `${f.src}/notes.txt` })),
    (e: unknown) =>
      (e as { reason?: string }).reason === "PATH_NOT_FOUND" && /it is a file/.test((e as Error).message),
  );
  await assert.rejects(
    browse(ctx("browse", { ...point, path: "../x" })),
    (e: unknown) => (e as { reason?: string }).reason === "BAD_PAYLOAD",
  );
});

Deno.test("browse: a long folder is uploaded whole, in parts that each fit a 64 KiB body", async () => {
  await using dir = await tempDir();
  const f = await fixture(dir.path, 3000);
  const uploaded: Uploaded = {};
  // An older payload without `repository`: the target and the policy's generations are searched.
  const out = await browseHandler(services(dir.path, provider(f.keys).fn))(
    ctx(
      "browse",
      { restorePointId: "RP", engineRestorePointId: f.snap, policyId: "POL1", path: f.src },
      uploaded,
    ),
  );
  assert.equal(out.status, "success", JSON.stringify(out));
  const entries = items<{ name: string }>(uploaded, "entries");
  assert.equal(entries.length, 3003);
  assert.ok(out.parts!.entries! >= 3, `${out.parts!.entries} parts`);
  assert.equal(out.parts!.entries, uploaded.entries.length);
  assert.deepEqual(out.totals, { entries: 3003 });
  assert.equal(out.output!.truncated, false);
  assert.equal(new Set(entries.map((e) => e.name)).size, 3003);
  assert.ok(JSON.stringify(out.output).length < 1000, "the result itself stays small");
});

Deno.test("splitParts: parts within the byte and item bounds, in order; a cap on parts keeps the first items", () => {
  const all = Array.from({ length: 12_000 }, (_, i) => ({ name: `f${i}`, type: "file", size: i }));
  const { parts, kept } = splitParts(all);
  assert.equal(kept, all.length);
  assert.deepEqual(parts.flat(), all);
  for (const p of parts) {
    assert.ok(p.length <= 5000);
    assert.ok(new TextEncoder().encode(JSON.stringify(p)).length <= PART_BYTES);
  }
  const capped = splitParts(all, 2);
  assert.equal(capped.parts.length, 2);
  assert.deepEqual(capped.parts.flat(), all.slice(0, capped.kept));
  assert.ok(capped.kept < all.length);
});

Deno.test("search: names by substring or glob, case-insensitive, over the whole tree", async () => {
  await using dir = await tempDir();
  const f = await fixture(dir.path);
  const search = searchHandler(services(dir.path, provider(f.keys).fn));
  const point = { restorePointId: "RP", engineRestorePointId: f.snap, policyId: "POL1", repository: REPO };
  const byNameParts: Uploaded = {};
  const byName = await search(
    ctx("search", { ...point, query: "summary", mode: "name", maxMatches: 10_000 }, byNameParts),
  );
  assert.equal(byName.status, "success", JSON.stringify(byName));
  assert.deepEqual(items(byNameParts, "matches"), [{
    path: `${f.src}/reports/2026/Summary.PDF`,
    type: "file",
    size: 40_000,
    mtime: (await Deno.stat(`${f.src}/reports/2026/Summary.PDF`)).mtime!.toISOString(),
  }]);
  const globParts: Uploaded = {};
  await search(ctx("search", { ...point, query: "zq000[12].BIN", mode: "glob" }, globParts));
  assert.deepEqual(items<{ path: string }>(globParts, "matches").map((m) => m.path), [
    `${f.src}/zq0001.bin`,
    `${f.src}/zq0002.bin`,
  ]);
  const cappedParts: Uploaded = {};
  const capped = await search(ctx("search", { ...point, query: "zq0", maxMatches: 2 }, cappedParts));
  // The first two by path, whatever order the tree was walked in; the total keeps all three.
  assert.deepEqual(items<{ path: string }>(cappedParts, "matches").map((m) => m.path), [
    `${f.src}/zq0000.bin`,
    `${f.src}/zq0001.bin`,
  ]);
  assert.equal(capped.output!.truncated, true);
  assert.deepEqual(capped.totals, { matches: 3 });
  const none = await search(ctx("search", { ...point, query: "no-such-name" }));
  assert.deepEqual([none.status, none.parts, none.totals], ["success", { matches: 0 }, { matches: 0 }]);
  // The control plane asks for up to 10,000 matches; more is a bad payload.
  await assert.rejects(
    search(ctx("search", { ...point, query: "zq0", maxMatches: 10_001 })),
    (e: unknown) => (e as { reason?: string }).reason === "BAD_PAYLOAD",
  );
  assert.equal(nameMatcher("*.pdf")("Summary.PDF"), true);
});

Deno.test("keys of another namespace, or wrong keys, are refused (KEY_MISMATCH); no snapshot is RESTORE_POINT_MISSING", async () => {
  await using dir = await tempDir();
  const f = await fixture(dir.path);
  const point = {
    restorePointId: "RP",
    engineRestorePointId: f.snap,
    policyId: "POL1",
    targetId: T,
    path: "/",
  };
  const other = provider({ ...f.keys, namespace: "someone-else" });
  await assert.rejects(
    browseHandler(services(dir.path, other.fn))(ctx("browse", point)),
    (e: unknown) =>
      (e as { reason?: string }).reason === "KEY_MISMATCH" && /someone-else/.test((e as Error).message),
  );
  const wrong = provider({
    namespace: NS,
    dataKey: crypto.getRandomValues(new Uint8Array(32)),
    idKey: crypto.getRandomValues(new Uint8Array(32)),
  });
  await assert.rejects(
    browseHandler(services(dir.path, wrong.fn))(ctx("browse", point)),
    (e: unknown) => (e as { reason?: string }).reason === "KEY_MISMATCH",
  );
  assert.ok(wrong.handed[0].dataKey.every((b) => b === 0), "wiped after a failure too");
  await assert.rejects(
    browseHandler(services(dir.path, provider(f.keys).fn))(
      ctx("browse", { ...point, engineRestorePointId: "a".repeat(64) }),
    ),
    (e: unknown) => (e as { reason?: string }).reason === "RESTORE_POINT_MISSING",
  );
});

Deno.test("verify with a sample: blobs read back with the keys; a flipped byte inside a blob fails it; no keys leaves it partial", async () => {
  await using dir = await tempDir();
  const f = await fixture(dir.path);
  const payload = {
    restorePointId: "RP",
    engineRestorePointId: f.snap,
    policyId: "POL1",
    targetId: T,
    sampleCount: 1000,
  };
  const ok = await sampledVerifyHandler(services(dir.path, provider(f.keys).fn))(ctx("verify", payload));
  assert.equal(ok.status, "success", JSON.stringify(ok));
  const v = ok.output!.verification as { status: string; sampled: number; referencedBlobs: number };
  assert.equal(v.status, "passed");
  assert.ok(v.sampled > 0 && v.sampled === v.referencedBlobs, `${v.sampled} of ${v.referencedBlobs}`);

  // Without keys (the control plane has no key endpoint, or refuses): the structure stands, partial.
  const notFound = new EngineClient(
    "http://cp.test",
    () => Response.json({ error: { code: "not_found", message: "Not found" } }, { status: 404 }),
  );
  const bes = { kind: "bes" as const, id: "01KBES00000000000000000000", ...generateKeyPair() };
  const noKeys = await sampledVerifyHandler(services(dir.path, controlPlaneKeys(notFound, () => bes)))(
    ctx("verify", payload),
  );
  assert.equal(noKeys.status, "warning");
  assert.equal(noKeys.error?.reason, "KEY_UNAVAILABLE");
  assert.match(noKeys.error!.message, /structure sound.*needs the namespace's keys.*\(404\): Not found/s);
  assert.equal((noKeys.output!.verification as { status: string }).status, "partial");

  // A flipped byte inside a stored blob: the trailers are intact (the structure passes), the read-back fails.
  const backend = new LocalBackend(f.path);
  const pack = (await Array.fromAsync(backend.list("data/"))).sort((a, b) => b.size - a.size)[0];
  const bytes = await Deno.readFile(`${f.path}/${pack.name}`);
  bytes[20] ^= 0x01;
  await Deno.writeFile(`${f.path}/${pack.name}`, bytes);
  const bad = await sampledVerifyHandler(services(dir.path, provider(f.keys).fn))(ctx("verify", payload));
  assert.equal(bad.status, "failed", JSON.stringify(bad));
  assert.equal(bad.error?.reason, "VERIFY_MISMATCH");
  const packId = pack.name.slice(pack.name.lastIndexOf("/") + 1);
  assert.ok(bad.error!.message.split("\n")[0].includes(packId), bad.error!.message);
  assert.equal((bad.output!.verification as { status: string }).status, "failed");
});

Deno.test("the key endpoint's client: decodes {namespace, dataKey, idKey}; refusals and bad replies are one clear failure", async () => {
  const key = (n: number) => new Uint8Array(32).fill(n);
  const identity = () => ({ kind: "bes" as const, id: "01KBES00000000000000000000", ...generateKeyPair() });
  const seen: string[] = [];
  const client = (status: number, body: unknown) =>
    new EngineClient("http://cp.test", (url) => {
      seen.push(new URL(url).pathname);
      return Response.json(body, { status });
    });
  const good = await controlPlaneKeys(
    client(200, {
      namespace: NS,
      dataKey: key(1).toBase64(),
      idKey: key(2).toBase64({ alphabet: "base64url" }),
    }),
    identity,
  )("01KJOB00000000000000000000");
  assert.equal(seen[0], "/api/bes/v1/jobs/01KJOB00000000000000000000/key");
  assert.deepEqual([good.namespace, good.dataKey, good.idKey, good.repository], [NS, key(1), key(2), null]);
  // The control plane's reply as documented: the repository and the recovery copy come along.
  const full = await controlPlaneKeys(
    client(200, {
      jobId: "01KJOB00000000000000000000",
      keySetId: "01KSET00000000000000000000",
      namespace: NS,
      repository: REPO,
      dataKey: key(3).toBase64(),
      idKey: key(4).toBase64(),
      recovery: null,
    }),
    identity,
  )("01KJOB00000000000000000000");
  assert.deepEqual([full.dataKey, full.idKey, full.repository], [key(3), key(4), REPO]);
  const cases: [number, unknown, string, RegExp][] = [
    [403, { error: { code: "forbidden", message: "not your job" } }, "KEY_REFUSED", /403\): not your job/],
    [404, { error: { code: "not_found", message: "Not found" } }, "KEY_UNAVAILABLE", /404/],
    [
      200,
      { namespace: NS, dataKey: "AAAA", idKey: key(2).toBase64() },
      "KEY_UNAVAILABLE",
      /dataKey is 3 bytes/,
    ],
    [200, { dataKey: key(1).toBase64(), idKey: key(2).toBase64() }, "KEY_UNAVAILABLE", /no namespace/],
  ];
  for (const [status, body, reason, message] of cases) {
    await assert.rejects(
      controlPlaneKeys(client(status, body), identity)("01KJOB00000000000000000000"),
      (e: unknown) => (e as { reason?: string }).reason === reason && message.test((e as Error).message),
      `${status} ${JSON.stringify(body)}`,
    );
  }
});

Deno.test("BES job keys: 503 busy (and a network failure) is asked again with the results' backoff, newly signed, each retry reported with the job id; 409 final; busy past the budget fails the job retryable", async () => {
  const JOB = "01KJOB00000000000000000000";
  const key = (n: number) => new Uint8Array(32).fill(n);
  const bes = () => ({ kind: "bes" as const, id: "01KBES00000000000000000000", ...generateKeyPair() });
  const script = (steps: Array<{ status: number; code: string } | "network">) => {
    const nonces: string[] = [];
    const waits: number[] = [];
    const retries: string[] = [];
    let clock = 0;
    const client = new EngineClient("http://cp.test", (url, init) => {
      assert.equal(new URL(url).pathname, `/api/bes/v1/jobs/${JOB}/key`);
      nonces.push((init.headers as Record<string, string>)["x-cadres-nonce"]);
      const step = steps.shift();
      if (step === "network") throw new TypeError("connection reset");
      if (step) {
        return Response.json({ error: { code: step.code, message: "lost its races" } }, {
          status: step.status,
        });
      }
      return Response.json({ namespace: NS, dataKey: key(5).toBase64(), idKey: key(6).toBase64() });
    });
    const provider = controlPlaneKeys(client, bes, {
      sleep: (ms) => {
        waits.push(ms);
        clock += ms;
        return Promise.resolve();
      },
      now: () => clock,
      onRetry: (jobId, info) => retries.push(`${jobId} ${info.status} ${info.problem}`),
    });
    return { provider, nonces, waits, retries };
  };

  const busyTwice = script([{ status: 503, code: "busy" }, "network", { status: 503, code: "busy" }]);
  const keys = await busyTwice.provider(JOB);
  assert.deepEqual([keys.namespace, keys.dataKey, keys.idKey], [NS, key(5), key(6)]);
  assert.equal(busyTwice.nonces.length, 4);
  assert.equal(new Set(busyTwice.nonces).size, 4, "newly signed each time");
  assert.deepEqual(busyTwice.retries, [`${JOB} 503 busy`, `${JOB} null connection reset`, `${JOB} 503 busy`]);
  assert.ok(busyTwice.waits[0] >= 500 && busyTwice.waits[0] <= 1000, `${busyTwice.waits}`);
  assert.ok(busyTwice.waits[2] >= 2000 && busyTwice.waits[2] <= 4000, `${busyTwice.waits}`);

  const refused = script([{ status: 409, code: "job_not_running" }]);
  await assert.rejects(
    refused.provider(JOB),
    (e: unknown) => (e as { reason?: string }).reason === "KEY_UNAVAILABLE",
  );
  assert.equal(refused.nonces.length, 1, "a 409 is final");

  const busy = script(Array.from({ length: 100 }, () => ({ status: 503, code: "busy" })));
  await assert.rejects(busy.provider(JOB), (e: unknown) => {
    const f = e as { reason?: string; retryable?: boolean; message: string };
    return f.reason === "KEY_UNAVAILABLE" && f.retryable === true && /\(503\)/.test(f.message);
  });
  assert.ok(busy.nonces.length >= 4);
  assert.ok(busy.waits.reduce((a, b) => a + b, 0) <= 60_000, "within KEY_RETRY_BUDGET_MS");
});
