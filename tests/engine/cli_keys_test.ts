import assert from "node:assert/strict";
import { kekId, readKeyFile } from "../../engine/repo/keys.ts";
import { repoCli as runRepoCli, type Run } from "./cli_run.ts";
import { deterministicBytes, tempDir } from "./helpers.ts";
import { repoState } from "./repo_state.ts";

/** The command line `repo <args>` (tests/engine/cli_run.ts), its output piped. */
const repoCli = (...args: string[]): Promise<Run> => runRepoCli(args);

/** Runs with --json and returns the one JSON object on stdout (fails if stdout is anything else). */
async function json(...args: string[]): Promise<Record<string, unknown>> {
  const r = await repoCli(...args, "--json");
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 1, `one line of JSON: ${r.stdout}`);
  const o = JSON.parse(lines[0]);
  assert.equal(typeof o, "object");
  return o;
}

function oneErrorLine(r: Run, pattern: RegExp) {
  assert.equal(r.code, 1, r.stdout + r.stderr);
  const lines = r.stderr.trim().split("\n");
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], pattern);
}

async function source(dir: string): Promise<string> {
  const src = `${dir}/src`;
  await Deno.mkdir(`${src}/sub/empty`, { recursive: true });
  await Deno.writeFile(`${src}/a.bin`, deterministicBytes("cli-keys", 100_000));
  await Deno.writeFile(`${src}/sub/notes.txt`, new TextEncoder().encode("notes\n".repeat(500)));
  await Deno.symlink("a.bin", `${src}/link`);
  return src;
}

const exists = (p: string) => Deno.lstat(p).then(() => true, () => false);

Deno.test("deno task repo recovery-keygen: mode 0600, one JSON object, refuses to overwrite", async () => {
  await using dir = await tempDir();
  const priv = `${dir.path}/rk.pem`;
  const pub = `${dir.path}/rk.pub.pem`;
  const o = await json("recovery-keygen", "--private-out", priv, "--public-out", pub);
  assert.match(String(o.id), /^[0-9a-f]{16}$/);
  assert.equal((await Deno.stat(priv)).mode! & 0o777, 0o600);
  assert.match(await Deno.readTextFile(priv), /^-----BEGIN PRIVATE KEY-----\n/);
  assert.match(await Deno.readTextFile(pub), /^-----BEGIN PUBLIC KEY-----\n/);
  const before = [await Deno.readTextFile(priv), await Deno.readTextFile(pub)];
  // Either file existing refuses the whole run, leaving both as they were.
  oneErrorLine(
    await repoCli("recovery-keygen", "--private-out", `${dir.path}/new.pem`, "--public-out", pub),
    /Refusing to overwrite .*rk\.pub\.pem/,
  );
  assert.equal(await exists(`${dir.path}/new.pem`), false);
  oneErrorLine(
    await repoCli("recovery-keygen", "--private-out", priv, "--public-out", `${dir.path}/new.pub`),
    /Refusing to overwrite/,
  );
  assert.deepEqual([await Deno.readTextFile(priv), await Deno.readTextFile(pub)], before);
  assert.equal((await repoCli("recovery-keygen", "--private-out", priv)).code, 2);
});

