/**
 * The streamed pack path (docs/performance.md "End-to-end path"): the agent sends a pack as a stream of its
 * parts over HTTP/1.1, the BES writes it to a staged object while hashing it and makes it visible only after
 * every check; a backup holds at most `PACKS_IN_FLIGHT` (+1) packs in upload at once.
 */
import assert from "node:assert/strict";
import { type Backend, LocalBackend } from "../../engine/repo/backend.ts";
import { backupFiles, PACKS_IN_FLIGHT } from "../../engine/repo/backup.ts";
import { concat } from "../../engine/repo/bytes.ts";
import { sha256Hex } from "../../engine/repo/chunk_id.ts";
import { assemblePack, BLOB_ENTRY_BYTES, PackBuilder, packObjectName } from "../../engine/repo/pack.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { objectPath } from "../../engine/protocol/data_api.ts";
import { RemoteBackend } from "../../engine/protocol/remote_backend.ts";
import { packListingOfParts, sliceParts } from "../../engine/agent/cache.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";
import { names, startBes } from "./data_api_fixture.ts";
import { assertSameTree } from "./tree_fixture.ts";

/** A pack of host `namespace` with `count` small blobs: its parts, bytes and id. */
function makePack(namespace: string, count: number, seed = "p") {
  const b = new PackBuilder(namespace);
  for (let i = 0; i < count; i++) {
    const bytes = deterministicBytes(`${seed}${i}`, 40 + (i % 7));
    b.add("data", sha256Hex(bytes), bytes);
  }
  const { parts } = b.pieces();
  const { bytes, packId } = assemblePack(parts);
  return { parts, bytes, packId, name: packObjectName(packId) };
}

/** A body streaming `bytes` in pieces of `piece` bytes; with `failAfter`, errors once that many are sent. */
function streamOf(bytes: Uint8Array, piece: number, failAfter?: number): ReadableStream<Uint8Array> {
  let o = 0;
  return new ReadableStream<Uint8Array>({
    pull(c) {
      if (failAfter !== undefined && o >= failAfter) return c.error(new Error("client gave up"));
      if (o >= bytes.length) return c.close();
      c.enqueue(bytes.slice(o, o + piece));
      o += piece;
    },
  });
}

/** Every temporary file left under `dir` (a staged write that was neither committed nor aborted). */
async function temporaries(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for await (const e of Deno.readDir(d)) {
      if (e.isDirectory) await walk(`${d}/${e.name}`);
      else if (e.name.startsWith(".tmp-")) out.push(`${d}/${e.name}`);
    }
  };
  await walk(dir);
  return out;
}

async function errorOf(res: Response): Promise<[number, string]> {
  const body = await res.json();
  return [res.status, body.error.code];
}

Deno.test("LocalBackend.stage: invisible until committed, read back, atomic commit, abort leaves nothing", async () => {
  await using tmp = await tempDir();
  const be = new LocalBackend(`${tmp.path}/repo`);
  const data = deterministicBytes("staged", 300_000);
  const staged = await be.stage("data/ab/obj");
  await staged.write(data.subarray(0, 100_000));
  await staged.write(data.subarray(100_000));
  assert.equal(await be.exists("data/ab/obj"), false);
  assert.deepEqual(await names(be, "data/"), []);
  assert.deepEqual(await staged.read(299_000, 1000), data.subarray(299_000));
  await assert.rejects(() => staged.read(299_500, 1000), /300000 bytes written/);
  await staged.commit();
  assert.deepEqual(await be.get("data/ab/obj"), data);
  await assert.rejects(() => staged.write(data), /ended/);
  assert.deepEqual(await temporaries(`${tmp.path}/repo`), []);

  // A read between writes does not move where the next write lands.
  const mixed = await be.stage("data/ab/mixed");
  await mixed.write(data.subarray(0, 1000));
  assert.deepEqual(await mixed.read(10, 20), data.subarray(10, 30));
  await mixed.write(data.subarray(1000));
  await mixed.commit();
  assert.deepEqual(await be.get("data/ab/mixed"), data);

  const dropped = await be.stage("data/ab/other");
  await dropped.write(data);
  await dropped.abort();
  await dropped.abort(); // twice is harmless
  assert.equal(await be.exists("data/ab/other"), false);
  assert.deepEqual(await temporaries(`${tmp.path}/repo`), []);
});

