import assert from "node:assert/strict";

const VECTORS = [
  "20bbf585",
  "f4e659c4",
  "2828, 8830, 9157, 6512, 6588, 9298, 10174, 13495, 11328, 8967, 9986, 9162, 9803, 9672, 12061",
  "4a21acf920d5cd01324b6fb444d83b3d1abd0e47112acfc4f31f2e67e0757656",
  "84f18f550a19208da172b3f8df98fe5666860ba64f0cd4bd7d0993cbdaf53b75",
  "f3f25ed2eb17fcacd85cbb8056864b69912785a0f9849954e84ea47a8c79d529",
  "524ecfe78b466d617fd96758d5803220da2c1ba10b9e16c668846cfcd9805081",
  "0100010012000000000102030405060708090a0b5964080a12ff64d4a761f4e2ce88afcfecb66451a5f154b44eb6f9498e17b8310013",
  "0100020012000000000102030405060708090a0b0c0d0e0f5c75ab52007f5533b0b6d44d4bdb82f78e71acecfc916c4f" +
  "0199ce7cb8b4e63adf58fcf9b51e3cbb84c67b19965e07d595a89a12353c4f21e3f7d8f6bd311689",
  "0100000012000000636164726573207465737420766563746f7237ae2c76495373f11c313807bcc1052a84a41924e94416d860cdfb26a9a9bfa8",
];

Deno.test("docs/repository-format.md states the test vectors the engine tests check", async () => {
  const doc = await Deno.readTextFile(new URL("../../docs/repository-format.md", import.meta.url));
  for (const v of VECTORS) assert.ok(doc.includes(v), `vector ${v.slice(0, 24)}… missing from the doc`);
  for (
    const module of ["chunker.ts", "chunk_id.ts", "blob.ts", "pack.ts", "index.ts", "tree.ts", "snapshot.ts"]
  ) {
    assert.ok(doc.includes(`\`${module}\``), `doc names ${module}`);
  }
});

Deno.test("docs/repository-format.md: its status line matches its sections; hard links are documented", async () => {
  const doc = await Deno.readTextFile(new URL("../../docs/repository-format.md", import.meta.url));
  const status = doc.slice(doc.indexOf("Status:"), doc.indexOf("## Layout"));
  for (const specified of ["## Locks", "## Forget and gc"]) assert.ok(doc.includes(specified));
  assert.ok(
    !/not yet[^.]*(writer locks|gc)/is.test(status),
    `status says locks or gc are missing: ${status}`,
  );
  assert.match(doc, /Hard links are not preserved/);
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  assert.match(readme, /Hard links are not preserved/);
});
