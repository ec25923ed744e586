/** Helpers of the engine tests: deterministic data, temporary folders, stream adapters. */
import { createHash } from "node:crypto";

/**
 * `n` deterministic pseudo-random bytes: SHA-256(seed || u32le(counter)) for counter = 0, 1, …,
 * concatenated (the generator docs/repository-format.md uses for its test vectors).
 */
export function deterministicBytes(seed: string, n: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  const ctr = new Uint8Array(4);
  for (let i = 0, c = 0; i < n; c++) {
    new DataView(ctr.buffer).setUint32(0, c, true);
    const d = createHash("sha256").update(seed).update(ctr).digest();
    out.set(d.subarray(0, Math.min(32, n - i)), i);
    i += 32;
  }
  return out;
}

/** `data` as an async iterable of pieces of `size` bytes. */
export async function* piecesOf(data: Uint8Array, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, Math.min(data.length, i + size));
}

/** Collects an async iterable. */
export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** A fresh temporary folder, removed on dispose. */
export async function tempDir(prefix = "cadres-engine-"): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/**
 * The metadata a backup records for the folders above `path` (every backup stores its full absolute path):
 * other processes touching `/tmp` change it, and a backup then rightly stores new ancestor trees. Tests
 * that assert "unchanged data adds nothing" compare this before and after to know the data was unchanged.
 */
export async function ancestorStamp(path: string): Promise<string> {
  const parts: string[] = [];
  for (let dir = path; dir !== "/" && dir !== "."; dir = dir.slice(0, dir.lastIndexOf("/")) || "/") {
    const up = dir.slice(0, dir.lastIndexOf("/")) || "/";
    const info = await Deno.stat(up);
    parts.push(`${up} ${info.mtime?.getTime()} ${info.ctime?.getTime()}`);
  }
  return parts.join("\n");
}
