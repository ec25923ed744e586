import assert from "node:assert/strict";
import { repoCli as runRepoCli, type Run } from "./cli_run.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

/** The command line `repo <args>` (tests/engine/cli_run.ts), its output piped. */
const repoCli = (...args: string[]): Promise<Run> => runRepoCli(args);

async function makeSource(dir: string): Promise<string> {
  const src = `${dir}/src`;
  await Deno.mkdir(`${src}/sub/empty`, { recursive: true });
  await Deno.writeFile(`${src}/a.bin`, deterministicBytes("cli-a", 200_000));
  await Deno.writeFile(`${src}/sub/notes.txt`, new TextEncoder().encode("notes\n".repeat(1000)));
  await Deno.symlink("a.bin", `${src}/link`);
  return src;
}

async function treeOf(root: string, rel = ""): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const e of Deno.readDir(`${root}${rel}`)) {
    const p = `${rel}/${e.name}`;
    if (e.isDirectory) {
      out[p] = "dir";
      Object.assign(out, await treeOf(root, p));
    } else if (e.isSymlink) out[p] = `-> ${await Deno.readLink(`${root}${p}`)}`;
    else {out[p] = Array.from(await Deno.readFile(`${root}${p}`)).join(",").length + ":" +
        (await sha(`${root}${p}`));}
  }
  return out;
}

async function sha(path: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", await Deno.readFile(path));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

Deno.test("deno task repo: init, backup, snapshots, ls, find and restore byte-identical", async () => {
  await using dir = await tempDir();
  const src = await makeSource(dir.path);
  const common = ["--repo", `${dir.path}/repo`, "--key-file", `${dir.path}/key`, "--host", "h1"];

  const init = await repoCli("init", ...common, "--compression", "lz4");
  assert.equal(init.code, 0, init.stderr);
  assert.equal((await Deno.stat(`${dir.path}/key`)).mode! & 0o777, 0o600);
  assert.equal(atob((await Deno.readTextFile(`${dir.path}/key`)).trim()).length, 32);

  const backup = await repoCli("backup", ...common, "--json", "--exclude", "*.tmp", src);
  assert.equal(backup.code, 0, backup.stderr);
  const r = JSON.parse(backup.stdout);
  for (
    const k of ["snapshotId", "files", "dirs", "bytesRead", "bytesNew", "bytesStored", "durationMs", "errors"]
  ) {
    assert.ok(k in r, `backup --json has ${k}`);
  }
  assert.equal(r.files, 2);
  assert.deepEqual(r.errors, []);

  const again = JSON.parse(
    (await repoCli("backup", ...common, "--json", "--parent", r.snapshotId, src)).stdout,
  );
  assert.equal(again.bytesNew, 0);

  const snaps = JSON.parse((await repoCli("snapshots", ...common, "--json")).stdout);
  assert.equal(snaps.snapshots.length, 2);
  assert.deepEqual(snaps.snapshots[0].paths, [src]);

  const ls = JSON.parse((await repoCli("ls", ...common, r.snapshotId.slice(0, 10), src, "--json")).stdout);
  assert.deepEqual(
    ls.entries.map((e: { path: string }) => e.path).sort(),
    [src, `${src}/a.bin`, `${src}/link`, `${src}/sub`, `${src}/sub/empty`, `${src}/sub/notes.txt`],
  );
  const find = JSON.parse((await repoCli("find", ...common, r.snapshotId, "*.txt", "--json")).stdout);
  assert.deepEqual(find.matches.map((e: { path: string }) => e.path), [`${src}/sub/notes.txt`]);
  const lsText = await repoCli("ls", ...common, r.snapshotId);
  assert.match(lsText.stdout, /notes\.txt/);

  const restore = await repoCli("restore", ...common, r.snapshotId, "--target", `${dir.path}/out`, "--json");
  assert.equal(restore.code, 0, restore.stderr);
  assert.equal(JSON.parse(restore.stdout).files, 2);
  assert.deepEqual(await treeOf(`${dir.path}/out${src}`), await treeOf(src));

  const partial = await repoCli(
    "restore",
    ...common,
    r.snapshotId,
    "--target",
    `${dir.path}/part`,
    "--include",
    `${src}/sub`,
  );
  assert.equal(partial.code, 0, partial.stderr);
  assert.deepEqual(await treeOf(`${dir.path}/part${src}/sub`), await treeOf(`${src}/sub`));
  await assert.rejects(Deno.stat(`${dir.path}/part${src}/a.bin`));
});

Deno.test("deno task repo: bad input is a clear error, non-zero, and damages nothing", async () => {
  await using dir = await tempDir();
  const src = await makeSource(dir.path);
  const repo = `${dir.path}/repo`;
  const common = ["--repo", repo, "--key-file", `${dir.path}/key`, "--host", "h1"];
  assert.equal((await repoCli("init", ...common)).code, 0);
  const snap = JSON.parse((await repoCli("backup", ...common, "--json", src)).stdout).snapshotId;
  const before = await treeOf(repo);

  const missing = await repoCli("backup", ...common, `${dir.path}/nope`);
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /Cannot back up .*nope/);

  const notRepo = await repoCli("snapshots", "--repo", src, "--key-file", `${dir.path}/key`);
  assert.notEqual(notRepo.code, 0);
  assert.match(notRepo.stderr, /is not a Cadres repository/);
  assert.equal(notRepo.stderr.trim().split("\n").length, 1);
  await assert.rejects(Deno.stat(`${src}/locks`));

  await Deno.writeTextFile(`${dir.path}/other.key`, btoa(String.fromCharCode(...new Uint8Array(32).fill(7))));
  const wrongKey = await repoCli("backup", "--repo", repo, "--key-file", `${dir.path}/other.key`, src);
  assert.notEqual(wrongKey.code, 0);
  assert.match(wrongKey.stderr, /opens no namespace/);

  await Deno.mkdir(`${dir.path}/full`);
  await Deno.writeTextFile(`${dir.path}/full/keep.txt`, "mine");
  const nonEmpty = await repoCli("restore", ...common, snap, "--target", `${dir.path}/full`);
  assert.notEqual(nonEmpty.code, 0);
  assert.match(nonEmpty.stderr, /not empty/);
  assert.deepEqual([...Deno.readDirSync(`${dir.path}/full`)].map((e) => e.name), ["keep.txt"]);

  const inside = await repoCli("restore", ...common, snap, "--target", `${src}/restored`);
  assert.notEqual(inside.code, 0);
  assert.match(inside.stderr, /lies inside/);
  await assert.rejects(Deno.stat(`${src}/restored`));

  const s3 = await repoCli(
    "snapshots",
    "--repo",
    "s3://bucket/prefix?color=red",
    "--key-file",
    `${dir.path}/key`,
  );
  assert.notEqual(s3.code, 0);
  assert.match(s3.stderr, /unknown parameter "color"/);

  const usage = await repoCli("backup", ...common);
  assert.equal(usage.code, 2);

  assert.deepEqual(await treeOf(repo), before);
});

