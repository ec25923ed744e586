import assert from "node:assert/strict";
import { repoArgv, repoCli } from "./cli_run.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

const MIB = 1024 * 1024;

/** A sparse 16 MiB + 4 KiB image: data in chunks 0 and 2 (4 MiB chunks), holes elsewhere. */
async function makeImage(path: string): Promise<Uint8Array> {
  const bytes = new Uint8Array(16 * MIB + 4096);
  bytes.set(deterministicBytes("cli-img-0", MIB), 0);
  bytes.set(deterministicBytes("cli-img-2", MIB), 9 * MIB);
  using f = await Deno.open(path, { write: true, create: true, truncate: true });
  await f.write(bytes.subarray(0, MIB));
  await f.seek(9 * MIB, Deno.SeekMode.Start);
  await f.write(bytes.subarray(9 * MIB, 10 * MIB));
  await f.truncate(bytes.length);
  return bytes;
}

Deno.test("deno task repo backup --image, restore: byte-identical and sparse; an incremental stores the changed chunk", async () => {
  await using dir = await tempDir();
  const image = `${dir.path}/disk.img`;
  const v1 = await makeImage(image);
  const common = ["--repo", `${dir.path}/repo`, "--key-file", `${dir.path}/key`, "--host", "h1"];
  assert.equal((await repoCli(["init", ...common])).code, 0);

  const b1 = await repoCli(["backup", ...common, "--image", "--json", image]);
  assert.equal(b1.code, 0, b1.stderr);
  assert.equal(b1.stderr, "", "no progress bar when stderr is not a terminal");
  const r1 = JSON.parse(b1.stdout);
  for (
    const k of ["snapshotId", "files", "dirs", "bytesRead", "bytesNew", "bytesStored", "durationMs", "errors"]
  ) {
    assert.ok(k in r1, `backup --image --json has ${k}`);
  }
  assert.equal(r1.kind, "image");
  assert.equal(r1.size, v1.length);
  assert.deepEqual(
    [r1.chunks, r1.zeroChunks, r1.newChunks],
    [5, 3, 4],
    "2 data chunks, zero chunks of 4 MiB and 4 KiB",
  );

  const v2 = v1.slice();
  v2[9 * MIB + 77] ^= 0xff;
  using f = await Deno.open(image, { write: true });
  await f.seek(9 * MIB + 77, Deno.SeekMode.Start);
  await f.write(v2.subarray(9 * MIB + 77, 9 * MIB + 78));
  const b2 = await repoCli(["backup", ...common, "--image", "--json", "--parent", r1.snapshotId, image]);
  assert.equal(b2.code, 0, b2.stderr);
  const r2 = JSON.parse(b2.stdout);
  assert.equal(r2.newChunks, 1);
  assert.equal(r2.bytesNew, 4 * MIB);
  assert.ok(r2.bytesStored < 1.1 * MIB, `stored ${r2.bytesStored}`);

  const snaps = JSON.parse((await repoCli(["snapshots", ...common, "--json"])).stdout).snapshots;
  assert.deepEqual(snaps.map((s: { kind: string }) => s.kind), ["image", "image"]);
  const ls = JSON.parse((await repoCli(["ls", ...common, r2.snapshotId, image, "--json"])).stdout);
  assert.deepEqual(ls.entries.map((e: { path: string; size: number }) => [e.path, e.size]), [[
    image,
    v1.length,
  ]]);

  for (const [snap, bytes, name] of [[r1.snapshotId, v1, "v1.img"], [r2.snapshotId, v2, "v2.img"]] as const) {
    const target = `${dir.path}/out/${name}`;
    const res = await repoCli(["restore", ...common, snap, "--target", target, "--json"]);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(JSON.parse(res.stdout).zeroChunks, 3);
    assert.deepEqual(await Deno.readFile(target), bytes);
    const info = await Deno.stat(target);
    assert.ok(info.blocks! * 512 <= 8 * MIB + 64 * 1024, `allocated ${info.blocks! * 512}: holes kept`);
  }

  // An existing non-empty target is refused without --overwrite, and kept.
  const again = await repoCli(["restore", ...common, r1.snapshotId, "--target", `${dir.path}/out/v2.img`]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /^error: Image restore target .*v2\.img exists and is not empty/);
  assert.equal(again.stderr.trim().split("\n").length, 1);
  assert.deepEqual(await Deno.readFile(`${dir.path}/out/v2.img`), v2);
  const over = await repoCli([
    "restore",
    ...common,
    r1.snapshotId,
    "--target",
    `${dir.path}/out/v2.img`,
    "--overwrite",
  ]);
  assert.equal(over.code, 0, over.stderr);
  assert.deepEqual(await Deno.readFile(`${dir.path}/out/v2.img`), v1);

  const usage = [
    ["backup", ...common, "--image", image, image],
    ["backup", ...common, "--image", "--exclude", "*.x", image],
    ["restore", ...common, r1.snapshotId, "--target", `${dir.path}/x.img`, "--include", "/a"],
  ];
  for (const args of usage) assert.equal((await repoCli(args)).code, 2, args.join(" "));
});

