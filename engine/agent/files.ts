/** Small file helpers of the agent's data folder. */
import { parentDir, syncDir } from "../repo/fs.ts";

/**
 * Writes `data` to `path` atomically and durably: a temporary file beside it (created with `mode`), synced,
 * renamed into place, then the folder synced.
 */
export async function writeFileAtomic(path: string, data: Uint8Array, mode = 0o600): Promise<void> {
  const dir = parentDir(path);
  const tmp = `${dir}/.tmp-${crypto.randomUUID()}`;
  try {
    const f = await Deno.open(tmp, { write: true, createNew: true, mode });
    try {
      let off = 0;
      while (off < data.length) off += await f.write(data.subarray(off));
      await f.syncData();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  await syncDir(dir);
}

/** Whether an executable named `name` is on PATH (or `name` is a path to one); its path, or null. */
export function findExecutable(name: string): string | null {
  const candidates = name.includes("/")
    ? [name]
    : (Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin").split(":").filter(Boolean)
      .map((d) => `${d}/${name}`);
  for (const c of candidates) {
    try {
      const info = Deno.statSync(c);
      if (info.isFile && info.mode !== null && (info.mode & 0o111) !== 0) return c;
    } catch {
      // not there
    }
  }
  return null;
}

/** The last `max` characters of `text` (hook output is sent as its tail). */
export function tail(text: string, max: number): string {
  return text.length <= max ? text : "…" + text.slice(text.length - max + 1);
}
