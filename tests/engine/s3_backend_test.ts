/**
 * The S3 backend against a real s3rver on loopback (random port, temporary folder, silent): the backend
 * contract, retries/timeouts against a misbehaving loopback server, a repository round trip and the
 * command line with an s3:// LOCATION.
 */
import assert from "node:assert/strict";
import S3rver from "s3rver";
import { backupFiles } from "../../engine/repo/backup.ts";
import { MissingObjectError, RepoError } from "../../engine/repo/errors.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { S3Backend, type S3BackendOptions } from "../../engine/repo/s3_backend.ts";
import { collect, deterministicBytes, tempDir } from "./helpers.ts";

const CLI = new URL("../../engine/cli.ts", import.meta.url).pathname;
const CREDS = { accessKeyId: "S3RVER", secretAccessKey: "S3RVER" };

function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

async function startS3rver(): Promise<AsyncDisposable & { endpoint: string }> {
  const dir = await tempDir("cadres-s3rver-");
  const port = freePort();
  const server = new S3rver({
    port,
    address: "127.0.0.1",
    silent: true,
    directory: dir.path,
    configureBuckets: [{ name: "bucket" }],
  });
  await server.run();
  return {
    endpoint: `http://127.0.0.1:${port}`,
    async [Symbol.asyncDispose]() {
      await server.close();
      await dir[Symbol.asyncDispose]();
    },
  };
}

function backend(endpoint: string, extra: Partial<S3BackendOptions> = {}) {
  return new S3Backend({
    endpoint,
    bucket: "bucket",
    prefix: "repos/one",
    region: "us-east-1",
    ...CREDS,
    ...extra,
  });
}

Deno.test("S3Backend on s3rver: put, get, ranges, list, exists, delete", async () => {
  await using s3 = await startS3rver();
  const be = backend(s3.endpoint);
  const data = deterministicBytes("s3-obj", 5000);

  assert.equal(await be.exists("data/ab/obj"), false);
  await assert.rejects(
    be.get("data/ab/obj"),
    (e) => e instanceof MissingObjectError && /data\/ab\/obj/.test(e.message),
  );
  await be.put("data/ab/obj", data);
  assert.equal(await be.exists("data/ab/obj"), true);
  assert.deepEqual(await be.get("data/ab/obj"), data);
  assert.deepEqual(await be.get("data/ab/obj", { offset: 100, length: 900 }), data.slice(100, 1000));
  assert.deepEqual(await be.get("data/ab/obj", { suffix: 64 }), data.slice(5000 - 64));
  assert.deepEqual(await be.get("data/ab/obj", { suffix: 9999 }), data);
  await assert.rejects(be.get("data/ab/obj", { offset: 4990, length: 20 }), RepoError);
  // Replacing is atomic: a single PUT.
  await be.put("data/ab/obj", data.subarray(0, 10));
  assert.deepEqual(await be.get("data/ab/obj"), data.slice(0, 10));

  // Listing: only below the prefix, names relative to the repository (pagination: next test; s3rver's
  // continuation tokens use DES, which node:crypto in Deno lacks).
  for (let i = 0; i < 10; i++) await be.put(`index/seg-${i}`, new Uint8Array([i]));
  await backend(s3.endpoint, { prefix: "repos/other" }).put("index/foreign", new Uint8Array([1]));
  const listed = await collect(be.list("index/"));
  assert.deepEqual(listed.map((o) => o.name).sort(), Array.from({ length: 10 }, (_, i) => `index/seg-${i}`));
  assert.ok(listed.every((o) => o.size === 1 && o.modified.getTime() > Date.now() - 600_000));
  assert.equal((await collect(be.list(""))).length, 11);

  await be.delete("index/seg-3");
  await be.delete("index/seg-3"); // no error when gone
  assert.equal(await be.exists("index/seg-3"), false);
  assert.equal((await collect(be.list("index/"))).length, 9);
  await assert.rejects(be.exists("../escape"), RepoError);
});