Deno.test("deno task repo restore of an image with a damaged pack names the chunk offset and writes nothing", async () => {
  await using dir = await tempDir();
  const image = `${dir.path}/disk.img`;
  // Three 4 MiB chunks, none all-zero: the restore reads every blob (an all-zero chunk is restored as a hole
  // without reading its blob, and the workers may pack it first).
  await Deno.writeFile(image, deterministicBytes("cli-img-damage", 12 * MIB));
  const repo = `${dir.path}/repo`;
  const common = ["--repo", repo, "--key-file", `${dir.path}/key`, "--host", "h1", "--compression", "none"];
  assert.equal((await repoCli(["init", ...common])).code, 0);
  const snap =
    JSON.parse((await repoCli(["backup", ...common.slice(0, 6), "--image", "--json", image])).stdout)
      .snapshotId;
  // One pack holds the three chunks: a byte in its first blob's ciphertext is flipped.
  const packs: string[] = [];
  for await (const d of Deno.readDir(`${repo}/data`)) {
    for await (const p of Deno.readDir(`${repo}/data/${d.name}`)) {
      packs.push(`${repo}/data/${d.name}/${p.name}`);
    }
  }
  const pack = packs.find((p) => Deno.statSync(p).size > MIB)!;
  const bytes = await Deno.readFile(pack);
  bytes[5000] ^= 1;
  await Deno.writeFile(pack, bytes);

  const target = `${dir.path}/out.img`;
  const r = await repoCli(["restore", ...common.slice(0, 6), snap, "--target", target]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /error: chunk at offset (0|4194304|8388608) \(blob [0-9a-f]{64}\): Damaged blob/);
  assert.match(r.stderr, /Restore failed: 1 chunks could not be restored; .*out\.img was not written/);
  await assert.rejects(Deno.stat(target), Deno.errors.NotFound);
  assert.deepEqual([...Deno.readDirSync(dir.path)].map((e) => e.name).sort(), ["disk.img", "key", "repo"]);
});