Deno.test("deno task repo: backup that cannot back up an entry exits 3 and lists it", async () => {
  await using dir = await tempDir();
  const src = await makeSource(dir.path);
  // A fifo cannot be backed up, even by root (who reads files of any mode).
  const mkfifo = await new Deno.Command("mkfifo", { args: [`${src}/secret`] }).output().catch(() => null);
  if (!mkfifo?.success) return;
  const common = ["--repo", `${dir.path}/repo`, "--key-file", `${dir.path}/key`, "--host", "h1"];
  await repoCli("init", ...common);
  const r = await repoCli("backup", ...common, "--json", src);
  assert.equal(r.code, 3);
  assert.equal(JSON.parse(r.stdout).errors[0].path, `${src}/secret`);
});

Deno.test("deno task repo verify passes, then names a damaged pack and exits non-zero", async () => {
  await using dir = await tempDir();
  const src = await makeSource(dir.path);
  const repo = `${dir.path}/repo`;
  const common = ["--repo", repo, "--key-file", `${dir.path}/key`, "--host", "h1"];
  await repoCli("init", ...common);
  await repoCli("backup", ...common, src);
  const ok = await repoCli("verify", ...common, "--all", "--json");
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(JSON.parse(ok.stdout).ok, true);
  assert.equal((await repoCli("verify", ...common, "--sample", "3")).code, 0);

  let pack = "";
  for await (const e of Deno.readDir(`${repo}/data`)) {
    for await (const f of Deno.readDir(`${repo}/data/${e.name}`)) pack = `${repo}/data/${e.name}/${f.name}`;
  }
  const bytes = await Deno.readFile(pack);
  bytes[50] ^= 0xff;
  await Deno.writeFile(pack, bytes);
  const packId = pack.slice(pack.lastIndexOf("/") + 1);

  const bad = await repoCli("verify", ...common, "--all", "--json");
  assert.equal(bad.code, 1);
  const r = JSON.parse(bad.stdout);
  assert.equal(r.ok, false);
  assert.ok(r.problems.some((p: { kind: string; id: string }) => p.kind === "pack" && p.id === packId));
  assert.match(bad.stderr, new RegExp(`damaged pack ${packId}`));
});