Deno.test("S3Backend: list follows ListObjectsV2 continuation tokens", async () => {
  const seen: (string | null)[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const q = new URL(req.url).searchParams;
    assert.equal(q.get("list-type"), "2");
    assert.equal(q.get("prefix"), "repos/one/data/");
    assert.equal(q.get("max-keys"), "2");
    const token = q.get("continuation-token");
    seen.push(token);
    const page = token === null ? 0 : Number(token.slice(1));
    const keys = [0, 1].map((i) => page * 2 + i).filter((i) => i < 5);
    const last = page * 2 + 2 >= 5;
    return new Response(
      `<?xml version="1.0"?><ListBucketResult><IsTruncated>${!last}</IsTruncated>` +
        keys.map((i) =>
          `<Contents><Key>repos/one/data/k${i}&amp;x</Key><Size>${i}</Size>` +
          `<LastModified>2026-01-0${i + 1}T00:00:00.000Z</LastModified></Contents>`
        ).join("") +
        (last ? "" : `<NextContinuationToken>t${page + 1}</NextContinuationToken>`) + "</ListBucketResult>",
    );
  });
  try {
    const be = backend(`http://127.0.0.1:${server.addr.port}`, { pageSize: 2 });
    const listed = await collect(be.list("data/"));
    assert.deepEqual(listed.map((o) => o.name), [0, 1, 2, 3, 4].map((i) => `data/k${i}&x`));
    assert.deepEqual(listed.map((o) => o.size), [0, 1, 2, 3, 4]);
    assert.equal(listed[4].modified.toISOString(), "2026-01-05T00:00:00.000Z");
    assert.deepEqual(seen, [null, "t1", "t2"]);
  } finally {
    await server.shutdown();
  }
});

Deno.test("S3Backend: retries 5xx/429 with backoff, bounded attempts, timeouts, errors name the key", async () => {
  let calls = 0;
  let mode: "flaky" | "down" | "hang" | "forbidden" = "flaky";
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    calls++;
    if (mode === "hang") {
      await new Promise((r) => setTimeout(r, 300));
      return new Response("late");
    }
    if (mode === "forbidden") {
      return new Response("<Error><Code>AccessDenied</Code></Error>", { status: 403 });
    }
    if (mode === "down" || calls <= 2) return new Response("busy", { status: calls % 2 ? 503 : 429 });
    await req.arrayBuffer();
    return new Response("hello");
  });
  try {
    const endpoint = `http://127.0.0.1:${server.addr.port}`;
    const be = backend(endpoint, { maxAttempts: 3, backoffMs: 5, timeoutMs: 100 });
    assert.equal(new TextDecoder().decode(await be.get("config")), "hello");
    assert.equal(calls, 3);

    mode = "down";
    calls = 0;
    await assert.rejects(
      be.put("data/aa/pack1", new Uint8Array(3)),
      /after 3 attempts: answered 503.*repos\/one\/data\/aa\/pack1/,
    );
    assert.equal(calls, 3);

    mode = "hang";
    calls = 0;
    await assert.rejects(
      be.get("snapshots/s1"),
      (e: Error) => /timed out/.test(e.message) && /snapshots\/s1/.test(e.message),
    );
    assert.equal(calls, 3);

    mode = "forbidden";
    calls = 0;
    await assert.rejects(be.exists("keys/h/k"), /HEAD .*answered 403.*repos\/one\/keys\/h\/k/);
    assert.equal(calls, 1, "4xx is not retried");
  } finally {
    await server.shutdown();
  }
});