Deno.test("data API: a pack streamed in small pieces, its trailer longer than the tail kept in memory, is stored byte-identical", async () => {
  await using bes = await startBes();
  // 2,000 entries: a trailer of about 82 KB, past the 64 KiB the BES keeps of a pack's end while it streams.
  const pack = makePack("host-a", 2000);
  assert.ok(2000 * BLOB_ENTRY_BYTES > 64 * 1024);
  const res = await bes.request(objectPath(pack.name), { method: "PUT", body: streamOf(pack.bytes, 1000) });
  assert.equal(res.status, 201, await res.text());
  assert.deepEqual(await bes.storage.get(pack.name), pack.bytes);
  // The same pack again (a retried upload): accepted, unchanged, nothing left over.
  const again = await bes.request(objectPath(pack.name), {
    method: "PUT",
    body: streamOf(pack.bytes, 70_000),
  });
  assert.equal(again.status, 201, await again.text());
  assert.deepEqual(await bes.storage.get(pack.name), pack.bytes);
  assert.deepEqual(await temporaries(`${bes.dir}/target`), []);
});

/** A pack of host-a of exactly `total` bytes: one blob of PRNG bytes sized to reach it. */
function packOfSize(total: number, seed: string) {
  const probe = new PackBuilder("host-a");
  probe.add("data", sha256Hex(new Uint8Array(1000)), new Uint8Array(1000));
  const overhead = assemblePack(probe.pieces().parts).bytes.length - 1000;
  const blob = new Uint8Array(total - overhead);
  const piece = deterministicBytes(seed, 65_536);
  for (let o = 0; o < blob.length; o += piece.length) blob.set(piece.subarray(0, blob.length - o), o);
  const b = new PackBuilder("host-a");
  b.add("data", sha256Hex(blob), blob);
  const { bytes, packId } = assemblePack(b.pieces().parts);
  assert.equal(bytes.length, total);
  return { bytes, packId, name: packObjectName(packId) };
}

Deno.test("data API: packs past one 4 MiB receive block, the trailer across two blocks, stored byte-identical over HTTP (BYOB reads) and through a body that is not a byte stream", async () => {
  await using bes = await startBes();
  const block = 4 * 1024 * 1024;
  // Ends 100 bytes into the second block (the 64 KiB tail spans both blocks), exactly at a block's end,
  // and 1 byte past it.
  const sizes = [block + 100, 2 * block, block + 1, block - 1];
  for (const [i, size] of sizes.entries()) {
    const pack = packOfSize(size, `big${i}`);
    // Over loopback HTTP: the request body is a byte stream, read with a BYOB reader.
    const res = await bes.request(objectPath(pack.name), {
      method: "PUT",
      // Pieces of about 100 KB, or of 1 MiB (over plain HTTP the server may hand on more than 64 KiB at once).
      body: streamOf(pack.bytes, i % 2 ? 1 << 20 : 100_003),
    });
    assert.equal(res.status, 201, await res.text());
    assert.deepEqual(await bes.storage.get(pack.name), pack.bytes, `pack of ${size} bytes`);
  }
  // Over HTTPS (the BES's own transport), pieces of 1 MiB and of 1,000 bytes.
  {
    await using tls = await startBes({ https: true });
    for (const [i, [size, piece]] of [[block - 1, 1 << 20], [2 * block + 3, 1000]].entries()) {
      const pack = packOfSize(size, `tls${i}`);
      const res = await tls.request(objectPath(pack.name), {
        method: "PUT",
        body: streamOf(pack.bytes, piece),
      });
      assert.equal(res.status, 201, await res.text());
      assert.deepEqual(await tls.storage.get(pack.name), pack.bytes, `pack of ${size} bytes over HTTPS`);
    }
  }
  // Straight to the handler with a plain (non-byte) stream: the pieces are copied into the blocks.
  for (const [i, size] of [block + 100, 2 * block + 7].entries()) {
    const pack = packOfSize(size, `plain${i}`);
    const res = await bes.api.fetch(
      new Request(`${bes.url}${objectPath(pack.name)}`, {
        method: "PUT",
        headers: { authorization: `Bearer ${bes.token()}` },
        body: streamOf(pack.bytes, 65_537),
      }),
    );
    assert.equal(res.status, 201, await res.text());
    assert.deepEqual(await bes.storage.get(pack.name), pack.bytes, `pack of ${size} bytes, plain stream`);
  }
  // A damaged byte in the first block of a two-block pack: refused, named, nothing left behind.
  const pack = packOfSize(block + 5000, "bad");
  const damaged = pack.bytes.slice();
  damaged[10] ^= 1;
  const res = await bes.request(objectPath(pack.name), { method: "PUT", body: streamOf(damaged, 100_003) });
  const body = await res.json();
  assert.deepEqual([res.status, body.error.code], [422, "invalid"]);
  assert.match(body.error.message, new RegExp(pack.packId));
  assert.equal(await bes.storage.exists(pack.name), false);
  assert.deepEqual(await temporaries(`${bes.dir}/target`), []);
});

