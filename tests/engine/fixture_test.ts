/**
 * Format compatibility: the repository in fixtures/repo-v1/ was written once by tools/make_engine_fixture.ts
 * (never re-made). Every version of the engine must open it with its key file and with its recovery key,
 * list its two snapshots, restore both byte for byte and mode for mode as manifest.json says, and verify it
 * in full. If this test fails, the change broke format v1: fix the change, never the fixture.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { LocalBackend } from "../../engine/repo/backend.ts";
import {
  kekId,
  type KeyOpener,
  readKeyFile,
  readRecoveryKeyFile,
  recoveryOpener,
} from "../../engine/repo/keys.ts";
import { Repository } from "../../engine/repo/repository.ts";
import { restoreSnapshot } from "../../engine/repo/restore.ts";
import { listSnapshots, loadSnapshot } from "../../engine/repo/snapshot.ts";
import { verifyRepository } from "../../engine/repo/verify.ts";
import type { FixtureEntry } from "../../tools/make_engine_fixture.ts";
import { tempDir } from "./helpers.ts";

const FIXTURE = new URL("./fixtures/repo-v1/", import.meta.url).pathname.replace(/\/$/, "");
const CLI = new URL("../../engine/cli.ts", import.meta.url).pathname;

interface Manifest {
  formatVersion: number;
  sourcePath: string;
  namespace: string;
  recoveryKeyId: string;
  snapshots: { id: string; kind: string; parent: string | null; entries: FixtureEntry[] }[];
}

const manifest: Manifest = JSON.parse(await Deno.readTextFile(`${FIXTURE}/manifest.json`));

/** A working copy of the committed repository: opening, restoring and verifying must not touch the original. */
async function copyOf(dir: string): Promise<string> {
  const to = `${dir}/repo`;
  const walk = async (from: string, dest: string) => {
    await Deno.mkdir(dest, { recursive: true });
    for await (const e of Deno.readDir(from)) {
      if (e.isDirectory) await walk(`${from}/${e.name}`, `${dest}/${e.name}`);
      else await Deno.copyFile(`${from}/${e.name}`, `${dest}/${e.name}`);
    }
  };
  await walk(`${FIXTURE}/repo`, to);
  return to;
}

async function entriesBelow(root: string, rel = ""): Promise<FixtureEntry[]> {
  const out: FixtureEntry[] = [];
  const names: string[] = [];
  for await (const e of Deno.readDir(`${root}${rel}`)) names.push(e.name);
  for (const name of names.sort()) {
    const p = `${rel}/${name}`;
    const st = await Deno.lstat(`${root}${p}`);
    const base = { path: p, mode: st.mode! & 0o7777, mtimeMs: st.mtime!.getTime() };
    if (st.isSymlink) {
      out.push({ ...base, mode: 0, type: "symlink", size: 0, target: await Deno.readLink(`${root}${p}`) });
    } else if (st.isDirectory) {
      out.push({ ...base, type: "dir", size: 0 });
      out.push(...await entriesBelow(root, p));
    } else {
      const data = await Deno.readFile(`${root}${p}`);
      out.push({
        ...base,
        type: "file",
        size: data.length,
        sha256: createHash("sha256").update(data).digest("hex"),
      });
    }
  }
  return out;
}

function byPath(entries: FixtureEntry[]): Record<string, FixtureEntry> {
  return Object.fromEntries(entries.map((e) => [e.path, e]));
}

