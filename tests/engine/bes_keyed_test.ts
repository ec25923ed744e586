/**
 * The BES jobs that read data with one namespace's keys, fetched just in time: browse, search and a verify's
 * read-back, against real repositories; the key endpoint's client; wrong keys and missing keys.
 */
import assert from "node:assert/strict";
import { controlPlaneKeys, type JobKeyProvider } from "../../engine/bes/job_keys.ts";
import type { ClaimedJob, JobContext } from "../../engine/bes/jobs.ts";
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
  const path = `${root}/target/cadres/POL1/g1`;
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
function provider(keys: NamespaceKeys) {
  const handed: NamespaceKeys[] = [];
  const fn: JobKeyProvider = () => {
    const copy = { namespace: keys.namespace, dataKey: keys.dataKey.slice(), idKey: keys.idKey.slice() };
    handed.push(copy);
    return Promise.resolve(copy);
  };
  return { fn, handed };
}

function ctx(kind: string, payload: Record<string, unknown>): JobContext {
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
    log: createLogger("error"),
  };
}

Deno.test("browse: lists one folder of a restore point with the job's keys, then wipes them", async () => {
  await using dir = await tempDir();
  const f = await fixture(dir.path);
  const keys = provider(f.keys);
  const browse = browseHandler(services(dir.path, keys.fn));
  const point = { restorePointId: "RP", engineRestorePointId: f.snap, policyId: "POL1", targetId: T };
  const out = await browse(ctx("browse", { ...point, path: f.src }));
  assert.equal(out.status, "success", JSON.stringify(out));
  const entries = out.output!.entries as { name: string; type: string; size: number }[];
  assert.equal(out.output!.path, f.src);
  assert.deepEqual(entries.map((e) => [e.name, e.type]), [
    ["reports", "dir"],
    ["latest", "file"],
    ["notes.txt", "file"],
    ["zq0000.bin", "file"],
    ["zq0001.bin", "file"],
    ["zq0002.bin", "file"],
  ]);
  assert.equal(entries.find((e) => e.name === "notes.txt")!.size, 5);
  assert.deepEqual((entries.find((e) => e.name === "latest") as Record<string, unknown>).target, "notes.txt");
  assert.equal(out.output!.truncated, false);
  assert.ok(
    keys.handed.every((k) => k.dataKey.every((b) => b === 0) && k.idKey.every((b) => b === 0)),
    "wiped",
  );
  // The root lists the first component of the backed-up path.
  const root = await browse(ctx("browse", { ...point, path: "/" }));
  assert.deepEqual((root.output!.entries as { name: string }[]).map((e) => e.name), [f.src.split("/")[1]]);
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

Deno.test("browse: a long folder is cut at 500 entries with its total, never silently", async () => {
  await using dir = await tempDir();
  const f = await fixture(dir.path, 600);
  const out = await browseHandler(services(dir.path, provider(f.keys).fn))(
    ctx("browse", { restorePointId: "RP", engineRestorePointId: f.snap, policyId: "POL1", path: f.src }),
  );
  const kept = (out.output!.entries as unknown[]).length;
  assert.ok(kept >= 400 && kept <= 500, `${kept} entries kept`);
  assert.equal(out.output!.truncated, true);
  assert.equal(out.output!.total, 603);
  assert.ok(JSON.stringify(out.output).length < 60_000, "fits a job record");
});

Deno.test("search: names by substring or glob, case-insensitive, over the whole tree", async () => {
  await using dir = await tempDir();
  const f = await fixture(dir.path);
  const search = searchHandler(services(dir.path, provider(f.keys).fn));
  const point = { restorePointId: "RP", engineRestorePointId: f.snap, policyId: "POL1", targetId: T };
  const byName = await search(ctx("search", { ...point, query: "summary", mode: "name", maxMatches: 1000 }));
  assert.deepEqual((byName.output!.matches as { path: string }[]).map((m) => m.path), [
    `${f.src}/reports/2026/Summary.PDF`,
  ]);
  const glob = await search(ctx("search", { ...point, query: "zq000[12].BIN", mode: "glob" }));
  assert.deepEqual((glob.output!.matches as { name: string }[]).map((m) => m.name), [
    "zq0001.bin",
    "zq0002.bin",
  ]);
  const capped = await search(ctx("search", { ...point, query: "zq0", maxMatches: 2 }));
  assert.equal((capped.output!.matches as unknown[]).length, 2);
  assert.equal(capped.output!.truncated, true);
  assert.equal(capped.output!.total, 3);
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
  assert.deepEqual([good.namespace, good.dataKey, good.idKey], [NS, key(1), key(2)]);
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