Deno.test("data API: a streamed pack failing a check is refused, names the pack, and leaves nothing behind", async () => {
  await using bes = await startBes({ limits: { pack: 200_000 } });
  const target = `${bes.dir}/target`;
  const pack = makePack("host-a", 500);
  const put = (name: string, body: ReadableStream<Uint8Array>, token?: string) =>
    bes.request(objectPath(name), { method: "PUT", body, token });

  // Bytes that do not hash to the name.
  const wrongName = packObjectName("00".repeat(32));
  const wrong = await put(wrongName, streamOf(pack.bytes, 4096));
  const wrongBody = await wrong.json();
  assert.deepEqual([wrong.status, wrongBody.error.code], [422, "invalid"]);
  assert.match(wrongBody.error.message, new RegExp(wrongName));
  // A damaged trailer under the name of its (damaged) bytes: the hash matches, the trailer check fails.
  const damaged = pack.bytes.slice();
  damaged[damaged.length - 20] ^= 0xff;
  const damagedName = packObjectName(sha256Hex(damaged));
  const bad = await put(damagedName, streamOf(damaged, 4096));
  const badBody = await bad.json();
  assert.deepEqual([bad.status, badBody.error.code], [422, "invalid"]);
  assert.match(badBody.error.message, new RegExp(sha256Hex(damaged)));
  // host-b sending host-a's pack.
  const tokenB = bes.token({ job: "job_b", host: "host-b", namespace: "host-b" });
  assert.deepEqual(await errorOf(await put(pack.name, streamOf(pack.bytes, 4096), tokenB)), [
    403,
    "forbidden",
  ]);
  // Over the limit, sent chunked (no content-length): refused while it streams.
  const big = makePack("host-a", 5000, "big");
  assert.ok(big.bytes.length > 200_000);
  assert.deepEqual(await errorOf(await put(big.name, streamOf(big.bytes, 8192))), [413, "payload_too_large"]);

  for (const name of [wrongName, damagedName, pack.name, big.name]) {
    assert.equal(await bes.storage.exists(name), false, name);
  }
  assert.deepEqual(await temporaries(target), []);
  // A valid one still goes through.
  assert.equal((await put(pack.name, streamOf(pack.bytes, 4096))).status, 201);
  assert.deepEqual(await bes.storage.get(pack.name), pack.bytes);
});

Deno.test("data API: an upload the client drops midway leaves no object and no temporary file", async () => {
  await using bes = await startBes();
  const pack = makePack("host-a", 3000, "drop");
  await assert.rejects(() =>
    bes.request(objectPath(pack.name), { method: "PUT", body: streamOf(pack.bytes, 16_384, 65_536) })
  );
  // The BES notices the broken body on its own schedule.
  const deadline = Date.now() + 20_000;
  while ((await temporaries(`${bes.dir}/target`)).length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.deepEqual(await temporaries(`${bes.dir}/target`), []);
  assert.equal(await bes.storage.exists(pack.name), false);
});

Deno.test("RemoteBackend.putParts streams the parts, leaves them intact, and sends them whole again on a retry", async () => {
  const received: Uint8Array[] = [];
  let calls = 0;
  await using server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    received.push(new Uint8Array(await req.arrayBuffer()));
    return ++calls === 1 ? new Response("busy", { status: 503 }) : new Response(null, { status: 201 });
  });
  const remote = new RemoteBackend({
    url: `http://127.0.0.1:${server.addr.port}`,
    token: () => "t",
    backoffMs: 5,
  });
  const pack = makePack("host-a", 300, "parts");
  const copies = pack.parts.map((p) => p.slice());
  await remote.putParts(pack.name, pack.parts);
  remote.close();
  assert.equal(calls, 2);
  for (const r of received) assert.deepEqual(r, pack.bytes);
  pack.parts.forEach((p, i) => assert.deepEqual(p, copies[i]));
});

