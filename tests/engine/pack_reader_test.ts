import assert from "node:assert/strict";
import { LocalBackend } from "../../engine/repo/backend.ts";
import { MissingObjectError, RepoError } from "../../engine/repo/errors.ts";
import { PackReader } from "../../engine/repo/pack_reader.ts";
import { deterministicBytes } from "./helpers.ts";

Deno.test("PackReader reads ranges through a bounded set of open files, in any order, and closes them", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const backend = new LocalBackend(dir);
    const objects = ["a", "b", "c"].map((n) => ({
      name: `data/${n}${n}/${n}`,
      bytes: deterministicBytes(n, 50_000),
    }));
    for (const o of objects) await backend.put(o.name, o.bytes);
    const reader = new PackReader(backend, 2);
    const reads = [];
    for (let i = 0; i < 60; i++) {
      const o = objects[(i * 7) % 3];
      const offset = (i * 997) % 40_000;
      const length = 1 + (i * 131) % 9_000;
      reads.push(
        reader.read(o.name, offset, length).then((got) => {
          assert.deepEqual(got, o.bytes.subarray(offset, offset + length));
        }),
      );
    }
    await Promise.all(reads);
    await assert.rejects(reader.read("data/zz/missing", 0, 1), MissingObjectError);
    await assert.rejects(reader.read(objects[0].name, 49_999, 2), RepoError);
    assert.deepEqual(await reader.read(objects[1].name, 10, 5), objects[1].bytes.subarray(10, 15));
    await reader.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
