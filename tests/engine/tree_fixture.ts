/** Builds random file trees on disk and compares a restored copy with its source, byte for byte. */
import assert from "node:assert/strict";
import fc from "fast-check";
import { deterministicBytes } from "./helpers.ts";

/** A node of a generated tree. */
export type Node =
  | { kind: "file"; size: number; compressible: boolean; seed: number; mode: number; mtime: number }
  | { kind: "symlink"; target: string }
  | { kind: "dir"; mode: number; mtime: number; children: [string, Node][] };

const NAMES = ["a", "b", "file.txt", "été", "日本語", "emoji 😀", "sp ace", ".hidden", "x-y_z", "Ω"];
const nameArb = fc.oneof(fc.constantFrom(...NAMES), fc.stringMatching(/^[a-zA-Z0-9._-]{1,12}$/))
  .filter((n) => n !== "." && n !== "..");
const mtimeArb = fc.integer({ min: 0, max: 1_900_000_000_000 });
const fileArb = fc.record({
  kind: fc.constant("file" as const),
  size: fc.oneof(fc.constant(0), fc.nat(3000), fc.integer({ min: 10_000, max: 70_000 })),
  compressible: fc.boolean(),
  seed: fc.nat(),
  mode: fc.constantFrom(0o644, 0o600, 0o755, 0o444, 0o4755, 0o2750),
  mtime: mtimeArb,
});
const linkArb = fc.record({
  kind: fc.constant("symlink" as const),
  target: fc.constantFrom("a", "../b", "/etc/passwd", "missing/target", "日本語"),
});

/** Random trees: files of 0 B to 70 KiB, symlinks, empty and nested folders, unicode names, modes, mtimes. */
export const treeArb: fc.Arbitrary<Node> = fc.letrec<{ dir: Node }>((tie) => ({
  dir: fc.record({
    kind: fc.constant("dir" as const),
    mode: fc.constantFrom(0o755, 0o700, 0o750, 0o1777),
    mtime: mtimeArb,
    children: fc.uniqueArray(
      fc.tuple(
        nameArb,
        fc.oneof({ depthSize: "small", withCrossShrink: true }, fileArb, fileArb, linkArb, tie("dir")),
      ),
      { selector: (t) => t[0], maxLength: 5 },
    ),
  }),
})).dir;

/** The content of a generated file. */
export function fileContent(n: { size: number; compressible: boolean; seed: number }): Uint8Array {
  if (!n.compressible) return deterministicBytes(`f${n.seed}`, n.size);
  const line = new TextEncoder().encode(`line ${n.seed} of compressible text\n`);
  const out = new Uint8Array(n.size);
  for (let i = 0; i < n.size; i++) out[i] = line[i % line.length];
  return out;
}

/** Writes `node` at `path`. */
export async function writeTree(path: string, node: Node): Promise<void> {
  if (node.kind === "file") {
    await Deno.writeFile(path, fileContent(node));
    await Deno.chmod(path, node.mode);
    await Deno.utime(path, new Date(node.mtime), new Date(node.mtime));
  } else if (node.kind === "symlink") {
    await Deno.symlink(node.target, path);
  } else {
    await Deno.mkdir(path, { recursive: true });
    for (const [name, child] of node.children) await writeTree(`${path}/${name}`, child);
    await Deno.chmod(path, node.mode);
    await Deno.utime(path, new Date(node.mtime), new Date(node.mtime));
  }
}

/** Asserts that `copy` equals `source`: types, bytes, modes, mtimes, link targets, and owners. */
export async function assertSameTree(source: string, copy: string): Promise<void> {
  const a = await Deno.lstat(source);
  const b = await Deno.lstat(copy);
  assert.equal(b.isSymlink, a.isSymlink, copy);
  assert.equal(b.isDirectory, a.isDirectory, copy);
  if (a.isSymlink) {
    assert.equal(await Deno.readLink(copy), await Deno.readLink(source), copy);
    assert.equal(b.mtime?.getTime(), a.mtime?.getTime(), `mtime of ${copy}`);
    return;
  }
  assert.equal(b.mode! & 0o7777, a.mode! & 0o7777, `mode of ${copy}`);
  if (Deno.uid() === 0) assert.deepEqual([b.uid, b.gid], [a.uid, a.gid], `owner of ${copy}`);
  if (a.isFile) {
    assert.deepEqual(await Deno.readFile(copy), await Deno.readFile(source), `content of ${copy}`);
  } else {
    const names = async (p: string) => (await Array.fromAsync(Deno.readDir(p))).map((e) => e.name).sort();
    const children = await names(source);
    assert.deepEqual(await names(copy), children, `entries of ${copy}`);
    for (const n of children) await assertSameTree(`${source}/${n}`, `${copy}/${n}`);
  }
  assert.equal(b.mtime?.getTime(), a.mtime?.getTime(), `mtime of ${copy}`);
}