/** Runs the command line in a pseudo-terminal (`script`); its output, or null where `script` is missing. */
async function inTerminal(args: string[]): Promise<{ code: number; output: string } | null> {
  const quoted = repoArgv(args).map((a) => `'${a.replaceAll("'", `'\\''`)}'`).join(" ");
  const out = await new Deno.Command("script", {
    args: ["-qec", quoted, "/dev/null"],
    stdout: "piped",
    stderr: "piped",
  })
    .output().catch(() => null);
  if (out === null) return null;
  // The escape character shown as "<ESC>", so that assertions read (and lint) as plain text.
  return { code: out.code, output: new TextDecoder().decode(out.stdout).replaceAll("\x1b", "<ESC>") };
}

Deno.test("deno task repo backup and restore draw a progress bar in a terminal, none with --json", async () => {
  await using dir = await tempDir();
  const image = `${dir.path}/disk.img`;
  await makeImage(image);
  const src = `${dir.path}/src`;
  await Deno.mkdir(src);
  await Deno.writeFile(`${src}/a.bin`, deterministicBytes("bar", 300_000));
  const common = ["--repo", `${dir.path}/repo`, "--key-file", `${dir.path}/key`, "--host", "h1"];
  assert.equal((await repoCli(["init", ...common])).code, 0);

  const files = await inTerminal(["backup", ...common, src]);
  if (files === null) {
    console.log("skipped: no `script` command to provide a terminal");
    return;
  }
  assert.equal(files.code, 0, files.output);
  assert.match(files.output, /\rbackup {2}\d+ files {2}[\d.]+ [KMG]?i?B {2}.*\/s {2}.*<ESC>\[K/);
  assert.match(files.output, /\r<ESC>\[Ksnapshot [0-9a-f]{64} saved/, "the bar is erased before the result");

  const img = await inTerminal(["backup", ...common, "--image", image]);
  assert.match(img!.output, /\rbackup +\d+% {2}.*MiB \/ 16\.0 MiB/);
  const snap = /snapshot ([0-9a-f]{64}) saved/.exec(img!.output)![1];
  const restore = await inTerminal(["restore", ...common, snap, "--target", `${dir.path}/out.img`]);
  assert.equal(restore!.code, 0, restore!.output);
  assert.match(restore!.output, /\rrestore +\d+% {2}.*MiB \/ 16\.0 MiB/);

  const json = await inTerminal(["backup", ...common, "--json", src]);
  assert.equal(json!.code, 0, json!.output);
  assert.ok(!json!.output.includes("<ESC>"), "no control codes with --json");
  assert.equal(JSON.parse(json!.output).files, 1, "stdout holds exactly one JSON object");
});

/**
 * A loop device over a new file holding `content`, or null where unavailable (not root, no losetup). The
 * test reads and writes the file, not the device: Deno opens devices only with --allow-all.
 */
async function loopDevice(
  path: string,
  content: Uint8Array,
): Promise<(AsyncDisposable & { dev: string }) | null> {
  if (Deno.uid() !== 0) return null;
  await Deno.writeFile(path, content);
  const out = await new Deno.Command("losetup", {
    args: ["-f", "--show", path],
    stdout: "piped",
    stderr: "null",
  })
    .output().catch(() => null);
  if (!out?.success) return null;
  const dev = new TextDecoder().decode(out.stdout).trim();
  return {
    dev,
    async [Symbol.asyncDispose]() {
      await new Deno.Command("losetup", { args: ["-d", dev] }).output();
    },
  };
}

Deno.test("deno task repo backs up a block device and restores it onto another only with --overwrite", async () => {
  await using dir = await tempDir();
  const data = new Uint8Array(6 * MIB);
  data.set(deterministicBytes("cli-dev", MIB), 5 * MIB);
  await using src = await loopDevice(`${dir.path}/src.loop`, data);
  if (src === null) {
    console.log("skipped: no loop devices (needs root and losetup)");
    return;
  }
  const old = new Uint8Array(8 * MIB).fill(0xee);
  await using dst = (await loopDevice(`${dir.path}/dst.loop`, old))!;
  await using small = (await loopDevice(`${dir.path}/small.loop`, new Uint8Array(4 * MIB)))!;
  const common = ["--repo", `${dir.path}/repo`, "--key-file", `${dir.path}/key`, "--host", "h1"];
  assert.equal((await repoCli(["init", ...common])).code, 0);
  const b = await repoCli(["backup", ...common, "--image", "--json", src.dev]);
  assert.equal(b.code, 0, b.stderr);
  const r = JSON.parse(b.stdout);
  assert.deepEqual([r.size, r.chunks, r.zeroChunks], [6 * MIB, 2, 1]);

  const refused = await repoCli(["restore", ...common, r.snapshotId, "--target", dst.dev]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /^error: Image restore target .* is a block device: .*only with overwrite\n$/);
  const tooSmall = await repoCli(["restore", ...common, r.snapshotId, "--target", small.dev, "--overwrite"]);
  assert.equal(tooSmall.code, 1);
  assert.match(tooSmall.stderr, /holds 4194304 bytes, less than the image's 6291456; nothing written/);

  const ok = await repoCli([
    "restore",
    ...common,
    r.snapshotId,
    "--target",
    dst.dev,
    "--overwrite",
    "--json",
  ]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).blockDevice, true);
  // The restore synced the device: its backing file holds the image, zero chunk included, and the old
  // bytes beyond it.
  const got = await Deno.readFile(`${dir.path}/dst.loop`);
  assert.deepEqual(got.subarray(0, 6 * MIB), data);
  assert.deepEqual(got.subarray(6 * MIB), old.subarray(6 * MIB));
});
