/**
 * Made the committed format-compatibility fixture tests/engine/fixtures/repo-v1/ ONCE. NEVER RE-RUN IT FOR
 * v1: the point of the fixture is that it was written by the code of its time, and every later version of
 * the engine must still read it byte for byte (tests/engine/fixture_test.ts). A future format version gets
 * its own fixture folder (repo-v2/ …) made by a copy of this script; repo-v1/ stays as it is, forever.
 *
 * It writes, under the fixture folder: repo/ (a repository: zstd, aes-256-gcm, dedup on, namespace
 * "fixture-host", its keys wrapped by the key file and by the recovery key), key (the KEK file),
 * recovery.pem / recovery.pub.pem (the recovery key pair) and manifest.json (every entry of both
 * snapshots: path, type, mode, size, sha256, mtime, link target). The data backed up lives at
 * /tmp/cadres-fixture-v1/src (restores keep absolute paths): a compressible text, a small incompressible
 * file, an executable script, a symlink, an empty folder and unicode names; a full snapshot, then an
 * incremental after a change and an addition.
 *
 * Usage (once): deno run --allow-read --allow-write --allow-env --allow-sys tools/make_engine_fixture.ts
 */
import { createHash } from "node:crypto";
import { lutimesSync } from "node:fs";
import { LocalBackend } from "../engine/repo/backend.ts";
import { backupFiles } from "../engine/repo/backup.ts";
import { createKeyFile } from "../engine/repo/keys.ts";
import { generateRecoveryKeyPair } from "../engine/repo/recovery.ts";
import { Repository } from "../engine/repo/repository.ts";
import { listSnapshots } from "../engine/repo/snapshot.ts";

const OUT = new URL("../tests/engine/fixtures/repo-v1/", import.meta.url).pathname.replace(/\/$/, "");
const SRC_ROOT = "/tmp/cadres-fixture-v1";
const SRC = `${SRC_ROOT}/src`;
const NAMESPACE = "fixture-host";

/** A manifest entry: one path below the backed-up folder. */
export interface FixtureEntry {
  path: string;
  type: "file" | "dir" | "symlink";
  mode: number;
  size: number;
  mtimeMs: number;
  sha256?: string;
  target?: string;
}

function bytesOf(seed: string, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0, c = 0; i < n; c++, i += 32) {
    const d = createHash("sha256").update(`${seed}:${c}`).digest();
    out.set(d.subarray(0, Math.min(32, n - i)), i);
  }
  return out;
}

async function setTimes(path: string, iso: string) {
  const t = new Date(iso);
  if ((await Deno.lstat(path)).isSymlink) lutimesSync(path, t, t);
  else await Deno.utime(path, t, t);
}

async function write(rel: string, data: Uint8Array | string, mode: number, iso: string) {
  const path = `${SRC}/${rel}`;
  await Deno.writeFile(path, typeof data === "string" ? new TextEncoder().encode(data) : data);
  await Deno.chmod(path, mode);
  await setTimes(path, iso);
}