Deno.test("deno task repo forget + gc frees the data of a forgotten snapshot", async () => {
  await using dir = await tempDir();
  const src = await makeSource(dir.path);
  const repo = `${dir.path}/repo`;
  const common = ["--repo", repo, "--key-file", `${dir.path}/key`, "--host", "h1"];
  await repoCli("init", ...common);
  const first = JSON.parse((await repoCli("backup", ...common, "--json", src)).stdout).snapshotId;
  // Nothing of the first snapshot is shared with the second, so its pack is wholly unreferenced.
  const src2 = `${dir.path}/src2`;
  await Deno.mkdir(src2);
  await Deno.writeFile(`${src2}/b.bin`, deterministicBytes("cli-b", 200_000));
  const second = JSON.parse((await repoCli("backup", ...common, "--json", src2)).stdout).snapshotId;
  assert.equal((await repoCli("forget", ...common, first)).code, 0);

  const gc1 = JSON.parse((await repoCli("gc", ...common, "--json", "--grace-ms", "0")).stdout);
  assert.equal(gc1.condemned.length, 1);
  assert.equal(gc1.deleted.length, 0);
  const gc2 = JSON.parse((await repoCli("gc", ...common, "--json", "--grace-ms", "0")).stdout);
  assert.deepEqual(gc2.deleted, gc1.condemned);
  assert.ok(gc2.bytesFreed > 150_000);

  assert.equal((await repoCli("verify", ...common, "--all")).code, 0);
  const restore = await repoCli("restore", ...common, second, "--target", `${dir.path}/out`);
  assert.equal(restore.code, 0, restore.stderr);
  assert.deepEqual(await treeOf(`${dir.path}/out${src2}`), await treeOf(src2));
});

Deno.test("deno task repo: one damaged snapshot blocks neither restore of another, nor listing, forget or gc", async () => {
  await using dir = await tempDir();
  const src = await makeSource(dir.path);
  const repo = `${dir.path}/repo`;
  const common = ["--repo", repo, "--key-file", `${dir.path}/key`, "--host", "h1"];
  await repoCli("init", ...common);
  const first = JSON.parse((await repoCli("backup", ...common, "--json", src)).stdout).snapshotId;
  const second = JSON.parse((await repoCli("backup", ...common, "--json", src)).stdout).snapshotId;
  const bad = `${repo}/snapshots/${first}`;
  const bytes = await Deno.readFile(bad);
  bytes[bytes.length - 3] ^= 1;
  await Deno.writeFile(bad, bytes);

  const restore = await repoCli("restore", ...common, second.slice(0, 12), "--target", `${dir.path}/out`);
  assert.equal(restore.code, 0, restore.stderr);
  assert.deepEqual(await treeOf(`${dir.path}/out${src}`), await treeOf(src));
  const restoreBad = await repoCli("restore", ...common, first, "--target", `${dir.path}/out2`);
  assert.equal(restoreBad.code, 1);
  assert.match(restoreBad.stderr, new RegExp(`Damaged snapshot ${first}`));

  const list = await repoCli("snapshots", ...common, "--json");
  assert.equal(list.code, 1);
  const rows = JSON.parse(list.stdout).snapshots;
  assert.deepEqual(rows.map((r: { id: string; damaged?: boolean }) => [r.id, r.damaged ?? false]), [
    [second, false],
    [first, true],
  ]);
  assert.match(list.stderr, new RegExp(`damaged snapshots: ${first}`));

  const gcBlocked = await repoCli("gc", ...common, "--json");
  assert.equal(gcBlocked.code, 1, "gc never guesses while a snapshot is unreadable");
  const forget = await repoCli("forget", ...common, first.slice(0, 12));
  assert.equal(forget.code, 0, forget.stderr);
  assert.match(forget.stderr, /forgetting damaged snapshot/);
  assert.equal((await repoCli("snapshots", ...common)).code, 0);
  const gc = await repoCli("gc", ...common, "--json");
  assert.equal(gc.code, 0, gc.stderr);
});

Deno.test("deno task repo: a damaged index segment is warned about; repair index mends it", async () => {
  await using dir = await tempDir();
  const src = await makeSource(dir.path);
  const repo = `${dir.path}/repo`;
  const common = ["--repo", repo, "--key-file", `${dir.path}/key`, "--host", "h1"];
  await repoCli("init", ...common);
  const snap = JSON.parse((await repoCli("backup", ...common, "--json", src)).stdout).snapshotId;
  const [seg] = [...Deno.readDirSync(`${repo}/index`)].map((e) => e.name);
  const bytes = await Deno.readFile(`${repo}/index/${seg}`);
  bytes[30] ^= 4;
  await Deno.writeFile(`${repo}/index/${seg}`, bytes);

  const restore = await repoCli("restore", ...common, snap, "--target", `${dir.path}/out`);
  assert.equal(restore.code, 0, restore.stderr);
  assert.match(restore.stderr, new RegExp(`warning: damaged index segment index/${seg}`));
  assert.deepEqual(await treeOf(`${dir.path}/out${src}`), await treeOf(src));
  const verify = await repoCli("verify", ...common);
  assert.equal(verify.code, 1);
  assert.match(verify.stderr, new RegExp(`damaged index index/${seg}`));

  assert.equal((await repoCli("repair", ...common, "--bogus")).code, 2);
  assert.equal((await repoCli("repair", ...common, "snapshots")).code, 2);
  const repair = await repoCli("repair", ...common, "index", "--json");
  assert.equal(repair.code, 0, repair.stderr);
  assert.deepEqual(JSON.parse(repair.stdout).damagedSegments, [`index/${seg}`]);
  const again = await repoCli("repair", ...common);
  assert.equal(again.code, 0, again.stderr);
  assert.equal(again.stderr, "");
  const clean = await repoCli("verify", ...common, "--all");
  assert.equal(clean.code, 0, clean.stderr);
});
