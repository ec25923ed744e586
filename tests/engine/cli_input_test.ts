import assert from "node:assert/strict";
import { repoCli, type Run, snapshotOfFiles } from "./cli_run.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";

async function makeSource(dir: string): Promise<string> {
  const src = `${dir}/src`;
  await Deno.mkdir(`${src}/sub`, { recursive: true });
  await Deno.writeFile(`${src}/a.bin`, deterministicBytes("input-a", 100_000));
  await Deno.writeTextFile(`${src}/sub/notes.txt`, "notes\n".repeat(100));
  return src;
}

/** Asserts a failure: exit `code`, and stderr one line "error: …" matching `pattern`. */
function assertOneLineError(r: Run, code: number, pattern: RegExp, what: string) {
  assert.equal(r.code, code, `${what}: exit code (stderr: ${r.stderr})`);
  const lines = r.stderr.trimEnd().split("\n");
  assert.match(lines[0], /^error: /, what);
  assert.match(lines[0], pattern, what);
  // Usage errors (2) follow their line with the usage text; every other error is one line.
  if (code !== 2) assert.equal(lines.length, 1, `${what}: one line on stderr, got ${r.stderr}`);
  assert.equal(r.stdout, "", `${what}: nothing on stdout`);
}

Deno.test("deno task repo: bad input is one clear line on stderr, a non-zero exit, and changes nothing", async () => {
  await using dir = await tempDir();
  const d = dir.path;
  const src = await makeSource(d);
  const repo = `${d}/repo`;
  const key = `${d}/key`;
  const common = ["--repo", repo, "--key-file", key, "--host", "h1"];
  assert.equal((await repoCli(["init", ...common])).code, 0);
  const snap = JSON.parse((await repoCli(["backup", ...common, "--json", src])).stdout).snapshotId;
  await Deno.writeTextFile(`${d}/file.txt`, "a file");
  await Deno.mkdir(`${d}/full`);
  await Deno.writeTextFile(`${d}/full/keep.txt`, "mine");
  // A repository of a newer format: a copy whose config says version 2.
  const newer = `${d}/newer`;
  await new Deno.Command("cp", { args: ["-a", repo, newer] }).output();
  const config = await Deno.readTextFile(`${newer}/config`);
  await Deno.writeTextFile(`${newer}/config`, config.replace(/"version": 1/, `"version": 2`));
  await Deno.writeTextFile(`${d}/garbage.key`, "not a key at all!\n");
  await Deno.writeTextFile(`${d}/short.key`, btoa("sixteen bytes..."));
  const before = await snapshotOfFiles(d);

  const cases: [string, string[], number, RegExp][] = [
    [
      "a backup path that does not exist",
      ["backup", ...common, src, `${d}/nope`],
      1,
      /Cannot back up .*\/nope: /,
    ],
    [
      "an image that does not exist",
      ["backup", ...common, "--image", `${d}/nope.img`],
      1,
      /Cannot back up image/,
    ],
    [
      "an image that is a folder",
      ["backup", ...common, "--image", src],
      1,
      /not a block device or regular file/,
    ],
    [
      "a backup path inside the repository",
      ["backup", ...common, `${repo}/data`],
      1,
      /lies inside the repository/,
    ],
    [
      "a repository backed up as an image",
      ["backup", ...common, "--image", `${repo}/config`],
      1,
      /inside the repo/,
    ],
    [
      "a restore target inside the repository",
      [
        "restore",
        ...common,
        snap,
        "--target",
        `${repo}/out`,
      ],
      1,
      /Restore target .*\/repo\/out lies inside the repository/,
    ],
    [
      "a restore target inside the source",
      ["restore", ...common, snap, "--target", `${src}/sub/x`],
      1,
      /lies inside/,
    ],
    [
      "a restore target that is a file",
      [
        "restore",
        ...common,
        snap,
        "--target",
        `${d}/file.txt`,
      ],
      1,
      /file\.txt is not a folder/,
    ],
    [
      "a restore target that is not empty",
      ["restore", ...common, snap, "--target", `${d}/full`],
      1,
      /Restore target .*\/full is not empty; restore into an empty folder or overwrite/,
    ],
    [
      "an --include path the snapshot lacks",
      [
        "restore",
        ...common,
        snap,
        "--target",
        `${d}/out`,
        "--include",
        `${src}/nope`,
      ],
      1,
      /has no path .*\/src\/nope; nothing restored/,
    ],
    [
      "a snapshot that does not exist",
      ["restore", ...common, "0badc0de", "--target", `${d}/out`],
      1,
      /Missing snapshot 0badc0de/,
    ],
    [
      "a LOCATION that does not exist",
      ["snapshots", "--repo", `${d}/nowhere`, "--key-file", key],
      1,
      /nowhere is not a Cadres repository/,
    ],
    [
      "a LOCATION that is a folder of files",
      ["backup", "--repo", src, "--key-file", key, src],
      1,
      /src is not a Cadres repository/,
    ],
    [
      "a LOCATION that is a file",
      ["snapshots", "--repo", `${d}/file.txt`, "--key-file", key],
      1,
      /file\.txt is not a Cadres repository: it is not a folder/,
    ],
    [
      "a repository of a newer format",
      ["backup", "--repo", newer, "--key-file", key, "--host", "h1", src],
      1,
      /format version 2 is newer than this program supports \(1\); upgrade/,
    ],
    [
      "a newer format, restore",
      ["restore", "--repo", newer, "--key-file", key, snap, "--target", `${d}/out`],
      1,
      /newer than this program/,
    ],
    [
      "a key file that does not exist",
      ["backup", "--repo", repo, "--key-file", `${d}/no.key`, src],
      1,
      /Cannot read key file .*no\.key/,
    ],
    [
      "a key file that is not base64",
      ["restore", "--repo", repo, "--key-file", `${d}/garbage.key`, snap, "--target", `${d}/out`],
      1,
      /Key file .*garbage\.key is not base64/,
    ],
    [
      "a key file of the wrong length",
      ["snapshots", "--repo", repo, "--key-file", `${d}/short.key`],
      1,
      /short\.key holds 16 bytes, not 32/,
    ],
    ["no key file", ["snapshots", "--repo", repo], 2, /--key-file FILE or --recovery-key FILE is required/],
    [
      "init of an existing repository with a key file that does not exist",
      ["init", "--repo", repo, "--key-file", `${d}/new.key`, "--host", "h2"],
      1,
      /new\.key: it does not exist, and .*repo already holds a repository/,
    ],
    [
      "a bad --limit-mbps",
      ["backup", ...common, "--limit-mbps", "fast", src],
      2,
      /Cannot parse --limit-mbps "fast"/,
    ],
    [
      "--device-zeroed for files",
      ["restore", ...common, snap, "--target", `${d}/out`, "--device-zeroed"],
      2,
      /only to image snapshots/,
    ],
    ["an unknown flag", ["backup", ...common, "--exclud", "x", src], 2, /Unknown option '--exclud'/],
  ];
  for (const [what, args, code, pattern] of cases) {
    assertOneLineError(await repoCli(args), code, pattern, what);
  }
  // Nothing changed: no snapshot, lock, pack, key file, target folder or repository folder appeared.
  assert.deepEqual(await snapshotOfFiles(d), before);
});