Deno.test("sliceParts and packListingOfParts read across part boundaries", () => {
  const pack = makePack("host-a", 2000, "slice");
  for (const [o, n] of [[0, 10], [5, 500], [pack.bytes.length - 7, 7], [1234, 40_000]]) {
    assert.deepEqual(sliceParts(pack.parts, o, n), pack.bytes.subarray(o, o + n));
  }
  assert.throws(() => sliceParts(pack.parts, pack.bytes.length - 2, 5), RangeError);
  const listing = packListingOfParts(pack.packId, pack.parts);
  assert.equal(listing?.entries.length, 2000);
  assert.equal(packListingOfParts(pack.packId, [concat(...pack.parts).subarray(0, 100)]), null);
});

/** `inner` whose pack writes take `delayMs`, counting how many run at once. */
class SlowPacks implements Backend {
  readonly location: string;
  inFlight = 0;
  maxInFlight = 0;
  packs = 0;
  constructor(readonly inner: LocalBackend, readonly delayMs: number) {
    this.location = inner.location;
  }
  list(prefix: string) {
    return this.inner.list(prefix);
  }
  get(name: string, range?: Parameters<Backend["get"]>[1]) {
    return this.inner.get(name, range);
  }
  put(name: string, data: Uint8Array) {
    return this.putParts(name, [data]);
  }
  async putParts(name: string, parts: Uint8Array[]) {
    if (!name.startsWith("data/")) return await this.inner.putParts(name, parts);
    this.packs++;
    this.maxInFlight = Math.max(this.maxInFlight, ++this.inFlight);
    try {
      await new Promise((r) => setTimeout(r, this.delayMs));
      await this.inner.putParts(name, parts);
    } finally {
      this.inFlight--;
    }
  }
  delete(name: string) {
    return this.inner.delete(name);
  }
  exists(name: string) {
    return this.inner.exists(name);
  }
}

Deno.test("backup: a slow store holds the backup to a bounded number of packs in upload (back-pressure), and it restores", async () => {
  await using tmp = await tempDir();
  const src = `${tmp.path}/src`;
  await Deno.mkdir(src);
  for (let i = 0; i < 6; i++) await Deno.writeFile(`${src}/f${i}.bin`, deterministicBytes(`bp${i}`, 700_000));
  for (let i = 0; i < 40; i++) await Deno.writeFile(`${src}/s${i}.txt`, deterministicBytes(`s${i}`, 3000));
  const slow = new SlowPacks(new LocalBackend(`${tmp.path}/repo`), 60);
  const repo = await Repository.init(slow, crypto.getRandomValues(new Uint8Array(32)), {
    namespace: "h",
    chunker: { min: 16 * 1024, avg: 32 * 1024, max: 64 * 1024 },
    packTargetBytes: 128 * 1024,
  });
  // Two encodes at once: when 3 packs are in upload, the encodes already running can fill one more at most.
  const r = await backupFiles(repo.namespace("h"), { paths: [src], concurrency: 2 });
  assert.deepEqual(r.errors, []);
  assert.ok(slow.packs >= 20, `${slow.packs} packs`);
  assert.ok(slow.maxInFlight >= 2, `uploads overlapped (${slow.maxInFlight})`);
  // Without the bound (packsInFlight 100) this run had 16 packs in upload at once.
  assert.ok(slow.maxInFlight <= PACKS_IN_FLIGHT + 1, `${slow.maxInFlight} packs in upload at once`);
  const out = `${tmp.path}/out`;
  await restoreSnapshot(repo.namespace("h"), r.snapshotId, { target: out });
  await assertSameTree(src, `${out}${src}`);
});