Deno.test("deno task repo with --recovery-key: snapshots, restore, verify; a wrong one fails clearly and writes nothing", async () => {
  await using dir = await tempDir();
  const src = await source(dir.path);
  const repo = `${dir.path}/repo`;
  const rk = `${dir.path}/rk.pem`;
  const rkPub = `${dir.path}/rk.pub`;
  const other = `${dir.path}/other.pem`;
  await json("recovery-keygen", "--private-out", rk, "--public-out", rkPub);
  await json("recovery-keygen", "--private-out", other, "--public-out", `${dir.path}/other.pub`);
  const withKey = ["--repo", repo, "--key-file", `${dir.path}/key`, "--host", "h1"];
  const withRecovery = ["--repo", repo, "--recovery-key", rk, "--host", "h1"];

  const init = await json("init", ...withKey, "--recovery-public-key", rkPub);
  assert.equal(init.keyFileCreated, true);
  // Files changed within 2 s of a backup's scan are read again by the next one (the racy-file rule): let the
  // source age first, so the incremental below may reuse them whatever the machine's speed.
  await new Promise((r) => setTimeout(r, 2100));
  const snap = String((await json("backup", ...withKey, src)).snapshotId);

  const listed = await json("snapshots", ...withRecovery);
  assert.deepEqual((listed.snapshots as { id: string }[]).map((s) => s.id), [snap]);
  const restored = await json("restore", ...withRecovery, snap.slice(0, 10), "--target", `${dir.path}/out`);
  assert.equal(restored.files, 2);
  assert.deepEqual(await Deno.readFile(`${dir.path}/out${src}/a.bin`), await Deno.readFile(`${src}/a.bin`));
  assert.equal((await json("verify", ...withRecovery, "--all")).ok, true);
  // A backup through the recovery key lands in the same namespace (same keys).
  const inc = await json("backup", ...withRecovery, "--parent", snap, src);
  assert.equal(inc.reusedFiles, 2);

  // A wrong recovery key: one clear line, exit 1, the repository untouched — whatever the command.
  const before = await repoState(repo);
  const wrong = ["--repo", repo, "--recovery-key", other, "--host", "h1"];
  for (
    const args of [
      ["snapshots", ...wrong],
      ["backup", ...wrong, src],
      ["init", ...wrong, "--host", "h2"],
      ["key", "add", ...wrong, "--new-key-file", `${dir.path}/k9`],
      ["gc", ...wrong],
      ["forget", ...wrong, snap],
    ]
  ) {
    oneErrorLine(
      await repoCli(...args),
      /^error: The recovery key \(id [0-9a-f]{16}\) opens no namespace of the repository/,
    );
  }
  assert.equal(await exists(`${dir.path}/k9`), false);
  // A public key or a key file given as the recovery key is named for what it is.
  oneErrorLine(
    await repoCli("snapshots", "--repo", repo, "--recovery-key", rkPub),
    /holds a public key; --recovery-key needs the private key/,
  );
  oneErrorLine(
    await repoCli("snapshots", "--repo", repo, "--recovery-key", `${dir.path}/key`),
    /not a PKCS#8 PEM/,
  );
  assert.deepEqual(await repoState(repo), before);
  const both = await repoCli("snapshots", ...withKey, "--recovery-key", rk);
  assert.equal(both.code, 2);
  assert.match(both.stderr, /exclude each other/);
});

Deno.test("deno task repo key list / add / remove", async () => {
  await using dir = await tempDir();
  const src = await source(dir.path);
  const repo = `${dir.path}/repo`;
  const k1 = `${dir.path}/k1`;
  const k2 = `${dir.path}/k2`;
  const rk = `${dir.path}/rk.pem`;
  const rkPub = `${dir.path}/rk.pub`;
  await json("recovery-keygen", "--private-out", rk, "--public-out", rkPub);
  const at = (key: string) => ["--repo", repo, "--key-file", key, "--host", "h1"];
  await json("init", ...at(k1));
  const snap = String((await json("backup", ...at(k1), src)).snapshotId);
  const id1 = kekId(await readKeyFile(k1));

  const list1 = (await json("key", "list", ...at(k1))).keys as Record<string, unknown>[];
  assert.equal(list1.length, 1);
  assert.deepEqual({ ...list1[0], created: "" }, {
    name: `keys/h1/${id1}`,
    namespace: "h1",
    kind: "kek",
    id: id1,
    created: "",
    opens: true,
    inUse: true,
  });

  // add --new-key-file creates the key file (mode 0600) like init; adding it again adds nothing.
  const added = await json("key", "add", ...at(k1), "--new-key-file", k2);
  assert.equal(added.keyFileCreated, true);
  assert.equal((await Deno.stat(k2)).mode! & 0o777, 0o600);
  const id2 = kekId(await readKeyFile(k2));
  assert.deepEqual(added.added, [`keys/h1/${id2}`]);
  assert.deepEqual((await json("key", "add", ...at(k1), "--new-key-file", k2)).added, []);
  const rkAdded = await json("key", "add", ...at(k2), "--recovery-public-key", rkPub);
  assert.equal((rkAdded.added as string[]).length, 1);
  const list3 = (await json("key", "list", "--repo", repo, "--recovery-key", rk)).keys as Record<
    string,
    string
  >[];
  assert.deepEqual(list3.map((k) => k.kind).sort(), ["kek", "kek", "recovery"]);
  assert.equal(list3.find((k) => k.kind === "recovery")!.inUse, true as unknown as string);
  assert.equal(
    (await repoCli("key", "add", ...at(k1), "--new-key-file", k2, "--recovery-public-key", rkPub)).code,
    2,
    "exactly one of the two",
  );

  // remove: not the key in use, not an unknown id; then k1 goes and k2 still opens.
  const state = await repoState(repo);
  oneErrorLine(await repoCli("key", "remove", ...at(k1), id1), /is the key in use/);
  oneErrorLine(await repoCli("key", "remove", ...at(k1), "0000000000000000"), /No key 0000000000000000/);
  assert.deepEqual(await repoState(repo), state);
  assert.deepEqual((await json("key", "remove", ...at(k2), id1)).removed, [`keys/h1/${id1}`]);
  oneErrorLine(await repoCli("snapshots", ...at(k1)), /opens no namespace/);
  assert.equal(((await json("snapshots", ...at(k2))).snapshots as unknown[]).length, 1);

  // A namespace k2 does not open (created by the recovery key only) blocks removing a key that wraps it.
  await json("init", "--repo", repo, "--recovery-key", rk, "--host", "h2");
  await json("key", "add", "--repo", repo, "--recovery-key", rk, "--new-key-file", `${dir.path}/k3`);
  const id3 = kekId(await readKeyFile(`${dir.path}/k3`));
  oneErrorLine(await repoCli("key", "remove", ...at(k2), id3), /also wraps namespace "h2"/);
  assert.deepEqual(
    ((await json("key", "remove", "--repo", repo, "--recovery-key", rk, id3)).removed as string[]).sort(),
    [`keys/h1/${id3}`, `keys/h2/${id3}`],
  );
  void snap;
});