Deno.test("fixture repo-v1 is small and holds what the compatibility test needs", async () => {
  let total = 0;
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      if (e.isDirectory) await walk(`${dir}/${e.name}`);
      else total += (await Deno.stat(`${dir}/${e.name}`)).size;
    }
  };
  await walk(FIXTURE);
  assert.ok(total < 64 * 1024, `${total} bytes`);
  assert.equal(manifest.formatVersion, 1);
  const config = JSON.parse(await Deno.readTextFile(`${FIXTURE}/repo/config`));
  assert.equal(config.compression, "zstd");
  assert.equal(config.encryption, "aes-256-gcm");
  const first = manifest.snapshots[0].entries;
  const types = new Set(first.map((e) => e.type));
  assert.deepEqual([...types].sort(), ["dir", "file", "symlink"]);
  assert.ok(first.some((e) => [...e.path].some((c) => c.codePointAt(0)! > 0x7f)), "a unicode name");
  assert.deepEqual(manifest.snapshots.map((s) => s.kind), ["full", "incremental"]);
  // Both wrapper kinds are present: the original KEK form and the recovery form.
  const kek = await readKeyFile(`${FIXTURE}/key`);
  assert.ok(await Deno.stat(`${FIXTURE}/repo/keys/${manifest.namespace}/${kekId(kek)}`));
  assert.ok(await Deno.stat(`${FIXTURE}/repo/keys/${manifest.namespace}/${manifest.recoveryKeyId}`));
  // docs/repository-format.md names both key objects as test vectors.
  const doc = await Deno.readTextFile(new URL("../../docs/repository-format.md", import.meta.url));
  for (const id of [kekId(kek), manifest.recoveryKeyId]) {
    assert.ok(doc.includes(`keys/${manifest.namespace}/${id}`), id);
  }
  // Every file of it is committed (a .gitignore once hid its packs): nothing untracked or ignored in it.
  const git = await new Deno.Command("git", {
    args: ["status", "--porcelain", "--ignored", "--untracked-files=all", "--", FIXTURE],
    cwd: FIXTURE,
    stdout: "piped",
    stderr: "null",
  }).output().catch(() => null);
  if (git?.success) assert.equal(new TextDecoder().decode(git.stdout), "", "fixture files not committed");
  // The script refuses to make it again.
  const rerun = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "--allow-sys",
      "tools/make_engine_fixture.ts",
    ],
    cwd: new URL("../../", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(rerun.code, 1);
  assert.match(new TextDecoder().decode(rerun.stderr), /never re-made for v1/);
});

for (const via of ["key file", "recovery key"] as const) {
  Deno.test(`fixture repo-v1 opens with its ${via}, restores both snapshots exactly, and verifies in full`, async () => {
    await using dir = await tempDir();
    const root = await copyOf(dir.path);
    const opener: KeyOpener | Uint8Array = via === "key file"
      ? await readKeyFile(`${FIXTURE}/key`)
      : recoveryOpener(await readRecoveryKeyFile(`${FIXTURE}/recovery.pem`));
    const repo = await Repository.open(new LocalBackend(root), opener);
    assert.deepEqual(repo.warnings, []);
    assert.deepEqual(repo.namespaces(), [manifest.namespace]);
    const ns = repo.namespace(manifest.namespace);
    const infos = await listSnapshots(repo.backend);
    assert.deepEqual(infos.map((i) => i.id), manifest.snapshots.map((s) => s.id));
    for (const [i, expected] of manifest.snapshots.entries()) {
      const snap = await loadSnapshot(ns, expected.id);
      assert.equal(snap.kind, expected.kind);
      assert.equal(snap.parent, expected.parent);
      assert.deepEqual(snap.paths, [manifest.sourcePath]);
      const target = `${dir.path}/out${i}`;
      const res = await restoreSnapshot(ns, expected.id, { target });
      assert.deepEqual(res.errors, []);
      const got = byPath(await entriesBelow(`${target}${manifest.sourcePath}`));
      const want = byPath(expected.entries);
      assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort());
      for (const p of Object.keys(want)) assert.deepEqual(got[p], want[p], p);
    }
    const v = await verifyRepository(repo, { all: true });
    assert.deepEqual(v.problems, []);
    assert.equal(v.snapshots, 2);
    assert.equal(v.blobsRead, v.referencedBlobs);
  });
}

Deno.test("fixture repo-v1 through deno task repo with the recovery key: snapshots, restore, verify --all", async () => {
  await using dir = await tempDir();
  const root = await copyOf(dir.path);
  const run = async (...args: string[]) => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--allow-read",
        "--allow-write",
        "--allow-env",
        "--allow-sys",
        "--allow-net",
        CLI,
        "repo",
        ...args,
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, 0, stderr);
    return JSON.parse(new TextDecoder().decode(out.stdout));
  };
  const at = [
    "--repo",
    root,
    "--recovery-key",
    `${FIXTURE}/recovery.pem`,
    "--host",
    manifest.namespace,
    "--json",
  ];
  const listed = await run("snapshots", ...at);
  assert.deepEqual(listed.snapshots.map((s: { id: string }) => s.id), manifest.snapshots.map((s) => s.id));
  const last = manifest.snapshots[1];
  await run("restore", ...at, last.id.slice(0, 8), "--target", `${dir.path}/out`);
  const got = byPath(await entriesBelow(`${dir.path}/out${manifest.sourcePath}`));
  assert.deepEqual(got, byPath(last.entries));
  assert.equal((await run("verify", ...at, "--all")).ok, true);
});