Deno.test("S3Backend: repository init, backup and restore byte-identical", async () => {
  await using s3 = await startS3rver();
  await using dir = await tempDir();
  const src = `${dir.path}/src`;
  await Deno.mkdir(`${src}/sub`, { recursive: true });
  await Deno.writeFile(`${src}/a.bin`, deterministicBytes("s3-a", 150_000));
  await Deno.writeFile(`${src}/sub/b.txt`, new TextEncoder().encode("b\n".repeat(500)));
  const kek = crypto.getRandomValues(new Uint8Array(32));
  const be = backend(s3.endpoint);
  const repo = await Repository.init(be, kek, {
    namespace: "h1",
    chunker: { min: 1024, avg: 4096, max: 16384 },
    packTargetBytes: 32 * 1024,
  });
  const result = await backupFiles(repo.namespace("h1"), { paths: [src] });
  assert.deepEqual(result.errors, []);

  const reopened = await Repository.open(backend(s3.endpoint), kek);
  const target = `${dir.path}/target`;
  const restored = await restoreSnapshot(reopened.namespace("h1"), result.snapshotId, { target });
  assert.deepEqual(restored.errors, []);
  assert.deepEqual(await Deno.readFile(`${target}${src}/a.bin`), await Deno.readFile(`${src}/a.bin`));
  assert.deepEqual(await Deno.readFile(`${target}${src}/sub/b.txt`), await Deno.readFile(`${src}/sub/b.txt`));
});

Deno.test("deno task repo with an s3:// LOCATION: init, backup, restore", async () => {
  await using s3 = await startS3rver();
  await using dir = await tempDir();
  const src = `${dir.path}/src`;
  await Deno.mkdir(src);
  await Deno.writeFile(`${src}/f.bin`, deterministicBytes("s3-cli", 60_000));
  const location = `s3://bucket/cli/repo?endpoint=${encodeURIComponent(s3.endpoint)}&region=us-east-1`;
  const run = async (env: Record<string, string>, ...args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-net",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        "--allow-sys",
        CLI,
        "repo",
        ...args,
      ],
      env,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  };
  const env = { AWS_ACCESS_KEY_ID: "S3RVER", AWS_SECRET_ACCESS_KEY: "S3RVER" };
  const common = ["--repo", location, "--key-file", `${dir.path}/key`, "--host", "h1"];

  const noCreds = await run({ AWS_ACCESS_KEY_ID: "", AWS_SECRET_ACCESS_KEY: "" }, "init", ...common);
  assert.notEqual(noCreds.code, 0);
  assert.match(noCreds.stderr, /AWS_ACCESS_KEY_ID/);

  const init = await run(env, "init", ...common);
  assert.equal(init.code, 0, init.stderr);
  const backup = await run(env, "backup", ...common, "--json", src);
  assert.equal(backup.code, 0, backup.stderr);
  const { snapshotId, files } = JSON.parse(backup.stdout);
  assert.equal(files, 1);
  const target = `${dir.path}/target`;
  const restore = await run(env, "restore", ...common, snapshotId, "--target", target);
  assert.equal(restore.code, 0, restore.stderr);
  assert.deepEqual(await Deno.readFile(`${target}${src}/f.bin`), await Deno.readFile(`${src}/f.bin`));
  assert.ok((await collect(backend(s3.endpoint, { prefix: "cli/repo" }).list("snapshots/"))).length === 1);
});

Deno.test("S3Backend: a listing without ListBucketResult, or truncated without a token, throws naming the prefix", async () => {
  let body = "";
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, () => new Response(body));
  try {
    const be = backend(`http://127.0.0.1:${server.addr.port}`, { maxAttempts: 1 });
    body = "<html>captive portal</html>";
    await assert.rejects(collect(be.list("data/")), /ListBucketResult.*repos\/one\/data\//);
    body = "";
    await assert.rejects(collect(be.list("data/")), /ListBucketResult.*repos\/one\/data\//);
    body = `<?xml version="1.0"?><ListBucketResult><IsTruncated>true</IsTruncated>` +
      `<Contents><Key>repos/one/index/a</Key><Size>1</Size></Contents></ListBucketResult>`;
    await assert.rejects(collect(be.list("index/")), /continuation token.*repos\/one\/index\//);
    body = `<?xml version="1.0"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
      `<IsTruncated>false</IsTruncated></ListBucketResult>`;
    assert.deepEqual(await collect(be.list("index/")), []);
  } finally {
    await server.shutdown();
  }
});