Deno.test("deno task repo copy: source by recovery key, new destination, restores identical, second copy adds nothing", async () => {
  await using dir = await tempDir();
  const src = await source(dir.path);
  const repo = `${dir.path}/repo`;
  const rk = `${dir.path}/rk.pem`;
  const rkPub = `${dir.path}/rk.pub`;
  await json("recovery-keygen", "--private-out", rk, "--public-out", rkPub);
  const at = ["--repo", repo, "--key-file", `${dir.path}/key`, "--host", "h1"];
  await json("init", ...at, "--recovery-public-key", rkPub);
  const snap = String((await json("backup", ...at, src)).snapshotId);

  const dst = `${dir.path}/replica`;
  const toKey = `${dir.path}/replica.key`;
  const copyArgs = [
    "--repo",
    repo,
    "--recovery-key",
    rk,
    "--to",
    dst,
    "--to-key-file",
    toKey,
    snap.slice(0, 12),
  ];
  const first = await json("copy", ...copyArgs);
  assert.equal(first.created, true);
  assert.equal(first.keyFileCreated, true);
  assert.deepEqual(first.snapshots, [{ id: snap, namespace: "h1", copied: true }]);
  assert.ok((first.blobsCopied as number) > 0);
  const state = await repoState(dst);
  const second = await json("copy", ...copyArgs);
  assert.deepEqual(second.snapshots, [{ id: snap, namespace: "h1", copied: false }]);
  assert.equal(second.blobsCopied, 0);
  assert.deepEqual(await repoState(dst), state, "a second copy adds nothing");

  const atDst = ["--repo", dst, "--key-file", toKey, "--host", "h1"];
  await json("restore", ...atDst, snap, "--target", `${dir.path}/out`);
  for (const f of ["a.bin", "sub/notes.txt"]) {
    assert.deepEqual(await Deno.readFile(`${dir.path}/out${src}/${f}`), await Deno.readFile(`${src}/${f}`));
  }
  assert.equal(await Deno.readLink(`${dir.path}/out${src}/link`), "a.bin");
  assert.ok((await Deno.stat(`${dir.path}/out${src}/sub/empty`)).isDirectory);
  assert.equal((await json("verify", ...atDst, "--all")).ok, true);

  // An existing destination needs its key file: a missing one is an error, not a new key.
  const missing = await repoCli("copy", ...at, "--to", dst, "--to-key-file", `${dir.path}/nope`, snap);
  oneErrorLine(missing, /Cannot read key file/);
  assert.equal(await exists(`${dir.path}/nope`), false);
  assert.equal((await repoCli("copy", ...at, "--to-key-file", toKey, snap)).code, 2);
});
