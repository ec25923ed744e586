/**
 * The benchmarks' deterministic data set (ENGINE.md §6), shared by `deno task bench:engine` and
 * `deno task bench:drill`: incompressible (seeded PRNG bytes), compressible (text-like) and duplicated
 * content (exact and near copies of other files), about 2,000 files per GiB.
 */

const MIB = 1024 * 1024;

/** xorshift128: fast, seeded, good enough for test data (not for anything secret). */
export class Rng {
  #s = new Uint32Array(4);
  constructor(seed: number) {
    let x = (seed ^ 0x9e3779b9) >>> 0 || 1;
    for (let i = 0; i < 4; i++) {
      // splitmix32 to spread the seed
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.#s[i] = (z ^ (z >>> 16)) >>> 0 || 1;
    }
  }
  next(): number {
    const s = this.#s;
    let t = s[3];
    const u = s[0];
    s[3] = s[2];
    s[2] = s[1];
    s[1] = u;
    t ^= t << 11;
    t ^= t >>> 8;
    s[0] = (t ^ u ^ (u >>> 19)) >>> 0;
    return s[0];
  }
  float(): number {
    return this.next() / 4294967296;
  }
  int(n: number): number {
    return Math.floor(this.float() * n);
  }
  /** Fills `buf` with pseudo-random bytes. */
  fill(buf: Uint8Array) {
    const words = buf.length >>> 2;
    const s = this.#s;
    let a = s[0], b = s[1], c = s[2], d = s[3];
    const w = new Uint32Array(buf.buffer, buf.byteOffset, words);
    for (let i = 0; i < words; i++) {
      let t = d;
      d = c;
      c = b;
      b = a;
      t ^= t << 11;
      t ^= t >>> 8;
      a = (t ^ a ^ (a >>> 19)) >>> 0;
      w[i] = a;
    }
    s[0] = a, s[1] = b, s[2] = c, s[3] = d;
    for (let i = words * 4; i < buf.length; i++) buf[i] = this.next() & 0xff;
  }
}

const enc = new TextEncoder();
/** A vocabulary of 4,000 pseudo-words (deterministic) for text-like content. */
const VOCAB: Uint8Array[] = (() => {
  const r = new Rng(7);
  const letters = "etaoinshrdlcumwfgypbvkjxqz";
  const words: Uint8Array[] = [];
  for (
    const w of ["the", "of", "and", "to", "in", "backup", "restore", "error", "INFO", "WARN", "=", "{", "}"]
  ) {
    words.push(enc.encode(w));
  }
  while (words.length < 4000) {
    const len = 2 + r.int(9);
    let w = "";
    for (let i = 0; i < len; i++) w += letters[Math.floor(letters.length * r.float() ** 1.6)];
    words.push(enc.encode(w));
  }
  return words;
})();

/** Fills `buf` with text-like bytes: lines of skewed-frequency words, numbers now and then. */
export function fillText(r: Rng, buf: Uint8Array) {
  let i = 0;
  let col = 0;
  const n = buf.length;
  while (i < n) {
    const x = r.float();
    let w: Uint8Array;
    if (x < 0.04) w = enc.encode(String(r.next() % 100000));
    else w = VOCAB[Math.floor(VOCAB.length * x * x * x)];
    for (let k = 0; k < w.length && i < n; k++) buf[i++] = w[k];
    col += w.length + 1;
    if (i < n) buf[i++] = col > 60 + (x * 40 | 0) ? 10 : 32;
    if (col > 60) col = 0;
  }
}

export type Kind = "random" | "text";
export interface FileSpec {
  path: string;
  size: number;
  kind: Kind | "copy" | "near-copy";
  seed: number;
  of?: number;
}

/** The plan of the data set: every file's path, size, kind and seed (no bytes yet). */
export function planDataSet(totalBytes: number, files: number): FileSpec[] {
  const r = new Rng(42);
  const specs: FileSpec[] = [];
  const dirs = Math.max(1, Math.round(files / 50));
  for (let i = 0; i < files; i++) {
    const dir = `d${String(i % dirs).padStart(3, "0")}/${i % 7 === 0 ? "sub/" : ""}`;
    const x = r.float();
    // 2 % large files (8–64 MiB), the rest log-uniform 1 KiB – 2 MiB; scaled to the total below.
    const size = x < 0.02 ? 2 ** (23 + 3 * r.float()) : 2 ** (10 + 11 * r.float());
    const k = r.float();
    const spec: FileSpec = {
      path: `${dir}f${String(i).padStart(5, "0")}`,
      size,
      kind: "random",
      seed: i + 1,
    };
    // By count: half incompressible, 35 % text-like, 15 % copies (10 % exact, 5 % with 4 KiB changed).
    if (k < 0.5 || (i < 10 && k >= 0.85)) spec.kind = "random";
    else if (k < 0.85) spec.kind = "text";
    else {
      spec.kind = k < 0.95 ? "copy" : "near-copy";
      let of = r.int(i);
      while (specs[of].of !== undefined) of = specs[of].of!;
      spec.of = of;
    }
    spec.path += spec.kind === "text" ? ".txt" : ".bin";
    specs.push(spec);
  }
  const sum = specs.reduce((a, s) => a + (s.of !== undefined ? specs[s.of].size : s.size), 0);
  const scale = totalBytes / sum;
  for (const s of specs) if (s.of === undefined) s.size = Math.max(1, Math.round(s.size * scale));
  for (const s of specs) if (s.of !== undefined) s.size = specs[s.of].size;
  return specs;
}

/** Writes `size` bytes of `kind` content seeded by `seed` to `path`, 1 MiB at a time. */
export async function writeContent(path: string, kind: Kind, seed: number, size: number) {
  const r = new Rng(seed);
  const f = await Deno.open(path, { write: true, create: true, truncate: true });
  try {
    const buf = new Uint8Array(MIB);
    for (let off = 0; off < size; off += MIB) {
      const piece = buf.subarray(0, Math.min(MIB, size - off));
      if (kind === "random") r.fill(piece);
      else fillText(r, piece);
      let w = 0;
      while (w < piece.length) w += await f.write(piece.subarray(w));
    }
  } finally {
    f.close();
  }
}

/** Overwrites `len` bytes at `offset` of `path` with seeded random bytes. */
export async function patch(path: string, offset: number, len: number, seed: number) {
  const buf = new Uint8Array(len);
  new Rng(seed).fill(buf);
  const f = await Deno.open(path, { write: true });
  try {
    await f.seek(offset, Deno.SeekMode.Start);
    let w = 0;
    while (w < buf.length) w += await f.write(buf.subarray(w));
  } finally {
    f.close();
  }
}

export async function generate(root: string, specs: FileSpec[]): Promise<void> {
  for (const s of specs) {
    const path = `${root}/${s.path}`;
    await Deno.mkdir(path.slice(0, path.lastIndexOf("/")), { recursive: true });
    if (s.of !== undefined) {
      await Deno.copyFile(`${root}/${specs[s.of].path}`, path);
      if (s.kind === "near-copy" && s.size > 8192) {
        await patch(path, new Rng(s.seed).int(s.size - 4096), 4096, s.seed);
      }
    } else {
      await writeContent(path, s.kind as Kind, s.seed, s.size);
    }
  }
}