Deno.test("deno task repo: a repository inside a backed-up folder is left out of the backup", async () => {
  await using dir = await tempDir();
  const src = await makeSource(dir.path);
  const common = ["--repo", `${src}/backups/repo`, "--key-file", `${dir.path}/key`, "--host", "h1"];
  assert.equal((await repoCli(["init", ...common])).code, 0);
  const r = await repoCli(["backup", ...common, "--json", src]);
  assert.equal(r.code, 0, r.stderr);
  const snap = JSON.parse(r.stdout).snapshotId;
  const ls = JSON.parse((await repoCli(["ls", ...common, snap, src, "--json"])).stdout);
  assert.deepEqual(
    ls.entries.map((e: { path: string }) => e.path).sort(),
    [src, `${src}/a.bin`, `${src}/backups`, `${src}/sub`, `${src}/sub/notes.txt`],
  );
});

Deno.test("deno task repo: files it cannot read are listed in errors, the backup finishes and exits 3", async () => {
  await using dir = await tempDir();
  const src = await makeSource(dir.path);
  await Deno.writeTextFile(`${src}/secret.txt`, "private");
  await Deno.chmod(`${src}/secret.txt`, 0o000);
  await Deno.mkdir(`${src}/locked`);
  await Deno.writeTextFile(`${src}/locked/inner.txt`, "inner");
  await Deno.chmod(`${src}/locked`, 0o000);
  // Root reads any file: the command runs without the capabilities that let it (CAP_DAC_*).
  const wrapper = Deno.uid() === 0 ? ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] : [];
  if (wrapper.length > 0) {
    const probe = await new Deno.Command("setpriv", { args: [...wrapper.slice(1), "true"] }).output()
      .catch(() => null);
    if (!probe?.success) {
      console.log("skipped: running as root without setpriv, every file is readable");
      return;
    }
  }
  const common = ["--repo", `${dir.path}/repo`, "--key-file", `${dir.path}/key`, "--host", "h1"];
  assert.equal((await repoCli(["init", ...common])).code, 0);
  const r = await repoCli(["backup", ...common, "--json", src], wrapper);
  await Deno.chmod(`${src}/locked`, 0o755); // so that the folder can be removed
  assert.equal(r.code, 3, r.stderr);
  const result = JSON.parse(r.stdout);
  // Entries are backed up several at once: the order of the errors is not fixed.
  result.errors.sort((a: { path: string }, b: { path: string }) => a.path.localeCompare(b.path));
  assert.deepEqual(result.errors.map((e: { path: string }) => e.path), [
    `${src}/locked`,
    `${src}/secret.txt`,
  ]);
  assert.match(result.errors[0].error, /cannot list folder: .*Permission denied/);
  assert.match(result.errors[1].error, /cannot open: .*Permission denied/);
  assert.equal(result.files, 2);
  assert.match(r.stderr, new RegExp(`warning: ${src}/secret.txt: cannot open`));

  // The snapshot records the errors and restores everything else.
  const snaps = JSON.parse((await repoCli(["snapshots", ...common, "--json"])).stdout).snapshots;
  assert.equal(snaps[0].errors, 2);
  const out = `${dir.path}/out`;
  const restore = await repoCli(["restore", ...common, result.snapshotId, "--target", out]);
  assert.equal(restore.code, 0, restore.stderr);
  assert.deepEqual(await Deno.readFile(`${out}${src}/a.bin`), await Deno.readFile(`${src}/a.bin`));
  await assert.rejects(Deno.stat(`${out}${src}/secret.txt`), Deno.errors.NotFound);
  await assert.rejects(Deno.stat(`${out}${src}/locked`), Deno.errors.NotFound);
});