async function manifestOf(dir: string, rel = ""): Promise<FixtureEntry[]> {
  const out: FixtureEntry[] = [];
  const names = [];
  for await (const e of Deno.readDir(`${dir}${rel}`)) names.push(e.name);
  for (const name of names.sort()) {
    const p = `${rel}/${name}`;
    const full = `${dir}${p}`;
    const st = await Deno.lstat(full);
    const base = { path: p, mode: st.mode! & 0o7777, mtimeMs: st.mtime!.getTime() };
    if (st.isSymlink) {
      out.push({ ...base, mode: 0, type: "symlink", size: 0, target: await Deno.readLink(full) });
    } else if (st.isDirectory) {
      out.push({ ...base, type: "dir", size: 0 });
      out.push(...await manifestOf(dir, p));
    } else {
      const data = await Deno.readFile(full);
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

if (import.meta.main) {
  if (await Deno.lstat(OUT).then(() => true, () => false)) {
    console.error(
      `error: ${OUT} exists. This fixture is made once and never re-made for v1: every later version must ` +
        `read the one committed. A new format version gets a new folder.`,
    );
    Deno.exit(1);
  }
  await Deno.remove(SRC_ROOT, { recursive: true }).catch(() => {});
  await Deno.mkdir(`${SRC}/empty`, { recursive: true });
  await Deno.mkdir(`${SRC}/café ☕`, { recursive: true });
  const text = "The quick brown fox jumps over the lazy dog. Cadres keeps every byte.\n".repeat(40);
  await write("notes.txt", text, 0o644, "2024-01-02T03:04:05.678Z");
  await write("random.bin", bytesOf("cadres-fixture-v1-random", 1024), 0o600, "2024-01-02T03:04:06.000Z");
  await write("run.sh", "#!/bin/sh\necho cadres\n", 0o755, "2024-01-02T03:04:07.000Z");
  await write("café ☕/résumé – ünïcødé.txt", "Grüße, 世界 🌍\n", 0o640, "2024-01-02T03:04:08.000Z");
  await Deno.symlink("notes.txt", `${SRC}/link to notes`);
  await setTimes(`${SRC}/link to notes`, "2024-01-02T03:04:09.000Z");
  await Deno.chmod(`${SRC}/empty`, 0o750);
  for (const d of ["empty", "café ☕", ""]) {
    await setTimes(`${SRC}/${d}`.replace(/\/$/, ""), "2024-01-02T03:05:00.000Z");
  }

  await Deno.mkdir(OUT, { recursive: true });
  const kek = await createKeyFile(`${OUT}/key`);
  const pair = await generateRecoveryKeyPair();
  await Deno.writeTextFile(`${OUT}/recovery.pem`, pair.privatePem, { mode: 0o600 });
  await Deno.writeTextFile(`${OUT}/recovery.pub.pem`, pair.publicPem);
  const repo = await Repository.init(new LocalBackend(`${OUT}/repo`), kek, {
    namespace: NAMESPACE,
    compression: "zstd",
    encryption: "aes-256-gcm",
    dedup: true,
    recoveryPublicKeys: [pair.publicPem],
  });
  const ns = repo.namespace(NAMESPACE);
  const manifest1 = await manifestOf(SRC);
  const full = await backupFiles(ns, { paths: [SRC], host: NAMESPACE });

  // The incremental: notes.txt changed, a file added.
  await write("notes.txt", text + "One more line.\n", 0o644, "2024-02-03T04:05:06.789Z");
  await write("added.txt", "added in the incremental\n", 0o644, "2024-02-03T04:05:07.000Z");
  await setTimes(SRC, "2024-02-03T04:05:08.000Z");
  const manifest2 = await manifestOf(SRC);
  const inc = await backupFiles(ns, { paths: [SRC], host: NAMESPACE, parent: full.snapshotId });
  if (full.errors.length > 0 || inc.errors.length > 0) throw new Error("the fixture backup reported errors");

  const infos = await listSnapshots(repo.backend);
  const manifest = {
    note: "tests/engine/fixtures/repo-v1: made once by tools/make_engine_fixture.ts; never re-made",
    formatVersion: repo.config.version,
    sourcePath: SRC,
    namespace: NAMESPACE,
    recoveryKeyId: pair.id,
    snapshots: [
      { id: full.snapshotId, kind: "full", parent: null, entries: manifest1 },
      { id: inc.snapshotId, kind: "incremental", parent: full.snapshotId, entries: manifest2 },
    ],
  };
  if (infos.length !== 2) throw new Error(`expected 2 snapshots, found ${infos.length}`);
  await Deno.writeTextFile(`${OUT}/manifest.json`, JSON.stringify(manifest, null, 2) + "\n");
  await Deno.remove(SRC_ROOT, { recursive: true });
  console.log(
    `wrote ${OUT}: snapshots ${full.snapshotId.slice(0, 12)} (full), ${inc.snapshotId.slice(0, 12)}`,
  );
}
